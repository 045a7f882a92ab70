//! The operating system's keyring — the one place Chartroom keeps long-lived keys (a station's
//! device secret, a server's master key with `--master-key keyring`), so that they never sit beside
//! the data they protect. Secret Service on Linux, Keychain on macOS, Credential Manager on Windows.
//!
//! Architecture invariant: no fallback. When no keyring is reachable this fails clearly; it never
//! quietly stores a key somewhere weaker.

#![forbid(unsafe_code)]

use std::sync::Arc;

use zeroize::Zeroizing;

/// Why a key could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    #[error("the key is not available in the system keyring")]
    Missing,
    #[error("the system keyring is not reachable ({0}); unlock or start it and try again")]
    Unavailable(String),
    #[error("the key in the system keyring is damaged")]
    Damaged,
}

/// The operating system's keyring.
pub struct OsKeyring {
    store: Arc<keyring_core::CredentialStore>,
}

impl std::fmt::Debug for OsKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsKeyring").field("backend", &self.backend()).finish()
    }
}

fn map_err(e: keyring_core::Error) -> KeystoreError {
    use keyring_core::Error as E;
    match e {
        E::NoEntry => KeystoreError::Missing,
        E::BadEncoding(_) | E::BadDataFormat(..) => KeystoreError::Damaged,
        E::NoStorageAccess(_) => KeystoreError::Unavailable("no access to the keyring".into()),
        E::NoDefaultStore => KeystoreError::Unavailable("no keyring service".into()),
        E::PlatformFailure(_) => KeystoreError::Unavailable("keyring service failed".into()),
        E::Ambiguous(_) => KeystoreError::Damaged,
        other => KeystoreError::Unavailable(other.to_string()),
    }
}

impl OsKeyring {
    /// Connects to the platform's keyring. Fails clearly when none is reachable (for example a
    /// Linux session without D-Bus or without a Secret Service provider).
    pub fn connect() -> Result<OsKeyring, KeystoreError> {
        #[cfg(target_os = "linux")]
        let store: Arc<keyring_core::CredentialStore> =
            dbus_secret_service_keyring_store::Store::new().map_err(map_err)?;
        #[cfg(target_os = "macos")]
        let store: Arc<keyring_core::CredentialStore> =
            apple_native_keyring_store::keychain::Store::new().map_err(map_err)?;
        #[cfg(target_os = "windows")]
        let store: Arc<keyring_core::CredentialStore> =
            windows_native_keyring_store::Store::new().map_err(map_err)?;
        Ok(OsKeyring { store })
    }

    /// A stable name for the backend (recorded by stations so a silent switch is detected).
    pub fn backend(&self) -> &'static str {
        if cfg!(target_os = "linux") {
            "secret-service"
        } else if cfg!(target_os = "macos") {
            "macos-keychain"
        } else {
            "windows-credential-manager"
        }
    }

    fn entry(&self, service: &str, user: &str) -> Result<keyring_core::Entry, KeystoreError> {
        keyring_core::Entry::new_in_store(&self.store, service, user).map_err(map_err)
    }

    /// The secret stored under (`service`, `user`).
    pub fn read(&self, service: &str, user: &str) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        Ok(Zeroizing::new(self.entry(service, user)?.get_secret().map_err(map_err)?))
    }

    /// Stores `secret` and reads it back: a keyring that accepts writes but does not keep them must
    /// be caught now, not after data has been encrypted under a key nobody can find.
    pub fn write(&self, service: &str, user: &str, secret: &[u8]) -> Result<(), KeystoreError> {
        self.entry(service, user)?.set_secret(secret).map_err(map_err)?;
        if self.read(service, user)?.as_slice() != secret {
            return Err(KeystoreError::Damaged);
        }
        Ok(())
    }

    /// Removes the entry (absent is fine).
    pub fn remove(&self, service: &str, user: &str) -> Result<(), KeystoreError> {
        match self.entry(service, user)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}
