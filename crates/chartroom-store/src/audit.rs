//! The station's audit trail: every audited read and change appends an entry to this device's hash
//! chain (`chartroom-audit`) inside the same SQLCipher database, so an entry is as durable, and as
//! encrypted, as the data it describes. Writes and their entries share one transaction.

use chartroom_audit::{verify_chain, AuditEntry, ChainBreak, ChainHead, Digest32, Event};
use chartroom_domain::{Chart, Timestamp};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::store::{CensusRow, Store};
use crate::StoreError;

type Result<T> = std::result::Result<T, StoreError>;

/// Who is acting, on which device (the station fills this from the unlocked session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub device_id: Uuid,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    /// The station's host name.
    pub host: String,
}

/// The first broken entry `verify_audit` found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit FAILED at entry {seq}: {problem}")]
pub struct AuditBreak {
    pub seq: u64,
    pub problem: String,
}

impl Store {
    /// Appends `event`, done by `actor`, to the device's chain.
    pub fn record(&mut self, actor: &Actor, event: Event) -> Result<AuditEntry> {
        let tx = self.conn_mut().transaction()?;
        let entry = append_in(&tx, actor, event)?;
        tx.commit()?;
        Ok(entry)
    }

    /// A unit's census, recorded as a `view` listing every patient it shows. Nothing is returned
    /// unless the entry was written.
    pub fn census_as(&mut self, actor: &Actor, unit: Option<&str>, now: Timestamp) -> Result<Vec<CensusRow>> {
        let rows = self.census(unit)?;
        let mut e = Event::new(now, "view", "census", "ok");
        e.resource_id = Some(unit.unwrap_or("*").to_owned());
        e.patient_ids = rows.iter().map(|r| r.patient_id).collect();
        self.record(actor, e)?;
        Ok(rows)
    }

    /// A patient's chart, recorded as a `view` of that patient.
    pub fn chart_as(
        &mut self,
        actor: &Actor,
        patient_id: Uuid,
        max_observations: usize,
        now: Timestamp,
    ) -> Result<Chart> {
        let chart = self.chart(patient_id, max_observations)?;
        let mut e = Event::new(now, "view", "patient", "ok");
        e.resource_id = Some(patient_id.to_string());
        e.patient_ids = vec![patient_id];
        self.record(actor, e)?;
        Ok(chart)
    }

    /// Stored entries after `after` (sequence number), `limit` at a time.
    pub fn audit_entries(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let mut stmt =
            self.conn().prepare_cached("SELECT entry FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt.query_map(params![to_i64(after), to_i64(limit as u64)], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?).map_err(|_| StoreError::Decode)?);
        }
        Ok(out)
    }

    /// Verifies `device_id`'s whole chain. `Ok(Ok(n))`: n entries, intact.
    pub fn verify_audit(&self, device_id: Uuid) -> Result<std::result::Result<u64, AuditBreak>> {
        let mut stmt = self.conn().prepare("SELECT seq, hash, entry FROM audit_log ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        let mut head = ChainHead::GENESIS;
        while let Some(row) = rows.next()? {
            let (seq, hash, json): (i64, Vec<u8>, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
            let seq = u64::try_from(seq).unwrap_or(0);
            let Ok(entry) = serde_json::from_str::<AuditEntry>(&json) else {
                return Ok(Err(AuditBreak { seq, problem: "the entry is unreadable".into() }));
            };
            if entry.seq != seq || hash != entry.hash.0 {
                return Ok(Err(AuditBreak {
                    seq,
                    problem: "the entry does not match its row (moved or replaced)".into(),
                }));
            }
            head = match verify_chain(device_id, head, [&entry]) {
                Ok(h) => h,
                Err(b) => return Ok(Err(AuditBreak { seq, problem: describe(b) })),
            };
        }
        Ok(Ok(head.seq))
    }
}

fn describe(b: ChainBreak) -> String {
    match b {
        ChainBreak::Edited { .. } => "its content does not match its hash (edited)".into(),
        ChainBreak::Gap { expected, found, .. } => {
            format!("expected entry {expected}, found {found} (removed or reordered)")
        }
        ChainBreak::Unlinked { .. } => {
            "it does not follow the entry before it (replaced or reordered)".into()
        }
        ChainBreak::WrongDevice { .. } => "it belongs to another device's chain".into(),
    }
}

/// Appends an entry in the caller's transaction (so a change and its entry commit together).
pub(crate) fn append_in(conn: &Connection, actor: &Actor, mut event: Event) -> Result<AuditEntry> {
    let last: Option<(i64, [u8; 32])> = conn
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut head = match last {
        None => ChainHead::GENESIS,
        Some((seq, hash)) => {
            ChainHead { seq: u64::try_from(seq).map_err(|_| StoreError::Decode)?, hash: Digest32(hash) }
        }
    };
    event.user_id = actor.user_id;
    event.username.clone_from(&actor.username);
    event.host.clone_from(&actor.host);
    let entry = head.append(actor.device_id, Uuid::now_v7(), event);
    let json = serde_json::to_string(&entry).map_err(|_| StoreError::Decode)?;
    conn.prepare_cached("INSERT INTO audit_log (seq, id, hash, entry) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![to_i64(entry.seq), entry.id.as_bytes(), &entry.hash.0[..], json])?;
    Ok(entry)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
