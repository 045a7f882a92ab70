//! Tampering and corruption of a station database on disk: random byte flips anywhere in the file,
//! and a write-ahead log cut short (a crash or a copy taken mid-write). Each damage is either
//! reported as a clear error or harmless; a chart is never shown with a wrong value.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use chartroom_crypto::DataKey;
use chartroom_domain::{Chart, Timestamp};
use chartroom_store::{Store, StoreError, StoreOptions};
use chartroom_synth::{patient, SynthConfig};
use rand::{Rng, SeedableRng};

fn key() -> DataKey {
    DataKey::derive(b"tamper-test", &[7; 32], b"station")
}

fn options() -> StoreOptions {
    StoreOptions { cache_kib: 2 * 1024, ..StoreOptions::default() }
}

fn charts(n: u64, from: u64) -> Vec<Chart> {
    let config = SynthConfig {
        observations_per_patient: 12,
        ..SynthConfig::new(21, Timestamp::from_civil_date(2026, 11, 27))
    };
    (from..from + n).map(|i| patient(&config, i)).collect()
}

/// Everything the station can show: the census and every chart in full, by patient.
fn everything(store: &mut Store) -> Result<HashMap<uuid::Uuid, Chart>, StoreError> {
    let mut shown = HashMap::new();
    for row in store.census(None)? {
        shown.insert(row.patient_id, store.chart(row.patient_id, 10_000)?);
    }
    Ok(shown)
}

/// How one damaged file behaved.
#[derive(Debug, Default)]
struct Tally {
    refused_at_open: usize,
    refused_at_read: usize,
    caught_by_check: usize,
    harmless: usize,
}

fn is_clear(e: &StoreError) -> bool {
    matches!(e, StoreError::WrongKeyOrDamaged | StoreError::Damaged | StoreError::Truncated)
}

// hipaa (c)(2) (c)(1): 1,000 random byte flips anywhere in a station database are each refused with a
//   clear error or harmless; no chart is ever shown with a wrong value
#[test]
fn a_thousand_random_byte_flips_are_detected_or_harmless_never_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let mut store = Store::create(&path, key(), options()).unwrap();
    store.import(&charts(8, 0)).unwrap();
    store.close().unwrap();
    let original = std::fs::read(&path).unwrap();
    let truth = everything(&mut Store::open(&path, key(), options()).unwrap()).unwrap();
    assert_eq!(truth.len(), 8);

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x7a4d);
    let mut tally = Tally::default();
    for round in 0..1000 {
        let mut bytes = original.clone();
        let at = rng.gen_range(0..bytes.len());
        bytes[at] ^= rng.gen_range(1..=255u8);
        std::fs::write(&path, &bytes).unwrap();
        for side in ["cache.db-wal", "cache.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(side));
        }
        let case = format!("round {round}: byte {at} of {}", bytes.len());
        let mut store = match Store::open(&path, key(), options()) {
            Ok(store) => store,
            Err(e) => {
                assert!(is_clear(&e), "{case}: unclear error at open: {e:?}");
                tally.refused_at_open += 1;
                continue;
            }
        };
        match everything(&mut store) {
            Ok(shown) => {
                // Everything read back: it must be exactly what was stored.
                assert_eq!(shown.len(), truth.len(), "{case}: patients missing or added");
                for (id, chart) in &shown {
                    assert_eq!(Some(chart), truth.get(id), "{case}: a wrong value was shown");
                }
                // Pages the screens do not read (the audit trail, indexes): the check reads them.
                match store.integrity_check() {
                    Ok(()) => tally.harmless += 1,
                    Err(e) => {
                        assert!(is_clear(&e), "{case}: unclear error from the check: {e:?}");
                        tally.caught_by_check += 1;
                    }
                }
            }
            Err(e) => {
                assert!(is_clear(&e), "{case}: unclear error at read: {e:?}");
                tally.refused_at_read += 1;
            }
        }
    }
    eprintln!("byte flips: {tally:?}");
    // A flip in any page in use is caught by that page's HMAC when it is read; what is left harmless
    // are flips in free pages, which nothing reads.
    let detected = tally.refused_at_open + tally.refused_at_read + tally.caught_by_check;
    assert!(tally.refused_at_open > 0 && tally.refused_at_read > 0, "{tally:?}");
    assert!(detected >= 900, "{tally:?}");
    assert_eq!(detected + tally.harmless, 1000);
}

/// Copies the database and its write-ahead log as they are on disk while `store` is open (what a
/// crash leaves behind).
fn crash_copy(from: &Path, to: &Path) -> Vec<u8> {
    std::fs::copy(from, to.join("cache.db")).unwrap();
    std::fs::read(from.with_file_name("cache.db-wal")).unwrap()
}

// hipaa (c)(1): a write-ahead log cut short at any point loses only whole transactions at its end;
//   what remains opens and is exactly what was committed
#[test]
fn a_truncated_write_ahead_log_keeps_whole_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let mut store = Store::create(&path, key(), options()).unwrap();
    let base = charts(3, 0);
    store.import(&base).unwrap();
    store.close().unwrap();
    // Four more transactions, each adding one whole patient, left in the log (no checkpoint).
    let mut store = Store::open(&path, key(), options()).unwrap();
    let added = charts(4, 100);
    for chart in &added {
        store.import(std::slice::from_ref(chart)).unwrap();
    }
    let copy = tempfile::tempdir().unwrap();
    let wal = crash_copy(&path, copy.path());
    drop(store);
    assert!(wal.len() > 32 * 1024, "the log holds the four transactions ({} bytes)", wal.len());

    let mut seen_counts = std::collections::BTreeSet::new();
    let step = wal.len() / 60;
    for cut in (0..=wal.len()).step_by(step.max(1)).chain([wal.len(), wal.len() - 1, 32, 31]) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(copy.path().join("cache.db"), dir.path().join("cache.db")).unwrap();
        std::fs::write(dir.path().join("cache.db-wal"), &wal[..cut]).unwrap();
        let case = format!("log cut at {cut} of {}", wal.len());
        let mut store = Store::open(&dir.path().join("cache.db"), key(), options())
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        store.integrity_check().unwrap_or_else(|e| panic!("{case}: {e:?}"));
        let shown = everything(&mut store).unwrap_or_else(|e| panic!("{case}: {e:?}"));
        // The base patients and a prefix of the added ones, each complete and exact.
        let n = shown.len() - base.len();
        assert!(n <= added.len(), "{case}");
        for chart in base.iter().chain(&added[..n]) {
            let got = &shown[&chart.patient.id];
            assert_eq!(got.patient, chart.patient, "{case}");
            assert_eq!(got.observations.len(), chart.observations.len(), "{case}: a partial transaction");
            assert_eq!(got.notes.len(), chart.notes.len(), "{case}: a partial transaction");
        }
        seen_counts.insert(n);
    }
    // The cuts landed before, between and after the transactions.
    assert!(seen_counts.contains(&0) && seen_counts.contains(&added.len()), "{seen_counts:?}");
    assert!(seen_counts.len() >= 3, "{seen_counts:?}");
}
