//! Sync under faults (issue 7): a TCP proxy between a station and the real TLS server cuts
//! connections at random byte offsets (mid-handshake, mid-push, mid-pull), and the server is stopped
//! in the middle of a large batch and started again on the same data directory. Whatever happens,
//! every change the station recorded reaches the server exactly once, the outbox ends empty, the
//! pull cursor ends at the server's last change, and both audit chains verify.
//!
//! The cuts come from a seeded RNG: the seed is printed at the start (shown when a test fails) and
//! `CHARTROOM_FAULT_SEED=<n>` replays it (connection order can still vary with timing).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chartroom_client::ServerClient;
use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, Role, VitalSign};
use chartroom_server::storage::{RecordKind, Storage, SERVER_CHAIN};
use chartroom_server::{init, start, wall_now, DataDir, InitOptions, RunningServer};
use chartroom_station::{LockedVault, Profile, StationError, UnlockedVault};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const NURSE: &str = "kim.rn";
const PASSWORD: &str = "nurse-long-passphrase";
/// Attempts of one operation through the flaky proxy before the test gives up (each failed attempt
/// takes milliseconds; a run needs a few dozen at most).
const MAX_ATTEMPTS: usize = 400;

fn fault_seed(default: u64) -> u64 {
    let seed = std::env::var("CHARTROOM_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    println!("fault seed: {seed} (replay with CHARTROOM_FAULT_SEED={seed})");
    seed
}

use chartroom_tests::keystore;

/// Whether trying again can succeed: the network or the server went away.
fn transient(e: &StationError) -> bool {
    matches!(e, StationError::Server(c) if c.is_retryable())
}

// ---------------------------------------------------------------------------------------------
// The proxy.

/// A connection's fate: cut once `to_server` bytes have gone up or `to_client` bytes down,
/// whichever comes first.
#[derive(Clone, Copy, Debug)]
struct Cut {
    to_server: u64,
    to_client: u64,
}

/// The cut for connection number `n`. Each direction's offset comes, at equal odds, from one of
/// three ranges: log-uniform from one byte to 64 KiB, and uniform up to 8 KiB — the TLS handshake
/// (about 1 KiB each way), requests and small answers, an answer lost after the server acted — or
/// uniform up to 256 KiB — audit uploads and pull pages.
fn plan_cut(seed: u64, n: u64) -> Cut {
    let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut offset = || match rng.gen_range(0..3) {
        0 => (2f64.powf(rng.gen_range(0.0..16.0)) as u64).max(1),
        1 => rng.gen_range(1..8 << 10),
        _ => rng.gen_range(1..256 << 10),
    };
    Cut { to_server: offset(), to_client: offset() }
}

/// What the proxy shares with its connection tasks.
#[derive(Debug)]
struct ProxyState {
    upstream: Mutex<SocketAddr>,
    faults: AtomicBool,
    seed: u64,
    connections: AtomicU64,
    cuts: AtomicU64,
    open: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Whether the server's answers are let through (`false`: held at the proxy, see
    /// [`FlakyProxy::hold_answers`]).
    answers: tokio::sync::watch::Sender<bool>,
    /// Chunks of an answer waiting at the proxy now.
    held: AtomicU64,
}

impl ProxyState {
    fn sever_all(&self) {
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// A TCP proxy in front of the server: TLS passes through untouched, so the station still checks
/// the pinned certificate (issued for `localhost`) end to end.
#[derive(Debug)]
struct FlakyProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    async fn start(upstream: SocketAddr, seed: u64) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream: Mutex::new(upstream),
            faults: AtomicBool::new(false),
            seed,
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            answers: tokio::sync::watch::channel(true).0,
            held: AtomicU64::new(0),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let n = shared.connections.fetch_add(1, Ordering::SeqCst);
                let cut = shared.faults.load(Ordering::SeqCst).then(|| plan_cut(shared.seed, n));
                let upstream = *shared.upstream.lock().unwrap();
                let task = tokio::spawn(relay(client, upstream, cut, shared.clone()));
                let mut open = shared.open.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        });
        FlakyProxy { addr, state, accept }
    }

    /// The URL a station uses to reach the server through this proxy.
    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Turns the cuts on or off for new connections, and drops the open ones so that the client's
    /// pool cannot keep using a connection made before.
    fn set_faults(&self, on: bool) {
        self.state.faults.store(on, Ordering::SeqCst);
        self.sever_all();
    }

    fn set_upstream(&self, addr: SocketAddr) {
        *self.state.upstream.lock().unwrap() = addr;
    }

    /// Drops every open connection at once, as a server that died would.
    fn sever_all(&self) {
        self.state.sever_all();
    }

    /// [`FlakyProxy::sever_all`], callable from any thread.
    fn severer(&self) -> impl Fn() + Send + 'static {
        let state = self.state.clone();
        move || state.sever_all()
    }

    /// Before each attempt of an operation: with faults on, the connections left open by the last
    /// attempt are dropped, so every attempt runs on new connections with their own cut.
    fn new_attempt(&self) {
        if self.state.faults.load(Ordering::SeqCst) {
            self.sever_all();
        }
    }

    /// Holds the server's answers at the proxy (`true`) or lets them through again (`false`): a
    /// server that takes its time.
    fn hold_answers(&self, hold: bool) {
        self.state.answers.send_replace(!hold);
    }

    /// Whether an answer is waiting at the proxy now.
    fn holding(&self) -> bool {
        self.state.held.load(Ordering::SeqCst) > 0
    }

    fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }

    fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever_all();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Closed,
    Cut,
}

/// Carries one connection both ways until both sides close it, or until its cut: then both sockets
/// are dropped at once (the bytes before the cut were delivered, none after).
async fn relay(client: TcpStream, upstream: SocketAddr, cut: Option<Cut>, state: Arc<ProxyState>) {
    // A server that is down: the client sees its connection closed.
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, cut.map(|c| c.to_server), None);
    let down = pump(server_read, client_write, cut.map(|c| c.to_client), Some(&state));
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let flow = tokio::select! {
            f = &mut up, if !up_done => { up_done = true; f }
            f = &mut down, if !down_done => { down_done = true; f }
        };
        if flow == Flow::Cut {
            state.cuts.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Carries one direction; answers (`gate` set) wait while the proxy holds them.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    limit: Option<u64>,
    gate: Option<&ProxyState>,
) -> Flow {
    let mut buf = vec![0u8; 16 * 1024];
    let mut passed = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Flow::Closed;
            }
            Ok(n) => n,
        };
        if let Some(state) = gate {
            let mut open = state.answers.subscribe();
            if !*open.borrow() {
                state.held.fetch_add(1, Ordering::SeqCst);
                let _ = open.wait_for(|open| *open).await;
                state.held.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let allowed = match limit {
            Some(l) => n.min(usize::try_from(l.saturating_sub(passed)).unwrap_or(usize::MAX)),
            None => n,
        };
        if to.write_all(&buf[..allowed]).await.is_err() {
            return Flow::Closed;
        }
        passed += allowed as u64;
        if limit.is_some_and(|l| passed >= l) {
            return Flow::Cut;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server, its data, and what the server holds.

/// A server data directory with one nurse, synthetic patients (half on ICU) and a running server.
struct World {
    tmp: tempfile::TempDir,
    dir: DataDir,
    fingerprint: String,
    storage: std::sync::Arc<dyn Storage>,
    keys: chartroom_server::phi::RecordKeys,
    server: Option<RunningServer>,
    /// The ICU charts as loaded (what an ICU station may hold).
    icu: Vec<Chart>,
    /// Each ICU patient's record count on the server before any station wrote.
    baseline: HashMap<Uuid, usize>,
}

impl World {
    async fn new(patients: u64) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("server"));
        let report = init(&dir, &InitOptions::default()).unwrap();
        let storage = dir.open_storage().unwrap();
        chartroom_server::users::add_user(
            &*storage,
            NURSE,
            Role::Nurse,
            vec!["ICU".into()],
            &Password::new(PASSWORD.into()),
            wall_now(),
        )
        .unwrap();
        let config = chartroom_synth::SynthConfig::new(7, wall_now());
        let charts: Vec<Chart> = (0..patients).map(|i| chartroom_synth::patient(&config, i)).collect();
        let keys = dir.record_keys().unwrap();
        chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
        let icu: Vec<Chart> = charts.into_iter().filter(|c| c.patient.unit == "ICU").collect();
        assert!(icu.len() >= 3, "the synthetic population has ICU patients");
        let baseline = icu
            .iter()
            .map(|c| {
                (c.patient.id, storage.records(c.patient.id, &RecordKind::ALL, usize::MAX).unwrap().len())
            })
            .collect();
        let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        World {
            tmp,
            dir,
            fingerprint: report.fingerprint,
            storage,
            keys,
            server: Some(server),
            icu,
            baseline,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().addr
    }

    fn direct_client(&self) -> ServerClient {
        ServerClient::new(&format!("https://localhost:{}", self.addr().port()), &self.fingerprint).unwrap()
    }

    fn profile_dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Enrolls a new ICU station through `client` (whose URL the station keeps).
    async fn enroll(&self, name: &str, client: &ServerClient) -> LockedVault {
        self.enroll_at(self.profile_dir(name), name, client).await
    }

    /// Enrolls a new ICU station with its profile in `profile`.
    async fn enroll_at(&self, profile: PathBuf, name: &str, client: &ServerClient) -> LockedVault {
        let token = chartroom_server::devices::issue_token(
            &*self.storage,
            name,
            DeviceProfile::Station,
            vec!["ICU".into()],
            Duration::from_secs(600),
            wall_now(),
        )
        .unwrap();
        LockedVault::enroll(Profile::new(profile), keystore(), client, &self.fingerprint, &token, wall_now())
            .await
            .unwrap()
    }

    /// A patient's chart as the server holds it (every record, opened).
    fn server_chart(&self, patient: Uuid) -> Chart {
        let sealed = self.storage.patient(patient).unwrap().unwrap();
        let stored = self.storage.records(patient, &RecordKind::ALL, usize::MAX).unwrap();
        self.keys.open_chart(&sealed, &stored).unwrap()
    }

    /// The server's own trail: how many `create`/`update` events each record id of `device` has.
    fn writes_by(&self, device: Uuid) -> BTreeMap<Uuid, usize> {
        let mut out = BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self.storage.audit_page(after, 1000).unwrap();
            let Some(last) = page.last() else { return out };
            after = last.server_seq;
            for stored in &page {
                let e = &stored.entry.event;
                if stored.entry.device_id == SERVER_CHAIN
                    && e.origin_device == Some(device)
                    && (e.action == "create" || e.action == "update")
                {
                    let id = e.resource_id.as_deref().unwrap().parse().unwrap();
                    *out.entry(id).or_default() += 1;
                }
            }
        }
    }

    /// The server's audit trail verifies, this station's uploaded chain included.
    fn assert_server_audit_verifies(&self) {
        let key = self.dir.signing_key().unwrap();
        chartroom_server::audit::checkpoint_if_due(&*self.storage, &key, wall_now()).unwrap();
        let verified = chartroom_server::audit::verify(&*self.storage, &key.verifying_key()).unwrap();
        let verified = verified.unwrap_or_else(|p| panic!("server audit trail: {p}"));
        assert!(verified.devices >= 2, "the server's chain and the station's: {verified:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// What a station wrote, and the invariants.

/// One record a station wrote locally.
#[derive(Clone, Debug, PartialEq)]
enum Written {
    Vital { patient: Uuid, vital: VitalSign, value: f64 },
    Note { patient: Uuid, text: String },
}

impl Written {
    fn patient(&self) -> Uuid {
        match self {
            Written::Vital { patient, .. } | Written::Note { patient, .. } => *patient,
        }
    }
}

/// Every record a station wrote, and the change ids that carry them (taken from the outbox right
/// after each write, while they are still pending).
#[derive(Debug, Default)]
struct Ledger {
    records: BTreeMap<Uuid, Written>,
    changes: BTreeMap<Uuid, Uuid>,
}

impl Ledger {
    fn record_vitals(&mut self, vault: &mut UnlockedVault, mrn: &str, values: &[(VitalSign, f64)]) {
        for o in vault.record_vitals(mrn, values, wall_now()).unwrap() {
            let w = Written::Vital { patient: o.patient_id, vital: o.vital, value: o.value };
            assert!(self.records.insert(o.id, w).is_none());
        }
        self.take_change_ids(vault);
    }

    fn write_note(&mut self, vault: &mut UnlockedVault, mrn: &str, text: &str, sign: bool) {
        let note = vault.write_note(mrn, text, sign, wall_now()).unwrap();
        let w = Written::Note { patient: note.patient_id, text: note.text.clone() };
        assert!(self.records.insert(note.id, w).is_none());
        self.take_change_ids(vault);
    }

    /// A random vitals set (one to four signs, values in range) or a note, on a random ICU patient.
    fn random_write(&mut self, vault: &mut UnlockedVault, world: &World, rng: &mut StdRng, n: usize) {
        let mrn = world.icu[rng.gen_range(0..world.icu.len())].patient.mrn.clone();
        if rng.gen_bool(0.25) {
            let text = format!("Fault-test note {n}: resting, observations stable.");
            self.write_note(vault, &mrn, &text, rng.gen_bool(0.5));
        } else {
            let all = [
                (VitalSign::HeartRate, f64::from(rng.gen_range(55..120u32))),
                (VitalSign::RespiratoryRate, f64::from(rng.gen_range(12..24u32))),
                (VitalSign::Spo2, f64::from(rng.gen_range(92..100u32))),
                (VitalSign::Temperature, f64::from(rng.gen_range(361..385u32)) / 10.0),
            ];
            let k = rng.gen_range(1..=all.len());
            self.record_vitals(vault, &mrn, &all[..k]);
        }
    }

    /// `sets` full vitals sets (four signs each) spread over the ICU patients.
    fn bulk_vitals(&mut self, vault: &mut UnlockedVault, world: &World, sets: usize) {
        for i in 0..sets {
            let mrn = world.icu[i % world.icu.len()].patient.mrn.clone();
            let hr = f64::from(50 + u32::try_from(i % 100).unwrap());
            let set = [
                (VitalSign::HeartRate, hr),
                (VitalSign::SystolicBp, 120.0),
                (VitalSign::DiastolicBp, 75.0),
                (VitalSign::Spo2, 97.0),
            ];
            self.record_vitals(vault, &mrn, &set);
        }
    }

    fn take_change_ids(&mut self, vault: &UnlockedVault) {
        for e in vault.outbox().unwrap() {
            if self.records.contains_key(&e.record_id) && !self.changes.contains_key(&e.change_id) {
                self.changes.insert(e.change_id, e.record_id);
            }
        }
    }
}

/// Every record the stations wrote (one ledger and device each) is on the server exactly once, as
/// written, at version 1; its change id was applied once, by the device that wrote it; the server
/// holds nothing else from these devices and no record it did not have before.
fn assert_exactly_once_on_server(world: &World, stations: &[(&Ledger, Uuid)]) {
    for (ledger, device) in stations {
        assert_eq!(ledger.changes.len(), ledger.records.len(), "one change id per record");
        for (change, record) in &ledger.changes {
            assert_eq!(
                world.storage.applied_change(*change).unwrap(),
                Some(chartroom_server::storage::AppliedChange {
                    device_id: *device,
                    record_id: *record,
                    version: 1
                }),
                "change {change} (record {record}) applied once, by the device that made it"
            );
        }
        let expected: BTreeMap<Uuid, usize> = ledger.records.keys().map(|id| (*id, 1)).collect();
        assert_eq!(
            world.writes_by(*device),
            expected,
            "the server's trail: one create per record, no other write"
        );
    }
    for chart in &world.icu {
        let pid = chart.patient.id;
        let stored = world.storage.records(pid, &RecordKind::ALL, usize::MAX).unwrap();
        let ids: HashSet<Uuid> = stored.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), stored.len(), "no record id twice");
        let written: Vec<(&Uuid, &Written)> =
            stations.iter().flat_map(|(l, _)| l.records.iter()).filter(|(_, w)| w.patient() == pid).collect();
        assert_eq!(
            stored.len(),
            world.baseline[&pid] + written.len(),
            "patient {pid}: no lost and no extra record"
        );
        let server = world.server_chart(pid);
        for (id, w) in written {
            match w {
                Written::Vital { vital, value, .. } => {
                    let o = server.observations.iter().find(|o| o.id == *id);
                    let o = o.unwrap_or_else(|| panic!("observation {id} is not on the server"));
                    assert_eq!((o.vital, o.value, o.version), (*vital, *value, 1), "observation {id}");
                }
                Written::Note { text, .. } => {
                    let n = server.notes.iter().find(|n| n.id == *id);
                    let n = n.unwrap_or_else(|| panic!("note {id} is not on the server"));
                    assert_eq!((&n.text, n.version), (text, 1), "note {id}");
                }
            }
        }
    }
}

/// The station holds what the server holds for every ICU patient (each record once, at the
/// server's version), its outbox is empty, its first sync is complete and its cursor is at the
/// server's last change.
fn assert_station_matches_server(vault: &mut UnlockedVault, world: &World) {
    assert_eq!(vault.outbox().unwrap(), vec![], "the outbox is empty");
    for chart in &world.icu {
        let mut local = vault.chart_by_mrn(&chart.patient.mrn, usize::MAX, wall_now()).unwrap();
        let mut server = world.server_chart(chart.patient.id);
        for c in [&mut local, &mut server] {
            c.observations.sort_by_key(|o| o.id);
            c.notes.sort_by_key(|n| n.id);
        }
        assert_eq!(local.observations, server.observations, "patient {}: observations", chart.patient.id);
        assert_eq!(local.notes, server.notes, "patient {}: notes", chart.patient.id);
    }
    let (cursor, complete) = vault.store().sync_state().unwrap();
    assert!(complete, "first sync complete");
    let rest = world.storage.pull_page(None, cursor, 1000).unwrap();
    assert!(
        rest.patients.is_empty() && rest.records.is_empty() && !rest.more,
        "the cursor ({cursor}) is at the server's last change"
    );
    let entries = vault.verify_audit().unwrap().unwrap_or_else(|b| panic!("station audit chain: {b}"));
    assert!(entries > 0);
}

// ---------------------------------------------------------------------------------------------
// Sync with retries.

/// What the faults did, to show the test exercised what it claims.
#[derive(Debug, Default)]
struct FaultStats {
    login_failures: usize,
    push_attempts: usize,
    push_failures: usize,
    /// Lost acknowledgements: after a failed push, pending changes the server had in fact applied
    /// (summed over the failures, so a change can count more than once).
    lost_acks: usize,
    /// Changes recorded while others waited in the outbox after a failed push.
    written_between_retries: usize,
    pull_failures: usize,
    /// Interrupted pulls that had applied some pages first.
    partial_pulls: usize,
    upload_failures: usize,
    applied: usize,
}

/// How a station reaches the server: a client, and the proxy it goes through (if any).
#[derive(Clone, Copy, Debug)]
struct Link<'a> {
    client: &'a ServerClient,
    proxy: Option<&'a FlakyProxy>,
}

impl Link<'_> {
    /// The client for the next attempt of an operation.
    fn attempt(&self) -> &ServerClient {
        if let Some(proxy) = self.proxy {
            proxy.new_attempt();
        }
        self.client
    }
}

async fn login(locked: &LockedVault, link: Link<'_>, stats: &mut FaultStats) -> UnlockedVault {
    let pw = Password::new(PASSWORD.into());
    for _ in 0..MAX_ATTEMPTS {
        match locked.login_online(link.attempt(), NURSE, &pw, wall_now()).await {
            Ok(v) => return v,
            Err(e) if transient(&e) => stats.login_failures += 1,
            Err(e) => panic!("login failed for good: {e} ({})", e.code()),
        }
    }
    panic!("no login in {MAX_ATTEMPTS} attempts");
}

/// Pushes until the whole outbox is accepted. Between failed attempts, counts the lost
/// acknowledgements, and once in a while records a new change (a clinician keeps working meanwhile;
/// at most once per call, or a growing outbox would make every push too large to get through).
async fn push_until_settled(
    vault: &mut UnlockedVault,
    link: Link<'_>,
    world: &World,
    ledger: &mut Ledger,
    rng: &mut StdRng,
    stats: &mut FaultStats,
) {
    let mut wrote = false;
    for _ in 0..MAX_ATTEMPTS {
        let before = vault.outbox().unwrap().len();
        let report = match vault.push_outbox(link.attempt(), wall_now()).await {
            Ok(r) => r,
            // Cut off: what was settled before the cut left the outbox; the rest is still pending.
            Err(e) if e.is_retryable() => {
                stats.push_attempts += 1;
                stats.push_failures += 1;
                let pending = vault.outbox().unwrap();
                assert!(pending.iter().all(|e| e.state == "pending"), "{pending:?}");
                stats.applied += before - pending.len();
                stats.lost_acks += pending
                    .iter()
                    .filter(|e| world.storage.applied_change(e.change_id).unwrap().is_some())
                    .count();
                if !wrote && rng.gen_bool(0.3) {
                    wrote = true;
                    let n = ledger.records.len();
                    ledger.random_write(vault, world, rng, n);
                    stats.written_between_retries += 1;
                }
                continue;
            }
            Err(e) => panic!("push failed for good: {e} ({})", e.code()),
        };
        if report.conflicts + report.rejected > 0 {
            let kept: Vec<_> = vault.outbox().unwrap().into_iter().filter(|e| e.state != "pending").collect();
            let on_server: Vec<_> =
                kept.iter().map(|e| world.storage.applied_change(e.change_id).unwrap()).collect();
            panic!("{report:?}: {kept:?}; on the server: {on_server:?}");
        }
        stats.push_attempts += 1;
        stats.applied += report.applied;
        assert_eq!(report.pending, 0, "a push that was not cut off settles everything: {report:?}");
        return;
    }
    panic!("the outbox did not drain in {MAX_ATTEMPTS} attempts");
}

/// Pulls until up to date. After each interruption the cursor has not gone back, and a first sync
/// that has not finished is not marked complete.
async fn pull_until_complete(vault: &mut UnlockedVault, link: Link<'_>, stats: &mut FaultStats) {
    let (mut cursor, was_complete) = vault.store().sync_state().unwrap();
    for _ in 0..MAX_ATTEMPTS {
        match vault.pull(link.attempt(), wall_now()).await {
            Ok(report) => {
                assert!(report.complete);
                return;
            }
            Err(e) if transient(&e) => {
                stats.pull_failures += 1;
                let (now_at, complete) = vault.store().sync_state().unwrap();
                assert!(now_at >= cursor, "the cursor went back from {cursor} to {now_at}");
                assert_eq!(complete, was_complete, "an interrupted first sync is not complete");
                if now_at > cursor {
                    stats.partial_pulls += 1;
                }
                cursor = now_at;
            }
            Err(e) => panic!("pull failed for good: {e} ({})", e.code()),
        }
    }
    panic!("no complete pull in {MAX_ATTEMPTS} attempts");
}

async fn upload_audit(vault: &mut UnlockedVault, link: Link<'_>, stats: &mut FaultStats) {
    for _ in 0..MAX_ATTEMPTS {
        match vault.upload_audit(link.attempt()).await {
            Ok(_) => return,
            Err(e) if transient(&e) => stats.upload_failures += 1,
            Err(e) => panic!("audit upload failed for good: {e} ({})", e.code()),
        }
    }
    panic!("no audit upload in {MAX_ATTEMPTS} attempts");
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Many sync rounds through a proxy that cuts every connection at a random byte offset: logins,
/// the first (multi-page) sync, pushes with acknowledgements lost, pulls cut between pages, audit
/// uploads — while a colleague's station, connected directly, writes to the same patients.
/// Afterwards each change is on the server exactly once, the outbox is empty, both stations hold
/// exactly what the server holds, and the audit chains verify.
// hipaa (c)(1) (e)(2)(i): connections cut at random byte offsets lose and duplicate nothing
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_random_offsets_lose_and_duplicate_nothing() {
    let started = Instant::now();
    let seed = fault_seed(0x5EED_0007);
    let mut rng = StdRng::seed_from_u64(seed);
    let world = World::new(24).await;
    let proxy = FlakyProxy::start(world.addr(), seed).await;
    let flaky = ServerClient::new(&proxy.url(), &world.fingerprint).unwrap();
    let link = Link { client: &flaky, proxy: Some(&proxy) };
    let mut stats = FaultStats::default();

    // Enrollment goes through the proxy (the station keeps its URL) without faults.
    let locked = world.enroll("icu-flaky", &flaky).await;
    assert_eq!(locked.server().unwrap().url, proxy.url());
    let device = locked.device_id();

    // A colleague's station on the same unit, connected directly, writes enough that the flaky
    // station's pulls span several pages (200 change numbers each).
    let direct = world.direct_client();
    let colleague_locked = world.enroll("icu-colleague", &direct).await;
    let direct_link = Link { client: &direct, proxy: None };
    let mut colleague = login(&colleague_locked, direct_link, &mut FaultStats::default()).await;
    colleague.pull(&direct, wall_now()).await.unwrap();
    let mut colleague_ledger = Ledger::default();
    colleague_ledger.bulk_vitals(&mut colleague, &world, 60);
    assert_eq!(colleague.push_outbox(&direct, wall_now()).await.unwrap().applied, 240);

    proxy.set_faults(true);
    let mut vault = login(&locked, link, &mut stats).await;

    // The first sync spans several pages; interruptions leave it resumable and marked incomplete.
    assert!(!vault.first_sync_complete().unwrap());
    pull_until_complete(&mut vault, link, &mut stats).await;
    assert!(vault.first_sync_complete().unwrap());
    assert_eq!(vault.census(None, wall_now()).unwrap().len(), world.icu.len());

    // Rounds of offline work and sync through the faults: at least MIN_ROUNDS, and on until the
    // faults have lost an acknowledgement and cut a pull between pages (or MAX_ROUNDS: then the
    // checks below fail, as the test would not have shown what it claims).
    const MIN_ROUNDS: usize = 24;
    const MAX_ROUNDS: usize = 100;
    let mut ledger = Ledger::default();
    let mut rounds = 0;
    for round in 0..MAX_ROUNDS {
        if round >= MIN_ROUNDS && stats.lost_acks > 0 && stats.partial_pulls > 0 {
            break;
        }
        rounds += 1;
        for _ in 0..rng.gen_range(1..=4) {
            let n = ledger.records.len();
            ledger.random_write(&mut vault, &world, &mut rng, n);
        }
        if round % 7 == 1 && round < 3 * 7 {
            // The colleague writes again: the next pull has three pages.
            colleague_ledger.bulk_vitals(&mut colleague, &world, 150);
            assert_eq!(colleague.push_outbox(&direct, wall_now()).await.unwrap().pending, 0);
        }
        if round % 5 == 4 {
            // A new session through the faults (the old one is simply dropped).
            vault = login(&vault.lock(), link, &mut stats).await;
        }
        push_until_settled(&mut vault, link, &world, &mut ledger, &mut rng, &mut stats).await;
        assert!(vault.outbox().unwrap().is_empty());
        if round % 3 != 2 {
            pull_until_complete(&mut vault, link, &mut stats).await;
        }
        if round % 4 == 3 {
            upload_audit(&mut vault, link, &mut stats).await;
        }
    }
    pull_until_complete(&mut vault, link, &mut stats).await;
    upload_audit(&mut vault, link, &mut stats).await;
    println!("{stats:?}; {rounds} rounds, {} connections, {} cut", proxy.connections(), proxy.cuts());

    // The faults really hit what this test is about.
    assert!(stats.lost_acks > 0, "some acknowledgements were lost: {stats:?}");
    assert!(stats.partial_pulls > 0, "some pulls were cut between pages: {stats:?}");
    assert!(stats.push_failures > 0 && stats.pull_failures > 0 && stats.upload_failures > 0, "{stats:?}");
    assert!(stats.written_between_retries > 0, "{stats:?}");

    assert_exactly_once_on_server(&world, &[(&ledger, device), (&colleague_ledger, colleague.device_id())]);
    assert_eq!(stats.applied, ledger.changes.len(), "each change was settled once on the station");
    assert_station_matches_server(&mut vault, &world);
    proxy.set_faults(false);
    upload_audit(&mut vault, link, &mut stats).await;
    assert_eq!(vault.upload_audit(&flaky).await.unwrap(), 0, "the whole chain is on the server");
    world.assert_server_audit_verifies();

    // The colleague, connected directly, sees each of the flaky station's changes once.
    colleague.pull(&direct, wall_now()).await.unwrap();
    assert_station_matches_server(&mut colleague, &world);

    let ks = keystore();
    let _ = ks.delete(device);
    let _ = ks.delete(colleague.device_id());
    println!("took {:?}", started.elapsed());
}

/// The server stops while a push of several hundred changes is in flight (its connections die
/// with it), then starts again on the same data directory behind the same address (the proxy's);
/// twice, at random points of the batch. The station pushes again: every change is on the server
/// exactly once and settled once on the station.
// hipaa (e)(2)(i) (c)(1): a server restarted mid-batch applies each change once
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restarted_mid_batch_applies_each_change_once() {
    let started = Instant::now();
    let seed = fault_seed(0x5EED_0003);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::new(8).await;
    let proxy = FlakyProxy::start(world.addr(), seed).await;
    let client = ServerClient::new(&proxy.url(), &world.fingerprint).unwrap();
    let link = Link { client: &client, proxy: Some(&proxy) };
    let mut stats = FaultStats::default();
    let locked = world.enroll("icu-restart", &client).await;
    let device = locked.device_id();
    let mut vault = login(&locked, link, &mut stats).await;
    vault.pull(&client, wall_now()).await.unwrap();

    // Rounds of 600 changes offline (two push batches: at most 500 each). The server applies a
    // batch in one transaction, so "mid-batch" means: the first batch has committed (the head of
    // the server's trail moves) and the second is in flight — the server stops then.
    let mut ledger = Ledger::default();
    let mut crashes = 0;
    for _ in 0..8 {
        if crashes == 2 && stats.lost_acks > 0 {
            break;
        }
        ledger.bulk_vitals(&mut vault, &world, 75);
        vault.upload_audit(&client).await.unwrap();
        ledger.bulk_vitals(&mut vault, &world, 75);
        // The watch runs on its own thread (not this runtime's timers).
        let stop_at = world.storage.audit_head().unwrap().0 + 1;
        let watch_storage = world.dir.open_storage().unwrap();
        let sever = proxy.severer();
        let stop = world.server.as_ref().unwrap().stopper();
        let pushed = Arc::new(AtomicBool::new(false));
        let push_ended = pushed.clone();
        let watch = std::thread::spawn(move || {
            while watch_storage.audit_head().unwrap().0 < stop_at {
                if push_ended.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // The server dies and its connections with it.
            sever();
            stop(Duration::ZERO);
        });
        let before = vault.outbox().unwrap().len();
        let result = vault.push_outbox(&client, wall_now()).await;
        pushed.store(true, Ordering::SeqCst);
        watch.join().unwrap();
        // Stopped by the watch (or, if the push won the race, now).
        world.server.take().unwrap().shutdown(Duration::ZERO).await.unwrap();
        if let Ok(report) = result {
            // The push finished before the stop came: nothing to recover from this round.
            assert_eq!((report.applied, report.pending), (before, 0));
            stats.applied += report.applied;
        } else {
            // The dead server's handler may still be applying the batch in flight: the re-push
            // races it, and every change must still come back applied or a duplicate.
            crashes += 1;
            let err = result.expect_err("interrupted");
            assert!(err.is_retryable(), "{err}");
            let pending = vault.outbox().unwrap();
            assert!(pending.iter().all(|e| e.state == "pending"), "{pending:?}");
            stats.applied += before - pending.len();
            stats.lost_acks += pending
                .iter()
                .filter(|e| world.storage.applied_change(e.change_id).unwrap().is_some())
                .count();
        }

        // The server comes back on the same data directory; the proxy keeps the station's URL.
        let server = start(&world.dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        proxy.set_upstream(server.addr);
        world.server = Some(server);
    }
    assert!(crashes > 0);
    println!("after {crashes} restarts: {stats:?}");
    assert!(stats.lost_acks > 0, "the server applied changes whose answer never came: {stats:?}");
    // The same session pushes again (its token is in the server's database).
    push_until_settled(&mut vault, link, &world, &mut ledger, &mut rng, &mut stats).await;
    assert_eq!(stats.applied, ledger.changes.len(), "each change was settled once on the station");
    assert_exactly_once_on_server(&world, &[(&ledger, device)]);
    vault.pull(&client, wall_now()).await.unwrap();
    assert_station_matches_server(&mut vault, &world);
    upload_audit(&mut vault, link, &mut stats).await;
    world.assert_server_audit_verifies();

    let _ = keystore().delete(device);
    println!("took {:?}", started.elapsed());
}

/// A station that shares its vault (the desktop app: chart reads during a background sync) through
/// `VaultAccess` over its own lock.
struct Shared(Arc<tokio::sync::Mutex<UnlockedVault>>);

impl chartroom_station::sync::VaultAccess for Shared {
    async fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut UnlockedVault) -> Result<R, StationError> + Send,
    ) -> Result<R, StationError> {
        f(&mut *self.0.lock().await)
    }
}

/// While a sync waits for a slow server, the vault is free: a nurse can read a chart and record
/// vitals meanwhile, and the vitals reach the server with the next sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_is_free_while_a_sync_waits_for_the_server() {
    let world = World::new(8).await;
    let proxy = FlakyProxy::start(world.addr(), 0).await;
    let client = ServerClient::new(&proxy.url(), &world.fingerprint).unwrap();
    let link = Link { client: &client, proxy: None };
    let locked = world.enroll("icu-shared", &client).await;
    let device = locked.device_id();
    let mut vault = login(&locked, link, &mut FaultStats::default()).await;
    vault.sync(&client, wall_now()).await.unwrap();
    let vault = Arc::new(tokio::sync::Mutex::new(vault));

    proxy.hold_answers(true);
    let sync = {
        let (access, client) = (Shared(vault.clone()), client.clone());
        tokio::spawn(async move { chartroom_station::sync::sync(&access, &client, wall_now()).await })
    };
    let waited = Instant::now();
    while !proxy.holding() {
        assert!(waited.elapsed() < Duration::from_secs(20), "the sync asks the server something");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mrn = world.icu[0].patient.mrn.clone();
    let mut ledger = Ledger::default();
    {
        let mut v = vault.try_lock().expect("the vault is free while the sync waits for the server");
        let chart = v.chart_by_mrn(&mrn, 100, wall_now()).unwrap();
        assert_eq!(chart.patient.mrn, mrn);
        ledger.record_vitals(&mut v, &mrn, &[(VitalSign::HeartRate, 72.0)]);
    }
    assert!(!sync.is_finished(), "the server's answer is still held");
    proxy.hold_answers(false);
    sync.await.unwrap().unwrap();

    let mut vault = Arc::try_unwrap(vault).unwrap().into_inner();
    vault.sync(&client, wall_now()).await.unwrap();
    assert!(
        vault.outbox().unwrap().is_empty(),
        "the vitals recorded during the sync were pushed by the next"
    );
    assert_exactly_once_on_server(&world, &[(&ledger, device)]);
    assert_station_matches_server(&mut vault, &world);
    let _ = keystore().delete(device);
}

/// The station's disk fills up mid-shift (a real 16 MiB tmpfs under its profile): a vitals entry,
/// a pull and even opening a chart (its audit entry cannot be written) are refused with
/// `store.disk_full`; nothing half-written is left (the outbox and the pull cursor are as before),
/// and once space returns the chart is as it was and the same entry, pull and push complete.
// hipaa (c)(1): a full disk during writes and sync is a clear error with nothing lost or
//   half-written; the retry completes once space returns
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_writes_and_sync_is_a_clear_error_and_the_retry_completes() {
    let Some(fs) = chartroom_tests::Tmpfs::mount(16 * 1024) else { return };
    let world = World::new(12).await;
    let client = world.direct_client();
    let link = Link { client: &client, proxy: None };
    let locked = world.enroll_at(fs.path().join("station"), "icu-full-disk", &client).await;
    let device = locked.device_id();
    let mut vault = login(&locked, link, &mut FaultStats::default()).await;
    vault.sync(&client, wall_now()).await.unwrap();
    let mrn = world.icu[0].patient.mrn.clone();
    let chart_before = vault.chart_by_mrn(&mrn, usize::MAX, wall_now()).unwrap();

    // The server gains patients while the station's disk is full.
    let config = chartroom_synth::SynthConfig::new(99, wall_now());
    let arriving: Vec<Chart> = (1000..1040)
        .map(|i| chartroom_synth::patient(&config, i))
        .filter(|c| c.patient.unit == "ICU")
        .collect();
    chartroom_server::records::load_charts(&*world.storage, &world.keys, &arriving).unwrap();
    let filler = chartroom_tests::fill(fs.path());
    let state_before = vault.store().sync_state().unwrap();

    let vitals = [(VitalSign::HeartRate, 88.0), (VitalSign::Spo2, 97.0)];
    let err = vault.record_vitals(&mrn, &vitals, wall_now()).unwrap_err();
    assert_eq!(err.code(), "store.disk_full", "{err}");
    assert!(vault.outbox().unwrap().is_empty(), "a refused entry queued nothing");
    let err = vault.pull(&client, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "store.disk_full", "{err}");
    assert_eq!(
        vault.store().sync_state().unwrap(),
        state_before,
        "the cursor did not move past what was not stored"
    );
    // Opening a chart is audited, and an access that cannot be recorded is not given: refused too.
    let err = vault.chart_by_mrn(&mrn, usize::MAX, wall_now()).unwrap_err();
    assert_eq!(err.code(), "store.disk_full", "{err}");

    std::fs::remove_file(filler).unwrap();
    // What was there reads back unchanged.
    let chart_now = vault.chart_by_mrn(&mrn, usize::MAX, wall_now()).unwrap();
    assert_eq!(chart_now.observations, chart_before.observations);
    let mut ledger = Ledger::default();
    ledger.record_vitals(&mut vault, &mrn, &vitals);
    let report = vault.sync(&client, wall_now()).await.unwrap();
    assert!(vault.outbox().unwrap().is_empty(), "{report:?}");
    for chart in &arriving {
        let local = vault.chart_by_mrn(&chart.patient.mrn, usize::MAX, wall_now()).unwrap();
        assert_eq!(local.patient, chart.patient);
    }
    assert_exactly_once_on_server(&world, &[(&ledger, device)]);
    assert_station_matches_server(&mut vault, &world);
    vault.store().integrity_check().unwrap();
    let _ = keystore().delete(device);
}

// ---------------------------------------------------------------------------------------------
// Defects these fault tests found (since fixed in the product); each must stay fixed.

/// A station that was offline long enough to hold a thousand recorded vitals (one ICU shift:
/// twelve patients, seven signs an hour) must still upload its audit trail afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backlog_of_changes_can_upload_its_audit_trail() {
    let world = World::new(8).await;
    let client = world.direct_client();
    let link = Link { client: &client, proxy: None };
    let locked = world.enroll("icu-backlog", &client).await;
    let device = locked.device_id();
    let mut vault = login(&locked, link, &mut FaultStats::default()).await;
    vault.pull(&client, wall_now()).await.unwrap();
    vault.upload_audit(&client).await.unwrap();
    let mut ledger = Ledger::default();
    ledger.bulk_vitals(&mut vault, &world, 260);
    let pushed = vault.push_outbox(&client, wall_now()).await.unwrap();
    assert_eq!((pushed.applied, pushed.pending), (1040, 0), "the changes themselves get through");
    let uploaded = vault.upload_audit(&client).await;
    assert!(uploaded.is_ok(), "the audit trail of a long offline shift is uploaded: {:?}", uploaded.err());
    let _ = keystore().delete(device);
}

/// A station that wrote long notes offline must still be able to push them (and everything
/// recorded after them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_long_notes_can_be_pushed() {
    let world = World::new(8).await;
    let client = world.direct_client();
    let link = Link { client: &client, proxy: None };
    let locked = world.enroll("icu-notes", &client).await;
    let device = locked.device_id();
    let mut vault = login(&locked, link, &mut FaultStats::default()).await;
    vault.pull(&client, wall_now()).await.unwrap();
    let mut ledger = Ledger::default();
    let text = "Observations stable overnight, resting comfortably, pain controlled. ".repeat(270);
    assert!(text.chars().count() <= chartroom_domain::validate::MAX_NOTE_CHARS);
    for i in 0..60 {
        let mrn = world.icu[i % world.icu.len()].patient.mrn.clone();
        ledger.write_note(&mut vault, &mrn, &format!("Night note {i}. {text}"), true);
    }
    ledger.record_vitals(&mut vault, &world.icu[0].patient.mrn.clone(), &[(VitalSign::HeartRate, 80.0)]);
    let pushed = vault.push_outbox(&client, wall_now()).await;
    assert!(
        pushed.as_ref().is_ok_and(|r| r.pending == 0 && r.applied == 61),
        "sixty long notes and the vitals after them reach the server: {pushed:?}"
    );
    assert_exactly_once_on_server(&world, &[(&ledger, device)]);
    let _ = keystore().delete(device);
}

/// The same change pushed twice at once — what a station does when its connection drops in the
/// middle of a large push and it retries while the server is still applying the first attempt —
/// is applied once and answered `Applied` or `Duplicate`, never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_racing_its_first_attempt_is_a_duplicate_not_a_rejection() {
    use chartroom_client::DeviceIdentity;
    use chartroom_protocol::{Change, ChangeOutcome, ChangeRecord, PushBatch, PushResponse};
    let world = World::new(8).await;
    let client = world.direct_client();
    let token = chartroom_server::devices::issue_token(
        &*world.storage,
        "icu-race",
        DeviceProfile::Station,
        vec!["ICU".into()],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let seed: [u8; 32] = StdRng::seed_from_u64(fault_seed(0x5EED_0005)).gen();
    let probe = DeviceIdentity::new(String::new(), &seed);
    let enrolled = client.enroll(&token, &probe.public_key_hex()).await.unwrap();
    let device = DeviceIdentity::new(enrolled.device_id.clone(), &seed);
    let session = client.login(&device, NURSE, PASSWORD).await.unwrap();
    let author: Uuid = session.user.id.parse().unwrap();
    let mut refused = Vec::new();
    let mut applied = 0;
    for _ in 0..3 {
        let changes = (0..chartroom_protocol::MAX_PUSH)
            .map(|i| Change {
                change_id: Uuid::now_v7().to_string(),
                base_version: 0,
                change: ChangeRecord::Observation(chartroom_domain::Observation {
                    id: Uuid::now_v7(),
                    patient_id: world.icu[i % world.icu.len()].patient.id,
                    vital: VitalSign::HeartRate,
                    value: f64::from(60 + u32::try_from(i % 60).unwrap()),
                    effective_at: wall_now(),
                    recorded_by: author,
                    version: 0,
                }),
            })
            .collect();
        let batch = PushBatch { changes };
        let push = |delay: u64| {
            let (client, device, session, batch) = (&client, &device, &session, &batch);
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let sent = client.post_signed(device, &session.access_token, "/v1/sync/push", batch).await;
                let response: PushResponse = sent.unwrap();
                response
            }
        };
        let (first, retry) = tokio::join!(push(0), push(3));
        for result in first.results.into_iter().chain(retry.results) {
            match result.outcome {
                ChangeOutcome::Applied { .. } => applied += 1,
                ChangeOutcome::Duplicate { .. } => {}
                other => refused.push(other),
            }
        }
    }
    assert_eq!(applied, 3 * chartroom_protocol::MAX_PUSH, "each change applied once");
    assert!(
        refused.is_empty(),
        "{} of the retried changes were refused: {:?}",
        refused.len(),
        refused.first()
    );
}
