//! The Chartroom desktop shell: builds the Tauri app, manages state and registers the IPC commands.
//!
//! The security-relevant setup (CSP, prototype freezing, which window may call which command)
//! lives in `tauri.conf.json`, `capabilities/` and `build.rs`.

#![forbid(unsafe_code)]

pub mod census;
pub mod commands;
pub mod dto;
pub mod error;
#[cfg(target_os = "linux")]
pub mod os_lock;
pub mod runtime;
pub mod state;

use tauri::Manager;

use crate::state::{AppState, PROFILE_DIR_ENV};

/// Builds and runs the application; returns when the last window is closed.
pub fn run() {
    chartroom_station::protocol::logging::init();
    let result = tauri::Builder::default()
        .setup(|app| {
            let env_override = std::env::var_os(PROFILE_DIR_ENV).map(Into::into);
            // A missing data directory is reported by the commands, not fatal here.
            let local_data_dir = app.path().local_data_dir().ok();
            app.manage(AppState::resolve(env_override, local_data_dir));
            runtime::spawn_timer(app.handle().clone());
            runtime::spawn_reachability(app.handle().clone());
            runtime::spawn_sync(app.handle().clone());
            #[cfg(target_os = "linux")]
            app.manage(runtime::listen_for_os_lock(app.handle().clone()));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::station::station_status,
            commands::station::enroll,
            commands::station::update_check,
            commands::station::update_install,
            commands::session::session,
            commands::session::login,
            commands::session::lock,
            commands::session::activity,
            commands::chart::census,
            commands::chart::census_search,
            commands::chart::chart,
            commands::chart::vital_ranges,
            commands::chart::record_vitals,
            commands::chart::save_draft,
            commands::chart::sign_note,
            commands::chart::set_mine,
            commands::chart::write_addendum,
            commands::chart::enter_in_error,
            commands::chart::my_drafts,
            commands::chart::break_glass,
            commands::audit::audit_search,
            commands::audit::audit_verify,
            commands::audit::break_glass_uses,
            commands::audit::review_break_glass,
            commands::audit::incidents,
            commands::sync::sync_status,
            commands::sync::sync_now,
            commands::sync::conflicts,
            commands::sync::conflict,
            commands::sync::resolve_conflict,
        ])
        .run(tauri::generate_context!());
    if let Err(e) = result {
        // Nothing to clean up and no window to show it in: report and exit non-zero.
        eprintln!("chartroom: failed to start: {e}");
        std::process::exit(1);
    }
}
