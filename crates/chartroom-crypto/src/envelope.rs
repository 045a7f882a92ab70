//! Field envelopes: a PHI value sealed with its patient's key and bound to its place.
//!
//! Wire format (version 1): `0x01 ‖ key id (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
//! The AAD is `"chartroom/field/v1" ‖ version ‖ key id ‖ patient id ‖ record id ‖ len(field) (1 byte) ‖ field`,
//! so a sealed value copied to another patient, record or field — or re-labelled with another key id —
//! fails to open instead of showing the wrong value.

use rand::rngs::OsRng;
use rand::RngCore;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::aead::{NONCE_LEN, TAG_LEN};
use crate::{CryptoError, PatientKey};

/// Current envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 16;

/// Identifies one key (public; stored beside what it seals).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct KeyId([u8; 16]);

impl KeyId {
    pub(crate) fn random() -> Self {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        KeyId(id)
    }

    /// Parses a key id from its 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes.try_into().map(KeyId).map_err(|_| CryptoError::Malformed("key id"))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// Where a sealed value lives: it opens only at the same place.
#[derive(Clone, Copy, Debug)]
pub struct FieldPlace<'a> {
    pub patient_id: Uuid,
    pub record_id: Uuid,
    /// Table and column, e.g. `"observation.body"`.
    pub field: &'a str,
}

impl FieldPlace<'_> {
    /// Writes the AAD into `buf` and returns it. Field names are short identifiers chosen by code, so
    /// the AAD fits a stack buffer (no allocation per seal); a name longer than [`MAX_FIELD_LEN`] is
    /// refused.
    fn aad<'b>(&self, key_id: &KeyId, buf: &'b mut [u8; AAD_CAPACITY]) -> Result<&'b [u8], CryptoError> {
        let field = self.field.as_bytes();
        if field.len() > MAX_FIELD_LEN {
            return Err(CryptoError::Malformed("field name"));
        }
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            buf[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        put(AAD_LABEL);
        put(&[ENVELOPE_VERSION]);
        put(key_id.as_bytes());
        put(self.patient_id.as_bytes());
        put(self.record_id.as_bytes());
        // The length prefix keeps the encoding unambiguous. MAX_FIELD_LEN < 256, so it fits a byte.
        put(&[u8::try_from(field.len()).unwrap_or(u8::MAX)]);
        put(field);
        Ok(&buf[..n])
    }
}

const AAD_LABEL: &[u8] = b"chartroom/field/v1";
/// Longest field name (table and column) that can be bound into an envelope.
pub const MAX_FIELD_LEN: usize = 64;
const AAD_CAPACITY: usize = 18 + 1 + 16 + 16 + 16 + 1 + MAX_FIELD_LEN;

impl PatientKey {
    /// Seals `plaintext` for `place`. Fails only for a field name longer than [`MAX_FIELD_LEN`].
    pub fn seal(&self, place: &FieldPlace<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let id = self.id();
        let mut aad = [0u8; AAD_CAPACITY];
        let aad = place.aad(&id, &mut aad)?;
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(id.as_bytes());
        self.cipher().seal_into(aad, plaintext, &mut out);
        Ok(out)
    }

    /// Opens a value sealed by [`PatientKey::seal`] at the same place with this key.
    pub fn open(&self, place: &FieldPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key_id = envelope_key_id(sealed)?;
        if key_id != self.id() {
            return Err(CryptoError::OpenFailed);
        }
        let mut aad = [0u8; AAD_CAPACITY];
        self.cipher().open(place.aad(&key_id, &mut aad)?, &sealed[HEADER_LEN..])
    }
}

/// The key id named in a sealed envelope (checks the version).
pub fn envelope_key_id(sealed: &[u8]) -> Result<KeyId, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed("envelope"))?;
    if version != ENVELOPE_VERSION {
        return Err(CryptoError::UnsupportedVersion { what: "envelope", version });
    }
    if rest.len() < 16 + NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed("envelope"));
    }
    KeyId::from_slice(&rest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn place(p: Uuid, r: Uuid, field: &str) -> FieldPlace<'_> {
        FieldPlace { patient_id: p, record_id: r, field }
    }

    #[test]
    fn seal_open_round_trip() {
        let key = PatientKey::generate();
        let (p, r) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(&place(p, r, "note.body"), b"synthetic note text").unwrap();
        assert_eq!(&key.open(&place(p, r, "note.body"), &sealed).unwrap()[..], b"synthetic note text");
        // The plaintext does not appear in the envelope.
        assert!(!sealed.windows(9).any(|w| w == b"synthetic"));
    }

    // hipaa (c)(2): a sealed value moved to another patient, record or field fails to open
    #[test]
    fn moving_a_sealed_value_fails_to_open() {
        let key = PatientKey::generate();
        let (p, r) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(&place(p, r, "patient.name"), b"DOE, JANE").unwrap();
        assert_eq!(
            key.open(&place(Uuid::new_v4(), r, "patient.name"), &sealed),
            Err(CryptoError::OpenFailed)
        );
        assert_eq!(
            key.open(&place(p, Uuid::new_v4(), "patient.name"), &sealed),
            Err(CryptoError::OpenFailed)
        );
        assert_eq!(key.open(&place(p, r, "patient.mrn"), &sealed), Err(CryptoError::OpenFailed));
        let other = PatientKey::generate();
        assert_eq!(other.open(&place(p, r, "patient.name"), &sealed), Err(CryptoError::OpenFailed));
    }

    #[test]
    fn overlong_field_names_are_refused() {
        let key = PatientKey::generate();
        let long = "f".repeat(MAX_FIELD_LEN + 1);
        assert_eq!(
            key.seal(&place(Uuid::nil(), Uuid::nil(), &long), b"x"),
            Err(CryptoError::Malformed("field name"))
        );
        let ok = "f".repeat(MAX_FIELD_LEN);
        let sealed = key.seal(&place(Uuid::nil(), Uuid::nil(), &ok), b"x").unwrap();
        assert_eq!(&key.open(&place(Uuid::nil(), Uuid::nil(), &ok), &sealed).unwrap()[..], b"x");
    }

    #[test]
    fn relabelled_key_id_fails_to_open() {
        let key = PatientKey::generate();
        let (p, r) = (Uuid::new_v4(), Uuid::new_v4());
        let mut sealed = key.seal(&place(p, r, "f"), b"x").unwrap();
        sealed[1] ^= 1;
        assert!(key.open(&place(p, r, "f"), &sealed).is_err());
    }

    #[test]
    fn nonces_are_unique_over_a_million_seals() {
        let key = PatientKey::generate();
        let pl = place(Uuid::new_v4(), Uuid::new_v4(), "observation.body");
        let mut seen = HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let sealed = key.seal(&pl, b"72").unwrap();
            let nonce: [u8; 12] = sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN].try_into().unwrap();
            assert!(seen.insert(nonce), "nonce reused");
        }
        assert_eq!(seen.len(), 1_000_000);
    }

    proptest! {
        // hipaa (c)(2): any single byte flip of a sealed field is detected
        #[test]
        fn any_single_byte_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<usize>(), bit in 0u8..8) {
            let key = PatientKey::generate();
            let pl = place(Uuid::nil(), Uuid::nil(), "f");
            let mut sealed = key.seal(&pl, &data).unwrap();
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(key.open(&pl, &sealed).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let key = PatientKey::generate();
            let _ = key.open(&place(Uuid::nil(), Uuid::nil(), "f"), &bytes);
        }
    }
}
