//! The PostgreSQL backend, for hospital-wide deployments with several server processes in front of
//! one database. Same trait, same behaviour as the embedded backend (one conformance suite).
//!
//! - **Driver**: `tokio-postgres` with a `deadpool` pool, on a small runtime of its own, so the
//!   synchronous `Storage` trait can be called from the server's blocking pool and from commands.
//! - **TLS**: always, unless the host is a local Unix socket. `sslmode=verify-full` checks the
//!   certificate against `sslrootcert` (a CA file) and the host name; weaker modes are refused.
//! - **Order across processes**: every transaction that appends to the audit trail or takes a change
//!   number first takes one advisory lock (`CHAIN_LOCK`) and holds it to commit. So the server chain
//!   stays one linear chain, and change numbers become visible in the order they were issued: a
//!   station's pull cursor can never pass a number whose transaction has not committed yet.
//! - **No key here**: PostgreSQL holds sealed values only; the master key stays in the data
//!   directory (or the keyring) of each server process.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chartroom_audit::{server_link, verify_chain, AuditEntry, ChainHead, Checkpoint, Digest32, Event};
use chartroom_domain::{LoginThrottle, Timestamp};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{to_i64, to_i64_u, units_json, username_key, DeviceRow, Rewrapped};
use super::{
    AppliedChange, AuditBase, BreakGlass, DeviceRecord, EnrolledDevice, Incident, IncomingChange,
    IncomingRecord, Ingested, Migrated, NewSession, NewUser, PullRows, RawEntry, RecordKind, RecordVersion,
    Refreshed, SealedCensusRow, SealedChart, SealedPatient, SealedRecord, SessionOwner, SessionTokens,
    Storage, Stored, UserRecord, SERVER_CHAIN,
};
use crate::ServerError;

/// Append-only migrations of the PostgreSQL schema; `chartroom_schema.version` counts those applied.
/// Text that is compared or ordered uses the "C" collation: byte order, as in the embedded backend.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the schema of the embedded backend's migrations 1–11, in PostgreSQL types.
    r#"CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE users (
        id            uuid PRIMARY KEY,
        username      text NOT NULL,
        username_key  text COLLATE "C" NOT NULL UNIQUE,
        role          text NOT NULL,
        units         text NOT NULL,
        password_hash text NOT NULL,
        disabled      boolean NOT NULL DEFAULT false,
        created_at    bigint NOT NULL
    );
    CREATE TABLE devices (
        id                        uuid PRIMARY KEY,
        name                      text NOT NULL,
        name_key                  text COLLATE "C" NOT NULL UNIQUE,
        profile                   text NOT NULL,
        units                     text NOT NULL,
        token_hash                bytea UNIQUE,
        token_expires_at          bigint,
        public_key                bytea,
        enrolled_at               bigint,
        revoked_at                bigint,
        created_at                bigint NOT NULL,
        recovery_token_hash       bytea,
        recovery_token_expires_at bigint
    );
    CREATE TABLE login_throttle (key text PRIMARY KEY, state text NOT NULL);
    CREATE TABLE auth_nonces (
        nonce_hash bytea PRIMARY KEY,
        device_id  uuid NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE INDEX auth_nonces_by_expiry ON auth_nonces(expires_at);
    CREATE TABLE sessions (
        id                 uuid PRIMARY KEY,
        user_id            uuid NOT NULL REFERENCES users(id),
        device_id          uuid NOT NULL REFERENCES devices(id),
        access_hash        bytea NOT NULL UNIQUE,
        access_expires_at  bigint NOT NULL,
        refresh_hash       bytea NOT NULL UNIQUE,
        refresh_expires_at bigint NOT NULL,
        prev_refresh_hash  bytea UNIQUE,
        created_at         bigint NOT NULL
    );
    CREATE INDEX sessions_by_user ON sessions(user_id);
    CREATE INDEX sessions_by_device ON sessions(device_id);
    CREATE TABLE patients (
        id          uuid PRIMARY KEY,
        mrn_index   bytea NOT NULL UNIQUE,
        unit        text COLLATE "C" NOT NULL,
        bed         text COLLATE "C" NOT NULL,
        version     bigint NOT NULL,
        wrapped_key bytea NOT NULL,
        body        bytea NOT NULL,
        change_seq  bigint NOT NULL
    );
    CREATE INDEX patients_by_unit ON patients(unit, bed, id);
    CREATE INDEX patients_by_change ON patients(change_seq);
    CREATE TABLE records (
        id         uuid PRIMARY KEY,
        patient_id uuid NOT NULL REFERENCES patients(id),
        kind       text NOT NULL,
        sort_key   bigint NOT NULL,
        version    bigint NOT NULL,
        body       bytea NOT NULL,
        change_seq bigint NOT NULL
    );
    CREATE INDEX records_by_patient ON records(patient_id, kind, sort_key DESC);
    CREATE INDEX records_by_change ON records(change_seq);
    CREATE TABLE audit_entries (
        server_seq  bigint PRIMARY KEY,
        server_hash bytea NOT NULL,
        device_id   uuid NOT NULL,
        seq         bigint NOT NULL,
        id          uuid NOT NULL UNIQUE,
        hash        bytea NOT NULL,
        at          bigint NOT NULL,
        username    text,
        action      text NOT NULL,
        entry       bytea NOT NULL,
        UNIQUE (device_id, seq)
    );
    CREATE INDEX audit_by_time ON audit_entries(at);
    CREATE INDEX audit_by_user ON audit_entries(username, action, at);
    CREATE TABLE audit_checkpoints (number bigint PRIMARY KEY, checkpoint text NOT NULL);
    CREATE TABLE audit_base (id integer PRIMARY KEY CHECK (id = 1), base text NOT NULL);
    CREATE TABLE break_glass (
        id          uuid PRIMARY KEY,
        user_id     uuid NOT NULL,
        username    text NOT NULL,
        patient_id  uuid NOT NULL,
        reason      text NOT NULL,
        detail      bytea NOT NULL,
        granted_at  bigint NOT NULL,
        expires_at  bigint NOT NULL,
        reviewed_by text,
        reviewed_at bigint
    );
    CREATE INDEX break_glass_by_user ON break_glass(user_id, patient_id, expires_at);
    CREATE TABLE incidents (
        id             uuid PRIMARY KEY,
        at             bigint NOT NULL,
        user_id        uuid NOT NULL,
        username       text NOT NULL,
        kind           text NOT NULL,
        last_hour      bigint NOT NULL,
        hourly_average double precision NOT NULL
    );
    CREATE TABLE applied_changes (
        change_id uuid PRIMARY KEY,
        device_id uuid NOT NULL,
        record_id uuid NOT NULL,
        version   bigint NOT NULL
    );
    CREATE TABLE change_counter (id integer PRIMARY KEY CHECK (id = 1), value bigint NOT NULL);
    INSERT INTO change_counter (id, value) VALUES (1, 0);"#,
];

/// How long a statement waits for a lock before the request is answered `server.busy` (ms).
const LOCK_TIMEOUT_MS: u32 = 15_000;

/// The advisory lock that orders the audit chain and the change numbers across processes.
const CHAIN_LOCK: i64 = 0x4348_4152_5452_4d31; // "CHARTRM1"
/// The advisory lock held while migrating (processes starting together migrate once).
const MIGRATE_LOCK: i64 = 0x4348_4152_5452_4d30; // "CHARTRM0"

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub struct PgOptions {
    /// Connections this process keeps at most.
    pub pool_size: usize,
    /// How long a request waits for a free connection before it is answered `server.busy`.
    pub wait: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 16, wait: Duration::from_secs(5) }
    }
}

/// The PostgreSQL backend.
pub struct PgStorage {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        // The last reference may go away on an async worker, where a blocking shutdown panics.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgStorage {
    // The pool's configuration holds the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStorage").finish_non_exhaustive()
    }
}

impl PgStorage {
    /// Connects to `url` (checking TLS as described above) and applies pending migrations.
    pub fn connect(url: &str) -> Result<Self, ServerError> {
        Self::connect_with(url, PgOptions::default()).map(|(s, _)| s)
    }

    /// [`PgStorage::connect`] with pool settings; also says which migrations it applied.
    pub fn connect_with(url: &str, options: PgOptions) -> Result<(Self, Migrated), ServerError> {
        let (config, tls) = client_config(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chartroom-pg")
            .enable_all()
            .build()
            .map_err(|_| ServerError::Internal("database runtime"))?;
        let manager =
            Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.wait))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|_| ServerError::Internal("database pool"))?;
        let storage = PgStorage { runtime: Some(runtime), pool };
        let migrated = storage.migrate()?;
        Ok((storage, migrated))
    }

    /// Applies pending migrations under an advisory lock; refuses a schema newer than this build.
    fn migrate(&self) -> Result<Migrated, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK]).await.map_err(db)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS chartroom_schema (
                     id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL);
                 INSERT INTO chartroom_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
            )
            .await
            .map_err(db)?;
            let current: i32 = tx
                .query_one_cached("SELECT version FROM chartroom_schema WHERE id = 1", &[])
                .await
                .map_err(db)?
                .get(0);
            let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
            if current > known {
                return Err(ServerError::Database(format!(
                    "schema {current} is newer than this build ({known}); upgrade chartroom-server"
                )));
            }
            for sql in MIGRATIONS.iter().skip(usize::try_from(current).unwrap_or(0)) {
                tx.batch_execute(sql).await.map_err(db)?;
            }
            tx.execute_cached("UPDATE chartroom_schema SET version = $1 WHERE id = 1", &[&known])
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(Migrated { from: u32::try_from(current).unwrap_or(0), to: u32::try_from(known).unwrap_or(0) })
        })
    }

    /// Creates an empty database `name` (lowercase letters, digits and `_`) on the cluster that
    /// `admin_url` reaches — for tests and benchmarks, which give each run a database of its own —
    /// and returns its URL.
    pub fn create_database(admin_url: &str, name: &str) -> Result<String, ServerError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ServerError::Internal("database names are [a-z0-9_]+"));
        }
        let (config, tls) = client_config(admin_url)?;
        let sql = format!("CREATE DATABASE {name}");
        // A runtime of its own, on a thread of its own: callable from async code too.
        std::thread::scope(|s| {
            s.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|_| ServerError::Internal("database runtime"))?;
                runtime.block_on(async {
                    let (client, connection) = config.connect(tls).await.map_err(db)?;
                    let driver = tokio::spawn(connection);
                    client.batch_execute(&sql).await.map_err(db)?;
                    drop(client);
                    let _ = driver.await;
                    Ok::<_, ServerError>(())
                })
            })
            .join()
            .unwrap_or(Err(ServerError::Internal("database worker")))
        })?;
        let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        Ok(if query.is_empty() { format!("{server}/{name}") } else { format!("{server}/{name}?{query}") })
    }

    /// Binds the database to one master key: the first server to open it records a check value
    /// derived from its key; a server with another key (a data directory copied wrongly, or another
    /// installation) is refused instead of writing records nobody else can open.
    pub fn bind_master_key(&self, check: &str) -> Result<(), ServerError> {
        self.block(async {
            let c = self.client().await?;
            c.execute_cached(
                "INSERT INTO meta (key, value) VALUES ('master_key_check', $1) ON CONFLICT (key) DO NOTHING",
                &[&check],
            )
            .await
            .map_err(db)?;
            let stored: String = c
                .query_one_cached("SELECT value FROM meta WHERE key = 'master_key_check'", &[])
                .await
                .map_err(db)?
                .get(0);
            if subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), check.as_bytes()).into() {
                Ok(())
            } else {
                Err(ServerError::Database(
                    "this database belongs to a server with another master key; \
                     every server process needs a copy of the same data directory"
                        .into(),
                ))
            }
        })
    }

    /// Moves the database's master key binding from `old` to `new` (master key rotation); a database
    /// already bound to `new` stays so.
    pub fn rebind_master_key(&self, old: &str, new: &str) -> Result<(), ServerError> {
        self.block(async {
            let c = self.client().await?;
            c.execute_cached(
                "UPDATE meta SET value = $2 WHERE key = 'master_key_check' AND value = $1",
                &[&old, &new],
            )
            .await
            .map_err(db)?;
            Ok(())
        })?;
        self.bind_master_key(new)
    }

    /// Runs `work` to completion on the backend's runtime. Called where blocking is fine (a
    /// command, or the server's blocking pool), it waits right here; called from async code (a
    /// caller that did not move the work off its async worker), on a helper thread, so that it
    /// still works, only slower.
    fn block<T: Send>(
        &self,
        work: impl std::future::Future<Output = Result<T, ServerError>> + Send,
    ) -> Result<T, ServerError> {
        let Some(runtime) = &self.runtime else { return Err(ServerError::Internal("database closed")) };
        if tokio::runtime::Handle::try_current().is_err() || super::blocking_allowed() {
            return runtime.block_on(work);
        }
        std::thread::scope(|s| s.spawn(|| runtime.block_on(work)).join())
            .unwrap_or(Err(ServerError::Internal("database worker")))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ServerError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => ServerError::Busy,
            PoolError::Backend(e) => db(e),
            _ => ServerError::Database("the database is unreachable".into()),
        })
    }
}

/// A database error as a message with its SQLSTATE only: PostgreSQL's own text can quote values.
fn db(e: tokio_postgres::Error) -> ServerError {
    match e.code() {
        Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => ServerError::Busy,
        Some(code) => ServerError::Database(format!("statement failed (SQLSTATE {})", code.code())),
        None if e.is_closed() => ServerError::Database("the database connection was lost".into()),
        None => ServerError::Database("the database is unreachable".into()),
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The driver's configuration and TLS connector for `url` (libpq URL syntax). `sslmode` and
/// `sslrootcert` are read here: `verify-full` is what network connections must use.
fn client_config(
    url: &str,
) -> Result<(tokio_postgres::Config, tokio_postgres_rustls::MakeRustlsConnect), ServerError> {
    let bad = |why: &str| ServerError::Database(format!("--database-url: {why}"));
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root_cert, mut rest) = (None, None, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            Some(("sslrootcert", v)) => root_cert = Some(percent_decode(v)),
            _ => rest.push(pair),
        }
    }
    let stripped = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    let mut config =
        tokio_postgres::Config::from_str(&stripped).map_err(|_| bad("not a valid postgres:// URL"))?;
    // Only a Unix socket, and no `hostaddr` (which the driver would reach over TCP instead).
    let hosts = config.get_hosts();
    let local_socket = !hosts.is_empty()
        && hosts.iter().all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)))
        && config.get_hostaddrs().is_empty();
    let mut roots = rustls::RootCertStore::empty();
    match mode.as_deref() {
        Some("verify-full") => {
            let path = root_cert.ok_or_else(|| bad("sslmode=verify-full needs sslrootcert=<CA file>"))?;
            let pem = std::fs::read(&path).map_err(|_| bad("sslrootcert is not a readable file"))?;
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.map_err(|_| bad("sslrootcert is not a PEM certificate"))?).map_err(|_| bad("sslrootcert is not a usable CA certificate"))?;
            }
            if roots.is_empty() {
                return Err(bad("sslrootcert holds no certificate"));
            }
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        Some("disable") | None if local_socket => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        _ => {
            return Err(bad(
                "connections to PostgreSQL carry PHI and must use sslmode=verify-full with sslrootcert=<CA file> \
                 (plain connections are allowed only over a local Unix socket)",
            ))
        }
    }
    config.application_name("chartroom-server");
    // A stalled session must not hold the audit chain's lock (or a row) for ever: waits for a lock
    // give up well inside the request timeout (answered `server.busy`), and a transaction left idle
    // is ended by the server.
    let options = config.get_options().map(str::to_owned).unwrap_or_default();
    config.options(
        format!("{options} -c lock_timeout={LOCK_TIMEOUT_MS} -c idle_in_transaction_session_timeout=60000")
            .trim(),
    );
    config.connect_timeout(Duration::from_secs(10));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, tokio_postgres_rustls::MakeRustlsConnect::new(tls)))
}

/// `%XX` escapes in a URL parameter (a CA path may hold spaces).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn damaged() -> ServerError {
    ServerError::Damaged("database")
}

fn bytes32(v: &[u8]) -> Result<[u8; 32], ServerError> {
    v.try_into().map_err(|_| damaged())
}

const USER_COLUMNS: &str = "id, username, role, units, disabled, created_at, password_hash";

fn user_row(r: &Row) -> Result<NewUser, ServerError> {
    user_row_at(r, 0)
}

/// A user from `USER_COLUMNS` starting at column `at`.
fn user_row_at(r: &Row, at: usize) -> Result<NewUser, ServerError> {
    Ok(NewUser {
        record: UserRecord {
            id: r.get(at),
            username: r.get(at + 1),
            role: r.get::<_, String>(at + 2).parse().map_err(|_| damaged())?,
            units: serde_json::from_str(&r.get::<_, String>(at + 3)).map_err(|_| damaged())?,
            disabled: r.get(at + 4),
            created_at: Timestamp(r.get(at + 5)),
        },
        password_hash: r.get(at + 6),
    })
}

/// `columns` (comma-separated) qualified with `table`.
fn prefixed(table: &str, columns: &str) -> String {
    columns.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

const DEVICE_COLUMNS: &str =
    "id, name, profile, units, token_expires_at, enrolled_at, revoked_at, created_at, public_key";

fn device_row(r: &Row) -> Result<DeviceRow, ServerError> {
    device_row_at(r, 0)
}

/// A device from `DEVICE_COLUMNS` starting at column `at`.
fn device_row_at(r: &Row, at: usize) -> Result<DeviceRow, ServerError> {
    Ok(DeviceRow {
        record: DeviceRecord {
            id: r.get(at),
            name: r.get(at + 1),
            profile: r.get::<_, String>(at + 2).parse().map_err(|_| damaged())?,
            units: serde_json::from_str(&r.get::<_, String>(at + 3)).map_err(|_| damaged())?,
            token_expires_at: r.get::<_, Option<i64>>(at + 4).map(Timestamp),
            enrolled_at: r.get::<_, Option<i64>>(at + 5).map(Timestamp),
            revoked_at: r.get::<_, Option<i64>>(at + 6).map(Timestamp),
            created_at: Timestamp(r.get(at + 7)),
        },
        public_key: r.get::<_, Option<Vec<u8>>>(at + 8).map(|k| bytes32(&k)).transpose()?,
    })
}

/// The driver's reads and writes through each connection's statement cache: a statement is parsed
/// once per connection, and each use is one round trip instead of two.
trait Cached: GenericClient {
    fn query_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a {
        async move { self.query(&self.prepare_cached(sql).await?, params).await }
    }

    fn query_opt_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Option<Row>, tokio_postgres::Error>> + Send + 'a {
        async move { self.query_opt(&self.prepare_cached(sql).await?, params).await }
    }

    fn query_one_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Row, tokio_postgres::Error>> + Send + 'a {
        async move { self.query_one(&self.prepare_cached(sql).await?, params).await }
    }

    fn execute_cached<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a {
        async move { self.execute(&self.prepare_cached(sql).await?, params).await }
    }
}

impl<T: GenericClient> Cached for T {}

async fn devices_where(
    c: &impl GenericClient,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<DeviceRow>, ServerError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices {filter} ORDER BY name_key");
    c.query_cached(&sql, params).await.map_err(db)?.iter().map(device_row).collect()
}

async fn users_where(
    c: &impl GenericClient,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<NewUser>, ServerError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users {filter} ORDER BY username_key");
    c.query_cached(&sql, params).await.map_err(db)?.iter().map(user_row).collect()
}

/// The session's user and device, if both are still in good standing.
async fn session_owner(
    c: &impl GenericClient,
    session_id: Uuid,
    user_id: Uuid,
    device_id: Uuid,
    access_expires_at: Timestamp,
) -> Result<Option<SessionOwner>, ServerError> {
    let user = users_where(c, "WHERE id = $1 AND NOT disabled", &[&user_id]).await?.pop();
    let device =
        devices_where(c, "WHERE id = $1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL", &[&device_id])
            .await?
            .pop()
            .and_then(DeviceRow::enrolled);
    Ok(match (user, device) {
        (Some(user), Some(device)) => {
            Some(SessionOwner { session_id, user: user.record, device, access_expires_at })
        }
        _ => None,
    })
}

/// Whether `token_hash` is the unexpired recovery token of an enrolled, unrevoked device (compared
/// in constant time); `lock` takes the device's row for the caller's transaction.
async fn live_recovery_token(
    c: &impl GenericClient,
    device_id: Uuid,
    token_hash: &[u8; 32],
    now: Timestamp,
    lock: bool,
) -> Result<bool, ServerError> {
    use subtle::ConstantTimeEq;
    let sql = format!(
        "SELECT recovery_token_hash, recovery_token_expires_at FROM devices
         WHERE id = $1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let Some(row) = c.query_opt_cached(&sql, &[&device_id]).await.map_err(db)? else { return Ok(false) };
    let (Some(stored), Some(expires)) = (row.get::<_, Option<Vec<u8>>>(0), row.get::<_, Option<i64>>(1))
    else {
        return Ok(false);
    };
    let same: bool = stored.as_slice().ct_eq(&token_hash[..]).into();
    Ok(same && now.0 < expires)
}

async fn stored_base(c: &impl GenericClient) -> Result<Option<AuditBase>, ServerError> {
    let row = c.query_opt_cached("SELECT base FROM audit_base WHERE id = 1", &[]).await.map_err(db)?;
    row.map(|r| serde_json::from_str(&r.get::<_, String>(0)).map_err(|_| ServerError::Damaged("audit base")))
        .transpose()
}

/// The stored head of `device_id`'s chain (genesis if it has none).
async fn device_head(c: &impl GenericClient, device_id: Uuid) -> Result<ChainHead, ServerError> {
    let row = c
        .query_opt_cached(
            "SELECT seq, hash FROM audit_entries WHERE device_id = $1 ORDER BY seq DESC LIMIT 1",
            &[&device_id],
        )
        .await
        .map_err(db)?;
    Ok(match row {
        None => stored_base(c)
            .await?
            .and_then(|b| b.device_heads.into_iter().find(|(d, _)| *d == device_id).map(|(_, h)| h))
            .unwrap_or(ChainHead::GENESIS),
        Some(r) => ChainHead {
            seq: u64::try_from(r.get::<_, i64>(0)).map_err(|_| damaged())?,
            hash: Digest32(bytes32(&r.get::<_, Vec<u8>>(1))?),
        },
    })
}

/// The server chain's head: the last stored entry's server sequence and link.
async fn server_head(c: &impl GenericClient) -> Result<ChainHead, ServerError> {
    let row = c
        .query_opt_cached(
            "SELECT server_seq, server_hash FROM audit_entries ORDER BY server_seq DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(match row {
        None => stored_base(c)
            .await?
            .map_or(ChainHead::GENESIS, |b| ChainHead { seq: b.server_seq, hash: b.server_hash }),
        Some(r) => ChainHead {
            seq: u64::try_from(r.get::<_, i64>(0)).map_err(|_| damaged())?,
            hash: Digest32(bytes32(&r.get::<_, Vec<u8>>(1))?),
        },
    })
}

/// Audit entries to append after the server chain's head, as column arrays (one INSERT for all).
#[derive(Default)]
struct EntryRows {
    server_seq: Vec<i64>,
    server_hash: Vec<Vec<u8>>,
    device_id: Vec<Uuid>,
    seq: Vec<i64>,
    id: Vec<Uuid>,
    hash: Vec<Vec<u8>>,
    at: Vec<i64>,
    username: Vec<Option<String>>,
    action: Vec<String>,
    entry: Vec<Vec<u8>>,
}

impl EntryRows {
    /// Places `entry` after `server` in the server chain; returns the new server head.
    fn push(&mut self, server: ChainHead, entry: &AuditEntry) -> ChainHead {
        let server_seq = server.seq + 1;
        let link = server_link(&server.hash, server_seq, &entry.hash);
        self.server_seq.push(to_i64_u(server_seq));
        self.server_hash.push(link.0.to_vec());
        self.device_id.push(entry.device_id);
        self.seq.push(to_i64_u(entry.seq));
        self.id.push(entry.id);
        self.hash.push(entry.hash.0.to_vec());
        self.at.push(entry.event.at.0);
        self.username.push(entry.event.username.clone());
        self.action.push(entry.event.action.clone());
        // The canonical encoding is the stored form: what the hash covers.
        self.entry.push(entry.canonical_bytes());
        ChainHead { seq: server_seq, hash: link }
    }

    async fn insert(&self, c: &impl GenericClient) -> Result<(), ServerError> {
        if self.id.is_empty() {
            return Ok(());
        }
        c.execute_cached(
            "INSERT INTO audit_entries (server_seq, server_hash, device_id, seq, id, hash, at, username, action, entry)
             SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::uuid[], $4::bigint[], $5::uuid[], $6::bytea[],
                                  $7::bigint[], $8::text[], $9::text[], $10::bytea[])",
            &[
                &self.server_seq,
                &self.server_hash,
                &self.device_id,
                &self.seq,
                &self.id,
                &self.hash,
                &self.at,
                &self.username,
                &self.action,
                &self.entry,
            ],
        )
        .await
        .map_err(db)?;
        Ok(())
    }
}

async fn chain_lock(c: &impl GenericClient) -> Result<(), ServerError> {
    c.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&CHAIN_LOCK]).await.map_err(db)?;
    Ok(())
}

const PATIENT_COLUMNS: &str = "p.id, p.unit, p.bed, p.version, p.mrn_index, p.wrapped_key, p.body";

fn sealed_patient(r: &Row) -> Result<SealedPatient, ServerError> {
    Ok(SealedPatient {
        id: r.get(0),
        unit: r.get(1),
        bed: r.get(2),
        version: r.get(3),
        mrn_index: bytes32(&r.get::<_, Vec<u8>>(4))?,
        wrapped_key: r.get(5),
        body: r.get(6),
    })
}

fn kind(s: &str) -> Result<RecordKind, ServerError> {
    RecordKind::parse(s).ok_or_else(damaged)
}

fn applied_row(r: &Row) -> (Uuid, AppliedChange) {
    (r.get(0), AppliedChange { device_id: r.get(1), record_id: r.get(2), version: r.get(3) })
}

impl Storage for PgStorage {
    fn create_user(&self, user: &NewUser) -> Result<(), ServerError> {
        let r = &user.record;
        let units = units_json(&r.units)?;
        self.block(async {
            let c = self.client().await?;
            let result = c
                .execute_cached(
                    "INSERT INTO users (id, username, username_key, role, units, password_hash, disabled, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &r.id,
                        &r.username,
                        &username_key(&r.username),
                        &r.role.as_str(),
                        &units,
                        &user.password_hash,
                        &r.disabled,
                        &r.created_at.0,
                    ],
                )
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(ServerError::UserExists),
                Err(e) => Err(db(e)),
            }
        })
    }

    fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), ServerError> {
        let key = username_key(username);
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            let changed = tx
                .execute_cached("UPDATE users SET disabled = $1 WHERE username_key = $2", &[&disabled, &key])
                .await
                .map_err(db)?;
            if changed == 0 {
                return Err(ServerError::UnknownUser);
            }
            if disabled {
                tx.execute_cached(
                    "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username_key = $1)",
                    &[&key],
                )
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)
        })
    }

    fn list_users(&self) -> Result<Vec<UserRecord>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            Ok(users_where(&c, "", &[]).await?.into_iter().map(|u| u.record).collect())
        })
    }

    fn user_for_login(&self, username: &str) -> Result<Option<NewUser>, ServerError> {
        let key = username_key(username);
        self.block(async {
            let c = self.client().await?;
            Ok(users_where(&c, "WHERE username_key = $1", &[&key]).await?.pop())
        })
    }

    fn put_device_token(&self, d: &DeviceRecord, token_hash: &[u8; 32]) -> Result<(), ServerError> {
        let units = units_json(&d.units)?;
        let (key, profile, expires) =
            (username_key(&d.name), d.profile.as_str(), d.token_expires_at.map(|t| t.0));
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            // One statement decides, so two administrators issuing a token for the same new name at
            // once end with the later token, as on the embedded database.
            let placed = tx
                .query_opt_cached(
                    "INSERT INTO devices (id, name, name_key, profile, units, token_hash, token_expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (name_key) DO UPDATE
                         SET token_hash = EXCLUDED.token_hash, token_expires_at = EXCLUDED.token_expires_at,
                             profile = EXCLUDED.profile, units = EXCLUDED.units
                         WHERE devices.enrolled_at IS NULL AND devices.revoked_at IS NULL
                     RETURNING id",
                    &[&d.id, &d.name, &key, &profile, &units, &&token_hash[..], &expires, &d.created_at.0],
                )
                .await
                .map_err(db)?;
            if placed.is_none() {
                return Err(ServerError::DeviceEnrolled);
            }
            tx.commit().await.map_err(db)
        })
    }

    fn revoke_device(&self, name: &str, now: Timestamp) -> Result<(), ServerError> {
        let key = username_key(name);
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            let changed = tx
                .execute_cached(
                    "UPDATE devices SET revoked_at = coalesce(revoked_at, $1), token_hash = NULL,
                            recovery_token_hash = NULL, recovery_token_expires_at = NULL
                     WHERE name_key = $2",
                    &[&now.0, &key],
                )
                .await
                .map_err(db)?;
            if changed == 0 {
                return Err(ServerError::UnknownDevice);
            }
            tx.execute_cached(
                "DELETE FROM sessions WHERE device_id = (SELECT id FROM devices WHERE name_key = $1)",
                &[&key],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            Ok(devices_where(&c, "", &[]).await?.into_iter().map(|d| d.record).collect())
        })
    }

    fn enroll_device(
        &self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            // One statement decides: two processes presenting the same token cannot both enroll.
            let name_key: Option<String> = tx
                .query_opt_cached(
                    "UPDATE devices SET public_key = $1, enrolled_at = $2, token_hash = NULL
                     WHERE token_hash = $3 AND enrolled_at IS NULL AND revoked_at IS NULL AND token_expires_at > $2
                     RETURNING name_key",
                    &[&&public_key[..], &now.0, &&token_hash[..]],
                )
                .await
                .map_err(db)?
                .map(|r| r.get(0));
            // One answer for unknown, used, revoked and expired tokens.
            let Some(name_key) = name_key else { return Err(ServerError::InvalidToken) };
            let mut enrolled = devices_where(&tx, "WHERE name_key = $1", &[&name_key]).await?;
            tx.commit().await.map_err(db)?;
            enrolled.pop().map(|d| d.record).ok_or(ServerError::Internal("enrolled device vanished"))
        })
    }

    fn enrolled_device(&self, id: Uuid) -> Result<Option<EnrolledDevice>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            Ok(devices_where(&c, "WHERE id = $1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL", &[&id])
                .await?
                .pop()
                .and_then(DeviceRow::enrolled))
        })
    }

    fn put_recovery_token(
        &self,
        name: &str,
        token_hash: &[u8; 32],
        expires_at: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        let key = username_key(name);
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            tx.execute_cached("SELECT 1 FROM devices WHERE name_key = $1 FOR UPDATE", &[&key]).await.map_err(db)?;
            let Some(device) = devices_where(&tx, "WHERE name_key = $1", &[&key]).await?.pop() else {
                return Err(ServerError::UnknownDevice);
            };
            if device.record.enrolled_at.is_none() || device.record.revoked_at.is_some() {
                return Err(ServerError::NotRecoverable);
            }
            tx.execute_cached(
                "UPDATE devices SET recovery_token_hash = $1, recovery_token_expires_at = $2 WHERE name_key = $3",
                &[&&token_hash[..], &expires_at.0, &key],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(device.record)
        })
    }

    fn check_recovery_token(
        &self,
        device_id: Uuid,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<bool, ServerError> {
        self.block(async {
            let c = self.client().await?;
            live_recovery_token(&c, device_id, token_hash, now, false).await
        })
    }

    fn recover_device(
        &self,
        device_id: Uuid,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            // The device's row is locked while the token is checked: two requests racing with one
            // token cannot both pass.
            if !live_recovery_token(&tx, device_id, token_hash, now, true).await? {
                return Err(ServerError::InvalidRecoveryToken);
            }
            tx.execute_cached(
                "UPDATE devices SET public_key = $1, recovery_token_hash = NULL, recovery_token_expires_at = NULL
                 WHERE id = $2",
                &[&&public_key[..], &device_id],
            )
            .await
            .map_err(db)?;
            // The old key is dead: so is everything issued to it.
            tx.execute_cached("DELETE FROM sessions WHERE device_id = $1", &[&device_id]).await.map_err(db)?;
            tx.execute_cached("DELETE FROM auth_nonces WHERE device_id = $1", &[&device_id]).await.map_err(db)?;
            let mut device = devices_where(&tx, "WHERE id = $1", &[&device_id]).await?;
            tx.commit().await.map_err(db)?;
            device.pop().map(|d| d.record).ok_or(ServerError::Internal("recovered device vanished"))
        })
    }

    fn update_throttle(
        &self,
        key: &str,
        change: &mut (dyn FnMut(&mut LoginThrottle) + Send),
    ) -> Result<(), ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            // The row exists before it is locked, so concurrent first attempts queue on it too.
            tx.execute_cached(
                "INSERT INTO login_throttle (key, state) VALUES ($1, 'null') ON CONFLICT (key) DO NOTHING",
                &[&key],
            )
            .await
            .map_err(db)?;
            // (Cleared by an administrator in between: a fresh throttle.)
            let state: String = tx
                .query_opt_cached("SELECT state FROM login_throttle WHERE key = $1 FOR UPDATE", &[&key])
                .await
                .map_err(db)?
                .map_or_else(|| "null".to_string(), |r| r.get(0));
            let mut throttle: LoginThrottle = match serde_json::from_str::<Option<LoginThrottle>>(&state) {
                Ok(t) => t.unwrap_or_default(),
                Err(_) => return Err(damaged()),
            };
            change(&mut throttle);
            let json =
                serde_json::to_string(&throttle).map_err(|_| ServerError::Internal("throttle encoding"))?;
            tx.execute_cached(
                "INSERT INTO login_throttle (key, state) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET state = $2",
                &[&key, &json],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn clear_throttle(&self, key: &str) -> Result<(), ServerError> {
        self.block(async {
            let c = self.client().await?;
            c.execute_cached("DELETE FROM login_throttle WHERE key = $1", &[&key]).await.map_err(db)?;
            Ok(())
        })
    }

    fn put_nonce(
        &self,
        nonce_hash: &[u8; 32],
        device_id: Uuid,
        expires_at: Timestamp,
    ) -> Result<(), ServerError> {
        self.block(async {
            let c = self.client().await?;
            // Unanswered challenges expire: sweep them here too, so they cannot pile up.
            c.execute_cached("DELETE FROM auth_nonces WHERE expires_at < $1", &[&(expires_at.0 - 120_000)])
                .await
                .map_err(db)?;
            c.execute_cached(
                "INSERT INTO auth_nonces (nonce_hash, device_id, expires_at) VALUES ($1, $2, $3)",
                &[&&nonce_hash[..], &device_id, &expires_at.0],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn take_nonce(
        &self,
        nonce_hash: &[u8; 32],
        device_id: Uuid,
        now: Timestamp,
    ) -> Result<bool, ServerError> {
        self.block(async {
            let c = self.client().await?;
            c.execute_cached("DELETE FROM auth_nonces WHERE expires_at <= $1", &[&now.0])
                .await
                .map_err(db)?;
            // One DELETE decides: of two processes presenting the same nonce, one takes it.
            let taken = c
                .execute_cached(
                    "DELETE FROM auth_nonces WHERE nonce_hash = $1 AND device_id = $2 AND expires_at > $3",
                    &[&&nonce_hash[..], &device_id, &now.0],
                )
                .await
                .map_err(db)?;
            Ok(taken == 1)
        })
    }

    fn create_session(&self, s: &NewSession) -> Result<(), ServerError> {
        let t = &s.tokens;
        self.block(async {
            let c = self.client().await?;
            c.execute_cached(
                "INSERT INTO sessions (id, user_id, device_id, access_hash, access_expires_at, refresh_hash,
                                       refresh_expires_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &s.id,
                    &s.user_id,
                    &s.device_id,
                    &&t.access_hash[..],
                    &t.access_expires_at.0,
                    &&t.refresh_hash[..],
                    &t.refresh_expires_at.0,
                    &s.created_at.0,
                ],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn session_by_access(
        &self,
        access_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionOwner>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            // Every request asks this: one round trip for session, user and device.
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT s.id, s.access_expires_at, {}, {} FROM sessions s
                     JOIN users u ON u.id = s.user_id AND NOT u.disabled
                     JOIN devices d ON d.id = s.device_id AND d.enrolled_at IS NOT NULL AND d.revoked_at IS NULL
                     WHERE s.access_hash = $1 AND s.access_expires_at > $2",
                    prefixed("u", USER_COLUMNS),
                    prefixed("d", DEVICE_COLUMNS)
                ))
                .await
                .map_err(db)?;
            let Some(r) = c.query_opt(&stmt, &[&&access_hash[..], &now.0]).await.map_err(db)? else {
                return Ok(None);
            };
            let user = user_row_at(&r, 2)?;
            let Some(device) = device_row_at(&r, 2 + USER_COLUMNS.split(',').count())?.enrolled() else {
                return Ok(None);
            };
            Ok(Some(SessionOwner {
                session_id: r.get(0),
                user: user.record,
                device,
                access_expires_at: Timestamp(r.get(1)),
            }))
        })
    }

    fn rotate_refresh(
        &self,
        refresh_hash: &[u8; 32],
        device_id: Uuid,
        next: &SessionTokens,
        now: Timestamp,
    ) -> Result<Refreshed, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            // The device's sessions are locked first: of two processes presenting one refresh token,
            // the second waits and then sees it as already exchanged.
            tx.execute_cached("SELECT 1 FROM sessions WHERE device_id = $1 FOR UPDATE", &[&device_id])
                .await
                .map_err(db)?;
            let reused = tx
                .query_opt_cached(
                    "SELECT id FROM sessions WHERE prev_refresh_hash = $1 AND device_id = $2",
                    &[&&refresh_hash[..], &device_id],
                )
                .await
                .map_err(db)?;
            if let Some(r) = reused {
                // A refresh token that was already exchanged is being replayed: the session ends.
                tx.execute_cached("DELETE FROM sessions WHERE id = $1", &[&r.get::<_, Uuid>(0)])
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                return Ok(Refreshed::Reused);
            }
            let found = tx
                .query_opt_cached(
                    "SELECT id, user_id FROM sessions
                     WHERE refresh_hash = $1 AND device_id = $2 AND refresh_expires_at > $3",
                    &[&&refresh_hash[..], &device_id, &now.0],
                )
                .await
                .map_err(db)?;
            let Some(r) = found else { return Ok(Refreshed::Invalid) };
            let (id, user_id): (Uuid, Uuid) = (r.get(0), r.get(1));
            tx.execute_cached(
                "UPDATE sessions SET access_hash = $1, access_expires_at = $2, refresh_hash = $3,
                                     refresh_expires_at = $4, prev_refresh_hash = refresh_hash
                 WHERE id = $5",
                &[
                    &&next.access_hash[..],
                    &next.access_expires_at.0,
                    &&next.refresh_hash[..],
                    &next.refresh_expires_at.0,
                    &id,
                ],
            )
            .await
            .map_err(db)?;
            let owner = session_owner(&tx, id, user_id, device_id, next.access_expires_at).await?;
            tx.commit().await.map_err(db)?;
            Ok(owner.map_or(Refreshed::Invalid, |o| Refreshed::Rotated(Box::new(o))))
        })
    }

    fn end_session(&self, session_id: Uuid) -> Result<(), ServerError> {
        self.block(async {
            let c = self.client().await?;
            c.execute_cached("DELETE FROM sessions WHERE id = $1", &[&session_id]).await.map_err(db)?;
            Ok(())
        })
    }

    fn append_events(&self, events: &[Event]) -> Result<(), ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            chain_lock(&tx).await?;
            let (mut head, mut server) = tokio::try_join!(device_head(&tx, SERVER_CHAIN), server_head(&tx))?;
            let mut rows = EntryRows::default();
            for event in events {
                let entry = head.append(SERVER_CHAIN, Uuid::now_v7(), event.clone());
                server = rows.push(server, &entry);
            }
            rows.insert(&tx).await?;
            tx.commit().await.map_err(db)
        })
    }

    fn ingest_entries(&self, device_id: Uuid, entries: &[AuditEntry]) -> Result<Ingested, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            chain_lock(&tx).await?;
            let head = device_head(&tx, device_id).await?;
            let mut outcome = Ingested::default();
            // A retried upload may repeat entries already stored: skip them if they are identical
            // (their stored hashes read at once: this runs under the chain's lock).
            let repeated: Vec<i64> = entries
                .iter()
                .take_while(|e| e.device_id == device_id && e.seq <= head.seq)
                .map(|e| to_i64_u(e.seq))
                .collect();
            let stored: HashMap<i64, Vec<u8>> = tx
                .query_cached(
                    "SELECT seq, hash FROM audit_entries WHERE device_id = $1 AND seq = ANY($2)",
                    &[&device_id, &repeated],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let mut fresh = entries;
            while let Some((first, rest)) = fresh.split_first() {
                if first.device_id != device_id || first.seq > head.seq {
                    break;
                }
                if stored.get(&to_i64_u(first.seq)).map(Vec::as_slice) != Some(&first.hash.0[..]) {
                    return Err(super::forked_at(first.seq));
                }
                outcome.already_present += 1;
                fresh = rest;
            }
            verify_chain(device_id, head, fresh).map_err(super::chain_refused)?;
            // Entry ids are unique across all chains: one already stored (or repeated here) is a
            // forgery or a bug on the device, never something a retry can fix.
            let ids: Vec<Uuid> = fresh.iter().map(|e| e.id).collect();
            let taken: std::collections::HashSet<Uuid> = tx
                .query_cached("SELECT id FROM audit_entries WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(db)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut seen = std::collections::HashSet::new();
            for entry in fresh {
                if taken.contains(&entry.id) || !seen.insert(entry.id) {
                    return Err(super::reused_entry_id(entry.seq));
                }
            }
            let mut server = server_head(&tx).await?;
            let mut rows = EntryRows::default();
            for entry in fresh {
                server = rows.push(server, entry);
                outcome.stored += 1;
            }
            rows.insert(&tx).await?;
            tx.commit().await.map_err(db)?;
            Ok(outcome)
        })
    }

    fn audit_raw_page(&self, after: u64, limit: usize) -> Result<Vec<RawEntry>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT server_seq, server_hash, hash, entry FROM audit_entries WHERE server_seq > $1
                     ORDER BY server_seq LIMIT $2",
                    &[&to_i64_u(after), &to_i64(limit)],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(RawEntry {
                        server_seq: u64::try_from(r.get::<_, i64>(0)).map_err(|_| damaged())?,
                        server_hash: Digest32(bytes32(&r.get::<_, Vec<u8>>(1))?),
                        hash: Digest32(bytes32(&r.get::<_, Vec<u8>>(2))?),
                        canonical: r.get(3),
                    })
                })
                .collect()
        })
    }

    fn audit_head(&self) -> Result<(u64, Digest32), ServerError> {
        self.block(async {
            let c = self.client().await?;
            let head = server_head(&c).await?;
            Ok((head.seq, head.hash))
        })
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached("SELECT checkpoint FROM audit_checkpoints ORDER BY number", &[])
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    serde_json::from_str(&r.get::<_, String>(0))
                        .map_err(|_| ServerError::Damaged("audit checkpoint"))
                })
                .collect()
        })
    }

    fn add_checkpoint(&self, cp: &Checkpoint) -> Result<bool, ServerError> {
        let json = serde_json::to_string(cp).map_err(|_| ServerError::Internal("checkpoint encoding"))?;
        self.block(async {
            let c = self.client().await?;
            let added = c
                .execute_cached(
                    "INSERT INTO audit_checkpoints (number, checkpoint) VALUES ($1, $2) ON CONFLICT (number) DO NOTHING",
                    &[&to_i64_u(cp.number), &json],
                )
                .await
                .map_err(db)?;
            Ok(added == 1)
        })
    }

    fn audit_base(&self) -> Result<Option<AuditBase>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            stored_base(&c).await
        })
    }

    fn purge_audit(&self, base: &AuditBase) -> Result<u64, ServerError> {
        let json = serde_json::to_string(base).map_err(|_| ServerError::Internal("audit base encoding"))?;
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            chain_lock(&tx).await?;
            tx.execute_cached(
                "INSERT INTO audit_base (id, base) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET base = EXCLUDED.base",
                &[&json],
            )
            .await
            .map_err(db)?;
            let purged = tx
                .execute_cached("DELETE FROM audit_entries WHERE server_seq <= $1", &[&to_i64_u(base.server_seq)])
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(purged)
        })
    }

    fn count_actions(
        &self,
        username: &str,
        actions: &[&str],
        since: Timestamp,
        until: Timestamp,
    ) -> Result<u64, ServerError> {
        let actions: Vec<&str> = actions.to_vec();
        self.block(async {
            let c = self.client().await?;
            // Only the server's own chain: its entries carry the server's clock and the
            // authenticated user. Uploaded device entries name whatever the device wrote.
            let n: i64 = c
                .query_one_cached(
                    "SELECT count(*) FROM audit_entries
                     WHERE username = $1 AND action = ANY($2) AND at >= $3 AND at < $4 AND device_id = $5",
                    &[&username, &actions, &since.0, &until.0, &SERVER_CHAIN],
                )
                .await
                .map_err(db)?
                .get(0);
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn put_break_glass(&self, g: &BreakGlass) -> Result<(), ServerError> {
        self.block(async {
            let c = self.client().await?;
            c.execute_cached(
                "INSERT INTO break_glass (id, user_id, username, patient_id, reason, detail, granted_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&g.id, &g.user_id, &g.username, &g.patient_id, &g.reason, &g.detail, &g.granted_at.0, &g.expires_at.0],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn has_break_glass(&self, user_id: Uuid, patient_id: Uuid, now: Timestamp) -> Result<bool, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let found = c
                .query_opt_cached(
                    "SELECT 1 FROM break_glass
                     WHERE user_id = $1 AND patient_id = $2 AND granted_at <= $3 AND expires_at > $3 LIMIT 1",
                    &[&user_id, &patient_id, &now.0],
                )
                .await
                .map_err(db)?;
            Ok(found.is_some())
        })
    }

    fn break_glass_list(&self, unreviewed_only: bool) -> Result<Vec<BreakGlass>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT id, user_id, username, patient_id, reason, detail, granted_at, expires_at, reviewed_by, reviewed_at
                     FROM break_glass WHERE NOT $1 OR reviewed_at IS NULL ORDER BY granted_at DESC",
                    &[&unreviewed_only],
                )
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| BreakGlass {
                    id: r.get(0),
                    user_id: r.get(1),
                    username: r.get(2),
                    patient_id: r.get(3),
                    reason: r.get(4),
                    detail: r.get(5),
                    granted_at: Timestamp(r.get(6)),
                    expires_at: Timestamp(r.get(7)),
                    reviewed_by: r.get(8),
                    reviewed_at: r.get::<_, Option<i64>>(9).map(Timestamp),
                })
                .collect())
        })
    }

    fn review_break_glass(&self, id: Uuid, reviewer: &str, now: Timestamp) -> Result<bool, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let changed = c
                .execute_cached(
                    "UPDATE break_glass SET reviewed_by = $1, reviewed_at = $2 WHERE id = $3 AND reviewed_at IS NULL",
                    &[&reviewer, &now.0, &id],
                )
                .await
                .map_err(db)?;
            Ok(changed == 1)
        })
    }

    fn raise_incident(&self, i: &Incident) -> Result<bool, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            // The row lock decides between processes acting on the same burst.
            let disabled = tx
                .execute_cached(
                    "UPDATE users SET disabled = true WHERE id = $1 AND NOT disabled",
                    &[&i.user_id],
                )
                .await
                .map_err(db)?;
            if disabled == 0 {
                return Ok(false);
            }
            tx.execute_cached(
                "INSERT INTO incidents (id, at, user_id, username, kind, last_hour, hourly_average)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &i.id,
                    &i.at.0,
                    &i.user_id,
                    &i.username,
                    &i.kind,
                    &to_i64_u(i.last_hour),
                    &i.hourly_average,
                ],
            )
            .await
            .map_err(db)?;
            tx.execute_cached("DELETE FROM sessions WHERE user_id = $1", &[&i.user_id]).await.map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(true)
        })
    }

    fn incidents(&self) -> Result<Vec<Incident>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT id, at, user_id, username, kind, last_hour, hourly_average FROM incidents ORDER BY at DESC",
                    &[],
                )
                .await
                .map_err(db)?;
            Ok(rows
                .iter()
                .map(|r| Incident {
                    id: r.get(0),
                    at: Timestamp(r.get(1)),
                    user_id: r.get(2),
                    username: r.get(3),
                    kind: r.get(4),
                    last_hour: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
                    hourly_average: r.get(6),
                })
                .collect())
        })
    }

    fn put_charts(&self, charts: &[SealedChart]) -> Result<(), ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            chain_lock(&tx).await?;
            let mut patients = PatientRows::default();
            let mut records = RecordRows::default();
            // One number per chart, taken at once.
            let count = i64::try_from(charts.len()).unwrap_or(i64::MAX);
            let last: i64 = tx
                .query_one_cached(
                    "UPDATE change_counter SET value = value + $1 WHERE id = 1 RETURNING value",
                    &[&count],
                )
                .await
                .map_err(db)?
                .get(0);
            for (chart, seq) in charts.iter().zip(last - count + 1..) {
                patients.push(&chart.patient, seq);
                for r in &chart.records {
                    records.push(chart.patient.id, r, seq);
                }
            }
            let inserted = async {
                patients.insert(&tx).await?;
                records.insert(&tx).await
            }
            .await;
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(ServerError::PatientExists),
                Err(e) => return Err(db(e)),
                Ok(_) => {}
            }
            tx.commit().await.map_err(db)
        })
    }

    fn existing_patients(&self, ids: &[(Uuid, [u8; 32])]) -> Result<Vec<Uuid>, ServerError> {
        let (uuids, indexes): (Vec<Uuid>, Vec<Vec<u8>>) = ids.iter().map(|(id, m)| (*id, m.to_vec())).unzip();
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT q.id FROM unnest($1::uuid[], $2::bytea[]) WITH ORDINALITY AS q(id, mrn_index, n)
                     WHERE EXISTS (SELECT 1 FROM patients p WHERE p.id = q.id OR p.mrn_index = q.mrn_index)
                     ORDER BY q.n",
                    &[&uuids, &indexes],
                )
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn patient(&self, id: Uuid) -> Result<Option<SealedPatient>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let row = c
                .query_opt_cached(
                    &format!("SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.id = $1"),
                    &[&id],
                )
                .await
                .map_err(db)?;
            row.as_ref().map(sealed_patient).transpose()
        })
    }

    fn patient_by_mrn_index(&self, mrn_index: &[u8; 32]) -> Result<Option<Uuid>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let row = c
                .query_opt_cached("SELECT id FROM patients WHERE mrn_index = $1", &[&&mrn_index[..]])
                .await
                .map_err(db)?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn census(
        &self,
        unit: &str,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<SealedCensusRow>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    &format!(
                        "SELECT {PATIENT_COLUMNS},
                            (SELECT count(*) FROM records r WHERE r.patient_id = p.id AND r.kind = 'allergy'),
                            (SELECT max(r.sort_key) FROM records r WHERE r.patient_id = p.id AND r.kind = 'observation')
                         FROM patients p
                         WHERE p.unit = $1
                           AND ($2::uuid IS NULL OR (p.bed, p.id) > (SELECT a.bed, a.id FROM patients a WHERE a.id = $2))
                         ORDER BY p.bed, p.id LIMIT $3"
                    ),
                    &[&unit, &after, &to_i64(limit)],
                )
                .await
                .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(SealedCensusRow {
                        patient: sealed_patient(r)?,
                        allergy_count: u32::try_from(r.get::<_, i64>(7)).unwrap_or(u32::MAX),
                        last_vitals_at: r.get::<_, Option<i64>>(8).map(Timestamp),
                    })
                })
                .collect()
        })
    }

    fn records(
        &self,
        patient_id: Uuid,
        kinds: &[RecordKind],
        max_observations: usize,
    ) -> Result<Vec<SealedRecord>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let stmt = c
                .prepare_cached(
                    "SELECT id, kind, sort_key, version, body FROM records
                     WHERE patient_id = $1 AND kind = $2 ORDER BY sort_key DESC, id LIMIT $3",
                )
                .await
                .map_err(db)?;
            let mut out = Vec::new();
            for k in kinds {
                let limit = if *k == RecordKind::Observation { max_observations } else { usize::MAX };
                for r in c.query(&stmt, &[&patient_id, &k.as_str(), &to_i64(limit)]).await.map_err(db)? {
                    out.push(SealedRecord {
                        id: r.get(0),
                        kind: kind(r.get(1))?,
                        sort_key: r.get(2),
                        version: r.get(3),
                        body: r.get(4),
                    });
                }
            }
            Ok(out)
        })
    }

    fn record_version(&self, id: Uuid) -> Result<Option<RecordVersion>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let row = c
                .query_opt_cached("SELECT patient_id, kind, version FROM records WHERE id = $1", &[&id])
                .await
                .map_err(db)?;
            row.map(|r| Ok((r.get(0), kind(r.get(1))?, r.get(2)))).transpose()
        })
    }

    fn applied_change(&self, change_id: Uuid) -> Result<Option<AppliedChange>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let row = c
                .query_opt_cached(
                    "SELECT change_id, device_id, record_id, version FROM applied_changes WHERE change_id = $1",
                    &[&change_id],
                )
                .await
                .map_err(db)?;
            Ok(row.map(|r| applied_row(&r).1))
        })
    }

    fn applied_changes(&self, change_ids: &[Uuid]) -> Result<Vec<(Uuid, AppliedChange)>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT change_id, device_id, record_id, version FROM applied_changes WHERE change_id = ANY($1)",
                    &[&change_ids],
                )
                .await
                .map_err(db)?;
            Ok(rows.iter().map(applied_row).collect())
        })
    }

    fn record_versions(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, RecordVersion)>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached("SELECT id, patient_id, kind, version FROM records WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(db)?;
            rows.iter().map(|r| Ok((r.get(0), (r.get(1), kind(r.get(2))?, r.get(3))))).collect()
        })
    }

    fn patients(&self, ids: &[Uuid]) -> Result<Vec<SealedPatient>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    &format!("SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.id = ANY($1)"),
                    &[&ids],
                )
                .await
                .map_err(db)?;
            rows.iter().map(sealed_patient).collect()
        })
    }

    fn break_glass_patients(
        &self,
        user_id: Uuid,
        ids: &[Uuid],
        now: Timestamp,
    ) -> Result<Vec<Uuid>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT DISTINCT patient_id FROM break_glass
                     WHERE user_id = $1 AND patient_id = ANY($2) AND granted_at <= $3 AND expires_at > $3",
                    &[&user_id, &ids, &now.0],
                )
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn apply_changes(&self, changes: &[(IncomingChange, Event)]) -> Result<Vec<Stored>, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(db)?;
            chain_lock(&tx).await?;
            // What the batch needs to decide, read at once (under the lock nothing moves).
            let change_ids: Vec<Uuid> = changes.iter().map(|(c, _)| c.change_id).collect();
            let (mut record_ids, mut patient_ids) = (Vec::new(), Vec::new());
            for (ch, _) in changes {
                match &ch.record {
                    IncomingRecord::Record(r) => record_ids.push(r.id),
                    IncomingRecord::Patient(p) => patient_ids.push(p.id),
                }
            }
            // Sent together once the lock is held (one round trip; under the lock nothing moves).
            let (applied_rows, record_rows, patient_rows, counter, mut head, mut server) = tokio::try_join!(
                async {
                    tx.query_cached(
                        "SELECT change_id, device_id, record_id, version FROM applied_changes WHERE change_id = ANY($1)",
                        &[&change_ids],
                    )
                    .await
                    .map_err(db)
                },
                async {
                    tx.query_cached("SELECT id, version FROM records WHERE id = ANY($1)", &[&record_ids]).await.map_err(db)
                },
                async {
                    tx.query_cached("SELECT id, version FROM patients WHERE id = ANY($1)", &[&patient_ids])
                        .await
                        .map_err(db)
                },
                async { tx.query_one_cached("SELECT value FROM change_counter WHERE id = 1", &[]).await.map_err(db) },
                device_head(&tx, SERVER_CHAIN),
                server_head(&tx),
            )?;
            let mut applied: HashMap<Uuid, AppliedChange> = applied_rows.iter().map(applied_row).collect();
            // Keyed by (is a patient, id).
            let mut versions: HashMap<(bool, Uuid), i64> = HashMap::new();
            for (patient, rows) in [(false, record_rows), (true, patient_rows)] {
                for r in rows {
                    versions.insert((patient, r.get(0)), r.get(1));
                }
            }
            let mut seq: i64 = counter.get(0);
            // Decided in order, exactly as one at a time would be.
            let (mut records, mut patients, mut entries) = (RecordRows::default(), PatientRows::default(), EntryRows::default());
            let mut newly = AppliedRows::default();
            let mut outcomes = Vec::with_capacity(changes.len());
            for (ch, event) in changes {
                if let Some(seen) = applied.get(&ch.change_id) {
                    outcomes.push(Stored::AlreadyApplied(*seen));
                    continue;
                }
                let id = ch.record.id();
                let key = (matches!(ch.record, IncomingRecord::Patient(_)), id);
                let current = versions.get(&key).copied();
                if current != ch.replaces {
                    outcomes.push(Stored::Moved { current_version: current });
                    continue;
                }
                seq += 1;
                match &ch.record {
                    IncomingRecord::Record(r) => records.push(ch.patient_id, r, seq),
                    IncomingRecord::Patient(p) => patients.push(p, seq),
                }
                versions.insert(key, ch.record.version());
                let seen = AppliedChange { device_id: ch.device_id, record_id: id, version: ch.record.version() };
                applied.insert(ch.change_id, seen);
                newly.push(ch.change_id, seen);
                let entry = head.append(SERVER_CHAIN, Uuid::now_v7(), event.clone());
                server = entries.push(server, &entry);
                outcomes.push(Stored::Applied);
            }
            // The writes touch different tables: sent together (one round trip).
            tokio::try_join!(
                async { records.upsert(&tx).await.map_err(db) },
                async { patients.update(&tx).await.map_err(db) },
                async { newly.insert(&tx).await.map_err(db) },
                entries.insert(&tx),
                async {
                    tx.execute_cached("UPDATE change_counter SET value = $1 WHERE id = 1", &[&seq]).await.map_err(db)
                },
            )?;
            tx.commit().await.map_err(db)?;
            Ok(outcomes)
        })
    }

    fn pull_page(
        &self,
        units: Option<&[String]>,
        after: i64,
        max_changes: usize,
    ) -> Result<PullRows, ServerError> {
        self.block(async {
            let mut c = self.client().await?;
            // One consistent snapshot for the whole page.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(db)?;
            let in_scope = |unit: &str| units.is_none_or(|u| u.iter().any(|x| x == unit));
            let upto: Option<i64> = tx
                .query_one_cached(
                    "SELECT max(s) FROM (
                         (SELECT DISTINCT change_seq AS s FROM patients WHERE change_seq > $1
                          ORDER BY change_seq LIMIT $2)
                         UNION
                         (SELECT DISTINCT change_seq FROM records WHERE change_seq > $1
                          ORDER BY change_seq LIMIT $2)
                         ORDER BY s LIMIT $2) page",
                    &[&after, &to_i64(max_changes)],
                )
                .await
                .map_err(db)?
                .get(0);
            let newest: i64 = tx
                .query_one_cached("SELECT value FROM change_counter WHERE id = 1", &[])
                .await
                .map_err(db)?
                .get(0);
            let Some(upto) = upto else {
                return Ok(PullRows {
                    patients: vec![],
                    records: vec![],
                    left: vec![],
                    key_holders: vec![],
                    upto: after,
                    more: false,
                    newest,
                });
            };
            let (mut patients, mut left) = (Vec::new(), Vec::new());
            let rows = tx
                .query_cached(
                    &format!(
                        "SELECT {PATIENT_COLUMNS} FROM patients p
                         WHERE p.change_seq > $1 AND p.change_seq <= $2 ORDER BY p.change_seq"
                    ),
                    &[&after, &upto],
                )
                .await
                .map_err(db)?;
            for r in &rows {
                let p = sealed_patient(r)?;
                if in_scope(&p.unit) {
                    patients.push(p);
                } else if after > 0 {
                    left.push(p.id);
                }
            }
            // The records of whole patients, then single records changed in the page whose patient
            // is not whole in it.
            let mut records = Vec::new();
            for sql in [
                "SELECT r.patient_id, r.id, r.kind, r.sort_key, r.version, r.body, p.unit FROM patients p
                 JOIN records r ON r.patient_id = p.id
                 WHERE p.change_seq > $1 AND p.change_seq <= $2",
                "SELECT r.patient_id, r.id, r.kind, r.sort_key, r.version, r.body, p.unit FROM records r
                 JOIN patients p ON p.id = r.patient_id
                 WHERE r.change_seq > $1 AND r.change_seq <= $2
                   AND NOT (p.change_seq > $1 AND p.change_seq <= $2)
                 ORDER BY r.change_seq",
            ] {
                for r in tx.query_cached(sql, &[&after, &upto]).await.map_err(db)? {
                    if !in_scope(r.get(6)) {
                        continue;
                    }
                    records.push((
                        r.get(0),
                        SealedRecord {
                            id: r.get(1),
                            kind: kind(r.get(2))?,
                            sort_key: r.get(3),
                            version: r.get(4),
                            body: r.get(5),
                        },
                    ));
                }
            }
            let more: bool = tx
                .query_one_cached(
                    "SELECT EXISTS(SELECT 1 FROM patients WHERE change_seq > $1)
                         OR EXISTS(SELECT 1 FROM records WHERE change_seq > $1)",
                    &[&upto],
                )
                .await
                .map_err(db)?
                .get(0);
            let others = super::key_holder_ids(&patients, &records);
            let key_holders = if others.is_empty() {
                Vec::new()
            } else {
                tx.query_cached(
                    &format!("SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.id = ANY($1)"),
                    &[&others],
                )
                .await
                .map_err(db)?
                .iter()
                .map(sealed_patient)
                .collect::<Result<_, _>>()?
            };
            tx.commit().await.map_err(db)?;
            Ok(PullRows { patients, records, left, key_holders, upto, more, newest })
        })
    }

    fn as_pg(&self) -> Option<&PgStorage> {
        Some(self)
    }

    fn rewrap_patients(&self, rows: &[Rewrapped]) -> Result<(), ServerError> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.wrapped_key.as_slice()).collect();
        let indexes: Vec<&[u8]> = rows.iter().map(|r| r.mrn_index.as_slice()).collect();
        self.block(async {
            let c = self.client().await?;
            c.execute_cached(
                "UPDATE patients SET wrapped_key = u.k, mrn_index = u.i
                   FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS u(id, k, i)
                  WHERE patients.id = u.id",
                &[&ids, &keys, &indexes],
            )
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn patient_ids(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, ServerError> {
        self.block(async {
            let c = self.client().await?;
            let rows = c
                .query_cached(
                    "SELECT id FROM patients WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2",
                    &[&after, &to_i64(limit)],
                )
                .await
                .map_err(db)?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

/// Patient rows to write, as column arrays.
#[derive(Default)]
struct PatientRows {
    id: Vec<Uuid>,
    mrn_index: Vec<Vec<u8>>,
    unit: Vec<String>,
    bed: Vec<String>,
    version: Vec<i64>,
    wrapped_key: Vec<Vec<u8>>,
    body: Vec<Vec<u8>>,
    seq: Vec<i64>,
}

impl PatientRows {
    fn push(&mut self, p: &SealedPatient, seq: i64) {
        // A later write of the same patient in one batch replaces the earlier one.
        if let Some(i) = self.id.iter().position(|id| *id == p.id) {
            (self.unit[i], self.bed[i], self.version[i], self.body[i], self.seq[i]) =
                (p.unit.clone(), p.bed.clone(), p.version, p.body.clone(), seq);
            return;
        }
        self.id.push(p.id);
        self.mrn_index.push(p.mrn_index.to_vec());
        self.unit.push(p.unit.clone());
        self.bed.push(p.bed.clone());
        self.version.push(p.version);
        self.wrapped_key.push(p.wrapped_key.clone());
        self.body.push(p.body.clone());
        self.seq.push(seq);
    }

    async fn insert(&self, c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
        if self.id.is_empty() {
            return Ok(0);
        }
        c.execute_cached(
            "INSERT INTO patients (id, mrn_index, unit, bed, version, wrapped_key, body, change_seq)
             SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[], $5::bigint[], $6::bytea[],
                                  $7::bytea[], $8::bigint[])",
            &[
                &self.id,
                &self.mrn_index,
                &self.unit,
                &self.bed,
                &self.version,
                &self.wrapped_key,
                &self.body,
                &self.seq,
            ],
        )
        .await
    }

    /// A change pushed by a station never changes the MRN index or the patient's key.
    async fn update(&self, c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
        if self.id.is_empty() {
            return Ok(0);
        }
        c.execute_cached(
            "UPDATE patients p SET unit = u.unit, bed = u.bed, version = u.version, body = u.body, change_seq = u.seq
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bytea[], $6::bigint[])
                  AS u(id, unit, bed, version, body, seq)
             WHERE p.id = u.id",
            &[&self.id, &self.unit, &self.bed, &self.version, &self.body, &self.seq],
        )
        .await
    }
}

/// Record rows to write, as column arrays.
#[derive(Default)]
struct RecordRows {
    id: Vec<Uuid>,
    patient_id: Vec<Uuid>,
    kind: Vec<&'static str>,
    sort_key: Vec<i64>,
    version: Vec<i64>,
    body: Vec<Vec<u8>>,
    seq: Vec<i64>,
    index: HashMap<Uuid, usize>,
}

impl RecordRows {
    fn push(&mut self, patient_id: Uuid, r: &SealedRecord, seq: i64) {
        // A later write of the same record in one batch replaces the earlier one.
        if let Some(&i) = self.index.get(&r.id) {
            (self.sort_key[i], self.version[i], self.body[i], self.seq[i]) =
                (r.sort_key, r.version, r.body.clone(), seq);
            return;
        }
        self.index.insert(r.id, self.id.len());
        self.id.push(r.id);
        self.patient_id.push(patient_id);
        self.kind.push(r.kind.as_str());
        self.sort_key.push(r.sort_key);
        self.version.push(r.version);
        self.body.push(r.body.clone());
        self.seq.push(seq);
    }

    async fn insert(&self, c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
        self.write(c, "").await
    }

    async fn upsert(&self, c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
        self.write(
            c,
            " ON CONFLICT (id) DO UPDATE SET sort_key = EXCLUDED.sort_key, version = EXCLUDED.version,
                                             body = EXCLUDED.body, change_seq = EXCLUDED.change_seq",
        )
        .await
    }

    async fn write(&self, c: &impl GenericClient, on_conflict: &str) -> Result<u64, tokio_postgres::Error> {
        if self.id.is_empty() {
            return Ok(0);
        }
        c.execute_cached(
            &format!(
                "INSERT INTO records (id, patient_id, kind, sort_key, version, body, change_seq)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::bigint[], $6::bytea[],
                                      $7::bigint[]){on_conflict}"
            ),
            &[&self.id, &self.patient_id, &self.kind, &self.sort_key, &self.version, &self.body, &self.seq],
        )
        .await
    }
}

/// Change ids applied by a batch, as column arrays.
#[derive(Default)]
struct AppliedRows {
    change_id: Vec<Uuid>,
    device_id: Vec<Uuid>,
    record_id: Vec<Uuid>,
    version: Vec<i64>,
}

impl AppliedRows {
    fn push(&mut self, change_id: Uuid, a: AppliedChange) {
        self.change_id.push(change_id);
        self.device_id.push(a.device_id);
        self.record_id.push(a.record_id);
        self.version.push(a.version);
    }

    async fn insert(&self, c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
        if self.change_id.is_empty() {
            return Ok(0);
        }
        c.execute_cached(
            "INSERT INTO applied_changes (change_id, device_id, record_id, version)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[])",
            &[&self.change_id, &self.device_id, &self.record_id, &self.version],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // hipaa (e)(1) (e)(2)(ii): server to PostgreSQL over the network must use TLS with a verified certificate
    #[test]
    fn network_connections_must_verify_the_server() {
        for url in [
            "postgres://u:p@db.example/chartroom",
            "postgres://u:p@db.example/chartroom?sslmode=require",
            "postgres://u:p@db.example/chartroom?sslmode=disable",
            "postgres://u:p@db.example/chartroom?sslmode=verify-full",
        ] {
            let e = client_config(url).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("--database-url"), "{url}: {e}");
            assert!(!e.contains("u:p"), "the password is never repeated");
        }
        // A local socket may go without TLS.
        assert!(client_config("postgresql:///chartroom?host=/run/postgresql").is_ok());
    }

    #[test]
    fn percent_escapes_in_a_ca_path_are_decoded() {
        assert_eq!(percent_decode("/tmp/my%20dir/ca.crt"), "/tmp/my dir/ca.crt");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
