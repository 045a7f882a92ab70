//! Test results read from the logs of a run: `cargo test` output (which test binary ran, then
//! `test name ... ok`) and the TAP output of `node --test`.

use crate::annotations::Annotation;

/// How one test ended in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Ignored,
    NotRun,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "**FAILED**",
            Outcome::Ignored => "ignored",
            Outcome::NotRun => "not run",
        }
    }
}

/// One result line of a cargo test run.
#[derive(Debug, Clone)]
struct RustResult {
    /// The test target's source, relative to its package: `tests/api.rs`, `src/lib.rs`.
    target: String,
    /// The test binary's crate name: `api`, `chartroom_domain`.
    binary: String,
    /// The test's path inside the binary: `session::tests::idle_station_warns_then_locks`.
    name: String,
    outcome: Outcome,
}

/// Everything a run's logs say.
#[derive(Debug, Default)]
pub struct Results {
    rust: Vec<RustResult>,
    /// (title, passed) from TAP.
    node: Vec<(String, bool)>,
}

impl Results {
    /// Reads `cargo test` output.
    pub fn add_cargo_log(&mut self, log: &str) {
        let mut current: Option<(String, String)> = None;
        for line in log.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Running ") {
                // `Running tests/api.rs (/t/debug/deps/api-0123abcd)` or `Running unittests src/lib.rs (…)`.
                let rest = rest.strip_prefix("unittests ").unwrap_or(rest);
                current = rest.split_once(" (").map(|(target, binary)| {
                    let file = binary.trim_end_matches(')').rsplit('/').next().unwrap_or("");
                    let stem = file.rsplit_once('-').map_or(file, |(stem, _hash)| stem);
                    (target.to_string(), stem.to_string())
                });
                continue;
            }
            let (Some((target, binary)), Some(rest)) = (&current, line.strip_prefix("test ")) else {
                continue;
            };
            let Some((name, result)) = rest.rsplit_once(" ... ") else {
                continue;
            };
            let outcome = match result.trim() {
                "ok" => Outcome::Passed,
                "FAILED" => Outcome::Failed,
                r if r.starts_with("ignored") => Outcome::Ignored,
                _ => continue,
            };
            self.rust.push(RustResult {
                target: target.clone(),
                binary: binary.clone(),
                name: name.trim().to_string(),
                outcome,
            });
        }
    }

    /// Reads `node --test --test-reporter=tap` output.
    pub fn add_tap_log(&mut self, log: &str) {
        for line in log.lines() {
            let line = line.trim_start();
            let (passed, rest) = if let Some(rest) = line.strip_prefix("not ok ") {
                (false, rest)
            } else if let Some(rest) = line.strip_prefix("ok ") {
                (true, rest)
            } else {
                continue;
            };
            if let Some((_number, title)) = rest.split_once(" - ") {
                let (title, directive) = title.split_once(" # ").unwrap_or((title, ""));
                // `ok 3 - title # SKIP reason` (or TODO) did not run: it proves nothing.
                let upper = directive.to_ascii_uppercase();
                if upper.starts_with("SKIP") || upper.starts_with("TODO") {
                    continue;
                }
                self.node.push((title.replace("\\#", "#").replace("\\\\", "\\"), passed));
            }
        }
    }

    /// How the annotated test ended, given the package it belongs to (`package`, its directory
    /// `package_dir` relative to the repository, and its library crate name).
    pub fn outcome(&self, a: &Annotation, package_dir: &str, lib_name: &str) -> Outcome {
        if a.file.ends_with(".mjs") {
            let runs: Vec<bool> = self.node.iter().filter(|(t, _)| *t == a.test).map(|(_, p)| *p).collect();
            return combine(runs.iter().map(|p| if *p { Outcome::Passed } else { Outcome::Failed }));
        }
        let rel = a.file.strip_prefix(package_dir).unwrap_or(&a.file).trim_start_matches('/');
        let matches = self.rust.iter().filter(|r| {
            if let Some(module) = rel.strip_prefix("src/") {
                // A unit test: in the library's (or binary's) test harness, under the file's module.
                let module = module_path(module);
                let in_module = module.is_empty() || r.name.starts_with(&format!("{module}::"));
                r.target.starts_with("src/")
                    && (r.binary == lib_name || r.target == "src/main.rs")
                    && in_module
                    && (r.name == a.test || r.name.ends_with(&format!("::{}", a.test)))
            } else {
                r.target == rel && r.name == a.test
            }
        });
        combine(matches.map(|r| r.outcome))
    }
}

/// Several runs of one test (the same test in two harnesses): all must pass.
fn combine(outcomes: impl Iterator<Item = Outcome>) -> Outcome {
    outcomes.fold(Outcome::NotRun, |acc, o| match (acc, o) {
        (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
        (Outcome::NotRun, o) => o,
        (acc, Outcome::NotRun) => acc,
        (Outcome::Ignored, o) | (o, Outcome::Ignored) => o,
        (Outcome::Passed, Outcome::Passed) => Outcome::Passed,
    })
}

/// `session.rs` → `session`, `commands/mod.rs` → `commands`, `lib.rs` → ``.
fn module_path(file: &str) -> String {
    let file = file.trim_end_matches(".rs");
    let file = file.strip_suffix("/mod").unwrap_or(file);
    if matches!(file, "lib" | "main") {
        String::new()
    } else {
        file.replace('/', "::")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotation(file: &str, test: &str) -> Annotation {
        Annotation {
            file: file.into(),
            line: 1,
            test: test.into(),
            clauses: vec!["(b)".into()],
            proves: "x".into(),
        }
    }

    const CARGO: &str = "\
     Running unittests src/lib.rs (/t/debug/deps/chartroom_domain-7f3a)

running 2 tests
test session::tests::idle_station_warns_then_locks ... ok
test access::tests::units_scope_patient_actions ... FAILED
     Running tests/api.rs (/t/debug/deps/api-0011)
test access_matrix ... ok
test slow_one ... ignored, needs a display
     Running unittests src/lib.rs (/t/debug/deps/chartroom_store-99)
test session::tests::idle_station_warns_then_locks ... FAILED
";

    #[test]
    fn cargo_results_are_found_by_package_module_and_name() {
        let mut r = Results::default();
        r.add_cargo_log(CARGO);
        let domain =
            |f: &str, t: &str| r.outcome(&annotation(f, t), "crates/chartroom-domain", "chartroom_domain");
        assert_eq!(
            domain("crates/chartroom-domain/src/session.rs", "idle_station_warns_then_locks"),
            Outcome::Passed
        );
        assert_eq!(
            domain("crates/chartroom-domain/src/access.rs", "units_scope_patient_actions"),
            Outcome::Failed
        );
        // Same name in another module, or another test file: not this result.
        assert_eq!(
            domain("crates/chartroom-domain/src/policy.rs", "idle_station_warns_then_locks"),
            Outcome::NotRun
        );
        assert_eq!(domain("crates/chartroom-domain/tests/other.rs", "access_matrix"), Outcome::NotRun);
        let server = |t: &str| {
            r.outcome(
                &annotation("crates/chartroom-server/tests/api.rs", t),
                "crates/chartroom-server",
                "chartroom_server",
            )
        };
        assert_eq!(server("access_matrix"), Outcome::Passed);
        assert_eq!(server("slow_one"), Outcome::Ignored);
        assert_eq!(server("missing"), Outcome::NotRun);
    }

    #[test]
    fn tap_results_are_found_by_title() {
        let mut r = Results::default();
        r.add_tap_log(
            "TAP version 13\n# Subtest: e2e/story.test.mjs\n    ok 1 - 2. idle: warning \\# countdown\n    not ok 2 - 3. nurse drafts\n    ok 3 - 5. skipped # SKIP no display\nok 1 - e2e/story.test.mjs\n",
        );
        let get = |t: &str| r.outcome(&annotation("e2e/story.test.mjs", t), "", "");
        assert_eq!(get("2. idle: warning # countdown"), Outcome::Passed);
        assert_eq!(get("3. nurse drafts"), Outcome::Failed);
        assert_eq!(get("4. never ran"), Outcome::NotRun);
        assert_eq!(get("5. skipped"), Outcome::NotRun, "a skipped test is not a pass");
    }
}
