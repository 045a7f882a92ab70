//! Chartroom's wire protocol: the JSON bodies stations and the server exchange, with the API
//! version they belong to.
//!
//! Architecture invariant: types only — no IO, no HTTP client or server, no crypto (the exact bytes a
//! device signs are defined here, but signing happens elsewhere). A change to a type here is a change
//! to the wire format: bump [`API_VERSION`] and keep the golden tests honest.

#![forbid(unsafe_code)]

pub mod logging;
pub mod update;

use chartroom_domain::{Chart, ChartSection, Date, HumanName, Role, Sex, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The version of the HTTP API described by these types.
pub const API_VERSION: u32 = 1;

/// `GET /health`: answered without authentication; says nothing about users or patients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub api_version: u32,
    pub server_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// Every error the API returns: a stable machine-readable code and a message without PHI or
/// internals. `retryable` tells a client whether trying again later can succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// `POST /v1/devices/enroll`: a station proves it holds a one-time enrollment token and registers
/// its Ed25519 public key (hex), with which it will later prove it is this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub device_public_key: String,
}

/// What an enrolled device learns about itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponse {
    pub device_id: String,
    pub name: String,
    /// `station` or `laptop`.
    pub profile: String,
    pub units: Vec<String>,
    /// 64 hex digits: wraps the station's data key for first logins (never stored on the station;
    /// every online login hands it out again).
    pub escrow_key: String,
    /// 64 hex digits: the server's X25519 recovery public key. The station seals its data key to it
    /// (its recovery slot), so losing the OS keyring does not lose unsynced work.
    pub recovery_public_key: String,
}

/// `POST /v1/devices/recover`: a station that lost its device secret (OS keyring reset) proves an
/// administrator approved its recovery with a one-time recovery token, registers a new Ed25519 key
/// and asks the server to open its recovery slot. The data key comes back sealed to
/// `ephemeral_public_key`, never in the clear (not even inside TLS).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    pub device_id: String,
    /// From `chartroom-server device recover`.
    pub token: String,
    /// Hex of the station's recovery slot (the data key sealed to the server's recovery key).
    pub recovery_slot: String,
    /// 64 hex digits: the new Ed25519 device key (replaces the lost one).
    pub device_public_key: String,
    /// 64 hex digits: a one-use X25519 key the data key is sealed to for the way back.
    pub ephemeral_public_key: String,
}

impl std::fmt::Debug for RecoverRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverRequest").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// The answer to a recovery: the data key sealed to the station's ephemeral key (the recovery slot
/// format, version 1, bound to the device id) and the device's escrow key, with which the station
/// seals a new escrow slot under its new device secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecoverResponse {
    pub device_id: String,
    pub name: String,
    /// Hex of the data key sealed to `ephemeral_public_key`.
    pub sealed_data_key: String,
    /// 64 hex digits, as in [`EnrollResponse::escrow_key`].
    pub escrow_key: String,
}

impl std::fmt::Debug for RecoverResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoverResponse").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// The header that carries a device's proof of possession on every authenticated request:
/// `t=<unix ms>,sig=<128 hex digits>`, an Ed25519 signature by the device key over
/// [`request_proof_message`].
pub const PROOF_HEADER: &str = "chartroom-proof";

/// What a device signs to prove that a request with this access token comes from it. Binding the
/// token means a token copied to another device is useless there; binding method, path and time
/// means a signature cannot be reused for another request or much later.
pub fn request_proof_message(method: &str, path_and_query: &str, at_ms: i64, access_token: &str) -> Vec<u8> {
    format!("chartroom-request-v1\n{method}\n{path_and_query}\n{at_ms}\n{access_token}").into_bytes()
}

/// What a device signs to log a user in: the one-time server nonce, the device and the username.
pub fn login_proof_message(device_id: &str, nonce: &str, username: &str) -> Vec<u8> {
    format!("chartroom-login-v1\n{device_id}\n{nonce}\n{username}").into_bytes()
}

/// What a device signs to exchange a refresh token: the one-time server nonce, the device and the
/// refresh token itself (so a refresh token copied off the device is useless without its key).
pub fn refresh_proof_message(device_id: &str, nonce: &str, refresh_token: &str) -> Vec<u8> {
    format!("chartroom-refresh-v1\n{device_id}\n{nonce}\n{refresh_token}").into_bytes()
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// `POST /v1/auth/challenge`: an enrolled device asks for a one-time nonce to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub device_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChallengeResponse {
    /// 64 hex digits; valid once, for `expires_in_s` seconds.
    pub nonce: String,
    pub expires_in_s: u64,
}

/// `POST /v1/auth/login`: a user's password, from a device that proves it holds its key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub device_id: String,
    pub nonce: String,
    /// Ed25519 signature (hex) over [`login_proof_message`].
    pub signature: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("device_id", &self.device_id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/auth/refresh`: a new access token for a refresh token, from the device it was issued to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub device_id: String,
    pub nonce: String,
    /// Ed25519 signature (hex) over [`refresh_proof_message`].
    pub signature: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// Who is logged in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub units: Vec<String>,
}

/// Tokens for a login or a refresh. The access token is short-lived; the refresh token works only
/// from the device it was issued to, and only once (each refresh returns a new one).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub access_expires_in_s: u64,
    pub refresh_token: String,
    pub refresh_expires_in_s: u64,
    pub user: UserInfo,
    /// This device's escrow key again (64 hex digits), so a first login can open the station's data.
    pub escrow_key: String,
    /// The server's recovery public key (64 hex digits; with the escrow key only), which a station
    /// rotating its data key seals the new key's recovery slot to. Empty from older servers.
    #[serde(default)]
    pub recovery_public_key: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse").field("user", &self.user).finish_non_exhaustive()
    }
}

/// One line of a unit census.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CensusEntry {
    pub patient_id: String,
    pub mrn: String,
    pub name: HumanName,
    pub birth_date: Date,
    pub sex: Sex,
    pub unit: String,
    pub bed: String,
    pub allergy_count: u32,
    pub last_vitals_at: Option<Timestamp>,
    pub version: i64,
}

impl std::fmt::Debug for CensusEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CensusEntry").field("patient_id", &self.patient_id).finish_non_exhaustive()
    }
}

/// `GET /v1/units/{unit}/census`: one page of a unit's patients, ordered by bed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CensusPage {
    pub unit: String,
    pub patients: Vec<CensusEntry>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/patients/{id}/chart`: the sections of the chart this user may read (the others are
/// empty and not listed in `sections`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChartResponse {
    pub sections: Vec<ChartSection>,
    pub chart: Chart,
}
/// Why someone opens a patient outside their scope (the fixed list; free text goes in `detail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakGlassReason {
    EmergencyCare,
    CoveringColleague,
    PatientTransferred,
    ConsultRequested,
    AuditInvestigation,
}

impl BreakGlassReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakGlassReason::EmergencyCare => "emergency_care",
            BreakGlassReason::CoveringColleague => "covering_colleague",
            BreakGlassReason::PatientTransferred => "patient_transferred",
            BreakGlassReason::ConsultRequested => "consult_requested",
            BreakGlassReason::AuditInvestigation => "audit_investigation",
        }
    }
}

/// `POST /v1/patients/{id}/break-glass`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassRequest {
    pub reason: BreakGlassReason,
    /// Why, in the user's words (5–500 characters). Stored encrypted; shown to auditors.
    pub detail: String,
}

impl std::fmt::Debug for BreakGlassRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakGlassRequest").field("reason", &self.reason).finish_non_exhaustive()
    }
}

/// A time-limited grant to open one patient outside the user's scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassGrant {
    pub id: String,
    pub patient_id: String,
    pub expires_at: Timestamp,
}

/// A break-glass use, as auditors review it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BreakGlassUse {
    pub id: String,
    pub username: String,
    pub patient_id: String,
    /// The patient's MRN and name (empty when the patient was removed since).
    #[serde(default)]
    pub mrn: String,
    #[serde(default)]
    pub patient_name: String,
    pub reason: String,
    pub detail: String,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<Timestamp>,
    /// Recorded by a station that could not reach the server: no grant was given (the station
    /// opened its own copy), and the use reached the server with the station's audit upload.
    #[serde(default)]
    pub offline: bool,
}

impl std::fmt::Debug for BreakGlassUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakGlassUse").field("id", &self.id).finish_non_exhaustive()
    }
}

/// An anomaly the server acted on: the account was disabled and its sessions ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentInfo {
    pub id: String,
    pub at: Timestamp,
    pub username: String,
    pub kind: String,
    pub last_hour: u64,
    pub hourly_average: f64,
}

/// `POST /v1/patients/lookup`: which patient has this MRN (sent in the body, never in a URL, so
/// that it stays out of access logs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientLookupRequest {
    pub mrn: String,
}

impl std::fmt::Debug for PatientLookupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientLookupRequest(***)")
    }
}

/// The patient an MRN names: the id only (no demographics), for a break-glass request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PatientLookup {
    pub patient_id: String,
}

/// Largest page of `GET /v1/audit/entries`, and its default.
pub const MAX_AUDIT_SEARCH: usize = 1000;
pub const DEFAULT_AUDIT_SEARCH: usize = 200;

/// What an auditor searches the trail for (`GET /v1/audit/entries`); every filter is optional and
/// they combine with "and". `mrn` is resolved to the patient by the server.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Entries by this username (case-insensitive).
    pub user: Option<String>,
    /// Entries about the patient with this MRN.
    pub mrn: Option<String>,
    /// Entries with this action (`view`, `break_glass`, `login_failed`, …).
    pub action: Option<String>,
    /// Entries at or after this instant.
    pub since: Option<Timestamp>,
    /// Entries before this instant.
    pub until: Option<Timestamp>,
    /// At most this many (default 200, at most 1000), newest first.
    pub limit: Option<usize>,
}

impl std::fmt::Debug for AuditQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditQuery")
            .field("user", &self.user)
            .field("mrn", &self.mrn.as_ref().map(|_| "***"))
            .field("action", &self.action)
            .field("since", &self.since)
            .field("until", &self.until)
            .field("limit", &self.limit)
            .finish()
    }
}

impl AuditQuery {
    /// The path and query of the request (`/v1/audit/entries?…`): values percent-encoded, times
    /// in RFC 3339.
    pub fn path_and_query(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |name: &str, value: &str| parts.push(format!("{name}={}", percent_encode(value)));
        if let Some(v) = &self.user {
            add("user", v);
        }
        if let Some(v) = &self.mrn {
            add("mrn", v);
        }
        if let Some(v) = &self.action {
            add("action", v);
        }
        if let Some(t) = self.since {
            add("since", &t.to_string());
        }
        if let Some(t) = self.until {
            add("until", &t.to_string());
        }
        if let Some(n) = self.limit {
            add("limit", &n.to_string());
        }
        if parts.is_empty() {
            "/v1/audit/entries".into()
        } else {
            format!("/v1/audit/entries?{}", parts.join("&"))
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One audit entry as a search lists it: who, what, when, where, and how many patients — never
/// which patient by name, and never the sealed before/after states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntrySummary {
    /// Position in the server's trail (1-based).
    pub seq: u64,
    /// The entry's own id.
    pub id: String,
    /// When it happened, RFC 3339 (UTC).
    pub at: String,
    pub username: Option<String>,
    /// The device whose chain holds the entry (the nil UUID for the server's own chain).
    pub device_id: String,
    pub action: String,
    pub resource_type: String,
    pub outcome: String,
    /// How many patients the entry is about.
    pub patients: u32,
    /// Whether it records a read that only a break-glass grant allowed.
    pub break_glass: bool,
}

/// `GET /v1/audit/verify`: the result of re-verifying the whole trail (as `audit verify` prints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifySummary {
    pub ok: bool,
    /// Entries verified (on failure: those before the first bad one).
    pub entries: u64,
    /// The first problem found (positions and chains only, no record content).
    pub problem: Option<String>,
}

/// A record a station changed, as it pushes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", content = "record", rename_all = "snake_case")]
pub enum ChangeRecord {
    Observation(chartroom_domain::Observation),
    Note(chartroom_domain::Note),
    Allergy(chartroom_domain::Allergy),
    Condition(chartroom_domain::Condition),
    Medication(chartroom_domain::MedicationRequest),
    /// Demographics and placement (a change of unit is a transfer).
    Patient(chartroom_domain::Patient),
}

impl chartroom_domain::Validate for ChangeRecord {
    fn validate(&self) -> Result<(), chartroom_domain::ValidationError> {
        match self {
            ChangeRecord::Observation(r) => r.validate(),
            ChangeRecord::Note(r) => r.validate(),
            ChangeRecord::Allergy(r) => r.validate(),
            ChangeRecord::Condition(r) => r.validate(),
            ChangeRecord::Medication(r) => r.validate(),
            ChangeRecord::Patient(r) => r.validate(),
        }
    }
}

impl ChangeRecord {
    /// The changed record's id (the patient's own id for demographics).
    pub fn record_id(&self) -> uuid::Uuid {
        match self {
            ChangeRecord::Observation(r) => r.id,
            ChangeRecord::Note(r) => r.id,
            ChangeRecord::Allergy(r) => r.id,
            ChangeRecord::Condition(r) => r.id,
            ChangeRecord::Medication(r) => r.id,
            ChangeRecord::Patient(r) => r.id,
        }
    }

    /// The permission writing this record takes (signing, for a note that is signed).
    pub fn action(&self) -> chartroom_domain::Action {
        use chartroom_domain::{Action, NoteStatus};
        match self {
            ChangeRecord::Observation(_) => Action::WriteVitals,
            ChangeRecord::Note(n) => match n.status {
                NoteStatus::Signed { .. } => Action::SignNote(n.kind),
                _ => Action::WriteNote(n.kind),
            },
            ChangeRecord::Allergy(_) => Action::WriteAllergies,
            ChangeRecord::Condition(_) | ChangeRecord::Medication(_) => Action::WriteOrders,
            ChangeRecord::Patient(_) => Action::WriteDemographics,
        }
    }

    /// The patient the record belongs to.
    pub fn patient_id(&self) -> uuid::Uuid {
        match self {
            ChangeRecord::Observation(r) => r.patient_id,
            ChangeRecord::Note(r) => r.patient_id,
            ChangeRecord::Allergy(r) => r.patient_id,
            ChangeRecord::Condition(r) => r.patient_id,
            ChangeRecord::Medication(r) => r.patient_id,
            ChangeRecord::Patient(r) => r.id,
        }
    }
}

/// One change from a station's outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Chosen by the station; the same id is applied at most once.
    pub change_id: String,
    /// The server version the change was made on (0: a new record).
    pub base_version: i64,
    #[serde(flatten)]
    pub change: ChangeRecord,
}

/// `POST /v1/sync/push`: up to [`MAX_PUSH`] changes, each applied (or not) on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBatch {
    pub changes: Vec<Change>,
}

/// Most changes in one push.
pub const MAX_PUSH: usize = 500;

/// What became of one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Applied; the record is now at `version`.
    Applied { version: i64 },
    /// This change id was applied before (a retry): nothing was applied again.
    Duplicate { version: i64 },
    /// The record moved on since `base_version`: not applied; the clinician resolves it.
    Conflict { current_version: i64 },
    /// Refused for good (`code` says why); the station keeps it, visible, never drops it.
    Rejected { code: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeResult {
    pub change_id: String,
    #[serde(flatten)]
    pub outcome: ChangeOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushResponse {
    pub results: Vec<ChangeResult>,
}

/// `GET /v1/sync/pull?after=<cursor>`: what changed on the server since the station's cursor, within
/// what the device may hold. Records travel sealed exactly as the server stores them (AEAD under
/// each patient's key, bound to patient, record and field), with the keys of their patients
/// wrapped for this device's online session: neither side decrypts and re-encrypts every field, and
/// PHI is encrypted inside TLS too. Pass `cursor` back as `after`; `more` says whether to ask again
/// at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullPage {
    /// Patients new to the device or changed as a whole (demographics, placement); all their
    /// records are in `records`.
    pub patients: Vec<SealedPatient>,
    pub records: Vec<SealedRecord>,
    /// The key of every patient named in `patients` and `records`.
    pub keys: Vec<WrappedPatientKey>,
    /// Patients that left what this device may hold (moved to another unit): the station deletes
    /// them and their key (crypto-shred), once none of its own changes to them is still unsynced.
    #[serde(default)]
    pub left: Vec<uuid::Uuid>,
    pub cursor: i64,
    pub more: bool,
}

/// A patient row as stored: placement in the clear (what scope is decided on), the rest sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealedPatient {
    pub id: uuid::Uuid,
    pub unit: String,
    pub bed: String,
    pub version: i64,
    /// The `Patient`, sealed (base64).
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub body: Vec<u8>,
}

/// A clinical record as stored: ids, kind, order key and version in the clear, the record sealed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealedRecord {
    pub id: uuid::Uuid,
    pub patient_id: uuid::Uuid,
    /// `allergy`, `condition`, `medication`, `observation` or `note`.
    pub kind: String,
    pub sort_key: i64,
    pub version: i64,
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub body: Vec<u8>,
}

/// A patient's key, wrapped for the device under its sync wrap key (base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WrappedPatientKey {
    pub patient_id: uuid::Uuid,
    #[serde(with = "b64")]
    #[schema(value_type = String, format = Byte)]
    pub wrapped: Vec<u8>,
}

/// Bytes as standard base64 in JSON.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// `POST /v1/audit/entries`: a device uploads the next entries of its own audit chain (in order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditUpload {
    pub entries: Vec<chartroom_audit::AuditEntry>,
}

/// What the server did with an upload. Re-sending entries already stored is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditUploadResponse {
    pub stored: u64,
    pub already_present: u64,
}

/// Most entries in one upload.
pub const MAX_AUDIT_UPLOAD: usize = 1000;

/// The largest request body the server accepts: clients split pushes and audit uploads so that
/// each request stays below it, whatever the size of the notes in them.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden encodings: an accidental change to the wire format fails here.
    #[test]
    fn wire_format_is_frozen() {
        let h = Health { status: HealthStatus::Ok, api_version: API_VERSION, server_version: "0.1.0".into() };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"status":"ok","api_version":1,"server_version":"0.1.0"}"#
        );
        let e = ApiError { code: "auth.denied".into(), message: "denied".into(), retryable: false };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"auth.denied","message":"denied","retryable":false}"#
        );
        let msg = request_proof_message("GET", "/v1/units/ICU/census?limit=5", 1_700_000_000_000, "crat_x");
        assert_eq!(msg, b"chartroom-request-v1\nGET\n/v1/units/ICU/census?limit=5\n1700000000000\ncrat_x");
        assert_eq!(login_proof_message("d", "n", "u"), b"chartroom-login-v1\nd\nn\nu");
        assert_eq!(refresh_proof_message("d", "n", "r"), b"chartroom-refresh-v1\nd\nn\nr");
        let r = RecoverRequest {
            device_id: "d".into(),
            token: "crv1_secret".into(),
            recovery_slot: "00".into(),
            device_public_key: "k".into(),
            ephemeral_public_key: "e".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"device_id":"d","token":"crv1_secret","recovery_slot":"00","device_public_key":"k","ephemeral_public_key":"e"}"#
        );
        assert!(!format!("{r:?}").contains("crv1_secret"), "the token never reaches a log");
        let q = AuditQuery {
            user: Some("nurse a".into()),
            mrn: Some("MRN-1&x".into()),
            since: Some(Timestamp(0)),
            limit: Some(5),
            ..AuditQuery::default()
        };
        assert_eq!(
            q.path_and_query(),
            "/v1/audit/entries?user=nurse%20a&mrn=MRN-1%26x&since=1970-01-01T00%3A00%3A00Z&limit=5"
        );
        assert!(!format!("{q:?}").contains("MRN-1"), "the MRN never reaches a log");
        assert_eq!(AuditQuery::default().path_and_query(), "/v1/audit/entries");
        let back: Health =
            serde_json::from_str(r#"{"status":"ok","api_version":1,"server_version":"x"}"#).unwrap();
        assert_eq!(back.status, HealthStatus::Ok);
    }
}
