//! Expressions: boolean structure, comparisons, operands and literal values.

use nom::Parser;
use nom::branch::alt;

use super::P;
use super::internal::{PError, PResult, expect, expect_any};
use super::token::{self, kw, op, sym, ws};
use crate::ast::{Cmp, CmpOp, Expr, Func, LitKind, Literal, Operand, OperandKind, Pattern, PatternKind, Rhs};
use crate::error::Code;
use crate::suggest::did_you_mean;
use crate::time::{Duration, DurationError, TimeLit, looks_like_date};

const OPERATORS: &str =
    "a comparison operator (`=`, `!=`, `<`, `<=`, `>`, `>=`, `~`, `!~`, `in`, `not in` or `has`)";

const TIME_HELP: &str = "write a time as `2026-03-15`, `2026-03-15T09:30:00Z`, `now` or `7d ago`";

const DURATION_HELP: &str =
    "a duration is a whole number and one unit of s, m, h, d or w: `90s`, `24h`, `7d`, `2w`";

impl<'a> P<'a> {
    /// `condition ::= expr END` — a policy rule's condition.
    pub(super) fn condition(&self, i: &'a str) -> PResult<'a, Expr> {
        let (i, e) = expect("an expression", |i| self.expr(i))(i)?;
        let rest = ws(i);
        if !rest.is_empty() {
            return PError::expected_any(rest, &["`and`", "`or`", "end of expression"]).fail();
        }
        Ok((rest, e))
    }

    /// `expr ::= and_expr ( "or" and_expr )*`
    pub(super) fn expr(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, first) = self.and_expr(i)?;
        let mut items = vec![first];
        while let Ok((rest, _)) = kw("or").parse(i) {
            let (rest, e) = expect("an expression after `or`", |i| self.and_expr(i))(rest)?;
            items.push(e);
            i = rest;
        }
        Ok((i, if items.len() == 1 { items.remove(0) } else { Expr::Or(items) }))
    }

    /// `and_expr ::= not_expr ( "and" not_expr )*`
    fn and_expr(&self, i: &'a str) -> PResult<'a, Expr> {
        let (mut i, first) = self.not_expr(i)?;
        let mut items = vec![first];
        while let Ok((rest, _)) = kw("and").parse(i) {
            let (rest, e) = expect("an expression after `and`", |i| self.not_expr(i))(rest)?;
            items.push(e);
            i = rest;
        }
        Ok((i, if items.len() == 1 { items.remove(0) } else { Expr::And(items) }))
    }

    /// `not_expr ::= "not" not_expr | "(" expr ")" | cmp`
    fn not_expr(&self, i: &'a str) -> PResult<'a, Expr> {
        if let Ok((rest, _)) = kw("not").parse(i) {
            let (rest, e) =
                self.nested(rest, |r| expect("an expression after `not`", |i| self.not_expr(i))(r))?;
            return Ok((rest, Expr::Not(Box::new(e))));
        }
        if let Ok((rest, _)) = sym('(').parse(i) {
            return self.nested(rest, |r| {
                let (r, e) = expect("an expression", |i| self.expr(i))(r)?;
                let (r, _) = expect_any(&["`and`", "`or`", "`)`"], sym(')'))(r)?;
                Ok((r, e))
            });
        }
        self.cmp(i)
    }

    /// `cmp ::= operand ( CMP_OP value | "not"? "in" list | "has" value | ( "~" | "!~" ) pattern )`
    ///
    /// `CMP_OP ::= "=" | "==" | "!=" | "<" | "<=" | ">" | ">="`; `=~` is accepted for `~`.
    fn cmp(&self, i: &'a str) -> PResult<'a, Expr> {
        let (i, operand) = self.operand(i)?;
        let op_start = ws(i);
        let (i, op) = expect(OPERATORS, |i| self.cmp_op(i))(i)?;
        let op_span = self.span(op_start, i);
        let (i, rhs) = match op {
            CmpOp::In | CmpOp::NotIn => {
                let (i, list) = expect("a list such as `[\"a\", \"b\"]`", |i| self.list(i))(i)?;
                (i, Rhs::List(list))
            }
            CmpOp::Match | CmpOp::NotMatch => {
                let (i, p) = expect("a pattern (a glob in double quotes or a regex between slashes)", |i| {
                    self.pattern(i)
                })(i)?;
                (i, Rhs::Pattern(p))
            }
            _ => {
                let (i, v) = expect("a value", |i| self.value(i))(i)?;
                (i, Rhs::Value(v))
            }
        };
        Ok((i, Expr::Cmp(Box::new(Cmp { operand, op, op_span, rhs }))))
    }

    fn cmp_op(&self, i: &'a str) -> PResult<'a, CmpOp> {
        alt((
            op("==").map(|_| CmpOp::Eq),
            op("=~").map(|_| CmpOp::Match),
            op("=").map(|_| CmpOp::Eq),
            op("!=").map(|_| CmpOp::Ne),
            op("!~").map(|_| CmpOp::NotMatch),
            op("<=").map(|_| CmpOp::Le),
            op("<").map(|_| CmpOp::Lt),
            op(">=").map(|_| CmpOp::Ge),
            op(">").map(|_| CmpOp::Gt),
            op("~").map(|_| CmpOp::Match),
            kw("in").map(|_| CmpOp::In),
            kw("has").map(|_| CmpOp::Has),
            (kw("not"), expect("`in`", kw("in"))).map(|_| CmpOp::NotIn),
        ))
        .parse(i)
    }

    /// `operand ::= FUNC "(" path ( "," DURATION )? ")" | path`, `FUNC ::= hour | weekday | date | bin`
    pub(super) fn operand(&self, i: &'a str) -> PResult<'a, Operand> {
        let start = ws(i);
        let (rest, name) = token::ident(start)?;
        if !ws(rest).starts_with('(') {
            let (rest, path) = self.path_tail(rest, name)?;
            return Ok((rest, Operand { kind: OperandKind::Path(path), span: self.span(start, rest) }));
        }
        let Some(func) = Func::from_name(&name.to_ascii_lowercase()) else {
            let help = match did_you_mean(name, Func::NAMES) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "functions are hour(time), weekday(time), date(time) and bin(time, 1h)".to_string(),
            };
            return PError::custom(
                start,
                name.len(),
                Code::Q107,
                format!("unknown function `{name}`"),
                "not a function",
                Some(help),
            )
            .fail();
        };
        let (rest, _) = sym('(').parse(rest)?;
        let arg_start = ws(rest);
        let (rest, arg) = expect("a field", |i| self.path(i))(rest)?;
        let arg_span = self.span(arg_start, rest);
        let (rest, width) = if func == Func::Bin {
            let (rest, _) = expect("`,` and a bucket width such as `1h`", sym(',')).parse(rest)?;
            let width_start = ws(rest);
            let (rest, d) = expect("a duration such as `1h`", duration)(rest)?;
            if d.ns == 0 {
                // `0s` is a duration (`last 0s`, `0s ago`), but no bucket is 0 wide.
                let len = width_start.len() - rest.len();
                return PError::custom(
                    width_start,
                    width_start[..len].trim_end().len(),
                    Code::Q306,
                    "a bucket width of 0 is out of range",
                    "must be more than 0",
                    Some("write a width such as `1s`, `1h` or `1d`".to_string()),
                )
                .fail();
            }
            (rest, Some(d))
        } else {
            (rest, None)
        };
        let (rest, _) = expect("`)`", sym(')')).parse(rest)?;
        let kind = OperandKind::Func { func, arg, arg_span, width };
        Ok((rest, Operand { kind, span: self.span(start, rest) }))
    }

    /// `path ::= IDENT ( "." KEY )*`, `KEY ::= [A-Za-z0-9_-]+ | STRING`
    fn path(&self, i: &'a str) -> PResult<'a, Vec<String>> {
        let (rest, name) = token::ident(i)?;
        self.path_tail(rest, name)
    }

    fn path_tail(&self, mut rest: &'a str, first: &'a str) -> PResult<'a, Vec<String>> {
        let mut path = vec![first.to_string()];
        while let Some(after_dot) = rest.strip_prefix('.') {
            let (r, key) = expect("a key after `.`", token::key)(after_dot)?;
            path.push(key);
            rest = r;
        }
        Ok((rest, path))
    }

    /// `list ::= "[" value ( "," value )* "]"`
    fn list(&self, i: &'a str) -> PResult<'a, Vec<Literal>> {
        let (mut i, _) = sym('[').parse(i)?;
        let mut items = Vec::new();
        loop {
            let (rest, v) = expect("a value", |i| self.value(i))(i)?;
            items.push(v);
            match sym(',').parse(rest) {
                Ok((rest, _)) => i = rest,
                Err(_) => {
                    let (rest, _) = expect_any(&["`,`", "`]`"], sym(']')).parse(rest)?;
                    return Ok((rest, items));
                }
            }
        }
    }

    /// `pattern ::= STRING | REGEX` — a glob (anchored) or a regex (unanchored).
    fn pattern(&self, i: &'a str) -> PResult<'a, Pattern> {
        let start = ws(i);
        if start.starts_with('"') {
            let (rest, source) = token::string(start)?;
            return Ok((rest, Pattern { kind: PatternKind::Glob, source, span: self.span(start, rest) }));
        }
        if start.starts_with('/') {
            let (rest, source) = token::regex(start)?;
            return Ok((rest, Pattern { kind: PatternKind::Regex, source, span: self.span(start, rest) }));
        }
        if let Ok((_, tok)) = token::token(start) {
            return PError::custom(
                start,
                tok.len(),
                Code::Q100,
                format!("expected a pattern, found `{tok}`"),
                "expected a pattern",
                Some(format!(
                    "write a glob in double quotes, \"{tok}\", or a regex between slashes, /{tok}/"
                )),
            )
            .fail();
        }
        Err(nom::Err::Error(PError::expected(start, "a pattern")))
    }

    /// `value ::= STRING | TOKEN ( "ago" )?` — a token is read whole, then classified:
    /// an integer, a decimal, a date or date-time, `now`, a duration (`7d ago` is a time),
    /// or a bare word.
    pub(super) fn value(&self, i: &'a str) -> PResult<'a, Literal> {
        let start = ws(i);
        if start.starts_with('"') {
            let (rest, text) = token::string(start)?;
            return Ok((rest, Literal { kind: LitKind::Str, text, span: self.span(start, rest) }));
        }
        if start.starts_with('/') {
            let len = token::regex(start).map_or(start.len(), |(rest, _)| start.len() - rest.len());
            return PError::custom(
                start,
                len,
                Code::Q100,
                "expected a value, found a regex",
                "a regex is not a value",
                Some("a regex goes after `~` or `!~`".to_string()),
            )
            .fail();
        }
        let (rest, tok) = token::token(start)?;
        let bad = |code: Code, message: String, label: &str, help: &str| {
            PError::custom(start, tok.len(), code, message, label, Some(help.to_string())).fail()
        };
        let lit = |kind: LitKind, rest: &'a str| {
            Ok((rest, Literal { kind, text: tok.to_string(), span: self.span(start, rest) }))
        };
        let first = tok.chars().next().unwrap_or(' ');
        if tok == "now" {
            return lit(LitKind::Time(TimeLit::Now), rest);
        }
        if first.is_ascii_alphabetic() || first == '_' {
            return lit(LitKind::Word, rest);
        }
        let unsigned = tok.strip_prefix('-').unwrap_or(tok);
        if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return match tok.parse::<i64>() {
                Ok(n) => lit(LitKind::Int(n), rest),
                Err(_) => bad(
                    Code::Q306,
                    format!("number `{tok}` is out of range"),
                    "too large",
                    "integers fit in 64 bits",
                ),
            };
        }
        if is_decimal(unsigned) {
            if let Ok(x) = tok.parse::<f64>() {
                return lit(LitKind::Float(x), rest);
            }
        }
        if looks_like_date(tok) {
            return match TimeLit::parse(tok) {
                Some(t) => lit(LitKind::Time(t), rest),
                None => bad(Code::Q303, format!("bad time `{tok}`"), "not a time", TIME_HELP),
            };
        }
        if first.is_ascii_digit()
            && tok.ends_with(|c: char| c.is_ascii_alphabetic())
            && !tok.contains([':', '-'])
        {
            return match Duration::parse(tok) {
                Ok(d) => match kw("ago").parse(rest) {
                    Ok((rest, _)) => lit(LitKind::Time(TimeLit::Ago(d)), rest),
                    Err(_) => lit(LitKind::Duration, rest),
                },
                Err(DurationError::TooLarge) => bad(
                    Code::Q306,
                    format!("duration `{tok}` is too large"),
                    "too large",
                    "durations must stay under 292 years",
                ),
                Err(DurationError::Malformed) => {
                    bad(Code::Q302, format!("bad duration `{tok}`"), "not a duration", DURATION_HELP)
                }
            };
        }
        bad(
            Code::Q307,
            format!("malformed value `{tok}`"),
            "not a number, time or word",
            "quote text as \"…\"; numbers are like `42` or `1.5`",
        )
    }
}

fn is_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next().unwrap_or("");
    !whole.is_empty()
        && !frac.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// `DURATION ::= [0-9]+ ( "s" | "m" | "h" | "d" | "w" )`, read as one token.
pub(super) fn duration(i: &str) -> PResult<'_, Duration> {
    let start = ws(i);
    let (rest, tok) = token::token(start)?;
    match Duration::parse(tok) {
        Ok(d) => Ok((rest, d)),
        Err(DurationError::TooLarge) => PError::custom(
            start,
            tok.len(),
            Code::Q306,
            format!("duration `{tok}` is too large"),
            "too large",
            Some("durations must stay under 292 years".to_string()),
        )
        .fail(),
        Err(DurationError::Malformed) => PError::custom(
            start,
            tok.len(),
            Code::Q302,
            format!("bad duration `{tok}`"),
            "not a duration",
            Some(DURATION_HELP.to_string()),
        )
        .fail(),
    }
}

/// `instant ::= STRING | "now" | DURATION "ago" | DATE | DATETIME`
pub(super) fn instant(i: &str) -> PResult<'_, TimeLit> {
    let start = ws(i);
    let bad = |len: usize, message: String, help: &str| {
        PError::custom(start, len, Code::Q303, message, "not a time", Some(help.to_string())).fail()
    };
    if start.starts_with('"') {
        let (rest, text) = token::string(start)?;
        return match TimeLit::parse_text(&text) {
            Some(t) => Ok((rest, t)),
            None => bad(start.len() - rest.len(), format!("bad time \"{text}\""), TIME_HELP),
        };
    }
    let (rest, tok) = token::token(start)?;
    if let Some(t) = TimeLit::parse(tok) {
        return Ok((rest, t));
    }
    // Digits then letters (`7d`) look like a duration; `2026-03-15T25:00:00Z` is a bad time.
    let unit = tok.trim_start_matches(|c: char| c.is_ascii_digit());
    if unit.len() < tok.len() && !unit.is_empty() && unit.chars().all(|c| c.is_ascii_alphabetic()) {
        let (rest, d) = duration(start)?;
        return match kw("ago").parse(rest) {
            Ok((rest, _)) => Ok((rest, TimeLit::Ago(d))),
            Err(_) => {
                bad(tok.len(), format!("`{tok}` is a duration, not a time"), &format!("write `{tok} ago`"))
            }
        };
    }
    bad(tok.len(), format!("bad time `{tok}`"), TIME_HELP)
}
