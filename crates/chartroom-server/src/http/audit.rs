//! Handlers for the audit trail: devices upload their chains; auditors search and verify it.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartroom_protocol::{
    ApiError, AuditEntrySummary, AuditUpload, AuditUploadResponse, AuditVerifySummary, MAX_AUDIT_UPLOAD,
};
use serde::Deserialize;

use super::records::{bad_query, blocking};
use super::{failure, on_blocking_pool, server_failure, AppState, Body, Caller};
use crate::ServerError;

/// Stores the next entries of the caller's device chain. Gaps and forks are refused (409) with the
/// first offending entry named; entries already stored are skipped, so a retry is harmless.
#[utoipa::path(post, path = "/v1/audit/entries", tag = "audit", request_body = AuditUpload,
    security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = AuditUploadResponse),
        (status = 400, body = ApiError, description = "`request.invalid`: too many entries, or another device's"),
        (status = 401, body = ApiError),
        (status = 409, body = ApiError, description = "`audit.gap`, `audit.fork` or `audit.invalid`"),
    ))]
pub async fn upload(State(state): State<AppState>, caller: Caller, body: Body<AuditUpload>) -> Response {
    let Body(upload) = body;
    let device_id = caller.owner.device.record.id;
    if upload.entries.len() > MAX_AUDIT_UPLOAD || upload.entries.iter().any(|e| e.device_id != device_id) {
        return failure(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "upload at most 1000 entries, all of this device's own chain",
        );
    }
    on_blocking_pool(move || match state.storage.ingest_entries(device_id, &upload.entries) {
        Ok(i) => {
            // Break-glass uses the station recorded offline go to the auditors' review queue. The
            // entries are stored already: a failure here is retried with the upload (harmlessly).
            let now = state.clock.now();
            if let Err(e) = crate::oversight::queue_offline_break_glass(
                state.storage.as_ref(),
                &state.keys,
                &upload.entries,
                now,
            ) {
                return server_failure(&e);
            }
            Json(AuditUploadResponse { stored: i.stored, already_present: i.already_present }).into_response()
        }
        Err(ServerError::AuditRejected { code, message }) => failure(StatusCode::CONFLICT, code, &message),
        Err(e) => server_failure(&e),
    })
    .await
}

/// `?user=&mrn=&action=&since=&until=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Entries by this username (case-insensitive).
    pub user: Option<String>,
    /// Entries about the patient with this MRN.
    pub mrn: Option<String>,
    /// Entries with this action (`view`, `break_glass`, `login_failed`, …).
    pub action: Option<String>,
    /// Entries at or after this instant (RFC 3339).
    pub since: Option<String>,
    /// Entries before this instant (RFC 3339).
    pub until: Option<String>,
    /// At most this many, newest first (1–1000, default 200).
    pub limit: Option<usize>,
}

/// Searches the audit trail (auditors only), newest first: summaries without patient names or
/// sealed states. The search itself is recorded.
#[utoipa::path(get, path = "/v1/audit/entries", tag = "audit", params(SearchQuery),
    security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = Vec<AuditEntrySummary>),
        (status = 400, body = ApiError, description = "`request.invalid`: a bad time or limit"),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "`access.forbidden`: not an auditor"),
        (status = 404, body = ApiError, description = "`patient.not_found`: no patient has this MRN"),
    ))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else { return bad_query() };
    let time = |s: &Option<String>| match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => chartroom_fhir::parse_date_time(s).map(Some).ok_or(()),
    };
    let (Ok(since), Ok(until)) = (time(&q.since), time(&q.until)) else { return bad_query() };
    let limit = q.limit.unwrap_or(chartroom_protocol::DEFAULT_AUDIT_SEARCH);
    if limit == 0 || limit > chartroom_protocol::MAX_AUDIT_SEARCH {
        return bad_query();
    }
    let nonempty = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let filter = crate::audit::ExportFilter {
        username: nonempty(q.user),
        patient_id: None,
        action: nonempty(q.action),
        since,
        until,
    };
    let mrn = nonempty(q.mrn);
    blocking(state, caller, move |r| crate::oversight::audit_search(r, filter, mrn.as_deref(), limit)).await
}

/// Re-verifies the whole audit trail (auditors only), as `chartroom-server audit verify` does
/// (signing a checkpoint first if one is due). Recorded.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    security(("access_token" = [], "device_proof" = [])),
    responses(
        (status = 200, body = AuditVerifySummary),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "`access.forbidden`: not an auditor"),
    ))]
pub async fn verify(State(state): State<AppState>, caller: Caller) -> Response {
    let key = state.signing.clone();
    blocking(state, caller, move |r| crate::oversight::audit_verify(r, &key)).await
}
