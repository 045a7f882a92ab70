//! Secret types. Each zeroizes on drop, prints `***` in `Debug`, is not `Clone`, and can only be
//! built from bytes where the design allows it (a `PatientKey` never can, outside this crate).

use std::fmt;

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::envelope::KeyId;
use crate::{aead, CryptoError};

/// 32 secret bytes that are wiped when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key32([u8; 32]);

impl Key32 {
    pub(crate) fn random() -> Self {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        Key32(k)
    }

    pub(crate) fn from_array(bytes: &Zeroizing<[u8; 32]>) -> Self {
        Key32(**bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($t), "(***)"))
            }
        }
    )*};
}
redacted_debug!(DataKey, DeviceSecret, PatientKey, Password);

/// The station's data-encryption key: the raw SQLCipher key. Patient keys are wrapped, and blind
/// indexes computed, with subkeys derived from it by HKDF, so no key serves two ciphers.
#[derive(ZeroizeOnDrop)]
pub struct DataKey {
    key: Key32,
    wrap: Key32,
    index: Key32,
}

impl DataKey {
    /// A fresh random key (a new vault).
    pub fn generate() -> Self {
        Self::from_key(Key32::random())
    }

    pub(crate) fn from_key(key: Key32) -> Self {
        let derive = |label: &[u8]| {
            Key32::from_array(&crate::kdf::hkdf_32(b"chartroom/data-key/v1", key.bytes(), label))
        };
        let (wrap, index) = (derive(b"patient-key-wrap"), derive(b"blind-index"));
        DataKey { key, wrap, index }
    }

    pub(crate) fn key(&self) -> &[u8; 32] {
        self.key.bytes()
    }

    /// A data key derived from another secret with HKDF-SHA-256 (e.g. the server's database key
    /// from its master key), so the source secret itself never keys a database.
    pub fn derive(salt: &[u8], secret: &[u8; 32], info: &[u8]) -> Self {
        Self::from_key(Key32::from_array(&crate::kdf::hkdf_32(salt, secret, info)))
    }

    /// The complete `PRAGMA key = "x'…'";` statement for SQLCipher, in a wiped buffer (a formatted
    /// `pragma_update` would leave the key in a plain `String`). The raw-key form means SQLCipher runs
    /// no KDF on every open.
    pub fn sqlcipher_key_statement(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(80));
        s.push_str("PRAGMA key = \"x'");
        for b in self.key.bytes() {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s.push_str("'\";");
        s
    }

    /// Seals a 32-byte secret under this key's wrapping subkey, bound to `label` (it opens only
    /// with the same key and label).
    pub fn seal_secret(&self, label: &[u8], secret: &[u8; 32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 32 + 16);
        aead::seal_into(self.wrap.bytes(), label, secret, &mut out);
        out
    }

    /// Opens a secret sealed by [`DataKey::seal_secret`] with the same label.
    pub fn open_secret(&self, label: &[u8], sealed: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        aead::open_key(self.wrap.bytes(), label, sealed)
    }

    /// Wraps a patient key so that it can only be unwrapped for the same patient.
    pub fn wrap_patient_key(&self, patient_id: uuid::Uuid, key: &PatientKey) -> Vec<u8> {
        let aad = patient_key_aad(patient_id, &key.id);
        let mut out = Vec::with_capacity(1 + 16 + 12 + 32 + 16);
        out.push(PATIENT_KEY_WRAP_VERSION);
        out.extend_from_slice(key.id.as_bytes());
        aead::seal_into(self.wrap.bytes(), &aad, key.key.bytes(), &mut out);
        out
    }

    /// Unwraps a key made by [`DataKey::wrap_patient_key`] for the same patient.
    pub fn unwrap_patient_key(
        &self,
        patient_id: uuid::Uuid,
        wrapped: &[u8],
    ) -> Result<PatientKey, CryptoError> {
        let (&version, rest) = wrapped.split_first().ok_or(CryptoError::Malformed("wrapped patient key"))?;
        if version != PATIENT_KEY_WRAP_VERSION {
            return Err(CryptoError::UnsupportedVersion { what: "wrapped patient key", version });
        }
        if rest.len() < 16 {
            return Err(CryptoError::Malformed("wrapped patient key"));
        }
        let (id, sealed) = rest.split_at(16);
        let id = KeyId::from_slice(id)?;
        let key = aead::open_key(self.wrap.bytes(), &patient_key_aad(patient_id, &id), sealed)?;
        Ok(PatientKey::from_parts(id, Key32::from_array(&key)))
    }

    /// A keyed, deterministic index of `value` (e.g. an MRN) so it can be looked up without being
    /// stored in the clear. `domain` separates indexes of different fields.
    pub fn blind_index(&self, domain: &str, value: &str) -> [u8; 32] {
        let subkey = crate::kdf::hkdf_32(b"chartroom/blind-index/v1", self.index.bytes(), domain.as_bytes());
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(subkey.as_ref()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const PATIENT_KEY_WRAP_VERSION: u8 = 1;

fn patient_key_aad(patient_id: uuid::Uuid, key_id: &KeyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"chartroom/patient-key/v1");
    aad.extend_from_slice(patient_id.as_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// The device secret: 32 random bytes created at enrollment and kept only in the OS keyring.
#[derive(ZeroizeOnDrop)]
pub struct DeviceSecret {
    key: Key32,
}

impl DeviceSecret {
    /// A fresh random device secret (enrollment).
    pub fn generate() -> Self {
        DeviceSecret { key: Key32::random() }
    }

    /// Rebuilds the secret from the bytes the keyring returned.
    pub fn from_keyring_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadLength("device secret"))?;
        let arr = Zeroizing::new(arr);
        Ok(DeviceSecret { key: Key32::from_array(&arr) })
    }

    /// The bytes to hand to the keyring.
    pub fn keyring_bytes(&self) -> &[u8] {
        self.key.bytes()
    }

    /// The seed of this device's Ed25519 signing key (what it proves possession of to the server).
    /// Derived, so the keyring holds one secret per device, not two.
    pub fn signing_seed(&self) -> Zeroizing<[u8; 32]> {
        crate::kdf::hkdf_32(b"chartroom/device-signing/v1", self.key.bytes(), b"ed25519")
    }

    pub(crate) fn key(&self) -> &[u8; 32] {
        self.key.bytes()
    }
}

impl PartialEq for DeviceSecret {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        self.key.bytes().ct_eq(other.key.bytes()).into()
    }
}

/// One patient's key: seals that patient's PHI fields. Destroying it crypto-shreds the patient.
pub struct PatientKey {
    id: KeyId,
    key: Key32,
    /// The expanded key schedule (wiped on drop by the `aes` crate).
    cipher: aead::AeadKey,
}

/// Both fields that hold key material wipe themselves on drop.
impl ZeroizeOnDrop for PatientKey {}

impl PatientKey {
    /// A fresh random patient key with a fresh key id.
    pub fn generate() -> Self {
        Self::from_parts(KeyId::random(), Key32::random())
    }

    fn from_parts(id: KeyId, key: Key32) -> Self {
        let cipher = aead::AeadKey::new(key.bytes());
        PatientKey { id, key, cipher }
    }

    pub(crate) fn cipher(&self) -> &aead::AeadKey {
        &self.cipher
    }

    /// The public identifier of this key (stored beside every value it seals).
    pub fn id(&self) -> KeyId {
        self.id
    }
}

/// A user's password, wiped when dropped.
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(password: String) -> Self {
        Password(Zeroizing::new(password))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The password itself, for password-policy checks and for hashing into a PHC string on the
    /// server. Do not copy it anywhere else.
    pub fn expose_for_hashing(&self) -> &str {
        &self.0
    }

    /// Length in characters (for password-policy checks).
    pub fn char_count(&self) -> usize {
        self.0.chars().count()
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Password::new(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time proof that every key type wipes itself when dropped — which is what makes
    /// `UnlockedVault::lock()` (drop the store, and with it the data key and the patient keys) a wipe.
    fn wipes_on_drop<T: ZeroizeOnDrop>() {}

    // hipaa (a)(2)(iv): key material is wiped from memory when dropped
    #[test]
    fn key_types_zeroize_on_drop() {
        wipes_on_drop::<DataKey>();
        wipes_on_drop::<DeviceSecret>();
        wipes_on_drop::<PatientKey>();
        wipes_on_drop::<Key32>();
        wipes_on_drop::<Zeroizing<String>>();
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_label() {
        let (key, other) = (DataKey::generate(), DataKey::generate());
        let secret = [7u8; 32];
        let sealed = key.seal_secret(b"escrow-root", &secret);
        assert_eq!(*key.open_secret(b"escrow-root", &sealed).unwrap(), secret);
        assert!(other.open_secret(b"escrow-root", &sealed).is_err());
        assert!(key.open_secret(b"other-label", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(key.open_secret(b"escrow-root", &flipped).is_err());
    }

    #[test]
    fn explicit_zeroize_clears_key_bytes() {
        let mut k = Key32::random();
        assert_ne!(k.bytes(), &[0u8; 32]);
        k.zeroize();
        assert_eq!(k.bytes(), &[0u8; 32]);
    }

    #[test]
    fn sqlcipher_key_is_a_raw_hex_key() {
        let k = DataKey::generate();
        let v = k.sqlcipher_key_statement();
        assert!(v.starts_with("PRAGMA key = \"x'") && v.ends_with("'\";"), "{}", v.as_str());
        assert_eq!(v.len(), 16 + 64 + 3);
        assert!(v[16..80].chars().all(|c| c.is_ascii_hexdigit()));
        // Derivation is deterministic and depends on every input.
        let m = [7u8; 32];
        let a = DataKey::derive(b"s", &m, b"i").sqlcipher_key_statement();
        assert_eq!(a, DataKey::derive(b"s", &m, b"i").sqlcipher_key_statement());
        assert_ne!(a, DataKey::derive(b"s", &m, b"j").sqlcipher_key_statement());
        assert_ne!(a, DataKey::derive(b"t", &m, b"i").sqlcipher_key_statement());
    }

    // hipaa (c)(2): a patient key unwraps only for its own patient
    #[test]
    fn patient_key_unwraps_only_for_its_patient() {
        let dek = DataKey::generate();
        let key = PatientKey::generate();
        let (p, q) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let wrapped = dek.wrap_patient_key(p, &key);
        assert_eq!(dek.unwrap_patient_key(p, &wrapped).unwrap().id(), key.id());
        assert!(dek.unwrap_patient_key(q, &wrapped).is_err());
        assert!(DataKey::generate().unwrap_patient_key(p, &wrapped).is_err());
        assert!(dek.unwrap_patient_key(p, &wrapped[..10]).is_err());
    }

    #[test]
    fn blind_index_is_keyed_and_domain_separated() {
        let (a, b) = (DataKey::generate(), DataKey::generate());
        assert_eq!(a.blind_index("mrn", "M1"), a.blind_index("mrn", "M1"));
        assert_ne!(a.blind_index("mrn", "M1"), b.blind_index("mrn", "M1"));
        assert_ne!(a.blind_index("mrn", "M1"), a.blind_index("name", "M1"));
    }
}
