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

pub use chartroom_keyring::{KeystoreError, OsKeyring};

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

impl DeviceSecretStore for OsKeyring {
    fn backend(&self) -> &'static str {
        OsKeyring::backend(self)
    }

    fn load(&self, device_id: Uuid) -> Result<DeviceSecret, KeystoreError> {
        let bytes = self.read(SERVICE, &entry_user(device_id))?;
        DeviceSecret::from_keyring_bytes(&bytes).map_err(|_| KeystoreError::Damaged)
    }

    fn save(&self, device_id: Uuid, secret: &DeviceSecret) -> Result<(), KeystoreError> {
        self.write(SERVICE, &entry_user(device_id), secret.keyring_bytes())
    }

    fn delete(&self, device_id: Uuid) -> Result<(), KeystoreError> {
        self.remove(SERVICE, &entry_user(device_id))
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
