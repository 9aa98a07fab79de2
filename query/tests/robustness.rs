//! No query text makes the parser, checker or engine panic: random token soup, random
//! characters, every prefix of every known query, and pathological nesting.

mod common;

use std::path::Path;

use ledger_query::{Context, QueryErrors, parse, parse_condition};

const TOKENS: &[&str] = &[
    "agent",
    "=",
    "!=",
    "<",
    ">=",
    "~",
    "!~",
    "\"x\"",
    "\"",
    "(",
    ")",
    "|",
    "count",
    "by",
    "and",
    "or",
    "not",
    "in",
    "has",
    "[",
    "]",
    ",",
    "/",
    "/a/",
    "\\",
    "last",
    "24h",
    "since",
    "until",
    "during",
    "2026-Q1",
    "2026-02-30",
    "hour",
    "weekday",
    "bin",
    "date",
    "time",
    "1h",
    "params.",
    "params.a.b",
    "é",
    "\n",
    " ",
    "\t",
    "ago",
    "now",
    "-",
    "99999999999999999999",
    "sort",
    "desc",
    "limit",
    "fields",
    "stats",
    "top",
    "count()",
    "dcount(",
    "as",
    "where",
    "flags",
    "decision",
    "deny",
    "maybe",
    "*",
    "**",
    "'",
    "7d",
    "1.5",
    "2026-03-15T09:30:00Z",
    "😀",
    ".",
    ":",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Parses `text`, checks the error positions, and runs a query that parses.
fn exercise(text: &str, data: &[common::Entry], ctx: &Context) {
    match parse(text) {
        Ok(q) => {
            let _ = q.time_range(ctx);
            let _ = q.agents();
            let rows = q.run(data.iter(), ctx);
            assert!(rows.rows.iter().all(|r| r.len() == rows.columns.len()), "ragged rows for {text:?}");
        }
        Err(errors) => check_errors(text, &errors),
    }
    if let Err(errors) = parse_condition(text) {
        check_errors(text, &errors);
    }
}

fn check_errors(text: &str, errors: &QueryErrors) {
    assert!(!errors.errors().is_empty());
    for e in errors.errors() {
        assert!(e.start <= e.end && e.end <= text.len(), "span out of range for {text:?}: {e:?}");
        assert!(
            text.is_char_boundary(e.start) && text.is_char_boundary(e.end),
            "span splits a character: {text:?}"
        );
        assert!(e.line >= 1 && e.col >= 1);
    }
    let _ = errors.render(text);
    let back = QueryErrors::from_json_str(&errors.to_json_string()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(&back, errors);
}

fn ctx() -> Context {
    Context::utc("2026-06-15T12:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn random_token_soup() {
    let data = common::dataset();
    let ctx = ctx();
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let n = (rng.next() % 12) as usize;
        let text: String = (0..n)
            .map(|_| {
                let t = TOKENS[(rng.next() % TOKENS.len() as u64) as usize];
                if rng.next() % 3 == 0 { format!("{t} ") } else { t.to_string() }
            })
            .collect();
        exercise(&text, &data, &ctx);
    }
}

#[test]
fn random_characters() {
    let data = common::dataset();
    let ctx = ctx();
    let mut rng = Rng(99);
    for _ in 0..20_000 {
        let n = (rng.next() % 24) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| (rng.next() % 256) as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes), &data, &ctx);
    }
}

#[test]
fn every_prefix_of_known_queries() {
    let data = common::dataset();
    let ctx = ctx();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")).flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_else(|e| panic!("{e}"));
        queries.extend(text.lines().filter_map(|l| l.strip_prefix("query: ")).map(str::to_string));
    }
    assert!(queries.len() > 100);
    for q in &queries {
        for (i, _) in q.char_indices().chain([(q.len(), ' ')]) {
            exercise(&q[..i], &data, &ctx);
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let data = common::dataset();
    let ctx = ctx();
    for text in [
        "(".repeat(100_000),
        "not ".repeat(100_000),
        format!("{}agent = \"x\"{}", "(".repeat(5_000), ")".repeat(5_000)),
        "agent = \"x\" and ".repeat(20_000) + "agent = \"x\"",
        "agent = \"x\" or ".repeat(20_000) + "agent = \"x\"",
        format!("agent in [{}\"x\"]", "\"x\", ".repeat(20_000)),
        "| limit 1 ".repeat(5_000),
    ] {
        exercise(&text, &data, &ctx);
    }
    let too_deep = "(".repeat(100);
    let errors = parse(&too_deep).err().unwrap_or_else(|| panic!("parses"));
    assert_eq!(errors.errors()[0].code, ledger_query::Code::Q110);
}
