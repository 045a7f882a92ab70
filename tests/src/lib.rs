//! Chartroom's end-to-end test package. The tests live in `tests/`; this library is empty.

#![forbid(unsafe_code)]
