//! Station-level commands: what the lock screen and the enrollment screen need.

use std::sync::Arc;

use tauri::State;

use crate::dto::{EnrollRequest, EnrollmentDefaults, StationStatus};
use crate::error::{AppError, AppResult};
use crate::state::{guard, AppState};

/// What the lock screen shows. Contains no PHI and no user names.
#[tauri::command(rename_all = "snake_case")]
pub fn station_status(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<StationStatus> {
    // An invalid machine policy stops here: the app shows the error naming the bad key.
    let policy = state.machine_policy()?;
    let profile = state.profile()?;
    let app_version = app.package_info().version.to_string();
    if !profile.is_enrolled() {
        return Ok(StationStatus {
            app_version,
            enrolled: false,
            station_name: host_name(),
            device_profile: None,
            server_url: None,
            online: None,
            revoked: state.revoked.load(std::sync::atomic::Ordering::SeqCst),
            enrollment_defaults: Some(EnrollmentDefaults {
                server_url: policy.server_url.clone(),
                fingerprint: policy.fingerprints.first().cloned(),
                station_name: policy.station_name.clone(),
                device_profile: policy.device_profile.map(|p| p.as_str().to_owned()),
            }),
        });
    }
    let device = profile.read_device()?;
    // The timeouts are checked against the enrolled profile before anyone can log in.
    policy.lock_policy(device.profile).map_err(chartroom_station::StationError::from)?;
    let server = device.server.as_ref();
    Ok(StationStatus {
        app_version,
        enrolled: true,
        station_name: server.map_or_else(host_name, |s| s.name.clone()),
        device_profile: Some(device.profile.as_str().to_owned()),
        server_url: server.map(|s| s.url.clone()),
        online: *guard(&state.reachable),
        enrollment_defaults: None,
        revoked: false,
    })
}

/// Enrolls this station with the server (one-time token from IT, pinned certificate).
#[tauri::command(rename_all = "snake_case")]
pub async fn enroll(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    request: EnrollRequest,
) -> AppResult<StationStatus> {
    state.machine_policy()?.check_enrollment(&request.server_url, &request.fingerprint)?;
    let client =
        chartroom_station::client::ServerClient::new(request.server_url.trim(), request.fingerprint.trim())
            .map_err(chartroom_station::StationError::from)?;
    let keystore: Arc<dyn chartroom_station::DeviceSecretStore> = state.keystore()?;
    chartroom_station::LockedVault::enroll(
        state.profile()?,
        keystore,
        &client,
        request.fingerprint.trim(),
        request.token.trim(),
        state.now(),
    )
    .await
    .map_err(AppError::from)?;
    *guard(&state.reachable) = Some(true);
    state.revoked.store(false, std::sync::atomic::Ordering::SeqCst);
    station_status(app, state)
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "this station".into())
}
