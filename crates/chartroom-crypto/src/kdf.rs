//! Argon2id password hashing parameters and the derivation of key-encryption keys.

use argon2::{Algorithm, Argon2, Params, Version};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{CryptoError, DeviceSecret, Password};

/// Argon2id parameters, stored beside each key slot so they can be raised later without breaking
/// existing slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    m_kib: u32,
    t: u32,
    p: u32,
}

impl KdfParams {
    /// DESIGN §3: m = 64 MiB, t = 3, p = 1.
    pub const DEFAULT: KdfParams = KdfParams { m_kib: 64 * 1024, t: 3, p: 1 };
    /// OWASP's floor for Argon2id (m = 19 MiB, t = 2, p = 1). Nothing weaker is accepted, not even in
    /// tests, so a slot file edited to cheapen guessing is refused.
    pub const MINIMUM: KdfParams = KdfParams { m_kib: 19 * 1024, t: 2, p: 1 };
    /// Upper bounds, so that a crafted slot file cannot make unlocking allocate or spin without end.
    const MAX_M_KIB: u32 = 2 * 1024 * 1024;
    const MAX_T: u32 = 64;
    const MAX_P: u32 = 16;

    /// Checked constructor: refuses anything below OWASP's floor or above sane maxima.
    pub fn new(m_kib: u32, t: u32, p: u32) -> Result<Self, CryptoError> {
        if !(Self::MINIMUM.m_kib..=Self::MAX_M_KIB).contains(&m_kib) {
            return Err(CryptoError::KdfParams(format!(
                "memory must be between {} and {} KiB, got {m_kib}",
                Self::MINIMUM.m_kib,
                Self::MAX_M_KIB
            )));
        }
        if !(Self::MINIMUM.t..=Self::MAX_T).contains(&t) {
            return Err(CryptoError::KdfParams(format!(
                "iterations must be between {} and {}, got {t}",
                Self::MINIMUM.t,
                Self::MAX_T
            )));
        }
        if p == 0 || p > Self::MAX_P {
            return Err(CryptoError::KdfParams(format!(
                "parallelism must be between 1 and {}, got {p}",
                Self::MAX_P
            )));
        }
        Ok(KdfParams { m_kib, t, p })
    }

    pub fn m_kib(&self) -> u32 {
        self.m_kib
    }
    pub fn t(&self) -> u32 {
        self.t
    }
    pub fn p(&self) -> u32 {
        self.p
    }

    /// Argon2id(password, salt) → 32 bytes.
    pub fn hash_password(
        &self,
        password: &Password,
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let params = Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(password.as_bytes(), salt, out.as_mut())
            .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
        Ok(out)
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `HKDF-SHA-256(salt = label, ikm = password hash ‖ device secret, info)`: the key-encryption key
/// needs both something the user knows and something only this device's keyring holds.
pub(crate) fn derive_kek(
    label: &[u8],
    password_hash: &[u8; 32],
    device: &DeviceSecret,
    info: &[u8],
) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(password_hash);
    ikm[32..].copy_from_slice(device.key());
    hkdf_32(label, ikm.as_ref(), info)
}

/// One 32-byte HKDF-SHA-256 output.
pub(crate) fn hkdf_32(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    if Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, out.as_mut()).is_err() {
        unreachable!("32-byte HKDF-SHA-256 output is always valid");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // hipaa (d): Argon2id parameters below the OWASP floor are refused
    #[test]
    fn params_below_owasp_floor_are_refused() {
        assert!(KdfParams::new(19 * 1024 - 1, 2, 1).is_err());
        assert!(KdfParams::new(19 * 1024, 1, 1).is_err());
        assert!(KdfParams::new(19 * 1024, 2, 0).is_err());
        assert!(KdfParams::new(u32::MAX, 3, 1).is_err());
        assert_eq!(KdfParams::new(64 * 1024, 3, 1), Ok(KdfParams::DEFAULT));
    }

    #[test]
    fn hash_depends_on_password_and_salt() {
        let p = KdfParams::MINIMUM;
        let a = p.hash_password(&Password::from("correct horse"), &[1; 16]).unwrap();
        let b = p.hash_password(&Password::from("correct horse"), &[1; 16]).unwrap();
        let c = p.hash_password(&Password::from("correct horsf"), &[1; 16]).unwrap();
        let d = p.hash_password(&Password::from("correct horse"), &[2; 16]).unwrap();
        assert_eq!(*a, *b);
        assert_ne!(*a, *c);
        assert_ne!(*a, *d);
    }
}
