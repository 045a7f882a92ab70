//! Process-wide application state, managed by Tauri and shared with commands.

use std::path::PathBuf;

use crate::error::{AppError, AppResult};

/// Environment variable that overrides where the station profile lives (tests, kiosks, demos).
pub const PROFILE_DIR_ENV: &str = "CHARTROOM_PROFILE_DIR";

/// State shared by all commands.
#[derive(Debug)]
pub struct AppState {
    /// The station profile directory, or `None` when it could not be determined. That is not
    /// fatal at startup: the window still opens and commands report a clear error instead.
    profile_dir: Option<PathBuf>,
}

impl AppState {
    /// Resolves the profile directory: `$CHARTROOM_PROFILE_DIR` if set and non-empty, otherwise
    /// `<local data dir>/chartroom/profile` (for example `~/.local/share/chartroom/profile`).
    ///
    /// `local_data_dir` is Tauri's path resolver result, passed in so this stays testable.
    pub fn resolve(env_override: Option<PathBuf>, local_data_dir: Option<PathBuf>) -> Self {
        let profile_dir = env_override
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| local_data_dir.map(|d| d.join("chartroom").join("profile")));
        AppState { profile_dir }
    }

    /// The station profile (the directory may not exist yet on a fresh station).
    pub fn profile(&self) -> AppResult<chartroom_station::Profile> {
        self.profile_dir
            .as_ref()
            .map(chartroom_station::Profile::new)
            .ok_or_else(AppError::profile_dir_unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_override_wins() {
        let s = AppState::resolve(Some("/tmp/p".into()), Some("/data".into()));
        assert_eq!(s.profile().unwrap().dir(), std::path::Path::new("/tmp/p"));
    }

    #[test]
    fn empty_override_falls_back_to_data_dir() {
        let s = AppState::resolve(Some(PathBuf::new()), Some("/data".into()));
        assert_eq!(s.profile().unwrap().dir(), std::path::Path::new("/data/chartroom/profile"));
    }

    #[test]
    fn no_location_is_a_coded_error() {
        let s = AppState::resolve(None, None);
        assert_eq!(s.profile().unwrap_err().code, "app.profile_dir_unavailable");
    }
}
