//! Account administration (`chartroom-server user …`): unique usernames, the password policy, and
//! Argon2id password hashes in PHC format.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chartroom_crypto::Password;
use chartroom_domain::password::check_password;
use chartroom_domain::validate::check_name;
use chartroom_domain::{Role, Timestamp};
use uuid::Uuid;

use crate::storage::{NewUser, Storage, UserRecord};
use crate::ServerError;

/// Creates an account. The username is checked (2–64 of letters, digits, `.`, `_`, `-`), the
/// password against the policy, and only its Argon2id hash is stored.
pub fn add_user(
    storage: &dyn Storage,
    username: &str,
    role: Role,
    units: Vec<String>,
    password: &Password,
    now: Timestamp,
) -> Result<UserRecord, ServerError> {
    let username = username.trim();
    check_name("username", username, 2, 64)?;
    check_password(username, password.expose_for_hashing())?;
    let record = UserRecord {
        id: Uuid::now_v7(),
        username: username.to_owned(),
        role,
        units,
        disabled: false,
        created_at: now,
    };
    let password_hash = hash_password(password)?;
    storage.create_user(&NewUser { record: record.clone(), password_hash })?;
    Ok(record)
}

/// Argon2id (m = 64 MiB, t = 3, p = 1) in PHC string format, with a random salt.
pub(crate) fn hash_password(password: &Password) -> Result<String, ServerError> {
    let params =
        Params::new(64 * 1024, 3, 1, None).map_err(|_| ServerError::Internal("argon2 parameters"))?;
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.expose_for_hashing().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| ServerError::Internal("password hashing failed"))
}
