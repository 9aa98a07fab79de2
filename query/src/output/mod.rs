//! Writers: rows to an aligned table, RFC 4180 CSV, or JSON lines, on any `io::Write`.

mod csv;
mod json;
mod table;
pub mod terminal;

pub use self::csv::{CsvWriter, neutralise, unneutralise, write_csv};
pub use self::json::{write_json_lines, write_json_rows};
pub use self::table::write_table;

use jiff::tz::TimeZone;

use crate::field::WEEKDAYS;
use crate::time::write_time;
use crate::value::{Value, float_text};

/// A value as text, the way CSV cells and table cells show it: times in RFC 3339 in `tz`,
/// lists (`flags`) as a JSON array, JSON objects as compact JSON, missing as empty, numbers
/// exactly as the JSON writer writes them (`30`, `2.5`, `1e+20`).
pub fn format_value(v: &Value<'_>, tz: &TimeZone) -> String {
    let mut out = String::new();
    format_value_into(&mut out, v, tz);
    out
}

/// [`format_value`] appended to `out`, so a writer can reuse one buffer per cell.
pub fn format_value_into(out: &mut String, v: &Value<'_>, tz: &TimeZone) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = match v {
        Value::Missing => Ok(()),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(n) => write!(out, "{n}"),
        Value::Float(x) => {
            out.push_str(&float_text(*x));
            Ok(())
        }
        Value::Str(s) | Value::Json(s) => {
            out.push_str(s);
            Ok(())
        }
        Value::Time(ns) => write_time(out, *ns, tz),
        Value::Weekday(d) => {
            out.push_str(WEEKDAYS.get(usize::from(*d)).copied().unwrap_or(""));
            Ok(())
        }
        Value::List(_) => write!(out, "{}", json_value(v, tz)),
    };
}

/// A value as JSON: times as RFC 3339 strings in `tz`, missing as `null`, lists as arrays,
/// JSON objects as themselves.
pub(crate) fn json_value(v: &Value<'_>, tz: &TimeZone) -> serde_json::Value {
    match v {
        Value::Missing => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(n) => serde_json::Value::from(*n),
        Value::Float(x) => {
            serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        Value::Str(s) => serde_json::Value::String(s.to_string()),
        Value::Json(s) => {
            serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
        }
        Value::Time(_) | Value::Weekday(_) => serde_json::Value::String(format_value(v, tz)),
        Value::List(items) => serde_json::Value::Array(items.iter().map(|i| json_value(i, tz)).collect()),
    }
}
