//! Signed updates end to end: a release signed with `scripts/sign-release` (real minisign, a
//! throwaway key), published with `chartroom-server updates publish`, checked and downloaded by
//! `chartroom-station update`. A valid update is offered and downloaded; a tampered package, a
//! tampered manifest, another key, an unsigned manifest and a downgrade are refused, each with a
//! message that says which.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chartroom_tests::{admin, run_with_stdin, station_command, CliServer};
use rand::RngCore;

fn tool_available(name: &str) -> bool {
    let found = Command::new(name).arg("-v").output().is_ok();
    assert!(
        found || std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none(),
        "{name} is required in CI (scripts/setup-debian installs it)"
    );
    found
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A throwaway minisign key pair in `dir`: (public, secret).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (public, secret) = (dir.join(format!("{name}.pub")), dir.join(format!("{name}.key")));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (public, secret)
}

/// A release of `version` (two stand-in packages) signed with `key` into `dir`.
fn release(dir: &Path, version: &str, key: &Path) -> PathBuf {
    let out_dir = dir.join(format!("release-{version}-{}", key.file_stem().unwrap().to_string_lossy()));
    std::fs::create_dir_all(&out_dir).unwrap();
    for name in [format!("chartroom_{version}_amd64.deb"), format!("chartroom-{version}-1.x86_64.rpm")] {
        let mut bytes = vec![0u8; 200_000];
        rand::thread_rng().fill_bytes(&mut bytes);
        std::fs::write(out_dir.join(name), bytes).unwrap();
    }
    let out = Command::new(repo().join("scripts/sign-release"))
        .arg("--key")
        .arg(key)
        .args(["--version", version, "--notes", "Faster census search."])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out_dir
}

// hipaa (e)(2)(i): only updates signed by the release key are offered; tampered, unsigned, foreign or older
//   ones are refused
#[test]
fn signed_updates_are_offered_and_everything_else_is_refused() {
    if !chartroom_tests::os_keyring_or_skip() || !tool_available("minisign") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let world = CliServer::start(tmp.path(), &[], 0, "ward-3");
    let (data, d, fingerprint, token, server) =
        (&world.data, world.dir(), &world.fingerprint, &world.token, &world.serving);
    let profile = tmp.path().join("station");
    let policy = tmp.path().join("policy.toml");
    let (trusted, trusted_secret) = keypair(tmp.path(), "release");
    let (_, other_secret) = keypair(tmp.path(), "other");
    let station = |args: &[&str]| {
        let mut c = station_command();
        c.env("CHARTROOM_POLICY_FILE", &policy)
            .env("CHARTROOM_UPDATE_PUBLIC_KEY_FILE", &trusted)
            .arg("--profile-dir")
            .arg(&profile)
            .args(args);
        let out = run_with_stdin(c, "");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let refused = |args: &[&str], why: &str| {
        let (code, out, err) = station(args);
        assert_eq!(code, Some(1), "{args:?} was accepted: {out}");
        assert!(err.contains(why) && err.lines().count() == 1, "{args:?}: {err}");
    };
    let (code, _, err) =
        station(&["enroll", "--server", &server.url, "--fingerprint", fingerprint, "--token", token.trim()]);
    assert_eq!(code, Some(0), "{err}");
    let publish =
        |dir: &Path| admin(&["updates", "publish", "--data-dir", d, "--from", dir.to_str().unwrap()], None);
    let served = data.join("updates");

    refused(&["update", "check"], "the server offers no update");

    // A valid, newer release: offered, and each package downloads only after it verified.
    let good = release(tmp.path(), "0.2.0", &trusted_secret);
    assert!(publish(&good).contains("published 0.2.0 (2 packages)"));
    let (code, out, err) = station(&["update", "check"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("update available: 0.2.0") && out.contains("Faster census search."), "{out}");
    let downloads = tmp.path().join("downloads");
    for (format, file) in [("deb", "chartroom_0.2.0_amd64.deb"), ("rpm", "chartroom-0.2.0-1.x86_64.rpm")] {
        let (code, out, err) =
            station(&["update", "download", "--format", format, "--out", downloads.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains("checksum and signature verified"), "{out}");
        assert_eq!(std::fs::read(downloads.join(file)).unwrap(), std::fs::read(good.join(file)).unwrap());
    }

    // The package altered on the server after signing: refused, nothing written.
    let deb = served.join("chartroom_0.2.0_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&deb, bytes).unwrap();
    let fresh = tmp.path().join("fresh");
    refused(
        &["update", "download", "--format", "deb", "--out", fresh.to_str().unwrap()],
        "the package was altered",
    );
    assert!(!fresh.join("chartroom_0.2.0_amd64.deb").exists(), "a refused package is never written");

    // The manifest altered after signing (say, to point at another checksum).
    publish(&good);
    let manifest = served.join("manifest.json");
    let text =
        std::fs::read_to_string(&manifest).unwrap().replace("Faster census search.", "Faster census search!");
    std::fs::write(&manifest, text).unwrap();
    refused(&["update", "check"], "the update manifest was altered");

    // Signed with a key this build does not trust.
    publish(&release(tmp.path(), "0.3.0", &other_secret));
    refused(&["update", "check"], "signed with another key");

    // Unsigned: `publish` refuses it, and a station refuses a server that serves it anyway.
    let unsigned = release(tmp.path(), "0.4.0", &trusted_secret);
    std::fs::remove_file(unsigned.join("manifest.json.minisig")).unwrap();
    let mut c = chartroom_tests::server_command();
    c.args(["updates", "publish", "--data-dir", d, "--from", unsigned.to_str().unwrap()]);
    let out = run_with_stdin(c, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not signed"));
    publish(&good);
    std::fs::remove_file(served.join("manifest.json.minisig")).unwrap();
    refused(&["update", "check"], "the update manifest is not signed");

    // A correctly signed older release (a replayed manifest): a downgrade, refused.
    publish(&release(tmp.path(), "0.0.9", &trusted_secret));
    refused(&["update", "check"], "is not newer than the installed 0.1.0 (a downgrade)");
    publish(&release(tmp.path(), "0.1.0", &trusted_secret));
    let (code, out, _) = station(&["update", "check"]);
    assert_eq!((code, out.trim()), (Some(0), "up to date: 0.1.0"));

    // IT switched the in-app updater off.
    publish(&good);
    std::fs::write(&policy, "updates = \"off\"\n").unwrap();
    refused(&["update", "check"], "switched off by this computer's machine policy");
    let trail = admin(&["audit", "export", "--data-dir", d, "--format", "jsonl"], None);
    assert!(trail.contains("update_publish") && trail.contains("0.2.0"), "publishing is audited");
}
