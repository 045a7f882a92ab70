//! Handlers for the census and chart reads.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartroom_protocol::{
    ApiError, BreakGlassGrant, BreakGlassRequest, BreakGlassUse, CensusPage, ChartResponse, IncidentInfo,
    PatientLookup, PatientLookupRequest, PullPage, PushBatch, PushResponse,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{failure, on_blocking_pool, server_failure, AppState, Body, Caller};
use crate::records::{ReadFailure, Reader};

/// `?after=<patient id>&limit=<n>`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CensusQuery {
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Page size (1–500, default 100).
    pub limit: Option<usize>,
}

/// `?max_observations=<n>`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    /// Newest observations to include (default 200, at most 2000).
    pub max_observations: Option<usize>,
}

/// One page of a unit's census (patients ordered by bed).
#[utoipa::path(get, path = "/v1/units/{unit}/census", tag = "records", params(("unit" = String, Path), CensusQuery),
    security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = CensusPage),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "`access.forbidden` or `access.out_of_scope`"),
    ))]
pub async fn census(
    State(state): State<AppState>,
    caller: Caller,
    Path(unit): Path<String>,
    query: Result<Query<CensusQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else { return bad_query() };
    let after = match q.after.as_deref().map(str::parse::<Uuid>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return bad_query(),
    };
    let limit = q.limit.unwrap_or(100);
    blocking(state, caller, move |r| crate::records::census(r, &unit, after, limit)).await
}

/// The sections of one patient's chart the caller may read.
#[utoipa::path(get, path = "/v1/patients/{id}/chart", tag = "records", params(("id" = String, Path), ChartQuery),
    security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = ChartResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "`access.forbidden` or `access.out_of_scope`"),
        (status = 404, body = ApiError, description = "`patient.not_found`"),
    ))]
pub async fn chart(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<ChartQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (Ok(Query(q)), Ok(id)) = (query, id.parse::<Uuid>()) else { return bad_query() };
    let max_observations = q.max_observations.unwrap_or(200);
    blocking(state, caller, move |r| crate::records::chart(r, id, max_observations)).await
}

/// Opens a patient outside the caller's scope for 60 minutes, for a reason from the fixed list plus
/// free text; flagged in the audit trail and queued for auditor review.
#[utoipa::path(post, path = "/v1/patients/{id}/break-glass", tag = "oversight", params(("id" = String, Path)),
    request_body = BreakGlassRequest, security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = BreakGlassGrant),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "`access.forbidden`: this role has no break-glass"),
        (status = 404, body = ApiError),
    ))]
pub async fn break_glass(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body<BreakGlassRequest>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else { return bad_query() };
    let Body(req) = body;
    blocking(state, caller, move |r| crate::oversight::break_glass(r, id, req.reason, &req.detail)).await
}

/// The id of the patient with this MRN (the MRN goes in the body, never in a URL), for a
/// clinician about to break the glass. Gives no demographics; audited.
#[utoipa::path(post, path = "/v1/patients/lookup", tag = "oversight", request_body = PatientLookupRequest,
    security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = PatientLookup),
        (status = 400, body = ApiError, description = "`request.invalid` or `request.malformed`"),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "`access.forbidden`: this role has no break-glass"),
        (status = 404, body = ApiError, description = "`patient.not_found`"),
    ))]
pub async fn lookup(
    State(state): State<AppState>,
    caller: Caller,
    body: Body<PatientLookupRequest>,
) -> Response {
    let Body(req) = body;
    blocking(state, caller, move |r| crate::oversight::lookup_patient(r, &req.mrn)).await
}

/// `?unreviewed=true`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsesQuery {
    /// Only uses no auditor has reviewed yet.
    pub unreviewed: Option<bool>,
}

/// Break-glass uses with their reasons (auditors only).
#[utoipa::path(get, path = "/v1/break-glass", tag = "oversight", params(UsesQuery),
    security(("access_token" = [], "device_proof" = [])),
    responses((status = 200, body = Vec<BreakGlassUse>), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn break_glass_uses(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<UsesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else { return bad_query() };
    let unreviewed = q.unreviewed.unwrap_or(false);
    blocking(state, caller, move |r| crate::oversight::break_glass_uses(r, unreviewed)).await
}

/// Marks a break-glass use reviewed (auditors only; audited).
#[utoipa::path(post, path = "/v1/break-glass/{id}/review", tag = "oversight", params(("id" = String, Path)),
    security(("access_token" = [], "device_proof" = [])),
    responses((status = 204), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError)))]
pub async fn review_break_glass(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else { return bad_query() };
    on_blocking_pool(move || match crate::oversight::review_break_glass(reader(&state, &caller), id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => respond::<()>(Err(e)),
    })
    .await
}

/// Incidents raised by the anomaly rule (auditors only).
#[utoipa::path(get, path = "/v1/incidents", tag = "oversight", security(("access_token" = [], "device_proof" = [])),
    responses((status = 200, body = Vec<IncidentInfo>), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn incidents(State(state): State<AppState>, caller: Caller) -> Response {
    blocking(state, caller, crate::oversight::incidents).await
}

/// Applies changes from the caller's device: each one applied, a duplicate, a conflict, or rejected.
#[utoipa::path(post, path = "/v1/sync/push", tag = "sync", request_body = PushBatch,
    security(("access_token" = [], "device_proof" = [])),
    responses((status = 200, body = PushResponse), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
pub async fn push(State(state): State<AppState>, caller: Caller, body: Body<PushBatch>) -> Response {
    let Body(batch) = body;
    blocking(state, caller, move |r| crate::sync::push(r, &batch)).await
}

/// `?after=<cursor>&limit=<n>`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PullQuery {
    /// The `cursor` of the previous page (0 for a first sync).
    pub after: Option<i64>,
    /// Change numbers per page (1–1000, default 200).
    pub limit: Option<usize>,
}

/// What changed since the station's cursor, within what this device may hold.
#[utoipa::path(get, path = "/v1/sync/pull", tag = "sync", params(PullQuery),
    security(("access_token" = [], "device_proof" = [])),
    responses((status = 200, body = PullPage), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError)))]
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<PullQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else { return bad_query() };
    let escrow = chartroom_crypto::escrow_key_for(&state.escrow_root, caller.owner.device.record.id);
    let device_key = chartroom_crypto::fields::sync_wrap_key(&escrow, caller.owner.device.record.id);
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(200));
    blocking(state, caller, move |r| crate::sync::pull(r, &device_key, after, limit)).await
}

/// Runs a request's database and crypto work on the blocking pool, so that a large push or pull
/// never holds an async worker (other requests, and the request timeout, keep running).
pub(super) async fn blocking<T: serde::Serialize + Send + 'static>(
    state: AppState,
    caller: Caller,
    work: impl FnOnce(Reader<'_>) -> Result<T, ReadFailure> + Send + 'static,
) -> Response {
    on_blocking_pool(move || respond(work(reader(&state, &caller)))).await
}

pub(super) fn reader<'a>(state: &'a AppState, caller: &'a Caller) -> Reader<'a> {
    Reader {
        storage: state.storage.as_ref(),
        keys: &state.keys,
        owner: &caller.owner,
        now: state.clock.now(),
        origin: &caller.origin,
        anomaly: state.anomaly,
    }
}

pub(super) fn respond<T: serde::Serialize>(result: Result<T, ReadFailure>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(ReadFailure::Denied(d)) => failure(StatusCode::FORBIDDEN, d.code(), &d.to_string()),
        Err(ReadFailure::NotFound) => failure(StatusCode::NOT_FOUND, "patient.not_found", "no such patient"),
        Err(e @ ReadFailure::Invalid(_)) => {
            failure(StatusCode::BAD_REQUEST, "request.invalid", &e.to_string())
        }
        Err(e @ ReadFailure::CursorAhead) => {
            failure(StatusCode::BAD_REQUEST, "sync.cursor_ahead", &e.to_string())
        }
        Err(e @ ReadFailure::Disabled) => {
            failure(StatusCode::FORBIDDEN, "auth.user_disabled", &e.to_string())
        }
        Err(ReadFailure::Server(e)) => server_failure(&e),
    }
}

pub(super) fn bad_query() -> Response {
    failure(StatusCode::BAD_REQUEST, "request.invalid", "the path or query parameters are not valid")
}
