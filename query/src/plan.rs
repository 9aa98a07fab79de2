//! The checked form of a query: resolved references, typed constants, compiled patterns, and
//! the steps of the pipeline, lowered into what runs on live records and what runs on rows.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::ast::AggFunc;
use crate::field::Field;
use crate::pattern::Matcher;
use crate::time::{Context, Duration, Period, TimeLit};
use crate::value::{OwnedValue, Value};

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Access {
    /// A field of a live record.
    Field(Field),
    /// A column of a materialized row.
    Col(usize),
    /// A calendar function of a time.
    Func(FuncKind, Box<Access>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FuncKind {
    Hour,
    Weekday,
    Date,
    Bin(Duration),
}

/// A constant on the right of a comparison; times wait for a [`Context`].
#[derive(Debug, Clone)]
pub(crate) enum Const {
    Value(OwnedValue),
    Time(TimeLit),
    PeriodStart(Period),
    PeriodEnd(Period),
}

impl Const {
    pub(crate) fn resolve(&self, ctx: &Context) -> Cow<'_, OwnedValue> {
        match self {
            Const::Value(v) => Cow::Borrowed(v),
            Const::Time(t) => Cow::Owned(Value::Time(t.resolve(ctx))),
            Const::PeriodStart(p) => Cow::Owned(Value::Time(p.range(ctx.tz()).0)),
            Const::PeriodEnd(p) => Cow::Owned(Value::Time(p.range(ctx.tz()).1)),
        }
    }

    /// The same constant with times fixed for `ctx`, so a scan does not redo the work.
    fn resolved(&self, ctx: &Context) -> Const {
        Const::Value(self.resolve(ctx).into_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpKind {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A checked boolean expression.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Cmp { access: Access, op: CmpKind, value: Const },
    In { access: Access, values: Vec<Const>, negated: bool },
    Has { access: Access, value: Const },
    Match { access: Access, matcher: Matcher, negated: bool },
}

impl Cond {
    /// A copy with every time constant resolved against `ctx`.
    pub(crate) fn resolved(&self, ctx: &Context) -> Cond {
        match self {
            Cond::All(items) => Cond::All(items.iter().map(|c| c.resolved(ctx)).collect()),
            Cond::Any(items) => Cond::Any(items.iter().map(|c| c.resolved(ctx)).collect()),
            Cond::Not(c) => Cond::Not(Box::new(c.resolved(ctx))),
            Cond::Cmp { access, op, value } => {
                Cond::Cmp { access: access.clone(), op: *op, value: value.resolved(ctx) }
            }
            Cond::In { access, values, negated } => Cond::In {
                access: access.clone(),
                values: values.iter().map(|v| v.resolved(ctx)).collect(),
                negated: *negated,
            },
            Cond::Has { access, value } => Cond::Has { access: access.clone(), value: value.resolved(ctx) },
            Cond::Match { .. } => self.clone(),
        }
    }

    /// Heap bytes of the compiled patterns in this condition.
    pub(crate) fn pattern_bytes(&self) -> usize {
        match self {
            Cond::All(items) | Cond::Any(items) => items.iter().map(Cond::pattern_bytes).sum(),
            Cond::Not(c) => c.pattern_bytes(),
            Cond::Match { matcher, .. } => matcher.memory_usage(),
            Cond::Cmp { .. } | Cond::In { .. } | Cond::Has { .. } => 0,
        }
    }

    fn accesses<'c>(&'c self, out: &mut Vec<&'c Access>) {
        match self {
            Cond::All(items) | Cond::Any(items) => items.iter().for_each(|c| c.accesses(out)),
            Cond::Not(c) => c.accesses(out),
            Cond::Cmp { access, .. }
            | Cond::In { access, .. }
            | Cond::Has { access, .. }
            | Cond::Match { access, .. } => out.push(access),
        }
    }

    fn map_accesses(&mut self, f: &impl Fn(&mut Access)) {
        match self {
            Cond::All(items) | Cond::Any(items) => items.iter_mut().for_each(|c| c.map_accesses(f)),
            Cond::Not(c) => c.map_accesses(f),
            Cond::Cmp { access, .. }
            | Cond::In { access, .. }
            | Cond::Has { access, .. }
            | Cond::Match { access, .. } => f(access),
        }
    }
}

/// One aggregate: the function and what it reads.
#[derive(Debug, Clone)]
pub(crate) struct AggSpec {
    pub(crate) func: AggFunc,
    pub(crate) arg: Option<Access>,
}

/// A pipeline step, after checking.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Filter(Cond),
    Limit(u64),
    /// Keys with `true` for descending.
    Sort(Vec<(Access, bool)>),
    /// Computes a new row: `fields`, or the default columns.
    Map(Vec<Access>),
    Aggregate {
        keys: Vec<Access>,
        aggs: Vec<AggSpec>,
    },
    Top {
        n: u64,
        keys: Vec<Access>,
        value: Access,
    },
}

impl Step {
    fn accesses<'s>(&'s self, out: &mut Vec<&'s Access>) {
        match self {
            Step::Filter(c) => c.accesses(out),
            Step::Limit(_) => {}
            Step::Sort(keys) => out.extend(keys.iter().map(|(a, _)| a)),
            Step::Map(items) => out.extend(items.iter()),
            Step::Aggregate { keys, aggs } => {
                out.extend(keys.iter());
                out.extend(aggs.iter().filter_map(|a| a.arg.as_ref()));
            }
            Step::Top { keys, value, .. } => {
                out.extend(keys.iter());
                out.push(value);
            }
        }
    }

    fn map_accesses(&mut self, f: &impl Fn(&mut Access)) {
        match self {
            Step::Filter(c) => c.map_accesses(f),
            Step::Limit(_) => {}
            Step::Sort(keys) => keys.iter_mut().for_each(|(a, _)| f(a)),
            Step::Map(items) => items.iter_mut().for_each(f),
            Step::Aggregate { keys, aggs } => {
                keys.iter_mut().for_each(f);
                aggs.iter_mut().filter_map(|a| a.arg.as_mut()).for_each(f);
            }
            Step::Top { keys, value, .. } => {
                keys.iter_mut().for_each(f);
                f(value);
            }
        }
    }

    /// Whether the step ends the record phase (after it, values live in rows).
    fn ends_record_phase(&self) -> bool {
        matches!(self, Step::Map(_) | Step::Aggregate { .. } | Step::Top { .. })
    }

    pub(crate) fn resolved(&self, ctx: &Context) -> Step {
        match self {
            Step::Filter(c) => Step::Filter(c.resolved(ctx)),
            other => other.clone(),
        }
    }
}

/// The steps split by where they run.
///
/// `live` steps (filters and limits) see each record as the scan hands it over; `entry`
/// turns the record into a row (a `Map`) or feeds it to an aggregation; `rows` steps work
/// on rows. A `sort` before the record phase ends makes `entry` capture every field that
/// later steps read, so that sorting holds rows, never records.
#[derive(Debug, Clone)]
pub(crate) struct Lowered {
    pub(crate) live: Vec<Step>,
    pub(crate) entry: Step,
    pub(crate) rows: Vec<Step>,
}

/// Splits checked steps (which always contain a step that ends the record phase).
pub(crate) fn lower(steps: Vec<Step>) -> Lowered {
    let end = steps.iter().position(Step::ends_record_phase).unwrap_or(steps.len());
    let first_sort = steps[..end].iter().position(|s| matches!(s, Step::Sort(_)));
    let mut steps = steps;
    match first_sort {
        None => {
            let mut rows = steps.split_off(end);
            let entry = if rows.is_empty() { Step::Map(Vec::new()) } else { rows.remove(0) };
            Lowered { live: steps, entry, rows }
        }
        Some(k) => {
            let mut rows = steps.split_off(k);
            let live = steps;
            let scope_len = end - k + 1;
            // Every record field that the rest of the record phase reads, in first-use order.
            let mut capture: Vec<Field> = Vec::new();
            let mut found = Vec::new();
            for step in rows.iter().take(scope_len) {
                step.accesses(&mut found);
            }
            for a in found {
                collect_fields(a, &mut capture);
            }
            let to_col = |a: &mut Access| rewrite(a, &capture);
            for step in rows.iter_mut().take(scope_len) {
                step.map_accesses(&to_col);
            }
            let entry = Step::Map(capture.iter().cloned().map(Access::Field).collect());
            Lowered { live, entry, rows }
        }
    }
}

fn collect_fields(a: &Access, out: &mut Vec<Field>) {
    match a {
        Access::Field(f) => {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
        Access::Col(_) => {}
        Access::Func(_, inner) => collect_fields(inner, out),
    }
}

fn rewrite(a: &mut Access, capture: &[Field]) {
    match a {
        Access::Field(f) => {
            if let Some(i) = capture.iter().position(|c| c == f) {
                *a = Access::Col(i);
            }
        }
        Access::Col(_) => {}
        Access::Func(_, inner) => rewrite(inner, capture),
    }
}

/// The time range `[lo, hi)` a condition confines `time` to, if it does.
pub(crate) fn time_range(c: &Cond, ctx: &Context) -> Option<(i64, i64)> {
    let time_value = |v: &Const| match v.resolve(ctx).as_ref() {
        Value::Time(t) => Some(*t),
        _ => None,
    };
    match c {
        Cond::All(items) => {
            items.iter().filter_map(|c| time_range(c, ctx)).reduce(|a, b| (a.0.max(b.0), a.1.min(b.1)))
        }
        Cond::Any(items) => {
            let ranges: Option<Vec<_>> = items.iter().map(|c| time_range(c, ctx)).collect();
            ranges?.into_iter().reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
        }
        Cond::Cmp { access: Access::Field(Field::Time), op, value } => {
            let t = time_value(value)?;
            match op {
                CmpKind::Eq => Some((t, t.saturating_add(1))),
                CmpKind::Ge => Some((t, i64::MAX)),
                CmpKind::Gt => Some((t.saturating_add(1), i64::MAX)),
                CmpKind::Lt => Some((i64::MIN, t)),
                CmpKind::Le => Some((i64::MIN, t.saturating_add(1))),
                CmpKind::Ne => None,
            }
        }
        Cond::In { access: Access::Field(Field::Time), values, negated: false } => {
            let times: Option<Vec<i64>> = values.iter().map(time_value).collect();
            let times = times?;
            Some((*times.iter().min()?, times.iter().max()?.saturating_add(1)))
        }
        _ => None,
    }
}

/// The agents a condition confines `agent` to, if it does.
pub(crate) fn agents(c: &Cond) -> Option<BTreeSet<String>> {
    let text = |v: &Const| match v {
        Const::Value(Value::Str(s)) => Some(s.to_string()),
        _ => None,
    };
    match c {
        Cond::All(items) => {
            items.iter().filter_map(agents).reduce(|a, b| a.intersection(&b).cloned().collect())
        }
        Cond::Any(items) => {
            let sets: Option<Vec<_>> = items.iter().map(agents).collect();
            sets?.into_iter().reduce(|mut a, b| {
                a.extend(b);
                a
            })
        }
        Cond::Cmp { access: Access::Field(Field::Agent), op: CmpKind::Eq, value } => {
            Some(BTreeSet::from([text(value)?]))
        }
        Cond::In { access: Access::Field(Field::Agent), values, negated: false } => {
            values.iter().map(text).collect()
        }
        _ => None,
    }
}

/// What [`crate::Query::count_shape`] finds while walking a query.
pub(crate) struct ShapeScan<'a> {
    /// The entry fields that counts are kept for.
    allowed: &'a [Field],
    pub(crate) fields: Vec<Field>,
    pub(crate) calendar: bool,
}

/// One hour in nanoseconds.
const HOUR_NS: i64 = 3_600_000_000_000;

impl<'a> ShapeScan<'a> {
    pub(crate) fn new(allowed: &'a [Field]) -> ShapeScan<'a> {
        ShapeScan { allowed, fields: Vec::new(), calendar: false }
    }

    /// Whether `a` has one value for all entries that agree on the allowed fields and lie
    /// in the same hour (in a zone whose offset is whole hours and steady over that hour).
    pub(crate) fn access(&mut self, a: &Access) -> bool {
        match a {
            Access::Field(Field::Time) => false,
            Access::Field(f) if self.allowed.contains(f) => {
                if !self.fields.contains(f) {
                    self.fields.push(f.clone());
                }
                true
            }
            Access::Func(kind, inner) if **inner == Access::Field(Field::Time) => {
                let steady = match kind {
                    FuncKind::Hour | FuncKind::Weekday | FuncKind::Date => true,
                    FuncKind::Bin(width) => width.ns % HOUR_NS == 0,
                };
                self.calendar |= steady;
                steady
            }
            _ => false,
        }
    }

    /// Whether a condition reads only what [`ShapeScan::access`] allows, except for
    /// comparisons of `time` itself, which may only be `and`-ed at the top (`top`), where
    /// [`time_range`] covers them exactly.
    pub(crate) fn cond(&mut self, c: &Cond, top: bool) -> bool {
        match c {
            Cond::All(items) => items.iter().all(|c| self.cond(c, top)),
            Cond::Any(items) => items.iter().all(|c| self.cond(c, false)),
            Cond::Not(c) => self.cond(c, false),
            Cond::Cmp { access: Access::Field(Field::Time), op, value } => {
                let is_time = matches!(
                    value,
                    Const::Time(_)
                        | Const::PeriodStart(_)
                        | Const::PeriodEnd(_)
                        | Const::Value(Value::Time(_))
                );
                top && is_time && *op != CmpKind::Ne
            }
            Cond::Cmp { access, .. }
            | Cond::In { access, .. }
            | Cond::Has { access, .. }
            | Cond::Match { access, .. } => self.access(access),
        }
    }
}
