//! Chartroom's encrypted local cache: a SQLCipher database opened with the raw data key, append-only
//! migrations, and clinical records whose PHI is sealed again with each patient's own key.
//!
//! Architecture invariant: the store knows nothing about users, passwords, keyrings or the network.
//! It is handed a [`DataKey`](chartroom_crypto::DataKey) and owns it until it is dropped; every
//! patient key it unwraps lives only in its in-memory cache and is wiped with it.

#![forbid(unsafe_code)]

mod audit;
mod error;
mod migrations;
mod records;
mod store;
mod sync;

pub use audit::{Actor, AuditBreak};
pub use error::StoreError;
pub use records::ChartRecord;
pub use store::{CensusRow, DatabaseEncryption, Keys, Store, StoreOptions, MAX_CACHED_PATIENT_KEYS};
pub use sync::{
    OutboxEntry, PullApplied, PulledPage, PulledPatient, PulledRecord, Resolution, Settlement, SyncStatus,
    Synced, MAX_PULL_LIMIT,
};
