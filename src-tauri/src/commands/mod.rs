//! IPC commands exposed to the UI: each a few lines calling the station core.
//!
//! Every command must also be listed in `build.rs` (app manifest) and granted in
//! `capabilities/main.json`; otherwise the runtime rejects the call. Arguments are snake_case.

pub mod chart;
pub mod session;
pub mod station;
pub mod sync;

use chartroom_station::domain::Timestamp;
use chartroom_station::UnlockedVault;

use crate::error::{AppError, AppResult};
use crate::state::{AppState, SignedIn, Work};

/// Runs `f` on the open vault, if a clinician's session is active *now* (checked after taking the
/// vault, so a lock that happened while waiting for it is honoured).
pub async fn with_vault<T>(
    state: &AppState,
    f: impl FnOnce(&mut UnlockedVault, &SignedIn, Timestamp) -> AppResult<T>,
) -> AppResult<T> {
    let mut work = state.work.lock().await;
    let user = state.active_user().ok_or_else(AppError::locked)?;
    match &mut *work {
        Work::Clinical { vault, .. } if vault.user_id() == user.id => f(vault, &user, state.now()),
        Work::Clinical { .. } | Work::Closed => Err(AppError::locked()),
    }
}
