//! The HTTP API's routes: `GET /health` and `POST /v1/devices/enroll` so far.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chartroom_domain::Timestamp;
use chartroom_protocol::{ApiError, EnrollRequest, EnrollResponse, Health, HealthStatus, API_VERSION};

use crate::storage::Storage;
use crate::ServerError;

/// Largest request body accepted (clinical changes are small; anything bigger is refused early).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What handlers share: storage and the clock (injected, so tests decide what "now" is).
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn chartroom_domain::Clock>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/devices/enroll", post(enroll))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Answers without authentication and reveals nothing about users or patients.
async fn health() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        api_version: API_VERSION,
        server_version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn enroll(
    State(state): State<AppState>,
    body: Result<Json<EnrollRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "request.malformed",
            "the request body is not a valid enrollment request",
        );
    };
    let Some(public_key) = parse_key(&req.device_public_key) else {
        return error(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "device_public_key must be 64 hex digits (Ed25519)",
        );
    };
    let now: Timestamp = state.clock.now();
    match state.storage.enroll_device(&crate::devices::token_hash(&req.token), &public_key, now) {
        Ok(d) => Json(EnrollResponse {
            device_id: d.id.to_string(),
            name: d.name,
            profile: d.profile.as_str().into(),
            units: d.units,
        })
        .into_response(),
        Err(ServerError::InvalidToken) => {
            error(StatusCode::UNAUTHORIZED, "device.invalid_token", &ServerError::InvalidToken.to_string())
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            e.code(),
            "the server could not complete the request; try again",
        ),
    }
}

/// An Ed25519 public key as 64 hex digits, and a valid curve point.
fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    ed25519_dalek::VerifyingKey::from_bytes(&out).ok()?;
    Some(out)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let retryable = status.is_server_error();
    (status, Json(ApiError { code: code.into(), message: message.into(), retryable })).into_response()
}
