//! Handlers for health, device enrollment, login, token refresh and logout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartroom_protocol::{
    ApiError, ChallengeRequest, ChallengeResponse, EnrollRequest, EnrollResponse, Health, HealthStatus,
    LoginRequest, RecoverRequest, RecoverResponse, RefreshRequest, TokenResponse, UserInfo, API_VERSION,
};

use super::{failure, on_blocking_pool, server_failure, AppState, Body, Caller, Remote};
use crate::ServerError;

/// Answers without authentication and reveals nothing about users or patients.
#[utoipa::path(get, path = "/health", tag = "server", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        api_version: API_VERSION,
        server_version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// A file of the signed release stations may update to (`manifest.json`, its `.minisig`, the
/// packages it lists). Public: releases hold no PHI, and stations verify every signature against
/// the release key built into them.
#[utoipa::path(get, path = "/v1/updates/{file}", tag = "server",
    params(("file" = String, Path, description = "a release file name (letters, digits, `._-+~`)")),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ApiError, description = "`update.not_found`: no such file in the published release"),
    ))]
pub async fn update_file(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    match crate::updates::open(&state.updates, &file) {
        Ok(Some((file, len))) => {
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            (
                [
                    (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (axum::http::header::CONTENT_LENGTH, len.to_string()),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Ok(None) => {
            failure(StatusCode::NOT_FOUND, "update.not_found", "no such file in the published release")
        }
        Err(e) => server_failure(&e),
    }
}

/// Registers a device's Ed25519 key with a one-time enrollment token.
#[utoipa::path(post, path = "/v1/devices/enroll", tag = "devices", request_body = EnrollRequest, responses(
    (status = 200, body = EnrollResponse),
    (status = 400, body = ApiError, description = "malformed body or key"),
    (status = 401, body = ApiError, description = "`device.invalid_token`: unknown, used, expired or revoked token"),
))]
pub async fn enroll(
    State(state): State<AppState>,
    Remote(origin): Remote,
    body: Body<EnrollRequest>,
) -> Response {
    let Body(req) = body;
    let Some(public_key) = crate::hex::decode::<32>(&req.device_public_key)
        .filter(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_ok())
    else {
        return failure(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "device_public_key must be 64 hex digits (Ed25519)",
        );
    };
    on_blocking_pool(move || enroll_device(&state, &origin, &public_key, &req.token)).await
}

fn enroll_device(
    state: &AppState,
    origin: &crate::auth::Origin,
    public_key: &[u8; 32],
    token: &str,
) -> Response {
    let now = state.clock.now();
    let result = state.storage.enroll_device(&crate::auth::sha256(token), public_key, now);
    let action = if result.is_ok() { "enroll" } else { "enroll_failed" };
    let mut event = crate::audit::event(
        now,
        action,
        "device",
        result.as_ref().map_or_else(|e| e.code(), |_| "ok"),
        origin,
    );
    event.origin_device = result.as_ref().ok().map(|d| d.id);
    event.resource_id = result.as_ref().ok().map(|d| d.id.to_string());
    if let Err(e) = state.storage.append_events(&[event]) {
        return server_failure(&e);
    }
    match result {
        Ok(d) => Json(EnrollResponse {
            device_id: d.id.to_string(),
            name: d.name,
            profile: d.profile.as_str().into(),
            units: d.units,
            escrow_key: crate::hex::encode(
                chartroom_crypto::escrow_key_for(&state.escrow_root, d.id).as_ref(),
            ),
            recovery_public_key: crate::hex::encode(state.recovery.public().as_bytes()),
        })
        .into_response(),
        Err(ServerError::InvalidToken) => {
            failure(StatusCode::UNAUTHORIZED, "device.invalid_token", &ServerError::InvalidToken.to_string())
        }
        Err(e) => server_failure(&e),
    }
}

/// Recovers a device whose OS keyring lost its secret, with a one-time recovery token an
/// administrator issued for it: registers the new device key and returns the data key sealed to the
/// request's ephemeral key.
#[utoipa::path(post, path = "/v1/devices/recover", tag = "devices", request_body = RecoverRequest, responses(
    (status = 200, body = RecoverResponse),
    (status = 400, body = ApiError, description = "`request.invalid`: malformed keys or slot; `device.recovery_slot_invalid`: the slot does not open for this device (the token stays unused)"),
    (status = 401, body = ApiError, description = "`device.invalid_recovery_token`: unknown, used, expired or another device's token, or the device was revoked"),
))]
pub async fn recover(
    State(state): State<AppState>,
    Remote(origin): Remote,
    body: Body<RecoverRequest>,
) -> Response {
    let Body(req) = body;
    let claim = (|| {
        let public_key = crate::hex::decode::<32>(&req.device_public_key)
            .filter(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_ok())?;
        let ephemeral = crate::hex::decode::<32>(&req.ephemeral_public_key)?;
        let slot = crate::hex::decode_vec(&req.recovery_slot, 256)
            .and_then(|b| chartroom_crypto::RecoverySlot::from_bytes(&b).ok())?;
        Some(crate::devices::RecoveryClaim {
            device_id: req.device_id.parse().ok()?,
            token: zeroize::Zeroizing::new(req.token.clone()),
            slot,
            public_key,
            ephemeral: chartroom_crypto::RecoveryPublicKey::from_bytes(ephemeral),
        })
    })();
    let Some(claim) = claim else {
        return failure(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "device_id must be a UUID, the keys 64 hex digits and the recovery slot hex of a version 1 slot",
        );
    };
    on_blocking_pool(move || {
        let result = crate::devices::recover(
            state.storage.as_ref(),
            &state.recovery,
            &state.escrow_root,
            &claim,
            state.clock.now(),
            &origin,
        );
        recovered(result)
    })
    .await
}

fn recovered(result: Result<RecoverResponse, ServerError>) -> Response {
    match result {
        Ok(r) => Json(r).into_response(),
        Err(e @ ServerError::InvalidRecoveryToken) => {
            failure(StatusCode::UNAUTHORIZED, e.code(), &e.to_string())
        }
        Err(e @ ServerError::RecoverySlotInvalid) => {
            failure(StatusCode::BAD_REQUEST, e.code(), &e.to_string())
        }
        Err(e) => server_failure(&e),
    }
}

/// A one-time nonce for an enrolled device to sign (for login or refresh).
#[utoipa::path(post, path = "/v1/auth/challenge", tag = "auth", request_body = ChallengeRequest, responses(
    (status = 200, body = ChallengeResponse),
    (status = 401, body = ApiError, description = "`device.unknown`"),
))]
pub async fn challenge(State(state): State<AppState>, body: Body<ChallengeRequest>) -> Response {
    let Body(req) = body;
    on_blocking_pool(move || {
        match crate::auth::challenge(state.storage.as_ref(), &req.device_id, state.clock.now()) {
            Ok(c) => Json(c).into_response(),
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// Logs a user in on a device (password + device signature over a fresh nonce).
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 401, body = ApiError, description = "`auth.invalid_credentials`, `auth.bad_proof`, `device.unknown`"),
    (status = 403, body = ApiError, description = "`auth.user_disabled`"),
    (status = 429, body = ApiError, description = "`auth.throttled` or `auth.locked_out`, with Retry-After"),
))]
pub async fn login(
    State(state): State<AppState>,
    Remote(origin): Remote,
    body: Body<LoginRequest>,
) -> Response {
    let Body(req) = body;
    // Argon2id takes ~100 ms of CPU: off the async workers with the storage work.
    on_blocking_pool(move || {
        match crate::auth::login(state.storage.as_ref(), &state.escrow_root, &req, state.clock.now(), &origin)
        {
            Ok(mut tokens) => {
                if !tokens.escrow_key.is_empty() {
                    tokens.recovery_public_key = crate::hex::encode(state.recovery.public().as_bytes());
                }
                Json(tokens).into_response()
            }
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// New tokens for a refresh token, from the device it was issued to (single use).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 401, body = ApiError, description = "`auth.invalid_refresh`, `auth.bad_proof`, `device.unknown`"),
))]
pub async fn refresh(
    State(state): State<AppState>,
    Remote(origin): Remote,
    body: Body<RefreshRequest>,
) -> Response {
    let Body(req) = body;
    on_blocking_pool(move || {
        match crate::auth::refresh(state.storage.as_ref(), &req, state.clock.now(), &origin) {
            Ok(tokens) => Json(tokens).into_response(),
            Err(e) => e.into_response(),
        }
    })
    .await
}

/// Ends the caller's session (its access and refresh tokens stop working).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("access_token" = [], "device_proof" = [])),
    responses((status = 204), (status = 401, body = ApiError)))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Response {
    let now = state.clock.now();
    let subject = crate::records::Subject {
        resource_type: "session",
        resource_id: caller.owner.session_id.to_string(),
        patient_ids: vec![],
    };
    on_blocking_pool(move || {
        let result = state.storage.end_session(caller.owner.session_id).and_then(|()| {
            let event =
                crate::records::event_for(&caller.owner, "logout", "ok", subject, now, &caller.origin);
            state.storage.append_events(&[event])
        });
        match result {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => server_failure(&e),
        }
    })
    .await
}

/// Who the access token belongs to.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("access_token" = [], "device_proof" = [])),
    responses((status = 200, body = UserInfo), (status = 401, body = ApiError)))]
pub async fn me(caller: Caller) -> Json<UserInfo> {
    Json(crate::auth::user_info(caller.owner.user))
}
