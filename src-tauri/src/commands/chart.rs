//! The clinical commands: census, chart, vitals and notes. Each read and write goes through the
//! station core, which checks the role and records it in the audit trail.

use chartroom_station::domain::{Action, NoteKind, Principal, Role, Target, VitalSign};
use tauri::State;
use uuid::Uuid;

use chartroom_station::domain::{Chart, Timestamp};
use chartroom_station::UnlockedVault;

use super::{with_online_vault, with_vault};
use crate::census::Census;
use crate::dto::{
    time, BreakGlassReasonView, CensusInfo, CensusPage, CensusRow, ChartAccess, ChartView, DraftView,
    NoteView, VitalInput, VitalRange,
};
use crate::error::{AppError, AppResult};
use crate::state::{guard, AppState, SignedIn};

/// Newest observations shown in a chart (the plot's window).
const MAX_OBSERVATIONS: usize = 200;

/// Loads the signed-in user's units' patients (again) and keeps them for [`census_search`]: how
/// many, on which units, and whether the list may be incomplete. Reading them is audited; the
/// census is kept while the vault is held, so a lock (which drops it, also holding the vault)
/// cannot come between.
#[tauri::command(rename_all = "snake_case")]
pub async fn census(state: State<'_, AppState>) -> AppResult<CensusInfo> {
    with_vault(&state, |vault, user, now| {
        let rows = vault.census(None, now)?;
        let mine = vault.mine()?;
        let partial = !vault.first_sync_complete()? && vault.is_enrolled();
        let rows = rows
            .into_iter()
            .map(|r| {
                let is_mine = mine.contains(&r.patient_id);
                CensusRow::new(r, is_mine, now)
            })
            .collect();
        let census = Census::new(user.id, rows, partial);
        let info = CensusInfo {
            patients: u32::try_from(census.patients()).unwrap_or(u32::MAX),
            partial: census.partial,
            units: census.units.clone(),
        };
        *guard(&state.census) = Some(census);
        Ok(info)
    })
    .await
}

/// The census rows matching a search (name, MRN or bed), best first, at most `limit` (1–200),
/// from the census kept since the last [`census`]. Synchronous — it runs on the main thread and
/// takes microseconds — so a keystroke's answer does not wait for a thread hop.
#[tauri::command(rename_all = "snake_case")]
pub fn census_search(
    state: State<'_, AppState>,
    query: String,
    mine_only: bool,
    limit: u32,
) -> AppResult<CensusPage> {
    let limit = usize::try_from(limit.clamp(1, 200)).unwrap_or(200);
    let user = state.active_user().ok_or_else(AppError::locked)?;
    match guard(&state.census).as_ref().filter(|c| c.user == user.id) {
        Some(c) => Ok(c.search(&query, mine_only, limit)),
        None => Err(AppError::new("census.not_loaded", "The census is not loaded yet; load it first.")),
    }
}

/// One patient's chart (the sections the role may read).
#[tauri::command(rename_all = "snake_case")]
pub async fn chart(state: State<'_, AppState>, mrn: String) -> AppResult<ChartView> {
    with_vault(&state, |vault, user, now| {
        let chart = vault.chart_by_mrn(mrn.trim(), MAX_OBSERVATIONS, now)?;
        Ok(view(vault, &chart, user, false, now))
    })
    .await
}

fn view(
    vault: &UnlockedVault,
    chart: &Chart,
    user: &SignedIn,
    break_glass: bool,
    now: Timestamp,
) -> ChartView {
    let mut access = access(user, &chart.patient.unit, break_glass);
    access.mine = vault.mine().is_ok_and(|m| m.contains(&chart.patient.id));
    ChartView::new(chart, user.id, access, now)
}

/// Adds a patient to (or removes them from) the physician's own list.
#[tauri::command(rename_all = "snake_case")]
pub async fn set_mine(state: State<'_, AppState>, mrn: String, mine: bool) -> AppResult<()> {
    with_vault(&state, |vault, _, now| {
        vault.set_mine(mrn.trim(), mine, now)?;
        if let Some(c) = guard(&state.census).as_mut() {
            c.set_mine(mrn.trim(), mine);
        }
        Ok(())
    })
    .await
}

/// What the role may write on a patient of `unit`.
fn access(user: &SignedIn, unit: &str, break_glass: bool) -> ChartAccess {
    let who = Principal {
        role: user.role,
        units: if user.units.is_empty() { vec!["*".into()] } else { user.units.clone() },
    };
    let may =
        |a: Action| chartroom_station::domain::decide(&who, a, Target::Patient { unit, break_glass }).is_ok();
    let note_kind = if user.role == Role::Physician { NoteKind::Progress } else { NoteKind::Nursing };
    ChartAccess {
        break_glass,
        read_only: false,
        can_write_vitals: may(Action::WriteVitals),
        can_write_notes: may(Action::WriteNote(note_kind)),
        mine: false,
    }
}

/// The vitals form's fields: limits, units and normal ranges.
#[tauri::command(rename_all = "snake_case")]
pub fn vital_ranges() -> Vec<VitalRange> {
    VitalRange::all()
}

/// Records a vitals set (values outside physiological limits are refused, naming the field).
#[tauri::command(rename_all = "snake_case")]
pub async fn record_vitals(
    state: State<'_, AppState>,
    mrn: String,
    values: Vec<VitalInput>,
) -> AppResult<ChartView> {
    with_vault(&state, |vault, user, now| {
        let values: Vec<(VitalSign, f64)> = values.iter().map(|v| (v.vital.into(), v.value)).collect();
        if values.iter().any(|(_, v)| !v.is_finite()) {
            return Err(AppError::new("validation.number", "Each value must be a number."));
        }
        vault.record_vitals(mrn.trim(), &values, now)?;
        let chart = vault.chart_by_mrn(mrn.trim(), MAX_OBSERVATIONS, now)?;
        Ok(view(vault, &chart, user, false, now))
    })
    .await
}

/// Autosave: creates the user's draft note when `note_id` is null, otherwise replaces its text.
#[tauri::command(rename_all = "snake_case")]
pub async fn save_draft(
    state: State<'_, AppState>,
    mrn: String,
    note_id: Option<Uuid>,
    text: String,
) -> AppResult<NoteView> {
    with_vault(&state, |vault, user, now| {
        let note = match note_id {
            None => vault.write_note(mrn.trim(), &text, false, now)?,
            Some(id) => vault.edit_note(id, Some(&text), false, now)?,
        };
        Ok(NoteView::new(&note, user.id))
    })
    .await
}

/// Signs the user's draft with its final text; a signed note is never edited again.
#[tauri::command(rename_all = "snake_case")]
pub async fn sign_note(state: State<'_, AppState>, note_id: Uuid, text: String) -> AppResult<NoteView> {
    with_vault(&state, |vault, user, now| {
        Ok(NoteView::new(&vault.edit_note(note_id, Some(&text), true, now)?, user.id))
    })
    .await
}

/// Amends a signed note (signed at once: an addendum is written to be final).
#[tauri::command(rename_all = "snake_case")]
pub async fn write_addendum(state: State<'_, AppState>, note_id: Uuid, text: String) -> AppResult<NoteView> {
    with_vault(&state, |vault, user, now| {
        Ok(NoteView::new(&vault.write_addendum(note_id, &text, true, now)?, user.id))
    })
    .await
}

/// Marks the user's own signed note entered-in-error, with a reason; it stays in the chart.
#[tauri::command(rename_all = "snake_case")]
pub async fn enter_in_error(
    state: State<'_, AppState>,
    note_id: Uuid,
    reason: String,
) -> AppResult<NoteView> {
    with_vault(&state, |vault, user, now| {
        Ok(NoteView::new(&vault.enter_in_error(note_id, &reason, now)?, user.id))
    })
    .await
}

/// The user's own unsigned drafts on this station (they come back to them alone).
#[tauri::command(rename_all = "snake_case")]
pub async fn my_drafts(state: State<'_, AppState>) -> AppResult<Vec<DraftView>> {
    with_vault(&state, |vault, _, now| {
        Ok(vault
            .my_drafts(now)?
            .into_iter()
            .map(|d| DraftView {
                note_id: d.note_id,
                mrn: d.mrn,
                patient_name: d.patient_name,
                bed: d.bed,
                updated_at: time(d.created_at),
                chars: u32::try_from(d.text_len).unwrap_or(u32::MAX),
            })
            .collect())
    })
    .await
}

/// Opens a patient outside the user's units for a stated reason (audited, reviewed by auditors).
/// Online the server grants it first; a chart this station does not hold is shown read-only.
#[tauri::command(rename_all = "snake_case")]
pub async fn break_glass(
    state: State<'_, AppState>,
    mrn: String,
    reason: BreakGlassReasonView,
    detail: String,
) -> AppResult<ChartView> {
    with_online_vault(&state, async |vault, client, user, now| {
        let chart = vault.break_glass(client, mrn.trim(), reason.into(), &detail, now).await?;
        let held = vault.store().find_by_mrn(mrn.trim()).is_ok();
        let mut v = view(vault, &chart, user, true, now);
        if !held {
            v.read_only = true;
            v.can_write_notes = false;
            v.can_write_vitals = false;
        }
        Ok(v)
    })
    .await
}
