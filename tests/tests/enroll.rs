//! A station enrolls with a real server over pinned TLS, its users log in online once (which gives
//! them a key slot), and then log in offline with the server gone.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chartroom_client::ServerClient;
use chartroom_crypto::Password;
use chartroom_domain::{DeviceProfile, Role};
use chartroom_server::{init, start, wall_now, DataDir, InitOptions};
use chartroom_station::{LockedVault, Profile, StationError};

use chartroom_tests::keystore;

#[tokio::test]
async fn enroll_then_online_first_login_then_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    for (name, role) in [("kim.rn", Role::Nurse), ("lee.md", Role::Physician), ("it.admin", Role::Admin)] {
        let pw = Password::new(format!("{}-long-passphrase", role.as_str()));
        chartroom_server::users::add_user(&*storage, name, role, vec!["ICU".into()], &pw, wall_now())
            .unwrap();
    }
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-station-1",
        DeviceProfile::Station,
        vec!["ICU".into()],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let ks = keystore();
    let profile_dir = tmp.path().join("station");

    // A different certificate is refused before the token is even sent: nothing is left behind and
    // the token still works afterwards.
    let impostor = "sha256:".to_string() + &"ab".repeat(32);
    let wrong = ServerClient::new(&url, &impostor).unwrap();
    let err =
        LockedVault::enroll(Profile::new(&profile_dir), ks.clone(), &wrong, &impostor, &token, wall_now())
            .await
            .unwrap_err();
    assert_eq!(err.code(), "server.unreachable", "{err}");
    assert!(std::fs::read_dir(&profile_dir).map(|d| d.count() == 0).unwrap_or(true));

    let client = ServerClient::new(&url, &report.fingerprint).unwrap();
    let locked = LockedVault::enroll(
        Profile::new(&profile_dir),
        ks.clone(),
        &client,
        &report.fingerprint,
        &token,
        wall_now(),
    )
    .await
    .unwrap();
    assert_eq!(locked.server().unwrap().name, "icu-station-1");
    assert!(locked.usernames().unwrap().is_empty(), "no user slot until a first online login");
    // No user can open it offline yet.
    let pw = Password::new("nurse-long-passphrase".into());
    assert!(matches!(locked.unlock("kim.rn", &pw, wall_now()), Err(StationError::UnknownUser)));
    // A wrong password online is the server's refusal, and still no slot.
    let bad =
        locked.login_online(&client, "kim.rn", &Password::new("not it at all!".into()), wall_now()).await;
    assert_eq!(bad.unwrap_err().code(), "server.refused");
    assert!(locked.usernames().unwrap().is_empty());

    // The administrator's password is right, but an admin reads no patient data: no key, no slot.
    let admin = Password::new("admin-long-passphrase".into());
    let refused = locked.login_online(&client, "it.admin", &admin, wall_now()).await.unwrap_err();
    assert_eq!(refused.code(), "access.forbidden");
    assert!(locked.usernames().unwrap().is_empty());

    let mut vault = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
    assert!(vault.census(None, wall_now()).unwrap().is_empty(), "nothing synced yet");

    // A first sync pulls the patients this device may hold: ICU only (the station's unit).
    let config = chartroom_synth::SynthConfig::new(5, wall_now());
    let charts: Vec<_> = (0..6).map(|i| chartroom_synth::patient(&config, i)).collect();
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    assert!(!vault.first_sync_complete().unwrap());
    let pulled = vault.pull(&client, wall_now()).await.unwrap();
    assert_eq!((pulled.charts, pulled.complete), (3, true), "{pulled:?}");
    assert!(vault.first_sync_complete().unwrap());
    let census = vault.census(None, wall_now()).unwrap();
    assert_eq!(census.len(), 3);
    assert!(census.iter().all(|row| row.unit == "ICU"));
    let chart = charts.iter().find(|c| c.patient.unit == "ICU").unwrap().clone();
    let local = vault.chart_by_mrn(&chart.patient.mrn, 1000, wall_now()).unwrap();
    assert_eq!(local.observations.len(), chart.observations.len(), "whole charts arrive");
    // A second pull finds nothing new.
    assert_eq!(
        vault.pull(&client, wall_now()).await.unwrap(),
        chartroom_station::sync::PullReport { complete: true, ..Default::default() }
    );

    // Offline edits queue up; a push applies them and empties the outbox.
    vault
        .record_vitals(&chart.patient.mrn, &[(chartroom_domain::VitalSign::HeartRate, 77.0)], wall_now())
        .unwrap();
    vault.write_note(&chart.patient.mrn, "Comfortable, pain 2/10.", true, wall_now()).unwrap();
    assert_eq!(vault.outbox().unwrap().len(), 2);
    let report = vault.push_outbox(&client, wall_now()).await.unwrap();
    assert_eq!((report.applied, report.conflicts, report.rejected, report.pending), (2, 0, 0, 0));
    assert!(vault.outbox().unwrap().is_empty());
    let mine = vault.chart_by_mrn(&chart.patient.mrn, 5, wall_now()).unwrap();
    assert_eq!(mine.observations[0].version, 1, "the record took its server version");
    // Our own changes come back in the next pull as single records, and change nothing.
    let back = vault.pull(&client, wall_now()).await.unwrap();
    assert_eq!((back.charts, back.changes), (0, 2));
    let again = vault.chart_by_mrn(&chart.patient.mrn, 1000, wall_now()).unwrap();
    assert_eq!(again.observations.len(), chart.observations.len() + 1, "no duplicate");
    // The server has them, and they are attributed to kim.rn on this device.
    let keys = dir.record_keys().unwrap();
    let sealed = storage.patient(chart.patient.id).unwrap().unwrap();
    let stored =
        storage.records(chart.patient.id, &chartroom_server::storage::RecordKind::ALL, 1000).unwrap();
    let server_chart = keys.open_chart(&sealed, &stored).unwrap();
    assert!(server_chart.observations.iter().any(|o| o.value == 77.0 && o.id == mine.observations[0].id));
    assert!(server_chart.notes.iter().any(|n| n.text == "Comfortable, pain 2/10."));
    // The station's audit chain goes to the server, which verifies it continues what it holds.
    let sent = vault.upload_audit(&client).await.unwrap();
    assert!(sent >= 8, "enroll, logins, census, views, writes, syncs: {sent}");
    assert_eq!(vault.upload_audit(&client).await.unwrap(), 0, "nothing twice");
    let key = dir.signing_key().unwrap();
    chartroom_server::audit::checkpoint_if_due(&*storage, &key, wall_now()).unwrap();
    let verified = chartroom_server::audit::verify(&*storage, &key.verifying_key()).unwrap().unwrap();
    assert_eq!(verified.devices, 2, "the server's chain and this station's");
    let locked = vault.lock();
    let lee = Password::new("physician-long-passphrase".into());
    locked.login_online(&client, "lee.md", &lee, wall_now()).await.unwrap().lock();
    assert_eq!(locked.usernames().unwrap().len(), 2);

    // The server goes away: both log in offline with their own slots.
    server.shutdown(Duration::from_secs(2)).await.unwrap();
    let reopened = LockedVault::open(Profile::new(&profile_dir), ks.clone(), wall_now()).unwrap();
    let vault = reopened.unlock("kim.rn", &pw, wall_now()).unwrap();
    let verified = vault.verify_audit().unwrap().unwrap();
    assert!(verified >= 6, "enroll, logins, views, locks and unlocks are in the chain: {verified}");
    let locked = vault.lock();
    locked.unlock("LEE.MD", &lee, wall_now()).unwrap().lock();
    // Beyond the device's maximum offline age, offline logins stop: the server must confirm the user.
    let max = chartroom_domain::LockPolicy::defaults(DeviceProfile::Station).max_offline_age();
    let later =
        chartroom_domain::Timestamp(wall_now().0 + i64::try_from(max.as_millis()).unwrap() + 3_600_000);
    assert_eq!(locked.unlock("kim.rn", &pw, later).unwrap_err().code(), "auth.offline_too_long");
    assert!(matches!(
        locked.unlock("kim.rn", &Password::new("wrong password here".into()), wall_now()),
        Err(StationError::WrongPassword)
    ));

    // The server knows the device as enrolled.
    let devices = storage.list_devices().unwrap();
    assert!(devices[0].enrolled_at.is_some());
    let _ = ks.delete(locked.device_id());
}

/// A disabled account loses its slot on the station at the next online contact; a revoked device
/// wipes its profile and keyring entry.
#[tokio::test]
async fn disabled_users_lose_their_slot_and_revoked_devices_wipe_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let pw = Password::new("nurse-long-passphrase".into());
    chartroom_server::users::add_user(&*storage, "kim.rn", Role::Nurse, vec!["ICU".into()], &pw, wall_now())
        .unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-9",
        DeviceProfile::Station,
        vec![],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client =
        ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint).unwrap();
    let ks = keystore();
    let profile_dir = tmp.path().join("station");
    let locked = LockedVault::enroll(
        Profile::new(&profile_dir),
        ks.clone(),
        &client,
        &report.fingerprint,
        &token,
        wall_now(),
    )
    .await
    .unwrap();
    locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap().lock();
    assert!(locked.unlock("kim.rn", &pw, wall_now()).is_ok(), "offline works");

    storage.set_disabled("kim.rn", true).unwrap();
    let err = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap_err();
    assert!(err.to_string().contains("auth.user_disabled"), "{err}");
    assert!(
        matches!(locked.unlock("kim.rn", &pw, wall_now()), Err(StationError::UnknownUser)),
        "the slot is gone"
    );

    storage.set_disabled("kim.rn", false).unwrap();
    // A session opened before the revocation: its tokens stop working at once, so its next sync
    // (push, audit upload) is refused, and the station wipes itself.
    let mut open = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
    storage.revoke_device("icu-9", wall_now()).unwrap();
    let err = open.sync(&client, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "device.revoked", "{err}");
    open.lock();
    let left: Vec<_> = std::fs::read_dir(&profile_dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the profile is wiped: {left:?}");
    assert!(ks.load(locked.device_id()).is_err(), "and its keyring entry");
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// An online session outlives its ten-minute access token: a sync renews it with the refresh token
/// and goes on. When the server refuses the renewal (the account was disabled meanwhile), the
/// session goes offline and says so, and the refusal is in the station's audit chain.
// hipaa (a)(2)(iii) (d): short-lived access tokens expire; a refused renewal ends the session
#[tokio::test]
async fn an_expired_session_is_renewed_and_a_refused_renewal_ends_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let pw = Password::new("nurse-long-passphrase".into());
    chartroom_server::users::add_user(&*storage, "kim.rn", Role::Nurse, vec!["ICU".into()], &pw, wall_now())
        .unwrap();
    let config = chartroom_synth::SynthConfig::new(3, wall_now());
    let charts: Vec<_> = (0..2).map(|i| chartroom_synth::patient(&config, i)).collect();
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-renew",
        DeviceProfile::Station,
        vec!["ICU".into()],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let clock = Arc::new(chartroom_domain::clock::ManualClock::at(wall_now()));
    let server = chartroom_server::start_with_clock(&dir, "127.0.0.1:0".parse().unwrap(), clock.clone())
        .await
        .unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let client = ServerClient::new(&url, &report.fingerprint).unwrap();
    let ks = keystore();
    let locked = LockedVault::enroll(
        Profile::new(tmp.path().join("station")),
        ks.clone(),
        &client,
        &report.fingerprint,
        &token,
        wall_now(),
    )
    .await
    .unwrap();
    let mut vault = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
    vault.sync(&client, wall_now()).await.unwrap();
    let mrn = charts.iter().find(|c| c.patient.unit == "ICU").unwrap().patient.mrn.clone();

    // Eleven minutes later (the station's clock agrees with the server's): the access token has
    // expired; the sync renews it and pushes.
    let later = Duration::from_secs(11 * 60);
    clock.advance(later);
    let client = ServerClient::new(&url, &report.fingerprint).unwrap().with_clock_skew_ms(11 * 60 * 1000);
    vault.record_vitals(&mrn, &[(chartroom_domain::VitalSign::HeartRate, 91.0)], wall_now()).unwrap();
    let r = vault.sync(&client, wall_now()).await.unwrap();
    assert_eq!(r.push.applied, 1, "{r:?}");
    assert!(vault.sync_indicator().unwrap().online);

    // The account is disabled: its sessions end at once, and renewing is refused.
    storage.set_disabled("kim.rn", true).unwrap();
    vault.record_vitals(&mrn, &[(chartroom_domain::VitalSign::HeartRate, 92.0)], wall_now()).unwrap();
    let err = vault.sync(&client, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "server.refused", "{err}");
    let status = vault.sync_indicator().unwrap();
    assert!(!status.online, "the session went offline");
    assert_eq!(status.status.pending, 1, "the unsynced vitals stay queued");
    assert_eq!(vault.sync(&client, wall_now()).await.unwrap_err().code(), "server.offline");
    let trail = vault.store().audit_entries(0, usize::MAX).unwrap();
    let ended: Vec<&str> = trail
        .iter()
        .filter(|e| e.event.action == "session_offline")
        .map(|e| e.event.outcome.as_str())
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(["auth.user_disabled", "auth.invalid_refresh"].contains(&ended[0]), "{ended:?}");
    let device = vault.device_id();
    vault.lock();
    let _ = ks.delete(device);
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// IT's rollout with the real binaries: a machine policy decides which server and certificates a
/// station trusts and who may log in there (an invalid one stops every command, naming the key),
/// and `chartroom-server device revoke` makes the station wipe itself at its next contact.
// hipaa (a)(1) (e)(1): machine policy limits roles and pins certificates (a wrong pin is refused); a revoked
//   station wipes its data at next contact
#[test]
fn machine_policy_rules_the_station_cli_and_revocation_wipes_it() {
    use chartroom_tests::{admin, os_keyring_or_skip, run_with_stdin, station_command, CliServer};
    if !os_keyring_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let users =
        [("kim.rn", "nurse", "nurse-long-passphrase"), ("bo.billing", "billing", "billing-long-passphrase")];
    let world = CliServer::start(tmp.path(), &users, 6, "icu-7");
    let (d, fingerprint, token, server) = (world.dir(), &world.fingerprint, &world.token, &world.serving);
    let profile = tmp.path().join("station");
    let p = profile.to_str().unwrap();
    let policy = tmp.path().join("policy.toml");
    let other_pin = format!("sha256:{}", "ab".repeat(32));
    let station = |args: &[&str], stdin: &str| {
        let mut c = station_command();
        c.env("CHARTROOM_POLICY_FILE", &policy).arg("--profile-dir").arg(p).args(args);
        let out = run_with_stdin(c, stdin);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };
    let enroll = || {
        station(
            &["enroll", "--server", &server.url, "--fingerprint", fingerprint, "--token", token.trim()],
            "",
        )
    };
    let as_user = |name: &str, args: &[&str]| {
        let mut all = vec!["--username", name, "--password-stdin"];
        all.extend_from_slice(args);
        let role = if name == "kim.rn" { "nurse" } else { "billing" };
        station(&all, &format!("{role}-long-passphrase\n"))
    };

    // A policy pinning another server: enrollment is refused and leaves nothing behind.
    std::fs::write(
        &policy,
        format!(
            "server_url = \"https://chartroom.elsewhere.example:8443\"\nfingerprints = [\"{fingerprint}\"]\n"
        ),
    )
    .unwrap();
    let (code, _, err) = enroll();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`server_url`") && err.lines().count() == 1, "{err}");
    assert!(!profile.exists(), "nothing was created");
    // An invalid policy stops every command, naming the key.
    std::fs::write(&policy, "device_profile = \"station\"\nidle_timeout = \"2h\"\n").unwrap();
    let (code, _, err) = enroll();
    assert_eq!(code, Some(1));
    assert!(err.contains("`idle_timeout`") && err.contains("policy.toml"), "{err}");
    let (code, out, err) = station(&["policy", "check", "--file", policy.to_str().unwrap()], "");
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("`idle_timeout`"), "{err}");

    // The right server, two pins (the certificate being replaced), nurses only.
    std::fs::write(
        &policy,
        format!("server_url = \"{}\"\nfingerprints = [\"{other_pin}\", \"{fingerprint}\"]\nallowed_roles = [\"nurse\"]\nidle_timeout = \"3m\"\n", server.url),
    )
    .unwrap();
    let (code, out, err) = station(&["policy", "check"], "");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("idle_timeout: 180 s") && out.contains("allowed_roles: nurse"), "{out}");
    let (code, out, err) = enroll();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("enrolled as icu-7"), "{out}");
    let (code, out, err) = as_user("kim.rn", &["sync"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pulled"), "{out}");
    let (code, _, err) = as_user("bo.billing", &["census"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("your role may not log in on this device"), "{err}");
    // The refusal is in the station's audit trail (moved in at the next unlock).
    let (code, _, err) = as_user("kim.rn", &["audit", "verify"]);
    assert_eq!(code, Some(0), "{err}");
    let events = std::fs::read_to_string(profile.join("security-events.jsonl")).unwrap_or_default();
    assert!(events.is_empty(), "folded into the chain: {events}");

    // Only the other certificate pinned: the real server is not trusted any more.
    std::fs::write(&policy, format!("server_url = \"{}\"\nfingerprints = [\"{other_pin}\"]\n", server.url))
        .unwrap();
    let (code, _, err) = as_user("kim.rn", &["sync", "--retries", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("wiped"), "{err}");

    // A policy that sends the station to another server (which does not know it): refused, and
    // never taken for a revocation — nothing is wiped.
    let elsewhere = CliServer::start(&tmp.path().join("elsewhere"), &[], 0, "unused");
    std::fs::write(
        &policy,
        format!(
            "server_url = \"{}\"\nfingerprints = [\"{}\"]\n",
            elsewhere.serving.url, elsewhere.fingerprint
        ),
    )
    .unwrap();
    let (code, _, err) = as_user("kim.rn", &["sync", "--retries", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("wiped") && profile.join("cache.db").exists(), "{err}");

    // Revoked by IT: at its next contact the station wipes its profile and keyring entry.
    std::fs::remove_file(&policy).unwrap();
    let device_id = Profile::new(&profile).read_device().unwrap().device_id;
    assert!(keystore().load(device_id).is_ok());
    admin(&["device", "revoke", "--data-dir", d, "--name", "icu-7"], None);
    let (code, _, err) = as_user("kim.rn", &["sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("revoked") && err.contains("wiped") && err.lines().count() == 1, "{err}");
    let left: Vec<_> = std::fs::read_dir(&profile).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the profile directory is empty: {left:?}");
    assert!(keystore().load(device_id).is_err(), "the keyring entry is gone");
    // Nothing works offline either, and the server's trail names the revocation.
    let (code, _, err) = as_user("kim.rn", &["census"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("enroll"), "{err}");
    let trail = admin(&["audit", "export", "--data-dir", d, "--format", "jsonl"], None);
    assert!(trail.contains("device_revoke"), "revocation audited");
}

/// The station's data key rotation with the real binaries, killed at each step: after staging the
/// new key's slots (the database has not moved: the rotation is dropped at the next unlock, every
/// slot still works) and after the database moved (the next unlock of the rotating user finishes
/// it; other users log in online once). A change recorded offline before any of it still reaches
/// the server, the chain verifies, and every step is in the trail.
// hipaa (a)(2)(iv) (c)(1): the station data key rotates, and a crash at any step loses nothing
#[test]
fn station_data_key_rotation_survives_a_crash_at_every_step() {
    use chartroom_tests::{admin, os_keyring_or_skip, run_with_stdin, station_command, CliServer};
    if !os_keyring_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let users = [("kim.rn", "nurse", "ward-kim-passphrase"), ("lee.rn", "nurse", "ward-lee-passphrase")];
    let world = CliServer::start(tmp.path(), &users, 12, "icu-9");
    let (d, fingerprint, token, server) = (world.dir(), &world.fingerprint, &world.token, &world.serving);
    let profile = tmp.path().join("station");
    let p = profile.to_str().unwrap().to_owned();
    let run = |name: &str, args: &[&str], crash: Option<&str>| {
        let mut c = station_command();
        c.args(["--profile-dir", &p, "--username", name, "--password-stdin"]).args(args);
        if let Some(step) = crash {
            c.env("CHARTROOM_TEST_CRASH_AT", step);
        }
        let out = run_with_stdin(c, &format!("ward-{}-passphrase\n", &name[..3]));
        if crash.is_some() {
            // Killed at the step, not failed before reaching it.
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&out.status),
                Some(6),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = |name: &str, args: &[&str]| {
        let (success, out, err) = run(name, args, None);
        assert!(success, "{name} {args:?}: {err}");
        out
    };
    let mut c = station_command();
    c.args([
        "--profile-dir",
        &p,
        "enroll",
        "--server",
        &server.url,
        "--fingerprint",
        fingerprint,
        "--token",
        token.trim(),
    ]);
    assert!(run_with_stdin(c, "").status.success());
    ok("kim.rn", &["sync"]);
    ok("lee.rn", &["sync"]);
    let census: serde_json::Value = serde_json::from_str(&ok("kim.rn", &["census", "--json"])).unwrap();
    let mrn = census[0]["mrn"].as_str().unwrap().to_owned();
    ok("kim.rn", &["vitals", "--mrn", &mrn, "--hr", "123"]);
    let slots = || std::fs::read_to_string(profile.join("keyslots.json")).unwrap();

    // Killed after the new key's slots were staged: the database never moved.
    let (success, _, _) = run("kim.rn", &["keys", "rotate"], Some("dek:staged"));
    assert!(!success);
    assert!(slots().contains("\"pending\": {"), "the new key's slots were staged");
    ok("lee.rn", &["census"]);
    assert!(slots().contains("\"pending\": null"), "dropped at the next unlock");
    assert!(!profile.join("cache.db.rekey").exists());

    // Killed after the database moved to the new key: the rotating user's unlock finishes it.
    let (success, _, _) = run("kim.rn", &["keys", "rotate"], Some("dek:moved"));
    assert!(!success);
    // Lee's slot was over the old key: the CLI logs her in online instead, whose escrow slot of
    // the new key opens the database and finishes the rotation; kim's new slot works too.
    ok("lee.rn", &["census"]);
    assert!(slots().contains("\"pending\": null"));
    ok("kim.rn", &["census"]);
    ok("lee.rn", &["census"]);

    // Another process has the database open: a forced rotation is refused and changes nothing.
    let held = std::fs::OpenOptions::new().write(true).open(profile.join("cache.db.lock")).unwrap();
    held.lock_shared().unwrap();
    let (success, _, err) = run("kim.rn", &["keys", "rotate"], None);
    assert!(!success && err.contains("open in another Chartroom process"), "{err}");
    drop(held);
    ok("lee.rn", &["census"]);
    assert!(slots().contains("\"pending\": null"));

    // A rotation that runs to the end; then the offline change reaches the server.
    assert!(ok("kim.rn", &["keys", "rotate"]).contains("data key rotated"));
    let synced = ok("kim.rn", &["sync"]);
    assert!(synced.contains("1 applied"), "{synced}");
    let chart: serde_json::Value =
        serde_json::from_str(&ok("kim.rn", &["chart", "--mrn", &mrn, "--json"])).unwrap();
    assert!(
        chart["observations"].as_array().unwrap().iter().any(|o| o["value"] == 123.0),
        "the vitals survived"
    );
    assert!(ok("kim.rn", &["audit", "verify"]).starts_with("audit ok"));
    ok("kim.rn", &["sync"]);
    let trail = admin(&["audit", "export", "--data-dir", d, "--format", "jsonl"], None);
    assert_eq!(trail.matches("\"key_rotate\"").count(), 2, "the finished and the whole rotation");
    assert_eq!(trail.matches("\"key_rotate_abandoned\"").count(), 2, "the killed one and the refused one");
}

/// The policy's `key_rotation`: an online login once the data key is older than that rotates it
/// (not before); the other users' slots go with the old key and the rotating user's new slot works
/// offline.
#[tokio::test]
async fn the_data_key_rotates_on_the_policy_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let pw = |name: &str| Password::new(format!("{}-long-passphrase", &name[..3]));
    for name in ["kim.rn", "lee.rn"] {
        chartroom_server::users::add_user(
            &*storage,
            name,
            Role::Nurse,
            vec!["ICU".into()],
            &pw(name),
            wall_now(),
        )
        .unwrap();
    }
    let token = chartroom_server::devices::issue_token(
        &*storage,
        "icu-rotating",
        DeviceProfile::Station,
        vec!["ICU".into()],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client =
        ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint).unwrap();
    let ks = keystore();
    let profile = Profile::new(tmp.path().join("station"));
    let enrolled =
        LockedVault::enroll(profile.clone(), ks.clone(), &client, &report.fingerprint, &token, wall_now())
            .await
            .unwrap();
    let policy =
        chartroom_station::MachinePolicy::parse("key_rotation = \"1d\"\n", Path::new("policy.toml")).unwrap();
    let locked = LockedVault::open(profile.clone(), ks.clone(), wall_now())
        .unwrap()
        .with_machine_policy(policy)
        .unwrap();
    for name in ["kim.rn", "lee.rn"] {
        locked.login_online(&client, name, &pw(name), wall_now()).await.unwrap().lock();
    }
    assert_eq!(profile.dek_since().unwrap(), None, "not due yet: no rotation");
    assert_eq!(profile.usernames().unwrap().len(), 2);

    let later = wall_now().plus(Duration::from_secs(2 * 86_400));
    locked.login_online(&client, "kim.rn", &pw("kim.rn"), later).await.unwrap().lock();
    assert_eq!(profile.dek_since().unwrap(), Some(later), "rotated at the first online login after a day");
    assert_eq!(profile.usernames().unwrap(), ["kim.rn"], "the other slot went with the old key");
    assert!(matches!(locked.unlock("lee.rn", &pw("lee.rn"), later), Err(StationError::UnknownUser)));
    let vault = locked.unlock("kim.rn", &pw("kim.rn"), later).unwrap();
    assert!(vault.verify_audit().unwrap().is_ok());
    vault.lock();
    let _ = ks.delete(enrolled.device_id());
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}
