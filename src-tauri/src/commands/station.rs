//! Station-level commands: what the lock screen and the enrollment screen need.

use std::sync::Arc;

use tauri::State;

use chartroom_station::update::{Offer, TrustedKey, UpdateError};

use crate::dto::{EnrollRequest, EnrollmentDefaults, StationStatus, UpdateView};
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
    let policy = state.machine_policy()?;
    policy.check_enrollment(&request.server_url, &request.fingerprint)?;
    let client = policy
        .enrollment_client(&request.server_url, &request.fingerprint)
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

/// Checks the enrolled server for a signed update (unless the machine policy switched the updater
/// off). A release that fails any check is an error saying which (`update.*`), never an offer.
#[tauri::command(rename_all = "snake_case")]
pub async fn update_check(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<UpdateView> {
    match verified_offer(&app, &state).await? {
        None => Ok(UpdateView::Off),
        Some(Err(UpdateError::NoRelease)) => Ok(UpdateView::None),
        Some(Err(e)) => Err(update_error(&e)),
        Some(Ok(Offer::UpToDate { installed })) => Ok(UpdateView::UpToDate { installed }),
        Some(Ok(Offer::Available { version, notes, package })) => {
            Ok(UpdateView::Available { version, notes, file: package.file })
        }
    }
}

/// Installs the offered update: `chartroom-station update install` runs as root through `pkexec`
/// (an administrator authenticates), and downloads, verifies and installs the package itself, so
/// nothing a user process could swap is ever handed to the package manager.
#[tauri::command(rename_all = "snake_case")]
pub async fn update_install(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<String> {
    let offer = match verified_offer(&app, &state).await? {
        None => return Err(update_error(&UpdateError::Disabled)),
        Some(result) => result.map_err(|e| update_error(&e))?,
    };
    let Offer::Available { version, .. } = offer else {
        return Err(AppError::new("update.none", "This station is up to date."));
    };
    let station = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("chartroom-station")))
        .filter(|p| p.exists())
        .ok_or_else(|| {
            AppError::new("update.install", "chartroom-station is not installed beside the app.")
        })?;
    let profile = state.profile()?;
    let status = tauri::async_runtime::spawn_blocking(move || {
        std::process::Command::new("pkexec")
            .arg(station)
            .arg("--profile-dir")
            .arg(profile.dir())
            .args(["update", "install"])
            .status()
    })
    .await
    .map_err(|_| AppError::new("update.install", "The installer stopped unexpectedly."))?
    .map_err(|_| {
        AppError::new(
            "update.install",
            "The system installer (pkexec) could not be started; ask IT to install the update.",
        )
    })?;
    if !status.success() {
        return Err(AppError::new(
            "update.install",
            "The update was not installed (cancelled, or the installer failed).",
        ));
    }
    Ok(format!("Chartroom {version} is installed. Restart Chartroom to use it."))
}

type CheckedOffer = Result<Offer, UpdateError>;

/// `None` when the policy switched updates off; otherwise the verified offer (or why not).
async fn verified_offer(app: &tauri::AppHandle, state: &AppState) -> AppResult<Option<CheckedOffer>> {
    let policy = state.machine_policy()?;
    if !policy.updates_enabled() {
        return Ok(None);
    }
    let profile = state.profile()?;
    let Some(link) = profile.is_enrolled().then(|| profile.read_device()).transpose()?.and_then(|d| d.server)
    else {
        return Ok(Some(Err(UpdateError::NoRelease)));
    };
    let client = policy.server_client(&link).map_err(chartroom_station::StationError::from)?;
    let installed = app.package_info().version.to_string();
    let result = async {
        let key = TrustedKey::built_in()?;
        let format = chartroom_station::update::format_of_this_system();
        chartroom_station::update::check(&client, &key, &installed, format).await
    }
    .await;
    Ok(Some(result))
}

fn update_error(e: &UpdateError) -> AppError {
    AppError::new(e.code(), e.to_string())
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "this station".into())
}
