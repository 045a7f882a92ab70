//! Keyring loss with changes pending: the device secret vanishes from the OS keyring, nothing opens,
//! refused recoveries change nothing, and after an administrator's approval `recover` gets the data
//! key back under a new device key and the unsynced changes reach the server exactly once.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chartroom_client::{DeviceIdentity, ServerClient};
use chartroom_crypto::{DeviceSecret, Password, RecoveryKeyPair};
use chartroom_domain::{DeviceProfile, Role, Timestamp, VitalSign};
use chartroom_server::storage::{RecordKind, Storage};
use chartroom_server::{init, start, wall_now, DataDir, InitOptions};
use chartroom_station::{LockedVault, MemoryKeystore, Profile, StationError};

use chartroom_tests::keystore;

/// Every file of the profile, byte for byte.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn issue(storage: &dyn Storage, name: &str) -> String {
    let token = chartroom_server::devices::issue_token(
        storage,
        name,
        DeviceProfile::Station,
        vec!["ICU".into()],
        Duration::from_secs(600),
        wall_now(),
    )
    .unwrap();
    token.as_str().to_owned()
}

fn approve(storage: &dyn Storage, name: &str, now: Timestamp) -> String {
    let (_, token) =
        chartroom_server::devices::approve_recovery(storage, name, Duration::from_secs(600), now).unwrap();
    token.as_str().to_owned()
}

#[tokio::test]
async fn keyring_loss_with_pending_changes_recovers_after_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let pw = Password::new("nurse-long-passphrase".into());
    chartroom_server::users::add_user(&*storage, "kim.rn", Role::Nurse, vec!["ICU".into()], &pw, wall_now())
        .unwrap();
    let config = chartroom_synth::SynthConfig::new(11, wall_now());
    let charts: Vec<_> = (0..6).map(|i| chartroom_synth::patient(&config, i)).collect();
    chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    let token = issue(&*storage, "icu-station-1");
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let client = ServerClient::new(&url, &report.fingerprint).unwrap();
    let ks = keystore();
    let profile_dir = tmp.path().join("station");

    // Enrollment seals the data key to the server's recovery key too.
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
    let device_id = locked.device_id();
    let slot = Profile::new(&profile_dir).recovery_slot().unwrap().expect("a recovery slot at enrollment");
    assert_eq!(slot.device_id(), device_id);
    assert_eq!(
        dir.recovery_keys().unwrap().public().key_id(),
        slot.as_bytes()[21..37],
        "sealed to this server"
    );

    // A first login online and a first sync; then vitals and a note offline: pending in the outbox.
    let mut vault = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
    vault.sync(&client, wall_now()).await.unwrap();
    let locked = vault.lock();
    let mut vault = locked.unlock("kim.rn", &pw, wall_now()).unwrap();
    let patient = vault.census(None, wall_now()).unwrap()[0].clone();
    let vitals = vault.record_vitals(&patient.mrn, &[(VitalSign::HeartRate, 131.0)], wall_now()).unwrap();
    let note = vault
        .write_note(&patient.mrn, "Tachycardic after transfer; team informed.", true, wall_now())
        .unwrap();
    assert_eq!(vault.outbox().unwrap().len(), 2);
    let locked = vault.lock();

    // The keyring loses the device secret (an OS reinstall, a reset keyring).
    let old_secret = ks.load(device_id).unwrap();
    let old_identity = DeviceIdentity::new(device_id.to_string(), &old_secret.signing_seed());
    ks.delete(device_id).unwrap();
    assert_eq!(locked.unlock("kim.rn", &pw, wall_now()).unwrap_err().code(), "keyring.missing");
    assert_eq!(
        locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap_err().code(),
        "keyring.missing"
    );

    // Without a valid approval, recovery fails and changes nothing: here, on the server, in the keyring.
    let before = snapshot(&profile_dir);
    let old_key = storage.enrolled_device(device_id).unwrap().unwrap().public_key;
    let unchanged = |label: &str| {
        assert_eq!(snapshot(&profile_dir), before, "{label}: the profile changed");
        assert!(ks.load(device_id).is_err(), "{label}: the keyring changed");
        assert_eq!(storage.enrolled_device(device_id).unwrap().unwrap().public_key, old_key, "{label}");
    };
    for (label, token) in
        [("no token", String::new()), ("a made-up token", format!("crv1_{}", "ab".repeat(32)))]
    {
        let err = locked.recover(&client, &token, wall_now()).await.unwrap_err();
        assert!(matches!(err, StationError::RecoveryTokenInvalid), "{label}: {err}");
        unchanged(label);
    }
    let expired = approve(&*storage, "icu-station-1", Timestamp(wall_now().0 - 3_600_000));
    let err = locked.recover(&client, &expired, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "recovery.invalid_token", "expired: {err}");
    unchanged("expired");
    // Another device's approval does not recover this one.
    let other_dir = tmp.path().join("other");
    let other_token = issue(&*storage, "icu-station-2");
    LockedVault::enroll(
        Profile::new(&other_dir),
        Arc::new(MemoryKeystore::default()),
        &client,
        &report.fingerprint,
        &other_token,
        wall_now(),
    )
    .await
    .unwrap();
    let others = approve(&*storage, "icu-station-2", wall_now());
    let err = locked.recover(&client, &others, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "recovery.invalid_token", "another device's token: {err}");
    unchanged("another device's token");
    // Approving a device that does not exist, or one that was revoked, is refused.
    assert_eq!(
        chartroom_server::devices::approve_recovery(&*storage, "nope", Duration::from_secs(60), wall_now())
            .unwrap_err()
            .code(),
        "device.unknown"
    );

    // With the approval, a damaged recovery slot is refused and leaves the token unused.
    let token = approve(&*storage, "icu-station-1", wall_now());
    let mut damaged = slot.as_bytes().to_vec();
    *damaged.last_mut().unwrap() ^= 1;
    let probe = |slot: &[u8], token: &str| chartroom_protocol::RecoverRequest {
        device_id: device_id.to_string(),
        token: token.to_owned(),
        recovery_slot: hex(slot),
        device_public_key: DeviceIdentity::new(String::new(), &[7; 32]).public_key_hex(),
        ephemeral_public_key: hex(RecoveryKeyPair::generate().public().as_bytes()),
    };
    let err = client.recover(&probe(&damaged, &token)).await.unwrap_err();
    assert_eq!(err.code(), Some("device.recovery_slot_invalid"), "{err}");
    unchanged("damaged slot");

    // A crash after the server answered but before the station wrote anything (here: the answer is
    // lost): the server holds a key nobody has, the profile is untouched — a new approval recovers.
    client.recover(&probe(slot.as_bytes(), &token)).await.unwrap();
    assert_ne!(storage.enrolled_device(device_id).unwrap().unwrap().public_key, old_key);
    let err = locked.recover(&client, &token, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "recovery.invalid_token", "the token was used: {err}");
    assert_eq!(snapshot(&profile_dir), before);
    // A crash after the keyring write but before the slots were rewritten: a secret is in the
    // keyring that opens nothing. Recovery still works (it replaces the secret).
    ks.save(device_id, &DeviceSecret::generate()).unwrap();
    let err = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap_err();
    assert!(err.to_string().contains("auth.bad_proof"), "{err}");
    assert!(profile_dir.join("device.json").exists(), "a refused proof is not a revocation: no wipe");

    // The real recovery.
    let token = approve(&*storage, "icu-station-1", wall_now());
    let recovered = locked.recover(&client, &token, wall_now()).await.unwrap();
    assert_eq!(recovered.slots_dropped, 1);
    assert!(
        matches!(locked.unlock("kim.rn", &pw, wall_now()), Err(StationError::UnknownUser)),
        "user slots were bound to the lost secret: users log in online once again"
    );
    let err = locked.recover(&client, &token, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "recovery.invalid_token", "a token works once: {err}");

    // The user logs in online and syncs: the pending changes reach the server, exactly once.
    let mut vault = locked.login_online(&client, "kim.rn", &pw, wall_now()).await.unwrap();
    assert_eq!(vault.outbox().unwrap().len(), 2, "nothing was lost");
    let synced = vault.sync(&client, wall_now()).await.unwrap();
    assert_eq!((synced.push.applied, synced.push.rejected, synced.push.pending), (2, 0, 0), "{synced:?}");
    assert!(vault.outbox().unwrap().is_empty());
    let again = vault.sync(&client, wall_now()).await.unwrap();
    assert_eq!(again.push.applied, 0, "nothing twice");
    let keys = dir.record_keys().unwrap();
    let sealed = storage.patient(patient.patient_id).unwrap().unwrap();
    let stored = storage.records(patient.patient_id, &RecordKind::ALL, 10_000).unwrap();
    let on_server = keys.open_chart(&sealed, &stored).unwrap();
    assert_eq!(on_server.observations.iter().filter(|o| o.id == vitals[0].id).count(), 1);
    assert_eq!(on_server.notes.iter().filter(|n| n.id == note.id).count(), 1);

    // The station's chain verifies, records the recovery, and the server verifies what it received.
    assert!(vault.verify_audit().unwrap().is_ok());
    let local = vault.store().audit_entries(0, 10_000).unwrap();
    assert!(local.iter().any(|e| e.event.action == "key_access" && e.event.resource_type == "recovery_slot"));
    assert!(local.iter().any(|e| e.event.action == "rekey"));
    let signing = dir.signing_key().unwrap();
    chartroom_server::audit::checkpoint_if_due(&*storage, &signing, wall_now()).unwrap();
    let verified = chartroom_server::audit::verify(&*storage, &signing.verifying_key()).unwrap().unwrap();
    assert!(verified.devices >= 2, "{verified:?}");
    let held = storage.audit_page(0, 100_000).unwrap();
    let uploaded = held.iter().filter(|s| s.entry.device_id == device_id).count();
    assert_eq!(uploaded, local.len(), "every station entry is on the server");
    let recoveries: Vec<_> = held
        .iter()
        .filter(|s| s.entry.event.resource_id.as_deref() == Some(&device_id.to_string()))
        .map(|s| (s.entry.event.action.as_str(), s.entry.event.outcome.as_str()))
        .collect();
    assert!(recoveries.contains(&("device_recover", "ok")), "{recoveries:?}");
    assert!(recoveries.contains(&("key_access", "ok")), "{recoveries:?}");
    assert!(
        recoveries.contains(&("device_recover_failed", "device.invalid_recovery_token")),
        "{recoveries:?}"
    );
    assert!(
        recoveries.contains(&("device_recover_failed", "device.recovery_slot_invalid")),
        "{recoveries:?}"
    );

    // The data is all still readable, the new changes included.
    assert_eq!(vault.census(None, wall_now()).unwrap().len(), 3);
    let chart = vault.chart_by_mrn(&patient.mrn, 1000, wall_now()).unwrap();
    assert!(chart.observations.iter().any(|o| o.id == vitals[0].id && o.value == 131.0));
    assert!(chart.notes.iter().any(|n| n.id == note.id));
    let locked = vault.lock();
    // Offline logins work again with the new slot.
    locked.unlock("kim.rn", &pw, wall_now()).unwrap().lock();

    // The old device key no longer authenticates.
    let err = client.login(&old_identity, "kim.rn", pw.expose_for_hashing()).await.unwrap_err();
    assert_eq!(err.code(), Some("auth.bad_proof"), "{err}");

    // A revoked device cannot be approved for recovery.
    storage.revoke_device("icu-station-2", wall_now()).unwrap();
    let err = chartroom_server::devices::approve_recovery(
        &*storage,
        "icu-station-2",
        Duration::from_secs(60),
        wall_now(),
    )
    .unwrap_err();
    assert_eq!(err.code(), "device.not_recoverable");

    ks.delete(device_id).unwrap();
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}
