//! AES-256-GCM with a fresh random 96-bit nonce per seal; the one place that touches the cipher.

use aes::Aes256;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::CryptoError;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// An initialised AES-256-GCM key, kept for keys that seal and open many values (patient keys), so
/// the key schedule and the GHASH key are computed once rather than per field. Both are wiped on drop
/// (`aes/zeroize`, `polyval/zeroize`).
pub(crate) struct AeadKey(Aes256Gcm);

impl AeadKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        AeadKey(Aes256Gcm::from(Aes256::new(key.into())))
    }

    fn gcm(&self) -> &Aes256Gcm {
        &self.0
    }

    /// Seals `plaintext`, appending `nonce ‖ ciphertext ‖ tag` to `out`.
    ///
    /// A random nonce is safe here: every key seals far fewer than 2^32 messages in its life (NIST
    /// SP 800-38D §8.3), and random nonces survive restarts and concurrent writers where a counter
    /// would not. Nonces come from the thread-local CSPRNG (ChaCha12, seeded and periodically
    /// reseeded from the OS, reseeded after fork): a system call per seal would double its cost.
    pub(crate) fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.reserve(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        // Encrypted in place in the output buffer: no intermediate copy of the plaintext. Encryption
        // of an in-memory message below 64 GiB cannot fail.
        match self.gcm().encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut out[start..]) {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => unreachable!("AES-GCM encryption of an in-memory buffer cannot fail"),
        }
    }

    /// Opens `nonce ‖ ciphertext ‖ tag` produced by [`AeadKey::seal_into`].
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("sealed value"));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut buf = Zeroizing::new(ct.to_vec());
        self.gcm()
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, &mut buf, Tag::from_slice(tag))
            .map_err(|_| CryptoError::OpenFailed)?;
        Ok(buf)
    }

    /// Opens a sealed 32-byte key.
    pub(crate) fn open_key(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let plain = self.open(aad, sealed)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(CryptoError::BadLength("wrapped key"));
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

/// One-shot seal under a raw key (key slots, recovery slots).
pub(crate) fn seal_into(key: &[u8; 32], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    AeadKey::new(key).seal_into(aad, plaintext, out)
}

/// One-shot open of a sealed 32-byte key under a raw key.
pub(crate) fn open_key(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    AeadKey::new(key).open_key(aad, sealed)
}
