//! The SQLCipher-backed store: opening, migrations, sealed record reads and writes, crypto-shredding.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chartroom_crypto::{DataKey, FieldPlace, PatientKey};
use chartroom_domain::{Chart, Date, Note, NoteStatus, Patient, Sex, Timestamp, Validate};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::Actor;
use crate::migrations::MIGRATIONS;
use crate::records::ChartRecord;
use crate::sync::Synced;
use crate::StoreError;

type Result<T> = std::result::Result<T, StoreError>;

/// SQLCipher's page size (its default): a healthy file is a whole number of pages.
const PAGE_SIZE: u64 = 4096;
pub(crate) const PATIENT_FIELD: &str = chartroom_crypto::fields::PATIENT;
pub(crate) const MRN_INDEX_DOMAIN: &str = "patient.mrn";

/// Whether the database file itself is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseEncryption {
    /// SQLCipher 4 with the raw data key (the only mode the station uses).
    SqlCipher,
    /// Plain SQLite with the same schema and the same sealed fields: exists only so the benchmark can
    /// measure what SQLCipher costs on an identical workload.
    PlainForBenchmark,
}

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    /// Upper bound of SQLite's page cache in KiB. SQLCipher decrypts and authenticates a page every
    /// time it is read from disk, so a cache that holds the working set is what makes warm reads and
    /// writes cost about the same as plain SQLite (measured on 10k patients / 435 MiB: reads 2.3–2.6×
    /// slower with SQLite's 2 MiB default; with 256 MiB reads ~1.0× but writes 1.6×; with a cache
    /// that holds the whole file, reads 1.0× and writes 1.2×). SQLite allocates cache pages only as
    /// they are read, so the bound costs nothing on a small station database.
    pub cache_kib: i64,
    pub encryption: DatabaseEncryption,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_kib: 1024 * 1024, encryption: DatabaseEncryption::SqlCipher }
    }
}

/// A census line: what a ward list shows for one patient.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CensusRow {
    pub patient_id: Uuid,
    pub mrn: String,
    pub name: String,
    pub birth_date: Date,
    pub sex: Sex,
    pub unit: String,
    pub bed: String,
    pub allergy_count: u32,
    pub last_vitals_at: Option<Timestamp>,
}

/// An open, decrypted store. Dropping it closes the database and wipes every key it holds.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) keys: Keys,
    path: PathBuf,
    /// A shared lock on `<database>.lock` while the store is open: a key rotation (which replaces
    /// the file) needs it exclusively, so it never runs under another process's open store.
    lock: std::fs::File,
}

/// How many unwrapped patient keys a store keeps at most (see [`Keys::cache`]).
pub const MAX_CACHED_PATIENT_KEYS: usize = 1024;

/// The data key and the patient keys unwrapped with it so far (wiped when dropped). Opaque outside
/// this crate: nothing else can make or read one.
pub struct Keys {
    pub(crate) dek: DataKey,
    /// Boxed so that growing the map moves pointers, not key material: a moved-from copy of a key
    /// would be freed without being wiped.
    pub(crate) patients: HashMap<Uuid, Box<PatientKey>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("cached_patient_keys", &self.patients.len()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("cached_patient_keys", &self.keys.patients.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a new, empty store at `path`. Refuses if anything is already there.
    pub fn create(path: &Path, dek: DataKey, options: StoreOptions) -> Result<Store> {
        if path.exists() {
            return Err(StoreError::AlreadyExists);
        }
        // Made here first (empty, never overwriting), so that a read-only or full file system is
        // named as such rather than as SQLite's "cannot open".
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::AlreadyExists)
                }
                Err(e) => return Err(e.into()),
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let result = Connection::open_with_flags(path, flags)
            .map_err(StoreError::from)
            .and_then(|conn| Store::init(conn, dek, options, path));
        if result.is_err() {
            // Nothing of value was written; do not leave a half-made database behind.
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(with_suffix(path, suffix));
            }
        }
        result
    }

    /// Opens an existing store. A wrong key or a damaged file is reported and the file is left as it is.
    pub fn open(path: &Path, dek: DataKey, options: StoreOptions) -> Result<Store> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::Missing),
            Err(e) => return Err(e.into()),
        };
        if meta.len() == 0 || !meta.len().is_multiple_of(PAGE_SIZE) {
            return Err(StoreError::Truncated);
        }
        // SQLite would fall back to read-only, or fail to open the write-ahead log, with a vaguer
        // error: a read-only file system is named as such.
        std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        Store::init(conn, dek, options, path)
    }

    fn init(conn: Connection, dek: DataKey, options: StoreOptions, path: &Path) -> Result<Store> {
        if options.encryption == DatabaseEncryption::SqlCipher {
            // SQLCipher logs HMAC failures to stderr itself; errors are reported through our own
            // types instead (one clear line, no internals).
            conn.execute_batch("PRAGMA cipher_log_level = NONE")?;
            conn.execute_batch(&dek.sqlcipher_key_statement())?;
        }
        // The first read proves the key (SQLCipher checks page 1's HMAC) before anything is written.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Freed pages are overwritten, so deleted rows (and shredded keys) do not linger in the file.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database("could not switch to write-ahead logging".into()));
        }
        // Clinical writes must survive power loss: FULL syncs the WAL on every commit.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "cache_size", -options.cache_kib)?;
        let lock = open_lock(path)?;
        // Waits out a key rotation in another process (seconds); shared with every other open store.
        lock.lock_shared()?;
        let mut store =
            Store { conn, keys: Keys { dek, patients: HashMap::new() }, path: path.to_owned(), lock };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let current = self.schema_version()?;
        let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if current > supported {
            return Err(StoreError::SchemaTooNew { found: current, supported });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(current).unwrap_or(0)) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX))?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Changes the page cache's bound (see [`StoreOptions::cache_kib`]); pages beyond it are freed.
    pub fn set_cache_kib(&self, kib: i64) -> Result<()> {
        self.conn.pragma_update(None, "cache_size", -kib.max(1))?;
        Ok(())
    }

    /// The schema version of this database.
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// The data key this store was opened with (to seal further key slots for it).
    pub fn data_key(&self) -> &DataKey {
        &self.keys.dek
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checkpoints the write-ahead log into the main file and closes the database.
    pub fn close(self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let Store { conn, .. } = self;
        conn.close().map_err(|(_, e)| StoreError::from(e))
    }

    /// Whether the database at `path` opens with `dek` (an interrupted key rotation: which key is it
    /// under?). Reads page 1 only; changes nothing.
    pub fn key_opens(path: &Path, dek: &DataKey) -> Result<bool> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA cipher_log_level = NONE")?;
        conn.execute_batch(&dek.sqlcipher_key_statement())?;
        Ok(conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).is_ok())
    }

    /// Re-keys this store under `new` (a data key rotation) and reopens it: a complete copy is
    /// written beside the file under the new key, with every patient key re-wrapped and every MRN
    /// index recomputed under it, synced, and renamed over the old file — so a crash leaves the
    /// database wholly under one key or the other, never between.
    pub fn rotate_key(self, new: DataKey, options: StoreOptions) -> Result<Store> {
        // Nobody else may have the database open while it is replaced.
        match self.lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let path = self.path.clone();
        let copy_path = with_suffix(&path, ".rekey");
        let _ = std::fs::remove_file(&copy_path);
        // The store's connection may not create files: the copy is made here, private.
        let mut create = std::fs::OpenOptions::new();
        create.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut create, 0o600);
        drop(create.open(&copy_path)?);
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let attach = zeroize::Zeroizing::new(format!(
            "ATTACH DATABASE '{}' AS rekeyed KEY {};",
            copy_path.display().to_string().replace('\'', "''"),
            new.sqlcipher_key_statement().trim_start_matches("PRAGMA key = ").trim_end_matches(';')
        ));
        self.conn.execute_batch(&attach)?;
        self.conn.query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))?;
        let version: i64 = self.conn.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
        self.conn.execute_batch(&format!("PRAGMA rekeyed.user_version = {version};"))?;
        let Store { conn, mut keys, lock, .. } = self;
        {
            let tx = conn.unchecked_transaction()?;
            let wrapped: Vec<(Vec<u8>, Vec<u8>)> = tx
                .prepare("SELECT patient_id, wrapped FROM rekeyed.patient_keys")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, old_wrapped) in wrapped {
                let patient_id = Uuid::from_slice(&id).map_err(|_| StoreError::Damaged)?;
                let key = keys.dek.unwrap_patient_key(patient_id, &old_wrapped)?;
                tx.prepare_cached("UPDATE rekeyed.patient_keys SET wrapped = ?2 WHERE patient_id = ?1")?
                    .execute(params![id, new.wrap_patient_key(patient_id, &key)])?;
            }
            let bodies: Vec<(Vec<u8>, Vec<u8>)> = tx
                .prepare("SELECT id, body FROM rekeyed.patients")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (id, body) in bodies {
                let patient_id = Uuid::from_slice(&id).map_err(|_| StoreError::Damaged)?;
                let patient: Patient = keys.open(&tx, patient_id, patient_id, PATIENT_FIELD, &body)?;
                tx.prepare_cached("UPDATE rekeyed.patients SET mrn_index = ?2 WHERE id = ?1")?
                    .execute(params![id, &new.blind_index(MRN_INDEX_DOMAIN, patient.mrn.trim())[..]])?;
            }
            tx.commit()?;
        }
        conn.execute_batch("DETACH DATABASE rekeyed;")?;
        conn.close().map_err(|(_, e)| StoreError::from(e))?;
        drop(keys);
        std::fs::File::open(&copy_path)?.sync_all()?;
        for suffix in ["-wal", "-shm"] {
            match std::fs::remove_file(with_suffix(&path, suffix)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        std::fs::rename(&copy_path, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        drop(lock);
        Store::open(&path, new, options)
    }

    /// Reads every page and checks its HMAC (SQLCipher) and the b-tree structure (SQLite).
    pub fn integrity_check(&self) -> Result<()> {
        let mut problems = 0usize;
        if self.conn.query_row("PRAGMA cipher_version", [], |r| r.get::<_, String>(0)).optional()?.is_some() {
            let mut stmt = self.conn.prepare("PRAGMA cipher_integrity_check")?;
            problems += stmt.query_map([], |_| Ok(()))?.count();
        }
        let result: String = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if problems > 0 || result != "ok" {
            return Err(StoreError::Damaged);
        }
        Ok(())
    }

    /// Adds or replaces a patient (creating the patient's key on first sight).
    pub fn put_patient(&mut self, patient: &Patient) -> Result<()> {
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        put_patient_in(&tx, keys, patient)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds or replaces one clinical record of an existing patient.
    pub fn put<R: ChartRecord>(&mut self, record: &R) -> Result<()> {
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        put_record_in(&tx, keys, record)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds or replaces records of one kind (e.g. a vitals set) and appends one audit entry per record
    /// — `create` or `update`, with the sealed record before and after — in the same transaction:
    /// after a crash there is either the change with its entries, or neither.
    pub fn put_all_as<R: ChartRecord>(&mut self, actor: &Actor, records: &[R], now: Timestamp) -> Result<()> {
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        for r in records {
            put_audited_in(&tx, keys, actor, r, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds or replaces several records of one kind in one transaction, without an audit entry: for
    /// loading data that arrived from elsewhere (sync, synthetic data), never for a user's change.
    pub fn put_all<R: ChartRecord>(&mut self, records: &[R]) -> Result<()> {
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        for r in records {
            put_record_in(&tx, keys, r)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Imports whole patients in one transaction: all of them or none.
    pub fn import(&mut self, bundles: &[Chart]) -> Result<()> {
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        for b in bundles {
            put_chart_in(&tx, keys, b)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The unit a patient is placed on (a plaintext column: no decryption needed to decide scope).
    /// A quarantined patient (moved off this station's units) is not found.
    pub fn patient_unit(&self, patient_id: Uuid) -> Result<String> {
        self.conn
            .prepare_cached(
                "SELECT unit FROM patients WHERE id = ?1 AND id NOT IN (SELECT patient_id FROM quarantine)",
            )?
            .query_row([patient_id.as_bytes()], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::PatientNotFound)
    }

    /// The patient with this MRN, found through a keyed index (the MRN is not stored in the clear).
    pub fn find_by_mrn(&mut self, mrn: &str) -> Result<Uuid> {
        let index = self.keys.dek.blind_index(MRN_INDEX_DOMAIN, mrn.trim());
        self.conn
            .prepare_cached(
                "SELECT id FROM patients WHERE mrn_index = ?1
                 AND id NOT IN (SELECT patient_id FROM quarantine)",
            )?
            .query_row([&index[..]], |r| r.get::<_, [u8; 16]>(0))
            .optional()?
            .map(Uuid::from_bytes)
            .ok_or(StoreError::PatientNotFound)
    }

    /// Every patient on `unit` (or on every unit), ordered by unit and bed.
    pub fn census(&mut self, unit: Option<&str>) -> Result<Vec<CensusRow>> {
        let Store { conn, keys, .. } = self;
        let mut stmt = conn.prepare_cached(
            "SELECT p.id, p.body,
                    (SELECT count(*) FROM allergies a WHERE a.patient_id = p.id),
                    (SELECT max(o.sort_key) FROM observations o WHERE o.patient_id = p.id)
             FROM patients p WHERE (?1 IS NULL OR p.unit = ?1)
             AND p.id NOT IN (SELECT patient_id FROM quarantine) ORDER BY p.unit, p.bed",
        )?;
        let rows = stmt.query_map([unit], |r| {
            Ok((
                r.get::<_, [u8; 16]>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body, allergy_count, last) = row?;
            let id = Uuid::from_bytes(id);
            let p: Patient = keys.open(conn, id, id, PATIENT_FIELD, &body)?;
            out.push(CensusRow {
                patient_id: id,
                name: p.name.to_string(),
                mrn: p.mrn,
                birth_date: p.birth_date,
                sex: p.sex,
                unit: p.unit,
                bed: p.bed,
                allergy_count,
                last_vitals_at: last.map(Timestamp),
            });
        }
        Ok(out)
    }

    /// One patient's chart, with at most `max_observations` of the newest observations.
    pub fn chart(&mut self, patient_id: Uuid, max_observations: usize) -> Result<Chart> {
        let Store { conn, keys, .. } = self;
        let (body, version): (Vec<u8>, i64) = conn
            .prepare_cached("SELECT body, version FROM patients WHERE id = ?1")?
            .query_row([patient_id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or(StoreError::PatientNotFound)?;
        let mut patient: Patient = keys.open(conn, patient_id, patient_id, PATIENT_FIELD, &body)?;
        patient.version = version;
        Ok(Chart {
            patient,
            allergies: records_of(conn, keys, patient_id, usize::MAX)?,
            conditions: records_of(conn, keys, patient_id, usize::MAX)?,
            medications: records_of(conn, keys, patient_id, usize::MAX)?,
            observations: records_of(conn, keys, patient_id, max_observations)?,
            notes: records_of(conn, keys, patient_id, usize::MAX)?,
        })
    }

    /// The draft notes `author_id` wrote, of every patient on this station (quarantined ones
    /// included: their drafts are still to be finished), oldest first. Notes pulled from the server
    /// carry no plaintext status, so those are opened to tell.
    pub fn drafts_by(&mut self, author_id: Uuid) -> Result<Vec<Note>> {
        let Store { conn, keys, .. } = self;
        let mut stmt = conn.prepare_cached(
            "SELECT id, patient_id, version, body FROM notes WHERE kind IN ('draft', '') ORDER BY sort_key, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, [u8; 16]>(0)?,
                r.get::<_, [u8; 16]>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, patient_id, version, body) = row?;
            let mut note: Note =
                keys.open(conn, Uuid::from_bytes(patient_id), Uuid::from_bytes(id), Note::FIELD, &body)?;
            if note.status == NoteStatus::Draft && note.author_id == author_id {
                note.version = version;
                out.push(note);
            }
        }
        Ok(out)
    }

    /// Seals `text` with the patient's key, bound to `(patient, record_id, field)`: for free text that
    /// goes into an audit entry's sealed `after` (e.g. the reason given for breaking the glass).
    pub fn seal_text(
        &mut self,
        patient_id: Uuid,
        record_id: Uuid,
        field: &str,
        text: &str,
    ) -> Result<Vec<u8>> {
        let Store { conn, keys, .. } = self;
        keys.seal(conn, patient_id, record_id, field, &text)
    }

    /// Adds the patient to `user_id`'s own list on this station, or takes them off it, with an
    /// audit entry in the same transaction. Returns whether the list changed.
    pub fn set_mine(
        &mut self,
        actor: &Actor,
        user_id: Uuid,
        patient_id: Uuid,
        mine: bool,
        now: Timestamp,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        if !row_exists(&tx, "SELECT 1 FROM patients WHERE id = ?1", patient_id)? {
            return Err(StoreError::PatientNotFound);
        }
        let changed = if mine {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO my_patients (user_id, patient_id, added_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![user_id.as_bytes(), patient_id.as_bytes(), now.0])?
        } else {
            tx.prepare_cached("DELETE FROM my_patients WHERE user_id = ?1 AND patient_id = ?2")?
                .execute(params![user_id.as_bytes(), patient_id.as_bytes()])?
        };
        if changed > 0 {
            let mut e =
                chartroom_audit::Event::new(now, if mine { "create" } else { "delete" }, "my_patients", "ok");
            e.resource_id = Some(patient_id.to_string());
            e.patient_ids = vec![patient_id];
            crate::audit::append_in(&tx, actor, e)?;
        }
        tx.commit()?;
        Ok(changed > 0)
    }

    /// The patients on `user_id`'s own list on this station.
    pub fn mine(&self, user_id: Uuid) -> Result<std::collections::HashSet<Uuid>> {
        let mut stmt = self.conn.prepare_cached("SELECT patient_id FROM my_patients WHERE user_id = ?1")?;
        let rows = stmt.query_map([user_id.as_bytes()], |r| r.get::<_, [u8; 16]>(0))?;
        let mut out = std::collections::HashSet::new();
        for row in rows {
            out.insert(Uuid::from_bytes(row?));
        }
        Ok(out)
    }

    /// The sealed body of a stored record, as it sits in the database.
    pub fn sealed_body<R: ChartRecord>(&self, id: Uuid) -> Result<Option<(Uuid, Vec<u8>)>> {
        let sql = format!("SELECT patient_id, body FROM {} WHERE id = ?1", R::TABLE);
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([id.as_bytes()], |r| Ok((Uuid::from_bytes(r.get(0)?), r.get(1)?)))
            .optional()?)
    }

    /// Opens a sealed body (e.g. one kept from before an eviction) with whatever key this store holds
    /// for the patient now.
    pub fn open_sealed<R: ChartRecord>(&mut self, patient_id: Uuid, id: Uuid, sealed: &[u8]) -> Result<R> {
        let Store { keys, conn, .. } = self;
        keys.open(conn, patient_id, id, R::FIELD, sealed)
    }

    /// Crypto-shreds a patient: deletes every row and the patient's key in one transaction, so that
    /// any copy of the sealed bytes (free pages, a WAL, a backup taken after this) can no longer be
    /// opened, even with the data key.
    pub fn evict_patient(&mut self, patient_id: Uuid, now: Timestamp) -> Result<()> {
        let tx = self.conn.transaction()?;
        if !shred_in(&tx, patient_id, now)? {
            return Err(StoreError::PatientNotFound);
        }
        tx.commit()?;
        self.forget_keys(&[patient_id])
    }

    /// After shredding patients: drops their cached keys (which wipes them from memory) and folds
    /// the WAL — whose old page images still hold the wrapped patient keys — into the (securely
    /// deleted) main file.
    pub(crate) fn forget_keys(&mut self, patient_ids: &[Uuid]) -> Result<()> {
        for id in patient_ids {
            self.keys.patients.remove(id);
        }
        if !patient_ids.is_empty() {
            self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Number of patients on this station.
    pub fn patient_count(&self) -> Result<u64> {
        Ok(self.conn.query_row("SELECT count(*) FROM patients", [], |r| r.get(0))?)
    }
}

/// `<database>.lock`, the file whose lock says who has the store open (0600).
fn open_lock(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    Ok(options.open(with_suffix(path, ".lock"))?)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Keys {
    /// The patient's key: from the cache, or unwrapped from the database with the data key.
    pub(crate) fn patient(&mut self, conn: &Connection, patient_id: Uuid) -> Result<&PatientKey> {
        if !self.patients.contains_key(&patient_id) {
            let wrapped: Option<Vec<u8>> = conn
                .prepare_cached("SELECT wrapped FROM patient_keys WHERE patient_id = ?1")?
                .query_row([patient_id.as_bytes()], |r| r.get(0))
                .optional()?;
            let Some(wrapped) = wrapped else {
                let shredded =
                    row_exists(conn, "SELECT 1 FROM shredded_patients WHERE patient_id = ?1", patient_id)?;
                return Err(if shredded { StoreError::PatientShredded } else { StoreError::PatientNotFound });
            };
            let key = Box::new(self.dek.unwrap_patient_key(patient_id, &wrapped)?);
            self.cache(patient_id, key);
        }
        self.patients.get(&patient_id).map(|k| &**k).ok_or(StoreError::PatientNotFound)
    }

    /// Keeps an unwrapped patient key for reuse. The cache is bounded: reading a 10,000-patient
    /// census must not leave 10,000 expanded keys in memory for the rest of the session (memory,
    /// and key material that need not be there); when full it is emptied (each key wiped) and
    /// keys are unwrapped again as they are used, which costs microseconds.
    pub(crate) fn cache(&mut self, patient_id: Uuid, key: Box<PatientKey>) {
        if self.patients.len() >= MAX_CACHED_PATIENT_KEYS && !self.patients.contains_key(&patient_id) {
            self.patients.clear();
        }
        self.patients.insert(patient_id, key);
    }

    /// Seals a record as JSON with its patient's key, bound to `(patient, record, field)`.
    pub(crate) fn seal<T: Serialize>(
        &mut self,
        conn: &Connection,
        patient_id: Uuid,
        record_id: Uuid,
        field: &str,
        value: &T,
    ) -> Result<Vec<u8>> {
        let key = self.patient(conn, patient_id)?;
        let json = zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(|_| StoreError::Decode)?);
        Ok(key.seal(&FieldPlace { patient_id, record_id, field }, &json)?)
    }

    /// Opens what [`Keys::seal`] sealed at the same place.
    pub(crate) fn open<T: serde::de::DeserializeOwned>(
        &mut self,
        conn: &Connection,
        patient_id: Uuid,
        record_id: Uuid,
        field: &str,
        sealed: &[u8],
    ) -> Result<T> {
        let key = self.patient(conn, patient_id)?;
        let json = key.open(&FieldPlace { patient_id, record_id, field }, sealed)?;
        serde_json::from_slice(&json).map_err(|_| StoreError::Decode)
    }
}

/// Deletes every row of a patient and the patient's key in the caller's transaction; returns whether
/// the patient was there. The caller then calls [`Store::forget_keys`].
pub(crate) fn shred_in(tx: &Transaction<'_>, patient_id: Uuid, now: Timestamp) -> Result<bool> {
    let id = patient_id.as_bytes();
    for t in crate::sync::RECORD_TABLES {
        tx.execute(&format!("DELETE FROM {} WHERE patient_id = ?1", t.table), [id])?;
    }
    let found = tx.execute("DELETE FROM patients WHERE id = ?1", [id])?;
    tx.execute("DELETE FROM patient_keys WHERE patient_id = ?1", [id])?;
    tx.execute("DELETE FROM quarantine WHERE patient_id = ?1", [id])?;
    tx.execute("DELETE FROM conflicts WHERE patient_id = ?1", [id])?;
    tx.execute("DELETE FROM my_patients WHERE patient_id = ?1", [id])?;
    if found > 0 {
        tx.execute(
            "INSERT OR REPLACE INTO shredded_patients (patient_id, shredded_at) VALUES (?1, ?2)",
            params![id, now.0],
        )?;
    }
    Ok(found > 0)
}

/// Whether `sql` (a constant query with one id parameter) returns a row.
pub(crate) fn row_exists(conn: &Connection, sql: &str, id: Uuid) -> Result<bool> {
    Ok(conn.prepare_cached(sql)?.query_row([id.as_bytes()], |_| Ok(())).optional()?.is_some())
}

/// Stores a patient (creating the patient's key on first sight); returns the sealed body.
pub(crate) fn put_patient_in(tx: &Transaction<'_>, keys: &mut Keys, patient: &Patient) -> Result<Vec<u8>> {
    patient.validate()?;
    let id = patient.id;
    if !row_exists(tx, "SELECT 1 FROM patient_keys WHERE patient_id = ?1", id)? {
        let key = PatientKey::generate();
        tx.prepare_cached("INSERT INTO patient_keys (patient_id, wrapped) VALUES (?1, ?2)")?
            .execute(params![id.as_bytes(), keys.dek.wrap_patient_key(id, &key)])?;
        tx.prepare_cached("DELETE FROM shredded_patients WHERE patient_id = ?1")?.execute([id.as_bytes()])?;
        keys.cache(id, Box::new(key));
    }
    let body = keys.seal(tx, id, id, PATIENT_FIELD, patient)?;
    let mrn_index = keys.dek.blind_index(MRN_INDEX_DOMAIN, patient.mrn.trim());
    tx.prepare_cached(
        "INSERT INTO patients (id, mrn_index, unit, bed, version, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET mrn_index = ?2, unit = ?3, bed = ?4, version = ?5, body = ?6",
    )?
    .execute(params![
        id.as_bytes(),
        &mrn_index[..],
        patient.unit,
        patient.bed,
        patient.version,
        &body
    ])?;
    Ok(body)
}

/// Stores one record with its `create`/`update` audit entry (sealed record before and after) in the
/// caller's transaction; returns the version it replaced (0 for a new record).
pub(crate) fn put_audited_in<R: Synced>(
    tx: &Transaction<'_>,
    keys: &mut Keys,
    actor: &Actor,
    r: &R,
    now: Timestamp,
) -> Result<i64> {
    let before: Option<(Vec<u8>, i64)> = tx
        .prepare_cached(&format!("SELECT body, version FROM {} WHERE id = ?1", R::KIND))?
        .query_row([r.record_id().as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let after = r.put_in(tx, keys)?;
    let action = if before.is_some() { "update" } else { "create" };
    let mut e = chartroom_audit::Event::new(now, action, R::KIND, "ok");
    e.resource_id = Some(r.record_id().to_string());
    e.patient_ids = vec![r.owner()];
    let base_version = before.as_ref().map_or(0, |(_, v)| *v);
    e.before = before.map(|(body, _)| body);
    e.after = Some(after);
    crate::audit::append_in(tx, actor, e)?;
    Ok(base_version)
}

/// Stores a whole chart (an import: nothing local to keep).
fn put_chart_in(tx: &Transaction<'_>, keys: &mut Keys, chart: &Chart) -> Result<()> {
    put_patient_in(tx, keys, &chart.patient)?;
    for r in &chart.allergies {
        put_record_in(tx, keys, r)?;
    }
    for r in &chart.conditions {
        put_record_in(tx, keys, r)?;
    }
    for r in &chart.medications {
        put_record_in(tx, keys, r)?;
    }
    for r in &chart.observations {
        put_record_in(tx, keys, r)?;
    }
    for r in &chart.notes {
        put_record_in(tx, keys, r)?;
    }
    Ok(())
}

/// Stores one record; returns its sealed body.
pub(crate) fn put_record_in<R: ChartRecord>(
    tx: &Transaction<'_>,
    keys: &mut Keys,
    record: &R,
) -> Result<Vec<u8>> {
    record.validate()?;
    let (pid, id) = (record.patient_id(), record.id());
    let body = keys.seal(tx, pid, id, R::FIELD, record)?;
    let sql = format!(
        "INSERT INTO {} (id, patient_id, kind, sort_key, version, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET kind = ?3, sort_key = ?4, version = ?5, body = ?6
         WHERE patient_id = ?2",
        R::TABLE
    );
    let changed = tx.prepare_cached(&sql)?.execute(params![
        id.as_bytes(),
        pid.as_bytes(),
        record.kind(),
        record.sort_key(),
        record.version(),
        body
    ])?;
    if changed == 0 {
        // The id exists under another patient: never move a record between patients silently.
        return Err(StoreError::Database("record id already belongs to another patient".into()));
    }
    Ok(body)
}

fn records_of<R: ChartRecord>(
    conn: &Connection,
    keys: &mut Keys,
    patient_id: Uuid,
    limit: usize,
) -> Result<Vec<R>> {
    let sql = format!(
        "SELECT id, version, body FROM {} WHERE patient_id = ?1 ORDER BY sort_key DESC, id LIMIT ?2",
        R::TABLE
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![patient_id.as_bytes(), limit], |r| {
        Ok((r.get::<_, [u8; 16]>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, version, body) = row?;
        let mut rec: R = keys.open(conn, patient_id, Uuid::from_bytes(id), R::FIELD, &body)?;
        rec.set_version(version);
        out.push(rec);
    }
    Ok(out)
}
