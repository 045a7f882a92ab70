//! Fuzz target `audit_entry`: see `chartroom_fuzz::audit_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chartroom_fuzz::audit_entry(data));
