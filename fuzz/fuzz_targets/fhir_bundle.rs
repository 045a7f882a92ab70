//! Fuzz target `fhir_bundle`: see `chartroom_fuzz::fhir_bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chartroom_fuzz::fhir_bundle(data));
