//! Chartroom's domain: FHIR R4-shaped records, the one place that validates them, device lock
//! policies, and the session lock state machine.
//!
//! Architecture invariant: pure logic. No IO, no threads, no reading of the system clock — time comes
//! in through [`clock::Clock`] so every decision can be tested instantly and deterministically.

#![forbid(unsafe_code)]

pub mod clock;
pub mod password;
pub mod policy;
pub mod records;
pub mod roles;
pub mod session;
pub mod throttle;
pub mod validate;

pub use clock::{Clock, Timestamp};
pub use policy::{DeviceProfile, LockPolicy, PolicyError};
pub use records::*;
pub use roles::Role;
pub use session::{Session, SessionEvent, SessionState};
pub use throttle::{LoginThrottle, Throttled};
pub use validate::{Validate, ValidationError};
