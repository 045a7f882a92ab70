//! `chartroom-bench audit`: the audit trail's cost — appending an entry on a station (its own
//! SQLCipher transaction, fsync'd), verifying chains, and signing a server checkpoint.

use std::time::{Duration, Instant};

use chartroom_audit::{ChainHead, Event};
use chartroom_crypto::DataKey;
use chartroom_domain::Timestamp;
use chartroom_store::{Actor, Store, StoreOptions};
use serde_json::json;
use uuid::Uuid;

use crate::{ms, percentile};

pub fn run(appends: usize, entries: u64) -> anyhow::Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let mut store =
        Store::create(&tmp.path().join("audit.db"), DataKey::generate(), StoreOptions::default())?;
    let actor = Actor {
        device_id: Uuid::now_v7(),
        user_id: Some(Uuid::now_v7()),
        username: Some("bench.nurse".into()),
        host: "bench".into(),
    };
    let mut times = Vec::with_capacity(appends);
    for i in 0..appends {
        let mut e = Event::new(Timestamp(1_800_000_000_000 + i64::try_from(i)?), "view", "patient", "ok");
        e.patient_ids = vec![Uuid::now_v7()];
        let t = Instant::now();
        store.record(&actor, e)?;
        times.push(t.elapsed());
    }
    let t = Instant::now();
    let verified = store.verify_audit(actor.device_id)?.map_err(|b| anyhow::anyhow!("{b}"))?;
    let station_verify = t.elapsed();

    // The server: `entries` entries across a device chain and its own, then a full verify.
    let dir = chartroom_server::DataDir::new(tmp.path().join("server"));
    chartroom_server::init(&dir, &chartroom_server::InitOptions::default())?;
    let storage = dir.open_storage()?;
    let device = Uuid::now_v7();
    let mut head = ChainHead::GENESIS;
    let mut next = 0;
    while next < entries {
        let batch: Vec<_> = (next..(next + 1000).min(entries))
            .map(|i| {
                let mut e = Event::new(
                    Timestamp(1_800_000_000_000 + i64::try_from(i).unwrap_or(0)),
                    "view",
                    "patient",
                    "ok",
                );
                e.patient_ids = vec![Uuid::now_v7()];
                head.append(device, Uuid::now_v7(), e)
            })
            .collect();
        storage.ingest_entries(device, &batch)?;
        next += 1000;
    }
    let key = dir.signing_key()?;
    let t = Instant::now();
    chartroom_server::audit::checkpoint_if_due(&*storage, &key, chartroom_server::wall_now())?;
    let checkpoint = t.elapsed();
    let t = Instant::now();
    let v = chartroom_server::audit::verify(&*storage, &key.verifying_key())?
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    let server_verify = t.elapsed();
    let per_s = |n: u64, d: Duration| (n as f64 / d.as_secs_f64()).round();
    Ok(json!({
        "audit_append_p50_ms": ms(percentile(&mut times, 0.5)),
        "audit_append_p99_ms": ms(percentile(&mut times, 0.99)),
        "station_entries": verified,
        "station_verify_entries_per_s": per_s(verified, station_verify),
        "server_entries": v.entries,
        "audit_verify_entries_per_s": per_s(v.entries, server_verify),
        "checkpoint_ms": ms(checkpoint),
    }))
}
