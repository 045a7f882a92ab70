//! Sign-in, lock and the user's activity.

use std::sync::atomic::Ordering;

use chartroom_station::client::ServerClient;
use chartroom_station::crypto::Password;
use chartroom_station::domain::session::SessionEvent;
use chartroom_station::{LockedVault, Login, StationError};
use tauri::{AppHandle, Manager, State};

use crate::dto::{LockReason, SessionMode, SessionView};
use crate::error::{AppError, AppResult};
use crate::runtime;
use crate::state::{guard, AppState, SignedIn, Work};

/// The session as it is now (the UI asks at start and after every reload).
#[tauri::command(rename_all = "snake_case")]
pub fn session(state: State<'_, AppState>) -> SessionView {
    state.session_view()
}

/// Signs in: the same user unlocks their session; another user switches (the first user's drafts
/// stay in the encrypted store, theirs alone). Online when the server answers — then the session
/// can sync — otherwise offline with the user's key slot on this station.
#[tauri::command(rename_all = "snake_case")]
pub async fn login(
    app: AppHandle,
    state: State<'_, AppState>,
    username: String,
    password: String,
) -> AppResult<SessionView> {
    let password = Password::new(password);
    let username = username.trim().to_owned();
    if username.is_empty() {
        return Err(AppError::login_failed());
    }
    let locked = state.locked_vault()?;
    let mut work = state.work.lock().await;
    // Whatever was open (a locked session's vault is already closed) ends before anyone else's opens.
    runtime::close_work(&state, &mut work);
    let (mut opened, user) = authenticate(&state, &locked, &username, &password).await?;
    if let Work::Clinical { vault, .. } = &mut opened {
        vault.set_progress(Some(progress(app.clone())));
        vault.set_page_cache_kib(crate::state::PAGE_CACHE_KIB)?;
    }
    let policy = state.policy_for(&locked);
    let (_, view) = state.signed_in(user, policy);
    *work = opened;
    runtime::OPEN.store(true, Ordering::SeqCst);
    drop(work);
    // A fresh online session syncs at once (in the background; the status bar shows progress).
    let app2 = app.clone();
    tauri::async_runtime::spawn(async move {
        let _ = crate::commands::sync::run_sync(&app2).await;
    });
    Ok(view)
}

/// Shows a running pull's progress in the status bar.
fn progress(app: AppHandle) -> chartroom_station::sync::Progress {
    chartroom_station::sync::Progress(std::sync::Arc::new(move |rows| {
        let state = app.state::<AppState>();
        let mut view = guard(&state.sync);
        view.progress =
            Some(crate::dto::SyncProgress { done: u32::try_from(rows).unwrap_or(u32::MAX), total: None });
        runtime::emit_sync(&app, &view);
    }))
}

async fn authenticate(
    state: &AppState,
    locked: &LockedVault,
    username: &str,
    password: &Password,
) -> AppResult<(Work, SignedIn)> {
    let reachable = *guard(&state.reachable);
    if locked.server().is_some() && reachable != Some(false) {
        let client = locked.server_client().map_err(AppError::from)?;
        match locked.login(&client, username, password, state.now()).await {
            Ok(Login::Clinical(vault)) => {
                *guard(&state.reachable) = Some(true);
                return Ok(clinical(vault, Some(client)));
            }
            Ok(Login::Oversight(session)) => {
                *guard(&state.reachable) = Some(true);
                let user = SignedIn {
                    id: session.user_id(),
                    username: session.username().to_owned(),
                    role: session.role(),
                    units: vec![],
                    mode: SessionMode::Oversight,
                    online: true,
                };
                return Ok((Work::Oversight { session: Box::new(session), client }, user));
            }
            Err(e) if e.is_retryable() => *guard(&state.reachable) = Some(false),
            Err(StationError::DeviceRevoked) => {
                // The profile is wiped; the lock screen reloads into the enrollment screen.
                state.revoked.store(true, Ordering::SeqCst);
                return Err(AppError::from(StationError::DeviceRevoked));
            }
            Err(e) => return Err(login_error(e, true)),
        }
    }
    match locked.unlock(username, password, state.now()) {
        Ok(vault) => Ok(clinical(vault, None)),
        Err(e) => Err(login_error(e, false)),
    }
}

fn clinical(vault: chartroom_station::UnlockedVault, client: Option<ServerClient>) -> (Work, SignedIn) {
    let user = SignedIn {
        id: vault.user_id(),
        username: vault.username().to_owned(),
        role: vault.role().unwrap_or(chartroom_station::domain::Role::Nurse),
        units: vault.units().to_vec(),
        mode: SessionMode::Clinical,
        online: vault.is_online(),
    };
    (Work::Clinical { vault: Box::new(vault), client }, user)
}

/// A failed sign-in says as little as possible: never which of username and password was wrong.
fn login_error(e: StationError, online: bool) -> AppError {
    let code = match &e {
        StationError::Server(c) => c.code().unwrap_or("server.invalid").to_owned(),
        other => other.code().to_owned(),
    };
    match code.as_str() {
        "auth.wrong_password" | "auth.invalid_credentials" => AppError::login_failed(),
        "auth.unknown_user" if online => AppError::login_failed(),
        "auth.unknown_user" => AppError::new(
            "auth.needs_server",
            "This station cannot reach the server to check this sign-in. The first sign-in on a \
             station needs the server; try again when it is back, or use another station.",
        ),
        "access.forbidden" | "access.out_of_scope" | "auth.role_unknown" => AppError::new(
            "auth.no_access_here",
            "Your account has no access to patient records on this station.",
        ),
        _ => AppError::from(e),
    }
}

/// Locks now (the Lock button, Ctrl+L).
#[tauri::command(rename_all = "snake_case")]
pub async fn lock(app: AppHandle) -> AppResult<SessionView> {
    Ok(runtime::lock_now(&app, LockReason::Manual).await)
}

/// Real keyboard or pointer input happened (the UI reports only trusted input events). Nothing
/// else — no timer, sync or open dialog — keeps a session alive.
#[tauri::command(rename_all = "snake_case")]
pub fn activity(app: AppHandle, state: State<'_, AppState>) {
    let (t, view) = state.handle(SessionEvent::Activity, None);
    if t == chartroom_station::domain::session::Transition::WarningCancelled {
        runtime::emit_session(&app, &view);
    }
}
