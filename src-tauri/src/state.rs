//! Process-wide application state, managed by Tauri and shared with commands.
//!
//! Two locks, taken in this order and never the other way round:
//! - `lock` (a std mutex, held for microseconds): the session state machine — who is signed in, the
//!   idle timer, the lock reason. It decides whether patient data may be shown *now*.
//! - `work` (an async mutex, held across I/O such as a sync): the open vault or oversight session.
//!
//! The idle timer therefore locks at once even while a long sync holds `work`: it marks the session
//! locked (every command re-checks that after taking `work`), reloads the webview (which drops every
//! piece of PHI the page held), and then waits for `work` to close the vault and wipe its keys.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chartroom_station::client::ServerClient;
use chartroom_station::domain::session::{Session, SessionEvent, SessionState, Transition};
use chartroom_station::domain::{Clock, LockPolicy, Role, Timestamp};
use chartroom_station::{LockedVault, MachinePolicy, OsKeyring, UnlockedVault};
use uuid::Uuid;

use crate::dto::{LockReason, SessionMode, SessionView, SyncView, UserView};
use crate::error::{AppError, AppResult};

/// Environment variable that overrides where the station profile lives (tests, kiosks, demos).
pub const PROFILE_DIR_ENV: &str = "CHARTROOM_PROFILE_DIR";

/// Debug builds only: shortens the idle timeout (seconds) so tests can watch the lock happen.
pub const TEST_IDLE_ENV: &str = "CHARTROOM_TEST_IDLE_SECONDS";

/// What is open while someone is signed in.
pub enum Work {
    /// Nothing: the session is locked (or nobody ever signed in).
    Closed,
    /// A clinician: the station's data key is open. `client` is set when the login was online (the
    /// session can sync); an offline unlock has none until the next online login.
    Clinical { vault: Box<UnlockedVault>, client: Option<ServerClient> },
    /// An auditor: no patient data on the station, the audit trail on the server.
    Oversight { session: Box<chartroom_station::OversightSession>, client: ServerClient },
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Work::Closed => "Work::Closed",
            Work::Clinical { .. } => "Work::Clinical",
            Work::Oversight { .. } => "Work::Oversight",
        })
    }
}

/// The session state machine plus what the lock screen needs to say.
#[derive(Debug)]
pub struct LockState {
    pub session: Session,
    pub reason: LockReason,
    /// The signed-in user (also while their session is locked).
    pub user: Option<SignedIn>,
}

#[derive(Debug, Clone)]
pub struct SignedIn {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub units: Vec<String>,
    pub mode: SessionMode,
    pub online: bool,
}

/// The open database's page cache in the app, in KiB. A station runs for days and its users open
/// chart after chart: with the store's default bound (sized for a headless sync of a whole
/// station) the cache kept every page ever read, decrypted — memory that only grows (measured:
/// +60 MiB over 250 chart opens at 10,000 patients). A chart is a few dozen pages; SQLCipher
/// decrypts a page that fell out of the cache in microseconds.
pub const PAGE_CACHE_KIB: i64 = 8 * 1024;

/// State shared by all commands and background tasks.
pub struct AppState {
    /// The station profile directory, or `None` when it could not be determined. That is not
    /// fatal at startup: the window still opens and commands report a clear error instead.
    profile_dir: Option<PathBuf>,
    clock: Box<dyn Clock>,
    lock: Mutex<LockState>,
    pub work: tokio::sync::Mutex<Work>,
    /// The last sync outcome and whether one runs now (shown in the status bar).
    pub sync: Mutex<SyncView>,
    /// Held by the running sync: one at a time (two pulls interleaving pages would move the cursor back).
    pub sync_gate: tokio::sync::Mutex<()>,
    /// The open session's census, kept for searching (see `census.rs`); set and dropped only
    /// while `work` is held, so a lock cannot leave it behind.
    pub census: Mutex<Option<crate::census::Census>>,
    /// Whether the server answered the last health check (`None`: not enrolled or not checked yet).
    pub reachable: Mutex<Option<bool>>,
    /// Set when the server said this device was revoked and the profile was wiped.
    pub revoked: std::sync::atomic::AtomicBool,
    keystore: Mutex<Option<Arc<OsKeyring>>>,
    /// The machine policy IT installed, read once at start. An invalid one keeps the app at an
    /// error screen naming the bad key: nothing opens under a policy that could not be applied.
    machine: Result<MachinePolicy, chartroom_station::policy::InvalidPolicy>,
    test_idle: Option<Duration>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("profile_dir", &self.profile_dir).finish_non_exhaustive()
    }
}

/// Locks a std mutex; a panic elsewhere while it was held leaves the data usable (it is plain state).
pub fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AppState {
    /// Resolves the profile directory: `$CHARTROOM_PROFILE_DIR` if set and non-empty, otherwise
    /// `<local data dir>/chartroom/profile` (for example `~/.local/share/chartroom/profile`).
    ///
    /// `local_data_dir` is Tauri's path resolver result, passed in so this stays testable.
    pub fn resolve(env_override: Option<PathBuf>, local_data_dir: Option<PathBuf>) -> Self {
        Self::with_clock(env_override, local_data_dir, Box::new(chartroom_station::clock::system_clock()))
    }

    pub fn with_clock(
        env_override: Option<PathBuf>,
        local_data_dir: Option<PathBuf>,
        clock: Box<dyn Clock>,
    ) -> Self {
        let profile_dir = env_override
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| local_data_dir.map(|d| d.join("chartroom").join("profile")));
        let test_idle = if cfg!(debug_assertions) {
            std::env::var(TEST_IDLE_ENV).ok().and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs)
        } else {
            None
        };
        let now = clock.now();
        let policy = LockPolicy::defaults(chartroom_station::domain::DeviceProfile::Station);
        AppState {
            profile_dir,
            clock,
            lock: Mutex::new(LockState {
                session: Session::new(policy, now),
                reason: LockReason::Startup,
                user: None,
            }),
            work: tokio::sync::Mutex::new(Work::Closed),
            sync: Mutex::new(SyncView::default()),
            sync_gate: tokio::sync::Mutex::new(()),
            census: Mutex::new(None),
            reachable: Mutex::new(None),
            revoked: std::sync::atomic::AtomicBool::new(false),
            keystore: Mutex::new(None),
            machine: MachinePolicy::load_system(),
            test_idle,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The station profile (the directory may not exist yet on a fresh station).
    pub fn profile(&self) -> AppResult<chartroom_station::Profile> {
        self.profile_dir
            .as_ref()
            .map(chartroom_station::Profile::new)
            .ok_or_else(AppError::profile_dir_unavailable)
    }

    /// The OS keyring, connected once.
    pub fn keystore(&self) -> AppResult<Arc<OsKeyring>> {
        let mut k = guard(&self.keystore);
        if let Some(k) = k.as_ref() {
            return Ok(k.clone());
        }
        let connected = Arc::new(OsKeyring::connect().map_err(chartroom_station::StationError::from)?);
        *k = Some(connected.clone());
        Ok(connected)
    }

    /// The machine policy, or the error that keeps the app from starting.
    pub fn machine_policy(&self) -> AppResult<&MachinePolicy> {
        self.machine.as_ref().map_err(|e| AppError::from(chartroom_station::StationError::Policy(e.clone())))
    }

    /// Opens the enrolled profile under the machine policy (no secret is read yet).
    pub fn locked_vault(&self) -> AppResult<LockedVault> {
        let keystore: Arc<dyn chartroom_station::DeviceSecretStore> = self.keystore()?;
        let policy = self.machine_policy()?.clone();
        Ok(LockedVault::open(self.profile()?, keystore, self.now())?.with_machine_policy(policy)?)
    }

    /// The lock policy for this device (the machine policy's; shortened only in debug test runs).
    pub fn policy_for(&self, locked: &LockedVault) -> LockPolicy {
        let policy = locked.lock_policy();
        match self.test_idle {
            Some(idle) => policy.shortened(idle, idle / 2),
            None => policy,
        }
    }

    pub fn lock_state(&self) -> MutexGuard<'_, LockState> {
        guard(&self.lock)
    }

    /// The session as the UI shows it, after applying the time that passed.
    pub fn session_view(&self) -> SessionView {
        self.handle(SessionEvent::Tick, None).1
    }

    /// Who may see patient data right now: `Some` only while a session is active (not locked).
    pub fn active_user(&self) -> Option<SignedIn> {
        self.handle(SessionEvent::Tick, None);
        let now = self.now();
        let mut l = self.lock_state();
        match l.session.state(now) {
            SessionState::Unlocked { user } | SessionState::Warning { user, .. } => {
                l.user.clone().filter(|u| u.id == user)
            }
            SessionState::Locked { .. } => None,
        }
    }

    /// Applies a session event (tick, activity, lock) and returns what changed and the new view.
    pub fn handle(&self, event: SessionEvent, os_reason: Option<LockReason>) -> (Transition, SessionView) {
        let now = self.now();
        let mut l = self.lock_state();
        let t = l.session.handle(event, now);
        if let Transition::Locked { reason } = t {
            l.reason = os_reason.unwrap_or(match reason {
                chartroom_station::domain::session::LockReason::Idle => LockReason::Idle,
                chartroom_station::domain::session::LockReason::AbsoluteLimit => LockReason::AbsoluteLimit,
                chartroom_station::domain::session::LockReason::Requested => LockReason::Manual,
            });
        }
        let state = l.session.state(now);
        (t, view_of(&mut l, state, now))
    }

    /// Records a successful sign-in: a new session for `user` (switching user if someone else's
    /// session was locked), with the device's lock policy.
    pub fn signed_in(&self, user: SignedIn, policy: LockPolicy) -> (Transition, SessionView) {
        let now = self.now();
        let mut l = self.lock_state();
        if l.session.policy() != &policy {
            // The device profile is known once the vault is open; a policy change starts afresh.
            l.session = Session::new(policy, now);
        }
        let t = l
            .session
            .handle(SessionEvent::AuthSucceeded { user: user.id, username: user.username.clone() }, now);
        if matches!(t, Transition::Unlocked { .. } | Transition::SwitchedUser { .. }) {
            l.user = Some(user);
        }
        let state = l.session.state(now);
        (t, view_of(&mut l, state, now))
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn view_of(l: &mut LockState, state: SessionState, now: Timestamp) -> SessionView {
    let policy = *l.session.policy();
    match (state, &l.user) {
        (SessionState::Unlocked { user }, Some(u)) | (SessionState::Warning { user, .. }, Some(u))
            if u.id == user =>
        {
            let warning_seconds_left = match state {
                SessionState::Warning { locks_at, .. } => {
                    Some(secs(locks_at.since(now)).max(u32::from(locks_at > now)))
                }
                _ => None,
            };
            SessionView::Active {
                user: UserView {
                    username: u.username.clone(),
                    role: u.role,
                    units: u.units.clone(),
                    mode: u.mode,
                    online: u.online,
                },
                warning_seconds_left,
                idle_timeout_s: secs(policy.idle()),
                warning_s: secs(policy.warning()),
            }
        }
        _ => SessionView::Locked {
            reason: l.reason,
            signed_in: l.user.as_ref().map(|u| u.username.clone()),
            idle_minutes: (l.reason == LockReason::Idle).then(|| secs(policy.idle()).div_ceil(60)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chartroom_station::domain::clock::ManualClock;

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

    #[derive(Clone)]
    struct Shared(Arc<ManualClock>);
    impl Clock for Shared {
        fn now(&self) -> Timestamp {
            self.0.now()
        }
    }

    fn nurse(name: &str) -> SignedIn {
        SignedIn {
            id: Uuid::now_v7(),
            username: name.into(),
            role: Role::Nurse,
            units: vec!["ICU".into()],
            mode: SessionMode::Clinical,
            online: true,
        }
    }

    fn state() -> (AppState, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(Timestamp(1_000_000)));
        (AppState::with_clock(Some("/tmp/p".into()), None, Box::new(Shared(clock.clone()))), clock)
    }

    // hipaa (a)(2)(iii): the app's session state locks on idle and the user is no longer active
    #[test]
    fn idle_warns_then_locks_and_the_user_is_no_longer_active() {
        let (s, clock) = state();
        let policy = LockPolicy::defaults(chartroom_station::domain::DeviceProfile::Station);
        s.signed_in(nurse("n1"), policy);
        assert!(s.active_user().is_some());
        clock.advance(policy.idle() - policy.warning() + Duration::from_secs(1));
        let (t, view) = s.handle(SessionEvent::Tick, None);
        assert_eq!(t, Transition::WarningStarted);
        assert!(matches!(view, SessionView::Active { warning_seconds_left: Some(29), .. }), "{view:?}");
        clock.advance(policy.warning());
        let (t, view) = s.handle(SessionEvent::Tick, None);
        assert!(matches!(t, Transition::Locked { .. }));
        assert!(
            matches!(&view, SessionView::Locked { reason: LockReason::Idle, signed_in: Some(u), idle_minutes: Some(5) } if u == "n1"),
            "{view:?}"
        );
        assert!(s.active_user().is_none());
    }

    #[test]
    fn activity_during_the_warning_keeps_the_session() {
        let (s, clock) = state();
        let policy = LockPolicy::defaults(chartroom_station::domain::DeviceProfile::Station);
        s.signed_in(nurse("n1"), policy);
        clock.advance(policy.idle() - Duration::from_secs(5));
        s.handle(SessionEvent::Tick, None);
        let (t, view) = s.handle(SessionEvent::Activity, None);
        assert_eq!(t, Transition::WarningCancelled);
        assert!(matches!(view, SessionView::Active { warning_seconds_left: None, .. }));
        clock.advance(policy.idle() - Duration::from_secs(1));
        assert!(s.active_user().is_some());
    }

    #[test]
    fn os_lock_reason_is_kept_and_another_user_switches() {
        let (s, _clock) = state();
        let policy = LockPolicy::defaults(chartroom_station::domain::DeviceProfile::Station);
        s.signed_in(nurse("n1"), policy);
        let (_, view) = s.handle(SessionEvent::LockNow, Some(LockReason::Suspend));
        assert!(matches!(view, SessionView::Locked { reason: LockReason::Suspend, .. }));
        let (t, view) = s.signed_in(nurse("n2"), policy);
        assert!(matches!(t, Transition::SwitchedUser { .. }));
        assert!(matches!(&view, SessionView::Active { user, .. } if user.username == "n2"));
    }

    #[test]
    fn a_night_asleep_wakes_locked() {
        let (s, clock) = state();
        let policy = LockPolicy::defaults(chartroom_station::domain::DeviceProfile::Laptop);
        s.signed_in(nurse("n1"), policy);
        clock.advance(Duration::from_secs(9 * 3600));
        assert!(s.active_user().is_none());
        assert!(matches!(s.session_view(), SessionView::Locked { .. }));
    }
}
