//! RFC 4180 CSV, safe to open in a spreadsheet, and reversible for verifiers.

use std::borrow::Cow;
use std::io::{self, Write};

use jiff::tz::TimeZone;

use super::format_value_into;
use crate::aggregate::Row;
use crate::pipeline::ResultSet;
use crate::value::Value;

/// Characters that make a spreadsheet read a cell as a formula when they come first.
const TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Makes a cell safe for a spreadsheet.
///
/// The rule: a cell that, after any run of leading `'`, begins with `=`, `+`, `-`, `@`,
/// a tab or a carriage return gets one `'` put in front. So `=SUM(A1)` becomes
/// `'=SUM(A1)`, `'=x` becomes `''=x`, and `'hello` or `x=1` stay as they are. Every
/// cell is treated alike, numbers included (`-5` becomes `'-5`).
///
/// The rule is reversible by [`unneutralise`], which is how a verifier gets back the exact
/// field: a cell that ever starts with `'` followed by a trigger must have been
/// neutralised, because the original would have had one `'` fewer and still matched.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if needs_quote(cell) { Cow::Owned(format!("'{cell}")) } else { Cow::Borrowed(cell) }
}

/// The inverse of [`neutralise`]: removes the one `'` that it added.
pub fn unneutralise(cell: &str) -> Cow<'_, str> {
    match cell.strip_prefix('\'') {
        Some(rest) if needs_quote(rest) => Cow::Borrowed(rest),
        _ => Cow::Borrowed(cell),
    }
}

fn needs_quote(cell: &str) -> bool {
    cell.trim_start_matches('\'').starts_with(TRIGGERS)
}

/// Writes a header row of column names and one record per row, quoted as RFC 4180 needs
/// (CRLF line ends). Values are formatted as by [`super::format_value`]: times in RFC 3339
/// in `tz`, `params` and `details` as their JSON text, `flags` as a JSON array.
///
/// Returns how many cells were neutralised (see [`neutralise`]), for the caller to report
/// on stderr; nothing about it is written into the CSV itself.
pub fn write_csv<W: Write>(out: W, rows: &ResultSet, tz: &TimeZone) -> io::Result<usize> {
    let mut writer = CsvWriter::new(out, &rows.columns, tz.clone())?;
    writer.write_rows(&rows.rows)?;
    writer.finish()
}

/// The csv crate wraps I/O errors in its own; unwrap them so callers see the real kind
/// (a closed pipe must stay recognisable as one).
fn io_error(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// The streaming form of [`write_csv`]: the header when created, then rows as they come,
/// so an export of any size holds only one chunk of rows at a time.
pub struct CsvWriter<W: Write> {
    writer: csv::Writer<W>,
    tz: TimeZone,
    neutralised: usize,
    rows: u64,
    record: Vec<String>,
    /// The first error of [`CsvWriter::cell`], reported by [`CsvWriter::end_row`].
    failed: Option<io::Error>,
}

impl<W: Write> CsvWriter<W> {
    /// Starts the CSV with its header row.
    pub fn new(out: W, columns: &[String], tz: TimeZone) -> io::Result<Self> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
        writer.write_record(columns).map_err(io_error)?;
        Ok(CsvWriter { writer, tz, neutralised: 0, rows: 0, record: Vec::new(), failed: None })
    }

    /// Writes rows (formatted and neutralised as [`write_csv`] does).
    pub fn write_rows(&mut self, rows: &[Row]) -> io::Result<()> {
        for row in rows {
            // One buffer per column, reused from row to row: no allocation per cell.
            if self.record.len() < row.len() {
                self.record.resize_with(row.len(), String::new);
            }
            for (cell, value) in self.record.iter_mut().zip(row) {
                cell.clear();
                format_value_into(cell, value, &self.tz);
                if needs_quote(cell) {
                    cell.insert(0, '\'');
                    self.neutralised += 1;
                }
            }
            self.writer.write_record(&self.record[..row.len()]).map_err(io_error)?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Writes the next cell of the current row straight from a value (formatted and
    /// neutralised as [`write_csv`] does), with no row built: for
    /// [`crate::Pipeline::push_cells`]. [`CsvWriter::end_row`] ends the row and reports
    /// any error.
    pub fn cell(&mut self, value: &Value<'_>) {
        if self.failed.is_some() {
            return;
        }
        if self.record.is_empty() {
            self.record.push(String::new());
        }
        let cell = &mut self.record[0];
        cell.clear();
        format_value_into(cell, value, &self.tz);
        if needs_quote(cell) {
            cell.insert(0, '\'');
            self.neutralised += 1;
        }
        if let Err(e) = self.writer.write_field(cell.as_bytes()) {
            self.failed = Some(io_error(e));
        }
    }

    /// Ends the row begun by [`CsvWriter::cell`].
    pub fn end_row(&mut self) -> io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.writer.write_record(None::<&[u8]>).map_err(io_error)?;
        self.rows += 1;
        Ok(())
    }

    /// Rows written so far (the header not counted).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Cells neutralised so far.
    pub fn neutralised(&self) -> usize {
        self.neutralised
    }

    /// Flushes, and returns how many cells were neutralised in all.
    pub fn finish(mut self) -> io::Result<usize> {
        self.writer.flush()?;
        Ok(self.neutralised)
    }
}
