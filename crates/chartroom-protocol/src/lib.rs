//! Chartroom's wire protocol: the JSON bodies stations and the server exchange, with the API
//! version they belong to.
//!
//! Architecture invariant: types only — no IO, no HTTP client or server, no crypto. A change to a
//! type here is a change to the wire format: bump [`API_VERSION`] and keep the golden tests honest.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// The version of the HTTP API described by these types.
pub const API_VERSION: u32 = 1;

/// `GET /health`: answered without authentication; says nothing about users or patients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub api_version: u32,
    pub server_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
}

/// Every error the API returns: a stable machine-readable code and a message without PHI or
/// internals. `retryable` tells a client whether trying again later can succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// `POST /v1/devices/enroll`: a station proves it holds a one-time enrollment token and registers
/// its Ed25519 public key (hex), with which it will later prove it is this device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub token: String,
    pub device_public_key: String,
}

/// What an enrolled device learns about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub device_id: String,
    pub name: String,
    /// `station` or `laptop`.
    pub profile: String,
    pub units: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden encodings: an accidental change to the wire format fails here.
    #[test]
    fn wire_format_is_frozen() {
        let h = Health { status: HealthStatus::Ok, api_version: API_VERSION, server_version: "0.1.0".into() };
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            r#"{"status":"ok","api_version":1,"server_version":"0.1.0"}"#
        );
        let e = ApiError { code: "auth.denied".into(), message: "denied".into(), retryable: false };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":"auth.denied","message":"denied","retryable":false}"#
        );
        let back: Health =
            serde_json::from_str(r#"{"status":"ok","api_version":1,"server_version":"x"}"#).unwrap();
        assert_eq!(back.status, HealthStatus::Ok);
    }
}
