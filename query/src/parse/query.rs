//! The query around expressions: the leading period and the `|` stages.

use nom::Parser;

use super::P;
use super::expr::{duration, instant};
use super::internal::{PError, PResult, expect};
use super::token::{self, kw, sym, ws};
use crate::ast::{Agg, AggFunc, Column, PeriodClause, Query, SortKey, Stage};
use crate::error::Code;
use crate::suggest::did_you_mean;
use crate::time::Period;

const STAGES: &[&str] = &["where", "sort", "limit", "fields", "count", "stats", "top"];

/// What may follow each construct, for "expected …, found …" at the end of a query.
const AFTER_EXPR: &[&str] = &["`and`", "`or`", "`|`", "end of query"];
const AFTER_LIST: &[&str] = &["`,`", "`|`", "end of query"];
const AFTER_STAGE: &[&str] = &["`|`", "end of query"];
const AFTER_PERIOD: &[&str] = &["an expression", "`|`", "end of query"];
const AFTER_COUNT: &[&str] = &["`by`", "`|`", "end of query"];

impl<'a> P<'a> {
    /// `query ::= period? expr? ( "|" stage )* END`
    pub(super) fn query(&self, i: &'a str) -> PResult<'a, Query> {
        let (mut i, period) = self.period(i)?;
        let mut follow = if period.is_some() { AFTER_PERIOD } else { AFTER_STAGE };
        let rest = ws(i);
        let filter = if rest.is_empty() || rest.starts_with('|') {
            None
        } else {
            let (rest, e) = expect("an expression", |i| self.expr(i))(rest)?;
            i = rest;
            follow = AFTER_EXPR;
            Some(e)
        };
        let mut stages = Vec::new();
        loop {
            let rest = ws(i);
            if rest.is_empty() {
                return Ok((rest, Query { period, filter, stages }));
            }
            let Some(after_bar) = rest.strip_prefix('|') else {
                return PError::expected_any(rest, follow).fail();
            };
            let (rest, (stage, next)) = expect("a stage", |i| self.stage(i))(after_bar)?;
            stages.push(stage);
            follow = next;
            i = rest;
        }
    }

    /// `period ::= "last" DURATION | "since" instant ( "until" instant )? | "until" instant | "during" PERIOD`
    ///
    /// `PERIOD ::= YEAR | YEAR "-Q" [1-4] | YEAR "-" MONTH | DATE`
    fn period(&self, i: &'a str) -> PResult<'a, Option<PeriodClause>> {
        if let Ok((rest, _)) = kw("last").parse(i) {
            let (rest, d) = expect("a duration such as `24h` or `7d`", duration)(rest)?;
            return Ok((rest, Some(PeriodClause::Last(d))));
        }
        if let Ok((rest, _)) = kw("since").parse(i) {
            let (rest, from) = expect("a time", instant)(rest)?;
            return match kw("until").parse(rest) {
                Ok((rest, _)) => {
                    let (rest, to) = expect("a time", instant)(rest)?;
                    Ok((rest, Some(PeriodClause::Since(from, Some(to)))))
                }
                Err(_) => Ok((rest, Some(PeriodClause::Since(from, None)))),
            };
        }
        if let Ok((rest, _)) = kw("until").parse(i) {
            let (rest, to) = expect("a time", instant)(rest)?;
            return Ok((rest, Some(PeriodClause::Until(to))));
        }
        if let Ok((rest, _)) = kw("during").parse(i) {
            let (rest, p) =
                expect("a period such as `2026`, `2026-Q1`, `2026-03` or `2026-03-15`", period_token)(rest)?;
            return Ok((rest, Some(PeriodClause::During(p))));
        }
        Ok((i, None))
    }

    /// ```text
    /// stage ::= "where" expr
    ///         | "sort" sort_key ( "," sort_key )*
    ///         | "limit" INT
    ///         | "fields" column ( "," column )*
    ///         | "count" ( "by" column ( "," column )* )?
    ///         | "stats" agg ( "," agg )* ( "by" column ( "," column )* )?
    ///         | "top" INT operand ( "by" column ( "," column )* )?
    /// ```
    fn stage(&self, i: &'a str) -> PResult<'a, (Stage, &'static [&'static str])> {
        let start = ws(i);
        let (rest, name) = token::word(start)?;
        match name.to_ascii_lowercase().as_str() {
            "where" => {
                let (rest, e) = expect("an expression", |i| self.expr(i))(rest)?;
                Ok((rest, (Stage::Where(e), AFTER_EXPR)))
            }
            "sort" => {
                let (rest, keys) = self.list1("a field to sort by", rest, |i| self.sort_key(i))?;
                Ok((rest, (Stage::Sort(keys), AFTER_LIST)))
            }
            "limit" => {
                let (rest, n) = expect("a number", int)(rest)?;
                Ok((rest, (Stage::Limit(n), AFTER_STAGE)))
            }
            "fields" => {
                let (rest, cols) = self.list1("a field", rest, |i| self.column(i))?;
                Ok((rest, (Stage::Fields(cols), AFTER_LIST)))
            }
            "count" => {
                let (rest, by) = self.by(rest)?;
                let follow = if by.is_empty() { AFTER_COUNT } else { AFTER_LIST };
                Ok((rest, (Stage::Count(by), follow)))
            }
            "stats" => {
                let (rest, aggs) = self.list1("an aggregate such as `count()`", rest, |i| self.agg(i))?;
                let (rest, by) = self.by(rest)?;
                let follow = if by.is_empty() { AFTER_COUNT } else { AFTER_LIST };
                Ok((rest, (Stage::Stats(aggs, by), follow)))
            }
            "top" => {
                let (rest, n) = expect("a number", int)(rest)?;
                let (rest, operand) = expect("a field", |i| self.operand(i))(rest)?;
                let (rest, by) = self.by(rest)?;
                let follow = if by.is_empty() { AFTER_COUNT } else { AFTER_LIST };
                Ok((rest, (Stage::Top { n, operand, by }, follow)))
            }
            _ => {
                let help = match did_you_mean(name, STAGES) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "stages are where, sort, limit, fields, count, stats and top".to_string(),
                };
                PError::custom(
                    start,
                    name.len(),
                    Code::Q106,
                    format!("unknown stage `{name}`"),
                    "not a stage",
                    Some(help),
                )
                .fail()
            }
        }
    }

    /// `item ( "," item )*`, committed: each item after a comma must be there.
    fn list1<T>(
        &self,
        what: &'static str,
        i: &'a str,
        mut item: impl FnMut(&'a str) -> PResult<'a, T>,
    ) -> PResult<'a, Vec<T>> {
        let (mut i, first) = expect(what, &mut item)(i)?;
        let mut items = vec![first];
        while let Ok((rest, _)) = sym(',').parse(i) {
            let (rest, next) = expect(what, &mut item)(rest)?;
            items.push(next);
            i = rest;
        }
        Ok((i, items))
    }

    /// `( "by" column ( "," column )* )?`
    fn by(&self, i: &'a str) -> PResult<'a, Vec<Column>> {
        match kw("by").parse(i) {
            Ok((rest, _)) => self.list1("a field to group by", rest, |i| self.column(i)),
            Err(_) => Ok((i, Vec::new())),
        }
    }

    /// `sort_key ::= operand ( "asc" | "desc" )?`
    fn sort_key(&self, i: &'a str) -> PResult<'a, SortKey> {
        let (rest, operand) = self.operand(i)?;
        if let Ok((rest, _)) = kw("desc").parse(rest) {
            return Ok((rest, SortKey { operand, desc: true }));
        }
        if let Ok((rest, _)) = kw("asc").parse(rest) {
            return Ok((rest, SortKey { operand, desc: false }));
        }
        Ok((rest, SortKey { operand, desc: false }))
    }

    /// `column ::= operand ( "as" IDENT )?`
    fn column(&self, i: &'a str) -> PResult<'a, Column> {
        let (rest, operand) = self.operand(i)?;
        let (rest, alias) = self.alias(rest)?;
        Ok((rest, Column { operand, alias }))
    }

    fn alias(&self, i: &'a str) -> PResult<'a, Option<(String, crate::ast::Span)>> {
        match kw("as").parse(i) {
            Ok((rest, _)) => {
                let start = ws(rest);
                let (rest, name) = expect("a column name", token::word)(rest)?;
                Ok((rest, Some((name.to_string(), self.span(start, rest)))))
            }
            Err(_) => Ok((i, None)),
        }
    }

    /// `agg ::= AGG "(" operand? ")" ( "as" IDENT )?`, `AGG ::= count | dcount | min | max | first | last`
    fn agg(&self, i: &'a str) -> PResult<'a, Agg> {
        let start = ws(i);
        let (rest, name) = token::word(start)?;
        let Some(func) = AggFunc::from_name(&name.to_ascii_lowercase()) else {
            let help = match did_you_mean(name, AggFunc::NAMES) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "aggregates are count(), dcount(f), min(f), max(f), first(f) and last(f)".to_string(),
            };
            return PError::custom(
                start,
                name.len(),
                Code::Q107,
                format!("unknown aggregate `{name}`"),
                "not an aggregate",
                Some(help),
            )
            .fail();
        };
        let (rest, _) = expect("`(`", sym('(')).parse(rest)?;
        let (rest, arg) = match sym(')').parse(rest) {
            Ok((rest, _)) => (rest, None),
            Err(_) => {
                let (rest, arg) = expect("a field or `)`", |i| self.operand(i))(rest)?;
                let (rest, _) = expect("`)`", sym(')')).parse(rest)?;
                (rest, Some(arg))
            }
        };
        let span = self.span(start, rest);
        let (rest, alias) = self.alias(rest)?;
        Ok((rest, Agg { func, arg, alias, span }))
    }
}

/// `INT ::= [0-9]+`, read as one token.
fn int(i: &str) -> PResult<'_, u64> {
    let start = ws(i);
    let (rest, tok) = token::token(start)?;
    if !tok.bytes().all(|b| b.is_ascii_digit()) {
        let (code, message, label) =
            if tok.starts_with('-') && tok[1..].bytes().all(|b| b.is_ascii_digit()) && tok.len() > 1 {
                (Code::Q306, format!("`{tok}` is negative"), "must be zero or more")
            } else {
                (Code::Q307, format!("`{tok}` is not a whole number"), "not a number")
            };
        return PError::custom(start, tok.len(), code, message, label, None).fail();
    }
    match tok.parse::<u64>() {
        Ok(n) => Ok((rest, n)),
        Err(_) => PError::custom(
            start,
            tok.len(),
            Code::Q306,
            format!("number `{tok}` is out of range"),
            "too large",
            None,
        )
        .fail(),
    }
}

/// A period token after `during`, read whole.
fn period_token(i: &str) -> PResult<'_, Period> {
    let start = ws(i);
    let (rest, tok) = token::token(start)?;
    match Period::parse(tok) {
        Some(p) => Ok((rest, p)),
        None => PError::custom(
            start,
            tok.len(),
            Code::Q304,
            format!("bad period `{tok}`"),
            "not a period",
            Some("a period is a year (`2026`), a quarter (`2026-Q1`), a month (`2026-03`) or a day (`2026-03-15`)".to_string()),
        )
        .fail(),
    }
}
