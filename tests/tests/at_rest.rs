//! Encryption at rest, end to end: a real server seeded with 1,000 synthetic patients, a station
//! that enrolls, logs in online, pulls everything, records vitals and writes notes, pushes, pulls
//! again and uploads its audit trail. Then every byte of every file under the station profile and
//! the server data directory (databases, WAL/SHM/journal files, JSON side files, keys, certificates)
//! is searched for patient names, MRNs and note texts — once with everything still open and
//! running, once after the station locked and the server shut down. None may appear.
//!
//! The scanner checks itself: each scan also finds PHI that the test deliberately writes in
//! plaintext to scratch files inside both trees (then removes), so a scanner that reads nothing, or
//! skips a tree or a subdirectory, fails the test instead of passing it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chartroom_client::ServerClient;
use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, Role, VitalSign};
use chartroom_server::{init, start, wall_now, DataDir, InitOptions};
use chartroom_station::{LockedVault, MemoryKeystore, Profile};

const PATIENTS: u64 = 1000;
const PASSWORD: &str = "night-shift-kettle-77";

/// Byte strings to look for, indexed by their first two bytes so that one pass over a file costs a
/// table lookup per byte (the files total tens of MB; this runs in a debug build).
struct Needles {
    list: Vec<(&'static str, Vec<u8>)>,
    by_prefix: Vec<Vec<usize>>,
    /// Whether any needle starts with these two bytes (the fast path rejects almost every offset).
    used: Vec<bool>,
}

impl Needles {
    fn new(items: impl IntoIterator<Item = (&'static str, String)>) -> Needles {
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for (kind, text) in items {
            // Two bytes index the table. Five bytes keep chance matches in ciphertext rare: the ~17
            // five-letter names over the ~150 MB both scans read match random bytes by chance in
            // about one run in 450; such a hit is one isolated name in a database file, while a
            // real leak shows many (the failure prints file and offset of each).
            assert!(text.len() >= 5, "needle too short to search reliably: {text:?}");
            if seen.insert(text.clone()) {
                list.push((kind, text.into_bytes()));
            }
        }
        let mut by_prefix = vec![Vec::new(); 1 << 16];
        for (i, (_, bytes)) in list.iter().enumerate() {
            by_prefix[usize::from(bytes[0]) << 8 | usize::from(bytes[1])].push(i);
        }
        let used = by_prefix.iter().map(|v| !v.is_empty()).collect();
        Needles { list, by_prefix, used }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    file: PathBuf,
    offset: usize,
    kind: &'static str,
    needle: String,
}

/// What one scan read and found.
#[derive(Debug, Default)]
struct Scan {
    files: Vec<(PathBuf, u64)>,
    hits: Vec<Hit>,
}

impl Scan {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }
    fn has_file(&self, name: &str) -> bool {
        self.files.iter().any(|(p, _)| p.file_name().is_some_and(|f| f == name))
    }
}

/// Every regular file under `roots`, recursively (symbolic links are not followed).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            walk(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

fn scan(roots: &[&Path], needles: &Needles) -> Scan {
    let mut files = Vec::new();
    for root in roots {
        walk(root, &mut files);
    }
    files.sort();
    let mut result = Scan::default();
    for file in files {
        // A WAL or journal file may vanish between listing and reading (a checkpoint): skip it.
        let Ok(bytes) = std::fs::read(&file) else { continue };
        // Plain slices and a `while` loop: in a debug build every `Vec` index and range step is a
        // function call, which makes this pass several times slower.
        let (b, used): (&[u8], &[bool]) = (&bytes, &needles.used);
        let mut offset = 0;
        while offset + 1 < b.len() {
            let key = (b[offset] as usize) << 8 | b[offset + 1] as usize;
            if used[key] {
                for &i in &needles.by_prefix[key] {
                    let (kind, needle) = &needles.list[i];
                    if b[offset..].starts_with(needle) {
                        let needle = String::from_utf8_lossy(needle).into_owned();
                        result.hits.push(Hit { file: file.clone(), offset, kind, needle });
                    }
                }
            }
            offset += 1;
        }
        result.files.push((file, bytes.len() as u64));
    }
    result
}

/// Writes PHI in plaintext to scratch files in both trees (one nested two levels deep, needles at
/// the very start and the very end of a file), scans, removes them, and returns the scan after
/// checking that exactly the planted needles were found in the scratch files.
fn scan_with_self_check(roots: [&Path; 2], needles: &Needles, planted: [&str; 4]) -> Scan {
    let [station, server] = roots;
    let deep = station.join("scratch-canary/nested");
    std::fs::create_dir_all(&deep).unwrap();
    let a = deep.join("canary.bin");
    let b = server.join("canary.tmp");
    // Pseudo-random filler around the plaintext, like the ciphertext it hides in.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    };
    let file_a = [planted[0].as_bytes(), &noise(300_000), planted[1].as_bytes()].concat();
    let file_b =
        [noise(1000), planted[2].as_bytes().to_vec(), noise(1000), planted[3].as_bytes().to_vec()].concat();
    std::fs::write(&a, &file_a).unwrap();
    std::fs::write(&b, &file_b).unwrap();
    let mut result = scan(&roots, needles);
    std::fs::remove_dir_all(station.join("scratch-canary")).unwrap();
    std::fs::remove_file(&b).unwrap();

    let (canary, real): (Vec<Hit>, Vec<Hit>) =
        result.hits.drain(..).partition(|h| h.file == a || h.file == b);
    let found: BTreeSet<(PathBuf, &str)> =
        canary.iter().map(|h| (h.file.clone(), h.needle.as_str())).collect();
    let expected: BTreeSet<(PathBuf, &str)> =
        [(a.clone(), planted[0]), (a.clone(), planted[1]), (b.clone(), planted[2]), (b.clone(), planted[3])]
            .into_iter()
            .collect();
    // (Prefix needles match too, hence a superset.)
    assert!(
        found.is_superset(&expected),
        "the scanner missed PHI planted in plaintext, it cannot be trusted: found {found:?}"
    );
    assert!(canary.iter().any(|h| h.file == a && h.offset == 0), "a needle at offset 0 was missed");
    assert!(
        canary.iter().any(|h| h.file == a && h.offset == file_a.len() - planted[1].len()),
        "a needle at the end of a file was missed"
    );
    result.files.retain(|(f, _)| f != &a && f != &b);
    result.hits = real;
    result
}

fn report(when: &str, s: &Scan) {
    eprintln!("{when}: scanned {} files, {} bytes", s.files.len(), s.bytes());
    for (f, n) in &s.files {
        eprintln!("  {n:>10}  {}", f.display());
    }
    for h in s.hits.iter().take(20) {
        eprintln!("  PHI {} {:?} in {} at byte {}", h.kind, h.needle, h.file.display(), h.offset);
    }
}

// hipaa (a)(2)(iv): after a full workflow, no file of the station or the server holds PHI in clear
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_phi_in_any_file_of_the_station_or_the_server() {
    let t0 = Instant::now();
    let mut phase = Instant::now();
    let mut lap = |what: &str| {
        eprintln!("{what}: {:.1?}", phase.elapsed());
        phase = Instant::now();
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let profile_dir = tmp.path().join("station");
    let init_report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();

    // 1,000 synthetic patients over ICU and MED, loaded the way `chartroom-server seed` loads them.
    let config = chartroom_synth::SynthConfig::new(7, wall_now());
    let charts: Vec<Chart> = (0..PATIENTS).map(|i| chartroom_synth::patient(&config, i)).collect();
    let keys = dir.record_keys().unwrap();
    let loaded = chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
    assert_eq!(loaded.imported, charts.len());
    lap("seed 1,000 patients");

    let pw = Password::new(PASSWORD.into());
    let units = vec!["ICU".to_string(), "MED".to_string()];
    chartroom_server::users::add_user(&*storage, "kim.rn", Role::Nurse, units.clone(), &pw, wall_now())
        .unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "float-station-1",
        DeviceProfile::Station,
        units,
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client =
        ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &init_report.fingerprint)
            .unwrap();

    // The station: enroll, first online login, first sync of everything.
    let ks = Arc::new(MemoryKeystore::default());
    let locked = LockedVault::enroll(
        Profile::new(&profile_dir),
        ks.clone(),
        &client,
        &init_report.fingerprint,
        &token,
        wall_now(),
    )
    .await
    .unwrap();
    let mut vault = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
    lap("enroll and log in");
    let pulled = vault.pull(&client, wall_now()).await.unwrap();
    assert_eq!((pulled.charts, pulled.complete), (charts.len(), true), "{pulled:?}");
    assert!(vault.first_sync_complete().unwrap());
    assert_eq!(vault.census(None, wall_now()).unwrap().len(), charts.len());
    lap("first sync (pull 1,000 charts)");

    // Clinical work: open charts, record vitals, write notes with text found nowhere else.
    let notes: Vec<String> = (0..12)
        .map(|i| {
            format!("Wobblefinch review {i}: tingling in both feet, café au lait macule on the left arm")
        })
        .collect();
    for (i, chart) in charts.iter().step_by(83).take(notes.len()).enumerate() {
        let mrn = &chart.patient.mrn;
        let local = vault.chart_by_mrn(mrn, 50, wall_now()).unwrap();
        assert_eq!(local.patient.name, chart.patient.name);
        vault
            .record_vitals(
                mrn,
                &[
                    (VitalSign::HeartRate, 70.0 + i as f64),
                    (VitalSign::SystolicBp, 121.0),
                    (VitalSign::DiastolicBp, 79.0),
                ],
                wall_now(),
            )
            .unwrap();
        vault.write_note(mrn, &notes[i], i % 2 == 0, wall_now()).unwrap();
    }
    let pushed = vault.push_outbox(&client, wall_now()).await.unwrap();
    assert_eq!(
        (pushed.applied, pushed.conflicts, pushed.rejected, pushed.pending),
        (notes.len() * 4, 0, 0, 0)
    );
    let back = vault.pull(&client, wall_now()).await.unwrap();
    assert_eq!((back.charts, back.changes, back.complete), (0, notes.len() * 4, true));
    let uploaded = vault.upload_audit(&client).await.unwrap();
    assert!(uploaded > notes.len() as u64 * 2, "views and writes are in the uploaded trail: {uploaded}");
    lap("vitals, notes, push, pull, audit upload");

    // What must not be readable from the files: every MRN, every family and given name of five
    // letters or more, every note text (whole, and its first 24 characters in case something
    // stores a preview), the station's own notes included.
    let mut phi: Vec<(&'static str, String)> = Vec::new();
    for c in &charts {
        phi.push(("mrn", c.patient.mrn.clone()));
        phi.push(("family name", c.patient.name.family.clone()));
        phi.push(("given name", c.patient.name.given.clone()));
        for n in &c.notes {
            phi.push(("note text", n.text.clone()));
            phi.push(("note text prefix", n.text.chars().take(24).collect()));
        }
    }
    for n in &notes {
        phi.push(("station note", n.clone()));
        phi.push(("station note prefix", n.chars().take(24).collect()));
    }
    phi.retain(|(_, s)| s.chars().count() >= 5);
    let needles = Needles::new(phi);
    let mrns = charts.iter().map(|c| c.patient.mrn.as_str()).collect::<BTreeSet<_>>();
    assert_eq!(
        needles.list.iter().filter(|(k, _)| *k == "mrn").count(),
        mrns.len(),
        "every MRN is searched for"
    );
    let planted = |k: usize| -> [&str; 4] {
        let c = &charts[k];
        [
            c.patient.mrn.as_str(),
            c.patient.name.family.as_str(),
            notes[k % notes.len()].as_str(),
            charts.iter().flat_map(|c| &c.notes).nth(k).unwrap().text.as_str(),
        ]
    };
    lap("build needles");

    // The server's audit export — what an auditor takes away — names no patient either (the entries
    // the station uploaded included).
    let mut export = Vec::new();
    for format in [chartroom_server::audit::ExportFormat::Jsonl, chartroom_server::audit::ExportFormat::Csv] {
        chartroom_server::audit::export(&*storage, &Default::default(), format, &mut export, wall_now())
            .unwrap();
    }
    assert!(export.len() > 10_000, "the export holds the trail: {} bytes", export.len());
    let export_file = tmp.path().join("audit-export");
    std::fs::create_dir_all(&export_file).unwrap();
    std::fs::write(export_file.join("trail.txt"), &export).unwrap();
    let in_export = scan(&[&export_file], &needles);
    assert!(
        in_export.hits.is_empty(),
        "PHI in the audit export: {:?}",
        &in_export.hits[..in_export.hits.len().min(5)]
    );

    // 1. Everything still open: the server running (and a second connection to its database, as
    //    the admin commands hold), the station unlocked with its database open.
    let running = scan_with_self_check([&profile_dir, dir.path()], &needles, planted(1));
    report("while running", &running);
    assert!(running.has_file("cache.db") && running.files.iter().any(|(p, _)| p == &dir.database_path()));
    assert!(running.bytes() > 10_000_000, "the stores hold 1,000 charts twice: {} bytes", running.bytes());
    assert!(
        running.hits.is_empty(),
        "PHI readable in plaintext while running: {:?}",
        &running.hits[..running.hits.len().min(10)]
    );
    lap("scan while running");

    // 2. Everything closed: the station locked, the server shut down, every connection dropped.
    let locked = vault.lock();
    drop(locked);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
    drop(storage);
    let stopped = scan_with_self_check([&profile_dir, dir.path()], &needles, planted(2));
    report("after shutdown", &stopped);
    assert!(stopped.has_file("cache.db") && stopped.files.iter().any(|(p, _)| p == &dir.database_path()));
    assert!(
        stopped.hits.is_empty(),
        "PHI readable in plaintext at rest: {:?}",
        &stopped.hits[..stopped.hits.len().min(10)]
    );
    lap("scan after shutdown");
    eprintln!("total: {:.1?}", t0.elapsed());
}
