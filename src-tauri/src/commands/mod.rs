//! IPC commands exposed to the UI.
//!
//! Every command must also be listed in `build.rs` (app manifest) and granted in
//! `capabilities/main.json`; otherwise the runtime rejects the call.

pub mod station;
