//! The server's audit trail under attack: an insider who can rewrite the database (but does not hold
//! `keys/signing.key`) edits, deletes, reorders and truncates stored entries; `audit verify` must
//! catch every one. Plus device uploads over HTTPS and the CLI contract of `audit verify|export`.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use chartroom_audit::{server_link, AuditEntry, ChainHead, Digest32, Event};
use chartroom_domain::Timestamp;
use chartroom_server::storage::Storage;
use chartroom_server::{audit, init, DataDir, InitOptions};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// A server with a busy trail: its own events and two devices' chains, interleaved, then a checkpoint.
fn busy_server(tmp: &std::path::Path) -> (DataDir, std::sync::Arc<dyn Storage>) {
    let dir = DataDir::new(tmp.join("server"));
    init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let devices = [Uuid::now_v7(), Uuid::now_v7()];
    let mut heads = [ChainHead::GENESIS; 2];
    for i in 0..120i64 {
        let mut e = Event::new(Timestamp(1_800_000_000_000 + i * 1000), "view", "patient", "ok");
        e.username = Some(format!("user{}", i % 7));
        e.patient_ids = vec![Uuid::from_u128(u128::try_from(i % 13).unwrap())];
        storage.append_events(&[e.clone()]).unwrap();
        let d = usize::try_from(i % 2).unwrap();
        let entry = heads[d].append(devices[d], Uuid::now_v7(), e);
        storage.ingest_entries(devices[d], &[entry]).unwrap();
    }
    let key = dir.signing_key().unwrap();
    audit::checkpoint_if_due(&*storage, &key, Timestamp(1_800_000_200_000)).unwrap().unwrap();
    (dir, storage)
}

/// A raw connection to the server database, as an insider with the database key has.
fn raw(dir: &DataDir) -> rusqlite::Connection {
    let master: [u8; 32] = std::fs::read(dir.path().join("keys/master.key")).unwrap().try_into().unwrap();
    let conn = rusqlite::Connection::open(dir.database_path()).unwrap();
    let key = chartroom_crypto::DataKey::derive(b"chartroom/server-db/v1", &master, b"database");
    conn.execute_batch(&key.sqlcipher_key_statement()).unwrap();
    conn
}

fn verify(dir: &DataDir, storage: &dyn Storage) -> Result<u64, audit::AuditProblem> {
    let key = dir.signing_key().unwrap().verifying_key();
    audit::verify(storage, &key).unwrap().map(|v| v.entries)
}

/// Every stored entry: server sequence, decoded entry (with its claimed hash), and raw bytes.
fn rows(conn: &rusqlite::Connection) -> Vec<(i64, AuditEntry, Vec<u8>)> {
    let mut stmt =
        conn.prepare("SELECT server_seq, hash, entry FROM audit_entries ORDER BY server_seq").unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, [u8; 32]>(1)?, r.get::<_, Vec<u8>>(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .map(|(seq, hash, bytes)| (seq, AuditEntry::decode(&bytes, Digest32(hash)).unwrap(), bytes))
        .collect()
}

/// Rewrites one stored entry's content in place (its claimed hash and links left alone).
fn edit_entry(conn: &rusqlite::Connection, server_seq: i64, edit: impl FnOnce(&mut AuditEntry)) {
    let (_, mut e, _) = rows(conn).into_iter().find(|(s, ..)| *s == server_seq).unwrap();
    edit(&mut e);
    conn.execute(
        "UPDATE audit_entries SET entry = ?1 WHERE server_seq = ?2",
        rusqlite::params![e.canonical_bytes(), server_seq],
    )
    .unwrap();
}

/// Rewrites every stored entry from `from` (server sequence) on so that all hashes, device chains and
/// server links are consistent again — the best an insider without the signing key can do.
fn rechain_from(conn: &rusqlite::Connection, from: i64) {
    let mut heads: std::collections::HashMap<Uuid, ChainHead> = std::collections::HashMap::new();
    let mut server = ChainHead::GENESIS;
    for (seq, mut e, _) in rows(conn) {
        let head = heads.entry(e.device_id).or_insert(ChainHead::GENESIS);
        if seq >= from {
            e.prev_hash = head.hash;
            e.hash = e.compute_hash();
        }
        *head = ChainHead { seq: e.seq, hash: e.hash };
        let link = server_link(&server.hash, u64::try_from(seq).unwrap(), &e.hash);
        server = ChainHead { seq: u64::try_from(seq).unwrap(), hash: link };
        if seq >= from {
            conn.execute(
                "UPDATE audit_entries SET entry = ?1, hash = ?2, server_hash = ?3 WHERE server_seq = ?4",
                rusqlite::params![e.canonical_bytes(), &e.hash.0[..], &link.0[..], seq],
            )
            .unwrap();
        }
    }
}

/// Starts the server in `dir` and enrolls one device (`name`, `profile`, key seed `seed`) over
/// HTTPS: the running server, a pinned client and the device's identity.
async fn serve_and_enroll(
    dir: &DataDir,
    storage: &dyn Storage,
    fingerprint: &str,
    name: &str,
    profile: chartroom_domain::DeviceProfile,
    seed: u8,
) -> (chartroom_server::RunningServer, chartroom_client::ServerClient, chartroom_client::DeviceIdentity) {
    use chartroom_client::{DeviceIdentity, ServerClient};
    let token = chartroom_server::devices::issue_token(
        storage,
        name,
        profile,
        vec![],
        Duration::from_secs(600),
        chartroom_server::wall_now(),
    )
    .unwrap();
    let server = chartroom_server::start(dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client =
        ServerClient::new(&format!("https://localhost:{}", server.addr.port()), fingerprint).unwrap();
    let probe = DeviceIdentity::new(String::new(), &[seed; 32]);
    let device = DeviceIdentity::new(
        client.enroll(&token, &probe.public_key_hex()).await.unwrap().device_id,
        &[seed; 32],
    );
    (server, client, device)
}

// hipaa (b) (c)(2): every edit, deletion, reordering or truncation of the server's stored trail is detected
#[test]
fn every_tampering_of_stored_entries_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, storage) = busy_server(tmp.path());
    assert_eq!(verify(&dir, &*storage).unwrap(), 240);
    let conn = raw(&dir);
    let original = rows(&conn);
    // The insider's edits are undone between rounds from a copy of the table.
    conn.execute_batch("CREATE TABLE audit_backup AS SELECT * FROM audit_entries").unwrap();
    let restore = |conn: &rusqlite::Connection| {
        conn.execute_batch(
            "DELETE FROM audit_entries; INSERT INTO audit_entries SELECT * FROM audit_backup;",
        )
        .unwrap();
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let (mut edits, mut detected) = (0, 0);
    let mut round = 0;
    while edits < 1000 {
        round += 1;
        assert!(round < 5000, "could not make 1000 effective edits");
        let (seq, before, stored) = &original[rng.gen_range(0..original.len())];
        // One byte of the stored entry changed, as an insider rewriting the row would.
        let mut edited = stored.clone();
        let i = rng.gen_range(0..edited.len());
        edited[i] ^= rng.gen_range(1..=255u8);
        let rechain = round % 2 == 1;
        let after = AuditEntry::decode(&edited, before.hash).ok();
        // If the insider recomputes the hashes, an edit of the previous-hash field is repaired by
        // that, so it is not an edit of the record.
        if rechain
            && after
                .as_ref()
                .is_some_and(|a| AuditEntry { prev_hash: before.prev_hash, ..a.clone() } == *before)
        {
            continue;
        }
        conn.execute(
            "UPDATE audit_entries SET entry = ?1 WHERE server_seq = ?2",
            rusqlite::params![edited, seq],
        )
        .unwrap();
        // Half the time the insider also recomputes every hash after the edit.
        if rechain && after.is_some() {
            rechain_from(&conn, *seq);
        }
        edits += 1;
        if verify(&dir, &*storage).is_err() {
            detected += 1;
        }
        restore(&conn);
    }
    eprintln!("audit tamper sweep: {detected} of {edits} single-byte edits detected");
    assert_eq!(detected, edits, "an edit went undetected");
    assert_eq!(verify(&dir, &*storage).unwrap(), 240, "restored cleanly");

    // Deletions, reorders and truncations, each also re-chained by the insider.
    for round in 0..60 {
        let a = rng.gen_range(1..=original.len() as i64);
        match round % 3 {
            0 => {
                conn.execute("DELETE FROM audit_entries WHERE server_seq = ?1", [a]).unwrap();
            }
            1 => {
                let b = rng.gen_range(1..=original.len() as i64);
                if a == b {
                    continue;
                }
                let (ja, jb) = (
                    &original[usize::try_from(a - 1).unwrap()].2,
                    &original[usize::try_from(b - 1).unwrap()].2,
                );
                conn.execute(
                    "UPDATE audit_entries SET entry = ?1 WHERE server_seq = ?2",
                    rusqlite::params![jb, a],
                )
                .unwrap();
                conn.execute(
                    "UPDATE audit_entries SET entry = ?1 WHERE server_seq = ?2",
                    rusqlite::params![ja, b],
                )
                .unwrap();
                rechain_from(&conn, a.min(b));
            }
            _ => {
                conn.execute("DELETE FROM audit_entries WHERE server_seq >= ?1", [a]).unwrap();
            }
        }
        let problem = verify(&dir, &*storage).unwrap_err();
        assert!(problem.position <= u64::try_from(original.len()).unwrap() + 1, "{problem}");
        restore(&conn);
    }
    assert_eq!(verify(&dir, &*storage).unwrap(), 240);
}

#[test]
fn cli_audit_verify_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, storage) = busy_server(tmp.path());
    let data = dir.path().to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    let out = Command::new(bin).args(["audit", "verify", "--data-dir", data]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("audit ok: 240 entries"), "{line}");

    let out = Command::new(bin)
        .args(["audit", "export", "--data-dir", data, "--format", "jsonl", "--user", "USER3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<AuditEntry> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty() && lines.iter().all(|e| e.event.username.as_deref() == Some("user3")));
    let out = Command::new(bin)
        .args(["audit", "export", "--data-dir", data, "--format", "csv", "--since", "2027-01-15T08:01:00Z"])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("server_seq,at,"), "{csv}");
    // The exports are in the trail themselves.
    let exports = storage
        .audit_page(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|s| s.entry.event.action == "export" && s.entry.event.resource_type == "audit")
        .count();
    assert_eq!(exports, 2);

    // One edited entry: exit 1, one line naming the entry.
    edit_entry(&raw(&dir), 200, |e| e.event.action = "VIEW".into());
    let out = Command::new(bin).args(["audit", "verify", "--data-dir", data]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("stored entry 200"), "{err}");
}

// hipaa (b) (e)(2)(i): stations upload their chains; the server verifies continuity on upload
#[tokio::test]
async fn devices_upload_their_chains_over_https() {
    use chartroom_protocol::{AuditUpload, AuditUploadResponse};

    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    chartroom_server::users::add_user(
        &*storage,
        "kim.rn",
        chartroom_domain::Role::Nurse,
        vec!["ICU".into()],
        &chartroom_crypto::Password::new("night-shift-kettle-77".into()),
        chartroom_server::wall_now(),
    )
    .unwrap();
    let (server, client, device) = serve_and_enroll(
        &dir,
        &*storage,
        &report.fingerprint,
        "icu-1",
        chartroom_domain::DeviceProfile::Station,
        4,
    )
    .await;
    let access = client.login(&device, "kim.rn", "night-shift-kettle-77").await.unwrap().access_token;

    let device_id: Uuid = device.device_id.parse().unwrap();
    let mut head = ChainHead::GENESIS;
    let chain: Vec<AuditEntry> = (0..6)
        .map(|i| head.append(device_id, Uuid::now_v7(), Event::new(Timestamp(i), "view", "patient", "ok")))
        .collect();
    let up = |entries: &[AuditEntry]| AuditUpload { entries: entries.to_vec() };
    let r: AuditUploadResponse =
        client.post_signed(&device, &access, "/v1/audit/entries", &up(&chain[..4])).await.unwrap();
    assert_eq!((r.stored, r.already_present), (4, 0));
    // A retry after a lost response stores nothing twice.
    let r: AuditUploadResponse =
        client.post_signed(&device, &access, "/v1/audit/entries", &up(&chain[2..])).await.unwrap();
    assert_eq!((r.stored, r.already_present), (2, 2));
    // A gap is refused with 409 and a code; so is another device's entry.
    let mut later = head;
    later.append(device_id, Uuid::now_v7(), Event::new(Timestamp(9), "view", "patient", "ok"));
    let gap = later.append(device_id, Uuid::now_v7(), Event::new(Timestamp(10), "view", "patient", "ok"));
    let err = client
        .post_signed::<_, AuditUploadResponse>(&device, &access, "/v1/audit/entries", &up(&[gap]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("audit.gap"), "{err}");
    let mut foreign = ChainHead::GENESIS;
    let theirs =
        foreign.append(Uuid::now_v7(), Uuid::now_v7(), Event::new(Timestamp(1), "view", "patient", "ok"));
    let err = client
        .post_signed::<_, AuditUploadResponse>(&device, &access, "/v1/audit/entries", &up(&[theirs]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("request.invalid"));
    server.shutdown(Duration::from_secs(2)).await.unwrap();

    let key = dir.signing_key().unwrap();
    audit::checkpoint_if_due(&*storage, &key, chartroom_server::wall_now()).unwrap();
    let verified = audit::verify(&*storage, &key.verifying_key()).unwrap().unwrap();
    assert_eq!(verified.devices, 2, "the device's chain and the server's own");
}

/// Retention: entries younger than six years are never purged; an allowed purge leaves a trail that
/// still verifies (from a signed purge point), still detects tampering, and keeps growing.
// hipaa (b): purge refuses entries younger than the retention period and keeps the trail verifiable
#[test]
fn purging_old_entries_keeps_the_trail_verifiable() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, storage) = busy_server(tmp.path());
    let key = dir.signing_key().unwrap();
    let t0 = 1_800_000_000_000i64;
    let seven_years_later = Timestamp(t0 + 7 * 365 * 86_400_000);
    // Too young: refused, nothing changes.
    let young = Timestamp(seven_years_later.0 - 365 * 86_400_000);
    let refused =
        audit::purge(&*storage, &key, young, audit::MIN_RETENTION_DAYS, seven_years_later).unwrap_err();
    assert_eq!(refused.code(), "audit.retention");
    // A retention below six years in the configuration is raised to six years.
    assert!(audit::purge(&*storage, &key, young, 30, seven_years_later).is_err());
    assert_eq!(verify(&dir, &*storage).unwrap(), 240);

    // The first 60 seconds of activity (60 server events and 60 device entries) are old enough.
    let purged =
        audit::purge(&*storage, &key, Timestamp(t0 + 60_000), audit::MIN_RETENTION_DAYS, seven_years_later)
            .unwrap();
    assert_eq!(purged.entries, 120);
    assert_eq!(verify(&dir, &*storage).unwrap(), 121, "120 kept and the purge's own entry");
    assert_eq!(storage.audit_page(0, 1).unwrap()[0].server_seq, 121, "the prefix is gone");

    // Edits after the purge point are still caught; so is an edit of the purge base.
    let conn = raw(&dir);
    conn.execute_batch("CREATE TABLE backup AS SELECT * FROM audit_entries; CREATE TABLE base_backup AS SELECT * FROM audit_base;").unwrap();
    edit_entry(&conn, 150, |e| e.event.action = "VIEW".into());
    assert_eq!(verify(&dir, &*storage).unwrap_err().position, 150);
    conn.execute_batch("DELETE FROM audit_entries; INSERT INTO audit_entries SELECT * FROM backup;").unwrap();
    let base = storage.audit_base().unwrap().unwrap();
    let mut forged = base.clone();
    forged.server_seq += 1;
    conn.execute("UPDATE audit_base SET base = ?1", [serde_json::to_string(&forged).unwrap()]).unwrap();
    assert!(verify(&dir, &*storage).is_err(), "a moved purge point is not anchored by its checkpoint");
    conn.execute_batch("DELETE FROM audit_base; INSERT INTO audit_base SELECT * FROM base_backup;").unwrap();
    assert_eq!(verify(&dir, &*storage).unwrap(), 121);

    // An insider cannot make a purge of their own: deleting a prefix up to an existing checkpoint
    // and writing a matching base (all hashes are public) still fails, for want of a signature.
    let checkpoints = storage.checkpoints().unwrap();
    let target = checkpoints.iter().max_by_key(|c| c.count).unwrap();
    assert!(target.count > base.server_seq, "a checkpoint beyond the purge point to hide behind");
    let rows_now = rows(&conn);
    let mut heads: std::collections::BTreeMap<Uuid, ChainHead> = base.device_heads.iter().copied().collect();
    let mut server_hash = base.server_hash;
    for (seq, e, _) in rows_now.iter().filter(|(s, ..)| u64::try_from(*s).unwrap() <= target.count) {
        heads.insert(e.device_id, ChainHead { seq: e.seq, hash: e.hash });
        server_hash = server_link(&server_hash, u64::try_from(*seq).unwrap(), &e.hash);
    }
    {
        let fake = chartroom_server::storage::AuditBase {
            server_seq: target.count,
            server_hash,
            device_heads: heads.into_iter().collect(),
            checkpoint: target.number,
            purged_before: Timestamp(0),
            signature: base.signature.clone(),
        };
        conn.execute("UPDATE audit_base SET base = ?1", [serde_json::to_string(&fake).unwrap()]).unwrap();
        conn.execute(
            "DELETE FROM audit_entries WHERE server_seq <= ?1",
            [i64::try_from(target.count).unwrap()],
        )
        .unwrap();
        assert!(verify(&dir, &*storage).is_err(), "a purge nobody signed");
        conn.execute_batch(
            "DELETE FROM audit_base; INSERT INTO audit_base SELECT * FROM base_backup;
             DELETE FROM audit_entries; INSERT INTO audit_entries SELECT * FROM backup;",
        )
        .unwrap();
        assert_eq!(verify(&dir, &*storage).unwrap(), 121);
    }

    // Everything old goes; new entries continue the same chains.
    let all = audit::purge(
        &*storage,
        &key,
        Timestamp(t0 + 86_400_000),
        audit::MIN_RETENTION_DAYS,
        seven_years_later,
    )
    .unwrap();
    assert_eq!(all.entries, 120, "the first purge's own entry is recent: it stays");
    storage.append_events(&[Event::new(seven_years_later, "login", "session", "ok")]).unwrap();
    audit::checkpoint_if_due(&*storage, &key, seven_years_later).unwrap();
    assert_eq!(verify(&dir, &*storage).unwrap(), 3, "both purges' entries and the login");
}

/// Auditors search and verify the trail over HTTPS: filters and limits are checked, clinicians are
/// refused, and an entry an insider edited in the database shows as a failed verification.
// hipaa (b): auditors search and verify the trail over HTTPS and are shown tampering
#[tokio::test]
async fn auditors_search_and_verify_over_https_and_see_tampering() {
    use chartroom_client::StatusCode;
    use chartroom_protocol::{AuditEntrySummary, AuditQuery};

    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    for (name, role) in
        [("kim.rn", chartroom_domain::Role::Nurse), ("sam.audit", chartroom_domain::Role::Auditor)]
    {
        chartroom_server::users::add_user(
            &*storage,
            name,
            role,
            vec!["*".into()],
            &chartroom_crypto::Password::new("night-shift-kettle-77".into()),
            chartroom_server::wall_now(),
        )
        .unwrap();
    }
    let (server, client, device) = serve_and_enroll(
        &dir,
        &*storage,
        &report.fingerprint,
        "desk-1",
        chartroom_domain::DeviceProfile::Laptop,
        5,
    )
    .await;
    let nurse = client.login(&device, "kim.rn", "night-shift-kettle-77").await.unwrap().access_token;
    assert!(client.login(&device, "kim.rn", "wrong-password-entirely").await.is_err());
    let sam = client.login(&device, "sam.audit", "night-shift-kettle-77").await.unwrap().access_token;

    let v = client.audit_verify(&device, &sam).await.unwrap();
    assert!(v.ok && v.problem.is_none() && v.entries >= 4, "{v:?}");
    let failed = AuditQuery { action: Some("login_failed".into()), ..AuditQuery::default() };
    let found: Vec<AuditEntrySummary> = client.audit_entries(&device, &sam, &failed).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].username.as_deref(), found[0].device_id.as_str()),
        (Some("kim.rn"), device.device_id.as_str())
    );
    assert!(found[0].at.ends_with('Z') && found[0].at.len() == 20, "RFC 3339: {}", found[0].at);
    for bad in ["limit=0", "limit=1001", "since=yesterday", "until=2026-13-01T00:00:00Z", "patient=x"] {
        let (status, body) = client
            .send_signed(&device, &sam, chartroom_client::Method::GET, &format!("/v1/audit/entries?{bad}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    let err = client.audit_entries(&device, &nurse, &AuditQuery::default()).await.unwrap_err();
    assert_eq!(err.code(), Some("access.forbidden"));
    let (status, _) = client
        .send_signed(&device, "cra1_forged", chartroom_client::Method::GET, "/v1/audit/verify")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An insider edits a stored entry: the next verification says where.
    edit_entry(&raw(&dir), 2, |e| e.event.outcome = "forged".into());
    let v = client.audit_verify(&device, &sam).await.unwrap();
    assert!(!v.ok, "{v:?}");
    assert_eq!(v.entries, 1);
    assert!(v.problem.as_deref().is_some_and(|p| p.contains("stored entry 2")), "{v:?}");
    let recorded = storage
        .audit_page(0, 10_000)
        .unwrap()
        .into_iter()
        .filter(|s| s.entry.event.action == "audit_verify")
        .map(|s| s.entry.event.outcome)
        .collect::<Vec<_>>();
    assert_eq!(recorded, ["ok", "audit.broken"]);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// `migrate` says what it did, and a database whose schema is newer than this build (a rollback of
/// the binary after an upgrade) is refused by every command rather than written by old code.
#[test]
fn migrate_reports_and_refuses_a_newer_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    init(&dir, &InitOptions::default()).unwrap();
    let data = dir.path().to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    let out = Command::new(bin).args(["migrate", "--data-dir", data]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.starts_with("schema ") && said.trim_end().ends_with("up to date"), "{said}");
    raw(&dir).pragma_update(None, "user_version", 999).unwrap();
    for args in [&["migrate", "--data-dir", data][..], &["user", "list", "--data-dir", data]] {
        let out = Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
