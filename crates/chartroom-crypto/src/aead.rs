//! AES-256-GCM with a fresh random 96-bit nonce per seal; the one place that touches the cipher.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::CryptoError;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// Seals `plaintext` under `key`, appending `nonce ‖ ciphertext ‖ tag` to `out`.
///
/// A random nonce is safe here: every key seals far fewer than 2^32 messages in its life (NIST SP
/// 800-38D §8.3), and random nonces survive restarts and concurrent writers where a counter would not.
pub(crate) fn seal_into(key: &[u8; 32], aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    // Encryption with a valid key and a message below 64 GiB cannot fail.
    let ct = match cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }) {
        Ok(ct) => ct,
        Err(_) => unreachable!("AES-GCM encryption of an in-memory buffer cannot fail"),
    };
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
}

/// Opens `nonce ‖ ciphertext ‖ tag` produced by [`seal_into`].
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed("sealed value"));
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::OpenFailed)
}

/// Opens a sealed 32-byte key.
pub(crate) fn open_key(
    key: &[u8; 32],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let plain = open(key, aad, sealed)?;
    let mut out = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(CryptoError::BadLength("wrapped key"));
    }
    out.copy_from_slice(&plain);
    Ok(out)
}
