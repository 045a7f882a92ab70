//! Build script: generates the Tauri context inputs and the ACL for our own commands.

fn main() {
    // Declaring the app's commands in an app manifest makes tauri-build generate
    // `allow-<command>`/`deny-<command>` permissions for them and, more importantly, makes the
    // runtime refuse any app command that no capability grants. Without a manifest every app
    // command would be callable from every window.
    let manifest = tauri_build::AppManifest::new().commands(&["station_status"]);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        // A build script reports failure by panicking; print the cause first.
        panic!("tauri-build failed: {e:#}");
    }
}
