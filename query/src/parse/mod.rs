//! Text to syntax tree: the entry points of the nom parser and its error reporting.
//!
//! The parser reports one error, the one where it got furthest. Names (fields, enum
//! values) are not checked here: that is the checker's job, which reports all it finds.

mod expr;
mod internal;
mod query;
mod token;

use std::cell::Cell;

use internal::{PError, PKind, PResult};

use crate::ast::{self, Span};
use crate::error::{Code, QueryError};

/// How deep `not` and parentheses may nest before the parser gives up (a guard against
/// stack exhaustion, far beyond any real query).
const MAX_DEPTH: usize = 64;

/// Parses a whole query.
pub(crate) fn parse_query(text: &str) -> Result<ast::Query, QueryError> {
    let p = P::new(text);
    finish(&p, p.query(text))
}

/// Parses a bare expression (a policy rule's condition).
pub(crate) fn parse_expr(text: &str) -> Result<ast::Expr, QueryError> {
    let p = P::new(text);
    finish(&p, p.condition(text))
}

fn finish<T>(p: &P<'_>, result: PResult<'_, T>) -> Result<T, QueryError> {
    match result {
        Ok((_, value)) => Ok(value),
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(p.error(e)),
        Err(nom::Err::Incomplete(_)) => Err(p.error(PError::expected("", "more input"))),
    }
}

/// The parser: the full text (to turn remaining input into offsets) and the nesting depth.
struct P<'a> {
    full: &'a str,
    depth: Cell<usize>,
}

impl<'a> P<'a> {
    fn new(full: &'a str) -> P<'a> {
        P { full, depth: Cell::new(0) }
    }

    /// Byte offset of the position where `rest` starts.
    fn off(&self, rest: &str) -> usize {
        self.full.len() - rest.len()
    }

    /// The span from where `start` begins (after whitespace) to where `end` begins.
    fn span(&self, start: &str, end: &str) -> Span {
        Span::new(self.off(token::ws(start)), self.off(end))
    }

    /// Runs `f` one nesting level deeper, failing with Q110 past [`MAX_DEPTH`].
    fn nested<T>(&self, i: &'a str, f: impl FnOnce(&'a str) -> PResult<'a, T>) -> PResult<'a, T> {
        let depth = self.depth.get();
        if depth >= MAX_DEPTH {
            let at = token::ws(i);
            return PError::custom(
                at,
                token::token_len(at),
                Code::Q110,
                format!(
                    "expression nested too deeply (more than {MAX_DEPTH} levels of `not` and parentheses)"
                ),
                "too deep",
                Some("simplify the expression".to_string()),
            )
            .fail();
        }
        self.depth.set(depth + 1);
        let result = f(i);
        self.depth.set(depth);
        result
    }

    /// Turns the parser's error into a positioned [`QueryError`].
    fn error(&self, e: PError<'a>) -> QueryError {
        let at = self.off(e.rest);
        match e.kind {
            PKind::Custom(c) => {
                QueryError::new(c.code, self.full, at, at + c.len, c.message, c.label, c.help)
            }
            kind => {
                let rest = token::ws(e.rest);
                let what = match kind {
                    PKind::Expected(list) => Some(join_alternatives(&list)),
                    _ => None,
                };
                if rest.is_empty() {
                    // One column past the last character, whatever whitespace follows it.
                    let end = self.full.trim_end().len();
                    let label =
                        what.map_or_else(|| "more input expected".to_string(), |w| format!("expected {w}"));
                    return QueryError::new(
                        Code::Q102,
                        self.full,
                        end,
                        end,
                        "unexpected end of query",
                        label,
                        None,
                    );
                }
                let start = self.off(rest);
                let len = token::token_len(rest);
                let found = token::describe_token(rest);
                let (message, label) = match what {
                    Some(w) => (format!("expected {w}, found {found}"), format!("expected {w}")),
                    None => (format!("unexpected {found}"), "unexpected token".to_string()),
                };
                QueryError::new(Code::Q100, self.full, start, start + len, message, label, hint(rest))
            }
        }
    }
}

/// A hint for common slips at an unexpected token.
fn hint(rest: &str) -> Option<String> {
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    match word.to_ascii_lowercase().as_str() {
        "last" | "since" | "until" | "during" => {
            Some("a period goes at the very start of the query".to_string())
        }
        "where" | "sort" | "limit" | "fields" | "count" | "stats" | "top" => {
            Some(format!("stages follow a `|`: `| {word} …`"))
        }
        _ if rest.starts_with("&&") => Some("write `and`".to_string()),
        _ if rest.starts_with("||") => Some("write `or`".to_string()),
        _ if rest.starts_with('\'') => Some("strings use double quotes: \"…\"".to_string()),
        _ => None,
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_alternatives(list: &[&str]) -> String {
    match list {
        [] => "more input".to_string(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
