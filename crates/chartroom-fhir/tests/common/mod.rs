//! Helpers shared by the integration tests and the `export-sample` example: synthetic charts, a
//! chart exercising every record state, and NDJSON back into a Bundle.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use chartroom_domain::*;
use chartroom_synth::SynthConfig;
use serde_json::{json, Value};
use uuid::Uuid;

pub const FIXTURE: &str = include_str!("../fixtures/synthea-like.json");

/// "Now" of the synthetic population.
pub fn now() -> Timestamp {
    Timestamp::from_civil_date(2026, 11, 27).plus(Duration::from_millis(7 * 3_600_000 + 23 * 60_000 + 3_250))
}

pub fn synth_config() -> SynthConfig {
    SynthConfig { observations_per_patient: 30, ..SynthConfig::new(42, now()) }
}

/// `n` deterministic synthetic charts.
pub fn synth_charts(n: u64) -> Vec<Chart> {
    let config = synth_config();
    (0..n).map(|i| chartroom_synth::patient(&config, i)).collect()
}

/// A chart with every state the domain has: draft, signed and entered-in-error notes, an addendum,
/// a resolved condition without onset, each criticality and medication status, a multi-word given
/// name, non-ASCII text and millisecond timestamps.
pub fn edge_chart(author: Uuid) -> Chart {
    let pid = Uuid::from_u128(0x0e0e_0000_0000_4000_8000_0000_0000_0001);
    let id = |n: u128| Uuid::from_u128(0x0e0e_0000_0000_4000_8000_0000_0000_1000 + n);
    let t = |ms: i64| Timestamp(1_790_000_000_000 + ms);
    let patient = Patient {
        id: pid,
        mrn: "EDGE-0001_x".into(),
        name: HumanName { family: "Ñoño-Testperson".into(), given: "Zoë  Mary Ann".into() },
        birth_date: Date::new(1880, 2, 29).unwrap_or(Date { year: 1880, month: 3, day: 1 }),
        sex: Sex::Other,
        unit: "STEP_DOWN-2".into(),
        bed: "12-C".into(),
        version: 1,
    };
    let allergies = [Criticality::Low, Criticality::High, Criticality::Unable]
        .into_iter()
        .enumerate()
        .map(|(i, criticality)| Allergy {
            id: id(i as u128),
            patient_id: pid,
            substance: format!("Substance «{i}» with, commas"),
            reaction: "Rash; itching".into(),
            criticality,
            version: 1,
        })
        .collect();
    let conditions = vec![
        Condition {
            id: id(10),
            patient_id: pid,
            code: "38341003".into(),
            display: "Hypertensive disorder".into(),
            onset: Date::new(1999, 12, 31),
            status: ClinicalStatus::Active,
            version: 1,
        },
        Condition {
            id: id(11),
            patient_id: pid,
            code: "233604007".into(),
            display: "Pneumonia".into(),
            onset: None,
            status: ClinicalStatus::Resolved,
            version: 1,
        },
    ];
    let medications = [
        MedicationStatus::Active,
        MedicationStatus::OnHold,
        MedicationStatus::Completed,
        MedicationStatus::Stopped,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, status)| MedicationRequest {
        id: id(20 + i as u128),
        patient_id: pid,
        medication: "Paracetamol 500 mg tablet".into(),
        dose: ["1-2 tablets", "2.5 mg", "1.0 g", "20 units"][i].into(),
        route: "oral".into(),
        frequency: "every 6 hours as needed (max 4 g/day)".into(),
        status,
        version: 1,
    })
    .collect();
    let observations = vec![
        Observation {
            id: id(30),
            patient_id: pid,
            vital: VitalSign::Temperature,
            value: 38.25,
            effective_at: t(999),
            recorded_by: author,
            version: 1,
        },
        Observation {
            id: id(31),
            patient_id: pid,
            vital: VitalSign::Spo2,
            value: 100.0,
            effective_at: t(1),
            recorded_by: author,
            version: 1,
        },
        Observation {
            id: id(32),
            patient_id: pid,
            vital: VitalSign::Weight,
            value: 0.3,
            effective_at: t(0),
            recorded_by: author,
            version: 1,
        },
    ];
    let note = |n: u128, status: NoteStatus, created: i64, addendum_to: Option<Uuid>| Note {
        id: id(n),
        patient_id: pid,
        author_id: author,
        kind: if n.is_multiple_of(2) { NoteKind::Nursing } else { NoteKind::Progress },
        text: format!("Note {n}: patient comfortable — « no complaints ».\n\tLine two, ünïcödé, 日本語. 🙂"),
        created_at: t(created),
        status,
        addendum_to,
        version: 1,
    };
    let notes = vec![
        note(43, NoteStatus::Draft, 4000, None),
        note(42, NoteStatus::Signed { signed_at: t(3500) }, 3000, Some(id(40))),
        note(
            41,
            NoteStatus::EnteredInError { reason: "Wrong patient — charted in error".into(), at: t(2500) },
            2000,
            None,
        ),
        note(40, NoteStatus::Signed { signed_at: t(1_234_567) }, 1000, None),
    ];
    Chart { patient, allergies, conditions, medications, observations, notes }
}

/// Bulk Data NDJSON back into a `collection` Bundle (Patients first, as an importer reads them in
/// any order anyway), with no fullUrls: references are `Patient/<id>`.
pub fn bundle_from_ndjson(ndjson: &BTreeMap<&'static str, String>) -> Vec<u8> {
    let mut entries = Vec::new();
    for (resource_type, lines) in ndjson {
        for line in lines.lines() {
            let resource: Value = serde_json::from_str(line).unwrap();
            assert_eq!(resource["resourceType"], *resource_type);
            entries.push(json!({ "resource": resource }));
        }
    }
    serde_json::to_vec(&json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })).unwrap()
}
