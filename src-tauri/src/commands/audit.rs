//! Oversight for auditors: the server's audit trail, break-glass review and incidents. Nothing
//! here touches the station's patient data; the server checks the role and records every call.

use chartroom_station::AuditQuery;
use tauri::State;
use uuid::Uuid;

use super::with_oversight;
use crate::dto::{time, AuditEntryView, AuditFilter, AuditVerifyView, BreakGlassUseView, IncidentView};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Searches the trail (newest first; summaries only).
#[tauri::command(rename_all = "snake_case")]
pub async fn audit_search(state: State<'_, AppState>, filter: AuditFilter) -> AppResult<Vec<AuditEntryView>> {
    let instant = |s: &Option<String>| -> AppResult<Option<chartroom_station::domain::Timestamp>> {
        match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => parse_time(s).map(Some).ok_or_else(|| {
                AppError::new(
                    "request.invalid",
                    "Times must look like 2026-11-27T08:00 or 2026-11-27T08:00:00Z.",
                )
            }),
        }
    };
    let text = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let query = AuditQuery {
        user: text(&filter.user),
        mrn: text(&filter.mrn),
        action: text(&filter.action),
        since: instant(&filter.since)?,
        until: instant(&filter.until)?,
        limit: Some(usize::try_from(filter.limit.clamp(1, 1000)).unwrap_or(200)),
    };
    with_oversight(&state, async |session, client, now| {
        let rows = session.audit_search(client, &query, now).await?;
        Ok(rows
            .into_iter()
            .map(|e| AuditEntryView {
                #[allow(clippy::cast_precision_loss)]
                seq: e.seq as f64,
                at: e.at,
                username: e.username,
                device_id: e.device_id,
                action: e.action,
                resource_type: e.resource_type,
                outcome: e.outcome,
                patient_count: e.patients,
                break_glass: e.break_glass,
            })
            .collect())
    })
    .await
}

/// UTC `YYYY-MM-DDTHH:MM[:SS][Z]` (RFC 3339 in UTC, or the `datetime-local` form a browser gives),
/// or a bare date (midnight).
fn parse_time(s: &str) -> Option<chartroom_station::domain::Timestamp> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, clock) = s.split_once('T').unwrap_or((s, "00:00"));
    let num = |t: &str| t.parse::<u32>().ok();
    let mut d = date.split('-');
    let (y, mo, day) = (d.next()?.parse::<i64>().ok()?, num(d.next()?)?, num(d.next()?)?);
    let mut c = clock.split(':');
    let (h, mi) = (num(c.next()?)?, num(c.next()?)?);
    let sec = c.next().map_or(Some(0), num)?;
    if d.next().is_some()
        || c.next().is_some()
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&day)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let t = chartroom_station::domain::Timestamp::from_civil_date(y, mo, day);
    Some(chartroom_station::domain::Timestamp(t.0 + i64::from(h * 3600 + mi * 60 + sec) * 1000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_from_the_filter_form() {
        let t = |s| super::parse_time(s).map(|t| t.to_string());
        assert_eq!(t("2026-11-27T08:05").as_deref(), Some("2026-11-27T08:05:00Z"));
        assert_eq!(t("2026-11-27T08:05:09Z").as_deref(), Some("2026-11-27T08:05:09Z"));
        assert_eq!(t("2026-11-27").as_deref(), Some("2026-11-27T00:00:00Z"));
        assert_eq!(t("2026-13-27"), None);
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2026-11-27T08:05+02:00"), None);
    }

    proptest::proptest! {
        /// The filter form's times are typed text from the webview: any string is a time or `None`.
        #[test]
        fn any_filter_text_parses_or_is_refused(s in "\\PC{0,40}", digits in "[0-9T:Z+-]{0,30}") {
            let _ = super::parse_time(&s);
            let _ = super::parse_time(&digits);
        }
    }
}

/// Re-verifies the whole trail on the server.
#[tauri::command(rename_all = "snake_case")]
pub async fn audit_verify(state: State<'_, AppState>) -> AppResult<AuditVerifyView> {
    with_oversight(&state, async |session, client, now| {
        let v = session.audit_verify(client, now).await?;
        #[allow(clippy::cast_precision_loss)]
        Ok(AuditVerifyView { ok: v.ok, entries: v.entries as f64, problem: v.problem })
    })
    .await
}

/// Break-glass uses (only unreviewed ones with `unreviewed`).
#[tauri::command(rename_all = "snake_case")]
pub async fn break_glass_uses(
    state: State<'_, AppState>,
    unreviewed: bool,
) -> AppResult<Vec<BreakGlassUseView>> {
    with_oversight(&state, async |session, client, now| {
        let uses = session.break_glass_uses(client, unreviewed, now).await?;
        Ok(uses
            .into_iter()
            .map(|u| BreakGlassUseView {
                id: u.id.clone(),
                at: time(u.granted_at),
                username: u.username.clone(),
                patient_id: u.patient_id.clone(),
                mrn: u.mrn.clone(),
                patient_name: u.patient_name.clone(),
                reason: u.reason.clone(),
                detail: Some(u.detail.clone()).filter(|d| !d.is_empty()),
                reviewed: u.reviewed_at.is_some(),
            })
            .collect())
    })
    .await
}

/// Marks a break-glass use reviewed (recorded by the server).
#[tauri::command(rename_all = "snake_case")]
pub async fn review_break_glass(state: State<'_, AppState>, id: Uuid) -> AppResult<()> {
    with_oversight(&state, async |session, client, now| {
        Ok(session.review_break_glass(client, &id.to_string(), now).await?)
    })
    .await
}

/// Incidents raised by the anomaly rule.
#[tauri::command(rename_all = "snake_case")]
pub async fn incidents(state: State<'_, AppState>) -> AppResult<Vec<IncidentView>> {
    with_oversight(&state, async |session, client, now| {
        let found = session.incidents(client, now).await?;
        Ok(found
            .into_iter()
            .map(|i| IncidentView {
                id: i.id.clone(),
                at: time(i.at),
                username: i.username.clone(),
                kind: i.kind.clone(),
                detail: format!(
                    "{} accesses in the last hour against an hourly average of {:.1}",
                    i.last_hour, i.hourly_average
                ),
            })
            .collect())
    })
    .await
}
