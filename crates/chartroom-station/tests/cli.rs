//! The `chartroom-station` binary end to end: the demo, census and chart commands against a real
//! profile and the real OS keyring, and the one-line error contract.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn keyring_available() -> bool {
    match chartroom_station::OsKeyring::connect() {
        Ok(_) => true,
        Err(e) if std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none() => {
            eprintln!("skipping: no OS keyring ({e})");
            false
        }
        Err(e) => panic!("CHARTROOM_REQUIRE_KEYRING is set but the OS keyring is unavailable: {e}"),
    }
}

fn station(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chartroom-station"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn demo_then_census_and_chart() {
    if !keyring_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile");
    let p = profile.to_str().unwrap();
    let out = station(&["--profile-dir", p, "demo", "--patients", "8"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("refused (wrong username or password)"), "{text}");
    assert!(text.contains("Allergies:"), "{text}");

    let pw = format!("{}\n", chartroom_station::demo::DEMO_PASSWORD);
    let out = station(
        &["--profile-dir", p, "--username", "nurse.demo", "--password-stdin", "census", "--json"],
        &pw,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let mrn = rows[0]["mrn"].as_str().unwrap().to_owned();

    let out = station(
        &[
            "--profile-dir",
            p,
            "--username",
            "nurse.demo",
            "--password-stdin",
            "chart",
            "--mrn",
            &mrn,
            "--json",
        ],
        &pw,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chart: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(chart["patient"]["mrn"], mrn.as_str());

    // Wrong password: exit 1, exactly one line on stderr, no PHI.
    let out = station(
        &["--profile-dir", p, "--username", "nurse.demo", "--password-stdin", "chart", "--mrn", &mrn],
        "nope\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong username or password"));
    assert!(!err.contains(&mrn));
    assert!(out.stdout.is_empty());

    // Offline edits: a vitals set and a signed note go into the record, the audit chain and the outbox.
    let as_nurse = |args: &[&str], stdin: &str| {
        let mut all = vec!["--profile-dir", p, "--username", "nurse.demo", "--password-stdin"];
        all.extend_from_slice(args);
        station(&all, stdin)
    };
    let out = as_nurse(&["vitals", "--mrn", &mrn, "--hr", "88", "--sbp", "131", "--spo2", "96"], &pw);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "recorded 3 vital signs (queued for sync)");
    let out = as_nurse(&["vitals", "--mrn", &mrn, "--hr", "500"], &pw);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("heart_rate: must be between 20 and 300") && !err.contains(&mrn), "{err}");
    let out = as_nurse(
        &["note", "--mrn", &mrn, "--text-stdin", "--sign"],
        &format!("{pw}Settled overnight.\nNo complaints.\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_nurse(&["outbox", "--json"], &pw);
    let outbox: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = outbox.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["observations", "observations", "observations", "notes"]);
    assert!(outbox.iter().all(|e| e["state"] == "pending" && e["base_version"] == 0));
    let out = as_nurse(&["chart", "--mrn", &mrn, "--json"], &pw);
    let chart: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(chart["observations"][0]["value"], 88.0, "newest first: {}", chart["observations"][0]);
    assert_eq!(chart["notes"][0]["text"], "Settled overnight.\nNo complaints.");

    // The station's audit chain: intact, and it holds the failed login (moved in at the next unlock).
    let out = station(
        &["--profile-dir", p, "--username", "nurse.demo", "--password-stdin", "audit", "verify"],
        &pw,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let n: u64 =
        line.trim().strip_prefix("audit ok: ").unwrap().strip_suffix(" entries").unwrap().parse().unwrap();
    assert!(n >= 10, "demo, census, chart, failed login, unlocks and locks are all recorded: {line}");

    // Running the demo again on the same profile refuses and changes nothing.
    let out = station(&["--profile-dir", p, "demo"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds"));
}

#[test]
fn unenrolled_profile_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nothing");
    let out = station(
        &["--profile-dir", p.to_str().unwrap(), "--username", "u", "--password-stdin", "census"],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    // Either the keyring is missing (clear message) or the profile is not enrolled.
    assert!(err.contains("enroll it first") || err.contains("keyring"), "{err}");
}

/// The CLI contract of enrollment: `enroll` prints one line, a user's first census logs in online,
/// and with the server stopped the same command works offline.
#[test]
fn cli_enroll_then_online_then_offline() {
    if !keyring_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = chartroom_server::DataDir::new(tmp.path().join("server"));
    let report = chartroom_server::init(&dir, &chartroom_server::InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let password = "night-shift-kettle-77";
    chartroom_server::users::add_user(
        &*storage,
        "kim.rn",
        chartroom_domain::Role::Nurse,
        vec!["ICU".into()],
        &chartroom_crypto::Password::new(password.into()),
        chartroom_server::wall_now(),
    )
    .unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-7",
        chartroom_domain::DeviceProfile::Station,
        vec![],
        std::time::Duration::from_secs(600),
        chartroom_server::wall_now(),
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(chartroom_server::start(&dir, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let p = tmp.path().join("station");
    let p = p.to_str().unwrap();

    let out = station(
        &[
            "--profile-dir",
            p,
            "enroll",
            "--server",
            &url,
            "--fingerprint",
            &report.fingerprint,
            "--token",
            &token,
        ],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("enrolled as icu-7 (device "), "{line}");
    // The token was used: a second enrollment elsewhere is refused with one line.
    let other = tmp.path().join("other");
    let out = station(
        &[
            "--profile-dir",
            other.to_str().unwrap(),
            "enroll",
            "--server",
            &url,
            "--fingerprint",
            &report.fingerprint,
            "--token",
            &token,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("device.invalid_token") && err.lines().count() == 1, "{err}");

    let census = |stdin: &str| {
        station(&["--profile-dir", p, "--username", "kim.rn", "--password-stdin", "census", "--json"], stdin)
    };
    let out = census(&format!("{password}\n"));
    assert!(out.status.success(), "online first login: {}", String::from_utf8_lossy(&out.stderr));
    runtime.block_on(server.shutdown(std::time::Duration::from_secs(2))).unwrap();
    let out = census(&format!("{password}\n"));
    assert!(out.status.success(), "offline login: {}", String::from_utf8_lossy(&out.stderr));
    let out = station(
        &["--profile-dir", p, "--username", "kim.rn", "--password-stdin", "audit", "verify"],
        &format!("{password}\n"),
    );
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("audit ok: "));
    // Clean up this test's keyring entry.
    let device: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::path::Path::new(p).join("device.json")).unwrap()).unwrap();
    let id: uuid::Uuid = device["device_id"].as_str().unwrap().parse().unwrap();
    use chartroom_station::DeviceSecretStore;
    chartroom_station::OsKeyring::connect().unwrap().delete(id).unwrap();
}

/// The CLI contract of recovery: with the keyring entry gone a command fails with one line; an
/// unapproved `recover` fails and changes nothing; an approved one re-keys, pushes the pending
/// vitals and prints what it did; then the user works offline again.
#[test]
fn cli_recover_after_keyring_loss() {
    if !keyring_available() {
        return;
    }
    use chartroom_station::DeviceSecretStore;
    let tmp = tempfile::tempdir().unwrap();
    let dir = chartroom_server::DataDir::new(tmp.path().join("server"));
    let report = chartroom_server::init(&dir, &chartroom_server::InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let password = "night-shift-kettle-77";
    let now = chartroom_server::wall_now();
    let nurse = chartroom_crypto::Password::new(password.into());
    let icu = vec!["ICU".to_string()];
    chartroom_server::users::add_user(
        &*storage,
        "kim.rn",
        chartroom_domain::Role::Nurse,
        icu.clone(),
        &nurse,
        now,
    )
    .unwrap();
    let config = chartroom_synth::SynthConfig::new(3, now);
    let chart =
        (0..4).map(|i| chartroom_synth::patient(&config, i)).find(|c| c.patient.unit == "ICU").unwrap();
    chartroom_server::records::load_charts(
        &*storage,
        &dir.record_keys().unwrap(),
        std::slice::from_ref(&chart),
    )
    .unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-8",
        chartroom_domain::DeviceProfile::Station,
        icu,
        std::time::Duration::from_secs(600),
        now,
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(chartroom_server::start(&dir, "127.0.0.1:0".parse().unwrap())).unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let p = tmp.path().join("station");
    let p = p.to_str().unwrap();
    let pw = format!("{password}\n");
    let enroll = station(
        &[
            "--profile-dir",
            p,
            "enroll",
            "--server",
            &url,
            "--fingerprint",
            &report.fingerprint,
            "--token",
            &token,
        ],
        "",
    );
    assert!(enroll.status.success(), "{}", String::from_utf8_lossy(&enroll.stderr));
    let as_kim = |args: &[&str]| {
        let mut all = vec!["--profile-dir", p, "--username", "kim.rn", "--password-stdin"];
        all.extend_from_slice(args);
        station(&all, &pw)
    };
    let out = as_kim(&["sync"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_kim(&["vitals", "--mrn", &chart.patient.mrn, "--hr", "88"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let device: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::path::Path::new(p).join("device.json")).unwrap()).unwrap();
    let id: uuid::Uuid = device["device_id"].as_str().unwrap().parse().unwrap();
    let keyring = chartroom_station::OsKeyring::connect().unwrap();
    keyring.delete(id).unwrap();
    let out = as_kim(&["outbox"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not available in the system keyring") && err.lines().count() == 1, "{err}");

    let slots = std::fs::read(std::path::Path::new(p).join("keyslots.json")).unwrap();
    let out = as_kim(&["recover", "--token", "crv1_not-approved"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("recovery token is not valid") && err.lines().count() == 1, "{err}");
    assert_eq!(
        std::fs::read(std::path::Path::new(p).join("keyslots.json")).unwrap(),
        slots,
        "nothing changed"
    );

    let (_, approved) = chartroom_server::devices::approve_recovery(
        &*storage,
        "icu-8",
        std::time::Duration::from_secs(600),
        now,
    )
    .unwrap();
    let out = as_kim(&["recover", "--token", &approved]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("recovered icu-8 (device "), "{text}");
    assert!(text.contains("1 user key slot(s) dropped") && text.contains("pushed: 1 applied"), "{text}");

    runtime.block_on(server.shutdown(std::time::Duration::from_secs(2))).unwrap();
    let out = as_kim(&["outbox"]);
    assert!(out.status.success(), "offline again: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains("0 change(s) not yet on the server"));
    keyring.delete(id).unwrap();
}
