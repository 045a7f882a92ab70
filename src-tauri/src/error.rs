//! The one error type the UI sees: a stable machine-readable `code` and a message fit to show a
//! clinician. Messages never carry PHI, file contents or internals beyond what helps fix the station.

use serde::Serialize;
use ts_rs::TS;

/// An error returned by a command, serialised to the UI as `{ code, message, retry_after_s }`.
///
/// The UI branches on `code` (stable, dotted, like the station core's codes) and shows `message`;
/// `retry_after_s` is set when the same action can succeed after that many seconds (throttling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error, TS)]
#[error("{message}")]
pub struct AppError {
    pub code: String,
    pub message: String,
    pub retry_after_s: Option<u32>,
}

impl AppError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        AppError { code: code.to_owned(), message: message.into(), retry_after_s: None }
    }

    /// The profile directory could not be determined (no env override and no data directory).
    pub fn profile_dir_unavailable() -> Self {
        AppError::new(
            "app.profile_dir_unavailable",
            "Cannot find a place for the station profile on this computer. \
             Set CHARTROOM_PROFILE_DIR or ask your administrator.",
        )
    }

    /// Nobody is signed in (the session is locked): the UI shows the lock screen.
    pub fn locked() -> Self {
        AppError::new("session.locked", "The session is locked. Sign in to continue.")
    }

    /// The signed-in user's role has no use for this command (e.g. a clinician asking for the audit
    /// trail, an auditor asking for a chart).
    pub fn not_for_role() -> Self {
        AppError::new("access.forbidden", "Your role cannot do this on this station.")
    }

    /// A login that failed for a reason the user must not learn more about (which part was wrong).
    pub fn login_failed() -> Self {
        AppError::new("auth.failed", "Wrong username or password.")
    }
}

/// Station errors already have stable codes and PHI-free messages; pass both through, with the
/// server's own code when the server refused (more useful to the UI than `server.refused`).
impl From<chartroom_station::StationError> for AppError {
    fn from(e: chartroom_station::StationError) -> Self {
        use chartroom_station::StationError as E;
        let retry_after_s = match &e {
            E::Throttled(
                chartroom_station::domain::Throttled::Delay { retry_after }
                | chartroom_station::domain::Throttled::LockedOut { retry_after },
            ) => Some(u32::try_from(retry_after.as_secs().max(1)).unwrap_or(u32::MAX)),
            _ => None,
        };
        // Codes only: they name what failed, never what it was about.
        log::debug!("command failed: {}", e.code());
        match &e {
            E::Server(chartroom_station::client::ClientError::Api { error, retry_after_s, .. }) => AppError {
                code: error.code.clone(),
                message: error.message.clone(),
                retry_after_s: retry_after_s.map(|s| u32::try_from(s).unwrap_or(u32::MAX)),
            },
            _ => AppError { code: e.code().to_owned(), message: e.to_string(), retry_after_s },
        }
    }
}

/// Shorthand for command results.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_code_message_and_retry() {
        let json = serde_json::to_value(AppError::new("app.test", "hello")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "code": "app.test", "message": "hello", "retry_after_s": null })
        );
    }

    #[test]
    fn keeps_station_codes() {
        let e = AppError::from(chartroom_station::StationError::NotEnrolled);
        assert_eq!(e.code, "station.not_enrolled");
    }

    #[test]
    fn local_throttling_carries_the_wait() {
        let e = AppError::from(chartroom_station::StationError::Throttled(
            chartroom_station::domain::Throttled::Delay {
                retry_after: std::time::Duration::from_millis(29_500),
            },
        ));
        assert_eq!((e.code.as_str(), e.retry_after_s), ("auth.throttled", Some(29)));
    }

    #[test]
    fn server_throttling_wait_comes_from_its_retry_after() {
        let api = |code: &str, retry_after_s| {
            AppError::from(chartroom_station::StationError::Server(
                chartroom_station::client::ClientError::Api {
                    status: 429,
                    error: chartroom_station::protocol::ApiError {
                        code: code.into(),
                        message: "too many failed attempts; try again in 30 s".into(),
                        retryable: false,
                    },
                    retry_after_s,
                },
            ))
        };
        let delay = api("auth.throttled", Some(30));
        assert_eq!((delay.code.as_str(), delay.retry_after_s), ("auth.throttled", Some(30)));
        assert_eq!(api("auth.locked_out", Some(900)).retry_after_s, Some(900));
        assert_eq!(api("auth.invalid_credentials", None).retry_after_s, None);
    }
}
