//! Runs the examples in `docs/QUERY.md`, so the reference cannot drift from the code.
//!
//! - every line of a ```query block parses, type-checks and runs over the test dataset;
//! - every line of a ```policy-condition block parses as a condition;
//! - every ```query-error block (query, `---`, rendering) renders exactly as shown;
//! - the ```json error example reads back as the errors of the first error example;
//! - every auditor example in the SOC 2 table parses and runs;
//! - the error code table lists exactly the codes there are, and each complete example in it
//!   fails with that code.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use ledger_query::{Code, Context, QueryErrors, parse, parse_condition};

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/QUERY.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bodies of the fenced code blocks tagged `lang`.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match &mut current {
            None if line.trim_end() == format!("```{lang}") => current = Some(String::new()),
            None => {}
            Some(body) if line.trim_end() == "```" => {
                out.push(std::mem::take(body));
                current = None;
            }
            Some(body) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    assert!(current.is_none(), "unclosed ```{lang} block");
    out
}

/// The rows of the first table after `heading`, as cells (with `\|` unescaped).
fn table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("no section {heading:?}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.replace("\\|", "\u{0}")
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect()
        })
        .collect()
}

/// The `…` spans of a table cell.
fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

fn ctx() -> Context {
    Context::utc("2026-06-15T12:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")))
}

fn runs(query: &str) {
    let q = parse(query).unwrap_or_else(|e| panic!("doc example does not parse:\n{}", e.render(query)));
    let data = common::dataset();
    let rows = q.run(data.iter(), &ctx());
    assert_eq!(rows.columns.len(), q.columns().len());
}

#[test]
fn query_blocks_parse_and_run() {
    let doc = doc();
    let mut n = 0;
    for block in blocks(&doc, "query") {
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            runs(line);
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn policy_conditions_parse() {
    let doc = doc();
    let mut n = 0;
    for block in blocks(&doc, "policy-condition") {
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            if let Err(e) = parse_condition(line) {
                panic!("doc condition does not parse:\n{}", e.render(line));
            }
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn error_examples_render_as_shown() {
    let doc = doc();
    let examples = blocks(&doc, "query-error");
    assert!(examples.len() >= 3);
    for block in &examples {
        let (query, expected) = block.split_once("\n---\n").unwrap_or_else(|| panic!("no --- in {block}"));
        let errors = match parse(query) {
            Ok(_) => panic!("doc error example parses: {query}"),
            Err(e) => e,
        };
        assert_eq!(errors.render(query), expected.trim_end(), "rendering of {query}");
    }
    // The JSON example is the first error example's JSON form.
    let json = blocks(&doc, "json");
    let first_query = examples[0].split_once("\n---\n").map(|(q, _)| q).unwrap_or_default();
    let from_doc = QueryErrors::from_json_str(json[0].trim()).unwrap_or_else(|e| panic!("doc JSON: {e}"));
    let actual = parse(first_query).err().unwrap_or_else(|| panic!("{first_query} parses"));
    assert_eq!(from_doc, actual);
    assert_eq!(actual.to_json_string(), json[0].trim());
}

#[test]
fn auditor_examples_parse_and_run() {
    let doc = doc();
    let rows = table(&doc, "## Auditor examples");
    assert!(rows.len() >= 10, "expected at least ten auditor examples");
    let mut criteria = BTreeSet::new();
    for row in &rows {
        let [evidence, query] = row.as_slice() else {
            panic!("bad row {row:?}");
        };
        criteria.insert(evidence.get(..3).unwrap_or_default().to_string());
        let spans = code_spans(query);
        assert_eq!(spans.len(), 1, "one query per row: {row:?}");
        runs(&spans[0]);
    }
    assert_eq!(criteria, BTreeSet::from(["CC6".to_string(), "CC7".to_string(), "CC8".to_string()]));
}

#[test]
fn error_code_table_is_complete_and_true() {
    let doc = doc();
    let rows = table(&doc, "| code | meaning | example |");
    let listed: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let all: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(listed, all, "the table must list every code, in order");
    for row in &rows {
        for example in code_spans(&row[2]).iter().filter(|e| !e.contains('…')) {
            match parse(example) {
                Ok(_) => panic!("{} example parses: {example}", row[0]),
                Err(e) => assert!(
                    e.errors().iter().any(|e| e.code.as_str() == row[0]),
                    "{} example gives other errors:\n{}",
                    row[0],
                    e.render(example)
                ),
            }
        }
    }
}
