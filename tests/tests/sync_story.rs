//! The multi-station story (DESIGN §7) on a real server over pinned TLS: three stations (two on the
//! ICU, one on MED), two nurses and a physician, editing the same patients online and offline. After
//! everyone reconnects, every station holds exactly the server's version of every record it may
//! hold, every change is on the server exactly once, every conflict was surfaced and settled by a
//! person (audited), a patient transferred away left the ICU stations (crypto-shredded, or
//! quarantined while a nurse's change to them was unsynced), and every audit chain verifies.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chartroom_client::ServerClient;
use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, Role, VitalSign};
use chartroom_server::storage::RecordKind;
use chartroom_server::{init, start, wall_now, DataDir, InitOptions};
use chartroom_station::{LockedVault, Profile, UnlockedVault};
use chartroom_store::Resolution;
use uuid::Uuid;

use chartroom_tests::{canonical, keystore};

fn password(user: &str) -> Password {
    Password::new(format!("{}-long-passphrase", user.len() * 7 + 3))
}

struct Station {
    locked: LockedVault,
    client: ServerClient,
}

impl Station {
    async fn enroll(dir: &Path, name: &str, units: &[&str], server: &Env) -> Station {
        let token = chartroom_server::devices::issue_token(
            &*server.storage,
            name,
            DeviceProfile::Station,
            units.iter().map(|u| u.to_string()).collect(),
            Duration::from_secs(600),
            wall_now(),
        )
        .unwrap();
        let client = ServerClient::new(&server.url, &server.fingerprint).unwrap();
        let locked = LockedVault::enroll(
            Profile::new(dir),
            keystore(),
            &client,
            &server.fingerprint,
            &token,
            wall_now(),
        )
        .await
        .unwrap();
        Station { locked, client }
    }

    /// Logs `user` in online and syncs (push, pull, audit upload).
    async fn sync(&self, user: &str) -> (UnlockedVault, chartroom_station::sync::SyncReport) {
        let mut v = self.locked.login_online(&self.client, user, &password(user), wall_now()).await.unwrap();
        let report = v.sync(&self.client, wall_now()).await.unwrap();
        (v, report)
    }

    /// `user` working offline (the server is not asked).
    fn offline(&self, user: &str) -> UnlockedVault {
        self.locked.unlock(user, &password(user), wall_now()).unwrap()
    }
}

struct Env {
    storage: std::sync::Arc<dyn chartroom_server::storage::Storage>,
    keys: chartroom_server::phi::RecordKeys,
    url: String,
    fingerprint: String,
}

impl Env {
    /// The server's chart of a patient (all records, opened).
    fn chart(&self, id: Uuid) -> Chart {
        let sealed = self.storage.patient(id).unwrap().unwrap();
        let records = self.storage.records(id, &RecordKind::ALL, usize::MAX).unwrap();
        self.keys.open_chart(&sealed, &records).unwrap()
    }
}

// hipaa (c)(1) (b): three stations converge; every conflict is surfaced and every chain verifies
#[tokio::test]
async fn three_stations_converge_with_every_conflict_surfaced_and_every_chain_verified() {
    converge(None).await;
}

/// The same story with the server on PostgreSQL (one conformance story for both backends).
#[tokio::test]
async fn three_stations_converge_on_postgres() {
    if let Some(url) = chartroom_tests::fresh_postgres() {
        converge(Some(url)).await;
    }
}

/// Users, enrollment, sync, conflicts and their resolution, and audit verification, on the
/// embedded database or (with a URL) PostgreSQL.
async fn converge(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions { database_url, ..InitOptions::default() }).unwrap();
    let storage = dir.open_storage().unwrap();
    for (name, role, units) in [
        ("kim.rn", Role::Nurse, vec!["ICU"]),
        ("ana.rn", Role::Nurse, vec!["ICU"]),
        ("lee.md", Role::Physician, vec!["ICU", "MED"]),
    ] {
        let units = units.into_iter().map(String::from).collect();
        chartroom_server::users::add_user(&*storage, name, role, units, &password(name), wall_now()).unwrap();
    }
    let config = chartroom_synth::SynthConfig::new(11, wall_now());
    let charts: Vec<Chart> = (0..8).map(|i| chartroom_synth::patient(&config, i)).collect();
    let keys = dir.record_keys().unwrap();
    chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
    let icu: Vec<&Chart> = charts.iter().filter(|c| c.patient.unit == "ICU").collect();
    assert!(icu.len() >= 3, "the generator places patients on the ICU");
    let (a, b, c) = (&icu[0].patient, &icu[1].patient, &icu[2].patient);

    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let env = Env {
        storage,
        keys,
        url: format!("https://localhost:{}", server.addr.port()),
        fingerprint: report.fingerprint.clone(),
    };
    let s1 = Station::enroll(&tmp.path().join("icu-1"), "icu-1", &["ICU"], &env).await;
    let s2 = Station::enroll(&tmp.path().join("icu-2"), "icu-2", &["ICU"], &env).await;
    let s3 = Station::enroll(&tmp.path().join("med-1"), "med-1", &["MED"], &env).await;

    // Everyone's first online login and sync: each station holds its own unit's patients.
    for (s, user) in [(&s1, "kim.rn"), (&s1, "lee.md"), (&s2, "ana.rn"), (&s2, "kim.rn"), (&s3, "lee.md")] {
        let (v, r) = s.sync(user).await;
        assert!(r.pull.complete);
        v.lock();
    }

    // Online: kim on station 1 records vitals for A and starts a draft note on B, and syncs.
    let mut kim1 = s1.offline("kim.rn");
    kim1.record_vitals(&a.mrn, &[(VitalSign::HeartRate, 88.0), (VitalSign::Spo2, 95.0)], wall_now()).unwrap();
    let draft = kim1.write_note(&b.mrn, "Restless overnight.", false, wall_now()).unwrap();
    kim1.lock();
    s1.sync("kim.rn").await.0.lock();
    // Station 2 learns of the draft.
    s2.sync("ana.rn").await.0.lock();

    // Offline on both ICU stations at once:
    // - kim edits her draft on station 2 (she moved stations) and, later, on station 1 too;
    // - both nurses move A to a different bed;
    // - ana records vitals and an allergy for C;
    // - lee (physician) transfers C to MED from station 1.
    let mut kim2 = s2.offline("kim.rn");
    kim2.edit_note(
        draft.id,
        Some("Restless overnight; settled after analgesia at 04:00."),
        false,
        wall_now(),
    )
    .unwrap();
    kim2.lock();
    let mut ana2 = s2.offline("ana.rn");
    ana2.move_patient(&a.mrn, None, Some("9"), wall_now()).unwrap();
    ana2.record_vitals(&c.mrn, &[(VitalSign::Temperature, 38.4)], wall_now()).unwrap();
    ana2.add_allergy(&c.mrn, "Penicillin", "Rash", chartroom_domain::Criticality::High, wall_now()).unwrap();
    ana2.lock();
    let mut kim1 = s1.offline("kim.rn");
    kim1.edit_note(draft.id, Some("Restless overnight. Family called at 02:00."), false, wall_now()).unwrap();
    kim1.move_patient(&a.mrn, None, Some("7"), wall_now()).unwrap();
    kim1.lock();
    let mut lee1 = s1.offline("lee.md");
    lee1.move_patient(&c.mrn, Some("MED"), Some("12"), wall_now()).unwrap();
    lee1.lock();

    // Station 1 reconnects first: all of its changes apply, each in its author's session (the
    // server attributes a change to the user who pushes it).
    let (v, r1) = s1.sync("lee.md").await;
    assert_eq!(
        (r1.push.applied, r1.push.conflicts, r1.push.rejected, r1.push.pending),
        (1, 0, 0, 2),
        "{r1:?}"
    );
    assert_eq!(
        r1.pull.shredded, 1,
        "C left the ICU: shredded on station 1, which has nothing unsynced for C"
    );
    v.lock();
    let (v, r1) = s1.sync("kim.rn").await;
    assert_eq!((r1.push.applied, r1.push.conflicts, r1.push.rejected), (2, 0, 0), "{r1:?}");
    assert!(v.outbox().unwrap().is_empty());
    v.lock();

    // Station 2 reconnects, ana first: her bed move is a conflict (both versions kept), her vitals
    // and allergy for C are refused (C is no longer on her units) and C is quarantined, not
    // dropped. kim's note edit waits for kim's session; the server's newer note is kept beside it.
    let (mut v, r2) = s2.sync("ana.rn").await;
    assert_eq!(
        (r2.push.applied, r2.push.conflicts, r2.push.rejected, r2.push.pending),
        (0, 1, 2, 1),
        "{r2:?}"
    );
    assert_eq!((r2.pull.conflicts, r2.pull.quarantined, r2.pull.shredded), (2, 1, 0), "{r2:?}");
    let outbox = v.outbox().unwrap();
    let states: BTreeSet<(String, String)> =
        outbox.iter().map(|e| (e.kind.clone(), e.state.clone())).collect();
    assert!(states.contains(&("patients".into(), "conflict".into())), "{states:?}");
    assert!(states.contains(&("notes".into(), "pending".into())), "{states:?}");
    let refused: Vec<_> = outbox.iter().filter(|e| e.state == "rejected").collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|e| e.quarantined && e.patient_id == c.id));
    assert!(refused.iter().all(|e| e.reason.as_deref().unwrap_or("").starts_with("access.out_of_scope")));
    assert!(v.census(None, wall_now()).unwrap().iter().all(|row| row.patient_id != c.id), "C is hidden");
    let status = v.sync_indicator().unwrap();
    assert_eq!(
        (
            status.status.pending,
            status.status.conflicts,
            status.status.rejected,
            status.status.quarantined_patients
        ),
        (1, 1, 2, 1)
    );

    // ana looks at both beds and takes the other one (theirs).
    let bed = outbox.iter().find(|e| e.kind == "patients").unwrap().change_id;
    let view = v.conflict(bed, wall_now()).unwrap();
    assert!(matches!(&view.theirs, chartroom_protocol::ChangeRecord::Patient(p) if p.bed == "7"));
    assert!(matches!(&view.mine, chartroom_protocol::ChangeRecord::Patient(p) if p.bed == "9"));
    assert_eq!(
        v.resolve(bed, Resolution::Merge, Some("x"), wall_now()).unwrap_err().code(),
        "sync.merge_text_only"
    );
    assert_eq!(v.resolve(bed, Resolution::TakeTheirs, None, wall_now()).unwrap(), None);
    assert_eq!(
        v.resolve(bed, Resolution::TakeTheirs, None, wall_now()).unwrap_err().code(),
        "sync.change_not_found"
    );
    v.lock();

    // kim syncs on station 2: her note edit is a conflict; she merges both texts.
    let (v, r2) = s2.sync("kim.rn").await;
    assert_eq!((r2.push.applied, r2.push.conflicts), (0, 1), "{r2:?}");
    v.lock();
    let note_change = outbox.iter().find(|e| e.kind == "notes").unwrap().change_id;
    let mut kim2 = s2.offline("kim.rn");
    let view = kim2.conflict(note_change, wall_now()).unwrap();
    assert!(
        matches!(&view.theirs, chartroom_protocol::ChangeRecord::Note(n) if n.text.contains("Family called"))
    );
    assert!(matches!(&view.mine, chartroom_protocol::ChangeRecord::Note(n) if n.text.contains("analgesia")));
    let merged = "Restless overnight. Family called at 02:00. Settled after analgesia at 04:00.";
    let queued = kim2.resolve(note_change, Resolution::Merge, Some(merged), wall_now()).unwrap();
    assert!(queued.is_some());
    kim2.lock();
    let (v, r2) = s2.sync("kim.rn").await;
    assert_eq!((r2.push.applied, r2.push.conflicts), (1, 0), "the merge applies on top of theirs: {r2:?}");
    // The refused changes to C stay visible until someone who may write to C pushes them.
    assert_eq!(v.outbox().unwrap().len(), 2);
    v.lock();

    // The physician who may write on MED syncs on station 2: his session never pushes ana's changes
    // as his own, so they stay refused and kept.
    let (v, r) = s2.sync("lee.md").await;
    assert_eq!(r.push.applied, 0);
    assert_eq!(v.outbox().unwrap().len(), 2, "never dropped");
    v.lock();

    // ana hands her observations of C to the MED team and discards her two refused changes: only
    // she may, each discard is in the trail, and C (nothing unsynced any more) is shredded here.
    let mut kim2 = s2.offline("kim.rn");
    let refused_ids: Vec<Uuid> = refused.iter().map(|e| e.change_id).collect();
    assert_eq!(kim2.discard(refused_ids[0], wall_now()).unwrap_err().code(), "note.not_author");
    kim2.lock();
    let mut ana2 = s2.offline("ana.rn");
    for id in &refused_ids {
        ana2.discard(*id, wall_now()).unwrap();
    }
    assert!(ana2.outbox().unwrap().is_empty());
    let status = ana2.sync_indicator().unwrap().status;
    assert_eq!((status.rejected, status.quarantined_patients), (0, 0));
    assert_eq!(ana2.store().evict_patient(c.id, wall_now()).unwrap_err().code(), "store.patient_not_found");
    let discarded = ana2
        .store()
        .audit_entries(0, usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.event.action == "discard_change" && e.event.username.as_deref() == Some("ana.rn"))
        .count();
    assert_eq!(discarded, 2);
    ana2.lock();

    // Everyone syncs once more; then compare every station with the server.
    let (v, _) = s1.sync("kim.rn").await;
    v.lock();
    let (v, r3) = s3.sync("lee.md").await;
    assert!(r3.pull.charts >= 1, "C arrived on MED as a whole chart: {r3:?}");
    v.lock();
    for (station, user) in [(&s1, "kim.rn"), (&s2, "ana.rn"), (&s3, "lee.md")] {
        let mut v = station.offline(user);
        let census = v.census(None, wall_now()).unwrap();
        for row in &census {
            // A draft is its author's alone: other users see every record but other users' drafts.
            let mut server = env.chart(row.patient_id);
            let me = v.user_id();
            server.notes.retain(|n| n.status != chartroom_domain::NoteStatus::Draft || n.author_id == me);
            let local = v.chart_by_mrn(&row.mrn, usize::MAX, wall_now()).unwrap();
            assert_eq!(canonical(&local), canonical(&server), "{user} on a station: {}", row.patient_id);
        }
        let expected_unit = if user == "lee.md" { "MED" } else { "ICU" };
        assert!(census.iter().all(|r| r.unit == expected_unit));
        v.lock();
    }
    let server_a = env.chart(a.id);
    assert_eq!(server_a.patient.bed, "7");
    let server_b = env.chart(b.id);
    let note = server_b.notes.iter().find(|n| n.id == draft.id).unwrap();
    assert_eq!(
        (note.text.as_str(), note.version),
        (merged, 3),
        "created, kim's edit on station 1, the merge"
    );
    let server_c = env.chart(c.id);
    assert_eq!((server_c.patient.unit.as_str(), server_c.patient.bed.as_str()), ("MED", "12"));
    assert!(server_c.allergies.is_empty(), "ana's refused allergy was not applied");
    // Every observation exactly once: the original ones plus kim's two for A.
    let original_a = icu[0].observations.len();
    let ids: BTreeSet<Uuid> = server_a.observations.iter().map(|o| o.id).collect();
    assert_eq!((ids.len(), server_a.observations.len()), (original_a + 2, original_a + 2));

    // Every chain verifies on the server: its own and the three stations'.
    let signing = dir.signing_key().unwrap();
    chartroom_server::audit::checkpoint_if_due(&*env.storage, &signing, wall_now()).unwrap();
    let verified = chartroom_server::audit::verify(&*env.storage, &signing.verifying_key()).unwrap().unwrap();
    assert_eq!(verified.devices, 4);
    // The conflict resolutions are in the stations' trails, attributed.
    let mut trail = s2.offline("ana.rn");
    let actions: Vec<(String, Option<String>)> = trail
        .store()
        .audit_entries(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.event.action, e.event.username))
        .collect();
    assert!(actions.contains(&("conflict_take_theirs".to_string(), Some("ana.rn".to_string()))));
    assert!(actions.contains(&("conflict_merge".to_string(), Some("kim.rn".to_string()))));
    trail.lock();
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// A station on two units, used by a nurse of one and a physician of both: whoever syncs, the
/// station holds both units' patients (nothing is skipped or shredded because the nurse's own units
/// are narrower), and each user sees only their own units there. A draft edited and then signed
/// between two syncs reaches the server whole, in one push.
#[tokio::test]
async fn a_shared_two_unit_station_holds_both_units_and_shows_each_user_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    for (name, role, units) in
        [("kim.rn", Role::Nurse, vec!["ICU"]), ("lee.md", Role::Physician, vec!["ICU", "MED"])]
    {
        let units = units.into_iter().map(String::from).collect();
        chartroom_server::users::add_user(&*storage, name, role, units, &password(name), wall_now()).unwrap();
    }
    let config = chartroom_synth::SynthConfig::new(12, wall_now());
    let charts: Vec<Chart> = (0..8).map(|i| chartroom_synth::patient(&config, i)).collect();
    let keys = dir.record_keys().unwrap();
    chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let env = Env {
        storage,
        keys,
        url: format!("https://localhost:{}", server.addr.port()),
        fingerprint: report.fingerprint.clone(),
    };
    let s = Station::enroll(&tmp.path().join("step-down"), "step-down", &["ICU", "MED"], &env).await;
    let count = |unit: &str| charts.iter().filter(|c| c.patient.unit == unit).count();

    // The nurse syncs first: the station takes both units; she sees the ICU only.
    let (mut kim, r) = s.sync("kim.rn").await;
    assert_eq!((r.pull.charts, r.pull.shredded), (charts.len(), 0), "{r:?}");
    let census = kim.census(None, wall_now()).unwrap();
    assert_eq!(census.len(), count("ICU"));
    assert!(census.iter().all(|row| row.unit == "ICU"));
    let med = charts.iter().find(|c| c.patient.unit == "MED").unwrap();
    assert_eq!(kim.chart_by_mrn(&med.patient.mrn, 5, wall_now()).unwrap_err().code(), "access.out_of_scope");
    assert_eq!(kim.census(Some("MED"), wall_now()).unwrap_err().code(), "access.out_of_scope");

    // Offline: a draft, an edit, then the signature — one push settles all three.
    let icu = charts.iter().find(|c| c.patient.unit == "ICU").unwrap();
    let draft = kim.write_note(&icu.patient.mrn, "Drowsy but rousable.", false, wall_now()).unwrap();
    kim.edit_note(draft.id, Some("Drowsy but rousable; GCS 14."), false, wall_now()).unwrap();
    kim.edit_note(draft.id, None, true, wall_now()).unwrap();
    kim.lock();
    let (kim, r) = s.sync("kim.rn").await;
    assert_eq!((r.push.applied, r.push.rejected, r.push.pending), (1, 0, 0), "{r:?}");
    assert!(kim.outbox().unwrap().is_empty());
    kim.lock();
    let note = env.chart(icu.patient.id).notes.into_iter().find(|n| n.id == draft.id).unwrap();
    assert_eq!(note.text, "Drowsy but rousable; GCS 14.");
    assert!(matches!(note.status, chartroom_domain::NoteStatus::Signed { .. }));

    // The physician's first login (online, to get a slot) — then offline he sees both units,
    // already on the station whoever synced.
    s.locked.login_online(&s.client, "lee.md", &password("lee.md"), wall_now()).await.unwrap().lock();
    let mut lee = s.offline("lee.md");
    assert_eq!(lee.census(None, wall_now()).unwrap().len(), charts.len());
    assert_eq!(lee.chart_by_mrn(&med.patient.mrn, 5, wall_now()).unwrap().patient.id, med.patient.id);
    lee.lock();
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}
