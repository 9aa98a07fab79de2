//! Evaluation: reading values from records and rows, and deciding conditions.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;

use crate::field::Field;
use crate::plan::{Access, CmpKind, Cond, FuncKind};
use crate::record::Record;
use crate::time::{self, Context};
use crate::value::{OwnedValue, Value};

/// Something values can be read from: a live record or a materialized row.
pub(crate) trait Source {
    fn field(&self, f: &Field) -> Value<'_>;
    fn col(&self, i: usize) -> Option<&OwnedValue>;
}

/// A record during one evaluation, with its JSON parsed lazily, at most once.
pub(crate) struct View<'r, R: Record + ?Sized> {
    rec: &'r R,
    params: OnceCell<Option<serde_json::Value>>,
    details: OnceCell<Option<serde_json::Value>>,
}

impl<'r, R: Record + ?Sized> View<'r, R> {
    pub(crate) fn new(rec: &'r R) -> View<'r, R> {
        View { rec, params: OnceCell::new(), details: OnceCell::new() }
    }

    fn parsed<'s>(
        &'s self,
        cell: &'s OnceCell<Option<serde_json::Value>>,
        whole: &Field,
    ) -> Option<&'s serde_json::Value> {
        cell.get_or_init(|| match self.rec.get(whole) {
            Value::Str(text) => serde_json::from_str(&text).ok(),
            _ => None,
        })
        .as_ref()
    }
}

impl<R: Record + ?Sized> Source for View<'_, R> {
    fn field(&self, f: &Field) -> Value<'_> {
        match f {
            Field::Params(path) if !path.is_empty() => {
                json_path(self.parsed(&self.params, &Field::Params(Vec::new())), path)
            }
            Field::Details(path) if !path.is_empty() => {
                json_path(self.parsed(&self.details, &Field::Details(Vec::new())), path)
            }
            _ => self.rec.get(f).normalized(),
        }
    }

    fn col(&self, _: usize) -> Option<&OwnedValue> {
        None
    }
}

/// A materialized row.
pub(crate) struct RowSource<'a>(pub(crate) &'a [OwnedValue]);

impl Source for RowSource<'_> {
    fn field(&self, _: &Field) -> Value<'_> {
        Value::Missing
    }

    fn col(&self, i: usize) -> Option<&OwnedValue> {
        self.0.get(i)
    }
}

/// Walks `path` into parsed JSON: object keys by name, array elements by index.
fn json_path<'j>(root: Option<&'j serde_json::Value>, path: &[String]) -> Value<'j> {
    let mut cur = match root {
        Some(v) => v,
        None => return Value::Missing,
    };
    for key in path {
        let next = match cur {
            serde_json::Value::Object(map) => map.get(key.as_str()),
            serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Value::Missing,
        }
    }
    json_value(cur, true).normalized()
}

/// A JSON value as a query value; `null` is missing (but an array's null element is the
/// JSON text `null`). Numbers take their one canonical form
/// (`30.0` is `30`, see [`Value::number`]). Nested containers become JSON text, with their
/// numbers in that same form, so `{"t":30}` and `{"t":30.0}` are one value.
fn json_value(v: &serde_json::Value, top: bool) -> Value<'_> {
    match v {
        // A null element of an array is a present element (`[null]` is not empty).
        serde_json::Value::Null if !top => Value::Json(Cow::Borrowed("null")),
        serde_json::Value::Null => Value::Missing,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => json_number(n),
        serde_json::Value::String(s) => Value::Str(Cow::Borrowed(s)),
        serde_json::Value::Array(items) if top => {
            Value::List(items.iter().map(|i| json_value(i, false)).collect())
        }
        other => Value::Json(Cow::Owned(canonical(other).to_string())),
    }
}

fn json_number(n: &serde_json::Number) -> Value<'static> {
    match n.as_i64() {
        Some(i) => Value::Int(i),
        None => n.as_f64().map_or(Value::Missing, Value::number),
    }
}

/// A copy of `v` with every number in canonical form (integral floats as integers).
fn canonical(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => match json_number(n) {
            Value::Int(i) => serde_json::Value::from(i),
            _ => v.clone(),
        },
        serde_json::Value::Array(items) => items.iter().map(canonical).collect(),
        serde_json::Value::Object(map) => {
            map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect::<serde_json::Map<_, _>>().into()
        }
        other => other.clone(),
    }
}

/// The value `access` reads from `s`.
pub(crate) fn read<'s, S: Source + ?Sized>(s: &'s S, access: &Access, ctx: &Context) -> Cow<'s, Value<'s>> {
    match access {
        Access::Field(f) => Cow::Owned(s.field(f)),
        Access::Col(i) => match s.col(*i) {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(Value::Missing),
        },
        Access::Func(kind, inner) => {
            let Value::Time(ns) = *read(s, inner, ctx) else {
                return Cow::Owned(Value::Missing);
            };
            let tz = ctx.tz();
            Cow::Owned(match kind {
                FuncKind::Hour => Value::Int(time::hour(ns, tz)),
                FuncKind::Weekday => Value::Weekday(time::weekday(ns, tz)),
                FuncKind::Date => Value::Str(Cow::Owned(time::date(ns, tz))),
                FuncKind::Bin(width) => Value::Time(time::bin(ns, *width, tz)),
            })
        }
    }
}

/// Whether `s` satisfies `c`.
///
/// A comparison with a missing value is false, whatever the operator (`!=`, `not in` and
/// `!~` included); `not` inverts the result.
pub(crate) fn eval<S: Source + ?Sized>(c: &Cond, s: &S, ctx: &Context) -> bool {
    match c {
        Cond::All(items) => items.iter().all(|c| eval(c, s, ctx)),
        Cond::Any(items) => items.iter().any(|c| eval(c, s, ctx)),
        Cond::Not(inner) => !eval(inner, s, ctx),
        Cond::Cmp { access, op, value } => {
            let v = read(s, access, ctx);
            if v.is_missing() {
                return false;
            }
            let ord = v.query_cmp(&value.resolve(ctx));
            match op {
                CmpKind::Eq => ord == Some(Ordering::Equal),
                // Present and not equal, including a value of another type.
                CmpKind::Ne => ord != Some(Ordering::Equal),
                CmpKind::Lt => ord == Some(Ordering::Less),
                CmpKind::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                CmpKind::Gt => ord == Some(Ordering::Greater),
                CmpKind::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
            }
        }
        Cond::In { access, values, negated } => {
            let v = read(s, access, ctx);
            if v.is_missing() {
                return false;
            }
            let found = values.iter().any(|k| v.query_cmp(&k.resolve(ctx)) == Some(Ordering::Equal));
            found != *negated
        }
        Cond::Has { access, value } => match read(s, access, ctx).as_ref() {
            Value::List(items) => {
                let k = value.resolve(ctx);
                items.iter().any(|i| i.query_cmp(&k) == Some(Ordering::Equal))
            }
            _ => false,
        },
        Cond::Match { access, matcher, negated } => {
            let v = read(s, access, ctx);
            if v.is_missing() {
                return false;
            }
            let matched = match v.as_ref() {
                Value::List(items) => {
                    items.iter().any(|i| i.match_text().is_some_and(|t| matcher.is_match(&t)))
                }
                other => other.match_text().is_some_and(|t| matcher.is_match(&t)),
            };
            matched != *negated
        }
    }
}
