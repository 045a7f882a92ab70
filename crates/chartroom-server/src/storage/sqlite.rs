//! The embedded backend: SQLCipher, keyed by an HKDF subkey of the master key in `keys/master.key`.

use std::path::Path;
use std::sync::Mutex;

use chartroom_audit::{server_link, verify_chain, AuditEntry, ChainHead, Checkpoint, Digest32, Event};
use chartroom_domain::{LoginThrottle, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use uuid::Uuid;

use super::{to_i64, to_i64_u, units_json, username_key, DeviceRow, Rewrapped};
use super::{
    AppliedChange, AuditBase, BreakGlass, DeviceRecord, EnrolledDevice, Incident, IncomingChange,
    IncomingRecord, Ingested, Migrated, NewSession, NewUser, PullRows, RawEntry, RecordKind, RecordVersion,
    Refreshed, SealedCensusRow, SealedChart, SealedPatient, SealedRecord, SessionOwner, SessionTokens,
    Storage, Stored, UserRecord, SERVER_CHAIN,
};
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
    // 4: login throttles, one-time nonces, sessions (token hashes only), the server event log.
    "CREATE TABLE login_throttle (key TEXT PRIMARY KEY, state TEXT NOT NULL);
     CREATE TABLE auth_nonces (
        nonce_hash BLOB PRIMARY KEY,
        device_id  BLOB NOT NULL,
        expires_at INTEGER NOT NULL
     );
     CREATE TABLE sessions (
        id                 BLOB PRIMARY KEY,
        user_id            BLOB NOT NULL REFERENCES users(id),
        device_id          BLOB NOT NULL REFERENCES devices(id),
        access_hash        BLOB NOT NULL UNIQUE,
        access_expires_at  INTEGER NOT NULL,
        refresh_hash       BLOB NOT NULL UNIQUE,
        refresh_expires_at INTEGER NOT NULL,
        prev_refresh_hash  BLOB UNIQUE,
        created_at         INTEGER NOT NULL
     );
     CREATE INDEX sessions_by_user ON sessions(user_id);
     CREATE INDEX sessions_by_device ON sessions(device_id);
     CREATE TABLE events (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        at        INTEGER NOT NULL,
        action    TEXT NOT NULL,
        outcome   TEXT NOT NULL,
        username  TEXT,
        user_id   BLOB,
        device_id BLOB,
        remote    TEXT,
        resource  TEXT
     );",
    // 5: sealed patient records. Only ids, placement, versions and an MRN blind index are plaintext.
    "CREATE TABLE patients (
        id        BLOB PRIMARY KEY,
        mrn_index BLOB NOT NULL UNIQUE,
        unit      TEXT NOT NULL,
        bed       TEXT NOT NULL,
        version   INTEGER NOT NULL,
        wrapped_key BLOB NOT NULL,
        body      BLOB NOT NULL
     );
     CREATE INDEX patients_by_unit ON patients(unit, bed, id);
     CREATE TABLE records (
        id         BLOB PRIMARY KEY,
        patient_id BLOB NOT NULL REFERENCES patients(id),
        kind       TEXT NOT NULL,
        sort_key   INTEGER NOT NULL,
        version    INTEGER NOT NULL,
        body       BLOB NOT NULL
     );
     CREATE INDEX records_by_patient ON records(patient_id, kind, sort_key DESC);",
    // 6: the audit trail. Entries are append-only; each row carries its place in its device's chain
    // and in the server's own chain (server_seq, server_hash). Checkpoints are signed elsewhere.
    "CREATE TABLE audit_entries (
        server_seq  INTEGER PRIMARY KEY,
        server_hash BLOB NOT NULL,
        device_id   BLOB NOT NULL,
        seq         INTEGER NOT NULL,
        id          BLOB NOT NULL UNIQUE,
        hash        BLOB NOT NULL,
        at          INTEGER NOT NULL,
        username    TEXT,
        action      TEXT NOT NULL,
        entry       TEXT NOT NULL,
        UNIQUE (device_id, seq)
     );
     CREATE INDEX audit_by_time ON audit_entries(at);
     CREATE TABLE audit_checkpoints (number INTEGER PRIMARY KEY, checkpoint TEXT NOT NULL);",
    // 7: oversight — break-glass grants, incidents, and the index the anomaly rule counts with.
    "CREATE INDEX audit_by_user ON audit_entries(username, action, at);
     CREATE TABLE break_glass (
        id          BLOB PRIMARY KEY,
        user_id     BLOB NOT NULL,
        username    TEXT NOT NULL,
        patient_id  BLOB NOT NULL,
        reason      TEXT NOT NULL,
        detail      BLOB NOT NULL,
        granted_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL,
        reviewed_by TEXT,
        reviewed_at INTEGER
     );
     CREATE INDEX break_glass_by_user ON break_glass(user_id, patient_id, expires_at);
     CREATE TABLE incidents (
        id             BLOB PRIMARY KEY,
        at             INTEGER NOT NULL,
        user_id        BLOB NOT NULL,
        username       TEXT NOT NULL,
        kind           TEXT NOT NULL,
        last_hour      INTEGER NOT NULL,
        hourly_average REAL NOT NULL
     );",
    // 8: the retention purge base (one row: where verification starts after a purge).
    "CREATE TABLE audit_base (id INTEGER PRIMARY KEY CHECK (id = 1), base TEXT NOT NULL);",
    // 9: changes pushed by stations, remembered by id (idempotent retries).
    "CREATE TABLE applied_changes (
        change_id  BLOB PRIMARY KEY,
        device_id  BLOB NOT NULL,
        record_id  BLOB NOT NULL,
        version    INTEGER NOT NULL
     );",
    // 10: the change sequence stations pull by: every write of a patient or record takes the next
    // number (SQLite has one writer at a time, so numbers are committed in order).
    "ALTER TABLE patients ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE records ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
     CREATE INDEX patients_by_change ON patients(change_seq);
     CREATE INDEX records_by_change ON records(change_seq);
     CREATE TABLE change_counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
     INSERT INTO change_counter (id, value) VALUES (1, 0);",
    // 11: keyring-loss recovery. An administrator's approval is a one-time recovery token bound to
    // one enrolled device; only its SHA-256 is kept.
    "ALTER TABLE devices ADD COLUMN recovery_token_hash BLOB;
     ALTER TABLE devices ADD COLUMN recovery_token_expires_at INTEGER;",
];

/// The embedded backend.
#[derive(Debug)]
pub struct SqliteStorage {
    conn: Mutex<Connection>,
}

impl SqliteStorage {
    /// Opens (and migrates) the database at `path` with the key derived from `master`.
    pub fn open(path: &Path, master: &[u8; 32]) -> Result<Self, ServerError> {
        Self::open_migrated(path, master).map(|(s, _)| s)
    }

    /// [`SqliteStorage::open`], also saying which migrations it applied.
    pub fn open_migrated(path: &Path, master: &[u8; 32]) -> Result<(Self, Migrated), ServerError> {
        let conn = Connection::open(path)?;
        let key = Self::database_key(master);
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
            let tx = write_tx(&conn)?;
            // Another process (the server and an admin command starting together) may have applied
            // it while this one waited for the write lock.
            let applied: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if applied > i64::try_from(i).unwrap_or(i64::MAX) {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
            tx.commit()?;
        }
        let migrated =
            Migrated { from: u32::try_from(current).unwrap_or(0), to: u32::try_from(known).unwrap_or(0) };
        Ok((SqliteStorage { conn: Mutex::new(conn) }, migrated))
    }

    /// A consistent copy of the database file `from` (under `from_key`) as the new file `to` (0600)
    /// under `to_key`: backups (same key) and master key rotation (the new key). Safe while the
    /// server writes (SQLite's read snapshot).
    pub(crate) fn export_copy(
        from: &Path,
        from_key: &chartroom_crypto::DataKey,
        to: &Path,
        to_key: &chartroom_crypto::DataKey,
    ) -> Result<(), ServerError> {
        let conn = Connection::open(from)?;
        conn.execute_batch(&from_key.sqlcipher_key_statement())?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        drop(crate::datadir::create_new(to, 0o600)?);
        let attach = zeroize::Zeroizing::new(format!(
            "ATTACH DATABASE '{}' AS copy KEY {};",
            to.display().to_string().replace('\'', "''"),
            to_key.sqlcipher_key_statement().trim_start_matches("PRAGMA key = ").trim_end_matches(';')
        ));
        conn.execute_batch(&attach)?;
        conn.query_row("SELECT sqlcipher_export('copy')", [], |_| Ok(()))?;
        conn.execute_batch(&format!("PRAGMA copy.user_version = {version}; DETACH DATABASE copy;"))?;
        Ok(())
    }

    /// Re-keys the database file at `path` from `old` to `new` (no other connection may be open):
    /// a full copy under the new key is written and synced beside it, then renamed over it, so a
    /// crash leaves the file entirely under one key or the other.
    pub(crate) fn rekey_file(path: &Path, old: &[u8; 32], new: &[u8; 32]) -> Result<(), ServerError> {
        let (old_key, new_key) = (Self::database_key(old), Self::database_key(new));
        let tmp = path.with_extension("db.rekey");
        let _ = std::fs::remove_file(&tmp);
        {
            // Everything in the write-ahead log goes into the file first: the copy is made from it,
            // and the old log must not outlive the file it belongs to.
            let conn = Connection::open(path)?;
            conn.execute_batch(&old_key.sqlcipher_key_statement())?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Self::export_copy(path, &old_key, &tmp, &new_key)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        for suffix in ["-wal", "-shm"] {
            match std::fs::remove_file(format!("{}{suffix}", path.display())) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        std::fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    /// The database key: an HKDF subkey of the master key, never the master key itself.
    pub(crate) fn database_key(master: &[u8; 32]) -> chartroom_crypto::DataKey {
        chartroom_crypto::DataKey::derive(b"chartroom/server-db/v1", master, b"database")
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, ServerError> {
        self.conn.lock().map_err(|_| ServerError::Internal("storage lock poisoned"))
    }
}

impl Storage for SqliteStorage {
    fn create_user(&self, user: &NewUser) -> Result<(), ServerError> {
        let r = &user.record;
        let units = units_json(&r.units)?;
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
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let key = username_key(username);
        let changed =
            tx.execute("UPDATE users SET disabled = ?1 WHERE username_key = ?2", params![disabled, key])?;
        if changed == 0 {
            return Err(ServerError::UnknownUser);
        }
        if disabled {
            tx.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username_key = ?1)",
                [&key],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn list_users(&self) -> Result<Vec<UserRecord>, ServerError> {
        Ok(users_where(&*self.conn()?, "", [])?.into_iter().map(|u| u.record).collect())
    }

    fn user_for_login(&self, username: &str) -> Result<Option<NewUser>, ServerError> {
        Ok(users_where(&*self.conn()?, "WHERE username_key = ?1", [username_key(username)])?.pop())
    }

    fn put_device_token(&self, d: &DeviceRecord, token_hash: &[u8; 32]) -> Result<(), ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let existing: Option<(Option<i64>, Option<i64>)> = tx
            .query_row(
                "SELECT enrolled_at, revoked_at FROM devices WHERE name_key = ?1",
                [username_key(&d.name)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let units = units_json(&d.units)?;
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
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let key = username_key(name);
        // Revocation also kills any unused enrollment token and every session on the device.
        let changed = tx.execute(
            "UPDATE devices SET revoked_at = coalesce(revoked_at, ?1), token_hash = NULL,
                    recovery_token_hash = NULL, recovery_token_expires_at = NULL
             WHERE name_key = ?2",
            params![now.0, key],
        )?;
        if changed == 0 {
            return Err(ServerError::UnknownDevice);
        }
        tx.execute(
            "DELETE FROM sessions WHERE device_id = (SELECT id FROM devices WHERE name_key = ?1)",
            [&key],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn enroll_device(
        &self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
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
        enrolled.pop().map(|d| d.record).ok_or(ServerError::Internal("enrolled device vanished"))
    }

    fn put_recovery_token(
        &self,
        name: &str,
        token_hash: &[u8; 32],
        expires_at: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let key = username_key(name);
        let Some(device) = devices_where(&tx, "WHERE name_key = ?1", [&key])?.pop() else {
            return Err(ServerError::UnknownDevice);
        };
        if device.record.enrolled_at.is_none() || device.record.revoked_at.is_some() {
            return Err(ServerError::NotRecoverable);
        }
        tx.execute(
            "UPDATE devices SET recovery_token_hash = ?1, recovery_token_expires_at = ?2 WHERE name_key = ?3",
            params![&token_hash[..], expires_at.0, key],
        )?;
        tx.commit()?;
        Ok(device.record)
    }

    fn check_recovery_token(
        &self,
        device_id: Uuid,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<bool, ServerError> {
        live_recovery_token(&*self.conn()?, device_id, token_hash, now)
    }

    fn recover_device(
        &self,
        device_id: Uuid,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        now: Timestamp,
    ) -> Result<DeviceRecord, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        // Checked again inside the write transaction: two requests racing with one token cannot
        // both pass.
        if !live_recovery_token(&tx, device_id, token_hash, now)? {
            return Err(ServerError::InvalidRecoveryToken);
        }
        tx.execute(
            "UPDATE devices SET public_key = ?1, recovery_token_hash = NULL, recovery_token_expires_at = NULL
             WHERE id = ?2",
            params![&public_key[..], device_id.as_bytes()],
        )?;
        // The old key is dead: so is everything issued to it.
        tx.execute("DELETE FROM sessions WHERE device_id = ?1", [device_id.as_bytes()])?;
        tx.execute("DELETE FROM auth_nonces WHERE device_id = ?1", [device_id.as_bytes()])?;
        let mut device = devices_where(&tx, "WHERE id = ?1", [device_id.as_bytes()])?;
        tx.commit()?;
        device.pop().map(|d| d.record).ok_or(ServerError::Internal("recovered device vanished"))
    }

    fn list_devices(&self) -> Result<Vec<DeviceRecord>, ServerError> {
        Ok(devices_where(&*self.conn()?, "", [])?.into_iter().map(|d| d.record).collect())
    }

    fn enrolled_device(&self, id: Uuid) -> Result<Option<EnrolledDevice>, ServerError> {
        let found = devices_where(
            &*self.conn()?,
            "WHERE id = ?1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL",
            [id.as_bytes()],
        )?;
        Ok(found.into_iter().next().and_then(DeviceRow::enrolled))
    }

    fn update_throttle(
        &self,
        key: &str,
        change: &mut (dyn FnMut(&mut LoginThrottle) + Send),
    ) -> Result<(), ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let state: Option<String> = tx
            .query_row("SELECT state FROM login_throttle WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        let mut throttle: LoginThrottle = match state {
            Some(json) => serde_json::from_str(&json).map_err(|_| ServerError::Damaged("server.db"))?,
            None => LoginThrottle::default(),
        };
        change(&mut throttle);
        let json =
            serde_json::to_string(&throttle).map_err(|_| ServerError::Internal("throttle encoding"))?;
        tx.execute(
            "INSERT INTO login_throttle (key, state) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET state = ?2",
            params![key, json],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn clear_throttle(&self, key: &str) -> Result<(), ServerError> {
        self.conn()?.execute("DELETE FROM login_throttle WHERE key = ?1", [key])?;
        Ok(())
    }

    fn put_nonce(
        &self,
        nonce_hash: &[u8; 32],
        device_id: Uuid,
        expires_at: Timestamp,
    ) -> Result<(), ServerError> {
        let conn = self.conn()?;
        // Unanswered challenges expire: sweep them here too, so they cannot pile up.
        conn.execute("DELETE FROM auth_nonces WHERE expires_at < ?1", [expires_at.0 - 120_000])?;
        conn.execute(
            "INSERT INTO auth_nonces (nonce_hash, device_id, expires_at) VALUES (?1, ?2, ?3)",
            params![&nonce_hash[..], device_id.as_bytes(), expires_at.0],
        )?;
        Ok(())
    }

    fn take_nonce(
        &self,
        nonce_hash: &[u8; 32],
        device_id: Uuid,
        now: Timestamp,
    ) -> Result<bool, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        // Expired nonces are swept on every use, so the table cannot grow without bound.
        tx.execute("DELETE FROM auth_nonces WHERE expires_at <= ?1", [now.0])?;
        let taken = tx.execute(
            "DELETE FROM auth_nonces WHERE nonce_hash = ?1 AND device_id = ?2",
            params![&nonce_hash[..], device_id.as_bytes()],
        )?;
        tx.commit()?;
        Ok(taken == 1)
    }

    fn create_session(&self, s: &NewSession) -> Result<(), ServerError> {
        let t = &s.tokens;
        self.conn()?.execute(
            "INSERT INTO sessions (id, user_id, device_id, access_hash, access_expires_at, refresh_hash,
                                   refresh_expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                s.id.as_bytes(),
                s.user_id.as_bytes(),
                s.device_id.as_bytes(),
                &t.access_hash[..],
                t.access_expires_at.0,
                &t.refresh_hash[..],
                t.refresh_expires_at.0,
                s.created_at.0
            ],
        )?;
        Ok(())
    }

    fn session_by_access(
        &self,
        access_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<SessionOwner>, ServerError> {
        let conn = self.conn()?;
        type Row = ([u8; 16], [u8; 16], [u8; 16], i64);
        let found: Option<Row> = conn
            .prepare_cached(
                "SELECT id, user_id, device_id, access_expires_at FROM sessions
                 WHERE access_hash = ?1 AND access_expires_at > ?2",
            )?
            .query_row(params![&access_hash[..], now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let Some((session_id, user_id, device_id, expires)) = found else { return Ok(None) };
        session_owner(&conn, Uuid::from_bytes(session_id), user_id, device_id, Timestamp(expires))
    }

    fn rotate_refresh(
        &self,
        refresh_hash: &[u8; 32],
        device_id: Uuid,
        next: &SessionTokens,
        now: Timestamp,
    ) -> Result<Refreshed, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let reused: Option<[u8; 16]> = tx
            .query_row(
                "SELECT id FROM sessions WHERE prev_refresh_hash = ?1 AND device_id = ?2",
                params![&refresh_hash[..], device_id.as_bytes()],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = reused {
            // A refresh token that was already exchanged is being replayed: whoever holds the
            // current one may be an impostor, so the whole session ends.
            tx.execute("DELETE FROM sessions WHERE id = ?1", [&id[..]])?;
            tx.commit()?;
            return Ok(Refreshed::Reused);
        }
        let found: Option<([u8; 16], [u8; 16])> = tx
            .query_row(
                "SELECT id, user_id FROM sessions
                 WHERE refresh_hash = ?1 AND device_id = ?2 AND refresh_expires_at > ?3",
                params![&refresh_hash[..], device_id.as_bytes(), now.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, user_id)) = found else { return Ok(Refreshed::Invalid) };
        tx.execute(
            "UPDATE sessions SET access_hash = ?1, access_expires_at = ?2, refresh_hash = ?3,
                                 refresh_expires_at = ?4, prev_refresh_hash = refresh_hash
             WHERE id = ?5",
            params![
                &next.access_hash[..],
                next.access_expires_at.0,
                &next.refresh_hash[..],
                next.refresh_expires_at.0,
                &id[..]
            ],
        )?;
        let owner =
            session_owner(&tx, Uuid::from_bytes(id), user_id, *device_id.as_bytes(), next.access_expires_at)?;
        tx.commit()?;
        Ok(owner.map_or(Refreshed::Invalid, |o| Refreshed::Rotated(Box::new(o))))
    }

    fn end_session(&self, session_id: Uuid) -> Result<(), ServerError> {
        self.conn()?.execute("DELETE FROM sessions WHERE id = ?1", [session_id.as_bytes()])?;
        Ok(())
    }

    fn append_events(&self, events: &[Event]) -> Result<(), ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let mut head = device_head(&tx, SERVER_CHAIN)?;
        let mut server = server_head(&tx)?;
        for event in events {
            let entry = head.append(SERVER_CHAIN, Uuid::now_v7(), event.clone());
            server = insert_entry(&tx, server, &entry)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn ingest_entries(&self, device_id: Uuid, entries: &[AuditEntry]) -> Result<Ingested, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let head = device_head(&tx, device_id)?;
        let mut outcome = Ingested::default();
        // A retried upload may repeat entries already stored: skip them if they are identical.
        let mut fresh = entries;
        while let Some((first, rest)) = fresh.split_first() {
            if first.device_id != device_id || first.seq > head.seq {
                break;
            }
            let stored: Option<Vec<u8>> = tx
                .prepare_cached("SELECT hash FROM audit_entries WHERE device_id = ?1 AND seq = ?2")?
                .query_row(params![device_id.as_bytes(), to_i64_u(first.seq)], |r| r.get(0))
                .optional()?;
            if stored.as_deref() != Some(&first.hash.0[..]) {
                return Err(super::forked_at(first.seq));
            }
            outcome.already_present += 1;
            fresh = rest;
        }
        verify_chain(device_id, head, fresh).map_err(super::chain_refused)?;
        // Entry ids are unique across all chains: one already stored (or repeated here) is a forgery
        // or a bug on the device, never something a retry can fix.
        let mut ids = std::collections::HashSet::new();
        for entry in fresh {
            let taken = tx
                .prepare_cached("SELECT 1 FROM audit_entries WHERE id = ?1")?
                .query_row([entry.id.as_bytes()], |_| Ok(()))
                .optional()?
                .is_some();
            if taken || !ids.insert(entry.id) {
                return Err(super::reused_entry_id(entry.seq));
            }
        }
        let mut server = server_head(&tx)?;
        for entry in fresh {
            server = insert_entry(&tx, server, entry)?;
            outcome.stored += 1;
        }
        tx.commit()?;
        Ok(outcome)
    }

    fn audit_raw_page(&self, after: u64, limit: usize) -> Result<Vec<RawEntry>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT server_seq, server_hash, hash, entry FROM audit_entries WHERE server_seq > ?1
             ORDER BY server_seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![to_i64_u(after), to_i64(limit)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, [u8; 32]>(1)?,
                r.get::<_, [u8; 32]>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (server_seq, server_hash, hash, canonical) = row?;
            out.push(RawEntry {
                server_seq: u64::try_from(server_seq).map_err(|_| ServerError::Damaged("server.db"))?,
                server_hash: Digest32(server_hash),
                hash: Digest32(hash),
                canonical,
            });
        }
        Ok(out)
    }

    fn audit_head(&self) -> Result<(u64, Digest32), ServerError> {
        let head = server_head(&*self.conn()?)?;
        Ok((head.seq, head.hash))
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT checkpoint FROM audit_checkpoints ORDER BY number")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?).map_err(|_| ServerError::Damaged("audit checkpoint"))?);
        }
        Ok(out)
    }

    fn add_checkpoint(&self, c: &Checkpoint) -> Result<bool, ServerError> {
        let json = serde_json::to_string(c).map_err(|_| ServerError::Internal("checkpoint encoding"))?;
        let added = self.conn()?.execute(
            "INSERT INTO audit_checkpoints (number, checkpoint) VALUES (?1, ?2) ON CONFLICT(number) DO NOTHING",
            params![to_i64_u(c.number), json],
        )?;
        Ok(added == 1)
    }

    fn audit_base(&self) -> Result<Option<AuditBase>, ServerError> {
        stored_base(&*self.conn()?)
    }

    fn purge_audit(&self, base: &AuditBase) -> Result<u64, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let json = serde_json::to_string(base).map_err(|_| ServerError::Internal("audit base encoding"))?;
        tx.execute(
            "INSERT INTO audit_base (id, base) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET base = ?1",
            [json],
        )?;
        let purged =
            tx.execute("DELETE FROM audit_entries WHERE server_seq <= ?1", [to_i64_u(base.server_seq)])?;
        tx.commit()?;
        Ok(purged as u64)
    }

    fn count_actions(
        &self,
        username: &str,
        actions: &[&str],
        since: Timestamp,
        until: Timestamp,
    ) -> Result<u64, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            // Only the server's own chain: its entries carry the server's clock and the authenticated
            // user. Uploaded device entries name whatever user and time the device wrote.
            "SELECT count(*) FROM audit_entries
             WHERE username = ?1 AND action = ?2 AND at >= ?3 AND at < ?4 AND device_id = ?5",
        )?;
        let mut total = 0u64;
        for action in actions {
            let n: i64 = stmt
                .query_row(params![username, action, since.0, until.0, SERVER_CHAIN.as_bytes()], |r| {
                    r.get(0)
                })?;
            total += u64::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    fn put_break_glass(&self, g: &BreakGlass) -> Result<(), ServerError> {
        self.conn()?.execute(
            "INSERT INTO break_glass (id, user_id, username, patient_id, reason, detail, granted_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                g.id.as_bytes(),
                g.user_id.as_bytes(),
                g.username,
                g.patient_id.as_bytes(),
                g.reason,
                g.detail,
                g.granted_at.0,
                g.expires_at.0
            ],
        )?;
        Ok(())
    }

    fn has_break_glass(&self, user_id: Uuid, patient_id: Uuid, now: Timestamp) -> Result<bool, ServerError> {
        let conn = self.conn()?;
        let found = conn
            .prepare_cached(
                "SELECT 1 FROM break_glass WHERE user_id = ?1 AND patient_id = ?2 AND granted_at <= ?3 AND expires_at > ?3",
            )?
            .query_row(params![user_id.as_bytes(), patient_id.as_bytes(), now.0], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }

    fn break_glass_list(&self, unreviewed_only: bool) -> Result<Vec<BreakGlass>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, user_id, username, patient_id, reason, detail, granted_at, expires_at, reviewed_by, reviewed_at
             FROM break_glass WHERE ?1 = 0 OR reviewed_at IS NULL ORDER BY granted_at DESC",
        )?;
        let rows = stmt.query_map([unreviewed_only], |r| {
            Ok(BreakGlass {
                id: Uuid::from_bytes(r.get(0)?),
                user_id: Uuid::from_bytes(r.get(1)?),
                username: r.get(2)?,
                patient_id: Uuid::from_bytes(r.get(3)?),
                reason: r.get(4)?,
                detail: r.get(5)?,
                granted_at: Timestamp(r.get(6)?),
                expires_at: Timestamp(r.get(7)?),
                reviewed_by: r.get(8)?,
                reviewed_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn review_break_glass(&self, id: Uuid, reviewer: &str, now: Timestamp) -> Result<bool, ServerError> {
        let changed = self.conn()?.execute(
            "UPDATE break_glass SET reviewed_by = ?1, reviewed_at = ?2 WHERE id = ?3 AND reviewed_at IS NULL",
            params![reviewer, now.0, id.as_bytes()],
        )?;
        Ok(changed == 1)
    }

    fn raise_incident(&self, i: &Incident) -> Result<bool, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        if tx
            .execute("UPDATE users SET disabled = 1 WHERE id = ?1 AND disabled = 0", [i.user_id.as_bytes()])?
            == 0
        {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO incidents (id, at, user_id, username, kind, last_hour, hourly_average)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                i.id.as_bytes(),
                i.at.0,
                i.user_id.as_bytes(),
                i.username,
                i.kind,
                to_i64_u(i.last_hour),
                i.hourly_average
            ],
        )?;
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [i.user_id.as_bytes()])?;
        tx.commit()?;
        Ok(true)
    }

    fn incidents(&self) -> Result<Vec<Incident>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, user_id, username, kind, last_hour, hourly_average FROM incidents ORDER BY at DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Incident {
                id: Uuid::from_bytes(r.get(0)?),
                at: Timestamp(r.get(1)?),
                user_id: Uuid::from_bytes(r.get(2)?),
                username: r.get(3)?,
                kind: r.get(4)?,
                last_hour: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                hourly_average: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_charts(&self, charts: &[SealedChart]) -> Result<(), ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        for c in charts {
            put_chart(&tx, c).map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => ServerError::PatientExists,
                _ => e.into(),
            })?;
        }
        tx.commit()?;
        Ok(())
    }

    fn existing_patients(&self, ids: &[(Uuid, [u8; 32])]) -> Result<Vec<Uuid>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT 1 FROM patients WHERE id = ?1 OR mrn_index = ?2")?;
        let mut out = Vec::new();
        for (id, mrn_index) in ids {
            if stmt.query_row(params![id.as_bytes(), &mrn_index[..]], |_| Ok(())).optional()?.is_some() {
                out.push(*id);
            }
        }
        Ok(out)
    }

    fn patient(&self, id: Uuid) -> Result<Option<SealedPatient>, ServerError> {
        let conn = self.conn()?;
        let row = conn
            .prepare_cached(&format!("SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.id = ?1"))?
            .query_row([id.as_bytes()], sealed_patient)
            .optional()?;
        Ok(row)
    }

    fn patient_by_mrn_index(&self, mrn_index: &[u8; 32]) -> Result<Option<Uuid>, ServerError> {
        let conn = self.conn()?;
        let id = conn
            .prepare_cached("SELECT id FROM patients WHERE mrn_index = ?1")?
            .query_row([&mrn_index[..]], |r| r.get::<_, [u8; 16]>(0))
            .optional()?;
        Ok(id.map(Uuid::from_bytes))
    }

    fn census(
        &self,
        unit: &str,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<SealedCensusRow>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {PATIENT_COLUMNS},
                    (SELECT count(*) FROM records r WHERE r.patient_id = p.id AND r.kind = 'allergy'),
                    (SELECT max(r.sort_key) FROM records r WHERE r.patient_id = p.id AND r.kind = 'observation')
             FROM patients p
             WHERE p.unit = ?1
               AND (?2 IS NULL OR (p.bed, p.id) > (SELECT a.bed, a.id FROM patients a WHERE a.id = ?2))
             ORDER BY p.bed, p.id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![unit, after.map(|a| a.into_bytes()), to_i64(limit)], |r| {
            Ok(SealedCensusRow {
                patient: sealed_patient(r)?,
                allergy_count: r.get(7)?,
                last_vitals_at: r.get::<_, Option<i64>>(8)?.map(Timestamp),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn records(
        &self,
        patient_id: Uuid,
        kinds: &[RecordKind],
        max_observations: usize,
    ) -> Result<Vec<SealedRecord>, ServerError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, sort_key, version, body FROM records
             WHERE patient_id = ?1 AND kind = ?2 ORDER BY sort_key DESC, id LIMIT ?3",
        )?;
        let mut out = Vec::new();
        for kind in kinds {
            let limit = if *kind == RecordKind::Observation { max_observations } else { usize::MAX };
            let rows = stmt.query_map(params![patient_id.as_bytes(), kind.as_str(), to_i64(limit)], |r| {
                Ok((r.get::<_, [u8; 16]>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            for row in rows {
                let (id, kind, sort_key, version, body) = row?;
                let kind = RecordKind::parse(&kind).ok_or(ServerError::Damaged("server.db"))?;
                out.push(SealedRecord { id: Uuid::from_bytes(id), kind, sort_key, version, body });
            }
        }
        Ok(out)
    }

    fn record_version(&self, id: Uuid) -> Result<Option<RecordVersion>, ServerError> {
        let conn = self.conn()?;
        let row: Option<([u8; 16], String, i64)> = conn
            .prepare_cached("SELECT patient_id, kind, version FROM records WHERE id = ?1")?
            .query_row([id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        row.map(|(p, k, v)| {
            Ok((Uuid::from_bytes(p), RecordKind::parse(&k).ok_or(ServerError::Damaged("server.db"))?, v))
        })
        .transpose()
    }

    fn applied_change(&self, change_id: Uuid) -> Result<Option<AppliedChange>, ServerError> {
        applied_change_in(&*self.conn()?, change_id)
    }

    fn apply_changes(&self, changes: &[(IncomingChange, Event)]) -> Result<Vec<Stored>, ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        let mut head = device_head(&tx, SERVER_CHAIN)?;
        let mut server = server_head(&tx)?;
        let mut outcomes = Vec::with_capacity(changes.len());
        for (c, event) in changes {
            let stored = apply_change_in(&tx, c)?;
            if stored == Stored::Applied {
                let entry = head.append(SERVER_CHAIN, Uuid::now_v7(), event.clone());
                server = insert_entry(&tx, server, &entry)?;
            }
            outcomes.push(stored);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    fn pull_page(
        &self,
        units: Option<&[String]>,
        after: i64,
        max_changes: usize,
    ) -> Result<PullRows, ServerError> {
        let conn = self.conn()?;
        let tx = conn.unchecked_transaction()?; // one consistent snapshot for the whole page
        let in_scope = |unit: &str| units.is_none_or(|u| u.iter().any(|x| x == unit));
        // The page ends at a change number: every row up to it is included, nothing after.
        let upto: Option<i64> = tx.query_row(
            "SELECT max(s) FROM (SELECT change_seq AS s FROM patients WHERE change_seq > ?1
                                 UNION SELECT change_seq FROM records WHERE change_seq > ?1
                                 ORDER BY s LIMIT ?2)",
            params![after, to_i64(max_changes)],
            |r| r.get(0),
        )?;
        let newest: i64 = tx.query_row("SELECT value FROM change_counter WHERE id = 1", [], |r| r.get(0))?;
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
        {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.change_seq > ?1 AND p.change_seq <= ?2 ORDER BY p.change_seq"
            ))?;
            for row in stmt.query_map(params![after, upto], sealed_patient)? {
                let p = row?;
                if in_scope(&p.unit) {
                    patients.push(p);
                } else if after > 0 {
                    left.push(p.id);
                }
            }
        }
        // The records of whole patients (all of them), then single records changed in the page
        // whose patient is not whole in it; all in the page's snapshot.
        let mut records = Vec::new();
        for sql in [
            "SELECT r.patient_id, r.id, r.kind, r.sort_key, r.version, r.body, p.unit FROM patients p
             JOIN records r ON r.patient_id = p.id
             WHERE p.change_seq > ?1 AND p.change_seq <= ?2",
            "SELECT r.patient_id, r.id, r.kind, r.sort_key, r.version, r.body, p.unit FROM records r
             JOIN patients p ON p.id = r.patient_id
             WHERE r.change_seq > ?1 AND r.change_seq <= ?2
               AND NOT (p.change_seq > ?1 AND p.change_seq <= ?2)
             ORDER BY r.change_seq",
        ] {
            let mut stmt = tx.prepare_cached(sql)?;
            let rows = stmt.query_map(params![after, upto], |r| {
                Ok((
                    r.get::<_, [u8; 16]>(0)?,
                    r.get::<_, [u8; 16]>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?;
            for row in rows {
                let (pid, id, kind, sort_key, version, body, unit) = row?;
                if !in_scope(&unit) {
                    continue;
                }
                let kind = RecordKind::parse(&kind).ok_or(ServerError::Damaged("server.db"))?;
                records.push((
                    Uuid::from_bytes(pid),
                    SealedRecord { id: Uuid::from_bytes(id), kind, sort_key, version, body },
                ));
            }
        }
        let more: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM patients WHERE change_seq > ?1) OR EXISTS(SELECT 1 FROM records WHERE change_seq > ?1)",
            [upto],
            |r| r.get(0),
        )?;
        let mut key_holders = Vec::new();
        {
            let others = super::key_holder_ids(&patients, &records);
            let mut stmt =
                tx.prepare_cached(&format!("SELECT {PATIENT_COLUMNS} FROM patients p WHERE p.id = ?1"))?;
            for id in others {
                if let Some(p) = stmt.query_row([id.as_bytes()], sealed_patient).optional()? {
                    key_holders.push(p);
                }
            }
        }
        Ok(PullRows { patients, records, left, key_holders, upto, more, newest })
    }

    fn rewrap_patients(&self, rows: &[Rewrapped]) -> Result<(), ServerError> {
        let conn = self.conn()?;
        let tx = write_tx(&conn)?;
        {
            let mut stmt =
                tx.prepare_cached("UPDATE patients SET wrapped_key = ?2, mrn_index = ?3 WHERE id = ?1")?;
            for r in rows {
                stmt.execute(params![r.id.into_bytes(), r.wrapped_key, r.mrn_index])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn patient_ids(&self, after: Option<Uuid>, limit: usize) -> Result<Vec<Uuid>, ServerError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT id FROM patients WHERE ?1 IS NULL OR id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = stmt.query_map(params![after.map(|a| a.into_bytes()), to_i64(limit)], |r| {
            r.get::<_, [u8; 16]>(0).map(Uuid::from_bytes)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A write transaction that takes the write lock at once, so that two processes (server and admin
/// CLI) doing read-modify-write never fail on a lock upgrade; the busy timeout makes them queue.
fn write_tx(conn: &Connection) -> rusqlite::Result<Transaction<'_>> {
    Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
}

/// The stored head of `device_id`'s chain (genesis if it has none).
fn device_head(conn: &Connection, device_id: Uuid) -> Result<ChainHead, ServerError> {
    let row: Option<(i64, [u8; 32])> = conn
        .prepare_cached("SELECT seq, hash FROM audit_entries WHERE device_id = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row([device_id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        // After a purge a chain continues from the head recorded in the base.
        None => stored_base(conn)?
            .and_then(|b| b.device_heads.into_iter().find(|(d, _)| *d == device_id).map(|(_, h)| h))
            .unwrap_or(ChainHead::GENESIS),
        Some((seq, hash)) => ChainHead {
            seq: u64::try_from(seq).map_err(|_| ServerError::Damaged("server.db"))?,
            hash: Digest32(hash),
        },
    })
}

fn stored_base(conn: &Connection) -> Result<Option<AuditBase>, ServerError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT base FROM audit_base WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    json.map(|j| serde_json::from_str(&j).map_err(|_| ServerError::Damaged("audit base"))).transpose()
}

/// The server chain's head: the last stored entry's server sequence and link.
fn server_head(conn: &Connection) -> Result<ChainHead, ServerError> {
    let row: Option<(i64, [u8; 32])> = conn
        .prepare_cached("SELECT server_seq, server_hash FROM audit_entries ORDER BY server_seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        None => stored_base(conn)?
            .map_or(ChainHead::GENESIS, |b| ChainHead { seq: b.server_seq, hash: b.server_hash }),
        Some((seq, hash)) => ChainHead {
            seq: u64::try_from(seq).map_err(|_| ServerError::Damaged("server.db"))?,
            hash: Digest32(hash),
        },
    })
}

/// Inserts `entry` after `server` in the server chain; returns the new server head.
fn insert_entry(
    tx: &Transaction<'_>,
    server: ChainHead,
    entry: &AuditEntry,
) -> Result<ChainHead, ServerError> {
    let server_seq = server.seq + 1;
    let link = server_link(&server.hash, server_seq, &entry.hash);
    // The canonical encoding is the stored form: it is what the hash covers, and verification reads
    // it without decoding.
    let canonical = entry.canonical_bytes();
    tx.prepare_cached(
        "INSERT INTO audit_entries (server_seq, server_hash, device_id, seq, id, hash, at, username, action, entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        to_i64_u(server_seq),
        &link.0[..],
        entry.device_id.as_bytes(),
        to_i64_u(entry.seq),
        entry.id.as_bytes(),
        &entry.hash.0[..],
        entry.event.at.0,
        entry.event.username,
        entry.event.action,
        canonical
    ])?;
    Ok(ChainHead { seq: server_seq, hash: link })
}

const PATIENT_COLUMNS: &str = "p.id, p.unit, p.bed, p.version, p.mrn_index, p.wrapped_key, p.body";

fn sealed_patient(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedPatient> {
    Ok(SealedPatient {
        id: Uuid::from_bytes(r.get(0)?),
        unit: r.get(1)?,
        bed: r.get(2)?,
        version: r.get(3)?,
        mrn_index: r.get(4)?,
        wrapped_key: r.get(5)?,
        body: r.get(6)?,
    })
}

/// One change of a batch, in the caller's write transaction.
fn apply_change_in(tx: &Transaction<'_>, c: &IncomingChange) -> Result<Stored, ServerError> {
    if let Some(seen) = applied_change_in(tx, c.change_id)? {
        return Ok(Stored::AlreadyApplied(seen));
    }
    let id = c.record.id();
    let current: Option<i64> = match &c.record {
        IncomingRecord::Record(_) => tx
            .prepare_cached("SELECT version FROM records WHERE id = ?1")?
            .query_row([id.as_bytes()], |r| r.get(0))
            .optional()?,
        IncomingRecord::Patient(_) => tx
            .prepare_cached("SELECT version FROM patients WHERE id = ?1")?
            .query_row([id.as_bytes()], |r| r.get(0))
            .optional()?,
    };
    if current != c.replaces {
        return Ok(Stored::Moved { current_version: current });
    }
    let seq = next_change_seq(tx)?;
    match &c.record {
        IncomingRecord::Record(r) => tx.prepare_cached(
            "INSERT INTO records (id, patient_id, kind, sort_key, version, body, change_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET sort_key = ?4, version = ?5, body = ?6, change_seq = ?7",
        )?
        .execute(params![
                r.id.as_bytes(),
                c.patient_id.as_bytes(),
                r.kind.as_str(),
                r.sort_key,
                r.version,
                r.body,
                seq
            ])?,
        // The MRN index and the patient's key never change with a change pushed by a station.
        IncomingRecord::Patient(p) => tx
            .prepare_cached(
                "UPDATE patients SET unit = ?2, bed = ?3, version = ?4, body = ?5, change_seq = ?6 WHERE id = ?1",
            )?
            .execute(params![p.id.as_bytes(), p.unit, p.bed, p.version, p.body, seq])?,
    };
    tx.prepare_cached(
        "INSERT INTO applied_changes (change_id, device_id, record_id, version) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        c.change_id.as_bytes(),
        c.device_id.as_bytes(),
        id.as_bytes(),
        c.record.version()
    ])?;
    Ok(Stored::Applied)
}

fn applied_change_in(conn: &Connection, change_id: Uuid) -> Result<Option<AppliedChange>, ServerError> {
    let row: Option<([u8; 16], [u8; 16], i64)> = conn
        .prepare_cached("SELECT device_id, record_id, version FROM applied_changes WHERE change_id = ?1")?
        .query_row([change_id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.map(|(d, r, version)| AppliedChange {
        device_id: Uuid::from_bytes(d),
        record_id: Uuid::from_bytes(r),
        version,
    }))
}

/// The next number of the change sequence (inside the caller's write transaction).
fn next_change_seq(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.prepare_cached("UPDATE change_counter SET value = value + 1 WHERE id = 1 RETURNING value")?
        .query_row([], |r| r.get(0))
}

fn put_chart(tx: &Transaction<'_>, c: &SealedChart) -> rusqlite::Result<()> {
    let p = &c.patient;
    let seq = next_change_seq(tx)?;
    tx.prepare_cached(
        "INSERT INTO patients (id, mrn_index, unit, bed, version, wrapped_key, body, change_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        p.id.as_bytes(),
        &p.mrn_index[..],
        p.unit,
        p.bed,
        p.version,
        p.wrapped_key,
        p.body,
        seq
    ])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO records (id, patient_id, kind, sort_key, version, body, change_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for r in &c.records {
        insert.execute(params![
            r.id.as_bytes(),
            p.id.as_bytes(),
            r.kind.as_str(),
            r.sort_key,
            r.version,
            r.body,
            seq
        ])?;
    }
    Ok(())
}

/// The session's user and device, if both are still in good standing (user enabled, device
/// enrolled and not revoked).
fn session_owner(
    conn: &Connection,
    session_id: Uuid,
    user_id: [u8; 16],
    device_id: [u8; 16],
    access_expires_at: Timestamp,
) -> Result<Option<SessionOwner>, ServerError> {
    let user = users_where(conn, "WHERE id = ?1 AND disabled = 0", [&user_id[..]])?.pop();
    let device = devices_where(
        conn,
        "WHERE id = ?1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL",
        [&device_id[..]],
    )?
    .pop()
    .and_then(DeviceRow::enrolled);
    Ok(match (user, device) {
        (Some(user), Some(device)) => {
            Some(SessionOwner { session_id, user: user.record, device, access_expires_at })
        }
        _ => None,
    })
}

/// The users matching `filter` (a constant `WHERE …` clause, or empty), ordered by username.
fn users_where<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> Result<Vec<NewUser>, ServerError> {
    let sql = format!(
        "SELECT id, username, role, units, disabled, created_at, password_hash FROM users {filter}
         ORDER BY username_key"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, [u8; 16]>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, username, role, units, disabled, created_at, password_hash) = row?;
        out.push(NewUser {
            record: UserRecord {
                id: Uuid::from_bytes(id),
                username,
                role: role.parse().map_err(|_| ServerError::Damaged("server.db"))?,
                units: serde_json::from_str(&units).map_err(|_| ServerError::Damaged("server.db"))?,
                disabled,
                created_at: Timestamp(created_at),
            },
            password_hash,
        });
    }
    Ok(out)
}

/// Whether `token_hash` is the unexpired recovery token of `device_id`, an enrolled and unrevoked
/// device. The hash is compared in constant time.
fn live_recovery_token(
    conn: &Connection,
    device_id: Uuid,
    token_hash: &[u8; 32],
    now: Timestamp,
) -> Result<bool, ServerError> {
    use subtle::ConstantTimeEq;
    let found: Option<(Option<Vec<u8>>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT recovery_token_hash, recovery_token_expires_at FROM devices
             WHERE id = ?1 AND enrolled_at IS NOT NULL AND revoked_at IS NULL",
        )?
        .query_row([device_id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(stored), Some(expires))) = found else { return Ok(false) };
    let same: bool = stored.as_slice().ct_eq(&token_hash[..]).into();
    Ok(same && now.0 < expires)
}

/// The devices matching `filter` (a constant `WHERE …` clause, or empty), ordered by name.
fn devices_where<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    params: P,
) -> Result<Vec<DeviceRow>, ServerError> {
    let sql = format!(
        "SELECT id, name, profile, units, token_expires_at, enrolled_at, revoked_at, created_at, public_key
         FROM devices {filter} ORDER BY name_key"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((
            r.get::<_, [u8; 16]>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            [r.get::<_, Option<i64>>(4)?, r.get(5)?, r.get(6)?],
            r.get::<_, i64>(7)?,
            r.get::<_, Option<[u8; 32]>>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, profile, units, [expires, enrolled, revoked], created_at, public_key) = row?;
        out.push(DeviceRow {
            record: DeviceRecord {
                id: Uuid::from_bytes(id),
                name,
                profile: profile.parse().map_err(|_| ServerError::Damaged("server.db"))?,
                units: serde_json::from_str(&units).map_err(|_| ServerError::Damaged("server.db"))?,
                token_expires_at: expires.map(Timestamp),
                enrolled_at: enrolled.map(Timestamp),
                revoked_at: revoked.map(Timestamp),
                created_at: Timestamp(created_at),
            },
            public_key,
        });
    }
    Ok(out)
}
