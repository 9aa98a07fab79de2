//! The public API as the daemon and the CLI use it: streaming, early stop, hints, filters,
//! borrowed records, and thread safety.

mod common;

use ledger_query::{Context, Field, Query, Record, Value, parse, parse_condition};

fn ctx() -> Context {
    Context::utc("2026-06-15T12:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")))
}

fn query(text: &str) -> Query {
    parse(text).unwrap_or_else(|e| panic!("{}", e.render(text)))
}

/// A record that borrows everything, as the daemon's archived entry does.
struct Borrowed<'a> {
    time: i64,
    agent: &'a str,
    tool: &'a str,
    params: &'a str,
    flags: &'a [&'a str],
}

impl Record for Borrowed<'_> {
    fn get(&self, field: &Field) -> Value<'_> {
        match field {
            Field::Time => Value::Time(self.time),
            Field::Agent => Value::text(self.agent),
            Field::Tool => Value::text(self.tool),
            Field::Params(_) => Value::text(self.params),
            Field::Flags => Value::List(self.flags.iter().map(|f| Value::text(f)).collect()),
            _ => Value::Missing,
        }
    }
}

#[test]
fn limit_without_sort_stops_the_scan() {
    let data = common::dataset();
    let q = query("kind = decision | limit 2 | fields seq");
    let mut pipeline = q.pipeline(&ctx());
    let mut pushed = 0;
    for e in &data {
        if pipeline.is_done() {
            break;
        }
        pipeline.push(e);
        pushed += 1;
    }
    assert_eq!(pushed, 6, "stops right after the second decision (seq 5)");
    assert_eq!(pipeline.finish().rows, vec![vec![Value::Int(3)], vec![Value::Int(5)]]);
}

#[test]
fn sort_limit_and_aggregations_never_stop_early() {
    let data = common::dataset();
    for text in ["| sort time desc | limit 1", "| count", "| limit 3 | count", "| top 1 agent | limit 1"] {
        let q = query(text);
        let mut pipeline = q.pipeline(&ctx());
        for e in &data {
            pipeline.push(e);
        }
        let done = pipeline.is_done();
        // `limit 3 | count` may stop: three entries decide the count.
        assert_eq!(done, text == "| limit 3 | count", "{text}");
    }
    let q = query("| limit 0");
    assert!(q.pipeline(&ctx()).is_done());
}

#[test]
fn rows_stream_out_before_the_end() {
    let data = common::dataset();
    let q = query("decision = deny | fields seq");
    let mut pipeline = q.pipeline(&ctx());
    let mut streamed = Vec::new();
    for e in &data {
        pipeline.push(e);
        streamed.extend(pipeline.take_rows());
    }
    let rest = pipeline.finish();
    assert!(rest.rows.is_empty());
    assert_eq!(streamed.len(), 9);
    assert_eq!(rest.columns, vec!["seq"]);
}

#[test]
fn hints() {
    let c = ctx();
    let q =
        query(r#"during 2026-Q1 agent in ["b", "a"] and time >= 2026-02-01 | where agent != "c" | count"#);
    let lo = common::ns("2026-02-01T00:00:00Z");
    let hi = common::ns("2026-04-01T00:00:00Z");
    assert_eq!(q.time_range(&c), Some((lo, hi)));
    assert_eq!(q.agents(), Some(vec!["a".to_string(), "b".to_string()]));
    assert!(q.is_aggregation());
    assert_eq!(q.columns(), ["count"]);

    let q = query(r#"agent = "a" or agent = "b" | fields seq"#);
    assert_eq!(q.agents(), Some(vec!["a".to_string(), "b".to_string()]));
    assert_eq!(q.time_range(&c), None);
    assert!(!q.is_aggregation());

    // Conservative: `or` with something else, `not`, and filters after a limit give no hint.
    assert_eq!(query(r#"agent = "a" or tool = "x""#).agents(), None);
    assert_eq!(query(r#"not agent = "a""#).agents(), None);
    assert_eq!(query(r#"| limit 5 | where agent = "a""#).agents(), None);
    assert_eq!(query("| limit 5 | where time > now").time_range(&c), None);
    // `last` includes now.
    let now = c.now_ns();
    assert_eq!(query("last 1h").time_range(&c), Some((now - 3_600_000_000_000, now + 1)));
    // Contradictions give an empty range and an empty agent list.
    let q = query(r#"agent = "a" and agent = "b" and time < 2026-01-01 and time >= 2026-02-01"#);
    assert_eq!(q.agents(), Some(Vec::new()));
    let (lo, hi) = q.time_range(&c).unwrap_or_else(|| panic!("a range"));
    assert!(lo >= hi);
}

#[test]
fn conditions_for_policies_on_borrowed_records() {
    let c = ctx();
    let allow_select = parse_condition(r#"tool = "db.query" and params.sql ~ /(?i)^select /"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let invoices =
        parse_condition(r#"tool in ["fs.read_file", "fs.list"] and params.path ~ "/srv/invoices/**""#)
            .unwrap_or_else(|e| panic!("{e}"));
    let params = String::from(r#"{"sql":"SELECT * FROM t","path":"/srv/invoices/2026/a.pdf"}"#);
    let call =
        Borrowed { time: c.now_ns(), agent: "billing-bot", tool: "db.query", params: &params, flags: &[] };
    assert!(allow_select.matches(&call, &c));
    assert!(!invoices.matches(&call, &c));
    let read = Borrowed { tool: "fs.read_file", ..call };
    assert!(invoices.matches(&read, &c));
    assert!(!allow_select.matches(&read as &dyn Record, &c));

    let flagged =
        parse_condition(r#"flags has "deny_burst" and hour(time) < 13"#).unwrap_or_else(|e| panic!("{e}"));
    let burst = Borrowed { flags: &["deny_burst"], ..read };
    assert!(flagged.matches(&burst, &c));

    // A condition is an expression: no period, no stages.
    assert!(parse_condition("last 24h").is_err());
    assert!(parse_condition(r#"tool = "x" | count"#).is_err());
}

#[test]
fn query_filter_matches_what_the_pipeline_keeps() {
    let c = ctx();
    let data = common::dataset();
    let q = query(r#"during 2026-Q2 decision = deny | where severity >= 7 | fields seq"#);
    let filter = q.filter();
    let kept: Vec<Value> =
        data.iter().filter(|e| filter.matches(*e, &c)).map(|e| Value::from(e.seq)).collect();
    let rows = q.run(data.iter(), &c);
    assert_eq!(rows.rows.into_iter().flatten().collect::<Vec<_>>(), kept);
}

#[test]
fn named_rows() {
    let data = common::dataset();
    let rows = query("seq = 3 | fields seq, agent").run(data.iter(), &ctx());
    let named: Vec<Vec<(&str, &Value)>> = rows.named_rows().collect();
    assert_eq!(named, vec![vec![("seq", &Value::Int(3)), ("agent", &Value::from("build-bot"))]]);
}

#[test]
fn shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Query>();
    send_sync::<ledger_query::Pipeline>();
    send_sync::<ledger_query::Filter>();
    send_sync::<ledger_query::QueryErrors>();
    send_sync::<Context>();
}
