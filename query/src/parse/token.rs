//! Tokens: whitespace, symbols, keywords, identifiers, bare value tokens, strings and regexes.
//!
//! Every token parser skips the whitespace before it. A token is read whole before it is
//! judged, so a malformed one is underlined entirely.

use nom::Parser;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{char, multispace0};
use nom::combinator::{not, peek, recognize, verify};
use nom::sequence::{pair, preceded, terminated};

use super::internal::{PError, PResult};
use crate::error::Code;

/// Words that end an operand or join expressions, so they can never start a field name.
const RESERVED: &[&str] = &["and", "or", "not", "in", "has"];

pub(crate) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(crate) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters of a bare value token: `deny`, `42`, `24h`, `2026-03-15T09:30:00+02:00`.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '+' | '-' | '@')
}

/// Characters a path segment after `.` may use: `params.x-request-id`, `params.items.0`.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

/// Skips whitespace.
pub(crate) fn ws(i: &str) -> &str {
    i.trim_start()
}

/// A punctuation character.
pub(crate) fn sym<'a>(c: char) -> impl Parser<&'a str, Output = char, Error = PError<'a>> {
    preceded(multispace0, char(c))
}

/// An operator or other fixed text.
pub(crate) fn op<'a>(text: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = PError<'a>> {
    preceded(multispace0, tag(text))
}

/// A keyword (any case), not followed by an identifier character.
pub(crate) fn kw<'a>(word: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = PError<'a>> {
    preceded(multispace0, terminated(tag_no_case(word), not(peek(take_while1(is_ident_char)))))
}

/// `IDENT ::= [A-Za-z_][A-Za-z0-9_]*`, any word including keywords.
pub(crate) fn word(i: &str) -> PResult<'_, &str> {
    preceded(multispace0, recognize(pair(take_while1(is_ident_start), take_while(is_ident_char)))).parse(i)
}

/// An identifier that is not a reserved word: the start of a field name or column.
pub(crate) fn ident(i: &str) -> PResult<'_, &str> {
    verify(word, |w: &str| !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))).parse(i)
}

/// A bare value token: `[A-Za-z0-9_-][A-Za-z0-9_.:+@-]*`.
pub(crate) fn token(i: &str) -> PResult<'_, &str> {
    preceded(
        multispace0,
        recognize(pair(
            take_while1(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-').map(|_| ()),
            take_while(is_token_char),
        )),
    )
    .parse(i)
}

/// A path key after `.`: `[A-Za-z0-9_-]+` or a quoted string.
pub(crate) fn key(i: &str) -> PResult<'_, String> {
    if i.starts_with('"') {
        return string(i);
    }
    take_while1(is_key_char).map(str::to_string).parse(i)
}

/// `STRING ::= '"' ( [^"\\] | '\' ( '"' | '\' | 'n' | 't' | 'r' | 'u{' HEX+ '}' ) )* '"'`
///
/// Once the opening quote is read, a missing closing quote or a bad escape fails for good.
pub(crate) fn string(i: &str) -> PResult<'_, String> {
    let start = ws(i);
    let Some(body) = start.strip_prefix('"') else {
        return Err(nom::Err::Error(PError::expected(start, "a string")));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((&body[at + 1..], out)),
            '\\' => {
                let escape_at = &body[at..];
                let bad = |len: usize| {
                    PError::custom(
                        escape_at,
                        len,
                        Code::Q105,
                        format!("invalid escape `{}` in a string", &escape_at[..len]),
                        "not a known escape",
                        Some(r#"escapes are \" \\ \n \t \r and \u{…}; write a backslash as \\"#.to_string()),
                    )
                    .fail()
                };
                match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, 'u')) => {
                        let rest = &escape_at[2..];
                        let hex_len = rest
                            .strip_prefix('{')
                            .map(|r| r.chars().take_while(char::is_ascii_hexdigit).count())
                            .unwrap_or(0);
                        let closed = rest.get(1 + hex_len..).is_some_and(|r| r.starts_with('}'));
                        let decoded = rest
                            .get(1..1 + hex_len)
                            .filter(|h| !h.is_empty() && h.len() <= 6 && closed)
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32);
                        match decoded {
                            Some(ch) => {
                                out.push(ch);
                                // Skip `{`, the digits and `}`.
                                for _ in 0..hex_len + 2 {
                                    chars.next();
                                }
                            }
                            None => return bad(2 + if closed { hex_len + 2 } else { 0 }),
                        }
                    }
                    Some((_, other)) => return bad(1 + other.len_utf8()),
                    None => return bad(1),
                }
            }
            c => out.push(c),
        }
    }
    PError::custom(
        start,
        start.len(),
        Code::Q103,
        "unterminated string",
        "this string has no closing `\"`",
        Some("close the string with `\"`".to_string()),
    )
    .fail()
}

/// `REGEX ::= '/' ( [^/\\] | '\' ANY )* '/'`; `\/` stands for `/`, other escapes are left
/// for the regex engine.
pub(crate) fn regex(i: &str) -> PResult<'_, String> {
    let start = ws(i);
    let Some(body) = start.strip_prefix('/') else {
        return Err(nom::Err::Error(PError::expected(start, "a regex")));
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '/' => return Ok((&body[at + 1..], out)),
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    PError::custom(
        start,
        start.len(),
        Code::Q104,
        "unterminated regex",
        "this regex has no closing `/`",
        Some("close the regex with `/`; write a slash inside it as `\\/`".to_string()),
    )
    .fail()
}

/// The length in bytes of the token at the start of `rest` (for "found `…`" messages).
pub(crate) fn token_len(rest: &str) -> usize {
    let Some(first) = rest.chars().next() else {
        return 0;
    };
    if first == '"' {
        let body = &rest[1..];
        return body.find('"').map_or(rest.len(), |end| end + 2);
    }
    if is_token_char(first) {
        return rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
    }
    for two in ["!=", "<=", ">=", "!~", "==", "=~"] {
        if rest.starts_with(two) {
            return 2;
        }
    }
    first.len_utf8()
}

/// How a message quotes the token at `rest`: "`agent`", shortened when long.
pub(crate) fn describe_token(rest: &str) -> String {
    let tok = &rest[..token_len(rest)];
    if tok.chars().count() > 30 {
        let short: String = tok.chars().take(27).collect();
        format!("`{short}...`")
    } else {
        format!("`{tok}`")
    }
}
