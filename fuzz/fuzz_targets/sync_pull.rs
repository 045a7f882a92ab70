//! Fuzz target `sync_pull`: see `chartroom_fuzz::sync_pull`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chartroom_fuzz::sync_pull(data));
