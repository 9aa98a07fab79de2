//! Policy errors: stable P-codes (and the Q-codes of condition errors), positions in the
//! document, rustc-style rendering and a JSON form shaped like the query errors'.

use std::fmt;

use crate::error::{Code, JsonError, QueryError, json_within, line_col};

/// A stable error code: a P-code for the document's structure and rules, or the query
/// error code of a problem inside a rule's condition.
///
/// Codes never change meaning; new ones are only added. `docs/POLICY.md` has the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyCode {
    /// A line that is not a rule, a `default`, a comment or a continuation.
    P100,
    /// A missing, malformed, reserved or too long rule id.
    P101,
    /// No `:` after the rule id.
    P102,
    /// A rule id used twice.
    P103,
    /// A missing or unknown effect (not `allow` or `deny`).
    P104,
    /// A rule without a condition.
    P105,
    /// No `default` line.
    P106,
    /// A `default` line with rules after it.
    P107,
    /// A second `default` line.
    P108,
    /// A document with no rules and no `default` (empty, or only comments).
    P109,
    /// A field that is not known when a decision is made (`time`, `seq`, `severity`, …).
    P110,
    /// A function (`hour(time)`, …): decisions do not depend on the clock.
    P111,
    /// A document over the size limit.
    P112,
    /// More rules than the limit.
    P113,
    /// An indented line that continues no rule, or an indented `rule` or `default` line.
    P114,
    /// Text after `default allow` or `default deny`.
    P115,
    /// More errors than are reported; the rest are left out.
    P116,
    /// The compiled patterns of the document would hold more memory than the limit.
    P117,
    /// A problem inside a condition, with the query language's code.
    Query(Code),
}

impl PolicyCode {
    /// Every P-code, in order (for documentation and tests); Q-codes are [`Code::ALL`].
    pub const ALL: [PolicyCode; 18] = [
        PolicyCode::P100,
        PolicyCode::P101,
        PolicyCode::P102,
        PolicyCode::P103,
        PolicyCode::P104,
        PolicyCode::P105,
        PolicyCode::P106,
        PolicyCode::P107,
        PolicyCode::P108,
        PolicyCode::P109,
        PolicyCode::P110,
        PolicyCode::P111,
        PolicyCode::P112,
        PolicyCode::P113,
        PolicyCode::P114,
        PolicyCode::P115,
        PolicyCode::P116,
        PolicyCode::P117,
    ];

    /// The code as written in messages: `"P103"`, or `"Q101"` for a condition error.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyCode::P100 => "P100",
            PolicyCode::P101 => "P101",
            PolicyCode::P102 => "P102",
            PolicyCode::P103 => "P103",
            PolicyCode::P104 => "P104",
            PolicyCode::P105 => "P105",
            PolicyCode::P106 => "P106",
            PolicyCode::P107 => "P107",
            PolicyCode::P108 => "P108",
            PolicyCode::P109 => "P109",
            PolicyCode::P110 => "P110",
            PolicyCode::P111 => "P111",
            PolicyCode::P112 => "P112",
            PolicyCode::P113 => "P113",
            PolicyCode::P114 => "P114",
            PolicyCode::P115 => "P115",
            PolicyCode::P116 => "P116",
            PolicyCode::P117 => "P117",
            PolicyCode::Query(code) => code.as_str(),
        }
    }

    /// The code named by `s` (a P-code or a Q-code), if any.
    pub fn parse(s: &str) -> Option<PolicyCode> {
        PolicyCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .or_else(|| Code::parse(s).map(PolicyCode::Query))
    }
}

impl fmt::Display for PolicyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One positioned error in a policy document.
///
/// `start..end` is a byte range of the document; `line` and `col` (both from 1, `col`
/// counted in characters) locate `start`. An error about the whole document (P112, too
/// large) has `line` and `col` 0 and renders without quoting a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error[{code}]: {message} (at {line}:{col})")]
pub struct PolicyError {
    pub code: PolicyCode,
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

impl PolicyError {
    /// An error at byte range `start..end` of `text`, with line and column computed.
    pub(crate) fn new(
        code: PolicyCode,
        text: &str,
        start: usize,
        end: usize,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> PolicyError {
        let start = floor_char_boundary(text, start.min(text.len()));
        let end = floor_char_boundary(text, end.clamp(start, text.len()));
        let (line, col) = line_col(text, start);
        PolicyError { code, message: message.into(), label: label.into(), help, line, col, start, end }
    }

    /// An error about the whole document, with no position.
    pub(crate) fn whole(code: PolicyCode, message: impl Into<String>, help: Option<String>) -> PolicyError {
        PolicyError {
            code,
            message: message.into(),
            label: String::new(),
            help,
            line: 0,
            col: 0,
            start: 0,
            end: 0,
        }
    }

    /// A condition's query error, moved from the condition text (which starts at byte
    /// `base` of the document) to the document.
    pub(crate) fn from_condition(e: QueryError, doc: &str, base: usize) -> PolicyError {
        // The condition is not the end of a query.
        let message =
            if e.code == Code::Q102 { "unexpected end of condition".to_string() } else { e.message };
        PolicyError::new(
            PolicyCode::Query(e.code),
            doc,
            base + e.start,
            base + e.end,
            message,
            e.label,
            e.help,
        )
    }

    /// Renders the error as rustc does, quoting the offending line of `text`:
    ///
    /// ```text
    /// error[P103]: duplicate rule id `no-shell`
    ///  --> policy:7:6
    ///   |
    /// 7 | rule no-shell: deny tool ~ "sh*"
    ///   |      ^^^^^^^^ already used on line 4
    /// ```
    ///
    /// `text` must be the document the error was found in; a client that received the
    /// error as JSON renders it with the document it sent.
    pub fn render(&self, text: &str) -> String {
        if self.line == 0 {
            let mut out = format!("error[{}]: {}\n --> policy", self.code, self.message);
            if let Some(help) = &self.help {
                out.push_str(&format!("\n  |\n  = help: {help}"));
            }
            return out;
        }
        self.snippet().render(text)
    }

    fn snippet(&self) -> crate::error::Snippet<'_> {
        crate::error::Snippet {
            source: "policy",
            code: self.code.as_str(),
            message: &self.message,
            label: &self.label,
            help: self.help.as_deref(),
            line: self.line,
            col: self.col,
            span: self.start..self.end,
        }
    }

    /// The error as a JSON object, with the members of a query error:
    /// `{"code","message","label","help","line","col","start","end"}` (`help` may be null).
    pub fn to_json(&self) -> serde_json::Value {
        self.snippet().to_json()
    }

    /// Reads back what [`PolicyError::to_json`] wrote.
    pub fn from_json(value: &serde_json::Value) -> Result<PolicyError, JsonError> {
        let p = crate::error::JsonParts::read(value)?;
        let code = PolicyCode::parse(&p.code).ok_or(JsonError::Code(p.code))?;
        Ok(PolicyError {
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

/// Everything wrong with a policy document, in order of position.
///
/// Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct PolicyErrors {
    errors: Vec<PolicyError>,
}

impl PolicyErrors {
    pub(crate) fn new(errors: Vec<PolicyError>) -> PolicyErrors {
        PolicyErrors { errors }
    }

    /// The errors, in the order of their position in the document.
    pub fn errors(&self) -> &[PolicyError] {
        &self.errors
    }

    /// Every error rendered (see [`PolicyError::render`]), separated by blank lines.
    pub fn render(&self, text: &str) -> String {
        self.errors.iter().map(|e| e.render(text)).collect::<Vec<_>>().join("\n\n")
    }

    /// A JSON array of error objects.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.errors.iter().map(PolicyError::to_json).collect())
    }

    /// The JSON array as text, for a gRPC status message.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// The JSON array as text, at most about `max_bytes` long: what fits of the errors in
    /// order, then a P116 error naming how many were left out (as
    /// [`crate::QueryErrors::to_json_string_within`]).
    pub fn to_json_string_within(&self, text: &str, max_bytes: usize) -> String {
        json_within(self.errors.iter().map(PolicyError::to_json), max_bytes, |shown, total| {
            let at = self.errors.get(shown).map_or(text.len(), |e| e.start);
            PolicyError::new(
                PolicyCode::P116,
                text,
                at,
                at,
                format!("too many errors to send: {total} found, the first {shown} are shown"),
                "the errors from here on are left out",
                Some("fix these and check the policy again".to_string()),
            )
            .to_json()
        })
    }

    /// Reads back what [`PolicyErrors::to_json`] wrote (an array, or a single object).
    pub fn from_json(value: &serde_json::Value) -> Result<PolicyErrors, JsonError> {
        let errors = match value {
            serde_json::Value::Array(items) => {
                items.iter().map(PolicyError::from_json).collect::<Result<Vec<_>, _>>()?
            }
            other => vec![PolicyError::from_json(other)?],
        };
        if errors.is_empty() {
            return Err(JsonError::Member("errors"));
        }
        Ok(PolicyErrors { errors })
    }

    /// Parses JSON text and reads it back as with [`PolicyErrors::from_json`].
    pub fn from_json_str(text: &str) -> Result<PolicyErrors, JsonError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
        PolicyErrors::from_json(&value)
    }
}

impl IntoIterator for PolicyErrors {
    type Item = PolicyError;
    type IntoIter = std::vec::IntoIter<PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}
