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

/// Issue 17: the CSV writer writes its bytes itself; they must be exactly those of the
/// `csv` crate's writer (CRLF line ends) given the same neutralised cells, for random
/// rows of nasty text, one-column rows of empty cells included, through both ways of
/// writing (whole rows, and cell by cell).
#[test]
fn bytes_are_those_of_the_csv_crate() {
    let alphabet =
        ["'", "=", "+", "-", "@", "\t", "\r", "\n", "\r\n", ",", "\"", "\"\"", "a", "é", "😀", " ", ""];
    let mut state = 0x5eed_0017_c5c5_0001u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let tz = jiff::tz::TimeZone::UTC;
    for round in 0..400 {
        let width = 1 + next(4);
        let columns: Vec<String> =
            (0..width).map(|i| if round % 7 == 0 { String::new() } else { format!("c{i}") }).collect();
        let rows: Vec<Vec<Value<'static>>> = (0..next(30))
            .map(|_| {
                (0..width)
                    .map(|_| {
                        let text: String = (0..next(6)).map(|_| alphabet[next(alphabet.len())]).collect();
                        Value::Str(Cow::Owned(text))
                    })
                    .collect()
            })
            .collect();
        let mut expected =
            csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
        expected.write_record(&columns).unwrap_or_else(|e| panic!("{e}"));
        for row in &rows {
            let cells: Vec<String> =
                row.iter().map(|v| neutralise(&format_value(v, &tz)).into_owned()).collect();
            expected.write_record(&cells).unwrap_or_else(|e| panic!("{e}"));
        }
        let expected = expected.into_inner().unwrap_or_else(|e| panic!("{e}"));

        let set = ResultSet { columns: columns.clone(), rows: rows.clone() };
        let mut whole = Vec::new();
        write_csv(&mut whole, &set, &tz).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(String::from_utf8_lossy(&whole), String::from_utf8_lossy(&expected), "rows {rows:?}");

        let mut by_cell = Vec::new();
        let mut w = ledger_query::CsvWriter::new(&mut by_cell, &columns, tz.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        for row in &rows {
            for v in row {
                w.cell(v);
            }
            w.end_row().unwrap_or_else(|e| panic!("{e}"));
        }
        w.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_cell, expected, "cell by cell, rows {rows:?}");
    }
}
