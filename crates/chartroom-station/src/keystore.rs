//! The port to the OS keyring, where the device secret lives (and nowhere else).
//!
//! One entry per device: service `chartroom`, user `device:<device id>`, value the 32-byte secret.
//! The real implementation is the platform's native store (Secret Service on Linux, Keychain on
//! macOS, Credential Manager on Windows); logic tests may use [`MemoryKeystore`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chartroom_crypto::DeviceSecret;
use uuid::Uuid;

const SERVICE: &str = "chartroom";

/// Why the device secret could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    #[error("this device's key is not available in the system keyring")]
    Missing,
    #[error("the system keyring is not reachable ({0}); unlock or start it and try again")]
    Unavailable(String),
    #[error("this device's key in the system keyring is damaged")]
    Damaged,
}

/// Where device secrets are kept.
pub trait DeviceSecretStore: Send + Sync + std::fmt::Debug {
    /// A stable name for the backend, recorded in the profile so a silent switch is detected.
    fn backend(&self) -> &'static str;
    fn load(&self, device_id: Uuid) -> Result<DeviceSecret, KeystoreError>;
    fn save(&self, device_id: Uuid, secret: &DeviceSecret) -> Result<(), KeystoreError>;
    fn delete(&self, device_id: Uuid) -> Result<(), KeystoreError>;
}

fn entry_user(device_id: Uuid) -> String {
    format!("device:{device_id}")
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
    /// Linux session without D-Bus or without a Secret Service provider) — never falls back to a
    /// weaker store.
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

    fn entry(&self, device_id: Uuid) -> Result<keyring_core::Entry, KeystoreError> {
        keyring_core::Entry::new_in_store(&self.store, SERVICE, &entry_user(device_id)).map_err(map_err)
    }
}

impl DeviceSecretStore for OsKeyring {
    fn backend(&self) -> &'static str {
        if cfg!(target_os = "linux") {
            "secret-service"
        } else if cfg!(target_os = "macos") {
            "macos-keychain"
        } else {
            "windows-credential-manager"
        }
    }

    fn load(&self, device_id: Uuid) -> Result<DeviceSecret, KeystoreError> {
        let bytes = zeroize::Zeroizing::new(self.entry(device_id)?.get_secret().map_err(map_err)?);
        DeviceSecret::from_keyring_bytes(&bytes).map_err(|_| KeystoreError::Damaged)
    }

    fn save(&self, device_id: Uuid, secret: &DeviceSecret) -> Result<(), KeystoreError> {
        let entry = self.entry(device_id)?;
        entry.set_secret(secret.keyring_bytes()).map_err(map_err)?;
        // Read it back: a keyring that accepts writes but does not keep them must be caught now, at
        // enrollment, not after clinical data has been written under a key nobody can find.
        let back = self.load(device_id)?;
        if &back != secret {
            return Err(KeystoreError::Damaged);
        }
        Ok(())
    }

    fn delete(&self, device_id: Uuid) -> Result<(), KeystoreError> {
        match self.entry(device_id)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// An in-memory keystore for logic tests. Clones share the same entries.
#[derive(Debug, Default, Clone)]
pub struct MemoryKeystore {
    entries: Arc<Mutex<HashMap<Uuid, Vec<u8>>>>,
}

impl MemoryKeystore {
    /// Simulates a keyring reset: every entry is gone.
    pub fn clear(&self) {
        if let Ok(mut e) = self.entries.lock() {
            e.clear();
        }
    }
}

impl DeviceSecretStore for MemoryKeystore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn load(&self, device_id: Uuid) -> Result<DeviceSecret, KeystoreError> {
        let entries = self.entries.lock().map_err(|_| KeystoreError::Unavailable("poisoned".into()))?;
        let bytes = entries.get(&device_id).ok_or(KeystoreError::Missing)?;
        DeviceSecret::from_keyring_bytes(bytes).map_err(|_| KeystoreError::Damaged)
    }

    fn save(&self, device_id: Uuid, secret: &DeviceSecret) -> Result<(), KeystoreError> {
        let mut entries = self.entries.lock().map_err(|_| KeystoreError::Unavailable("poisoned".into()))?;
        entries.insert(device_id, secret.keyring_bytes().to_vec());
        Ok(())
    }

    fn delete(&self, device_id: Uuid) -> Result<(), KeystoreError> {
        let mut entries = self.entries.lock().map_err(|_| KeystoreError::Unavailable("poisoned".into()))?;
        entries.remove(&device_id);
        Ok(())
    }
}
