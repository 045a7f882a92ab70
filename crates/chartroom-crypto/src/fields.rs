//! The field names sealed records are bound to (part of each envelope's AAD), shared by the server
//! and the stations: a record sealed on one opens on the other under the same patient key, so sync
//! ships records sealed as they are stored — neither side decrypts and re-encrypts every field.
//! (The `server.` prefix is historical; the names are part of the stored format and never change.)

use uuid::Uuid;

use crate::DataKey;

pub const PATIENT: &str = "server.patient";
pub const ALLERGY: &str = "server.allergy";
pub const CONDITION: &str = "server.condition";
pub const MEDICATION: &str = "server.medication";
pub const OBSERVATION: &str = "server.observation";
pub const NOTE: &str = "server.note";

/// The key under which the server hands an online device the keys of the patients it syncs:
/// derived from the device's escrow key, which only the server (from its master key) and the
/// device during an online session hold.
pub fn sync_wrap_key(escrow_key: &[u8; 32], device_id: Uuid) -> DataKey {
    DataKey::derive(b"chartroom/sync-wrap/v1", escrow_key, device_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PatientKey;

    // hipaa (e)(2)(ii): patient keys travel wrapped to the receiving device and open only there
    #[test]
    fn a_patient_key_wrapped_by_the_server_opens_only_on_that_device() {
        let escrow = [7u8; 32];
        let (device, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let patient = Uuid::from_u128(3);
        let key = PatientKey::generate();
        let wrapped = sync_wrap_key(&escrow, device).wrap_patient_key(patient, &key);
        assert!(sync_wrap_key(&escrow, device).unwrap_patient_key(patient, &wrapped).is_ok());
        assert!(sync_wrap_key(&escrow, other).unwrap_patient_key(patient, &wrapped).is_err());
        assert!(sync_wrap_key(&[8u8; 32], device).unwrap_patient_key(patient, &wrapped).is_err());
        assert!(sync_wrap_key(&escrow, device).unwrap_patient_key(Uuid::from_u128(4), &wrapped).is_err());
    }
}
