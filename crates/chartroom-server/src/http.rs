//! The HTTP API's routes. For now only `GET /health`; accounts, devices and records follow.

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router};
use chartroom_protocol::{Health, HealthStatus, API_VERSION};

/// Largest request body accepted (clinical changes are small; anything bigger is refused early).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The API's router (tested without a socket through `tower::ServiceExt`, and served over TLS by
/// [`crate::start`]).
pub fn router() -> Router {
    Router::new().route("/health", get(health)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Answers without authentication and reveals nothing about users or patients.
async fn health() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
        api_version: API_VERSION,
        server_version: env!("CARGO_PKG_VERSION").into(),
    })
}
