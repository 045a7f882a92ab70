//! Device lock policies (DESIGN §4): defaults and hard bounds per device profile.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a device is used; IT sets it at enrollment.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceProfile {
    /// A shared ward terminal: short idle timeout.
    Station,
    /// A physician's own laptop.
    Laptop,
}

impl DeviceProfile {
    /// The name used in configuration, on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceProfile::Station => "station",
            DeviceProfile::Laptop => "laptop",
        }
    }
}

impl std::str::FromStr for DeviceProfile {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "station" => Ok(DeviceProfile::Station),
            "laptop" => Ok(DeviceProfile::Laptop),
            _ => Err(PolicyError { key: "profile", message: "must be \"station\" or \"laptop\"".into() }),
        }
    }
}

/// A policy value outside its allowed bounds. Names the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy value for `{key}`: {message}")]
pub struct PolicyError {
    pub key: &'static str,
    pub message: String,
}

/// When a session warns, locks, and how failed logins are throttled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LockPolicy {
    profile: DeviceProfile,
    idle: Duration,
    warning: Duration,
    absolute_session: Duration,
    max_offline_age: Duration,
    max_failed_attempts: u32,
    lockout: Duration,
}

const MIN: u64 = 60;
const HOUR: u64 = 3600;

/// Bounds for one setting: (min, max) inclusive.
struct Bounds {
    key: &'static str,
    min: Duration,
    max: Duration,
}

impl Bounds {
    fn check(&self, value: Duration) -> Result<Duration, PolicyError> {
        if value < self.min || value > self.max {
            return Err(PolicyError {
                key: self.key,
                message: format!(
                    "must be between {} s and {} s, got {} s",
                    self.min.as_secs(),
                    self.max.as_secs(),
                    value.as_secs()
                ),
            });
        }
        Ok(value)
    }
}

impl LockPolicy {
    /// The defaults of a profile: station idle 5 min, laptop 15 min; 30 s warning; 12 h absolute
    /// session; 72 h maximum offline-login age; lockout for 15 min after 5 failures.
    pub fn defaults(profile: DeviceProfile) -> LockPolicy {
        LockPolicy {
            profile,
            idle: Duration::from_secs(match profile {
                DeviceProfile::Station => 5 * MIN,
                DeviceProfile::Laptop => 15 * MIN,
            }),
            warning: Duration::from_secs(30),
            absolute_session: Duration::from_secs(12 * HOUR),
            max_offline_age: Duration::from_secs(72 * HOUR),
            max_failed_attempts: 5,
            lockout: Duration::from_secs(15 * MIN),
        }
    }

    fn idle_bounds(profile: DeviceProfile) -> Bounds {
        let max = match profile {
            DeviceProfile::Station => 15 * MIN,
            DeviceProfile::Laptop => 30 * MIN,
        };
        Bounds { key: "idle_timeout", min: Duration::from_secs(MIN), max: Duration::from_secs(max) }
    }

    pub fn with_idle(mut self, idle: Duration) -> Result<Self, PolicyError> {
        self.idle = Self::idle_bounds(self.profile).check(idle)?;
        self.check_warning()?;
        Ok(self)
    }

    /// Shortens the idle timeout and warning below the configurable bounds, never lengthens them:
    /// for automated tests of the lock itself (debug builds of the desktop app only). The warning is
    /// kept shorter than the idle timeout.
    pub fn shortened(mut self, idle: Duration, warning: Duration) -> Self {
        self.idle = self.idle.min(idle).max(Duration::from_secs(2));
        self.warning = self.warning.min(warning).min(self.idle / 2);
        self
    }

    pub fn with_warning(mut self, warning: Duration) -> Result<Self, PolicyError> {
        self.warning = Bounds { key: "warning", min: Duration::from_secs(5), max: Duration::from_secs(120) }
            .check(warning)?;
        self.check_warning()?;
        Ok(self)
    }

    pub fn with_absolute_session(mut self, d: Duration) -> Result<Self, PolicyError> {
        self.absolute_session = Bounds {
            key: "absolute_session",
            min: Duration::from_secs(HOUR),
            max: Duration::from_secs(12 * HOUR),
        }
        .check(d)?;
        Ok(self)
    }

    pub fn with_max_offline_age(mut self, d: Duration) -> Result<Self, PolicyError> {
        self.max_offline_age = Bounds {
            key: "max_offline_age",
            min: Duration::from_secs(HOUR),
            max: Duration::from_secs(168 * HOUR),
        }
        .check(d)?;
        Ok(self)
    }

    pub fn with_lockout(mut self, max_failed_attempts: u32, lockout: Duration) -> Result<Self, PolicyError> {
        if !(3..=10).contains(&max_failed_attempts) {
            return Err(PolicyError {
                key: "max_failed_attempts",
                message: format!("must be between 3 and 10, got {max_failed_attempts}"),
            });
        }
        self.max_failed_attempts = max_failed_attempts;
        self.lockout =
            Bounds { key: "lockout", min: Duration::from_secs(MIN), max: Duration::from_secs(24 * HOUR) }
                .check(lockout)?;
        Ok(self)
    }

    fn check_warning(&self) -> Result<(), PolicyError> {
        if self.warning >= self.idle {
            return Err(PolicyError { key: "warning", message: "must be shorter than idle_timeout".into() });
        }
        Ok(())
    }

    pub fn profile(&self) -> DeviceProfile {
        self.profile
    }
    pub fn idle(&self) -> Duration {
        self.idle
    }
    pub fn warning(&self) -> Duration {
        self.warning
    }
    pub fn absolute_session(&self) -> Duration {
        self.absolute_session
    }
    pub fn max_offline_age(&self) -> Duration {
        self.max_offline_age
    }
    pub fn max_failed_attempts(&self) -> u32 {
        self.max_failed_attempts
    }
    pub fn lockout(&self) -> Duration {
        self.lockout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // hipaa (a)(2)(iii): no setting keeps a station unlocked for more than 15 idle minutes
    #[test]
    fn station_idle_is_capped_at_fifteen_minutes() {
        let p = LockPolicy::defaults(DeviceProfile::Station);
        assert_eq!(p.idle(), Duration::from_secs(300));
        assert!(p.with_idle(Duration::from_secs(15 * 60)).is_ok());
        let err = p.with_idle(Duration::from_secs(16 * 60)).unwrap_err();
        assert_eq!(err.key, "idle_timeout");
        assert!(LockPolicy::defaults(DeviceProfile::Laptop).with_idle(Duration::from_secs(16 * 60)).is_ok());
    }

    #[test]
    fn out_of_bounds_values_name_their_key() {
        let p = LockPolicy::defaults(DeviceProfile::Laptop);
        assert_eq!(
            p.with_absolute_session(Duration::from_secs(13 * 3600)).unwrap_err().key,
            "absolute_session"
        );
        assert_eq!(p.with_lockout(2, Duration::from_secs(900)).unwrap_err().key, "max_failed_attempts");
        assert_eq!(p.with_warning(Duration::from_secs(1)).unwrap_err().key, "warning");
        let short = LockPolicy::defaults(DeviceProfile::Station).with_idle(Duration::from_secs(60)).unwrap();
        assert_eq!(short.with_warning(Duration::from_secs(90)).unwrap_err().key, "warning");
        assert_eq!("kiosk".parse::<DeviceProfile>().unwrap_err().key, "profile");
    }
}
