//! Sync: the status bar, "sync now", and settling conflicts.

use std::sync::atomic::Ordering;

use tauri::{AppHandle, Manager, State};
use uuid::Uuid;

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

/// One whole sync of the open online session, reported to the status bar before and after. The
/// vault is held for its duration; a lock meanwhile still takes effect at once (see `state`).
pub async fn run_sync(app: &AppHandle) -> AppResult<SyncView> {
    let state = app.state::<AppState>();
    match state.active_user() {
        Some(user) if OPEN.load(Ordering::SeqCst) => {
            if user.mode == SessionMode::Oversight {
                return Err(AppError::not_for_role());
            }
        }
        _ => return Err(AppError::locked()),
    }
    {
        let mut view = guard(&state.sync);
        view.syncing = true;
        emit_sync(app, &view);
    }
    // Step by step, taking the vault for each step only: a chart opened meanwhile waits for one
    // step, not for the whole sync. A lock between steps ends the sync.
    let mut result = Ok(());
    let mut work = state.work.lock().await;
    for step in chartroom_station::sync::SyncStep::ALL {
        if step != chartroom_station::sync::SyncStep::Push {
            drop(work);
            tokio::task::yield_now().await;
            work = state.work.lock().await;
        }
        let active = state.active_user().map(|u| u.id);
        result = match &mut *work {
            Work::Clinical { vault, client: Some(client) } if active == Some(vault.user_id()) => {
                vault.sync_step(client, step, state.now()).await.map_err(AppError::from)
            }
            Work::Clinical { client: None, .. } => Err(AppError::new(
                "server.offline",
                "This session signed in offline. Sign in again while the server is reachable to sync.",
            )),
            Work::Clinical { .. } | Work::Closed => Err(AppError::locked()),
            Work::Oversight { .. } => Err(AppError::not_for_role()),
        };
        if result.is_err() {
            break;
        }
    }
    let indicator = match &*work {
        Work::Clinical { vault, .. } => vault.sync_indicator().ok(),
        Work::Closed | Work::Oversight { .. } => None,
    };
    drop(work);
    let mut view = guard(&state.sync);
    view.syncing = false;
    view.progress = None;
    view.last_error = result.as_ref().err().cloned();
    if let Some(i) = &indicator {
        apply(&mut view, i);
    }
    let out = view.clone();
    drop(view);
    emit_sync(app, &out);
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
