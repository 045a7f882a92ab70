//! Export → import round trips (synthetic charts, every record state, arbitrary text) and the shape
//! of exported resources against what FHIR R4 requires of them.

#![allow(clippy::unwrap_used)]

mod common;

use chartroom_domain::*;
use chartroom_fhir::{export_ndjson, import_bundle, ImportOptions};
use common::*;
use proptest::prelude::*;
use serde_json::Value;

/// Imports with the synthetic author as importer, so `recorded_by` / `author_id` (which an import
/// replaces by the importer) compare equal.
fn round_trip(charts: &[Chart]) -> Vec<Chart> {
    let ndjson = export_ndjson(charts);
    let import =
        import_bundle(&bundle_from_ndjson(&ndjson), &ImportOptions::new(synth_config().author)).unwrap();
    assert!(import.skipped.is_empty(), "{:?}", import.skipped);
    import.charts
}

#[test]
fn synthetic_charts_round_trip_exactly() {
    let charts = synth_charts(40);
    assert_eq!(round_trip(&charts), charts);
    let ndjson = export_ndjson(&charts);
    let lines = |t: &str| ndjson[t].lines().count();
    assert_eq!(lines("Patient"), 40);
    assert_eq!(lines("Observation"), 40 * 30);
    assert_eq!(lines("Observation"), charts.iter().map(|c| c.observations.len()).sum::<usize>());
    assert_eq!(lines("DocumentReference"), charts.iter().map(|c| c.notes.len()).sum::<usize>());
}

#[test]
fn every_record_state_round_trips() {
    let author = synth_config().author;
    let mut charts = synth_charts(2);
    charts.insert(1, edge_chart(author));
    assert_eq!(round_trip(&charts), charts);
}

#[test]
fn what_fhir_does_not_carry_is_documented_behaviour() {
    // Versions restart at 1 and records are attributed to the importer.
    let mut charts = synth_charts(1);
    charts[0].patient.version = 7;
    charts[0].observations[0].version = 3;
    let importer = uuid::Uuid::from_u128(99);
    let ndjson = export_ndjson(&charts);
    let import = import_bundle(&bundle_from_ndjson(&ndjson), &ImportOptions::new(importer)).unwrap();
    let chart = &import.charts[0];
    assert_eq!(chart.patient.version, 1);
    assert!(chart.observations.iter().all(|o| o.version == 1 && o.recorded_by == importer));
    assert!(chart.notes.iter().all(|n| n.author_id == importer));
    // …but the export still says who recorded what.
    assert!(ndjson["Observation"].contains(&format!("Practitioner/{}", synth_config().author)));
    assert!(ndjson["Patient"].contains("\"versionId\":\"7\""));
}

#[test]
fn empty_types_are_left_out() {
    let mut chart = synth_charts(1).remove(0);
    chart.notes.clear();
    chart.allergies.clear();
    let ndjson = export_ndjson(&[chart]);
    assert_eq!(
        ndjson.keys().copied().collect::<Vec<_>>(),
        ["Condition", "MedicationRequest", "Observation", "Patient"]
    );
    assert!(export_ndjson(&[]).is_empty());
}

fn coding_of<'v>(concept: &'v Value, system: &str) -> &'v Value {
    concept["coding"].as_array().unwrap().iter().find(|c| c["system"] == system).unwrap()
}

fn patient_reference(v: &Value, charts: &[Chart]) {
    let reference = v.as_str().unwrap();
    let id = reference.strip_prefix("Patient/").unwrap();
    assert!(charts.iter().any(|c| c.patient.id.to_string() == id), "{reference}");
}

#[test]
fn exported_resources_have_what_fhir_r4_requires() {
    let mut charts = synth_charts(3);
    charts.push(edge_chart(synth_config().author));
    let ndjson = export_ndjson(&charts);
    assert_eq!(ndjson.len(), 6);
    for (resource_type, lines) in &ndjson {
        assert!(lines.ends_with('\n'));
        for line in lines.lines() {
            assert!(line.starts_with(&format!("{{\"resourceType\":\"{resource_type}\",")), "{line}");
            let r: Value = serde_json::from_str(line).unwrap();
            assert_eq!(uuid::Uuid::parse_str(r["id"].as_str().unwrap()).unwrap().to_string(), r["id"]);
            match *resource_type {
                "Patient" => {
                    let mr = &r["identifier"][0];
                    assert_eq!(
                        coding_of(&mr["type"], "http://terminology.hl7.org/CodeSystem/v2-0203")["code"],
                        "MR"
                    );
                    assert!(mr["value"].is_string() && mr["system"].is_string());
                    assert!(r["name"][0]["family"].is_string() && r["name"][0]["given"][0].is_string());
                    assert!(["female", "male", "other", "unknown"].contains(&r["gender"].as_str().unwrap()));
                    assert_eq!(r["birthDate"].as_str().unwrap().len(), 10);
                    let urls: Vec<_> = r["extension"].as_array().unwrap().iter().map(|e| &e["url"]).collect();
                    assert_eq!(urls, [chartroom_fhir::UNIT_EXTENSION, chartroom_fhir::BED_EXTENSION]);
                }
                "AllergyIntolerance" => {
                    patient_reference(&r["patient"]["reference"], &charts);
                    let clinical = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
                    let verification =
                        "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
                    assert_eq!(coding_of(&r["clinicalStatus"], clinical)["code"], "active");
                    assert_eq!(coding_of(&r["verificationStatus"], verification)["code"], "confirmed");
                    assert!(["low", "high", "unable-to-assess"].contains(&r["criticality"].as_str().unwrap()));
                }
                "Condition" => {
                    patient_reference(&r["subject"]["reference"], &charts);
                    let status = coding_of(
                        &r["clinicalStatus"],
                        "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    );
                    assert!(["active", "resolved"].contains(&status["code"].as_str().unwrap()));
                    assert!(coding_of(&r["code"], "http://snomed.info/sct")["code"].is_string());
                }
                "MedicationRequest" => {
                    patient_reference(&r["subject"]["reference"], &charts);
                    assert!(["active", "on-hold", "completed", "stopped"]
                        .contains(&r["status"].as_str().unwrap()));
                    assert_eq!(r["intent"], "order");
                    assert!(r["medicationCodeableConcept"]["text"].is_string());
                }
                "Observation" => {
                    patient_reference(&r["subject"]["reference"], &charts);
                    assert_eq!(r["status"], "final");
                    let category = coding_of(
                        &r["category"][0],
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                    );
                    assert_eq!(category["code"], "vital-signs");
                    let vital = VitalSign::from_loinc(
                        coding_of(&r["code"], "http://loinc.org")["code"].as_str().unwrap(),
                    )
                    .unwrap();
                    let effective = r["effectiveDateTime"].as_str().unwrap();
                    assert!(effective.ends_with('Z') && effective.contains('T'), "{effective}");
                    let q = &r["valueQuantity"];
                    assert!(q["value"].is_f64());
                    assert_eq!(q["system"], "http://unitsofmeasure.org");
                    assert_eq!(q["code"], vital.unit());
                }
                "DocumentReference" => {
                    patient_reference(&r["subject"]["reference"], &charts);
                    let (status, doc_status) =
                        (r["status"].as_str().unwrap(), r["docStatus"].as_str().unwrap());
                    assert!(
                        matches!(
                            (status, doc_status),
                            ("current", "preliminary" | "final") | ("entered-in-error", "entered-in-error")
                        ),
                        "{status} {doc_status}"
                    );
                    let attachment = &r["content"][0]["attachment"];
                    assert!(attachment["contentType"].as_str().unwrap().starts_with("text/plain"));
                    assert!(attachment["data"].is_string());
                }
                other => panic!("unexpected output {other}"),
            }
        }
    }
}

#[test]
fn fixture_import_export_import_is_stable() {
    let options = ImportOptions::new(synth_config().author);
    let first = import_bundle(FIXTURE.as_bytes(), &options).unwrap();
    let again = import_bundle(&bundle_from_ndjson(&export_ndjson(&first.charts)), &options).unwrap();
    assert_eq!(again.charts, first.charts);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Free text of any kind (the validation rules allow) and any instant survive a round trip.
    #[test]
    fn arbitrary_text_and_instants_round_trip(
        family in "[^\\p{Cc}]{1,40}",
        given in "[^\\p{Cc}]{1,40}",
        text in "[^\\p{Cc}]{1,300}|[\\n\\t\\r ]{0,3}[a-z]{1,5}[\\n\\t\\r ]{0,3}",
        dose in "[^\\p{Cc}]{1,30}",
        effective in 0i64..4_000_000_000_000,
        tenths in 300i64..4_000,
    ) {
        prop_assume!([&family, &given, &text, &dose].iter().all(|s| !s.trim().is_empty()));
        let mut chart = synth_charts(1).remove(0);
        chart.patient.name = HumanName { family, given };
        chart.notes[0].text = text;
        chart.medications[0].dose = dose;
        chart.observations.truncate(1);
        chart.observations[0].vital = VitalSign::Weight;
        chart.observations[0].value = tenths as f64 / 10.0;
        chart.observations[0].effective_at = Timestamp(effective);
        prop_assert_eq!(round_trip(std::slice::from_ref(&chart)), vec![chart]);
    }
}
