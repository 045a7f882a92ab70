//! The one error type the UI sees: a stable machine-readable `code` and a message fit to show a
//! clinician. Messages never carry PHI, file contents or internals beyond what helps fix the station.

use serde::Serialize;

/// An error returned by a command, serialised to the UI as `{ "code": "...", "message": "..." }`.
///
/// The UI branches on `code` (stable, dotted, like the station core's codes) and shows `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct AppError {
    pub code: &'static str,
    pub message: String,
}

impl AppError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        AppError { code, message: message.into() }
    }

    /// The profile directory could not be determined (no env override and no data directory).
    pub fn profile_dir_unavailable() -> Self {
        AppError::new(
            "app.profile_dir_unavailable",
            "Cannot find a place for the station profile on this computer. \
             Set CHARTROOM_PROFILE_DIR or ask your administrator.",
        )
    }
}

/// Station errors already have stable codes and PHI-free messages; pass both through.
impl From<chartroom_station::StationError> for AppError {
    fn from(e: chartroom_station::StationError) -> Self {
        AppError::new(e.code(), e.to_string())
    }
}

/// Shorthand for command results.
pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_code_and_message_only() {
        let json = serde_json::to_value(AppError::new("app.test", "hello")).unwrap();
        assert_eq!(json, serde_json::json!({ "code": "app.test", "message": "hello" }));
    }

    #[test]
    fn keeps_station_codes() {
        let e = AppError::from(chartroom_station::StationError::NotEnrolled);
        assert_eq!(e.code, "station.not_enrolled");
    }
}
