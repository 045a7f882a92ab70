//! The Chartroom station core: the profile directory, the vault (key slots + encrypted store) with
//! its `LockedVault → UnlockedVault` type state, the port to the OS keyring, and the system clock.
//! The headless CLI (`chartroom-station`) and the desktop app are thin shells over this crate.
//!
//! Architecture invariant: no UI types here, and no direct SQL — records go through
//! `chartroom-store`, keys through `chartroom-crypto`.

#![forbid(unsafe_code)]

mod break_glass;
pub mod clock;
pub mod demo;
mod edits;
mod error;
pub mod keystore;
pub mod oversight;
pub mod policy;
pub mod profile;
pub mod sync;
pub mod update;
pub mod vault;

pub use break_glass::BREAK_GLASS_OBSERVATIONS;
// The wire types the oversight and break-glass calls take and return, so the desktop shell needs
// no dependency of its own on the protocol crate.
pub use chartroom_protocol::{
    AuditEntrySummary, AuditQuery, AuditVerifySummary, BreakGlassReason, BreakGlassUse, IncidentInfo,
};
pub use edits::NewMedication;
pub use error::StationError;
pub use keystore::{DeviceSecretStore, KeystoreError, MemoryKeystore, OsKeyring};
pub use oversight::{Login, OversightSession};
pub use policy::MachinePolicy;
pub use profile::Profile;
pub use vault::{DraftSummary, LockedVault, NewVault, Recovered, UnlockedVault};

// The shells (CLI, desktop app) depend on this crate only; the types they pass through come from here.
pub use chartroom_store as store;
pub use {
    chartroom_client as client, chartroom_crypto as crypto, chartroom_domain as domain,
    chartroom_protocol as protocol,
};
