//! Runs the policy documents in `tests/policy_cases/*.txt` and compares what `Policy::parse`
//! makes of them with the expected output: the exact rendering of the errors, or a summary
//! of a document that parses.
//!
//! A case file holds cases like this (lines before the first `==` are comments):
//!
//! ```text
//! == P103 duplicate rule id
//! rule no-shell: deny tool ~ "shell.*"
//! rule no-shell: deny tool ~ "sh*"
//! default deny
//! --
//! error[P103]: duplicate rule id `no-shell`
//! ...
//! ```
//!
//! The document is the lines between `==` and `--`, each ending in a line feed. Instead, a
//! `text: "…"` line (a JSON string) gives a document exactly, for tabs, CRLF or a missing
//! final line end; and `repeat: N` before the document repeats its first line N times,
//! with `{n}` replaced by 1, 2, … N. `UPDATE_SNAPSHOTS=1 cargo test -p ledger-query --test
//! policy_cases` rewrites the expected outputs from what the parser does now; review the
//! diff.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ledger_query::policy::{Policy, PolicyCode, PolicyErrors};

struct Case {
    name: String,
    /// The lines between `==` and `--`, kept verbatim when the file is rewritten.
    body: Vec<String>,
    expected: String,
}

impl Case {
    fn document(&self) -> String {
        let mut lines = self.body.iter().peekable();
        let mut repeat = 1;
        if let Some(first) = lines.peek() {
            if let Some(json) = first.strip_prefix("text: ") {
                return serde_json::from_str(json)
                    .unwrap_or_else(|e| panic!("case {}: bad text line: {e}", self.name));
            }
            if let Some(n) = first.strip_prefix("repeat: ") {
                repeat = n.parse().unwrap_or_else(|e| panic!("case {}: bad repeat: {e}", self.name));
                lines.next();
            }
        }
        let mut doc = String::new();
        if let Some(first) = lines.next() {
            for n in 1..=repeat {
                doc.push_str(&first.replace("{n}", &n.to_string()));
                doc.push('\n');
            }
        }
        for line in lines {
            doc.push_str(line);
            doc.push('\n');
        }
        doc
    }
}

fn read_cases(path: &Path) -> (String, Vec<Case>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut preamble = String::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_expected = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            cases.push(Case { name: name.trim().to_string(), body: Vec::new(), expected: String::new() });
            in_expected = false;
            continue;
        }
        let Some(case) = cases.last_mut() else {
            preamble.push_str(line);
            preamble.push('\n');
            continue;
        };
        if in_expected {
            case.expected.push_str(line);
            case.expected.push('\n');
        } else if line == "--" {
            in_expected = true;
        } else {
            case.body.push(line.to_string());
        }
    }
    for case in &mut cases {
        case.expected = case.expected.trim_end().to_string();
    }
    (preamble, cases)
}

/// What the parser makes of a case, and the codes of any errors.
fn run(case: &Case) -> (String, Vec<PolicyCode>) {
    let doc = case.document();
    match Policy::parse(&doc) {
        Ok(policy) => {
            let mut out = String::new();
            for rule in policy.rules() {
                let _ = writeln!(out, "line {}: {}", rule.line, rule.text());
            }
            let _ = write!(out, "default {}", policy.default_effect());
            (out, Vec::new())
        }
        Err(errors) => {
            check_errors(case, &doc, &errors);
            let codes = errors.errors().iter().map(|e| e.code).collect();
            (errors.render(&doc), codes)
        }
    }
}

/// Positions are in range and on character boundaries, and the JSON form reads back to the
/// same errors and rendering.
fn check_errors(case: &Case, doc: &str, errors: &PolicyErrors) {
    assert!(!errors.errors().is_empty(), "case {}: no errors", case.name);
    for e in errors.errors() {
        assert!(e.start <= e.end && e.end <= doc.len(), "case {}: span out of range: {e:?}", case.name);
        assert!(doc.is_char_boundary(e.start) && doc.is_char_boundary(e.end), "case {}: {e:?}", case.name);
    }
    let back = PolicyErrors::from_json_str(&errors.to_json_string())
        .unwrap_or_else(|e| panic!("case {}: JSON round trip: {e}", case.name));
    assert_eq!(&back, errors, "case {}: JSON round trip changed the errors", case.name);
    assert_eq!(back.render(doc), errors.render(doc));
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
}

#[test]
fn cases() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut codes_seen = BTreeSet::new();
    let mut count = 0;
    for path in case_files() {
        let (preamble, mut cases) = read_cases(&path);
        let mut changed = false;
        for case in &mut cases {
            count += 1;
            let (actual, codes) = run(case);
            codes_seen.extend(codes.iter().map(|c| c.as_str()));
            if actual != case.expected {
                if update {
                    case.expected = actual;
                    changed = true;
                } else {
                    failures.push(format!(
                        "--- {} / {}\n--- expected\n{}\n--- actual\n{}\n",
                        path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
                        case.name,
                        case.expected,
                        actual
                    ));
                }
            }
        }
        if changed {
            let mut text = preamble;
            for case in &cases {
                let _ = writeln!(text, "== {}", case.name);
                for line in &case.body {
                    let _ = writeln!(text, "{line}");
                }
                let _ = writeln!(text, "--\n{}\n", case.expected);
            }
            std::fs::write(&path, text.trim_end().to_string() + "\n")
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    assert!(count > 0, "no cases found");
    assert!(failures.is_empty(), "{} of {count} cases failed:\n\n{}", failures.len(), failures.join("\n"));
    // P116 needs over a hundred errors, P117 megabytes of compiled patterns; `tests/policy.rs`
    // produces both.
    let missing: Vec<&str> = PolicyCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !codes_seen.contains(c) && !["P116", "P117"].contains(c))
        .collect();
    assert!(missing.is_empty(), "no case produces these error codes: {missing:?}");
}
