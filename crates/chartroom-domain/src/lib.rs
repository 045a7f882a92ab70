//! Chartroom's domain: FHIR R4-shaped records, the one place that validates them, device lock
//! policies, the session lock state machine, and the access-control policy engine.
//!
//! Architecture invariant: pure logic. No IO, no threads, no reading of the system clock — time comes
//! in through [`clock::Clock`] so every decision can be tested instantly and deterministically.

#![forbid(unsafe_code)]

pub mod access;
pub mod clock;
pub mod password;
pub mod policy;
pub mod records;
pub mod roles;
pub mod session;
pub mod throttle;
pub mod validate;

pub use access::{decide, Action, ChartSection, Denied, Principal, Target};
pub use clock::{Clock, Timestamp};
pub use policy::{DeviceProfile, LockPolicy, PolicyError};
pub use records::*;
pub use roles::Role;
pub use session::{Session, SessionEvent, SessionState};
pub use throttle::{LoginThrottle, Throttled};
pub use validate::{Validate, ValidationError};
