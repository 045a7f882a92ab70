//! Repository tasks. `cargo run -p xtask -- compliance --logs DIR --out FILE [--check]` writes the
//! HIPAA §164.312 evidence report: each clause, the controls that implement it, and the annotated
//! tests that prove it with their result in the run whose logs are in DIR (`cargo-test.log`,
//! `e2e.tap`, `require.env`). With `--check` it fails when a clause has no passing test, an
//! annotated test failed, was skipped or did not run, or the run let tests skip themselves.

#![forbid(unsafe_code)]

mod annotations;
mod clauses;
mod results;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use annotations::Annotation;
use results::{Outcome, Results};

const USAGE: &str = "usage: xtask compliance [--logs DIR] [--out FILE] [--check]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let mut args = args.into_iter();
    if args.next().as_deref() != Some("compliance") {
        return Err(USAGE.into());
    }
    let (mut logs, mut out, mut check) = (None, None, false);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--logs" => logs = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--out" => out = Some(PathBuf::from(args.next().ok_or(USAGE)?)),
            "--check" => check = true,
            _ => return Err(format!("unknown argument `{arg}`\n{USAGE}")),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no repository root")?.to_path_buf();
    let annotations = annotations::scan(&root)?;
    let mut results = Results::default();
    if let Some(dir) = &logs {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        results.add_cargo_log(&read("cargo-test.log"));
        results.add_tap_log(&read("e2e.tap"));
    }
    let rows = annotations
        .iter()
        .map(|a| {
            let (dir, lib) = package_of(&root, &a.file);
            (a, results.outcome(a, &dir, &lib))
        })
        .collect::<Vec<_>>();
    let report = render(&rows, logs.is_some().then(|| run_label(&root)).as_deref());
    match &out {
        Some(path) => std::fs::write(path, &report).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{report}"),
    }
    let mut problems = problems(&rows);
    if let Some(dir) = logs.as_ref().filter(|_| check) {
        problems.extend(missing_requirements(dir));
    }
    for p in &problems {
        eprintln!("compliance: {p}");
    }
    let passed = rows.iter().filter(|(_, o)| *o == Outcome::Passed).count();
    eprintln!(
        "compliance: {} clauses, {} annotated tests, {passed} passed{}",
        clauses::CLAUSES.len(),
        rows.len(),
        out.map(|p| format!(", written to {}", p.display())).unwrap_or_default()
    );
    Ok(if check && !problems.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// What makes the evidence incomplete: a clause without a passing test, an annotated test that
/// failed or did not run.
fn problems(rows: &[(&Annotation, Outcome)]) -> Vec<String> {
    let mut found = Vec::new();
    for c in clauses::CLAUSES {
        if !rows.iter().any(|(a, o)| *o == Outcome::Passed && a.clauses.iter().any(|id| id == c.id)) {
            found.push(format!("§164.312{} {} has no passing test", c.id, c.title));
        }
    }
    for (a, o) in rows {
        if matches!(o, Outcome::Failed | Outcome::NotRun | Outcome::Ignored) {
            found.push(format!("{}:{} `{}` {}", a.file, a.line, a.test, o.label().trim_matches('*')));
        }
    }
    found
}

/// What the run's tests needed in order not to skip themselves. A test that finds no OS keyring,
/// PostgreSQL or tmpfs mount returns early and reports `ok` unless told to require it; the run records
/// what it required (`require.env`, written by `scripts/test`), and evidence from a run that let
/// tests skip is refused.
const REQUIRED: &[(&str, &str)] = &[
    ("CHARTROOM_REQUIRE_KEYRING", "the OS keyring tests"),
    ("CHARTROOM_REQUIRE_POSTGRES", "the PostgreSQL tests"),
    ("CHARTROOM_REQUIRE_MOUNT", "the disk-full and read-only tests (tmpfs: root or passwordless sudo)"),
];

fn missing_requirements(dir: &Path) -> Vec<String> {
    let recorded = std::fs::read_to_string(dir.join("require.env")).unwrap_or_default();
    REQUIRED
        .iter()
        .filter(|(var, _)| !recorded.lines().any(|l| l.trim() == format!("{var}=1")))
        .map(|(var, what)| {
            format!("{var} was not 1 in this run: {what} may have skipped, so their `ok` proves nothing")
        })
        .collect()
}

/// The directory of the package that holds `file` (nearest `Cargo.toml`) and its library's crate name.
fn package_of(root: &Path, file: &str) -> (String, String) {
    let mut dir = Path::new(file).parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(manifest) = std::fs::read_to_string(root.join(d).join("Cargo.toml")) {
            return (d.to_string_lossy().into_owned(), lib_name(&manifest));
        }
        dir = d.parent();
    }
    (String::new(), String::new())
}

/// `[lib] name`, or the package name with `-` as `_`.
fn lib_name(manifest: &str) -> String {
    let mut section = "";
    let (mut package, mut lib) = (None, None);
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if let Some(value) = line.strip_prefix("name").and_then(|v| v.trim().strip_prefix('=')) {
            let value = value.trim().trim_matches('"').to_string();
            match section {
                "[package]" => package = Some(value),
                "[lib]" => lib = Some(value),
                _ => {}
            }
        }
    }
    lib.or(package).unwrap_or_default().replace('-', "_")
}

/// `commit abc1234, 2026-11-28`, from git and the clock.
fn run_label(root: &Path) -> String {
    let output = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let commit = output("git", &["log", "-1", "--format=%h"]);
    let dirty = if output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        ""
    } else {
        " with uncommitted changes"
    };
    format!("commit `{commit}`{dirty}, {}", output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]))
}

fn render(rows: &[(&Annotation, Outcome)], run: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# HIPAA §164.312 technical safeguards: compliance evidence\n");
    let _ = writeln!(
        s,
        "Generated by `cargo run -p xtask -- compliance` from the `// hipaa` annotations on tests and the \
         logs of a full test run (`scripts/test`, which CI runs and which regenerates this file). Do not \
         edit it by hand: change the controls in `xtask/src/clauses.rs` and the evidence in the tests.\n"
    );
    match run {
        Some(run) => {
            let passed = rows.iter().filter(|(_, o)| *o == Outcome::Passed).count();
            let _ = writeln!(
                s,
                "Results from the run on {run}: {passed} of {} annotated tests passed.\n",
                rows.len()
            );
        }
        None => {
            let _ = writeln!(s, "No run's logs were given: results read \"not run\".\n");
        }
    }
    let _ = writeln!(s, "| Clause | Safeguard | Tests | Passed |\n|---|---|---:|---:|");
    for c in clauses::CLAUSES {
        let tests: Vec<_> = rows.iter().filter(|(a, _)| a.clauses.iter().any(|id| id == c.id)).collect();
        let passed = tests.iter().filter(|(_, o)| *o == Outcome::Passed).count();
        let _ = writeln!(s, "| {} | {} | {} | {passed} |", c.id, c.title, tests.len());
    }
    for c in clauses::CLAUSES {
        let _ = writeln!(s, "\n## §164.312{} {}\n\n> {}\n\n**Controls**\n", c.id, c.title, c.requirement);
        for control in c.controls {
            let _ = writeln!(s, "- {control}");
        }
        let _ = writeln!(s, "\n**Tests**\n\n| Test | Proves | Result |\n|---|---|---|");
        for (a, o) in rows.iter().filter(|(a, _)| a.clauses.iter().any(|id| id == c.id)) {
            let _ = writeln!(
                s,
                "| `{}` ([{}:{}](../{}#L{})) | {} | {} |",
                a.test.replace('|', "\\|"),
                a.file,
                a.line,
                a.file,
                a.line,
                a.proves.replace('|', "\\|"),
                o.label()
            );
        }
    }
    s
}
