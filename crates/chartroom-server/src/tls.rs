//! TLS: the self-signed certificate made at `init`, its SHA-256 fingerprint (what stations pin),
//! and the rustls server configuration — TLS 1.3 only unless the configuration opts into 1.2.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::{DataDir, ServerError};

/// A new self-signed certificate for `names`: (certificate PEM, private key PEM, fingerprint).
pub(crate) fn self_signed(
    names: Vec<String>,
) -> Result<(String, zeroize::Zeroizing<String>, String), ServerError> {
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| ServerError::Tls(e.to_string()))?;
    let fingerprint = fingerprint(certified.cert.der());
    Ok((certified.cert.pem(), zeroize::Zeroizing::new(certified.signing_key.serialize_pem()), fingerprint))
}

/// An administrator's certificate chain and key (PEM files), checked to parse and to belong together:
/// (certificate PEM, private key PEM, fingerprint of the leaf certificate).
pub(crate) fn given(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(String, zeroize::Zeroizing<String>, String), ServerError> {
    let bad = |what: &str| ServerError::Tls(format!("{what} is not a readable PEM file"));
    let cert_pem = std::fs::read_to_string(cert).map_err(|_| bad("--tls-cert"))?;
    let key_pem = zeroize::Zeroizing::new(std::fs::read_to_string(key).map_err(|_| bad("--tls-key"))?);
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("--tls-cert"))?;
    let leaf = certs.first().ok_or_else(|| bad("--tls-cert"))?;
    let fingerprint = fingerprint(leaf);
    let private = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| bad("--tls-key"))?;
    // Building a configuration checks that the key matches the certificate.
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|_| ServerError::Tls("the --tls-key does not match the --tls-cert".into()))?;
    Ok((cert_pem, key_pem, fingerprint))
}

/// `sha256:<hex>` of a certificate's DER encoding.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The server's rustls configuration, with the `ring` provider, HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn server_config(dir: &DataDir, allow_tls12: bool) -> Result<rustls::ServerConfig, ServerError> {
    let certs = CertificateDer::pem_file_iter(dir.cert_path())
        .map_err(|_| ServerError::Damaged("tls/cert.pem"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ServerError::Damaged("tls/cert.pem"))?;
    let key =
        PrivateKeyDer::from_pem_file(dir.key_path()).map_err(|_| ServerError::Damaged("tls/key.pem"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
