//! Repository tidiness: every Rust module says what it owns in a `//!` line, and every crate forbids
//! `unsafe`.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn all_rust_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["crates", "src-tauri/src", "tests"] {
        xtask::source_files(&root.join(dir), &[".rs"], &mut files);
    }
    assert!(files.len() > 10, "found only {} Rust files under {}", files.len(), root.display());
    files
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let offenders: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "modules without a leading `//!` doc:\n{}", offenders.join("\n"));
}

#[test]
fn every_crate_root_forbids_unsafe() {
    let offenders: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_root =
                (name == "lib.rs" || name == "main.rs") && p.parent().is_some_and(|d| d.ends_with("src"));
            is_root && !std::fs::read_to_string(p).unwrap_or_default().contains("#![forbid(unsafe_code)]")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "crate roots without #![forbid(unsafe_code)]:\n{}", offenders.join("\n"));
}
