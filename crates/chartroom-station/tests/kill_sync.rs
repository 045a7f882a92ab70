//! `chartroom-station sync` killed with SIGKILL at random moments — before the login, mid-push,
//! after the server applied a change but before the station heard of it, mid-pull, mid-upload —
//! over a hundred times, with new local changes in between (some of those commands killed too).
//! Two stations on the same unit do this at once, each with its own nurse. Then clean syncs: every
//! change the CLI acknowledged is on the server exactly once, a change whose command was killed is
//! there whole or not at all (never twice), the outboxes are empty, and each local database opens,
//! passes its integrity check and holds exactly what the server holds.
//!
//! Needs the OS keyring (the CLI has no other): run with
//! `CHARTROOM_REQUIRE_KEYRING=1 CHARTROOM_PRIVATE_KEYRING=1 scripts/with-keyring cargo test …`.
//! The kill plans come from a seeded RNG: the seed is printed at the start (shown when the test
//! fails) and `CHARTROOM_FAULT_SEED=<n>` replays it (the process timing still varies).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, Role, VitalSign};
use chartroom_server::storage::{RecordKind, Storage, SERVER_CHAIN};
use chartroom_server::{wall_now, DataDir};
use chartroom_station::DeviceSecretStore;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// The two stations' users: (username, password).
const NURSES: [(&str, &str); 2] = [("kim.rn", "night-shift-kettle-77"), ("lee.rn", "early-shift-teapot-42")];
/// `sync` runs each station kills mid-run: at least 100 in all.
const KILLS_EACH: usize = 50;

fn keyring_available() -> bool {
    match chartroom_station::OsKeyring::connect() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none() => {
            eprintln!("skipping: no OS keyring ({e})");
            false
        }
        Err(e) => panic!("CHARTROOM_REQUIRE_KEYRING is set but the OS keyring is unavailable: {e}"),
    }
}

/// One enrolled station profile and the nurse who uses it, driven through the CLI.
#[derive(Debug)]
struct Station {
    profile: PathBuf,
    username: &'static str,
    password: &'static str,
    /// The nurse's user id on the server.
    user: Uuid,
    device: Uuid,
}

impl Station {
    /// Starts a command as this station's nurse; the password is the first line of its input.
    fn spawn(&self, args: &[&str], more_input: &str) -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chartroom-station"))
            .arg("--profile-dir")
            .arg(&self.profile)
            .args(["--username", self.username, "--password-stdin"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input = format!("{}\n{more_input}", self.password);
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child
    }

    /// Runs a command to its end; it must succeed.
    fn run(&self, args: &[&str]) -> String {
        let out = self.spawn(args, "").wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Lets a child run for up to `delay`, then SIGKILLs it. `None`: it was killed; otherwise it had
/// finished by itself, with this output.
fn kill_after(mut child: Child, delay: Duration) -> Option<Output> {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(2).min(deadline - Instant::now()));
    }
    // `kill` is SIGKILL on Unix.
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    if out.status.signal() == Some(9) {
        None
    } else {
        Some(out)
    }
}

/// How far a sync got, as the server's trail tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    /// Not even a login reached the server.
    Nothing,
    LoggedIn,
    /// The server applied at least one pushed change (whose answer the station may never have read).
    Pushed,
    Pulled,
    /// Audit entries were uploaded (the last step).
    Uploaded,
}

/// The server's trail from `*mark` on, for this device: how far its sync got.
fn reached_since(storage: &dyn Storage, device: Uuid, mark: &mut u64) -> Reached {
    let mut reached = Reached::Nothing;
    loop {
        let page = storage.audit_page(*mark, 1000).unwrap();
        let Some(last) = page.last() else { return reached };
        *mark = last.server_seq;
        for stored in &page {
            let e = &stored.entry.event;
            let step = if stored.entry.device_id == device {
                Reached::Uploaded
            } else if stored.entry.device_id != SERVER_CHAIN || e.origin_device != Some(device) {
                continue;
            } else if e.action == "sync_pull" {
                Reached::Pulled
            } else if e.action == "create" {
                Reached::Pushed
            } else if e.action == "login" {
                Reached::LoggedIn
            } else {
                continue;
            };
            reached = reached.max(step);
        }
    }
}

/// When to kill a sync: a time after its start, or a time after the server's trail shows it got
/// to a step (so that the kills follow the steps, however fast the machine is today).
#[derive(Clone, Copy, Debug)]
enum KillPlan {
    At(Duration),
    After(Reached, Duration),
}

/// How long the steps of a sync take on this machine, measured once.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// Start-up, profile, keyring, login request, Argon2id on the server.
    before_login: Duration,
    /// The station's side of the login: its key slot rewritten (Argon2id again).
    slot_rewrite: Duration,
    /// A `vitals` command.
    write: Duration,
}

impl Timing {
    /// A kill plan for the next sync: 40% before the login reaches the server, 15% during the
    /// station's side of the login, and 45% after the server applied a pushed change (its answer
    /// on the way, the pull, the audit upload, the lock) — or, with nothing new to push, after
    /// the pull began.
    fn kill_plan(&self, rng: &mut StdRng, unpushed: bool) -> KillPlan {
        match rng.gen_range(0..20) {
            0..=7 => KillPlan::At(self.before_login.mul_f64(rng.gen_range(0.0..1.0))),
            8..=10 => KillPlan::After(Reached::LoggedIn, self.slot_rewrite.mul_f64(rng.gen_range(0.0..1.0))),
            // Mostly within a few milliseconds of the server applying the first change: before the
            // station can have read the answer.
            _ if unpushed && rng.gen_bool(0.6) => {
                KillPlan::After(Reached::Pushed, Duration::from_millis(rng.gen_range(0..6)))
            }
            _ if unpushed => KillPlan::After(Reached::Pushed, Duration::from_millis(rng.gen_range(6..60))),
            _ => KillPlan::After(Reached::Pulled, Duration::from_millis(rng.gen_range(0..30))),
        }
    }
}

/// Runs a sync under `plan`, watching the server's trail. `Err(reached)`: it was killed, having
/// got that far; `Ok(output)`: it finished first.
fn sync_until_killed(
    mut child: Child,
    plan: KillPlan,
    storage: &dyn Storage,
    device: Uuid,
    mark: &mut u64,
) -> Result<Output, Reached> {
    let start = Instant::now();
    let mut reached = Reached::Nothing;
    let mut step_seen: Option<Instant> = None;
    loop {
        if child.try_wait().unwrap().is_some() {
            reached_since(storage, device, mark);
            return Ok(child.wait_with_output().unwrap());
        }
        reached = reached.max(reached_since(storage, device, mark));
        let due = match plan {
            KillPlan::At(delay) => start.elapsed() >= delay,
            KillPlan::After(step, delay) => {
                if step_seen.is_none() && reached >= step {
                    step_seen = Some(Instant::now());
                }
                step_seen.is_some_and(|t| t.elapsed() >= delay)
            }
        };
        if due {
            // `kill` is SIGKILL on Unix.
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            // What the server committed while the kill was on its way counts too.
            reached = reached.max(reached_since(storage, device, mark));
            return if out.status.signal() == Some(9) { Err(reached) } else { Ok(out) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the test asked a station to record.
#[derive(Debug)]
enum Asked {
    /// A vitals set (heart rate, systolic pressure, SpO2) with this heart rate, unique in the test.
    Vitals {
        patient: Uuid,
        hr: f64,
    },
    Note {
        patient: Uuid,
        text: String,
    },
}

impl Asked {
    fn patient(&self) -> Uuid {
        match self {
            Asked::Vitals { patient, .. } | Asked::Note { patient, .. } => *patient,
        }
    }
}

/// What one station's run of killed syncs did.
#[derive(Debug, Default)]
struct Run {
    /// What was asked, and the record id when the command acknowledged it.
    asked: Vec<(Asked, Option<Uuid>)>,
    /// Killed syncs, by how far they got.
    reached: BTreeMap<Reached, usize>,
    /// Syncs that finished before their kill.
    finished: usize,
    writes_done: usize,
    writes_killed: usize,
}

/// Kills `KILLS_EACH` syncs of `station` mid-run; every fourth round records a change first (one in
/// four of those commands killed too). Heart rates start at `hr_base`, so each set is recognisable.
fn kill_syncs(
    station: &Station,
    icu: &[&Chart],
    dir: &DataDir,
    timing: Timing,
    seed: u64,
    hr_base: u32,
) -> Run {
    let storage = dir.open_storage().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mark = storage.audit_head().unwrap().0;
    let mut run = Run::default();
    let mut unpushed = false;
    let mut i = 0;
    while run.reached.values().sum::<usize>() < KILLS_EACH {
        i += 1;
        assert!(i < 3 * KILLS_EACH, "the syncs keep finishing before their kill: {run:?}");
        if i % 4 == 1 {
            let chart = icu[rng.gen_range(0..icu.len())];
            let (mrn, patient) = (chart.patient.mrn.as_str(), chart.patient.id);
            let hr = f64::from(hr_base + u32::try_from(i / 4).unwrap());
            let (child, what) = if rng.gen_bool(0.7) {
                let hr_arg = hr.to_string();
                let args =
                    ["vitals", "--mrn", mrn, "--hr", &hr_arg, "--sbp", "121", "--spo2", "97", "--json"];
                (station.spawn(&args, ""), Asked::Vitals { patient, hr })
            } else {
                let text = format!("Kill-test note {i} by {}: resting, no distress.", station.username);
                let child =
                    station.spawn(&["note", "--mrn", mrn, "--text-stdin", "--sign"], &format!("{text}\n"));
                (child, Asked::Note { patient, text })
            };
            let out = if rng.gen_bool(0.25) {
                kill_after(child, timing.write.mul_f64(rng.gen_range(0.0..1.2)))
            } else {
                Some(child.wait_with_output().unwrap())
            };
            let id = out.map(|out| {
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let text = String::from_utf8(out.stdout).unwrap();
                match &what {
                    Asked::Vitals { .. } => {
                        let set: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
                        let hr_obs = set.iter().find(|o| o["vital"] == "heart_rate").unwrap();
                        hr_obs["id"].as_str().unwrap().parse::<Uuid>().unwrap()
                    }
                    Asked::Note { .. } => {
                        let id = text.strip_prefix("signed note ").unwrap().split(' ').next().unwrap();
                        id.parse().unwrap()
                    }
                }
            });
            if id.is_some() {
                run.writes_done += 1;
                unpushed = true;
            } else {
                run.writes_killed += 1;
            }
            run.asked.push((what, id));
        }

        let child = station.spawn(&["sync", "--json"], "");
        match sync_until_killed(
            child,
            timing.kill_plan(&mut rng, unpushed),
            &*storage,
            station.device,
            &mut mark,
        ) {
            Err(got_to) => {
                *run.reached.entry(got_to).or_default() += 1;
                unpushed &= got_to < Reached::Pushed;
            }
            Ok(out) => {
                // A sync that finished before its kill must have succeeded.
                assert!(out.status.success(), "sync {i}: {}", String::from_utf8_lossy(&out.stderr));
                run.finished += 1;
                unpushed = false;
            }
        }
    }
    run
}

/// A patient's chart on the server (every record).
fn server_chart(storage: &dyn Storage, keys: &chartroom_server::phi::RecordKeys, patient: Uuid) -> Chart {
    let sealed = storage.patient(patient).unwrap().unwrap();
    let stored = storage.records(patient, &RecordKind::ALL, usize::MAX).unwrap();
    keys.open_chart(&sealed, &stored).unwrap()
}

/// The server's own trail: how many `create`/`update` events each record id of `device` has.
fn writes_by(storage: &dyn Storage, device: Uuid) -> BTreeMap<Uuid, usize> {
    let mut writes = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = storage.audit_page(after, 1000).unwrap();
        let Some(last) = page.last() else { return writes };
        after = last.server_seq;
        for stored in &page {
            let e = &stored.entry.event;
            if stored.entry.device_id == SERVER_CHAIN
                && e.origin_device == Some(device)
                && (e.action == "create" || e.action == "update")
            {
                *writes.entry(e.resource_id.as_deref().unwrap().parse().unwrap()).or_default() += 1;
            }
        }
    }
}

// hipaa (c)(1): a sync killed at random moments loses and duplicates nothing
#[test]
fn sync_killed_at_random_moments_loses_and_duplicates_nothing() {
    if !keyring_available() {
        return;
    }
    let started = Instant::now();
    let seed = std::env::var("CHARTROOM_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_0009);
    println!("fault seed: {seed} (replay with CHARTROOM_FAULT_SEED={seed})");

    // A server with two nurses and six synthetic patients (three on ICU), in this process.
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = chartroom_server::init(&dir, &chartroom_server::InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let keys = dir.record_keys().unwrap();
    let config = chartroom_synth::SynthConfig::new(11, wall_now());
    let charts: Vec<Chart> = (0..6).map(|i| chartroom_synth::patient(&config, i)).collect();
    chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
    let icu: Vec<&Chart> = charts.iter().filter(|c| c.patient.unit == "ICU").collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(chartroom_server::start(&dir, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());

    // Two stations, enrolled through the CLI, each used by its own nurse; a first sync each.
    let stations: Vec<Station> = NURSES
        .iter()
        .enumerate()
        .map(|(n, (username, password))| {
            let user = chartroom_server::users::add_user(
                &*storage,
                username,
                Role::Nurse,
                vec!["ICU".into()],
                &Password::new((*password).into()),
                wall_now(),
            )
            .unwrap();
            let token = chartroom_server::devices::issue_token(
                &*storage,
                &format!("icu-kill-{n}"),
                DeviceProfile::Station,
                vec!["ICU".into()],
                Duration::from_secs(600),
                wall_now(),
            )
            .unwrap();
            let profile = tmp.path().join(format!("station-{n}"));
            let out = Command::new(env!("CARGO_BIN_EXE_chartroom-station"))
                .arg("--profile-dir")
                .arg(&profile)
                .args(["enroll", "--server", &url, "--fingerprint", &report.fingerprint, "--token", &token])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let device: serde_json::Value =
                serde_json::from_slice(&std::fs::read(profile.join("device.json")).unwrap()).unwrap();
            let device = device["device_id"].as_str().unwrap().parse().unwrap();
            let station = Station { profile, username, password, user: user.id, device };
            station.run(&["sync"]);
            station
        })
        .collect();

    // When a sync with something to push logs in, when the server applies the change, and when
    // the sync ends: the login is most of it (Argon2id on the server, then again on the station
    // to rewrite the user's key slot), so the kills are planned by step rather than by time.
    let first = &stations[0];
    let mrn0 = icu[0].patient.mrn.clone();
    let mut mark = storage.audit_head().unwrap().0;
    first.run(&["vitals", "--mrn", &mrn0, "--hr", "150", "--sbp", "118", "--spo2", "98"]);
    let t = Instant::now();
    let mut child = first.spawn(&["sync"], "");
    let (mut logged_in, mut pushed) = (None, None);
    let sync_time = loop {
        let now = reached_since(&*storage, first.device, &mut mark);
        if logged_in.is_none() && now >= Reached::LoggedIn {
            logged_in = Some(t.elapsed());
        }
        if pushed.is_none() && now >= Reached::Pushed {
            pushed = Some(t.elapsed());
        }
        if child.try_wait().unwrap().is_some() {
            break t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(child.wait_with_output().unwrap().status.success());
    let logged_in = logged_in.unwrap_or_else(|| panic!("no login seen during the calibration sync"));
    let pushed = pushed.unwrap_or_else(|| panic!("no push seen during the calibration sync"));
    let t = Instant::now();
    first.run(&["vitals", "--mrn", &mrn0, "--hr", "151", "--sbp", "119", "--spo2", "98"]);
    let timing = Timing {
        before_login: logged_in,
        slot_rewrite: pushed.saturating_sub(logged_in),
        write: t.elapsed(),
    };
    println!(
        "a sync logs in after {logged_in:?}, pushes after {pushed:?}, ends after {sync_time:?}; {timing:?}"
    );

    // Both stations at once: kills, with new local changes in between.
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let workers: Vec<_> = stations
            .iter()
            .enumerate()
            .map(|(n, station)| {
                let (icu, dir) = (&icu, &dir);
                let hr_base = 40 + 50 * u32::try_from(n).unwrap();
                scope.spawn(move || kill_syncs(station, icu, dir, timing, seed ^ n as u64, hr_base))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut reached: BTreeMap<Reached, usize> = BTreeMap::new();
    for (station, run) in stations.iter().zip(&runs) {
        println!(
            "{}: killed syncs by how far they got {:?}; {} finished first; {} writes acknowledged, {} killed",
            station.username, run.reached, run.finished, run.writes_done, run.writes_killed
        );
        for (step, n) in &run.reached {
            *reached.entry(*step).or_default() += n;
        }
    }

    // The kills really hit every step, including after the server applied a change whose answer
    // the station never read.
    assert!(reached.values().sum::<usize>() >= 100, "{reached:?}");
    assert!(reached.len() >= 4, "kills landed at every step: {reached:?}");
    assert!(reached.get(&Reached::Pushed).is_some_and(|n| *n > 0), "{reached:?}");
    assert!(runs.iter().all(|r| r.writes_done > 0) && runs.iter().any(|r| r.writes_killed > 0));

    // Clean syncs settle everything (the first station once more, for what the second pushed).
    for station in stations.iter().chain(stations.first()) {
        let result: serde_json::Value = serde_json::from_str(&station.run(&["sync", "--json"])).unwrap();
        let push = &result["push"];
        assert_eq!((push["pending"].as_u64(), push["conflicts"].as_u64()), (Some(0), Some(0)), "{result}");
        assert_eq!(push["rejected"].as_u64(), Some(0), "{result}");
        assert_eq!(result["pull"]["complete"], true, "{result}");
    }
    for station in &stations {
        let outbox: Vec<serde_json::Value> =
            serde_json::from_str(&station.run(&["outbox", "--json"])).unwrap();
        assert!(outbox.is_empty(), "the outbox is empty: {outbox:?}");
        let line = station.run(&["audit", "verify"]);
        assert!(line.starts_with("audit ok: "), "{line}");
    }

    // The server: each record of each station was created once (never updated), at version 1; each
    // vitals set arrived whole; what a command acknowledged is there once, what a killed command
    // asked for is there once or not at all.
    let server_charts: HashMap<Uuid, Chart> =
        icu.iter().map(|c| (c.patient.id, server_chart(&*storage, &keys, c.patient.id))).collect();
    for (station, run) in stations.iter().zip(&runs) {
        let writes = writes_by(&*storage, station.device);
        assert!(writes.values().all(|n| *n == 1), "a record written twice: {writes:?}");
        let mut on_server: BTreeSet<Uuid> = BTreeSet::new();
        for chart in server_charts.values() {
            let observations = chart.observations.iter().filter(|o| o.recorded_by == station.user);
            let notes = chart.notes.iter().filter(|n| n.author_id == station.user);
            for (id, version) in
                observations.map(|o| (o.id, o.version)).chain(notes.map(|n| (n.id, n.version)))
            {
                assert_eq!(version, 1, "record {id}");
                assert!(on_server.insert(id));
            }
            let mut sets: BTreeMap<i64, Vec<VitalSign>> = BTreeMap::new();
            for o in chart.observations.iter().filter(|o| o.recorded_by == station.user) {
                sets.entry(o.effective_at.0).or_default().push(o.vital);
            }
            for (at, set) in &sets {
                assert_eq!(set.len(), 3, "the set recorded at {at} is whole and there once: {set:?}");
            }
        }
        assert_eq!(on_server, writes.keys().copied().collect(), "every record there has its one create");
        for (what, id) in &run.asked {
            let chart = &server_charts[&what.patient()];
            let found: Vec<Uuid> = match what {
                Asked::Vitals { hr, .. } => chart
                    .observations
                    .iter()
                    .filter(|o| {
                        o.recorded_by == station.user && o.vital == VitalSign::HeartRate && o.value == *hr
                    })
                    .map(|o| o.id)
                    .collect(),
                Asked::Note { text, .. } => {
                    chart.notes.iter().filter(|n| n.text == *text).map(|n| n.id).collect()
                }
            };
            match id {
                Some(id) => assert_eq!(found, vec![*id], "{what:?}, acknowledged, is on the server once"),
                None => assert!(found.len() <= 1, "{what:?}, killed, is there once or not at all: {found:?}"),
            }
        }
    }

    // Each station: the database opens and is intact, its chain verifies, its outbox is empty,
    // and it holds exactly what the server holds, up to the server's last change.
    let keystore = Arc::new(chartroom_station::OsKeyring::connect().unwrap());
    for station in &stations {
        let profile = chartroom_station::Profile::new(&station.profile);
        let locked = chartroom_station::LockedVault::open(profile, keystore.clone(), wall_now()).unwrap();
        let mut vault =
            locked.unlock(station.username, &Password::new(station.password.into()), wall_now()).unwrap();
        vault.store().integrity_check().unwrap();
        vault.verify_audit().unwrap().unwrap();
        assert!(vault.outbox().unwrap().is_empty());
        for chart in &icu {
            let mut local = vault.chart_by_mrn(&chart.patient.mrn, usize::MAX, wall_now()).unwrap();
            let mut server = server_charts[&chart.patient.id].clone();
            for c in [&mut local, &mut server] {
                c.observations.sort_by_key(|o| o.id);
                c.notes.sort_by_key(|n| n.id);
            }
            assert_eq!(
                local.observations, server.observations,
                "{}: patient {}",
                station.username, chart.patient.id
            );
            assert_eq!(local.notes, server.notes, "{}: patient {}", station.username, chart.patient.id);
        }
        let (cursor, complete) = vault.store().sync_state().unwrap();
        assert!(complete);
        let rest = storage.pull_page(None, cursor, 1000).unwrap();
        assert!(
            rest.patients.is_empty() && rest.records.is_empty() && !rest.more,
            "cursor {cursor} is at the end"
        );
        vault.lock();
    }

    // The stations' uploaded chains continue the server's without a fork or a gap.
    let key = dir.signing_key().unwrap();
    chartroom_server::audit::checkpoint_if_due(&*storage, &key, wall_now()).unwrap();
    let verified = chartroom_server::audit::verify(&*storage, &key.verifying_key()).unwrap();
    let verified = verified.unwrap_or_else(|p| panic!("server audit trail: {p}"));
    assert_eq!(verified.devices, 3, "the server's chain and both stations': {verified:?}");

    runtime.block_on(server.shutdown(Duration::from_secs(2))).unwrap();
    for station in &stations {
        keystore.delete(station.device).unwrap();
    }
    println!("took {:?}", started.elapsed());
}
