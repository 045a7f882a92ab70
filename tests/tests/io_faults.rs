//! I/O faults under a station database, on real size-limited and read-only file systems
//! ([`Tmpfs`]). A full disk refuses the write with `store.disk_full`, loses nothing that was
//! committed, and the same write succeeds once space returns; a read-only profile is refused with
//! `store.read_only` and nothing is changed. (A full disk during a sync: `sync_faults.rs`.)

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use chartroom_crypto::DataKey;
use chartroom_domain::{Chart, Timestamp};
use chartroom_store::{Store, StoreError, StoreOptions};
use chartroom_synth::{patient, SynthConfig};
use chartroom_tests::{fill, Tmpfs};

fn key() -> DataKey {
    DataKey::derive(b"io-fault-test", &[3; 32], b"station")
}

fn options() -> StoreOptions {
    StoreOptions { cache_kib: 1024, ..StoreOptions::default() }
}

fn charts(n: u64, from: u64) -> Vec<Chart> {
    let config = SynthConfig {
        observations_per_patient: 20,
        ..SynthConfig::new(31, Timestamp::from_civil_date(2026, 11, 27))
    };
    (from..from + n).map(|i| patient(&config, i)).collect()
}

fn everything(store: &mut Store) -> HashMap<uuid::Uuid, Chart> {
    let rows = store.census(None).unwrap();
    rows.iter().map(|r| (r.patient_id, store.chart(r.patient_id, 10_000).unwrap())).collect()
}

// hipaa (c)(1): a full disk refuses a write with a clear error, loses nothing committed, keeps the
//   database whole, and the same write succeeds once space returns
#[test]
fn a_full_disk_refuses_the_write_loses_nothing_and_the_retry_succeeds() {
    let Some(fs) = Tmpfs::mount(6 * 1024) else { return };
    let path = fs.path().join("cache.db");
    let mut store = Store::create(&path, key(), options()).unwrap();
    let base = charts(4, 0);
    store.import(&base).unwrap();
    store.close().unwrap();

    let mut store = Store::open(&path, key(), options()).unwrap();
    let before = everything(&mut store);
    let filler = fill(fs.path());
    let more = charts(6, 50);
    let err = store.import(&more).unwrap_err();
    assert!(matches!(err, StoreError::DiskFull), "{err:?}");
    assert_eq!(err.to_string(), "the disk is full; nothing was written");
    // Nothing of the refused import is there; everything committed still reads back exactly.
    assert_eq!(everything(&mut store), before, "a refused write changed what is shown");
    // A second attempt while still full is refused the same way (no half-written state left over).
    assert!(matches!(store.import(&more), Err(StoreError::DiskFull)));

    std::fs::remove_file(filler).unwrap();
    store.import(&more).unwrap();
    store.integrity_check().unwrap();
    store.close().unwrap();
    let mut store = Store::open(&path, key(), options()).unwrap();
    store.integrity_check().unwrap();
    let after = everything(&mut store);
    assert_eq!(after.len(), base.len() + more.len());
    for chart in base.iter().chain(&more) {
        assert_eq!(after[&chart.patient.id].patient, chart.patient);
        assert_eq!(after[&chart.patient.id].observations.len(), chart.observations.len());
    }
}

// hipaa (c)(1): a station database on a read-only filesystem is refused with a clear error and left
//   unchanged; it opens again once writable
#[test]
fn a_read_only_profile_is_a_clear_error_and_changes_nothing() {
    let Some(fs) = Tmpfs::mount(4 * 1024) else { return };
    let path = fs.path().join("cache.db");
    let mut store = Store::create(&path, key(), options()).unwrap();
    store.import(&charts(3, 0)).unwrap();
    store.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();

    fs.remount("ro");
    let err = Store::open(&path, key(), options()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
    assert_eq!(err.to_string(), "the database is read-only; nothing was written");
    // Creating a new database there is refused the same way.
    let err = Store::create(&fs.path().join("other.db"), key(), options()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
    fs.remount("rw");

    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the refused open changed the file");
    let mut store = Store::open(&path, key(), options()).unwrap();
    assert_eq!(everything(&mut store).len(), 3);
}
