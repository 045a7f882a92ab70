//! Server errors: stable codes, messages without PHI or internals.

/// Everything the server's commands can fail at.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("this data directory is already initialised; refusing to overwrite it")]
    AlreadyInitialised,
    #[error("this data directory is not initialised; run `chartroom-server init` first")]
    NotInitialised,
    #[error("the file `{0}` in the data directory is damaged")]
    Damaged(&'static str),
    #[error("a user with this username already exists (usernames are unique regardless of case)")]
    UserExists,
    #[error("no such user")]
    UnknownUser,
    #[error("no such device")]
    UnknownDevice,
    #[error("the enrollment token is not valid (unknown, already used, expired or revoked)")]
    InvalidToken,
    #[error("this device is already enrolled or revoked; a new token needs a new device name")]
    DeviceEnrolled,
    #[error("the recovery token is not valid (unknown, already used, expired, for another device, or the device was revoked)")]
    InvalidRecoveryToken,
    #[error("this device is not enrolled, or was revoked: there is nothing to recover")]
    NotRecoverable,
    #[error("the recovery slot is not valid for this device and this server's recovery key")]
    RecoverySlotInvalid,
    #[error("a patient with this id or MRN is already on the server")]
    PatientExists,
    #[error("import refused, nothing was imported: {0}")]
    Import(String),
    #[error("audit entries refused: {message}")]
    AuditRejected { code: &'static str, message: String },
    #[error("purge refused: {0}")]
    RetentionRefused(String),
    #[error("invalid {0}")]
    Invalid(#[from] chartroom_domain::ValidationError),
    #[error("master key: {0}")]
    Keyring(String),
    #[error("cannot listen on the requested address ({0})")]
    Bind(String),
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("backup: {0}")]
    Backup(String),
    #[error("update refused: {0}")]
    Release(String),
    #[error("{0}")]
    Hsm(String),
    #[error("a master key rotation is unfinished; run `chartroom-server keys rotate` to finish it (nothing else runs until then)")]
    RotationUnfinished,
    #[error("the server (or another command) is using this data directory; stop it first")]
    ServerRunning,
    #[error("a master key rotation is running on this data directory; wait for it to finish")]
    RotationRunning,
    #[error("the server is busy (every database connection is in use); try again")]
    Busy,
    #[error("file error: {0}")]
    Io(String),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ServerError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServerError::AlreadyInitialised => "server.already_initialised",
            ServerError::NotInitialised => "server.not_initialised",
            ServerError::Damaged(_) => "server.damaged",
            ServerError::UserExists => "user.exists",
            ServerError::UnknownUser => "user.unknown",
            ServerError::UnknownDevice => "device.unknown",
            ServerError::InvalidToken => "device.invalid_token",
            ServerError::DeviceEnrolled => "device.enrolled",
            ServerError::InvalidRecoveryToken => "device.invalid_recovery_token",
            ServerError::NotRecoverable => "device.not_recoverable",
            ServerError::RecoverySlotInvalid => "device.recovery_slot_invalid",
            ServerError::PatientExists => "patient.exists",
            ServerError::Import(_) => "fhir.import",
            ServerError::AuditRejected { code, .. } => code,
            ServerError::RetentionRefused(_) => "audit.retention",
            ServerError::Invalid(_) => "request.invalid",
            ServerError::Keyring(_) => "server.keyring",
            ServerError::Bind(_) => "server.bind",
            ServerError::Tls(_) => "server.tls",
            ServerError::Database(_) => "server.database",
            ServerError::Busy => "server.busy",
            ServerError::Release(_) => "update.invalid",
            ServerError::Hsm(_) => "server.hsm",
            ServerError::RotationUnfinished => "server.rotation_unfinished",
            ServerError::ServerRunning => "server.running",
            ServerError::RotationRunning => "server.rotation_running",
            ServerError::Backup(_) => "server.backup",
            ServerError::Io(_) => "server.io",
            ServerError::Internal(_) => "server.internal",
        }
    }
}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> Self {
        ServerError::Io(e.kind().to_string())
    }
}

impl From<rusqlite::Error> for ServerError {
    fn from(e: rusqlite::Error) -> Self {
        ServerError::Database(e.to_string())
    }
}
