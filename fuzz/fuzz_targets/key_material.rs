//! Fuzz target `key_material`: see `chartroom_fuzz::key_material`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chartroom_fuzz::key_material(data));
