//! The storage conformance suite: what every `Storage` backend must do, checked through the trait
//! only. The embedded SQLCipher backend runs it in `server.rs`; the PostgreSQL backend in the
//! workspace tests (`tests/tests/postgres.rs`).

use chartroom_audit::{AuditEntry, ChainHead, Event};
use chartroom_domain::{DeviceProfile, LockPolicy, Role, Timestamp};
use chartroom_server::storage::{
    DeviceRecord, Ingested, NewSession, NewUser, RecordKind, Refreshed, SealedChart, SealedPatient,
    SealedRecord, SessionTokens, Storage, UserRecord, SERVER_CHAIN,
};
use chartroom_server::ServerError;
use uuid::Uuid;

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(secs: i64) -> Timestamp {
    Timestamp(T0.0 + secs * 1000)
}

fn user(name: &str) -> NewUser {
    NewUser {
        record: UserRecord {
            id: Uuid::now_v7(),
            username: name.into(),
            role: Role::Nurse,
            units: vec!["ICU".into()],
            disabled: false,
            created_at: T0,
        },
        password_hash: "$argon2id$placeholder".into(),
    }
}

fn device(s: &dyn Storage, name: &str, token: u8, key: u8) -> DeviceRecord {
    let d = DeviceRecord {
        id: Uuid::now_v7(),
        name: name.into(),
        profile: DeviceProfile::Station,
        units: vec!["ICU".into()],
        token_expires_at: Some(at(3600)),
        enrolled_at: None,
        revoked_at: None,
        created_at: T0,
    };
    s.put_device_token(&d, &[token; 32]).unwrap();
    s.enroll_device(&[token; 32], &[key; 32], at(1)).unwrap()
}

fn tokens(n: u8, access_until: i64) -> SessionTokens {
    SessionTokens {
        access_hash: [n; 32],
        access_expires_at: at(access_until),
        refresh_hash: [n.wrapping_add(100); 32],
        refresh_expires_at: at(43_200),
    }
}

pub fn accounts(s: &dyn Storage) {
    let ana = user("Ana.Nurse");
    s.create_user(&ana).unwrap();
    assert!(matches!(s.create_user(&user("ana.nurse")), Err(ServerError::UserExists)));
    s.create_user(&user("bo")).unwrap();
    let names: Vec<String> = s.list_users().unwrap().into_iter().map(|u| u.username).collect();
    assert_eq!(names, ["Ana.Nurse", "bo"]);
    assert_eq!(s.user_for_login("ANA.NURSE").unwrap().unwrap().record.id, ana.record.id);
    assert!(s.user_for_login("nobody").unwrap().is_none());
    assert!(matches!(s.set_disabled("nobody", true), Err(ServerError::UnknownUser)));
    s.set_disabled("ana.nurse", true).unwrap();
    assert!(s.user_for_login("ana.nurse").unwrap().unwrap().record.disabled);
}

pub fn devices(s: &dyn Storage) {
    let d = device(s, "icu-1", 1, 11);
    assert!(d.enrolled_at.is_some());
    assert_eq!(s.enrolled_device(d.id).unwrap().unwrap().public_key, [11; 32]);
    // A used token does not work twice; an expired one never.
    assert!(matches!(s.enroll_device(&[1; 32], &[12; 32], at(2)), Err(ServerError::InvalidToken)));
    let late =
        DeviceRecord { id: Uuid::now_v7(), name: "late".into(), token_expires_at: Some(at(10)), ..d.clone() };
    s.put_device_token(&late, &[2; 32]).unwrap();
    assert!(matches!(s.enroll_device(&[2; 32], &[13; 32], at(10)), Err(ServerError::InvalidToken)));
    // An enrolled device's name cannot get a new token.
    assert!(matches!(s.put_device_token(&d, &[3; 32]), Err(ServerError::DeviceEnrolled)));
    s.revoke_device("ICU-1", at(20)).unwrap();
    assert!(s.enrolled_device(d.id).unwrap().is_none());
    assert!(matches!(s.revoke_device("nope", at(20)), Err(ServerError::UnknownDevice)));
    assert_eq!(s.list_devices().unwrap().len(), 2);
}

pub fn recovery_tokens(s: &dyn Storage) {
    let d = device(s, "icu-3", 7, 17);
    assert!(matches!(s.put_recovery_token("nope", &[9; 32], at(600)), Err(ServerError::UnknownDevice)));
    let pending = DeviceRecord { id: Uuid::now_v7(), name: "pending".into(), enrolled_at: None, ..d.clone() };
    s.put_device_token(&pending, &[8; 32]).unwrap();
    assert!(matches!(s.put_recovery_token("pending", &[9; 32], at(600)), Err(ServerError::NotRecoverable)));
    assert!(!s.check_recovery_token(d.id, &[9; 32], at(1)).unwrap(), "none approved");
    s.put_recovery_token("ICU-3", &[9; 32], at(600)).unwrap();
    assert!(s.check_recovery_token(d.id, &[9; 32], at(1)).unwrap());
    assert!(!s.check_recovery_token(d.id, &[10; 32], at(1)).unwrap(), "another token");
    assert!(!s.check_recovery_token(pending.id, &[9; 32], at(1)).unwrap(), "another device");
    assert!(!s.check_recovery_token(d.id, &[9; 32], at(600)).unwrap(), "expired");
    assert!(matches!(
        s.recover_device(d.id, &[9; 32], &[18; 32], at(600)),
        Err(ServerError::InvalidRecoveryToken)
    ));
    // Sessions issued to the old key end with it.
    let u = user("dee");
    s.create_user(&u).unwrap();
    let session = NewSession {
        id: Uuid::now_v7(),
        user_id: u.record.id,
        device_id: d.id,
        tokens: tokens(6, 600),
        created_at: T0,
    };
    s.create_session(&session).unwrap();
    assert_eq!(s.recover_device(d.id, &[9; 32], &[18; 32], at(2)).unwrap().id, d.id);
    assert_eq!(s.enrolled_device(d.id).unwrap().unwrap().public_key, [18; 32]);
    assert!(s.session_by_access(&[6; 32], at(3)).unwrap().is_none(), "the old key's session ended");
    assert!(
        matches!(s.recover_device(d.id, &[9; 32], &[19; 32], at(3)), Err(ServerError::InvalidRecoveryToken)),
        "never twice"
    );
    assert_eq!(s.enrolled_device(d.id).unwrap().unwrap().public_key, [18; 32]);
    // A new approval replaces an unused one; revocation ends it and refuses new ones.
    s.put_recovery_token("icu-3", &[11; 32], at(600)).unwrap();
    s.put_recovery_token("icu-3", &[12; 32], at(600)).unwrap();
    assert!(!s.check_recovery_token(d.id, &[11; 32], at(4)).unwrap());
    assert!(s.check_recovery_token(d.id, &[12; 32], at(4)).unwrap());
    s.revoke_device("icu-3", at(5)).unwrap();
    assert!(!s.check_recovery_token(d.id, &[12; 32], at(6)).unwrap());
    assert!(matches!(s.put_recovery_token("icu-3", &[13; 32], at(600)), Err(ServerError::NotRecoverable)));
}

pub fn throttles_and_nonces(s: &dyn Storage) {
    let policy = LockPolicy::defaults(DeviceProfile::Station);
    for i in 0..3 {
        s.update_throttle("user:x", &mut |t| {
            t.record_failure("user:x", at(i), &policy);
        })
        .unwrap();
    }
    let mut verdict = Ok(());
    s.update_throttle("user:x", &mut |t| verdict = t.check("user:x", at(2), &policy)).unwrap();
    assert!(verdict.is_err(), "three failures are remembered across calls");
    s.clear_throttle("user:x").unwrap();
    s.update_throttle("user:x", &mut |t| verdict = t.check("user:x", at(3), &policy)).unwrap();
    assert!(verdict.is_ok());

    let (dev, other) = (Uuid::now_v7(), Uuid::now_v7());
    s.put_nonce(&[1; 32], dev, at(60)).unwrap();
    s.put_nonce(&[2; 32], dev, at(60)).unwrap();
    assert!(!s.take_nonce(&[1; 32], other, at(1)).unwrap(), "another device's nonce");
    assert!(s.take_nonce(&[1; 32], dev, at(1)).unwrap());
    assert!(!s.take_nonce(&[1; 32], dev, at(1)).unwrap(), "used twice");
    assert!(!s.take_nonce(&[2; 32], dev, at(60)).unwrap(), "expired");
}

pub fn sessions(s: &dyn Storage) {
    let u = user("cy");
    s.create_user(&u).unwrap();
    let d = device(s, "icu-2", 5, 15);
    let session = NewSession {
        id: Uuid::now_v7(),
        user_id: u.record.id,
        device_id: d.id,
        tokens: tokens(1, 600),
        created_at: T0,
    };
    s.create_session(&session).unwrap();
    let owner = s.session_by_access(&[1; 32], at(599)).unwrap().unwrap();
    assert_eq!((owner.user.id, owner.device.record.id), (u.record.id, d.id));
    assert!(s.session_by_access(&[1; 32], at(600)).unwrap().is_none(), "expired");

    assert_eq!(
        s.rotate_refresh(&[101; 32], Uuid::now_v7(), &tokens(2, 1200), at(700)).unwrap(),
        Refreshed::Invalid
    );
    assert!(matches!(
        s.rotate_refresh(&[101; 32], d.id, &tokens(2, 1200), at(700)).unwrap(),
        Refreshed::Rotated(_)
    ));
    assert!(s.session_by_access(&[2; 32], at(700)).unwrap().is_some());
    assert_eq!(s.rotate_refresh(&[101; 32], d.id, &tokens(3, 1800), at(800)).unwrap(), Refreshed::Reused);
    assert!(s.session_by_access(&[2; 32], at(800)).unwrap().is_none(), "a replayed refresh ends the session");

    let again = NewSession { id: Uuid::now_v7(), tokens: tokens(4, 600), ..session };
    s.create_session(&again).unwrap();
    s.set_disabled("cy", true).unwrap();
    assert!(s.session_by_access(&[4; 32], at(1)).unwrap().is_none(), "disabling ends sessions");
    s.set_disabled("cy", false).unwrap();
    let third = NewSession { id: Uuid::now_v7(), tokens: tokens(5, 600), ..again };
    s.create_session(&third).unwrap();
    s.end_session(third.id).unwrap();
    assert!(s.session_by_access(&[5; 32], at(1)).unwrap().is_none());
}

pub fn audit(s: &dyn Storage) {
    // The server's own events chain up in order.
    let events: Vec<Event> =
        ["login_failed", "login", "view"].iter().map(|a| Event::new(at(1), a, "session", "ok")).collect();
    s.append_events(&events[..2]).unwrap();
    s.append_events(&events[2..]).unwrap();
    let stored = s.audit_page(0, 10).unwrap();
    let actions: Vec<&str> = stored.iter().map(|e| e.entry.event.action.as_str()).collect();
    assert_eq!(actions, ["login_failed", "login", "view"]);
    assert_eq!(stored.iter().map(|e| e.server_seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(chartroom_audit::verify_chain(SERVER_CHAIN, ChainHead::GENESIS, stored.iter().map(|e| &e.entry))
        .is_ok());
    assert_eq!(s.audit_head().unwrap(), (3, stored[2].server_hash));
    assert_eq!(s.audit_page(2, 10).unwrap().len(), 1);

    // A device's chain: stored in order; a retry of stored entries is skipped; gaps and forks refused.
    let device = Uuid::now_v7();
    let mut head = ChainHead::GENESIS;
    let chain: Vec<AuditEntry> = (0..5)
        .map(|i| head.append(device, Uuid::now_v7(), Event::new(at(i), "view", "patient", "ok")))
        .collect();
    assert_eq!(s.ingest_entries(device, &chain[..3]).unwrap(), Ingested { stored: 3, already_present: 0 });
    assert_eq!(s.ingest_entries(device, &chain[1..5]).unwrap(), Ingested { stored: 2, already_present: 2 });
    let mut fork_head = ChainHead { seq: chain[4].seq, hash: chain[4].hash };
    let next = fork_head.append(device, Uuid::now_v7(), Event::new(at(9), "view", "patient", "ok"));
    let mut gap_head = fork_head;
    let after_gap = gap_head.append(device, Uuid::now_v7(), Event::new(at(10), "view", "patient", "ok"));
    assert!(matches!(
        s.ingest_entries(device, &[after_gap]),
        Err(ServerError::AuditRejected { code: "audit.gap", .. })
    ));
    let mut other = ChainHead { seq: chain[3].seq, hash: chain[3].hash };
    let forked = other.append(device, Uuid::now_v7(), Event::new(at(11), "update", "patient", "ok"));
    assert!(matches!(
        s.ingest_entries(device, &[forked]),
        Err(ServerError::AuditRejected { code: "audit.fork", .. })
    ));
    let mut edited = next.clone();
    edited.event.action = "export".into();
    assert!(matches!(
        s.ingest_entries(device, &[edited]),
        Err(ServerError::AuditRejected { code: "audit.invalid", .. })
    ));
    assert_eq!(s.ingest_entries(device, &[next]).unwrap().stored, 1);
    assert_eq!(s.audit_head().unwrap().0, 9, "nothing half-stored from the refused uploads");

    // Checkpoints: numbered once, in order.
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let (count, head) = s.audit_head().unwrap();
    let c1 = chartroom_audit::Checkpoint::sign(&key, None, count, head, at(20));
    assert!(s.add_checkpoint(&c1).unwrap());
    assert!(!s.add_checkpoint(&c1).unwrap(), "another process already wrote checkpoint 1");
    assert_eq!(s.checkpoints().unwrap(), [c1]);
}

fn chart(unit: &str, bed: &str, mrn: u8, observations: usize) -> SealedChart {
    let id = Uuid::now_v7();
    let mut records = vec![SealedRecord {
        id: Uuid::now_v7(),
        kind: RecordKind::Allergy,
        sort_key: 0,
        version: 1,
        body: vec![1],
    }];
    for i in 0..observations {
        let sort_key = i64::try_from(i).unwrap();
        records.push(SealedRecord {
            id: Uuid::now_v7(),
            kind: RecordKind::Observation,
            sort_key,
            version: 1,
            body: vec![2],
        });
    }
    SealedChart {
        patient: SealedPatient {
            id,
            unit: unit.into(),
            bed: bed.into(),
            version: 1,
            mrn_index: [mrn; 32],
            wrapped_key: vec![9; 61],
            body: vec![7; 40],
        },
        records,
    }
}

pub fn records(s: &dyn Storage) {
    let charts: Vec<SealedChart> = (0..7u8)
        .map(|i| chart(if i % 2 == 0 { "ICU" } else { "MED" }, &format!("{:02}", 10 - i), i, 3))
        .collect();
    s.put_charts(&charts).unwrap();
    // All or nothing: a batch with one duplicate MRN stores none of its patients.
    let batch = [chart("ICU", "50", 100, 1), chart("ICU", "51", 3, 1)];
    assert!(matches!(s.put_charts(&batch), Err(ServerError::PatientExists)));
    assert!(s.patient(batch[0].patient.id).unwrap().is_none());
    let probe =
        [(batch[0].patient.id, [100; 32]), (Uuid::now_v7(), [3; 32]), (charts[0].patient.id, [0; 32])];
    assert_eq!(s.existing_patients(&probe).unwrap().len(), 2);

    assert_eq!(s.patient(charts[1].patient.id).unwrap().unwrap(), charts[1].patient);
    assert_eq!(s.patient_by_mrn_index(&[2; 32]).unwrap(), Some(charts[2].patient.id));
    assert_eq!(s.patient_by_mrn_index(&[99; 32]).unwrap(), None);
    // Census: one unit, by bed, paged by the last patient seen.
    let first = s.census("ICU", None, 3).unwrap();
    let beds: Vec<&str> = first.iter().map(|r| r.patient.bed.as_str()).collect();
    assert_eq!(beds, ["04", "06", "08"]);
    assert!(first.iter().all(|r| r.allergy_count == 1 && r.last_vitals_at == Some(Timestamp(2))));
    let rest = s.census("ICU", Some(first[2].patient.id), 3).unwrap();
    assert_eq!(rest.iter().map(|r| r.patient.bed.as_str()).collect::<Vec<_>>(), ["10"]);

    let recs = s.records(charts[0].patient.id, &[RecordKind::Observation], 2).unwrap();
    assert_eq!(recs.iter().map(|r| r.sort_key).collect::<Vec<_>>(), [2, 1], "newest first, limited");
    let all = s.records(charts[0].patient.id, &RecordKind::ALL, usize::MAX).unwrap();
    assert_eq!(all.len(), 4);
    let shape: Vec<(RecordKind, i64)> = all.iter().map(|r| (r.kind, r.sort_key)).collect();
    assert_eq!(
        shape,
        [
            (RecordKind::Allergy, 0),
            (RecordKind::Observation, 2),
            (RecordKind::Observation, 1),
            (RecordKind::Observation, 0)
        ]
    );
    assert!(all.iter().all(|r| charts[0].records.contains(r)), "stored as given");

    let mut ids = Vec::new();
    let mut after = None;
    while let Some(last) = s.patient_ids(after, 3).unwrap().last().copied() {
        ids.extend(s.patient_ids(after, 3).unwrap());
        after = Some(last);
    }
    let mut expected: Vec<Uuid> = charts.iter().map(|c| c.patient.id).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

/// Pushed changes (one transaction per batch, a compare-and-set per record, change ids remembered,
/// an audit event per applied change) and the pull cursor (pages end at a change number, nothing
/// is skipped or repeated, scope filters by the patient's current unit, patients that move out of
/// scope are named in `left`, a cursor never issued is visible through `newest`).
pub fn sync_changes(s: &dyn Storage) {
    use chartroom_server::storage::{AppliedChange, IncomingChange, IncomingRecord, Stored};
    let charts: Vec<SealedChart> =
        (0..4u8).map(|i| chart(if i % 2 == 0 { "ICU" } else { "MED" }, "1", i, 2)).collect();
    s.put_charts(&charts).unwrap();
    let icu = Some(&["ICU".to_string()][..]);
    // A first sync in pages of one change number: every ICU patient once, with all its records.
    let (mut after, mut seen, mut named_left) = (0, Vec::new(), 0);
    loop {
        let page = s.pull_page(icu, after, 1).unwrap();
        named_left += page.left.len();
        assert!(page.upto > after);
        // Out of scope: named in `left` (ids only) once the cursor is past zero, never sent.
        assert!(page
            .left
            .iter()
            .all(|id| charts.iter().any(|c| c.patient.id == *id && c.patient.unit == "MED")));
        seen.extend(page.patients.iter().map(|p| p.id));
        for p in &page.patients {
            let n = page.records.iter().filter(|(pid, _)| *pid == p.id).count();
            assert_eq!(n, 3, "a whole patient comes with all its records");
        }
        after = page.upto;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, [charts[0].patient.id, charts[2].patient.id]);
    assert!(named_left > 0, "MED patients changed after the first page are named in `left`");
    assert_eq!(s.pull_page(icu, after, 10).unwrap().newest, after, "nothing newer");

    let device = Uuid::now_v7();
    let event = |id: Uuid| {
        let mut e = Event::new(at(5), "create", "observation", "ok");
        e.resource_id = Some(id.to_string());
        e
    };
    let fresh = SealedRecord {
        id: Uuid::now_v7(),
        kind: RecordKind::Observation,
        sort_key: 99,
        version: 1,
        body: vec![5],
    };
    let change = |patient: usize, replaces: Option<i64>, record: IncomingRecord| IncomingChange {
        change_id: Uuid::now_v7(),
        device_id: device,
        patient_id: charts[patient].patient.id,
        replaces,
        record,
    };
    let allergy = charts[0].records[0].clone();
    let a = change(0, None, IncomingRecord::Record(fresh.clone()));
    let b = change(
        0,
        Some(1),
        IncomingRecord::Record(SealedRecord { version: 2, body: vec![6], ..allergy.clone() }),
    );
    let stale = change(
        0,
        Some(1),
        IncomingRecord::Record(SealedRecord { version: 2, body: vec![8], ..allergy.clone() }),
    );
    let moved = SealedPatient { unit: "MED".into(), version: 2, ..charts[2].patient.clone() };
    let transfer = change(2, Some(1), IncomingRecord::Patient(moved));
    let head = s.audit_head().unwrap().0;
    let batch = [
        (a.clone(), event(fresh.id)),
        (b, event(allergy.id)),
        (stale, event(allergy.id)),
        (transfer, event(charts[2].patient.id)),
    ];
    let stored = s.apply_changes(&batch).unwrap();
    assert_eq!(
        stored,
        [Stored::Applied, Stored::Applied, Stored::Moved { current_version: Some(2) }, Stored::Applied],
        "the stale change lost to the one before it in the same batch"
    );
    assert_eq!(s.audit_head().unwrap().0, head + 3, "one event per applied change");
    assert_eq!(
        s.applied_change(a.change_id).unwrap(),
        Some(AppliedChange { device_id: device, record_id: fresh.id, version: 1 })
    );
    // A retry applies nothing twice.
    assert_eq!(
        s.apply_changes(&[(a.clone(), event(fresh.id))]).unwrap(),
        [Stored::AlreadyApplied(AppliedChange { device_id: device, record_id: fresh.id, version: 1 })]
    );
    assert_eq!(s.audit_head().unwrap().0, head + 3);

    // The next ICU pull: the new observation and the allergy's new version as single records, and
    // the transferred patient as `left`; nothing before the cursor again.
    let page = s.pull_page(icu, after, 100).unwrap();
    assert!(page.patients.is_empty());
    let ids: Vec<Uuid> = page.records.iter().map(|(_, r)| r.id).collect();
    assert_eq!(ids, [fresh.id, allergy.id]);
    // Their patient's row travels with them (it carries the key), read in the same snapshot.
    assert_eq!(page.key_holders.iter().map(|p| p.id).collect::<Vec<_>>(), [charts[0].patient.id]);
    assert_eq!(page.records[1].1.version, 2);
    assert_eq!(page.left, [charts[2].patient.id]);
    assert!(!page.more);
    // MED sees the transferred patient whole, with its records.
    let med = s.pull_page(Some(&["MED".to_string()][..]), after, 100).unwrap();
    assert_eq!(med.patients.iter().map(|p| p.id).collect::<Vec<_>>(), [charts[2].patient.id]);
    assert_eq!(med.patients[0].unit, "MED");
    assert_eq!(med.records.len(), 3);
    assert!(page.newest >= page.upto && page.upto > after);
}

/// The anomaly rule compares a user with their own normal: a busy clinician's usual pace passes, three
/// times it does not.
pub fn anomaly(storage: &dyn Storage) {
    use chartroom_server::oversight::{check_anomaly, AnomalyRule};
    use chartroom_server::storage::{DeviceRecord, EnrolledDevice, NewUser, SessionOwner, UserRecord};

    let now = Timestamp(1_800_000_000_000);
    let user = UserRecord {
        id: Uuid::now_v7(),
        username: "busy.doc".into(),
        role: chartroom_domain::Role::Physician,
        units: vec!["ICU".into()],
        disabled: false,
        created_at: Timestamp(0),
    };
    storage.create_user(&NewUser { record: user.clone(), password_hash: "$argon2id$x".into() }).unwrap();
    let owner = SessionOwner {
        session_id: Uuid::now_v7(),
        user,
        device: EnrolledDevice {
            record: DeviceRecord {
                id: Uuid::now_v7(),
                name: "laptop".into(),
                profile: chartroom_domain::DeviceProfile::Laptop,
                units: vec![],
                token_expires_at: None,
                enrolled_at: Some(Timestamp(0)),
                revoked_at: None,
                created_at: Timestamp(0),
            },
            public_key: [0; 32],
        },
        access_expires_at: now,
    };
    let views = |from: Timestamp, n: i64, spacing_ms: i64| {
        let events: Vec<Event> = (0..n)
            .map(|i| {
                let mut e = Event::new(Timestamp(from.0 + i * spacing_ms), "view", "patient", "ok");
                e.username = Some("busy.doc".into());
                e
            })
            .collect();
        storage.append_events(&events).unwrap();
    };
    // A week at 100 chart views an hour.
    views(Timestamp(now.0 - 7 * 86_400_000 - 3_600_000), 7 * 24 * 100, 36_000);
    // 250 in the last hour: well above the floor, below three times the usual 100.
    views(Timestamp(now.0 - 3_000_000), 250, 1000);
    let rule = AnomalyRule::default();
    assert!(check_anomaly(storage, &owner, &rule, now).unwrap().is_none());
    // A station uploading entries in this user's name (its word only) changes nothing: neither a
    // forged burst nor a padded baseline.
    let device = Uuid::now_v7();
    let mut head = ChainHead::GENESIS;
    let forged: Vec<AuditEntry> = (0..400)
        .map(|i| {
            let mut e = Event::new(Timestamp(now.0 - 1000 * i), "view", "patient", "ok");
            e.username = Some("busy.doc".into());
            head.append(device, Uuid::now_v7(), e)
        })
        .collect();
    storage.ingest_entries(device, &forged).unwrap();
    assert!(check_anomaly(storage, &owner, &rule, now).unwrap().is_none(), "uploads are not counted");
    // 50 more of its own makes 301 with the next one: more than three times normal.
    views(Timestamp(now.0 - 1_000_000), 50, 1000);
    let incident = check_anomaly(storage, &owner, &rule, now).unwrap().expect("an incident");
    assert_eq!(incident.last_hour, 301);
    assert!((incident.hourly_average - 100.0).abs() < 1.0, "{}", incident.hourly_average);
    assert!(storage.user_for_login("busy.doc").unwrap().unwrap().record.disabled);
    assert_eq!(storage.incidents().unwrap().len(), 1);
    // Another server process that saw the same burst: one burst, one incident.
    let again = chartroom_server::storage::Incident { id: Uuid::now_v7(), ..incident };
    assert!(!storage.raise_incident(&again).unwrap(), "not raised twice");
    assert_eq!(storage.incidents().unwrap().len(), 1);
}

/// A page spans `max_changes` change numbers, however many rows share a number: four charts of
/// three records each (numbers 1–4), then every patient moved (5–8); a page of two numbers from the
/// start ends at 2, not at a moved patient's number.
pub fn pull_pages_count_change_numbers(s: &dyn Storage) {
    use chartroom_server::storage::{IncomingChange, IncomingRecord, Stored};
    let charts: Vec<SealedChart> = (0..4u8).map(|i| chart("ICU", &i.to_string(), i, 2)).collect();
    s.put_charts(&charts).unwrap();
    let first = s.pull_page(None, 0, 1).unwrap().upto;
    let moves: Vec<_> = charts
        .iter()
        .map(|c| {
            let moved = SealedPatient { bed: format!("{}b", c.patient.bed), version: 2, ..c.patient.clone() };
            let change = IncomingChange {
                change_id: Uuid::now_v7(),
                device_id: Uuid::now_v7(),
                patient_id: c.patient.id,
                replaces: Some(1),
                record: IncomingRecord::Patient(moved),
            };
            (change, Event::new(at(9), "update", "patient", "ok"))
        })
        .collect();
    assert!(s.apply_changes(&moves).unwrap().iter().all(|o| *o == Stored::Applied));
    let page = s.pull_page(None, first - 1, 2).unwrap();
    assert_eq!(page.upto, first + 1, "two change numbers");
    assert!(page.patients.is_empty(), "the patients moved on to later numbers");
    assert_eq!(page.records.len(), 6, "the records of the first two charts");
    assert_eq!(page.key_holders.len(), 2);
    assert!(page.more);
}

/// Every check, on a fresh, empty storage each.
pub fn run_all(fresh: impl Fn() -> Box<dyn Storage>) {
    accounts(fresh().as_ref());
    devices(fresh().as_ref());
    recovery_tokens(fresh().as_ref());
    throttles_and_nonces(fresh().as_ref());
    sessions(fresh().as_ref());
    audit(fresh().as_ref());
    records(fresh().as_ref());
    sync_changes(fresh().as_ref());
    anomaly(fresh().as_ref());
    pull_pages_count_change_numbers(fresh().as_ref());
}
