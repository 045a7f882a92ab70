//! Hosting signed releases for the stations (`DATA/updates/`): the manifest `scripts/release` wrote,
//! its minisign signature and the packages it lists, served read-only at `/v1/updates/<file>`.
//!
//! The server does not hold the release key and is not trusted to: stations verify every signature
//! against the key built into them. `publish` still refuses an unsigned manifest or a package that
//! does not match its entry, so that a mistake is caught when IT makes it, not on 200 stations.

use std::fs;
use std::path::{Path, PathBuf};

use chartroom_protocol::update::{is_release_file_name, Manifest};
use sha2::{Digest, Sha256};

use crate::{DataDir, ServerError};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.json.minisig";

/// The directory the server serves releases from.
pub fn dir(data: &DataDir) -> PathBuf {
    data.path().join("updates")
}

/// A release file, opened for streaming, and its length; `None` for an unknown name (or one that
/// could name a path). Served in chunks: a package is never held in memory whole.
pub fn open(dir: &Path, name: &str) -> Result<Option<(fs::File, u64)>, ServerError> {
    if !is_release_file_name(name) {
        return Ok(None);
    }
    match fs::File::open(dir.join(name)) {
        Ok(file) => {
            let len = file.metadata()?.len();
            Ok(Some((file, len)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A release that was published.
#[derive(Debug, Clone)]
pub struct Published {
    pub version: String,
    pub packages: usize,
}

/// Makes the release in `from` (what `scripts/release` wrote) the one the server offers: checks
/// it, copies it beside the current one, records it in the trail, and switches the `updates` link
/// to it. Stations see the old release or the new one, never half of one.
pub fn publish(
    data: &DataDir,
    from: &Path,
    now: chartroom_domain::Timestamp,
) -> Result<Published, ServerError> {
    let invalid = |what: String| ServerError::Release(format!("the release in {}: {what}", from.display()));
    let manifest_bytes =
        fs::read(from.join(MANIFEST)).map_err(|_| invalid(format!("no readable {MANIFEST}")))?;
    let signature = fs::read_to_string(from.join(SIGNATURE)).unwrap_or_default();
    if signature.trim().is_empty() {
        return Err(invalid(format!("{MANIFEST} is not signed (no {SIGNATURE}); stations would refuse it")));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| invalid(format!("{MANIFEST} is not valid ({e})")))?;
    let mut files = vec![MANIFEST.to_owned(), SIGNATURE.to_owned()];
    for p in &manifest.packages {
        if !is_release_file_name(&p.file) {
            return Err(invalid(format!("package file name `{}` is not allowed", p.file.escape_default())));
        }
        let bytes = fs::read(from.join(&p.file)).map_err(|_| invalid(format!("{} is missing", p.file)))?;
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        if bytes.len() as u64 != p.size || !digest.eq_ignore_ascii_case(&p.sha256) {
            return Err(invalid(format!("{} does not match its manifest entry", p.file)));
        }
        files.push(p.file.clone());
    }
    // Recorded before it goes live: a release is never served without its entry in the trail.
    let storage = data.open_storage()?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let release = data.path().join(format!("updates-{id}"));
    fs::create_dir(&release)?;
    for f in &files {
        fs::copy(from.join(f), release.join(f))?;
        fs::File::open(release.join(f))?.sync_all()?;
    }
    crate::audit::admin_action(&*storage, "update_publish", "release", &manifest.version, now)?;
    // `updates` is a symbolic link to the live release; a new link renamed over it switches
    // releases in one step, so a station sees the old release or the new one, never half of one.
    let live = dir(data);
    let link = data.path().join(format!(".updates-{id}.link"));
    std::os::unix::fs::symlink(format!("updates-{id}"), &link)?;
    let previous = fs::read_link(&live).ok().map(|target| data.path().join(target));
    if previous.is_none() && live.is_dir() {
        // A directory left by an older version of this command.
        fs::rename(&live, data.path().join(format!("updates-old-{id}")))?;
    }
    fs::rename(&link, &live)?;
    if let Some(previous) = previous.filter(|p| *p != release) {
        let _ = fs::remove_dir_all(previous);
    }
    let _ = fs::remove_dir_all(data.path().join(format!("updates-old-{id}")));
    Ok(Published { version: manifest.version, packages: manifest.packages.len() })
}
