//! Oversight (DESIGN §5, §6): break-glass access to patients outside one's scope — time-limited,
//! with a reason, flagged in the trail and queued for auditor review — and the anomaly rule that
//! disables an account whose access rate jumps far above its own normal.

use std::time::Duration;

use chartroom_domain::access::{break_glass_grants, Denied};
use chartroom_domain::{decide, Action, Target, Timestamp};
use chartroom_protocol::{
    AuditEntrySummary, AuditVerifySummary, BreakGlassGrant, BreakGlassReason, BreakGlassUse, IncidentInfo,
    PatientLookup,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::records::{principal, ReadFailure, Reader, Subject};
use crate::storage::{BreakGlass, Incident, SessionOwner, Storage};
use crate::ServerError;

/// How long a break-glass grant lasts.
pub const BREAK_GLASS_DURATION: Duration = Duration::from_secs(60 * 60);
const DETAIL_FIELD: &str = "server.break_glass";

/// The anomaly rule: more than `factor` × the user's hourly average over the baseline window, and
/// more than `floor` accesses in the last hour (so a new user is not disabled on day one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyRule {
    pub factor: f64,
    pub floor: u64,
    pub baseline_days: u64,
}

impl Default for AnomalyRule {
    fn default() -> Self {
        AnomalyRule { factor: 3.0, floor: 60, baseline_days: 7 }
    }
}

/// The actions the anomaly rule counts: reads of patient data.
const ACCESS_ACTIONS: &[&str] = &["view", "break_glass_view"];

/// Applies the rule to the user of `owner` before another access. If it trips, the account is
/// disabled (sessions end at once), an incident is recorded and entered in the trail.
pub fn check_anomaly(
    storage: &dyn Storage,
    owner: &SessionOwner,
    rule: &AnomalyRule,
    now: Timestamp,
) -> Result<Option<Incident>, ServerError> {
    let user = &owner.user;
    let hour = Duration::from_secs(3600);
    let last_hour_start = Timestamp(now.0 - 3_600_000);
    // Accesses up to and including this instant, plus the one being attempted.
    let last_hour =
        storage.count_actions(&user.username, ACCESS_ACTIONS, last_hour_start, Timestamp(now.0 + 1))? + 1;
    if last_hour <= rule.floor {
        return Ok(None);
    }
    let baseline = Duration::from_secs(rule.baseline_days.max(1) * 86_400);
    let baseline_start =
        Timestamp(last_hour_start.0 - i64::try_from(baseline.as_millis()).unwrap_or(i64::MAX));
    let before = storage.count_actions(&user.username, ACCESS_ACTIONS, baseline_start, last_hour_start)?;
    let hourly_average = before as f64 / (baseline.as_secs_f64() / hour.as_secs_f64());
    if (last_hour as f64) <= rule.factor * hourly_average {
        return Ok(None);
    }
    let incident = Incident {
        id: Uuid::now_v7(),
        at: now,
        user_id: user.id,
        username: user.username.clone(),
        kind: "access_rate".into(),
        last_hour,
        hourly_average,
    };
    if !storage.raise_incident(&incident)? {
        // Another server process acted on the same burst first: its incident is the stored one
        // (and in the trail); this access is refused all the same.
        return Ok(Some(incident));
    }
    let mut e = crate::audit::event(now, "incident", "user", "account_disabled", &Default::default());
    e.user_id = Some(user.id);
    e.username = Some(user.username.clone());
    e.origin_device = Some(owner.device.record.id);
    e.resource_id = Some(incident.id.to_string());
    storage.append_events(&[e])?;
    Ok(Some(incident))
}

/// Grants the caller time-limited access to a patient outside their scope, for a stated reason.
pub fn break_glass(
    r: Reader<'_>,
    patient_id: Uuid,
    reason: BreakGlassReason,
    detail: &str,
) -> Result<BreakGlassGrant, ReadFailure> {
    let subject = || Subject {
        resource_type: "patient",
        resource_id: patient_id.to_string(),
        patient_ids: vec![patient_id],
    };
    let Some(patient) = r.storage.patient(patient_id)? else {
        r.record("denied", "patient.not_found", subject())?;
        return Err(ReadFailure::NotFound);
    };
    if break_glass_grants(r.owner.user.role).is_empty() {
        r.record("denied", Denied::NotPermitted.code(), subject())?;
        return Err(ReadFailure::Denied(Denied::NotPermitted));
    }
    let detail = detail.trim();
    let chars = detail.chars().count();
    if !(5..=500).contains(&chars) || detail.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ReadFailure::Invalid("detail must be 5–500 characters of text"));
    }
    let id = Uuid::now_v7();
    let sealed = r.keys.seal_for(&patient, id, DETAIL_FIELD, detail.as_bytes())?;
    let grant = BreakGlass {
        id,
        user_id: r.owner.user.id,
        username: r.owner.user.username.clone(),
        patient_id,
        reason: reason.as_str().into(),
        detail: sealed.clone(),
        granted_at: r.now,
        expires_at: r.now.plus(BREAK_GLASS_DURATION),
        reviewed_by: None,
        reviewed_at: None,
    };
    r.storage.put_break_glass(&grant)?;
    let mut e = crate::audit::event(r.now, "break_glass", "patient", reason.as_str(), r.origin);
    e.user_id = Some(r.owner.user.id);
    e.username = Some(r.owner.user.username.clone());
    e.origin_device = Some(r.owner.device.record.id);
    e.resource_id = Some(id.to_string());
    e.patient_ids = vec![patient_id];
    e.after = Some(sealed);
    r.storage.append_events(&[e])?;
    Ok(BreakGlassGrant {
        id: id.to_string(),
        patient_id: patient_id.to_string(),
        expires_at: grant.expires_at,
    })
}

/// The field a station seals the reason of its own break-glass entries under.
pub const STATION_DETAIL_FIELD: &str = "station.break_glass";

/// Puts the break-glass uses a station recorded offline (entries it uploaded that name a break-glass
/// id the server never granted) in the auditors' review queue. Such a use grants nothing here: it
/// starts and ends at the same instant (no later than now), whatever time the station wrote. The
/// reason the station sealed with the patient's key is resealed as the server's own; a use already
/// queued (an upload retried) is left as it is.
pub fn queue_offline_break_glass(
    storage: &dyn Storage,
    keys: &crate::phi::RecordKeys,
    entries: &[chartroom_audit::AuditEntry],
    now: Timestamp,
) -> Result<usize, ServerError> {
    let candidates: Vec<&chartroom_audit::AuditEntry> = entries
        .iter()
        .filter(|e| e.event.action == "break_glass" && e.event.resource_type == "patient")
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    let known: std::collections::HashSet<Uuid> =
        storage.break_glass_list(false)?.into_iter().map(|g| g.id).collect();
    let mut queued = 0;
    for entry in candidates {
        let e = &entry.event;
        let (Some(id), [patient_id], Some(user_id), Some(username)) = (
            e.resource_id.as_deref().and_then(|r| r.parse::<Uuid>().ok()),
            e.patient_ids.as_slice(),
            e.user_id,
            e.username.clone(),
        ) else {
            continue;
        };
        let reason = serde_json::from_value::<BreakGlassReason>(serde_json::Value::String(e.outcome.clone()));
        let (Ok(reason), false) = (reason, known.contains(&id)) else { continue };
        let Some(patient) = storage.patient(*patient_id)? else { continue };
        // The station seals values as JSON (here a string). A reason that does not open (a patient
        // key the station made itself) is queued empty.
        let text: zeroize::Zeroizing<String> = e
            .after
            .as_deref()
            .and_then(|sealed| keys.open_for(&patient, id, STATION_DETAIL_FIELD, sealed).ok())
            .and_then(|json| serde_json::from_slice::<String>(&json).ok())
            .unwrap_or_default()
            .into();
        let at = if e.at < now { e.at } else { now };
        let grant = BreakGlass {
            id,
            user_id,
            username: username.chars().take(64).collect(),
            patient_id: *patient_id,
            reason: reason.as_str().into(),
            detail: keys.seal_for(&patient, id, DETAIL_FIELD, text.as_bytes())?,
            granted_at: at,
            expires_at: at,
            reviewed_by: None,
            reviewed_at: None,
        };
        // Two uploads of the same entry at once: the second finds it queued.
        if let Err(err) = storage.put_break_glass(&grant) {
            if storage.break_glass_list(false)?.iter().any(|g| g.id == id) {
                continue;
            }
            return Err(err);
        }
        queued += 1;
    }
    Ok(queued)
}

/// Break-glass uses for auditors (with the users' reasons opened), optionally only unreviewed ones.
pub fn break_glass_uses(r: Reader<'_>, unreviewed_only: bool) -> Result<Vec<BreakGlassUse>, ReadFailure> {
    require_audit_reader(r, "break_glass_list")?;
    let mut out = Vec::new();
    for g in r.storage.break_glass_list(unreviewed_only)? {
        let (detail, mrn, patient_name) = match r.storage.patient(g.patient_id)? {
            Some(p) => {
                let detail = r.keys.open_for(&p, g.id, DETAIL_FIELD, &g.detail)?;
                let (_, patient) = r.keys.open_patient(&p)?;
                (String::from_utf8_lossy(&detail).into_owned(), patient.mrn, patient.name.to_string())
            }
            // The patient was removed since: the reason went with their key.
            None => Default::default(),
        };
        out.push(BreakGlassUse {
            id: g.id.to_string(),
            username: g.username,
            patient_id: g.patient_id.to_string(),
            mrn,
            patient_name,
            reason: g.reason,
            detail,
            granted_at: g.granted_at,
            expires_at: g.expires_at,
            reviewed_by: g.reviewed_by,
            reviewed_at: g.reviewed_at,
            offline: g.expires_at <= g.granted_at,
        });
    }
    let patients = out.iter().filter_map(|u| u.patient_id.parse().ok()).collect();
    r.record(
        "view",
        "ok",
        Subject { resource_type: "break_glass_list", resource_id: String::new(), patient_ids: patients },
    )?;
    Ok(out)
}

/// Marks a break-glass use reviewed by the calling auditor.
pub fn review_break_glass(r: Reader<'_>, id: Uuid) -> Result<(), ReadFailure> {
    require_audit_reader(r, "break_glass_review")?;
    if !r.storage.review_break_glass(id, &r.owner.user.username, r.now)? {
        return Err(ReadFailure::NotFound);
    }
    r.record(
        "break_glass_review",
        "ok",
        Subject { resource_type: "break_glass", resource_id: id.to_string(), patient_ids: vec![] },
    )?;
    Ok(())
}

/// Incidents, for auditors.
pub fn incidents(r: Reader<'_>) -> Result<Vec<IncidentInfo>, ReadFailure> {
    require_audit_reader(r, "incidents")?;
    let list = r.storage.incidents()?;
    r.record(
        "view",
        "ok",
        Subject { resource_type: "incidents", resource_id: String::new(), patient_ids: vec![] },
    )?;
    Ok(list.into_iter().map(incident_info).collect())
}

/// Searches the audit trail (auditors only): the newest entries matching `filter` (with `mrn`
/// resolved to its patient), at most `limit` (1–1000). The search itself is recorded, with the
/// patient it was about, as an export is.
pub fn audit_search(
    r: Reader<'_>,
    mut filter: crate::audit::ExportFilter,
    mrn: Option<&str>,
    limit: usize,
) -> Result<Vec<AuditEntrySummary>, ReadFailure> {
    require_audit_reader(r, "audit")?;
    if let Some(mrn) = mrn {
        let Some(id) = crate::records::patient_by_mrn(r.storage, r.keys, mrn)? else {
            r.record(
                "denied",
                "patient.not_found",
                Subject { resource_type: "audit", resource_id: String::new(), patient_ids: vec![] },
            )?;
            return Err(ReadFailure::NotFound);
        };
        filter.patient_id = Some(id);
    }
    let limit = limit.clamp(1, chartroom_protocol::MAX_AUDIT_SEARCH);
    let found = crate::audit::search(r.storage, &filter, limit)?;
    r.record(
        "audit_search",
        "ok",
        Subject {
            resource_type: "audit",
            resource_id: format!("{} entries", found.len()),
            patient_ids: filter.patient_id.into_iter().collect(),
        },
    )?;
    Ok(found.iter().map(crate::audit::summary).collect())
}

/// Re-verifies the whole trail (auditors only), as `chartroom-server audit verify` does: a
/// checkpoint is signed first if one is due, so the verification covers everything stored. The
/// verification and its result are recorded.
pub fn audit_verify(
    r: Reader<'_>,
    key: &crate::audit::CheckpointKey,
) -> Result<AuditVerifySummary, ReadFailure> {
    require_audit_reader(r, "audit")?;
    crate::audit::checkpoint_if_due(r.storage, key, r.now)?;
    let summary = match crate::audit::verify(r.storage, &key.verifying_key())? {
        Ok(v) => AuditVerifySummary { ok: true, entries: v.entries, problem: None },
        Err(p) => AuditVerifySummary {
            ok: false,
            entries: p.position.saturating_sub(1),
            problem: Some(p.to_string()),
        },
    };
    let outcome = if summary.ok { "ok" } else { "audit.broken" };
    r.record(
        "audit_verify",
        outcome,
        Subject {
            resource_type: "audit",
            resource_id: format!("{} entries", summary.entries),
            patient_ids: vec![],
        },
    )?;
    Ok(summary)
}

/// The id of the patient with this MRN, for a clinician about to break the glass (roles that may
/// break the glass only). Gives no demographics; recorded with the patient (never the MRN).
pub fn lookup_patient(r: Reader<'_>, mrn: &str) -> Result<PatientLookup, ReadFailure> {
    let subject = |ids: Vec<Uuid>| Subject {
        resource_type: "patient_lookup",
        resource_id: ids.first().map(Uuid::to_string).unwrap_or_default(),
        patient_ids: ids,
    };
    if break_glass_grants(r.owner.user.role).is_empty() {
        r.record("denied", Denied::NotPermitted.code(), subject(vec![]))?;
        return Err(ReadFailure::Denied(Denied::NotPermitted));
    }
    let mrn = mrn.trim();
    if mrn.is_empty() || mrn.chars().count() > 64 || mrn.chars().any(char::is_control) {
        return Err(ReadFailure::Invalid("mrn must be 1–64 characters of text"));
    }
    let Some(id) = crate::records::patient_by_mrn(r.storage, r.keys, mrn)? else {
        r.record("denied", "patient.not_found", subject(vec![]))?;
        return Err(ReadFailure::NotFound);
    };
    r.record("lookup", "ok", subject(vec![id]))?;
    Ok(PatientLookup { patient_id: id.to_string() })
}

pub fn incident_info(i: Incident) -> IncidentInfo {
    IncidentInfo {
        id: i.id.to_string(),
        at: i.at,
        username: i.username,
        kind: i.kind,
        last_hour: i.last_hour,
        hourly_average: i.hourly_average,
    }
}

fn require_audit_reader(r: Reader<'_>, what: &'static str) -> Result<(), ReadFailure> {
    if let Err(denied) = decide(&principal(r.owner), Action::ReadAudit, Target::System) {
        r.record(
            "denied",
            denied.code(),
            Subject { resource_type: what, resource_id: String::new(), patient_ids: vec![] },
        )?;
        return Err(ReadFailure::Denied(denied));
    }
    Ok(())
}
