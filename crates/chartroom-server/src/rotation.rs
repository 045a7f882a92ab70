//! Master key rotation (`chartroom-server keys rotate`), with the server stopped.
//!
//! 1. A new master key is stored beside the old one (`keys/master.next`, or the keyring) and the
//!    rotation is marked as under way: from then on no other command, and no `serve`, runs.
//! 2. The stations' escrow root is sealed under the new key (stations keep working unchanged).
//! 3. Every patient's key is re-wrapped, and its MRN index recomputed, under the new key, a batch
//!    per transaction. A patient whose key already opens under the new key is skipped, so a
//!    rotation interrupted anywhere resumes where it stopped.
//! 4. The database follows: the embedded file is re-encrypted (a complete copy under the new key
//!    renamed over the old one); PostgreSQL's master key binding moves to the new key.
//! 5. The new key replaces the old one, which is gone; the marker goes last.
//!
//! Every step is recorded in the audit trail. Backups made before a rotation need the old key:
//! take a new one afterwards.

use std::sync::Arc;

use chartroom_domain::Timestamp;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::phi::RecordKeys;
use crate::storage::{Rewrapped, SqliteStorage, Storage};
use crate::{DataDir, ServerError};

/// Patients re-wrapped per transaction.
const BATCH: usize = 200;

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// Patients whose key was re-wrapped by this run (a resumed run counts only its own).
    pub rewrapped: usize,
    pub patients: usize,
    pub resumed: bool,
}

/// Debug builds only: aborts the process at the named step when `CHARTROOM_TEST_CRASH_AT` names
/// it, so that tests can prove an interrupted rotation loses nothing.
fn crash_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("CHARTROOM_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Rotates the master key, or finishes a rotation that was interrupted.
pub fn rotate_master_key(dir: &DataDir, now: Timestamp) -> Result<Rotated, ServerError> {
    let _stopped = dir.lock_exclusive()?;
    let old = dir.current_master_key()?;
    let resumed = dir.rotation_unfinished();
    let new = match dir.next_master_key()? {
        Some(new) => new,
        None if resumed => {
            // The new key already replaced the old one; only the last step was left.
            dir.finish_rotation(&old)?;
            let storage = crate::datadir::open_database_with(dir, &old)?;
            crate::audit::admin_action(&*storage, "key_rotate", "master_key", "finished", now)?;
            return Ok(Rotated { rewrapped: 0, patients: 0, resumed });
        }
        None => {
            let mut new = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(new.as_mut());
            dir.begin_rotation(&new)?;
            new
        }
    };
    crash_point("rotate:begun");
    let (storage, under_new) = open_either(dir, &old, &new)?;
    crate::audit::admin_action(
        &*storage,
        if resumed { "key_rotate_resume" } else { "key_rotate_start" },
        "master_key",
        "master key",
        now,
    )?;
    let escrow_root = dir.escrow_root(&old).or_else(|_| dir.escrow_root(&new))?;
    dir.stage_escrow_root(&escrow_root, &new)?;

    let (old_keys, new_keys) = (RecordKeys::from_master(&old), RecordKeys::from_master(&new));
    let (mut rewrapped, mut patients, mut after) = (0, 0, None);
    loop {
        let ids = storage.patient_ids(after, BATCH)?;
        let Some(last) = ids.last().copied() else { break };
        after = Some(last);
        let mut batch = Vec::with_capacity(ids.len());
        for p in storage.patients(&ids)? {
            patients += 1;
            if new_keys.opens(&p) {
                continue;
            }
            let (key, patient) = old_keys.open_patient(&p)?;
            batch.push(Rewrapped {
                id: p.id,
                wrapped_key: new_keys.wrap_patient_key(p.id, &key),
                mrn_index: new_keys.mrn_index(&patient.mrn),
            });
        }
        rewrapped += batch.len();
        storage.rewrap_patients(&batch)?;
        crash_point("rotate:batch");
    }
    crash_point("rotate:rewrapped");

    if !under_new {
        match storage.as_pg() {
            Some(pg) => {
                let check = crate::datadir::master_key_check;
                pg.rebind_master_key(&check(&old), &check(&new))?;
            }
            None => {
                drop(storage);
                SqliteStorage::rekey_file(&dir.database_path(), &old, &new)?;
            }
        }
    }
    crash_point("rotate:database");
    dir.finish_rotation(&new)?;
    let storage = crate::datadir::open_database_with(dir, &new)?;
    crate::audit::admin_action(
        &*storage,
        "key_rotate",
        "master_key",
        &format!("{rewrapped} of {patients} patient keys re-wrapped"),
        now,
    )?;
    Ok(Rotated { rewrapped, patients, resumed })
}

/// Opens the database under the old master key, or — when an interrupted rotation already moved
/// it — under the new one; says which.
fn open_either(
    dir: &DataDir,
    old: &[u8; 32],
    new: &[u8; 32],
) -> Result<(Arc<dyn Storage>, bool), ServerError> {
    match crate::datadir::open_database_with(dir, old) {
        Ok(storage) => Ok((storage, false)),
        Err(first) => match crate::datadir::open_database_with(dir, new) {
            Ok(storage) => Ok((storage, true)),
            Err(_) => Err(first),
        },
    }
}
