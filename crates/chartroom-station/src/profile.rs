//! The profile directory: what a station keeps on disk, and how it is written safely.
//!
//! ```text
//! DIR/device.json            device id, device profile, keyring backend (no secrets)
//! DIR/keyslots.json          per-user key slots and the recovery slot (sealed; useless without the keyring)
//! DIR/cache.db (-wal, -shm)  the SQLCipher database (cache.db.lock: who has it open; cache.db.rekey:
//!                            a data key rotation's copy, only while it is being written)
//! DIR/login-attempts.json    failed-login counters per username (throttling survives restarts)
//! DIR/security-events.jsonl  security-relevant events that happen while no database is open (failed
//!                            logins, keyring changes; no PHI), moved into the audit chain at unlock
//! ```
//! File names never carry PHI. Files are written to a temporary name, synced and renamed, so a crash
//! leaves either the old or the new version, never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chartroom_crypto::{KeySlot, RecoverySlot};
use chartroom_domain::{DeviceProfile, LoginThrottle, Role, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::StationError;

const FORMAT: u32 = 1;

/// `device.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub format: u32,
    pub device_id: Uuid,
    pub profile: DeviceProfile,
    /// The keyring backend that holds the device secret (see `DeviceSecretStore::backend`).
    pub keystore: String,
    pub created_at: Timestamp,
    /// The server this station enrolled with (absent for a stand-alone demo vault).
    #[serde(default)]
    pub server: Option<ServerLink>,
}

/// Where the server is and which certificate it must present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLink {
    pub url: String,
    /// `sha256:<hex>` of the server certificate (pinned; no other certificate is accepted).
    pub fingerprint: String,
    /// The device name the administrator gave at `device token`.
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SlotRecord {
    user_id: Uuid,
    username: String,
    /// Hex of the key slot bytes.
    slot: String,
    /// SHA-256 of the slot bytes: a damaged slot is reported as damage, not as a wrong password
    /// (the slot's own AEAD tag cannot tell the two apart). Not a security check — whoever can
    /// rewrite the slot can rewrite this too; the AEAD is what protects the key.
    sha256: String,
    /// The user's role as the server last said (what this station lets them do offline).
    #[serde(default)]
    role: Option<Role>,
    /// When the server last confirmed this user (an online login); offline logins end after the
    /// policy's maximum offline age. `None` for vaults that never had a server.
    #[serde(default)]
    last_online: Option<Timestamp>,
    /// The units the server last gave this user (what they may read here); empty: not told.
    #[serde(default)]
    units: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SlotFile {
    format: u32,
    users: Vec<SlotRecord>,
    recovery: Option<String>,
    /// Hex of the escrow slot (the data key for first online logins).
    #[serde(default)]
    escrow: Option<String>,
    /// When the current data key was made (`None`: at enrollment, `device.json`'s `created_at`).
    #[serde(default)]
    dek_since: Option<Timestamp>,
    /// A data key rotation under way: the new key's slots, written before the database moves to
    /// the new key. The next unlock finds out which key the database is under, and either adopts
    /// these (the database moved) or drops them (it had not).
    #[serde(default)]
    pending: Option<PendingSlots>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingSlots {
    user: SlotRecord,
    escrow: String,
    recovery: Option<String>,
    since: Timestamp,
}

/// A user known to this device (has a key slot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotUser {
    pub user_id: Uuid,
    pub username: String,
    pub slot: KeySlot,
    pub role: Option<Role>,
    pub last_online: Option<Timestamp>,
    /// The user's units as the server last said (empty: never told, e.g. a vault without a server).
    pub units: Vec<String>,
}

/// A station profile directory.
#[derive(Clone, Debug)]
pub struct Profile {
    dir: PathBuf,
}

impl Profile {
    pub fn new(dir: impl Into<PathBuf>) -> Profile {
        Profile { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn database_path(&self) -> PathBuf {
        self.dir.join("cache.db")
    }
    fn device_path(&self) -> PathBuf {
        self.dir.join("device.json")
    }
    fn slots_path(&self) -> PathBuf {
        self.dir.join("keyslots.json")
    }
    fn events_path(&self) -> PathBuf {
        self.dir.join("security-events.jsonl")
    }
    fn attempts_path(&self) -> PathBuf {
        self.dir.join("login-attempts.json")
    }

    /// The failed-login counters. A missing file means none; an unreadable one is recorded and
    /// started afresh, because refusing every login over a damaged counter file would lock a ward out.
    pub fn read_throttle(&self, now: Timestamp) -> Result<LoginThrottle, StationError> {
        match fs::read(self.attempts_path()) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(t) => Ok(t),
                Err(_) => {
                    self.record_event(now, "login_attempts_file_damaged", serde_json::json!({}))?;
                    Ok(LoginThrottle::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoginThrottle::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn write_throttle(&self, throttle: &LoginThrottle) -> Result<(), StationError> {
        let json =
            serde_json::to_vec(throttle).map_err(|_| StationError::ProfileDamaged("login-attempts.json"))?;
        write_atomic(&self.attempts_path(), &json)
    }

    pub fn is_enrolled(&self) -> bool {
        self.device_path().exists()
    }

    /// Creates the directory (0700 on Unix).
    pub fn create_dir(&self) -> Result<(), StationError> {
        fs::create_dir_all(&self.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    pub fn read_device(&self) -> Result<DeviceRecord, StationError> {
        let bytes = match fs::read(self.device_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StationError::NotEnrolled),
            Err(e) => return Err(e.into()),
        };
        let rec: DeviceRecord =
            serde_json::from_slice(&bytes).map_err(|_| StationError::ProfileDamaged("device.json"))?;
        if rec.format != FORMAT {
            return Err(StationError::ProfileDamaged("device.json"));
        }
        Ok(rec)
    }

    pub fn write_device(&self, rec: &DeviceRecord) -> Result<(), StationError> {
        let json = serde_json::to_vec_pretty(rec).map_err(|_| StationError::ProfileDamaged("device.json"))?;
        write_atomic(&self.device_path(), &json)
    }

    fn read_slot_file(&self) -> Result<SlotFile, StationError> {
        match fs::read(self.slots_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|_| StationError::ProfileDamaged("keyslots.json")),
            // An enrolled device always has its slot file (it is written before device.json).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.is_enrolled() => {
                Err(StationError::ProfileDamaged("keyslots.json"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(SlotFile { format: FORMAT, ..SlotFile::default() })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn write_slot_file(&self, file: &SlotFile) -> Result<(), StationError> {
        let json =
            serde_json::to_vec_pretty(file).map_err(|_| StationError::ProfileDamaged("keyslots.json"))?;
        write_atomic(&self.slots_path(), &json)
    }

    /// The key slot stored under `username` (case-insensitive).
    pub fn slot_for(&self, username: &str) -> Result<Option<SlotUser>, StationError> {
        let file = self.read_slot_file()?;
        let Some(rec) = file.users.iter().find(|u| u.username.eq_ignore_ascii_case(username)) else {
            return Ok(None);
        };
        let bytes = from_hex(&rec.slot).ok_or(StationError::ProfileDamaged("keyslots.json"))?;
        if to_hex(&Sha256::digest(&bytes)) != rec.sha256 {
            return Err(StationError::ProfileDamaged("keyslots.json"));
        }
        let slot = KeySlot::from_bytes(&bytes).map_err(|_| StationError::ProfileDamaged("keyslots.json"))?;
        Ok(Some(SlotUser {
            user_id: rec.user_id,
            username: rec.username.clone(),
            slot,
            role: rec.role,
            last_online: rec.last_online,
            units: rec.units.clone(),
        }))
    }

    /// Usernames with a slot on this device.
    pub fn usernames(&self) -> Result<Vec<String>, StationError> {
        Ok(self.read_slot_file()?.users.into_iter().map(|u| u.username).collect())
    }

    /// Adds or replaces the slot of `username`.
    pub fn put_slot(
        &self,
        user_id: Uuid,
        username: &str,
        role: Option<Role>,
        last_online: Option<Timestamp>,
        units: &[String],
        slot: &KeySlot,
    ) -> Result<(), StationError> {
        let mut file = self.read_slot_file()?;
        file.users.retain(|u| !u.username.eq_ignore_ascii_case(username) && u.user_id != user_id);
        file.users.push(SlotRecord {
            user_id,
            username: username.to_owned(),
            slot: to_hex(slot.as_bytes()),
            sha256: to_hex(&Sha256::digest(slot.as_bytes())),
            role,
            last_online,
            units: units.to_vec(),
        });
        self.write_slot_file(&file)
    }

    /// Deletes `username`'s slot (the server disabled the account): offline logins end with it.
    pub fn remove_slot(&self, username: &str) -> Result<bool, StationError> {
        let mut file = self.read_slot_file()?;
        let before = file.users.len();
        file.users.retain(|u| !u.username.eq_ignore_ascii_case(username));
        let removed = file.users.len() != before;
        if removed {
            self.write_slot_file(&file)?;
        }
        Ok(removed)
    }

    /// When the current data key was made (`None`: at enrollment).
    pub fn dek_since(&self) -> Result<Option<Timestamp>, StationError> {
        Ok(self.read_slot_file()?.dek_since)
    }

    /// Whether a data key rotation was interrupted before its last step.
    pub fn has_pending_rotation(&self) -> Result<bool, StationError> {
        Ok(self.read_slot_file()?.pending.is_some())
    }

    /// Records the slots of a new data key (the rotating user's, the escrow and the recovery
    /// slot) beside the current ones, before the database moves to the new key.
    pub fn stage_key_rotation(
        &self,
        user: &SlotUser,
        escrow: &chartroom_crypto::EscrowSlot,
        recovery: Option<&RecoverySlot>,
        since: Timestamp,
    ) -> Result<(), StationError> {
        let mut file = self.read_slot_file()?;
        file.pending = Some(PendingSlots {
            user: SlotRecord {
                user_id: user.user_id,
                username: user.username.clone(),
                slot: to_hex(user.slot.as_bytes()),
                sha256: to_hex(&Sha256::digest(user.slot.as_bytes())),
                role: user.role,
                last_online: user.last_online,
                units: user.units.clone(),
            },
            escrow: to_hex(escrow.as_bytes()),
            recovery: recovery.map(|r| to_hex(r.as_bytes())),
            since,
        });
        self.write_slot_file(&file)
    }

    /// The new data key's slot for `username`, while a rotation is pending.
    pub fn pending_slot_for(&self, username: &str) -> Result<Option<KeySlot>, StationError> {
        let file = self.read_slot_file()?;
        let Some(p) = file.pending.filter(|p| p.user.username.eq_ignore_ascii_case(username)) else {
            return Ok(None);
        };
        let bytes = from_hex(&p.user.slot).ok_or(StationError::ProfileDamaged("keyslots.json"))?;
        KeySlot::from_bytes(&bytes).map(Some).map_err(|_| StationError::ProfileDamaged("keyslots.json"))
    }

    /// The new data key's escrow slot, while a rotation is pending.
    pub fn pending_escrow_slot(&self) -> Result<Option<chartroom_crypto::EscrowSlot>, StationError> {
        let Some(p) = self.read_slot_file()?.pending else { return Ok(None) };
        let bytes = from_hex(&p.escrow).ok_or(StationError::ProfileDamaged("keyslots.json"))?;
        chartroom_crypto::EscrowSlot::from_bytes(&bytes)
            .map(Some)
            .map_err(|_| StationError::ProfileDamaged("keyslots.json"))
    }

    /// The database moved to the new data key: its slots become the slots, in one atomic write.
    /// Every other user's slot goes (sealed over the old key); they log in online once again.
    /// Returns how many were dropped.
    pub fn commit_key_rotation(&self) -> Result<usize, StationError> {
        let mut file = self.read_slot_file()?;
        let Some(p) = file.pending.take() else { return Ok(0) };
        let dropped = file.users.iter().filter(|u| u.user_id != p.user.user_id).count();
        file.users = vec![p.user];
        file.escrow = Some(p.escrow);
        file.recovery = p.recovery;
        file.dek_since = Some(p.since);
        self.write_slot_file(&file)?;
        Ok(dropped)
    }

    /// The database never moved to the new data key: its slots are dropped (and a half-written
    /// copy of the database with them).
    pub fn abandon_key_rotation(&self) -> Result<(), StationError> {
        let mut file = self.read_slot_file()?;
        if file.pending.take().is_some() {
            self.write_slot_file(&file)?;
        }
        match fs::remove_file(PathBuf::from(format!("{}.rekey", self.database_path().display()))) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn put_recovery_slot(&self, slot: &RecoverySlot) -> Result<(), StationError> {
        let mut file = self.read_slot_file()?;
        file.recovery = Some(to_hex(slot.as_bytes()));
        self.write_slot_file(&file)
    }

    /// Re-keying after a recovery, in one atomic write: the escrow slot sealed under the new device
    /// secret replaces the old one, and every user slot goes (each was sealed under the lost
    /// secret). The recovery slot stays: it still opens the same data key. Returns how many user
    /// slots were dropped.
    pub fn rekey_slots(&self, escrow: &chartroom_crypto::EscrowSlot) -> Result<usize, StationError> {
        let mut file = self.read_slot_file()?;
        let dropped = file.users.len();
        file.users.clear();
        file.escrow = Some(to_hex(escrow.as_bytes()));
        self.write_slot_file(&file)?;
        Ok(dropped)
    }

    pub fn put_escrow_slot(&self, slot: &chartroom_crypto::EscrowSlot) -> Result<(), StationError> {
        let mut file = self.read_slot_file()?;
        file.escrow = Some(to_hex(slot.as_bytes()));
        self.write_slot_file(&file)
    }

    pub fn escrow_slot(&self) -> Result<Option<chartroom_crypto::EscrowSlot>, StationError> {
        let Some(hex) = self.read_slot_file()?.escrow else {
            return Ok(None);
        };
        let bytes = from_hex(&hex).ok_or(StationError::ProfileDamaged("keyslots.json"))?;
        chartroom_crypto::EscrowSlot::from_bytes(&bytes)
            .map(Some)
            .map_err(|_| StationError::ProfileDamaged("keyslots.json"))
    }

    pub fn recovery_slot(&self) -> Result<Option<RecoverySlot>, StationError> {
        let Some(hex) = self.read_slot_file()?.recovery else {
            return Ok(None);
        };
        let bytes = from_hex(&hex).ok_or(StationError::ProfileDamaged("keyslots.json"))?;
        RecoverySlot::from_bytes(&bytes).map(Some).map_err(|_| StationError::ProfileDamaged("keyslots.json"))
    }

    /// Appends one security event (no PHI: event name, ids and backend names only).
    pub fn record_event(
        &self,
        at: Timestamp,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<(), StationError> {
        let line =
            serde_json::json!({ "at": at.to_string(), "at_ms": at.0, "event": event, "detail": detail });
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(self.events_path())?;
        writeln!(f, "{line}")?;
        f.sync_all()?;
        Ok(())
    }

    /// The security events recorded while no database was open, as audit events (to be appended to
    /// the chain at the next unlock).
    pub fn pending_security_events(
        &self,
        now: Timestamp,
    ) -> Result<Vec<chartroom_audit::Event>, StationError> {
        let text = match fs::read_to_string(self.events_path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A damaged line is kept as what it is: a damaged pre-unlock record.
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let at = v["at_ms"].as_i64().map_or(now, Timestamp);
            let action = v["event"].as_str().unwrap_or("security_event_damaged");
            let outcome = v["detail"]["outcome"].as_str().unwrap_or("ok");
            let mut e = chartroom_audit::Event::new(at, action, "station", outcome);
            e.username = v["detail"]["username"].as_str().map(|u| u.chars().take(64).collect());
            out.push(e);
        }
        Ok(out)
    }

    /// Empties the pre-unlock event file once its events are in the audit chain.
    pub fn clear_security_events(&self) -> Result<(), StationError> {
        match fs::remove_file(self.events_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every file this profile may hold.
    pub fn files(&self) -> Vec<PathBuf> {
        let db = self.database_path();
        vec![
            self.device_path(),
            self.slots_path(),
            self.attempts_path(),
            self.events_path(),
            PathBuf::from(format!("{}-wal", db.display())),
            PathBuf::from(format!("{}-shm", db.display())),
            PathBuf::from(format!("{}.rekey", db.display())),
            PathBuf::from(format!("{}.lock", db.display())),
            db,
        ]
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StationError> {
    let tmp = path.with_extension("tmp");
    {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let b = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&b)), Some(b));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }
}
