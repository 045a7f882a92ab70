//! Store integration tests on real SQLCipher files: round trips, wrong keys, damage, canaries and
//! crypto-shredding.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chartroom_crypto::DataKey;
use chartroom_domain::*;
use chartroom_store::{Store, StoreError, StoreOptions};
use chartroom_synth::{patient, SynthConfig};

fn cfg() -> SynthConfig {
    SynthConfig {
        observations_per_patient: 30,
        ..SynthConfig::new(11, Timestamp::from_civil_date(2026, 11, 27))
    }
}

/// The station user the sync tests act as.
fn nurse_on_device_9() -> chartroom_store::Actor {
    chartroom_store::Actor {
        device_id: uuid::Uuid::from_u128(9),
        user_id: Some(uuid::Uuid::from_u128(1)),
        username: Some("kim.rn".into()),
        host: "test".into(),
    }
}

fn small_options() -> StoreOptions {
    StoreOptions { cache_kib: 8 * 1024, ..StoreOptions::default() }
}

/// A DataKey that can be "reopened": tests need the same key twice, and keys are not Clone, so the
/// store is created with a key recovered through a key slot round trip.
fn key_pair() -> (DataKey, DataKey) {
    use chartroom_crypto::{DeviceSecret, KdfParams, KeySlot, Password};
    let dek = DataKey::generate();
    let dev = DeviceSecret::generate();
    let (u, d) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let pw = Password::from("test passphrase");
    let slot = KeySlot::seal(&dek, &pw, &dev, u, d, 1, KdfParams::MINIMUM).unwrap();
    let again = slot.open(&pw, &dev, u, d).unwrap();
    (dek, again)
}

fn new_store(dir: &Path, n: u64) -> (PathBuf, DataKey, Vec<Chart>) {
    let path = dir.join("cache.db");
    let (dek, again) = key_pair();
    let mut store = Store::create(&path, dek, small_options()).unwrap();
    let bundles: Vec<_> = (0..n).map(|i| patient(&cfg(), i)).collect();
    store.import(&bundles).unwrap();
    store.close().unwrap();
    (path, again, bundles)
}

fn files_of(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", path.display())))
        .filter(|p| p.exists())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

#[test]
fn round_trip_census_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 20);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 6);
    let census = store.census(Some("ICU")).unwrap();
    assert_eq!(census.len(), 10);
    assert!(census.iter().all(|r| r.unit == "ICU"));
    let b = &bundles[3];
    let id = store.find_by_mrn(&b.patient.mrn).unwrap();
    assert_eq!(id, b.patient.id);
    let chart = store.chart(id, 10).unwrap();
    assert_eq!(chart.patient, b.patient);
    assert_eq!(chart.allergies.len(), b.allergies.len());
    assert_eq!(chart.medications.len(), b.medications.len());
    assert_eq!(chart.observations.len(), 10);
    assert!(chart.observations.windows(2).all(|w| w[0].effective_at >= w[1].effective_at));
    assert_eq!(chart.notes.len(), b.notes.len());
    assert!(matches!(store.find_by_mrn("M00000000"), Err(StoreError::PatientNotFound)));
    store.integrity_check().unwrap();
}

/// The number of unwrapped patient keys a store holds now (from its redacted `Debug`).
fn cached_keys(store: &Store) -> usize {
    let debug = format!("{store:?}");
    let at = debug.find("cached_patient_keys: ").unwrap() + "cached_patient_keys: ".len();
    debug[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn a_large_census_leaves_a_bounded_number_of_patient_keys_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let n = chartroom_store::MAX_CACHED_PATIENT_KEYS as u64 + 100;
    let (path, dek) = (dir.path().join("cache.db"), key_pair());
    let config = SynthConfig { observations_per_patient: 1, ..cfg() };
    let bundles: Vec<_> = (0..n).map(|i| patient(&config, i)).collect();
    let mut store = Store::create(&path, dek.0, small_options()).unwrap();
    store.import(&bundles).unwrap();
    store.close().unwrap();

    let mut store = Store::open(&path, dek.1, small_options()).unwrap();
    let census = store.census(None).unwrap();
    assert_eq!(census.len(), bundles.len(), "every patient is listed");
    let held = cached_keys(&store);
    assert!((1..=chartroom_store::MAX_CACHED_PATIENT_KEYS).contains(&held), "{held} keys held");
    // Keys that left the cache are unwrapped again when needed.
    for b in [&bundles[0], &bundles[bundles.len() - 1]] {
        assert_eq!(store.chart(b.patient.id, 5).unwrap().patient, b.patient);
    }
}

// hipaa (a)(2)(iv) (c)(2): the station database opens only with its key; a wrong key changes nothing
#[test]
fn wrong_key_is_refused_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _dek, _) = new_store(dir.path(), 3);
    let before = files_of(&path);
    let err = Store::open(&path, DataKey::generate(), small_options()).unwrap_err();
    assert!(matches!(err, StoreError::WrongKeyOrDamaged), "{err:?}");
    assert_eq!(files_of(&path), before);
}

/// Builds a store and returns its file bytes plus a fresh copy of its key, so each damage case can
/// start from the same intact file.
fn intact(dir: &Path, n: u64) -> (PathBuf, Vec<u8>, Vec<Chart>, impl Fn() -> DataKey) {
    use chartroom_crypto::{DeviceSecret, KdfParams, KeySlot, Password};
    let dek = DataKey::generate();
    let dev = DeviceSecret::generate();
    let (u, d) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let slot =
        KeySlot::seal(&dek, &Password::from("test passphrase"), &dev, u, d, 1, KdfParams::MINIMUM).unwrap();
    let path = dir.join("cache.db");
    let mut store = Store::create(&path, dek, small_options()).unwrap();
    let bundles: Vec<_> = (0..n).map(|i| patient(&cfg(), i)).collect();
    store.import(&bundles).unwrap();
    store.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes, bundles, move || slot.open(&Password::from("test passphrase"), &dev, u, d).unwrap())
}

// hipaa (c)(2): damaged database files give clear errors, never wrong data
#[test]
fn damaged_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, original, bundles, key) = intact(dir.path(), 30);

    std::fs::write(&path, &original[..original.len() - 100]).unwrap();
    assert!(matches!(Store::open(&path, key(), small_options()), Err(StoreError::Truncated)));

    // Page 1 damaged: indistinguishable from a wrong key at this layer (the vault knows the key is
    // right, because an authenticated slot produced it).
    let mut bytes = original.clone();
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Store::open(&path, key(), small_options()), Err(StoreError::WrongKeyOrDamaged)));

    // A flipped byte in a data page: reported as damage when read, never a panic or a wrong value.
    let mut bytes = original.clone();
    let pos = original.len() - 3000;
    bytes[pos] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let mut damaged = Store::open(&path, key(), small_options()).unwrap();
    assert!(matches!(damaged.integrity_check(), Err(StoreError::Damaged)));
    let mut damage_reported = 0;
    for b in &bundles {
        match damaged.chart(b.patient.id, 100) {
            Ok(chart) => assert_eq!(chart.patient, b.patient, "a damaged file must never show a wrong value"),
            Err(StoreError::Damaged) => damage_reported += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(damage_reported > 0, "the damaged page belongs to some chart");
}

// hipaa (a)(2)(iv): a canary patient's name and MRN appear in no station database file (SQLCipher)
#[test]
fn canary_never_appears_in_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let (dek, _) = key_pair();
    let mut store = Store::create(&path, dek, small_options()).unwrap();
    let mut b = patient(&cfg(), 0);
    b.patient.name = HumanName { family: "Canarywhistle".into(), given: "Zebulon".into() };
    b.patient.mrn = "CANARY4242".into();
    b.notes[0].text = "Canary note text xylophone-quartz".into();
    store.import(&[b]).unwrap();
    // Scan while the WAL still holds the writes, then again after close.
    for (p, bytes) in files_of(&path) {
        for needle in ["Canarywhistle", "Zebulon", "CANARY4242", "xylophone-quartz"] {
            assert!(!contains(&bytes, needle.as_bytes()), "{needle} found in {}", p.display());
        }
    }
    store.close().unwrap();
    for (p, bytes) in files_of(&path) {
        for needle in ["Canarywhistle", "Zebulon", "CANARY4242", "xylophone-quartz"] {
            assert!(!contains(&bytes, needle.as_bytes()), "{needle} found in {}", p.display());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn evicted_patient_is_crypto_shredded() {
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 4);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    let victim = &bundles[1];
    let note_id = victim.notes[0].id;
    let (pid, sealed) = store.sealed_body::<Note>(note_id).unwrap().unwrap();
    assert_eq!(pid, victim.patient.id);
    // Before eviction the kept bytes open.
    let note: Note = store.open_sealed(pid, note_id, &sealed).unwrap();
    assert_eq!(note.text, victim.notes[0].text);

    store.evict_patient(pid, Timestamp(1)).unwrap();
    assert!(matches!(store.open_sealed::<Note>(pid, note_id, &sealed), Err(StoreError::PatientShredded)));
    assert!(matches!(store.chart(pid, 10), Err(StoreError::PatientNotFound)));
    assert!(store.sealed_body::<Note>(note_id).unwrap().is_none());
    // Re-admission gets a new key: the old bytes still do not open.
    store.import(std::slice::from_ref(victim)).unwrap();
    assert!(store.open_sealed::<Note>(pid, note_id, &sealed).is_err());
    // Other patients are untouched.
    assert_eq!(store.chart(bundles[2].patient.id, 5).unwrap().patient, bundles[2].patient);
}

#[test]
fn invalid_records_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 1);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    let mut obs = bundles[0].observations[0].clone();
    obs.id = uuid::Uuid::new_v4();
    obs.vital = VitalSign::HeartRate;
    obs.value = 400.0;
    obs.effective_at = Timestamp::from_civil_date(2030, 1, 1);
    let err = store.put(&obs).unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(v) if v.field == "heart_rate"), "{err:?}");
    let chart = store.chart(bundles[0].patient.id, 1).unwrap();
    assert_ne!(chart.observations[0].id, obs.id);
    // A record for a patient that is not here is refused.
    obs.value = 80.0;
    obs.patient_id = uuid::Uuid::new_v4();
    assert!(matches!(store.put(&obs), Err(StoreError::PatientNotFound)));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let (dek, again) = key_pair();
    let store = Store::create(&path, dek, small_options()).unwrap();
    drop(store);
    // Simulate a database written by a future build.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&again.sqlcipher_key_statement()).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Store::open(&path, again, small_options()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, supported: 6 }), "{err:?}");
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = new_store(dir.path(), 1);
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        Store::create(&path, DataKey::generate(), small_options()),
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// A patient who left the station's units while a change to them was unsynced is quarantined
/// (hidden, kept); when the patient comes back, the quarantine ends and the change the server had
/// refused as out of scope is pushed again. With nothing unsynced, leaving shreds the patient.
#[test]
fn a_patient_who_leaves_and_comes_back_keeps_the_unsynced_change() {
    use chartroom_crypto::{fields, FieldPlace, PatientKey};
    use chartroom_store::{PulledPage, PulledPatient, Settlement};
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 4);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    let actor = nurse_on_device_9();
    let (kept, gone) = (&bundles[0].patient, &bundles[1].patient);
    let obs = Observation {
        id: uuid::Uuid::now_v7(),
        patient_id: kept.id,
        vital: VitalSign::HeartRate,
        value: 88.0,
        effective_at: Timestamp(1_800_000_000_000),
        recorded_by: uuid::Uuid::from_u128(1),
        version: 0,
    };
    let change = store.record_changes(&actor, std::slice::from_ref(&obs), Timestamp(1)).unwrap()[0];
    let empty = |left: Vec<uuid::Uuid>, cursor: i64| PulledPage {
        patients: vec![],
        records: vec![],
        keys: vec![],
        left,
        cursor,
        complete: true,
    };
    let applied = store.apply_pull(&actor, empty(vec![kept.id, gone.id], 5), Timestamp(2)).unwrap();
    assert_eq!((applied.quarantined, applied.shredded), (1, 1));
    assert!(matches!(store.find_by_mrn(&kept.mrn), Err(StoreError::PatientNotFound)), "hidden");
    assert!(matches!(store.find_by_mrn(&gone.mrn), Err(StoreError::PatientNotFound)));
    store
        .settle_change(
            change,
            Settlement::Kept { state: "rejected", reason: "access.out_of_scope: not on your units".into() },
        )
        .unwrap();
    assert_eq!(store.sync_status().unwrap().rejected, 1);

    // The patient comes back (a whole patient in a pull, sealed under the patient's key).
    let key = PatientKey::generate();
    let back = Patient { version: 3, ..kept.clone() };
    let place = FieldPlace { patient_id: kept.id, record_id: kept.id, field: fields::PATIENT };
    let body = key.seal(&place, &serde_json::to_vec(&back).unwrap()).unwrap();
    let page = PulledPage {
        patients: vec![PulledPatient {
            id: kept.id,
            unit: back.unit.clone(),
            bed: back.bed.clone(),
            version: 3,
            body,
        }],
        keys: vec![(kept.id, Box::new(key))],
        ..empty(vec![], 9)
    };
    store.apply_pull(&actor, page, Timestamp(3)).unwrap();
    assert_eq!(store.find_by_mrn(&kept.mrn).unwrap(), kept.id, "visible again");
    let status = store.sync_status().unwrap();
    assert_eq!((status.pending, status.rejected, status.quarantined_patients), (1, 0, 0), "pushed again");
    assert_eq!(store.outbox().unwrap()[0].change_id, change);
    let stored: Observation = store.get(obs.id).unwrap();
    assert_eq!(stored.value, 88.0, "the local change survived it all");
}

/// A change applied on the server whose answer was lost, while the server moved the record on:
/// the pull keeps the newer version beside the local change; when the retry comes back as a
/// duplicate, nothing local is left to weigh against it, so the newer version becomes the record.
#[test]
fn a_newer_server_version_kept_beside_a_change_becomes_the_record_once_the_change_settles() {
    use chartroom_crypto::{fields, FieldPlace, PatientKey};
    use chartroom_store::{PulledPage, PulledRecord, Settlement};
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 2);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    let actor = nurse_on_device_9();
    let chart = bundles.iter().find(|c| !c.allergies.is_empty()).unwrap();
    let mine = Allergy { reaction: "Hives".into(), ..chart.allergies[0].clone() };
    let change = store.record_changes(&actor, std::slice::from_ref(&mine), Timestamp(1)).unwrap()[0];
    let base = store.outbox().unwrap()[0].base_version;

    // The server has moved on two versions (one of them this very change, applied; answer lost).
    let key = PatientKey::generate();
    let theirs = Allergy { reaction: "Anaphylaxis".into(), version: base + 2, ..mine.clone() };
    let place = FieldPlace { patient_id: chart.patient.id, record_id: theirs.id, field: fields::ALLERGY };
    let body = key.seal(&place, &serde_json::to_vec(&theirs).unwrap()).unwrap();
    let page = PulledPage {
        patients: vec![],
        records: vec![PulledRecord {
            id: theirs.id,
            patient_id: chart.patient.id,
            kind: "allergy".into(),
            sort_key: 0,
            version: base + 2,
            body,
        }],
        keys: vec![(chart.patient.id, Box::new(key))],
        left: vec![],
        cursor: 7,
        complete: true,
    };
    assert_eq!(store.apply_pull(&actor, page, Timestamp(2)).unwrap().conflicts, 1);
    let still: Allergy = store.get(mine.id).unwrap();
    assert_eq!(still.reaction, "Hives", "the local change is not overwritten");

    store.settle_change(change, Settlement::Accepted { version: base + 1 }).unwrap();
    let now: Allergy = store.get(mine.id).unwrap();
    assert_eq!((now.reaction.as_str(), now.version), ("Anaphylaxis", base + 2));
    assert!(store.outbox().unwrap().is_empty());
    assert!(store.conflict::<Allergy>(mine.id).unwrap().is_none(), "nothing left to resolve");
}

/// "My patients" is per user, holds ids only, and loses a patient who is shredded.
#[test]
fn my_patients_are_per_user_and_go_with_a_shredded_patient() {
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 4);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    let actor = chartroom_store::Actor {
        device_id: uuid::Uuid::new_v4(),
        user_id: None,
        username: None,
        host: "test".into(),
    };
    let (me, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (a, b) = (bundles[0].patient.id, bundles[1].patient.id);
    assert!(store.set_mine(&actor, me, a, true, Timestamp(1)).unwrap());
    assert!(!store.set_mine(&actor, me, a, true, Timestamp(2)).unwrap(), "adding twice changes nothing");
    assert!(store.set_mine(&actor, me, b, true, Timestamp(3)).unwrap());
    assert!(store.set_mine(&actor, other, b, true, Timestamp(4)).unwrap());
    assert_eq!(store.mine(me).unwrap(), [a, b].into_iter().collect());
    assert_eq!(store.mine(other).unwrap(), [b].into_iter().collect());
    assert!(store.set_mine(&actor, me, a, false, Timestamp(5)).unwrap());
    assert_eq!(store.mine(me).unwrap(), [b].into_iter().collect());
    // Unknown patients are refused; every change was recorded.
    let unknown = store.set_mine(&actor, me, uuid::Uuid::new_v4(), true, Timestamp(6)).unwrap_err();
    assert!(matches!(unknown, StoreError::PatientNotFound));
    let entries = store.audit_entries(0, 100).unwrap();
    assert_eq!(entries.iter().filter(|e| e.event.resource_type == "my_patients").count(), 4);
    store.evict_patient(b, Timestamp(7)).unwrap();
    assert!(store.mine(me).unwrap().is_empty());
    assert!(store.mine(other).unwrap().is_empty());
}

/// Drafts are found by author, whatever their plaintext status column says (pulled notes have
/// none); signed notes and other authors' drafts are not.
#[test]
fn drafts_by_author() {
    let dir = tempfile::tempdir().unwrap();
    let (path, dek, bundles) = new_store(dir.path(), 2);
    let mut store = Store::open(&path, dek, small_options()).unwrap();
    let (me, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let note = |author, status, at| Note {
        id: uuid::Uuid::now_v7(),
        patient_id: bundles[0].patient.id,
        author_id: author,
        kind: NoteKind::Nursing,
        text: "Resting comfortably".into(),
        created_at: Timestamp(at),
        status,
        addendum_to: None,
        version: 0,
    };
    let mine = note(me, NoteStatus::Draft, 10);
    let signed = note(me, NoteStatus::Signed { signed_at: Timestamp(12) }, 11);
    let theirs = note(other, NoteStatus::Draft, 12);
    store.put_all(&[mine.clone(), signed, theirs.clone()]).unwrap();
    let found = store.drafts_by(me).unwrap();
    assert_eq!(found.iter().map(|n| n.id).collect::<Vec<_>>(), vec![mine.id]);
    assert_eq!(store.drafts_by(other).unwrap()[0].id, theirs.id);
}
