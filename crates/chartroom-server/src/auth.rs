//! Logins, tokens and device proof of possession.
//!
//! A device proves it holds the Ed25519 key it enrolled with by signing: a one-time server nonce to
//! log in or refresh, and every API request (method, path, time and access token). So an access or
//! refresh token copied off a device is useless anywhere else. Access tokens live at most ten
//! minutes; refresh tokens are single-use (each refresh rotates them; replaying an exchanged one ends
//! the session) and die with the user's account or the device's enrollment. Failed logins are
//! throttled per username and per device and every failure goes to the event log.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use chartroom_domain::{DeviceProfile, LockPolicy, LoginThrottle, Throttled, Timestamp};
use chartroom_protocol::{
    login_proof_message, refresh_proof_message, request_proof_message, ChallengeResponse, LoginRequest,
    RefreshRequest, TokenResponse, UserInfo,
};
use ed25519_dalek::{Signature, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::storage::{NewSession, Refreshed, SessionOwner, SessionTokens, Storage, UserRecord};
use crate::{hex, ServerError};

/// Access tokens expire after this (DESIGN §7: at most ten minutes).
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Refresh tokens expire after this: the absolute session limit of DESIGN §4.
pub const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a login nonce may wait to be signed and used.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(60);
/// How far a request proof's timestamp may be from the server's clock.
pub const PROOF_MAX_SKEW: Duration = Duration::from_secs(120);
/// Failed logins: lockout after 10 failures within 15 minutes, per username and per device.
pub const MAX_FAILED_LOGINS: u32 = 10;
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// Why authentication failed. Each has a stable code; none says which part of a credential was wrong.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("this device is not enrolled, or its enrollment was revoked")]
    UnknownDevice,
    #[error("the device's proof of possession is missing or invalid")]
    BadProof,
    #[error("the username or password is wrong")]
    BadCredentials,
    #[error("this account is disabled")]
    UserDisabled,
    #[error("{0}")]
    Throttled(Throttled),
    #[error("the access token is missing, expired or revoked")]
    BadToken,
    #[error("the refresh token is invalid, expired, or was already used")]
    BadRefresh,
    #[error(transparent)]
    Server(#[from] ServerError),
}

impl AuthFailure {
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::UnknownDevice => "device.unknown",
            AuthFailure::BadProof => "auth.bad_proof",
            AuthFailure::BadCredentials => "auth.invalid_credentials",
            AuthFailure::UserDisabled => "auth.user_disabled",
            AuthFailure::Throttled(Throttled::Delay { .. }) => "auth.throttled",
            AuthFailure::Throttled(Throttled::LockedOut { .. }) => "auth.locked_out",
            AuthFailure::BadToken => "auth.invalid_token",
            AuthFailure::BadRefresh => "auth.invalid_refresh",
            AuthFailure::Server(e) => e.code(),
        }
    }
}

/// Where a request came from, for the event log.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub remote: Option<String>,
}

/// Issues a one-time nonce for an enrolled device to sign.
pub fn challenge(
    storage: &dyn Storage,
    device_id: &str,
    now: Timestamp,
) -> Result<ChallengeResponse, AuthFailure> {
    let device = enrolled(storage, device_id)?;
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let nonce = hex::encode(&nonce);
    storage.put_nonce(&sha256(&nonce), device.0, now.plus(NONCE_LIFETIME))?;
    Ok(ChallengeResponse { nonce, expires_in_s: NONCE_LIFETIME.as_secs() })
}

/// Logs a user in from a device. Throttling is checked before the (expensive) password hash, every
/// failure is recorded, and the same answer is given for an unknown user and a wrong password.
pub fn login(
    storage: &dyn Storage,
    escrow_root: &[u8; 32],
    req: &LoginRequest,
    now: Timestamp,
    origin: &Origin,
) -> Result<TokenResponse, AuthFailure> {
    let result = login_inner(storage, escrow_root, req, now);
    let (user_id, device_id) = match &result {
        Ok((t, device)) => (t.user.id.parse().ok(), Some(*device)),
        Err(_) => (None, req.device_id.parse().ok()),
    };
    let action = if result.is_ok() { "login" } else { "login_failed" };
    let mut event = crate::audit::event(
        now,
        action,
        "session",
        result.as_ref().map_or_else(|e| e.code(), |_| "ok"),
        origin,
    );
    event.username = Some(req.username.chars().take(64).collect());
    event.user_id = user_id;
    event.origin_device = device_id;
    storage.append_events(&[event])?;
    result.map(|(t, _)| t)
}

fn login_inner(
    storage: &dyn Storage,
    escrow_root: &[u8; 32],
    req: &LoginRequest,
    now: Timestamp,
) -> Result<(TokenResponse, Uuid), AuthFailure> {
    let (device_id, key) = enrolled(storage, &req.device_id)?;
    verify(&key, &login_proof_message(&req.device_id, &req.nonce, &req.username), &req.signature)?;
    if !storage.take_nonce(&sha256(&req.nonce), device_id, now)? {
        return Err(AuthFailure::BadProof);
    }
    let user_key = format!("user:{}", req.username.trim().to_lowercase());
    let device_key = format!("device:{device_id}");
    for key in [&user_key, &device_key] {
        admit_attempt(storage, key, now)?;
    }
    let account = storage.user_for_login(&req.username)?;
    // An unknown user costs the same Argon2id run as a known one: response time does not reveal
    // which usernames exist.
    let hash: &str = match &account {
        Some(a) => &a.password_hash,
        None => dummy_hash(),
    };
    let password_ok = PasswordHash::new(hash)
        .map(|h| argon2::Argon2::default().verify_password(req.password.as_bytes(), &h).is_ok())
        .unwrap_or(false);
    // A failure was counted when the attempt was admitted; only success clears it.
    let Some(account) = account.filter(|_| password_ok) else {
        return Err(AuthFailure::BadCredentials);
    };
    if account.record.disabled {
        return Err(AuthFailure::UserDisabled);
    }
    for key in [&user_key, &device_key] {
        storage.update_throttle(key, &mut |t| t.record_success(key))?;
    }
    let (tokens, access, refresh) = new_tokens(now);
    storage.create_session(&NewSession {
        id: Uuid::now_v7(),
        user_id: account.record.id,
        device_id,
        tokens,
        created_at: now,
    })?;
    let device = storage.enrolled_device(device_id)?.ok_or(AuthFailure::UnknownDevice)?;
    let may_open = may_read_on_device(&account.record, &device.record);
    let mut response = token_response(access, refresh, user_info(account.record));
    // The key that opens the station's data goes only to users who may read patients there: an
    // administrator, or a clinician of another ward, logs in but gets no key.
    if may_open {
        response.escrow_key = hex::encode(chartroom_crypto::escrow_key_for(escrow_root, device_id).as_ref());
    }
    Ok((response, device_id))
}

/// Whether `user` may read patient demographics on any unit this device holds.
fn may_read_on_device(user: &crate::storage::UserRecord, device: &crate::storage::DeviceRecord) -> bool {
    use chartroom_domain::access::{decide, Action, ChartSection, Principal, Target};
    let who = Principal { role: user.role, units: user.units.clone() };
    let units: Vec<&str> = if device.units.is_empty() {
        user.units.iter().map(String::as_str).collect()
    } else {
        device.units.iter().map(String::as_str).collect()
    };
    units.iter().any(|unit| {
        decide(&who, Action::Read(ChartSection::Demographics), Target::Patient { unit, break_glass: false })
            .is_ok()
    })
}

/// Exchanges a refresh token, presented by the device it was issued to, for new tokens.
pub fn refresh(
    storage: &dyn Storage,
    req: &RefreshRequest,
    now: Timestamp,
    origin: &Origin,
) -> Result<TokenResponse, AuthFailure> {
    let result = refresh_inner(storage, req, now);
    let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "ok");
    let mut event = crate::audit::event(now, "token_refresh", "session", outcome, origin);
    event.username = result.as_ref().ok().map(|t| t.user.username.clone());
    event.user_id = result.as_ref().ok().and_then(|t| t.user.id.parse().ok());
    event.origin_device = req.device_id.parse().ok();
    storage.append_events(&[event])?;
    result
}

fn refresh_inner(
    storage: &dyn Storage,
    req: &RefreshRequest,
    now: Timestamp,
) -> Result<TokenResponse, AuthFailure> {
    let (device_id, key) = enrolled(storage, &req.device_id)?;
    verify(&key, &refresh_proof_message(&req.device_id, &req.nonce, &req.refresh_token), &req.signature)?;
    if !storage.take_nonce(&sha256(&req.nonce), device_id, now)? {
        return Err(AuthFailure::BadProof);
    }
    let (tokens, access, refresh) = new_tokens(now);
    match storage.rotate_refresh(&sha256(&req.refresh_token), device_id, &tokens, now)? {
        Refreshed::Rotated(owner) => Ok(token_response(access, refresh, user_info(owner.user))),
        Refreshed::Reused | Refreshed::Invalid => Err(AuthFailure::BadRefresh),
    }
}

/// Checks an API request: a live access token, and a fresh signature by the device the token was
/// issued to over this very request.
pub fn authenticate(
    storage: &dyn Storage,
    authorization: Option<&str>,
    proof: Option<&str>,
    method: &str,
    path_and_query: &str,
    now: Timestamp,
) -> Result<SessionOwner, AuthFailure> {
    let token = authorization.and_then(|h| h.strip_prefix("Bearer ")).ok_or(AuthFailure::BadToken)?.trim();
    let owner = storage.session_by_access(&sha256(token), now)?.ok_or(AuthFailure::BadToken)?;
    let (at_ms, signature) = parse_proof(proof.ok_or(AuthFailure::BadProof)?)?;
    if Timestamp(at_ms).since(now).max(now.since(Timestamp(at_ms))) > PROOF_MAX_SKEW {
        return Err(AuthFailure::BadProof);
    }
    let key = VerifyingKey::from_bytes(&owner.device.public_key).map_err(|_| AuthFailure::BadProof)?;
    verify(&key, &request_proof_message(method, path_and_query, at_ms, token), signature)?;
    Ok(owner)
}

/// `t=<ms>,sig=<hex>`.
fn parse_proof(header: &str) -> Result<(i64, &str), AuthFailure> {
    let (t, sig) = header.split_once(',').ok_or(AuthFailure::BadProof)?;
    let at = t.trim().strip_prefix("t=").and_then(|v| v.parse().ok()).ok_or(AuthFailure::BadProof)?;
    let sig = sig.trim().strip_prefix("sig=").ok_or(AuthFailure::BadProof)?;
    Ok((at, sig))
}

/// An enrolled, unrevoked device and its key.
fn enrolled(storage: &dyn Storage, device_id: &str) -> Result<(Uuid, VerifyingKey), AuthFailure> {
    let id: Uuid = device_id.parse().map_err(|_| AuthFailure::UnknownDevice)?;
    let device = storage.enrolled_device(id)?.ok_or(AuthFailure::UnknownDevice)?;
    let key = VerifyingKey::from_bytes(&device.public_key).map_err(|_| ServerError::Damaged("server.db"))?;
    Ok((id, key))
}

fn verify(key: &VerifyingKey, message: &[u8], signature_hex: &str) -> Result<(), AuthFailure> {
    let bytes = hex::decode::<64>(signature_hex).ok_or(AuthFailure::BadProof)?;
    key.verify_strict(message, &Signature::from_bytes(&bytes)).map_err(|_| AuthFailure::BadProof)?;
    Ok(())
}

/// Admits an attempt and, in the same transaction, counts it as a failure until it succeeds: parallel
/// attempts each count before any of them reaches the (slow) password check, so a burst cannot get
/// more guesses than the throttle allows.
fn admit_attempt(storage: &dyn Storage, key: &str, now: Timestamp) -> Result<(), AuthFailure> {
    let mut verdict = Ok(());
    storage.update_throttle(key, &mut |t: &mut LoginThrottle| {
        verdict = t.check(key, now, &throttle_policy());
        if verdict.is_ok() {
            t.record_failure(key, now, &throttle_policy());
        }
    })?;
    verdict.map_err(AuthFailure::Throttled)
}

/// The server's throttle: the station policy's growing delays, with the lockout numbers.
fn throttle_policy() -> LockPolicy {
    LockPolicy::defaults(DeviceProfile::Station)
        .with_lockout(MAX_FAILED_LOGINS, LOCKOUT)
        .unwrap_or_else(|_| LockPolicy::defaults(DeviceProfile::Station))
}

/// Unlocks a username locked out by failed logins (admin action; `user enable` calls it).
pub fn unlock_user(storage: &dyn Storage, username: &str) -> Result<(), ServerError> {
    storage.clear_throttle(&format!("user:{}", username.trim().to_lowercase()))
}

/// A PHC hash of a random password, verified against when the username is unknown.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut pw = Zeroizing::new([0u8; 16]);
        rand::rngs::OsRng.fill_bytes(pw.as_mut());
        crate::users::hash_password(&chartroom_crypto::Password::new(hex::encode(pw.as_ref())))
            .unwrap_or_default()
    })
}

fn new_tokens(now: Timestamp) -> (SessionTokens, Zeroizing<String>, Zeroizing<String>) {
    let access = random_token("cra1_");
    let refresh = random_token("crr1_");
    let tokens = SessionTokens {
        access_hash: sha256(&access),
        access_expires_at: now.plus(ACCESS_TOKEN_LIFETIME),
        refresh_hash: sha256(&refresh),
        refresh_expires_at: now.plus(REFRESH_TOKEN_LIFETIME),
    };
    (tokens, access, refresh)
}

/// What a client learns about the logged-in user.
pub fn user_info(u: UserRecord) -> UserInfo {
    UserInfo { id: u.id.to_string(), username: u.username, role: u.role, units: u.units }
}

fn token_response(access: Zeroizing<String>, refresh: Zeroizing<String>, user: UserInfo) -> TokenResponse {
    TokenResponse {
        access_token: access.as_str().to_owned(),
        access_expires_in_s: ACCESS_TOKEN_LIFETIME.as_secs(),
        refresh_token: refresh.as_str().to_owned(),
        refresh_expires_in_s: REFRESH_TOKEN_LIFETIME.as_secs(),
        user,
        escrow_key: String::new(),
        recovery_public_key: String::new(),
    }
}

/// A random bearer secret with a recognisable prefix (so leaked tokens can be found by scanners).
pub fn random_token(prefix: &str) -> Zeroizing<String> {
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    Zeroizing::new(format!("{prefix}{}", hex::encode(raw.as_ref())))
}

/// The stored form of a token or nonce.
pub fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.trim().as_bytes()).into()
}
