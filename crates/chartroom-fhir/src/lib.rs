//! FHIR R4 import and export for Chartroom records (being written).

#![forbid(unsafe_code)]
