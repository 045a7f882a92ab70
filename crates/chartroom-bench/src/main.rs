//! `chartroom-bench`: measures the vault (SQLCipher overhead, unlock, field sealing, chart reads)
//! and the server (seeding, logins, chart and census reads) and prints the numbers. Benchmarks report; they never fail on timing.
//!
//! `cargo run --release -p chartroom-bench -- vault --json`
//! `cargo run --release -p chartroom-bench -- server --json`
//! `cargo run --release -p chartroom-bench -- server --backend postgres --database-url URL --json`
//! `cargo run --release -p chartroom-bench -- audit --json`
//! `cargo run --release -p chartroom-bench -- sync --json`

#![forbid(unsafe_code)]

mod audit;
mod scale;
mod server;
mod sync;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chartroom_crypto::{FieldPlace, KdfParams, Password, PatientKey};
use chartroom_domain::{DeviceProfile, Observation, Timestamp, VitalSign};
use chartroom_station::{LockedVault, MemoryKeystore, NewVault, Profile};
use chartroom_store::{DatabaseEncryption, Store, StoreOptions};
use chartroom_synth::{patient, SynthConfig};
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(name = "chartroom-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Sync over pinned TLS on loopback: first sync, incremental pulls, pushes, server ingest.
    Sync {
        #[arg(long)]
        json: bool,
        /// Records on the server (patients included), about.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 200)]
        increments: usize,
        /// 500-change batches to push.
        #[arg(long, default_value_t = 40)]
        pushes: usize,
    },
    /// Vault benchmarks.
    Vault {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 10_000)]
        patients: u64,
        #[arg(long, default_value_t = 100)]
        observations: usize,
        /// Random chart reads per measured round.
        #[arg(long, default_value_t = 4_000)]
        reads: usize,
        /// Vitals sets (one transaction of 7 observations each) per write round.
        #[arg(long, default_value_t = 600)]
        writes: usize,
        #[arg(long, default_value_t = 20)]
        unlocks: usize,
        /// SQLite page cache per database, MiB (default: the store's default).
        #[arg(long)]
        cache_mib: Option<i64>,
    },
    /// The central server: seeding, logins, chart and census reads over HTTPS.
    Server {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100_000)]
        patients: u64,
        #[arg(long, default_value_t = 30)]
        logins: usize,
        #[arg(long, default_value_t = 2_000)]
        reads: usize,
        /// `sqlite` (embedded) or `postgres` (needs --database-url); the scale part always also runs
        /// on the embedded database, for comparison.
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        backend: String,
        /// A PostgreSQL cluster's URL (each run creates a database of its own there), e.g. from
        /// `scripts/pg-test-cluster start DIR`.
        #[arg(long)]
        database_url: Option<String>,
        /// Patients for the scale part (ingest, pull, 50-station pushes).
        #[arg(long, default_value_t = 2_000)]
        scale_patients: u64,
        #[arg(long, default_value_t = 50)]
        stations: usize,
        /// 500-change batches each of the six ingest devices pushes.
        #[arg(long, default_value_t = 20)]
        batches: usize,
    },
    /// The audit trail: station append latency, chain verification rate, checkpoint signing.
    Audit {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 2_000)]
        appends: usize,
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
    },
    /// How fast the synthetic generator fills a SQLCipher store.
    Synth {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100_000)]
        patients: u64,
        #[arg(long, default_value_t = 100)]
        observations: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let (report, json) = match Cli::parse().command {
        Cmd::Vault { json, patients, observations, reads, writes, unlocks, cache_mib } => {
            (vault(patients, observations, reads, writes, unlocks, cache_mib)?, json)
        }
        Cmd::Synth { json, patients, observations } => (synth(patients, observations)?, json),
        Cmd::Audit { json, appends, entries } => (audit::run(appends, entries)?, json),
        Cmd::Server {
            json,
            patients,
            logins,
            reads,
            backend,
            database_url,
            scale_patients,
            stations,
            batches,
        } => {
            let url = match backend.as_str() {
                "postgres" => Some(
                    database_url.ok_or_else(|| anyhow::anyhow!("--backend postgres needs --database-url"))?,
                ),
                _ => None,
            };
            let mut report = server::run(patients, logins, reads, url.as_deref())?;
            let mut scale = serde_json::Map::new();
            if let Some(url) = &url {
                scale.insert("postgres".into(), scale::run(Some(url), scale_patients, stations, batches)?);
            }
            scale.insert("sqlite".into(), scale::run(None, scale_patients, stations, batches)?);
            if let Some(map) = report.as_object_mut() {
                map.insert("backend".into(), backend.into());
                map.insert("scale".into(), scale.into());
            }
            (report, json)
        }
        Cmd::Sync { json, rows, increments, pushes } => (sync::run(rows, increments, pushes)?, json),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(map) = report.as_object() {
        for (k, v) in map {
            println!("{k:<36} {v}");
        }
    }
    Ok(())
}

/// Generates `patients` synthetic patients into one SQLCipher store, in batches of 500.
fn synth(patients: u64, observations: usize) -> anyhow::Result<serde_json::Value> {
    let now = Timestamp(1_795_764_183_000);
    let dir = tempfile::tempdir()?;
    let config = SynthConfig { observations_per_patient: observations, ..SynthConfig::new(42, now) };
    let path = dir.path().join("synth.db");
    let mut store = Store::create(&path, chartroom_crypto::DataKey::generate(), StoreOptions::default())?;
    let t = Instant::now();
    let (mut rows, mut start) = (0usize, 0u64);
    while start < patients {
        let bundles: Vec<_> = (start..(start + 500).min(patients)).map(|i| patient(&config, i)).collect();
        rows += bundles.iter().map(|b| b.row_count()).sum::<usize>();
        store.import(&bundles)?;
        start += 500;
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&path)?.len();
    Ok(serde_json::json!({
        "machine": machine(),
        "patients": patients,
        "rows": rows,
        "seconds": (secs * 10.0).round() / 10.0,
        "rows_per_second": (rows as f64 / secs).round(),
        "database_mib": (bytes as f64 / 1048576.0).round(),
    }))
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(idx).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn vault(
    patients: u64,
    observations: usize,
    reads: usize,
    writes: usize,
    unlocks: usize,
    cache_mib: Option<i64>,
) -> anyhow::Result<serde_json::Value> {
    let now = Timestamp(1_795_764_183_000);
    let dir = tempfile::tempdir()?;

    // Field sealing.
    let key = PatientKey::generate();
    let place = FieldPlace { patient_id: Uuid::new_v4(), record_id: Uuid::new_v4(), field: "note.body" };
    let field = [b'x'; 200];
    let n = 200_000u32;
    let t = Instant::now();
    let mut sealed = Vec::new();
    for _ in 0..n {
        sealed = key.seal(&place, &field)?;
    }
    let seal_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        key.open(&place, &sealed).context("open")?;
    }
    let open_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let raw_ns = raw_aes_gcm_ns(n);

    // KDF alone.
    let mut kdf = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        KdfParams::DEFAULT.hash_password(&Password::from("benchmark passphrase"), &[7u8; 16])?;
        kdf.push(t.elapsed());
    }
    let kdf_ms = ms(percentile(&mut kdf, 0.5));

    // The two databases: identical schema and sealed fields; only the file encryption differs.
    let config = SynthConfig { observations_per_patient: observations, ..SynthConfig::new(42, now) };
    let mut cipher_opts = StoreOptions::default();
    if let Some(mib) = cache_mib {
        cipher_opts.cache_kib = mib * 1024;
    }
    let plain_opts = StoreOptions { encryption: DatabaseEncryption::PlainForBenchmark, ..cipher_opts };
    let mut plain =
        Store::create(&dir.path().join("plain.db"), chartroom_crypto::DataKey::generate(), plain_opts)?;
    let keystore = Arc::new(MemoryKeystore::default());
    let password = Password::from("benchmark passphrase");
    let user = Uuid::new_v4();
    let mut unlocked = LockedVault::create(
        Profile::new(dir.path().join("station")),
        keystore.clone(),
        NewVault {
            role: chartroom_domain::Role::Nurse,
            profile: DeviceProfile::Station,
            user_id: user,
            username: "bench",
            password: &password,
            kdf: KdfParams::DEFAULT,
            recovery: None,
            now,
            store: cipher_opts,
        },
    )?;
    let t = Instant::now();
    let chunk = 250u64;
    let mut rows = 0usize;
    let mut start = 0;
    while start < patients {
        let bundles: Vec<_> = (start..(start + chunk).min(patients)).map(|i| patient(&config, i)).collect();
        rows += bundles.iter().map(|b| b.row_count()).sum::<usize>();
        plain.import(&bundles)?;
        unlocked.store().import(&bundles)?;
        start += chunk;
    }
    let build_s = t.elapsed().as_secs_f64();
    let ids: Vec<Uuid> = (0..patients)
        .map(|i| patient(&SynthConfig { observations_per_patient: 0, ..config.clone() }, i).patient.id)
        .collect();

    // Warm both caches with one full pass, then alternate measured rounds.
    let cipher = unlocked.store();
    for id in &ids {
        plain.chart(*id, observations)?;
        cipher.chart(*id, observations)?;
    }
    // Reads alternate between the two stores chart by chart (and which goes first), so that drift
    // in machine load affects both equally.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (mut plain_reads, mut chart_samples) = (Vec::with_capacity(reads * 3), Vec::with_capacity(reads * 3));
    for i in 0..reads * 3 {
        let id = ids[rng.gen_range(0..ids.len())];
        for turn in 0..2 {
            if (i + turn).is_multiple_of(2) {
                let t = Instant::now();
                plain.chart(id, observations)?;
                plain_reads.push(t.elapsed());
            } else {
                let t = Instant::now();
                cipher.chart(id, observations)?;
                chart_samples.push(t.elapsed());
            }
        }
    }
    let chart_p50 = ms(percentile(&mut chart_samples, 0.5));
    let chart_p99 = ms(percentile(&mut chart_samples, 0.99));

    // Writes: one vitals set (7 observations) per transaction, as a nurse records them. New records
    // get time-ordered (v7) ids, as the app assigns them. Sets alternate between the stores.
    let (mut plain_writes, mut cipher_writes) =
        (Vec::with_capacity(writes * 3), Vec::with_capacity(writes * 3));
    for i in 0..writes * 3 {
        let pid = ids[rng.gen_range(0..ids.len())];
        let set: Vec<Observation> = VitalSign::ALL
            .iter()
            .map(|v| Observation {
                id: Uuid::now_v7(),
                patient_id: pid,
                vital: *v,
                value: v.normal_range().0 + 1.0,
                effective_at: Timestamp(now.0 + i as i64 * 1000),
                recorded_by: user,
                version: 0,
            })
            .collect();
        let mut twin = set.clone();
        for o in &mut twin {
            o.id = Uuid::now_v7();
        }
        for turn in 0..2 {
            if (i + turn).is_multiple_of(2) {
                let t = Instant::now();
                plain.put_all(&set)?;
                plain_writes.push(t.elapsed());
            } else {
                let t = Instant::now();
                cipher.put_all(&twin)?;
                cipher_writes.push(t.elapsed());
            }
        }
    }
    let db_bytes = std::fs::metadata(cipher.path())?.len();

    // Unlock: Argon2id + slot unwrap + SQLCipher open (+ schema check).
    let locked = unlocked.lock();
    let mut unlock = Vec::new();
    for _ in 0..unlocks {
        let t = Instant::now();
        let v = locked.unlock("bench", &password, now)?;
        unlock.push(t.elapsed());
        v.lock();
    }
    let unlock_p50 = ms(percentile(&mut unlock, 0.5));
    let unlock_p95 = ms(percentile(&mut unlock, 0.95));
    drop(plain);

    Ok(serde_json::json!({
        "machine": machine(),
        "patients": patients,
        "observations_per_patient": observations,
        "rows": rows,
        "database_mib": (db_bytes as f64 / 1048576.0 * 10.0).round() / 10.0,
        "build_seconds": (build_s * 10.0).round() / 10.0,
        "page_cache_mib": cipher_opts.cache_kib / 1024,
        // Ratios of medians: the typical operation. A single fsync stall on this virtual disk can
        // add milliseconds to one side's total; the ratio of means is reported beside it.
        "sqlcipher_read_overhead_ratio": median_ratio(&mut chart_samples.clone(), &mut plain_reads),
        "sqlcipher_write_overhead_ratio": median_ratio(&mut cipher_writes, &mut plain_writes),
        "vitals_set_write_p50_us_sqlcipher": us(percentile(&mut cipher_writes, 0.5)),
        "vitals_set_write_p50_us_plain": us(percentile(&mut plain_writes, 0.5)),
        "sqlcipher_read_overhead_ratio_of_means": mean_ratio(&chart_samples, &plain_reads),
        "sqlcipher_write_overhead_ratio_of_means": mean_ratio(&cipher_writes, &plain_writes),
        "chart_read_p50_ms": chart_p50,
        "chart_read_p99_ms": chart_p99,
        "kdf_ms": kdf_ms,
        "unlock_p50_ms": unlock_p50,
        "unlock_p95_ms": unlock_p95,
        "unlock_over_kdf_ratio": round3(unlock_p95 / kdf_ms),
        "field_seal_ns": seal_ns.round(),
        "field_open_ns": open_ns.round(),
        "aes_gcm_200b_in_place_ns": raw_ns.round(),
    }))
}

/// The floor under field sealing: AES-256-GCM of 200 bytes in place, fixed key and nonce, no
/// allocation, no AAD building, no envelope.
fn raw_aes_gcm_ns(n: u32) -> f64 {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let cipher = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
    let nonce = aes_gcm::Nonce::from([1u8; 12]);
    let mut buf = [b'x'; 200];
    let t = Instant::now();
    for _ in 0..n {
        let tag = cipher.encrypt_in_place_detached(&nonce, b"aad", &mut buf);
        std::hint::black_box(&tag);
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn median_ratio(a: &mut [Duration], b: &mut [Duration]) -> f64 {
    round3(percentile(a, 0.5).as_secs_f64() / percentile(b, 0.5).as_secs_f64())
}

fn mean_ratio(a: &[Duration], b: &[Duration]) -> f64 {
    round3(a.iter().sum::<Duration>().as_secs_f64() / b.iter().sum::<Duration>().as_secs_f64())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let _ = Path::new("/");
    format!("{cpus} cores, {model}")
}
