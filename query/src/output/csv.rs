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

/// Output is handed to the underlying writer in pieces of about this size.
const FLUSH_AT: usize = 64 * 1024;

/// Whether RFC 4180 needs `field` in quotes: it holds a comma, a quote, a CR or a LF.
fn must_quote(field: &[u8]) -> bool {
    field.iter().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

/// The streaming form of [`write_csv`]: the header when created, then rows as they come,
/// so an export of any size holds only one chunk of rows at a time.
///
/// The bytes are written here, not by the `csv` crate, and are exactly what its writer
/// gives with CRLF line ends (checked against it in `tests/csv.rs`): a field is quoted
/// when it holds a comma, a quote, a CR or a LF, a quote inside doubled, and a row whose
/// only field is empty written as `""`.
pub struct CsvWriter<W: Write> {
    out: W,
    /// Output not yet handed to `out`: whole rows, and the current row's fields.
    buf: Vec<u8>,
    /// Where the current row starts in `buf`.
    row_start: usize,
    /// Fields written of the current row.
    fields: usize,
    /// `buf` is handed to `out` once it holds this much.
    flush_at: usize,
    tz: TimeZone,
    neutralised: usize,
    rows: u64,
    /// A cell's text, reused from cell to cell.
    cell: String,
}

impl<W: Write> CsvWriter<W> {
    /// Starts the CSV with its header row.
    pub fn new(out: W, columns: &[String], tz: TimeZone) -> io::Result<Self> {
        let mut writer = CsvWriter::headless(out, tz);
        for c in columns {
            writer.field(c.as_bytes());
        }
        writer.finish_row()?;
        Ok(writer)
    }

    /// Appends one field of the current row, quoted as RFC 4180 needs.
    fn field(&mut self, field: &[u8]) {
        if self.fields > 0 {
            self.buf.push(b',');
        }
        self.fields += 1;
        if !must_quote(field) {
            self.buf.extend_from_slice(field);
            return;
        }
        self.buf.push(b'"');
        for part in field.split_inclusive(|b| *b == b'"') {
            self.buf.extend_from_slice(part);
            if part.last() == Some(&b'"') {
                self.buf.push(b'"');
            }
        }
        self.buf.push(b'"');
    }

    /// Ends the current row (an empty row is one empty field, written `""`) and hands
    /// the output over once there is enough of it.
    fn finish_row(&mut self) -> io::Result<()> {
        if self.buf.len() == self.row_start {
            self.buf.extend_from_slice(b"\"\"");
        }
        self.buf.extend_from_slice(b"\r\n");
        self.fields = 0;
        if self.buf.len() >= self.flush_at {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.row_start = self.buf.len();
        Ok(())
    }

    /// Formats `value` into the cell buffer, neutralised (see [`neutralise`]), and
    /// appends it as a field.
    fn value(&mut self, value: &Value<'_>) {
        let mut cell = std::mem::take(&mut self.cell);
        cell.clear();
        format_value_into(&mut cell, value, &self.tz);
        if needs_quote(&cell) {
            cell.insert(0, '\'');
            self.neutralised += 1;
        }
        self.field(cell.as_bytes());
        self.cell = cell;
    }

    /// A writer with no header row: for rows rendered apart (on another thread, into
    /// memory) and then added to a writer that has one with [`CsvWriter::append_rendered`].
    pub fn headless(out: W, tz: TimeZone) -> Self {
        CsvWriter {
            out,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            row_start: 0,
            fields: 0,
            flush_at: FLUSH_AT,
            tz,
            neutralised: 0,
            rows: 0,
            cell: String::new(),
        }
    }

    /// The time zone times are written in.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// Adds `bytes` that a [`CsvWriter::headless`] writer with the same time zone produced
    /// (taken with [`CsvWriter::take_bytes`]), holding `rows` rows with `neutralised`
    /// neutralised cells: the output is then what writing those rows here would give.
    pub fn append_rendered(&mut self, bytes: &[u8], rows: u64, neutralised: usize) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.write_all(bytes)?;
        self.row_start = 0;
        self.rows += rows;
        self.neutralised += neutralised;
        Ok(())
    }

    /// Writes rows (formatted and neutralised as [`write_csv`] does).
    pub fn write_rows(&mut self, rows: &[Row]) -> io::Result<()> {
        for row in rows {
            for value in row {
                self.value(value);
            }
            self.finish_row()?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Writes the next cell of the current row straight from a value (formatted and
    /// neutralised as [`write_csv`] does), with no row built: for
    /// [`crate::Pipeline::push_cells`]. [`CsvWriter::end_row`] ends the row.
    pub fn cell(&mut self, value: &Value<'_>) {
        self.value(value);
    }

    /// Ends the row begun by [`CsvWriter::cell`].
    pub fn end_row(&mut self) -> io::Result<()> {
        self.finish_row()?;
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
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()?;
        Ok(self.neutralised)
    }
}

impl CsvWriter<Vec<u8>> {
    /// A [`CsvWriter::headless`] writer into memory, its rows kept in one buffer until
    /// [`CsvWriter::take_bytes`] (no copy from buffer to output).
    pub fn in_memory(tz: TimeZone) -> Self {
        let mut w = CsvWriter::headless(Vec::new(), tz);
        w.flush_at = usize::MAX;
        w
    }

    /// Bytes in memory so far.
    pub fn bytes_len(&self) -> usize {
        self.out.len() + self.buf.len()
    }

    /// The bytes written so far (the cells of an unfinished row included), leaving the
    /// writer empty; rows and neutralised cells stay counted.
    pub fn take_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = std::mem::take(&mut self.out);
        if bytes.is_empty() {
            bytes = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_AT));
        } else {
            bytes.extend_from_slice(&self.buf);
            self.buf.clear();
        }
        self.row_start = 0;
        Ok(bytes)
    }
}
