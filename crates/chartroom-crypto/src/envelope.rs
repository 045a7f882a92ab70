//! Field envelopes: a PHI value sealed with its patient's key and bound to its place.
//!
//! Wire format (version 1): `0x01 ‖ key id (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`.
//! The AAD is `"chartroom/field/v1" ‖ version ‖ key id ‖ patient id ‖ record id ‖ len(field) ‖ field`,
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
    fn aad(&self, key_id: &KeyId) -> Vec<u8> {
        let field = self.field.as_bytes();
        let mut aad = Vec::with_capacity(18 + 1 + 16 + 32 + 2 + field.len());
        aad.extend_from_slice(b"chartroom/field/v1");
        aad.push(ENVELOPE_VERSION);
        aad.extend_from_slice(key_id.as_bytes());
        aad.extend_from_slice(self.patient_id.as_bytes());
        aad.extend_from_slice(self.record_id.as_bytes());
        // Field names are short identifiers chosen by code; the length prefix keeps the encoding
        // unambiguous all the same.
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field);
        aad
    }
}

impl PatientKey {
    /// Seals `plaintext` for `place`.
    pub fn seal(&self, place: &FieldPlace<'_>, plaintext: &[u8]) -> Vec<u8> {
        let id = self.id();
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(id.as_bytes());
        self.cipher().seal_into(&place.aad(&id), plaintext, &mut out);
        out
    }

    /// Opens a value sealed by [`PatientKey::seal`] at the same place with this key.
    pub fn open(&self, place: &FieldPlace<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let key_id = envelope_key_id(sealed)?;
        if key_id != self.id() {
            return Err(CryptoError::OpenFailed);
        }
        self.cipher().open(&place.aad(&key_id), &sealed[HEADER_LEN..])
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
        let sealed = key.seal(&place(p, r, "note.body"), b"synthetic note text");
        assert_eq!(&key.open(&place(p, r, "note.body"), &sealed).unwrap()[..], b"synthetic note text");
        // The plaintext does not appear in the envelope.
        assert!(!sealed.windows(9).any(|w| w == b"synthetic"));
    }

    #[test]
    fn moving_a_sealed_value_fails_to_open() {
        let key = PatientKey::generate();
        let (p, r) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(&place(p, r, "patient.name"), b"DOE, JANE");
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
    fn relabelled_key_id_fails_to_open() {
        let key = PatientKey::generate();
        let (p, r) = (Uuid::new_v4(), Uuid::new_v4());
        let mut sealed = key.seal(&place(p, r, "f"), b"x");
        sealed[1] ^= 1;
        assert!(key.open(&place(p, r, "f"), &sealed).is_err());
    }

    #[test]
    fn nonces_are_unique_over_a_million_seals() {
        let key = PatientKey::generate();
        let pl = place(Uuid::new_v4(), Uuid::new_v4(), "observation.body");
        let mut seen = HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            let sealed = key.seal(&pl, b"72");
            let nonce: [u8; 12] = sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN].try_into().unwrap();
            assert!(seen.insert(nonce), "nonce reused");
        }
        assert_eq!(seen.len(), 1_000_000);
    }

    proptest! {
        #[test]
        fn any_single_byte_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<usize>(), bit in 0u8..8) {
            let key = PatientKey::generate();
            let pl = place(Uuid::nil(), Uuid::nil(), "f");
            let mut sealed = key.seal(&pl, &data);
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
