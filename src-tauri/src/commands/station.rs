//! Station-level commands: what the lock screen needs before anyone logs in.

use serde::Serialize;
use tauri::State;

use crate::error::AppResult;
use crate::state::AppState;

/// What the lock screen shows. Contains no PHI and no user names.
#[derive(Debug, Clone, Serialize)]
pub struct StationStatus {
    /// Whether this station's profile directory holds an enrolled station.
    pub enrolled: bool,
    /// The app version (from Cargo.toml / tauri.conf.json).
    pub app_version: String,
}

/// Reports whether the station is enrolled. Reads only the profile directory; it neither creates
/// it nor touches the keyring.
#[tauri::command]
pub fn station_status(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<StationStatus> {
    let profile = state.profile()?;
    Ok(StationStatus { enrolled: profile.is_enrolled(), app_version: app.package_info().version.to_string() })
}
