//! Time as the domain sees it: UTC milliseconds from an injected [`Clock`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A UTC instant in milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// The civil UTC date and time `(year, month, day, hour, minute, second)`.
    pub fn to_civil(self) -> (i64, u32, u32, u32, u32, u32) {
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        // rem < 86 400, so these fit in u32.
        let rem = u32::try_from(rem).unwrap_or(0);
        (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
    }

    /// Midnight UTC of a civil date.
    pub fn from_civil_date(y: i64, m: u32, d: u32) -> Timestamp {
        Timestamp(days_from_civil(y, m, d) * 86_400_000)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, to the second: `2026-11-27T07:23:03Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.to_civil();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let (m, d) = (u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1));
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The source of "now" for every decision that depends on time.
///
/// Implementations must count time spent suspended: a laptop closed overnight must wake up with its
/// session idle for the whole night. They must also never go backwards.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// A clock that never goes backwards and counts suspended time, built from two raw sources: a
/// monotonic one (which on Linux stops during suspend, like Rust's `Instant`) and the wall clock
/// (which keeps running through suspend but can be stepped back by NTP or an admin).
///
/// Each reading advances "now" by `max(Δmonotonic, Δwall)` since the previous reading, with a
/// backward wall step counting as zero. Suspend shows up as a wall delta the monotonic source did not
/// see; a backward step is absorbed by the monotonic delta *of that reading only*, so a later suspend
/// is still counted in full. A forward wall step can only make a session lock early — the safe side.
#[derive(Debug)]
pub struct SuspendAwareClock<M, W> {
    monotonic: M,
    wall: W,
    /// (last monotonic reading, last wall reading, last "now").
    last: std::sync::Mutex<(Timestamp, Timestamp, Timestamp)>,
}

impl<M, W> SuspendAwareClock<M, W>
where
    M: Fn() -> Timestamp + Send + Sync,
    W: Fn() -> Timestamp + Send + Sync,
{
    pub fn new(monotonic: M, wall: W) -> Self {
        let (mono, wall_now) = (monotonic(), wall());
        SuspendAwareClock { monotonic, wall, last: std::sync::Mutex::new((mono, wall_now, wall_now)) }
    }
}

impl<M, W> Clock for SuspendAwareClock<M, W>
where
    M: Fn() -> Timestamp + Send + Sync,
    W: Fn() -> Timestamp + Send + Sync,
{
    fn now(&self) -> Timestamp {
        // A poisoned lock only means another thread panicked mid-reading; the state is three plain
        // timestamps and still consistent.
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mono, wall) = ((self.monotonic)(), (self.wall)());
        let step = mono.since(last.0).max(wall.since(last.1));
        let now = last.2.plus(step);
        *last = (mono, wall, now);
        now
    }
}

/// A clock moved by hand, for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        ManualClock(t.0.into())
    }
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn civil_round_trip() {
        for days in [-719_468i64, -1, 0, 1, 11_016, 20_784, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(Timestamp(1_795_764_183_000).to_string(), "2026-11-27T07:23:03Z");
        assert_eq!(Timestamp::from_civil_date(2000, 2, 29).to_string(), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn suspend_aware_clock_counts_suspend_and_ignores_backward_steps() {
        let mono = Arc::new(AtomicI64::new(1_000));
        let wall = Arc::new(AtomicI64::new(1_700_000_000_000));
        let (m, w) = (mono.clone(), wall.clone());
        let clock = SuspendAwareClock::new(
            move || Timestamp(m.load(Ordering::SeqCst)),
            move || Timestamp(w.load(Ordering::SeqCst)),
        );
        let start = clock.now();
        // Suspended overnight: the monotonic source stops, the wall clock runs on.
        wall.fetch_add(8 * 3_600_000, Ordering::SeqCst);
        assert_eq!(clock.now().since(start), Duration::from_secs(8 * 3600));
        // NTP steps the wall clock back an hour while 10 s pass: time moves forward by those 10 s.
        wall.fetch_sub(3_600_000, Ordering::SeqCst);
        mono.fetch_add(10_000, Ordering::SeqCst);
        wall.fetch_add(10_000, Ordering::SeqCst);
        let after_step = clock.now();
        assert_eq!(after_step.since(start), Duration::from_secs(8 * 3600 + 10));
        // Then the laptop sleeps for 30 minutes: all of it counts, despite the earlier backward step.
        wall.fetch_add(30 * 60_000, Ordering::SeqCst);
        assert_eq!(clock.now().since(after_step), Duration::from_secs(30 * 60));
        // Readings never go backwards.
        assert!(clock.now() >= after_step);
    }
}
