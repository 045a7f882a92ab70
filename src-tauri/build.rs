//! Build script: generates the Tauri context inputs and the ACL for our own commands.

/// Every command the UI may call. Keep in step with `generate_handler!` in `lib.rs` and
/// `capabilities/main.json` (a test checks all three agree).
pub const COMMANDS: &[&str] = &[
    "station_status",
    "enroll",
    "update_check",
    "update_install",
    "session",
    "login",
    "lock",
    "activity",
    "census",
    "census_search",
    "chart",
    "vital_ranges",
    "record_vitals",
    "save_draft",
    "sign_note",
    "set_mine",
    "write_addendum",
    "enter_in_error",
    "my_drafts",
    "break_glass",
    "audit_search",
    "audit_verify",
    "break_glass_uses",
    "review_break_glass",
    "incidents",
    "sync_status",
    "sync_now",
    "conflicts",
    "conflict",
    "resolve_conflict",
];

fn main() {
    // Declaring the app's commands in an app manifest makes tauri-build generate
    // `allow-<command>`/`deny-<command>` permissions for them and, more importantly, makes the
    // runtime refuse any app command that no capability grants. Without a manifest every app
    // command would be callable from every window.
    let manifest = tauri_build::AppManifest::new().commands(COMMANDS);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        // A build script reports failure by panicking; print the cause first.
        panic!("tauri-build failed: {e:#}");
    }
}
