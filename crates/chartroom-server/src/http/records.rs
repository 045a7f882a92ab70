//! Handlers for the census and chart reads.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartroom_protocol::{ApiError, CensusPage, ChartResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{failure, server_failure, AppState, Caller};
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
    respond(crate::records::census(reader(&state, &caller), &unit, after, q.limit.unwrap_or(100)))
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
    respond(crate::records::chart(reader(&state, &caller), id, q.max_observations.unwrap_or(200)))
}

fn reader<'a>(state: &'a AppState, caller: &'a Caller) -> Reader<'a> {
    Reader {
        storage: state.storage.as_ref(),
        keys: &state.keys,
        owner: &caller.owner,
        now: state.clock.now(),
        origin: &caller.origin,
    }
}

fn respond<T: serde::Serialize>(result: Result<T, ReadFailure>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(ReadFailure::Denied(d)) => failure(StatusCode::FORBIDDEN, d.code(), &d.to_string()),
        Err(ReadFailure::NotFound) => failure(StatusCode::NOT_FOUND, "patient.not_found", "no such patient"),
        Err(ReadFailure::Server(e)) => server_failure(&e),
    }
}

fn bad_query() -> Response {
    failure(StatusCode::BAD_REQUEST, "request.invalid", "the path or query parameters are not valid")
}
