//! Store errors with stable codes and PHI-free messages.

use chartroom_crypto::CryptoError;
use chartroom_domain::ValidationError;

/// Everything the store can refuse or fail at. Messages never contain PHI or SQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database file does not exist")]
    Missing,
    #[error("a database file already exists here; refusing to overwrite it")]
    AlreadyExists,
    #[error("the database could not be decrypted: wrong key, or the file is damaged")]
    WrongKeyOrDamaged,
    #[error("the database file is truncated (its size is not a whole number of pages)")]
    Truncated,
    #[error("the database file is damaged (a page failed its integrity check)")]
    Damaged,
    #[error("the database was written by a newer Chartroom (schema {found}, this build knows {supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("the disk is full; nothing was written")]
    DiskFull,
    #[error("the station database is open in another Chartroom process; close it and try again")]
    InUse,
    #[error("the database is read-only; nothing was written")]
    ReadOnly,
    #[error("patient not found on this station")]
    PatientNotFound,
    #[error("this patient's data was removed from this station and can no longer be decrypted")]
    PatientShredded,
    #[error("this record is not in conflict (or the server's version has not been pulled yet)")]
    NoConflict,
    #[error("only a refused change that created a new record can be discarded (resolve a conflict instead)")]
    NotDiscardable,
    #[error("invalid record: {0}")]
    Invalid(#[from] ValidationError),
    #[error("a sealed value failed to open: {0}")]
    Crypto(#[from] CryptoError),
    #[error("a stored record could not be decoded")]
    Decode,
    #[error("database error: {0}")]
    Database(String),
    #[error("file error: {0}")]
    Io(String),
}

impl StoreError {
    /// A stable machine-readable code (for the UI and the CLI).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Missing => "store.missing",
            StoreError::AlreadyExists => "store.exists",
            StoreError::WrongKeyOrDamaged => "store.wrong_key_or_damaged",
            StoreError::Truncated => "store.truncated",
            StoreError::Damaged => "store.damaged",
            StoreError::SchemaTooNew { .. } => "store.schema_too_new",
            StoreError::DiskFull => "store.disk_full",
            StoreError::ReadOnly => "store.read_only",
            StoreError::InUse => "store.in_use",
            StoreError::PatientNotFound => "store.patient_not_found",
            StoreError::PatientShredded => "store.patient_shredded",
            StoreError::NoConflict => "sync.no_conflict",
            StoreError::NotDiscardable => "sync.not_discardable",
            StoreError::Invalid(_) => "store.invalid",
            StoreError::Crypto(_) => "store.crypto",
            StoreError::Decode => "store.decode",
            StoreError::Database(_) => "store.database",
            StoreError::Io(_) => "store.io",
        }
    }

    /// Whether trying again later may succeed (disk full, busy), as opposed to a permanent refusal.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::DiskFull | StoreError::Database(_) | StoreError::Io(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::NotADatabase) => StoreError::WrongKeyOrDamaged,
            Some(C::DatabaseCorrupt) => StoreError::Damaged,
            Some(C::DiskFull) => StoreError::DiskFull,
            Some(C::ReadOnly) => StoreError::ReadOnly,
            Some(C::CannotOpen) => StoreError::Io("the database file cannot be opened".into()),
            // SQLite's own messages name constraints and columns, never bound values.
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull => StoreError::DiskFull,
            std::io::ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnly,
            kind => StoreError::Io(kind.to_string()),
        }
    }
}
