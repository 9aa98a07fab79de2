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
    pub const ALL: [Code; 23] = [
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
        QueryError { code, message: message.into(), label: label.into(), help, line, col, start, end }
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
        // Indent the carets with the same whitespace as the text (tabs stay tabs).
        let indent: String = line_text
            .chars()
            .take(self.col.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let span_chars = text
            .get(self.span.clone())
            .map(|s| s.split('\n').next().unwrap_or("").trim_end_matches('\r').chars().count())
            .unwrap_or(0);
        let carets = "^".repeat(span_chars.max(1));
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
