//! The server's data directory and `init`.
//!
//! ```text
//! DIR/config.json       listen address, TLS 1.2 opt-in (no secrets)
//! DIR/tls/cert.pem      self-signed certificate (its fingerprint is what stations pin)
//! DIR/tls/key.pem       its private key (0600)
//! DIR/keys/master.key   32-byte master key (0600): the database key and the record keys are
//!                       derived from it, so the database file alone is useless (a separate
//!                       directory, so backups of the database need not include it). With
//!                       `--master-key keyring` it lives in the OS keyring instead (service
//!                       `chartroom-server`, user `master-key:<server id>`) and this file is absent.
//!                       With `--master-key pkcs11:…` it is kept wrapped by an AES key inside an
//!                       HSM instead: DIR/keys/master.wrapped (see `hsm`).
//! DIR/keys/signing.key  Ed25519 seed for signed audit checkpoints (0600); absent when
//!                       `--signing-key pkcs11:…` keeps the key pair in an HSM
//! DIR/keys/recovery.key X25519 private key (0600) that opens stations' recovery slots after an
//!                       administrator approved a recovery. Data directories made before it existed
//!                       get one at their first `serve` (or `device recover`); stations enrolled
//!                       before that have no recovery slot.
//! DIR/keys/escrow-root.sealed  the root of the stations' escrow keys, sealed under the master
//!                       key (written by the first master key rotation; before that the root is
//!                       derived from the master key), so that a rotation never breaks a station
//! DIR/keys/rotating     present while a master key rotation is unfinished (the new key is in
//!                       keys/master.next, or in the keyring as `master-key-next:<server id>`):
//!                       nothing but `keys rotate` runs until it is finished
//! DIR/keys/database.url PostgreSQL URL (0600; it may hold a password), when `init --database-url`
//!                       chose PostgreSQL; absent for the embedded database
//! DIR/server.db         SQLCipher database (embedded backend only)
//! ```
//!
//! Several server processes share one PostgreSQL database by each having a copy of the same data
//! directory (same keys); the database records a check value of the master key and refuses others.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::storage::{Migrated, PgOptions, PgStorage, SqliteStorage, Storage};
use crate::ServerError;

/// `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerConfig {
    pub format: u32,
    pub listen: SocketAddr,
    /// TLS 1.2 is refused unless an administrator opts in.
    pub allow_tls12: bool,
    /// Where the master key is kept.
    #[serde(default)]
    pub master_key: MasterKeyStore,
    /// Where the checkpoint signing key is kept.
    #[serde(default)]
    pub signing_key: SigningKeyStore,
    /// The anomaly rule: factor over the user's own hourly average, floor, baseline window.
    #[serde(default)]
    pub anomaly: crate::oversight::AnomalyRule,
    /// How long audit entries are kept (days; never less than six years).
    #[serde(default = "default_retention")]
    pub audit_retention_days: u64,
    /// PostgreSQL connection pool of each server process.
    #[serde(default)]
    pub database_pool: DatabasePool,
    /// Set by the first master key rotation: the escrow root is in `keys/escrow-root.sealed` from
    /// then on, and a data directory without that file is damaged (never re-derived).
    #[serde(default)]
    pub escrow_root_sealed: bool,
}

/// Connections each server process keeps to PostgreSQL, and how long a request waits for one before
/// it is answered 503 `server.busy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabasePool {
    pub size: usize,
    pub wait_ms: u64,
}

impl Default for DatabasePool {
    fn default() -> Self {
        DatabasePool { size: 16, wait_ms: 5000 }
    }
}

fn default_retention() -> u64 {
    crate::audit::MIN_RETENTION_DAYS
}

/// Where the server's master key lives: never in the database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum MasterKeyStore {
    /// `keys/master.key`, 0600.
    #[default]
    File,
    /// The OS keyring, under an entry named by this server's id.
    Keyring { server_id: uuid::Uuid },
    /// `keys/master.wrapped`, sealed by the AES key a PKCS#11 URI names (an HSM).
    Pkcs11 { uri: String },
}

/// Where the key that signs audit checkpoints lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum SigningKeyStore {
    /// `keys/signing.key`, 0600.
    #[default]
    File,
    /// An Ed25519 key pair in an HSM, named by a PKCS#11 URI.
    Pkcs11 { uri: String },
}

/// What `keys/master.wrapped` is sealed for (the AES-GCM additional data in the HSM).
const MASTER_PURPOSE: &str = "chartroom master key";

const KEYRING_SERVICE: &str = "chartroom-server";

impl MasterKeyStore {
    fn keyring_user(server_id: &uuid::Uuid) -> String {
        format!("master-key:{server_id}")
    }
    fn next_keyring_user(server_id: &uuid::Uuid) -> String {
        format!("master-key-next:{server_id}")
    }
}

fn keyring() -> Result<chartroom_keyring::OsKeyring, ServerError> {
    chartroom_keyring::OsKeyring::connect().map_err(|e| ServerError::Keyring(e.to_string()))
}

const ESCROW_ROOT_LABEL: &[u8] = b"chartroom/escrow-root/v1";

fn escrow_seal_key(master: &[u8; 32]) -> chartroom_crypto::DataKey {
    chartroom_crypto::DataKey::derive(b"chartroom/server-escrow-seal/v1", master, b"escrow-root")
}

fn sync_dir(path: &Path) -> Result<(), ServerError> {
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

/// Options for `init`.
#[derive(Clone)]
pub struct InitOptions {
    pub listen: SocketAddr,
    /// Names the self-signed certificate is valid for.
    pub names: Vec<String>,
    /// An existing certificate chain and private key (PEM files) to use instead of a self-signed
    /// certificate, e.g. one from the hospital's own CA. Stations still pin its fingerprint.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Keep the master key in the OS keyring instead of `keys/master.key`.
    pub master_key_in_keyring: bool,
    /// Keep the master key wrapped by this HSM key (a PKCS#11 URI) instead.
    pub master_key_hsm: Option<String>,
    /// Keep the checkpoint signing key in this HSM (a PKCS#11 URI) instead of `keys/signing.key`.
    pub signing_key_hsm: Option<String>,
    /// Use this PostgreSQL database (a `postgres://` URL) instead of the embedded one.
    pub database_url: Option<String>,
}

impl std::fmt::Debug for InitOptions {
    // The database URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("listen", &self.listen)
            .field("names", &self.names)
            .field("tls", &self.tls)
            .field("master_key_in_keyring", &self.master_key_in_keyring)
            .field("master_key_hsm", &self.master_key_hsm)
            .field("signing_key_hsm", &self.signing_key_hsm)
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            names: vec!["localhost".into(), "127.0.0.1".into()],
            tls: None,
            master_key_in_keyring: false,
            master_key_hsm: None,
            signing_key_hsm: None,
            database_url: None,
        }
    }
}

/// What `init` made.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// `sha256:<hex>` of the certificate: give it to stations at enrollment.
    pub fingerprint: String,
}

/// A server data directory.
#[derive(Clone)]
pub struct DataDir {
    dir: PathBuf,
    /// A `--database-url` given on the command line, instead of `keys/database.url`.
    database_url: Option<std::sync::Arc<Zeroizing<String>>>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may hold a password.
        f.debug_struct("DataDir").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl DataDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DataDir { dir: dir.into(), database_url: None }
    }

    /// Uses this PostgreSQL URL instead of the one `init` recorded (`serve --database-url`).
    pub fn with_database_url(mut self, url: Option<String>) -> Self {
        self.database_url = url.map(|u| std::sync::Arc::new(Zeroizing::new(u)));
        self
    }
    pub fn path(&self) -> &Path {
        &self.dir
    }
    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub(crate) fn cert_path(&self) -> PathBuf {
        self.dir.join("tls").join("cert.pem")
    }
    pub(crate) fn key_path(&self) -> PathBuf {
        self.dir.join("tls").join("key.pem")
    }
    fn master_key_path(&self) -> PathBuf {
        self.dir.join("keys").join("master.key")
    }
    fn signing_key_path(&self) -> PathBuf {
        self.dir.join("keys").join("signing.key")
    }
    fn recovery_key_path(&self) -> PathBuf {
        self.dir.join("keys").join("recovery.key")
    }
    pub fn database_path(&self) -> PathBuf {
        self.dir.join("server.db")
    }
    fn database_url_path(&self) -> PathBuf {
        self.dir.join("keys").join("database.url")
    }

    /// Records `url` as this server's PostgreSQL database (`keys/database.url`, 0600), replacing
    /// the one recorded before.
    pub fn set_database_url(&self, url: &str) -> Result<(), ServerError> {
        self.read_config()?;
        let path = self.database_url_path();
        let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        write_new(&tmp, url.as_bytes(), 0o600)?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The PostgreSQL URL this server uses (`--database-url`, else `keys/database.url`); `None`
    /// for the embedded database.
    pub fn database_url(&self) -> Result<Option<Zeroizing<String>>, ServerError> {
        if let Some(url) = &self.database_url {
            return Ok(Some(Zeroizing::new(url.as_str().to_string())));
        }
        match fs::read_to_string(self.database_url_path()) {
            Ok(url) => Ok(Some(Zeroizing::new(url.trim().to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(ServerError::Damaged("keys/database.url")),
        }
    }

    /// Replaces `config.json` atomically.
    fn write_config(&self, config: &ServerConfig) -> Result<(), ServerError> {
        let json = serde_json::to_vec_pretty(config).map_err(|_| ServerError::Internal("config encoding"))?;
        let tmp = self.config_path().with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        write_new(&tmp, &json, 0o600)?;
        fs::rename(&tmp, self.config_path())?;
        sync_dir(&self.dir)
    }

    pub fn read_config(&self) -> Result<ServerConfig, ServerError> {
        let bytes = match fs::read(self.config_path()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ServerError::NotInitialised),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map_err(|_| ServerError::Damaged("config.json"))
    }

    /// The master key (from `keys/master.key` or the OS keyring, as configured). Refused while a
    /// master key rotation is unfinished: half the patients are under each key then.
    pub fn master_key(&self) -> Result<Zeroizing<[u8; 32]>, ServerError> {
        if self.rotation_marker_path().exists() {
            return Err(ServerError::RotationUnfinished);
        }
        self.current_master_key()
    }

    /// The master key in its store, whether or not a rotation is under way.
    pub(crate) fn current_master_key(&self) -> Result<Zeroizing<[u8; 32]>, ServerError> {
        let bytes = match self.read_config()?.master_key {
            MasterKeyStore::File => Zeroizing::new(
                fs::read(self.master_key_path()).map_err(|_| ServerError::Damaged("keys/master.key"))?,
            ),
            MasterKeyStore::Keyring { server_id } => keyring()?
                .read(KEYRING_SERVICE, &MasterKeyStore::keyring_user(&server_id))
                .map_err(|e| ServerError::Keyring(e.to_string()))?,
            MasterKeyStore::Pkcs11 { uri } => {
                let wrapped = fs::read(self.wrapped_master_path())
                    .map_err(|_| ServerError::Damaged("keys/master.wrapped"))?;
                crate::hsm::HsmKey::parse(&uri)?.open(&wrapped, MASTER_PURPOSE)?
            }
        };
        Ok(Zeroizing::new(bytes.as_slice().try_into().map_err(|_| ServerError::Damaged("keys/master.key"))?))
    }

    fn wrapped_master_path(&self) -> PathBuf {
        self.dir.join("keys").join("master.wrapped")
    }
    fn wrapped_next_master_path(&self) -> PathBuf {
        self.dir.join("keys").join("master.next.wrapped")
    }

    fn rotation_marker_path(&self) -> PathBuf {
        self.dir.join("keys").join("rotating")
    }
    fn next_master_key_path(&self) -> PathBuf {
        self.dir.join("keys").join("master.next")
    }
    fn escrow_root_path(&self) -> PathBuf {
        self.dir.join("keys").join("escrow-root.sealed")
    }
    fn escrow_root_next_path(&self) -> PathBuf {
        self.dir.join("keys").join("escrow-root.next")
    }

    fn serve_lock_path(&self) -> PathBuf {
        self.dir.join("serve.lock")
    }

    /// A shared lock on the data directory, held by every serving process and, for as long as it
    /// runs, every `chartroom-server` command on it: a key rotation cannot start meanwhile.
    pub fn lock_serving(&self) -> Result<fs::File, ServerError> {
        let file =
            fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.serve_lock_path())?;
        match file.try_lock_shared() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(ServerError::RotationRunning),
            Err(fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// The exclusive lock a key rotation holds: refused while a server, or another command, has this
    /// data directory's database open.
    pub(crate) fn lock_exclusive(&self) -> Result<fs::File, ServerError> {
        let file =
            fs::OpenOptions::new().create(true).truncate(false).write(true).open(self.serve_lock_path())?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(ServerError::ServerRunning),
            Err(fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Whether a master key rotation is unfinished.
    pub fn rotation_unfinished(&self) -> bool {
        self.rotation_marker_path().exists()
    }

    /// The new master key of an unfinished rotation (`None`: no rotation, or its new key already
    /// replaced the old one and only the marker is left).
    pub(crate) fn next_master_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, ServerError> {
        if !self.rotation_unfinished() {
            return Ok(None);
        }
        let bytes = match self.read_config()?.master_key {
            MasterKeyStore::File => match fs::read(self.next_master_key_path()) {
                Ok(b) => Zeroizing::new(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            },
            MasterKeyStore::Keyring { server_id } => {
                match keyring()?.read(KEYRING_SERVICE, &MasterKeyStore::next_keyring_user(&server_id)) {
                    Ok(b) => b,
                    Err(chartroom_keyring::KeystoreError::Missing) => return Ok(None),
                    Err(e) => return Err(ServerError::Keyring(e.to_string())),
                }
            }
            MasterKeyStore::Pkcs11 { uri } => match fs::read(self.wrapped_next_master_path()) {
                Ok(wrapped) => crate::hsm::HsmKey::parse(&uri)?.open(&wrapped, MASTER_PURPOSE)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let key: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| ServerError::Damaged("keys/master.next"))?;
        Ok(Some(Zeroizing::new(key)))
    }

    /// Stores the new master key of a rotation beside the current one, then marks the rotation
    /// as under way (from here on only `keys rotate` runs).
    pub(crate) fn begin_rotation(&self, new: &[u8; 32]) -> Result<(), ServerError> {
        match self.read_config()?.master_key {
            MasterKeyStore::File => {
                let path = self.next_master_key_path();
                let _ = fs::remove_file(&path);
                write_new(&path, new, 0o600)?;
            }
            MasterKeyStore::Keyring { server_id } => keyring()?
                .write(KEYRING_SERVICE, &MasterKeyStore::next_keyring_user(&server_id), new)
                .map_err(|e| ServerError::Keyring(e.to_string()))?,
            MasterKeyStore::Pkcs11 { uri } => {
                let path = self.wrapped_next_master_path();
                let _ = fs::remove_file(&path);
                write_new(&path, &crate::hsm::HsmKey::parse(&uri)?.seal(new, MASTER_PURPOSE)?, 0o600)?;
            }
        }
        if !self.rotation_marker_path().exists() {
            write_new(&self.rotation_marker_path(), b"", 0o600)?;
        }
        sync_dir(&self.dir.join("keys"))
    }

    /// Makes the new master key the master key: the escrow root sealed under it first, then the
    /// key itself (the old one is gone), then the marker. Each step is atomic, and a crash between
    /// two is finished by the next `keys rotate`.
    pub(crate) fn finish_rotation(&self, new: &[u8; 32]) -> Result<(), ServerError> {
        if self.escrow_root_next_path().exists() {
            fs::rename(self.escrow_root_next_path(), self.escrow_root_path())?;
        }
        let mut config = self.read_config()?;
        if !config.escrow_root_sealed {
            config.escrow_root_sealed = true;
            self.write_config(&config)?;
        }
        match self.read_config()?.master_key {
            MasterKeyStore::File => {
                if self.next_master_key_path().exists() {
                    fs::rename(self.next_master_key_path(), self.master_key_path())?;
                }
            }
            MasterKeyStore::Keyring { server_id } => {
                let k = keyring()?;
                let err = |e: chartroom_keyring::KeystoreError| ServerError::Keyring(e.to_string());
                k.write(KEYRING_SERVICE, &MasterKeyStore::keyring_user(&server_id), new).map_err(err)?;
                k.remove(KEYRING_SERVICE, &MasterKeyStore::next_keyring_user(&server_id)).map_err(err)?;
            }
            MasterKeyStore::Pkcs11 { .. } => {
                if self.wrapped_next_master_path().exists() {
                    fs::rename(self.wrapped_next_master_path(), self.wrapped_master_path())?;
                }
            }
        }
        sync_dir(&self.dir.join("keys"))?;
        fs::remove_file(self.rotation_marker_path())?;
        sync_dir(&self.dir.join("keys"))
    }

    /// The root of the stations' escrow keys: sealed under the master key once a rotation wrote it,
    /// derived from the master key before that.
    pub fn escrow_root(&self, master: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, ServerError> {
        match fs::read(self.escrow_root_path()) {
            Ok(sealed) => escrow_seal_key(master)
                .open_secret(ESCROW_ROOT_LABEL, &sealed)
                .map_err(|_| ServerError::Damaged("keys/escrow-root.sealed")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.read_config()?.escrow_root_sealed => {
                Ok(chartroom_crypto::escrow_key_for(master, uuid::Uuid::nil()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ServerError::Damaged("keys/escrow-root.sealed"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Seals the escrow root under the rotation's new master key (`keys/escrow-root.next`).
    pub(crate) fn stage_escrow_root(&self, root: &[u8; 32], new: &[u8; 32]) -> Result<(), ServerError> {
        let path = self.escrow_root_next_path();
        let _ = fs::remove_file(&path);
        let mut f = create_new(&path, 0o600)?;
        f.write_all(&escrow_seal_key(new).seal_secret(ESCROW_ROOT_LABEL, root))?;
        f.sync_all()?;
        Ok(())
    }

    /// Opens the server's database (applying pending migrations): the embedded SQLCipher file,
    /// keyed by a subkey of the master key, or PostgreSQL, bound to this master key.
    pub fn open_storage(&self) -> Result<std::sync::Arc<dyn Storage>, ServerError> {
        self.open_storage_migrated().map(|(s, _)| s)
    }

    /// [`DataDir::open_storage`], also saying which migrations it applied (`migrate`).
    pub fn open_storage_migrated(&self) -> Result<(std::sync::Arc<dyn Storage>, Migrated), ServerError> {
        let master = self.master_key()?;
        open_database(self, &master, &self.read_config()?.database_pool)
    }

    /// The key that signs audit checkpoints (`keys/signing.key`, never in the database).
    pub fn signing_key(&self) -> Result<crate::audit::CheckpointKey, ServerError> {
        if let SigningKeyStore::Pkcs11 { uri } = self.read_config()?.signing_key {
            let key = crate::hsm::HsmKey::parse(&uri)?;
            let public = key.verifying_key()?;
            return Ok(crate::audit::CheckpointKey::Hsm { key, public });
        }
        let bytes = Zeroizing::new(
            fs::read(self.signing_key_path()).map_err(|_| ServerError::Damaged("keys/signing.key"))?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes.as_slice().try_into().map_err(|_| ServerError::Damaged("keys/signing.key"))?,
        );
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed).into())
    }

    /// The recovery key pair (`keys/recovery.key`). An initialised data directory made before
    /// recovery existed gets one now: written whole under a temporary name, then linked into place
    /// (which never replaces), so two processes starting together agree on one complete key.
    pub fn recovery_keys(&self) -> Result<chartroom_crypto::RecoveryKeyPair, ServerError> {
        self.read_config()?;
        let path = self.recovery_key_path();
        if !path.exists() {
            let fresh = chartroom_crypto::RecoveryKeyPair::generate();
            let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
            write_new(&tmp, fresh.secret_bytes().as_ref(), 0o600)?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(fresh),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let bytes = Zeroizing::new(fs::read(&path).map_err(|_| ServerError::Damaged("keys/recovery.key"))?);
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes.as_slice().try_into().map_err(|_| ServerError::Damaged("keys/recovery.key"))?,
        );
        Ok(chartroom_crypto::RecoveryKeyPair::from_secret_bytes(&secret))
    }

    /// The keys that seal patient records (derived from the master key).
    pub fn record_keys(&self) -> Result<crate::phi::RecordKeys, ServerError> {
        Ok(crate::phi::RecordKeys::from_master(&*self.master_key()?))
    }

    /// The certificate's fingerprint.
    pub fn fingerprint(&self) -> Result<String, ServerError> {
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_file(self.cert_path())
            .map_err(|_| ServerError::Damaged("tls/cert.pem"))?;
        Ok(crate::tls::fingerprint(&cert))
    }
}

/// Initialises an empty (or missing) data directory. Refuses, changing nothing, if it already holds
/// a server; removes what it wrote if a step fails.
pub fn init(dir: &DataDir, options: &InitOptions) -> Result<InitReport, ServerError> {
    let existing = [
        dir.config_path(),
        dir.cert_path(),
        dir.key_path(),
        dir.master_key_path(),
        dir.wrapped_master_path(),
        dir.signing_key_path(),
        dir.recovery_key_path(),
        dir.database_path(),
        dir.database_url_path(),
    ];
    if existing.iter().any(|p| p.exists()) {
        return Err(ServerError::AlreadyInitialised);
    }
    let server_id = uuid::Uuid::new_v4();
    let store = match (&options.master_key_hsm, options.master_key_in_keyring) {
        (Some(uri), _) => MasterKeyStore::Pkcs11 { uri: uri.clone() },
        (None, true) => MasterKeyStore::Keyring { server_id },
        (None, false) => MasterKeyStore::File,
    };
    let result = init_files(dir, options, &store);
    if result.is_err() {
        for p in existing {
            let _ = fs::remove_file(p);
        }
        if let MasterKeyStore::Keyring { server_id } = &store {
            if let Ok(k) = chartroom_keyring::OsKeyring::connect() {
                let _ = k.remove(KEYRING_SERVICE, &MasterKeyStore::keyring_user(server_id));
            }
        }
    }
    result
}

fn init_files(
    dir: &DataDir,
    options: &InitOptions,
    store: &MasterKeyStore,
) -> Result<InitReport, ServerError> {
    for sub in [dir.path().to_path_buf(), dir.path().join("tls"), dir.path().join("keys")] {
        create_private_dir(&sub)?;
    }
    let (cert_pem, key_pem, fingerprint) = match &options.tls {
        None => crate::tls::self_signed(options.names.clone())?,
        Some((cert, key)) => crate::tls::given(cert, key)?,
    };
    write_new(&dir.cert_path(), cert_pem.as_bytes(), 0o644)?;
    write_new(&dir.key_path(), key_pem.as_bytes(), 0o600)?;

    let mut master = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(master.as_mut());
    match store {
        MasterKeyStore::File => write_new(&dir.master_key_path(), master.as_ref(), 0o600)?,
        MasterKeyStore::Keyring { server_id } => chartroom_keyring::OsKeyring::connect()
            .and_then(|k| k.write(KEYRING_SERVICE, &MasterKeyStore::keyring_user(server_id), master.as_ref()))
            .map_err(|e| ServerError::Keyring(e.to_string()))?,
        MasterKeyStore::Pkcs11 { uri } => {
            let hsm = crate::hsm::HsmKey::parse(uri)?;
            hsm.ensure_wrapping_key()?;
            write_new(&dir.wrapped_master_path(), &hsm.seal(master.as_ref(), MASTER_PURPOSE)?, 0o600)?;
        }
    }
    let signing_store = match &options.signing_key_hsm {
        Some(uri) => {
            crate::hsm::HsmKey::parse(uri)?.ensure_signing_key()?;
            SigningKeyStore::Pkcs11 { uri: uri.clone() }
        }
        None => {
            let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            write_new(&dir.signing_key_path(), signing.as_bytes(), 0o600)?;
            SigningKeyStore::File
        }
    };
    let recovery = chartroom_crypto::RecoveryKeyPair::generate();
    write_new(&dir.recovery_key_path(), recovery.secret_bytes().as_ref(), 0o600)?;

    if let Some(url) = &options.database_url {
        write_new(&dir.database_url_path(), url.as_bytes(), 0o600)?;
    }
    drop(open_database(dir, &master, &DatabasePool::default())?);
    #[cfg(unix)]
    if options.database_url.is_none() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.database_path(), fs::Permissions::from_mode(0o600))?;
    }
    let config = ServerConfig {
        format: 1,
        listen: options.listen,
        allow_tls12: false,
        master_key: store.clone(),
        signing_key: signing_store,
        anomaly: crate::oversight::AnomalyRule::default(),
        audit_retention_days: crate::audit::MIN_RETENTION_DAYS,
        database_pool: DatabasePool::default(),
        escrow_root_sealed: false,
    };
    let json = serde_json::to_vec_pretty(&config).map_err(|_| ServerError::Internal("config encoding"))?;
    // config.json last: its presence means "initialised".
    write_new(&dir.config_path(), &json, 0o600)?;
    Ok(InitReport { fingerprint })
}

/// Opens the embedded database or PostgreSQL, as the data directory says, and records the HSM key
/// uses made so far (opening the master key in an HSM is a key use: it goes in the trail).
fn open_database(
    dir: &DataDir,
    master: &[u8; 32],
    pool: &DatabasePool,
) -> Result<(std::sync::Arc<dyn Storage>, Migrated), ServerError> {
    let (storage, migrated) = open_database_unrecorded(dir, master, pool)?;
    crate::audit::record_hsm_uses(&*storage)?;
    Ok((storage, migrated))
}

fn open_database_unrecorded(
    dir: &DataDir,
    master: &[u8; 32],
    pool: &DatabasePool,
) -> Result<(std::sync::Arc<dyn Storage>, Migrated), ServerError> {
    match dir.database_url()? {
        None => {
            let (storage, migrated) = SqliteStorage::open_migrated(&dir.database_path(), master)?;
            Ok((std::sync::Arc::new(storage), migrated))
        }
        Some(url) => {
            let options =
                PgOptions { pool_size: pool.size, wait: std::time::Duration::from_millis(pool.wait_ms) };
            let (storage, migrated) = PgStorage::connect_with(&url, options)?;
            storage.bind_master_key(&master_key_check(master))?;
            Ok((std::sync::Arc::new(storage), migrated))
        }
    }
}

/// Opens the database under `master` (a rotation tries the old and the new key).
pub(crate) fn open_database_with(
    dir: &DataDir,
    master: &[u8; 32],
) -> Result<std::sync::Arc<dyn Storage>, ServerError> {
    open_database(dir, master, &dir.read_config()?.database_pool).map(|(s, _)| s)
}

/// A value that identifies the master key without revealing it (SHA-256 under a fixed label).
pub(crate) fn master_key_check(master: &[u8; 32]) -> String {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::new().chain_update(b"chartroom/master-key-check/v1\0").chain_update(master).finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_private_dir(path: &Path) -> Result<(), ServerError> {
    fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates `path` for writing with `mode`, refusing if it exists.
pub(crate) fn create_new(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

/// Creates `path` (refusing if it exists) with `mode`, writes and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ServerError> {
    let mut f = create_new(path, mode)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
