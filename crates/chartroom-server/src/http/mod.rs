//! The HTTP API: routes, shared state, the authenticated-caller extractor and the one error shape
//! every failure takes. Handlers are thin: they parse, call `auth`/`records`, and map the result.
//!
//! Architecture invariant: handlers never touch SQL or files (only the `Storage` trait) and never
//! put PHI or internals in an error message.

mod audit;
mod auth;
mod openapi;
mod records;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chartroom_protocol::{ApiError, PROOF_HEADER};
use serde::de::DeserializeOwned;

use crate::auth::{AuthFailure, Origin};
use crate::phi::RecordKeys;
use crate::storage::{SessionOwner, Storage};
use crate::ServerError;

pub use openapi::openapi_json;

/// The largest request body accepted (the protocol's limit; clients split batches below it).
pub const MAX_BODY_BYTES: usize = chartroom_protocol::MAX_REQUEST_BYTES;
/// A request that takes longer than this is answered with 408 (a stuck client cannot hold a worker).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What handlers share: storage, the record keys and the clock (injected, so tests decide "now").
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub keys: Arc<RecordKeys>,
    pub clock: Arc<dyn chartroom_domain::Clock>,
    /// Root of the devices' escrow keys (derived from the master key).
    pub escrow_root: Arc<zeroize::Zeroizing<[u8; 32]>>,
    /// Opens stations' recovery slots (`keys/recovery.key`); only after an approved recovery.
    pub recovery: Arc<chartroom_crypto::RecoveryKeyPair>,
    /// The anomaly rule (from `config.json`).
    pub anomaly: crate::oversight::AnomalyRule,
    /// Signs audit checkpoints (`keys/signing.key`); an auditor's verification signs one first.
    pub signing: Arc<crate::audit::CheckpointKey>,
    /// Where the signed release the stations may update to lives (`DATA/updates/`).
    pub updates: Arc<std::path::PathBuf>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(auth::health))
        .route("/v1/updates/{file}", get(auth::update_file))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/devices/enroll", post(auth::enroll))
        .route("/v1/devices/recover", post(auth::recover))
        .route("/v1/auth/challenge", post(auth::challenge))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/me", get(auth::me))
        .route("/v1/audit/entries", post(audit::upload).get(audit::search))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/patients/lookup", post(records::lookup))
        .route("/v1/patients/{id}/break-glass", post(records::break_glass))
        .route("/v1/break-glass", get(records::break_glass_uses))
        .route("/v1/break-glass/{id}/review", post(records::review_break_glass))
        .route("/v1/incidents", get(records::incidents))
        .route("/v1/sync/push", post(records::push))
        .route("/v1/sync/pull", get(records::pull))
        .route("/v1/units/{unit}/census", get(records::census))
        .route("/v1/patients/{id}/chart", get(records::chart))
        .route_layer(axum::middleware::from_fn(log_request))
        .fallback(|method: axum::http::Method| async move {
            log::debug!("{method} (no such route) 404");
            failure(StatusCode::NOT_FOUND, "request.not_found", "no such endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // A panic in a handler answers 500 with a fixed message: the panic text (which could name a
        // value) never reaches the client.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            log::error!("a request handler failed; answered 500 (the panic's location is logged above)");
            failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server.internal",
                "the server failed to handle the request",
            )
        }))
        .with_state(state)
}

/// Logs each request at `debug` (and failures of the server at `warn`) by its route template — the
/// matched path (`/v1/patients/{id}/chart`), never the request's own path or query, which can carry
/// patient ids and MRNs.
async fn log_request(request: Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let level = if status.is_server_error() { log::Level::Warn } else { log::Level::Debug };
    log::log!(level, "{method} {route} {} {} ms", status.as_u16(), started.elapsed().as_millis());
    response
}

/// An error response: status, stable code, a message without PHI or internals.
pub fn failure(status: StatusCode, code: &str, message: &str) -> Response {
    let retryable = status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT;
    (status, Json(ApiError { code: code.into(), message: message.into(), retryable })).into_response()
}

/// Runs a handler's storage work on the blocking pool: a database call (PostgreSQL answers over the
/// network) never holds an async worker, and the request timeout keeps running.
pub(crate) async fn on_blocking_pool(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(|| crate::storage::may_block(work))
        .await
        .unwrap_or_else(|_| server_failure(&ServerError::Internal("worker")))
}

/// Storage and internal failures: retryable, and the message says nothing about internals.
fn server_failure(e: &ServerError) -> Response {
    failure(StatusCode::SERVICE_UNAVAILABLE, e.code(), "the server could not complete the request; try again")
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let status = match &self {
            AuthFailure::UnknownDevice | AuthFailure::BadProof | AuthFailure::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            AuthFailure::BadToken | AuthFailure::BadRefresh => StatusCode::UNAUTHORIZED,
            AuthFailure::UserDisabled => StatusCode::FORBIDDEN,
            AuthFailure::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            AuthFailure::Server(e) => return server_failure(e),
        };
        let mut response = failure(status, self.code(), &self.to_string());
        if let AuthFailure::Throttled(
            chartroom_domain::Throttled::Delay { retry_after }
            | chartroom_domain::Throttled::LockedOut { retry_after },
        ) = self
        {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// A JSON body whose rejections are API errors with stable codes (wrong content type, malformed
/// or unknown fields, too large).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.content_type",
                "the body must be JSON (Content-Type: application/json)",
            )),
            Err(JsonRejection::BytesRejection(_)) => Err(failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request.too_large",
                "the request body is too large",
            )),
            Err(_) => Err(failure(
                StatusCode::BAD_REQUEST,
                "request.malformed",
                "the request body is not valid JSON of the expected shape",
            )),
        }
    }
}

/// Where the request came from (the peer address, when the server runs on a real socket).
pub struct Remote(pub Origin);

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let remote = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Remote(Origin { remote }))
    }
}

/// An authenticated caller: a live access token and a valid device proof over this request.
pub struct Caller {
    pub owner: SessionOwner,
    pub origin: Origin,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Remote(origin) = Remote::from_request_parts(parts, state).await.unwrap_or_else(|e| match e {});
        let header_str =
            |name| parts.headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok()).map(str::to_owned);
        let (authorization, proof) = (header_str(header::AUTHORIZATION.as_str()), header_str(PROOF_HEADER));
        let (method, path) = (
            parts.method.as_str().to_owned(),
            parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        );
        let state = state.clone();
        let checked = tokio::task::spawn_blocking(move || {
            crate::storage::may_block(|| {
                crate::auth::authenticate(
                    state.storage.as_ref(),
                    authorization.as_deref(),
                    proof.as_deref(),
                    &method,
                    &path,
                    state.clock.now(),
                )
            })
        })
        .await;
        match checked {
            Ok(Ok(owner)) => Ok(Caller { owner, origin }),
            Ok(Err(e)) => Err(e.into_response()),
            Err(_) => Err(server_failure(&ServerError::Internal("worker"))),
        }
    }
}
