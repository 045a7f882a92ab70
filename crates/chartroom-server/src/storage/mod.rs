//! Server storage behind one trait, so that a PostgreSQL backend can be added without touching
//! commands or handlers: accounts, devices, login throttling, sessions, the audit trail, and sealed
//! patient records.
//!
//! Architecture invariant: storage never sees plaintext PHI or a key. Records arrive sealed (per
//! patient, under keys wrapped by the master key — see `crate::phi`) and leave sealed; the only
//! plaintext patient columns are ids, unit, bed, version and an HMAC blind index of the MRN.

mod postgres;
mod sqlite;

pub use postgres::{PgOptions, PgStorage};
pub use sqlite::SqliteStorage;

use chartroom_audit::{AuditEntry, Checkpoint, Digest32, Event};
use chartroom_domain::{DeviceProfile, LoginThrottle, Role, Timestamp};
use serde::Serialize;
use uuid::Uuid;

use crate::ServerError;

thread_local! {
    static MAY_BLOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `work` on this thread marked as one that may block on database I/O (the server's blocking
/// pool): storage calls in it wait in place instead of on a helper thread.
pub fn may_block<R>(work: impl FnOnce() -> R) -> R {
    let before = MAY_BLOCK.with(|m| m.replace(true));
    let result = work();
    MAY_BLOCK.with(|m| m.set(before));
    result
}

fn blocking_allowed() -> bool {
    MAY_BLOCK.with(std::cell::Cell::get)
}

/// Usernames (and device names) are unique regardless of case.
fn username_key(username: &str) -> String {
    username.trim().to_lowercase()
}

fn units_json(units: &[String]) -> Result<String, ServerError> {
    serde_json::to_string(units).map_err(|_| ServerError::Internal("units encoding"))
}

/// A count or limit as SQL's 64-bit integer (saturating: no database holds more).
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_i64_u(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A device row with its public key (if enrolled).
struct DeviceRow {
    record: DeviceRecord,
    public_key: Option<[u8; 32]>,
}

impl DeviceRow {
    fn enrolled(self) -> Option<EnrolledDevice> {
        Some(EnrolledDevice { public_key: self.public_key?, record: self.record })
    }
}

/// The patients of a page's single records that are not whole in it: their rows travel with the
/// page as key holders.
fn key_holder_ids(patients: &[SealedPatient], records: &[(Uuid, SealedRecord)]) -> Vec<Uuid> {
    let whole: std::collections::HashSet<Uuid> = patients.iter().map(|p| p.id).collect();
    let others: std::collections::BTreeSet<Uuid> =
        records.iter().map(|(p, _)| *p).filter(|p| !whole.contains(p)).collect();
    others.into_iter().collect()
}

/// A stored record's patient, kind and version.
pub type RecordVersion = (Uuid, RecordKind, i64);

/// What opening a database did to its schema: the version it found and the one it left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
}

/// A user account as listed (never with its password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub units: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
}

/// A new account: its record plus the Argon2id PHC string of its password.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub record: UserRecord,
    pub password_hash: String,
}

/// A device as listed (never with its token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    pub id: Uuid,
    pub name: String,
    pub profile: DeviceProfile,
    pub units: Vec<String>,
    pub token_expires_at: Option<Timestamp>,
    pub enrolled_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// An enrolled device with the public key it proves possession of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnrolledDevice {
    pub record: DeviceRecord,
    pub public_key: [u8; 32],
}

/// Hashes and deadlines of a session's current tokens (the tokens themselves are never stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionTokens {
    pub access_hash: [u8; 32],
    pub access_expires_at: Timestamp,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_at: Timestamp,
}

/// A login session: one user on one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub device_id: Uuid,
    pub tokens: SessionTokens,
    pub created_at: Timestamp,
}

/// Who a valid access token belongs to, checked against the current state of user and device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOwner {
    pub session_id: Uuid,
    pub user: UserRecord,
    pub device: EnrolledDevice,
    pub access_expires_at: Timestamp,
}

/// What presenting a refresh token led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// The session now has the new tokens.
    Rotated(Box<SessionOwner>),
    /// The token was already exchanged once: it was copied. The session is ended.
    Reused,
    /// Unknown, expired, or from another device.
    Invalid,
}

/// An audit entry as the server stores it: its place in the server's own chain, and the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// 1, 2, 3 … in the order the server stored entries (of every device).
    pub server_seq: u64,
    /// `chartroom_audit::server_link` of the previous stored entry's link and this entry's hash.
    pub server_hash: Digest32,
    pub entry: AuditEntry,
}

/// A stored entry as bytes: its canonical encoding and claimed hash (for fast verification).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub server_seq: u64,
    pub server_hash: Digest32,
    pub hash: Digest32,
    pub canonical: Vec<u8>,
}

/// What an upload of device entries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub stored: u64,
    /// Entries already stored (a retried upload): skipped.
    pub already_present: u64,
}

/// A break-glass grant: a user may open one patient outside their scope for a limited time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlass {
    pub id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub patient_id: Uuid,
    /// One of the fixed reason codes.
    pub reason: String,
    /// The user's free text, sealed with the patient's key (it may mention clinical details).
    pub detail: Vec<u8>,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<Timestamp>,
}

/// An anomaly the server acted on (DESIGN §6): what it saw and that it disabled the account.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    pub id: Uuid,
    pub at: Timestamp,
    pub user_id: Uuid,
    pub username: String,
    pub kind: String,
    /// Accesses in the last hour, and the hourly average over the baseline window.
    pub last_hour: u64,
    pub hourly_average: f64,
}

/// Where verification starts after a retention purge: the server chain's link at the last purged
/// entry, each device chain's head there, and the number of the signed checkpoint that anchors it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AuditBase {
    pub server_seq: u64,
    pub server_hash: Digest32,
    pub device_heads: Vec<(Uuid, chartroom_audit::ChainHead)>,
    pub checkpoint: u64,
    pub purged_before: Timestamp,
    /// Ed25519 signature (hex) by the checkpoint key over all of the above: only the purge command,
    /// which enforces the retention period, can make a base that verifies.
    #[serde(default)]
    pub signature: String,
}

/// A change from a station, sealed and ready to store, with the version it expects to replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingChange {
    pub change_id: Uuid,
    pub device_id: Uuid,
    pub patient_id: Uuid,
    /// `None`: a new record (its id must be unused); `Some(v)`: replaces version `v`.
    pub replaces: Option<i64>,
    /// The sealed record at its new version.
    pub record: IncomingRecord,
}

/// What a change writes: a clinical record, or the patient row itself (demographics, placement).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncomingRecord {
    Record(SealedRecord),
    Patient(SealedPatient),
}

impl IncomingRecord {
    pub fn id(&self) -> Uuid {
        match self {
            IncomingRecord::Record(r) => r.id,
            IncomingRecord::Patient(p) => p.id,
        }
    }

    pub fn version(&self) -> i64 {
        match self {
            IncomingRecord::Record(r) => r.version,
            IncomingRecord::Patient(p) => p.version,
        }
    }
}

/// A change applied before: by which device, to which record, giving which version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedChange {
    pub device_id: Uuid,
    pub record_id: Uuid,
    pub version: i64,
}

/// What storing an [`IncomingChange`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Applied,
    /// This change id was stored before, by `device_id`, at `version`.
    AlreadyApplied(AppliedChange),
    /// The record is not at the expected version (or, for a new record, its id is taken).
    Moved {
        current_version: Option<i64>,
    },
}

/// One page of changes for a station: whole patients that changed with all their records, and
/// single records that changed (of patients not whole in the page), change numbers in `(after, upto]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRows {
    pub patients: Vec<SealedPatient>,
    pub records: Vec<(Uuid, SealedRecord)>,
    /// Patients that changed in `(after, upto]` and are now outside the units asked for (only when
    /// `after > 0`: a first sync has nothing to forget).
    pub left: Vec<Uuid>,
    /// The patients of `records` that are not in `patients` (their rows carry the keys the records
    /// travel with), read in the page's snapshot.
    pub key_holders: Vec<SealedPatient>,
    /// The newest change number the server has issued (a cursor beyond it was never issued).
    pub newest: i64,
    pub upto: i64,
    pub more: bool,
}

/// An upload repeats entry `seq` with other content than the stored one: a forked chain.
pub(crate) fn forked_at(seq: u64) -> ServerError {
    ServerError::AuditRejected {
        code: "audit.fork",
        message: format!("entry seq {seq} differs from the one already stored (a forked chain)"),
    }
}

/// An upload's entries do not continue the stored chain.
pub(crate) fn chain_refused(b: chartroom_audit::ChainBreak) -> ServerError {
    use chartroom_audit::ChainBreak;
    ServerError::AuditRejected {
        code: match b {
            ChainBreak::Gap { .. } => "audit.gap",
            ChainBreak::Unlinked { .. } => "audit.fork",
            ChainBreak::Edited { .. } | ChainBreak::WrongDevice { .. } => "audit.invalid",
        },
        message: b.to_string(),
    }
}

/// Entry ids are unique across all chains: one already stored (or repeated in the upload) is a
/// forgery or a bug on the device, never something a retry can fix.
pub(crate) fn reused_entry_id(seq: u64) -> ServerError {
    ServerError::AuditRejected {
        code: "audit.invalid",
        message: format!("entry seq {seq} reuses an entry id that is already taken"),
    }
}

/// The chain id of the server's own events (devices have v7 ids; this one is nil).
pub const SERVER_CHAIN: Uuid = Uuid::nil();

/// A patient row as stored: placement in the clear, everything else sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPatient {
    pub id: Uuid,
    pub unit: String,
    pub bed: String,
    pub version: i64,
    pub mrn_index: [u8; 32],
    /// The patient's key, wrapped by the record key derived from the master key.
    pub wrapped_key: Vec<u8>,
    pub body: Vec<u8>,
}

/// A clinical record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRecord {
    pub id: Uuid,
    pub kind: RecordKind,
    pub sort_key: i64,
    pub version: i64,
    pub body: Vec<u8>,
}

/// A whole patient, sealed, for import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedChart {
    pub patient: SealedPatient,
    pub records: Vec<SealedRecord>,
}

/// A census line as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedCensusRow {
    pub patient: SealedPatient,
    pub allergy_count: u32,
    pub last_vitals_at: Option<Timestamp>,
}

/// The kinds of clinical record kept beside a patient.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RecordKind {
    Allergy,
    Condition,
    Medication,
    Observation,
    Note,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::Allergy,
        RecordKind::Condition,
        RecordKind::Medication,
        RecordKind::Observation,
        RecordKind::Note,
    ];

    /// The name in the `kind` column (and in the sealed value's AAD).
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Allergy => "allergy",
            RecordKind::Condition => "condition",
            RecordKind::Medication => "medication",
            RecordKind::Observation => "observation",
            RecordKind::Note => "note",
        }
    }

    pub fn parse(s: &str) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What the server stores. One implementation per database; one conformance suite for all
/// (`tests/storage.rs`).
pub trait Storage: Send + Sync {
    // Accounts.
    fn create_user(&self, user: &NewUser) -> Result<(), ServerError>;
    /// Disabling also ends every session of the user.
    fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), ServerError>;
    fn list_users(&self) -> Result<Vec<UserRecord>, ServerError>;
    /// The account and its password hash, for a login attempt.
    fn user_for_login(&self, username: &str) -> Result<Option<NewUser>, ServerError>;

    // Devices.
    /// Registers a device awaiting enrollment, or replaces the token of one not yet enrolled.
    fn put_device_token(&self, device: &DeviceRecord, token_hash: &[u8; 32]) -> Result<(), ServerError>;
    /// Revoking also kills its unused token and ends every session on it.
    fn revoke_device(&self, name: &str, now: Timestamp) -> Result<(), ServerError>;
    fn list_devices(&self) -> Result<Vec<DeviceRecord>, ServerError>;
    /// Uses a one-time token: registers `public_key` for its device if the token is known, unused,
    /// unexpired and the device not revoked — all or nothing, and never twice.
    fn enroll_device(
        &self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError>;
    /// An enrolled, unrevoked device.
    fn enrolled_device(&self, id: Uuid) -> Result<Option<EnrolledDevice>, ServerError>;
    /// Approves the recovery of an enrolled, unrevoked device (keyring lost): keeps the hash of a
    /// one-time recovery token bound to it, replacing an earlier one. `UnknownDevice` or
    /// `NotRecoverable` (never enrolled, or revoked) otherwise.
    fn put_recovery_token(
        &self,
        name: &str,
        token_hash: &[u8; 32],
        expires_at: Timestamp,
    ) -> Result<DeviceRecord, ServerError>;
    /// Whether `token_hash` is the unused, unexpired recovery token of `device_id` (enrolled and
    /// not revoked). Compared in constant time.
    fn check_recovery_token(
        &self,
        device_id: Uuid,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<bool, ServerError>;
    /// Uses the recovery token: the device's key becomes `public_key` and every session and nonce
    /// of the old key ends — all or nothing, and never twice (`InvalidRecoveryToken`).
    fn recover_device(
        &self,
        device_id: Uuid,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError>;

    // Login throttling: `key` names a username or a device.
    /// Reads, changes and writes back one throttle atomically (concurrent attempts must not lose a
    /// count).
    fn update_throttle(
        &self,
        key: &str,
        change: &mut (dyn FnMut(&mut LoginThrottle) + Send),
    ) -> Result<(), ServerError>;
    fn clear_throttle(&self, key: &str) -> Result<(), ServerError>;

    // One-time login nonces.
    fn put_nonce(
        &self,
        nonce_hash: &[u8; 32],
        device_id: Uuid,
        expires_at: Timestamp,
    ) -> Result<(), ServerError>;
    /// Consumes the nonce: true once, if it was issued to this device and has not expired.
    fn take_nonce(&self, nonce_hash: &[u8; 32], device_id: Uuid, now: Timestamp)
        -> Result<bool, ServerError>;

    // Sessions.
    fn create_session(&self, session: &NewSession) -> Result<(), ServerError>;
    /// The owner of an unexpired access token, if user and device are still in good standing.
    fn session_by_access(
        &self,
        access_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionOwner>, ServerError>;
    /// Exchanges a refresh token presented by `device_id` for `next`.
    fn rotate_refresh(
        &self,
        refresh_hash: &[u8; 32],
        device_id: Uuid,
        next: &SessionTokens,
        now: Timestamp,
    ) -> Result<Refreshed, ServerError>;
    fn end_session(&self, session_id: Uuid) -> Result<(), ServerError>;

    // The audit trail (append-only; see `chartroom-audit`).
    /// Appends the server's own events to its chain ([`SERVER_CHAIN`]) in one transaction.
    fn append_events(&self, events: &[Event]) -> Result<(), ServerError>;
    /// Stores a device's entries in one transaction. They must continue the device's stored chain
    /// (gaps and forks are refused, naming the entry); entries already stored with the same hash are
    /// skipped, so a retried upload is harmless.
    fn ingest_entries(&self, device_id: Uuid, entries: &[AuditEntry]) -> Result<Ingested, ServerError>;
    /// Stored entries in server order after server sequence `after`, `limit` at a time.
    fn audit_page(&self, after: u64, limit: usize) -> Result<Vec<StoredEntry>, ServerError> {
        self.audit_raw_page(after, limit)?
            .into_iter()
            .map(|raw| {
                Ok(StoredEntry {
                    server_seq: raw.server_seq,
                    server_hash: raw.server_hash,
                    // An entry that does not even decode is reported by `audit verify` as damage.
                    entry: AuditEntry::decode(&raw.canonical, raw.hash)
                        .map_err(|_| ServerError::Damaged("audit entry"))?,
                })
            })
            .collect()
    }
    /// The same, undecoded: canonical bytes and claimed hashes.
    fn audit_raw_page(&self, after: u64, limit: usize) -> Result<Vec<RawEntry>, ServerError>;
    /// The number of stored entries and the server chain's head.
    fn audit_head(&self) -> Result<(u64, Digest32), ServerError>;
    fn checkpoints(&self) -> Result<Vec<Checkpoint>, ServerError>;
    /// Adds the next checkpoint; false if one with its number exists (another process made it).
    fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, ServerError>;
    /// The purge base (verification starts there), if entries were ever purged.
    fn audit_base(&self) -> Result<Option<AuditBase>, ServerError>;
    /// Deletes stored entries up to `base.server_seq` and records `base`, in one transaction.
    fn purge_audit(&self, base: &AuditBase) -> Result<u64, ServerError>;
    /// How many entries of the server's own chain by `username` with one of `actions` fall in
    /// `[since, until)` (device uploads are not counted: their user and time are the device's word).
    fn count_actions(
        &self,
        username: &str,
        actions: &[&str],
        since: Timestamp,
        until: Timestamp,
    ) -> Result<u64, ServerError>;

    // Oversight.
    fn put_break_glass(&self, grant: &BreakGlass) -> Result<(), ServerError>;
    /// Whether `user_id` holds an unexpired grant for `patient_id`.
    fn has_break_glass(&self, user_id: Uuid, patient_id: Uuid, now: Timestamp) -> Result<bool, ServerError>;
    /// Grants, newest first (only those not yet reviewed, if asked).
    fn break_glass_list(&self, unreviewed_only: bool) -> Result<Vec<BreakGlass>, ServerError>;
    /// Marks a grant reviewed; false if there is no such grant or it was reviewed already.
    fn review_break_glass(&self, id: Uuid, reviewer: &str, now: Timestamp) -> Result<bool, ServerError>;
    /// Records an incident and disables the account (ending its sessions) in one transaction — unless
    /// the account is disabled already (another server process acted on the same burst first), then
    /// nothing changes: one burst, one incident. Says whether it raised one.
    fn raise_incident(&self, incident: &Incident) -> Result<bool, ServerError>;
    fn incidents(&self) -> Result<Vec<Incident>, ServerError>;

    // Records.
    /// Stores whole patients in one transaction: all or none. Fails with `PatientExists` if any id
    /// or MRN is already present.
    fn put_charts(&self, charts: &[SealedChart]) -> Result<(), ServerError>;
    /// Which of these patients (by id or MRN index) are already stored.
    fn existing_patients(&self, ids: &[(Uuid, [u8; 32])]) -> Result<Vec<Uuid>, ServerError>;
    fn patient(&self, id: Uuid) -> Result<Option<SealedPatient>, ServerError>;
    /// The patient whose MRN has this blind index.
    fn patient_by_mrn_index(&self, mrn_index: &[u8; 32]) -> Result<Option<Uuid>, ServerError>;
    /// Up to `limit` patients on `unit` ordered by bed, starting after patient `after`.
    fn census(
        &self,
        unit: &str,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<SealedCensusRow>, ServerError>;
    /// A patient's records of these kinds, newest first, at most `max_observations` observations.
    fn records(
        &self,
        patient_id: Uuid,
        kinds: &[RecordKind],
        max_observations: usize,
    ) -> Result<Vec<SealedRecord>, ServerError>;
    /// The stored version (and patient and kind) of a record, if it exists.
    fn record_version(&self, id: Uuid) -> Result<Option<RecordVersion>, ServerError>;
    /// Whether this change id was applied already: by which device, at which version.
    fn applied_change(&self, change_id: Uuid) -> Result<Option<AppliedChange>, ServerError>;

    // The same reads for a whole push batch at once (a backend across a network answers each in one
    // round trip; the defaults ask one at a time). Only what exists is returned.
    fn applied_changes(&self, change_ids: &[Uuid]) -> Result<Vec<(Uuid, AppliedChange)>, ServerError> {
        let mut out = Vec::new();
        for id in change_ids {
            if let Some(a) = self.applied_change(*id)? {
                out.push((*id, a));
            }
        }
        Ok(out)
    }
    fn record_versions(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, RecordVersion)>, ServerError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self.record_version(*id)? {
                out.push((*id, v));
            }
        }
        Ok(out)
    }
    fn patients(&self, ids: &[Uuid]) -> Result<Vec<SealedPatient>, ServerError> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.patient(*id)?);
        }
        Ok(out)
    }
    /// Which of these patients `user_id` holds an unexpired break-glass grant for.
    fn break_glass_patients(
        &self,
        user_id: Uuid,
        ids: &[Uuid],
        now: Timestamp,
    ) -> Result<Vec<Uuid>, ServerError> {
        let mut out = Vec::new();
        for id in ids {
            if self.has_break_glass(user_id, *id, now)? {
                out.push(*id);
            }
        }
        Ok(out)
    }
    /// Stores a batch of changes in one transaction, each decided on its own: compare-and-set on the
    /// record's version, the change id remembered so that a retry applies nothing twice, and — only
    /// for a change that applied — its event appended to the server's audit chain. One outcome per
    /// change, in order.
    fn apply_changes(&self, changes: &[(IncomingChange, Event)]) -> Result<Vec<Stored>, ServerError>;
    /// Changes after change number `after` on `units` (all units with `None`), at most `max_changes`
    /// change numbers per page.
    fn pull_page(
        &self,
        units: Option<&[String]>,
        after: i64,
        max_changes: usize,
    ) -> Result<PullRows, ServerError>;
    /// Patient ids in id order after `after`, `limit` at a time (for export).
    fn patient_ids(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, ServerError>;
    /// Replaces patients' wrapped keys and MRN indexes (master key rotation), all in one transaction.
    fn rewrap_patients(&self, rows: &[Rewrapped]) -> Result<(), ServerError>;
    /// The PostgreSQL backend, for what only it has (its master key binding).
    fn as_pg(&self) -> Option<&PgStorage> {
        None
    }
}

/// A patient's key and MRN index under a new master key.
#[derive(Clone, Debug)]
pub struct Rewrapped {
    pub id: Uuid,
    pub wrapped_key: Vec<u8>,
    pub mrn_index: [u8; 32],
}
