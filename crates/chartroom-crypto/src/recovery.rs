//! The recovery slot: the data key sealed to a recovery public key (X25519 + HKDF-SHA-256 +
//! AES-256-GCM), so that losing the OS keyring never loses unsynced clinical work.
//!
//! Wire format (version 1):
//! ```text
//! "CRRS" ‖ 0x01 ‖ device id (16) ‖ recipient key id (16) ‖ ephemeral public key (32)
//!        ‖ nonce (12) ‖ sealed data key (32 + 16)
//! ```
//! The header is the AAD. The KEK is `HKDF(salt = ephemeral ‖ recipient, ikm = X25519 shared secret,
//! info = "chartroom/recovery/v1" ‖ device id)`.

use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};

use crate::aead::{self, NONCE_LEN, TAG_LEN};
use crate::kdf::hkdf_32;
use crate::secret::Key32;
use crate::{CryptoError, DataKey};

const MAGIC: &[u8; 4] = b"CRRS";
/// Current recovery slot format version.
pub const RECOVERY_FORMAT: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 16 + 16 + 32;
const SLOT_LEN: usize = HEADER_LEN + NONCE_LEN + 32 + TAG_LEN;

/// A recovery public key (held by the server / IT; stations seal to it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecoveryPublicKey([u8; 32]);

impl RecoveryPublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        RecoveryPublicKey(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// A short public identifier: the first 16 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> [u8; 16] {
        let digest = Sha256::digest(self.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        id
    }
}

/// A recovery key pair (the private half never lives on a station).
pub struct RecoveryKeyPair {
    secret: StaticSecret,
    public: RecoveryPublicKey,
}

impl std::fmt::Debug for RecoveryKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryKeyPair").field("public", &self.public).finish_non_exhaustive()
    }
}

impl RecoveryKeyPair {
    pub fn generate() -> Self {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = RecoveryPublicKey(PublicKey::from(&secret).to_bytes());
        RecoveryKeyPair { secret, public }
    }

    pub fn public(&self) -> RecoveryPublicKey {
        self.public
    }

    /// The key pair from its 32-byte private key (as kept in the server's `keys/recovery.key`).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Self {
        let secret = StaticSecret::from(*bytes);
        let public = RecoveryPublicKey(PublicKey::from(&secret).to_bytes());
        RecoveryKeyPair { secret, public }
    }

    /// The private key, to be written to a key file (wiped when dropped).
    pub fn secret_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.secret.to_bytes())
    }
}

/// The data key of one device, sealed to a recovery public key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecoverySlot {
    bytes: Vec<u8>,
}

impl RecoverySlot {
    pub fn seal(dek: &DataKey, recipient: &RecoveryPublicKey, device_id: Uuid) -> Result<Self, CryptoError> {
        let ephemeral = EphemeralSecret::random_from_rng(OsRng);
        let ephemeral_public = PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&PublicKey::from(recipient.0));
        if !shared.was_contributory() {
            return Err(CryptoError::Malformed("recovery public key"));
        }
        let mut bytes = Vec::with_capacity(SLOT_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.push(RECOVERY_FORMAT);
        bytes.extend_from_slice(device_id.as_bytes());
        bytes.extend_from_slice(&recipient.key_id());
        bytes.extend_from_slice(ephemeral_public.as_bytes());
        let kek = recovery_kek(shared.as_bytes(), ephemeral_public.as_bytes(), &recipient.0, device_id);
        let aad = bytes.clone();
        aead::seal_into(&kek, &aad, dek.key(), &mut bytes);
        Ok(RecoverySlot { bytes })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err(CryptoError::Malformed("recovery slot"));
        }
        if bytes[4] != RECOVERY_FORMAT {
            return Err(CryptoError::UnsupportedVersion { what: "recovery slot", version: bytes[4] });
        }
        if bytes.len() != SLOT_LEN {
            return Err(CryptoError::Malformed("recovery slot"));
        }
        Ok(RecoverySlot { bytes: bytes.to_vec() })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn device_id(&self) -> Uuid {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.bytes[5..21]);
        Uuid::from_bytes(b)
    }

    /// Recovers the data key with the recovery private key.
    pub fn open(&self, keys: &RecoveryKeyPair) -> Result<DataKey, CryptoError> {
        if self.bytes[21..37] != keys.public.key_id() {
            return Err(CryptoError::WrongRecoveryKey);
        }
        let mut eph = [0u8; 32];
        eph.copy_from_slice(&self.bytes[37..HEADER_LEN]);
        let shared = keys.secret.diffie_hellman(&PublicKey::from(eph));
        if !shared.was_contributory() {
            return Err(CryptoError::Malformed("recovery slot"));
        }
        let kek = recovery_kek(shared.as_bytes(), &eph, &keys.public.0, self.device_id());
        let header = &self.bytes[..HEADER_LEN];
        let dek = aead::open_key(&kek, header, &self.bytes[HEADER_LEN..])?;
        Ok(DataKey::from_key(Key32::from_array(&dek)))
    }
}

fn recovery_kek(
    shared: &[u8; 32],
    eph: &[u8; 32],
    recipient: &[u8; 32],
    device_id: Uuid,
) -> zeroize::Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph);
    salt[32..].copy_from_slice(recipient);
    let mut info = Vec::with_capacity(21 + 16);
    info.extend_from_slice(b"chartroom/recovery/v1");
    info.extend_from_slice(device_id.as_bytes());
    hkdf_32(&salt, shared, &info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recovery_round_trip() {
        let dek = DataKey::generate();
        let keys = RecoveryKeyPair::generate();
        let device = Uuid::new_v4();
        let slot = RecoverySlot::seal(&dek, &keys.public(), device).unwrap();
        let parsed = RecoverySlot::from_bytes(slot.as_bytes()).unwrap();
        assert_eq!(parsed.device_id(), device);
        assert_eq!(parsed.open(&keys).unwrap().key(), dek.key());
        assert_eq!(parsed.open(&RecoveryKeyPair::generate()).err(), Some(CryptoError::WrongRecoveryKey));
        // A key pair saved and loaded again is the same key pair.
        let reloaded = RecoveryKeyPair::from_secret_bytes(&keys.secret_bytes());
        assert_eq!(reloaded.public(), keys.public());
        assert_eq!(parsed.open(&reloaded).unwrap().key(), dek.key());
    }

    #[test]
    fn recovery_slot_tamper_is_detected() {
        let dek = DataKey::generate();
        let keys = RecoveryKeyPair::generate();
        let slot = RecoverySlot::seal(&dek, &keys.public(), Uuid::new_v4()).unwrap();
        for i in [5usize, 40, HEADER_LEN + 3, SLOT_LEN - 1] {
            let mut b = slot.as_bytes().to_vec();
            b[i] ^= 0x80;
            assert!(RecoverySlot::from_bytes(&b).unwrap().open(&keys).is_err(), "flip at {i} undetected");
        }
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let keys = RecoveryKeyPair::generate();
            if let Ok(slot) = RecoverySlot::from_bytes(&bytes) { let _ = slot.open(&keys); }
        }
    }
}
