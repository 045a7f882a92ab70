//! Per-user key slots: the station's data key sealed under a key derived from the user's password
//! **and** the device secret from the OS keyring.
//!
//! Wire format (version 1), all integers big-endian:
//! ```text
//! "CRKS" ‖ 0x01 ‖ m_kib u32 ‖ t u32 ‖ p u32 ‖ salt (16) ‖ user id (16) ‖ device id (16) ‖ slot version u32
//!        ‖ nonce (12) ‖ sealed data key (32 + 16)
//! ```
//! Everything before the nonce is the AAD, so the user id, device id and slot version (and the KDF
//! parameters) cannot be changed without the slot failing to open.

use rand::rngs::OsRng;
use rand::RngCore;
use uuid::Uuid;

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::kdf::derive_kek;
use crate::secret::Key32;
use crate::{CryptoError, DataKey, DeviceSecret, KdfParams, Password};

const MAGIC: &[u8; 4] = b"CRKS";
/// Current key slot format version.
pub const SLOT_FORMAT: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 12 + 16 + 16 + 16 + 4;
const SLOT_LEN: usize = HEADER_LEN + NONCE_LEN + 32 + TAG_LEN;

/// One user's sealed copy of the data key on one device.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySlot {
    bytes: Vec<u8>,
    kdf: KdfParams,
    user_id: Uuid,
    device_id: Uuid,
    slot_version: u32,
}

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySlot")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("slot_version", &self.slot_version)
            .field("kdf", &self.kdf)
            .finish_non_exhaustive()
    }
}

impl KeySlot {
    /// Seals `dek` for `user_id` on `device_id`.
    pub fn seal(
        dek: &DataKey,
        password: &Password,
        device: &DeviceSecret,
        user_id: Uuid,
        device_id: Uuid,
        slot_version: u32,
        kdf: KdfParams,
    ) -> Result<KeySlot, CryptoError> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let mut bytes = Vec::with_capacity(SLOT_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.push(SLOT_FORMAT);
        bytes.extend_from_slice(&kdf.m_kib().to_be_bytes());
        bytes.extend_from_slice(&kdf.t().to_be_bytes());
        bytes.extend_from_slice(&kdf.p().to_be_bytes());
        bytes.extend_from_slice(&salt);
        bytes.extend_from_slice(user_id.as_bytes());
        bytes.extend_from_slice(device_id.as_bytes());
        bytes.extend_from_slice(&slot_version.to_be_bytes());
        let kek = slot_kek(kdf, password, &salt, device, &bytes[..HEADER_LEN])?;
        let aad = bytes.clone();
        aead::seal_into(&kek, &aad, dek.key(), &mut bytes);
        Ok(KeySlot { bytes, kdf, user_id, device_id, slot_version })
    }

    /// Parses and checks the structure of a stored slot (does not decrypt).
    pub fn from_bytes(bytes: &[u8]) -> Result<KeySlot, CryptoError> {
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err(CryptoError::Malformed("key slot"));
        }
        if bytes[4] != SLOT_FORMAT {
            return Err(CryptoError::UnsupportedVersion { what: "key slot", version: bytes[4] });
        }
        if bytes.len() != SLOT_LEN {
            return Err(CryptoError::Malformed("key slot"));
        }
        let u32_at = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let uuid_at = |i: usize| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes[i..i + 16]);
            Uuid::from_bytes(b)
        };
        let kdf = KdfParams::new(u32_at(5), u32_at(9), u32_at(13))?;
        Ok(KeySlot {
            bytes: bytes.to_vec(),
            kdf,
            user_id: uuid_at(33),
            device_id: uuid_at(49),
            slot_version: u32_at(65),
        })
    }

    /// The stored form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }
    pub fn device_id(&self) -> Uuid {
        self.device_id
    }
    pub fn slot_version(&self) -> u32 {
        self.slot_version
    }
    pub fn kdf(&self) -> KdfParams {
        self.kdf
    }

    /// Unwraps the data key. `user_id`/`device_id` are who is logging in and where: a slot made for
    /// someone else or on another device is refused before any password work is done.
    pub fn open(
        &self,
        password: &Password,
        device: &DeviceSecret,
        user_id: Uuid,
        device_id: Uuid,
    ) -> Result<DataKey, CryptoError> {
        if self.user_id != user_id {
            return Err(CryptoError::WrongUser);
        }
        if self.device_id != device_id {
            return Err(CryptoError::WrongDevice);
        }
        let header = &self.bytes[..HEADER_LEN];
        let salt = &self.bytes[17..33];
        let kek = slot_kek(self.kdf, password, salt, device, header)?;
        let dek = aead::open_key(&kek, header, &self.bytes[HEADER_LEN..]).map_err(|e| match e {
            CryptoError::OpenFailed => CryptoError::WrongPassword,
            other => other,
        })?;
        Ok(DataKey::from_key(Key32::from_array(&dek)))
    }
}

fn slot_kek(
    kdf: KdfParams,
    password: &Password,
    salt: &[u8],
    device: &DeviceSecret,
    header: &[u8],
) -> Result<zeroize::Zeroizing<[u8; 32]>, CryptoError> {
    let hash = kdf.hash_password(password, salt)?;
    // info = user id ‖ device id ‖ slot version (the tail of the header).
    Ok(derive_kek(b"chartroom/keyslot/v1", &hash, device, &header[33..HEADER_LEN]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture() -> (DataKey, DeviceSecret, Uuid, Uuid, KeySlot) {
        let dek = DataKey::generate();
        let dev = DeviceSecret::generate();
        let (u, d) = (Uuid::new_v4(), Uuid::new_v4());
        let slot =
            KeySlot::seal(&dek, &"a long passphrase".into(), &dev, u, d, 1, KdfParams::MINIMUM).unwrap();
        (dek, dev, u, d, slot)
    }

    #[test]
    fn slot_round_trip_and_errors() {
        let (dek, dev, u, d, slot) = fixture();
        let parsed = KeySlot::from_bytes(slot.as_bytes()).unwrap();
        assert_eq!(parsed, slot);
        let opened = parsed.open(&"a long passphrase".into(), &dev, u, d).unwrap();
        assert_eq!(opened.key(), dek.key());
        assert_eq!(
            parsed.open(&"wrong passphrase!".into(), &dev, u, d).err(),
            Some(CryptoError::WrongPassword)
        );
        assert_eq!(
            parsed.open(&"a long passphrase".into(), &dev, Uuid::new_v4(), d).err(),
            Some(CryptoError::WrongUser)
        );
        assert_eq!(
            parsed.open(&"a long passphrase".into(), &dev, u, Uuid::new_v4()).err(),
            Some(CryptoError::WrongDevice)
        );
        // The right password with another device's secret does not open it.
        let other = DeviceSecret::generate();
        assert_eq!(
            parsed.open(&"a long passphrase".into(), &other, u, d).err(),
            Some(CryptoError::WrongPassword)
        );
    }

    #[test]
    fn header_edits_are_detected() {
        let (_dek, dev, u, d, slot) = fixture();
        // Rewrite the slot version: the AAD no longer matches.
        let mut bytes = slot.as_bytes().to_vec();
        bytes[HEADER_LEN - 1] ^= 1;
        let edited = KeySlot::from_bytes(&bytes).unwrap();
        assert_eq!(
            edited.open(&"a long passphrase".into(), &dev, u, d).err(),
            Some(CryptoError::WrongPassword)
        );
        // Weakening the KDF below the floor is refused at parse time.
        let mut weak = slot.as_bytes().to_vec();
        weak[5..9].copy_from_slice(&1024u32.to_be_bytes());
        assert!(matches!(KeySlot::from_bytes(&weak), Err(CryptoError::KdfParams(_))));
    }

    #[test]
    fn debug_is_redacted() {
        let (dek, dev, _, _, slot) = fixture();
        assert_eq!(format!("{dek:?}"), "DataKey(***)");
        assert_eq!(format!("{dev:?}"), "DeviceSecret(***)");
        assert!(!format!("{slot:?}").contains("bytes"));
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeySlot::from_bytes(&bytes);
        }
    }
}
