//! Signed releases: the update manifest `scripts/release` writes and the server hosts. The
//! signatures over it are checked by the station (`chartroom_station::update`).

use serde::{Deserialize, Serialize};

/// A release, as `scripts/release` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `chartroom`: a manifest of another product signed with the same key is refused.
    pub product: String,
    pub version: String,
    pub pub_date: String,
    pub notes: String,
    pub packages: Vec<Package>,
}

/// One installable file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub format: PackageFormat,
    pub arch: String,
    /// The file name on the server (`/v1/updates/<file>`).
    pub file: String,
    pub size: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// The file's own minisign signature (the text of its `.minisig`).
    pub signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    Deb,
    Rpm,
}

impl PackageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageFormat::Deb => "deb",
            PackageFormat::Rpm => "rpm",
        }
    }
}

impl std::str::FromStr for PackageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deb" => Ok(PackageFormat::Deb),
            "rpm" => Ok(PackageFormat::Rpm),
            _ => Err("the package format must be deb or rpm".into()),
        }
    }
}

/// Whether `name` may name a file of a release on the server: letters, digits and `._-+~`, not
/// starting with a dot (so never a path, never `..`).
pub fn is_release_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-+~".contains(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn release_file_names_are_never_paths() {
        for ok in ["manifest.json", "chartroom_0.2.0_amd64.deb", "chartroom-0.2.0-1.x86_64.rpm"] {
            assert!(super::is_release_file_name(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "../keys/master.key", "a/b", "a\\b", "x%2f..", "a b"] {
            assert!(!super::is_release_file_name(bad), "{bad}");
        }
    }
}
