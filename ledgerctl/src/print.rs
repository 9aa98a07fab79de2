//! Shared output: aligned tables, streamed rows, CSV and JSON-lines printing, times and stdout writes.

use std::io::Write;

use ledger_query::terminal;

use crate::Format;
use crate::query::report_neutralised;

pub(crate) fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

pub(crate) fn print_table(columns: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    print_aligned(&table_widths(columns, rows, &[]), columns, rows, true)
}

/// Column widths that fit the header and `rows`, and are at least `min` (by position).
pub(crate) fn table_widths(columns: &[&str], rows: &[Vec<String>], min: &[usize]) -> Vec<usize> {
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.chars().count().max(min.get(i).copied().unwrap_or(0)))
        .collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(terminal::line(cell).chars().count());
        }
    }
    widths
}

/// Widths for tables printed a row at a time (`tail --follow`, `watch`): wide enough for
/// typical cells, so that later rows line up with the header (a longer cell only pushes
/// the rest of its own row).
pub(crate) const STREAM_WIDTHS: &[(&str, usize)] = &[
    ("SEQ", 6),
    ("TIME", 24),
    ("SEV", 3),
    ("FLAGS", 24),
    ("KIND", 14),
    ("AGENT", 16),
    ("TOOL", 24),
    ("DECISION", 8),
    ("RULE", 16),
];

pub(crate) fn stream_widths(columns: &[&str]) -> Vec<usize> {
    columns.iter().map(|c| STREAM_WIDTHS.iter().find(|(n, _)| n == c).map_or(0, |(_, w)| *w)).collect()
}

/// Left-aligned columns of the given widths, separated by two spaces.
pub(crate) fn print_aligned(
    widths: &[usize],
    columns: &[&str],
    rows: &[Vec<String>],
    header: bool,
) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            let cell = terminal::line(cell);
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(&cell);
            l.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if header {
        line(&mut columns.iter().copied());
    }
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    write_out(out.as_bytes())
}

pub(crate) fn time_text(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| nanos.to_string())
}

pub(crate) fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".to_string() } else { s.to_string() }
}

/// Prints rows as a table, CSV or JSON lines.
pub(crate) fn print_rows(format: Format, columns: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    match format {
        Format::Table => print_table(columns, rows),
        Format::Csv => {
            let mut w = csv_writer();
            w.write_record(columns.iter().map(|c| c.to_lowercase()))?;
            let mut neutralised = 0;
            for r in rows {
                let cells: Vec<String> = r
                    .iter()
                    .map(|c| {
                        let n = ledger_query::neutralise(c);
                        neutralised += usize::from(matches!(n, std::borrow::Cow::Owned(_)));
                        n.into_owned()
                    })
                    .collect();
                w.write_record(&cells)?;
            }
            w.flush()?;
            report_neutralised(neutralised);
            Ok(())
        }
        Format::Json => {
            let mut out = String::new();
            for r in rows {
                let obj: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| (c.to_lowercase(), serde_json::Value::String(v.clone())))
                    .collect();
                out.push_str(&serde_json::Value::Object(obj).to_string());
                out.push('\n');
            }
            write_out(out.as_bytes())
        }
    }
}

pub(crate) fn csv_writer() -> csv::Writer<std::io::Stdout> {
    csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(std::io::stdout())
}
