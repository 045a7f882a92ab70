//! The crypto error type: stable, PHI-free messages.

/// Everything that can go wrong when sealing, opening or parsing key material.
///
/// Messages never contain key material, plaintext, or identifiers of patients.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The bytes are not a well-formed structure of the expected kind.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The structure has a format version this build does not understand.
    #[error("unsupported {what} format version {version}")]
    UnsupportedVersion { what: &'static str, version: u8 },
    /// Authenticated decryption failed: wrong key, wrong place, or the bytes were altered.
    #[error("sealed value could not be opened (wrong key, wrong place, or altered data)")]
    OpenFailed,
    /// The key slot did not open with this password on this device.
    #[error("wrong password")]
    WrongPassword,
    /// The key slot belongs to another user.
    #[error("this key slot belongs to another user")]
    WrongUser,
    /// The key slot was made on another device.
    #[error("this key slot was made on another device")]
    WrongDevice,
    /// The recovery slot was sealed to a different recovery key.
    #[error("this recovery slot was sealed to a different recovery key")]
    WrongRecoveryKey,
    /// Argon2id parameters outside the allowed range.
    #[error("key derivation parameters out of range: {0}")]
    KdfParams(String),
    /// A secret had the wrong length.
    #[error("{0} has the wrong length")]
    BadLength(&'static str),
}
