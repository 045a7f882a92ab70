//! Patient records on the server: bulk loading (seed, FHIR import) and the scoped reads behind the
//! census and chart endpoints. Every read is decided by the policy engine against the unit stored
//! with the patient — never a unit the client names — and every denial is recorded.

use chartroom_domain::access::{readable_sections, ChartSection, Denied, Principal, Target};
use chartroom_domain::{decide, Action, Chart, Timestamp};
use chartroom_protocol::{CensusEntry, CensusPage, ChartResponse};
use uuid::Uuid;

use crate::auth::Origin;
use crate::phi::RecordKeys;
use crate::storage::{Event, RecordKind, SessionOwner, Storage};
use crate::ServerError;

/// Largest census page.
pub const MAX_CENSUS_PAGE: usize = 500;
/// Most observations returned with a chart (newest first).
pub const MAX_CHART_OBSERVATIONS: usize = 2000;

/// Why a read was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("{0}")]
    Denied(Denied),
    #[error("no such patient")]
    NotFound,
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The effective permissions of a session: the user's role, and the user's units narrowed to the
/// device's units when the device is restricted to some (a ward station holds only its ward).
pub fn principal(owner: &SessionOwner) -> Principal {
    let user = &owner.user;
    let device_units = &owner.device.record.units;
    let units = if device_units.is_empty() {
        user.units.clone()
    } else if user.units.iter().any(|u| u == "*") {
        device_units.clone()
    } else {
        user.units.iter().filter(|u| device_units.contains(u)).cloned().collect()
    };
    Principal { role: user.role, units }
}

/// What a bulk load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub imported: usize,
    /// Patients already on the server (same id or MRN), left untouched.
    pub already_present: usize,
}

/// Stores new patients in one transaction (all or none), skipping those already present.
pub fn load_charts(
    storage: &dyn Storage,
    keys: &RecordKeys,
    charts: &[Chart],
) -> Result<LoadReport, ServerError> {
    let ids: Vec<(Uuid, [u8; 32])> =
        charts.iter().map(|c| (c.patient.id, keys.mrn_index(&c.patient.mrn))).collect();
    let existing = storage.existing_patients(&ids)?;
    let sealed = charts
        .iter()
        .filter(|c| !existing.contains(&c.patient.id))
        .map(|c| keys.seal_chart(c))
        .collect::<Result<Vec<_>, _>>()?;
    storage.put_charts(&sealed)?;
    Ok(LoadReport { imported: sealed.len(), already_present: existing.len() })
}

/// Who reads, through what, and when.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    pub storage: &'a dyn Storage,
    pub keys: &'a RecordKeys,
    pub owner: &'a SessionOwner,
    pub now: Timestamp,
    pub origin: &'a Origin,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("owner", &self.owner.session_id).finish_non_exhaustive()
    }
}

impl Reader<'_> {
    /// Records a read or a denial in the server's event log.
    fn record(&self, action: &str, outcome: &str, resource: String) -> Result<(), ServerError> {
        record(self.storage, self.owner, action, outcome, resource, self.now, self.origin)
    }
}

/// One page of a unit's census, if the caller may see that unit.
pub fn census(
    r: Reader<'_>,
    unit: &str,
    after: Option<Uuid>,
    limit: usize,
) -> Result<CensusPage, ReadFailure> {
    let who = principal(r.owner);
    let target = Target::Patient { unit, break_glass: false };
    if let Err(denied) = decide(&who, Action::Read(ChartSection::Demographics), target) {
        r.record("denied", denied.code(), format!("unit/{unit}"))?;
        return Err(ReadFailure::Denied(denied));
    }
    let limit = limit.clamp(1, MAX_CENSUS_PAGE);
    let rows = r.storage.census(unit, after, limit)?;
    let mut patients = Vec::with_capacity(rows.len());
    for row in &rows {
        let (_, p) = r.keys.open_patient(&row.patient)?;
        patients.push(CensusEntry {
            patient_id: p.id.to_string(),
            mrn: p.mrn,
            name: p.name,
            birth_date: p.birth_date,
            sex: p.sex,
            unit: p.unit,
            bed: p.bed,
            allergy_count: row.allergy_count,
            last_vitals_at: row.last_vitals_at,
            version: p.version,
        });
    }
    let next_cursor = (rows.len() == limit).then(|| rows.last().map(|r| r.patient.id.to_string())).flatten();
    r.record("view", "ok", format!("census/{unit}"))?;
    Ok(CensusPage { unit: unit.to_owned(), patients, next_cursor })
}

/// The sections of a chart the caller may read. Out-of-scope and unknown patients are told apart
/// only after the scope check, from the patient's stored unit.
pub fn chart(r: Reader<'_>, patient_id: Uuid, max_observations: usize) -> Result<ChartResponse, ReadFailure> {
    let resource = format!("patient/{patient_id}");
    let Some(patient) = r.storage.patient(patient_id)? else {
        r.record("denied", "patient.not_found", resource)?;
        return Err(ReadFailure::NotFound);
    };
    let who = principal(r.owner);
    let target = Target::Patient { unit: &patient.unit, break_glass: false };
    if let Err(denied) = decide(&who, Action::Read(ChartSection::Demographics), target) {
        r.record("denied", denied.code(), resource)?;
        return Err(ReadFailure::Denied(denied));
    }
    let sections = readable_sections(&who, &patient.unit, false);
    let kinds: Vec<RecordKind> = sections.iter().filter_map(|s| kind_of(*s)).collect();
    let records = r.storage.records(patient_id, &kinds, max_observations.min(MAX_CHART_OBSERVATIONS))?;
    let chart = r.keys.open_chart(&patient, &records)?;
    r.record("view", "ok", resource)?;
    Ok(ChartResponse { sections, chart })
}

fn kind_of(section: ChartSection) -> Option<RecordKind> {
    match section {
        ChartSection::Demographics => None,
        ChartSection::Allergies => Some(RecordKind::Allergy),
        ChartSection::Problems => Some(RecordKind::Condition),
        ChartSection::Medications => Some(RecordKind::Medication),
        ChartSection::Vitals => Some(RecordKind::Observation),
        ChartSection::Notes => Some(RecordKind::Note),
    }
}

/// Records a read or a denial in the server's event log.
pub fn record(
    storage: &dyn Storage,
    owner: &SessionOwner,
    action: &str,
    outcome: &str,
    resource: String,
    now: Timestamp,
    origin: &Origin,
) -> Result<(), ServerError> {
    storage.record_event(&Event {
        at: now,
        action: action.into(),
        outcome: outcome.into(),
        username: Some(owner.user.username.clone()),
        user_id: Some(owner.user.id),
        device_id: Some(owner.device.record.id),
        remote: origin.remote.clone(),
        resource: Some(resource),
    })
}
