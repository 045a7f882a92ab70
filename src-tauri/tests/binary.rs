//! The `chartroom` binary itself, where no window is needed (building it here also gives the
//! real-window tests a binary built with the same features as every other test binary).

use std::process::Command;

fn app() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chartroom"));
    c.env_remove("DISPLAY").env_remove("WAYLAND_DISPLAY").env("CHARTROOM_PROFILE_DIR", std::env::temp_dir());
    c
}

#[test]
fn without_a_display_it_says_so_and_exits_cleanly() {
    let out = app().output().expect("run chartroom");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no display"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unreachable_display_is_a_short_error_not_a_backtrace() {
    let out = app().env("DISPLAY", ":9999").env("RUST_BACKTRACE", "1").output().expect("run chartroom");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("chartroom: internal error at"), "{stderr}");
    assert!(!stderr.contains("stack backtrace") && !stderr.contains("BoolError"), "{stderr}");
}
