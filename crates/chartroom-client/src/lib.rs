//! The HTTPS client for the Chartroom server API, shared by the station, the tests and the
//! benchmarks: TLS 1.3 only, the server certificate pinned by SHA-256 fingerprint (a certificate a
//! public CA signed is still refused if it is not the pinned one), and every authenticated request
//! signed by the device key (see `chartroom_protocol::request_proof_message`).
//!
//! Architecture invariant: no storage and no UI; keys are passed in, never persisted here.

#![forbid(unsafe_code)]

mod pinned;

use std::time::Duration;

use chartroom_protocol::{
    login_proof_message, refresh_proof_message, request_proof_message, ApiError, AuditEntrySummary,
    AuditQuery, AuditVerifySummary, BreakGlassGrant, BreakGlassRequest, BreakGlassUse, ChallengeRequest,
    ChallengeResponse, ChartResponse, EnrollRequest, EnrollResponse, Health, IncidentInfo, LoginRequest,
    PatientLookup, PatientLookupRequest, RecoverRequest, RecoverResponse, RefreshRequest, TokenResponse,
    PROOF_HEADER,
};
use ed25519_dalek::{Signer, SigningKey};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use pinned::{fingerprint_of, PinnedCertificate};
pub use reqwest::{self, Method, StatusCode};

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server URL is not valid (expected https://HOST:PORT)")]
    BadUrl,
    #[error("the certificate fingerprint is not valid (expected sha256:<64 hex digits>)")]
    BadFingerprint,
    #[error("cannot reach the server (network error or certificate not the pinned one)")]
    Unreachable,
    #[error("the server refused the request: {} ({})", .error.message, .error.code)]
    Api {
        status: u16,
        error: ApiError,
        /// The server's `Retry-After` (seconds), when it says when to try again (throttling).
        retry_after_s: Option<u64>,
    },
    #[error("the server's answer could not be understood")]
    Decode,
    #[error("the server's answer is larger than allowed")]
    TooLarge,
}

impl ClientError {
    /// Whether trying again later can succeed (network trouble, server overloaded or restarting).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable => true,
            ClientError::Api { error, .. } => error.retryable,
            _ => false,
        }
    }

    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { error, .. } => Some(&error.code),
            _ => None,
        }
    }
}

/// A device's identity towards the server: its id (from enrollment) and its Ed25519 key.
pub struct DeviceIdentity {
    pub device_id: String,
    key: SigningKey,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity").field("device_id", &self.device_id).finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// The identity of an enrolled device from its id and the 32-byte key seed.
    pub fn new(device_id: String, seed: &[u8; 32]) -> Self {
        DeviceIdentity { device_id, key: SigningKey::from_bytes(seed) }
    }

    /// The public key as 64 hex digits, as enrollment sends it.
    pub fn public_key_hex(&self) -> String {
        hex(self.key.verifying_key().as_bytes())
    }

    /// Signs `message`, as 128 hex digits.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex(&self.key.sign(message).to_bytes())
    }
}

/// A connection to one server, pinned to its certificate.
#[derive(Clone, Debug)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    /// Added to this machine's clock when signing requests (tests of clock skew; zero otherwise).
    skew_ms: i64,
}

impl ServerClient {
    /// A client for `base_url` (`https://host:port`) that accepts only the certificate with
    /// `fingerprint` (`sha256:<hex>`), over TLS 1.3.
    pub fn new(base_url: &str, fingerprint: &str) -> Result<Self, ClientError> {
        Self::pinned(base_url, &[fingerprint])
    }

    /// A client for `base_url` that accepts a certificate with any of `fingerprints` (the machine
    /// policy may pin two while the server's certificate is being replaced).
    pub fn pinned(base_url: &str, fingerprints: &[&str]) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") || reqwest::Url::parse(&base).is_err() {
            return Err(ClientError::BadUrl);
        }
        let tls = pinned::tls_config(fingerprints)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|_| ClientError::Unreachable)?;
        Ok(ServerClient { http, base, skew_ms: 0 })
    }

    /// Signs requests as if this machine's clock were `skew_ms` ahead (negative: behind).
    pub fn with_clock_skew_ms(mut self, skew_ms: i64) -> Self {
        self.skew_ms = skew_ms;
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        decode(self.http.get(self.url("/health")).send().await).await
    }

    /// Registers the device key with a one-time enrollment token.
    pub async fn enroll(
        &self,
        token: &str,
        device_public_key_hex: &str,
    ) -> Result<EnrollResponse, ClientError> {
        let body = EnrollRequest { token: token.into(), device_public_key: device_public_key_hex.into() };
        self.post("/v1/devices/enroll", &body).await
    }

    /// Recovers a device that lost its secret, with a one-time recovery token (see
    /// `chartroom_protocol::RecoverRequest`).
    pub async fn recover(&self, request: &RecoverRequest) -> Result<RecoverResponse, ClientError> {
        self.post("/v1/devices/recover", request).await
    }

    /// Logs `username` in on this device: fetches a nonce and signs it with the device key.
    pub async fn login(
        &self,
        device: &DeviceIdentity,
        username: &str,
        password: &str,
    ) -> Result<TokenResponse, ClientError> {
        let nonce = self.challenge(device).await?.nonce;
        let signature = device.sign_hex(&login_proof_message(&device.device_id, &nonce, username));
        let body = LoginRequest {
            device_id: device.device_id.clone(),
            nonce,
            signature,
            username: username.into(),
            password: password.into(),
        };
        self.post("/v1/auth/login", &body).await
    }

    /// Exchanges a refresh token for new tokens (the old refresh token stops working).
    pub async fn refresh(
        &self,
        device: &DeviceIdentity,
        refresh_token: &str,
    ) -> Result<TokenResponse, ClientError> {
        let nonce = self.challenge(device).await?.nonce;
        let signature = device.sign_hex(&refresh_proof_message(&device.device_id, &nonce, refresh_token));
        let body = RefreshRequest {
            device_id: device.device_id.clone(),
            nonce,
            signature,
            refresh_token: refresh_token.into(),
        };
        self.post("/v1/auth/refresh", &body).await
    }

    /// A one-time nonce for this device.
    pub async fn challenge(&self, device: &DeviceIdentity) -> Result<ChallengeResponse, ClientError> {
        self.post("/v1/auth/challenge", &ChallengeRequest { device_id: device.device_id.clone() }).await
    }

    /// An authenticated GET of `path_and_query`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        path_and_query: &str,
    ) -> Result<T, ClientError> {
        decode(self.signed(device, access_token, Method::GET, path_and_query).send().await).await
    }

    /// An authenticated POST of a JSON body to `path`, decoded as `T`.
    pub async fn post_signed<B: Serialize, T: DeserializeOwned>(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        decode(self.signed(device, access_token, Method::POST, path).json(body).send().await).await
    }

    /// The id of the patient with this MRN (roles that may break the glass; audited).
    pub async fn lookup_patient(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        mrn: &str,
    ) -> Result<PatientLookup, ClientError> {
        let body = PatientLookupRequest { mrn: mrn.to_owned() };
        self.post_signed(device, access_token, "/v1/patients/lookup", &body).await
    }

    /// Opens a patient outside the caller's scope for a while, for a reason (audited, reviewed).
    pub async fn break_glass(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        patient_id: &str,
        request: &BreakGlassRequest,
    ) -> Result<BreakGlassGrant, ClientError> {
        let path = format!("/v1/patients/{patient_id}/break-glass");
        self.post_signed(device, access_token, &path, request).await
    }

    /// The sections of a patient's chart the caller may read.
    pub async fn chart(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        patient_id: &str,
    ) -> Result<ChartResponse, ClientError> {
        self.get(device, access_token, &format!("/v1/patients/{patient_id}/chart")).await
    }

    /// Searches the audit trail (auditors only), newest first.
    pub async fn audit_entries(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntrySummary>, ClientError> {
        self.get(device, access_token, &query.path_and_query()).await
    }

    /// Re-verifies the server's whole audit trail (auditors only).
    pub async fn audit_verify(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
    ) -> Result<AuditVerifySummary, ClientError> {
        self.get(device, access_token, "/v1/audit/verify").await
    }

    /// Break-glass uses (auditors only), optionally only those not reviewed yet.
    pub async fn break_glass_uses(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        unreviewed: bool,
    ) -> Result<Vec<BreakGlassUse>, ClientError> {
        let path = if unreviewed { "/v1/break-glass?unreviewed=true" } else { "/v1/break-glass" };
        self.get(device, access_token, path).await
    }

    /// Marks a break-glass use reviewed by the calling auditor.
    pub async fn review_break_glass(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        id: &str,
    ) -> Result<(), ClientError> {
        let path = format!("/v1/break-glass/{id}/review");
        let response = self
            .signed(device, access_token, Method::POST, &path)
            .send()
            .await
            .map_err(|_| ClientError::Unreachable)?;
        if response.status().is_success() {
            return Ok(());
        }
        decode::<serde_json::Value>(Ok(response)).await.map(|_| ())
    }

    /// Incidents raised by the anomaly rule (auditors only).
    pub async fn incidents(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
    ) -> Result<Vec<IncidentInfo>, ClientError> {
        self.get(device, access_token, "/v1/incidents").await
    }

    /// An authenticated request without a body, for callers that inspect the raw status.
    pub async fn send_signed(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        method: Method,
        path_and_query: &str,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let response = self
            .signed(device, access_token, method, path_and_query)
            .send()
            .await
            .map_err(|_| ClientError::Unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(|_| ClientError::Unreachable)?;
        Ok((status, body.to_vec()))
    }

    /// A raw request builder on this pinned connection (for tests that send malformed requests).
    pub fn raw(&self, method: Method, path_and_query: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path_and_query))
    }

    fn signed(
        &self,
        device: &DeviceIdentity,
        access_token: &str,
        method: Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
            + self.skew_ms;
        let sig = device.sign_hex(&request_proof_message(method.as_str(), path_and_query, at, access_token));
        self.http
            .request(method, self.url(path_and_query))
            .bearer_auth(access_token)
            .header(PROOF_HEADER, format!("t={at},sig={sig}"))
    }

    /// Downloads a public file the server hosts (signed updates): `None` when the server has no such
    /// file. Stops with [`ClientError::TooLarge`] past `max_bytes`, whatever the server claims.
    pub async fn fetch_file(&self, path: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, ClientError> {
        let mut response =
            self.http.get(self.url(path)).send().await.map_err(|_| ClientError::Unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let error = ApiError {
                code: format!("http.{}", status.as_u16()),
                message: "the server answered with an error".into(),
                retryable: status.is_server_error(),
            };
            return Err(ClientError::Api { status: status.as_u16(), error, retry_after_s: None });
        }
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(ClientError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| ClientError::Unreachable)? {
            if body.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(ClientError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        decode(self.http.post(self.url(path)).json(body).send().await).await
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }
}

async fn decode<T: DeserializeOwned>(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, ClientError> {
    let response = sent.map_err(|_| ClientError::Unreachable)?;
    let status = response.status();
    let retry_after_s = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let bytes = response.bytes().await.map_err(|_| ClientError::Unreachable)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|_| ClientError::Decode);
    }
    let error = serde_json::from_slice(&bytes).unwrap_or(ApiError {
        code: format!("http.{}", status.as_u16()),
        message: "the server answered with an error".into(),
        retryable: status.is_server_error(),
    });
    Err(ClientError::Api { status: status.as_u16(), error, retry_after_s })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
