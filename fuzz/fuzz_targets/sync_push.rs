//! Fuzz target `sync_push`: see `chartroom_fuzz::sync_push`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chartroom_fuzz::sync_push(data));
