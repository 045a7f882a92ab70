//! Oversight on a station (DESIGN §1, §6): an auditor logs in and works against the server's trail
//! — searching and verifying it, reviewing break-glass uses and incidents — without opening this
//! station's patient data (an auditor's login gets no key to it).

use chartroom_client::{ClientError, ServerClient};
use chartroom_domain::{Role, Timestamp};
use chartroom_protocol::{
    AuditEntrySummary, AuditQuery, AuditVerifySummary, BreakGlassUse, IncidentInfo, TokenResponse,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{LockedVault, StationError, UnlockedVault};

type Result<T> = std::result::Result<T, StationError>;

/// What an online login gave.
// A login result is made once and moved straight into the session's state: boxing the vault would
// only add a dereference for every caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Login {
    /// A clinician (or anyone who may read patients here): the station's data is open.
    Clinical(UnlockedVault),
    /// An auditor or an administrator: a session with the server only.
    Oversight(OversightSession),
}

/// An auditor's (or administrator's) session with the server from this station. It holds the
/// login's tokens (wiped when dropped, never printed) and no key to the station's data. Every call
/// is signed by this device and checked, and recorded, by the server.
pub struct OversightSession {
    locked: LockedVault,
    user_id: Uuid,
    username: String,
    role: Role,
    access_token: Zeroizing<String>,
    refresh_token: Zeroizing<String>,
}

impl std::fmt::Debug for OversightSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OversightSession")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("access_token", &"***")
            .field("refresh_token", &"***")
            .finish_non_exhaustive()
    }
}

/// Makes a signed call with the session's access token; an expired token is renewed once and the
/// call made again. The server's refusals become the station's errors.
macro_rules! signed_call {
    ($self:ident, $client:ident, $now:ident, |$d:ident, $t:ident| $call:expr) => {{
        let (_, identity) = $self.locked.identity()?;
        let $d = &identity;
        let first = {
            let token = $self.access_token.clone();
            let $t: &str = &token;
            $call.await
        };
        let result = match first {
            Err(e) if e.code() == Some("auth.invalid_token") => {
                $self.refresh($client, $now).await?;
                let token = $self.access_token.clone();
                let $t: &str = &token;
                $call.await
            }
            other => other,
        };
        result.map_err(server_error)
    }};
}

impl OversightSession {
    pub(crate) fn new(locked: LockedVault, tokens: &TokenResponse) -> Result<OversightSession> {
        Ok(OversightSession {
            locked,
            user_id: tokens.user.id.parse().map_err(|_| StationError::ServerAnswer)?,
            username: tokens.user.username.clone(),
            role: tokens.user.role,
            access_token: Zeroizing::new(tokens.access_token.clone()),
            refresh_token: Zeroizing::new(tokens.refresh_token.clone()),
        })
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }
    pub fn username(&self) -> &str {
        &self.username
    }
    pub fn role(&self) -> Role {
        self.role
    }

    /// Ends the session on this station (the tokens are wiped); the station stays locked.
    pub fn lock(self) -> LockedVault {
        self.locked.clone()
    }

    /// Renews the tokens with the refresh token (the access token lasts minutes). A refusal (the
    /// refresh token expired or was used, the account disabled) ends what this session can do:
    /// log in again. A revoked device wipes itself, as at login.
    pub async fn refresh(&mut self, client: &ServerClient, _now: Timestamp) -> Result<()> {
        let (_, identity) = self.locked.identity()?;
        match client.refresh(&identity, &self.refresh_token).await {
            Ok(tokens) => {
                self.access_token = Zeroizing::new(tokens.access_token.clone());
                self.refresh_token = Zeroizing::new(tokens.refresh_token.clone());
                Ok(())
            }
            Err(e) if e.code() == Some("device.unknown") && self.locked.revocation_applies() => {
                self.locked.wipe()?;
                Err(StationError::DeviceRevoked)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Searches the server's audit trail, newest first (summaries: no patient named, no sealed
    /// state). The server records the search.
    pub async fn audit_search(
        &mut self,
        client: &ServerClient,
        query: &AuditQuery,
        now: Timestamp,
    ) -> Result<Vec<AuditEntrySummary>> {
        signed_call!(self, client, now, |d, t| client.audit_entries(d, t, query))
    }

    /// Re-verifies the server's whole audit trail (as `chartroom-server audit verify`).
    pub async fn audit_verify(
        &mut self,
        client: &ServerClient,
        now: Timestamp,
    ) -> Result<AuditVerifySummary> {
        signed_call!(self, client, now, |d, t| client.audit_verify(d, t))
    }

    /// Break-glass uses with their reasons, optionally only those not reviewed yet.
    pub async fn break_glass_uses(
        &mut self,
        client: &ServerClient,
        unreviewed: bool,
        now: Timestamp,
    ) -> Result<Vec<BreakGlassUse>> {
        signed_call!(self, client, now, |d, t| client.break_glass_uses(d, t, unreviewed))
    }

    /// Marks a break-glass use reviewed by this auditor (recorded by the server).
    pub async fn review_break_glass(
        &mut self,
        client: &ServerClient,
        id: &str,
        now: Timestamp,
    ) -> Result<()> {
        signed_call!(self, client, now, |d, t| client.review_break_glass(d, t, id))
    }

    /// Incidents the anomaly rule raised.
    pub async fn incidents(&mut self, client: &ServerClient, now: Timestamp) -> Result<Vec<IncidentInfo>> {
        signed_call!(self, client, now, |d, t| client.incidents(d, t))
    }
}

/// The server's refusals in the station's terms (a denial by role is a denial).
pub(crate) fn server_error(e: ClientError) -> StationError {
    match e.code() {
        Some("access.forbidden") => StationError::Denied(chartroom_domain::Denied::NotPermitted),
        Some("access.out_of_scope") => StationError::Denied(chartroom_domain::Denied::OutOfScope),
        Some("patient.not_found") => StationError::PatientNotFound,
        _ => e.into(),
    }
}
