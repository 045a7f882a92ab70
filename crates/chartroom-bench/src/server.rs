//! `chartroom-bench server`: the central server at scale — seeding, logins (Argon2id bound), and
//! chart and census reads, measured both end to end over HTTPS (pinned TLS 1.3, device-signed
//! requests) and server-side (the handler's work without the network).

use std::time::{Duration, Instant};

use chartroom_client::{DeviceIdentity, ServerClient};
use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, Role};
use chartroom_protocol::{CensusPage, ChartResponse};
use chartroom_server::auth::Origin;
use chartroom_server::records::{load_charts, Reader};
use chartroom_server::{init, start, wall_now, DataDir, InitOptions};
use rand::Rng;
use serde_json::json;

use crate::{ms, percentile};

const PASSWORD: &str = "bench-password-long-enough";

/// A fresh server data directory in a temporary directory, with the anomaly rule lifted: one
/// benchmark client reads and writes thousands of charts an hour, which would (rightly) disable
/// such an account.
pub fn fresh_server(
    database_url: Option<String>,
) -> anyhow::Result<(tempfile::TempDir, DataDir, chartroom_server::InitReport)> {
    let tmp = tempfile::tempdir()?;
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions { database_url, ..InitOptions::default() })?;
    let mut config = dir.read_config()?;
    config.anomaly.floor = u64::MAX;
    std::fs::write(dir.path().join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    Ok((tmp, dir, report))
}

/// `database_url`: the admin URL of a PostgreSQL cluster (the run gets a database of its own), or
/// `None` for the embedded database.
pub fn run(
    patients: u64,
    logins: usize,
    reads: usize,
    database_url: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let url = database_url
        .map(|admin| {
            chartroom_server::storage::PgStorage::create_database(
                admin,
                &format!("bench_{}", uuid::Uuid::new_v4().simple()),
            )
        })
        .transpose()?;
    let (_tmp, dir, report) = fresh_server(url)?;
    let storage = dir.open_storage()?;
    let keys = dir.record_keys()?;

    let config = chartroom_synth::SynthConfig::new(42, wall_now());
    let started = Instant::now();
    let mut ids = Vec::with_capacity(usize::try_from(patients)?);
    let mut next = 0;
    while next < patients {
        let end = (next + 1000).min(patients);
        let charts: Vec<Chart> = (next..end).map(|i| chartroom_synth::patient(&config, i)).collect();
        ids.extend(charts.iter().map(|c| c.patient.id));
        load_charts(&*storage, &keys, &charts)?;
        next = end;
    }
    let seed_s = started.elapsed().as_secs_f64();
    // The embedded database's file (PostgreSQL's size is the cluster's business).
    let db_mib = std::fs::metadata(dir.database_path()).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0));

    chartroom_server::users::add_user(
        &*storage,
        "bench.nurse",
        Role::Nurse,
        vec!["ICU".into(), "MED".into()],
        &Password::new(PASSWORD.into()),
        wall_now(),
    )?;
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "bench-station",
        DeviceProfile::Station,
        vec![],
        Duration::from_secs(3600),
        wall_now(),
    )?;

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let server = start(&dir, "127.0.0.1:0".parse()?).await?;
        let client =
            ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint)?;
        let seed = [5u8; 32];
        let probe = DeviceIdentity::new(String::new(), &seed);
        let device =
            DeviceIdentity::new(client.enroll(&token, &probe.public_key_hex()).await?.device_id, &seed);

        let mut login_times = Vec::with_capacity(logins);
        let mut access = String::new();
        for _ in 0..logins {
            let t = Instant::now();
            access = client.login(&device, "bench.nurse", PASSWORD).await?.access_token;
            login_times.push(t.elapsed());
        }

        let mut rng = rand::thread_rng();
        let mut chart_times = Vec::with_capacity(reads);
        for _ in 0..reads {
            let id = ids[rng.gen_range(0..ids.len())];
            let t = Instant::now();
            let chart: ChartResponse =
                client.get(&device, &access, &format!("/v1/patients/{id}/chart")).await?;
            chart_times.push(t.elapsed());
            anyhow::ensure!(chart.chart.patient.id == id, "wrong chart");
        }
        let mut census_times = Vec::with_capacity(reads / 10);
        for i in 0..(reads / 10).max(1) {
            let unit = if i % 2 == 0 { "ICU" } else { "MED" };
            let t = Instant::now();
            let page: CensusPage =
                client.get(&device, &access, &format!("/v1/units/{unit}/census?limit=100")).await?;
            census_times.push(t.elapsed());
            anyhow::ensure!(!page.patients.is_empty(), "empty census");
        }

        // Server-side: the handler's work (scope check, storage, unsealing, event) without TLS/HTTP.
        let owner = storage
            .session_by_access(&chartroom_server::auth::sha256(&access), wall_now())?
            .ok_or_else(|| anyhow::anyhow!("session vanished"))?;
        let origin = Origin::default();
        // The anomaly rule is lifted: the benchmark reads far faster than any clinician.
        let anomaly = chartroom_server::oversight::AnomalyRule { floor: u64::MAX, ..Default::default() };
        let reader = Reader {
            storage: &*storage,
            keys: &keys,
            owner: &owner,
            now: wall_now(),
            origin: &origin,
            anomaly,
        };
        let mut server_chart = Vec::with_capacity(reads);
        for _ in 0..reads {
            let id = ids[rng.gen_range(0..ids.len())];
            let t = Instant::now();
            let chart = chartroom_server::records::chart(reader, id, 200)?;
            server_chart.push(t.elapsed());
            anyhow::ensure!(chart.chart.patient.id == id, "wrong chart");
        }
        let mut server_census = Vec::with_capacity(reads / 10);
        for _ in 0..(reads / 10).max(1) {
            let t = Instant::now();
            chartroom_server::records::census(reader, "ICU", None, 100)?;
            server_census.push(t.elapsed());
        }
        server.shutdown(Duration::from_secs(2)).await?;
        Ok::<_, anyhow::Error>(json!({
            "patients": patients,
            "seed_s": (seed_s * 10.0).round() / 10.0,
            "database_mib": db_mib.round(),
            "argon2id": "m=64MiB t=3 p=1",
            "logins": logins,
            "login_p50_ms": ms(percentile(&mut login_times, 0.5)),
            "login_p99_ms": ms(percentile(&mut login_times, 0.99)),
            "chart_reads": reads,
            "chart_get_p50_ms": ms(percentile(&mut chart_times, 0.5)),
            "chart_get_p99_ms": ms(percentile(&mut chart_times, 0.99)),
            "chart_get_server_p99_ms": ms(percentile(&mut server_chart, 0.99)),
            "census_p50_ms": ms(percentile(&mut census_times, 0.5)),
            "census_p99_ms": ms(percentile(&mut census_times, 0.99)),
            "census_server_p99_ms": ms(percentile(&mut server_census, 0.99)),
        }))
    })
}
