//! The fuzz targets on the stable toolchain: every committed corpus file (`fuzz/corpus/<target>/`,
//! seeds and whatever fuzzing found), then random bytes and random mutations of the seeds
//! (bit flips, truncations, splices) through the same target bodies. `CHARTROOM_BLESS=1`
//! (re)writes the seeds from synthetic data.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chartroom_fuzz::{body_place, keys, TARGETS};
use proptest::prelude::*;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(corpus_dir(target)).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn target(name: &str) -> chartroom_fuzz::Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Real inputs of each kind, made from synthetic data with the harness's keys.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use chartroom_protocol::{Change, ChangeRecord, PullPage, PushBatch, SealedRecord, WrappedPatientKey};
    let k = keys();
    let config = chartroom_synth::SynthConfig::new(5, chartroom_domain::Timestamp(1_780_000_000_000));
    let chart = chartroom_synth::patient(&config, 0);
    let change = |record: ChangeRecord| Change {
        change_id: uuid::Uuid::from_u128(1).to_string(),
        base_version: 0,
        change: record,
    };
    let push = PushBatch {
        changes: vec![
            change(ChangeRecord::Observation(chart.observations[0].clone())),
            change(ChangeRecord::Note(chart.notes[0].clone())),
            change(ChangeRecord::Patient(chart.patient.clone())),
            change(ChangeRecord::Allergy(chart.allergies[0].clone())),
        ],
    };
    let obs = &chart.observations[0];
    let body = serde_json::to_vec(obs).unwrap();
    let pull = PullPage {
        patients: vec![],
        records: vec![SealedRecord {
            id: obs.id,
            patient_id: chart.patient.id,
            kind: "observation".into(),
            sort_key: 1,
            version: 1,
            body: k.patient.seal(&body_place(chart.patient.id, obs.id), &body).unwrap(),
        }],
        keys: vec![WrappedPatientKey {
            patient_id: chart.patient.id,
            wrapped: k.data.wrap_patient_key(chart.patient.id, &k.patient),
        }],
        left: vec![uuid::Uuid::from_u128(2)],
        cursor: 42,
        more: true,
    };
    let fhir = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../chartroom-fhir/tests/fixtures/synthea-like.json"),
    )
    .unwrap();
    // A small bundle too (fast to mutate): the first patient with one resource of each type about them.
    let small = {
        let mut bundle: serde_json::Value = serde_json::from_slice(&fhir).unwrap();
        let entries = bundle["entry"].as_array().unwrap().clone();
        let patient = entries[0]["fullUrl"].as_str().unwrap().to_string();
        let mut seen = std::collections::HashSet::new();
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|e| {
                let about = e["fullUrl"] == patient.as_str() || e.to_string().contains(&patient);
                about && seen.insert(e["resource"]["resourceType"].to_string())
            })
            .collect();
        bundle["entry"] = serde_json::Value::Array(kept);
        serde_json::to_vec_pretty(&bundle).unwrap()
    };
    let dek = chartroom_crypto::DataKey::generate();
    let device_id = uuid::Uuid::from_u128(3);
    let mut stream = Vec::new();
    k.data.seal_stream(b"fuzz", &mut &b"backup bytes"[..], &mut stream).unwrap();
    let mut head = chartroom_audit::ChainHead::GENESIS;
    let mut event =
        chartroom_audit::Event::new(chartroom_domain::Timestamp(1_780_000_000_000), "view", "patient", "ok");
    event.patient_ids = vec![chart.patient.id];
    event.resource_id = Some(chart.patient.id.to_string());
    let entries: Vec<_> =
        (1..=3u128).map(|i| head.append(device_id, uuid::Uuid::from_u128(i), event.clone())).collect();
    let upload = chartroom_protocol::AuditUpload { entries: entries.clone() };
    vec![
        ("sync_push", "batch.json", serde_json::to_vec_pretty(&push).unwrap()),
        ("sync_pull", "page.json", serde_json::to_vec_pretty(&pull).unwrap()),
        ("fhir_bundle", "synthea-like.json", fhir),
        ("fhir_bundle", "one-patient.json", small),
        (
            "key_material",
            "key-slot",
            chartroom_crypto::KeySlot::seal(
                &dek,
                &chartroom_crypto::Password::new("correct-horse-staple-42".into()),
                &k.device,
                uuid::Uuid::from_u128(4),
                device_id,
                1,
                chartroom_crypto::KdfParams::MINIMUM,
            )
            .unwrap()
            .as_bytes()
            .to_vec(),
        ),
        (
            "key_material",
            "recovery-slot",
            chartroom_crypto::RecoverySlot::seal(&dek, &k.recovery.public(), device_id)
                .unwrap()
                .as_bytes()
                .to_vec(),
        ),
        (
            "key_material",
            "escrow-slot",
            chartroom_crypto::EscrowSlot::seal(&dek, &k.escrow, &k.device, device_id).as_bytes().to_vec(),
        ),
        ("key_material", "wrapped-patient-key", k.data.wrap_patient_key(uuid::Uuid::nil(), &k.patient)),
        ("key_material", "sealed-secret", k.data.seal_secret(b"fuzz", &[5; 32])),
        ("key_material", "sealed-stream", stream),
        ("audit_entry", "entry.bin", entries[1].canonical_bytes()),
        ("audit_entry", "upload.json", serde_json::to_vec_pretty(&upload).unwrap()),
    ]
}

#[test]
fn seeds_are_in_the_corpus_and_every_corpus_file_passes() {
    if std::env::var_os("CHARTROOM_BLESS").is_some() {
        for (target, name, bytes) in seeds() {
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(corpus_dir(target).join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    for (name, run) in TARGETS {
        let files = corpus(name);
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty (CHARTROOM_BLESS=1 writes the seeds)");
        for bytes in files {
            run(&bytes);
        }
    }
    // Fresh seeds (made with this process's keys) go through as well, whole.
    for (target_name, _, bytes) in seeds() {
        target(target_name)(&bytes);
    }
}

/// A seed of `target`, mutated: bytes flipped, cut short, or spliced with another seed.
fn mutated(target_name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus(target_name);
    let n = seeds.len();
    (
        0..n,
        0..n,
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        0u8..3,
    )
        .prop_map(move |(a, b, flips, cut, how)| {
            let mut bytes = seeds[a].clone();
            for (at, x) in flips {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= x;
                }
            }
            match how {
                0 => bytes,
                1 => {
                    let len = cut.index(bytes.len() + 1);
                    bytes.truncate(len);
                    bytes
                }
                _ => {
                    let len = cut.index(bytes.len() + 1);
                    bytes.truncate(len);
                    let other = &seeds[b];
                    bytes.extend_from_slice(&other[cut.index(other.len() + 1)..]);
                    bytes
                }
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        for (_, run) in TARGETS {
            run(&bytes);
        }
    }

    #[test]
    fn mutated_sync_pushes(bytes in mutated("sync_push")) { target("sync_push")(&bytes) }

    #[test]
    fn mutated_sync_pulls(bytes in mutated("sync_pull")) { target("sync_pull")(&bytes) }

    #[test]
    fn mutated_fhir_bundles(bytes in mutated("fhir_bundle")) { target("fhir_bundle")(&bytes) }

    #[test]
    fn mutated_key_material(bytes in mutated("key_material")) { target("key_material")(&bytes) }

    #[test]
    fn mutated_audit_entries(bytes in mutated("audit_entry")) { target("audit_entry")(&bytes) }
}
