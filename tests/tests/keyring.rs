//! The vault against the real OS keyring (Secret Service via gnome-keyring on Linux CI).
//!
//! CI sets `CHARTROOM_REQUIRE_KEYRING=1` and runs the tests inside `dbus-run-session` with an unlocked
//! gnome-keyring, so these tests must pass there; elsewhere they are skipped with a message when no
//! keyring is reachable.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chartroom_crypto::{KdfParams, Password};
use chartroom_domain::{DeviceProfile, Timestamp};
use chartroom_station::{
    DeviceSecretStore, KeystoreError, LockedVault, NewVault, OsKeyring, Profile, StationError,
};
use chartroom_store::StoreOptions;
use uuid::Uuid;

fn keyring() -> Option<Arc<OsKeyring>> {
    match OsKeyring::connect() {
        Ok(k) => Some(Arc::new(k)),
        Err(e) if std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none() => {
            eprintln!("skipping: no OS keyring ({e}); set CHARTROOM_REQUIRE_KEYRING=1 to make this fatal");
            None
        }
        Err(e) => panic!("CHARTROOM_REQUIRE_KEYRING is set but the OS keyring is unavailable: {e}"),
    }
}

#[test]
fn device_secret_round_trips_through_the_real_keyring() {
    let Some(ks) = keyring() else { return };
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp(1_795_764_183_000);
    let password = Password::from("a real keyring passphrase");
    let vault = LockedVault::create(
        Profile::new(dir.path()),
        ks.clone(),
        NewVault {
            role: chartroom_domain::Role::Nurse,
            profile: DeviceProfile::Laptop,
            user_id: Uuid::new_v4(),
            username: "doc.keyring",
            password: &password,
            kdf: KdfParams::MINIMUM,
            recovery: None,
            now,
            store: StoreOptions { cache_kib: 2048, ..StoreOptions::default() },
        },
    )
    .unwrap();
    let device = vault.device_id();
    let locked = vault.lock();

    // A fresh connection (as after a restart) finds the secret and unlocks.
    let fresh: Arc<dyn DeviceSecretStore> = Arc::new(OsKeyring::connect().unwrap());
    assert_eq!(fresh.backend(), "secret-service");
    let reopened = LockedVault::open(Profile::new(dir.path()), fresh.clone(), now).unwrap();
    let vault = reopened.unlock("doc.keyring", &password, now).unwrap();
    vault.lock();
    drop(locked);

    // The keyring is reset: a clear error, and no new key appears.
    ks.delete(device).unwrap();
    let err = LockedVault::open(Profile::new(dir.path()), fresh.clone(), now)
        .unwrap()
        .unlock("doc.keyring", &password, now)
        .unwrap_err();
    assert!(matches!(err, StationError::Keystore(KeystoreError::Missing)), "{err:?}");
    assert_eq!(fresh.load(device).err(), Some(KeystoreError::Missing));
}
