//! The `chartroom` desktop binary: a thin wrapper around [`chartroom_app::run`].

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]
#![forbid(unsafe_code)]

fn main() {
    chartroom_app::run();
}
