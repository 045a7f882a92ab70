//! Encrypted backups and restores on both backends: the backup file holds no patient name or MRN in
//! any form a reader of its bytes could see, a restore into a fresh server (the original's keys, no
//! database) passes `audit verify` and holds every patient, and damaged backups or occupied targets
//! restore nothing.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use chartroom_server::{wall_now, DataDir, InitOptions};
use chartroom_tests::{fresh_postgres, server_command};

fn run(args: &[&str]) -> Output {
    server_command().args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh server for a restore: a copy of the original's keys, certificate and configuration only.
fn fresh_copy(from: &Path, to: &Path) {
    for sub in ["keys", "tls"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for entry in std::fs::read_dir(from.join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "database.url" {
                std::fs::copy(entry.path(), to.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(from.join("config.json"), to.join("config.json")).unwrap();
}

/// The backup story on the embedded database (`None`) or PostgreSQL (the original's database, the
/// database to restore into, and a third for the damaged backup).
fn story(databases: Option<[String; 3]>) {
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let dir = DataDir::new(&original);
    let database_url = databases.as_ref().map(|[a, _, _]| a.clone());
    chartroom_server::init(&dir, &InitOptions { database_url, ..InitOptions::default() }).unwrap();
    let charts = chartroom_tests::charts_with_canary(3, 20);
    let storage = dir.open_storage().unwrap();
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    let pw = chartroom_crypto::Password::new("a-long-passphrase-for-kim".into());
    let units = vec!["ICU".to_string()];
    chartroom_server::users::add_user(
        &*storage,
        "kim.rn",
        chartroom_domain::Role::Nurse,
        units,
        &pw,
        wall_now(),
    )
    .unwrap();
    drop(storage);
    let o = original.to_str().unwrap();
    let backup = tmp.path().join("chartroom.backup");
    let b = backup.to_str().unwrap();
    let said = ok(&["backup", "--data-dir", o, "--out", b]);
    assert!(said.starts_with("backup written:"), "{said}");
    assert!(
        !run(&["backup", "--data-dir", o, "--out", b]).status.success(),
        "an existing file is never replaced"
    );

    // The raw bytes: no name or MRN as text or hex, and no recognisable database inside.
    let bytes = std::fs::read(&backup).unwrap();
    chartroom_tests::assert_no_phi(&String::from_utf8_lossy(&bytes), &charts, "the backup");
    for magic in [&b"SQLite format 3"[..], b"PGDMP", b"kim.rn", b"CREATE TABLE"] {
        assert!(
            !bytes.windows(magic.len()).any(|w| w == magic),
            "{} is readable",
            String::from_utf8_lossy(magic)
        );
    }

    // A fresh server (the original's keys, no database) restores it; the trail verifies and every
    // patient is there.
    let fresh = tmp.path().join("fresh");
    fresh_copy(&original, &fresh);
    let f = fresh.to_str().unwrap();
    let mut restore = vec!["restore", "--data-dir", f, "--from", b];
    if let Some([_, into, _]) = &databases {
        restore.extend(["--database-url", into.as_str()]);
    }
    let said = ok(&restore);
    assert!(said.starts_with("restored:"), "{said}");
    let verified = ok(&["audit", "verify", "--data-dir", f]);
    assert!(verified.starts_with("audit ok:"), "{verified}");
    let export = tmp.path().join("export");
    ok(&["export-fhir", "--data-dir", f, "--out", export.to_str().unwrap()]);
    let patients = std::fs::read_to_string(export.join("Patient.ndjson")).unwrap();
    assert_eq!(patients.lines().count(), charts.len());
    assert!(patients.contains("Canaryfieldova"));
    let trail = ok(&["audit", "export", "--data-dir", f, "--format", "jsonl", "--action", "restore"]);
    assert_eq!(trail.lines().count(), 1, "the restore is in the trail");
    assert!(!run(&restore).status.success(), "a second restore into the same server is refused");

    // A damaged backup restores nothing.
    let mut damaged = bytes.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x40;
    let bad = tmp.path().join("damaged.backup");
    std::fs::write(&bad, &damaged).unwrap();
    let other = tmp.path().join("other");
    fresh_copy(&original, &other);
    let mut restore = vec!["restore", "--data-dir", other.to_str().unwrap(), "--from", bad.to_str().unwrap()];
    if let Some([_, _, third]) = &databases {
        restore.extend(["--database-url", third.as_str()]);
    }
    let out = run(&restore);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backup"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!other.join("server.db").exists(), "nothing was restored");
    if let Some([_, _, third]) = &databases {
        let tables =
            chartroom_tests::psql(third, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
        assert_eq!(tables.trim(), "0", "nothing was restored");
    }
}

// hipaa (a)(2)(iv) (c)(2): backups are sealed, restore only under the right key, and a damaged backup
//   restores nothing
#[test]
fn sqlite_backup_is_encrypted_and_restores_into_a_fresh_server() {
    story(None);
}

#[test]
fn postgres_backup_is_encrypted_and_restores_into_a_fresh_server() {
    let Some(first) = fresh_postgres() else { return };
    story(Some([first, fresh_postgres().unwrap(), fresh_postgres().unwrap()]));
}

/// Master key rotation on the embedded database (`None`) or PostgreSQL: the rotation is killed at
/// every step in turn and finished by the next `keys rotate`; after each, every patient exports
/// exactly as before, the trail verifies, an MRN lookup works (its index was rebuilt), the master
/// key changed, and a station enrolled before any rotation still logs in and syncs.
fn rotation_story(database_url: Option<String>) {
    use chartroom_tests::{keystore, Serving};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let dir = DataDir::new(&data);
    chartroom_server::init(
        &dir,
        &InitOptions { database_url: database_url.clone(), ..InitOptions::default() },
    )
    .unwrap();
    let d = data.to_str().unwrap();
    // 450 patients: more than two re-wrap batches, so that a crash can fall between two.
    let charts = chartroom_tests::charts_with_canary(11, 450);
    // Opened through its own DataDir, so that its lock on the data directory goes with it.
    let storage = DataDir::new(&data).open_storage().unwrap();
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    let pw = chartroom_crypto::Password::new("a-long-passphrase-for-kim".into());
    let units: Vec<String> = charts
        .iter()
        .map(|c| c.patient.unit.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    chartroom_server::users::add_user(
        &*storage,
        "kim.rn",
        chartroom_domain::Role::Nurse,
        units.clone(),
        &pw,
        wall_now(),
    )
    .unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "ward-1",
        chartroom_domain::DeviceProfile::Station,
        units,
        std::time::Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    drop(storage);
    let fingerprint = dir.fingerprint().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let profile = chartroom_station::Profile::new(tmp.path().join("station"));
    let ks = keystore();
    let station_syncs = |ks: &std::sync::Arc<dyn chartroom_station::DeviceSecretStore>| {
        let server = Serving::start(&data);
        let client = chartroom_client::ServerClient::new(&server.url, &fingerprint).unwrap();
        runtime.block_on(async {
            let locked =
                chartroom_station::LockedVault::open(profile.clone(), ks.clone(), wall_now()).unwrap();
            let mut vault = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
            vault.sync(&client, wall_now()).await.unwrap();
            let n = vault.census(None, wall_now()).unwrap().len();
            vault.lock();
            n
        })
    };
    {
        let server = Serving::start(&data);
        let client = chartroom_client::ServerClient::new(&server.url, &fingerprint).unwrap();
        runtime
            .block_on(chartroom_station::LockedVault::enroll(
                profile.clone(),
                ks.clone(),
                &client,
                &fingerprint,
                &token,
                wall_now(),
            ))
            .unwrap();
    }
    let patients_on_station = station_syncs(&ks);
    assert!(patients_on_station > 0);

    let export = |n: usize| {
        let out = tmp.path().join(format!("export-{n}"));
        ok(&["export-fhir", "--data-dir", d, "--out", out.to_str().unwrap()]);
        let mut files: Vec<(String, String)> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let before = export(0);
    let master_key = || std::fs::read(data.join("keys/master.key")).unwrap();
    let canary_mrn = charts[0].patient.mrn.clone();

    // A running server refuses a rotation (it would write under the old key meanwhile).
    {
        let _server = Serving::start(&data);
        let out = run(&["keys", "rotate", "--data-dir", d]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("stop it first"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    for (i, step) in
        ["rotate:begun", "rotate:batch", "rotate:rewrapped", "rotate:database"].into_iter().enumerate()
    {
        let old_key = master_key();
        let crashed = server_command()
            .args(["keys", "rotate", "--data-dir", d])
            .env("CHARTROOM_TEST_CRASH_AT", step)
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&crashed.status),
            Some(6),
            "{step}: killed at the step, not failed before it: {}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        // Nothing else runs on a half-rotated data directory, and it says what to do.
        let out = run(&["audit", "verify", "--data-dir", d]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("keys rotate"), "{step}");
        let said = ok(&["keys", "rotate", "--data-dir", d]);
        assert!(said.contains("interrupted rotation finished"), "{step}: {said}");
        assert_ne!(master_key(), old_key, "{step}: the master key changed");
        assert!(!data.join("keys/master.next").exists() && !data.join("keys/rotating").exists());
        assert_eq!(export(i + 1), before, "{step}: every patient exactly as before");
        assert!(ok(&["audit", "verify", "--data-dir", d]).starts_with("audit ok"), "{step}");
        // The MRN resolves through the rebuilt index (an unknown MRN is an error).
        ok(&["audit", "export", "--data-dir", d, "--format", "jsonl", "--patient", &canary_mrn]);
    }
    // An uninterrupted rotation, then the station (enrolled before any rotation) still works.
    assert!(ok(&["keys", "rotate", "--data-dir", d]).contains("master key rotated: 450 of 450"));
    assert_eq!(station_syncs(&ks), patients_on_station);
    let trail = ok(&["audit", "export", "--data-dir", d, "--format", "jsonl"]);
    assert_eq!(trail.matches("\"key_rotate\"").count(), 5, "every rotation is in the trail");
    assert_eq!(trail.matches("\"key_rotate_resume\"").count(), 4);
}

// hipaa (a)(2)(iv) (c)(1): the server master key rotates, and a crash at any step loses nothing
#[test]
fn sqlite_master_key_rotation_survives_a_crash_at_every_step() {
    rotation_story(None);
}

#[test]
fn postgres_master_key_rotation_survives_a_crash_at_every_step() {
    let Some(url) = fresh_postgres() else { return };
    rotation_story(Some(url));
}

/// A SoftHSM2 token for one test: its configuration file (for `SOFTHSM2_CONF`) and the URIs of a
/// master wrapping key and a checkpoint signing key on it. `None` without SoftHSM2 (CI has it).
fn softhsm(dir: &Path) -> Option<(std::path::PathBuf, String, String)> {
    let module = "/usr/lib/softhsm/libsofthsm2.so";
    if !Path::new(module).exists() {
        assert!(std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none(), "SoftHSM2 is required in CI");
        eprintln!("skipped: no SoftHSM2");
        return None;
    }
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", "chartroom", "--pin", "4321", "--so-pin", "87654321"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pin = dir.join("hsm.pin");
    std::fs::write(&pin, "4321\n").unwrap();
    let uri = |object: &str| {
        format!(
            "pkcs11:token=chartroom;object={object}?module-path={module}&pin-source=file:{}",
            pin.display()
        )
    };
    Some((conf, uri("chartroom-master"), uri("chartroom-checkpoint")))
}

/// The master key wrapped by a key inside an HSM and the checkpoint signing key generated there:
/// no key file on disk, every key use in the trail, checkpoints that verify, a master key rotation
/// through the HSM, and a server that refuses to start — with a clear message — when the HSM is
/// unavailable (wrong PIN, token gone).
// hipaa (a)(2)(iv) (b): the master key and the checkpoint signing key can live in an HSM (PKCS#11)
#[test]
fn hsm_holds_the_master_key_and_the_checkpoint_signing_key() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((conf, master_uri, signing_uri)) = softhsm(tmp.path()) else { return };
    let data = tmp.path().join("server");
    let d = data.to_str().unwrap();
    let hsm = |args: &[&str]| server_command().env("SOFTHSM2_CONF", &conf).args(args).output().unwrap();
    let ok = |args: &[&str]| {
        let out = hsm(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["init", "--data-dir", d, "--master-key", &master_uri, "--signing-key", &signing_uri]);
    assert!(!data.join("keys/master.key").exists() && !data.join("keys/signing.key").exists());
    assert!(data.join("keys/master.wrapped").exists());
    ok(&["seed", "--data-dir", d, "--patients", "5"]);
    assert!(ok(&["audit", "verify", "--data-dir", d]).starts_with("audit ok"));
    {
        let server = chartroom_tests::Serving::start_with_env(&data, &[("SOFTHSM2_CONF", conf.as_os_str())]);
        assert!(server.url.starts_with("https://"));
    }
    let wrapped = std::fs::read(data.join("keys/master.wrapped")).unwrap();
    assert!(ok(&["keys", "rotate", "--data-dir", d]).contains("master key rotated: 5 of 5"));
    assert_ne!(
        std::fs::read(data.join("keys/master.wrapped")).unwrap(),
        wrapped,
        "the new key, wrapped by the HSM"
    );
    assert!(ok(&["audit", "verify", "--data-dir", d]).starts_with("audit ok"));
    let trail = ok(&["audit", "export", "--data-dir", d, "--format", "jsonl"]);
    assert!(trail.contains("chartroom-master: open chartroom master key"), "master key uses are audited");
    assert!(trail.contains("chartroom-checkpoint: sign audit checkpoint"), "signatures are audited");
    assert!(trail.contains("chartroom-master: seal chartroom master key"), "the rotation's new key too");

    // The HSM unavailable at start: the server refuses to serve and says why, on one line.
    let refused = |out: std::process::Output, why: &str| {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the HSM is unavailable") && err.contains(why) && err.lines().count() == 1,
            "{err}"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    };
    std::fs::write(tmp.path().join("hsm.pin"), "0000\n").unwrap();
    refused(hsm(&["serve", "--data-dir", d, "--listen", "127.0.0.1:0"]), "PIN");
    std::fs::write(tmp.path().join("hsm.pin"), "4321\n").unwrap();
    let empty = tmp.path().join("no-tokens.conf");
    std::fs::create_dir_all(tmp.path().join("none")).unwrap();
    std::fs::write(&empty, format!("directories.tokendir = {}\n", tmp.path().join("none").display()))
        .unwrap();
    let out = server_command()
        .env("SOFTHSM2_CONF", &empty)
        .args(["serve", "--data-dir", d, "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    refused(out, "no token labelled `chartroom`");
}
