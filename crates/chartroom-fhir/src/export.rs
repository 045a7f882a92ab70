//! Export: Chartroom charts to FHIR Bulk Data NDJSON, one resource per line and one output per
//! resource type, each resource valid FHIR R4 and readable back by [`import_bundle`](crate::import_bundle).

use std::collections::BTreeMap;

use chartroom_domain::*;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::time::format_instant;
use crate::{base64, r4};
use crate::{BED_EXTENSION, DOSE_EXTENSION, ENTERED_IN_ERROR_REASON_EXTENSION, MRN_SYSTEM, UNIT_EXTENSION};

/// Exports charts as FHIR Bulk Data NDJSON: resource type (`Patient`, `AllergyIntolerance`,
/// `Condition`, `MedicationRequest`, `Observation`, `DocumentReference`) → its lines, each ending in
/// `\n`. As in a Bulk Data export, a type with no resources has no entry. Records are written in chart
/// order, references as `Patient/<id>`.
pub fn export_ndjson(charts: &[Chart]) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    for chart in charts {
        write(&mut out, "Patient", patient(&chart.patient));
        for a in &chart.allergies {
            write(&mut out, "AllergyIntolerance", allergy(a));
        }
        for c in &chart.conditions {
            write(&mut out, "Condition", condition(c));
        }
        for m in &chart.medications {
            write(&mut out, "MedicationRequest", medication(m));
        }
        for o in &chart.observations {
            write(&mut out, "Observation", observation(o));
        }
        for n in &chart.notes {
            write(&mut out, "DocumentReference", document(n));
        }
    }
    out
}

/// Appends one resource as a line, `resourceType` first: serde_json sorts object keys, but people
/// (and some streaming readers) look for the type at the start of each line.
fn write(out: &mut BTreeMap<&'static str, String>, resource_type: &'static str, body: Value) {
    let body = body.to_string();
    let line = out.entry(resource_type).or_default();
    line.push_str(&format!("{{\"resourceType\":\"{resource_type}\""));
    match body.strip_prefix('{') {
        Some("}") | None => line.push('}'),
        Some(rest) => {
            line.push(',');
            line.push_str(rest);
        }
    }
    line.push('\n');
}

fn meta(version: i64) -> Value {
    json!({ "versionId": version.to_string() })
}

fn patient_ref(id: Uuid) -> Value {
    json!({ "reference": format!("Patient/{id}") })
}

fn practitioner_ref(id: Uuid) -> Value {
    json!({ "reference": format!("Practitioner/{id}") })
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }] })
}

fn patient(p: &Patient) -> Value {
    let gender = match p.sex {
        Sex::Female => "female",
        Sex::Male => "male",
        Sex::Other => "other",
        Sex::Unknown => "unknown",
    };
    json!({
        "id": p.id,
        "meta": meta(p.version),
        "extension": [
            { "url": UNIT_EXTENSION, "valueString": p.unit },
            { "url": BED_EXTENSION, "valueString": p.bed },
        ],
        "identifier": [{
            "use": "usual",
            "type": coding(r4::V2_0203, "MR", "Medical record number"),
            "system": MRN_SYSTEM,
            "value": p.mrn,
        }],
        // The given names stay one string: split on spaces they could not come back exactly.
        "name": [{ "use": "official", "family": p.name.family, "given": [p.name.given] }],
        "gender": gender,
        "birthDate": p.birth_date.to_string(),
    })
}

fn allergy(a: &Allergy) -> Value {
    let criticality = match a.criticality {
        Criticality::Low => "low",
        Criticality::High => "high",
        Criticality::Unable => "unable-to-assess",
    };
    json!({
        "id": a.id,
        "meta": meta(a.version),
        // Chartroom keeps only the allergies in force, as confirmed by the clinician who entered them.
        "clinicalStatus": coding(r4::ALLERGY_CLINICAL, "active", "Active"),
        "verificationStatus": coding(r4::ALLERGY_VERIFICATION, "confirmed", "Confirmed"),
        "criticality": criticality,
        "code": { "text": a.substance },
        "patient": patient_ref(a.patient_id),
        "reaction": [{ "manifestation": [{ "text": a.reaction }] }],
    })
}

fn condition(c: &Condition) -> Value {
    let status = match c.status {
        ClinicalStatus::Active => coding(r4::CONDITION_CLINICAL, "active", "Active"),
        ClinicalStatus::Resolved => coding(r4::CONDITION_CLINICAL, "resolved", "Resolved"),
    };
    let mut resource = json!({
        "id": c.id,
        "meta": meta(c.version),
        "clinicalStatus": status,
        "verificationStatus": coding(r4::CONDITION_VERIFICATION, "confirmed", "Confirmed"),
        "category": [coding(r4::CONDITION_CATEGORY, "problem-list-item", "Problem List Item")],
        "code": {
            "coding": [{ "system": r4::SNOMED, "code": c.code, "display": c.display }],
            "text": c.display,
        },
        "subject": patient_ref(c.patient_id),
    });
    if let Some(onset) = c.onset {
        resource["onsetDateTime"] = json!(onset.to_string());
    }
    resource
}

fn medication(m: &MedicationRequest) -> Value {
    let status = match m.status {
        MedicationStatus::Active => "active",
        MedicationStatus::OnHold => "on-hold",
        MedicationStatus::Completed => "completed",
        MedicationStatus::Stopped => "stopped",
    };
    json!({
        "id": m.id,
        "meta": meta(m.version),
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": { "text": m.medication },
        "subject": patient_ref(m.patient_id),
        "dosageInstruction": [{
            // The dose is free text ("1-2 tablets"), which a Quantity cannot always hold.
            "extension": [{ "url": DOSE_EXTENSION, "valueString": m.dose }],
            "text": format!("{} {}, {}", m.dose, m.route, m.frequency),
            "timing": { "code": { "text": m.frequency } },
            "route": { "text": m.route },
        }],
    })
}

fn observation(o: &Observation) -> Value {
    json!({
        "id": o.id,
        "meta": meta(o.version),
        "status": "final",
        "category": [coding(r4::OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")],
        "code": {
            "coding": [{ "system": r4::LOINC, "code": o.vital.loinc(), "display": o.vital.label() }],
            "text": o.vital.label(),
        },
        "subject": patient_ref(o.patient_id),
        "effectiveDateTime": format_instant(o.effective_at),
        "performer": [practitioner_ref(o.recorded_by)],
        "valueQuantity": {
            "value": o.value,
            "unit": o.vital.unit(),
            "system": r4::UCUM,
            "code": o.vital.unit(),
        },
    })
}

fn document(n: &Note) -> Value {
    let (status, doc_status, date) = match &n.status {
        NoteStatus::Draft => ("current", "preliminary", None),
        NoteStatus::Signed { signed_at } => ("current", "final", Some(*signed_at)),
        NoteStatus::EnteredInError { at, .. } => ("entered-in-error", "entered-in-error", Some(*at)),
    };
    let (code, display) = match n.kind {
        NoteKind::Nursing => (r4::NURSE_NOTE, "Nurse Note"),
        NoteKind::Progress => (r4::PROGRESS_NOTE, "Progress note"),
    };
    let mut resource = json!({
        "id": n.id,
        "meta": meta(n.version),
        "status": status,
        "docStatus": doc_status,
        "type": coding(r4::LOINC, code, display),
        "subject": patient_ref(n.patient_id),
        "author": [practitioner_ref(n.author_id)],
        "content": [{
            "attachment": {
                "contentType": "text/plain; charset=utf-8",
                "data": base64::encode(n.text.as_bytes()),
                // When the text was written; `date` below is when it became the record (signed).
                "creation": format_instant(n.created_at),
            },
        }],
    });
    if let Some(date) = date {
        resource["date"] = json!(format_instant(date));
    }
    if let NoteStatus::EnteredInError { reason, .. } = &n.status {
        resource["extension"] = json!([{ "url": ENTERED_IN_ERROR_REASON_EXTENSION, "valueString": reason }]);
    }
    if let Some(target) = n.addendum_to {
        resource["relatesTo"] =
            json!([{ "code": "appends", "target": { "reference": format!("DocumentReference/{target}") } }]);
    }
    resource
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_the_resource_type() {
        let mut out = BTreeMap::new();
        write(&mut out, "Patient", json!({ "id": "x", "active": true }));
        write(&mut out, "Patient", json!({}));
        assert_eq!(
            out["Patient"],
            "{\"resourceType\":\"Patient\",\"active\":true,\"id\":\"x\"}\n{\"resourceType\":\"Patient\"}\n"
        );
    }
}
