//! Query values on the wire: conversions between `ledger_query::Value` and the protobuf
//! `ledger.v1.Value`, used by the daemon to send result rows and by clients to read them.
//! (The query crate knows nothing of protobuf and `proto` nothing of queries; this is
//! where the two meet, once for both directions.)

use std::borrow::Cow;

use crate::pb::{self, value::V};
use ledger_query::{Field, OwnedValue, Record, Row, Value};

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

/// A wire entry as the query language sees it, with the rules of the daemon's stored
/// entries (`ledgerd::projections::engine::View`): unset values are missing, `severity` 0 ("not
/// scored") too. So an entry shows the same in `watch`, alerts and query output.
pub struct EntryRecord<'a>(pub &'a pb::Entry);

impl Record for EntryRecord<'_> {
    fn get(&self, field: &Field) -> Value<'_> {
        let e = self.0;
        let nonzero = |n: u64| if n == 0 { Value::Missing } else { Value::from(n) };
        match field {
            Field::Seq => Value::from(e.seq),
            Field::Time => Value::Time(e.time_unix_nanos),
            Field::Kind => match e.kind {
                0 => Value::Missing,
                k => Value::text(pb::Kind::name_of(k)),
            },
            Field::Agent => Value::text(&e.agent),
            Field::AgentId => Value::text(&e.agent_id),
            Field::Session => Value::text(&e.session),
            Field::Action => Value::text(&e.action),
            Field::Tool => Value::text(&e.tool),
            Field::Params(_) => Value::text(&e.params),
            Field::Decision => Value::text(pb::Decision::name_of(e.decision)),
            Field::Rule => Value::text(&e.rule),
            Field::PolicyVersion => nonzero(e.policy_version),
            Field::Reason => Value::text(&e.reason),
            Field::WriterUid => Value::from(e.writer_uid),
            Field::WriterGid => Value::from(e.writer_gid),
            Field::WriterPid => Value::from(e.writer_pid),
            Field::Host => Value::text(&e.host),
            Field::Severity => nonzero(u64::from(e.severity)),
            Field::Flags => Value::List(e.flags.iter().map(|f| Value::text(f)).collect()),
            Field::PolicyCheck => Value::text(&e.policy_check),
            Field::ShimId => Value::text(&e.shim_id),
            Field::ShimSeq => nonzero(e.shim_seq),
            Field::RefSeq => e.ref_seq.map_or(Value::Missing, Value::from),
            Field::Details(_) => Value::text(&e.details),
        }
    }
}

/// Renders whole entries as a query without `fields` would: every field, in
/// [`ledger_query::DEFAULT_COLUMNS`] order, as a table row or a JSON line.
pub struct EntryRenderer {
    query: ledger_query::Query,
    ctx: ledger_query::Context,
}

impl Default for EntryRenderer {
    fn default() -> Self {
        EntryRenderer::new(jiff::tz::TimeZone::UTC)
    }
}

impl EntryRenderer {
    /// Times are shown in `tz`.
    pub fn new(tz: jiff::tz::TimeZone) -> EntryRenderer {
        // The empty query selects every entry and every field.
        let query = ledger_query::parse("").unwrap_or_else(|e| unreachable!("the empty query parses: {e:?}"));
        EntryRenderer { query, ctx: ledger_query::Context::new(jiff::Timestamp::now(), tz) }
    }

    /// The column names, as in query output.
    pub fn columns(&self) -> &[String] {
        self.query.columns()
    }

    /// The entry as one result row, in [`EntryRenderer::columns`] order.
    pub fn row(&self, entry: &pb::Entry) -> Row {
        let record = EntryRecord(entry);
        self.query.run([&record], &self.ctx).rows.into_iter().next().unwrap_or_default()
    }

    /// The entry as one JSON object on one line (ending in a newline), keys in column order.
    pub fn json_line(&self, entry: &pb::Entry) -> String {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = ledger_query::write_json_rows(&mut out, self.columns(), &[self.row(entry)], self.ctx.tz());
        String::from_utf8_lossy(&out).into_owned()
    }
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

    #[test]
    fn an_entry_renders_every_field_as_json() {
        let entry = pb::Entry {
            seq: 12,
            time_unix_nanos: 1_767_225_600_000_000_000,
            kind: pb::Kind::Decision as i32,
            agent: "ops-bot".into(),
            tool: "shell.exec".into(),
            params: r#"{"cmd":"ls"}"#.into(),
            decision: pb::Decision::Deny as i32,
            severity: 9,
            flags: vec!["deny_burst".into(), "first_use".into()],
            ..Default::default()
        };
        let r = EntryRenderer::default();
        assert_eq!(r.columns(), ledger_query::DEFAULT_COLUMNS);
        let line = r.json_line(&entry);
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["seq"], 12);
        assert_eq!(v["time"], "2026-01-01T00:00:00Z");
        assert_eq!(v["kind"], "decision");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["severity"], 9);
        assert_eq!(v["flags"], serde_json::json!(["deny_burst", "first_use"]));
        // As `ledgerctl query --format json` shows it: the JSON text.
        assert_eq!(v["params"], r#"{"cmd":"ls"}"#);
        assert_eq!(v["rule"], serde_json::Value::Null);
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(keys.len(), ledger_query::DEFAULT_COLUMNS.len());
    }
}
