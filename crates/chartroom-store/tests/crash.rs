//! Crash consistency: a writer process recording vitals sets (each with its audit entries, in one
//! transaction) is killed with SIGKILL at random moments, again and again. After every kill the
//! database must open, pass `PRAGMA integrity_check`, its audit chain must verify, and every stored
//! observation must have its `create` entry and every entry its observation.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use chartroom_crypto::DataKey;
use chartroom_domain::{Observation, Timestamp, VitalSign};
use chartroom_store::{Actor, Store, StoreOptions};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const CHILD_ENV: &str = "CHARTROOM_CRASH_CHILD_DB";
const DEVICE: Uuid = Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_00dd);

fn key() -> DataKey {
    DataKey::derive(b"crash-test", &[7; 32], b"dek")
}

fn options() -> StoreOptions {
    StoreOptions { cache_kib: 4096, ..StoreOptions::default() }
}

fn actor() -> Actor {
    Actor {
        device_id: DEVICE,
        user_id: Some(Uuid::from_u128(1)),
        username: Some("kim.rn".into()),
        host: "test".into(),
    }
}

/// The writer: runs only when the parent test starts this binary as a child.
#[test]
fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV) else { return };
    let mut store = Store::open(std::path::Path::new(&path), key(), options()).unwrap();
    let patient = store.census(None).unwrap()[0].patient_id;
    let mut i: i64 = 0;
    loop {
        i += 1;
        let set: Vec<Observation> = [VitalSign::HeartRate, VitalSign::Spo2, VitalSign::Temperature]
            .into_iter()
            .zip([72.0, 97.0, 37.0])
            .map(|(vital, value)| Observation {
                id: Uuid::now_v7(),
                patient_id: patient,
                vital,
                value,
                effective_at: Timestamp(1_800_000_000_000 + i * 1000),
                recorded_by: Uuid::from_u128(1),
                version: 1,
            })
            .collect();
        store.put_all_as(&actor(), &set, Timestamp(1_800_000_000_000 + i * 1000)).unwrap();
    }
}

// hipaa (c)(1) (b): a writer killed at random never leaves a change without its audit entry
#[test]
fn killed_writers_never_leave_a_change_without_its_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh_database = |n: usize| {
        // A new database every 25 kills keeps each round's full re-check small.
        let path = tmp.path().join(format!("crash-{n}.db"));
        let mut store = Store::create(&path, key(), options()).unwrap();
        let config = chartroom_synth::SynthConfig {
            observations_per_patient: 0,
            ..chartroom_synth::SynthConfig::new(1, Timestamp(1_800_000_000_000))
        };
        store.import(&[chartroom_synth::patient(&config, 0)]).unwrap();
        path
    };
    let mut path = fresh_database(0);
    let mut total = 0;
    let iterations: usize =
        std::env::var("CHARTROOM_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let exe = std::env::current_exe().unwrap();
    let mut last_count = 0;
    for round in 0..iterations {
        if round > 0 && round % 25 == 0 {
            total += last_count;
            last_count = 0;
            path = fresh_database(round);
        }
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..60)));
        child.kill().unwrap(); // SIGKILL: no destructor, no rollback, no checkpoint
        child.wait().unwrap();

        let mut store = Store::open(&path, key(), options()).unwrap();
        store.integrity_check().unwrap();
        let entries = store.verify_audit(DEVICE).unwrap().unwrap_or_else(|b| panic!("round {round}: {b}"));
        assert!(entries >= last_count, "round {round}: committed entries vanished");
        last_count = entries;
        let logged: HashSet<String> = store
            .audit_entries(0, 1_000_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.event.action == "create")
            .filter_map(|e| e.event.resource_id)
            .collect();
        let patient = store.census(None).unwrap()[0].patient_id;
        let stored: HashSet<String> =
            store.chart(patient, usize::MAX).unwrap().observations.iter().map(|o| o.id.to_string()).collect();
        assert_eq!(
            logged, stored,
            "round {round}: a change without its entry, or an entry without its change"
        );
        drop(store);
    }
    total += last_count;
    eprintln!("crash consistency: {iterations} SIGKILLs, {total} audit entries, all consistent");
    assert!(total > u64::try_from(iterations).unwrap(), "the writer hardly committed anything");
}
