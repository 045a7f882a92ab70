//! Device administration (`chartroom-server device …`): one-time, expiring enrollment tokens (only
//! their SHA-256 is stored), revocation, and keyring-loss recovery: an administrator's approval is a
//! one-time recovery token bound to one enrolled device, with which the station gets its data key
//! back (opened from its recovery slot with the server's recovery key) under a new device key.

use std::time::Duration;

use chartroom_crypto::{RecoveryKeyPair, RecoveryPublicKey, RecoverySlot};
use chartroom_domain::validate::check_name;
use chartroom_domain::{DeviceProfile, Timestamp};
use chartroom_protocol::RecoverResponse;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::auth::Origin;
use crate::storage::{DeviceRecord, Storage};
use crate::ServerError;

/// How long an enrollment token is valid by default.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a recovery token is valid by default: long enough to walk to the station, short
/// enough that a token written on a sticky note is soon useless.
pub const DEFAULT_RECOVERY_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The longest a recovery token may be made to live.
pub const MAX_RECOVERY_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Issues a one-time enrollment token for device `name` and returns it; it is shown once and only
/// its hash is stored. Re-issuing for a device that has not enrolled yet replaces the old token.
pub fn issue_token(
    storage: &dyn Storage,
    name: &str,
    profile: DeviceProfile,
    units: Vec<String>,
    lifetime: Duration,
    now: Timestamp,
) -> Result<Zeroizing<String>, ServerError> {
    let name = name.trim();
    check_name("name", name, 1, 64)?;
    let token = crate::auth::random_token("crt1_");
    let record = DeviceRecord {
        id: Uuid::now_v7(),
        name: name.to_owned(),
        profile,
        units,
        token_expires_at: Some(now.plus(lifetime)),
        enrolled_at: None,
        revoked_at: None,
        created_at: now,
    };
    storage.put_device_token(&record, &crate::auth::sha256(&token))?;
    Ok(token)
}

/// Approves the recovery of enrolled device `name` (its OS keyring lost the device secret): issues a
/// one-time recovery token bound to that device and returns it with the device; only its hash is
/// stored, and a new approval replaces an unused earlier one.
pub fn approve_recovery(
    storage: &dyn Storage,
    name: &str,
    lifetime: Duration,
    now: Timestamp,
) -> Result<(DeviceRecord, Zeroizing<String>), ServerError> {
    let lifetime = lifetime.min(MAX_RECOVERY_TOKEN_LIFETIME);
    let token = crate::auth::random_token("crv1_");
    let device = storage.put_recovery_token(name.trim(), &crate::auth::sha256(&token), now.plus(lifetime))?;
    Ok((device, token))
}

/// A station's recovery request, parsed (`chartroom_protocol::RecoverRequest`).
pub struct RecoveryClaim {
    pub device_id: Uuid,
    pub token: Zeroizing<String>,
    pub slot: RecoverySlot,
    /// The new Ed25519 device key.
    pub public_key: [u8; 32],
    /// Where the data key goes back to.
    pub ephemeral: RecoveryPublicKey,
}

impl std::fmt::Debug for RecoveryClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryClaim").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

/// Recovers a device: checks the one-time token (bound to this device, unexpired, device not
/// revoked), opens the recovery slot with the server's recovery key, seals the data key to the
/// station's ephemeral key, and only then uses the token and registers the new device key (the
/// old one stops working). A slot that does not open leaves the token unused. Audited either way;
/// a success also as a key access.
pub fn recover(
    storage: &dyn Storage,
    keys: &RecoveryKeyPair,
    escrow_root: &[u8; 32],
    claim: &RecoveryClaim,
    now: Timestamp,
    origin: &Origin,
) -> Result<RecoverResponse, ServerError> {
    let result = recover_inner(storage, keys, escrow_root, claim, now);
    let outcome = result.as_ref().map_or_else(ServerError::code, |_| "ok");
    let action = if result.is_ok() { "device_recover" } else { "device_recover_failed" };
    let mut events = vec![crate::audit::event(now, action, "device", outcome, origin)];
    if result.is_ok() {
        events.push(crate::audit::event(now, "key_access", "recovery_slot", "ok", origin));
    }
    for e in &mut events {
        e.origin_device = Some(claim.device_id);
        e.resource_id = Some(claim.device_id.to_string());
    }
    storage.append_events(&events)?;
    result
}

fn recover_inner(
    storage: &dyn Storage,
    keys: &RecoveryKeyPair,
    escrow_root: &[u8; 32],
    claim: &RecoveryClaim,
    now: Timestamp,
) -> Result<RecoverResponse, ServerError> {
    let token_hash = crate::auth::sha256(&claim.token);
    // The token first: without an administrator's approval the server opens nothing (a copied
    // profile must not turn it into a decryption oracle).
    if !storage.check_recovery_token(claim.device_id, &token_hash, now)? {
        return Err(ServerError::InvalidRecoveryToken);
    }
    if claim.slot.device_id() != claim.device_id {
        return Err(ServerError::RecoverySlotInvalid);
    }
    let dek = claim.slot.open(keys).map_err(|_| ServerError::RecoverySlotInvalid)?;
    let sealed = RecoverySlot::seal(&dek, &claim.ephemeral, claim.device_id)
        .map_err(|_| ServerError::RecoverySlotInvalid)?;
    drop(dek);
    let device = storage.recover_device(claim.device_id, &token_hash, &claim.public_key, now)?;
    Ok(RecoverResponse {
        device_id: device.id.to_string(),
        name: device.name,
        sealed_data_key: crate::hex::encode(sealed.as_bytes()),
        escrow_key: crate::hex::encode(chartroom_crypto::escrow_key_for(escrow_root, device.id).as_ref()),
    })
}
