//! Chartroom's cryptography: secret key types, AEAD envelopes bound to their place, Argon2id key
//! derivation, per-user key slots, the escrow slot (first online login) and the recovery slot.
//!
//! Architecture invariant: this crate does no IO (no files, no network, no keyring, no SQL). It turns
//! bytes into bytes. Randomness comes from the operating system RNG (`OsRng`); every secret lives in a
//! zeroize-on-drop type whose `Debug` prints `***`.

#![forbid(unsafe_code)]

mod aead;
pub mod envelope;
mod error;
pub mod escrow;
pub mod fields;
pub mod kdf;
pub mod recovery;
pub mod secret;
pub mod slot;
pub mod stream;

pub use envelope::{FieldPlace, KeyId};
pub use error::CryptoError;
pub use escrow::{escrow_key_for, EscrowSlot};
pub use kdf::KdfParams;
pub use recovery::{RecoveryKeyPair, RecoveryPublicKey, RecoverySlot};
pub use secret::{DataKey, DeviceSecret, Password, PatientKey};
pub use slot::KeySlot;
