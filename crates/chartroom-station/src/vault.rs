//! The vault: a profile's key slots plus its encrypted store, in two type states.
//!
//! [`LockedVault`] holds no key and can show nothing; [`LockedVault::unlock`] with a user's password
//! (and this device's secret from the OS keyring) yields an [`UnlockedVault`], and
//! [`UnlockedVault::lock`] closes the database and wipes every key, giving back a `LockedVault`.

use std::sync::Arc;

use chartroom_crypto::{
    DataKey, DeviceSecret, EscrowSlot, KdfParams, KeySlot, Password, RecoveryKeyPair, RecoveryPublicKey,
    RecoverySlot,
};
use chartroom_domain::{Chart, DeviceProfile, LockPolicy, Role, Timestamp};
use chartroom_store::{Actor, DatabaseEncryption, Store, StoreError, StoreOptions};
use uuid::Uuid;

use crate::profile::{from_hex, to_hex, DeviceRecord, Profile, ServerLink};
use crate::{DeviceSecretStore, MachinePolicy, StationError};

type Result<T> = std::result::Result<T, StationError>;

/// What a new vault is made with.
#[derive(Debug)]
pub struct NewVault<'a> {
    pub profile: DeviceProfile,
    pub user_id: Uuid,
    pub username: &'a str,
    pub role: Role,
    pub password: &'a Password,
    pub kdf: KdfParams,
    /// The recovery public key (from the server at enrollment); the data key is sealed to it too.
    pub recovery: Option<RecoveryPublicKey>,
    pub now: Timestamp,
    pub store: StoreOptions,
}

/// A station whose data cannot be read until a user unlocks it.
#[derive(Debug, Clone)]
pub struct LockedVault {
    profile: Profile,
    device: DeviceRecord,
    keystore: Arc<dyn DeviceSecretStore>,
    store_options: StoreOptions,
    /// Who held the session this lock ended, so that another user's unlock is recorded as a switch.
    locked_user: Option<String>,
    /// The machine policy IT installed (none: the defaults) and the lock policy it gives this device.
    machine: Arc<MachinePolicy>,
    lock_policy: LockPolicy,
}

/// Debug builds only: aborts the process at the named step when `CHARTROOM_TEST_CRASH_AT` names
/// it, so that tests can prove an interrupted key rotation loses nothing.
fn crash_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("CHARTROOM_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// A 32-byte key from 64 hex digits (from the server).
fn decode_key(hex: &str) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    if hex.len() != 64 {
        return Err(StationError::ServerAnswer);
    }
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| StationError::ServerAnswer)?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| StationError::ServerAnswer)?;
    }
    Ok(out)
}

/// What a recovery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// User slots dropped (sealed under the lost device secret): those users log in online again.
    pub slots_dropped: usize,
}

/// This machine's host name, for the audit trail's "where" (no PHI).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().take(64).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "station".into())
}

/// One of the user's draft notes, as a list of unfinished work shows it. `Debug` prints no PHI.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct DraftSummary {
    pub note_id: Uuid,
    pub patient_id: Uuid,
    pub mrn: String,
    pub patient_name: String,
    pub bed: String,
    pub created_at: Timestamp,
    /// Characters of text so far.
    pub text_len: usize,
}

impl std::fmt::Debug for DraftSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftSummary")
            .field("note_id", &self.note_id)
            .field("patient_id", &self.patient_id)
            .field("created_at", &self.created_at)
            .field("text_len", &self.text_len)
            .finish_non_exhaustive()
    }
}

/// Minimum necessary: empties the sections of a chart not in `sections`.
pub(crate) fn keep_sections(chart: &mut Chart, sections: &[chartroom_domain::ChartSection]) {
    use chartroom_domain::ChartSection as S;
    if !sections.contains(&S::Allergies) {
        chart.allergies.clear();
    }
    if !sections.contains(&S::Problems) {
        chart.conditions.clear();
    }
    if !sections.contains(&S::Medications) {
        chart.medications.clear();
    }
    if !sections.contains(&S::Vitals) {
        chart.observations.clear();
    }
    if !sections.contains(&S::Notes) {
        chart.notes.clear();
    }
}

/// An unlocked station: one authenticated user and the open store.
#[derive(Debug)]
pub struct UnlockedVault {
    pub(crate) locked: LockedVault,
    user_id: Uuid,
    username: String,
    /// The role the server gave this user at their last online login (`None`: never told).
    pub(crate) role: Option<Role>,
    /// The user's units as the server last said (empty: never told — a vault without a server).
    units: Vec<String>,
    pub(crate) store: Store,
    /// The access token of an online login (for sync); `None` after an offline unlock.
    access_token: Option<zeroize::Zeroizing<String>>,
    /// The refresh token of the same login (exchanged for new tokens when the access token expires).
    refresh_token: Option<zeroize::Zeroizing<String>>,
    /// The key the server wraps synced patients' keys under (from the escrow key of the same
    /// online login); `None` offline.
    pub(crate) sync_key: Option<DataKey>,
    /// Told how many rows a pull has applied so far (a long first sync shows progress).
    pub(crate) progress: Option<crate::sync::Progress>,
}

impl LockedVault {
    /// Creates a new vault in an empty profile directory, with the first user's key slot. Nothing is
    /// left behind if any step fails (including the keyring entry).
    pub fn create(
        profile: Profile,
        keystore: Arc<dyn DeviceSecretStore>,
        new: NewVault<'_>,
    ) -> Result<UnlockedVault> {
        // Refuse if anything of a station is here (even a half-made one): never merge into, or on
        // failure delete, files this call did not create.
        if profile.files().iter().any(|f| f.exists()) {
            return Err(StationError::AlreadyEnrolled);
        }
        profile.create_dir()?;
        let device = DeviceRecord {
            format: 1,
            device_id: Uuid::new_v4(),
            profile: new.profile,
            keystore: keystore.backend().to_owned(),
            created_at: new.now,
            server: None,
        };
        let secret = DeviceSecret::generate();
        keystore.save(device.device_id, &secret)?;
        // The station database is always SQLCipher, whatever options were passed in.
        let store_options = StoreOptions { encryption: DatabaseEncryption::SqlCipher, ..new.store };
        let result = Self::create_files(&profile, &device, &secret, &new, store_options);
        match result {
            Ok(store) => {
                let locked =
                    LockedVault { store_options, ..LockedVault::assemble(profile, device, keystore) };
                Ok(UnlockedVault {
                    locked,
                    user_id: new.user_id,
                    username: new.username.to_owned(),
                    role: Some(new.role),
                    units: Vec::new(),
                    store,
                    access_token: None,
                    refresh_token: None,
                    sync_key: None,
                    progress: None,
                })
            }
            Err(e) => {
                for f in profile.files() {
                    let _ = std::fs::remove_file(f);
                }
                let _ = keystore.delete(device.device_id);
                Err(e)
            }
        }
    }

    fn create_files(
        profile: &Profile,
        device: &DeviceRecord,
        secret: &DeviceSecret,
        new: &NewVault<'_>,
        store_options: StoreOptions,
    ) -> Result<Store> {
        let dek = DataKey::generate();
        let slot = KeySlot::seal(&dek, new.password, secret, new.user_id, device.device_id, 1, new.kdf)?;
        profile.put_slot(new.user_id, new.username, Some(new.role), None, &[], &slot)?;
        if let Some(recovery) = &new.recovery {
            profile.put_recovery_slot(&RecoverySlot::seal(&dek, recovery, device.device_id)?)?;
        }
        let store = Store::create(&profile.database_path(), dek, store_options)?;
        // device.json last: its presence means "enrollment completed".
        profile.write_device(device)?;
        Ok(store)
    }

    /// Enrolls this profile with a server: registers the device key (derived from a new device
    /// secret that goes into the OS keyring) with the one-time token over the pinned connection,
    /// then creates the encrypted store with an escrow slot and no user yet — the first online login
    /// of each user gives them their own slot. Nothing is left behind if a step fails.
    pub async fn enroll(
        profile: Profile,
        keystore: Arc<dyn DeviceSecretStore>,
        client: &chartroom_client::ServerClient,
        fingerprint: &str,
        token: &str,
        now: Timestamp,
    ) -> Result<LockedVault> {
        if profile.files().iter().any(|f| f.exists()) {
            return Err(StationError::AlreadyEnrolled);
        }
        let secret = DeviceSecret::generate();
        let probe = chartroom_client::DeviceIdentity::new(String::new(), &secret.signing_seed());
        let enrolled = client.enroll(token, &probe.public_key_hex()).await?;
        let device_id: Uuid = enrolled.device_id.parse().map_err(|_| StationError::ServerAnswer)?;
        let escrow_key = decode_key(&enrolled.escrow_key)?;
        let recovery = RecoveryPublicKey::from_bytes(*decode_key(&enrolled.recovery_public_key)?);
        let device = DeviceRecord {
            format: 1,
            device_id,
            profile: enrolled.profile.parse().map_err(|_| StationError::ServerAnswer)?,
            keystore: keystore.backend().to_owned(),
            created_at: now,
            server: Some(ServerLink {
                url: client.base_url().to_owned(),
                fingerprint: fingerprint.to_owned(),
                name: enrolled.name.clone(),
            }),
        };
        profile.create_dir()?;
        keystore.save(device_id, &secret)?;
        let created = (|| {
            let dek = DataKey::generate();
            profile.put_escrow_slot(&EscrowSlot::seal(&dek, &escrow_key, &secret, device_id))?;
            // Sealed to the server's recovery key: if the keyring ever loses the device secret, an
            // administrator's approval gets the data key (and unsynced work) back.
            profile.put_recovery_slot(&RecoverySlot::seal(&dek, &recovery, device_id)?)?;
            let mut store = Store::create(&profile.database_path(), dek, StoreOptions::default())?;
            let actor = Actor { device_id, user_id: None, username: None, host: host_name() };
            let mut e = chartroom_audit::Event::new(now, "enroll", "device", "ok");
            e.resource_id = Some(enrolled.name.clone());
            store.record(&actor, e)?;
            store.close()?;
            // device.json last: its presence means "enrollment completed".
            profile.write_device(&device)
        })();
        if let Err(e) = created {
            for f in profile.files() {
                let _ = std::fs::remove_file(f);
            }
            let _ = keystore.delete(device_id);
            return Err(e);
        }
        Ok(LockedVault::assemble(profile, device, keystore))
    }

    /// A locked vault over `profile` with the default store options and no machine policy (the
    /// shells add it with [`LockedVault::with_machine_policy`]).
    fn assemble(profile: Profile, device: DeviceRecord, keystore: Arc<dyn DeviceSecretStore>) -> LockedVault {
        let lock_policy = LockPolicy::defaults(device.profile);
        LockedVault {
            profile,
            device,
            keystore,
            store_options: StoreOptions::default(),
            locked_user: None,
            machine: Arc::new(MachinePolicy::default()),
            lock_policy,
        }
    }

    /// Applies the machine policy IT installed: its lock timeouts (checked against this device's
    /// profile: an out-of-bounds value is an error naming the key), its allowed roles and its
    /// server pins.
    pub fn with_machine_policy(mut self, policy: MachinePolicy) -> Result<Self> {
        self.lock_policy = policy.lock_policy(self.device.profile)?;
        self.machine = Arc::new(policy);
        Ok(self)
    }

    /// Whether the server that answered "unknown device" is the one this station enrolled with, so
    /// that the answer means "revoked". A machine policy that sends the station to another server
    /// (a mistake in `server_url`) must never make it wipe its data.
    pub(crate) fn revocation_applies(&self) -> bool {
        match (&self.machine.server_url, &self.device.server) {
            (Some(policy), Some(link)) => policy.eq_ignore_ascii_case(link.url.trim_end_matches('/')),
            _ => true,
        }
    }

    /// When this device warns and locks, and how long offline logins last.
    pub fn lock_policy(&self) -> LockPolicy {
        self.lock_policy
    }

    /// A client for this station's server: the machine policy's URL and pins beat the enrollment's.
    pub fn server_client(&self) -> Result<chartroom_client::ServerClient> {
        let link = self.device.server.as_ref().ok_or(StationError::NoServer)?;
        Ok(self.machine.server_client(link)?)
    }

    /// Refuses a user whose role the machine policy does not allow here, and records the refusal
    /// (it enters the audit chain at the next unlock).
    fn check_role(&self, username: &str, role: Role, now: Timestamp) -> Result<()> {
        if self.machine.allows(role) {
            return Ok(());
        }
        let who: String = username.trim().chars().take(64).collect();
        self.profile.record_event(
            now,
            "login_refused",
            serde_json::json!({ "username": who, "role": role.as_str(), "outcome": "policy.role_not_allowed" }),
        )?;
        Err(StationError::RoleNotAllowed)
    }

    /// This device's secret and its identity towards the server (the signing key derives from the
    /// secret in the keyring).
    pub(crate) fn identity(&self) -> Result<(DeviceSecret, chartroom_client::DeviceIdentity)> {
        let secret = self.keystore.load(self.device.device_id)?;
        let identity =
            chartroom_client::DeviceIdentity::new(self.device.device_id.to_string(), &secret.signing_seed());
        Ok((secret, identity))
    }

    /// Deletes everything of this station: the database (and its WAL), the key slots, the profile
    /// files and the device secret in the keyring. Used when the server says the device was revoked.
    pub fn wipe(&self) -> Result<()> {
        for f in self.profile.files() {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.keystore.delete(self.device.device_id)?;
        Ok(())
    }

    /// The server this station is enrolled with, if any.
    pub fn server(&self) -> Option<&ServerLink> {
        self.device.server.as_ref()
    }

    /// Logs `username` in online: the server checks the password (and throttles). A clinician gets
    /// [`Login::Clinical`], exactly as [`LockedVault::login_online`]; an auditor (or an
    /// administrator) gets [`Login::Oversight`], a session with the server that opens nothing on this
    /// station (the server records the login, and every failed one, in its trail).
    pub async fn login(
        &self,
        client: &chartroom_client::ServerClient,
        username: &str,
        password: &Password,
        now: Timestamp,
    ) -> Result<crate::oversight::Login> {
        let (secret, tokens) = self.server_login(client, username, password, now).await?;
        if matches!(tokens.user.role, Role::Auditor | Role::Admin) {
            let session = crate::oversight::OversightSession::new(self.clone(), &tokens)?;
            return Ok(crate::oversight::Login::Oversight(session));
        }
        self.open_online(&secret, &tokens, password, now, false).map(crate::oversight::Login::Clinical)
    }

    /// Logs `username` in online: the server checks the password (and throttles); on success the
    /// escrow key it returns opens the data key, and the user's own slot is (re)written so later
    /// logins also work offline. A user the server gives no escrow key (who may read no patient on
    /// this device) is refused.
    pub async fn login_online(
        &self,
        client: &chartroom_client::ServerClient,
        username: &str,
        password: &Password,
        now: Timestamp,
    ) -> Result<UnlockedVault> {
        let (secret, tokens) = self.server_login(client, username, password, now).await?;
        self.open_online(&secret, &tokens, password, now, false)
    }

    /// Logs `username` in online and rotates this station's data key now, whatever the policy's
    /// schedule says (after a suspected exposure): see [`LockedVault::login_online`] and the
    /// rotation steps in `open_online`.
    pub async fn rotate_data_key(
        &self,
        client: &chartroom_client::ServerClient,
        username: &str,
        password: &Password,
        now: Timestamp,
    ) -> Result<UnlockedVault> {
        let (secret, tokens) = self.server_login(client, username, password, now).await?;
        self.open_online(&secret, &tokens, password, now, true)
    }

    /// The server's side of a login: a revoked device wipes itself, a disabled account loses its
    /// slot here.
    async fn server_login(
        &self,
        client: &chartroom_client::ServerClient,
        username: &str,
        password: &Password,
        now: Timestamp,
    ) -> Result<(DeviceSecret, chartroom_protocol::TokenResponse)> {
        let (secret, identity) = self.identity()?;
        let tokens = match client.login(&identity, username, password.expose_for_hashing()).await {
            Ok(t) => {
                self.check_role(&t.user.username, t.user.role, now)?;
                t
            }
            // The server no longer knows this device: it was revoked (lost, stolen, retired). Its
            // local data must not outlive that.
            Err(e) if e.code() == Some("device.unknown") && self.revocation_applies() => {
                self.wipe()?;
                return Err(StationError::DeviceRevoked);
            }
            // The account was disabled: its slot goes, so it cannot log in offline either.
            Err(e) if e.code() == Some("auth.user_disabled") => {
                if self.profile.remove_slot(username)? {
                    let who: String = username.trim().chars().take(64).collect();
                    self.profile.record_event(
                        now,
                        "slot_removed",
                        serde_json::json!({ "username": who, "outcome": "auth.user_disabled" }),
                    )?;
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok((secret, tokens))
    }

    /// Opens the store with the escrow key of an online login and (re)writes the user's slot.
    ///
    /// The data key is rotated here when the policy's interval has passed since it was made (or
    /// when `rotate` asks): only an online login has what every slot of the new key needs — this
    /// user's password, the escrow key and the server's recovery public key.
    fn open_online(
        &self,
        secret: &DeviceSecret,
        tokens: &chartroom_protocol::TokenResponse,
        password: &Password,
        now: Timestamp,
        rotate: bool,
    ) -> Result<UnlockedVault> {
        if tokens.escrow_key.is_empty() {
            // The server confirmed the password but this user may read no patient on this device.
            return Err(StationError::Denied(chartroom_domain::Denied::NotPermitted));
        }
        let escrow_key = decode_key(&tokens.escrow_key)?;
        let user_id: Uuid = tokens.user.id.parse().map_err(|_| StationError::ServerAnswer)?;
        let escrow = self.profile.escrow_slot()?.ok_or(StationError::ProfileDamaged("keyslots.json"))?;
        let dek = escrow.open(&escrow_key, secret, self.device.device_id)?;
        // The data key of an interrupted rotation's pending escrow slot, if there is one.
        let pending_dek = || match self.profile.pending_escrow_slot()? {
            Some(slot) => Ok(Some(slot.open(&escrow_key, secret, self.device.device_id)?)),
            None => Ok(None),
        };
        let dek = self.settle_rotation(dek, pending_dek)?;
        let slot_version = match self.profile.slot_for(&tokens.user.username)? {
            Some(existing) => existing.slot.slot_version().saturating_add(1),
            None => 1,
        };
        let slot = KeySlot::seal(
            &dek,
            password,
            secret,
            user_id,
            self.device.device_id,
            slot_version,
            KdfParams::DEFAULT,
        )?;
        self.profile.put_slot(
            user_id,
            &tokens.user.username,
            Some(tokens.user.role),
            Some(now),
            &tokens.user.units,
            &slot,
        )?;
        let store = self.open_store(dek)?;
        let since = self.profile.dek_since()?.unwrap_or(self.device.created_at);
        let due = now.since(since) >= self.machine.key_rotation() && !tokens.recovery_public_key.is_empty();
        let (store, rotated) = if rotate || due {
            let holder = (user_id, slot_version.saturating_add(1));
            match self.rotate_key(store, secret, password, holder, tokens, &escrow_key, now) {
                Ok((store, dropped)) => (store, Some(dropped)),
                // A scheduled rotation that could not run (a full disk, the database open in
                // another process) must not keep anyone from working: it is recorded, the
                // database is opened under whichever key it is under, and the next login tries again.
                Err(e) if !rotate => {
                    self.profile.record_event(
                        now,
                        "key_rotate_failed",
                        serde_json::json!({ "key": "data_key", "outcome": e.code() }),
                    )?;
                    let current = escrow.open(&escrow_key, secret, self.device.device_id)?;
                    (self.open_store(self.settle_rotation(current, pending_dek)?)?, None)
                }
                Err(e) => return Err(e),
            }
        } else {
            (store, None)
        };
        let mut vault = UnlockedVault {
            locked: self.clone(),
            user_id,
            username: tokens.user.username.clone(),
            role: Some(tokens.user.role),
            units: tokens.user.units.clone(),
            store,
            access_token: Some(zeroize::Zeroizing::new(tokens.access_token.clone())),
            refresh_token: Some(zeroize::Zeroizing::new(tokens.refresh_token.clone())),
            sync_key: Some(chartroom_crypto::fields::sync_wrap_key(&escrow_key, self.device.device_id)),
            progress: None,
        };
        self.fold_security_events(&mut vault, now)?;
        let actor = vault.actor();
        let mut e = chartroom_audit::Event::new(now, "login", "session", "ok");
        e.resource_id = Some("online".into());
        vault.store.record(&actor, e)?;
        if let Some(dropped) = rotated {
            let mut e = chartroom_audit::Event::new(now, "key_rotate", "data_key", "ok");
            e.resource_id =
                Some(format!("{dropped} other users' key slots removed; they log in online once"));
            vault.store.record(&actor, e)?;
        }
        Ok(vault)
    }

    /// Which of the current and the pending data key (of an interrupted rotation) the database is
    /// under: the rotation is finished (the database had moved) or dropped (it had not), and the
    /// key that opens the database is returned. A user with no slot for that key is told to log in
    /// online once.
    fn settle_rotation(
        &self,
        current: DataKey,
        pending: impl FnOnce() -> Result<Option<DataKey>>,
    ) -> Result<DataKey> {
        if !self.profile.has_pending_rotation()? {
            return Ok(current);
        }
        let path = self.profile.database_path();
        let now = crate::clock::wall_now();
        if Store::key_opens(&path, &current)? {
            self.profile.abandon_key_rotation()?;
            self.profile.record_event(
                now,
                "key_rotate_abandoned",
                serde_json::json!({ "key": "data_key" }),
            )?;
            return Ok(current);
        }
        match pending()? {
            Some(new) if Store::key_opens(&path, &new)? => {
                let dropped = self.profile.commit_key_rotation()?;
                self.profile.record_event(
                    now,
                    "key_rotate",
                    serde_json::json!({ "key": "data_key", "finished_after_interruption": true, "slots_removed": dropped }),
                )?;
                Ok(new)
            }
            _ => Err(StationError::NeedsOnlineLogin),
        }
    }

    /// Rotates the data key of an open store: the new key's slots (this user's, the escrow and the
    /// recovery slot) are recorded as pending, the database moves to the new key (an atomic
    /// rename), then the pending slots become the slots and every other user's slot goes. A crash
    /// between any two steps is settled at the next unlock. Returns the store under the new key
    /// and how many other users' slots were dropped.
    #[allow(clippy::too_many_arguments)]
    fn rotate_key(
        &self,
        store: Store,
        secret: &DeviceSecret,
        password: &Password,
        (user_id, slot_version): (Uuid, u32),
        tokens: &chartroom_protocol::TokenResponse,
        escrow_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<(Store, usize)> {
        if tokens.recovery_public_key.is_empty() {
            return Err(StationError::ServerAnswer);
        }
        let recovery = RecoveryPublicKey::from_bytes(*decode_key(&tokens.recovery_public_key)?);
        let new = DataKey::generate();
        let device_id = self.device.device_id;
        let user = crate::profile::SlotUser {
            user_id,
            username: tokens.user.username.clone(),
            slot: KeySlot::seal(
                &new,
                password,
                secret,
                user_id,
                device_id,
                slot_version,
                KdfParams::DEFAULT,
            )?,
            role: Some(tokens.user.role),
            last_online: Some(now),
            units: tokens.user.units.clone(),
        };
        self.profile.stage_key_rotation(
            &user,
            &EscrowSlot::seal(&new, escrow_key, secret, device_id),
            Some(&RecoverySlot::seal(&new, &recovery, device_id)?),
            now,
        )?;
        crash_point("dek:staged");
        let store = store.rotate_key(new, self.store_options)?;
        crash_point("dek:moved");
        let dropped = self.profile.commit_key_rotation()?;
        Ok((store, dropped))
    }

    /// Moves what happened while the database was closed (failed logins, refused keyrings) into the
    /// audit chain, before anything can be read.
    fn fold_security_events(&self, vault: &mut UnlockedVault, now: Timestamp) -> Result<()> {
        let actor = vault.actor();
        for event in self.profile.pending_security_events(now)? {
            let mut actor = actor.clone();
            actor.user_id = None;
            actor.username.clone_from(&event.username);
            vault.store.record(&actor, event)?;
        }
        self.profile.clear_security_events()
    }

    /// Opens an enrolled profile (reads no secret yet). Refuses if the keyring backend in use is not
    /// the one the device secret was stored in, and records that refusal.
    pub fn open(
        profile: Profile,
        keystore: Arc<dyn DeviceSecretStore>,
        now: Timestamp,
    ) -> Result<LockedVault> {
        let device = profile.read_device()?;
        if device.keystore != keystore.backend() {
            profile.record_event(
                now,
                "keystore_backend_refused",
                serde_json::json!({ "recorded": device.keystore, "offered": keystore.backend(), "device_id": device.device_id }),
            )?;
            return Err(StationError::KeystoreChanged {
                recorded: device.keystore,
                current: keystore.backend().to_owned(),
            });
        }
        Ok(LockedVault::assemble(profile, device, keystore))
    }

    /// Uses these store options (page cache size) for the next unlock. The database stays SQLCipher.
    pub fn with_store_options(mut self, options: StoreOptions) -> Self {
        self.store_options = StoreOptions { encryption: DatabaseEncryption::SqlCipher, ..options };
        self
    }

    pub fn device_id(&self) -> Uuid {
        self.device.device_id
    }
    pub fn device_profile(&self) -> DeviceProfile {
        self.device.profile
    }
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
    pub fn usernames(&self) -> Result<Vec<String>> {
        self.profile.usernames()
    }

    /// Unlocks with a user's password and this device's secret, at `now`.
    ///
    /// Attempts are throttled per username by the device profile's lock policy (growing delays, then a
    /// lockout), and the counters live in the profile, so a new process does not grant new guesses.
    /// A throttled attempt is refused before any password work is done, even if it would be right.
    pub fn unlock(&self, username: &str, password: &Password, now: Timestamp) -> Result<UnlockedVault> {
        let policy = self.lock_policy;
        let mut throttle = self.profile.read_throttle(now)?;
        throttle.check(username, now, &policy)?;
        // An enrolled station lets a user work offline only so long after the server last confirmed
        // them (a disabled account must not keep working offline forever).
        if let Some(user) = self.profile.slot_for(username)? {
            if self.device.server.is_some()
                && user.last_online.is_none_or(|t| now.since(t) > policy.max_offline_age())
            {
                return Err(StationError::OfflineTooLong);
            }
        }
        let attempt = self.try_unlock(username, password);
        match &attempt {
            Ok(_) => throttle.record_success(username),
            Err(e @ (StationError::WrongPassword | StationError::UnknownUser)) => {
                throttle.record_failure(username, now, &policy);
                // The database is closed: the failure waits in the profile until the next unlock
                // moves it into the audit chain.
                let who: String = username.trim().chars().take(64).collect();
                self.profile.record_event(
                    now,
                    "login_failed",
                    serde_json::json!({ "username": who, "outcome": e.code() }),
                )?;
            }
            // Damage, a missing keyring entry, tampering: not a guess, and not the user's fault.
            Err(_) => return attempt,
        }
        self.profile.write_throttle(&throttle)?;
        let mut vault = attempt?;
        // The role the server last gave this user must be allowed on this device (checked after
        // the password, so that a refusal says nothing about who has a slot here).
        if let Some(role) = vault.role {
            self.check_role(&vault.username, role, now)?;
        }
        // What happened while the database was closed, then this unlock, go into the chain before
        // anything can be read.
        let actor = vault.actor();
        self.fold_security_events(&mut vault, now)?;
        // Another user unlocking a locked session ends it: a switch of user, recorded as such.
        if let Some(previous) = self.locked_user.as_ref().filter(|p| !p.eq_ignore_ascii_case(&vault.username))
        {
            let mut e = chartroom_audit::Event::new(now, "switch_user", "session", "ok");
            e.resource_id = Some(previous.clone());
            vault.store.record(&actor, e)?;
        }
        vault.store.record(&actor, chartroom_audit::Event::new(now, "unlock", "session", "ok"))?;
        Ok(vault)
    }

    fn try_unlock(&self, username: &str, password: &Password) -> Result<UnlockedVault> {
        let user = self.profile.slot_for(username)?.ok_or(StationError::UnknownUser)?;
        let secret = self.keystore.load(self.device.device_id)?;
        let dek = user.slot.open(password, &secret, user.user_id, self.device.device_id)?;
        let dek = self.settle_rotation(dek, || match self.profile.pending_slot_for(username)? {
            Some(slot) => Ok(Some(slot.open(password, &secret, user.user_id, self.device.device_id)?)),
            None => Ok(None),
        })?;
        let store = self.open_store(dek)?;
        Ok(UnlockedVault {
            locked: self.clone(),
            user_id: user.user_id,
            username: user.username,
            role: user.role,
            units: user.units,
            store,
            access_token: None,
            refresh_token: None,
            sync_key: None,
            progress: None,
        })
    }

    fn open_store(&self, dek: DataKey) -> Result<Store> {
        // The data key came out of an authenticated slot, so a database that does not open with it
        // is damaged (or replaced), never "a wrong password".
        Store::open(&self.profile.database_path(), dek, self.store_options).map_err(|e| match e {
            StoreError::WrongKeyOrDamaged => {
                StationError::DatabaseDamaged("it does not open with this device's key")
            }
            StoreError::Truncated => StationError::DatabaseDamaged("the file is truncated"),
            StoreError::Missing => StationError::DatabaseDamaged("the database file is missing"),
            other => StationError::Store(other),
        })
    }

    /// Recovers this station after its OS keyring lost the device secret, with a one-time recovery
    /// token an administrator issued (`chartroom-server device recover`).
    ///
    /// A new device secret is made (not stored yet); the server checks the token, opens the
    /// recovery slot, registers the new device key (the old one stops working) and returns the data
    /// key sealed to a one-use X25519 key of this call. Only once that data key has opened this
    /// station's database does anything change on disk, in this order: the new secret goes into
    /// the keyring; then one atomic write of `keyslots.json` puts an escrow slot sealed under it and
    /// drops every user slot (they were sealed under the lost secret: each user logs in online once
    /// again). The recovery slot and the data key never change, so a crash at any point leaves a
    /// profile that recovers again with a new token, or one that is fully re-keyed. A refused
    /// token changes nothing.
    pub async fn recover(
        &self,
        client: &chartroom_client::ServerClient,
        token: &str,
        now: Timestamp,
    ) -> Result<Recovered> {
        if self.device.server.is_none() {
            return Err(StationError::NoServer);
        }
        let device_id = self.device.device_id;
        let slot = self.profile.recovery_slot()?.ok_or(StationError::NoRecoverySlot)?;
        if slot.device_id() != device_id {
            return Err(StationError::SlotOfAnotherDevice);
        }
        let secret = DeviceSecret::generate();
        let identity = chartroom_client::DeviceIdentity::new(device_id.to_string(), &secret.signing_seed());
        let ephemeral = RecoveryKeyPair::generate();
        let request = chartroom_protocol::RecoverRequest {
            device_id: device_id.to_string(),
            token: token.trim().to_owned(),
            recovery_slot: to_hex(slot.as_bytes()),
            device_public_key: identity.public_key_hex(),
            ephemeral_public_key: to_hex(ephemeral.public().as_bytes()),
        };
        let answer = client.recover(&request).await.map_err(|e| match e.code() {
            Some("device.invalid_recovery_token") => StationError::RecoveryTokenInvalid,
            Some("device.recovery_slot_invalid") => StationError::RecoverySlotRefused,
            _ => e.into(),
        })?;
        // From here the server knows only the new key. If this process dies before the keyring
        // write, the profile is as it was and recovers with a new token.
        let sealed = from_hex(&answer.sealed_data_key)
            .and_then(|b| RecoverySlot::from_bytes(&b).ok())
            .filter(|s| s.device_id() == device_id)
            .ok_or(StationError::ServerAnswer)?;
        let dek = sealed.open(&ephemeral).map_err(|_| StationError::ServerAnswer)?;
        let escrow = EscrowSlot::seal(&dek, &*decode_key(&answer.escrow_key)?, &secret, device_id);
        // The data key must open this database before anything is changed.
        let mut store = self.open_store(dek)?;
        let actor = Actor { device_id, user_id: None, username: None, host: host_name() };
        let mut e = chartroom_audit::Event::new(now, "key_access", "recovery_slot", "ok");
        e.resource_id = Some(device_id.to_string());
        store.record(&actor, e)?;
        self.keystore.save(device_id, &secret)?;
        let slots_dropped = self.profile.rekey_slots(&escrow)?;
        let mut e = chartroom_audit::Event::new(now, "rekey", "device_secret", "ok");
        e.resource_id = Some(format!("{slots_dropped} user slots dropped"));
        store.record(&actor, e)?;
        store.close()?;
        Ok(Recovered { slots_dropped })
    }

    /// Opens the store with the recovery private key, without the keyring. The audited recovery flow
    /// around it (re-enrolling the device secret, new slots) belongs to sync and enrollment.
    pub fn open_with_recovery_key(&self, keys: &RecoveryKeyPair) -> Result<Store> {
        let slot = self.profile.recovery_slot()?.ok_or(StationError::NoRecoverySlot)?;
        if slot.device_id() != self.device.device_id {
            return Err(StationError::SlotOfAnotherDevice);
        }
        let dek = slot.open(keys)?;
        let mut store = self.open_store(dek)?;
        // Opening the data with the recovery key bypasses every user's slot: record who and when
        // is not known here, but that it happened is.
        let actor =
            Actor { device_id: self.device.device_id, user_id: None, username: None, host: host_name() };
        let mut e =
            chartroom_audit::Event::new(crate::clock::wall_now(), "key_access", "recovery_slot", "ok");
        e.resource_id = Some(slot.device_id().to_string());
        store.record(&actor, e)?;
        Ok(store)
    }
}

impl UnlockedVault {
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }
    pub fn username(&self) -> &str {
        &self.username
    }
    pub fn device_id(&self) -> Uuid {
        self.locked.device.device_id
    }

    /// The role the server gave this user at their last online login (`None`: never told).
    pub fn role(&self) -> Option<Role> {
        self.role
    }
    /// The units this user works on, as the server last said (empty: never told).
    pub fn units(&self) -> &[String] {
        &self.units
    }
    /// The open store, for writes that record their own audit entries and for tests. Reads that
    /// show patient data go through [`UnlockedVault::census`] and [`UnlockedVault::chart_by_mrn`],
    /// which record them.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Who is acting: this user on this device.
    pub fn actor(&self) -> Actor {
        Actor {
            device_id: self.device_id(),
            user_id: Some(self.user_id),
            username: Some(self.username.clone()),
            host: host_name(),
        }
    }

    /// A unit's census (all units with `None`), recorded in the audit chain with every patient shown.
    pub fn census(&mut self, unit: Option<&str>, now: Timestamp) -> Result<Vec<chartroom_store::CensusRow>> {
        let units = self.user_units();
        let asked: Vec<String> = match unit {
            Some(u) => vec![u.to_owned()],
            None if units.iter().any(|u| u == "*") => vec![],
            None => units,
        };
        for u in &asked {
            self.permit(chartroom_domain::Action::ReadCensus, u, Uuid::nil(), now)?;
        }
        if asked.is_empty() {
            self.permit(chartroom_domain::Action::ReadCensus, "*", Uuid::nil(), now)?;
        }
        let actor = self.actor();
        if asked.is_empty() {
            return Ok(self.store.census_as(&actor, None, now)?);
        }
        let mut rows = Vec::new();
        for u in &asked {
            rows.extend(self.store.census_as(&actor, Some(u), now)?);
        }
        Ok(rows)
    }

    /// The chart of the patient with this MRN, recorded in the audit chain. A patient who is not (or
    /// no longer) on this station is a recorded denial (without the MRN, which is PHI).
    pub fn chart_by_mrn(&mut self, mrn: &str, max_observations: usize, now: Timestamp) -> Result<Chart> {
        let actor = self.actor();
        let id = match self.store.find_by_mrn(mrn) {
            Ok(id) => id,
            Err(e) => {
                let e = StationError::from(e);
                self.store.record(&actor, chartroom_audit::Event::new(now, "denied", "patient", e.code()))?;
                return Err(e);
            }
        };
        let read = chartroom_domain::Action::Read(chartroom_domain::ChartSection::Demographics);
        let unit = self.store.patient_unit(id)?;
        self.permit(read, &unit, id, now)?;
        let mut chart = self.store.chart_as(&actor, id, max_observations, now)?;
        // Minimum necessary, as on the server: sections the role may not read stay empty.
        let who = chartroom_domain::Principal {
            role: self.role.ok_or(StationError::RoleUnknown)?,
            units: vec!["*".into()],
        };
        keep_sections(&mut chart, &chartroom_domain::access::readable_sections(&who, "*", false));
        self.hide_others_drafts(&mut chart);
        Ok(chart)
    }

    /// Drops other users' draft notes: a draft is its author's until signed.
    pub(crate) fn hide_others_drafts(&self, chart: &mut Chart) {
        let me = self.user_id;
        chart.notes.retain(|n| n.status != chartroom_domain::NoteStatus::Draft || n.author_id == me);
    }

    /// This user's own draft notes on this station (any patient here), oldest first, with what a
    /// list of them shows. Recorded in the audit chain as a read of every patient listed.
    pub fn my_drafts(&mut self, now: Timestamp) -> Result<Vec<DraftSummary>> {
        let drafts = self.store.drafts_by(self.user_id)?;
        let mut out = Vec::with_capacity(drafts.len());
        for note in drafts {
            let patient: chartroom_domain::Patient = self.store.get(note.patient_id)?;
            out.push(DraftSummary {
                note_id: note.id,
                patient_id: note.patient_id,
                mrn: patient.mrn,
                patient_name: patient.name.to_string(),
                bed: patient.bed,
                created_at: note.created_at,
                text_len: note.text.chars().count(),
            });
        }
        let actor = self.actor();
        let mut e = chartroom_audit::Event::new(now, "view", "drafts", "ok");
        let mut patients: Vec<Uuid> = out.iter().map(|d| d.patient_id).collect();
        patients.sort();
        patients.dedup();
        e.patient_ids = patients;
        self.store.record(&actor, e)?;
        Ok(out)
    }

    /// Puts the patient with this MRN on this user's own list ("my patients") or takes them off it.
    /// The list stays on this station (it is not synced) and loses a patient who leaves it. Only a
    /// patient the user may read can be added; each change is recorded.
    pub fn set_mine(&mut self, mrn: &str, mine: bool, now: Timestamp) -> Result<()> {
        let actor = self.actor();
        let id = match self.store.find_by_mrn(mrn) {
            Ok(id) => id,
            Err(e) => {
                let e = StationError::from(e);
                self.store
                    .record(&actor, chartroom_audit::Event::new(now, "denied", "my_patients", e.code()))?;
                return Err(e);
            }
        };
        if mine {
            let unit = self.store.patient_unit(id)?;
            self.permit(
                chartroom_domain::Action::Read(chartroom_domain::ChartSection::Demographics),
                &unit,
                id,
                now,
            )?;
        }
        self.store.set_mine(&actor, self.user_id, id, mine, now)?;
        Ok(())
    }

    /// The patients on this user's own list on this station.
    pub fn mine(&self) -> Result<std::collections::HashSet<Uuid>> {
        Ok(self.store.mine(self.user_id)?)
    }

    /// Whether this session logged in online (and so can reach the server).
    pub fn is_online(&self) -> bool {
        self.access_token.is_some()
    }

    /// The units this user works on here (all of the station's when the server never said).
    pub(crate) fn user_units(&self) -> Vec<String> {
        if self.units.is_empty() {
            vec!["*".into()]
        } else {
            self.units.clone()
        }
    }

    /// Checks that this user may do `action` on a patient of `unit`; a refusal is recorded.
    pub(crate) fn permit(
        &mut self,
        action: chartroom_domain::Action,
        unit: &str,
        patient_id: Uuid,
        now: Timestamp,
    ) -> Result<()> {
        let Some(role) = self.role else {
            return Err(StationError::RoleUnknown);
        };
        // The station holds its units' patients for all its users; each user reads only their own
        // units' (as the server last said).
        let who = chartroom_domain::Principal { role, units: self.user_units() };
        let target = chartroom_domain::Target::Patient { unit, break_glass: false };
        if let Err(denied) = chartroom_domain::decide(&who, action, target) {
            let actor = self.actor();
            let mut e = chartroom_audit::Event::new(now, "denied", "patient", denied.code());
            e.patient_ids = if patient_id.is_nil() { vec![] } else { vec![patient_id] };
            self.store.record(&actor, e)?;
            return Err(StationError::Denied(denied));
        }
        Ok(())
    }

    /// Whether this station is enrolled with a server (and so syncs).
    pub fn is_enrolled(&self) -> bool {
        self.locked.device.server.is_some()
    }

    /// Bounds the database's page cache at `kib` KiB (the default suits a headless sync of a whole
    /// station; a long-running desktop session keeps a small working set instead).
    pub fn set_page_cache_kib(&self, kib: i64) -> Result<()> {
        Ok(self.store.set_cache_kib(kib)?)
    }

    /// Whether this station has completed a first sync (until then its census is partial).
    pub fn first_sync_complete(&self) -> Result<bool> {
        Ok(self.store.sync_state()?.1)
    }

    /// Renews this session's tokens (see [`crate::sync::refresh`]).
    pub async fn refresh_session(
        &mut self,
        client: &chartroom_client::ServerClient,
        now: Timestamp,
    ) -> Result<()> {
        crate::sync::refresh(&crate::sync::Exclusive::new(self), client, now).await
    }

    /// What renewing the tokens sends: the refresh token and the device identity that proves it.
    pub(crate) fn refresh_request(
        &self,
    ) -> Result<(zeroize::Zeroizing<String>, chartroom_client::DeviceIdentity)> {
        let refresh = self.refresh_token.clone().ok_or(StationError::Offline)?;
        let (_, identity) = self.locked.identity()?;
        Ok((refresh, identity))
    }

    /// Takes the server's answer to a renewal: new tokens, or the session goes offline (a revoked
    /// device also wipes itself).
    pub(crate) fn refresh_answer(
        &mut self,
        answer: std::result::Result<chartroom_protocol::TokenResponse, chartroom_client::ClientError>,
        now: Timestamp,
    ) -> Result<()> {
        match answer {
            Ok(tokens) => {
                self.access_token = Some(zeroize::Zeroizing::new(tokens.access_token.clone()));
                self.refresh_token = Some(zeroize::Zeroizing::new(tokens.refresh_token.clone()));
                Ok(())
            }
            Err(e) if e.is_retryable() => Err(e.into()),
            Err(e) => {
                self.access_token = None;
                self.refresh_token = None;
                let actor = self.actor();
                let code = e.code().unwrap_or("server.invalid").to_owned();
                let mut event = chartroom_audit::Event::new(now, "session_offline", "session", &code);
                event.resource_id = Some("refresh refused".into());
                self.store.record(&actor, event)?;
                if code == "device.unknown" && self.locked.revocation_applies() {
                    self.locked.wipe()?;
                    return Err(StationError::DeviceRevoked);
                }
                Err(e.into())
            }
        }
    }

    /// The access token of this session's online login and the device identity that signs with it.
    pub(crate) fn online(&self) -> Result<(zeroize::Zeroizing<String>, chartroom_client::DeviceIdentity)> {
        let token = self.access_token.clone().ok_or(StationError::Offline)?;
        let (_, identity) = self.locked.identity()?;
        Ok((token, identity))
    }

    /// Local changes the server has not accepted yet.
    pub fn outbox(&self) -> Result<Vec<chartroom_store::OutboxEntry>> {
        Ok(self.store.outbox()?)
    }

    /// Verifies this device's audit chain: `Ok(n)` entries intact, or the first broken entry.
    pub fn verify_audit(&self) -> Result<std::result::Result<u64, chartroom_store::AuditBreak>> {
        Ok(self.store.verify_audit(self.device_id())?)
    }

    /// Gives another user a key slot on this device (after they authenticated online).
    pub fn add_user(
        &mut self,
        user_id: Uuid,
        username: &str,
        password: &Password,
        kdf: KdfParams,
    ) -> Result<()> {
        let secret = self.locked.keystore.load(self.device_id())?;
        let slot_version = match self.locked.profile.slot_for(username)? {
            Some(existing) => existing.slot.slot_version().saturating_add(1),
            None => 1,
        };
        let slot = KeySlot::seal(
            self.store.data_key(),
            password,
            &secret,
            user_id,
            self.device_id(),
            slot_version,
            kdf,
        )?;
        self.locked.profile.put_slot(user_id, username, None, None, &[], &slot)
    }

    /// Locks: checkpoints and closes the database and drops (wiping) the data key and every patient
    /// key. What comes back can show nothing until the next [`LockedVault::unlock`].
    pub fn lock(self) -> LockedVault {
        let actor = self.actor();
        let UnlockedVault { mut locked, mut store, username, .. } = self;
        locked.locked_user = Some(username);
        // Locking must always succeed: if the entry cannot be written (disk full), the lock still
        // happens and the failure is noted for the next unlock.
        let now = crate::clock::wall_now();
        if store.record(&actor, chartroom_audit::Event::new(now, "lock", "session", "ok")).is_err() {
            let _ = locked.profile.record_event(now, "lock_unrecorded", serde_json::json!({}));
        }
        // If the checkpoint fails (e.g. disk full), committed data is still safe in the WAL and the
        // connection is closed when `store` is dropped; the keys are wiped either way.
        let _ = store.close();
        locked
    }
}
