//! CSV round trip: what `write_csv` writes, the `csv` reader reads back, and `unneutralise`
//! restores every field exactly, formula-looking ones included.

mod common;

use std::borrow::Cow;

use ledger_query::{Context, ResultSet, Value, format_value, neutralise, parse, unneutralise, write_csv};

fn read_back(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header =
        reader.headers().unwrap_or_else(|e| panic!("header: {e}")).iter().map(str::to_string).collect();
    let rows = reader
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("record: {e}")).iter().map(|f| unneutralise(f).into_owned()).collect()
        })
        .collect();
    (header, rows)
}

fn strings(cells: &[&str]) -> ResultSet {
    ResultSet {
        columns: (0..cells.len()).map(|i| format!("c{i}")).collect(),
        rows: vec![cells.iter().map(|c| Value::Str(Cow::Owned(c.to_string()))).collect()],
    }
}

const NASTY: &[&str] = &[
    "plain",
    "with, comma",
    "with \"quotes\"",
    "two\nlines",
    "crlf\r\nline",
    "Löschen – «Richtlinie» 日本語 😀",
    "=SUM(A1:A9)",
    "+1-555-0100",
    "-5",
    "@cmd",
    "\tTAB",
    "\rCR",
    "=cmd|' /C calc'!A0",
    "'=already quoted",
    "''=twice",
    "'plain quote",
    "'",
    "''",
    "x=1",
    " =leading space",
    "",
    "\"",
    ",",
];

#[test]
fn every_field_comes_back_exactly() {
    let rows = strings(NASTY);
    let mut out = Vec::new();
    let neutralised = write_csv(&mut out, &rows, &jiff::tz::TimeZone::UTC).unwrap_or_else(|e| panic!("{e}"));
    let (header, back) = read_back(&out);
    assert_eq!(header, rows.columns);
    assert_eq!(back, vec![NASTY.iter().map(|s| s.to_string()).collect::<Vec<_>>()]);
    // =SUM, +1, -5, @cmd, TAB, CR, =cmd, '=already, ''=twice
    assert_eq!(neutralised, 9);
    // Nothing a spreadsheet would run survives in the file.
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(out.as_slice());
    for record in reader.records() {
        for field in record.unwrap_or_else(|e| panic!("{e}")).iter() {
            assert!(!field.starts_with(['=', '+', '-', '@', '\t', '\r']), "unsafe cell {field:?}");
        }
    }
}

#[test]
fn neutralise_is_reversible_on_random_text() {
    let alphabet = ['\'', '=', '+', '-', '@', '\t', '\r', '\n', ',', '"', 'a', 'é', '😀', ' '];
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 6) as usize;
        let s: String = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        let n = neutralise(&s);
        assert_eq!(unneutralise(&n), s, "round trip of {s:?} via {n:?}");
        assert!(!n.starts_with(['=', '+', '-', '@', '\t', '\r']), "{s:?} stays unsafe as {n:?}");
    }
}

#[test]
fn exported_rows_round_trip() {
    let data = common::dataset();
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::new("2026-06-15T12:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")), tz);
    let query = parse("").unwrap_or_else(|e| panic!("{e}"));
    let rows = query.run(data.iter(), &ctx);
    let mut out = Vec::new();
    let neutralised = write_csv(&mut out, &rows, ctx.tz()).unwrap_or_else(|e| panic!("{e}"));
    let (header, back) = read_back(&out);
    assert_eq!(header, rows.columns);
    let expected: Vec<Vec<String>> =
        rows.rows.iter().map(|r| r.iter().map(|v| format_value(v, ctx.tz())).collect()).collect();
    assert_eq!(back, expected);
    assert_eq!(back.len(), data.len());
    assert_eq!(neutralised, 0, "no default column of the dataset starts with a formula character");

    let query = parse("| fields seq, params.cmd, params.rows").unwrap_or_else(|e| panic!("{e}"));
    let rows = query.run(data.iter(), &ctx);
    let mut out = Vec::new();
    let neutralised = write_csv(&mut out, &rows, ctx.tz()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(neutralised, 3, "=cmd…, @SUM… and -3");
    let (_, back) = read_back(&out);
    let expected: Vec<Vec<String>> =
        rows.rows.iter().map(|r| r.iter().map(|v| format_value(v, ctx.tz())).collect()).collect();
    assert_eq!(back, expected);
}
