//! Certificate pinning: the server is trusted because its certificate's SHA-256 matches the
//! fingerprint given at enrollment, not because some CA signed it. Handshake signatures are still
//! verified, so a peer without the pinned certificate's private key cannot complete the handshake.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ClientError;

/// `sha256:<hex>` of a DER certificate.
pub fn fingerprint_of(cert: &[u8]) -> String {
    format!("sha256:{}", crate::hex(&Sha256::digest(cert)))
}

/// Accepts exactly the certificate(s) with the pinned SHA-256 (two while a certificate is being
/// replaced).
#[derive(Debug)]
pub struct PinnedCertificate {
    sha256: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl PinnedCertificate {
    /// Parses `sha256:<64 hex digits>`.
    pub fn new(fingerprint: &str) -> Result<Self, ClientError> {
        Self::any_of(&[fingerprint])
    }

    /// Accepts any of `fingerprints` (at least one).
    pub fn any_of(fingerprints: &[&str]) -> Result<Self, ClientError> {
        if fingerprints.is_empty() {
            return Err(ClientError::BadFingerprint);
        }
        let sha256 = fingerprints.iter().map(|f| parse_fingerprint(f)).collect::<Result<_, _>>()?;
        Ok(PinnedCertificate { sha256, provider: Arc::new(rustls::crypto::ring::default_provider()) })
    }
}

/// Parses `sha256:<64 hex digits>`.
fn parse_fingerprint(fingerprint: &str) -> Result<[u8; 32], ClientError> {
    let hex = fingerprint.trim().strip_prefix("sha256:").ok_or(ClientError::BadFingerprint)?;
    if hex.len() != 64 {
        return Err(ClientError::BadFingerprint);
    }
    let mut sha256 = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| ClientError::BadFingerprint)?;
        sha256[i] = u8::from_str_radix(s, 16).map_err(|_| ClientError::BadFingerprint)?;
    }
    Ok(sha256)
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // Every pin is compared, so the time taken does not tell which one matched.
        let matched = self.sha256.iter().fold(subtle::Choice::from(0), |m, pin| m | seen.ct_eq(pin));
        if bool::from(matched) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate does not match the pinned fingerprint".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3-only client configuration trusting only the pinned certificate.
pub(crate) fn tls_config(fingerprints: &[&str]) -> Result<rustls::ClientConfig, ClientError> {
    let verifier = Arc::new(PinnedCertificate::any_of(fingerprints)?);
    let provider = verifier.provider.clone();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| ClientError::BadFingerprint)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
