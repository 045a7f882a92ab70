//! The bodies of the fuzz targets: every decoder that takes bytes from outside the process. Each
//! function takes arbitrary bytes and must return without panicking, with memory bounded by its
//! input; where a decoder accepts the input, it checks that the result is what the bytes said
//! (re-encoding gives the same bytes or the same value). The cargo-fuzz targets in `fuzz/` call
//! these, and `tests/corpus.rs` replays the committed corpora through them on the stable toolchain.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use chartroom_audit::{AuditEntry, Digest32};
use chartroom_crypto::{
    DataKey, DeviceSecret, EscrowSlot, FieldPlace, KeySlot, PatientKey, RecoveryKeyPair, RecoverySlot,
};
use chartroom_domain::Validate;
use chartroom_protocol::{AuditUpload, PullPage, PushBatch};
use uuid::Uuid;

/// A target's body.
pub type Target = fn(&[u8]);

/// The targets by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("sync_push", sync_push),
    ("sync_pull", sync_pull),
    ("fhir_bundle", fhir_bundle),
    ("key_material", key_material),
    ("audit_entry", audit_entry),
];

/// Keys the harness opens things with: one set per process; the data key is the same in every
/// process, so what the seeds sealed or wrapped with it opens and the code past an open is reached.
pub struct Keys {
    pub data: DataKey,
    pub patient: PatientKey,
    pub recovery: RecoveryKeyPair,
    pub device: DeviceSecret,
    pub escrow: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { .. }")
    }
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        data: DataKey::derive(b"chartroom/fuzz", &[7; 32], b"data"),
        patient: PatientKey::generate(),
        recovery: RecoveryKeyPair::generate(),
        device: DeviceSecret::generate(),
        escrow: [9; 32],
    })
}

/// The field a sealed record body is bound to.
pub fn body_place(patient_id: Uuid, record_id: Uuid) -> FieldPlace<'static> {
    FieldPlace { patient_id, record_id, field: "record.body" }
}

/// `POST /v1/sync/push` as the server decodes it: the JSON batch, then each record's validation and
/// the facts the access decision reads.
pub fn sync_push(data: &[u8]) {
    let Ok(batch) = serde_json::from_slice::<PushBatch>(data) else {
        return;
    };
    for change in &batch.changes {
        let record = &change.change;
        let _ = (record.validate(), record.action(), record.patient_id(), record.record_id());
    }
    let again = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let back: PushBatch = serde_json::from_slice(&again).expect("an encoded batch decodes");
    assert_eq!(back, batch, "a push batch changed through a round trip");
}

/// `GET /v1/sync/pull` as a station decodes it: the page, the patient keys unwrapped with the
/// device's sync key, and every sealed body opened with its patient's key.
pub fn sync_pull(data: &[u8]) {
    let Ok(page) = serde_json::from_slice::<PullPage>(data) else {
        return;
    };
    let k = keys();
    let mut unwrapped = std::collections::HashMap::new();
    for wrapped in &page.keys {
        if let Ok(key) = k.data.unwrap_patient_key(wrapped.patient_id, &wrapped.wrapped) {
            unwrapped.insert(wrapped.patient_id, key);
        }
    }
    // Each body opens with its patient's key from the page, as a station opens it.
    for record in &page.records {
        let key = unwrapped.get(&record.patient_id).unwrap_or(&k.patient);
        let _ = key.open(&body_place(record.patient_id, record.id), &record.body);
    }
    let again = serde_json::to_vec(&page).expect("a decoded page encodes");
    let back: PullPage = serde_json::from_slice(&again).expect("an encoded page decodes");
    assert_eq!(back, page, "a pull page changed through a round trip");
}

/// A FHIR R4 bundle through the importer (`chartroom-server import-fhir`).
pub fn fhir_bundle(data: &[u8]) {
    let options = chartroom_fhir::ImportOptions::new(Uuid::nil());
    if let Ok(import) = chartroom_fhir::import_bundle(data, &options) {
        // What the importer accepts is valid by the domain's rules.
        for chart in &import.charts {
            assert!(chart.patient.validate().is_ok(), "the importer returned an invalid patient");
            assert!(chart.observations.iter().all(|o| o.validate().is_ok()), "an invalid observation");
            assert!(chart.notes.iter().all(|n| n.validate().is_ok()), "an invalid note");
        }
    }
}

/// Stored key material a station or server reads back from disk: password key slots, recovery and
/// escrow slots, wrapped patient keys, sealed fields and sealed streams (backups).
pub fn key_material(data: &[u8]) {
    let k = keys();
    if let Ok(slot) = KeySlot::from_bytes(data) {
        assert_eq!(slot.as_bytes(), data, "a key slot is kept exactly as read");
    }
    if let Ok(slot) = RecoverySlot::from_bytes(data) {
        let _ = slot.open(&k.recovery);
    }
    if let Ok(slot) = EscrowSlot::from_bytes(data) {
        let _ = slot.open(&k.escrow, &k.device, Uuid::nil());
    }
    let _ = k.data.unwrap_patient_key(Uuid::nil(), data);
    let _ = k.data.open_secret(b"fuzz", data);
    let _ = k.patient.open(&body_place(Uuid::nil(), Uuid::nil()), data);
    let mut out = Vec::new();
    if let Ok(n) = k.data.open_stream(b"fuzz", &mut &data[..], &mut out) {
        assert_eq!(usize::try_from(n).ok(), Some(out.len()), "a stream reports what it wrote");
    }
}

/// Audit entries as the server reads them: the stored canonical form, and a station's JSON upload.
pub fn audit_entry(data: &[u8]) {
    if let Ok(entry) = AuditEntry::decode(data, Digest32::GENESIS) {
        assert_eq!(entry.canonical_bytes(), data, "an audit entry decodes exactly");
    }
    if let Ok(upload) = serde_json::from_slice::<AuditUpload>(data) {
        for entry in &upload.entries {
            let bytes = entry.canonical_bytes();
            let back = AuditEntry::decode(&bytes, entry.hash).expect("a canonical encoding decodes");
            assert_eq!(&back, entry, "an uploaded entry changed through its canonical form");
        }
    }
}
