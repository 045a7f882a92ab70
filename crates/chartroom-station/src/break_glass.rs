//! Break-glass on a station (DESIGN §5): a clinician opens a patient outside their units by MRN,
//! for a reason from the fixed list and their own words. Online, the server grants it (and records
//! it for auditor review) before anything is shown; offline, only a patient this station already
//! holds can be opened, flagged and recorded here (the entries reach the server with the next audit
//! upload, which puts the use in the auditors' review queue). The free text is never recorded in
//! the clear.

use chartroom_client::ServerClient;
use chartroom_domain::access::{break_glass_grants, readable_sections, Principal};
use chartroom_domain::{decide, Action, Chart, ChartSection, Denied, Target, Timestamp};
use chartroom_protocol::{BreakGlassReason, BreakGlassRequest};
use chartroom_store::StoreError;
use uuid::Uuid;

use crate::oversight::server_error;
use crate::{StationError, UnlockedVault};

type Result<T> = std::result::Result<T, StationError>;

/// Newest observations shown with a chart opened by break-glass (the server's default page).
pub const BREAK_GLASS_OBSERVATIONS: usize = 200;
/// The field the reason's free text is sealed under in the station's audit entry (the server opens
/// it under the same name to queue an offline use for review).
const DETAIL_FIELD: &str = "station.break_glass";

/// Makes a signed call with this session's access token; an expired token is renewed once (as a
/// sync does) and the call made again.
macro_rules! online_call {
    ($self:ident, $client:ident, $now:ident, |$d:ident, $t:ident| $call:expr) => {{
        let first = {
            let (token, identity) = $self.online()?;
            let ($d, $t): (&chartroom_client::DeviceIdentity, &str) = (&identity, &token);
            $call.await
        };
        match first {
            Err(e) if e.code() == Some("auth.invalid_token") => {
                $self.refresh_session($client, $now).await?;
                let (token, identity) = $self.online()?;
                let ($d, $t): (&chartroom_client::DeviceIdentity, &str) = (&identity, &token);
                $call.await.map_err(server_error)
            }
            other => other.map_err(server_error),
        }
    }};
}

impl UnlockedVault {
    /// Opens the chart of the patient with this MRN outside this user's units ("break the glass"),
    /// for `reason` explained in `detail` (5–500 characters; sealed, never recorded in the clear).
    ///
    /// Online, the server grants access first (and queues it for auditor review); the chart is then
    /// this station's copy if it holds the patient (a shared ward station), or the server's — which
    /// is shown, never cached. Offline (or with the server unreachable) a patient this station holds
    /// is opened, flagged as break-glass in the trail; any other is refused with
    /// `break_glass.offline`. A patient already on the user's units is simply opened (an ordinary,
    /// recorded read). Other users' drafts are never shown.
    pub async fn break_glass(
        &mut self,
        client: &ServerClient,
        mrn: &str,
        reason: BreakGlassReason,
        detail: &str,
        now: Timestamp,
    ) -> Result<Chart> {
        let role = self.role.ok_or(StationError::RoleUnknown)?;
        let detail = detail.trim();
        let chars = detail.chars().count();
        if !(5..=500).contains(&chars) || detail.chars().any(|c| c.is_control() && c != '\n') {
            return Err(StationError::BreakGlassDetail);
        }
        if break_glass_grants(role).is_empty() {
            self.record_refusal(Denied::NotPermitted.code(), None, now)?;
            return Err(StationError::Denied(Denied::NotPermitted));
        }
        let local = match self.store.find_by_mrn(mrn) {
            Ok(id) => Some(id),
            Err(StoreError::PatientNotFound) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(id) = local {
            let unit = self.store.patient_unit(id)?;
            let who = self.principal()?;
            let read = Action::Read(ChartSection::Demographics);
            if decide(&who, read, Target::Patient { unit: &unit, break_glass: false }).is_ok() {
                return self.chart_by_mrn(mrn, BREAK_GLASS_OBSERVATIONS, now);
            }
        }
        if self.is_online() {
            match self.break_glass_online(client, local, mrn, reason, detail, now).await {
                // The server cannot be reached: as offline.
                Err(e) if e.is_retryable() => {}
                other => return other,
            }
        }
        let Some(id) = local else {
            self.record_refusal("break_glass.offline", None, now)?;
            return Err(StationError::BreakGlassOffline);
        };
        self.break_glass_local(id, reason, detail, None, now)
    }

    async fn break_glass_online(
        &mut self,
        client: &ServerClient,
        local: Option<Uuid>,
        mrn: &str,
        reason: BreakGlassReason,
        detail: &str,
        now: Timestamp,
    ) -> Result<Chart> {
        let patient_id = match local {
            Some(id) => id,
            None => {
                let found = online_call!(self, client, now, |d, t| client.lookup_patient(d, t, mrn));
                match found {
                    Ok(found) => found.patient_id.parse().map_err(|_| StationError::ServerAnswer)?,
                    Err(StationError::PatientNotFound) => {
                        self.record_refusal("patient.not_found", None, now)?;
                        return Err(StationError::PatientNotFound);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let request = BreakGlassRequest { reason, detail: detail.to_owned() };
        let pid = patient_id.to_string();
        let grant = online_call!(self, client, now, |d, t| client.break_glass(d, t, &pid, &request))?;
        if local.is_some() {
            return self.break_glass_local(patient_id, reason, detail, Some(&grant.id), now);
        }
        // Not on this station: the server's chart, shown and not kept. The server records the read
        // (flagged as break-glass); this station records that the glass was broken here.
        let response = online_call!(self, client, now, |d, t| client.chart(d, t, &pid))?;
        let actor = self.actor();
        let mut e = chartroom_audit::Event::new(now, "break_glass", "patient", reason.as_str());
        e.resource_id = Some(grant.id.clone());
        e.patient_ids = vec![patient_id];
        self.store.record(&actor, e)?;
        let mut chart = response.chart;
        if chart.patient.id != patient_id {
            return Err(StationError::ServerAnswer);
        }
        self.hide_others_drafts(&mut chart);
        Ok(chart)
    }

    /// Opens this station's copy of a patient outside the user's units, recording the break-glass
    /// (the reason sealed with the patient's key) and the read, flagged as such.
    fn break_glass_local(
        &mut self,
        patient_id: Uuid,
        reason: BreakGlassReason,
        detail: &str,
        grant: Option<&str>,
        now: Timestamp,
    ) -> Result<Chart> {
        let unit = self.store.patient_unit(patient_id)?;
        let who = self.principal()?;
        let read = Action::Read(ChartSection::Demographics);
        if let Err(denied) = decide(&who, read, Target::Patient { unit: &unit, break_glass: true }) {
            self.record_refusal(denied.code(), Some(patient_id), now)?;
            return Err(StationError::Denied(denied));
        }
        let actor = self.actor();
        // The server's grant, or an id made here: a break-glass the server has not seen yet, which
        // it queues for auditor review when this entry is uploaded (and can open the reason, sealed
        // with the patient's key at this id).
        let id = grant.and_then(|g| g.parse::<Uuid>().ok()).unwrap_or_else(Uuid::now_v7);
        let sealed = self.store.seal_text(patient_id, id, DETAIL_FIELD, detail)?;
        let mut e = chartroom_audit::Event::new(now, "break_glass", "patient", reason.as_str());
        e.resource_id = Some(id.to_string());
        e.patient_ids = vec![patient_id];
        e.after = Some(sealed);
        self.store.record(&actor, e)?;
        let mut chart = self.store.chart(patient_id, BREAK_GLASS_OBSERVATIONS)?;
        let mut view = chartroom_audit::Event::new(now, "break_glass_view", "patient", "ok");
        view.resource_id = Some(patient_id.to_string());
        view.patient_ids = vec![patient_id];
        self.store.record(&actor, view)?;
        let sections = readable_sections(&who, &unit, true);
        crate::vault::keep_sections(&mut chart, &sections);
        self.hide_others_drafts(&mut chart);
        Ok(chart)
    }

    /// Records a refused break-glass (never the MRN).
    fn record_refusal(&mut self, code: &str, patient_id: Option<Uuid>, now: Timestamp) -> Result<()> {
        let actor = self.actor();
        let mut e = chartroom_audit::Event::new(now, "denied", "break_glass", code);
        e.patient_ids = patient_id.into_iter().collect();
        self.store.record(&actor, e)?;
        Ok(())
    }

    /// This user's role and units on this station, for the policy engine.
    fn principal(&self) -> Result<Principal> {
        Ok(Principal { role: self.role.ok_or(StationError::RoleUnknown)?, units: self.user_units() })
    }
}
