//! The PostgreSQL backend (issue 9), on a real cluster over verified TLS: the storage conformance
//! suite, what a DBA can read, and several server processes sharing one database.

#[path = "../../crates/chartroom-server/tests/conformance/mod.rs"]
mod conformance;

use chartroom_server::storage::PgStorage;
use chartroom_tests::fresh_postgres;

/// The storage conformance suite, exactly as the embedded backend runs it.
#[test]
fn postgres_storage_conforms() {
    if fresh_postgres().is_none() {
        return;
    }
    conformance::run_all(|| {
        Box::new(PgStorage::connect(&fresh_postgres().expect("cluster")).expect("connects and migrates"))
    });
}
