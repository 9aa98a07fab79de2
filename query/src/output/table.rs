//! A plain text table for terminals: aligned columns, numbers to the right.

use std::io::{self, Write};

use jiff::tz::TimeZone;

use super::format_value;
use super::terminal::line;
use crate::pipeline::ResultSet;
use crate::value::Value;

/// Writes a header line and one line per row, columns two spaces apart and padded to the
/// widest cell (widths in characters; wide East Asian characters are not accounted for).
/// Numeric columns are right-aligned; control, bidirectional and invisible characters are
/// shown escaped (`\n`, `\u{202e}`: [`super::terminal::line`]) so a row stays on one line
/// and reads as stored; trailing spaces are trimmed.
pub fn write_table<W: Write>(mut out: W, rows: &ResultSet, tz: &TimeZone) -> io::Result<()> {
    let cells: Vec<Vec<String>> = rows
        .rows
        .iter()
        .map(|row| row.iter().map(|v| line(&format_value(v, tz)).into_owned()).collect())
        .collect();
    let numeric: Vec<bool> = (0..rows.columns.len())
        .map(|c| {
            let mut values = rows.rows.iter().filter_map(|r| r.get(c)).filter(|v| !v.is_missing()).peekable();
            values.peek().is_some() && values.all(|v| matches!(v, Value::Int(_) | Value::Float(_)))
        })
        .collect();
    let widths: Vec<usize> = rows
        .columns
        .iter()
        .enumerate()
        .map(|(c, name)| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = rows.columns.iter().map(|c| line(c).into_owned()).collect();
    write_line(&mut out, &header, &widths, &numeric)?;
    for row in &cells {
        write_line(&mut out, row, &widths, &numeric)?;
    }
    out.flush()
}

fn write_line<W: Write>(out: &mut W, cells: &[String], widths: &[usize], numeric: &[bool]) -> io::Result<()> {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
        if numeric.get(i).copied().unwrap_or(false) {
            line.push_str(&" ".repeat(pad));
            line.push_str(cell);
        } else {
            line.push_str(cell);
            line.push_str(&" ".repeat(pad));
        }
    }
    writeln!(out, "{}", line.trim_end())
}
