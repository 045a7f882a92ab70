//! The one place that decides whether a record may be stored: required fields, length limits,
//! allowed codes and physiologic ranges. Messages name the field and the rule, never the value (a
//! value may be PHI and messages may end up in logs).

use crate::records::*;
use crate::Timestamp;

/// A record failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError { field, message: message.into() }
}

/// Records that can be checked before they are stored.
pub trait Validate {
    fn validate(&self) -> Result<(), ValidationError>;
}

/// Longest free text in a note (characters).
pub const MAX_NOTE_CHARS: usize = 20_000;

fn text(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(err(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(err(field, format!("must be at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(err(field, "must not contain control characters"));
    }
    Ok(())
}

fn code(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    text(field, value, max)?;
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(err(field, "may contain only letters, digits, '-' and '_'"));
    }
    Ok(())
}

/// An account or device name: `min..=max` ASCII letters, digits, `.`, `_` or `-`.
pub fn check_name(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    let ok = (min..=max).contains(&value.chars().count())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(err(field, format!("must be {min}–{max} letters, digits, '.', '_' or '-'")));
    }
    Ok(())
}

fn version(v: i64) -> Result<(), ValidationError> {
    if v < 0 {
        return Err(err("version", "must not be negative"));
    }
    Ok(())
}

impl Validate for Patient {
    fn validate(&self) -> Result<(), ValidationError> {
        code("mrn", &self.mrn, 32)?;
        text("name.family", &self.name.family, 100)?;
        text("name.given", &self.name.given, 100)?;
        if self.birth_date.year < 1880 {
            return Err(err("birth_date", "is before 1880"));
        }
        code("unit", &self.unit, 32)?;
        code("bed", &self.bed, 16)?;
        version(self.version)
    }
}

impl Validate for Allergy {
    fn validate(&self) -> Result<(), ValidationError> {
        text("substance", &self.substance, 200)?;
        text("reaction", &self.reaction, 200)?;
        version(self.version)
    }
}

impl Validate for Condition {
    fn validate(&self) -> Result<(), ValidationError> {
        code("code", &self.code, 32)?;
        if !self.code.chars().all(|c| c.is_ascii_digit()) {
            return Err(err("code", "must be a SNOMED CT concept id (digits)"));
        }
        text("display", &self.display, 200)?;
        version(self.version)
    }
}

impl Validate for MedicationRequest {
    fn validate(&self) -> Result<(), ValidationError> {
        text("medication", &self.medication, 200)?;
        text("dose", &self.dose, 100)?;
        text("route", &self.route, 50)?;
        text("frequency", &self.frequency, 100)?;
        version(self.version)
    }
}

impl Validate for Observation {
    fn validate(&self) -> Result<(), ValidationError> {
        let field = vital_field(self.vital);
        let (lo, hi) = self.vital.plausible_range();
        if !self.value.is_finite() || self.value < lo || self.value > hi {
            return Err(err(field, format!("must be between {lo} and {hi} {}", self.vital.unit())));
        }
        if self.effective_at < Timestamp(0) {
            return Err(err("effective_at", "is before 1970"));
        }
        version(self.version)
    }
}

/// The field name used in messages for a vital sign.
pub fn vital_field(v: VitalSign) -> &'static str {
    match v {
        VitalSign::HeartRate => "heart_rate",
        VitalSign::SystolicBp => "systolic_bp",
        VitalSign::DiastolicBp => "diastolic_bp",
        VitalSign::Temperature => "temperature",
        VitalSign::RespiratoryRate => "respiratory_rate",
        VitalSign::Spo2 => "spo2",
        VitalSign::Weight => "weight",
    }
}

impl Validate for Note {
    fn validate(&self) -> Result<(), ValidationError> {
        text("text", &self.text, MAX_NOTE_CHARS)?;
        if let NoteStatus::EnteredInError { reason, .. } = &self.status {
            text("reason", reason, 500)?;
        }
        if self.addendum_to == Some(self.id) {
            return Err(err("addendum_to", "a note cannot amend itself"));
        }
        version(self.version)
    }
}

/// A blood pressure pair must make sense together.
pub fn validate_blood_pressure(systolic: f64, diastolic: f64) -> Result<(), ValidationError> {
    if diastolic >= systolic {
        return Err(err("diastolic_bp", "must be lower than the systolic pressure"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn obs(vital: VitalSign, value: f64) -> Observation {
        Observation {
            id: Uuid::nil(),
            patient_id: Uuid::nil(),
            vital,
            value,
            effective_at: Timestamp(1_800_000_000_000),
            recorded_by: Uuid::nil(),
            version: 0,
        }
    }

    #[test]
    fn implausible_vitals_are_refused_by_field() {
        assert_eq!(obs(VitalSign::HeartRate, 400.0).validate().unwrap_err().field, "heart_rate");
        assert_eq!(obs(VitalSign::Spo2, 101.0).validate().unwrap_err().field, "spo2");
        assert_eq!(obs(VitalSign::Temperature, f64::NAN).validate().unwrap_err().field, "temperature");
        assert!(obs(VitalSign::HeartRate, 72.0).validate().is_ok());
        assert!(obs(VitalSign::HeartRate, 180.0).validate().is_ok(), "abnormal but plausible is stored");
        let e = obs(VitalSign::HeartRate, 400.0).validate().unwrap_err().to_string();
        assert!(!e.contains("400"), "messages never echo the value: {e}");
        assert!(validate_blood_pressure(80.0, 120.0).is_err());
    }

    #[test]
    fn notes_need_text_within_limits() {
        let mut n = Note {
            id: Uuid::new_v4(),
            patient_id: Uuid::nil(),
            author_id: Uuid::nil(),
            kind: NoteKind::Nursing,
            text: "   ".into(),
            created_at: Timestamp(0),
            status: NoteStatus::Draft,
            addendum_to: None,
            version: 0,
        };
        assert_eq!(n.validate().unwrap_err().field, "text");
        n.text = "x".repeat(MAX_NOTE_CHARS + 1);
        assert_eq!(n.validate().unwrap_err().field, "text");
        n.text = "Patient resting comfortably.\nNo complaints.".into();
        assert!(n.validate().is_ok());
        n.status = NoteStatus::EnteredInError { reason: "".into(), at: Timestamp(0) };
        assert_eq!(n.validate().unwrap_err().field, "reason");
    }

    #[test]
    fn codes_are_checked() {
        let mut p = Patient {
            id: Uuid::nil(),
            mrn: "MRN'; DROP".into(),
            name: HumanName { family: "Test".into(), given: "Pat".into() },
            birth_date: Date::new(1970, 1, 1).unwrap(),
            sex: Sex::Female,
            unit: "ICU".into(),
            bed: "12".into(),
            version: 0,
        };
        assert_eq!(p.validate().unwrap_err().field, "mrn");
        p.mrn = "M000123".into();
        assert!(p.validate().is_ok());
        p.bed = "".into();
        assert_eq!(p.validate().unwrap_err().field, "bed");
    }
}
