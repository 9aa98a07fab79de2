//! Values that flow through a query: borrowed from a record while filtering, owned in rows.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use crate::field::WEEKDAYS;

/// One value of a field or column.
///
/// A record hands out `Value<'_>` borrowing its own strings (`Value::Str(Cow::Borrowed)`),
/// so filtering a stored entry allocates nothing for plain string fields. Rows that outlive
/// the record hold [`OwnedValue`]s.
///
/// An empty string and an empty list count as [`Value::Missing`]: protobuf cannot tell
/// "empty" from "not set", so neither can a query.
///
/// `Eq`, `Ord` and `Hash` give a total order used for sorting, grouping, `dcount`, `top`,
/// `min` and `max`: `Missing` < `Bool` < numbers < `Str` < `Time` < `Weekday` < `List` <
/// `Json`. Numbers are one type: `Int(30)` and `Float(30.0)` are equal (and hash alike), and
/// [`Value::number`] turns every integral float into an `Int`, so a number has one form and
/// one rendering. The query operators (`=`, `<`, …) use their own rules; see `docs/QUERY.md`.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// The field is absent (or empty) in this entry.
    Missing,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// Nanoseconds since the Unix epoch, UTC.
    Time(i64),
    /// `weekday(time)`: 0 is Monday, 6 is Sunday.
    Weekday(u8),
    /// A list (`flags`, or a JSON array).
    List(Vec<Value<'a>>),
    /// A JSON object (or nested array) reached through `params.…`, as compact JSON text.
    Json(Cow<'a, str>),
}

/// A value that owns its data.
pub type OwnedValue = Value<'static>;

impl<'a> Value<'a> {
    /// A borrowed string value (an empty one counts as missing).
    pub fn text(s: &'a str) -> Value<'a> {
        Value::Str(Cow::Borrowed(s))
    }

    /// A number in its one canonical form: an integral value that fits an `i64` is an
    /// `Int` (`30.0` and `3e1` become `Int(30)`), anything else a `Float`.
    pub fn number(x: f64) -> Value<'a> {
        match integral(x) {
            Some(n) => Value::Int(n),
            None => Value::Float(x),
        }
    }

    /// Copies borrowed data so the value can outlive its record.
    pub fn into_owned(self) -> OwnedValue {
        match self {
            Value::Missing => Value::Missing,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(n) => Value::Int(n),
            Value::Float(x) => Value::Float(x),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Time(t) => Value::Time(t),
            Value::Weekday(d) => Value::Weekday(d),
            Value::List(items) => Value::List(items.into_iter().map(Value::into_owned).collect()),
            Value::Json(s) => Value::Json(Cow::Owned(s.into_owned())),
        }
    }

    /// Whether the value counts as absent: `Missing`, an empty string, an empty list, or an
    /// empty JSON object or array (`{}`, `[]`): empty is missing wherever it comes from.
    #[inline]
    pub fn is_missing(&self) -> bool {
        match self {
            Value::Missing => true,
            Value::Str(s) => s.is_empty(),
            Value::Json(s) => matches!(s.as_ref(), "" | "{}" | "[]"),
            Value::List(items) => items.is_empty(),
            _ => false,
        }
    }

    /// The same value with "empty" turned into `Missing`, so that all absent values group
    /// and compare alike.
    #[inline]
    pub(crate) fn normalized(self) -> Value<'a> {
        if self.is_missing() { Value::Missing } else { self }
    }

    /// The text a pattern (`~`) is matched against: strings as they are, other values as
    /// they are shown (a JSON object as its compact text), so that `~ "**"` holds for
    /// every present value. `None` for lists (whose elements are matched) and times.
    pub(crate) fn match_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Str(s) | Value::Json(s) => Some(Cow::Borrowed(s.as_ref())),
            Value::Int(n) => Some(Cow::Owned(n.to_string())),
            Value::Float(x) => Some(Cow::Owned(float_text(*x))),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Value::Weekday(d) => WEEKDAYS.get(usize::from(*d)).map(|s| Cow::Borrowed(*s)),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Missing => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Str(_) => 3,
            Value::Time(_) => 4,
            Value::Weekday(_) => 5,
            Value::List(_) => 6,
            Value::Json(_) => 7,
        }
    }

    /// The comparison the query operators use: `None` when the two values cannot be
    /// compared (different types, or either is missing), which makes the comparison false.
    pub(crate) fn query_cmp(&self, other: &Value<'_>) -> Option<Ordering> {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Float(b)) => int_float_cmp(*a, *b),
            (Value::Float(a), Value::Int(b)) => int_float_cmp(*b, *a).map(Ordering::reverse),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Str(a), Value::Str(b)) => Some(a.as_ref().cmp(b.as_ref())),
            (Value::Time(a), Value::Time(b)) => Some(a.cmp(b)),
            (Value::Weekday(a), Value::Weekday(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

impl Ord for Value<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Missing, Value::Missing) => Ordering::Equal,
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            // Numbers compare by value, exactly (no rounding of large integers), so 30 and
            // 30.0 are one value; NaN, which no JSON holds, sorts after every number.
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b).unwrap_or_else(|| a.total_cmp(b)),
            (Value::Int(a), Value::Float(b)) => int_float_cmp(*a, *b).unwrap_or(Ordering::Less),
            (Value::Float(a), Value::Int(b)) => {
                int_float_cmp(*b, *a).map_or(Ordering::Greater, Ordering::reverse)
            }
            (Value::Str(a), Value::Str(b)) | (Value::Json(a), Value::Json(b)) => a.cmp(b),
            (Value::Time(a), Value::Time(b)) => a.cmp(b),
            (Value::Weekday(a), Value::Weekday(b)) => a.cmp(b),
            (Value::List(a), Value::List(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value<'_> {}

impl Hash for Value<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Numbers hash by value, as they compare: an integral float like an Int.
        self.rank().hash(state);
        match self {
            Value::Missing => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(n) => n.hash(state),
            Value::Float(x) => match integral(*x) {
                Some(n) => n.hash(state),
                // -0.0 is integral, so only one zero reaches here; NaN hashes alike.
                None => x.to_bits().hash(state),
            },
            Value::Str(s) | Value::Json(s) => s.hash(state),
            Value::Time(t) => t.hash(state),
            Value::Weekday(d) => d.hash(state),
            Value::List(items) => items.hash(state),
        }
    }
}

/// 2^63 as a float (exact): every float in `[-2^63, 2^63)` without a fraction is an `i64`.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// `x` as an `i64` when it is a whole number in range (`-0.0` is 0).
fn integral(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && (-I64_BOUND..I64_BOUND).contains(&x)).then_some(x as i64)
}

/// Compares an integer with a float exactly (`i64 as f64` rounds above 2^53); `None` for NaN.
fn int_float_cmp(a: i64, b: f64) -> Option<Ordering> {
    if b.is_nan() {
        return None;
    }
    if b >= I64_BOUND {
        return Some(Ordering::Less);
    }
    if b < -I64_BOUND {
        return Some(Ordering::Greater);
    }
    // In range: compare with the whole part exactly, then let the fraction decide.
    let whole = b.trunc();
    match a.cmp(&(whole as i64)) {
        Ordering::Equal => 0.0f64.partial_cmp(&(b - whole)),
        other => Some(other),
    }
}

/// How a float is written by every writer (table, CSV, JSON) and matched by `~`: the
/// shortest text that reads back as the same float, as JSON writes it (`2.5`, `1e+20`,
/// `1.5e-7`). Integral floats within `i64` never get here (see [`Value::number`]).
pub(crate) fn float_text(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string())
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<i64> for Value<'_> {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<u32> for Value<'_> {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<u64> for Value<'_> {
    /// Saturates at `i64::MAX`, which no sequence number or version reaches in practice.
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Missing, Into::into)
    }
}
