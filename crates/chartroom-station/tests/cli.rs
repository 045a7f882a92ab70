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
