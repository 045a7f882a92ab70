//! The store's side of sync (DESIGN §7): the outbox of local changes and what the server made of
//! each, pulled pages, conflicts (the server's version kept beside the local one until a clinician
//! decides) and patients that leave the station's units (crypto-shredded, or quarantined while
//! changes to them are still unsynced).
//!
//! Every step that changes clinical data writes its audit entry in the same transaction.

use std::collections::HashMap;

use chartroom_crypto::{FieldPlace, PatientKey};
use chartroom_domain::{Allergy, Condition, MedicationRequest, Note, Observation, Patient, Timestamp};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::Actor;
use crate::records::ChartRecord;
use crate::store::{
    put_audited_in, put_patient_in, put_record_in, row_exists, shred_in, Keys, MRN_INDEX_DOMAIN,
    PATIENT_FIELD,
};
use crate::{Store, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// A record that travels through sync: the clinical records, and the patient row itself
/// (demographics and placement).
pub trait Synced: Serialize + DeserializeOwned {
    /// The table (a constant of this crate, never user input); also the outbox `kind`.
    const KIND: &'static str;
    /// The field name bound into the sealed body's AAD.
    const SEAL_FIELD: &'static str;
    fn record_id(&self) -> Uuid;
    /// The patient the record belongs to (the patient's own id for the patient row).
    fn owner(&self) -> Uuid;
    fn synced_version(&self) -> i64;
    fn set_synced_version(&mut self, version: i64);
    /// Writes the row in the caller's transaction; returns the sealed body.
    #[doc(hidden)]
    fn put_in(&self, tx: &Transaction<'_>, keys: &mut Keys) -> Result<Vec<u8>>;
    /// Reads the stored row.
    #[doc(hidden)]
    fn load(store: &mut Store, id: Uuid) -> Result<Self>;
}

impl<R: ChartRecord> Synced for R {
    const KIND: &'static str = <R as ChartRecord>::TABLE;
    const SEAL_FIELD: &'static str = <R as ChartRecord>::FIELD;
    fn record_id(&self) -> Uuid {
        self.id()
    }
    fn owner(&self) -> Uuid {
        self.patient_id()
    }
    fn synced_version(&self) -> i64 {
        self.version()
    }
    fn set_synced_version(&mut self, version: i64) {
        self.set_version(version);
    }
    fn put_in(&self, tx: &Transaction<'_>, keys: &mut Keys) -> Result<Vec<u8>> {
        put_record_in(tx, keys, self)
    }
    fn load(store: &mut Store, id: Uuid) -> Result<Self> {
        let (patient_id, sealed) = store.sealed_body::<R>(id)?.ok_or(StoreError::PatientNotFound)?;
        let version: i64 = store
            .conn
            .prepare_cached(&format!("SELECT version FROM {} WHERE id = ?1", <R as ChartRecord>::TABLE))?
            .query_row([id.as_bytes()], |r| r.get(0))?;
        let mut r: R = store.open_sealed(patient_id, id, &sealed)?;
        r.set_version(version);
        Ok(r)
    }
}

impl Synced for Patient {
    const KIND: &'static str = "patients";
    const SEAL_FIELD: &'static str = PATIENT_FIELD;
    fn record_id(&self) -> Uuid {
        self.id
    }
    fn owner(&self) -> Uuid {
        self.id
    }
    fn synced_version(&self) -> i64 {
        self.version
    }
    fn set_synced_version(&mut self, version: i64) {
        self.version = version;
    }
    fn put_in(&self, tx: &Transaction<'_>, keys: &mut Keys) -> Result<Vec<u8>> {
        put_patient_in(tx, keys, self)
    }
    fn load(store: &mut Store, id: Uuid) -> Result<Self> {
        Ok(store.chart(id, 0)?.patient)
    }
}

/// A patient as the server sent it: placement in the clear, the `Patient` sealed under its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledPatient {
    pub id: Uuid,
    pub unit: String,
    pub bed: String,
    pub version: i64,
    pub body: Vec<u8>,
}

/// A record as the server sent it: sealed under its patient's key and bound to the same place the
/// station binds it to, so it is stored as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledRecord {
    pub id: Uuid,
    pub patient_id: Uuid,
    /// The server's kind: `allergy`, `condition`, `medication`, `observation` or `note`.
    pub kind: String,
    pub sort_key: i64,
    pub version: i64,
    pub body: Vec<u8>,
}

/// One page from the server's pull, as the store applies it.
#[derive(Debug)]
pub struct PulledPage {
    /// Patients new or changed as a whole.
    pub patients: Vec<PulledPatient>,
    pub records: Vec<PulledRecord>,
    /// The keys of the patients named in this page (unwrapped by the caller).
    /// Boxed from the moment they are unwrapped, so that moving them never leaves an unwiped copy.
    pub keys: Vec<(Uuid, Box<PatientKey>)>,
    /// Patients that left what this station may hold.
    pub left: Vec<Uuid>,
    /// The server's cursor after this page.
    pub cursor: i64,
    /// Nothing more to pull after this page.
    pub complete: bool,
}

/// What applying a pulled page did besides storing records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PullApplied {
    /// Records changed on the server while a local change to them is unsynced: both kept.
    pub conflicts: usize,
    /// Patients that left the station's units and were crypto-shredded.
    pub shredded: usize,
    /// Patients that left while local changes to them are unsynced: hidden, kept until pushed.
    pub quarantined: usize,
}

/// What the server made of a pushed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    Accepted {
        version: i64,
    },
    /// `conflict` or `rejected`, with why.
    Kept {
        state: &'static str,
        reason: String,
    },
}

/// A local change waiting for the server (no PHI: ids, kinds, versions and states only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub change_id: Uuid,
    /// The table of the changed record (`observations`, `notes`, `patients`, …).
    pub kind: String,
    pub record_id: Uuid,
    pub patient_id: Uuid,
    /// The server version the change was made on (0: a new record).
    pub base_version: i64,
    pub created_at: Timestamp,
    /// `pending`, `conflict` or `rejected` (with `reason`): never dropped.
    pub state: String,
    pub reason: Option<String>,
    /// The patient left this station's units; the change is still pushed (the server decides).
    pub quarantined: bool,
    /// Who made the change: it is pushed in their session only, so the server attributes it to them.
    pub user_id: Option<Uuid>,
}

/// What the sync indicator shows (counts and times only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    pub pending: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub quarantined_patients: u64,
    pub first_sync_complete: bool,
    /// When a whole sync (push, pull, audit upload) last succeeded.
    pub last_sync_at: Option<Timestamp>,
    pub cursor: i64,
}

/// How a clinician settled a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    KeepMine,
    TakeTheirs,
    Merge,
}

impl Resolution {
    fn audit_action(self) -> &'static str {
        match self {
            Resolution::KeepMine => "conflict_keep_mine",
            Resolution::TakeTheirs => "conflict_take_theirs",
            Resolution::Merge => "conflict_merge",
        }
    }
}

/// The largest pull page a station asks for (change numbers).
pub const MAX_PULL_LIMIT: usize = 200;

/// A table a change can touch: its name (a constant of this crate, never user input; also the
/// outbox `kind`), the field its sealed bodies are bound to, and the server's name for the kind.
#[derive(Clone, Copy)]
pub(crate) struct SyncedTable {
    pub(crate) table: &'static str,
    field: &'static str,
    server_kind: &'static str,
}

const fn synced<R: Synced>(server_kind: &'static str) -> SyncedTable {
    SyncedTable { table: R::KIND, field: R::SEAL_FIELD, server_kind }
}

/// The clinical record tables (each row has a `patient_id`).
pub(crate) const RECORD_TABLES: [SyncedTable; 5] = [
    synced::<Observation>("observation"),
    synced::<Note>("note"),
    synced::<Allergy>("allergy"),
    synced::<Condition>("condition"),
    synced::<MedicationRequest>("medication"),
];

/// The patient row itself (demographics, placement).
const PATIENT_TABLE: SyncedTable = synced::<Patient>("patient");

/// The synced table called `table`.
fn synced_table(table: &str) -> Result<SyncedTable> {
    RECORD_TABLES.into_iter().chain([PATIENT_TABLE]).find(|t| t.table == table).ok_or(StoreError::Decode)
}

/// The record table of a kind as the server names it.
fn table_of(server_kind: &str) -> Result<&'static str> {
    RECORD_TABLES
        .into_iter()
        .find(|t| t.server_kind == server_kind)
        .map(|t| t.table)
        .ok_or(StoreError::Decode)
}

impl Store {
    /// A clinician's local change: the records, one audit entry each and one outbox entry each
    /// (change id, the version it was based on) — all in one transaction, so that after a crash a
    /// change is either wholly there, to be pushed, or not there at all.
    pub fn record_changes<R: Synced>(
        &mut self,
        actor: &Actor,
        records: &[R],
        now: Timestamp,
    ) -> Result<Vec<Uuid>> {
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        let mut change_ids = Vec::with_capacity(records.len());
        for r in records {
            let base_version = put_audited_in(&tx, keys, actor, r, now)?;
            let place = (R::KIND, r.record_id(), r.owner());
            change_ids.push(queue_in(&tx, place, actor.user_id, base_version, now)?);
        }
        tx.commit()?;
        Ok(change_ids)
    }

    /// Changes not yet accepted by the server, oldest first (pending, conflicts and refusals).
    pub fn outbox(&self) -> Result<Vec<OutboxEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.change_id, o.kind, o.record_id, o.patient_id, o.base_version, o.created_at, o.state,
                    o.reason, q.patient_id IS NOT NULL, o.user_id
             FROM outbox o LEFT JOIN quarantine q ON q.patient_id = o.patient_id ORDER BY o.seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OutboxEntry {
                change_id: Uuid::from_bytes(r.get(0)?),
                kind: r.get(1)?,
                record_id: Uuid::from_bytes(r.get(2)?),
                patient_id: Uuid::from_bytes(r.get(3)?),
                base_version: r.get(4)?,
                created_at: Timestamp(r.get(5)?),
                state: r.get(6)?,
                reason: r.get(7)?,
                quarantined: r.get(8)?,
                user_id: r.get::<_, Option<[u8; 16]>>(9)?.map(Uuid::from_bytes),
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The sequence number of the newest outbox entry (0: empty).
    pub fn outbox_seq(&self) -> Result<i64> {
        Ok(self.conn.query_row("SELECT coalesce(max(seq), 0) FROM outbox", [], |r| r.get(0))?)
    }

    /// The changes `user` pushes now: their pending ones, at most one per record (a later change
    /// to the same record waits for the server's answer to the earlier one, which gives it its base
    /// version), and none queued behind a conflict, a refusal or another user's change of the same
    /// record.
    pub fn sendable(&self, user: Uuid) -> Result<Vec<OutboxEntry>> {
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .outbox()?
            .into_iter()
            .filter(|e| {
                seen.insert(e.record_id) && e.state == "pending" && e.user_id.is_none_or(|u| u == user)
            })
            .collect())
    }

    /// One stored record by id, opened (for pushing it to the server).
    pub fn get<R: Synced>(&mut self, id: Uuid) -> Result<R> {
        R::load(self, id)
    }

    /// Settles a pushed change as the server answered: `Accepted(version)` removes it from the outbox,
    /// gives the record its server version and makes that the base of the record's next queued
    /// change; `Kept(state, reason)` keeps it, marked, with the reason (never dropped).
    pub fn settle_change(&mut self, change_id: Uuid, settlement: Settlement) -> Result<()> {
        self.settle_changes(&[(change_id, settlement)], 0)
    }

    /// Settles a whole push response in one transaction (as [`Store::settle_change`] each). The
    /// records were read when the outbox's last change was `sent_upto` ([`Store::outbox_seq`]), so
    /// an accepted change also settles its author's later changes to the same record up to there:
    /// their content went with it.
    pub fn settle_changes(&mut self, settled: &[(Uuid, Settlement)], sent_upto: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        for (change_id, settlement) in settled {
            settle_in(&tx, *change_id, settlement, sent_upto)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The last audit sequence number the server has stored (0: none yet).
    pub fn audit_uploaded(&self) -> Result<u64> {
        Ok(self.state_value("audit_uploaded")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Records that the server holds the chain up to `seq`.
    pub fn set_audit_uploaded(&mut self, seq: u64) -> Result<()> {
        self.set_state_value("audit_uploaded", &seq.to_string())
    }

    /// Records that a whole sync succeeded at `now`.
    pub fn set_last_sync(&mut self, now: Timestamp) -> Result<()> {
        self.set_state_value("last_sync_at", &now.0.to_string())
    }

    /// The pull cursor (0 before the first sync) and whether a first sync has completed.
    pub fn sync_state(&self) -> Result<(i64, bool)> {
        let cursor = self.state_value("cursor")?.and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((cursor, self.state_value("first_sync_complete")?.is_some()))
    }

    /// How many change numbers to ask for per pull page: halved after a page failed to arrive
    /// (a flaky link that cuts long answers still gets through, page by smaller page), grown back
    /// after each page that did.
    pub fn pull_limit(&self) -> Result<usize> {
        Ok(self.state_value("pull_limit")?.and_then(|v| v.parse().ok()).unwrap_or(MAX_PULL_LIMIT))
    }

    pub fn set_pull_limit(&mut self, limit: usize) -> Result<()> {
        self.set_state_value("pull_limit", &limit.clamp(1, MAX_PULL_LIMIT).to_string())
    }

    /// Forgets the pull cursor and that a first sync completed (the server no longer knows the
    /// cursor): the next pull starts from the beginning. Local changes stay queued.
    pub fn restart_first_sync(&mut self) -> Result<()> {
        self.conn.execute("DELETE FROM sync_state WHERE key IN ('cursor', 'first_sync_complete')", [])?;
        Ok(())
    }

    /// Counts for the sync indicator.
    pub fn sync_status(&self) -> Result<SyncStatus> {
        let (cursor, first_sync_complete) = self.sync_state()?;
        let count =
            |sql: &str| -> Result<u64> { Ok(self.conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?) };
        Ok(SyncStatus {
            pending: count("SELECT count(*) FROM outbox WHERE state = 'pending'")?,
            conflicts: count("SELECT count(*) FROM outbox WHERE state = 'conflict'")?,
            rejected: count("SELECT count(*) FROM outbox WHERE state = 'rejected'")?,
            quarantined_patients: count("SELECT count(*) FROM quarantine")?,
            first_sync_complete,
            last_sync_at: self.state_value("last_sync_at")?.and_then(|v| v.parse().ok()).map(Timestamp),
            cursor,
        })
    }

    fn state_value(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM sync_state WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    fn set_state_value(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
            )?
            .execute([key, value])?;
        Ok(())
    }

    /// Applies one page pulled from the server — patients' keys, whole patients, records and
    /// patients that left — with its audit entry and the new cursor, in one transaction (an
    /// interrupted first sync resumes from the last page). Records arrive sealed and are stored as
    /// they are (each patient's body is opened once, for its MRN index). A record with an unsynced
    /// local change is not overwritten: a newer server version is kept beside it as a conflict. A
    /// patient that left is crypto-shredded, or quarantined while local changes to it are unsynced.
    pub fn apply_pull(&mut self, actor: &Actor, page: PulledPage, now: Timestamp) -> Result<PullApplied> {
        let PulledPage { patients, records, keys: patient_keys, left, cursor, complete } = page;
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        let mut applied = PullApplied::default();
        // The base version of each record's oldest unsynced change (read once per page).
        let mut local: HashMap<Uuid, i64> = HashMap::new();
        for row in tx
            .prepare_cached("SELECT record_id, base_version FROM outbox ORDER BY seq")?
            .query_map([], |r| Ok((Uuid::from_bytes(r.get(0)?), r.get(1)?)))?
        {
            let (id, base) = row?;
            local.entry(id).or_insert(base);
        }
        let mut touched: Vec<Uuid> = patient_keys.iter().map(|(id, _)| *id).collect();
        for (id, key) in patient_keys {
            // A station holds the server's key for each patient; one it made itself (a profile from
            // before it synced) is replaced, after resealing what it sealed, so nothing is lost.
            let held = match keys.patient(&tx, id) {
                Ok(k) => Some(k.id()),
                Err(StoreError::PatientNotFound | StoreError::PatientShredded) => None,
                Err(e) => return Err(e),
            };
            if held.is_some_and(|k| k != key.id()) {
                reseal_patient(&tx, keys, id, &key)?;
            }
            tx.prepare_cached(
                "INSERT INTO patient_keys (patient_id, wrapped) VALUES (?1, ?2)
                 ON CONFLICT(patient_id) DO UPDATE SET wrapped = ?2",
            )?
            .execute(params![id.as_bytes(), keys.dek.wrap_patient_key(id, &key)])?;
            tx.prepare_cached("DELETE FROM shredded_patients WHERE patient_id = ?1")?
                .execute([id.as_bytes()])?;
            keys.cache(id, key);
        }
        let at = Incoming { tx: &tx, local: &local, now };
        for p in &patients {
            let patient: Patient = keys.open(&tx, p.id, p.id, PATIENT_FIELD, &p.body)?;
            if patient.id != p.id {
                return Err(StoreError::Decode);
            }
            // Back on this station's units: out of quarantine, and changes the server refused as
            // out of scope are pushed again.
            if tx
                .prepare_cached("DELETE FROM quarantine WHERE patient_id = ?1")?
                .execute([p.id.as_bytes()])?
                > 0
            {
                tx.prepare_cached(
                    "UPDATE outbox SET state = 'pending', reason = NULL
                     WHERE patient_id = ?1 AND state = 'rejected' AND reason LIKE 'access.out_of_scope%'",
                )?
                .execute([p.id.as_bytes()])?;
            }
            if at.stash_if_local(p.id, "patients", p.id, p.version, &p.body)? {
                applied.conflicts += 1;
            }
            if local.contains_key(&p.id) {
                continue;
            }
            tx.prepare_cached(
                "INSERT INTO patients (id, mrn_index, unit, bed, version, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET mrn_index = ?2, unit = ?3, bed = ?4, version = ?5, body = ?6",
            )?
            .execute(params![
                p.id.as_bytes(),
                &keys.dek.blind_index(MRN_INDEX_DOMAIN, patient.mrn.trim())[..],
                p.unit,
                p.bed,
                p.version,
                p.body
            ])?;
        }
        let mut present: HashMap<Uuid, bool> = patients.iter().map(|p| (p.id, true)).collect();
        for r in &records {
            let table = table_of(&r.kind)?;
            if at.stash_if_local(r.id, table, r.patient_id, r.version, &r.body)? {
                applied.conflicts += 1;
            }
            if local.contains_key(&r.id) {
                continue;
            }
            // A record of a patient not (yet) on this station comes again with the whole patient.
            let here = match present.get(&r.patient_id) {
                Some(&here) => here,
                None => {
                    let here = row_exists(&tx, "SELECT 1 FROM patients WHERE id = ?1", r.patient_id)?;
                    present.insert(r.patient_id, here);
                    here
                }
            };
            if !here {
                continue;
            }
            let changed = tx
                .prepare_cached(&format!(
                    "INSERT INTO {table} (id, patient_id, kind, sort_key, version, body) VALUES (?1, ?2, '', ?3, ?4, ?5)
                     ON CONFLICT(id) DO UPDATE SET sort_key = ?3, version = ?4, body = ?5 WHERE patient_id = ?2"
                ))?
                .execute(params![r.id.as_bytes(), r.patient_id.as_bytes(), r.sort_key, r.version, r.body])?;
            if changed == 0 {
                return Err(StoreError::Database("record id already belongs to another patient".into()));
            }
        }
        let mut shredded = Vec::new();
        for &id in &left {
            if !has_unsynced(&tx, id)? {
                if shred_in(&tx, id, now)? {
                    shredded.push(id);
                }
            } else if tx
                .prepare_cached("INSERT OR IGNORE INTO quarantine (patient_id, since) VALUES (?1, ?2)")?
                .execute(params![id.as_bytes(), now.0])?
                > 0
            {
                applied.quarantined += 1;
            }
        }
        applied.shredded = shredded.len();
        touched.extend(&left);
        touched.sort();
        touched.dedup();
        let mut e = chartroom_audit::Event::new(now, "sync_pull", "sync", "ok");
        e.resource_id = Some(format!(
            "cursor {cursor}; {} conflicts, {} shredded, {} quarantined",
            applied.conflicts, applied.shredded, applied.quarantined
        ));
        e.patient_ids = touched;
        crate::audit::append_in(&tx, actor, e)?;
        set_in(&tx, "cursor", &cursor.to_string())?;
        if complete {
            tx.execute(
                "INSERT OR IGNORE INTO sync_state (key, value) VALUES ('first_sync_complete', '1')",
                [],
            )?;
        }
        tx.commit()?;
        self.forget_keys(&shredded)?;
        Ok(applied)
    }

    /// Gives up a change the server refused for good (`rejected`) that created a record the server
    /// never had: the outbox entry and the local record go, in one transaction with an audit entry
    /// that keeps the record (sealed) as it was. The only way a change leaves the outbox other than
    /// the server accepting it — deliberate, attributed and recorded, never silent.
    pub fn discard_change(&mut self, actor: &Actor, change_id: Uuid, now: Timestamp) -> Result<OutboxEntry> {
        let entry = self
            .outbox()?
            .into_iter()
            .find(|e| e.change_id == change_id)
            .ok_or(StoreError::NotDiscardable)?;
        if entry.state != "rejected" || entry.base_version != 0 {
            return Err(StoreError::NotDiscardable);
        }
        let table = synced_table(&entry.kind)?.table;
        let tx = self.conn.transaction()?;
        let others: i64 = tx
            .prepare_cached("SELECT count(*) FROM outbox WHERE record_id = ?1 AND change_id != ?2")?
            .query_row(params![entry.record_id.as_bytes(), change_id.as_bytes()], |r| r.get(0))?;
        if others > 0 || table == <Patient as Synced>::KIND {
            return Err(StoreError::NotDiscardable);
        }
        let body: Option<Vec<u8>> = tx
            .prepare_cached(&format!("SELECT body FROM {table} WHERE id = ?1"))?
            .query_row([entry.record_id.as_bytes()], |r| r.get(0))
            .optional()?;
        tx.prepare_cached(&format!("DELETE FROM {table} WHERE id = ?1"))?
            .execute([entry.record_id.as_bytes()])?;
        tx.prepare_cached("DELETE FROM outbox WHERE change_id = ?1")?.execute([change_id.as_bytes()])?;
        let mut e = chartroom_audit::Event::new(now, "discard_change", table, "ok");
        e.resource_id = Some(entry.record_id.to_string());
        e.patient_ids = vec![entry.patient_id];
        e.before = body;
        crate::audit::append_in(&tx, actor, e)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Crypto-shreds quarantined patients none of whose changes is still unsynced (audited);
    /// returns how many.
    pub fn release_quarantine(&mut self, actor: &Actor, now: Timestamp) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let released: Vec<Uuid> = tx
            .prepare_cached(
                "SELECT patient_id FROM quarantine q
                 WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.patient_id = q.patient_id)",
            )?
            .query_map([], |r| r.get::<_, [u8; 16]>(0).map(Uuid::from_bytes))?
            .collect::<std::result::Result<_, _>>()?;
        for &id in &released {
            shred_in(&tx, id, now)?;
        }
        if !released.is_empty() {
            let mut e = chartroom_audit::Event::new(now, "shred", "patient", "ok");
            e.resource_id = Some("left this station's units; changes synced".into());
            e.patient_ids = released.clone();
            crate::audit::append_in(&tx, actor, e)?;
        }
        tx.commit()?;
        self.forget_keys(&released)?;
        Ok(released.len())
    }

    /// The local record and the server's version of it, when they are in conflict.
    pub fn conflict<R: Synced>(&mut self, record_id: Uuid) -> Result<Option<(R, R)>> {
        let row: Option<([u8; 16], i64, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT patient_id, their_version, body FROM conflicts WHERE record_id = ?1 AND kind = ?2",
            )?
            .query_row(params![record_id.as_bytes(), R::KIND], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((patient_id, their_version, body)) = row else { return Ok(None) };
        let Store { conn, keys, .. } = self;
        let mut theirs: R = keys.open(conn, Uuid::from_bytes(patient_id), record_id, R::SEAL_FIELD, &body)?;
        theirs.set_synced_version(their_version);
        let mine = R::load(self, record_id)?;
        Ok(Some((mine, theirs)))
    }

    /// Settles a conflict on `record_id`: `TakeTheirs` stores the server's version and drops the
    /// local changes to the record; `KeepMine`/`Merge` store `chosen` (the local version, or a merge
    /// of both) on top of the server's version and queue it as a new change. Audited with both
    /// versions; returns the new change id, if one was queued.
    pub fn resolve_conflict<R: Synced>(
        &mut self,
        actor: &Actor,
        record_id: Uuid,
        how: Resolution,
        chosen: Option<R>,
        now: Timestamp,
    ) -> Result<Option<Uuid>> {
        let (mine, theirs) = self.conflict::<R>(record_id)?.ok_or(StoreError::NoConflict)?;
        let their_version = theirs.synced_version();
        let mut result = match (how, chosen) {
            (Resolution::TakeTheirs, _) => theirs,
            (_, Some(c)) => c,
            (_, None) => mine,
        };
        if result.record_id() != record_id {
            return Err(StoreError::Database("the resolution names another record".into()));
        }
        result.set_synced_version(their_version);
        let Store { conn, keys, .. } = self;
        let tx = conn.transaction()?;
        let before: Vec<u8> = tx
            .prepare_cached(&format!("SELECT body FROM {} WHERE id = ?1", R::KIND))?
            .query_row([record_id.as_bytes()], |r| r.get(0))?;
        let after = result.put_in(&tx, keys)?;
        // The resolver's changes to the record; another user's later change stays (and is pushed in
        // their session, on the version this resolution produces).
        tx.execute(
            "DELETE FROM outbox WHERE record_id = ?1 AND (user_id IS NULL OR user_id IS ?2)",
            params![record_id.as_bytes(), actor.user_id.map(|u| u.into_bytes())],
        )?;
        tx.execute("DELETE FROM conflicts WHERE record_id = ?1", [record_id.as_bytes()])?;
        let queued = match how {
            Resolution::TakeTheirs => None,
            _ => {
                Some(queue_in(&tx, (R::KIND, record_id, result.owner()), actor.user_id, their_version, now)?)
            }
        };
        let mut e = chartroom_audit::Event::new(now, how.audit_action(), R::KIND, "ok");
        e.resource_id = Some(record_id.to_string());
        e.patient_ids = vec![result.owner()];
        e.before = Some(before);
        e.after = Some(after);
        crate::audit::append_in(&tx, actor, e)?;
        tx.commit()?;
        Ok(queued)
    }
}

/// Settles one pushed change in the caller's transaction.
fn settle_in(tx: &Transaction<'_>, change_id: Uuid, settlement: &Settlement, sent_upto: i64) -> Result<()> {
    let row: Option<(String, [u8; 16], Option<Vec<u8>>)> = tx
        .prepare_cached("SELECT kind, record_id, user_id FROM outbox WHERE change_id = ?1")?
        .query_row([change_id.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((kind, record_id, user)) = row else { return Ok(()) };
    match settlement {
        Settlement::Accepted { version } => {
            let table = synced_table(&kind)?.table;
            tx.prepare_cached(&format!("UPDATE {table} SET version = ?1 WHERE id = ?2"))?
                .execute(params![version, &record_id[..]])?;
            tx.prepare_cached("DELETE FROM outbox WHERE change_id = ?1")?.execute([change_id.as_bytes()])?;
            tx.prepare_cached(
                "DELETE FROM outbox WHERE record_id = ?1 AND state = 'pending' AND seq <= ?2 AND user_id IS ?3",
            )?
            .execute(params![&record_id[..], sent_upto, user])?;
            tx.prepare_cached(
                "UPDATE outbox SET base_version = ?1 WHERE record_id = ?2 AND state = 'pending'",
            )?
            .execute(params![version, &record_id[..]])?;
            // A "theirs" at or below this version was this very change coming back in a pull.
            tx.prepare_cached("DELETE FROM conflicts WHERE record_id = ?1 AND their_version <= ?2")?
                .execute(params![&record_id[..], version])?;
            // A newer "theirs" with nothing local left to weigh against it (this change was applied
            // before, its answer lost, and the server moved on since): it is simply the record now.
            let left_here: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM outbox WHERE record_id = ?1)")?
                .query_row([&record_id[..]], |r| r.get(0))?;
            if !left_here && table != <Patient as Synced>::KIND {
                let newer: Option<(i64, Vec<u8>)> = tx
                    .prepare_cached("SELECT their_version, body FROM conflicts WHERE record_id = ?1")?
                    .query_row([&record_id[..]], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((their_version, body)) = newer {
                    tx.prepare_cached(&format!("UPDATE {table} SET version = ?1, body = ?2 WHERE id = ?3"))?
                        .execute(params![their_version, body, &record_id[..]])?;
                    tx.prepare_cached("DELETE FROM conflicts WHERE record_id = ?1")?
                        .execute([&record_id[..]])?;
                }
            }
        }
        Settlement::Kept { state, reason } => {
            tx.prepare_cached("UPDATE outbox SET state = ?1, reason = ?2 WHERE change_id = ?3")?
                .execute(params![state, reason, change_id.as_bytes()])?;
        }
    }
    Ok(())
}

/// Queues a change to `(table, record, patient)` by `user` in the outbox (caller's transaction);
/// returns its new change id.
fn queue_in(
    tx: &Transaction<'_>,
    (table, record_id, patient_id): (&str, Uuid, Uuid),
    user: Option<Uuid>,
    base_version: i64,
    now: Timestamp,
) -> Result<Uuid> {
    let change_id = Uuid::now_v7();
    tx.prepare_cached(
        "INSERT INTO outbox (change_id, kind, record_id, patient_id, base_version, created_at, user_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        change_id.as_bytes(),
        table,
        record_id.as_bytes(),
        patient_id.as_bytes(),
        base_version,
        now.0,
        user.map(|u| u.into_bytes())
    ])?;
    Ok(change_id)
}

fn set_in(tx: &Transaction<'_>, key: &str, value: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO sync_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
    )?
    .execute([key, value])?;
    Ok(())
}

/// Whether the station has changes to this patient the server has not accepted.
fn has_unsynced(tx: &Transaction<'_>, patient_id: Uuid) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM outbox WHERE patient_id = ?1 LIMIT 1")?
        .query_row([patient_id.as_bytes()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Re-seals every sealed value of a patient (the patient row, records, conflicts) from the key the
/// station holds to `new` (caller's transaction).
fn reseal_patient(tx: &Transaction<'_>, keys: &mut Keys, patient_id: Uuid, new: &PatientKey) -> Result<()> {
    let old = keys.patient(tx, patient_id)?;
    let mut rows: Vec<(&'static str, &'static str, Uuid, Vec<u8>)> = Vec::new();
    let mut collect = |table: &'static str, field: &'static str, sql: &str| -> Result<()> {
        let mut stmt = tx.prepare(sql)?;
        for row in
            stmt.query_map([patient_id.as_bytes()], |r| Ok((Uuid::from_bytes(r.get(0)?), r.get(1)?)))?
        {
            let (id, body) = row?;
            rows.push((table, field, id, body));
        }
        Ok(())
    };
    for t in RECORD_TABLES.into_iter().chain([PATIENT_TABLE]) {
        let owner = if t.table == PATIENT_TABLE.table { "id" } else { "patient_id" };
        collect(t.table, t.field, &format!("SELECT id, body FROM {} WHERE {owner} = ?1", t.table))?;
    }
    let mut conflicts = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT record_id, kind, body FROM conflicts WHERE patient_id = ?1")?;
        for row in stmt.query_map([patient_id.as_bytes()], |r| {
            Ok((Uuid::from_bytes(r.get(0)?), r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
        })? {
            conflicts.push(row?);
        }
    }
    for (table, field, id, body) in rows {
        let place = FieldPlace { patient_id, record_id: id, field };
        let sealed = new.seal(&place, &old.open(&place, &body)?)?;
        tx.execute(&format!("UPDATE {table} SET body = ?1 WHERE id = ?2"), params![sealed, id.as_bytes()])?;
    }
    for (id, kind, body) in conflicts {
        let field = synced_table(&kind)?.field;
        let place = FieldPlace { patient_id, record_id: id, field };
        let sealed = new.seal(&place, &old.open(&place, &body)?)?;
        tx.execute("UPDATE conflicts SET body = ?1 WHERE record_id = ?2", params![sealed, id.as_bytes()])?;
    }
    Ok(())
}

/// Where pulled records go when the station has an unsynced change to them.
struct Incoming<'a> {
    tx: &'a Transaction<'a>,
    /// Records with unsynced local changes, and the version the oldest of them was based on.
    local: &'a HashMap<Uuid, i64>,
    now: Timestamp,
}

impl Incoming<'_> {
    /// If the station has an unsynced change to `record_id` and the server's version is newer than
    /// the one that change was made on, keeps the server's version (sealed, as it came) beside the
    /// local one: a conflict. Returns whether it did.
    fn stash_if_local(
        &self,
        record_id: Uuid,
        table: &str,
        patient_id: Uuid,
        version: i64,
        body: &[u8],
    ) -> Result<bool> {
        match self.local.get(&record_id) {
            Some(&base) if version > base => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO conflicts (record_id, kind, patient_id, their_version, body, seen_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(record_id) DO UPDATE SET their_version = ?4, body = ?5, seen_at = ?6
                         WHERE their_version < ?4",
                    )?
                    .execute(params![
                        record_id.as_bytes(),
                        table,
                        patient_id.as_bytes(),
                        version,
                        body,
                        self.now.0
                    ])?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
