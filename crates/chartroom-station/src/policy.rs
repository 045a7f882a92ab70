//! The machine policy IT installs on a station (`/etc/chartroom/policy.toml`, DESIGN §4).
//!
//! It beats anything a user or the enrollment chose: which server and certificate(s) to trust, how
//! the device is used, when the session warns and locks, how long offline logins last, which roles
//! may work here, and whether the in-app updater runs. A file that exists but is wrong in any way
//! is an error that names the bad key; nothing falls back to a default. The reference in
//! `docs/it-guide.md` is generated from [`KEYS`], and the parser accepts no key that is not there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chartroom_domain::{DeviceProfile, LockPolicy, Role};

/// Where IT installs the policy.
pub const SYSTEM_POLICY_FILE: &str = "/etc/chartroom/policy.toml";
/// Names another policy file. Honoured by debug builds only (tests); a release build reads
/// [`SYSTEM_POLICY_FILE`] and nothing else, so a user cannot hand the app a policy of their own.
pub const POLICY_FILE_ENV: &str = "CHARTROOM_POLICY_FILE";

const DAY: u64 = 86_400;
const KEY_ROTATION_MIN: Duration = Duration::from_secs(DAY);
const KEY_ROTATION_MAX: Duration = Duration::from_secs(365 * DAY);
const KEY_ROTATION_DEFAULT: Duration = Duration::from_secs(90 * DAY);

/// One key of the policy file, as the IT guide documents it.
#[derive(Debug, Clone, Copy)]
pub struct PolicyKey {
    pub name: &'static str,
    /// The TOML type and the allowed values.
    pub kind: &'static str,
    /// What applies when the key is absent.
    pub default: &'static str,
    pub meaning: &'static str,
    /// A valid value, as TOML (the reference shows it; a test parses it).
    pub example: &'static str,
}

/// Every key the policy file may hold.
pub const KEYS: &[PolicyKey] = &[
    PolicyKey {
        name: "server_url",
        kind: "string, `https://host:port`",
        default: "the URL given at enrollment",
        meaning: "The Chartroom server. Pre-filled (and enforced) on the enrollment screen; after \
                  enrollment the station connects here even if it was enrolled elsewhere. Requires \
                  `fingerprints`.",
        example: "\"https://chartroom.hospital.example:8443\"",
    },
    PolicyKey {
        name: "fingerprints",
        kind: "array of 1 or 2 strings, `sha256:<64 hex digits>`",
        default: "the fingerprint given at enrollment",
        meaning: "The server certificates the station accepts (pinned; no CA is trusted). List two \
                  while the server's certificate is being replaced, then remove the old one.",
        example: "[\"sha256:3f0c5e2a9d41b7c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f50\", \"sha256:9ab1d2c3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff\"]",
    },
    PolicyKey {
        name: "station_name",
        kind: "string",
        default: "the host name",
        meaning: "The device name pre-filled on the enrollment screen (the name IT gave to \
                  `chartroom-server device token`).",
        example: "\"icu-bed-3\"",
    },
    PolicyKey {
        name: "device_profile",
        kind: "`\"station\"` or `\"laptop\"`",
        default: "the profile of the enrollment token",
        meaning: "How the device is used: a shared ward terminal or a personal laptop. Sets the \
                  defaults and limits of the timeouts below.",
        example: "\"station\"",
    },
    PolicyKey {
        name: "idle_timeout",
        kind: "duration string (`\"90s\"`, `\"5m\"`, `\"1h\"`); station 1 min–15 min, laptop 1 min–30 min",
        default: "station 5 min, laptop 15 min",
        meaning: "The session locks after this long without keyboard or pointer input.",
        example: "\"4m\"",
    },
    PolicyKey {
        name: "warning",
        kind: "duration string, 5 s–2 min, shorter than `idle_timeout`",
        default: "30 s",
        meaning: "How long the lock warning counts down before the session locks.",
        example: "\"20s\"",
    },
    PolicyKey {
        name: "max_offline_age",
        kind: "duration string, 1 h–168 h",
        default: "72 h",
        meaning: "A user may log in offline (without the server) only this long after the server \
                  last confirmed their password.",
        example: "\"24h\"",
    },
    PolicyKey {
        name: "allowed_roles",
        kind: "array of `nurse`, `physician`, `billing`, `auditor`, `admin` (at least one)",
        default: "every role",
        meaning: "Who may log in on this device. Others are refused with a clear message, and the \
                  refusal is recorded.",
        example: "[\"nurse\", \"physician\", \"auditor\"]",
    },
    PolicyKey {
        name: "key_rotation",
        kind: "duration string, 1 d–365 d",
        default: "90 d",
        meaning: "How old the station's data key may get. At the first online login after that, the \
                  database is re-encrypted under a new key; the other users' key slots go with the old \
                  key, so each of them logs in online once more. Audited.",
        example: "\"30d\"",
    },
    PolicyKey {
        name: "updates",
        kind: "`\"on\"` or `\"off\"`",
        default: "`\"on\"`",
        meaning: "Whether the app checks the server for signed updates. Switch it off when updates \
                  come only through the package manager (APT repository, configuration management).",
        example: "\"off\"",
    },
];

/// The machine policy in force. [`MachinePolicy::default`] is "no policy file".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachinePolicy {
    /// The file it came from (for messages); `None` without a file.
    pub source: Option<PathBuf>,
    pub server_url: Option<String>,
    /// Pinned certificate fingerprints (`sha256:<hex>`, one or two); empty: the enrollment's.
    pub fingerprints: Vec<String>,
    pub station_name: Option<String>,
    pub device_profile: Option<DeviceProfile>,
    idle_timeout: Option<Duration>,
    warning: Option<Duration>,
    max_offline_age: Option<Duration>,
    /// `None`: every role.
    pub allowed_roles: Option<Vec<Role>>,
    /// `Some(false)` when IT switched the in-app updater off.
    updates: Option<bool>,
    key_rotation: Option<Duration>,
}

/// A policy file that cannot be used. The message names the file and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("machine policy {file}: {problem}")]
pub struct InvalidPolicy {
    pub file: String,
    /// The bad key, when one is to blame (`None`: the file as a whole, e.g. not TOML).
    pub key: Option<String>,
    pub problem: String,
}

impl MachinePolicy {
    /// The file to read: [`SYSTEM_POLICY_FILE`], or `$CHARTROOM_POLICY_FILE` in a debug build.
    pub fn system_path() -> PathBuf {
        if cfg!(debug_assertions) {
            if let Some(p) = std::env::var_os(POLICY_FILE_ENV).filter(|p| !p.is_empty()) {
                return PathBuf::from(p);
            }
        }
        PathBuf::from(SYSTEM_POLICY_FILE)
    }

    /// Reads the machine policy; no file means no policy. A file that cannot be read or is invalid
    /// is an error (never ignored).
    pub fn load_system() -> Result<MachinePolicy, InvalidPolicy> {
        Self::load(&Self::system_path())
    }

    pub fn load(path: &Path) -> Result<MachinePolicy, InvalidPolicy> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MachinePolicy::default()),
            Err(e) => Err(InvalidPolicy {
                file: path.display().to_string(),
                key: None,
                problem: format!("cannot be read ({})", e.kind()),
            }),
        }
    }

    /// Parses and checks a policy file's text; `path` is only for messages.
    pub fn parse(text: &str, path: &Path) -> Result<MachinePolicy, InvalidPolicy> {
        let file = path.display().to_string();
        let fail = |key: &str, problem: String| InvalidPolicy {
            file: file.clone(),
            key: Some(key.to_owned()),
            problem: format!("`{key}` {problem}"),
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| InvalidPolicy {
            file: file.clone(),
            key: None,
            problem: format!("is not valid TOML: {}", e.message()),
        })?;
        let mut p = MachinePolicy { source: Some(path.to_owned()), ..MachinePolicy::default() };
        for (key, value) in &table {
            let Some(spec) = KEYS.iter().find(|k| k.name == key) else {
                let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
                return Err(fail(key, format!("is not a policy key (known keys: {})", known.join(", "))));
            };
            let bad = |what: &str| fail(spec.name, format!("must be {what}"));
            match spec.name {
                "server_url" => {
                    let url = value.as_str().ok_or_else(|| bad("a string"))?.trim();
                    let rest = url.strip_prefix("https://").ok_or_else(|| bad("an https:// URL"))?;
                    if rest.is_empty() || rest.contains(char::is_whitespace) {
                        return Err(bad("an https:// URL"));
                    }
                    p.server_url = Some(url.trim_end_matches('/').to_owned());
                }
                "fingerprints" => {
                    let list = value.as_array().ok_or_else(|| bad("an array of strings"))?;
                    if list.is_empty() || list.len() > 2 {
                        return Err(bad("a list of one or two fingerprints"));
                    }
                    for f in list {
                        let f = f.as_str().ok_or_else(|| bad("an array of strings"))?.trim();
                        chartroom_client::PinnedCertificate::new(f)
                            .map_err(|_| bad("a list of fingerprints written as sha256:<64 hex digits>"))?;
                        p.fingerprints.push(f.to_ascii_lowercase());
                    }
                }
                "station_name" => {
                    let name = value.as_str().ok_or_else(|| bad("a string"))?.trim();
                    if name.is_empty() || name.len() > 128 {
                        return Err(bad("a name of 1 to 128 characters"));
                    }
                    p.station_name = Some(name.to_owned());
                }
                "device_profile" => {
                    let s = value.as_str().ok_or_else(|| bad("\"station\" or \"laptop\""))?;
                    p.device_profile = Some(s.parse().map_err(|_| bad("\"station\" or \"laptop\""))?);
                }
                "idle_timeout" => p.idle_timeout = Some(duration(value).map_err(|m| bad(&m))?),
                "warning" => p.warning = Some(duration(value).map_err(|m| bad(&m))?),
                "max_offline_age" => p.max_offline_age = Some(duration(value).map_err(|m| bad(&m))?),
                "allowed_roles" => {
                    let names = "an array of roles (nurse, physician, billing, auditor, admin)";
                    let list = value.as_array().ok_or_else(|| bad(names))?;
                    let mut roles = Vec::new();
                    for r in list {
                        let role: Role = r.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad(names))?;
                        if !roles.contains(&role) {
                            roles.push(role);
                        }
                    }
                    if roles.is_empty() {
                        return Err(bad("a list naming at least one role"));
                    }
                    p.allowed_roles = Some(roles);
                }
                "key_rotation" => {
                    let d = duration(value).map_err(|m| bad(&m))?;
                    if !(KEY_ROTATION_MIN..=KEY_ROTATION_MAX).contains(&d) {
                        return Err(bad("between 1d and 365d"));
                    }
                    p.key_rotation = Some(d);
                }
                "updates" => {
                    p.updates = Some(match value.as_str() {
                        Some("on") => true,
                        Some("off") => false,
                        _ => return Err(bad("\"on\" or \"off\"")),
                    });
                }
                other => return Err(fail(other, "is documented but not understood by this build".into())),
            }
        }
        if p.server_url.is_some() && p.fingerprints.is_empty() {
            return Err(fail("fingerprints", "must be given when server_url is set".into()));
        }
        // The timeouts are checked against the policy's profile now. Without one, against the
        // widest limits (a laptop's) now, and against the enrolled profile before anyone logs in.
        p.lock_policy(p.device_profile.unwrap_or(DeviceProfile::Laptop))?;
        Ok(p)
    }

    /// The lock policy for a device enrolled as `enrolled`: the policy's profile wins, then its
    /// timeouts apply within that profile's limits. An out-of-bounds timeout is an error naming it.
    pub fn lock_policy(&self, enrolled: DeviceProfile) -> Result<LockPolicy, InvalidPolicy> {
        let profile = self.device_profile.unwrap_or(enrolled);
        let mut policy = LockPolicy::defaults(profile);
        let apply = |r: Result<LockPolicy, chartroom_domain::PolicyError>| {
            r.map_err(|e| InvalidPolicy {
                file: self.file_name(),
                key: Some(e.key.to_owned()),
                problem: format!("`{}` {} (device profile {})", e.key, e.message, profile.as_str()),
            })
        };
        // Idle first (the default warning is shorter than any idle timeout), then the warning,
        // which must be shorter than the idle timeout in force.
        if let Some(idle) = self.idle_timeout {
            policy = apply(policy.with_idle(idle))?;
        }
        if let Some(w) = self.warning {
            policy = apply(policy.with_warning(w))?;
        }
        if let Some(age) = self.max_offline_age {
            policy = apply(policy.with_max_offline_age(age))?;
        }
        Ok(policy)
    }

    /// Whether a user with `role` may log in on this device.
    pub fn allows(&self, role: Role) -> bool {
        self.allowed_roles.as_ref().is_none_or(|r| r.contains(&role))
    }

    /// How old the station's data key may get before an online login rotates it.
    pub fn key_rotation(&self) -> Duration {
        self.key_rotation.unwrap_or(KEY_ROTATION_DEFAULT)
    }

    /// Whether the in-app updater may run.
    pub fn updates_enabled(&self) -> bool {
        self.updates.unwrap_or(true)
    }

    /// The server to talk to: the policy's URL and fingerprints beat the enrollment's.
    pub fn server_client(
        &self,
        link: &crate::profile::ServerLink,
    ) -> Result<chartroom_client::ServerClient, chartroom_client::ClientError> {
        let url = self.server_url.as_deref().unwrap_or(&link.url);
        let pins: Vec<&str> = if self.fingerprints.is_empty() {
            vec![link.fingerprint.as_str()]
        } else {
            self.fingerprints.iter().map(String::as_str).collect()
        };
        chartroom_client::ServerClient::pinned(url, &pins)
    }

    /// The client an enrollment uses: pinned to the policy's fingerprints when it names any (the
    /// server's certificate may be either of two while it is replaced), else to `fingerprint`.
    pub fn enrollment_client(
        &self,
        server_url: &str,
        fingerprint: &str,
    ) -> Result<chartroom_client::ServerClient, chartroom_client::ClientError> {
        if self.fingerprints.is_empty() {
            chartroom_client::ServerClient::new(server_url.trim(), fingerprint.trim())
        } else {
            let pins: Vec<&str> = self.fingerprints.iter().map(String::as_str).collect();
            chartroom_client::ServerClient::pinned(server_url.trim(), &pins)
        }
    }

    /// Refuses an enrollment with another server or certificate than the policy pins.
    pub fn check_enrollment(&self, server_url: &str, fingerprint: &str) -> Result<(), crate::StationError> {
        if let Some(url) = &self.server_url {
            if !url.eq_ignore_ascii_case(server_url.trim().trim_end_matches('/')) {
                return Err(crate::StationError::EnrollmentAgainstPolicy { key: "server_url" });
            }
        }
        let fingerprint = fingerprint.trim().to_ascii_lowercase();
        if !self.fingerprints.is_empty() && !self.fingerprints.contains(&fingerprint) {
            return Err(crate::StationError::EnrollmentAgainstPolicy { key: "fingerprints" });
        }
        Ok(())
    }

    fn file_name(&self) -> String {
        self.source.as_ref().map_or_else(|| "(none)".to_owned(), |p| p.display().to_string())
    }

    /// The policy reference as Markdown (the IT guide embeds it).
    pub fn reference_markdown() -> String {
        let mut out = String::from("| key | value | when absent | meaning |\n|---|---|---|---|\n");
        for k in KEYS {
            out.push_str(&format!("| `{}` | {} | {} | {} |\n", k.name, k.kind, k.default, k.meaning));
        }
        out.push_str("\nExample (every key):\n\n```toml\n");
        for k in KEYS {
            out.push_str(&format!("{} = {}\n", k.name, k.example));
        }
        out.push_str("```\n");
        out
    }
}

/// A duration written with a unit: `"90s"`, `"5m"`, `"72h"`, `"2d"`.
fn duration(value: &toml::Value) -> Result<Duration, String> {
    let hint = "a duration with a unit, like \"90s\", \"5m\" or \"72h\"";
    let s = value.as_str().ok_or_else(|| hint.to_owned())?.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| hint.to_owned())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| hint.to_owned())?;
    let seconds = match unit.trim() {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(hint.to_owned()),
    };
    n.checked_mul(seconds).map(Duration::from_secs).ok_or_else(|| hint.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP1: &str = "sha256:3f0c0000000000000000000000000000000000000000000000000000000000aa";
    const FP2: &str = "sha256:9ab10000000000000000000000000000000000000000000000000000000000bb";

    fn parse(text: &str) -> Result<MachinePolicy, InvalidPolicy> {
        MachinePolicy::parse(text, Path::new("/etc/chartroom/policy.toml"))
    }

    #[test]
    fn a_full_policy_applies_every_key() {
        let p = parse(&format!(
            "server_url = \"https://chartroom.example:8443/\"\nfingerprints = [\"{FP1}\", \"{}\"]\n\
             station_name = \"icu-3\"\ndevice_profile = \"laptop\"\nidle_timeout = \"20m\"\nwarning = \"45s\"\n\
             max_offline_age = \"24h\"\nallowed_roles = [\"physician\", \"auditor\"]\nupdates = \"off\"\n",
            FP2.to_uppercase().replace("SHA256", "sha256")
        ))
        .unwrap();
        assert_eq!(p.server_url.as_deref(), Some("https://chartroom.example:8443"));
        assert_eq!(p.fingerprints, [FP1, FP2]);
        assert_eq!(p.station_name.as_deref(), Some("icu-3"));
        // The policy's profile beats the enrollment's, and its timeouts apply.
        let lock = p.lock_policy(DeviceProfile::Station).unwrap();
        assert_eq!(lock.profile(), DeviceProfile::Laptop);
        assert_eq!(lock.idle(), Duration::from_secs(20 * 60));
        assert_eq!(lock.warning(), Duration::from_secs(45));
        assert_eq!(lock.max_offline_age(), Duration::from_secs(24 * 3600));
        assert!(p.allows(Role::Physician) && !p.allows(Role::Nurse));
        assert!(!p.updates_enabled());
    }

    // hipaa (e)(1): enrollment goes only to the policy's server and certificate
    #[test]
    fn enrollment_must_use_the_pinned_server_and_certificate() {
        let p = parse(&format!(
            "server_url = \"https://chartroom.example:8443\"\nfingerprints = [\"{FP1}\", \"{FP2}\"]"
        ))
        .unwrap();
        p.check_enrollment(
            "https://chartroom.example:8443/",
            &FP2.to_uppercase().replace("SHA256", "sha256"),
        )
        .unwrap();
        let e = p.check_enrollment("https://elsewhere.example:8443", FP1).unwrap_err();
        assert_eq!((e.code(), e.to_string().contains("`server_url`")), ("policy.enrollment_mismatch", true));
        let other = "sha256:".to_owned() + &"1".repeat(64);
        let e = p.check_enrollment("https://chartroom.example:8443", &other).unwrap_err();
        assert!(e.to_string().contains("`fingerprints`"), "{e}");
        MachinePolicy::default().check_enrollment("https://anywhere.example", &other).unwrap();
    }

    #[test]
    fn no_file_is_no_policy_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let p = MachinePolicy::load(&dir.path().join("policy.toml")).unwrap();
        assert_eq!(p, MachinePolicy::default());
        assert_eq!(
            p.lock_policy(DeviceProfile::Station).unwrap(),
            LockPolicy::defaults(DeviceProfile::Station)
        );
        assert!(p.allows(Role::Nurse) && p.updates_enabled());
    }

    #[test]
    fn every_mistake_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("idle_timout = \"5m\"", "idle_timout"),
            ("server_url = 42", "server_url"),
            (&format!("server_url = \"http://chartroom.example\"\nfingerprints = [\"{FP1}\"]"), "server_url"),
            (&format!("server_url = \"https://chartroom.example\"\nfingerprints = [\"{FP1}\", \"{FP2}\", \"{FP1}\"]"), "fingerprints"),
            ("fingerprints = [\"sha256:abc\"]", "fingerprints"),
            ("server_url = \"https://chartroom.example\"", "fingerprints"),
            ("device_profile = \"kiosk\"", "device_profile"),
            ("device_profile = \"station\"\nidle_timeout = \"20m\"", "idle_timeout"),
            ("idle_timeout = 300", "idle_timeout"),
            ("idle_timeout = \"5 parsecs\"", "idle_timeout"),
            ("warning = \"1s\"", "warning"),
            ("device_profile = \"station\"\nidle_timeout = \"1m\"\nwarning = \"90s\"", "warning"),
            ("max_offline_age = \"30d\"", "max_offline_age"),
            ("allowed_roles = []", "allowed_roles"),
            ("allowed_roles = [\"surgeon\"]", "allowed_roles"),
            ("updates = true", "updates"),
            ("key_rotation = \"12h\"", "key_rotation"),
            ("station_name = \"\"", "station_name"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(*key), "{text}: {e}");
            let shown = e.to_string();
            assert!(
                shown.contains(&format!("`{key}`")) && shown.contains("/etc/chartroom/policy.toml"),
                "{shown}"
            );
        }
        let e = parse("this is = not [toml").unwrap_err();
        assert_eq!(e.key, None);
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }

    #[test]
    fn timeouts_without_a_profile_are_checked_against_the_enrolled_one() {
        let p = parse("idle_timeout = \"20m\"").unwrap();
        assert_eq!(p.lock_policy(DeviceProfile::Laptop).unwrap().idle(), Duration::from_secs(1200));
        assert_eq!(p.lock_policy(DeviceProfile::Station).unwrap_err().key.as_deref(), Some("idle_timeout"));
        // A short idle timeout with a warning shorter still is fine whatever the line order.
        let p = parse("warning = \"20s\"\nidle_timeout = \"1m\"").unwrap();
        assert_eq!(p.lock_policy(DeviceProfile::Station).unwrap().warning(), Duration::from_secs(20));
    }

    #[test]
    fn an_unreadable_file_is_an_error_not_an_absent_policy() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be cannot be read as a file.
        let e = MachinePolicy::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("cannot be read"), "{e}");
    }

    /// The reference documents exactly the keys the parser accepts: every documented example
    /// parses, and the examples together form a valid policy.
    #[test]
    fn every_documented_key_is_understood() {
        for k in KEYS {
            let mut text = format!("{} = {}\n", k.name, k.example);
            if k.name == "server_url" {
                text.push_str(&format!("fingerprints = [\"{FP1}\"]\n"));
            }
            parse(&text).unwrap_or_else(|e| panic!("{}: {e}", k.name));
        }
        let all: String = KEYS.iter().map(|k| format!("{} = {}\n", k.name, k.example)).collect();
        parse(&all).unwrap();
    }

    /// `docs/it-guide.md` carries the generated reference; `CHARTROOM_BLESS=1` rewrites it.
    #[test]
    fn it_guide_policy_reference_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/it-guide.md");
        let guide = std::fs::read_to_string(&path).unwrap();
        let (start, end) =
            ("<!-- policy-reference:begin (generated; do not edit) -->\n", "<!-- policy-reference:end -->");
        let a = guide.find(start).expect("begin marker") + start.len();
        let b = guide.find(end).expect("end marker");
        let wanted = MachinePolicy::reference_markdown();
        if guide[a..b] != wanted {
            if std::env::var_os("CHARTROOM_BLESS").is_some() {
                std::fs::write(&path, format!("{}{}{}", &guide[..a], wanted, &guide[b..])).unwrap();
            } else {
                panic!("docs/it-guide.md's policy reference is stale; run with CHARTROOM_BLESS=1");
            }
        }
    }
}
