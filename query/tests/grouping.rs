//! Issue 17: `count`/`stats` find their groups through interned key ids and order them only
//! at the end. The rows must be exactly those of the map ordered by `Vec<Value>` keys they
//! replaced: here that map is rebuilt by hand from the same query's `fields` rows (the
//! values as the engine reads them) and compared, row by row, on random entries whose keys
//! mix every kind of value (numbers spelt several ways, strings, JSON objects and arrays,
//! lists, times, missing and empty values).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Entry, Rng};
use ledger_query::{Context, Value, parse};

/// JSON values for `params.a` and `params.b`: equal numbers spelt differently, strings that
/// look like numbers, objects, arrays, empty things and absent keys.
const JSON: &[&str] = &[
    "30",
    "30.0",
    "3e1",
    "-0",
    "0",
    "2.5",
    "1e20",
    "\"30\"",
    "\"x\"",
    "\"\"",
    "true",
    "false",
    "null",
    "{}",
    "[]",
    "{\"k\":1}",
    "[1,2]",
    "[\"a\"]",
    "\"agent-1\"",
];
const AGENTS: &[&str] = &["agent-1", "agent-2", "b", ""];
const TOOLS: &[&str] = &["db.query", "shell.exec", ""];
const FLAGS: &[&[&str]] = &[&[], &["deny_burst"], &["deny_burst", "first_use"], &["first_use"]];
const HOUR: i64 = 3_600_000_000_000;

fn entries(rng: &mut Rng, n: usize) -> Vec<Entry> {
    let mut time = 1_767_225_600_000_000_000i64;
    (0..n)
        .map(|i| {
            time += (rng.next() % (HOUR as u64 / 3)) as i64;
            let mut params = Vec::new();
            if rng.next() % 5 != 0 {
                params.push(format!("\"a\":{}", rng.pick(JSON)));
            }
            if rng.next() % 5 != 0 {
                params.push(format!("\"b\":{}", rng.pick(JSON)));
            }
            Entry {
                seq: i as u64,
                time,
                kind: "decision",
                agent: rng.pick(AGENTS).to_string(),
                tool: rng.pick(TOOLS).to_string(),
                decision: rng.pick(&["allow", "deny", ""]),
                params: format!("{{{}}}", params.join(",")),
                severity: (rng.next() % 4) as u32,
                flags: rng.pick(FLAGS).iter().map(|s| s.to_string()).collect(),
                ..Entry::default()
            }
        })
        .collect()
}

type Owned = Value<'static>;

fn normal(v: &Owned) -> Owned {
    if v.is_missing() { Value::Missing } else { v.clone() }
}

/// The aggregates the reference computes, by name.
#[derive(Clone, Copy)]
enum Agg {
    Count,
    CountOf,
    Dcount,
    Min,
    Max,
    First,
    Last,
}

/// Groups the `fields` rows (keys first, then one column per aggregate argument) in a
/// `BTreeMap` keyed by the key values, as the engine did before interning.
fn reference(rows: &[Vec<Owned>], nkeys: usize, aggs: &[Agg]) -> Vec<Vec<Owned>> {
    let mut groups: BTreeMap<Vec<Owned>, Vec<Vec<Owned>>> = BTreeMap::new();
    for row in rows {
        let key: Vec<Owned> = row[..nkeys].iter().map(normal).collect();
        groups.entry(key).or_default().push(row[nkeys..].to_vec());
    }
    if nkeys == 0 && groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    groups
        .into_iter()
        .map(|(mut key, members)| {
            for (i, agg) in aggs.iter().enumerate() {
                let mut present = members.iter().map(|m| &m[i]).filter(|v| !v.is_missing());
                key.push(match agg {
                    Agg::Count => Value::Int(members.len() as i64),
                    Agg::CountOf => Value::Int(present.count() as i64),
                    Agg::Dcount => Value::Int(present.cloned().collect::<BTreeSet<_>>().len() as i64),
                    Agg::Min => present.min().cloned().unwrap_or(Value::Missing),
                    Agg::Max => present.max().cloned().unwrap_or(Value::Missing),
                    Agg::First => present.clone().next().cloned().unwrap_or(Value::Missing),
                    Agg::Last => present.next_back().cloned().unwrap_or(Value::Missing),
                });
            }
            key
        })
        .collect()
}

#[test]
fn interned_grouping_gives_the_rows_of_a_map_ordered_by_key_values() {
    let ctx = Context::utc(jiff::Timestamp::from_second(1_800_000_000).expect("time"));
    let keys: &[&[&str]] = &[
        &[],
        &["params.a"],
        &["params.a", "params.b"],
        &["agent", "bin(time, 1h)"],
        &["flags", "params.b"],
        &["tool", "decision", "params.a", "hour(time)"],
        &["date(time)", "weekday(time)", "severity"],
    ];
    let aggs: &[(&str, &str, Agg)] = &[
        ("count()", "seq", Agg::Count),
        ("count(params.b)", "params.b", Agg::CountOf),
        ("dcount(params.a)", "params.a", Agg::Dcount),
        ("min(params.b)", "params.b", Agg::Min),
        ("max(params.a)", "params.a", Agg::Max),
        ("first(tool)", "tool", Agg::First),
        ("last(params.b)", "params.b", Agg::Last),
    ];
    let mut rng = Rng(0x17_6a0f_0001);
    for round in 0..12 {
        let data = entries(&mut rng, [0, 1, 40, 700][round % 4]);
        for key in keys {
            let by = if key.is_empty() { String::new() } else { format!(" by {}", key.join(", ")) };
            let args: Vec<&str> = aggs.iter().map(|a| a.1).collect();
            let mut cols: Vec<&str> = key.to_vec();
            cols.extend(&args);
            let named: Vec<String> = cols.iter().enumerate().map(|(i, c)| format!("{c} as c{i}")).collect();
            let fields = parse(&format!("| fields {}", named.join(", "))).expect("fields query");
            let rows = fields.run(data.iter(), &ctx).rows;
            let stats_text =
                format!("| stats {}{by}", aggs.iter().map(|a| a.0).collect::<Vec<_>>().join(", "));
            let stats = parse(&stats_text).expect("stats query").run(data.iter(), &ctx).rows;
            let kinds: Vec<Agg> = aggs.iter().map(|a| a.2).collect();
            assert_eq!(
                stats,
                reference(&rows, key.len(), &kinds),
                "{stats_text} over {} entries",
                data.len()
            );
            let count_text = format!("| count{by}");
            let counted = parse(&count_text).expect("count query").run(data.iter(), &ctx).rows;
            assert_eq!(
                counted,
                reference(&rows, key.len(), &[Agg::Count]),
                "{count_text} over {} entries",
                data.len()
            );
        }
    }
}
