//! The PostgreSQL backend (issue 9), on a real cluster over verified TLS: the storage conformance
//! suite, what a DBA can read, and several server processes sharing one database.

#![allow(clippy::unwrap_used)]

#[path = "../../crates/chartroom-server/tests/conformance/mod.rs"]
mod conformance;

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chartroom_client::ServerClient;
use chartroom_crypto::Password;
use chartroom_domain::VitalSign;
use chartroom_server::storage::{PgStorage, RecordKind};
use chartroom_server::{wall_now, DataDir};
use chartroom_station::{LockedVault, Profile, UnlockedVault};
use chartroom_tests::{admin, canonical, fresh_postgres, keystore, server_command, Serving};
use rand::{Rng, SeedableRng};

/// The storage conformance suite, exactly as the embedded backend runs it.
#[test]
fn postgres_storage_conforms() {
    if fresh_postgres().is_none() {
        return;
    }
    conformance::run_all(|| {
        Box::new(PgStorage::connect(&fresh_postgres().expect("cluster")).expect("connects and migrates"))
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn secret(user: &str) -> String {
    format!("{}-long-passphrase-{}", user.len() * 7 + 3, user.len())
}

fn password(user: &str) -> Password {
    Password::new(secret(user))
}

/// Three server processes on one PostgreSQL database behave as one server: a session opened on one
/// works on the others and ends everywhere when the account is disabled on a third; failed logins
/// count together; and with stations writing through all three at once while another station pulls
/// continuously, every station ends up with exactly the server's records (no pull cursor ever
/// passed a change committed late) and the audit trail verifies.
#[tokio::test]
async fn three_server_processes_behave_as_one() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();
    let a = dirs[0].to_str().unwrap().to_string();
    let fingerprint = chartroom_tests::init_server(&["--data-dir", &a, "--database-url", &url]);
    admin(&["seed", "--data-dir", &a, "--patients", "12", "--units", "ICU"], None);
    for user in ["kim.rn", "ana.rn", "bo.rn", "lee.rn"] {
        let pw = format!("{}\n", secret(user));
        admin(
            &[
                "user",
                "add",
                "--data-dir",
                &a,
                "--username",
                user,
                "--role",
                "nurse",
                "--unit",
                "ICU",
                "--password-stdin",
            ],
            Some(&pw),
        );
    }
    // The other processes run from copies of the same data directory (same keys).
    copy_dir(&dirs[0], &dirs[1]);
    copy_dir(&dirs[0], &dirs[2]);
    let servers: Vec<Serving> = dirs.iter().map(|d| Serving::start(d)).collect();
    let clients: Vec<ServerClient> =
        servers.iter().map(|s| ServerClient::new(&s.url, &fingerprint).unwrap()).collect();

    // Four stations, enrolled with tokens issued by one process and used at another.
    let mut stations = Vec::new();
    for (i, name) in ["icu-1", "icu-2", "icu-3", "icu-4"].iter().enumerate() {
        let d = dirs[(i + 1) % 3].to_str().unwrap().to_string();
        let token = admin(
            &["device", "token", "--data-dir", &d, "--name", name, "--profile", "station", "--unit", "ICU"],
            None,
        );
        let locked = LockedVault::enroll(
            Profile::new(tmp.path().join(name)),
            keystore(),
            &clients[i % 3],
            &fingerprint,
            token.trim(),
            wall_now(),
        )
        .await
        .unwrap();
        stations.push(locked);
    }

    // A session opened on A is honoured by B and C.
    let mut kim =
        stations[0].login_online(&clients[0], "kim.rn", &password("kim.rn"), wall_now()).await.unwrap();
    kim.sync(&clients[1], wall_now()).await.unwrap();
    kim.sync(&clients[2], wall_now()).await.unwrap();

    // Failed logins count together: six wrong passwords at once, two at each process. One server
    // checks the first three (two free failures, then delays start) and throttles the rest; three
    // processes with counters of their own would each have checked both of theirs.
    let wrong = password("ana.rn-but-wrong");
    let attempts = (0..6).map(|i| stations[1].login_online(&clients[i % 3], "ana.rn", &wrong, wall_now()));
    let mut codes: Vec<String> =
        join_all(attempts).await.into_iter().map(|r| server_code(&r.unwrap_err())).collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        ["auth.invalid_credentials"; 3].into_iter().chain(["auth.throttled"; 3]).collect::<Vec<_>>()
    );
    // The station's own counter was raised too: its one-second delay passes before it is used again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Writers on three stations through three processes at once; a reader pulling all along.
    let writers: Vec<UnlockedVault> =
        futures_login(&stations[..3], &clients, ["lee.rn", "bo.rn", "lee.rn"]).await;
    let mut reader =
        stations[3].login_online(&clients[1], "bo.rn", &password("bo.rn"), wall_now()).await.unwrap();
    let census = reader.census(None, wall_now()).unwrap();
    assert!(census.is_empty(), "nothing pulled yet");
    reader.sync(&clients[1], wall_now()).await.unwrap();
    let mrns: Vec<String> = reader.census(None, wall_now()).unwrap().into_iter().map(|r| r.mrn).collect();
    assert_eq!(mrns.len(), 12);
    let done = std::sync::atomic::AtomicBool::new(false);
    let write_all = async {
        let rounds = writers.into_iter().enumerate().map(|(i, mut v)| {
            let (mrns, clients) = (&mrns, &clients);
            async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                for round in 0..12 {
                    for _ in 0..3 {
                        let mrn = &mrns[rng.gen_range(0..mrns.len())];
                        let hr = f64::from(rng.gen_range(50..140u8));
                        v.record_vitals(mrn, &[(VitalSign::HeartRate, hr)], wall_now()).unwrap();
                    }
                    v.sync(&clients[(i + round) % 3], wall_now()).await.unwrap();
                }
                v
            }
        });
        let finished = join_all(rounds).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        finished
    };
    let read_all = async {
        let mut pulls = 0;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            reader.sync(&clients[pulls % 3], wall_now()).await.unwrap();
            pulls += 1;
        }
        pulls
    };
    let (mut writers, pulls) = tokio::join!(write_all, read_all);
    assert!(pulls > 3, "the reader pulled while the writers wrote ({pulls} pulls)");

    // One last incremental sync each, then every station's view equals the server's.
    let storage = DataDir::new(&dirs[2]).open_storage().unwrap();
    let keys = DataDir::new(&dirs[2]).record_keys().unwrap();
    writers.push(reader);
    writers.push(kim);
    for (i, v) in writers.iter_mut().enumerate() {
        v.sync(&clients[i % 3], wall_now()).await.unwrap();
        let rows = v.census(None, wall_now()).unwrap();
        assert_eq!(rows.len(), 12);
        for row in rows {
            let sealed = storage.patient(row.patient_id).unwrap().unwrap();
            let records = storage.records(row.patient_id, &RecordKind::ALL, usize::MAX).unwrap();
            let server = keys.open_chart(&sealed, &records).unwrap();
            let local = v.chart_by_mrn(&row.mrn, usize::MAX, wall_now()).unwrap();
            assert_eq!(canonical(&local), canonical(&server), "station {i}, patient {}", row.patient_id);
        }
    }
    let written: usize = (0..3).map(|_| 12 * 3).sum();
    let observations: usize = mrns
        .iter()
        .map(|m| writers[0].chart_by_mrn(m, usize::MAX, wall_now()).unwrap().observations.len())
        .sum();
    assert!(observations >= written, "every vitals set arrived ({observations} observations)");

    // Disabling the account on C ends kim's session on A and B too.
    admin(&["user", "disable", "--data-dir", dirs[2].to_str().unwrap(), "--username", "kim.rn"], None);
    let mut kim = writers.pop().unwrap();
    let e = kim.sync(&clients[0], wall_now()).await.unwrap_err();
    assert!(server_code(&e).starts_with("auth."), "{}", server_code(&e));
    let e =
        stations[0].login_online(&clients[1], "kim.rn", &password("kim.rn"), wall_now()).await.unwrap_err();
    assert_eq!(server_code(&e), "auth.user_disabled");

    // One audit trail, one chain, verified.
    drop(servers);
    let verified = admin(&["audit", "verify", "--data-dir", &a], None);
    assert!(verified.starts_with("audit ok:"), "{verified}");
}

/// The server's own code for a refusal (the station reports it as `server.refused`).
fn server_code(e: &chartroom_station::StationError) -> String {
    match e {
        chartroom_station::StationError::Server(chartroom_client::ClientError::Api { error, .. }) => {
            error.code.clone()
        }
        other => other.code().to_string(),
    }
}

async fn futures_login(
    stations: &[LockedVault],
    clients: &[ServerClient],
    users: [&str; 3],
) -> Vec<UnlockedVault> {
    let mut out = Vec::new();
    for (i, (station, user)) in stations.iter().zip(users).enumerate() {
        let mut v = station.login_online(&clients[i % 3], user, &password(user), wall_now()).await.unwrap();
        v.sync(&clients[i % 3], wall_now()).await.unwrap();
        out.push(v);
    }
    out
}

/// Polls every future to completion, concurrently, on this task.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, r) in pending.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// A DBA reading every table with `psql`, or a `pg_dump` of the database (what backups hold), sees
/// no patient's name or MRN — neither as text nor as the hex of a `bytea` — while the scan does see
/// what is stored in the clear (a username).
// hipaa (a)(2)(iv) (e)(2)(ii): a DBA reading every PostgreSQL table or a dump finds no PHI
#[test]
fn a_dba_reading_every_table_or_a_dump_finds_no_phi() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let options = chartroom_server::InitOptions { database_url: Some(url.clone()), ..Default::default() };
    chartroom_server::init(&dir, &options).unwrap();
    let storage = dir.open_storage().unwrap();
    let charts = chartroom_tests::charts_with_canary(7, 5);
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    chartroom_server::users::add_user(
        &*storage,
        "dba.visible.user",
        chartroom_domain::Role::Nurse,
        vec!["ICU".into()],
        &password("dba.visible.user"),
        wall_now(),
    )
    .unwrap();

    let mut seen = String::new();
    for table in
        chartroom_tests::psql(&url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").lines()
    {
        seen += &chartroom_tests::psql(&url, &format!("SELECT * FROM {table}"));
    }
    let dump = std::process::Command::new("pg_dump").args(["--format=plain", &url]).output().unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    seen += &String::from_utf8_lossy(&dump.stdout);
    assert!(seen.contains("dba.visible.user"), "the scan reads what is stored");
    chartroom_tests::assert_no_phi(&seen, &charts, "the tables or the dump");
}

/// With every pooled connection busy (a DBA's lock holds the only one), the next request is answered
/// 503 `server.busy` after the configured wait, not left hanging; the held request completes once
/// the lock goes, and the server carries on.
#[tokio::test]
async fn an_exhausted_pool_answers_503_busy_and_recovers() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let options = chartroom_server::InitOptions { database_url: Some(url.clone()), ..Default::default() };
    let report = chartroom_server::init(&dir, &options).unwrap();
    let mut config = dir.read_config().unwrap();
    config.database_pool = chartroom_server::DatabasePool { size: 1, wait_ms: 300 };
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    let server = chartroom_server::start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client =
        ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint).unwrap();
    let probe = chartroom_client::DeviceIdentity::new("probe".into(), &[1; 32]);
    let me = || client.get::<serde_json::Value>(&probe, "not-a-token", "/v1/me");
    let code = |r: Result<serde_json::Value, chartroom_client::ClientError>| match r {
        Err(chartroom_client::ClientError::Api { status, error, .. }) => (status, error.code),
        other => panic!("{other:?}"),
    };
    assert_eq!(code(me().await), (401, "auth.invalid_token".to_string()));

    let mut dba = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_dba = dba.stdin.take().unwrap();
    to_dba.write_all(b"BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(dba.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");

    let held = me();
    let refused = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let r = me().await;
        let waited = started.elapsed();
        to_dba.write_all(b"ROLLBACK;\n").unwrap();
        drop(to_dba);
        (r, waited)
    };
    let (held, (refused, waited)) = tokio::join!(held, refused);
    assert_eq!(code(refused), (503, "server.busy".to_string()));
    assert!(waited < Duration::from_secs(5), "answered after the pool's wait, not hung: {waited:?}");
    assert_eq!(code(held), (401, "auth.invalid_token".to_string()), "the held request completed");
    assert_eq!(code(me().await), (401, "auth.invalid_token".to_string()), "and the server carries on");
    dba.wait().unwrap();
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// A throwaway cluster of this test's own (it gets restarted), stopped when dropped.
struct OwnCluster {
    dir: std::path::PathBuf,
    url: String,
}

impl OwnCluster {
    fn script() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-cluster")
    }

    fn start(parent: &Path) -> OwnCluster {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // As root the cluster runs as `nobody`, which must reach its directory.
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dir = parent.join("pg");
        let out = std::process::Command::new(Self::script()).arg("start").arg(&dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8(out.stdout).unwrap();
        let url = line
            .trim()
            .strip_prefix("DATABASE_URL='")
            .and_then(|l| l.strip_suffix('\''))
            .unwrap()
            .to_string();
        OwnCluster { dir, url }
    }

    fn restart_at(dir: &Path) {
        let out = std::process::Command::new(Self::script()).arg("restart").arg(dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script()).arg("stop").arg(&self.dir).output();
    }
}

/// PostgreSQL restarted while a push batch is inside its transaction: the station gets a retryable
/// error, and after it retries every change is on the server exactly once, its view equals the
/// server's, and the audit trail verifies.
#[tokio::test]
async fn postgres_restarted_during_a_push_batch_loses_and_duplicates_nothing() {
    if fresh_postgres().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cluster = OwnCluster::start(tmp.path());
    let dir = DataDir::new(tmp.path().join("server"));
    let options =
        chartroom_server::InitOptions { database_url: Some(cluster.url.clone()), ..Default::default() };
    let report = chartroom_server::init(&dir, &options).unwrap();
    let storage = dir.open_storage().unwrap();
    let mut config = chartroom_synth::SynthConfig::new(5, wall_now());
    config.units = vec!["ICU".into()];
    let charts: Vec<chartroom_domain::Chart> =
        (0..10).map(|i| chartroom_synth::patient(&config, i)).collect();
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    let role = chartroom_domain::Role::Nurse;
    chartroom_server::users::add_user(
        &*storage,
        "kim.rn",
        role,
        vec!["ICU".into()],
        &password("kim.rn"),
        wall_now(),
    )
    .unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-1",
        chartroom_domain::DeviceProfile::Station,
        vec!["ICU".into()],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let server = chartroom_server::start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client =
        ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint).unwrap();
    let locked = LockedVault::enroll(
        Profile::new(tmp.path().join("icu-1")),
        keystore(),
        &client,
        &report.fingerprint,
        &token,
        wall_now(),
    )
    .await
    .unwrap();
    let mut v = locked.login_online(&client, "kim.rn", &password("kim.rn"), wall_now()).await.unwrap();
    v.sync(&client, wall_now()).await.unwrap();
    for i in 0..60u8 {
        let mrn = &charts[usize::from(i % 10)].patient.mrn;
        v.record_vitals(mrn, &[(VitalSign::HeartRate, f64::from(60 + i))], wall_now()).unwrap();
    }

    // A DBA's lock stops the batch inside its transaction (it waits for the change counter)…
    let mut dba = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", &cluster.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut to_dba = dba.stdin.take().unwrap();
    to_dba
        .write_all(b"BEGIN; LOCK TABLE change_counter IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(dba.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    // …and PostgreSQL restarts under it (a fast shutdown ends every session).
    let url = cluster.url.clone();
    let restart = async {
        let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chartroom-server' AND wait_event_type = 'Lock'";
        for _ in 0..100 {
            let probe = url.clone();
            if tokio::task::spawn_blocking(move || chartroom_tests::psql(&probe, waiting))
                .await
                .unwrap()
                .trim()
                != "0"
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let dir = cluster.dir.clone();
        tokio::task::spawn_blocking(move || OwnCluster::restart_at(&dir)).await.unwrap();
    };
    let (first, ()) = tokio::join!(v.sync(&client, wall_now()), restart);
    drop(to_dba);
    let _ = dba.wait();
    let e = first.unwrap_err();
    assert_eq!(server_code(&e), "server.database", "{e:?}");
    assert!(matches!(&e, chartroom_station::StationError::Server(c) if c.is_retryable()), "{e:?}");

    // The station retries (as its background sync does) until the server answers again.
    let mut synced = None;
    for _ in 0..40 {
        match v.sync(&client, wall_now()).await {
            Ok(r) => {
                synced = Some(r);
                break;
            }
            Err(e) if matches!(&e, chartroom_station::StationError::Server(c) if c.is_retryable()) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(synced.is_some(), "the server came back");
    assert_eq!(chartroom_tests::psql(&cluster.url, "SELECT count(*) FROM applied_changes").trim(), "60");
    let keys = dir.record_keys().unwrap();
    let mut observations = 0;
    for c in &charts {
        let sealed = storage.patient(c.patient.id).unwrap().unwrap();
        let records = storage.records(c.patient.id, &RecordKind::ALL, usize::MAX).unwrap();
        let on_server = keys.open_chart(&sealed, &records).unwrap();
        let local = v.chart_by_mrn(&c.patient.mrn, usize::MAX, wall_now()).unwrap();
        assert_eq!(canonical(&local), canonical(&on_server));
        observations += on_server.observations.len() - c.observations.len();
    }
    assert_eq!(observations, 60, "every vitals set once");
    let key = dir.signing_key().unwrap();
    chartroom_server::audit::verify(&*storage, &key.verifying_key()).unwrap().unwrap();
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// On PostgreSQL too, `migrate` says what it did and a newer schema is refused by every command.
#[test]
fn migrate_reports_and_refuses_a_newer_schema_on_postgres() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let d = data.to_str().unwrap();
    // A database the server has never seen: `init` applies every migration.
    admin(&["init", "--data-dir", d, "--database-url", &url], None);
    let said = admin(&["migrate", "--data-dir", d], None);
    assert!(said.trim_end().ends_with("up to date"), "{said}");
    chartroom_tests::psql(&url, "UPDATE chartroom_schema SET version = 999");
    for args in [&["migrate", "--data-dir", d][..], &["user", "list", "--data-dir", d]] {
        let out = server_command().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("newer than this build"), "{err}");
    }
}

/// Two server processes issuing an enrollment token for the same new device name at the same moment
/// both succeed (the later token stands), as on the embedded database; an enrolled name is refused.
#[test]
fn concurrent_tokens_for_one_new_device_both_succeed() {
    use chartroom_server::storage::{DeviceRecord, Storage};
    let Some(url) = fresh_postgres() else { return };
    let (a, b) = (PgStorage::connect(&url).unwrap(), PgStorage::connect(&url).unwrap());
    let record = |name: &str| DeviceRecord {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        profile: chartroom_domain::DeviceProfile::Station,
        units: vec!["ICU".into()],
        token_expires_at: Some(chartroom_domain::Timestamp(wall_now().0 + 3_600_000)),
        enrolled_at: None,
        revoked_at: None,
        created_at: wall_now(),
    };
    for round in 0..20u8 {
        let name = format!("icu-{round}");
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for (i, storage) in [&a, &b].into_iter().enumerate() {
                let (barrier, name, record) = (&barrier, &name, &record);
                s.spawn(move || {
                    barrier.wait();
                    storage
                        .put_device_token(&record(name), &[round * 2 + u8::try_from(i).unwrap(); 32])
                        .unwrap();
                });
            }
        });
    }
    assert_eq!(a.list_devices().unwrap().len(), 20, "one device per name");
    a.enroll_device(&[0; 32], &[7; 32], wall_now())
        .or_else(|_| a.enroll_device(&[1; 32], &[7; 32], wall_now()))
        .unwrap();
    assert!(matches!(
        b.put_device_token(&record("icu-0"), &[99; 32]),
        Err(chartroom_server::ServerError::DeviceEnrolled)
    ));
}
