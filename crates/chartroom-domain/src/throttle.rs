//! Failed-login throttling: growing delays, then a lockout after N failures. Serializable, so a
//! station keeps counting across restarts (otherwise every new process would grant fresh guesses).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{LockPolicy, Timestamp};

/// Why a login attempt may not be made now.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Throttled {
    #[error("too many failed attempts; try again in {} s", retry_after.as_secs().max(1))]
    Delay { retry_after: Duration },
    #[error("account locked on this device after repeated failed attempts; try again in {} min", retry_after.as_secs().div_ceil(60))]
    LockedOut { retry_after: Duration },
}

/// What a failed attempt led to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FailureOutcome {
    Failed { attempts: u32 },
    LockedOut { until: Timestamp },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Attempts {
    failures: u32,
    last_failure: Option<Timestamp>,
    locked_until: Option<Timestamp>,
}

/// Failures before delays start; after that each failure doubles the delay, up to [`MAX_DELAY`].
pub const FREE_FAILURES: u32 = 2;
/// The longest delay between attempts before the lockout.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Failed attempts per username, ASCII case-folded exactly as key-slot lookup is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginThrottle {
    users: BTreeMap<String, Attempts>,
}

impl LoginThrottle {
    /// May `username` try a password now? Ask before running the (expensive) key derivation.
    pub fn check(&mut self, username: &str, now: Timestamp, policy: &LockPolicy) -> Result<(), Throttled> {
        let a = self.current(username, now, policy);
        if let Some(until) = a.locked_until {
            if now < until {
                return Err(Throttled::LockedOut { retry_after: until.since(now) });
            }
        }
        if let (Some(last), true) = (a.last_failure, a.failures > FREE_FAILURES) {
            let delay = delay_after(a.failures);
            if now < last.plus(delay) {
                return Err(Throttled::Delay { retry_after: last.plus(delay).since(now) });
            }
        }
        Ok(())
    }

    /// Counts a wrong password (or unknown user) for `username`.
    pub fn record_failure(&mut self, username: &str, now: Timestamp, policy: &LockPolicy) -> FailureOutcome {
        let mut a = self.current(username, now, policy);
        a.failures += 1;
        a.last_failure = Some(now);
        let outcome = if a.failures >= policy.max_failed_attempts() {
            let until = now.plus(policy.lockout());
            a.locked_until = Some(until);
            FailureOutcome::LockedOut { until }
        } else {
            FailureOutcome::Failed { attempts: a.failures }
        };
        self.users.insert(username.to_ascii_lowercase(), a);
        outcome
    }

    /// Forgets the failures of `username` after a successful login.
    pub fn record_success(&mut self, username: &str) {
        self.users.remove(&username.to_ascii_lowercase());
    }

    /// The record for `username`, forgetting failures older than the lockout window.
    fn current(&mut self, username: &str, now: Timestamp, policy: &LockPolicy) -> Attempts {
        let entry = self.users.entry(username.to_ascii_lowercase()).or_default();
        let stale = entry.last_failure.is_some_and(|t| now.since(t) >= policy.lockout())
            && entry.locked_until.is_none_or(|u| now >= u);
        if stale {
            *entry = Attempts::default();
        }
        *entry
    }
}

/// Delay after `failures` failed attempts: 1 s, 2 s, 4 s … up to a minute.
fn delay_after(failures: u32) -> Duration {
    let exp = failures.saturating_sub(FREE_FAILURES + 1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_DELAY)
}
