//! Bundle import: a Synthea-style FHIR R4 Bundle (collection or transaction) to validated Chartroom
//! charts — all or nothing: the first problem refuses the whole bundle.
//!
//! Two passes: the first indexes every entry (type, ids, fullUrl) so references can point forwards;
//! the second maps Patients first (so every other record finds its chart), then everything else in
//! bundle order.

use std::collections::{BTreeMap, HashMap};

use chartroom_domain::validate::{validate_blood_pressure, MAX_NOTE_CHARS};
use chartroom_domain::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{base64, r4, time};
use crate::{EntryRef, FhirError, Problem};
use crate::{
    BED_EXTENSION, DOSE_EXTENSION, ENTERED_IN_ERROR_REASON_EXTENSION, NOT_SPECIFIED, UNIT_EXTENSION,
};

/// Most entries a bundle may have. Synthea's biggest patient bundles hold tens of thousands; a
/// million is far beyond any real import and still bounded.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Longest `Attachment.data` looked at, checked before decoding so a huge blob costs nothing: the
/// longest note in 4-byte UTF-8 characters, grown by base64 (4/3), plus room for line breaks.
const MAX_ATTACHMENT_CHARS: usize = MAX_NOTE_CHARS * 4 * 4 / 3 + MAX_NOTE_CHARS;

/// What an import needs beyond the bundle.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Recorded as `recorded_by` of observations and `author_id` of notes: the user who imports.
    pub importer_id: Uuid,
    /// Unit for patients without the [`UNIT_EXTENSION`](crate::UNIT_EXTENSION).
    pub default_unit: String,
    /// Beds of patients without the [`BED_EXTENSION`](crate::BED_EXTENSION) are numbered per import:
    /// `<bed_prefix>001`, `<bed_prefix>002`, …
    pub bed_prefix: String,
}

impl ImportOptions {
    /// Unit `IMPORT`, beds `IMP001`, `IMP002`, …
    pub fn new(importer_id: Uuid) -> Self {
        ImportOptions { importer_id, default_unit: "IMPORT".into(), bed_prefix: "IMP".into() }
    }
}

/// The result of a successful import.
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    /// One chart per Patient, in bundle order; observations and notes newest first.
    pub charts: Vec<Chart>,
    /// Chartroom records made, per FHIR resource type (a blood-pressure panel makes two observations).
    pub imported: BTreeMap<String, u64>,
    /// Resources left out on purpose, per resource type and reason, sorted.
    pub skipped: Vec<Skipped>,
}

/// Resources of one type left out for one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub resource_type: String,
    pub count: u64,
    /// A fixed sentence (never text from the bundle).
    pub reason: String,
}

// Why resources are skipped. Fixed texts: a reason must never echo the bundle.
const NOT_IMPORTED: &str = "resource type is not imported";
const NOT_A_VITAL_SIGN: &str = "not a vital sign Chartroom records (by LOINC code)";
const NOT_FINAL: &str = "status is not final, amended or corrected";
const DATA_ABSENT: &str = "no value (dataAbsentReason)";
const PANEL_WITHOUT_BP: &str = "blood pressure panel without a systolic or diastolic component";
const NOT_ACTIVE: &str = "clinicalStatus is not active";
const REFUTED: &str = "verificationStatus is refuted or entered-in-error";
const NO_CLINICAL_STATUS: &str = "no clinicalStatus";
const NO_SNOMED: &str = "no SNOMED CT coding";
const NOT_IN_FORCE: &str = "status is cancelled, draft, entered-in-error or unknown";
const MEDICATION_REFERENCE: &str = "medicationReference is not supported";
const NO_TEXT_ATTACHMENT: &str = "no inline UTF-8 text/plain attachment";

/// Reason of a note marked entered-in-error by a system that does not say why.
const SOURCE_ENTERED_IN_ERROR: &str = "Marked entered-in-error in the source system";

/// Imports a FHIR R4 Bundle of type `collection` or `transaction`. See the crate docs for the mapping.
pub fn import_bundle(json: &[u8], options: &ImportOptions) -> Result<Import, FhirError> {
    let bundle: Value = serde_json::from_slice(json)
        .map_err(|e| FhirError::NotJson { line: e.line(), column: e.column() })?;
    let bundle = bundle.as_object().ok_or(FhirError::NotABundle("the top level is not a JSON object"))?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::NotABundle("resourceType is not \"Bundle\""));
    }
    if !matches!(bundle.get("type").and_then(Value::as_str), Some("collection" | "transaction")) {
        return Err(FhirError::UnsupportedBundleType);
    }
    let entries = match bundle.get("entry") {
        None => &[][..],
        Some(Value::Array(entries)) => entries.as_slice(),
        Some(_) => return Err(FhirError::NotABundle("entry is not an array")),
    };
    if entries.len() > MAX_ENTRIES {
        return Err(FhirError::TooManyEntries { max: MAX_ENTRIES });
    }

    let (entries, keys) = index(entries)?;
    let mut importer = Importer {
        options,
        entries: &entries,
        keys: &keys,
        charts: Vec::new(),
        chart_of_entry: HashMap::new(),
        record_ids: HashMap::new(),
        mrns: HashMap::new(),
        beds: 0,
        addenda: Vec::new(),
        imported: BTreeMap::new(),
        skipped: BTreeMap::new(),
    };
    importer.run()?;

    let mut charts = importer.charts;
    for chart in &mut charts {
        // Stable sorts: records at the same instant keep their bundle order.
        chart.observations.sort_by_key(|o| std::cmp::Reverse(o.effective_at));
        chart.notes.sort_by_key(|n| std::cmp::Reverse(n.created_at));
    }
    let skipped = importer
        .skipped
        .into_iter()
        .map(|((resource_type, reason), count)| Skipped {
            resource_type: resource_type.to_string(),
            count,
            reason: reason.to_string(),
        })
        .collect();
    Ok(Import { charts, imported: importer.imported, skipped })
}

/// One bundle entry, indexed.
struct Entry<'v> {
    at: EntryRef,
    resource_type: &'static str,
    resource: &'v Value,
    /// The FHIR id, or else the UUID of a `urn:uuid:` fullUrl: what record ids are made from.
    key: Option<String>,
}

impl Entry<'_> {
    fn fail(&self, problem: Problem) -> FhirError {
        FhirError::Entry { at: self.at.clone(), problem }
    }
}

/// First pass: every entry's type and ids, and a map from what a reference may say (`fullUrl`,
/// `Type/id`) to the entry. Two entries with the same fullUrl or type and id are refused.
fn index(entries: &[Value]) -> Result<(Vec<Entry<'_>>, HashMap<String, usize>), FhirError> {
    let mut out = Vec::with_capacity(entries.len());
    let mut keys: HashMap<String, usize> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let mut at = EntryRef { index, resource_type: None, full_url: None };
        let fail = |at: &EntryRef, problem| FhirError::Entry { at: at.clone(), problem };
        if !entry.is_object() {
            return Err(fail(&at, invalid("entry", "is not an object")));
        }
        let full_url = opt_str(entry, "fullUrl").map_err(|p| fail(&at, p))?;
        let urn_uuid = match full_url.and_then(|u| u.strip_prefix("urn:uuid:")) {
            None => None,
            Some(u) => Some(parse_uuid(u).ok_or_else(|| fail(&at, invalid("fullUrl", "is not a urn:uuid")))?),
        };
        let resource = match entry.get("resource") {
            Some(r @ Value::Object(_)) => r,
            Some(_) => return Err(fail(&at, invalid("resource", "is not an object"))),
            None => return Err(fail(&at, missing("resource"))),
        };
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .and_then(r4::resource_type)
            .ok_or_else(|| fail(&at, Problem::UnknownResourceType))?;
        at.resource_type = Some(resource_type);
        // Synthea gives a Patient the same UUID as its MRN: keep it out of messages.
        if resource_type != "Patient" {
            at.full_url = urn_uuid;
        }
        let id = match resource.get("id") {
            None => None,
            Some(Value::String(id)) if is_fhir_id(id) => Some(id.as_str()),
            Some(_) => return Err(fail(&at, invalid("id", "is not a FHIR id"))),
        };
        let key = id.map(str::to_string).or_else(|| urn_uuid.map(|u| u.to_string()));
        for k in
            [full_url.map(str::to_string), id.map(|id| format!("{resource_type}/{id}"))].into_iter().flatten()
        {
            if let Some(&first) = keys.get(&k) {
                return Err(fail(&at, Problem::DuplicateId { first }));
            }
            keys.insert(k, index);
        }
        out.push(Entry { at, resource_type, resource, key });
    }
    Ok((out, keys))
}

/// Second pass: the mapping proper.
struct Importer<'a, 'v> {
    options: &'a ImportOptions,
    entries: &'a [Entry<'v>],
    keys: &'a HashMap<String, usize>,
    charts: Vec<Chart>,
    /// Patient entry index → index into `charts`.
    chart_of_entry: HashMap<usize, usize>,
    /// Every record id made so far → the entry it came from.
    record_ids: HashMap<Uuid, usize>,
    mrns: HashMap<String, usize>,
    beds: u32,
    /// Notes that amend another: (entry index, path of the reference, chart, amended note id).
    addenda: Vec<(usize, String, usize, Uuid)>,
    imported: BTreeMap<String, u64>,
    skipped: BTreeMap<(&'static str, &'static str), u64>,
}

impl Importer<'_, '_> {
    fn run(&mut self) -> Result<(), FhirError> {
        let entries = self.entries;
        for e in entries.iter().filter(|e| e.resource_type == "Patient") {
            self.patient(e).map_err(|p| e.fail(p))?;
        }
        for e in entries {
            match e.resource_type {
                "Patient" => Ok(()),
                "AllergyIntolerance" => self.allergy(e),
                "Condition" => self.condition(e),
                "MedicationRequest" => self.medication(e),
                "Observation" => self.observation(e),
                "DocumentReference" => self.document(e),
                _ => self.skip(e, NOT_IMPORTED),
            }
            .map_err(|p| e.fail(p))?;
        }
        // An addendum must amend a note imported for the same patient (checked once all are in).
        for (index, path, chart, target) in &self.addenda {
            if !self.charts[*chart].notes.iter().any(|n| n.id == *target) {
                let problem = Problem::DanglingReference {
                    path: path.clone(),
                    expected: "DocumentReference of the same patient",
                };
                return Err(entries[*index].fail(problem));
            }
        }
        Ok(())
    }

    fn skip(&mut self, e: &Entry, reason: &'static str) -> Result<(), Problem> {
        *self.skipped.entry((e.resource_type, reason)).or_default() += 1;
        Ok(())
    }

    fn count(&mut self, resource_type: &str, n: u64) {
        *self.imported.entry(resource_type.to_string()).or_default() += n;
    }

    /// Claims a record id for an entry; a second record with the same id is refused.
    fn claim(&mut self, id: Uuid, e: &Entry) -> Result<Uuid, Problem> {
        if let Some(&first) = self.record_ids.get(&id) {
            return Err(Problem::DuplicateId { first });
        }
        self.record_ids.insert(id, e.at.index);
        Ok(id)
    }

    fn record_id(&mut self, e: &Entry) -> Result<Uuid, Problem> {
        let key = e.key.as_deref().ok_or_else(|| missing("id"))?;
        self.claim(record_uuid(e.resource_type, key), e)
    }

    /// The entry a reference points at: a fullUrl as written, else a relative `Type/id` (or an
    /// absolute URL ending in one, possibly versioned) matched on type and id.
    fn resolve(&self, reference: &str) -> Option<&Entry<'_>> {
        if let Some(&i) = self.keys.get(reference) {
            return self.entries.get(i);
        }
        let path = reference.split("/_history/").next().unwrap_or(reference);
        let mut parts = path.rsplit('/');
        let (id, resource_type) = (parts.next()?, parts.next()?);
        self.keys.get(&format!("{resource_type}/{id}")).and_then(|&i| self.entries.get(i))
    }

    /// The chart of the Patient a reference at `path` points at.
    fn patient_ref(&self, r: &Value, path: &str) -> Result<usize, Problem> {
        let reference = req_str(r, path)?;
        self.resolve(reference)
            .filter(|e| e.resource_type == "Patient")
            .and_then(|e| self.chart_of_entry.get(&e.at.index).copied())
            .ok_or_else(|| Problem::DanglingReference { path: path.into(), expected: "Patient" })
    }

    fn patient(&mut self, e: &Entry) -> Result<(), Problem> {
        let r = e.resource;
        let mrn = mrn(r)?;
        let name = name(r)?;
        let birth_date = req_str(r, "birthDate")?
            .parse::<Date>()
            .map_err(|_| invalid("birthDate", "is not a full date (YYYY-MM-DD)"))?;
        let sex = match opt_str(r, "gender")? {
            None => Sex::Unknown,
            Some("female") => Sex::Female,
            Some("male") => Sex::Male,
            Some("other") => Sex::Other,
            Some("unknown") => Sex::Unknown,
            Some(_) => return Err(invalid("gender", "is not an AdministrativeGender code")),
        };
        let unit = match extension(r, "", UNIT_EXTENSION)? {
            Some(unit) => unit.to_string(),
            None => self.options.default_unit.clone(),
        };
        let bed = match extension(r, "", BED_EXTENSION)? {
            Some(bed) => bed.to_string(),
            None => {
                self.beds += 1;
                format!("{}{:03}", self.options.bed_prefix, self.beds)
            }
        };
        let patient = Patient { id: self.record_id(e)?, mrn, name, birth_date, sex, unit, bed, version: 1 };
        patient.validate().map_err(Problem::Validation)?;
        if let Some(&first) = self.mrns.get(&patient.mrn) {
            return Err(Problem::DuplicateMrn { first });
        }
        self.mrns.insert(patient.mrn.clone(), e.at.index);
        self.chart_of_entry.insert(e.at.index, self.charts.len());
        self.charts.push(Chart {
            patient,
            allergies: Vec::new(),
            conditions: Vec::new(),
            medications: Vec::new(),
            observations: Vec::new(),
            notes: Vec::new(),
        });
        self.count("Patient", 1);
        Ok(())
    }

    fn allergy(&mut self, e: &Entry) -> Result<(), Problem> {
        let r = e.resource;
        // No clinicalStatus is taken as active: an allergy shown in error is the safe side.
        if !matches!(first_code(r, "clinicalStatus")?, None | Some("active")) {
            return self.skip(e, NOT_ACTIVE);
        }
        if matches!(first_code(r, "verificationStatus")?, Some("refuted" | "entered-in-error")) {
            return self.skip(e, REFUTED);
        }
        let chart = self.patient_ref(r, "patient.reference")?;
        let substance = concept_text(r, "code")?.ok_or_else(|| missing("code.text"))?.to_string();
        let mut reactions: Vec<&str> = Vec::new();
        for i in 0..array(r, "reaction")?.len() {
            for j in 0..array(r, &format!("reaction[{i}].manifestation"))?.len() {
                let text = concept_text(r, &format!("reaction[{i}].manifestation[{j}]"))?;
                if let Some(text) = text.filter(|t| !reactions.contains(t)) {
                    reactions.push(text);
                }
            }
        }
        let reaction = if reactions.is_empty() { "not recorded".to_string() } else { reactions.join(", ") };
        let criticality = match opt_str(r, "criticality")? {
            Some("low") => Criticality::Low,
            Some("high") => Criticality::High,
            // Not assessed is not "low": say so.
            Some("unable-to-assess") | None => Criticality::Unable,
            Some(_) => return Err(invalid("criticality", "is not an AllergyIntoleranceCriticality code")),
        };
        let allergy = Allergy {
            id: self.record_id(e)?,
            patient_id: self.charts[chart].patient.id,
            substance,
            reaction,
            criticality,
            version: 1,
        };
        allergy.validate().map_err(Problem::Validation)?;
        self.charts[chart].allergies.push(allergy);
        self.count("AllergyIntolerance", 1);
        Ok(())
    }

    fn condition(&mut self, e: &Entry) -> Result<(), Problem> {
        let r = e.resource;
        if matches!(first_code(r, "verificationStatus")?, Some("refuted" | "entered-in-error")) {
            return self.skip(e, REFUTED);
        }
        let status = match first_code(r, "clinicalStatus")? {
            None => return self.skip(e, NO_CLINICAL_STATUS),
            Some("active" | "recurrence" | "relapse") => ClinicalStatus::Active,
            Some("inactive" | "remission" | "resolved") => ClinicalStatus::Resolved,
            Some(_) => return Err(invalid("clinicalStatus", "is not a condition-clinical code")),
        };
        let codings = array(r, "code.coding")?;
        let Some(i) =
            codings.iter().position(|c| c.get("system").and_then(Value::as_str) == Some(r4::SNOMED))
        else {
            return self.skip(e, NO_SNOMED);
        };
        let code = req_str(r, &format!("code.coding[{i}].code"))?.to_string();
        let display = match opt_str(r, &format!("code.coding[{i}].display"))? {
            Some(display) => display,
            None => opt_str(r, "code.text")?.ok_or_else(|| missing(format!("code.coding[{i}].display")))?,
        }
        .to_string();
        // A partial onset date (year only) has no domain equivalent and is left out.
        let onset = opt_str(r, "onsetDateTime")?.and_then(time::date_part);
        let chart = self.patient_ref(r, "subject.reference")?;
        let condition = Condition {
            id: self.record_id(e)?,
            patient_id: self.charts[chart].patient.id,
            code,
            display,
            onset,
            status,
            version: 1,
        };
        condition.validate().map_err(Problem::Validation)?;
        self.charts[chart].conditions.push(condition);
        self.count("Condition", 1);
        Ok(())
    }

    fn medication(&mut self, e: &Entry) -> Result<(), Problem> {
        let r = e.resource;
        let status = match req_str(r, "status")? {
            "active" => MedicationStatus::Active,
            "on-hold" => MedicationStatus::OnHold,
            "completed" => MedicationStatus::Completed,
            "stopped" => MedicationStatus::Stopped,
            "cancelled" | "draft" | "entered-in-error" | "unknown" => return self.skip(e, NOT_IN_FORCE),
            _ => return Err(invalid("status", "is not a MedicationRequest status")),
        };
        let medication = match concept_text(r, "medicationCodeableConcept")? {
            Some(m) => m.to_string(),
            None if at(r, "medicationReference").is_some() => return self.skip(e, MEDICATION_REFERENCE),
            None => return Err(missing("medicationCodeableConcept.text")),
        };
        let chart = self.patient_ref(r, "subject.reference")?;
        // Only the first dosage instruction: the domain has one dose, route and frequency.
        let dosage = "dosageInstruction[0]";
        let dose = match extension(r, dosage, DOSE_EXTENSION)? {
            Some(dose) => Some(dose.to_string()),
            None => dose_quantity(r)?,
        };
        // A free-text instruction with no structured dose goes in the dose column, whole.
        let dose = match dose {
            Some(dose) => dose,
            None => opt_str(r, "dosageInstruction[0].text")?.unwrap_or(NOT_SPECIFIED).to_string(),
        };
        let route = concept_text(r, "dosageInstruction[0].route")?.unwrap_or(NOT_SPECIFIED).to_string();
        let frequency = match concept_text(r, "dosageInstruction[0].timing.code")? {
            Some(f) => f.to_string(),
            None => describe_timing(r)?.unwrap_or_else(|| NOT_SPECIFIED.to_string()),
        };
        let request = MedicationRequest {
            id: self.record_id(e)?,
            patient_id: self.charts[chart].patient.id,
            medication,
            dose,
            route,
            frequency,
            status,
            version: 1,
        };
        request.validate().map_err(Problem::Validation)?;
        self.charts[chart].medications.push(request);
        self.count("MedicationRequest", 1);
        Ok(())
    }

    fn observation(&mut self, e: &Entry) -> Result<(), Problem> {
        let r = e.resource;
        let codes = loinc_codes(r, "code")?;
        let panel = codes.contains(&r4::BP_PANEL);
        let vital = codes.iter().find_map(|c| r4::vital_from_loinc(c));
        if !panel && vital.is_none() {
            return self.skip(e, NOT_A_VITAL_SIGN);
        }
        match req_str(r, "status")? {
            "final" | "amended" | "corrected" => {}
            "registered" | "preliminary" | "cancelled" | "entered-in-error" | "unknown" => {
                return self.skip(e, NOT_FINAL)
            }
            _ => return Err(invalid("status", "is not an ObservationStatus code")),
        }
        let chart = self.patient_ref(r, "subject.reference")?;
        let effective_at = effective(r)?;

        // (id, vital sign, value) of each record this resource makes.
        let mut readings: Vec<(Uuid, VitalSign, f64)> = Vec::new();
        if panel {
            let key = e.key.as_deref().ok_or_else(|| missing("id"))?;
            for i in 0..array(r, "component")?.len() {
                let component = format!("component[{i}]");
                let codes = loinc_codes(r, &format!("{component}.code"))?;
                let Some(vital) = codes
                    .iter()
                    .filter_map(|c| r4::vital_from_loinc(c))
                    .find(|v| matches!(v, VitalSign::SystolicBp | VitalSign::DiastolicBp))
                else {
                    continue;
                };
                let value = quantity(r, &format!("{component}.valueQuantity"), vital)?;
                // The two halves of one panel need ids of their own, stable across imports.
                let id = derived_uuid(&format!("Observation/{key}#{}", vital.loinc()));
                readings.push((self.claim(id, e)?, vital, value));
            }
            if readings.is_empty() {
                return self.skip(e, PANEL_WITHOUT_BP);
            }
            let of = |v: VitalSign| readings.iter().find(|r| r.1 == v).map(|r| r.2);
            if let (Some(systolic), Some(diastolic)) = (of(VitalSign::SystolicBp), of(VitalSign::DiastolicBp))
            {
                validate_blood_pressure(systolic, diastolic).map_err(Problem::Validation)?;
            }
        } else if let Some(vital) = vital {
            if at(r, "valueQuantity").is_none() && at(r, "dataAbsentReason").is_some() {
                return self.skip(e, DATA_ABSENT);
            }
            let value = quantity(r, "valueQuantity", vital)?;
            readings.push((self.record_id(e)?, vital, value));
        }

        let patient_id = self.charts[chart].patient.id;
        for (id, vital, value) in readings {
            let observation = Observation {
                id,
                patient_id,
                vital,
                value,
                effective_at,
                recorded_by: self.options.importer_id,
                version: 1,
            };
            observation.validate().map_err(Problem::Validation)?;
            self.charts[chart].observations.push(observation);
            self.count("Observation", 1);
        }
        Ok(())
    }

    fn document(&mut self, e: &Entry) -> Result<(), Problem> {
        let r = e.resource;
        // Synthea marks every note `superseded`; it is still the note's text, so it is imported.
        let entered_in_error = match req_str(r, "status")? {
            "current" | "superseded" => false,
            "entered-in-error" => true,
            _ => return Err(invalid("status", "is not a DocumentReferenceStatus code")),
        };
        let Some(attachment) = text_attachment(r)? else {
            return self.skip(e, NO_TEXT_ATTACHMENT);
        };
        let data_path = format!("{attachment}.data");
        let data = req_str(r, &data_path)?;
        if data.len() > MAX_ATTACHMENT_CHARS {
            return Err(invalid(data_path, "is longer than the longest note"));
        }
        let bytes = base64::decode(data).ok_or_else(|| invalid(data_path.clone(), "is not base64"))?;
        let text = String::from_utf8(bytes).map_err(|_| invalid(data_path, "is not UTF-8 text"))?;
        let chart = self.patient_ref(r, "subject.reference")?;
        let kind = if loinc_codes(r, "type")?.contains(&r4::NURSE_NOTE) {
            NoteKind::Nursing
        } else {
            NoteKind::Progress
        };
        let date = opt_instant(r, "date")?;
        let created_at = match opt_instant(r, &format!("{attachment}.creation"))?.or(date) {
            Some(t) => t,
            None => opt_instant(r, "context.period.start")?.ok_or_else(|| missing("date"))?,
        };
        let doc_status = opt_str(r, "docStatus")?;
        let status = if entered_in_error || doc_status == Some("entered-in-error") {
            let reason =
                extension(r, "", ENTERED_IN_ERROR_REASON_EXTENSION)?.unwrap_or(SOURCE_ENTERED_IN_ERROR);
            NoteStatus::EnteredInError { reason: reason.to_string(), at: date.unwrap_or(created_at) }
        } else {
            match doc_status {
                Some("preliminary") => NoteStatus::Draft,
                // Without docStatus a note in a record system is taken as final (signed).
                Some("final" | "amended") | None => {
                    NoteStatus::Signed { signed_at: date.unwrap_or(created_at) }
                }
                Some(_) => return Err(invalid("docStatus", "is not a CompositionStatus code")),
            }
        };
        let mut addendum_to = None;
        for i in 0..array(r, "relatesTo")?.len() {
            if opt_str(r, &format!("relatesTo[{i}].code"))? != Some("appends") {
                continue;
            }
            let path = format!("relatesTo[{i}].target.reference");
            let target = self
                .resolve(req_str(r, &path)?)
                .filter(|t| t.resource_type == "DocumentReference")
                .and_then(|t| t.key.as_deref().map(|k| record_uuid(t.resource_type, k)))
                .ok_or_else(|| Problem::DanglingReference {
                    path: path.clone(),
                    expected: "DocumentReference",
                })?;
            self.addenda.push((e.at.index, path, chart, target));
            addendum_to = Some(target);
        }
        let note = Note {
            id: self.record_id(e)?,
            patient_id: self.charts[chart].patient.id,
            author_id: self.options.importer_id,
            kind,
            text,
            created_at,
            status,
            addendum_to,
            version: 1,
        };
        note.validate().map_err(Problem::Validation)?;
        self.charts[chart].notes.push(note);
        self.count("DocumentReference", 1);
        Ok(())
    }
}

/// The MRN: the identifier typed `MR`, else the first one. A UUID-shaped MRN (Synthea's) loses its
/// hyphens to fit the domain's 32 characters.
fn mrn(r: &Value) -> Result<String, Problem> {
    let identifiers = array(r, "identifier")?;
    let typed_mr = |i: &usize| {
        array(r, &format!("identifier[{i}].type.coding"))
            .is_ok_and(|codings| codings.iter().any(|c| c.get("code").and_then(Value::as_str) == Some("MR")))
    };
    let i = (0..identifiers.len())
        .find(typed_mr)
        .or((!identifiers.is_empty()).then_some(0))
        .ok_or_else(|| missing("identifier"))?;
    let value = req_str(r, &format!("identifier[{i}].value"))?;
    Ok(match parse_uuid(value) {
        Some(uuid) => uuid.simple().to_string(),
        None => value.to_string(),
    })
}

/// The `official` name, else the first: family, and the given names joined by spaces.
fn name(r: &Value) -> Result<HumanName, Problem> {
    let names = array(r, "name")?;
    let i = names
        .iter()
        .position(|n| n.get("use").and_then(Value::as_str) == Some("official"))
        .or((!names.is_empty()).then_some(0))
        .ok_or_else(|| missing("name"))?;
    let family = req_str(r, &format!("name[{i}].family"))?.to_string();
    let mut given = Vec::new();
    for j in 0..array(r, &format!("name[{i}].given"))?.len() {
        given.push(req_str(r, &format!("name[{i}].given[{j}]"))?);
    }
    if given.is_empty() {
        return Err(missing(format!("name[{i}].given")));
    }
    Ok(HumanName { family, given: given.join(" ") })
}

/// A Synthea-style structured dose, `doseAndRate[0].doseQuantity`: its value and unit if any.
fn dose_quantity(r: &Value) -> Result<Option<String>, Problem> {
    let base = "dosageInstruction[0].doseAndRate[0].doseQuantity";
    let Some(value) = opt_number(r, &format!("{base}.value"))? else {
        return Ok(None);
    };
    Ok(Some(match opt_str(r, &format!("{base}.unit"))? {
        Some(unit) => format!("{value} {unit}"),
        None => value.to_string(),
    }))
}

/// A readable frequency from a Synthea-style `timing.repeat` ("twice per day", "once every 4
/// hours as needed"), if it has a period.
fn describe_timing(r: &Value) -> Result<Option<String>, Problem> {
    let base = "dosageInstruction[0].timing.repeat";
    let period = opt_number(r, &format!("{base}.period"))?;
    let unit_path = format!("{base}.periodUnit");
    let (Some(period), Some(unit)) = (period, opt_str(r, &unit_path)?) else {
        return Ok(None);
    };
    let unit = match unit {
        "s" => "second",
        "min" => "minute",
        "h" => "hour",
        "d" => "day",
        "wk" => "week",
        "mo" => "month",
        "a" => "year",
        _ => return Err(invalid(unit_path, "is not a UnitsOfTime code")),
    };
    let times = match opt_number(r, &format!("{base}.frequency"))? {
        None | Some(1.0) => "once".to_string(),
        Some(2.0) => "twice".to_string(),
        Some(f) => format!("{f} times"),
    };
    let mut text =
        if period == 1.0 { format!("{times} per {unit}") } else { format!("{times} every {period} {unit}s") };
    if at(r, "dosageInstruction[0].asNeededBoolean") == Some(&Value::Bool(true)) {
        text.push_str(" as needed");
    }
    Ok(Some(text))
}

/// A vital-sign value from a `Quantity` at `base`, checked to be in the vital sign's UCUM unit.
fn quantity(r: &Value, base: &str, vital: VitalSign) -> Result<f64, Problem> {
    let value_path = format!("{base}.value");
    let value = opt_number(r, &value_path)?.ok_or_else(|| missing(value_path))?;
    let system_path = format!("{base}.system");
    if opt_str(r, &system_path)?.is_some_and(|s| s != r4::UCUM) {
        return Err(invalid(system_path, "is not UCUM"));
    }
    // A pound is not a kilogram: a unit other than the one Chartroom stores is refused, not guessed.
    let (code_path, unit_path) = (format!("{base}.code"), format!("{base}.unit"));
    let (path, unit) = match (opt_str(r, &code_path)?, opt_str(r, &unit_path)?) {
        (Some(code), _) => (code_path, code),
        (None, Some(unit)) => (unit_path, unit),
        (None, None) => return Err(missing(code_path)),
    };
    if unit != vital.unit() {
        return Err(invalid(path, format!("is not the UCUM unit {}", vital.unit())));
    }
    Ok(value)
}

fn effective(r: &Value) -> Result<Timestamp, Problem> {
    for path in ["effectiveDateTime", "effectiveInstant"] {
        if let Some(t) = opt_instant(r, path)? {
            return Ok(t);
        }
    }
    Err(missing("effectiveDateTime"))
}

/// The path of the first attachment that is inline UTF-8 `text/plain`.
fn text_attachment(r: &Value) -> Result<Option<String>, Problem> {
    for i in 0..array(r, "content")?.len() {
        let base = format!("content[{i}].attachment");
        let Some(content_type) = opt_str(r, &format!("{base}.contentType"))? else { continue };
        let mut params = content_type.split(';');
        let is_text = params.next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/plain"));
        let utf8 = params.filter_map(|p| p.split_once('=')).all(|(k, v)| {
            let v = v.trim().trim_matches('"');
            !k.trim().eq_ignore_ascii_case("charset")
                || v.eq_ignore_ascii_case("utf-8")
                || v.eq_ignore_ascii_case("utf8")
                || v.eq_ignore_ascii_case("us-ascii")
        });
        if is_text && utf8 && at(r, &format!("{base}.data")).is_some() {
            return Ok(Some(base));
        }
    }
    Ok(None)
}

/// A stable record id: a FHIR id that is a UUID is kept, any other becomes a UUIDv8 of its type and id.
pub(crate) fn record_uuid(resource_type: &str, id: &str) -> Uuid {
    parse_uuid(id).unwrap_or_else(|| derived_uuid(&format!("{resource_type}/{id}")))
}

/// A UUIDv8 made of the first 16 bytes of SHA-256 of `name` (version and variant bits set).
fn derived_uuid(name: &str) -> Uuid {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A UUID in its usual hyphenated form (other forms `uuid` accepts are not what FHIR ids look like).
fn parse_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// FHIR `id`: 1–64 of `A-Z a-z 0-9 - .`.
fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

// Navigation of a resource by FHIR-style paths (`a.b[2].c`), so that an error names exactly the
// element it is about. A JSON `null` counts as absent.

fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.')
        .try_fold(v, |v, segment| match segment.split_once('[') {
            Some((name, index)) => v.get(name)?.get(index.strip_suffix(']')?.parse::<usize>().ok()?),
            None => v.get(segment),
        })
        .filter(|v| !v.is_null())
}

fn opt_str<'v>(v: &'v Value, path: &str) -> Result<Option<&'v str>, Problem> {
    match at(v, path) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(path, "is not a string")),
    }
}

fn req_str<'v>(v: &'v Value, path: &str) -> Result<&'v str, Problem> {
    opt_str(v, path)?.ok_or_else(|| missing(path))
}

fn opt_number(v: &Value, path: &str) -> Result<Option<f64>, Problem> {
    match at(v, path) {
        None => Ok(None),
        Some(n) => n.as_f64().map(Some).ok_or_else(|| invalid(path, "is not a number")),
    }
}

fn opt_instant(v: &Value, path: &str) -> Result<Option<Timestamp>, Problem> {
    match opt_str(v, path)? {
        None => Ok(None),
        Some(s) => time::parse_date_time(s)
            .map(Some)
            .ok_or_else(|| invalid(path, "is not a dateTime with a time and a timezone")),
    }
}

/// The elements of an array (none if absent).
fn array<'v>(v: &'v Value, path: &str) -> Result<&'v [Value], Problem> {
    match at(v, path) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(path, "is not an array")),
    }
}

/// `text` of a CodeableConcept, else the display of its first coding that has one.
fn concept_text<'v>(v: &'v Value, concept: &str) -> Result<Option<&'v str>, Problem> {
    let text = opt_str(v, &join(concept, "text"))?;
    if text.is_some_and(|t| !t.trim().is_empty()) {
        return Ok(text);
    }
    for i in 0..array(v, &join(concept, "coding"))?.len() {
        if let Some(display) = opt_str(v, &join(concept, &format!("coding[{i}].display")))? {
            return Ok(Some(display));
        }
    }
    Ok(None)
}

/// The first code in a CodeableConcept's codings (status elements have one coding).
fn first_code<'v>(v: &'v Value, concept: &str) -> Result<Option<&'v str>, Problem> {
    for i in 0..array(v, &join(concept, "coding"))?.len() {
        if let Some(code) = opt_str(v, &join(concept, &format!("coding[{i}].code")))? {
            return Ok(Some(code));
        }
    }
    Ok(None)
}

/// The LOINC codes of a CodeableConcept.
fn loinc_codes<'v>(v: &'v Value, concept: &str) -> Result<Vec<&'v str>, Problem> {
    let mut codes = Vec::new();
    for i in 0..array(v, &join(concept, "coding"))?.len() {
        let coding = join(concept, &format!("coding[{i}]"));
        if opt_str(v, &join(&coding, "system"))? == Some(r4::LOINC) {
            codes.extend(opt_str(v, &join(&coding, "code"))?);
        }
    }
    Ok(codes)
}

/// The `valueString` of the extension with `url` on the element at `base`.
fn extension<'v>(v: &'v Value, base: &str, url: &str) -> Result<Option<&'v str>, Problem> {
    let extensions = join(base, "extension");
    for i in 0..array(v, &extensions)?.len() {
        if opt_str(v, &format!("{extensions}[{i}].url"))? == Some(url) {
            return req_str(v, &format!("{extensions}[{i}].valueString")).map(Some);
        }
    }
    Ok(None)
}

fn join(base: &str, rest: &str) -> String {
    if base.is_empty() {
        rest.to_string()
    } else {
        format!("{base}.{rest}")
    }
}

fn missing(path: impl Into<String>) -> Problem {
    Problem::Missing(path.into())
}

fn invalid(path: impl Into<String>, why: impl Into<String>) -> Problem {
    Problem::Invalid { path: path.into(), why: why.into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_kept_or_derived_stably() {
        let uuid = "0b8a3e0e-4e4f-4d2a-9d7c-3f1c2a5b6c7d";
        assert_eq!(record_uuid("Patient", uuid).to_string(), uuid);
        let derived = record_uuid("Patient", "example-1");
        assert_eq!(derived, record_uuid("Patient", "example-1"));
        assert_ne!(derived, record_uuid("Observation", "example-1"));
        assert_eq!(derived.get_version_num(), 8);
        assert_eq!(derived.get_variant(), uuid::Variant::RFC4122);
        // The simple (unhyphenated) form is an ordinary id, not a UUID.
        assert_ne!(record_uuid("Patient", &uuid.replace('-', "")).to_string(), uuid);
    }

    #[test]
    fn paths_navigate_and_type_check() {
        let v = json!({"a": {"b": [{"c": "x"}, {"c": 3}]}, "n": null});
        assert_eq!(opt_str(&v, "a.b[0].c"), Ok(Some("x")));
        assert_eq!(opt_str(&v, "a.b[2].c"), Ok(None));
        assert_eq!(opt_str(&v, "n"), Ok(None));
        assert_eq!(req_str(&v, "a.x"), Err(missing("a.x")));
        assert_eq!(opt_str(&v, "a.b[1].c"), Err(invalid("a.b[1].c", "is not a string")));
        assert_eq!(array(&v, "a.b").map(<[Value]>::len), Ok(2));
    }

    #[test]
    fn synthea_timing_reads_as_text() {
        let dosage = |repeat: Value, prn: bool| json!({"dosageInstruction": [{"timing": {"repeat": repeat}, "asNeededBoolean": prn}]});
        let text = |r: Value| describe_timing(&r).unwrap();
        assert_eq!(
            text(dosage(json!({"frequency": 1, "period": 1.0, "periodUnit": "d"}), false)).unwrap(),
            "once per day"
        );
        assert_eq!(
            text(dosage(json!({"frequency": 2, "period": 1, "periodUnit": "d"}), false)).unwrap(),
            "twice per day"
        );
        assert_eq!(
            text(dosage(json!({"frequency": 1, "period": 4, "periodUnit": "h"}), true)).unwrap(),
            "once every 4 hours as needed"
        );
        assert_eq!(
            text(dosage(json!({"frequency": 3, "period": 1, "periodUnit": "wk"}), false)).unwrap(),
            "3 times per week"
        );
        assert_eq!(text(json!({})), None);
    }
}
