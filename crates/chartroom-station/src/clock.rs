//! The station's clock: counts time spent suspended and never goes backwards.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chartroom_domain::clock::SuspendAwareClock;
use chartroom_domain::{Clock, Timestamp};

/// The real clock. Rust's `Instant` stops while a Linux laptop is suspended, so the wall clock is
/// consulted too (see [`SuspendAwareClock`]): a laptop closed overnight wakes up with its session
/// idle for the whole night and therefore locked.
pub fn system_clock() -> impl Clock {
    let start = Instant::now();
    SuspendAwareClock::new(
        move || Timestamp(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)),
        wall_now,
    )
}

/// Wall-clock time now (UTC).
pub fn wall_now() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}
