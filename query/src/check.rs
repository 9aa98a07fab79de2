//! Type checking: resolves names against the schema (or the columns of earlier stages),
//! checks operators and literals against types, compiles patterns, and collects every error.

use std::borrow::Cow;

use crate::ast::{
    self, AggFunc, CmpOp, Func, LitKind, Literal, OperandKind, PatternKind, PeriodClause, Rhs, Span, Stage,
};
use crate::error::{Code, MAX_ERRORS, QueryError, QueryErrors};
use crate::field::{DEFAULT_COLUMNS, FIELD_NAMES, Field, Type, WEEKDAYS};
use crate::pattern::Matcher;
use crate::plan::{Access, AggSpec, CmpKind, Cond, Const, FuncKind, Step};
use crate::suggest::did_you_mean;
use crate::time::TimeLit;
use crate::value::Value;

const TIME_HELP: &str = "write a time as `2026-03-15`, `2026-03-15T09:30:00Z`, `now` or `7d ago`";

/// A checked query: its steps and output column names.
pub(crate) struct Checked {
    pub(crate) steps: Vec<Step>,
    pub(crate) columns: Vec<String>,
}

/// What names refer to at a point of the pipeline.
enum Scope {
    /// Before any `fields` or aggregation: every field of the entry.
    Record,
    /// After one: only these columns.
    Columns(Vec<ColInfo>),
}

#[derive(Clone)]
struct ColInfo {
    name: String,
    /// The record-level value the column holds, if any, so `hour(time)` finds the column
    /// that `count by hour(time)` made.
    source: Option<Access>,
    ty: Type,
}

/// Checks a parsed query.
pub(crate) fn check_query(text: &str, q: &ast::Query) -> Result<Checked, QueryErrors> {
    let mut c = Checker { text, errors: Vec::new(), left_out: 0 };
    let mut steps = Vec::new();
    if let Some(p) = &q.period {
        steps.push(Step::Filter(period_cond(p)));
    }
    let mut scope = Scope::Record;
    if let Some(e) = &q.filter {
        if let Some(cond) = c.cond(e, &scope) {
            steps.push(Step::Filter(cond));
        }
    }
    for stage in &q.stages {
        if let Some((step, next)) = c.stage(stage, &scope) {
            steps.push(step);
            if let Some(next) = next {
                scope = Scope::Columns(next);
            }
        } else if let Some(next) = c.scope_after_failed(stage, &scope) {
            // Keep checking later stages against the columns this one would have made.
            scope = Scope::Columns(next);
        }
    }
    let columns = match &scope {
        Scope::Record => {
            let fields: Vec<Field> = DEFAULT_COLUMNS.iter().filter_map(|n| Field::from_name(n)).collect();
            steps.push(Step::Map(fields.into_iter().map(Access::Field).collect()));
            DEFAULT_COLUMNS.iter().map(|s| s.to_string()).collect()
        }
        Scope::Columns(cols) => cols.iter().map(|c| c.name.clone()).collect(),
    };
    if c.errors.is_empty() {
        Ok(Checked { steps, columns })
    } else {
        Err(QueryErrors::capped(text, c.errors, c.left_out))
    }
}

/// Checks a bare condition (a policy rule) against the entry schema.
pub(crate) fn check_condition(text: &str, e: &ast::Expr) -> Result<Cond, QueryErrors> {
    let mut c = Checker { text, errors: Vec::new(), left_out: 0 };
    match c.cond(e, &Scope::Record) {
        Some(cond) if c.errors.is_empty() => Ok(cond),
        _ => Err(QueryErrors::capped(text, c.errors, c.left_out)),
    }
}

/// A period is shorthand for comparisons on `time`, which the planner turns into a range.
fn period_cond(p: &PeriodClause) -> Cond {
    let time = || Access::Field(Field::Time);
    let cmp = |op, value| Cond::Cmp { access: time(), op, value };
    match p {
        PeriodClause::Last(d) => Cond::All(vec![
            cmp(CmpKind::Ge, Const::Time(TimeLit::Ago(*d))),
            cmp(CmpKind::Le, Const::Time(TimeLit::Now)),
        ]),
        PeriodClause::Since(from, None) => cmp(CmpKind::Ge, Const::Time(*from)),
        PeriodClause::Since(from, Some(to)) => {
            Cond::All(vec![cmp(CmpKind::Ge, Const::Time(*from)), cmp(CmpKind::Lt, Const::Time(*to))])
        }
        PeriodClause::Until(to) => cmp(CmpKind::Lt, Const::Time(*to)),
        PeriodClause::During(p) => {
            Cond::All(vec![cmp(CmpKind::Ge, Const::PeriodStart(*p)), cmp(CmpKind::Lt, Const::PeriodEnd(*p))])
        }
    }
}

struct Checker<'t> {
    text: &'t str,
    /// The first [`MAX_ERRORS`] errors found.
    errors: Vec<QueryError>,
    /// How many more were found; they are counted, not built (building one locates it in
    /// the text, which for thousands of them would cost the text's length each).
    left_out: usize,
}

fn describe_lit(lit: &Literal) -> &'static str {
    match lit.kind {
        LitKind::Str => "a string",
        LitKind::Int(_) => "an integer",
        LitKind::Float(_) => "a decimal number",
        LitKind::Word => "a bare word",
        LitKind::Time(_) => "a time",
        LitKind::Duration => "a duration",
    }
}

impl Checker<'_> {
    fn err(
        &mut self,
        code: Code,
        span: Span,
        message: String,
        label: impl Into<String>,
        help: Option<String>,
    ) {
        if self.errors.len() >= MAX_ERRORS {
            self.left_out += 1;
            return;
        }
        self.errors.push(QueryError::new(code, self.text, span.start, span.end, message, label, help));
    }

    // ---- names ----

    /// Resolves a dotted path to a record field, reporting unknown names.
    fn record_path(&mut self, path: &[String], span: Span) -> Option<Field> {
        match resolve_field(path) {
            Ok(f) => Some(f),
            Err(PathError::Unknown) => {
                let name = path.first().map_or("", String::as_str);
                let help = match did_you_mean(name, FIELD_NAMES) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "fields are {}; reach into tool parameters with `params.NAME`",
                        FIELD_NAMES.join(", ")
                    ),
                };
                let first_span = Span::new(span.start, span.start + name.len());
                self.err(
                    Code::Q101,
                    first_span,
                    format!("unknown field `{name}`"),
                    "not a known field",
                    Some(help),
                );
                None
            }
            Err(PathError::NoSubfields) => {
                let name = &path[0];
                self.err(
                    Code::Q205,
                    span,
                    format!("`{name}` has no subfields"),
                    "not a JSON field",
                    Some("only `params.…` and `details.…` (and `author`, `approver`, `owner`, `purpose`) reach into JSON".to_string()),
                );
                None
            }
        }
    }

    /// Resolves an operand in `scope` to where its value comes from and its type.
    fn operand(&mut self, o: &ast::Operand, scope: &Scope) -> Option<(Access, Type)> {
        match scope {
            Scope::Record => match &o.kind {
                OperandKind::Path(path) => {
                    let f = self.record_path(path, o.span)?;
                    let ty = f.ty();
                    Some((Access::Field(f), ty))
                }
                OperandKind::Func { func, arg, arg_span, width } => {
                    let f = self.record_path(arg, *arg_span)?;
                    let ty = f.ty();
                    let arg_name = arg.join(".");
                    self.func(*func, Access::Field(f), ty, &arg_name, *arg_span, *width)
                }
            },
            Scope::Columns(cols) => {
                let name = o.default_name();
                if let OperandKind::Path(path) = &o.kind {
                    if let Some(i) = cols.iter().position(|c| c.name == path.join(".")) {
                        return Some((Access::Col(i), cols[i].ty));
                    }
                }
                // The same value as a column made from it (`hour(time)` after `count by hour(time)`).
                if let Some(source) = record_access(o) {
                    if let Some(i) = cols.iter().position(|c| c.source.as_ref() == Some(&source)) {
                        return Some((Access::Col(i), cols[i].ty));
                    }
                }
                if let OperandKind::Func { func, arg, arg_span, width } = &o.kind {
                    let joined = arg.join(".");
                    if let Some(i) = cols.iter().position(|c| c.name == joined) {
                        return self.func(*func, Access::Col(i), cols[i].ty, &joined, *arg_span, *width);
                    }
                    return self.unavailable(&joined, *arg_span, cols);
                }
                self.unavailable(&name, o.span, cols)
            }
        }
    }

    fn unavailable(&mut self, name: &str, span: Span, cols: &[ColInfo]) -> Option<(Access, Type)> {
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        let help = match did_you_mean(name, &names) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "the columns here are {}",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
        };
        self.err(
            Code::Q108,
            span,
            format!("`{name}` is not available here"),
            "not a column after `fields` or an aggregation",
            Some(help),
        );
        None
    }

    fn func(
        &mut self,
        func: Func,
        arg: Access,
        ty: Type,
        arg_name: &str,
        arg_span: Span,
        width: Option<crate::time::Duration>,
    ) -> Option<(Access, Type)> {
        if ty != Type::Time {
            self.err(
                Code::Q204,
                arg_span,
                format!("`{}` needs a time, but `{arg_name}` is {}", func.name(), ty.describe()),
                "not a time",
                Some(format!("write `{}(time)`", func.name())),
            );
            return None;
        }
        let (kind, out) = match func {
            Func::Hour => (FuncKind::Hour, Type::Hour),
            Func::Weekday => (FuncKind::Weekday, Type::Weekday),
            Func::Date => (FuncKind::Date, Type::Date),
            Func::Bin => (FuncKind::Bin(width?), Type::Time),
        };
        Some((Access::Func(kind, Box::new(arg)), out))
    }

    // ---- expressions ----

    /// Checks an expression; `None` when any part of it is wrong (all parts are checked).
    fn cond(&mut self, e: &ast::Expr, scope: &Scope) -> Option<Cond> {
        match e {
            ast::Expr::Or(items) | ast::Expr::And(items) => {
                let checked: Vec<Option<Cond>> = items.iter().map(|e| self.cond(e, scope)).collect();
                let checked: Option<Vec<Cond>> = checked.into_iter().collect();
                let checked = checked?;
                Some(if matches!(e, ast::Expr::Or(_)) { Cond::Any(checked) } else { Cond::All(checked) })
            }
            ast::Expr::Not(inner) => Some(Cond::Not(Box::new(self.cond(inner, scope)?))),
            ast::Expr::Cmp(cmp) => self.cmp(cmp, scope),
        }
    }

    fn cmp(&mut self, cmp: &ast::Cmp, scope: &Scope) -> Option<Cond> {
        let (access, ty) = self.operand(&cmp.operand, scope)?;
        let name = cmp.operand.default_name();
        if !self.operator_applies(cmp.op, ty, &name, cmp.op_span) {
            return None;
        }
        match (&cmp.rhs, cmp.op) {
            (Rhs::Pattern(p), _) => {
                let compiled = match p.kind {
                    PatternKind::Glob => Matcher::glob(&p.source),
                    PatternKind::Regex => Matcher::regex(&p.source),
                };
                match compiled {
                    Ok(matcher) => Some(Cond::Match { access, matcher, negated: cmp.op == CmpOp::NotMatch }),
                    Err(reason) => {
                        let what = if p.kind == PatternKind::Regex { "regex" } else { "glob" };
                        self.err(Code::Q305, p.span, format!("invalid {what}: {reason}"), reason, None);
                        None
                    }
                }
            }
            (Rhs::List(items), op) => {
                let values: Vec<Option<Const>> =
                    items.iter().map(|lit| self.constant(ty, &name, lit)).collect();
                let values: Option<Vec<Const>> = values.into_iter().collect();
                Some(Cond::In { access, values: values?, negated: op == CmpOp::NotIn })
            }
            (Rhs::Value(lit), CmpOp::Has) => {
                let value = self.constant(ty, &name, lit)?;
                Some(Cond::Has { access, value })
            }
            (Rhs::Value(lit), op) => {
                let value = self.constant(ty, &name, lit)?;
                let op = match op {
                    CmpOp::Eq => CmpKind::Eq,
                    CmpOp::Ne => CmpKind::Ne,
                    CmpOp::Lt => CmpKind::Lt,
                    CmpOp::Le => CmpKind::Le,
                    CmpOp::Gt => CmpKind::Gt,
                    _ => CmpKind::Ge,
                };
                Some(Cond::Cmp { access, op, value })
            }
        }
    }

    /// Whether `op` makes sense for a value of type `ty`; reports Q202 when not.
    fn operator_applies(&mut self, op: CmpOp, ty: Type, name: &str, span: Span) -> bool {
        let ok = match op {
            CmpOp::Eq | CmpOp::Ne | CmpOp::In | CmpOp::NotIn => ty != Type::List,
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => !matches!(ty, Type::List | Type::Enum(_)),
            CmpOp::Has => matches!(ty, Type::List | Type::Json),
            CmpOp::Match | CmpOp::NotMatch => {
                matches!(ty, Type::Str | Type::Enum(_) | Type::List | Type::Json | Type::Date)
            }
        };
        if ok {
            return true;
        }
        let help = match (op, ty) {
            (CmpOp::Eq | CmpOp::Ne | CmpOp::In | CmpOp::NotIn, Type::List) => {
                format!("test membership with `{name} has \"…\"`, or match elements with `{name} ~ \"…\"`")
            }
            (CmpOp::Has, Type::Str) => format!("to find text inside a string, write `{name} ~ \"*text*\"`"),
            (CmpOp::Has, _) => "`has` tests membership of a list such as `flags`".to_string(),
            (CmpOp::Match | CmpOp::NotMatch, _) => {
                "`~` matches text; compare numbers and times with `=`, `<`, `>`".to_string()
            }
            (_, Type::Enum(_)) => "enumerations have no order; use `=`, `!=` or `in`".to_string(),
            _ => "see the operator table in docs/QUERY.md".to_string(),
        };
        self.err(
            Code::Q202,
            span,
            format!("operator `{}` does not apply to `{name}`, which is {}", op.symbol(), ty.describe()),
            format!("not defined for {}", plural(ty)),
            Some(help),
        );
        false
    }

    /// Checks a literal against the type it is compared with and turns it into a constant.
    fn constant(&mut self, ty: Type, name: &str, lit: &Literal) -> Option<Const> {
        let text = lit.text.as_str();
        let found = describe_lit(lit);
        let mismatch = |c: &mut Self, help: Option<String>| {
            c.err(
                Code::Q201,
                lit.span,
                format!("mismatched types: `{name}` is {}, but this is {found}", ty.describe()),
                format!("expected {}", ty.describe()),
                help,
            );
            None
        };
        match ty {
            Type::Int | Type::Hour => match lit.kind {
                LitKind::Int(n) => {
                    if ty == Type::Hour && !(0..=23).contains(&n) {
                        self.err(
                            Code::Q306,
                            lit.span,
                            format!("hour `{n}` is out of range"),
                            "hours are 0 to 23",
                            None,
                        );
                        return None;
                    }
                    Some(Const::Value(Value::Int(n)))
                }
                LitKind::Str if text.trim().parse::<i64>().is_ok() => {
                    mismatch(self, Some(format!("remove the quotes: `{}`", text.trim())))
                }
                _ => mismatch(self, None),
            },
            Type::Time => match lit.kind {
                LitKind::Time(t) => Some(Const::Time(t)),
                LitKind::Str => match TimeLit::parse_text(text) {
                    Some(t) => Some(Const::Time(t)),
                    None => {
                        self.err(
                            Code::Q303,
                            lit.span,
                            format!("bad time \"{text}\""),
                            "not a time",
                            Some(TIME_HELP.to_string()),
                        );
                        None
                    }
                },
                LitKind::Duration => {
                    self.err(
                        Code::Q303,
                        lit.span,
                        format!("`{text}` is a duration, not a time"),
                        "not a time",
                        Some(format!("write `{text} ago`")),
                    );
                    None
                }
                LitKind::Word => {
                    self.err(
                        Code::Q303,
                        lit.span,
                        format!("bad time `{text}`"),
                        "not a time",
                        Some(TIME_HELP.to_string()),
                    );
                    None
                }
                _ => mismatch(self, Some(TIME_HELP.to_string())),
            },
            Type::Date => {
                let date = match lit.kind {
                    LitKind::Time(TimeLit::Civil(_)) | LitKind::Str => {
                        text.trim().parse::<jiff::civil::Date>().ok()
                    }
                    _ => None,
                };
                match date {
                    Some(d) => Some(Const::Value(Value::Str(Cow::Owned(d.to_string())))),
                    None if matches!(lit.kind, LitKind::Str | LitKind::Time(_) | LitKind::Word) => {
                        self.err(
                            Code::Q303,
                            lit.span,
                            format!("bad date `{text}`"),
                            "not a date",
                            Some("write a date as `2026-03-15`".to_string()),
                        );
                        None
                    }
                    None => mismatch(self, Some("write a date as `2026-03-15`".to_string())),
                }
            }
            Type::Weekday => match lit.kind {
                LitKind::Word | LitKind::Str => {
                    let lower = text.to_ascii_lowercase();
                    let day = WEEKDAYS
                        .iter()
                        .position(|d| lower == *d || (lower.len() > 3 && long_weekday(d) == lower));
                    match day.and_then(|d| u8::try_from(d).ok()) {
                        Some(d) => Some(Const::Value(Value::Weekday(d))),
                        None => {
                            self.unknown_value(lit, name, &WEEKDAYS);
                            None
                        }
                    }
                }
                _ => mismatch(self, Some("weekdays are mon, tue, wed, thu, fri, sat and sun".to_string())),
            },
            Type::Enum(values) => match lit.kind {
                LitKind::Word | LitKind::Str => match values.iter().find(|v| **v == text) {
                    Some(v) => Some(Const::Value(Value::Str(Cow::Borrowed(v)))),
                    None => {
                        self.unknown_value(lit, name, values);
                        None
                    }
                },
                _ => mismatch(self, Some(format!("`{name}` is one of {}", values.join(", ")))),
            },
            Type::Str | Type::List => match lit.kind {
                LitKind::Str => Some(Const::Value(Value::Str(Cow::Owned(text.to_string())))),
                // A list's elements are identifiers (`flags has deny_burst`): a bare word is fine.
                LitKind::Word if ty == Type::List => {
                    Some(Const::Value(Value::Str(Cow::Owned(text.to_string()))))
                }
                LitKind::Word => {
                    self.err(
                        Code::Q203,
                        lit.span,
                        format!("bare word `{text}` where a string is expected"),
                        "needs double quotes",
                        Some(format!("write \"{text}\"")),
                    );
                    None
                }
                _ => mismatch(self, Some(format!("to compare as text, quote it: \"{text}\""))),
            },
            Type::Json => {
                match lit.kind {
                    LitKind::Str => Some(Const::Value(Value::Str(Cow::Owned(text.to_string())))),
                    LitKind::Int(n) => Some(Const::Value(Value::Int(n))),
                    LitKind::Float(x) => Some(Const::Value(Value::number(x))),
                    LitKind::Word if text == "true" || text == "false" => {
                        Some(Const::Value(Value::Bool(text == "true")))
                    }
                    // A date in JSON is text; compare it as written.
                    LitKind::Time(TimeLit::Civil(_) | TimeLit::Abs(_)) => {
                        Some(Const::Value(Value::Str(Cow::Owned(text.to_string()))))
                    }
                    LitKind::Word => {
                        self.err(
                        Code::Q203,
                        lit.span,
                        format!("bare word `{text}` where a string is expected"),
                        "needs double quotes",
                        Some(format!("write \"{text}\" (bare words in JSON comparisons are only `true` and `false`)")),
                    );
                        None
                    }
                    _ => mismatch(self, Some(format!("to compare as text, quote it: \"{text}\""))),
                }
            }
        }
    }

    fn unknown_value(&mut self, lit: &Literal, name: &str, values: &[&str]) {
        let help = match did_you_mean(&lit.text, values) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("`{name}` is one of {}", values.join(", ")),
        };
        self.err(
            Code::Q301,
            lit.span,
            format!("unknown value `{}` for `{name}`", lit.text),
            format!("not a `{name}` value"),
            Some(help),
        );
    }

    // ---- stages ----

    /// Checks a stage; returns its step and, when it changes the scope, the new columns.
    fn stage(&mut self, stage: &Stage, scope: &Scope) -> Option<(Step, Option<Vec<ColInfo>>)> {
        match stage {
            Stage::Where(e) => Some((Step::Filter(self.cond(e, scope)?), None)),
            Stage::Limit(n) => Some((Step::Limit(*n), None)),
            Stage::Sort(keys) => {
                let resolved: Vec<Option<(Access, bool)>> =
                    keys.iter().map(|k| self.operand(&k.operand, scope).map(|(a, _)| (a, k.desc))).collect();
                let resolved: Option<Vec<_>> = resolved.into_iter().collect();
                Some((Step::Sort(resolved?), None))
            }
            Stage::Fields(cols) => {
                let (accesses, infos) = self.columns(cols, scope)?;
                self.unique(infos.iter().map(|c| c.name.as_str()).zip(cols.iter().map(ast::Column::span)))?;
                Some((Step::Map(accesses), Some(infos)))
            }
            Stage::Count(by) => {
                let (keys, mut infos) = self.columns(by, scope)?;
                // The implicit column goes first, so a clash is reported on the written one.
                let written = infos.iter().map(|c| c.name.as_str()).zip(by.iter().map(ast::Column::span));
                self.unique(std::iter::once(("count", Span::new(0, 0))).chain(written))?;
                infos.push(ColInfo { name: "count".to_string(), source: None, ty: Type::Int });
                let aggs = vec![AggSpec { func: AggFunc::Count, arg: None }];
                Some((Step::Aggregate { keys, aggs }, Some(infos)))
            }
            Stage::Stats(aggs, by) => {
                let keys = self.columns(by, scope);
                let specs = self.aggs(aggs, scope);
                let ((keys, mut infos), (specs, agg_infos)) = (keys?, specs?);
                let spans: Vec<Span> =
                    by.iter().map(ast::Column::span).chain(aggs.iter().map(|a| a.span)).collect();
                infos.extend(agg_infos);
                self.unique(infos.iter().map(|c| c.name.as_str()).zip(spans))?;
                Some((Step::Aggregate { keys, aggs: specs }, Some(infos)))
            }
            Stage::Top { n, operand, by } => {
                let keys = self.columns(by, scope);
                let value = self.operand(operand, scope);
                let ((keys, mut infos), (value, ty)) = (keys?, value?);
                infos.push(ColInfo { name: operand.default_name(), source: source_of(&value, scope), ty });
                let spans: Vec<Span> = by.iter().map(ast::Column::span).chain([operand.span]).collect();
                let written = infos.iter().map(|c| c.name.as_str()).zip(spans);
                self.unique(std::iter::once(("count", Span::new(0, 0))).chain(written))?;
                infos.push(ColInfo { name: "count".to_string(), source: None, ty: Type::Int });
                Some((Step::Top { n: *n, keys, value }, Some(infos)))
            }
        }
    }

    /// The columns a failed stage would have made, so later stages are checked sensibly
    /// (and do not report every name as unavailable).
    fn scope_after_failed(&mut self, stage: &Stage, scope: &Scope) -> Option<Vec<ColInfo>> {
        let named = |name: String| ColInfo { name, source: None, ty: Type::Json };
        let mut cols: Vec<ColInfo> = match stage {
            Stage::Fields(cols) | Stage::Count(cols) => cols.iter().map(|c| named(c.name())).collect(),
            Stage::Stats(aggs, by) => {
                by.iter().map(|c| named(c.name())).chain(aggs.iter().map(|a| named(a.name()))).collect()
            }
            Stage::Top { operand, by, .. } => {
                by.iter().map(|c| named(c.name())).chain([named(operand.default_name())]).collect()
            }
            _ => {
                return match scope {
                    Scope::Columns(c) => Some(c.clone()),
                    Scope::Record => None,
                };
            }
        };
        if matches!(stage, Stage::Count(_) | Stage::Top { .. }) {
            cols.push(ColInfo { name: "count".to_string(), source: None, ty: Type::Int });
        }
        Some(cols)
    }

    fn columns(&mut self, cols: &[ast::Column], scope: &Scope) -> Option<(Vec<Access>, Vec<ColInfo>)> {
        let resolved: Vec<Option<(Access, Type)>> =
            cols.iter().map(|c| self.operand(&c.operand, scope)).collect();
        let mut accesses = Vec::new();
        let mut infos = Vec::new();
        for (col, r) in cols.iter().zip(resolved) {
            let (access, ty) = r?;
            infos.push(ColInfo { name: col.name(), source: source_of(&access, scope), ty });
            accesses.push(access);
        }
        Some((accesses, infos))
    }

    fn aggs(&mut self, aggs: &[ast::Agg], scope: &Scope) -> Option<(Vec<AggSpec>, Vec<ColInfo>)> {
        let mut specs = Vec::new();
        let mut infos = Vec::new();
        let mut ok = true;
        for agg in aggs {
            let arg = match &agg.arg {
                Some(o) => match self.operand(o, scope) {
                    Some(r) => Some(r),
                    None => {
                        ok = false;
                        continue;
                    }
                },
                None if agg.func == AggFunc::Count => None,
                None => {
                    self.err(
                        Code::Q204,
                        agg.span,
                        format!("`{}` needs a field", agg.func.name()),
                        "missing field",
                        Some(format!("write `{}(FIELD)`", agg.func.name())),
                    );
                    ok = false;
                    continue;
                }
            };
            let ty = match (agg.func, &arg) {
                (AggFunc::Count | AggFunc::Dcount, _) => Type::Int,
                (_, Some((_, ty))) => *ty,
                (_, None) => Type::Json,
            };
            infos.push(ColInfo { name: agg.name(), source: None, ty });
            specs.push(AggSpec { func: agg.func, arg: arg.map(|(a, _)| a) });
        }
        ok.then_some((specs, infos))
    }

    /// Reports the second and later uses of a column name.
    fn unique<'n>(&mut self, names: impl Iterator<Item = (&'n str, Span)>) -> Option<()> {
        let mut seen: Vec<&str> = Vec::new();
        let mut ok = true;
        for (name, span) in names {
            if seen.contains(&name) {
                self.err(
                    Code::Q109,
                    span,
                    format!("duplicate column `{name}`"),
                    "already a column",
                    Some("rename one with `as`".to_string()),
                );
                ok = false;
            }
            seen.push(name);
        }
        ok.then_some(())
    }
}

fn plural(ty: Type) -> &'static str {
    match ty {
        Type::Int => "integers",
        Type::Time => "times",
        Type::Str => "strings",
        Type::Enum(_) => "enumerations",
        Type::List => "lists",
        Type::Json => "JSON values",
        Type::Hour => "hours",
        Type::Weekday => "weekdays",
        Type::Date => "dates",
    }
}

fn long_weekday(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

/// The record-level value a new column holds, for later lookups by source.
fn source_of(access: &Access, scope: &Scope) -> Option<Access> {
    match scope {
        Scope::Record => Some(access.clone()),
        Scope::Columns(cols) => match access {
            Access::Col(i) => cols.get(*i).and_then(|c| c.source.clone()),
            _ => None,
        },
    }
}

enum PathError {
    Unknown,
    NoSubfields,
}

fn resolve_field(path: &[String]) -> Result<Field, PathError> {
    let (first, rest) = path.split_first().ok_or(PathError::Unknown)?;
    let field = Field::from_name(first).ok_or(PathError::Unknown)?;
    if rest.is_empty() {
        return Ok(field);
    }
    match field {
        Field::Params(mut p) => {
            p.extend(rest.iter().cloned());
            Ok(Field::Params(p))
        }
        Field::Details(mut p) => {
            p.extend(rest.iter().cloned());
            Ok(Field::Details(p))
        }
        _ => Err(PathError::NoSubfields),
    }
}

/// The record-level access an operand would have, if its names are fields (no errors).
fn record_access(o: &ast::Operand) -> Option<Access> {
    match &o.kind {
        OperandKind::Path(path) => resolve_field(path).ok().map(Access::Field),
        OperandKind::Func { func, arg, width, .. } => {
            let f = resolve_field(arg).ok()?;
            let kind = match func {
                Func::Hour => FuncKind::Hour,
                Func::Weekday => FuncKind::Weekday,
                Func::Date => FuncKind::Date,
                Func::Bin => FuncKind::Bin((*width)?),
            };
            Some(Access::Func(kind, Box::new(Access::Field(f))))
        }
    }
}
