//! Sync, the server's side (DESIGN §7): applying the changes stations push. Each change is decided
//! on its own — permission against the patient's stored unit, authorship, validation, and a
//! compare-and-set on the record's version — and its id is remembered, so a retry after a lost
//! response applies nothing twice. Append-only kinds (observations, and notes once signed) never
//! get overwritten: a second write of the same id is refused, an edit of a signed note is refused.

use std::collections::HashMap;

use chartroom_audit::Event;
use chartroom_crypto::DataKey;
use chartroom_domain::access::Denied;
use chartroom_domain::ChartSection;
use chartroom_domain::{decide, Action, Note, NoteStatus, Target, Validate};
use chartroom_protocol as wire;
use chartroom_protocol::{
    Change, ChangeOutcome, ChangeRecord, ChangeResult, PullPage, PushBatch, PushResponse,
};
use uuid::Uuid;

use crate::records::{principal, ReadFailure, Reader, Subject};
use crate::storage::{
    AppliedChange, IncomingChange, IncomingRecord, RecordKind, RecordVersion, SealedPatient, SealedRecord,
    Stored,
};
use crate::ServerError;

/// Applies a batch and says what became of each change. Each change is decided on its own; the
/// ones that pass are written in one transaction (with their audit events), where a compare-and-set
/// on each record's version still turns a change that lost a race into a conflict.
pub fn push(r: Reader<'_>, batch: &PushBatch) -> Result<PushResponse, ReadFailure> {
    if batch.changes.len() > chartroom_protocol::MAX_PUSH {
        return Err(ReadFailure::Invalid("push at most 500 changes at a time"));
    }
    let device_id = r.owner.device.record.id;
    let mut outcomes: Vec<Option<ChangeOutcome>> = Vec::with_capacity(batch.changes.len());
    let (mut at, mut writes) = (Vec::new(), Vec::new());
    let view = BatchView::read(r, batch)?;
    for (i, change) in batch.changes.iter().enumerate() {
        match decide_change(r, change, &view)? {
            Decision::Done(outcome) => outcomes.push(Some(outcome)),
            Decision::Write(write) => {
                outcomes.push(None);
                at.push(i);
                writes.push(*write);
            }
        }
    }
    // Refusals that reached for what the user may not are audited in one append, before anything is
    // written: if recording fails, nothing of the batch is applied and the station retries it whole.
    let denied: Vec<Event> = batch
        .changes
        .iter()
        .zip(&outcomes)
        .filter_map(|(change, outcome)| denial_event(r, &view, change, outcome.as_ref()?))
        .collect();
    if !denied.is_empty() {
        r.storage.append_events(&denied)?;
    }
    let stored = r.storage.apply_changes(&writes)?;
    let mut late_denials = Vec::new();
    for ((i, (incoming, _)), stored) in at.iter().zip(&writes).zip(stored) {
        let outcome = match stored {
            Stored::Applied => ChangeOutcome::Applied { version: incoming.record.version() },
            // Another request got there first (a retry racing itself, or another station).
            Stored::AlreadyApplied(seen) => already_applied(seen, device_id, incoming.record.id()),
            Stored::Moved { current_version } => {
                ChangeOutcome::Conflict { current_version: current_version.unwrap_or(0) }
            }
        };
        late_denials.extend(denial_event(r, &view, &batch.changes[*i], &outcome));
        outcomes[*i] = Some(outcome);
    }
    // Another device's change id that raced this batch (rare): nothing of it was applied for us.
    if !late_denials.is_empty() {
        r.storage.append_events(&late_denials)?;
    }
    let results = batch
        .changes
        .iter()
        .zip(outcomes)
        .map(|(change, outcome)| ChangeResult {
            change_id: change.change_id.clone(),
            outcome: outcome.unwrap_or_else(|| rejected("server.internal", "no outcome")),
        })
        .collect();
    Ok(PushResponse { results })
}

/// The audit entry of a refused change, if the refusal is a denial. The patient is named only when
/// the server holds it (a change id refused as another device's is refused before its patient is
/// looked at, and the id it names may be anything).
fn denial_event(r: Reader<'_>, view: &BatchView, change: &Change, outcome: &ChangeOutcome) -> Option<Event> {
    let ChangeOutcome::Rejected { code, .. } = outcome else {
        return None;
    };
    if !is_denial(code) {
        return None;
    }
    let record = &change.change;
    let patient = record.patient_id();
    let subject = Subject {
        resource_type: meta(record).kind_name(),
        resource_id: record.record_id().to_string(),
        patient_ids: if view.patients.contains_key(&patient) { vec![patient] } else { vec![] },
    };
    Some(r.event("denied", code, subject))
}

/// Refusals that are an attempt to reach what the user may not (a role or scope refusal, another
/// user's record, another device's change id, a record id of another patient, a patient the server
/// does not hold — as a chart read of one is): each is audited as `denied`. Mistakes that reach
/// nothing (invalid records, conflicts) are not.
fn is_denial(code: &str) -> bool {
    code.starts_with("access.")
        || matches!(
            code,
            "sync.not_author" | "sync.foreign_change" | "sync.record_mismatch" | "patient.not_found"
        )
}

/// What deciding a batch reads, read for the whole batch at once: record versions first, then
/// which change ids were applied — so a retry whose first attempt committed in between is seen as
/// applied, not as a conflict — then the patients touched, with whether the user broke the glass
/// for them. Writing re-checks every version (compare-and-set) and change id.
struct BatchView {
    applied: HashMap<Uuid, AppliedChange>,
    versions: HashMap<Uuid, RecordVersion>,
    patients: HashMap<Uuid, (SealedPatient, bool)>,
}

impl BatchView {
    fn read(r: Reader<'_>, batch: &PushBatch) -> Result<BatchView, ServerError> {
        let records: Vec<Uuid> = batch.changes.iter().map(|c| c.change.record_id()).collect();
        let versions = r.storage.record_versions(&records)?.into_iter().collect();
        let change_ids: Vec<Uuid> = batch.changes.iter().filter_map(|c| c.change_id.parse().ok()).collect();
        let applied = r.storage.applied_changes(&change_ids)?.into_iter().collect();
        let mut ids: Vec<Uuid> = batch.changes.iter().map(|c| c.change.patient_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        let broken: std::collections::HashSet<Uuid> =
            r.storage.break_glass_patients(r.owner.user.id, &ids, r.now)?.into_iter().collect();
        let patients = r
            .storage
            .patients(&ids)?
            .into_iter()
            .map(|p| (p.id, (p.clone(), broken.contains(&p.id))))
            .collect();
        Ok(BatchView { applied, versions, patients })
    }
}

/// What to do with one pushed change: answer at once, or write it (with its audit event).
enum Decision {
    Done(ChangeOutcome),
    Write(Box<(IncomingChange, Event)>),
}

fn rejected(code: &str, message: &str) -> ChangeOutcome {
    ChangeOutcome::Rejected { code: code.into(), message: message.into() }
}

/// What deciding on a pushed record needs besides its permission: its kind (`None`: the patient
/// row), the author it names (kinds that have one), its order key and whether it is append-only.
struct Meta {
    kind: Option<RecordKind>,
    author: Option<Uuid>,
    sort_key: i64,
    append_only: bool,
}

impl Meta {
    /// The record's kind as the audit trail names it.
    fn kind_name(&self) -> &'static str {
        self.kind.map_or("patient", RecordKind::as_str)
    }
}

fn meta(change: &ChangeRecord) -> Meta {
    let plain = |kind| Meta { kind: Some(kind), author: None, sort_key: 0, append_only: false };
    match change {
        ChangeRecord::Observation(o) => Meta {
            kind: Some(RecordKind::Observation),
            author: Some(o.recorded_by),
            sort_key: o.effective_at.0,
            append_only: true,
        },
        ChangeRecord::Note(n) => Meta {
            kind: Some(RecordKind::Note),
            author: Some(n.author_id),
            sort_key: n.created_at.0,
            append_only: false,
        },
        ChangeRecord::Allergy(_) => plain(RecordKind::Allergy),
        ChangeRecord::Condition(_) => plain(RecordKind::Condition),
        ChangeRecord::Medication(_) => plain(RecordKind::Medication),
        ChangeRecord::Patient(_) => Meta { kind: None, author: None, sort_key: 0, append_only: false },
    }
}

fn decide_change(r: Reader<'_>, change: &Change, view: &BatchView) -> Result<Decision, ServerError> {
    let Ok(change_id) = change.change_id.parse::<Uuid>() else {
        return Ok(Decision::Done(rejected("request.invalid", "change_id must be a UUID")));
    };
    let device_id = r.owner.device.record.id;
    let record = &change.change;
    if let Some(seen) = view.applied.get(&change_id) {
        return Ok(Decision::Done(already_applied(*seen, device_id, record.record_id())));
    }
    let (record_id, patient_id, m) = (record.record_id(), record.patient_id(), meta(record));
    let kind_name = m.kind_name();
    if let Err(e) = record.validate() {
        return Ok(Decision::Done(rejected("request.invalid", &e.to_string())));
    }
    let Some((patient, break_glass)) = view.patients.get(&patient_id) else {
        return Ok(Decision::Done(rejected("patient.not_found", "no such patient on the server")));
    };
    let who = principal(r.owner);
    if let Err(denied) =
        decide(&who, record.action(), Target::Patient { unit: &patient.unit, break_glass: *break_glass })
    {
        return Ok(Decision::Done(rejected(denied.code(), &Denied::to_string(&denied))));
    }
    // A station writes in the name of the user who is logged in, never someone else.
    if m.author.is_some_and(|a| a != r.owner.user.id) {
        return Ok(Decision::Done(rejected(
            "sync.not_author",
            "the record names another author than the logged-in user",
        )));
    }
    let current = match m.kind {
        Some(kind) => match view.versions.get(&record_id).copied() {
            Some((owner_patient, owner_kind, _)) if owner_patient != patient_id || owner_kind != kind => {
                return Ok(Decision::Done(rejected(
                    "sync.record_mismatch",
                    "this record id belongs to another patient or kind",
                )));
            }
            found => found.map(|(_, _, v)| v),
        },
        None => Some(patient.version),
    };
    let replaces = match current {
        None if change.base_version == 0 => None,
        None => return Ok(Decision::Done(ChangeOutcome::Conflict { current_version: 0 })),
        Some(_) if m.append_only => {
            return Ok(Decision::Done(rejected(
                "sync.append_only",
                "an observation is never rewritten; record a new one",
            )));
        }
        Some(version) if change.base_version != version => {
            return Ok(Decision::Done(ChangeOutcome::Conflict { current_version: version }));
        }
        Some(version) => {
            if let ChangeRecord::Note(note) = record {
                if let Some(refused) = check_note_edit(r, patient, note, version)? {
                    return Ok(Decision::Done(refused));
                }
            }
            Some(version)
        }
    };
    if let ChangeRecord::Note(Note { addendum_to: Some(target), .. }) = record {
        if !amends_signed_note(r, patient, *target)? {
            return Ok(Decision::Done(rejected(
                "note.bad_addendum",
                "an addendum amends a signed note of the same patient",
            )));
        }
    }
    let version = replaces.map_or(1, |v| v + 1);
    let sealed = match record {
        ChangeRecord::Patient(p) => {
            // Break-glass lets a clinician act on a patient off their units; never move the
            // patient onto them (which would make the access permanent).
            let in_scope =
                decide(&who, record.action(), Target::Patient { unit: &patient.unit, break_glass: false });
            if p.unit != patient.unit && in_scope.is_err() {
                return Ok(Decision::Done(rejected(
                    "access.forbidden",
                    "a transfer needs the patient on your units; break-glass does not allow one",
                )));
            }
            if r.keys.mrn_index(&p.mrn) != patient.mrn_index {
                return Ok(Decision::Done(rejected(
                    "sync.mrn_immutable",
                    "the MRN is an identifier and never changes",
                )));
            }
            IncomingRecord::Patient(r.keys.reseal_patient(patient, p, version)?)
        }
        other => {
            let kind = m.kind.ok_or(ServerError::Internal("record kind"))?;
            macro_rules! seal {
                ($v:expr) => {
                    r.keys.seal_record(patient, kind, record_id, m.sort_key, version, $v)?
                };
            }
            IncomingRecord::Record(match other {
                ChangeRecord::Observation(v) => seal!(v),
                ChangeRecord::Note(v) => seal!(v),
                ChangeRecord::Allergy(v) => seal!(v),
                ChangeRecord::Condition(v) => seal!(v),
                ChangeRecord::Medication(v) => seal!(v),
                ChangeRecord::Patient(_) => return Err(ServerError::Internal("record kind")),
            })
        }
    };
    let after = match &sealed {
        IncomingRecord::Record(s) => s.body.clone(),
        IncomingRecord::Patient(p) => p.body.clone(),
    };
    let incoming = IncomingChange { change_id, device_id, patient_id, replaces, record: sealed };
    let mut e = crate::audit::event(
        r.now,
        if replaces.is_some() { "update" } else { "create" },
        kind_name,
        "ok",
        r.origin,
    );
    e.user_id = Some(r.owner.user.id);
    e.username = Some(r.owner.user.username.clone());
    e.origin_device = Some(device_id);
    e.resource_id = Some(record_id.to_string());
    e.patient_ids = vec![patient_id];
    e.after = Some(after);
    Ok(Decision::Write(Box::new((incoming, e))))
}

/// What to answer for a change id applied before: a retry of the same change is a duplicate;
/// the id reused for another record, or by another device, is refused (never reported as stored).
fn already_applied(seen: AppliedChange, device_id: Uuid, record_id: Uuid) -> ChangeOutcome {
    if seen.device_id != device_id {
        rejected("sync.foreign_change", "this change id belongs to another device")
    } else if seen.record_id != record_id {
        rejected("sync.change_id_reused", "this change id was used for another record")
    } else {
        ChangeOutcome::Duplicate { version: seen.version }
    }
}

/// The stored version of a note, opened.
fn stored_note(
    r: Reader<'_>,
    patient: &SealedPatient,
    id: Uuid,
    version: i64,
) -> Result<Option<Note>, ServerError> {
    let stored = r.storage.records(patient.id, &[RecordKind::Note], usize::MAX)?;
    let Some(rec) = stored.into_iter().find(|s| s.id == id && s.version == version) else {
        return Ok(None);
    };
    Ok(r.keys.open_chart(patient, &[rec])?.notes.pop())
}

/// A note may be edited only while it is a draft, only by its author, and never into another
/// patient's, kind or creation time. The one change a signed note takes is its author marking it
/// entered-in-error (with a reason), everything else as it was. `Some(refusal)` when the edit is
/// not allowed.
fn check_note_edit(
    r: Reader<'_>,
    patient: &SealedPatient,
    edit: &Note,
    version: i64,
) -> Result<Option<ChangeOutcome>, ServerError> {
    let Some(stored) = stored_note(r, patient, edit.id, version)? else { return Ok(None) };
    let marks_in_error = matches!(stored.status, NoteStatus::Signed { .. })
        && matches!(edit.status, NoteStatus::EnteredInError { .. });
    Ok(if marks_in_error {
        if stored.author_id != edit.author_id {
            Some(rejected("sync.not_author", "only the author of a note may mark it entered-in-error"))
        } else if (stored.kind, stored.created_at, stored.addendum_to, &stored.text)
            != (edit.kind, edit.created_at, edit.addendum_to, &edit.text)
        {
            Some(rejected("note.signed", "a note marked entered-in-error keeps its text; write an addendum"))
        } else {
            None
        }
    } else if !matches!(stored.status, NoteStatus::Draft) {
        Some(rejected("note.signed", "a signed note is never edited; write an addendum"))
    } else if matches!(edit.status, NoteStatus::EnteredInError { .. }) {
        Some(rejected("note.not_signed", "only a signed note is marked entered-in-error; edit the draft"))
    } else if stored.author_id != edit.author_id {
        Some(rejected("sync.not_author", "only the author of a draft may change it"))
    } else if (stored.kind, stored.created_at, stored.addendum_to)
        != (edit.kind, edit.created_at, edit.addendum_to)
    {
        Some(rejected("request.invalid", "a note's kind, creation time and link never change"))
    } else {
        None
    })
}

/// Whether `target` is a signed note of this patient (what an addendum may amend).
fn amends_signed_note(r: Reader<'_>, patient: &SealedPatient, target: Uuid) -> Result<bool, ServerError> {
    match r.storage.record_version(target)? {
        Some((owner, RecordKind::Note, version)) if owner == patient.id => {
            Ok(stored_note(r, patient, target, version)?
                .is_some_and(|n| matches!(n.status, NoteStatus::Signed { .. })))
        }
        _ => Ok(false),
    }
}

/// Most change numbers in one pull page.
pub const MAX_PULL: usize = 1000;

/// The changes after `after` that the caller's device may hold (patients on the device's units, or
/// the user's on a device without units), for users who may read whole charts on at least one of
/// them, sealed as stored, with the
/// patients' keys wrapped under `device_key` (the device's sync wrap key).
pub fn pull(r: Reader<'_>, device_key: &DataKey, after: i64, limit: usize) -> Result<PullPage, ReadFailure> {
    let who = principal(r.owner);
    // A station caches whole charts for the clinicians who use it: syncing one is a clinical read.
    let clinical = Action::Read(ChartSection::Notes);
    let units: Vec<String> = who
        .units
        .iter()
        .filter(|u| decide(&who, clinical, Target::Patient { unit: u, break_glass: false }).is_ok())
        .cloned()
        .collect();
    if units.is_empty() {
        let denied = Denied::NotPermitted;
        r.record(
            "denied",
            denied.code(),
            Subject { resource_type: "sync", resource_id: String::new(), patient_ids: vec![] },
        )?;
        return Err(ReadFailure::Denied(denied));
    }
    // A ward station holds its units' patients for all its users (each reads only their own units
    // there), so its cursor follows the device's units whoever syncs; a laptop follows its user's.
    let device_units = &r.owner.device.record.units;
    let held = if device_units.is_empty() { units } else { device_units.clone() };
    let scope = (!held.iter().any(|u| u == "*")).then_some(held.as_slice());
    let rows = r.storage.pull_page(scope, after, limit.clamp(1, MAX_PULL))?;
    if after > rows.newest {
        return Err(ReadFailure::CursorAhead);
    }
    let mut keys = std::collections::BTreeMap::new();
    let mut patients = Vec::with_capacity(rows.patients.len());
    for p in &rows.patients {
        keys.insert(p.id, r.keys.wrap_for(p, device_key)?);
        patients.push(wire::SealedPatient {
            id: p.id,
            unit: p.unit.clone(),
            bed: p.bed.clone(),
            version: p.version,
            body: p.body.clone(),
        });
    }
    for p in &rows.key_holders {
        keys.insert(p.id, r.keys.wrap_for(p, device_key)?);
    }
    let mut records = Vec::with_capacity(rows.records.len());
    for (patient_id, rec) in rows.records {
        if keys.contains_key(&patient_id) {
            records.push(wire_record(patient_id, rec));
        }
    }
    let patient_ids: Vec<Uuid> = keys.keys().copied().collect();
    r.record(
        "sync_pull",
        "ok",
        Subject { resource_type: "sync", resource_id: format!("{after}..{}", rows.upto), patient_ids },
    )?;
    Ok(PullPage {
        patients,
        records,
        keys: keys
            .into_iter()
            .map(|(patient_id, wrapped)| wire::WrappedPatientKey { patient_id, wrapped })
            .collect(),
        left: rows.left,
        cursor: rows.upto,
        more: rows.more,
    })
}

fn wire_record(patient_id: Uuid, r: SealedRecord) -> wire::SealedRecord {
    wire::SealedRecord {
        id: r.id,
        patient_id,
        kind: r.kind.as_str().to_owned(),
        sort_key: r.sort_key,
        version: r.version,
        body: r.body,
    }
}
