//! Signed updates. The server hosts a release's `manifest.json`, its minisign signature
//! (`manifest.json.minisig`) and the packages it lists (`.deb`, `.rpm`); `scripts/release` makes
//! all of them. A station believes the manifest only when the signature verifies against the
//! release public key built into this program, offers only a version newer than its own, and
//! installs a package only when its SHA-256 and its own signature match the manifest's entry.
//! Anything else is refused with a message that says which check failed.

use sha2::{Digest, Sha256};

/// The release public key built into this program (`packaging/release-key.pub`, minisign format).
pub const RELEASE_PUBLIC_KEY: &str = include_str!("../../../packaging/release-key.pub");
/// Debug builds only (tests): a file holding another minisign public key to trust instead.
pub const UPDATE_KEY_ENV: &str = "CHARTROOM_UPDATE_PUBLIC_KEY_FILE";
/// The server paths of a release's files.
pub const MANIFEST_PATH: &str = "/v1/updates/manifest.json";
pub const SIGNATURE_PATH: &str = "/v1/updates/manifest.json.minisig";
pub const FILES_PATH: &str = "/v1/updates/";
/// Nothing larger is downloaded (a package is a few MiB; the manifest a few KiB).
const MAX_MANIFEST: u64 = 64 * 1024;
const MAX_PACKAGE: u64 = 512 * 1024 * 1024;

pub use chartroom_protocol::update::{Manifest, Package, PackageFormat};

/// The format this machine installs: `.rpm` where RPM is the system's package manager, `.deb`
/// otherwise.
pub fn format_of_this_system() -> PackageFormat {
    let exists = |p: &str| std::path::Path::new(p).exists();
    if !exists("/etc/debian_version") && (exists("/etc/redhat-release") || exists("/etc/SuSE-release")) {
        PackageFormat::Rpm
    } else {
        PackageFormat::Deb
    }
}

/// Why an update was refused (or could not be checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("updates are switched off by this computer's machine policy")]
    Disabled,
    #[error("the server offers no update")]
    NoRelease,
    #[error("refused: the update manifest is not signed")]
    Unsigned,
    #[error("refused: the update was signed with another key than this program's release key")]
    WrongKey,
    #[error("refused: the signature does not match (the {0} was altered after it was signed)")]
    Tampered(&'static str),
    #[error("refused: the update manifest is not valid ({0})")]
    Malformed(String),
    #[error("refused: version {offered} is not newer than the installed {installed} (a downgrade)")]
    Downgrade { offered: String, installed: String },
    #[error("the release has no {0} package for this computer")]
    NoPackage(&'static str),
    #[error("the update key built into this program is not valid")]
    BadTrustedKey,
    #[error("{0}")]
    Server(String),
}

impl UpdateError {
    pub fn code(&self) -> &'static str {
        match self {
            UpdateError::Disabled => "update.disabled",
            UpdateError::NoRelease => "update.none",
            UpdateError::Unsigned => "update.unsigned",
            UpdateError::WrongKey => "update.wrong_key",
            UpdateError::Tampered(_) => "update.tampered",
            UpdateError::Malformed(_) => "update.malformed",
            UpdateError::Downgrade { .. } => "update.downgrade",
            UpdateError::NoPackage(_) => "update.no_package",
            UpdateError::BadTrustedKey => "update.bad_key",
            UpdateError::Server(_) => "update.server",
        }
    }
}

/// The key updates must be signed with.
#[derive(Debug)]
pub struct TrustedKey(minisign_verify::PublicKey);

impl TrustedKey {
    /// The release key built into this program; a debug build (tests) may name another in
    /// `$CHARTROOM_UPDATE_PUBLIC_KEY_FILE`.
    pub fn built_in() -> Result<TrustedKey, UpdateError> {
        if cfg!(debug_assertions) {
            if let Some(path) = std::env::var_os(UPDATE_KEY_ENV).filter(|p| !p.is_empty()) {
                let text = std::fs::read_to_string(path).map_err(|_| UpdateError::BadTrustedKey)?;
                return Self::decode(&text);
            }
        }
        Self::decode(RELEASE_PUBLIC_KEY)
    }

    /// A minisign public key file's text (comment line, key line), or the bare key line.
    pub fn decode(text: &str) -> Result<TrustedKey, UpdateError> {
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty()).ok_or(UpdateError::BadTrustedKey)?;
        minisign_verify::PublicKey::from_base64(line).map(TrustedKey).map_err(|_| UpdateError::BadTrustedKey)
    }

    /// Checks `signature` (a `.minisig` file's text) over `data`; `what` names the data in messages.
    fn verify(&self, data: &[u8], signature: &str, what: &'static str) -> Result<(), UpdateError> {
        let signature = minisign_verify::Signature::decode(signature)
            .map_err(|_| UpdateError::Malformed(format!("the {what}'s signature cannot be read")))?;
        match self.0.verify(data, &signature, false) {
            Ok(()) => Ok(()),
            Err(minisign_verify::Error::UnexpectedKeyId) => Err(UpdateError::WrongKey),
            Err(_) => Err(UpdateError::Tampered(what)),
        }
    }
}

/// Verifies a manifest and its signature; `None` means the server had no signature for it.
pub fn verify_manifest(
    manifest: &[u8],
    signature: Option<&str>,
    key: &TrustedKey,
) -> Result<Manifest, UpdateError> {
    let signature = signature.filter(|s| !s.trim().is_empty()).ok_or(UpdateError::Unsigned)?;
    key.verify(manifest, signature, "update manifest")?;
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| UpdateError::Malformed(e.to_string()))?;
    if manifest.product != "chartroom" {
        return Err(UpdateError::Malformed(format!("it is for `{}`, not chartroom", manifest.product)));
    }
    version(&manifest.version)?;
    for p in &manifest.packages {
        if !chartroom_protocol::update::is_release_file_name(&p.file)
            || p.sha256.len() != 64
            || !p.sha256.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(UpdateError::Malformed(format!("package entry `{}`", p.file.escape_default())));
        }
    }
    Ok(manifest)
}

/// What a verified manifest means for this installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    UpToDate { installed: String },
    Available { version: String, notes: String, package: Package },
}

/// Compares a verified manifest with the installed version: only a newer version is offered, and
/// only with a package of `format`.
pub fn offer(manifest: &Manifest, installed: &str, format: PackageFormat) -> Result<Offer, UpdateError> {
    let (new, old) = (version(&manifest.version)?, version(installed)?);
    if new == old {
        return Ok(Offer::UpToDate { installed: installed.to_owned() });
    }
    if new < old {
        return Err(UpdateError::Downgrade {
            offered: manifest.version.clone(),
            installed: installed.to_owned(),
        });
    }
    let package = manifest
        .packages
        .iter()
        .find(|p| p.format == format && p.arch == std::env::consts::ARCH)
        .ok_or(UpdateError::NoPackage(format.as_str()))?;
    Ok(Offer::Available {
        version: manifest.version.clone(),
        notes: manifest.notes.clone(),
        package: package.clone(),
    })
}

/// Checks a downloaded package against its verified manifest entry: size, SHA-256 and its own
/// signature.
pub fn verify_package(bytes: &[u8], package: &Package, key: &TrustedKey) -> Result<(), UpdateError> {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if bytes.len() as u64 != package.size || !hex.eq_ignore_ascii_case(&package.sha256) {
        return Err(UpdateError::Tampered("package"));
    }
    key.verify(bytes, &package.signature, "package")
}

/// `MAJOR.MINOR.PATCH`, numerically.
fn version(v: &str) -> Result<(u64, u64, u64), UpdateError> {
    let bad = || UpdateError::Malformed(format!("version `{}` is not MAJOR.MINOR.PATCH", v.escape_default()));
    let mut parts = v.trim().split('.').map(|p| p.parse::<u64>().map_err(|_| bad()));
    let out =
        (parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??);
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// Fetches and verifies the server's current release, and says what it means for `installed`.
pub async fn check(
    client: &chartroom_client::ServerClient,
    key: &TrustedKey,
    installed: &str,
    format: PackageFormat,
) -> Result<Offer, UpdateError> {
    let server = |e: chartroom_client::ClientError| UpdateError::Server(e.to_string());
    let manifest = client
        .fetch_file(MANIFEST_PATH, MAX_MANIFEST)
        .await
        .map_err(server)?
        .ok_or(UpdateError::NoRelease)?;
    let signature = client.fetch_file(SIGNATURE_PATH, MAX_MANIFEST).await.map_err(server)?;
    let signature = signature.map(|s| String::from_utf8_lossy(&s).into_owned());
    let manifest = verify_manifest(&manifest, signature.as_deref(), key)?;
    offer(&manifest, installed, format)
}

/// Downloads an offered package and verifies it; the bytes are returned only when every check passed.
pub async fn download(
    client: &chartroom_client::ServerClient,
    key: &TrustedKey,
    package: &Package,
) -> Result<Vec<u8>, UpdateError> {
    let path = format!("{FILES_PATH}{}", package.file);
    let bytes = client
        .fetch_file(&path, MAX_PACKAGE.min(package.size))
        .await
        .map_err(|e| UpdateError::Server(e.to_string()))?
        .ok_or_else(|| {
            UpdateError::Server("the server does not have the package the manifest lists".into())
        })?;
    verify_package(&bytes, package, key)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically_and_reject_anything_else() {
        assert!(version("0.10.0").unwrap() > version("0.9.12").unwrap());
        for bad in ["1.2", "1.2.3.4", "v1.2.3", "1.2.x", ""] {
            assert!(matches!(version(bad), Err(UpdateError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn the_built_in_key_is_a_valid_minisign_key() {
        TrustedKey::decode(RELEASE_PUBLIC_KEY).unwrap();
        assert_eq!(TrustedKey::decode("not a key").unwrap_err(), UpdateError::BadTrustedKey);
    }

    #[test]
    fn an_unsigned_manifest_is_refused_before_it_is_read() {
        let key = TrustedKey::decode(RELEASE_PUBLIC_KEY).unwrap();
        assert_eq!(verify_manifest(b"{}", None, &key).unwrap_err(), UpdateError::Unsigned);
        assert_eq!(verify_manifest(b"{}", Some("  \n"), &key).unwrap_err(), UpdateError::Unsigned);
    }
}
