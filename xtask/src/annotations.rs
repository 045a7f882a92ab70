//! Finds `hipaa` annotations on tests: a comment line `// hipaa (a)(1) (d): what this test proves`
//! (continued on following `//` lines) directly above a Rust test (`#[test] fn name`) or a Node test
//! (`test("title", …)`).

use std::path::Path;

/// One annotated test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Repository-relative path of the file, with `/` separators.
    pub file: String,
    pub line: usize,
    /// The Rust function name, or the Node test's title.
    pub test: String,
    pub clauses: Vec<String>,
    /// What the test proves, in the annotation's words.
    pub proves: String,
}

const MARK: &str = "// hipaa";

/// Every annotation in the Rust and Node test sources under `root`.
pub fn scan(root: &Path) -> Result<Vec<Annotation>, String> {
    let mut files = Vec::new();
    for dir in ["crates", "src-tauri/src", "src-tauri/tests", "tests", "e2e"] {
        xtask::source_files(&root.join(dir), &[".rs", ".mjs"], &mut files);
    }
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        found.extend(parse(&rel, &text)?);
    }
    Ok(found)
}

/// The annotations in one file's text.
pub fn parse(file: &str, text: &str) -> Result<Vec<Annotation>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let Some(rest) = line.strip_prefix(MARK) else {
            i += 1;
            continue;
        };
        let at = format!("{file}:{}", i + 1);
        let (ids, proves) =
            rest.split_once(':').ok_or(format!("{at}: expected `// hipaa (x)(y): what it proves`"))?;
        let clauses: Vec<String> =
            ids.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if clauses.is_empty() {
            return Err(format!("{at}: no clause named"));
        }
        if let Some(bad) = clauses.iter().find(|c| crate::clauses::find(c).is_none()) {
            return Err(format!("{at}: `{bad}` is not a clause of §164.312 (write it as (a)(2)(iv))"));
        }
        let mut proves = proves.trim().to_string();
        let mut j = i + 1;
        // Continuation lines, then attributes, then the test itself.
        while let Some(next) = lines.get(j).map(|l| l.trim()) {
            let doc = next.starts_with("///") || next.starts_with("//!");
            if let Some(more) = next.strip_prefix("//").filter(|_| !next.starts_with(MARK) && !doc) {
                proves.push(' ');
                proves.push_str(more.trim());
            } else if !next.starts_with("#[") {
                break;
            }
            j += 1;
        }
        let test = lines.get(j).and_then(|l| test_name(l)).ok_or(format!(
            "{at}: the annotation must stand directly above a test (`#[test] fn …` or `test(\"…\"`)"
        ))?;
        if proves.is_empty() {
            return Err(format!("{at}: say what the test proves after the colon"));
        }
        found.push(Annotation { file: file.to_string(), line: i + 1, test, clauses, proves });
        i = j + 1;
    }
    Ok(found)
}

/// `fn name(` in Rust, or `test("title"` in a Node test file.
fn test_name(line: &str) -> Option<String> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("test(") {
        let quote = rest.chars().next().filter(|q| matches!(q, '"' | '\'' | '`'))?;
        let title = &rest[1..];
        return title.find(quote).map(|end| title[..end].to_string());
    }
    let after = line.split_once("fn ")?.1;
    let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_name_clauses_and_the_test_below_them() {
        let text = "\
// hipaa (a)(1), (d): a denial is refused
//   and recorded
#[tokio::test]
async fn denied() {}

fn helper() {}
    // hipaa (b): chains verify
    #[test]
    fn chains() {}
// hipaa (a)(2)(iii): the window locks
test(\"2. idle: warning\", async (t) => {
";
        let found = parse("x.rs", text).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].test, "denied");
        assert_eq!(found[0].clauses, ["(a)(1)", "(d)"]);
        assert_eq!(found[0].proves, "a denial is refused and recorded");
        assert_eq!(found[0].line, 1);
        assert_eq!(found[1].test, "chains");
        assert_eq!(found[1].line, 7);
        assert_eq!(found[2].test, "2. idle: warning");
        assert_eq!(found[2].clauses, ["(a)(2)(iii)"]);
    }

    #[test]
    fn mistakes_are_errors_naming_the_line() {
        let unknown = parse("x.rs", "\n// hipaa (a)(9): nothing\n#[test]\nfn t() {}\n").unwrap_err();
        assert!(unknown.starts_with("x.rs:2:") && unknown.contains("(a)(9)"), "{unknown}");
        let orphan = parse("x.rs", "// hipaa (b): floats\n\nfn t() {}\n").unwrap_err();
        assert!(orphan.contains("directly above a test"), "{orphan}");
        let mute = parse("x.rs", "// hipaa (b):\n#[test]\nfn t() {}\n").unwrap_err();
        assert!(mute.contains("what the test proves"), "{mute}");
        assert!(parse("x.rs", "// hipaa: (b) x\n#[test]\nfn t() {}\n").unwrap_err().contains("no clause"));
    }
}
