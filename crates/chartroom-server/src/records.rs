//! Patient records on the server: bulk loading (seed, FHIR import) and the scoped reads behind the
//! census and chart endpoints. Every read is decided by the policy engine against the unit stored
//! with the patient — never a unit the client names — and every denial is recorded.

use chartroom_domain::access::{readable_sections, ChartSection, Denied, Principal, Target};
use chartroom_domain::{decide, Action, Chart, Timestamp};
use chartroom_protocol::{CensusEntry, CensusPage, ChartResponse};
use uuid::Uuid;

use crate::auth::Origin;
use crate::phi::RecordKeys;
use crate::storage::{RecordKind, SessionOwner, Storage};
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
    #[error("{0}")]
    Invalid(&'static str),
    #[error("this account was disabled after unusual activity; an auditor has been notified")]
    Disabled,
    #[error("this sync cursor was never issued by this server (restored from a backup?): sync again from the start")]
    CursorAhead,
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

/// The patient with this MRN (found through the blind index), if any.
pub fn patient_by_mrn(
    storage: &dyn Storage,
    keys: &RecordKeys,
    mrn: &str,
) -> Result<Option<Uuid>, ServerError> {
    storage.patient_by_mrn_index(&keys.mrn_index(mrn))
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
    pub anomaly: crate::oversight::AnomalyRule,
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("owner", &self.owner.session_id).finish_non_exhaustive()
    }
}

impl Reader<'_> {
    /// Records a read or a denial in the audit trail.
    pub(crate) fn record(&self, action: &str, outcome: &str, subject: Subject) -> Result<(), ServerError> {
        self.storage.append_events(&[self.event(action, outcome, subject)])
    }

    /// The audit event [`Reader::record`] would append, for callers that append several at once.
    pub(crate) fn event(&self, action: &str, outcome: &str, subject: Subject) -> chartroom_audit::Event {
        event_for(self.owner, action, outcome, subject, self.now, self.origin)
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
    if let Err(denied) = decide(&who, Action::ReadCensus, target) {
        let subject = Subject { resource_type: "census", resource_id: unit.to_owned(), patient_ids: vec![] };
        r.record("denied", denied.code(), subject)?;
        return Err(ReadFailure::Denied(denied));
    }
    if crate::oversight::check_anomaly(r.storage, r.owner, &r.anomaly, r.now)?.is_some() {
        return Err(ReadFailure::Disabled);
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
    // The entry lists every patient the page showed.
    let shown = rows.iter().map(|row| row.patient.id).collect();
    r.record(
        "view",
        "ok",
        Subject { resource_type: "census", resource_id: unit.to_owned(), patient_ids: shown },
    )?;
    Ok(CensusPage { unit: unit.to_owned(), patients, next_cursor })
}

/// The sections of a chart the caller may read. Out-of-scope and unknown patients are told apart
/// only after the scope check, from the patient's stored unit.
pub fn chart(r: Reader<'_>, patient_id: Uuid, max_observations: usize) -> Result<ChartResponse, ReadFailure> {
    let subject = || Subject {
        resource_type: "patient",
        resource_id: patient_id.to_string(),
        patient_ids: vec![patient_id],
    };
    let Some(patient) = r.storage.patient(patient_id)? else {
        r.record("denied", "patient.not_found", subject())?;
        return Err(ReadFailure::NotFound);
    };
    let who = principal(r.owner);
    let read = Action::Read(ChartSection::Demographics);
    // An unexpired break-glass grant for this patient opens it beyond scope (or, for an auditor,
    // beyond demographics); reads that needed it are flagged.
    let granted = r.storage.has_break_glass(r.owner.user.id, patient_id, r.now)?;
    let plain = readable_sections(&who, &patient.unit, false);
    let with_grant = if granted { readable_sections(&who, &patient.unit, true) } else { plain.clone() };
    let break_glass = with_grant.len() > plain.len();
    if let Err(denied) = decide(&who, read, Target::Patient { unit: &patient.unit, break_glass }) {
        r.record("denied", denied.code(), subject())?;
        return Err(ReadFailure::Denied(denied));
    }
    if crate::oversight::check_anomaly(r.storage, r.owner, &r.anomaly, r.now)?.is_some() {
        return Err(ReadFailure::Disabled);
    }
    let sections = with_grant;
    let kinds: Vec<RecordKind> = sections.iter().filter_map(|s| kind_of(*s)).collect();
    let records = r.storage.records(patient_id, &kinds, max_observations.min(MAX_CHART_OBSERVATIONS))?;
    let chart = r.keys.open_chart(&patient, &records)?;
    r.record(if break_glass { "break_glass_view" } else { "view" }, "ok", subject())?;
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

/// What an audited action was about.
#[derive(Clone, Debug)]
pub struct Subject {
    pub resource_type: &'static str,
    pub resource_id: String,
    pub patient_ids: Vec<Uuid>,
}

/// The audit event of an action of a logged-in user (append it with `Storage::append_events`).
pub fn event_for(
    owner: &SessionOwner,
    action: &str,
    outcome: &str,
    subject: Subject,
    now: Timestamp,
    origin: &Origin,
) -> chartroom_audit::Event {
    let mut e = crate::audit::event(now, action, subject.resource_type, outcome, origin);
    e.user_id = Some(owner.user.id);
    e.username = Some(owner.user.username.clone());
    e.origin_device = Some(owner.device.record.id);
    e.resource_id = Some(subject.resource_id);
    e.patient_ids = subject.patient_ids;
    e
}
