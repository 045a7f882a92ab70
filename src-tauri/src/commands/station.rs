//! Station-level commands: what the lock screen and the enrollment screen need.

use std::sync::Arc;

use tauri::State;

use crate::dto::{EnrollRequest, EnrollmentDefaults, StationStatus};
use crate::error::{AppError, AppResult};
use crate::state::{guard, AppState};

/// What the lock screen shows. Contains no PHI and no user names.
#[tauri::command(rename_all = "snake_case")]
pub fn station_status(app: tauri::AppHandle, state: State<'_, AppState>) -> AppResult<StationStatus> {
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
            enrollment_defaults: Some(enrollment_defaults()?),
        });
    }
    let device = profile.read_device()?;
    let server = device.server.as_ref();
    Ok(StationStatus {
        app_version,
        enrolled: true,
        station_name: server.map_or_else(host_name, |s| s.name.clone()),
        device_profile: Some(device.profile.as_str().to_owned()),
        server_url: server.map(|s| s.url.clone()),
        online: *guard(&state.reachable),
        enrollment_defaults: None,
    })
}

/// Enrolls this station with the server (one-time token from IT, pinned certificate).
#[tauri::command(rename_all = "snake_case")]
pub async fn enroll(
    app: tauri::AppHandle,
    state: State<'_, AppState>,
    request: EnrollRequest,
) -> AppResult<StationStatus> {
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
    station_status(app, state)
}

/// Environment variable naming the machine policy file (tests; IT uses the default path).
pub const POLICY_FILE_ENV: &str = "CHARTROOM_POLICY_FILE";
const POLICY_FILE: &str = "/etc/chartroom/policy.toml";

/// The enrollment screen's suggestions from the machine policy file, if IT installed one. A file
/// that exists but cannot be read or parsed is an error naming the problem, never silently ignored.
fn enrollment_defaults() -> AppResult<EnrollmentDefaults> {
    let path = std::env::var_os(POLICY_FILE_ENV).map_or_else(|| POLICY_FILE.into(), std::path::PathBuf::from);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EnrollmentDefaults::default()),
        Err(e) => {
            return Err(AppError::new(
                "policy.unreadable",
                format!("The machine policy file cannot be read ({e})."),
            ))
        }
    };
    parse_policy(&text)
}

fn parse_policy(text: &str) -> AppResult<EnrollmentDefaults> {
    #[derive(serde::Deserialize)]
    struct Policy {
        server_url: Option<String>,
        fingerprint: Option<String>,
        station_name: Option<String>,
        device_profile: Option<String>,
    }
    let p: Policy = toml::from_str(text).map_err(|e| {
        AppError::new("policy.invalid", format!("The machine policy file is not valid: {}", e.message()))
    })?;
    Ok(EnrollmentDefaults {
        server_url: p.server_url,
        fingerprint: p.fingerprint,
        station_name: p.station_name,
        device_profile: p.device_profile,
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "this station".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_prefills_enrollment_and_bad_policy_names_the_problem() {
        let d =
            parse_policy("server_url = \"https://chartroom.example:8443\"\nfingerprint = \"sha256:ab\"\n")
                .unwrap();
        assert_eq!(d.server_url.as_deref(), Some("https://chartroom.example:8443"));
        assert_eq!(d.station_name, None);
        let e = parse_policy("server_url = 42").unwrap_err();
        assert_eq!(e.code, "policy.invalid");
        assert!(e.message.contains("string"), "{}", e.message);
    }
}
