//! A clinician's changes on the station (online or offline): each is permitted by role, validated,
//! and written with its audit entry and its outbox entry in one transaction (`Store::record_changes`),
//! to be pushed at the next sync.

use chartroom_domain::{
    Action, Allergy, ClinicalStatus, Condition, Criticality, Date, MedicationRequest, MedicationStatus, Note,
    NoteKind, NoteStatus, Observation, Patient, Role, Timestamp, VitalSign,
};
use chartroom_store::Synced;
use uuid::Uuid;

use crate::{StationError, UnlockedVault};

type Result<T> = std::result::Result<T, StationError>;

/// A new medication order, as a physician enters it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMedication<'a> {
    pub medication: &'a str,
    pub dose: &'a str,
    pub route: &'a str,
    pub frequency: &'a str,
}

impl UnlockedVault {
    /// Records a vitals set for the patient with this MRN. Values outside physiological ranges are
    /// refused.
    pub fn record_vitals(
        &mut self,
        mrn: &str,
        values: &[(VitalSign, f64)],
        now: Timestamp,
    ) -> Result<Vec<Observation>> {
        if values.is_empty() {
            return Err(StationError::NothingToRecord);
        }
        let patient_id = self.store.find_by_mrn(mrn)?;
        let set: Vec<Observation> = values
            .iter()
            .map(|(vital, value)| Observation {
                id: Uuid::now_v7(),
                patient_id,
                vital: *vital,
                value: *value,
                effective_at: now,
                recorded_by: self.user_id(),
                version: 0,
            })
            .collect();
        self.change(Action::WriteVitals, set, now)
    }

    /// Writes a note (nursing for nurses, progress for physicians), signed at once with `sign`.
    pub fn write_note(&mut self, mrn: &str, text: &str, sign: bool, now: Timestamp) -> Result<Note> {
        let patient_id = self.store.find_by_mrn(mrn)?;
        let kind = if self.role == Some(Role::Physician) { NoteKind::Progress } else { NoteKind::Nursing };
        let note = Note {
            id: Uuid::now_v7(),
            patient_id,
            author_id: self.user_id(),
            kind,
            text: text.trim_end().to_owned(),
            created_at: now,
            status: NoteStatus::Draft,
            addendum_to: None,
            version: 0,
        };
        self.save_note(note, sign, now)
    }

    /// Changes the text of one of this user's draft notes (`None` keeps it) and signs it with `sign`.
    /// A signed note is never edited: write an addendum.
    pub fn edit_note(
        &mut self,
        note_id: Uuid,
        text: Option<&str>,
        sign: bool,
        now: Timestamp,
    ) -> Result<Note> {
        let mut note: Note = self.store.get(note_id)?;
        if note.status != NoteStatus::Draft {
            return Err(StationError::NoteFinal);
        }
        if note.author_id != self.user_id() {
            return Err(StationError::NotAuthor);
        }
        if let Some(text) = text {
            note.text = text.trim_end().to_owned();
        }
        self.save_note(note, sign, now)
    }

    /// Writes an addendum to a signed note (of the same patient, which it names in `addendum_to`),
    /// signed at once with `sign`. A draft or a note entered in error is not amended.
    pub fn write_addendum(&mut self, note_id: Uuid, text: &str, sign: bool, now: Timestamp) -> Result<Note> {
        let target: Note = self.store.get(note_id)?;
        if !matches!(target.status, NoteStatus::Signed { .. }) {
            return Err(StationError::AddendumTarget);
        }
        let kind = if self.role == Some(Role::Physician) { NoteKind::Progress } else { NoteKind::Nursing };
        let note = Note {
            id: Uuid::now_v7(),
            patient_id: target.patient_id,
            author_id: self.user_id(),
            kind,
            text: text.trim_end().to_owned(),
            created_at: now,
            status: NoteStatus::Draft,
            addendum_to: Some(target.id),
            version: 0,
        };
        self.save_note(note, sign, now)
    }

    /// Marks one of this user's signed notes entered in error, for `reason` (required, at most 500
    /// characters). The text stays as it was, readable as what was wrongly recorded; the reason is
    /// sealed with the rest of the note and never logged.
    pub fn enter_in_error(&mut self, note_id: Uuid, reason: &str, now: Timestamp) -> Result<Note> {
        let mut note: Note = self.store.get(note_id)?;
        if note.author_id != self.user_id() {
            return Err(StationError::NotAuthor);
        }
        match note.status {
            NoteStatus::Signed { .. } => {}
            NoteStatus::Draft => return Err(StationError::NoteNotSigned),
            NoteStatus::EnteredInError { .. } => return Err(StationError::NoteFinal),
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(StationError::ReasonRequired);
        }
        note.status = NoteStatus::EnteredInError { reason: reason.to_owned(), at: now };
        let action = Action::WriteNote(note.kind);
        Ok(self.change(action, vec![note], now)?.remove(0))
    }

    fn save_note(&mut self, mut note: Note, sign: bool, now: Timestamp) -> Result<Note> {
        if sign {
            let unit = self.store.patient_unit(note.patient_id)?;
            self.permit(Action::SignNote(note.kind), &unit, note.patient_id, now)?;
            note.status = NoteStatus::Signed { signed_at: now };
        }
        let action = Action::WriteNote(note.kind);
        Ok(self.change(action, vec![note], now)?.remove(0))
    }

    /// Records an allergy.
    pub fn add_allergy(
        &mut self,
        mrn: &str,
        substance: &str,
        reaction: &str,
        criticality: Criticality,
        now: Timestamp,
    ) -> Result<Allergy> {
        let patient_id = self.store.find_by_mrn(mrn)?;
        let allergy = Allergy {
            id: Uuid::now_v7(),
            patient_id,
            substance: substance.trim().to_owned(),
            reaction: reaction.trim().to_owned(),
            criticality,
            version: 0,
        };
        Ok(self.change(Action::WriteAllergies, vec![allergy], now)?.remove(0))
    }

    /// Adds a problem to the problem list (SNOMED CT code and its display text).
    pub fn add_problem(
        &mut self,
        mrn: &str,
        code: &str,
        display: &str,
        onset: Option<Date>,
        now: Timestamp,
    ) -> Result<Condition> {
        let patient_id = self.store.find_by_mrn(mrn)?;
        let condition = Condition {
            id: Uuid::now_v7(),
            patient_id,
            code: code.trim().to_owned(),
            display: display.trim().to_owned(),
            onset,
            status: ClinicalStatus::Active,
            version: 0,
        };
        Ok(self.change(Action::WriteOrders, vec![condition], now)?.remove(0))
    }

    /// Marks a problem active or resolved.
    pub fn set_problem_status(
        &mut self,
        id: Uuid,
        status: ClinicalStatus,
        now: Timestamp,
    ) -> Result<Condition> {
        let mut condition: Condition = self.store.get(id)?;
        condition.status = status;
        Ok(self.change(Action::WriteOrders, vec![condition], now)?.remove(0))
    }

    /// Orders a medication.
    pub fn add_medication(
        &mut self,
        mrn: &str,
        m: &NewMedication<'_>,
        now: Timestamp,
    ) -> Result<MedicationRequest> {
        let patient_id = self.store.find_by_mrn(mrn)?;
        let order = MedicationRequest {
            id: Uuid::now_v7(),
            patient_id,
            medication: m.medication.trim().to_owned(),
            dose: m.dose.trim().to_owned(),
            route: m.route.trim().to_owned(),
            frequency: m.frequency.trim().to_owned(),
            status: MedicationStatus::Active,
            version: 0,
        };
        Ok(self.change(Action::WriteOrders, vec![order], now)?.remove(0))
    }

    /// Puts a medication order on hold, completes, stops or resumes it.
    pub fn set_medication_status(
        &mut self,
        id: Uuid,
        status: MedicationStatus,
        now: Timestamp,
    ) -> Result<MedicationRequest> {
        let mut order: MedicationRequest = self.store.get(id)?;
        order.status = status;
        Ok(self.change(Action::WriteOrders, vec![order], now)?.remove(0))
    }

    /// Moves a patient to another bed and/or unit (a transfer). A move to a unit this station does
    /// not hold takes the patient off the station once the server has it.
    pub fn move_patient(
        &mut self,
        mrn: &str,
        unit: Option<&str>,
        bed: Option<&str>,
        now: Timestamp,
    ) -> Result<Patient> {
        let patient_id = self.store.find_by_mrn(mrn)?;
        let mut patient: Patient = self.store.get(patient_id)?;
        if let Some(unit) = unit {
            patient.unit = unit.trim().to_owned();
        }
        if let Some(bed) = bed {
            patient.bed = bed.trim().to_owned();
        }
        Ok(self.change(Action::WriteDemographics, vec![patient], now)?.remove(0))
    }

    /// Checks `action` on the records' patient (as placed now, on this station) and records them
    /// with their audit and outbox entries in one transaction.
    pub(crate) fn change<R: Synced>(
        &mut self,
        action: Action,
        records: Vec<R>,
        now: Timestamp,
    ) -> Result<Vec<R>> {
        let Some(patient_id) = records.first().map(Synced::owner) else {
            return Err(StationError::NothingToRecord);
        };
        let unit = self.store.patient_unit(patient_id)?;
        self.permit(action, &unit, patient_id, now)?;
        let actor = self.actor();
        self.store.record_changes(&actor, &records, now)?;
        Ok(records)
    }
}
