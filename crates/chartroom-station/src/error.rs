//! Station errors: one enum, stable codes, messages fit to show a clinician (no PHI, no internals).

use chartroom_crypto::CryptoError;
use chartroom_store::StoreError;

use crate::KeystoreError;

#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error("this profile directory holds no Chartroom station; enroll it first")]
    NotEnrolled,
    #[error("this profile directory already holds a Chartroom station; refusing to overwrite it")]
    AlreadyEnrolled,
    #[error("wrong username or password")]
    WrongPassword,
    #[error("{0}")]
    Throttled(#[from] chartroom_domain::Throttled),
    #[error("no key slot for this user on this device; log in online once first")]
    UnknownUser,
    #[error("the key slot stored for this user belongs to another user; the profile was tampered with")]
    SlotOfAnotherUser,
    #[error("the key slot stored for this user was made on another device; the profile was copied or tampered with")]
    SlotOfAnotherDevice,
    #[error("{}", keystore_message(.0))]
    Keystore(#[from] KeystoreError),
    #[error(
        "this station was set up with the `{recorded}` keyring but `{current}` is in use now; refusing to switch key stores (the change was recorded)"
    )]
    KeystoreChanged { recorded: String, current: String },
    #[error("the local database is damaged: {0}")]
    DatabaseDamaged(&'static str),
    #[error("the profile file `{0}` is damaged")]
    ProfileDamaged(&'static str),
    #[error("this device has no recovery slot: without its keyring entry its data cannot be recovered")]
    NoRecoverySlot,
    #[error("this station is not enrolled with a server, so there is nothing to recover from")]
    NoServer,
    #[error("the recovery token is not valid (unknown, already used, expired or for another device); ask an administrator for a new one (nothing was changed)")]
    RecoveryTokenInvalid,
    #[error("the server could not open this device's recovery slot (nothing was changed)")]
    RecoverySlotRefused,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Crypto(CryptoError),
    #[error("file error in the profile directory: {0}")]
    Io(String),
    #[error("{0}")]
    Server(#[from] chartroom_client::ClientError),
    #[error("the server's answer could not be understood")]
    ServerAnswer,
    #[error("{0}")]
    Denied(chartroom_domain::Denied),
    #[error("this station does not know your role yet; log in once while the server is reachable")]
    RoleUnknown,
    #[error("nothing to record: give at least one value")]
    NothingToRecord,
    #[error("this needs the server: log in while it is reachable")]
    Offline,
    #[error("{0}")]
    Policy(#[from] crate::policy::InvalidPolicy),
    #[error("your role may not log in on this device (machine policy); use another workstation or ask IT")]
    RoleNotAllowed,
    #[error("this station's data key was just replaced; log in once while the server is reachable")]
    NeedsOnlineLogin,
    #[error("the machine policy pins `{key}` to another value; enroll with what the policy names")]
    EnrollmentAgainstPolicy { key: &'static str },
    #[error("this device's enrollment was revoked by the server; its local data has been wiped")]
    DeviceRevoked,
    #[error("you have been offline longer than this device allows; log in while the server is reachable")]
    OfflineTooLong,
    #[error("a signed note is never edited; write an addendum")]
    NoteFinal,
    #[error("only the author of a draft or a change may change or discard it")]
    NotAuthor,
    #[error("only note text can be merged; choose keep mine or take theirs")]
    MergeTextOnly,
    #[error("no such change in this station's outbox")]
    ChangeNotFound,
    #[error("break-glass needs the server for a patient who is not on this station; try again when it is reachable")]
    BreakGlassOffline,
    #[error("give the reason for breaking the glass in 5–500 characters")]
    BreakGlassDetail,
    #[error("no patient has this MRN")]
    PatientNotFound,
    #[error("only a signed note can be marked entered-in-error; a draft is edited instead")]
    NoteNotSigned,
    #[error("an addendum amends a signed note")]
    AddendumTarget,
    #[error("give the reason the note was entered in error (at most 500 characters)")]
    ReasonRequired,
    #[error("the session was locked or ended; sign in to continue")]
    SessionEnded,
}

/// The keyring's errors, said about the one key a station keeps there.
fn keystore_message(e: &KeystoreError) -> String {
    match e {
        KeystoreError::Missing => {
            "this device's key is not available in the system keyring (if it was lost, an administrator can approve `chartroom-station recover`)".into()
        }
        KeystoreError::Damaged => "this device's key in the system keyring is damaged".into(),
        KeystoreError::Unavailable(_) => e.to_string(),
    }
}

impl StationError {
    /// A stable machine-readable code for the UI, scripts and tests.
    pub fn code(&self) -> &'static str {
        match self {
            StationError::NotEnrolled => "station.not_enrolled",
            StationError::AlreadyEnrolled => "station.already_enrolled",
            StationError::WrongPassword => "auth.wrong_password",
            StationError::Throttled(chartroom_domain::Throttled::Delay { .. }) => "auth.throttled",
            StationError::Throttled(chartroom_domain::Throttled::LockedOut { .. }) => "auth.locked_out",
            StationError::UnknownUser => "auth.unknown_user",
            StationError::SlotOfAnotherUser => "vault.slot_wrong_user",
            StationError::SlotOfAnotherDevice => "vault.slot_wrong_device",
            StationError::Keystore(KeystoreError::Missing) => "keyring.missing",
            StationError::Keystore(KeystoreError::Unavailable(_)) => "keyring.unavailable",
            StationError::Keystore(KeystoreError::Damaged) => "keyring.damaged",
            StationError::KeystoreChanged { .. } => "keyring.backend_changed",
            StationError::DatabaseDamaged(_) => "vault.database_damaged",
            StationError::ProfileDamaged(_) => "vault.profile_damaged",
            StationError::NoRecoverySlot => "vault.no_recovery_slot",
            StationError::NoServer => "station.no_server",
            StationError::RecoveryTokenInvalid => "recovery.invalid_token",
            StationError::RecoverySlotRefused => "recovery.slot_refused",
            StationError::Store(e) => e.code(),
            StationError::Crypto(_) => "vault.crypto",
            StationError::Io(_) => "station.io",
            StationError::Server(e) => match e {
                chartroom_client::ClientError::Api { .. } => "server.refused",
                chartroom_client::ClientError::Unreachable => "server.unreachable",
                _ => "server.invalid",
            },
            StationError::ServerAnswer => "server.invalid",
            StationError::Denied(d) => d.code(),
            StationError::RoleUnknown => "auth.role_unknown",
            StationError::NothingToRecord => "request.invalid",
            StationError::Offline => "server.offline",
            StationError::DeviceRevoked => "device.revoked",
            StationError::Policy(_) => "policy.invalid",
            StationError::RoleNotAllowed => "policy.role_not_allowed",
            StationError::NeedsOnlineLogin => "auth.needs_online_login",
            StationError::EnrollmentAgainstPolicy { .. } => "policy.enrollment_mismatch",
            StationError::OfflineTooLong => "auth.offline_too_long",
            StationError::NoteFinal => "note.signed",
            StationError::NotAuthor => "note.not_author",
            StationError::MergeTextOnly => "sync.merge_text_only",
            StationError::ChangeNotFound => "sync.change_not_found",
            StationError::BreakGlassOffline => "break_glass.offline",
            StationError::BreakGlassDetail => "break_glass.detail",
            StationError::PatientNotFound => "patient.not_found",
            StationError::SessionEnded => "session.locked",
            StationError::NoteNotSigned => "note.not_signed",
            StationError::AddendumTarget => "note.bad_addendum",
            StationError::ReasonRequired => "note.reason_required",
        }
    }

    /// Whether trying again later can succeed (the server unreachable, restarting or busy).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StationError::Server(e) if e.is_retryable())
    }
}

impl From<std::io::Error> for StationError {
    fn from(e: std::io::Error) -> Self {
        StationError::Io(e.kind().to_string())
    }
}

impl From<CryptoError> for StationError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::WrongPassword => StationError::WrongPassword,
            CryptoError::WrongUser => StationError::SlotOfAnotherUser,
            CryptoError::WrongDevice => StationError::SlotOfAnotherDevice,
            other => StationError::Crypto(other),
        }
    }
}
