//! Query values on the wire: conversions between `ledger_query::Value` and the protobuf
//! `ledger.v1.Value`, used by the daemon to send result rows and by clients to read them.
//! (The query crate knows nothing of protobuf and `proto` nothing of queries; this is
//! where the two meet, once for both directions.)

use std::borrow::Cow;

use ledger_proto::pb::{self, value::V};
use ledger_query::{OwnedValue, Row, Value};

/// A query value as sent on the wire.
pub fn to_wire(value: &Value<'_>) -> pb::Value {
    let v = match value {
        Value::Missing => V::Missing(true),
        Value::Bool(b) => V::Boolean(*b),
        Value::Int(n) => V::Int(*n),
        Value::Float(x) => V::Float(*x),
        Value::Str(s) => V::Text(s.to_string()),
        Value::Time(t) => V::Time(*t),
        Value::Weekday(d) => V::Weekday(u32::from(*d)),
        Value::List(items) => V::List(pb::ValueList { items: items.iter().map(to_wire).collect() }),
        Value::Json(s) => V::Json(s.to_string()),
    };
    pb::Value { v: Some(v) }
}

/// A wire value back as a query value. Anything unrecognised (a newer daemon) is missing.
pub fn from_wire(value: pb::Value) -> OwnedValue {
    match value.v {
        None | Some(V::Missing(_)) => Value::Missing,
        Some(V::Boolean(b)) => Value::Bool(b),
        Some(V::Int(n)) => Value::Int(n),
        Some(V::Float(x)) => Value::Float(x),
        Some(V::Text(s)) => Value::Str(Cow::Owned(s)),
        Some(V::Time(t)) => Value::Time(t),
        Some(V::Weekday(d)) => u8::try_from(d).ok().filter(|d| *d < 7).map_or(Value::Missing, Value::Weekday),
        Some(V::List(l)) => Value::List(l.items.into_iter().map(from_wire).collect()),
        Some(V::Json(s)) => Value::Json(Cow::Owned(s)),
    }
}

/// A result row for the wire.
pub fn row_to_wire(row: &Row) -> pb::Row {
    pb::Row { values: row.iter().map(to_wire).collect() }
}

/// A wire row back as a result row.
pub fn row_from_wire(row: pb::Row) -> Row {
    row.values.into_iter().map(from_wire).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value_round_trips() {
        let row: Row = vec![
            Value::Missing,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(2.5),
            Value::Str(Cow::Owned("x".into())),
            Value::Time(1_767_225_600_000_000_000),
            Value::Weekday(6),
            Value::List(vec![Value::Str(Cow::Owned("deny_burst".into())), Value::Int(1)]),
            Value::Json(Cow::Owned(r#"{"a":1}"#.into())),
        ];
        let back = row_from_wire(row_to_wire(&row));
        assert_eq!(format!("{back:?}"), format!("{row:?}"));
    }
}
