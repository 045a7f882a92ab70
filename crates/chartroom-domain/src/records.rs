//! FHIR R4-shaped clinical records (DESIGN §9). Every record carries a server-assigned `version`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Timestamp;

/// A calendar date (birth dates, onset dates), `YYYY-MM-DD` on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        (1..=days).contains(&day).then_some(Date { year, month, day })
    }

    /// Whole years between this date and `on` (age).
    pub fn years_until(&self, on: Timestamp) -> i64 {
        let (y, m, d, ..) = on.to_civil();
        let mut age = y - i64::from(self.year);
        if (m, d) < (u32::from(self.month), u32::from(self.day)) {
            age -= 1;
        }
        age
    }
}

/// On the wire a date is a string in `YYYY-MM-DD` form.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Date {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Date {}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl TryFrom<String> for Date {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::str::FromStr for Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || "expected a date as YYYY-MM-DD".to_string();
        let mut it = s.splitn(3, '-');
        let (y, m, d) = (it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return Err(bad());
        }
        let parse = |x: &str| x.parse::<u16>().map_err(|_| bad());
        let year = i32::from(parse(y)?);
        let (month, day) =
            (u8::try_from(parse(m)?).map_err(|_| bad())?, u8::try_from(parse(d)?).map_err(|_| bad())?);
        Date::new(year, month, day).ok_or_else(bad)
    }
}

impl From<Date> for String {
    fn from(d: Date) -> String {
        d.to_string()
    }
}

/// Administrative sex (FHIR `AdministrativeGender`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    pub fn letter(self) -> char {
        match self {
            Sex::Female => 'F',
            Sex::Male => 'M',
            Sex::Other => 'O',
            Sex::Unknown => 'U',
        }
    }
}

/// A person's name. `Debug` prints `***`: a stray `{:?}` in a log or panic must not leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HumanName {
    pub family: String,
    pub given: String,
}

impl std::fmt::Display for HumanName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {}", self.family.to_uppercase(), self.given)
    }
}

/// FHIR `Patient`, with the ward placement a station needs. `Debug` shows only ids and placement.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Patient {
    pub id: Uuid,
    pub mrn: String,
    pub name: HumanName,
    pub birth_date: Date,
    pub sex: Sex,
    pub unit: String,
    pub bed: String,
    pub version: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Criticality {
    Low,
    High,
    Unable,
}

/// FHIR `AllergyIntolerance`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Allergy {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub substance: String,
    pub reaction: String,
    pub criticality: Criticality,
    pub version: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ClinicalStatus {
    Active,
    Resolved,
}

/// FHIR `Condition` (problem list entry), coded in SNOMED CT.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Condition {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub code: String,
    pub display: String,
    pub onset: Option<Date>,
    pub status: ClinicalStatus,
    pub version: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MedicationStatus {
    Active,
    OnHold,
    Completed,
    Stopped,
}

/// FHIR `MedicationRequest`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MedicationRequest {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub medication: String,
    pub dose: String,
    pub route: String,
    pub frequency: String,
    pub status: MedicationStatus,
    pub version: i64,
}

/// The vital signs Chartroom records, each with its LOINC code and UCUM unit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VitalSign {
    HeartRate,
    SystolicBp,
    DiastolicBp,
    Temperature,
    RespiratoryRate,
    Spo2,
    Weight,
}

impl VitalSign {
    pub const ALL: [VitalSign; 7] = [
        VitalSign::HeartRate,
        VitalSign::SystolicBp,
        VitalSign::DiastolicBp,
        VitalSign::Temperature,
        VitalSign::RespiratoryRate,
        VitalSign::Spo2,
        VitalSign::Weight,
    ];

    pub fn loinc(self) -> &'static str {
        match self {
            VitalSign::HeartRate => "8867-4",
            VitalSign::SystolicBp => "8480-6",
            VitalSign::DiastolicBp => "8462-4",
            VitalSign::Temperature => "8310-5",
            VitalSign::RespiratoryRate => "9279-1",
            VitalSign::Spo2 => "59408-5",
            VitalSign::Weight => "29463-7",
        }
    }

    pub fn from_loinc(code: &str) -> Option<VitalSign> {
        VitalSign::ALL.into_iter().find(|v| v.loinc() == code)
    }

    pub fn unit(self) -> &'static str {
        match self {
            VitalSign::HeartRate => "/min",
            VitalSign::SystolicBp | VitalSign::DiastolicBp => "mm[Hg]",
            VitalSign::Temperature => "Cel",
            VitalSign::RespiratoryRate => "/min",
            VitalSign::Spo2 => "%",
            VitalSign::Weight => "kg",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            VitalSign::HeartRate => "Heart rate",
            VitalSign::SystolicBp => "Systolic BP",
            VitalSign::DiastolicBp => "Diastolic BP",
            VitalSign::Temperature => "Temperature",
            VitalSign::RespiratoryRate => "Respiratory rate",
            VitalSign::Spo2 => "SpO2",
            VitalSign::Weight => "Weight",
        }
    }

    /// Physiologically possible values (inclusive). Values outside are refused as entry errors; values
    /// inside but abnormal are stored and flagged by the UI.
    pub fn plausible_range(self) -> (f64, f64) {
        match self {
            VitalSign::HeartRate => (20.0, 300.0),
            VitalSign::SystolicBp => (40.0, 300.0),
            VitalSign::DiastolicBp => (20.0, 200.0),
            VitalSign::Temperature => (25.0, 45.0),
            VitalSign::RespiratoryRate => (2.0, 80.0),
            VitalSign::Spo2 => (40.0, 100.0),
            VitalSign::Weight => (0.3, 500.0),
        }
    }

    /// The adult normal range, for plots and flags.
    pub fn normal_range(self) -> (f64, f64) {
        match self {
            VitalSign::HeartRate => (60.0, 100.0),
            VitalSign::SystolicBp => (90.0, 140.0),
            VitalSign::DiastolicBp => (60.0, 90.0),
            VitalSign::Temperature => (36.1, 37.9),
            VitalSign::RespiratoryRate => (12.0, 20.0),
            VitalSign::Spo2 => (94.0, 100.0),
            VitalSign::Weight => (0.3, 500.0),
        }
    }
}

/// FHIR `Observation` for one vital sign.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Observation {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub vital: VitalSign,
    pub value: f64,
    pub effective_at: Timestamp,
    pub recorded_by: Uuid,
    pub version: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NoteKind {
    Nursing,
    Progress,
}

/// Where a note is in its life: draft → signed; a signed note is never edited, only amended by an
/// addendum or marked entered-in-error (with a reason) — never deleted.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NoteStatus {
    Draft,
    Signed { signed_at: Timestamp },
    EnteredInError { reason: String, at: Timestamp },
}

/// A clinical note (DocumentReference-like). `Debug` never prints the text.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Note {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub author_id: Uuid,
    pub kind: NoteKind,
    pub text: String,
    pub created_at: Timestamp,
    pub status: NoteStatus,
    /// For an addendum: the signed note it amends.
    pub addendum_to: Option<Uuid>,
    pub version: i64,
}

/// One patient and what is recorded about them: what a station shows, and the unit of bulk import
/// (synthetic data, FHIR bundles). A chart read from a store may hold only the newest observations.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Chart {
    pub patient: Patient,
    pub allergies: Vec<Allergy>,
    pub conditions: Vec<Condition>,
    pub medications: Vec<MedicationRequest>,
    /// Newest first.
    pub observations: Vec<Observation>,
    /// Newest first.
    pub notes: Vec<Note>,
}

impl Chart {
    /// Number of records, the patient included.
    pub fn row_count(&self) -> usize {
        1 + self.allergies.len()
            + self.conditions.len()
            + self.medications.len()
            + self.observations.len()
            + self.notes.len()
    }
}

// PHI-bearing records print redacted `Debug`: identifiers and structure, never names, MRNs, birth
// dates or free text.
impl std::fmt::Debug for HumanName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HumanName(***)")
    }
}

impl std::fmt::Debug for Patient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patient")
            .field("id", &self.id)
            .field("unit", &self.unit)
            .field("bed", &self.bed)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Note")
            .field("id", &self.id)
            .field("patient_id", &self.patient_id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_refuse_nonsense() {
        assert_eq!("1950-02-28".parse::<Date>(), Ok(Date { year: 1950, month: 2, day: 28 }));
        assert!("1951-02-29".parse::<Date>().is_err());
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert!("2000-13-01".parse::<Date>().is_err());
        assert!("20-01-01".parse::<Date>().is_err());
        let d: Date = serde_json::from_str("\"1980-07-04\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1980-07-04\"");
    }

    #[test]
    fn debug_output_carries_no_phi() {
        let p = Patient {
            id: Uuid::nil(),
            mrn: "MRN-CANARY".into(),
            name: HumanName { family: "Canaryfamily".into(), given: "Canarygiven".into() },
            birth_date: Date::new(1961, 3, 9).unwrap(),
            sex: Sex::Female,
            unit: "ICU".into(),
            bed: "04A".into(),
            version: 3,
        };
        let shown = format!("{p:?} {:?}", p.name);
        for phi in ["MRN-CANARY", "Canaryfamily", "Canarygiven", "1961"] {
            assert!(!shown.contains(phi), "{phi} in {shown}");
        }
        let n = Note {
            id: Uuid::nil(),
            patient_id: Uuid::nil(),
            author_id: Uuid::nil(),
            kind: NoteKind::Nursing,
            text: "canary note text".into(),
            created_at: Timestamp(0),
            status: NoteStatus::Draft,
            addendum_to: None,
            version: 1,
        };
        assert!(!format!("{n:?}").contains("canary"));
    }

    #[test]
    fn age_counts_whole_years() {
        let b = Date::new(1980, 7, 4).unwrap();
        assert_eq!(b.years_until(Timestamp::from_civil_date(2026, 7, 3)), 45);
        assert_eq!(b.years_until(Timestamp::from_civil_date(2026, 7, 4)), 46);
    }

    #[test]
    fn loinc_codes_round_trip() {
        for v in VitalSign::ALL {
            assert_eq!(VitalSign::from_loinc(v.loinc()), Some(v));
            let (lo, hi) = v.plausible_range();
            let (nlo, nhi) = v.normal_range();
            assert!(lo <= nlo && nhi <= hi, "{v:?}");
        }
        assert_eq!(VitalSign::from_loinc("0000-0"), None);
    }
}
