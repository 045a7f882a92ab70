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

/// Checks the enrolled server for a signed update (unless the machine policy switched the updater
/// off). A release that fails any check is an error saying which (`update.*`), never an offer.
#[tauri::command(rename_all = "snake_case")]
pub async fn update_check(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<UpdateView> {
    match verified_offer(&app, &state).await? {
        None => Ok(UpdateView::Off),
        Some(Err(UpdateError::NoRelease)) => Ok(UpdateView::None),
        Some(Err(e)) => Err(update_error(&e)),
        Some(Ok((_, Offer::UpToDate { installed }))) => Ok(UpdateView::UpToDate { installed }),
        Some(Ok((_, Offer::Available { version, notes, package }))) => {
            Ok(UpdateView::Available { version, notes, file: package.file })
        }
    }
}

/// Downloads the offered package, verifies its checksum and signature, and hands it to the system's
/// package manager through `pkexec` (an administrator authenticates). Nothing that failed a check
/// is ever written to disk or installed.
#[tauri::command(rename_all = "snake_case")]
pub async fn update_install(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<String> {
    let (client, offer) = match verified_offer(&app, &state).await? {
        None => return Err(update_error(&UpdateError::Disabled)),
        Some(result) => result.map_err(|e| update_error(&e))?,
    };
    let Offer::Available { version, package, .. } = offer else {
        return Err(AppError::new("update.none", "This station is up to date."));
    };
    let key = TrustedKey::built_in().map_err(|e| update_error(&e))?;
    let bytes =
        chartroom_station::update::download(&client, &key, &package).await.map_err(|e| update_error(&e))?;
    let dir = std::env::temp_dir().join(format!("chartroom-update-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir)
        .map_err(|e| AppError::new("update.io", format!("Cannot save the update ({}).", e.kind())))?;
    let path = dir.join(&package.file);
    std::fs::write(&path, bytes)
        .map_err(|e| AppError::new("update.io", format!("Cannot save the update ({}).", e.kind())))?;
    let installer: &[&str] = match package.format {
        chartroom_station::update::PackageFormat::Deb => &["apt-get", "install", "-y"],
        chartroom_station::update::PackageFormat::Rpm => &["dnf", "install", "-y"],
    };
    std::process::Command::new("pkexec").args(installer).arg(&path).spawn().map_err(|_| {
        AppError::new(
            "update.install",
            "The system installer (pkexec) could not be started; ask IT to install the update.",
        )
    })?;
    Ok(format!("Installing Chartroom {version}; an administrator confirms it. Restart Chartroom afterwards."))
}

type CheckedOffer = Result<(chartroom_station::client::ServerClient, Offer), UpdateError>;

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
        let offer = chartroom_station::update::check(&client, &key, &installed, format).await?;
        Ok((client.clone(), offer))
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
