//! Chartroom's end-to-end test package. The tests live in `tests/`; this library holds what they
//! share.

#![forbid(unsafe_code)]

use std::sync::Arc;

use chartroom_station::{DeviceSecretStore, MemoryKeystore, OsKeyring};

/// The OS keyring (Secret Service). Without one, an in-memory keystore — unless
/// `CHARTROOM_REQUIRE_KEYRING` is set (as in CI), so that these tests can never silently run
/// without the real keyring there.
pub fn keystore() -> Arc<dyn DeviceSecretStore> {
    match OsKeyring::connect() {
        Ok(k) => Arc::new(k),
        Err(_) if std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none() => {
            Arc::new(MemoryKeystore::default())
        }
        Err(e) => panic!("CHARTROOM_REQUIRE_KEYRING is set but the OS keyring is unavailable: {e}"),
    }
}
