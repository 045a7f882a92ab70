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

#[test]
fn sqlite_backup_is_encrypted_and_restores_into_a_fresh_server() {
    story(None);
}

#[test]
fn postgres_backup_is_encrypted_and_restores_into_a_fresh_server() {
    let Some(first) = fresh_postgres() else { return };
    story(Some([first, fresh_postgres().unwrap(), fresh_postgres().unwrap()]));
}
