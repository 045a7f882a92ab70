//! Import of the Synthea-like fixture (what is mapped, what is skipped) and of malformed variants of
//! it: each refuses the whole bundle and names the entry without quoting any value.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use chartroom_domain::*;
use chartroom_fhir::{import_bundle, FhirError, Import, ImportOptions, Skipped};
use common::FIXTURE;
use serde_json::{json, Value};
use uuid::Uuid;

fn importer() -> Uuid {
    Uuid::from_u128(0x1111_0000_0000_4000_8000_0000_0000_0001)
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

fn import(bundle: &Value) -> Result<Import, FhirError> {
    import_bundle(&serde_json::to_vec(bundle).unwrap(), &ImportOptions::new(importer()))
}

/// Index of the first entry whose resource satisfies `pred`.
fn find(bundle: &Value, pred: impl Fn(&Value) -> bool) -> usize {
    bundle["entry"].as_array().unwrap().iter().position(|e| pred(&e["resource"])).unwrap()
}

fn observation_coded(bundle: &Value, loinc: &str) -> usize {
    find(bundle, |r| r["resourceType"] == "Observation" && r["code"]["coding"][0]["code"] == loinc)
}

fn resource(bundle: &mut Value, index: usize) -> &mut Value {
    &mut bundle["entry"][index]["resource"]
}

fn full_url(bundle: &Value, index: usize) -> String {
    bundle["entry"][index]["fullUrl"].as_str().unwrap().to_string()
}

/// Values of the fixture that are PHI-like and must never appear in an error.
fn phi(bundle: &Value) -> Vec<String> {
    let mut values = vec!["Testperson".to_string(), "Alpha123".into(), "Bravo88".into(), "1957".into()];
    for entry in bundle["entry"].as_array().unwrap() {
        let r = &entry["resource"];
        if r["resourceType"] == "Patient" {
            let id = r["id"].as_str().unwrap();
            values.push(id.to_string());
            values.push(id.replace('-', ""));
        }
    }
    values
}

/// Asserts the import fails with `code` at entry `index`, and that neither the message nor `Debug`
/// quotes a value. Returns the message.
fn refused(bundle: &Value, code: &str, index: Option<usize>) -> String {
    let err = import(bundle).unwrap_err();
    let (message, debug) = (err.to_string(), format!("{err:?}"));
    assert_eq!(err.code(), code, "{message}");
    assert_eq!(err.entry_index(), index, "{message}");
    for value in phi(&fixture()) {
        assert!(!message.contains(&value) && !debug.contains(&value), "{value} in {message} / {debug}");
    }
    message
}

#[test]
fn fixture_maps_patients_and_their_records() {
    let bundle = fixture();
    let import = import(&bundle).unwrap();
    let counts: BTreeMap<&str, u64> = import.imported.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("AllergyIntolerance", 2),
            ("Condition", 4),
            ("DocumentReference", 1),
            ("MedicationRequest", 3),
            ("Observation", 15),
            ("Patient", 3),
        ])
    );
    let skipped =
        |t: &str, count: u64, reason: &str| Skipped { resource_type: t.into(), count, reason: reason.into() };
    assert_eq!(
        import.skipped,
        vec![
            skipped("Claim", 2, "resource type is not imported"),
            skipped("Encounter", 4, "resource type is not imported"),
            skipped("ExplanationOfBenefit", 1, "resource type is not imported"),
            skipped("Immunization", 1, "resource type is not imported"),
            skipped("Observation", 4, "not a vital sign Chartroom records (by LOINC code)"),
            skipped("Procedure", 1, "resource type is not imported"),
            skipped("Provenance", 1, "resource type is not imported"),
        ]
    );

    let [a, b, c] = &import.charts[..] else { panic!("three charts") };
    // Patient: ids kept, MRN from the MR identifier (a UUID, so without hyphens), official name.
    let p1 = &bundle["entry"][0]["resource"];
    assert_eq!(a.patient.id.to_string(), p1["id"]);
    assert_eq!(a.patient.mrn, p1["id"].as_str().unwrap().replace('-', ""));
    assert_eq!(
        (a.patient.name.family.as_str(), a.patient.name.given.as_str()),
        ("Testperson914", "Alpha123 Jo")
    );
    assert_eq!(a.patient.birth_date, Date::new(1957, 4, 12).unwrap());
    assert_eq!((a.patient.sex, b.patient.sex, c.patient.sex), (Sex::Female, Sex::Male, Sex::Other));
    assert_eq!(a.patient.version, 1);
    // Placement: numbered beds in the default unit, unless the Chartroom extensions say otherwise.
    let place = |c: &Chart| (c.patient.unit.clone(), c.patient.bed.clone());
    assert_eq!(place(a), ("IMPORT".into(), "IMP001".into()));
    assert_eq!(place(b), ("IMPORT".into(), "IMP002".into()));
    assert_eq!(place(c), ("ICU".into(), "07B".into()));

    // Allergies: reactions joined; a missing reaction or criticality is said to be missing.
    assert_eq!(a.allergies[0].substance, "Allergy to peanuts");
    assert_eq!(a.allergies[0].reaction, "Anaphylaxis (disorder), Wheal (finding)");
    assert_eq!(a.allergies[0].criticality, Criticality::High);
    assert_eq!(
        (a.allergies[1].reaction.as_str(), a.allergies[1].criticality),
        ("not recorded", Criticality::Unable)
    );

    // Conditions: SNOMED code and display, onset date as written, resolved when abated.
    let htn = &a.conditions[0];
    assert_eq!((htn.code.as_str(), htn.display.as_str()), ("59621000", "Essential hypertension (disorder)"));
    assert_eq!((htn.onset, htn.status), (Date::new(2001, 5, 14), ClinicalStatus::Active));
    assert_eq!(a.conditions[1].status, ClinicalStatus::Resolved);

    // Medications: Synthea's structured dosage read as text; what it lacks is "not specified".
    let lisinopril = &a.medications[0];
    assert_eq!(lisinopril.medication, "lisinopril 10 MG Oral Tablet");
    assert_eq!(
        (lisinopril.dose.as_str(), lisinopril.route.as_str(), lisinopril.frequency.as_str()),
        ("1", "not specified", "once per day")
    );
    assert_eq!(
        (a.medications[1].status, a.medications[1].frequency.as_str()),
        (MedicationStatus::Stopped, "4 times per day")
    );
    assert_eq!(b.medications[0].frequency, "twice per day");

    // Vital signs: the BP panel split in two, SpO2 from 2708-6, all at the visit's instant (UTC).
    let visit = Timestamp(1_550_502_167_000); // 2019-02-18T10:02:47-05:00
    assert_eq!(visit.to_string(), "2019-02-18T15:02:47Z");
    let vitals: Vec<(VitalSign, f64)> = a.observations.iter().map(|o| (o.vital, o.value)).collect();
    assert_eq!(
        vitals,
        [
            (VitalSign::Weight, 71.4),
            (VitalSign::DiastolicBp, 84.0),
            (VitalSign::SystolicBp, 132.0),
            (VitalSign::HeartRate, 74.0),
            (VitalSign::RespiratoryRate, 14.0),
            (VitalSign::Temperature, 36.9),
            (VitalSign::Spo2, 97.2),
        ]
    );
    for o in &a.observations {
        assert_eq!(
            (o.effective_at, o.recorded_by, o.patient_id, o.version),
            (visit, importer(), a.patient.id, 1)
        );
        o.validate().unwrap();
    }
    let bp = find(&bundle, |r| r["code"]["coding"][0]["code"] == "85354-9");
    let bp_id = Uuid::parse_str(bundle["entry"][bp]["resource"]["id"].as_str().unwrap()).unwrap();
    assert!(a.observations.iter().all(|o| o.id != bp_id), "the halves get ids of their own");
    // Newest first: the next day's heart rate leads.
    assert_eq!(b.observations.len(), 8);
    assert_eq!((b.observations[0].vital, b.observations[0].value), (VitalSign::HeartRate, 88.0));
    assert!(b.observations.windows(2).all(|w| w[0].effective_at >= w[1].effective_at));
    assert!(c.observations.is_empty() && c.notes.is_empty());

    // The note: base64 text decoded, signed at its date, a progress note by the importer.
    let note = &a.notes[0];
    assert!(note.text.contains("Continue lisinopril 10 MG Oral Tablet."));
    assert_eq!(note.kind, NoteKind::Progress);
    assert_eq!(note.created_at, Timestamp(visit.0 + 391));
    assert_eq!(note.status, NoteStatus::Signed { signed_at: note.created_at });
    assert_eq!((note.author_id, note.addendum_to), (importer(), None));
}

#[test]
fn imports_are_deterministic() {
    assert_eq!(import(&fixture()).unwrap(), import(&fixture()).unwrap());
}

#[test]
fn malformed_json_or_bundles_are_refused() {
    let err = import_bundle(b"{\"resourceType\": \"Bundle\", ", &ImportOptions::new(importer())).unwrap_err();
    assert_eq!(err.code(), "fhir.not_json");
    assert_eq!(import_bundle(b"", &ImportOptions::new(importer())).unwrap_err().code(), "fhir.not_json");

    let mut not_a_bundle = fixture();
    not_a_bundle["resourceType"] = json!("Patient");
    refused(&not_a_bundle, "fhir.not_a_bundle", None);
    refused(&json!([fixture()]), "fhir.not_a_bundle", None);
    refused(
        &json!({ "resourceType": "Bundle", "type": "collection", "entry": {} }),
        "fhir.not_a_bundle",
        None,
    );

    let mut searchset = fixture();
    searchset["type"] = json!("searchset");
    refused(&searchset, "fhir.unsupported_bundle_type", None);

    // An empty bundle is fine and imports nothing.
    let empty = import(&json!({ "resourceType": "Bundle", "type": "collection" })).unwrap();
    assert!(empty.charts.is_empty() && empty.imported.is_empty() && empty.skipped.is_empty());
}

#[test]
fn a_missing_value_names_the_entry() {
    let mut bundle = fixture();
    let hr = observation_coded(&bundle, "8867-4");
    resource(&mut bundle, hr)["valueQuantity"].as_object_mut().unwrap().remove("value");
    let message = refused(&bundle, "fhir.entry.missing", Some(hr));
    let url = full_url(&bundle, hr);
    assert_eq!(message, format!("entry {hr} (Observation {url}): valueQuantity.value is missing"));

    let mut bundle = fixture();
    let bp = observation_coded(&bundle, "85354-9");
    resource(&mut bundle, bp)["component"][1]["valueQuantity"]["value"] = Value::Null;
    let message = refused(&bundle, "fhir.entry.missing", Some(bp));
    assert!(message.ends_with("component[1].valueQuantity.value is missing"), "{message}");

    let mut bundle = fixture();
    resource(&mut bundle, 0).as_object_mut().unwrap().remove("birthDate");
    let message = refused(&bundle, "fhir.entry.missing", Some(0));
    // A Patient's fullUrl is not named: Synthea uses the same UUID as its MRN.
    assert_eq!(message, "entry 0 (Patient): birthDate is missing");
}

#[test]
fn dangling_references_are_refused() {
    let mut bundle = fixture();
    let condition = find(&bundle, |r| r["resourceType"] == "Condition");
    resource(&mut bundle, condition)["subject"]["reference"] =
        json!(format!("urn:uuid:{}", Uuid::from_u128(7)));
    let message = refused(&bundle, "fhir.entry.dangling_reference", Some(condition));
    assert!(message.ends_with("subject.reference does not resolve to a Patient in the bundle"), "{message}");

    // A reference to an entry of another type is as wrong as one to nothing.
    let mut bundle = fixture();
    let encounter = full_url(&bundle, find(&bundle, |r| r["resourceType"] == "Encounter"));
    let allergy = find(&bundle, |r| r["resourceType"] == "AllergyIntolerance");
    resource(&mut bundle, allergy)["patient"]["reference"] = json!(encounter);
    refused(&bundle, "fhir.entry.dangling_reference", Some(allergy));

    // Relative references resolve by type and id.
    let mut bundle = fixture();
    let patient_id = bundle["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    resource(&mut bundle, allergy)["patient"]["reference"] = json!(format!("Patient/{patient_id}"));
    assert_eq!(import(&bundle).unwrap(), import(&fixture()).unwrap());
}

#[test]
fn wrong_resource_types_and_shapes_are_refused() {
    let mut bundle = fixture();
    let hr = observation_coded(&bundle, "8867-4");
    resource(&mut bundle, hr)["resourceType"] = json!("Observaton");
    let message = refused(&bundle, "fhir.entry.unknown_resource_type", Some(hr));
    // The fullUrl is not named either: with no known type, the entry might be a Patient.
    assert_eq!(message, format!("entry {hr}: resourceType is missing or not an R4 resource type"));

    let mut bundle = fixture();
    resource(&mut bundle, hr)["resourceType"] = json!(42);
    refused(&bundle, "fhir.entry.unknown_resource_type", Some(hr));

    let mut bundle = fixture();
    bundle["entry"][hr].as_object_mut().unwrap().remove("resource");
    refused(&bundle, "fhir.entry.missing", Some(hr));

    let mut bundle = fixture();
    resource(&mut bundle, hr)["valueQuantity"]["value"] = json!("seventy");
    let message = refused(&bundle, "fhir.entry.invalid", Some(hr));
    assert!(
        message.ends_with("valueQuantity.value is not a number") && !message.contains("seventy"),
        "{message}"
    );

    let mut bundle = fixture();
    let temperature = observation_coded(&bundle, "8310-5");
    resource(&mut bundle, temperature)["valueQuantity"]["code"] = json!("[degF]");
    let message = refused(&bundle, "fhir.entry.invalid", Some(temperature));
    assert!(message.ends_with("valueQuantity.code is not the UCUM unit Cel"), "{message}");

    let mut bundle = fixture();
    let note = find(&bundle, |r| r["resourceType"] == "DocumentReference");
    resource(&mut bundle, note)["content"][0]["attachment"]["data"] = json!("not base64!");
    let message = refused(&bundle, "fhir.entry.invalid", Some(note));
    assert!(message.ends_with("content[0].attachment.data is not base64"), "{message}");

    let mut bundle = fixture();
    resource(&mut bundle, note)["content"][0]["attachment"]["data"] = json!("A".repeat(200_000));
    refused(&bundle, "fhir.entry.invalid", Some(note));

    let mut bundle = fixture();
    bundle["entry"][hr]["fullUrl"] = json!("urn:uuid:not-a-uuid");
    refused(&bundle, "fhir.entry.invalid", Some(hr));
}

#[test]
fn records_failing_domain_validation_are_refused_without_their_values() {
    let mut bundle = fixture();
    let hr = observation_coded(&bundle, "8867-4");
    resource(&mut bundle, hr)["valueQuantity"]["value"] = json!(400.0);
    let message = refused(&bundle, "fhir.entry.validation", Some(hr));
    assert!(message.contains("heart_rate") && !message.contains("400"), "{message}");

    let mut bundle = fixture();
    let bp = observation_coded(&bundle, "85354-9");
    resource(&mut bundle, bp)["component"][0]["valueQuantity"]["value"] = json!(150.0); // diastolic
    let message = refused(&bundle, "fhir.entry.validation", Some(bp));
    assert!(message.contains("diastolic_bp"), "{message}");

    let mut bundle = fixture();
    resource(&mut bundle, 0)["name"][0]["family"] = json!(format!("Testperson{}", "x".repeat(100)));
    let message = refused(&bundle, "fhir.entry.validation", Some(0));
    assert!(message.contains("name.family"), "{message}");

    let mut bundle = fixture();
    resource(&mut bundle, 0)["identifier"][1]["value"] = json!("MRN with spaces");
    refused(&bundle, "fhir.entry.validation", Some(0));
}

#[test]
fn duplicates_are_refused() {
    let mut bundle = fixture();
    let hr = observation_coded(&bundle, "8867-4");
    let copy = bundle["entry"][hr].clone();
    bundle["entry"].as_array_mut().unwrap().push(copy);
    let last = bundle["entry"].as_array().unwrap().len() - 1;
    let message = refused(&bundle, "fhir.entry.duplicate_id", Some(last));
    assert!(message.ends_with(&format!("duplicate id (the same record as entry {hr})")), "{message}");

    // Same id, no fullUrl: still the same record.
    let mut bundle = fixture();
    let mut copy = bundle["entry"][hr].clone();
    copy.as_object_mut().unwrap().remove("fullUrl");
    bundle["entry"].as_array_mut().unwrap().push(copy);
    refused(&bundle, "fhir.entry.duplicate_id", Some(last));

    let mut bundle = fixture();
    let second = find(&bundle, |r| r["resourceType"] == "Patient" && r["gender"] == "male");
    let first_mrn = bundle["entry"][0]["resource"]["identifier"][1]["value"].clone();
    resource(&mut bundle, second)["identifier"][1]["value"] = first_mrn;
    let message = refused(&bundle, "fhir.entry.duplicate_mrn", Some(second));
    assert!(message.ends_with("duplicate MRN (the same as entry 0)"), "{message}");
}

#[test]
fn too_many_entries_are_refused_before_anything_else() {
    let entries = vec!["{}"; chartroom_fhir::MAX_ENTRIES + 1].join(",");
    let json = format!("{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":[{entries}]}}");
    let err = import_bundle(json.as_bytes(), &ImportOptions::new(importer())).unwrap_err();
    assert_eq!(err, FhirError::TooManyEntries { max: chartroom_fhir::MAX_ENTRIES });
}

/// A minimal bundle: one Patient (non-UUID id "p1") and the given resources, referencing it.
fn small_bundle(resources: Vec<Value>) -> Value {
    let mut entries = vec![json!({ "resource": {
        "resourceType": "Patient", "id": "p1",
        "identifier": [{ "value": "M000123" }],
        "name": [{ "family": "Testperson", "given": ["Delta"] }],
        "birthDate": "1970-01-01",
    }})];
    entries.extend(resources.into_iter().map(|r| json!({ "resource": r })));
    json!({ "resourceType": "Bundle", "type": "collection", "entry": entries })
}

fn reasons(import: &Import) -> Vec<(String, String)> {
    import.skipped.iter().map(|s| (s.resource_type.clone(), s.reason.clone())).collect()
}

#[test]
fn records_not_in_force_are_skipped_with_a_reason() {
    let subject = json!({ "reference": "Patient/p1" });
    let hr = |status: &str| {
        json!({
            "resourceType": "Observation", "id": format!("hr-{status}"), "status": status,
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
            "subject": subject, "effectiveDateTime": "2020-01-01T00:00:00Z",
            "valueQuantity": { "value": 70, "unit": "/min" },
        })
    };
    let import = import(&small_bundle(vec![
        hr("final"),
        hr("preliminary"),
        json!({
            "resourceType": "Observation", "id": "absent", "status": "final",
            "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4" }] },
            "subject": subject, "effectiveDateTime": "2020-01-01T00:00:00Z",
            "dataAbsentReason": { "text": "asked but declined" },
        }),
        json!({
            "resourceType": "AllergyIntolerance", "id": "a1", "patient": subject, "code": { "text": "Latex" },
            "clinicalStatus": { "coding": [{ "code": "resolved" }] },
        }),
        json!({
            "resourceType": "Condition", "id": "c1", "subject": subject,
            "clinicalStatus": { "coding": [{ "code": "active" }] },
            "verificationStatus": { "coding": [{ "code": "refuted" }] },
            "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "38341003", "display": "x" }] },
        }),
        json!({
            "resourceType": "Condition", "id": "c2", "subject": subject,
            "clinicalStatus": { "coding": [{ "code": "active" }] },
            "code": { "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10" }] },
        }),
        json!({
            "resourceType": "MedicationRequest", "id": "m1", "status": "cancelled", "intent": "order",
            "subject": subject, "medicationCodeableConcept": { "text": "Aspirin" },
        }),
        json!({
            "resourceType": "MedicationRequest", "id": "m2", "status": "active", "intent": "order",
            "subject": subject, "medicationReference": { "reference": "Medication/x" },
        }),
        json!({
            "resourceType": "DocumentReference", "id": "d1", "status": "current", "subject": subject,
            "content": [{ "attachment": { "contentType": "application/pdf", "data": "JVBERi0=" } }],
        }),
    ]))
    .unwrap();
    assert_eq!(import.charts[0].observations.len(), 1);
    assert_eq!(import.imported.values().sum::<u64>(), 2);
    let expected = [
        ("AllergyIntolerance", "clinicalStatus is not active"),
        ("Condition", "no SNOMED CT coding"),
        ("Condition", "verificationStatus is refuted or entered-in-error"),
        ("DocumentReference", "no inline UTF-8 text/plain attachment"),
        ("MedicationRequest", "medicationReference is not supported"),
        ("MedicationRequest", "status is cancelled, draft, entered-in-error or unknown"),
        ("Observation", "no value (dataAbsentReason)"),
        ("Observation", "status is not final, amended or corrected"),
    ];
    assert_eq!(reasons(&import), expected.map(|(t, r)| (t.to_string(), r.to_string())));
}

#[test]
fn non_uuid_ids_become_stable_uuids() {
    let a = import(&small_bundle(vec![])).unwrap();
    let b = import(&small_bundle(vec![])).unwrap();
    let id = a.charts[0].patient.id;
    assert_eq!(id, b.charts[0].patient.id);
    assert_eq!(id.get_version_num(), 8);
    assert_eq!(a.charts[0].patient.mrn, "M000123", "the first identifier when none is typed MR");
    assert_eq!(a.charts[0].patient.sex, Sex::Unknown);
}

#[test]
fn addenda_must_amend_a_note_of_the_same_patient() {
    let note = |id: &str, relates: Option<&str>| {
        let mut r = json!({
            "resourceType": "DocumentReference", "id": id, "status": "current", "docStatus": "final",
            "subject": { "reference": "Patient/p1" }, "date": "2020-01-01T10:00:00Z",
            "content": [{ "attachment": { "contentType": "text/plain", "data": "U2VlbiBhbmQgd2VsbC4=" } }],
        });
        if let Some(target) = relates {
            r["relatesTo"] = json!([{ "code": "appends", "target": { "reference": target } }]);
        }
        r
    };
    let ok = import(&small_bundle(vec![note("n2", Some("DocumentReference/n1")), note("n1", None)])).unwrap();
    let notes = &ok.charts[0].notes;
    assert_eq!(notes[0].addendum_to, Some(notes[1].id));
    assert_eq!(notes[0].text, "Seen and well.");

    let err = import(&small_bundle(vec![note("n2", Some("DocumentReference/nope"))])).unwrap_err();
    assert_eq!((err.code(), err.entry_index()), ("fhir.entry.dangling_reference", Some(1)));
}
