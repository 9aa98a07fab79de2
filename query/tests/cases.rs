//! Runs the data-driven cases in `tests/cases/*.txt` against the fixed dataset.
//!
//! A case file holds cases like this (lines before the first `==` are comments):
//!
//! ```text
//! == denies per agent
//! query: decision = deny | count by agent
//! now: 2026-06-15T12:00:00Z      (optional; this is the default)
//! tz: Europe/Berlin              (optional; default UTC)
//! format: table                  (optional: table, csv or json)
//! --
//! agent        count
//! billing-bot      1
//! ```
//!
//! The expected output is the table (or CSV, with CRLF shown as LF, or JSON lines) the query produces, or the
//! exact rendering of its errors. `UPDATE_SNAPSHOTS=1 cargo test -p ledger-query --test
//! cases` rewrites the expected outputs from what the engine does now; review the diff.
//!
//! Every case is also checked for consistency with the planning hints: running the query
//! only over the entries inside `time_range` and `agents` gives the same output.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ledger_query::{Code, Context, QueryErrors, Record, parse, write_csv, write_json_lines, write_table};

const DEFAULT_NOW: &str = "2026-06-15T12:00:00Z";

struct Case {
    name: String,
    /// The header lines, kept verbatim when the file is rewritten.
    header: Vec<String>,
    query: String,
    now: String,
    tz: String,
    format: String,
    expected: String,
}

fn read_cases(path: &Path) -> (String, Vec<Case>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut preamble = String::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_expected = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            cases.push(Case {
                name: name.trim().to_string(),
                header: Vec::new(),
                query: String::new(),
                now: DEFAULT_NOW.to_string(),
                tz: "UTC".to_string(),
                format: "table".to_string(),
                expected: String::new(),
            });
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
            case.header.push(line.to_string());
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("{}: bad header line {line:?}", path.display()));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match key {
                "query" => case.query = value,
                "now" => case.now = value,
                "tz" => case.tz = value,
                "format" => case.format = value,
                other => panic!("{}: unknown header {other:?}", path.display()),
            }
        }
    }
    for case in &mut cases {
        case.expected = case.expected.trim_end().to_string();
    }
    (preamble, cases)
}

fn context(case: &Case) -> Context {
    let now: jiff::Timestamp =
        case.now.parse().unwrap_or_else(|e| panic!("case {}: bad now: {e}", case.name));
    let tz = jiff::tz::TimeZone::get(&case.tz).unwrap_or_else(|e| panic!("case {}: bad tz: {e}", case.name));
    Context::new(now, tz)
}

/// What the engine makes of a case, and the codes of any errors.
fn run(case: &Case, data: &[common::Entry]) -> (String, Vec<Code>) {
    let ctx = context(case);
    let query = match parse(&case.query) {
        Ok(q) => q,
        Err(errors) => {
            check_json_round_trip(case, &errors);
            let codes = errors.errors().iter().map(|e| e.code).collect();
            return (errors.render(&case.query), codes);
        }
    };
    let output = render(case, &query, data.iter(), &ctx);

    // The hints may only drop entries that cannot matter.
    let range = query.time_range(&ctx);
    let agents = query.agents();
    let hinted: Vec<&common::Entry> = data
        .iter()
        .filter(|e| range.is_none_or(|(lo, hi)| lo <= e.time && e.time < hi))
        .filter(|e| agents.as_ref().is_none_or(|a| a.contains(&e.agent)))
        .collect();
    for e in data {
        let inside = hinted.iter().any(|h| h.seq == e.seq);
        assert!(
            inside || !query.filter().matches(e, &ctx),
            "case {}: entry {} is outside the hints but matches the filter",
            case.name,
            e.seq
        );
    }
    let with_hints = render(case, &query, hinted.into_iter(), &ctx);
    assert_eq!(output, with_hints, "case {}: the hints changed the result", case.name);
    (output, Vec::new())
}

fn render<'e>(
    case: &Case,
    query: &ledger_query::Query,
    data: impl Iterator<Item = &'e common::Entry>,
    ctx: &Context,
) -> String {
    let mut pipeline = query.pipeline(ctx);
    for e in data {
        if pipeline.is_done() {
            break;
        }
        pipeline.push(e as &dyn Record);
    }
    let rows = pipeline.finish();
    let mut out = Vec::new();
    match case.format.as_str() {
        "table" => write_table(&mut out, &rows, ctx.tz()).map(|_| ()),
        "json" => write_json_lines(&mut out, &rows, ctx.tz()),
        "csv" => write_csv(&mut out, &rows, ctx.tz()).map(|n| {
            out.extend_from_slice(format!("-- neutralised cells: {n}").as_bytes());
        }),
        other => panic!("case {}: unknown format {other}", case.name),
    }
    .unwrap_or_else(|e| panic!("case {}: write failed: {e}", case.name));
    let text =
        String::from_utf8(out).unwrap_or_else(|e| panic!("case {}: output is not UTF-8: {e}", case.name));
    if case.format == "csv" {
        // RFC 4180 ends records with CRLF; the case files show them as plain line ends.
        assert!(text.contains("\r\n"), "case {}: CSV without CRLF", case.name);
        return text.replace("\r\n", "\n").trim_end().to_string();
    }
    text.trim_end().to_string()
}

fn check_json_round_trip(case: &Case, errors: &QueryErrors) {
    let text = errors.to_json_string();
    let back = QueryErrors::from_json_str(&text)
        .unwrap_or_else(|e| panic!("case {}: JSON round trip: {e}", case.name));
    assert_eq!(&back, errors, "case {}: JSON round trip changed the errors", case.name);
    assert_eq!(back.render(&case.query), errors.render(&case.query));
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
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
    let data = common::dataset();
    let mut failures = Vec::new();
    let mut codes_seen = BTreeSet::new();
    let mut count = 0;
    for path in case_files() {
        let (preamble, mut cases) = read_cases(&path);
        let mut changed = false;
        for case in &mut cases {
            count += 1;
            let (actual, codes) = run(case, &data);
            codes_seen.extend(codes.iter().map(|c| c.as_str()));
            if actual != case.expected {
                if update {
                    case.expected = actual;
                    changed = true;
                } else {
                    failures.push(format!(
                        "--- {} / {}\nquery: {}\n--- expected\n{}\n--- actual\n{}\n",
                        path.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
                        case.name,
                        case.query,
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
                for h in &case.header {
                    let _ = writeln!(text, "{h}");
                }
                let _ = writeln!(text, "--\n{}\n", case.expected);
            }
            std::fs::write(&path, text.trim_end().to_string() + "\n")
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    assert!(count > 0, "no cases found");
    assert!(failures.is_empty(), "{} of {count} cases failed:\n\n{}", failures.len(), failures.join("\n"));
    let missing: Vec<&str> =
        Code::ALL.iter().map(|c| c.as_str()).filter(|c| !codes_seen.contains(c)).collect();
    assert!(missing.is_empty(), "no case produces these error codes: {missing:?}");
}
