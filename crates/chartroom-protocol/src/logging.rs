//! Diagnostic logging for the server, the station CLI and the app, to standard error:
//! `2026-11-28T03:12:45Z DEBUG chartroom_server::http: GET /v1/patients/{id}/chart 200 4 ms`.
//!
//! The level comes from `CHARTROOM_LOG` (`off`, `error`, `warn`, `info` — the default — `debug` or
//! `trace`) and applies to Chartroom's own crates; other crates (rustls, …) log warnings and errors
//! only. Messages never carry PHI: they name routes (`{id}`, not the id), counts, codes and
//! durations, never names, MRNs, birth dates, note text or query strings. A test runs every workflow
//! at `debug` with a canary patient and searches all output for it.

use std::io::Write;

/// The variable that sets the level.
pub const LEVEL_VAR: &str = "CHARTROOM_LOG";

#[derive(Debug)]
struct StderrLogger {
    ours: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        let limit = if metadata.target().starts_with("chartroom") {
            self.ours
        } else {
            self.ours.min(log::LevelFilter::Warn)
        };
        metadata.level() <= limit
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let line =
            format!("{} {:<5} {}: {}\n", iso_seconds(now), record.level(), record.target(), record.args());
        // One write per line, so lines from several threads do not interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `2026-11-28T03:12:45Z`.
fn iso_seconds(ms: i64) -> String {
    let (y, mo, d) = chartroom_domain::clock::civil_from_days(ms.div_euclid(86_400_000));
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The level `CHARTROOM_LOG` asks for, or an error naming the bad value.
pub fn level_from_env() -> Result<log::LevelFilter, String> {
    match std::env::var(LEVEL_VAR) {
        Err(_) => Ok(log::LevelFilter::Info),
        Ok(v) if v.trim().is_empty() => Ok(log::LevelFilter::Info),
        Ok(v) => v.trim().parse().map_err(|_| {
            format!("{LEVEL_VAR}={v:?} is not a log level (off, error, warn, info, debug or trace)")
        }),
    }
}

/// Installs the logger once per process. A bad `CHARTROOM_LOG` value is reported and `info` used.
pub fn init() {
    let ours = level_from_env().unwrap_or_else(|e| {
        eprintln!("warning: {e}; using info");
        log::LevelFilter::Info
    });
    if log::set_logger(Box::leak(Box::new(StderrLogger { ours }))).is_ok() {
        log::set_max_level(ours.max(log::LevelFilter::Warn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_seconds() {
        assert_eq!(iso_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_seconds(1_795_835_565_999), "2026-11-28T03:12:45Z");
    }

    #[test]
    fn other_crates_are_held_to_warnings() {
        use log::Log;
        let logger = StderrLogger { ours: log::LevelFilter::Debug };
        let meta = |target, level| log::Metadata::builder().target(target).level(level).build();
        assert!(logger.enabled(&meta("chartroom_server::http", log::Level::Debug)));
        assert!(!logger.enabled(&meta("chartroom_server::http", log::Level::Trace)));
        assert!(!logger.enabled(&meta("rustls::client", log::Level::Info)));
        assert!(logger.enabled(&meta("rustls::client", log::Level::Warn)));
    }
}
