//! JSON lines: one object per row, keys in column order.

use std::io::{self, Write};

use jiff::tz::TimeZone;

use super::json_value;
use crate::aggregate::Row;
use crate::pipeline::ResultSet;

/// Writes one JSON object per row (`{"seq":3,"time":"2026-03-15T09:30:00Z",…}`), keys in
/// column order; missing values are `null`.
pub fn write_json_lines<W: Write>(mut out: W, rows: &ResultSet, tz: &TimeZone) -> io::Result<()> {
    write_json_rows(&mut out, &rows.columns, &rows.rows, tz)?;
    out.flush()
}

/// Writes rows as JSON lines without flushing: the streaming form of [`write_json_lines`].
pub fn write_json_rows<W: Write>(
    mut out: W,
    columns: &[String],
    rows: &[Row],
    tz: &TimeZone,
) -> io::Result<()> {
    for row in rows {
        let mut line = String::from("{");
        for (i, (name, value)) in columns.iter().zip(row).enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&serde_json::Value::String(name.clone()).to_string());
            line.push(':');
            line.push_str(&json_value(value, tz).to_string());
        }
        line.push_str("}\n");
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}
