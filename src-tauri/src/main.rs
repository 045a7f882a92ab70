//! The `chartroom` desktop binary: a thin wrapper around [`chartroom_app::run`].

// No console window next to the app on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]
#![forbid(unsafe_code)]

fn main() {
    // A panic's message may quote data it was handling; crash output names only where it happened.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!(
            "chartroom: internal error at {at}; the app stopped (signed notes and saved drafts are kept)"
        );
    }));
    if cfg!(target_os = "linux")
        && ["DISPLAY", "WAYLAND_DISPLAY"].iter().all(|v| std::env::var_os(v).is_none())
    {
        eprintln!("chartroom: no display to open a window on (neither DISPLAY nor WAYLAND_DISPLAY is set)");
        std::process::exit(1);
    }
    // WebKitGTK reports the POSIX locale ("C", the default on servers and in containers) as the
    // page's language "C", which is not a valid language tag: `Intl` then throws and the UI never
    // starts. Such a station gets plain English instead. Done first, before any thread exists.
    if ["LC_ALL", "LC_MESSAGES", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .is_none_or(|v| v == "C" || v == "POSIX" || v.starts_with("C.") || v.starts_with("POSIX."))
    {
        std::env::set_var("LC_ALL", "en_US.UTF-8");
    }
    chartroom_app::run();
}
