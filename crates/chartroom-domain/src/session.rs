//! The session lock state machine: `Locked → Unlocked(user) → Warning(countdown) → Locked`.
//!
//! The backend owns the timer; the UI only reports real user input as [`SessionEvent::Activity`].
//! Every event carries "now" from the injected clock, and time-based transitions are applied before the
//! event itself, so a late event can never revive a session that should already be locked.

use uuid::Uuid;

use crate::throttle::{FailureOutcome, LoginThrottle, Throttled};
use crate::{LockPolicy, Timestamp};

/// What the UI shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SessionState {
    /// Nobody is working; `owner` is the user whose session is locked, if any (unlock by the same user
    /// resumes it; anyone else switches user).
    Locked { owner: Option<Uuid> },
    /// `user` is working.
    Unlocked { user: Uuid },
    /// `user` is idle and the session locks at `locks_at` unless real input arrives.
    Warning { user: Uuid, locks_at: Timestamp },
}

/// Things that happen to a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// Time passes (a timer tick, or a resume from suspend).
    Tick,
    /// Real keyboard or pointer input from the user.
    Activity,
    /// The user proved who they are (slot unwrapped / server accepted the password).
    AuthSucceeded { user: Uuid, username: String },
    /// A wrong password for `username`.
    AuthFailed { username: String },
    /// Lock at once: the lock button, the OS screen lock, suspend.
    LockNow,
}

/// What a transition meant, for the audit trail and the UI.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transition {
    None,
    Unlocked {
        user: Uuid,
    },
    /// A different user logged in: the locked session of `ended` is over (its drafts stay encrypted).
    SwitchedUser {
        ended: Uuid,
        user: Uuid,
    },
    WarningStarted,
    WarningCancelled,
    Locked {
        reason: LockReason,
    },
    LoginFailed {
        attempts: u32,
    },
    LockedOut {
        until: Timestamp,
    },
    /// An authentication arrived while the user was throttled; nothing changed.
    Refused(Throttled),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockReason {
    Idle,
    AbsoluteLimit,
    Requested,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    Locked { owner: Option<Uuid> },
    Active { user: Uuid, started: Timestamp, last_activity: Timestamp, warned: bool },
}

/// One device's session (lock state and login throttling).
#[derive(Debug, Clone)]
pub struct Session {
    policy: LockPolicy,
    inner: Inner,
    throttle: LoginThrottle,
    last_now: Timestamp,
}

impl Session {
    pub fn new(policy: LockPolicy, now: Timestamp) -> Self {
        Session {
            policy,
            inner: Inner::Locked { owner: None },
            throttle: LoginThrottle::default(),
            last_now: now,
        }
    }

    pub fn policy(&self) -> &LockPolicy {
        &self.policy
    }

    /// The state at `now` (applies pending time-based transitions first).
    pub fn state(&mut self, now: Timestamp) -> SessionState {
        self.advance(now);
        self.view()
    }

    fn view(&self) -> SessionState {
        match self.inner {
            Inner::Locked { owner } => SessionState::Locked { owner },
            Inner::Active { user, warned: false, .. } => SessionState::Unlocked { user },
            Inner::Active { user, warned: true, last_activity, started, .. } => {
                SessionState::Warning { user, locks_at: self.lock_deadline(started, last_activity) }
            }
        }
    }

    fn lock_deadline(&self, started: Timestamp, last_activity: Timestamp) -> Timestamp {
        last_activity.plus(self.policy.idle()).min(started.plus(self.policy.absolute_session()))
    }

    /// Applies time: warning, then lock.
    fn advance(&mut self, now: Timestamp) -> Transition {
        // The clock contract is "never backwards"; if a caller breaks it, time simply does not move.
        let now = now.max(self.last_now);
        self.last_now = now;
        let Inner::Active { user, started, last_activity, warned } = self.inner else {
            return Transition::None;
        };
        let deadline = self.lock_deadline(started, last_activity);
        if now >= deadline {
            self.inner = Inner::Locked { owner: Some(user) };
            let reason = if now >= started.plus(self.policy.absolute_session()) {
                LockReason::AbsoluteLimit
            } else {
                LockReason::Idle
            };
            return Transition::Locked { reason };
        }
        if !warned && deadline.since(now) <= self.policy.warning() {
            self.inner = Inner::Active { user, started, last_activity, warned: true };
            return Transition::WarningStarted;
        }
        Transition::None
    }

    /// May `username` try a password now? Check before running the (expensive) key derivation.
    pub fn check_attempt(&mut self, username: &str, now: Timestamp) -> Result<(), Throttled> {
        self.advance(now);
        self.throttle.check(username, now, &self.policy)
    }

    /// Handles one event at `now`.
    pub fn handle(&mut self, event: SessionEvent, now: Timestamp) -> Transition {
        let timed = self.advance(now);
        let now = self.last_now;
        match event {
            SessionEvent::Tick => timed,
            SessionEvent::Activity => match self.inner {
                Inner::Active { user, started, warned, .. } => {
                    self.inner = Inner::Active { user, started, last_activity: now, warned: false };
                    if warned {
                        Transition::WarningCancelled
                    } else {
                        Transition::None
                    }
                }
                Inner::Locked { .. } => timed,
            },
            SessionEvent::LockNow => match self.inner {
                Inner::Active { user, .. } => {
                    self.inner = Inner::Locked { owner: Some(user) };
                    Transition::Locked { reason: LockReason::Requested }
                }
                Inner::Locked { .. } => timed,
            },
            SessionEvent::AuthFailed { username } => {
                match self.throttle.record_failure(&username, now, &self.policy) {
                    FailureOutcome::Failed { attempts } => Transition::LoginFailed { attempts },
                    FailureOutcome::LockedOut { until } => Transition::LockedOut { until },
                }
            }
            SessionEvent::AuthSucceeded { user, username } => {
                // The caller should have asked `check_attempt` before verifying the password; if it
                // did not, the throttle still holds here: a password tried during a delay or a
                // lockout does not unlock, even when it is right.
                if let Err(throttled) = self.check_attempt(&username, now) {
                    return Transition::Refused(throttled);
                }
                self.throttle.record_success(&username);
                let previous = match self.inner {
                    Inner::Locked { owner } => owner,
                    Inner::Active { user, .. } => Some(user),
                };
                // Every successful authentication starts the absolute-limit clock afresh: the user has
                // just proved who they are. Unlock by the session's owner keeps its drafts open; anyone
                // else ends it (switch user).
                self.inner = Inner::Active { user, started: now, last_activity: now, warned: false };
                match previous {
                    Some(ended) if ended != user => Transition::SwitchedUser { ended, user },
                    _ => Transition::Unlocked { user },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::{FREE_FAILURES, MAX_DELAY};
    use crate::DeviceProfile;
    use proptest::prelude::*;
    use std::time::Duration;

    const T0: Timestamp = Timestamp(1_800_000_000_000);
    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
    fn ok(user: Uuid, name: &str) -> SessionEvent {
        SessionEvent::AuthSucceeded { user, username: name.into() }
    }

    // hipaa (a)(2)(iii): an idle station warns, then locks at its timeout
    #[test]
    fn idle_station_warns_then_locks() {
        let mut s = Session::new(LockPolicy::defaults(DeviceProfile::Station), T0);
        let nurse = Uuid::new_v4();
        assert_eq!(s.handle(ok(nurse, "nurse"), T0), Transition::Unlocked { user: nurse });
        assert_eq!(s.handle(SessionEvent::Tick, T0.plus(secs(269))), Transition::None);
        assert_eq!(s.handle(SessionEvent::Tick, T0.plus(secs(270))), Transition::WarningStarted);
        assert_eq!(
            s.state(T0.plus(secs(271))),
            SessionState::Warning { user: nurse, locks_at: T0.plus(secs(300)) }
        );
        assert_eq!(
            s.handle(SessionEvent::Tick, T0.plus(secs(300))),
            Transition::Locked { reason: LockReason::Idle }
        );
        // Input after the deadline does not revive the session.
        assert_eq!(s.handle(SessionEvent::Activity, T0.plus(secs(301))), Transition::None);
        assert_eq!(s.state(T0.plus(secs(301))), SessionState::Locked { owner: Some(nurse) });
    }

    #[test]
    fn activity_during_warning_cancels_it() {
        let mut s = Session::new(LockPolicy::defaults(DeviceProfile::Station), T0);
        let nurse = Uuid::new_v4();
        s.handle(ok(nurse, "nurse"), T0);
        s.handle(SessionEvent::Tick, T0.plus(secs(280)));
        assert_eq!(s.handle(SessionEvent::Activity, T0.plus(secs(290))), Transition::WarningCancelled);
        assert_eq!(s.state(T0.plus(secs(559))), SessionState::Unlocked { user: nurse });
        assert!(matches!(s.state(T0.plus(secs(560))), SessionState::Warning { .. }));
    }

    // hipaa (a)(2)(iii): time asleep counts: a laptop closed overnight wakes locked
    #[test]
    fn laptop_closed_overnight_wakes_locked() {
        let mut s = Session::new(LockPolicy::defaults(DeviceProfile::Laptop), T0);
        let doc = Uuid::new_v4();
        s.handle(ok(doc, "doc"), T0);
        // The first thing after resume is a mouse move; the clock (which counts suspend) says 9 h.
        assert_eq!(
            s.handle(SessionEvent::Activity, T0.plus(secs(9 * 3600))),
            Transition::Locked { reason: LockReason::Idle }
        );
        assert_eq!(s.state(T0.plus(secs(9 * 3600))), SessionState::Locked { owner: Some(doc) });
    }

    // hipaa (a)(2)(iii): even a busy session locks at the absolute limit
    #[test]
    fn absolute_limit_locks_a_busy_session() {
        let mut s = Session::new(LockPolicy::defaults(DeviceProfile::Station), T0);
        let nurse = Uuid::new_v4();
        s.handle(ok(nurse, "nurse"), T0);
        let mut t = T0;
        let mut last = Transition::None;
        while t < T0.plus(secs(12 * 3600)) {
            t = t.plus(secs(60));
            last = s.handle(SessionEvent::Activity, t);
        }
        assert_eq!(last, Transition::Locked { reason: LockReason::AbsoluteLimit });
    }

    // hipaa (a)(2)(i) (a)(2)(iii): switching user ends the locked session instead of sharing it
    #[test]
    fn another_user_switches_and_ends_the_locked_session() {
        let mut s = Session::new(LockPolicy::defaults(DeviceProfile::Station), T0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        s.handle(ok(a, "a"), T0);
        s.handle(SessionEvent::LockNow, T0.plus(secs(1)));
        assert_eq!(s.handle(ok(b, "b"), T0.plus(secs(2))), Transition::SwitchedUser { ended: a, user: b });
    }

    #[test]
    fn failures_are_delayed_then_locked_out() {
        let policy = LockPolicy::defaults(DeviceProfile::Station);
        let mut s = Session::new(policy, T0);
        let fail = || SessionEvent::AuthFailed { username: "Nurse".into() };
        let mut t = T0;
        for i in 1..policy.max_failed_attempts() {
            assert!(s.check_attempt("nurse", t).is_ok(), "attempt {i} should be allowed");
            assert_eq!(s.handle(fail(), t), Transition::LoginFailed { attempts: i });
            if i > FREE_FAILURES {
                assert!(matches!(s.check_attempt("NURSE", t), Err(Throttled::Delay { .. })));
            }
            t = t.plus(MAX_DELAY);
        }
        assert!(matches!(s.handle(fail(), t), Transition::LockedOut { .. }));
        assert!(matches!(s.check_attempt("nurse", t.plus(secs(60))), Err(Throttled::LockedOut { .. })));
        // Another user is not affected.
        assert!(s.check_attempt("other", t).is_ok());
        // After the lockout the account may try again.
        assert!(s.check_attempt("nurse", t.plus(policy.lockout())).is_ok());
    }

    #[test]
    fn a_right_password_during_lockout_does_not_unlock() {
        let policy = LockPolicy::defaults(DeviceProfile::Station);
        let mut s = Session::new(policy, T0);
        let nurse = Uuid::new_v4();
        let mut t = T0;
        for _ in 0..policy.max_failed_attempts() {
            t = t.plus(MAX_DELAY);
            s.handle(SessionEvent::AuthFailed { username: "nurse".into() }, t);
        }
        assert!(matches!(
            s.handle(ok(nurse, "nurse"), t.plus(secs(1))),
            Transition::Refused(Throttled::LockedOut { .. })
        ));
        assert_eq!(s.state(t.plus(secs(1))), SessionState::Locked { owner: None });
        assert_eq!(
            s.handle(ok(nurse, "nurse"), t.plus(policy.lockout())),
            Transition::Unlocked { user: nurse }
        );
    }

    #[derive(Clone, Debug)]
    enum Step {
        Wait(u64),
        Activity,
        AuthOk(usize),
        AuthFail(usize),
        Lock,
        Suspend(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..400).prop_map(Step::Wait),
            Just(Step::Activity),
            (0usize..3).prop_map(Step::AuthOk),
            (0usize..3).prop_map(Step::AuthFail),
            Just(Step::Lock),
            (0u64..100_000).prop_map(Step::Suspend),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Over any sequence of events: never unlocked past the idle limit or the absolute limit,
        /// and never unlocked as a user who did not authenticate most recently.
        #[test]
        fn lock_invariants_hold(profile in prop_oneof![Just(DeviceProfile::Station), Just(DeviceProfile::Laptop)],
                                steps in proptest::collection::vec(step(), 1..200)) {
            let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
            let policy = LockPolicy::defaults(profile);
            let mut s = Session::new(policy, T0);
            let mut now = T0;
            let mut last_input: Option<Timestamp> = None;
            let mut session_start: Option<Timestamp> = None;
            let mut authenticated: Option<Uuid> = None;
            for st in steps {
                match st {
                    Step::Wait(d) | Step::Suspend(d) => { now = now.plus(secs(d)); s.handle(SessionEvent::Tick, now); }
                    Step::Activity => { s.handle(SessionEvent::Activity, now); if matches!(s.state(now), SessionState::Unlocked { .. }) { last_input = Some(now); } }
                    Step::AuthOk(i) => {
                        let t = s.handle(ok(users[i], &format!("u{i}")), now);
                        if matches!(t, Transition::Unlocked { .. } | Transition::SwitchedUser { .. }) {
                            authenticated = Some(users[i]); last_input = Some(now); session_start = Some(now);
                        } else {
                            prop_assert!(matches!(t, Transition::Refused(_)), "{t:?}");
                        }
                    }
                    Step::AuthFail(i) => { s.handle(SessionEvent::AuthFailed { username: format!("u{i}") }, now); }
                    Step::Lock => { s.handle(SessionEvent::LockNow, now); }
                }
                match s.state(now) {
                    SessionState::Unlocked { user } | SessionState::Warning { user, .. } => {
                        prop_assert_eq!(Some(user), authenticated);
                        let li = last_input.unwrap();
                        prop_assert!(now.since(li) < policy.idle(), "unlocked past idle limit");
                        prop_assert!(now.since(session_start.unwrap()) < policy.absolute_session());
                    }
                    SessionState::Locked { .. } => {}
                }
            }
        }
    }
}
