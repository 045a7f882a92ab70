//! The background side of a session: the idle timer, locking (idle, manual, OS screen lock,
//! suspend), the server reachability check and the periodic sync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chartroom_station::domain::session::{SessionEvent, Transition};
use tauri::{AppHandle, Emitter, Manager};

use crate::dto::{LockReason, SessionView, SyncView};
use crate::state::{guard, AppState, Work};

/// The main window's label.
pub const MAIN: &str = "main";

/// Set while a vault or oversight session is open (read by the timer without waiting for `work`).
pub static OPEN: AtomicBool = AtomicBool::new(false);

/// How often the timer looks at the clock.
const TICK: Duration = Duration::from_millis(500);
/// How often the server's health is checked while nobody syncs.
const REACHABILITY: Duration = Duration::from_secs(15);
/// How often an online session syncs on its own.
const SYNC_EVERY: Duration = Duration::from_secs(60);

/// Sends the session view to the UI.
pub fn emit_session(app: &AppHandle, view: &SessionView) {
    // A window that is gone has nothing to show; the state is the same either way.
    let _ = app.emit("session", view);
}

pub fn emit_sync(app: &AppHandle, view: &SyncView) {
    let _ = app.emit("sync", view);
}

/// Locks now for `reason` (manual, OS screen lock, suspend) and closes what is open.
pub async fn lock_now(app: &AppHandle, reason: LockReason) -> SessionView {
    let state = app.state::<AppState>();
    if state.active_user().is_none() {
        // Already locked: leave the lock screen alone (someone may be typing a password).
        return state.session_view();
    }
    let (_, view) = state.handle(SessionEvent::LockNow, Some(reason));
    close(app).await;
    view
}

/// Locks when the OS locks the screen or the machine is about to sleep (logind and screensaver
/// signals on D-Bus). Without a bus the idle timer still locks; the problem is reported once.
#[cfg(target_os = "linux")]
pub fn listen_for_os_lock(app: AppHandle) -> crate::os_lock::Listener {
    use crate::os_lock::{listen, Buses, OsSignal};
    listen(
        Buses::default(),
        move |signal| {
            let reason = match signal {
                OsSignal::ScreenLocked => LockReason::ScreenLocked,
                OsSignal::Suspending => LockReason::Suspend,
            };
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                lock_now(&app, reason).await;
            });
        },
        |bus, message| eprintln!("chartroom: no {bus} D-Bus ({message}); the idle timer still locks"),
    )
}

/// After the session locked: the page is reloaded at once (every piece of PHI it held is gone,
/// and WebKit's memory is returned), then the vault is closed, which wipes its keys.
pub async fn close(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(MAIN) {
        let _ = w.reload();
    }
    let state = app.state::<AppState>();
    let mut work = state.work.lock().await;
    close_work(&state, &mut work);
}

/// Closes what is open (no reload): used before a new sign-in replaces it.
pub fn close_work(state: &AppState, work: &mut Work) {
    *guard(&state.census) = None;
    match std::mem::replace(work, Work::Closed) {
        // Records the lock in the audit trail and wipes the data key and every patient key.
        Work::Clinical { vault, .. } => drop(vault.lock()),
        // Wipes the session's tokens.
        Work::Oversight { session, .. } => drop(session.lock()),
        Work::Closed => {}
    }
    OPEN.store(false, Ordering::SeqCst);
}

/// The idle timer: warns, counts down, locks. Also notices a session that locked on its own
/// (absolute limit, a night asleep) and closes it.
pub fn spawn_timer(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        let mut last_countdown: Option<u32> = None;
        loop {
            tokio::time::sleep(TICK).await;
            let state = app.state::<AppState>();
            let (t, view) = state.handle(SessionEvent::Tick, None);
            let countdown = match &view {
                SessionView::Active { warning_seconds_left, .. } => *warning_seconds_left,
                SessionView::Locked { .. } => None,
            };
            if countdown != last_countdown || matches!(t, Transition::WarningStarted) {
                emit_session(&app, &view);
                last_countdown = countdown;
            }
            if matches!(view, SessionView::Locked { .. }) && OPEN.load(Ordering::SeqCst) {
                emit_session(&app, &view);
                close(&app).await;
            }
        }
    });
}

/// Checks now and then whether the server answers (the lock screen's online indicator, and
/// whether a login tries the server first).
pub fn spawn_reachability(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        loop {
            let state = app.state::<AppState>();
            // The enrolled server, from the profile's device record (no keyring, nothing opened),
            // at the address and with the pins the machine policy gives.
            let link = state.profile().ok().and_then(|p| p.read_device().ok()).and_then(|d| d.server);
            let reachable = match (link, state.machine_policy()) {
                (None, _) | (_, Err(_)) => None,
                (Some(link), Ok(policy)) => match policy.server_client(&link) {
                    Ok(client) => Some(
                        tokio::time::timeout(Duration::from_secs(5), client.health())
                            .await
                            .is_ok_and(|r| r.is_ok()),
                    ),
                    Err(_) => Some(false),
                },
            };
            *guard(&state.reachable) = reachable;
            tokio::time::sleep(REACHABILITY).await;
        }
    });
}

/// Syncs an online clinical session every minute (and right after sign-in).
pub fn spawn_sync(app: AppHandle) {
    tauri::async_runtime::spawn(async move {
        loop {
            tokio::time::sleep(SYNC_EVERY).await;
            if OPEN.load(Ordering::SeqCst) {
                let _ = crate::commands::sync::run_sync(&app).await;
            }
        }
    });
}
