//! Query errors: stable codes, positions, rustc-style rendering and a JSON form.

use std::fmt;

use serde_json::json;

/// A stable error code. Q1xx: syntax and names; Q2xx: types; Q3xx: values.
///
/// Codes never change meaning; new ones are only added. `docs/QUERY.md` has the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Unexpected token.
    Q100,
    /// Unknown field.
    Q101,
    /// Unexpected end of query.
    Q102,
    /// Unterminated string.
    Q103,
    /// Unterminated regex.
    Q104,
    /// Invalid escape in a string.
    Q105,
    /// Unknown stage.
    Q106,
    /// Unknown function or aggregate.
    Q107,
    /// A field or column that is not available at this point of the pipeline.
    Q108,
    /// Two output columns with the same name.
    Q109,
    /// Expression nested too deeply.
    Q110,
    /// More errors than are reported: the first [`MAX_ERRORS`] are shown.
    Q111,
    /// A value of the wrong type.
    Q201,
    /// An operator that does not apply to the field's type.
    Q202,
    /// A bare word where a quoted string is needed.
    Q203,
    /// A function or aggregate argument of the wrong type.
    Q204,
    /// A path (`.x`) into a field that has no subfields.
    Q205,
    /// A value outside an enumeration (`decision = maybe`).
    Q301,
    /// A malformed duration.
    Q302,
    /// A malformed or unknown time.
    Q303,
    /// A malformed period after `during`.
    Q304,
    /// An invalid regular expression.
    Q305,
    /// A number out of range.
    Q306,
    /// A malformed number or literal.
    Q307,
}

impl Code {
    /// Every code, in order (for documentation and tests).
    pub const ALL: [Code; 24] = [
        Code::Q100,
        Code::Q101,
        Code::Q102,
        Code::Q103,
        Code::Q104,
        Code::Q105,
        Code::Q106,
        Code::Q107,
        Code::Q108,
        Code::Q109,
        Code::Q110,
        Code::Q111,
        Code::Q201,
        Code::Q202,
        Code::Q203,
        Code::Q204,
        Code::Q205,
        Code::Q301,
        Code::Q302,
        Code::Q303,
        Code::Q304,
        Code::Q305,
        Code::Q306,
        Code::Q307,
    ];

    /// The code as written in messages: `"Q101"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Q100 => "Q100",
            Code::Q101 => "Q101",
            Code::Q102 => "Q102",
            Code::Q103 => "Q103",
            Code::Q104 => "Q104",
            Code::Q105 => "Q105",
            Code::Q106 => "Q106",
            Code::Q107 => "Q107",
            Code::Q108 => "Q108",
            Code::Q109 => "Q109",
            Code::Q110 => "Q110",
            Code::Q111 => "Q111",
            Code::Q201 => "Q201",
            Code::Q202 => "Q202",
            Code::Q203 => "Q203",
            Code::Q204 => "Q204",
            Code::Q205 => "Q205",
            Code::Q301 => "Q301",
            Code::Q302 => "Q302",
            Code::Q303 => "Q303",
            Code::Q304 => "Q304",
            Code::Q305 => "Q305",
            Code::Q306 => "Q306",
            Code::Q307 => "Q307",
        }
    }

    /// The code named by `s`, if any.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most errors reported for one query; a [`Code::Q111`] error after them says how many
/// were found. Each is found and rendered once, so a long query with thousands of mistakes
/// costs time and memory linear in its length, not in its length times its mistakes.
pub const MAX_ERRORS: usize = 10;

/// The longest query text accepted, in bytes (64 KiB); a longer one is refused before it
/// is parsed ([`check_length`]).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The most characters of a message, label or help kept in an error: they may quote the
/// query (an unknown 100 KB name), and every copy of the error carries them.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// The most characters of a line quoted under an error; a longer line is shown as a
/// window around the error, `…` marking what is left out.
const WINDOW_CHARS: usize = 240;

/// Refuses a query text longer than [`MAX_QUERY_BYTES`], with what to do instead.
pub fn check_length(text: &str) -> Result<(), String> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "query too long: {} bytes, the limit is {MAX_QUERY_BYTES} bytes ({} KiB); match many values with a pattern or `in [...]`, or split the query",
            text.len(),
            MAX_QUERY_BYTES / 1024
        ));
    }
    Ok(())
}

/// `s` cut to [`MAX_MESSAGE_CHARS`] characters, `…` marking the cut.
pub(crate) fn clip(s: String) -> String {
    match s.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => s,
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// One positioned error in a query.
///
/// `start..end` is a byte range of the query text; `line` and `col` (both from 1, `col`
/// counted in characters) locate `start`. At the end of the input the range is empty and
/// points one past the last character.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error[{code}]: {message} (at {line}:{col})")]
pub struct QueryError {
    pub code: Code,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The short note printed after the carets.
    pub label: String,
    /// What to do about it, when there is something to say.
    pub help: Option<String>,
    pub line: usize,
    pub col: usize,
    pub start: usize,
    pub end: usize,
}

/// Why a JSON error object could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("missing or invalid member `{0}` in a query error object")]
    Member(&'static str),
    #[error("unknown error code `{0}`")]
    Code(String),
}

impl QueryError {
    /// An error at byte range `start..end` of `text`, with line and column computed.
    pub(crate) fn new(
        code: Code,
        text: &str,
        start: usize,
        end: usize,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> QueryError {
        let start = floor_char_boundary(text, start.min(text.len()));
        let end = floor_char_boundary(text, end.clamp(start, text.len()));
        let (line, col) = line_col(text, start);
        QueryError {
            code,
            message: clip(message.into()),
            label: clip(label.into()),
            help: help.map(clip),
            line,
            col,
            start,
            end,
        }
    }

    /// Renders the error as rustc does, quoting the offending line of `query`:
    ///
    /// ```text
    /// error[Q101]: unknown field `agnet`
    ///  --> query:1:16
    ///   |
    /// 1 | during 2026-Q1 agnet = "build-bot" and decision = deny
    ///   |                ^^^^^ not a known field
    ///   |
    ///   = help: did you mean `agent`?
    /// ```
    ///
    /// `query` must be the text the error was found in; a client that received the error
    /// as JSON renders it with the text it sent.
    pub fn render(&self, query: &str) -> String {
        self.snippet().render(query)
    }

    fn snippet(&self) -> Snippet<'_> {
        Snippet {
            source: "query",
            code: self.code.as_str(),
            message: &self.message,
            label: &self.label,
            help: self.help.as_deref(),
            line: self.line,
            col: self.col,
            span: self.start..self.end,
        }
    }

    /// The error as a JSON object:
    /// `{"code","message","label","help","line","col","start","end"}` (`help` may be null).
    pub fn to_json(&self) -> serde_json::Value {
        self.snippet().to_json()
    }

    /// Reads back what [`QueryError::to_json`] wrote.
    pub fn from_json(value: &serde_json::Value) -> Result<QueryError, JsonError> {
        let p = JsonParts::read(value)?;
        let code = Code::parse(&p.code).ok_or(JsonError::Code(p.code))?;
        Ok(QueryError {
            code,
            message: p.message,
            label: p.label,
            help: p.help,
            line: p.line,
            col: p.col,
            start: p.start,
            end: p.end,
        })
    }
}

/// Everything wrong with a query: one syntax error, or every type error found.
///
/// Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct QueryErrors {
    errors: Vec<QueryError>,
}

impl QueryErrors {
    pub(crate) fn new(errors: Vec<QueryError>) -> QueryErrors {
        QueryErrors { errors }
    }

    /// The errors a checker found (at most [`MAX_ERRORS`], in any order), and how many
    /// more it left out: ordered by position, followed by a [`Code::Q111`] error when
    /// some were left out.
    pub(crate) fn capped(text: &str, mut errors: Vec<QueryError>, left_out: usize) -> QueryErrors {
        errors.sort_by_key(|e| (e.start, e.end));
        if left_out > 0 {
            let at = errors.last().map_or(0, |e| e.end);
            let total = errors.len() + left_out;
            errors.push(QueryError::new(
                Code::Q111,
                text,
                at,
                at,
                format!("too many errors: {total} found, the first {} are shown", errors.len()),
                "the errors from here on are left out",
                Some("fix these and run the query again".to_string()),
            ));
        }
        QueryErrors { errors }
    }

    /// The errors, in the order of their position in the query.
    pub fn errors(&self) -> &[QueryError] {
        &self.errors
    }

    /// Every error rendered (see [`QueryError::render`]), separated by blank lines.
    pub fn render(&self, query: &str) -> String {
        self.errors.iter().map(|e| e.render(query)).collect::<Vec<_>>().join("\n\n")
    }

    /// A JSON array of error objects.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.errors.iter().map(QueryError::to_json).collect())
    }

    /// The JSON array as text, for a gRPC status message.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// The JSON array as text, at most about `max_bytes` long (see [`json_within`]): what
    /// fits of the errors in order, then a [`Code::Q111`] error naming how many were left
    /// out. For gRPC trailers, which clients limit (8 KiB by default in gRPC C-core).
    pub fn to_json_string_within(&self, text: &str, max_bytes: usize) -> String {
        json_within(self.errors.iter().map(QueryError::to_json), max_bytes, |shown, total| {
            let at = self.errors.get(shown).map_or(text.len(), |e| e.start);
            QueryError::new(
                Code::Q111,
                text,
                at,
                at,
                format!("too many errors to send: {total} found, the first {shown} are shown"),
                "the errors from here on are left out",
                Some("fix these and run the query again".to_string()),
            )
            .to_json()
        })
    }

    /// Reads back what [`QueryErrors::to_json`] wrote (an array, or a single object).
    pub fn from_json(value: &serde_json::Value) -> Result<QueryErrors, JsonError> {
        let errors = match value {
            serde_json::Value::Array(items) => {
                items.iter().map(QueryError::from_json).collect::<Result<Vec<_>, _>>()?
            }
            other => vec![QueryError::from_json(other)?],
        };
        if errors.is_empty() {
            return Err(JsonError::Member("errors"));
        }
        Ok(QueryErrors { errors })
    }

    /// Parses JSON text and reads it back as with [`QueryErrors::from_json`].
    pub fn from_json_str(text: &str) -> Result<QueryErrors, JsonError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
        QueryErrors::from_json(&value)
    }
}

impl IntoIterator for QueryErrors {
    type Item = QueryError;
    type IntoIter = std::vec::IntoIter<QueryError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// A JSON array of `items` of at most about `max_bytes`: the first item always, then each
/// next one while the array stays within `max_bytes`; when some are left out, the item
/// `more(shown, total)` closes the array (it must be small: its size is not counted).
pub(crate) fn json_within(
    items: impl ExactSizeIterator<Item = serde_json::Value>,
    max_bytes: usize,
    more: impl FnOnce(usize, usize) -> serde_json::Value,
) -> String {
    let total = items.len();
    let mut out = String::from("[");
    let mut shown = 0;
    for item in items {
        let item = item.to_string();
        if shown > 0 && out.len() + 1 + item.len() + 1 > max_bytes {
            break;
        }
        if shown > 0 {
            out.push(',');
        }
        out.push_str(&item);
        shown += 1;
    }
    if shown < total {
        out.push(',');
        out.push_str(&more(shown, total).to_string());
    }
    out.push(']');
    out
}

/// Line (from 1) and column (from 1, in characters) of byte offset `at` in `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One positioned error, rustc style, as both the query and the policy errors render it:
/// the header with the code, `--> SOURCE:LINE:COL`, the line, carets under the whole span
/// (indented with the line's own tabs), the label, and an optional help line.
pub(crate) struct Snippet<'a> {
    /// What the text is called in the `-->` line (`query`, `policy`).
    pub source: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub label: &'a str,
    pub help: Option<&'a str>,
    /// From 1.
    pub line: usize,
    /// From 1, in characters.
    pub col: usize,
    /// Byte span in the text.
    pub span: std::ops::Range<usize>,
}

impl Snippet<'_> {
    /// The JSON object of a positioned error (query or policy): `{"code","message",
    /// "label","help","line","col","start","end"}` (`help` may be null). Read back with
    /// [`JsonParts::read`].
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "code": self.code,
            "message": self.message,
            "label": self.label,
            "help": self.help,
            "line": self.line,
            "col": self.col,
            "start": self.span.start,
            "end": self.span.end,
        })
    }
}

/// The members of an error object written by [`Snippet::to_json`], the code still text.
pub(crate) struct JsonParts {
    pub code: String,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
    pub line: usize,
    pub col: usize,
    pub start: usize,
    pub end: usize,
}

impl JsonParts {
    pub(crate) fn read(value: &serde_json::Value) -> Result<JsonParts, JsonError> {
        let text = |k: &'static str| {
            value.get(k).and_then(|v| v.as_str()).map(str::to_string).ok_or(JsonError::Member(k))
        };
        let num = |k: &'static str| {
            value
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or(JsonError::Member(k))
        };
        let help = match value.get("help") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(JsonError::Member("help")),
        };
        Ok(JsonParts {
            code: text("code")?,
            message: text("message")?,
            label: text("label")?,
            help,
            line: num("line")?,
            col: num("col")?,
            start: num("start")?,
            end: num("end")?,
        })
    }
}

impl Snippet<'_> {
    pub(crate) fn render(&self, text: &str) -> String {
        let line_no = self.line.to_string();
        let pad = " ".repeat(line_no.len());
        let line_text = text.split('\n').nth(self.line.saturating_sub(1)).unwrap_or("");
        let line_text = line_text.strip_suffix('\r').unwrap_or(line_text);
        let span_chars = text
            .get(self.span.clone())
            .map(|s| s.split('\n').next().unwrap_or("").trim_end_matches('\r').chars().count())
            .unwrap_or(0);
        // A long line is quoted as a window around the error, so that every error costs
        // the same to show however long the query is.
        let col0 = self.col.saturating_sub(1);
        let (from, shown_span, line_text) = window(line_text, col0, span_chars);
        // Indent the carets with the same whitespace as the text (tabs stay tabs).
        let indent: String = line_text
            .chars()
            .take(col0 - from + usize::from(from > 0))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let carets = "^".repeat(shown_span.max(1));
        let mut out = format!(
            "error[{}]: {}\n{pad}--> {}:{}:{}\n{pad} |\n{line_no} | {line_text}\n{pad} | {indent}{carets}",
            self.code, self.message, self.source, self.line, self.col
        );
        if !self.label.is_empty() {
            out.push(' ');
            out.push_str(self.label);
        }
        if let Some(help) = self.help {
            out.push_str(&format!("\n{pad} |\n{pad} = help: {help}"));
        }
        out
    }
}

/// `line` itself when it is at most [`WINDOW_CHARS`] long, else the part around the
/// `span` characters from character `col0`, with `…` where something is left out; with the
/// first character shown and how many of the span's characters are shown.
fn window(line: &str, col0: usize, span: usize) -> (usize, usize, std::borrow::Cow<'_, str>) {
    let chars = line.chars().count();
    if chars <= WINDOW_CHARS {
        return (0, span, line.into());
    }
    let context = WINDOW_CHARS / 4;
    let shown_span = span.min(WINDOW_CHARS / 2);
    let from = col0.saturating_sub(context);
    let to = (col0 + shown_span.max(1) + context).min(chars);
    let mut out = String::new();
    if from > 0 {
        out.push('…');
    }
    out.extend(line.chars().skip(from).take(to.saturating_sub(from)));
    if to < chars {
        out.push('…');
    }
    (from, shown_span, out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_on_later_lines_with_tabs_and_wide_gutters() {
        let text = "a\nb\n\tagnet = 1";
        let e = QueryError::new(Code::Q101, text, 5, 10, "unknown field `agnet`", "not a known field", None);
        assert_eq!((e.line, e.col), (3, 2));
        assert_eq!(
            e.render(text),
            "error[Q101]: unknown field `agnet`\n --> query:3:2\n  |\n3 | \tagnet = 1\n  | \t^^^^^ not a known field"
        );
        let long = format!("{}x", "\n".repeat(11));
        let e = QueryError::new(Code::Q100, &long, 11, 12, "m", "", Some("h".to_string()));
        assert_eq!(
            e.render(&long),
            "error[Q100]: m\n  --> query:12:1\n   |\n12 | x\n   | ^\n   |\n   = help: h"
        );
    }

    #[test]
    fn long_lines_are_quoted_as_a_window_around_the_error() {
        let text = format!("{} agnet = 1 {}", "a".repeat(5000), "b".repeat(5000));
        let e = QueryError::new(Code::Q101, &text, 5001, 5006, "unknown field", "not a known field", None);
        let rendered = e.render(&text);
        let quoted = rendered.lines().nth(3).unwrap_or_default();
        let carets = rendered.lines().nth(4).unwrap_or_default();
        assert!(
            quoted.starts_with("1 | …") && quoted.ends_with('…') && quoted.contains(" agnet = 1 "),
            "{rendered}"
        );
        assert!(quoted.chars().count() < WINDOW_CHARS + 10, "{rendered}");
        // The carets stand under `agnet`.
        let caret_at = carets.find('^').unwrap_or_default();
        let under: String = quoted.chars().skip(carets[..caret_at].chars().count()).take(5).collect();
        assert_eq!(under, "agnet", "{rendered}");
        assert_eq!(clip("x".repeat(500)).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn json_within_keeps_the_first_and_names_what_is_left_out() {
        let text = "x ".repeat(200);
        let errors: Vec<QueryError> = (0..50)
            .map(|i| {
                QueryError::new(
                    Code::Q101,
                    &text,
                    i * 2,
                    i * 2 + 1,
                    "unknown field `x`",
                    "not a known field",
                    None,
                )
            })
            .collect();
        let errors = QueryErrors::new(errors);
        let json = errors.to_json_string_within(&text, 1000);
        let back = QueryErrors::from_json_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let last = back.errors().last().map(|e| e.code);
        assert_eq!(last, Some(Code::Q111), "{json}");
        assert!(back.errors().len() > 2 && back.errors().len() < 10, "{json}");
        assert!(json.len() < 1300, "{json}");
        assert_eq!(errors.to_json_string_within(&text, 1 << 20), errors.to_json_string());
    }

    #[test]
    fn json_round_trip_and_rejects() {
        let e = QueryError::new(Code::Q303, "time > x", 7, 8, "bad", "not a time", Some("help".to_string()));
        assert_eq!(QueryError::from_json(&e.to_json()), Ok(e));
        assert!(matches!(QueryErrors::from_json_str("[]"), Err(JsonError::Member(_))));
        assert!(matches!(QueryErrors::from_json_str("{"), Err(JsonError::Syntax(_))));
        let unknown =
            r#"{"code":"Q999","message":"","label":"","help":null,"line":1,"col":1,"start":0,"end":0}"#;
        assert!(matches!(QueryErrors::from_json_str(unknown), Err(JsonError::Code(_))));
    }
}
