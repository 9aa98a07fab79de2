//! Regression tests for issue 13 ("the query language disagrees with itself"), one per item,
//! each named after it: globs and line breaks, one notion of JSON number equality and one
//! rendering, the documented behaviours (first/last, order across types, arrays under `~`,
//! empty JSON values), and `0s`.

mod common;

use common::Entry;
use ledger_query::{Code, Context, ResultSet, Value, parse, write_csv, write_json_lines, write_table};

fn ctx() -> Context {
    Context::utc("2026-06-15T12:00:00Z".parse().unwrap_or_else(|e| panic!("{e}")))
}

/// Entries `0..` in log order, one per params text (and reason), a second apart.
fn entries(params: &[&str]) -> Vec<Entry> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| Entry {
            seq: i as u64,
            time: common::ns("2026-03-01T00:00:00Z") + i as i64 * 1_000_000_000,
            kind: "decision",
            agent: format!("a{}", i % 2),
            params: (*p).to_string(),
            decision: "allow",
            ..Entry::default()
        })
        .collect()
}

fn run(query: &str, data: &[Entry]) -> ResultSet {
    let q = parse(query).unwrap_or_else(|e| panic!("{query}:\n{}", e.render(query)));
    q.run(data.iter(), &ctx())
}

/// The rows as text, cells joined by `|`, as the table/CSV writers format them.
fn cells(rs: &ResultSet) -> Vec<String> {
    let tz = jiff::tz::TimeZone::UTC;
    rs.rows
        .iter()
        .map(|r| r.iter().map(|v| ledger_query::format_value(v, &tz)).collect::<Vec<_>>().join("|"))
        .collect()
}

fn seqs(rs: &ResultSet) -> Vec<i64> {
    rs.rows
        .iter()
        .map(|r| match r.first() {
            Some(Value::Int(n)) => *n,
            other => panic!("not a seq: {other:?}"),
        })
        .collect()
}

fn writers(rs: &ResultSet) -> (String, String, String) {
    let tz = jiff::tz::TimeZone::UTC;
    let (mut table, mut csv, mut json) = (Vec::new(), Vec::new(), Vec::new());
    write_table(&mut table, rs, &tz).unwrap_or_else(|e| panic!("{e}"));
    write_csv(&mut csv, rs, &tz).unwrap_or_else(|e| panic!("{e}"));
    write_json_lines(&mut json, rs, &tz).unwrap_or_else(|e| panic!("{e}"));
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap_or_else(|e| panic!("{e}"));
    (text(table), text(csv), text(json))
}

#[test]
fn double_star_matches_newlines_so_not_tilde_finds_only_missing_fields() {
    let mut data = entries(&["", "", "", ""]);
    data[0].reason = "one line".into();
    data[1].reason = "first line\nsecond line".into();
    data[2].reason = "\n".into();
    // data[3] has no reason.
    assert_eq!(seqs(&run("not reason ~ \"**\" | fields seq", &data)), vec![3]);
    assert_eq!(seqs(&run("reason ~ \"**\" | fields seq", &data)), vec![0, 1, 2]);
    assert_eq!(seqs(&run("reason ~ \"first**line\" | fields seq", &data)), vec![1]);
    // The same inside JSON.
    let data = entries(&[r#"{"s":"a\nb"}"#, r#"{"s":"ab"}"#, "{}"]);
    assert_eq!(seqs(&run("not params.s ~ \"**\" | fields seq", &data)), vec![2]);
}

#[test]
fn json_numbers_30_and_30_0_are_one_value_for_eq_grouping_dcount_top_and_sort() {
    let data = entries(&[
        r#"{"t":30.0}"#,
        r#"{"t":7}"#,
        r#"{"t":30}"#,
        r#"{"t":3e1}"#,
        r#"{"t":"30"}"#,
        r#"{"t":30.5}"#,
        r#"{"t":30.0}"#,
    ]);
    assert_eq!(seqs(&run("params.t = 30 | fields seq", &data)), vec![0, 2, 3, 6]);
    assert_eq!(seqs(&run("params.t = 30.0 | fields seq", &data)), vec![0, 2, 3, 6]);
    assert_eq!(seqs(&run("params.t in [30] | fields seq", &data)), vec![0, 2, 3, 6]);
    assert_eq!(cells(&run("| count by params.t", &data)), vec!["7|1", "30|4", "30.5|1", "30|1"]);
    // The last group is the string "30": the table shows it as text, JSON as a string.
    let (_, _, json) = writers(&run("| count by params.t", &data));
    assert!(
        json.contains(r#"{"params.t":30,"count":4}"#) && json.contains(r#"{"params.t":"30","count":1}"#),
        "{json}"
    );
    assert_eq!(cells(&run("| stats dcount(params.t) as d", &data)), vec!["4"]);
    assert_eq!(cells(&run("| top 2 params.t", &data)), vec!["30|4", "7|1"]);
    // Stable: the four equal values keep log order.
    assert_eq!(seqs(&run("| sort params.t | fields seq", &data)), vec![1, 0, 2, 3, 6, 5, 4]);
    assert_eq!(seqs(&run("| sort params.t desc | fields seq", &data)), vec![4, 5, 0, 2, 3, 6, 1]);
    assert_eq!(seqs(&run("| sort params.t | limit 3 | fields seq", &data)), vec![1, 0, 2]);
    // Grouped by agent as well: the agents' 30s are one group each.
    assert_eq!(cells(&run("params.t = 30 | count by agent, params.t", &data)), vec!["a0|30|3", "a1|30|1"]);
    // Inside objects too.
    let objects = entries(&[r#"{"o":{"t":30.0}}"#, r#"{"o":{"t":30}}"#]);
    assert_eq!(cells(&run("| count by params.o", &objects)), vec![r#"{"t":30}|2"#]);
}

#[test]
fn json_numbers_have_one_rendering_in_table_csv_and_json() {
    let data =
        entries(&[r#"{"v":30.0}"#, r#"{"v":2.5}"#, r#"{"v":1e20}"#, r#"{"v":-0.0}"#, r#"{"v":1.5e-7}"#]);
    let rs = run("| fields params.v", &data);
    let (table, csv, json) = writers(&rs);
    let want = ["30", "2.5", "1e+20", "0", "1.5e-7"];
    let table: Vec<&str> = table.lines().skip(1).map(str::trim).collect();
    assert_eq!(table, want, "table");
    // CSV neutralises nothing here (no cell starts with - after -0.0 became 0).
    let csv: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(csv, want, "csv");
    let json: Vec<String> = json
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}"));
            v["params.v"].to_string()
        })
        .collect();
    assert_eq!(json, want, "json");
    // `top` on a field written both ways: one row per value, never `100` twice.
    let data = entries(&[r#"{"limit":100}"#, r#"{"limit":100.0}"#, r#"{"limit":5}"#]);
    let (table, _, _) = writers(&run("| top 2 params.limit", &data));
    assert_eq!(table.lines().filter(|l| l.trim_start().starts_with("100")).count(), 1, "{table}");
}

#[test]
fn large_json_integers_compare_exactly_not_through_floats() {
    // 2^53 + 1 is no f64; read as a float it would equal 2^53.
    let data = entries(&[r#"{"n":9007199254740993}"#, r#"{"n":9007199254740992}"#]);
    assert_eq!(seqs(&run("params.n = 9007199254740993 | fields seq", &data)), vec![0]);
    assert_eq!(cells(&run("| stats dcount(params.n) as d", &data)), vec!["2"]);
    assert!(Value::Int(9_007_199_254_740_993) > Value::Float(9_007_199_254_740_992.0));
    assert!(Value::Int(i64::MAX) < Value::Float(9_223_372_036_854_775_808.0));
    assert_eq!(Value::Int(30), Value::Float(30.0));
    assert_eq!(Value::number(30.0), Value::Int(30));
}

#[test]
fn first_and_last_skip_missing_values() {
    let data = entries(&[r#"{}"#, r#"{"r":"x"}"#, r#"{"r":"y"}"#, r#"{}"#]);
    assert_eq!(
        cells(&run("| stats first(params.r), last(params.r), count(params.r), count()", &data)),
        vec!["x|y|2|4"]
    );
}

#[test]
fn order_across_json_types_and_max_over_objects() {
    let data = entries(&[
        r#"{"v":{"a":1}}"#,
        r#"{"v":"s"}"#,
        r#"{"v":[1,2]}"#,
        r#"{"v":10}"#,
        r#"{"v":true}"#,
        r#"{}"#,
        r#"{"v":2.5}"#,
        r#"{"v":false}"#,
    ]);
    // missing < false < true < numbers < strings < arrays < objects.
    assert_eq!(seqs(&run("| sort params.v | fields seq", &data)), vec![5, 7, 4, 6, 3, 1, 2, 0]);
    assert_eq!(cells(&run("| stats min(params.v), max(params.v)", &data)), vec![r#"false|{"a":1}"#]);
    // …while the operators compare an object with nothing.
    assert!(run("params.v > 5 | fields seq", &data).rows.iter().all(|r| r[0] == Value::Int(3)));
    assert_eq!(seqs(&run("params.v != 10 | fields seq", &data)), vec![0, 1, 2, 4, 6, 7]);
}

#[test]
fn tilde_on_a_json_array_matches_any_element() {
    let data =
        entries(&[r#"{"p":["/etc/passwd","/tmp/x"]}"#, r#"{"p":["/tmp/y"]}"#, r#"{"p":"/etc/hosts"}"#]);
    assert_eq!(seqs(&run("params.p ~ \"/etc/*\" | fields seq", &data)), vec![0, 2]);
    assert_eq!(seqs(&run("params.p !~ \"/etc/*\" | fields seq", &data)), vec![1]);
    assert_eq!(seqs(&run("params.p has \"/tmp/y\" | fields seq", &data)), vec![1]);
}

#[test]
fn empty_string_array_and_object_inside_json_are_all_missing() {
    let data = entries(&[
        r#"{"x":""}"#,
        r#"{"x":[]}"#,
        r#"{"x":{}}"#,
        r#"{"x":null}"#,
        r#"{}"#,
        r#"{"x":0}"#,
        r#"{"x":{"y":{}}}"#,
        r#"{"x":[null]}"#,
    ]);
    assert_eq!(seqs(&run("not params.x ~ \"**\" | fields seq", &data)), vec![0, 1, 2, 3, 4]);
    assert_eq!(cells(&run("| stats count(params.x), dcount(params.x)", &data)), vec!["3|3"]);
    assert_eq!(cells(&run("| count by params.x", &data)), vec!["|5", "0|1", "[null]|1", r#"{"y":{}}|1"#]);
    assert_eq!(seqs(&run("not params.x.y ~ \"**\" | fields seq", &data)), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    // A present object matches `~ "**"` like any present value (patterns see its text).
    assert_eq!(seqs(&run("params.x ~ \"{*}\" | fields seq", &data)), vec![6]);
}

#[test]
fn enum_group_keys_sort_by_name() {
    let mut data = entries(&["", "", "", ""]);
    data[0].kind = "outcome";
    data[1].kind = "access_refused";
    data[2].kind = "decision";
    data[3].kind = "agent_registered";
    assert_eq!(
        cells(&run("| count by kind", &data)),
        vec!["access_refused|1", "agent_registered|1", "decision|1", "outcome|1"]
    );
    data[0].decision = "deny";
    assert_eq!(cells(&run("| count by decision", &data)), vec!["allow|3", "deny|1"]);
}

#[test]
fn zero_duration_allowed_by_the_grammar_is_accepted() {
    let data = entries(&["", ""]);
    for q in ["last 0s", "time > 0s ago", "time <= 0m ago | count", "since 0d ago"] {
        parse(q).unwrap_or_else(|e| panic!("{q}:\n{}", e.render(q)));
    }
    // `last 0s` is the instant `now`: nothing in this data.
    assert!(run("last 0s", &data).rows.is_empty());
    assert_eq!(cells(&run("time < 0s ago | count", &data)), vec!["2"]);
    // No bucket is 0 wide: refused, pointing at the width.
    let q = "| count by bin(time, 0s)";
    let err = parse(q).err().unwrap_or_else(|| panic!("{q} parsed"));
    let e = &err.errors()[0];
    assert_eq!((e.code, &q[e.start..e.end]), (Code::Q306, "0s"), "{}", err.render(q));
}

/// The same fix seen from a policy: before it, a command with a line break in front of
/// `rm -rf` (or pretty-printed params) slipped past a `**` deny rule.
#[test]
fn double_star_in_a_policy_deny_rule_sees_across_line_breaks() {
    use ledger_query::policy::{Call, Effect, Policy};
    let text = "rule no-rm: deny params.cmd ~ \"**rm -rf**\"\nrule no-sudo: deny params ~ \"**sudo**\"\ndefault allow\n";
    let p = Policy::parse(text).unwrap_or_else(|e| panic!("{}", e.render(text)));
    let decide = |params: &str| {
        let d = p.evaluate(&Call::new("shell.exec", params));
        (d.effect, d.rule_id.to_string())
    };
    assert_eq!(decide(r#"{"cmd":"echo hi\nrm -rf /"}"#), (Effect::Deny, "no-rm".to_string()));
    assert_eq!(decide(r#"{"cmd":"rm -rf /\n"}"#), (Effect::Deny, "no-rm".to_string()));
    assert_eq!(decide("{\n  \"cmd\": \"sudo ls\"\n}"), (Effect::Deny, "no-sudo".to_string()));
    assert_eq!(decide(r#"{"cmd":"ls\n-la"}"#), (Effect::Allow, "default".to_string()));
}
