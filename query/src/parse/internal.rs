//! The parser's error type, where the furthest failure wins, and the `expect` combinator.

use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Parser};

use crate::error::Code;

/// A parse error at the position where `rest` starts.
///
/// The offset of the error in the query is `query.len() - rest.len()`, so no positions
/// need to be carried around while parsing.
#[derive(Debug)]
pub(crate) struct PError<'a> {
    pub(crate) rest: &'a str,
    pub(crate) kind: PKind,
}

#[derive(Debug)]
pub(crate) enum PKind {
    /// A low-level nom failure with nothing to say; reported as an unexpected token.
    Nom,
    /// What the grammar would have accepted here (merged when alternatives fail alike).
    Expected(Vec<&'static str>),
    /// A token that was read whole and found malformed, with its own code and message.
    Custom(Box<Custom>),
}

#[derive(Debug)]
pub(crate) struct Custom {
    pub(crate) code: Code,
    pub(crate) message: String,
    pub(crate) label: String,
    pub(crate) help: Option<String>,
    /// How many bytes from `rest` the error underlines.
    pub(crate) len: usize,
}

pub(crate) type PResult<'a, T> = IResult<&'a str, T, PError<'a>>;

impl<'a> PError<'a> {
    pub(crate) fn expected(rest: &'a str, what: &'static str) -> PError<'a> {
        PError { rest, kind: PKind::Expected(vec![what]) }
    }

    pub(crate) fn expected_any(rest: &'a str, what: &[&'static str]) -> PError<'a> {
        PError { rest, kind: PKind::Expected(what.to_vec()) }
    }

    pub(crate) fn custom(
        rest: &'a str,
        len: usize,
        code: Code,
        message: impl Into<String>,
        label: impl Into<String>,
        help: Option<String>,
    ) -> PError<'a> {
        let custom = Custom { code, message: message.into(), label: label.into(), help, len };
        PError { rest, kind: PKind::Custom(Box::new(custom)) }
    }

    /// A committed failure: no alternative is tried after it.
    pub(crate) fn fail<T>(self) -> PResult<'a, T> {
        Err(nom::Err::Failure(self))
    }

    /// Of two errors, the one that got further; at the same position the more specific one
    /// (expectations are merged, so "expected `and`, `or` or `)`" lists them all).
    pub(crate) fn furthest(self, other: PError<'a>) -> PError<'a> {
        use std::cmp::Ordering::*;
        match self.rest.len().cmp(&other.rest.len()) {
            Less => self,
            Greater => other,
            Equal => match (self.kind, other.kind) {
                (PKind::Custom(c), _) | (_, PKind::Custom(c)) => {
                    PError { rest: self.rest, kind: PKind::Custom(c) }
                }
                (PKind::Expected(mut a), PKind::Expected(b)) => {
                    for w in b {
                        if !a.contains(&w) {
                            a.push(w);
                        }
                    }
                    PError { rest: self.rest, kind: PKind::Expected(a) }
                }
                (PKind::Expected(a), PKind::Nom) | (PKind::Nom, PKind::Expected(a)) => {
                    PError { rest: self.rest, kind: PKind::Expected(a) }
                }
                (PKind::Nom, PKind::Nom) => PError { rest: self.rest, kind: PKind::Nom },
            },
        }
    }
}

impl<'a> ParseError<&'a str> for PError<'a> {
    fn from_error_kind(input: &'a str, _: ErrorKind) -> Self {
        PError { rest: input, kind: PKind::Nom }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }

    fn or(self, other: Self) -> Self {
        self.furthest(other)
    }
}

/// Runs `parser`; if it fails recoverably, fails for good saying `what` was expected at
/// the next token. Used once a keyword has committed the parse to one production.
///
/// An error from inside `parser` is kept when it says more: a malformed token (`24hours`)
/// or an expectation further along (the missing `]` of a list).
pub(crate) fn expect<'a, O, F>(what: &'static str, mut parser: F) -> impl FnMut(&'a str) -> PResult<'a, O>
where
    F: Parser<&'a str, Output = O, Error = PError<'a>>,
{
    move |i: &'a str| match parser.parse(i) {
        Err(nom::Err::Error(e)) => {
            let at = i.trim_start();
            let keep = match e.kind {
                PKind::Custom(_) => true,
                PKind::Expected(_) => e.rest.len() < at.len(),
                PKind::Nom => false,
            };
            Err(nom::Err::Failure(if keep { e } else { PError::expected(at, what) }))
        }
        other => other,
    }
}

/// Like [`expect`], listing several things that would have been accepted.
pub(crate) fn expect_any<'a, O, F>(
    what: &'static [&'static str],
    mut parser: F,
) -> impl FnMut(&'a str) -> PResult<'a, O>
where
    F: Parser<&'a str, Output = O, Error = PError<'a>>,
{
    move |i: &'a str| match parser.parse(i) {
        Err(nom::Err::Error(e)) if !matches!(e.kind, PKind::Custom(_)) => {
            Err(nom::Err::Failure(PError::expected_any(i.trim_start(), what)))
        }
        Err(nom::Err::Error(e)) => Err(nom::Err::Failure(e)),
        other => other,
    }
}
