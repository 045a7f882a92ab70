//! Server storage behind one trait, so that a PostgreSQL backend can be added without touching
//! commands or handlers. The embedded backend is SQLCipher, keyed by an HKDF subkey of the master
//! key in `keys/master.key`.

use std::path::Path;
use std::sync::Mutex;

use chartroom_domain::{DeviceProfile, Role, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use uuid::Uuid;

use crate::ServerError;

/// Append-only migrations of the server schema; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: metadata.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: accounts. `username_key` is the case-folded name that makes usernames unique regardless of case.
    "CREATE TABLE users (
        id            BLOB PRIMARY KEY,
        username      TEXT NOT NULL,
        username_key  TEXT NOT NULL UNIQUE,
        role          TEXT NOT NULL,
        units         TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        disabled      INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL
    );",
    // 3: devices. Only the SHA-256 of a one-time enrollment token is kept.
    "CREATE TABLE devices (
        id               BLOB PRIMARY KEY,
        name             TEXT NOT NULL,
        name_key         TEXT NOT NULL UNIQUE,
        profile          TEXT NOT NULL,
        units            TEXT NOT NULL,
        token_hash       BLOB UNIQUE,
        token_expires_at INTEGER,
        public_key       BLOB,
        enrolled_at      INTEGER,
        revoked_at       INTEGER,
        created_at       INTEGER NOT NULL
    );",
];

/// A user account as listed (never with its password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    pub units: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
}

/// A new account: its record plus the Argon2id PHC string of its password.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub record: UserRecord,
    pub password_hash: String,
}

/// A device as listed (never with its token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    pub id: Uuid,
    pub name: String,
    pub profile: DeviceProfile,
    pub units: Vec<String>,
    pub token_expires_at: Option<Timestamp>,
    pub enrolled_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// What the server stores. One implementation per database; one conformance suite for all.
pub trait Storage: Send + Sync {
    fn create_user(&self, user: &NewUser) -> Result<(), ServerError>;
    fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), ServerError>;
    fn list_users(&self) -> Result<Vec<UserRecord>, ServerError>;
    /// Registers a device awaiting enrollment, or replaces the token of one not yet enrolled.
    fn put_device_token(&self, device: &DeviceRecord, token_hash: &[u8; 32]) -> Result<(), ServerError>;
    fn revoke_device(&self, name: &str, now: Timestamp) -> Result<(), ServerError>;
    fn list_devices(&self) -> Result<Vec<DeviceRecord>, ServerError>;
    /// Uses a one-time token: registers `public_key` for its device if the token is known, unused,
    /// unexpired and the device not revoked — all or nothing, and never twice.
    fn enroll_device(
        &self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError>;
}

/// The embedded backend.
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Mutex<Connection>,
}

impl SqliteStorage {
    /// Opens (and migrates) the database at `path` with the key derived from `master`.
    pub fn open(path: &Path, master: &[u8; 32]) -> Result<Self, ServerError> {
        let conn = Connection::open(path)?;
        // The database key is an HKDF subkey of the master key, never the master key itself.
        let key = chartroom_crypto::DataKey::derive(b"chartroom/server-db/v1", master, b"database");
        conn.execute_batch(&key.sqlcipher_key_statement())?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
            .map_err(|_| ServerError::Damaged("server.db"))?;
        // Admin commands run while the server serves: wait for the other writer instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )?;
        let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if current > known {
            return Err(ServerError::Database(format!(
                "schema {current} is newer than this build ({known})"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
            tx.commit()?;
        }
        Ok(SqliteStorage { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, ServerError> {
        self.conn.lock().map_err(|_| ServerError::Internal("storage lock poisoned"))
    }
}

impl Storage for SqliteStorage {
    fn create_user(&self, user: &NewUser) -> Result<(), ServerError> {
        let r = &user.record;
        let units = serde_json::to_string(&r.units).map_err(|_| ServerError::Internal("units encoding"))?;
        let result = self.conn()?.execute(
            "INSERT INTO users (id, username, username_key, role, units, password_hash, disabled, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                r.id.as_bytes(),
                r.username,
                username_key(&r.username),
                r.role.as_str(),
                units,
                user.password_hash,
                r.disabled,
                r.created_at.0
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                Err(ServerError::UserExists)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn set_disabled(&self, username: &str, disabled: bool) -> Result<(), ServerError> {
        let changed = self.conn()?.execute(
            "UPDATE users SET disabled = ?1 WHERE username_key = ?2",
            params![disabled, username_key(username)],
        )?;
        if changed == 0 {
            return Err(ServerError::UnknownUser);
        }
        Ok(())
    }

    fn list_users(&self) -> Result<Vec<UserRecord>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, username, role, units, disabled, created_at FROM users ORDER BY username_key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, [u8; 16]>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, username, role, units, disabled, created_at) = row?;
            out.push(UserRecord {
                id: Uuid::from_bytes(id),
                username,
                role: role.parse().map_err(|_| ServerError::Damaged("server.db"))?,
                units: serde_json::from_str(&units).map_err(|_| ServerError::Damaged("server.db"))?,
                disabled,
                created_at: Timestamp(created_at),
            });
        }
        Ok(out)
    }

    fn put_device_token(&self, d: &DeviceRecord, token_hash: &[u8; 32]) -> Result<(), ServerError> {
        let conn = self.conn()?;
        let tx = conn.unchecked_transaction()?;
        let existing: Option<(Option<i64>, Option<i64>)> = tx
            .query_row(
                "SELECT enrolled_at, revoked_at FROM devices WHERE name_key = ?1",
                [username_key(&d.name)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let units = serde_json::to_string(&d.units).map_err(|_| ServerError::Internal("units encoding"))?;
        let profile = d.profile.as_str();
        match existing {
            Some((Some(_), _)) | Some((_, Some(_))) => return Err(ServerError::DeviceEnrolled),
            Some((None, None)) => {
                tx.execute(
                    "UPDATE devices SET token_hash = ?1, token_expires_at = ?2, profile = ?3, units = ?4 WHERE name_key = ?5",
                    params![&token_hash[..], d.token_expires_at.map(|t| t.0), profile, units, username_key(&d.name)],
                )?;
            }
            None => {
                tx.execute(
                    "INSERT INTO devices (id, name, name_key, profile, units, token_hash, token_expires_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        d.id.as_bytes(),
                        d.name,
                        username_key(&d.name),
                        profile,
                        units,
                        &token_hash[..],
                        d.token_expires_at.map(|t| t.0),
                        d.created_at.0
                    ],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn revoke_device(&self, name: &str, now: Timestamp) -> Result<(), ServerError> {
        // Revocation also kills any unused enrollment token.
        let changed = self.conn()?.execute(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, ?1), token_hash = NULL WHERE name_key = ?2",
            params![now.0, username_key(name)],
        )?;
        if changed == 0 {
            return Err(ServerError::UnknownDevice);
        }
        Ok(())
    }

    fn enroll_device(
        &self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        let conn = self.conn()?;
        let tx = conn.unchecked_transaction()?;
        let found: Option<(String, Option<i64>)> = tx
            .query_row(
                "SELECT name_key, token_expires_at FROM devices
                 WHERE token_hash = ?1 AND enrolled_at IS NULL AND revoked_at IS NULL",
                [&token_hash[..]],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // One answer for unknown, used, revoked and expired tokens: the caller learns nothing more.
        let Some((name_key, expires)) = found else { return Err(ServerError::InvalidToken) };
        if expires.is_none_or(|e| now.0 >= e) {
            return Err(ServerError::InvalidToken);
        }
        tx.execute(
            "UPDATE devices SET public_key = ?1, enrolled_at = ?2, token_hash = NULL WHERE name_key = ?3",
            params![&public_key[..], now.0, name_key],
        )?;
        let mut enrolled = devices_where(&tx, "WHERE name_key = ?1", [&name_key])?;
        tx.commit()?;
        enrolled.pop().ok_or(ServerError::Internal("enrolled device vanished"))
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, ServerError> {
        devices_where(&*self.conn()?, "", [])
    }
}

/// The devices matching `filter` (a constant `WHERE …` clause, or empty), ordered by name.
fn devices_where<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> Result<Vec<DeviceRecord>, ServerError> {
    let sql = format!(
        "SELECT id, name, profile, units, token_expires_at, enrolled_at, revoked_at, created_at
         FROM devices {filter} ORDER BY name_key"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, [u8; 16]>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            [r.get::<_, Option<i64>>(4)?, r.get(5)?, r.get(6)?],
            r.get::<_, i64>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, profile, units, [expires, enrolled, revoked], created_at) = row?;
        out.push(DeviceRecord {
            id: Uuid::from_bytes(id),
            name,
            profile: profile.parse().map_err(|_| ServerError::Damaged("server.db"))?,
            units: serde_json::from_str(&units).map_err(|_| ServerError::Damaged("server.db"))?,
            token_expires_at: expires.map(Timestamp),
            enrolled_at: enrolled.map(Timestamp),
            revoked_at: revoked.map(Timestamp),
            created_at: Timestamp(created_at),
        });
    }
    Ok(out)
}

/// Usernames are unique regardless of case.
fn username_key(username: &str) -> String {
    username.trim().to_lowercase()
}
