//! Handlers for the audit trail: devices upload their chains.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chartroom_protocol::{ApiError, AuditUpload, AuditUploadResponse, MAX_AUDIT_UPLOAD};

use super::{failure, server_failure, AppState, Body, Caller};
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
    match state.storage.ingest_entries(device_id, &upload.entries) {
        Ok(i) => {
            Json(AuditUploadResponse { stored: i.stored, already_present: i.already_present }).into_response()
        }
        Err(ServerError::AuditRejected { code, message }) => failure(StatusCode::CONFLICT, code, &message),
        Err(e) => server_failure(&e),
    }
}
