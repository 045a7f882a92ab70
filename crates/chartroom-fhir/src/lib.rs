//! FHIR R4 import and export for Chartroom records: Synthea-style Bundles in ([`import_bundle`]),
//! FHIR Bulk Data NDJSON out ([`export_ndjson`]).
//!
//! Pure logic like `chartroom-domain`: bytes in, records out (and back). No IO, no clock.
//!
//! # Mapping
//!
//! * `Patient` ↔ `Patient`: MRN = the `identifier` typed `MR` (else the first one), name = the
//!   `official` (else the first) `name` with its given names joined by spaces, `gender`,
//!   `birthDate`; unit and bed in the [`UNIT_EXTENSION`] and [`BED_EXTENSION`] extensions.
//! * `Allergy` ↔ `AllergyIntolerance`: substance = `code.text` (else a coding's display), reaction =
//!   the `reaction[].manifestation[]` texts joined, `criticality`. Only active, not refuted ones.
//! * `Condition` ↔ `Condition`: the SNOMED CT coding of `code`, `clinicalStatus`, onset = the date of
//!   `onsetDateTime`.
//! * `MedicationRequest` ↔ `MedicationRequest`: `medicationCodeableConcept`, `status`, and the first
//!   `dosageInstruction`: dose in the [`DOSE_EXTENSION`] (import also reads Synthea's
//!   `doseQuantity`, else the instruction's `text`), `route.text`, `timing.code.text` (import also
//!   reads Synthea's `timing.repeat` as "twice per day").
//! * `Observation` ↔ `Observation`, one per vital sign by LOINC code (`2708-6` is accepted for SpO2);
//!   import splits a `85354-9` blood-pressure panel into systolic and diastolic observations.
//! * `Note` ↔ `DocumentReference` with an inline base64 `text/plain` attachment: draft = `docStatus`
//!   `preliminary`, signed = `final` signed at `date`, entered-in-error = `status` `entered-in-error`
//!   (reason in the [`ENTERED_IN_ERROR_REASON_EXTENSION`]), written at `attachment.creation`,
//!   addendum = `relatesTo` `appends`, nursing = LOINC type `34746-8` (anything else is progress).
//! * Everything else (Encounter, Claim, ExplanationOfBenefit, Procedure, Immunization, other
//!   Observations, …) is skipped and counted per resource type and reason in [`Import::skipped`].
//!
//! # What a round trip (export, then import) does not carry
//!
//! All other fields round-trip exactly (tested with `chartroom-synth` charts), given charts whose
//! observations and notes are newest first, as [`Chart`](chartroom_domain::Chart) documents.
//!
//! * `version`: exported as `meta.versionId`, but every imported record starts at version 1.
//! * `Observation.recorded_by` and `Note.author_id`: exported as `performer` / `author`
//!   (`Practitioner/<id>`), but an import attributes every record to [`ImportOptions::importer_id`]
//!   — the references point at accounts of the exporting station, not of the importing one.
//! * Observation values go through JSON decimals: exact for values with up to 15 significant digits
//!   (every real vital sign); instants keep milliseconds.
//! * Timestamps after the year 9999 are not representable in FHIR (not checked on export).
//!
//! # Import choices
//!
//! * Unit and bed: FHIR has no place for them, so they come from the Chartroom extensions if present
//!   (a Chartroom export), else the unit is [`ImportOptions::default_unit`] and beds are numbered per
//!   import in bundle order: `<bed_prefix>001`, `<bed_prefix>002`, … (beds must be codes, so "—" is
//!   not an option).
//! * Ids: a FHIR id (or, without one, a `urn:uuid:` fullUrl) that is a UUID is kept; any other id
//!   becomes a stable UUIDv8 from SHA-256 of `"<resourceType>/<id>"`. The two halves of a blood
//!   pressure panel get UUIDv8s of `"Observation/<id>#<LOINC>"`.
//! * Synthea's MRN is a 36-character UUID, longer than the domain's 32-character limit: an MRN in
//!   UUID form is stored without its hyphens (32 hex digits, still unique).
//! * Missing pieces the domain requires get explicit placeholders rather than guesses: an allergy
//!   without reaction gets "not recorded", without criticality `Unable` (unable to assess); a
//!   medication without route, dose or frequency gets "not specified" (see [`NOT_SPECIFIED`]).
//! * `imported` counts Chartroom records, so a blood-pressure panel counts as two observations.
//!
//! Errors name an entry by index, resource type and (except for a Patient, whose id Synthea also uses
//! as its MRN) its `urn:uuid:` fullUrl, plus the path of the offending element — never a value.

#![forbid(unsafe_code)]

mod base64;
mod export;
mod import;
mod r4;
mod time;

use std::fmt;

use chartroom_domain::ValidationError;
use uuid::Uuid;

pub use export::export_ndjson;
pub use import::{import_bundle, Import, ImportOptions, Skipped, MAX_ENTRIES};
/// RFC 3339 / FHIR `dateTime` with a zone, to a UTC timestamp (also used for command-line times).
pub use time::parse_date_time;

/// Extension on `Patient` (`valueString`): the Chartroom unit (ward) the patient is on.
pub const UNIT_EXTENSION: &str = "https://chartroom.example/fhir/StructureDefinition/unit";
/// Extension on `Patient` (`valueString`): the bed within the unit.
pub const BED_EXTENSION: &str = "https://chartroom.example/fhir/StructureDefinition/bed";
/// Extension on `MedicationRequest.dosageInstruction` (`valueString`): the dose as Chartroom holds it
/// (free text like "2.5 mg" or "1-2 tablets", which a FHIR `Quantity` cannot always carry).
pub const DOSE_EXTENSION: &str = "https://chartroom.example/fhir/StructureDefinition/dose";
/// Extension on `DocumentReference` (`valueString`): why a note was marked entered-in-error.
pub const ENTERED_IN_ERROR_REASON_EXTENSION: &str =
    "https://chartroom.example/fhir/StructureDefinition/entered-in-error-reason";
/// `Identifier.system` of Chartroom MRNs.
pub const MRN_SYSTEM: &str = "https://chartroom.example/fhir/sid/mrn";
/// Placeholder for a required medication detail the source does not give.
pub const NOT_SPECIFIED: &str = "not specified";

/// Why an import was refused. Messages and `Debug` carry only paths, indices, resource types and
/// `urn:uuid:` resource ids — never a value from the bundle (it may be PHI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirError {
    /// serde_json's own message is not used: a type error there can quote the input.
    #[error("not JSON (syntax error at line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("not a FHIR Bundle: {0}")]
    NotABundle(&'static str),
    #[error("unsupported Bundle.type (only collection and transaction are imported)")]
    UnsupportedBundleType,
    #[error("too many entries (at most {max} are accepted)")]
    TooManyEntries { max: usize },
    #[error("{at}: {problem}")]
    Entry { at: EntryRef, problem: Problem },
}

impl FhirError {
    /// A stable machine-readable code, for the UI and logs.
    pub fn code(&self) -> &'static str {
        match self {
            FhirError::NotJson { .. } => "fhir.not_json",
            FhirError::NotABundle(_) => "fhir.not_a_bundle",
            FhirError::UnsupportedBundleType => "fhir.unsupported_bundle_type",
            FhirError::TooManyEntries { .. } => "fhir.too_many_entries",
            FhirError::Entry { problem, .. } => match problem {
                Problem::UnknownResourceType => "fhir.entry.unknown_resource_type",
                Problem::Missing(_) => "fhir.entry.missing",
                Problem::Invalid { .. } => "fhir.entry.invalid",
                Problem::DanglingReference { .. } => "fhir.entry.dangling_reference",
                Problem::DuplicateId { .. } => "fhir.entry.duplicate_id",
                Problem::DuplicateMrn { .. } => "fhir.entry.duplicate_mrn",
                Problem::Validation(_) => "fhir.entry.validation",
            },
        }
    }

    /// The index of the offending entry, if the error is about one.
    pub fn entry_index(&self) -> Option<usize> {
        match self {
            FhirError::Entry { at, .. } => Some(at.index),
            _ => None,
        }
    }
}

/// Which entry of a bundle an error is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    /// Position in `Bundle.entry`, from 0.
    pub index: usize,
    /// The entry's resource type, if it is an R4 resource type (never free text from the bundle).
    pub resource_type: Option<&'static str>,
    /// The entry's `urn:uuid:` fullUrl, if it has one (not given for a Patient: Synthea uses the
    /// same UUID as the patient's MRN).
    pub full_url: Option<Uuid>,
}

impl fmt::Display for EntryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}", self.index)?;
        match (self.resource_type, self.full_url) {
            (Some(t), Some(u)) => write!(f, " ({t} urn:uuid:{u})"),
            (Some(t), None) => write!(f, " ({t})"),
            (None, Some(u)) => write!(f, " (urn:uuid:{u})"),
            (None, None) => Ok(()),
        }
    }
}

/// What is wrong with an entry. Paths are FHIR element paths inside the resource, like
/// `component[1].valueQuantity.value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("resourceType is missing or not an R4 resource type")]
    UnknownResourceType,
    #[error("{0} is missing")]
    Missing(String),
    #[error("{path} {why}")]
    Invalid { path: String, why: String },
    #[error("{path} does not resolve to a {expected} in the bundle")]
    DanglingReference { path: String, expected: &'static str },
    #[error("duplicate id (the same record as entry {first})")]
    DuplicateId { first: usize },
    #[error("duplicate MRN (the same as entry {first})")]
    DuplicateMrn { first: usize },
    #[error("fails validation: {0}")]
    Validation(ValidationError),
}
