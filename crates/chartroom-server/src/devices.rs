//! Device administration (`chartroom-server device …`): one-time, expiring enrollment tokens (only
//! their SHA-256 is stored) and revocation.

use std::time::Duration;

use chartroom_domain::validate::check_name;
use chartroom_domain::{DeviceProfile, Timestamp};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::storage::{DeviceRecord, Storage};
use crate::ServerError;

/// How long an enrollment token is valid by default.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

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
