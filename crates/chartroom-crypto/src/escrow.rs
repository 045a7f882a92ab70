//! The escrow slot: how a station reopens its data key for a user who has never logged in on it.
//!
//! At enrollment the server hands the device an escrow key (derived from the server's master key
//! and the device id; the station never stores it). The station wraps its data key under
//! `HKDF(escrow key ‖ device secret)`: opening the slot needs both the OS keyring of this device and
//! a successful online login, after which the server hands the escrow key out again and the user
//! gets an ordinary password slot. A stolen profile without the keyring, or the keyring without the
//! server, opens nothing.
//!
//! Format (version 1): `"CRES" ‖ 0x01 ‖ device id (16) ‖ nonce (12) ‖ AES-256-GCM(DEK) (32 + 16)`,
//! with the first 21 bytes as AAD.

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::secret::{DataKey, DeviceSecret, Key32};
use crate::CryptoError;

const MAGIC: &[u8; 4] = b"CRES";
pub const ESCROW_FORMAT: u8 = 1;
const HEADER: usize = 4 + 1 + 16;

/// The escrow key the server hands device `device_id`: derived from the server's master key, so the
/// server stores nothing per device and a master-key rotation changes every escrow key.
pub fn escrow_key_for(master: &[u8; 32], device_id: Uuid) -> Zeroizing<[u8; 32]> {
    crate::kdf::hkdf_32(b"chartroom/device-escrow/v1", master, device_id.as_bytes())
}

/// A data key sealed for later online logins on this device.
#[derive(Clone, PartialEq, Eq)]
pub struct EscrowSlot(Vec<u8>);

impl std::fmt::Debug for EscrowSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EscrowSlot(***)")
    }
}

fn kek(escrow_key: &[u8; 32], secret: &DeviceSecret) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(escrow_key);
    ikm[32..].copy_from_slice(secret.key());
    crate::kdf::hkdf_32(b"chartroom/escrow-slot/v1", ikm.as_ref(), b"kek")
}

impl EscrowSlot {
    pub fn seal(dek: &DataKey, escrow_key: &[u8; 32], secret: &DeviceSecret, device_id: Uuid) -> EscrowSlot {
        let mut out = Vec::with_capacity(HEADER + 12 + 48);
        out.extend_from_slice(MAGIC);
        out.push(ESCROW_FORMAT);
        out.extend_from_slice(device_id.as_bytes());
        let header = out.clone();
        crate::aead::seal_into(&kek(escrow_key, secret), &header, dek.key(), &mut out);
        EscrowSlot(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EscrowSlot, CryptoError> {
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return Err(CryptoError::Malformed("escrow slot"));
        }
        if bytes[4] != ESCROW_FORMAT {
            return Err(CryptoError::UnsupportedVersion { what: "escrow slot", version: bytes[4] });
        }
        Ok(EscrowSlot(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Opens with the escrow key from an online login and this device's secret.
    pub fn open(
        &self,
        escrow_key: &[u8; 32],
        secret: &DeviceSecret,
        device_id: Uuid,
    ) -> Result<DataKey, CryptoError> {
        let (header, sealed) = self.0.split_at(HEADER);
        if header[5..] != device_id.as_bytes()[..] {
            return Err(CryptoError::OpenFailed);
        }
        let key = crate::aead::open_key(&kek(escrow_key, secret), header, sealed)?;
        Ok(DataKey::from_key(Key32::from_array(&key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_escrow_key_secret_and_device() {
        let dek = DataKey::generate();
        let secret = DeviceSecret::generate();
        let device = Uuid::new_v4();
        let slot = EscrowSlot::seal(&dek, &[1; 32], &secret, device);
        let back = EscrowSlot::from_bytes(slot.as_bytes()).unwrap().open(&[1; 32], &secret, device).unwrap();
        assert_eq!(back.key(), dek.key());
        assert!(slot.open(&[2; 32], &secret, device).is_err(), "another escrow key");
        assert!(slot.open(&[1; 32], &DeviceSecret::generate(), device).is_err(), "another device secret");
        assert!(slot.open(&[1; 32], &secret, Uuid::new_v4()).is_err(), "another device");
        let mut bytes = slot.as_bytes().to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        assert!(EscrowSlot::from_bytes(&bytes).unwrap().open(&[1; 32], &secret, device).is_err());
        assert!(EscrowSlot::from_bytes(b"nope").is_err());
    }
}
