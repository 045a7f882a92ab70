//! How each clinical record type maps onto its table: the row's plaintext index columns and the field
//! name its sealed body is bound to.

use chartroom_crypto::fields;
use chartroom_domain::{Allergy, Condition, MedicationRequest, Note, NoteStatus, Observation, Validate};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

/// A record stored in one of the per-patient tables
/// `(id, patient_id, kind, sort_key, version, body)`, where `body` is the whole record sealed with the
/// patient's key and `kind`/`sort_key` are the only plaintext columns (for ordering and filtering).
pub trait ChartRecord: Serialize + DeserializeOwned + Validate {
    /// The table (a constant of this crate, never user input).
    const TABLE: &'static str;
    /// The field name bound into the sealed body's AAD.
    const FIELD: &'static str;
    fn id(&self) -> Uuid;
    fn patient_id(&self) -> Uuid;
    fn kind(&self) -> String;
    fn sort_key(&self) -> i64;
    fn set_version(&mut self, version: i64);
    fn version(&self) -> i64;
}

macro_rules! chart_record {
    ($t:ty, $table:literal, $field:expr, |$s:ident| kind = $kind:expr, sort = $sort:expr) => {
        impl ChartRecord for $t {
            const TABLE: &'static str = $table;
            const FIELD: &'static str = $field;
            fn id(&self) -> Uuid {
                self.id
            }
            fn patient_id(&self) -> Uuid {
                self.patient_id
            }
            #[allow(unused_variables)]
            fn kind(&self) -> String {
                let $s = self;
                $kind
            }
            #[allow(unused_variables)]
            fn sort_key(&self) -> i64 {
                let $s = self;
                $sort
            }
            fn set_version(&mut self, version: i64) {
                self.version = version;
            }
            fn version(&self) -> i64 {
                self.version
            }
        }
    };
}

chart_record!(Allergy, "allergies", fields::ALLERGY, |s| kind = format!("{:?}", s.criticality), sort = 0);
chart_record!(Condition, "conditions", fields::CONDITION, |s| kind = format!("{:?}", s.status), sort = 0);
chart_record!(
    MedicationRequest,
    "medication_requests",
    fields::MEDICATION,
    |s| kind = format!("{:?}", s.status),
    sort = 0
);
chart_record!(
    Observation,
    "observations",
    fields::OBSERVATION,
    |s| kind = s.vital.loinc().to_string(),
    sort = s.effective_at.0
);
chart_record!(
    Note,
    "notes",
    fields::NOTE,
    |s| kind = match s.status {
        NoteStatus::Draft => "draft".to_string(),
        NoteStatus::Signed { .. } => "signed".to_string(),
        NoteStatus::EnteredInError { .. } => "entered-in-error".to_string(),
    },
    sort = s.created_at.0
);
