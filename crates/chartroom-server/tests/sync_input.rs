//! Bad input to the sync endpoints (`/v1/sync/push`, `/v1/sync/pull`, `/v1/audit/entries`) over
//! real TLS, from an enrolled device with a logged-in user. Every case must end in a clear refusal —
//! an HTTP status with a stable `code` and no PHI in the body, or a per-change `rejected`/`conflict`
//! outcome — and nothing applied: record versions, change numbers and remembered change ids are
//! compared before and after, and the audit trail must still verify.
//!
//! What `tests/api.rs` already covers is not repeated here: a retried batch (duplicate), the same
//! change ids from another device with the same content, a stale `base_version` on a note, edits of
//! signed notes and rewrites of observations, `recorded_by` naming a made-up user, an implausible
//! value, a role without the write permission. `tests/audit.rs` covers an audit upload with a gap,
//! one entry of a made-up device and a harmless retry.
//!
//! The last five tests are defects this file found (since fixed in the product).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chartroom_audit::{AuditEntry, ChainHead, Digest32, Event};
use chartroom_client::{DeviceIdentity, Method, ServerClient};
use chartroom_crypto::Password;
use chartroom_domain::{
    Chart, DeviceProfile, Note, NoteKind, NoteStatus, Observation, Role, Timestamp, VitalSign,
};
use chartroom_protocol::{
    ApiError, AuditUpload, AuditUploadResponse, Change, ChangeOutcome, ChangeRecord, PullPage, PushBatch,
    PushResponse, TokenResponse, PROOF_HEADER,
};
use chartroom_server::storage::Storage;
use chartroom_server::{init, start, wall_now, DataDir, InitOptions, RunningServer};
use serde_json::{json, Value};
use uuid::Uuid;

const PASSWORD: &str = "correct-horse-staple-42";
/// Text only this file writes, so that finding it anywhere it should not be is unambiguous.
const NOTE_CANARY: &str = "Quokkabrindle reports tingling in both feet";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: DataDir,
    server: RunningServer,
    client: ServerClient,
    storage: std::sync::Arc<dyn Storage>,
    charts: Vec<Chart>,
}

/// One logged-in user on one enrolled device.
struct Session {
    dev: DeviceIdentity,
    token: String,
    user_id: Uuid,
}

impl Fixture {
    /// A server with six synthetic patients (three on ICU, three on MED).
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("server"));
        let report = init(&dir, &InitOptions::default()).unwrap();
        let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let client =
            ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint)
                .unwrap();
        let storage = dir.open_storage().unwrap();
        let config = chartroom_synth::SynthConfig::new(23, wall_now());
        let charts: Vec<Chart> = (0..6).map(|i| chartroom_synth::patient(&config, i)).collect();
        let keys = dir.record_keys().unwrap();
        chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
        Fixture { _tmp: tmp, dir, server, client, storage, charts }
    }

    fn icu(&self, n: usize) -> &Chart {
        self.charts.iter().filter(|c| c.patient.unit == "ICU").nth(n).unwrap()
    }

    fn med(&self) -> &Chart {
        self.charts.iter().find(|c| c.patient.unit == "MED").unwrap()
    }

    fn add_user(&self, username: &str, role: Role, units: &[&str]) {
        let units = units.iter().map(|u| u.to_string()).collect();
        let pw = Password::new(PASSWORD.into());
        chartroom_server::users::add_user(&*self.storage, username, role, units, &pw, wall_now()).unwrap();
    }

    async fn device(&self, name: &str) -> DeviceIdentity {
        let token = chartroom_server::devices::issue_token(
            &*self.storage,
            name,
            DeviceProfile::Station,
            vec![],
            Duration::from_secs(3600),
            wall_now(),
        )
        .unwrap();
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let probe = DeviceIdentity::new(String::new(), &seed);
        let enrolled = self.client.enroll(&token, &probe.public_key_hex()).await.unwrap();
        DeviceIdentity::new(enrolled.device_id, &seed)
    }

    async fn session(&self, device: &str, username: &str) -> Session {
        let dev = self.device(device).await;
        let t: TokenResponse = self.client.login(&dev, username, PASSWORD).await.unwrap();
        Session { dev, token: t.access_token, user_id: t.user.id.parse().unwrap() }
    }

    /// A signed request with an arbitrary body and content type (what a broken or hostile client
    /// sends): the status and the body as text.
    async fn send(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        ctype: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let at = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
        )
        .unwrap();
        let proof = chartroom_protocol::request_proof_message(method.as_str(), path, at, &s.token);
        let r = self
            .client
            .raw(method, path)
            .bearer_auth(&s.token)
            .header(PROOF_HEADER, format!("t={at},sig={}", s.dev.sign_hex(&proof)))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    async fn push_raw(&self, s: &Session, body: impl Into<Vec<u8>>) -> (u16, String) {
        self.send(s, Method::POST, "/v1/sync/push", "application/json", body.into()).await
    }

    async fn push(&self, s: &Session, changes: Vec<Change>) -> Vec<ChangeOutcome> {
        let batch = PushBatch { changes };
        let (status, body) = self.push_raw(s, serde_json::to_vec(&batch).unwrap()).await;
        assert_eq!(status, 200, "{body}");
        self.assert_no_phi(&body, "push response");
        let r: PushResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(r.results.len(), batch.changes.len());
        for (sent, got) in batch.changes.iter().zip(&r.results) {
            assert_eq!(sent.change_id, got.change_id, "results come back in order, by change id");
        }
        r.results.into_iter().map(|r| r.outcome).collect()
    }

    async fn get(&self, s: &Session, path: &str) -> (u16, String) {
        let (status, body) = self.client.send_signed(&s.dev, &s.token, Method::GET, path).await.unwrap();
        (status.as_u16(), String::from_utf8(body).unwrap())
    }

    async fn upload(&self, s: &Session, entries: &[AuditEntry]) -> (u16, String) {
        let body = serde_json::to_vec(&AuditUpload { entries: entries.to_vec() }).unwrap();
        self.send(s, Method::POST, "/v1/audit/entries", "application/json", body).await
    }

    /// Everything a push could change: every record and patient with its version and change number,
    /// the remembered change ids and the change counter. Read over a second connection with the
    /// database key, as an administrator's tool would.
    fn snapshot(&self) -> Snapshot {
        let master: [u8; 32] =
            std::fs::read(self.dir.path().join("keys/master.key")).unwrap().try_into().unwrap();
        let conn = rusqlite::Connection::open(self.dir.database_path()).unwrap();
        let key = chartroom_crypto::DataKey::derive(b"chartroom/server-db/v1", &master, b"database");
        conn.execute_batch(&key.sqlcipher_key_statement()).unwrap();
        let rows = |sql: &str| -> Vec<(Vec<u8>, i64, i64)> {
            let mut stmt = conn.prepare(sql).unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        Snapshot {
            records: rows("SELECT id, version, change_seq FROM records ORDER BY id"),
            patients: rows("SELECT id, version, change_seq FROM patients ORDER BY id"),
            applied_changes: count("SELECT count(*) FROM applied_changes"),
            change_counter: count("SELECT max(value) FROM change_counter"),
        }
    }

    /// The stored audit entries of one device's chain, in order.
    fn chain_of(&self, device: Uuid) -> Vec<AuditEntry> {
        let all = self.storage.audit_page(0, 1_000_000).unwrap();
        all.into_iter().map(|s| s.entry).filter(|e| e.device_id == device).collect()
    }

    /// How many `denied` entries with this code the server recorded for this user.
    fn denials(&self, s: &Session, code: &str) -> usize {
        let all = self.storage.audit_page(0, 1_000_000).unwrap();
        all.iter()
            .map(|e| &e.entry.event)
            .filter(|e| e.action == "denied" && e.outcome == code && e.user_id == Some(s.user_id))
            .count()
    }

    /// The server's own verification of its whole trail (what `chartroom-server audit verify` runs).
    fn assert_trail_verifies(&self) {
        let key = self.dir.signing_key().unwrap();
        chartroom_server::audit::checkpoint_if_due(&*self.storage, &key, wall_now()).unwrap();
        let verified = chartroom_server::audit::verify(&*self.storage, &key.verifying_key()).unwrap();
        assert!(verified.is_ok(), "the trail no longer verifies: {verified:?}");
    }

    /// Names, MRNs and note texts of every patient on the server, plus this file's own note text.
    fn phi(&self) -> Vec<String> {
        let mut v = vec![NOTE_CANARY.to_string()];
        for c in &self.charts {
            v.push(c.patient.mrn.clone());
            v.push(c.patient.name.family.clone());
            v.push(c.patient.name.given.clone());
            v.extend(c.notes.iter().map(|n| n.text.clone()));
        }
        // Given names shorter than five letters are also ordinary words ("Ava" in "available").
        v.retain(|s| s.chars().count() >= 5);
        v
    }

    fn assert_no_phi(&self, body: &str, case: &str) {
        for phi in self.phi() {
            assert!(!body.contains(&phi), "{case}: PHI in the response body: {body}");
        }
    }

    /// An error response: the status, a stable code, `retryable: false`, and no PHI.
    fn assert_error(&self, (status, body): &(u16, String), want_status: u16, want_code: &str, case: &str) {
        assert_eq!(*status, want_status, "{case}: {body}");
        let e: ApiError =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("{case}: not an ApiError: {body}"));
        assert_eq!(e.code, want_code, "{case}: {body}");
        assert!(!e.retryable, "{case}: bad input is never worth retrying: {body}");
        self.assert_no_phi(body, case);
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    records: Vec<(Vec<u8>, i64, i64)>,
    patients: Vec<(Vec<u8>, i64, i64)>,
    applied_changes: i64,
    change_counter: i64,
}

fn observation(patient: Uuid, by: Uuid, value: f64) -> Observation {
    Observation {
        id: Uuid::now_v7(),
        patient_id: patient,
        vital: VitalSign::HeartRate,
        value,
        effective_at: wall_now(),
        recorded_by: by,
        version: 0,
    }
}

fn draft(patient: Uuid, by: Uuid) -> Note {
    Note {
        id: Uuid::now_v7(),
        patient_id: patient,
        author_id: by,
        kind: NoteKind::Nursing,
        text: NOTE_CANARY.into(),
        created_at: wall_now(),
        status: NoteStatus::Draft,
        addendum_to: None,
        version: 0,
    }
}

fn change(base_version: i64, record: ChangeRecord) -> Change {
    Change { change_id: Uuid::now_v7().to_string(), base_version, change: record }
}

fn obs_change(o: Observation) -> Change {
    change(0, ChangeRecord::Observation(o))
}

fn rejected(outcome: &ChangeOutcome) -> Option<&str> {
    match outcome {
        ChangeOutcome::Rejected { code, .. } => Some(code),
        _ => None,
    }
}

/// Malformed batches are refused whole, before any change in them is looked at: not one of the
/// valid changes that travel with the broken one is applied.
// hipaa (e)(2)(i): a malformed push is refused whole and applies nothing
#[tokio::test]
async fn malformed_push_bodies_are_refused_whole() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let p = f.icu(0).patient.id;
    let before = f.snapshot();

    // A well-formed batch of two valid changes, as JSON to break in different ways.
    let valid = PushBatch {
        changes: vec![
            obs_change(observation(p, a.user_id, 72.0)),
            change(0, ChangeRecord::Note(draft(p, a.user_id))),
        ],
    };
    let text = serde_json::to_string(&valid).unwrap();
    let value: Value = serde_json::to_value(&valid).unwrap();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = value.clone();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let deep = "[".repeat(100_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", text.as_bytes()[..text.len() / 2].to_vec()),
        ("truncated by one byte", text.as_bytes()[..text.len() - 1].to_vec()),
        ("empty body", vec![]),
        ("not JSON", b"changes=all".to_vec()),
        ("invalid UTF-8", [&text.as_bytes()[..20], &[0xff, 0xfe][..], &text.as_bytes()[20..]].concat()),
        ("100,000 nested arrays", deep.into_bytes()),
        ("a bare array", b"[]".to_vec()),
        ("no changes field", b"{}".to_vec()),
        ("changes is null", br#"{"changes":null}"#.to_vec()),
        ("changes is an object", br#"{"changes":{}}"#.to_vec()),
        ("an unknown top-level field", with(&|v| v["force"] = json!(true))),
        ("a record id that is not a UUID", with(&|v| v["changes"][0]["record"]["id"] = json!("obs-1"))),
        ("a patient id that is not a UUID", with(&|v| v["changes"][1]["record"]["patient_id"] = json!(42))),
        ("an author that is not a UUID", with(&|v| v["changes"][1]["record"]["author_id"] = json!(""))),
        ("an unknown change kind", with(&|v| v["changes"][0]["kind"] = json!("prescription_override"))),
        ("no kind", with(&|v| v["changes"][0].as_object_mut().unwrap().retain(|k, _| k != "kind"))),
        ("no change id", with(&|v| v["changes"][0].as_object_mut().unwrap().retain(|k, _| k != "change_id"))),
        ("base_version as text", with(&|v| v["changes"][0]["base_version"] = json!("1"))),
        ("base_version fractional", with(&|v| v["changes"][0]["base_version"] = json!(1.5))),
        ("base_version beyond i64", with(&|v| v["changes"][0]["base_version"] = json!(u64::MAX))),
        ("an unknown vital sign", with(&|v| v["changes"][0]["record"]["vital"] = json!("mood"))),
        ("a value that is text", with(&|v| v["changes"][0]["record"]["value"] = json!("72"))),
        ("an unknown note status", with(&|v| v["changes"][1]["record"]["status"] = json!("final"))),
    ];
    for (case, body) in cases {
        let r = f.push_raw(&a, body).await;
        f.assert_error(&r, 400, "request.malformed", case);
        assert_eq!(f.snapshot(), before, "{case}: something was applied");
    }
    // Not JSON by content type, and too large: refused before parsing.
    let r = f.send(&a, Method::POST, "/v1/sync/push", "text/plain", text.clone().into_bytes()).await;
    f.assert_error(&r, 415, "request.content_type", "text/plain");
    let mut big = text.clone().into_bytes();
    big.extend(std::iter::repeat_n(b' ', 2 * 1024 * 1024));
    let r = f.push_raw(&a, big).await;
    f.assert_error(&r, 413, "request.too_large", "a 2 MiB body");
    // Without a valid token the body is not even read.
    let r = f.client.raw(Method::POST, "/v1/sync/push").header("content-type", "application/json");
    let r = r.body(text.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(f.snapshot(), before, "something was applied");

    // The same batch, well-formed, applies: the refusals above were about the bytes, not the changes.
    let outcomes = f.push(&a, valid.changes.clone()).await;
    assert!(outcomes.iter().all(|o| matches!(o, ChangeOutcome::Applied { version: 1 })), "{outcomes:?}");
    f.assert_trail_verifies();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// An empty batch does nothing; 501 changes are refused whole (none of them applied); 500 apply.
#[tokio::test]
async fn batch_size_limits() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let p = f.icu(0).patient.id;
    let before = f.snapshot();

    assert!(f.push(&a, vec![]).await.is_empty());
    assert_eq!(f.snapshot(), before, "an empty batch changed something");

    let over: Vec<Change> = (0..=chartroom_protocol::MAX_PUSH)
        .map(|i| obs_change(observation(p, a.user_id, 60.0 + (i % 60) as f64)))
        .collect();
    assert_eq!(over.len(), 501);
    let r = f.push_raw(&a, serde_json::to_vec(&PushBatch { changes: over.clone() }).unwrap()).await;
    f.assert_error(&r, 400, "request.invalid", "501 changes");
    assert_eq!(f.snapshot(), before, "part of an oversized batch was applied");

    let started = std::time::Instant::now();
    let outcomes = f.push(&a, over[..500].to_vec()).await;
    eprintln!("500 changes pushed in {:?}", started.elapsed());
    assert!(outcomes.iter().all(|o| matches!(o, ChangeOutcome::Applied { version: 1 })));
    assert_eq!(f.snapshot().records.len(), before.records.len() + 500);
    f.assert_trail_verifies();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// Changes that parse but must not apply, all in one batch: each gets its own refusal (or a
/// conflict) and the server's records do not move.
#[tokio::test]
async fn per_change_refusals_apply_nothing() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    f.add_user("nurse.b", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let b = f.session("station-b", "nurse.b").await;
    let (p1, p2) = (f.icu(0).patient.id, f.icu(1).patient.id);
    // Every synthetic patient has at least one problem on the list: a record of another kind.
    let problem = f.icu(1).conditions[0].clone();
    let mine = observation(p1, a.user_id, 81.0);
    let note = draft(p1, a.user_id);
    let setup = f.push(&a, vec![obs_change(mine.clone()), change(0, ChangeRecord::Note(note.clone()))]).await;
    assert!(setup.iter().all(|o| matches!(o, ChangeOutcome::Applied { version: 1 })), "{setup:?}");
    let before = f.snapshot();
    let denials = || {
        f.storage
            .audit_page(0, 1_000_000)
            .unwrap()
            .iter()
            .filter(|s| s.entry.event.action == "denied")
            .count()
    };
    let denials_before = denials();

    let note_edit =
        |base: i64| change(base, ChangeRecord::Note(Note { text: "edited".into(), ..note.clone() }));
    let with_id = |id: &str| Change { change_id: id.into(), ..obs_change(observation(p1, a.user_id, 70.0)) };
    let cases: Vec<(&str, Change, Result<&str, i64>)> = vec![
        ("a change id that is not a UUID", with_id("change-1"), Ok("request.invalid")),
        ("an empty change id", with_id(""), Ok("request.invalid")),
        ("a change id of 10,000 characters", with_id(&"7".repeat(10_000)), Ok("request.invalid")),
        (
            "a patient the server does not know",
            obs_change(observation(Uuid::now_v7(), a.user_id, 70.0)),
            Ok("patient.not_found"),
        ),
        (
            "a patient outside the user's units",
            obs_change(observation(f.med().patient.id, a.user_id, 70.0)),
            Ok("access.out_of_scope"),
        ),
        (
            "an observation id that belongs to another patient",
            obs_change(Observation { patient_id: p2, ..mine.clone() }),
            Ok("sync.record_mismatch"),
        ),
        (
            "a note id that belongs to an observation",
            change(0, ChangeRecord::Note(Note { id: mine.id, ..draft(p1, a.user_id) })),
            Ok("sync.record_mismatch"),
        ),
        (
            "a note edit moved to another patient",
            change(1, ChangeRecord::Note(Note { patient_id: p2, ..note.clone() })),
            Ok("sync.record_mismatch"),
        ),
        (
            "a note naming another (real) author",
            change(0, ChangeRecord::Note(draft(p1, b.user_id))),
            Ok("sync.not_author"),
        ),
        (
            "an edit of the user's note naming another author",
            change(1, ChangeRecord::Note(Note { author_id: b.user_id, ..note.clone() })),
            Ok("sync.not_author"),
        ),
        (
            "a nurse writing a physician's progress note",
            change(0, ChangeRecord::Note(Note { kind: NoteKind::Progress, ..draft(p1, a.user_id) })),
            Ok("access.forbidden"),
        ),
        (
            "a negative version inside the record",
            obs_change(Observation { version: -1, ..observation(p1, a.user_id, 70.0) }),
            Ok("request.invalid"),
        ),
        (
            "a time before 1970",
            obs_change(Observation { effective_at: Timestamp(-1), ..observation(p1, a.user_id, 70.0) }),
            Ok("request.invalid"),
        ),
        (
            "a control character in a note",
            change(0, ChangeRecord::Note(Note { text: "ok\u{7}".into(), ..draft(p1, a.user_id) })),
            Ok("request.invalid"),
        ),
        (
            "a note that amends itself",
            change(
                0,
                ChangeRecord::Note({
                    let n = draft(p1, a.user_id);
                    Note { addendum_to: Some(n.id), ..n }
                }),
            ),
            Ok("request.invalid"),
        ),
        (
            "a future base_version for a new record",
            change(5, ChangeRecord::Observation(observation(p1, a.user_id, 70.0))),
            Err(0),
        ),
        (
            "a negative base_version for a new record",
            change(-1, ChangeRecord::Note(draft(p1, a.user_id))),
            Err(0),
        ),
        ("a future base_version", note_edit(7), Err(1)),
        ("a negative base_version", note_edit(-3), Err(1)),
        ("base_version 0 for an existing note", note_edit(0), Err(1)),
        ("base_version i64::MAX", note_edit(i64::MAX), Err(1)),
        (
            "a note id that belongs to a problem of the same patient",
            change(1, ChangeRecord::Note(Note { id: problem.id, ..draft(problem.patient_id, a.user_id) })),
            Ok("sync.record_mismatch"),
        ),
        (
            "a note id that belongs to another patient's problem",
            change(0, ChangeRecord::Note(Note { id: problem.id, ..draft(p1, a.user_id) })),
            Ok("sync.record_mismatch"),
        ),
    ];
    let outcomes = f.push(&a, cases.iter().map(|(_, c, _)| c.clone()).collect()).await;
    for ((case, _, want), got) in cases.iter().zip(&outcomes) {
        match want {
            Ok(code) => assert_eq!(rejected(got), Some(*code), "{case}: {got:?}"),
            Err(v) => assert_eq!(got, &ChangeOutcome::Conflict { current_version: *v }, "{case}"),
        }
    }
    assert_eq!(f.snapshot(), before, "a refused change was applied");
    // Attempts to reach what the user may not are audited (role and scope, another author, a record
    // id of another patient or kind, an unknown patient); mistakes that reach nothing (invalid input,
    // conflicts) are not.
    let denials_codes = ["sync.not_author", "sync.record_mismatch", "patient.not_found"];
    let attempts = cases
        .iter()
        .filter(|(_, _, want)| want.is_ok_and(|c| c.starts_with("access.") || denials_codes.contains(&c)))
        .count();
    assert_eq!(attempts, 10);
    assert_eq!(denials(), denials_before + attempts, "each attempt is recorded once");
    // None of the refused change ids is remembered: the station may fix and resend them.
    for (_, c, _) in &cases {
        if let Ok(id) = c.change_id.parse::<Uuid>() {
            assert_eq!(f.storage.applied_change(id).unwrap(), None);
        }
    }
    // The stored note is still the first version, with its text.
    let keys = f.dir.record_keys().unwrap();
    let sealed = f.storage.patient(p1).unwrap().unwrap();
    let stored = f.storage.records(p1, &chartroom_server::storage::RecordKind::ALL, 1000).unwrap();
    let chart = keys.open_chart(&sealed, &stored).unwrap();
    let n = chart.notes.iter().find(|n| n.id == note.id).unwrap();
    assert_eq!((n.version, n.text.as_str(), n.author_id), (1, NOTE_CANARY, a.user_id));
    f.assert_trail_verifies();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// A change id another device has used is never applied for this one — even for a different,
/// otherwise valid record.
// hipaa (a)(1) (c)(1): a change id of another device is refused, applies nothing and is audited (IDOR)
#[tokio::test]
async fn foreign_change_ids_apply_nothing() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    f.add_user("nurse.b", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let b = f.session("station-b", "nurse.b").await;
    let p = f.icu(0).patient.id;
    let first = obs_change(observation(p, a.user_id, 90.0));
    assert_eq!(f.push(&a, vec![first.clone()]).await, [ChangeOutcome::Applied { version: 1 }]);
    let before = f.snapshot();

    let theirs = observation(p, b.user_id, 91.0);
    let reused = Change { change_id: first.change_id.clone(), ..obs_change(theirs.clone()) };
    // The same UUID spelled in capitals is the same change id.
    let upper =
        Change { change_id: first.change_id.to_uppercase(), ..obs_change(observation(p, b.user_id, 92.0)) };
    let note =
        Change { change_id: first.change_id.clone(), ..change(0, ChangeRecord::Note(draft(p, b.user_id))) };
    let outcomes = f.push(&b, vec![reused, upper, note]).await;
    for o in &outcomes {
        assert_eq!(rejected(o), Some("sync.foreign_change"), "{outcomes:?}");
    }
    // Each attempt on another device's change is audited as a denial.
    assert_eq!(f.denials(&b, "sync.foreign_change"), 3);
    assert_eq!(f.snapshot(), before);
    assert_eq!(f.storage.record_version(theirs.id).unwrap(), None);
    f.assert_trail_verifies();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// Audit uploads that are not the device's own unbroken chain are refused whole: the entries the
/// server holds do not change and the trail still verifies.
// hipaa (e)(2)(i) (b): an uploaded chain that is foreign or broken is refused
#[tokio::test]
async fn audit_uploads_of_foreign_or_broken_chains_are_refused() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    f.add_user("nurse.b", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let b = f.session("station-b", "nurse.b").await;
    let (ida, idb): (Uuid, Uuid) = (a.dev.device_id.parse().unwrap(), b.dev.device_id.parse().unwrap());
    let ev = |i: i64| Event::new(Timestamp(1_800_000_000_000 + i), "view", "patient", "ok");
    let (mut ha, mut hb) = (ChainHead::GENESIS, ChainHead::GENESIS);
    let chain_a: Vec<AuditEntry> = (0..3).map(|i| ha.append(ida, Uuid::now_v7(), ev(i))).collect();
    let chain_b: Vec<AuditEntry> = (0..2).map(|i| hb.append(idb, Uuid::now_v7(), ev(i))).collect();
    let ok: AuditUploadResponse = serde_json::from_str(&f.upload(&a, &chain_a).await.1).unwrap();
    assert_eq!(ok.stored, 3);
    let ok: AuditUploadResponse = serde_json::from_str(&f.upload(&b, &chain_b).await.1).unwrap();
    assert_eq!(ok.stored, 2);
    let held = || (f.chain_of(ida), f.chain_of(idb));
    let before = held();

    // A's next entry, valid, to combine with broken ones.
    let next_a = ha.append(ida, Uuid::now_v7(), ev(10));
    let b3 = {
        let mut h = hb;
        h.append(idb, Uuid::now_v7(), ev(11))
    };
    // B's entry relabelled as A's, seq and link fixed up, but not re-hashed: the content no longer
    // matches the hash.
    let relabelled =
        AuditEntry { device_id: ida, seq: next_a.seq, prev_hash: next_a.prev_hash, ..b3.clone() };
    let edited = {
        let mut e = next_a.clone();
        e.event.action = "login".into();
        e
    };
    // A self-consistent entry (hash right) that does not follow A's chain.
    let unlinked = ChainHead { seq: 3, hash: Digest32([9; 32]) }.append(ida, Uuid::now_v7(), ev(12));
    // A different second entry: a fork of what the server already holds.
    let fork = {
        let mut h = ChainHead { seq: 1, hash: chain_a[0].hash };
        h.append(ida, Uuid::now_v7(), ev(13))
    };
    let seq0 = AuditEntry { seq: 0, prev_hash: Digest32::GENESIS, ..next_a.clone() };
    let seq0 = AuditEntry { hash: seq0.compute_hash(), ..seq0 };
    let cases: Vec<(&str, Vec<AuditEntry>, u16, &str)> = vec![
        ("B's stored chain, uploaded by A", chain_b.clone(), 400, "request.invalid"),
        ("A's next entry followed by B's next", vec![next_a.clone(), b3.clone()], 400, "request.invalid"),
        ("B's entry relabelled as A's", vec![relabelled], 409, "audit.invalid"),
        ("an entry edited after hashing", vec![edited.clone()], 409, "audit.invalid"),
        (
            "a valid entry then an edited one",
            vec![next_a.clone(), {
                let mut h = ha;
                let mut e = h.append(ida, Uuid::now_v7(), ev(14));
                e.event.outcome = "denied".into();
                e
            }],
            409,
            "audit.invalid",
        ),
        ("an entry that does not link to the chain", vec![unlinked], 409, "audit.fork"),
        ("a fork of a stored entry", vec![fork], 409, "audit.fork"),
        (
            "the stored entries again, then an edited one",
            [chain_a.clone(), vec![edited]].concat(),
            409,
            "audit.invalid",
        ),
        ("seq 0", vec![seq0], 409, "audit.fork"),
    ];
    for (case, entries, status, code) in cases {
        let r = f.upload(&a, &entries).await;
        f.assert_error(&r, status, code, case);
        assert_eq!(held(), before, "{case}: the stored chains changed");
    }
    // Too many entries, even if every one is valid.
    let mut h = ha;
    let many: Vec<AuditEntry> = (0..=chartroom_protocol::MAX_AUDIT_UPLOAD as i64)
        .map(|i| h.append(ida, Uuid::now_v7(), ev(100 + i)))
        .collect();
    let r = f.upload(&a, &[vec![next_a.clone()], many].concat()).await;
    f.assert_error(&r, 400, "request.invalid", "1,002 entries");
    assert_eq!(held(), before);
    // Broken JSON.
    let body = serde_json::to_string(&AuditUpload { entries: vec![next_a.clone()] }).unwrap();
    let hash_hex = next_a.hash.to_hex();
    for (case, bytes) in [
        ("truncated", body.as_bytes()[..body.len() / 2].to_vec()),
        ("a hash that is not hex", body.replace(&hash_hex, &"zz".repeat(32)).into_bytes()),
        ("a short hash", body.replace(&hash_hex, &hash_hex[..10]).into_bytes()),
        ("a negative seq", body.replace("\"seq\":4", "\"seq\":-4").into_bytes()),
        ("a device id that is not a UUID", body.replace(&a.dev.device_id, "station-a").into_bytes()),
        ("an unknown field", body.replacen("{\"entries\"", "{\"verified\":true,\"entries\"", 1).into_bytes()),
    ] {
        assert_ne!(bytes, body.as_bytes(), "{case}: the edit did not apply");
        let r = f.send(&a, Method::POST, "/v1/audit/entries", "application/json", bytes).await;
        f.assert_error(&r, 400, "request.malformed", case);
        assert_eq!(held(), before, "{case}");
    }
    // An empty upload stores nothing and is not an error.
    let (status, text) = f.upload(&a, &[]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(held(), before);
    f.assert_trail_verifies();

    // After all that, A's chain continues where it was.
    let (status, text) = f.upload(&a, &[next_a]).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(f.chain_of(ida).len(), 4);
    f.assert_trail_verifies();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// Garbage cursors and limits on pull are refused with a stable code; in-range oddities are served
/// sanely; a role that may not hold charts is refused (and the refusal recorded).
#[tokio::test]
async fn pull_refuses_garbage_cursors_and_limits() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    f.add_user("billing.a", Role::Billing, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    for query in [
        "after=abc",
        "after=",
        "after=1.5",
        "after=99999999999999999999",
        "after=0x10",
        "limit=abc",
        "limit=-1",
        "limit=1e3",
        "limit=99999999999999999999999",
        "after=0&after=5",
        "after=0&since=yesterday",
        "after=%00",
    ] {
        let r = f.get(&a, &format!("/v1/sync/pull?{query}")).await;
        f.assert_error(&r, 400, "request.invalid", query);
    }
    let page = |r: (u16, String)| -> PullPage {
        assert_eq!(r.0, 200, "{}", r.1);
        serde_json::from_str(&r.1).unwrap()
    };
    let from_zero = page(f.get(&a, "/v1/sync/pull?after=0&limit=1000").await);
    assert_eq!(from_zero.patients.len(), 3);
    // A negative cursor is read as "from the beginning".
    let negative = page(f.get(&a, "/v1/sync/pull?after=-5&limit=1000").await);
    assert_eq!((negative.patients.len(), negative.cursor), (3, from_zero.cursor));
    let negative = page(f.get(&a, &format!("/v1/sync/pull?after={}&limit=1000", i64::MIN)).await);
    assert_eq!((negative.patients.len(), negative.cursor), (3, from_zero.cursor));
    // Limits outside 1..=1000 are clamped, not refused.
    let one = page(f.get(&a, "/v1/sync/pull?after=0&limit=0").await);
    assert!(one.more && one.cursor >= 1 && one.cursor < from_zero.cursor, "limit 0 is served as limit 1");
    let huge = page(f.get(&a, &format!("/v1/sync/pull?after=0&limit={}", usize::MAX)).await);
    assert_eq!(huge.cursor, from_zero.cursor);
    // A role that may not hold whole charts is refused, and the refusal is in the trail.
    let billing = f.session("station-b", "billing.a").await;
    let r = f.get(&billing, "/v1/sync/pull?after=0").await;
    f.assert_error(&r, 403, "access.forbidden", "billing pulls");
    assert!(f
        .storage
        .audit_page(0, 1_000_000)
        .unwrap()
        .iter()
        .any(|s| s.entry.event.action == "denied" && s.entry.event.username.as_deref() == Some("billing.a")));
    f.assert_trail_verifies();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

// Refusals that once were bugs (found by this file): each must stay a clear refusal.

/// Was a bug: a device that reuses one of its own change ids for a *different* record is told
/// `duplicate` (with the old record's version) and the new record is silently not stored. The
/// station's `push_outbox` settles a duplicate as accepted, so the clinician's record is gone for
/// good without any visible error.
#[tokio::test]
async fn a_reused_change_id_for_another_record_is_refused_not_reported_as_a_duplicate() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let p = f.icu(0).patient.id;
    let first = obs_change(observation(p, a.user_id, 90.0));
    assert_eq!(f.push(&a, vec![first.clone()]).await, [ChangeOutcome::Applied { version: 1 }]);
    let before = f.snapshot();
    let other = observation(p, a.user_id, 95.0);
    let reused = Change { change_id: first.change_id.clone(), ..obs_change(other.clone()) };
    let outcome = f.push(&a, vec![reused]).await;
    assert_eq!(f.snapshot(), before, "nothing may be applied");
    assert_eq!(f.storage.record_version(other.id).unwrap(), None);
    assert!(
        rejected(&outcome[0]).is_some(),
        "a change id reused for another record must be refused: {outcome:?}"
    );
}

/// Was a bug: any user who may write notes on the unit can overwrite another user's *draft* note and make
/// it theirs: nurse.b pushes nurse.a's draft (right `base_version`) with `author_id` = nurse.b and
/// new text; it applies as version 2, and nurse.a's text and authorship are gone from the server.
// hipaa (a)(1) (b): another user's draft id in a push is refused and audited (IDOR)
#[tokio::test]
async fn another_user_cannot_take_over_a_draft_note() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    f.add_user("nurse.b", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let b = f.session("station-b", "nurse.b").await;
    let p = f.icu(0).patient.id;
    let note = draft(p, a.user_id);
    assert_eq!(
        f.push(&a, vec![change(0, ChangeRecord::Note(note.clone()))]).await,
        [ChangeOutcome::Applied { version: 1 }]
    );
    let before = f.snapshot();
    let takeover = Note { author_id: b.user_id, text: "Replaced by someone else".into(), ..note.clone() };
    let outcome = f.push(&b, vec![change(1, ChangeRecord::Note(takeover))]).await;
    assert_eq!(rejected(&outcome[0]), Some("sync.not_author"), "{outcome:?}");
    assert_eq!(f.snapshot(), before, "another user's draft was overwritten");
    assert_eq!(f.denials(&b, "sync.not_author"), 1, "the attempt is audited");
    assert_eq!(f.denials(&a, "sync.not_author"), 0);
}

/// Was a bug: an addendum may point (`addendum_to`) at anything: a note of another patient, an
/// observation, or an id that does not exist — all three apply. The domain says an addendum amends
/// a signed note (`Note::addendum_to`: "the signed note it amends"); a dangling or cross-patient
/// link corrupts the chart (an addendum shown under the wrong note, or under none).
// hipaa (c)(1): an addendum amends only a signed note of the same patient
#[tokio::test]
async fn an_addendum_amends_only_a_signed_note_of_the_same_patient() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let (p1, p2) = (f.icu(0).patient.id, f.icu(1).patient.id);
    let theirs = Note { status: NoteStatus::Signed { signed_at: wall_now() }, ..draft(p2, a.user_id) };
    let obs = observation(p1, a.user_id, 88.0);
    let setup =
        f.push(&a, vec![change(0, ChangeRecord::Note(theirs.clone())), obs_change(obs.clone())]).await;
    assert!(setup.iter().all(|o| matches!(o, ChangeOutcome::Applied { .. })), "{setup:?}");
    let before = f.snapshot();
    let addendum = |target: Uuid| {
        change(0, ChangeRecord::Note(Note { addendum_to: Some(target), ..draft(p1, a.user_id) }))
    };
    let outcomes = f.push(&a, vec![addendum(theirs.id), addendum(obs.id), addendum(Uuid::now_v7())]).await;
    for (case, o) in ["another patient's note", "an observation", "no record at all"].iter().zip(&outcomes) {
        assert!(rejected(o).is_some(), "an addendum to {case} must be refused: {o:?}");
    }
    assert_eq!(f.snapshot(), before);
}

/// Was a bug: an audit entry whose `id` is already stored (another device's entry, or the same id twice
/// in one upload) makes the upload fail with **503 `server.database`, retryable** — a server error
/// for bad input, which the station will retry for ever, so its audit upload is stuck. (Nothing is
/// stored, and no internals leak: the message is the generic one.)
#[tokio::test]
async fn an_audit_entry_id_already_stored_is_refused_not_retried() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    f.add_user("nurse.b", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let b = f.session("station-b", "nurse.b").await;
    let (ida, idb): (Uuid, Uuid) = (a.dev.device_id.parse().unwrap(), b.dev.device_id.parse().unwrap());
    let ev = |i: i64| Event::new(Timestamp(1_800_000_000_000 + i), "view", "patient", "ok");
    let theirs = {
        let mut h = ChainHead::GENESIS;
        h.append(idb, Uuid::now_v7(), ev(1))
    };
    assert_eq!(f.upload(&b, std::slice::from_ref(&theirs)).await.0, 200);
    let mine = {
        let mut h = ChainHead::GENESIS;
        h.append(ida, theirs.id, ev(2))
    };
    let r = f.upload(&a, &[mine]).await;
    assert!(f.chain_of(ida).is_empty());
    f.assert_error(&r, 409, "audit.invalid", "an entry id another device's entry has");
    let mut h = ChainHead::GENESIS;
    let id = Uuid::now_v7();
    let twice = [h.append(ida, id, ev(3)), h.append(ida, id, ev(4))];
    let r = f.upload(&a, &twice).await;
    assert!(f.chain_of(ida).is_empty());
    f.assert_error(&r, 409, "audit.invalid", "the same entry id twice");
}

/// Was a bug (robustness): a pull cursor beyond anything the server has issued is answered 200 with an
/// empty page that echoes the cursor back and `more: false`. A station whose cursor is ahead — the
/// server restored from a backup, or a damaged station cursor — is told it is up to date and never
/// receives the changes numbered up to its cursor. Nothing is applied, but the station is not told.
#[tokio::test]
async fn a_cursor_beyond_the_server_is_refused() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let a = f.session("station-a", "nurse.a").await;
    let r = f.get(&a, "/v1/sync/pull?after=999999999").await;
    assert_eq!(r.0, 400, "a cursor the server never issued must be refused: {}", r.1);
    f.assert_no_phi(&r.1, "cursor ahead");
}
