//! What the repository tasks share with the tests: walking the repository's source files.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Adds to `out` every file under `dir` whose name ends with one of `extensions`, skipping build
/// output, dependencies and generated code (`target`, `node_modules`, `gen`, `.git`).
pub fn source_files(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules" | "gen" | ".git") {
                source_files(&path, extensions, out);
            }
        } else if extensions.iter().any(|e| name.ends_with(e)) {
            out.push(path);
        }
    }
}
