//! `chartroom-bench server --backend …`: the server at hospital scale, end to end over pinned TLS —
//! ingest of pushed changes (with their audit uploads) through one and three server instances on one
//! database, a whole pull, and push latency with 50 stations pushing vitals at once.
//!
//! The instances run in this process (each its own data directory copy, storage, pool and runtime,
//! as separate processes would have): on a 2-core machine the process boundary adds no parallelism.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chartroom_client::{DeviceIdentity, ServerClient};
use chartroom_domain::{Chart, DeviceProfile, Role, VitalSign};
use chartroom_protocol::{
    AuditUpload, Change, ChangeOutcome, ChangeRecord, PullPage, PushBatch, PushResponse,
};
use chartroom_server::{start, wall_now, DataDir, RunningServer};
use serde_json::json;
use uuid::Uuid;

use crate::{ms, percentile};

const PASSWORD: &str = "bench-password-long-enough";

/// One backend's numbers: `database_url` is the admin URL of a PostgreSQL cluster (a database of
/// its own is created), or `None` for the embedded database (one instance only: SQLite has one
/// writer).
pub fn run(
    database_url: Option<&str>,
    patients: u64,
    stations: usize,
    batches: usize,
) -> anyhow::Result<serde_json::Value> {
    let url = database_url
        .map(|admin| {
            chartroom_server::storage::PgStorage::create_database(
                admin,
                &format!("bench_{}", Uuid::new_v4().simple()),
            )
        })
        .transpose()?;
    let (tmp, dir, report) = crate::server::fresh_server(url)?;
    let storage = dir.open_storage()?;
    let config = chartroom_synth::SynthConfig::new(42, wall_now());
    let mut charts: Vec<Chart> = Vec::new();
    let mut next = 0;
    while next < patients {
        let end = (next + 1000).min(patients);
        let batch: Vec<Chart> = (next..end).map(|i| chartroom_synth::patient(&config, i)).collect();
        chartroom_server::records::load_charts(&*storage, &dir.record_keys()?, &batch)?;
        charts.extend(batch);
        next = end;
    }
    let units = vec!["ICU".to_string(), "MED".to_string()];
    chartroom_server::users::add_user(
        &*storage,
        "bench.nurse",
        Role::Nurse,
        units,
        &chartroom_crypto::Password::new(PASSWORD.into()),
        wall_now(),
    )?;
    let pushers = 6;
    let instances = if database_url.is_some() { 3 } else { 1 };
    let rounds: Vec<usize> = if instances > 1 { vec![1, instances] } else { vec![1] };
    let mut tokens = Vec::new();
    for i in 0..stations + pushers * rounds.len() {
        let token = chartroom_server::devices::issue_token(
            &*storage,
            &format!("bench-{i}"),
            DeviceProfile::Station,
            vec![],
            Duration::from_secs(3600),
            wall_now(),
        )?;
        tokens.push(token);
    }
    drop(storage);
    let mut dirs = vec![dir.clone()];
    for i in 1..instances {
        let copy = tmp.path().join(format!("server-{i}"));
        copy_dir(dir.path(), &copy)?;
        dirs.push(DataDir::new(copy));
    }

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut servers: Vec<RunningServer> = Vec::new();
        for d in &dirs {
            servers.push(start(d, "127.0.0.1:0".parse()?).await?);
        }
        let clients: Vec<Arc<ServerClient>> = servers
            .iter()
            .map(|s| {
                ServerClient::new(&format!("https://localhost:{}", s.addr.port()), &report.fingerprint)
                    .map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        // Every device enrolled and logged in (on the instances in turn).
        let (mut devices, mut user_id) = (Vec::new(), None);
        for (i, token) in tokens.iter().enumerate() {
            let client = &clients[i % clients.len()];
            let seed = [u8::try_from(i % 250)?.wrapping_add(1); 32];
            let probe = DeviceIdentity::new(String::new(), &seed);
            let id = client.enroll(token, &probe.public_key_hex()).await?.device_id;
            let device = DeviceIdentity::new(id, &seed);
            let login = client.login(&device, "bench.nurse", PASSWORD).await?;
            user_id = Some(login.user.id.parse::<Uuid>()?);
            devices.push(Arc::new((device, login.access_token)));
        }

        // A whole pull, as a first sync asks for it (pages of 1000 change numbers), JSON decoded.
        let (device, access) = &*devices[0];
        let t = Instant::now();
        let (mut cursor, mut rows) = (0i64, 0usize);
        loop {
            let page: PullPage =
                clients[0].get(device, access, &format!("/v1/sync/pull?after={cursor}&limit=1000")).await?;
            rows += page.patients.len() + page.records.len();
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
        let pull_rows_per_s = rows as f64 / t.elapsed().as_secs_f64();

        let patient_ids: Arc<Vec<Uuid>> = Arc::new(charts.iter().map(|c| c.patient.id).collect());
        let user_id = user_id.ok_or_else(|| anyhow::anyhow!("no device logged in"))?;

        // Ingest: six devices push 500-change batches (and upload the batches' audit entries) at
        // once, through one instance, then through all of them.
        let mut ingest = serde_json::Map::new();
        for (round, through) in rounds.into_iter().enumerate() {
            let t = Instant::now();
            let mut tasks = Vec::new();
            for p in 0..pushers {
                let device = devices[stations + round * pushers + p].clone();
                let client = clients[p % through].clone();
                let patients = patient_ids.clone();
                tasks.push(tokio::spawn(async move {
                    let (device, access) = &*device;
                    let device_id: Uuid = device.device_id.parse()?;
                    let mut head = chartroom_audit::ChainHead::GENESIS;
                    for b in 0..batches {
                        let (batch, entries) = observations(&patients, user_id, device_id, &mut head, 500, b);
                        push(&client, device, access, &batch).await?;
                        let _: serde_json::Value = client
                            .post_signed(device, access, "/v1/audit/entries", &AuditUpload { entries })
                            .await?;
                    }
                    Ok::<_, anyhow::Error>(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            let changes = (pushers * batches * 500) as f64;
            ingest.insert(
                format!("server_ingest_changes_per_s_{through}"),
                json!((changes / t.elapsed().as_secs_f64()).round()),
            );
        }

        // Push latency with every station pushing a vitals set (seven observations): paced (each
        // station every 500 ms, staggered — 100 pushes a second from the ward, far above real use),
        // then saturated (all 50 back to back, no pause: the server's queue at its worst).
        let mut paced = latencies(
            &devices[..stations],
            &clients,
            &patient_ids,
            user_id,
            Some(Duration::from_millis(500)),
        )
        .await?;
        let mut saturated = latencies(&devices[..stations], &clients, &patient_ids, user_id, None).await?;
        for server in servers {
            server.shutdown(Duration::from_secs(2)).await?;
        }
        let mut out = json!({
            "instances": instances,
            "patients": patients,
            "pull_rows": rows,
            "pull_rows_per_s": pull_rows_per_s.round(),
            "stations": stations,
            "push_p50_ms": ms(percentile(&mut paced, 0.5)),
            "push_p99_ms": ms(percentile(&mut paced, 0.99)),
            "push_saturated_p50_ms": ms(percentile(&mut saturated, 0.5)),
            "push_saturated_p99_ms": ms(percentile(&mut saturated, 0.99)),
        });
        if let Some(map) = out.as_object_mut() {
            map.extend(ingest);
        }
        Ok(out)
    })
}

/// Every station pushes a vitals set 10 times, each `every` (staggered) or back to back, after a
/// warm-up push each (new database connections, their statement caches) that is not counted; the
/// latency of each counted push.
async fn latencies(
    devices: &[Arc<(DeviceIdentity, String)>],
    clients: &[Arc<ServerClient>],
    patients: &Arc<Vec<Uuid>>,
    user_id: Uuid,
    every: Option<Duration>,
) -> anyhow::Result<Vec<Duration>> {
    let mut all = Vec::new();
    for (rounds, every) in [(1, None), (10, every)] {
        let mut tasks = Vec::new();
        for (s, device) in devices.iter().enumerate() {
            let (device, client, patients) =
                (device.clone(), clients[s % clients.len()].clone(), patients.clone());
            tasks.push(tokio::spawn(async move {
                let (device, access) = &*device;
                let device_id: Uuid = device.device_id.parse()?;
                let mut head = chartroom_audit::ChainHead::GENESIS;
                let mut times = Vec::new();
                if let Some(every) = every {
                    tokio::time::sleep(every.mul_f64(s as f64 / 50.0)).await;
                }
                for round in 0..rounds {
                    let (batch, _) =
                        observations(&patients, user_id, device_id, &mut head, 7, s * 11 + round);
                    let t = Instant::now();
                    push(&client, device, access, &batch).await?;
                    times.push(t.elapsed());
                    if let Some(every) = every {
                        tokio::time::sleep(every.saturating_sub(t.elapsed())).await;
                    }
                }
                Ok::<_, anyhow::Error>(times)
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.extend(task.await??);
        }
        if rounds > 1 {
            all = times;
        }
    }
    Ok(all)
}

/// `n` heart-rate observations on random patients, as a push batch, with the audit entries a
/// station would write for them (appended to `head`).
fn observations(
    patients: &[Uuid],
    user_id: Uuid,
    device_id: Uuid,
    head: &mut chartroom_audit::ChainHead,
    n: usize,
    salt: usize,
) -> (PushBatch, Vec<chartroom_audit::AuditEntry>) {
    let mut changes = Vec::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let patient = patients[(salt * 7919 + i * 104_729) % patients.len()];
        let o = chartroom_domain::Observation {
            id: Uuid::now_v7(),
            patient_id: patient,
            vital: VitalSign::HeartRate,
            value: 60.0 + ((salt + i) % 60) as f64,
            effective_at: wall_now(),
            recorded_by: user_id,
            version: 0,
        };
        let mut e = chartroom_audit::Event::new(wall_now(), "create", "observations", "ok");
        e.resource_id = Some(o.id.to_string());
        e.patient_ids = vec![patient];
        entries.push(head.append(device_id, Uuid::now_v7(), e));
        changes.push(Change {
            change_id: Uuid::now_v7().to_string(),
            base_version: 0,
            change: ChangeRecord::Observation(o),
        });
    }
    (PushBatch { changes }, entries)
}

async fn push(
    client: &ServerClient,
    device: &DeviceIdentity,
    access: &str,
    batch: &PushBatch,
) -> anyhow::Result<()> {
    let r: PushResponse = client.post_signed(device, access, "/v1/sync/push", batch).await?;
    anyhow::ensure!(
        r.results.iter().all(|c| matches!(c.outcome, ChangeOutcome::Applied { .. })),
        "not every change applied"
    );
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
