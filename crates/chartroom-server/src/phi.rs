//! Field-level encryption of patient data on the server (DESIGN §3, §8): each patient has a random
//! key, wrapped by a key derived from the master key (which never enters the database); every
//! record is sealed as a whole with its patient's key, bound to (patient, record, kind). A DBA with
//! the database alone — or a PostgreSQL dump later — sees ids, placement and ciphertext only.

use chartroom_crypto::{fields, DataKey, FieldPlace, PatientKey};
use chartroom_domain::{Allergy, Chart, Condition, MedicationRequest, Note, Observation, Patient, Validate};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::storage::{RecordKind, SealedChart, SealedPatient, SealedRecord};
use crate::ServerError;

use chartroom_crypto::fields::PATIENT as PATIENT_FIELD;
const MRN_INDEX_DOMAIN: &str = "patient.mrn";

/// The keys that seal patient data: derived from the master key, held only in memory.
#[derive(Debug)]
pub struct RecordKeys {
    key: DataKey,
}

impl RecordKeys {
    pub fn from_master(master: &[u8; 32]) -> RecordKeys {
        RecordKeys { key: DataKey::derive(b"chartroom/server-records/v1", master, b"records") }
    }

    /// The keyed index under which a patient's MRN can be looked up without storing it.
    pub fn mrn_index(&self, mrn: &str) -> [u8; 32] {
        self.key.blind_index(MRN_INDEX_DOMAIN, mrn.trim())
    }

    /// Seals a whole new patient under a fresh patient key, after validating every record in it.
    pub fn seal_chart(&self, chart: &Chart) -> Result<SealedChart, ServerError> {
        let p = &chart.patient;
        p.validate()?;
        let key = PatientKey::generate();
        let patient = SealedPatient {
            id: p.id,
            unit: p.unit.clone(),
            bed: p.bed.clone(),
            version: p.version,
            mrn_index: self.mrn_index(&p.mrn),
            wrapped_key: self.key.wrap_patient_key(p.id, &key),
            body: seal(&key, p.id, p.id, PATIENT_FIELD, p)?,
        };
        let mut records = Vec::with_capacity(chart.row_count());
        let mut add = |kind: RecordKind, id: Uuid, patient_id: Uuid, sort_key: i64, version: i64, body| {
            if patient_id != p.id {
                return Err(ServerError::Invalid(chartroom_domain::ValidationError {
                    field: "patient_id",
                    message: "a record names another patient than its chart".into(),
                }));
            }
            records.push(SealedRecord { id, kind, sort_key, version, body });
            Ok(())
        };
        for r in &chart.allergies {
            r.validate()?;
            add(
                RecordKind::Allergy,
                r.id,
                r.patient_id,
                0,
                r.version,
                seal_kind(&key, r, RecordKind::Allergy, p.id, r.id)?,
            )?;
        }
        for r in &chart.conditions {
            r.validate()?;
            let body = seal_kind(&key, r, RecordKind::Condition, p.id, r.id)?;
            add(RecordKind::Condition, r.id, r.patient_id, 0, r.version, body)?;
        }
        for r in &chart.medications {
            r.validate()?;
            let body = seal_kind(&key, r, RecordKind::Medication, p.id, r.id)?;
            add(RecordKind::Medication, r.id, r.patient_id, 0, r.version, body)?;
        }
        for r in &chart.observations {
            r.validate()?;
            let body = seal_kind(&key, r, RecordKind::Observation, p.id, r.id)?;
            add(RecordKind::Observation, r.id, r.patient_id, r.effective_at.0, r.version, body)?;
        }
        for r in &chart.notes {
            r.validate()?;
            let body = seal_kind(&key, r, RecordKind::Note, p.id, r.id)?;
            add(RecordKind::Note, r.id, r.patient_id, r.created_at.0, r.version, body)?;
        }
        Ok(SealedChart { patient, records })
    }

    /// Unwraps a stored patient's key.
    fn patient_key(&self, p: &SealedPatient) -> Result<PatientKey, ServerError> {
        self.key.unwrap_patient_key(p.id, &p.wrapped_key).map_err(|_| ServerError::Damaged("server.db"))
    }

    /// Whether a stored patient's key opens under these keys (a rotation skips those already done).
    pub fn opens(&self, p: &SealedPatient) -> bool {
        self.key.unwrap_patient_key(p.id, &p.wrapped_key).is_ok()
    }

    /// Wraps a patient's key under these keys.
    pub fn wrap_patient_key(&self, patient_id: Uuid, key: &PatientKey) -> Vec<u8> {
        self.key.wrap_patient_key(patient_id, key)
    }

    /// A stored patient's key wrapped for an online device (under its sync wrap key).
    pub fn wrap_for(&self, p: &SealedPatient, device: &DataKey) -> Result<Vec<u8>, ServerError> {
        Ok(device.wrap_patient_key(p.id, &self.patient_key(p)?))
    }

    /// Unwraps a stored patient's key and opens the patient.
    pub fn open_patient(&self, p: &SealedPatient) -> Result<(PatientKey, Patient), ServerError> {
        let key = self.patient_key(p)?;
        let mut patient: Patient = open(&key, p.id, p.id, PATIENT_FIELD, &p.body)?;
        patient.version = p.version;
        Ok((key, patient))
    }

    /// Seals one clinical record of a stored patient at `version` (a change pushed by a station).
    pub fn seal_record<T: Serialize>(
        &self,
        p: &SealedPatient,
        kind: RecordKind,
        id: Uuid,
        sort_key: i64,
        version: i64,
        value: &T,
    ) -> Result<SealedRecord, ServerError> {
        let key = self.patient_key(p)?;
        Ok(SealedRecord { id, kind, sort_key, version, body: seal_kind(&key, value, kind, p.id, id)? })
    }

    /// The stored patient with new demographics at `version`: same key, same MRN index (the MRN is
    /// an identifier and never changes through a station's edit).
    pub fn reseal_patient(
        &self,
        stored: &SealedPatient,
        changed: &Patient,
        version: i64,
    ) -> Result<SealedPatient, ServerError> {
        changed.validate()?;
        let (key, _) = self.open_patient(stored)?;
        Ok(SealedPatient {
            id: stored.id,
            unit: changed.unit.clone(),
            bed: changed.bed.clone(),
            version,
            mrn_index: stored.mrn_index,
            wrapped_key: stored.wrapped_key.clone(),
            body: seal(&key, stored.id, stored.id, PATIENT_FIELD, &Patient { version, ..changed.clone() })?,
        })
    }

    /// Seals a value that belongs to a stored patient (e.g. a break-glass reason) at `(record, field)`.
    pub fn seal_for(
        &self,
        p: &SealedPatient,
        record_id: Uuid,
        field: &str,
        bytes: &[u8],
    ) -> Result<Vec<u8>, ServerError> {
        let (key, _) = self.open_patient(p)?;
        key.seal(&FieldPlace { patient_id: p.id, record_id, field }, bytes)
            .map_err(|_| ServerError::Internal("sealing"))
    }

    /// Opens what [`RecordKeys::seal_for`] sealed.
    pub fn open_for(
        &self,
        p: &SealedPatient,
        record_id: Uuid,
        field: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ServerError> {
        let (key, _) = self.open_patient(p)?;
        key.open(&FieldPlace { patient_id: p.id, record_id, field }, sealed)
            .map_err(|_| ServerError::Damaged("server.db"))
    }

    /// Opens a patient and the given records into a chart (sections not given stay empty).
    pub fn open_chart(&self, p: &SealedPatient, records: &[SealedRecord]) -> Result<Chart, ServerError> {
        let (key, patient) = self.open_patient(p)?;
        let mut chart = Chart {
            patient,
            allergies: vec![],
            conditions: vec![],
            medications: vec![],
            observations: vec![],
            notes: vec![],
        };
        for r in records {
            let field = field_of(r.kind);
            match r.kind {
                RecordKind::Allergy => chart
                    .allergies
                    .push(Allergy { version: r.version, ..open(&key, p.id, r.id, field, &r.body)? }),
                RecordKind::Condition => chart
                    .conditions
                    .push(Condition { version: r.version, ..open(&key, p.id, r.id, field, &r.body)? }),
                RecordKind::Medication => chart.medications.push(MedicationRequest {
                    version: r.version,
                    ..open(&key, p.id, r.id, field, &r.body)?
                }),
                RecordKind::Observation => chart
                    .observations
                    .push(Observation { version: r.version, ..open(&key, p.id, r.id, field, &r.body)? }),
                RecordKind::Note => {
                    chart.notes.push(Note { version: r.version, ..open(&key, p.id, r.id, field, &r.body)? })
                }
            }
        }
        Ok(chart)
    }
}

fn field_of(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::Allergy => fields::ALLERGY,
        RecordKind::Condition => fields::CONDITION,
        RecordKind::Medication => fields::MEDICATION,
        RecordKind::Observation => fields::OBSERVATION,
        RecordKind::Note => fields::NOTE,
    }
}

/// Seals one record of `kind` for patient `patient_id`.
fn seal_kind<T: Serialize>(
    key: &PatientKey,
    value: &T,
    kind: RecordKind,
    patient_id: Uuid,
    id: Uuid,
) -> Result<Vec<u8>, ServerError> {
    seal(key, patient_id, id, field_of(kind), value)
}

fn seal<T: Serialize>(
    key: &PatientKey,
    patient_id: Uuid,
    record_id: Uuid,
    field: &str,
    value: &T,
) -> Result<Vec<u8>, ServerError> {
    let json =
        Zeroizing::new(serde_json::to_vec(value).map_err(|_| ServerError::Internal("record encoding"))?);
    key.seal(&FieldPlace { patient_id, record_id, field }, &json)
        .map_err(|_| ServerError::Internal("record sealing"))
}

fn open<T: DeserializeOwned>(
    key: &PatientKey,
    patient_id: Uuid,
    record_id: Uuid,
    field: &str,
    sealed: &[u8],
) -> Result<T, ServerError> {
    let json = key
        .open(&FieldPlace { patient_id, record_id, field }, sealed)
        .map_err(|_| ServerError::Damaged("server.db"))?;
    serde_json::from_slice(&json).map_err(|_| ServerError::Damaged("server.db"))
}
