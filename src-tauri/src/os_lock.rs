//! Lock Chartroom the moment the OS screen locks or the machine is about to suspend.
//!
//! [`listen`] starts one thread per D-Bus bus, each with its own private blocking connection and
//! match rules:
//!
//! | bus     | signal                                                      | on path                             | reported as                |
//! |---------|-------------------------------------------------------------|-------------------------------------|----------------------------|
//! | system  | `org.freedesktop.login1.Manager.PrepareForSleep(true)`      | `/org/freedesktop/login1`           | [`OsSignal::Suspending`]   |
//! | system  | `org.freedesktop.login1.Session.Lock`                       | `/org/freedesktop/login1/session/*` | [`OsSignal::ScreenLocked`] |
//! | session | `org.freedesktop.ScreenSaver.ActiveChanged(true)`           | any                                 | [`OsSignal::ScreenLocked`] |
//! | session | `org.gnome.ScreenSaver.ActiveChanged(true)`                 | any                                 | [`OsSignal::ScreenLocked`] |
//!
//! `Session.Lock` is what `loginctl lock-session(s)` makes logind send; it is honoured for any
//! session, not only the app's own. `false` arguments, other members, paths and argument types are
//! ignored. The sender is not checked, so any peer on a bus can make the app lock: that fails safe.
//! One OS event may be reported more than once (KDE emits `ActiveChanged` on two paths;
//! `lock-sessions` locks every session), so the handler must be idempotent. A bus that cannot be reached, or that goes away later, is reported
//! once to `on_error` and its thread ends; the app carries on (the idle timer still locks it).
//! Uses no `unsafe` and no logger.

use dbus::blocking::Connection;
use dbus::message::MatchRule;
use dbus::Message;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long one `process` call waits for a message before the thread re-checks its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// How long [`Listener::stop`] (and drop) waits for the threads to end.
const STOP_WAIT: Duration = Duration::from_secs(1);

/// Something the OS did that must lock the app at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsSignal {
    /// The desktop's screen locked (logind `Session.Lock`, or a screensaver became active).
    ScreenLocked,
    /// logind announced the machine is about to suspend or hibernate (`PrepareForSleep(true)`).
    Suspending,
}

/// Bus addresses to listen on. `None` means that bus's default, resolved by libdbus as usual
/// (`DBUS_SYSTEM_BUS_ADDRESS` / `DBUS_SESSION_BUS_ADDRESS`, else the standard system socket /
/// the session bus libdbus would find). `Buses::default()` is both defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buses {
    /// System bus address (logind signals), e.g. `unix:path=/run/dbus/system_bus_socket`.
    pub system: Option<String>,
    /// Session bus address (screensaver signals).
    pub session: Option<String>,
}

/// Handle on the listener threads. Dropping it (or calling [`Listener::stop`]) makes them close
/// their connections and end within about a second; no new callback starts after that.
#[derive(Debug)]
pub struct Listener {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    /// Bus threads that have neither subscribed nor reported an error yet.
    pending: AtomicUsize,
}

type SignalFn = Arc<dyn Fn(OsSignal) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&'static str, String) + Send + Sync>;

/// One match rule: the signal `iface.member`, optionally only under `path` (and its subtree).
struct Rule {
    iface: &'static str,
    member: &'static str,
    path: Option<&'static str>,
    subtree: bool,
    /// Only fire when the first argument is boolean `true`.
    needs_true: bool,
    gives: OsSignal,
}

struct Bus {
    name: &'static str,
    default: fn() -> Result<Connection, dbus::Error>,
    rules: &'static [Rule],
}

static SYSTEM: Bus = Bus {
    name: "system",
    default: Connection::new_system,
    rules: &[
        Rule {
            iface: "org.freedesktop.login1.Manager",
            member: "PrepareForSleep",
            path: Some("/org/freedesktop/login1"),
            subtree: false,
            needs_true: true,
            gives: OsSignal::Suspending,
        },
        Rule {
            iface: "org.freedesktop.login1.Session",
            member: "Lock",
            path: Some("/org/freedesktop/login1/session"),
            subtree: true,
            needs_true: false,
            gives: OsSignal::ScreenLocked,
        },
    ],
};

static SESSION: Bus = Bus {
    name: "session",
    default: Connection::new_session,
    rules: &[
        Rule {
            iface: "org.freedesktop.ScreenSaver",
            member: "ActiveChanged",
            path: None,
            subtree: false,
            needs_true: true,
            gives: OsSignal::ScreenLocked,
        },
        Rule {
            iface: "org.gnome.ScreenSaver",
            member: "ActiveChanged",
            path: None,
            subtree: false,
            needs_true: true,
            gives: OsSignal::ScreenLocked,
        },
    ],
};

/// Starts listening on the system and session buses in background threads and returns at once.
///
/// `on_signal` is called on a listener thread for every matching signal (see the module docs);
/// keep it quick, e.g. send on a channel or emit an app event. `on_error(bus, message)`, with
/// `bus` = `"system"` or `"session"`, is called at most once per bus: when it cannot be connected
/// to or subscribed on, or when its connection is lost later; that bus is then no longer watched.
pub fn listen(
    buses: Buses,
    on_signal: impl Fn(OsSignal) + Send + Sync + 'static,
    on_error: impl Fn(&'static str, String) + Send + Sync + 'static,
) -> Listener {
    let on_signal: SignalFn = Arc::new(on_signal);
    let on_error: ErrorFn = Arc::new(on_error);
    let shared = Arc::new(Shared { stop: AtomicBool::new(false), pending: AtomicUsize::new(2) });
    let mut threads = Vec::new();
    for (bus, address) in [(&SYSTEM, buses.system), (&SESSION, buses.session)] {
        let (sh, sig, err) = (shared.clone(), on_signal.clone(), on_error.clone());
        let spawned = thread::Builder::new()
            .name(format!("os-lock-{}", bus.name))
            .spawn(move || run(bus, address.as_deref(), &sh, &sig, &err));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                on_error(bus.name, format!("cannot start listener thread: {e}"));
                shared.pending.fetch_sub(1, SeqCst);
            }
        }
    }
    Listener { shared, threads }
}

impl Listener {
    /// Waits until every bus has either subscribed to its signals or had its failure reported to
    /// `on_error`. Returns `false` if that has not happened within `timeout`. Signals sent before
    /// a bus is subscribed are not seen, so tests and start-up checks call this first.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.shared.pending.load(SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stops listening: no new callback starts, connections are closed and the threads end.
    /// Returns `true` if they all ended within about a second; `false` if one is still stuck
    /// connecting (or in a slow callback): it is detached and exits by itself, silently, once that
    /// returns. Dropping the handle does the same.
    pub fn stop(mut self) -> bool {
        self.shutdown()
    }

    fn shutdown(&mut self) -> bool {
        self.shared.stop.store(true, SeqCst);
        let deadline = Instant::now() + STOP_WAIT;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let mut all_ended = true;
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join(); // Err only if a callback panicked; nothing left to clean up.
            } else {
                all_ended = false;
            }
        }
        all_ended
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Body of one bus thread: subscribe, then process messages until stopped or disconnected.
fn run(bus: &Bus, address: Option<&str>, shared: &Arc<Shared>, on_signal: &SignalFn, on_error: &ErrorFn) {
    let conn = match subscribe(bus, address, shared, on_signal) {
        Ok(conn) => conn,
        Err(e) => {
            if !shared.stop.load(SeqCst) {
                on_error(bus.name, format!("cannot listen on the {} bus: {}", bus.name, describe(&e)));
            }
            shared.pending.fetch_sub(1, SeqCst);
            return;
        }
    };
    shared.pending.fetch_sub(1, SeqCst);
    while !shared.stop.load(SeqCst) {
        if let Err(e) = conn.process(POLL) {
            if !shared.stop.load(SeqCst) {
                on_error(bus.name, format!("lost the {} bus: {}", bus.name, describe(&e)));
            }
            return;
        }
    }
}

fn subscribe(
    bus: &Bus,
    address: Option<&str>,
    shared: &Arc<Shared>,
    on_signal: &SignalFn,
) -> Result<Connection, dbus::Error> {
    let conn = match address {
        Some(address) => Connection::new_address(address)?,
        None => (bus.default)()?,
    };
    for rule in bus.rules {
        let mut mr = MatchRule::new_signal(rule.iface, rule.member);
        if let Some(path) = rule.path {
            mr = if rule.subtree { mr.with_namespaced_path(path) } else { mr.with_path(path) };
        }
        let (shared, on_signal) = (shared.clone(), on_signal.clone());
        conn.add_match(mr, move |(): (), _: &Connection, msg: &Message| {
            if (!rule.needs_true || msg.get1::<bool>() == Some(true)) && !shared.stop.load(SeqCst) {
                on_signal(rule.gives);
            }
            true // keep the match
        })?;
    }
    Ok(conn)
}

fn describe(e: &dbus::Error) -> String {
    format!("{} ({})", e.message().unwrap_or("no message"), e.name().unwrap_or("no error name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::sync::mpsc::{self, Receiver};
    use std::sync::Mutex;

    const WAIT: Duration = Duration::from_secs(5);
    const LOGIN1: &str = "/org/freedesktop/login1";
    const SESSION_31: &str = "/org/freedesktop/login1/session/_31";
    const SLEEP: &str = "org.freedesktop.login1.Manager.PrepareForSleep";
    const LOCK: &str = "org.freedesktop.login1.Session.Lock";
    const FDO_SS: (&str, &str) =
        ("/org/freedesktop/ScreenSaver", "org.freedesktop.ScreenSaver.ActiveChanged");
    const GNOME_SS: (&str, &str) = ("/org/gnome/ScreenSaver", "org.gnome.ScreenSaver.ActiveChanged");

    /// A private `dbus-daemon` (Debian package `dbus-daemon`) in its own temp dir, killed on drop.
    struct TestBus {
        child: Child,
        dir: PathBuf,
        address: String,
    }

    impl TestBus {
        fn start() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "oslock-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, SeqCst)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = Command::new("dbus-daemon")
                .args(["--session", "--nofork", "--print-address=1"])
                .arg(format!("--address=unix:dir={}", dir.display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("dbus-daemon missing: apt-get install dbus-daemon");
            let mut address = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut address).unwrap();
            let address = address.trim().to_string();
            assert!(address.starts_with("unix:"), "dbus-daemon printed no address: {address:?}");
            TestBus { child, dir, address }
        }

        /// `dbus-send` (Debian package `dbus-bin`) on this bus: its stdout, or its stderr on failure.
        fn send(&self, args: &[&str]) -> Result<String, String> {
            let out = Command::new("dbus-send")
                .arg(format!("--bus={}", self.address))
                .args(args)
                .output()
                .expect("dbus-send missing: apt-get install dbus-bin");
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            if out.status.success() {
                Ok(text(&out.stdout))
            } else {
                Err(text(&out.stderr))
            }
        }

        fn emit(&self, path: &str, signal: &str, arg: Option<&str>) {
            let mut args = vec!["--type=signal", path, signal];
            args.extend(arg);
            self.send(&args).unwrap();
        }

        /// How many connections on this bus belong to this test process.
        fn our_connections(&self) -> usize {
            let bus = ["--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"];
            let names = self.send(&[&bus[..], &["org.freedesktop.DBus.ListNames"]].concat()).unwrap();
            let ours = format!("uint32 {}", std::process::id());
            names
                .lines()
                .filter_map(|l| l.trim().strip_prefix("string \"")?.strip_suffix('"'))
                .filter(|n| n.starts_with(':'))
                .filter(|n| {
                    let arg = format!("string:{n}");
                    let m = [&bus[..], &["org.freedesktop.DBus.GetConnectionUnixProcessID", &arg]].concat();
                    // A name that has gone since ListNames (an exited dbus-send) is not ours.
                    self.send(&m).is_ok_and(|reply| reply.lines().any(|l| l.trim() == ours))
                })
                .count()
        }

        fn wait_for_connections(&self, n: usize) -> bool {
            let deadline = Instant::now() + WAIT;
            while self.our_connections() != n {
                if Instant::now() > deadline {
                    return false;
                }
                thread::sleep(Duration::from_millis(50));
            }
            true
        }
    }

    impl Drop for TestBus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    type Errors = Arc<Mutex<Vec<(&'static str, String)>>>;

    fn start(system: &str, session: &str) -> (Listener, Receiver<OsSignal>, Errors) {
        let (tx, rx) = mpsc::channel();
        let errors = Errors::default();
        let errs = errors.clone();
        let buses = Buses { system: Some(system.into()), session: Some(session.into()) };
        let listener = listen(
            buses,
            move |s| tx.send(s).unwrap(),
            move |bus, msg| errs.lock().unwrap().push((bus, msg)),
        );
        assert!(listener.wait_ready(WAIT), "listener not ready within {WAIT:?}");
        (listener, rx, errors)
    }

    /// Everything received within `window`.
    fn drain(rx: &Receiver<OsSignal>, window: Duration) -> Vec<OsSignal> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(s) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            got.push(s);
        }
        got
    }

    #[test]
    fn each_os_signal_is_reported() {
        let (sys, ses) = (TestBus::start(), TestBus::start());
        let (listener, rx, errors) = start(&sys.address, &ses.address);
        let cases = [
            (&sys, LOGIN1, SLEEP, Some("boolean:true"), OsSignal::Suspending),
            (&sys, SESSION_31, LOCK, None, OsSignal::ScreenLocked),
            (&sys, "/org/freedesktop/login1/session/auto", LOCK, None, OsSignal::ScreenLocked),
            (&ses, FDO_SS.0, FDO_SS.1, Some("boolean:true"), OsSignal::ScreenLocked),
            (&ses, "/ScreenSaver", FDO_SS.1, Some("boolean:true"), OsSignal::ScreenLocked),
            (&ses, GNOME_SS.0, GNOME_SS.1, Some("boolean:true"), OsSignal::ScreenLocked),
        ];
        for (bus, path, signal, arg, want) in cases {
            bus.emit(path, signal, arg);
            assert_eq!(rx.recv_timeout(WAIT), Ok(want), "{signal} on {path}");
        }
        assert_eq!(drain(&rx, Duration::from_millis(300)), vec![], "duplicate signals");
        assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock().unwrap());
        assert!(listener.stop());
    }

    #[test]
    fn false_wrong_and_misplaced_signals_are_ignored() {
        let (sys, ses) = (TestBus::start(), TestBus::start());
        let (_listener, rx, errors) = start(&sys.address, &ses.address);
        sys.emit(LOGIN1, SLEEP, Some("boolean:false"));
        sys.emit(LOGIN1, SLEEP, Some("string:true"));
        sys.emit(LOGIN1, SLEEP, None);
        sys.emit("/org/freedesktop/login1/seat/seat0", SLEEP, Some("boolean:true"));
        sys.emit("/org/freedesktop/login1/sessionx", LOCK, None);
        sys.emit(SESSION_31, "org.freedesktop.login1.Session.Unlock", None);
        ses.emit(FDO_SS.0, FDO_SS.1, Some("boolean:false"));
        ses.emit(GNOME_SS.0, GNOME_SS.1, Some("boolean:false"));
        // Right signal, wrong bus.
        ses.emit(LOGIN1, SLEEP, Some("boolean:true"));
        ses.emit(SESSION_31, LOCK, None);
        sys.emit(FDO_SS.0, FDO_SS.1, Some("boolean:true"));
        // Sentinels: each bus delivers in order, so anything wrongly matched above shows up too.
        sys.emit(LOGIN1, SLEEP, Some("boolean:true"));
        ses.emit(GNOME_SS.0, GNOME_SS.1, Some("boolean:true"));
        let mut got = vec![rx.recv_timeout(WAIT).unwrap(), rx.recv_timeout(WAIT).unwrap()];
        got.extend(drain(&rx, Duration::from_millis(500)));
        got.sort_by_key(|s| *s as u8);
        assert_eq!(got, vec![OsSignal::ScreenLocked, OsSignal::Suspending]);
        assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock().unwrap());
    }

    #[test]
    fn unreachable_bus_is_reported_once_and_the_other_still_works() {
        let ses = TestBus::start();
        let (listener, rx, errors) = start("unix:path=/nonexistent/oslock-test-bus", &ses.address);
        ses.emit(FDO_SS.0, FDO_SS.1, Some("boolean:true"));
        assert_eq!(rx.recv_timeout(WAIT), Ok(OsSignal::ScreenLocked));
        thread::sleep(Duration::from_millis(300));
        {
            let errors = errors.lock().unwrap();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].0, "system");
            assert!(errors[0].1.contains("system bus"), "{}", errors[0].1);
        }
        assert!(listener.stop());
        let (listener, _rx, errors) = start("unix:path=/nonexistent/a", "not-an-address");
        let mut buses: Vec<_> = errors.lock().unwrap().iter().map(|e| e.0).collect();
        buses.sort();
        assert_eq!(buses, ["session", "system"]);
        assert!(listener.stop());
    }

    #[test]
    fn lost_bus_is_reported_once() {
        let (sys, ses) = (TestBus::start(), TestBus::start());
        let (_listener, rx, errors) = start(&sys.address, &ses.address);
        drop(ses);
        let deadline = Instant::now() + WAIT;
        while errors.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(500));
        {
            let errors = errors.lock().unwrap();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].0, "session");
        }
        sys.emit(LOGIN1, SLEEP, Some("boolean:true"));
        assert_eq!(rx.recv_timeout(WAIT), Ok(OsSignal::Suspending));
    }

    #[test]
    fn stop_and_drop_end_the_threads_and_close_the_connections() {
        let (sys, ses) = (TestBus::start(), TestBus::start());
        for use_drop in [false, true] {
            let (listener, rx, errors) = start(&sys.address, &ses.address);
            assert!(sys.wait_for_connections(1) && ses.wait_for_connections(1));
            let t0 = Instant::now();
            if use_drop {
                drop(listener);
            } else {
                assert!(listener.stop(), "threads still running after stop");
            }
            assert!(t0.elapsed() < Duration::from_millis(1500), "took {:?}", t0.elapsed());
            assert!(sys.wait_for_connections(0) && ses.wait_for_connections(0), "connections left open");
            sys.emit(LOGIN1, SLEEP, Some("boolean:true"));
            ses.emit(FDO_SS.0, FDO_SS.1, Some("boolean:true"));
            // All senders were dropped with the threads, so the channel reports disconnection.
            assert_eq!(rx.recv_timeout(WAIT), Err(mpsc::RecvTimeoutError::Disconnected));
            assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock().unwrap());
        }
    }
}
