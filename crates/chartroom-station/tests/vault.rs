//! Vault tests against real SQLCipher files, with the in-memory keystore standing in for the OS
//! keyring (the real keyring is exercised by the end-to-end tests in `tests/`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use chartroom_crypto::{DeviceSecret, KdfParams, Password, RecoveryKeyPair};
use chartroom_domain::{DeviceProfile, HumanName, Timestamp};
use chartroom_station::{
    DeviceSecretStore, KeystoreError, LockedVault, MemoryKeystore, NewVault, Profile, StationError,
    UnlockedVault,
};
use chartroom_store::StoreOptions;
use chartroom_synth::{patient, SynthConfig};
use uuid::Uuid;

const NOW: Timestamp = Timestamp(1_795_764_183_000);
const PW: &str = "correct horse battery";

fn options() -> StoreOptions {
    StoreOptions { cache_kib: 4096, ..StoreOptions::default() }
}

fn create(
    dir: &Path,
    keystore: Arc<dyn DeviceSecretStore>,
    recovery: Option<&RecoveryKeyPair>,
) -> UnlockedVault {
    create_as(dir, keystore, recovery, Uuid::new_v4())
}

fn create_as(
    dir: &Path,
    keystore: Arc<dyn DeviceSecretStore>,
    recovery: Option<&RecoveryKeyPair>,
    user_id: Uuid,
) -> UnlockedVault {
    let password = Password::from(PW);
    let request = NewVault {
        role: chartroom_domain::Role::Nurse,
        recovery: recovery.map(|k| k.public()),
        ..spec(DeviceProfile::Station, user_id, "nurse.a", &password)
    };
    let mut vault = LockedVault::create(Profile::new(dir), keystore, request).unwrap();
    let config = SynthConfig { observations_per_patient: 20, ..SynthConfig::new(5, NOW) };
    let bundles: Vec<_> = (0..6).map(|i| patient(&config, i)).collect();
    vault.store().import(&bundles).unwrap();
    vault
}

/// A new-vault request for `username` with the test password and the cheapest allowed KDF.
fn spec<'a>(
    profile: DeviceProfile,
    user_id: Uuid,
    username: &'a str,
    password: &'a Password,
) -> NewVault<'a> {
    NewVault {
        role: chartroom_domain::Role::Nurse,
        profile,
        user_id,
        username,
        password,
        kdf: KdfParams::MINIMUM,
        recovery: None,
        now: NOW,
        store: options(),
    }
}

fn open(dir: &Path, keystore: Arc<dyn DeviceSecretStore>) -> LockedVault {
    LockedVault::open(Profile::new(dir), keystore, NOW).unwrap().with_store_options(options())
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

// hipaa (d): a wrong password never opens a station; the right one does
#[test]
fn lock_unlock_and_wrong_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    let vault = create(dir.path(), ks.clone(), None);
    let user = vault.user_id();
    vault.lock();
    // Locking checkpointed and closed the database: the WAL is empty.
    let wal = dir.path().join("cache.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);

    let locked = open(dir.path(), ks);
    let before = snapshot(dir.path());
    let err = locked.unlock("nurse.a", &Password::from("wrong password!"), NOW).unwrap_err();
    assert!(matches!(err, StationError::WrongPassword), "{err:?}");
    assert_eq!(err.code(), "auth.wrong_password");
    let err = locked.unlock("nobody", &Password::from(PW), NOW).unwrap_err();
    assert!(matches!(err, StationError::UnknownUser), "{err:?}");
    // Failed unlocks change nothing but the attempt counters and the pre-unlock event file, which
    // holds them (username and outcome, never the password) until the next unlock moves them into
    // the audit chain.
    let after: Vec<_> = snapshot(dir.path())
        .into_iter()
        .filter(|(n, _)| n != "login-attempts.json" && n != "security-events.jsonl")
        .collect();
    assert!(after == before, "failed unlocks changed a profile file");
    let pending = std::fs::read_to_string(dir.path().join("security-events.jsonl")).unwrap();
    assert_eq!(pending.lines().filter(|l| l.contains("login_failed")).count(), 2);
    assert!(!pending.contains("wrong password!"));

    let mut vault = locked.unlock("NURSE.A", &Password::from(PW), NOW).unwrap();
    assert_eq!(vault.user_id(), user);
    assert_eq!(vault.store().census(None).unwrap().len(), 6);
    let _locked: LockedVault = vault.lock();
}

// hipaa (a)(2)(i): each user of a station has their own key slot and password
#[test]
fn second_user_gets_own_slot() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    let mut vault = create(dir.path(), ks.clone(), None);
    let b = Uuid::new_v4();
    vault.add_user(b, "nurse.b", &Password::from("another good passphrase"), KdfParams::MINIMUM).unwrap();
    let locked = vault.lock();
    let mut vb = locked.unlock("nurse.b", &Password::from("another good passphrase"), NOW).unwrap();
    assert_eq!(vb.user_id(), b);
    assert_eq!(vb.store().census(None).unwrap().len(), 6);
    // A's password does not open B's slot.
    let locked = vb.lock();
    assert!(matches!(locked.unlock("nurse.b", &Password::from(PW), NOW), Err(StationError::WrongPassword)));
}

// hipaa (c)(2) (d): key slots swapped between users or copied are refused
#[test]
fn swapped_and_copied_slots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    let mut vault = create(dir.path(), ks.clone(), None);
    vault.add_user(Uuid::new_v4(), "nurse.b", &Password::from(PW), KdfParams::MINIMUM).unwrap();
    vault.lock();

    // Swap the two users' slots (bytes and digests) in keyslots.json.
    let path = dir.path().join("keyslots.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
    let users = json["users"].as_array_mut().unwrap();
    for field in ["slot", "sha256"] {
        let (a, b) = (users[0][field].clone(), users[1][field].clone());
        users[0][field] = b;
        users[1][field] = a;
    }
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = open(dir.path(), ks.clone()).unlock("nurse.a", &Password::from(PW), NOW).unwrap_err();
    assert!(matches!(err, StationError::SlotOfAnotherUser), "{err:?}");
    std::fs::write(&path, &original).unwrap();

    // The same user's slot file copied from another device.
    let mine: serde_json::Value = serde_json::from_str(&original).unwrap();
    let user: Uuid = mine["users"][0]["user_id"].as_str().unwrap().parse().unwrap();
    let other = tempfile::tempdir().unwrap();
    create_as(other.path(), Arc::new(MemoryKeystore::default()), None, user).lock();
    std::fs::copy(other.path().join("keyslots.json"), &path).unwrap();
    let err = open(dir.path(), ks).unlock("nurse.a", &Password::from(PW), NOW).unwrap_err();
    assert!(matches!(err, StationError::SlotOfAnotherDevice), "{err:?}");

    // One flipped bit in a stored slot is damage, not "wrong password".
    let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
    let slot = json["users"][0]["slot"].as_str().unwrap().to_owned();
    let last = if slot.ends_with('0') { '1' } else { '0' };
    json["users"][0]["slot"] = serde_json::Value::String(format!("{}{last}", &slot[..slot.len() - 1]));
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = open(dir.path(), Arc::new(MemoryKeystore::default()))
        .unlock("nurse.a", &Password::from(PW), NOW)
        .unwrap_err();
    assert!(matches!(err, StationError::ProfileDamaged("keyslots.json")), "{err:?}");

    // A missing slot file on an enrolled device is damage, not an unknown user.
    std::fs::remove_file(&path).unwrap();
    let err = open(dir.path(), Arc::new(MemoryKeystore::default()))
        .unlock("nurse.a", &Password::from(PW), NOW)
        .unwrap_err();
    assert!(matches!(err, StationError::ProfileDamaged("keyslots.json")), "{err:?}");

    // Garbage in the slot file.
    std::fs::write(&path, b"{ not json").unwrap();
    let err = open(dir.path(), Arc::new(MemoryKeystore::default()))
        .unlock("nurse.a", &Password::from(PW), NOW)
        .unwrap_err();
    assert!(matches!(err, StationError::ProfileDamaged("keyslots.json")), "{err:?}");
}

#[test]
fn missing_keyring_entry_is_a_clear_error_and_never_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    create(dir.path(), ks.clone(), None).lock();
    let before = snapshot(dir.path());
    ks.clear();
    let err = open(dir.path(), ks.clone()).unlock("nurse.a", &Password::from(PW), NOW).unwrap_err();
    assert!(matches!(err, StationError::Keystore(KeystoreError::Missing)), "{err:?}");
    assert!(err.to_string().starts_with("this device's key is not available in the system keyring"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    // Still missing: nothing silently created a replacement.
    let device: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("device.json")).unwrap()).unwrap();
    let id: Uuid = device["device_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(ks.load(id).err(), Some(KeystoreError::Missing));
}

/// A store that claims to be a weaker backend (e.g. a plaintext file).
#[derive(Debug, Default)]
struct PlaintextFileStore(MemoryKeystore);

impl DeviceSecretStore for PlaintextFileStore {
    fn backend(&self) -> &'static str {
        "plaintext-file"
    }
    fn load(&self, id: Uuid) -> Result<DeviceSecret, KeystoreError> {
        self.0.load(id)
    }
    fn save(&self, id: Uuid, s: &DeviceSecret) -> Result<(), KeystoreError> {
        self.0.save(id, s)
    }
    fn delete(&self, id: Uuid) -> Result<(), KeystoreError> {
        self.0.delete(id)
    }
}

#[test]
fn switching_keyring_backend_is_refused_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ks = MemoryKeystore::default();
    create(dir.path(), Arc::new(ks.clone()), None).lock();
    let err = LockedVault::open(Profile::new(dir.path()), Arc::new(PlaintextFileStore(ks)), NOW).unwrap_err();
    assert!(
        matches!(&err, StationError::KeystoreChanged { recorded, current } if recorded == "memory" && current == "plaintext-file")
    );
    let events = std::fs::read_to_string(dir.path().join("security-events.jsonl")).unwrap();
    assert!(events.contains("keystore_backend_refused"), "{events}");
}

#[test]
fn damaged_database_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    create(dir.path(), ks.clone(), None).lock();
    let db = dir.path().join("cache.db");
    let original = std::fs::read(&db).unwrap();

    std::fs::write(&db, &original[..original.len() / 2 + 7]).unwrap();
    let before = snapshot(dir.path());
    let err = open(dir.path(), ks.clone()).unlock("nurse.a", &Password::from(PW), NOW).unwrap_err();
    assert!(matches!(err, StationError::DatabaseDamaged(_)), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);

    let mut flipped = original.clone();
    flipped[200] ^= 0xff;
    std::fs::write(&db, &flipped).unwrap();
    let before = snapshot(dir.path());
    let err = open(dir.path(), ks).unlock("nurse.a", &Password::from(PW), NOW).unwrap_err();
    assert!(matches!(err, StationError::DatabaseDamaged(_)), "{err:?}");
    assert_eq!(err.code(), "vault.database_damaged");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn canary_is_in_no_profile_file() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    let mut vault = create(dir.path(), ks.clone(), None);
    let mut b = patient(&SynthConfig::new(99, NOW), 0);
    b.patient.name = HumanName { family: "Quetzalcanary".into(), given: "Philomena".into() };
    b.patient.mrn = "CANARY777".into();
    b.notes[0].text = "canary-note marmalade-theorem".into();
    vault.store().import(&[b]).unwrap();
    let needles = ["Quetzalcanary", "Philomena", "CANARY777", "marmalade-theorem"];
    let check = |when: &str| {
        for (name, bytes) in snapshot(dir.path()) {
            for n in needles {
                assert!(!bytes.windows(n.len()).any(|w| w == n.as_bytes()), "{n} in {name} ({when})");
            }
        }
    };
    check("while unlocked");
    let locked = vault.lock();
    // A failed and a successful login write the attempt counters too.
    assert!(locked.unlock("nurse.a", &Password::from("wrong password!"), NOW).is_err());
    locked.unlock("nurse.a", &Password::from(PW), NOW).unwrap().lock();
    check("after lock");
    let names: Vec<String> = snapshot(dir.path()).into_iter().map(|(n, _)| n).collect();
    let known = [
        "cache.db",
        "cache.db-wal",
        "cache.db-shm",
        "cache.db.lock",
        "device.json",
        "keyslots.json",
        "login-attempts.json",
    ];
    assert!(names.iter().all(|n| known.contains(&n.as_str())), "{names:?}");
}

#[test]
fn recovery_slot_opens_the_data_without_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    let recovery = RecoveryKeyPair::generate();
    create(dir.path(), ks.clone(), Some(&recovery)).lock();
    ks.clear();
    let locked = open(dir.path(), ks);
    assert!(locked.unlock("nurse.a", &Password::from(PW), NOW).is_err());
    let mut store = locked.open_with_recovery_key(&recovery).unwrap();
    assert_eq!(store.census(None).unwrap().len(), 6, "unsynced work survives a lost keyring");
    assert!(locked.open_with_recovery_key(&RecoveryKeyPair::generate()).is_err());

    let other = tempfile::tempdir().unwrap();
    create(other.path(), Arc::new(MemoryKeystore::default()), None).lock();
    let err = open(other.path(), Arc::new(MemoryKeystore::default()))
        .open_with_recovery_key(&recovery)
        .unwrap_err();
    assert!(matches!(err, StationError::NoRecoverySlot), "{err:?}");
}

#[derive(Debug)]
struct BrokenKeyring;

impl DeviceSecretStore for BrokenKeyring {
    fn backend(&self) -> &'static str {
        "broken"
    }
    fn load(&self, _: Uuid) -> Result<DeviceSecret, KeystoreError> {
        Err(KeystoreError::Unavailable("test".into()))
    }
    fn save(&self, _: Uuid, _: &DeviceSecret) -> Result<(), KeystoreError> {
        Err(KeystoreError::Unavailable("test".into()))
    }
    fn delete(&self, _: Uuid) -> Result<(), KeystoreError> {
        Ok(())
    }
}

#[test]
fn creation_is_all_or_nothing_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let err = LockedVault::create(
        Profile::new(dir.path()),
        Arc::new(BrokenKeyring),
        spec(DeviceProfile::Laptop, Uuid::new_v4(), "doc", &Password::from(PW)),
    )
    .unwrap_err();
    assert!(matches!(err, StationError::Keystore(KeystoreError::Unavailable(_))));
    assert!(snapshot(dir.path()).is_empty(), "nothing left behind");

    let ks = Arc::new(MemoryKeystore::default());
    create(dir.path(), ks.clone(), None).lock();
    let before = snapshot(dir.path());
    let again = LockedVault::create(
        Profile::new(dir.path()),
        ks,
        spec(DeviceProfile::Station, Uuid::new_v4(), "x", &Password::from(PW)),
    );
    assert!(matches!(again, Err(StationError::AlreadyEnrolled)));
    assert_eq!(snapshot(dir.path()), before);

    // A half-made profile (only a slot file left behind) is not merged into or deleted either.
    let half = tempfile::tempdir().unwrap();
    std::fs::write(half.path().join("keyslots.json"), b"{}").unwrap();
    let again = LockedVault::create(
        Profile::new(half.path()),
        Arc::new(MemoryKeystore::default()),
        spec(DeviceProfile::Station, Uuid::new_v4(), "x", &Password::from(PW)),
    );
    assert!(matches!(again, Err(StationError::AlreadyEnrolled)));
    assert_eq!(std::fs::read(half.path().join("keyslots.json")).unwrap(), b"{}");
}

// hipaa (d): offline password guessing is throttled and locked out, also across restarts
#[test]
fn guessing_is_throttled_and_locked_out_across_restarts() {
    use chartroom_domain::{LockPolicy, Throttled};
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    create(dir.path(), ks.clone(), None).lock();
    let policy = LockPolicy::defaults(DeviceProfile::Station);
    let wrong = Password::from("a wrong guess!");
    let mut t = NOW;
    for i in 1..=policy.max_failed_attempts() {
        // Each attempt from a fresh `LockedVault`, as from a new process.
        let err = open(dir.path(), ks.clone()).unlock("nurse.a", &wrong, t).unwrap_err();
        assert!(matches!(err, StationError::WrongPassword), "attempt {i}: {err:?}");
        // Trying again at once after the free attempts is delayed, without checking the password.
        if i > 2 && i < policy.max_failed_attempts() {
            let err = open(dir.path(), ks.clone()).unlock("nurse.a", &Password::from(PW), t).unwrap_err();
            assert!(matches!(err, StationError::Throttled(Throttled::Delay { .. })), "{err:?}");
        }
        t = t.plus(std::time::Duration::from_secs(61));
    }
    // Locked out: even the right password is refused, with its own code.
    let err = open(dir.path(), ks.clone()).unlock("nurse.a", &Password::from(PW), t).unwrap_err();
    assert!(matches!(err, StationError::Throttled(Throttled::LockedOut { .. })), "{err:?}");
    assert_eq!(err.code(), "auth.locked_out");
    // Another user on the same station is not affected by nurse.a's lockout.
    assert!(matches!(
        open(dir.path(), ks.clone()).unlock("nurse.b", &wrong, t),
        Err(StationError::UnknownUser)
    ));
    // After the lockout the right password works and clears the counter.
    let later = t.plus(policy.lockout());
    open(dir.path(), ks.clone()).unlock("nurse.a", &Password::from(PW), later).unwrap().lock();
    let err = open(dir.path(), ks).unlock("nurse.a", &wrong, later).unwrap_err();
    assert!(matches!(err, StationError::WrongPassword), "{err:?}");
}

/// Reads, failed logins, unlocks and locks land in the station's hash chain, in order; an edit of
/// a stored entry is found and named.
// hipaa (a)(2)(i) (b) (c)(2): every read and login is an entry naming the user and device; an edit of the
//   stored chain is detected
#[test]
fn the_audit_chain_records_reads_and_logins_and_detects_edits() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Arc::new(MemoryKeystore::default());
    let mut vault = create(dir.path(), ks, None);
    let shown = vault.census(Some("ICU"), NOW).unwrap();
    let mrn = shown[0].mrn.clone();
    vault.chart_by_mrn(&mrn, 10, NOW).unwrap();
    let locked = vault.lock();
    assert!(locked.unlock("nurse.a", &Password::from("wrong password!"), NOW).is_err());
    let mut vault = locked.unlock("nurse.a", &Password::from(PW), Timestamp(NOW.0 + 5_000)).unwrap();

    let entries = vault.store().audit_entries(0, 10_000).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.event.action.as_str()).collect();
    let tail = &actions[actions.len() - 5..];
    assert_eq!(tail, ["view", "view", "lock", "login_failed", "unlock"], "{actions:?}");
    let census = &entries[entries.len() - 5];
    assert_eq!(census.event.resource_type, "census");
    assert_eq!(census.event.patient_ids, shown.iter().map(|r| r.patient_id).collect::<Vec<_>>());
    assert_eq!(entries[entries.len() - 2].event.username.as_deref(), Some("nurse.a"));
    assert_eq!(entries[entries.len() - 2].event.user_id, None, "a failed login proves no identity");
    // Asking for a patient who is not on this station is a recorded denial; another user unlocking
    // the locked session is a recorded switch.
    assert!(vault.chart_by_mrn("NOT-HERE-1", 10, NOW).is_err());
    let password_b = Password::from("another long passphrase");
    vault.add_user(Uuid::new_v4(), "nurse.b", &password_b, KdfParams::MINIMUM).unwrap();
    let mut vault = vault.lock().unlock("nurse.b", &password_b, NOW).unwrap();
    let entries = vault.store().audit_entries(0, 10_000).unwrap();
    let last: Vec<(&str, &str)> = entries[entries.len() - 4..]
        .iter()
        .map(|e| (e.event.action.as_str(), e.event.outcome.as_str()))
        .collect();
    assert_eq!(
        last,
        [("denied", "store.patient_not_found"), ("lock", "ok"), ("switch_user", "ok"), ("unlock", "ok")]
    );
    assert_eq!(entries[entries.len() - 2].event.resource_id.as_deref(), Some("nurse.a"));
    let n = u64::try_from(entries.len()).unwrap();
    assert_eq!(vault.verify_audit().unwrap(), Ok(n));

    // An insider with the database key edits one stored entry: the chain names it.
    let conn = rusqlite::Connection::open(dir.path().join("cache.db")).unwrap();
    conn.execute_batch(&vault.store().data_key().sqlcipher_key_statement()).unwrap();
    conn.execute(
        "UPDATE audit_log SET entry = replace(entry, '\"denied\"', '\"viewed\"') WHERE seq = ?1",
        [n - 3],
    )
    .unwrap();
    let broken = vault.verify_audit().unwrap().unwrap_err();
    assert_eq!(broken.seq, n - 3, "{broken}");
}

/// The station applies the same policy engine: a billing clerk cannot record vitals, and the
/// refusal is in the chain.
// hipaa (a)(1) (b): the station refuses writes a role lacks and records each refusal
#[test]
fn writes_follow_the_role_and_refusals_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let password = Password::from(PW);
    let request = NewVault {
        role: chartroom_domain::Role::Billing,
        ..spec(DeviceProfile::Station, Uuid::new_v4(), "bill.a", &password)
    };
    let mut vault =
        LockedVault::create(Profile::new(dir.path()), Arc::new(MemoryKeystore::default()), request).unwrap();
    let config = SynthConfig { observations_per_patient: 7, ..SynthConfig::new(3, NOW) };
    vault.store().import(&[patient(&config, 0)]).unwrap();
    let mrn = vault.census(None, NOW).unwrap()[0].mrn.clone();
    // Billing reads who the patient is and the problem list, nothing clinical beyond that.
    let chart = vault.chart_by_mrn(&mrn, 10, NOW).unwrap();
    assert!(!chart.conditions.is_empty());
    assert!(chart.notes.is_empty() && chart.observations.is_empty() && chart.medications.is_empty());
    let err = vault.record_vitals(&mrn, &[(chartroom_domain::VitalSign::HeartRate, 80.0)], NOW).unwrap_err();
    assert_eq!(err.code(), "access.forbidden");
    assert!(vault.outbox().unwrap().is_empty(), "nothing queued");
    let last = vault.store().audit_entries(0, 1000).unwrap().pop().unwrap();
    assert_eq!((last.event.action.as_str(), last.event.outcome.as_str()), ("denied", "access.forbidden"));
}
