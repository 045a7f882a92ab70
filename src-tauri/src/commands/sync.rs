//! Sync: the status bar, "sync now", and settling conflicts.

use std::sync::atomic::Ordering;

use tauri::{AppHandle, Manager, State};
use uuid::Uuid;

use chartroom_station::sync::VaultAccess;
use chartroom_station::{StationError, UnlockedVault};

use super::with_vault;
use crate::dto::{time, ConflictDetail, ConflictSummary, Resolution, SessionMode, SyncView};
use crate::error::{AppError, AppResult};
use crate::runtime::{emit_sync, OPEN};
use crate::state::{guard, AppState, Work};

/// The status bar's numbers.
#[tauri::command(rename_all = "snake_case")]
pub async fn sync_status(state: State<'_, AppState>) -> AppResult<SyncView> {
    let counts = with_vault(&state, |vault, _, _| Ok(vault.sync_indicator()?)).await?;
    let mut view = guard(&state.sync).clone();
    apply(&mut view, &counts);
    Ok(view)
}

/// Syncs now (push, pull, audit upload) and returns the outcome.
#[tauri::command(rename_all = "snake_case")]
pub async fn sync_now(app: AppHandle) -> AppResult<SyncView> {
    run_sync(&app).await
}

fn apply(view: &mut SyncView, i: &chartroom_station::sync::SyncIndicator) {
    let n = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    view.online = i.online;
    view.pending = n(i.status.pending);
    view.conflicts = n(i.status.conflicts);
    view.rejected = n(i.status.rejected);
    view.first_sync_complete = i.status.first_sync_complete;
    view.last_sync_at = i.status.last_sync_at.map(time);
}

/// The open session's vault as a sync reaches it: taken for each store step only (never across a
/// request to the server, so a chart opened meanwhile waits for one store step at most), and only
/// while the user the sync started for is still the one signed in (a lock ends the sync).
struct SessionVault<'a> {
    state: &'a AppState,
    user: Uuid,
}

impl VaultAccess for SessionVault<'_> {
    async fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut UnlockedVault) -> Result<R, StationError> + Send,
    ) -> Result<R, StationError> {
        let mut work = self.state.work.lock().await;
        let active = self.state.active_user().map(|u| u.id);
        match &mut *work {
            Work::Clinical { vault, .. } if active == Some(self.user) && vault.user_id() == self.user => {
                f(vault)
            }
            _ => Err(StationError::SessionEnded),
        }
    }
}

/// One whole sync of the open online session (push, pull, audit upload), reported to the status
/// bar before and after. One runs at a time; a second request waits for it, then syncs again.
pub async fn run_sync(app: &AppHandle) -> AppResult<SyncView> {
    let state = app.state::<AppState>();
    let user = match state.active_user() {
        Some(user) if OPEN.load(Ordering::SeqCst) => user,
        _ => return Err(AppError::locked()),
    };
    if user.mode == SessionMode::Oversight {
        return Err(AppError::not_for_role());
    }
    let _one_at_a_time = state.sync_gate.lock().await;
    let client = match &*state.work.lock().await {
        Work::Clinical { vault, client: Some(client) } if vault.user_id() == user.id => client.clone(),
        Work::Clinical { client: None, .. } => {
            return Err(AppError::new(
                "server.offline",
                "This session signed in offline. Sign in again while the server is reachable to sync.",
            ))
        }
        Work::Clinical { .. } | Work::Closed => return Err(AppError::locked()),
        Work::Oversight { .. } => return Err(AppError::not_for_role()),
    };
    {
        let mut view = guard(&state.sync);
        view.syncing = true;
        emit_sync(app, &view);
    }
    let access = SessionVault { state: &state, user: user.id };
    let now = state.now();
    let report = chartroom_station::sync::sync(&access, &client, now).await.map_err(AppError::from);
    let indicator = access.with(|v| v.sync_indicator()).await.ok();
    let result = report.as_ref().map(|_| ()).map_err(Clone::clone);
    let out = {
        let mut view = guard(&state.sync);
        if let Ok(r) = &report {
            if r.pull.charts + r.pull.changes + r.pull.shredded + r.push.released > 0 {
                view.changed_at = Some(time(now));
            }
        }
        view.syncing = false;
        view.progress = None;
        view.last_error = result.as_ref().err().cloned();
        if let Some(i) = &indicator {
            apply(&mut view, i);
        }
        view.clone()
    };
    emit_sync(app, &out);
    if result.as_ref().is_err_and(|e| e.code == "device.revoked") {
        // The profile is already wiped: end the session; the window shows the enrollment screen.
        state.revoked.store(true, Ordering::SeqCst);
        crate::runtime::lock_now(app, crate::dto::LockReason::Revoked).await;
    }
    result.map(|()| out)
}

/// Changes the server did not take: conflicts to settle and refusals.
#[tauri::command(rename_all = "snake_case")]
pub async fn conflicts(state: State<'_, AppState>) -> AppResult<Vec<ConflictSummary>> {
    with_vault(&state, |vault, _, _| {
        Ok(vault
            .outbox()?
            .into_iter()
            .filter(|e| e.state != "pending")
            .map(|e| ConflictSummary {
                change_id: e.change_id,
                kind: e.kind,
                mrn: None,
                patient_name: None,
                reason: match e.reason {
                    Some(r) => format!("{}: {r}", e.state),
                    None => e.state,
                },
            })
            .collect())
    })
    .await
}

/// Both versions of a conflicting record (reading them is audited).
#[tauri::command(rename_all = "snake_case")]
pub async fn conflict(state: State<'_, AppState>, change_id: Uuid) -> AppResult<ConflictDetail> {
    with_vault(&state, |vault, _, now| {
        let c = vault.conflict(change_id, now)?;
        let text = |r: &chartroom_station::protocol::ChangeRecord| match r {
            chartroom_station::protocol::ChangeRecord::Note(n) => Some(n.text.clone()),
            _ => None,
        };
        let pretty = |r| serde_json::to_string_pretty(r).unwrap_or_default();
        Ok(ConflictDetail {
            change_id,
            kind: c.kind.clone(),
            mine: pretty(&c.mine),
            theirs: pretty(&c.theirs),
            mergeable_text: text(&c.mine).is_some(),
            mine_text: text(&c.mine),
            theirs_text: text(&c.theirs),
        })
    })
    .await
}

/// Settles a conflict: keep mine, take theirs, or (notes) merge into a text the clinician wrote.
#[tauri::command(rename_all = "snake_case")]
pub async fn resolve_conflict(
    app: AppHandle,
    state: State<'_, AppState>,
    change_id: Uuid,
    resolution: Resolution,
) -> AppResult<SyncView> {
    use chartroom_station::store::Resolution as R;
    with_vault(&state, |vault, _, now| {
        match &resolution {
            Resolution::KeepMine => vault.resolve(change_id, R::KeepMine, None, now)?,
            Resolution::TakeTheirs => vault.resolve(change_id, R::TakeTheirs, None, now)?,
            Resolution::Merge { text } => vault.resolve(change_id, R::Merge, Some(text), now)?,
        };
        Ok(())
    })
    .await?;
    match run_sync(&app).await {
        Ok(view) => Ok(view),
        // Settled locally; the next sync takes it to the server.
        Err(_) => sync_status(state).await,
    }
}
