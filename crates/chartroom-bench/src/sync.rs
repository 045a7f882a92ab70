//! `chartroom-bench sync`: sync at scale against a real server over pinned TLS 1.3 on loopback —
//! an empty station's first sync of the whole population into its encrypted cache, incremental
//! pulls of a single change, pushes of 500-change batches, and the server's ingest rate for pushed
//! changes with their audit entries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chartroom_client::ServerClient;
use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, Role, VitalSign};
use chartroom_server::{start, wall_now};
use chartroom_station::{LockedVault, MemoryKeystore, Profile, UnlockedVault};
use serde_json::json;

use crate::{ms, percentile};

const PASSWORD: &str = "bench-password-long-enough";

/// Seeds about `rows` records (patients included) and measures.
pub fn run(rows: u64, increments: usize, pushes: usize) -> anyhow::Result<serde_json::Value> {
    let (tmp, dir, report) = crate::server::fresh_server(None)?;
    let storage = dir.open_storage()?;
    let keys = dir.record_keys()?;

    let synth = chartroom_synth::SynthConfig::new(7, wall_now());
    let started = Instant::now();
    let (mut seeded, mut next) = (0u64, 0u64);
    while seeded < rows {
        let charts: Vec<Chart> = (next..next + 500).map(|i| chartroom_synth::patient(&synth, i)).collect();
        seeded += charts.iter().map(|c| c.row_count() as u64).sum::<u64>();
        next += 500;
        chartroom_server::records::load_charts(&*storage, &keys, &charts)?;
    }
    let seed_s = started.elapsed().as_secs_f64();
    for (name, role) in [("bench.nurse", Role::Nurse), ("bench.nurse2", Role::Nurse)] {
        chartroom_server::users::add_user(
            &*storage,
            name,
            role,
            vec!["ICU".into(), "MED".into()],
            &Password::new(PASSWORD.into()),
            wall_now(),
        )?;
    }
    drop(storage);

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = start(&dir, "127.0.0.1:0".parse()?).await?;
        let url = format!("https://localhost:{}", server.addr.port());
        let storage = dir.open_storage()?;
        let station = |name: &'static str| {
            let (storage, url, fingerprint, tmp) = (&*storage, &url, &report.fingerprint, tmp.path());
            async move {
                let token = chartroom_server::devices::issue_token(
                    storage,
                    name,
                    DeviceProfile::Station,
                    vec![],
                    Duration::from_secs(3600),
                    wall_now(),
                )?;
                let client = ServerClient::new(url, fingerprint)?;
                let locked = LockedVault::enroll(
                    Profile::new(tmp.join(name)),
                    Arc::new(MemoryKeystore::default()),
                    &client,
                    fingerprint,
                    &token,
                    wall_now(),
                )
                .await?;
                anyhow::Ok((locked, client))
            }
        };
        let (locked, client) = station("bench-station").await?;
        let mut vault =
            locked.login_online(&client, "bench.nurse", &Password::new(PASSWORD.into()), wall_now()).await?;

        // The first sync: everything, into the empty encrypted cache.
        let t = Instant::now();
        let first = vault.pull(&client, wall_now()).await?;
        let initial_s = t.elapsed().as_secs_f64();
        anyhow::ensure!(first.complete, "first sync incomplete");
        let held = vault.store().patient_count()?;
        anyhow::ensure!(held == next, "station holds {held} of {next} patients");

        // Incremental: another station records one vitals set; this one pulls it.
        let (other, other_client) = station("bench-other").await?;
        let mut writer = other
            .login_online(&other_client, "bench.nurse2", &Password::new(PASSWORD.into()), wall_now())
            .await?;
        writer.pull(&other_client, wall_now()).await?;
        let census = writer.census(None, wall_now())?;
        let mrn = census.first().map(|r| r.mrn.clone()).ok_or_else(|| anyhow::anyhow!("empty census"))?;
        let mut incremental = Vec::with_capacity(increments);
        for i in 0..increments {
            writer.record_vitals(&mrn, &[(VitalSign::HeartRate, 60.0 + (i % 40) as f64)], wall_now())?;
            writer.push_outbox(&other_client, wall_now()).await?;
            let t = Instant::now();
            let r = vault.pull(&client, wall_now()).await?;
            incremental.push(t.elapsed());
            anyhow::ensure!(r.changes == 1, "expected one change, pulled {}", r.changes);
        }

        // Pushes of 500 observations each.
        let mut push_times = Vec::with_capacity(pushes);
        for _ in 0..pushes {
            queue_observations(&mut vault, &mrn, 500)?;
            let t = Instant::now();
            let r = vault.push_outbox(&client, wall_now()).await?;
            push_times.push(t.elapsed());
            anyhow::ensure!(r.applied == 500, "applied {}", r.applied);
        }
        // Their audit entries travel too.
        let audit_entries = vault.upload_audit(&client).await?;
        vault.lock();
        writer.lock();
        let server_side = server_side(&*storage, &dir.record_keys()?, &client, pushes).await?;
        server.shutdown(Duration::from_secs(2)).await?;
        let profile_mib = std::fs::metadata(tmp.path().join("bench-station").join("cache.db"))?.len() as f64
            / (1024.0 * 1024.0);
        Ok::<_, anyhow::Error>(json!({
            "rows": seeded,
            "patients": next,
            "seed_s": (seed_s * 10.0).round() / 10.0,
            "initial_sync_s": (initial_s * 100.0).round() / 100.0,
            "initial_sync_rows_per_s": (seeded as f64 / initial_s).round(),
            "station_cache_mib": profile_mib.round(),
            "incremental_pulls": increments,
            "incremental_apply_p50_ms": ms(percentile(&mut incremental, 0.5)),
            "incremental_apply_p99_ms": ms(percentile(&mut incremental, 0.99)),
            "push_batches": pushes,
            "push_p50_ms": ms(percentile(&mut push_times, 0.5)),
            "push_p99_ms": ms(percentile(&mut push_times, 0.99)),
            "audit_entries_uploaded": audit_entries,
            "server_pull_rows_per_s": server_side.pull_rows_per_s.round(),
            "server_ingest_changes_per_s": server_side.ingest_per_s.round(),
            "server_push_only_changes_per_s": server_side.push_only_per_s.round(),
            "server_audit_only_entries_per_s": server_side.audit_only_per_s.round(),
        }))
    })
}

struct ServerSide {
    pull_rows_per_s: f64,
    /// Changes with their audit entries.
    ingest_per_s: f64,
    /// The changes alone (decided, sealed, written with the server's own audit events).
    push_only_per_s: f64,
    /// The station's audit entries alone (verified, chained, stored).
    audit_only_per_s: f64,
}

/// The server's own work, without TLS and HTTP: a whole first-sync pull (with JSON encoding), and
/// pushes of 500 observations each with their 500 audit entries (verified and chained).
async fn server_side(
    storage: &dyn chartroom_server::storage::Storage,
    keys: &chartroom_server::phi::RecordKeys,
    client: &ServerClient,
    batches: usize,
) -> anyhow::Result<ServerSide> {
    let token = chartroom_server::devices::issue_token(
        storage,
        "bench-raw",
        DeviceProfile::Station,
        vec![],
        Duration::from_secs(3600),
        wall_now(),
    )?;
    let seed = [9u8; 32];
    let probe = chartroom_client::DeviceIdentity::new(String::new(), &seed);
    let device_id = client.enroll(&token, &probe.public_key_hex()).await?.device_id;
    let device = chartroom_client::DeviceIdentity::new(device_id.clone(), &seed);
    let access = client.login(&device, "bench.nurse", PASSWORD).await?.access_token;
    let owner = storage
        .session_by_access(&chartroom_server::auth::sha256(&access), wall_now())?
        .ok_or_else(|| anyhow::anyhow!("session vanished"))?;
    let origin = chartroom_server::auth::Origin::default();
    let reader = chartroom_server::records::Reader {
        storage,
        keys,
        owner: &owner,
        now: wall_now(),
        origin: &origin,
        anomaly: chartroom_server::oversight::AnomalyRule { floor: u64::MAX, ..Default::default() },
    };
    let device_uuid: uuid::Uuid = device_id.parse()?;
    // Any device key costs the same to wrap under.
    let device_key = chartroom_crypto::fields::sync_wrap_key(&[3; 32], device_uuid);
    let t = Instant::now();
    let (mut cursor, mut rows, mut patient) = (0, 0usize, None);
    loop {
        let page = chartroom_server::sync::pull(reader, &device_key, cursor, 200)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        rows += page.patients.len() + page.records.len();
        patient = patient.or_else(|| page.patients.first().map(|p| p.id));
        std::hint::black_box(serde_json::to_vec(&page)?);
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    let pull_rows_per_s = rows as f64 / t.elapsed().as_secs_f64();

    let patient = patient.ok_or_else(|| anyhow::anyhow!("nothing pulled"))?;
    let mut head = chartroom_audit::ChainHead::GENESIS;
    let (mut busy, mut pushing) = (Duration::ZERO, Duration::ZERO);
    for b in 0..batches {
        let mut changes = Vec::with_capacity(500);
        let mut entries = Vec::with_capacity(500);
        for i in 0..500 {
            let o = chartroom_domain::Observation {
                id: uuid::Uuid::now_v7(),
                patient_id: patient,
                vital: VitalSign::HeartRate,
                value: 60.0 + ((b * 500 + i) % 60) as f64,
                effective_at: wall_now(),
                recorded_by: owner.user.id,
                version: 0,
            };
            let mut e = chartroom_audit::Event::new(wall_now(), "create", "observations", "ok");
            e.resource_id = Some(o.id.to_string());
            e.patient_ids = vec![patient];
            e.after = Some(vec![7; 240]);
            entries.push(head.append(device_uuid, uuid::Uuid::now_v7(), e));
            changes.push(chartroom_protocol::Change {
                change_id: uuid::Uuid::now_v7().to_string(),
                base_version: 0,
                change: chartroom_protocol::ChangeRecord::Observation(o),
            });
        }
        let batch = chartroom_protocol::PushBatch { changes };
        let t = Instant::now();
        let r = chartroom_server::sync::push(reader, &batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        pushing += t.elapsed();
        storage.ingest_entries(device_uuid, &entries)?;
        busy += t.elapsed();
        anyhow::ensure!(
            r.results.iter().all(|c| matches!(c.outcome, chartroom_protocol::ChangeOutcome::Applied { .. })),
            "not all applied"
        );
    }
    let changes = (batches * 500) as f64;
    Ok(ServerSide {
        pull_rows_per_s,
        ingest_per_s: changes / busy.as_secs_f64(),
        push_only_per_s: changes / pushing.as_secs_f64(),
        audit_only_per_s: changes / (busy - pushing).as_secs_f64(),
    })
}

/// Queues `n` observations (vitals sets of up to seven) for the patient with `mrn`.
fn queue_observations(vault: &mut UnlockedVault, mrn: &str, n: usize) -> anyhow::Result<()> {
    let vitals = [
        (VitalSign::HeartRate, 72.0),
        (VitalSign::SystolicBp, 120.0),
        (VitalSign::DiastolicBp, 80.0),
        (VitalSign::Temperature, 37.0),
        (VitalSign::RespiratoryRate, 16.0),
        (VitalSign::Spo2, 97.0),
        (VitalSign::Weight, 70.0),
    ];
    let mut left = n;
    while left > 0 {
        let take = left.min(vitals.len());
        vault.record_vitals(mrn, &vitals[..take], wall_now())?;
        left -= take;
    }
    Ok(())
}
