//! Pre-aggregated input: `Pipeline::push_weighted` and `Query::count_shape`, the two
//! pieces the daemon uses to answer counts from its hourly counters.
//!
//! - pushing a record with weight `n` gives exactly what pushing it `n` times does, for
//!   every kind of query (limits, sorts, aggregations, rows);
//! - when `count_shape` says a query qualifies, replacing the entries of each hour that
//!   agree on the shape's fields by one of them, weighted by their number, gives the same
//!   rows as feeding every entry.

mod common;

use std::collections::BTreeMap;

use common::Entry;
use ledger_query::{Context, Field, Query, Value, parse};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

const AGENTS: &[&str] = &["build-bot", "billing-bot", "ci-prod-7", ""];
const TOOLS: &[&str] = &["db.query", "fs.read_file", "shell.exec", ""];
const KINDS: &[&str] = &["decision", "outcome", "policy_changed", ""];
const DECISIONS: &[&str] = &["allow", "deny", ""];
const HOUR: i64 = 3_600_000_000_000;
const T0: i64 = 1_774_742_400_000_000_000; // 2026-03-29T00:00:00Z, the day Europe/Berlin moves to summer time

const COUNTED: &[Field] = &[Field::Kind, Field::Agent, Field::Tool, Field::Decision];

/// Entries over about three days with many per hour, so hours hold repeated values.
fn entries(rng: &mut Rng, n: usize) -> Vec<Entry> {
    let mut time = T0 - 12 * HOUR;
    (0..n)
        .map(|i| {
            time += (rng.next() % (HOUR as u64 / 4)) as i64;
            Entry {
                seq: i as u64,
                time,
                kind: rng.pick(KINDS),
                agent: rng.pick(AGENTS).to_string(),
                tool: rng.pick(TOOLS).to_string(),
                decision: rng.pick(DECISIONS),
                params: format!(r#"{{"n":{}}}"#, rng.below(5)),
                severity: rng.below(4) as u32,
                ..Entry::default()
            }
        })
        .collect()
}

fn day(rng: &mut Rng) -> String {
    let t = T0 + (rng.below(72) as i64 - 12) * HOUR + rng.below(3) as i64 * HOUR / 3;
    jiff::Timestamp::from_nanosecond(i128::from(t)).map(|t| t.to_string()).unwrap_or_default()
}

fn condition(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => format!("agent = {:?}", rng.pick(AGENTS)),
        1 => format!("tool in [{:?}, {:?}]", rng.pick(TOOLS), rng.pick(TOOLS)),
        2 => format!("decision != {}", rng.pick(&["allow", "deny"])),
        3 => format!("kind = {}", rng.pick(&["decision", "outcome"])),
        4 => format!("time >= {}", day(rng)),
        5 => format!("time < {}", day(rng)),
        6 => format!("(tool ~ \"fs.*\" or not agent = {:?})", rng.pick(AGENTS)),
        7 => format!("hour(time) < {}", rng.below(24)),
        8 => "weekday(time) in [sat, sun]".to_string(),
        // Not countable: a field without counts, time under `or`.
        9 => format!("params.n > {}", rng.below(5)),
        10 => format!("(time < {} or agent = \"ops\")", day(rng)),
        _ => format!("severity >= {}", rng.below(4)),
    }
}

fn random_query(rng: &mut Rng) -> String {
    let conds: Vec<String> = (0..rng.below(3)).map(|_| condition(rng)).collect();
    let period = match rng.below(4) {
        0 => format!("since {} ", day(rng)),
        1 => "during 2026-03-29 ".to_string(),
        _ => String::new(),
    };
    let key = |rng: &mut Rng| {
        rng.pick(&[
            "agent",
            "tool",
            "kind",
            "decision",
            "bin(time, 1h)",
            "bin(time, 3h)",
            "bin(time, 1d)",
            "bin(time, 30m)",
            "hour(time)",
            "date(time)",
            "weekday(time)",
            "severity",
        ])
    };
    let mut keys = vec![key(rng), key(rng)];
    // Two `bin`s would both be named `time`.
    if keys[0] == keys[1] || keys.iter().all(|k| k.starts_with("bin")) {
        keys.pop();
    }
    let by = keys.join(", ");
    let stage = match rng.below(8) {
        0 => format!(" | count by {by}"),
        1 => format!(" | count by {by} | where count > 3 | sort count desc | limit 4"),
        2 => format!(" | stats count(), count(tool) as with_tool by {}", keys[0]),
        3 if keys[0] == "tool" => " | top 2 tool by agent".to_string(),
        3 => format!(" | top 2 tool by {}", keys[0]),
        4 => " | count".to_string(),
        5 => format!(" | stats count(), dcount(tool) by {}", keys[0]),
        6 => format!(" | limit 50 | count by {by}"),
        _ => format!(" | count by {by} | count"),
    };
    format!("{period}{}{stage}", conds.join(" and "))
}

/// Random queries of every kind, for the `push_weighted` equivalence.
fn any_query(rng: &mut Rng) -> String {
    let cond = if rng.below(2) == 0 { condition(rng) } else { String::new() };
    let stage = rng.pick(&[
        "",
        " | limit 7",
        " | limit 0",
        " | fields seq, agent | limit 5",
        " | sort tool desc | limit 3",
        " | sort time",
        " | count by agent",
        " | stats count(), dcount(tool), min(seq), max(seq), first(seq), last(seq) by decision",
        " | top 2 tool by agent",
        " | count by agent | limit 2",
        " | limit 9 | count by tool",
        " | fields agent, tool | count by tool | sort count desc",
    ]);
    format!("{cond}{stage}")
}

fn parsed(text: &str) -> Query {
    parse(text).unwrap_or_else(|e| panic!("{}", e.render(text)))
}

fn ctx(zone: &str) -> Context {
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("zone {zone}: {e}"));
    Context::new(jiff::Timestamp::from_nanosecond(i128::from(T0 + 100 * HOUR)).expect("now"), tz)
}

#[test]
fn a_weighted_record_counts_as_that_many_records() {
    let mut rng = Rng(0x51ed_270b_9a3c_4e11);
    let data = entries(&mut rng, 300);
    let ctx = ctx("UTC");
    for _ in 0..400 {
        let text = any_query(&mut rng);
        let query = parsed(&text);
        let (mut weighted, mut repeated) = (query.pipeline(&ctx), query.pipeline(&ctx));
        for e in &data {
            let n = rng.below(4) as u64;
            weighted.push_weighted(e, n);
            for _ in 0..n {
                if repeated.is_done() {
                    break;
                }
                repeated.push(e);
            }
            assert_eq!(weighted.is_done(), repeated.is_done(), "query: {text}");
            if weighted.is_done() {
                break;
            }
        }
        assert_eq!(weighted.finish(), repeated.finish(), "query: {text}");
    }
}

/// The value of a counted field, as the key of a merged group.
fn counted_value(e: &Entry, f: &Field) -> String {
    match f {
        Field::Kind => e.kind.to_string(),
        Field::Agent => e.agent.clone(),
        Field::Tool => e.tool.clone(),
        Field::Decision => e.decision.to_string(),
        other => panic!("count_shape returned a field without counts: {other:?}"),
    }
}

/// Runs `query` with the entries of each whole hour inside its time range merged by the
/// shape's fields (one representative, weighted), the others fed one by one.
fn run_merged(
    query: &Query,
    fields: &[Field],
    calendar: bool,
    data: &[Entry],
    ctx: &Context,
) -> Vec<Vec<Value<'static>>> {
    let (lo, hi) = query.time_range(ctx).unwrap_or((i64::MIN, i64::MAX));
    let whole = |t: i64| {
        let start = t.div_euclid(HOUR) * HOUR;
        start >= lo && start.saturating_add(HOUR) <= hi
    };
    let mut pipeline = query.pipeline(ctx);
    let mut groups: BTreeMap<(Vec<String>, i64), (&Entry, u64)> = BTreeMap::new();
    for e in data {
        if whole(e.time) {
            let hour = if calendar { e.time.div_euclid(HOUR) } else { 0 };
            let key = (fields.iter().map(|f| counted_value(e, f)).collect(), hour);
            groups.entry(key).or_insert((e, 0)).1 += 1;
        } else {
            pipeline.push(e);
        }
    }
    // Largest groups first: the order must not matter.
    let mut merged: Vec<_> = groups.into_values().collect();
    merged.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (e, n) in merged {
        pipeline.push_weighted(e, n);
    }
    pipeline.finish().rows
}

#[test]
fn countable_queries_give_the_same_rows_from_merged_hours() {
    let mut rng = Rng(0x2f1e_88c3_07d4_ab19);
    let data = entries(&mut rng, 2000);
    let (mut countable, mut calendar) = (0, 0);
    for i in 0..600 {
        // Zones whose offset is whole hours (with DST changes at whole hours) qualify.
        let zone = ["UTC", "Europe/Berlin", "America/New_York"][i % 3];
        let ctx = ctx(zone);
        let text = random_query(&mut rng);
        let query = parsed(&text);
        let Some(shape) = query.count_shape(COUNTED) else { continue };
        countable += 1;
        calendar += usize::from(shape.calendar);
        let expected = query.run(data.iter(), &ctx).rows;
        let got = run_merged(&query, &shape.fields, shape.calendar, &data, &ctx);
        assert_eq!(got, expected, "query: {text}\nzone: {zone}\nshape: {shape:?}");
    }
    assert!(
        countable > 150 && calendar > 60,
        "the generator is off: {countable} countable, {calendar} by hour"
    );
}

#[test]
fn what_count_shape_accepts() {
    let shape = |text: &str| parsed(text).count_shape(COUNTED);
    let fields = |text: &str| shape(text).map(|s| (s.fields, s.calendar));
    use Field::{Agent, Decision, Kind, Tool};
    assert_eq!(fields("| count by agent, bin(time, 1h)"), Some((vec![Agent], true)));
    assert_eq!(fields("| count"), Some((vec![], false)));
    assert_eq!(fields("last 7d | count by tool"), Some((vec![Tool], false)));
    assert_eq!(
        fields(
            "during 2026-Q1 kind = decision and decision in [deny] | count by bin(time, 1d) | sort count desc"
        ),
        Some((vec![Kind, Decision], true))
    );
    assert_eq!(
        fields("agent != \"x\" and time >= 2026-01-01 | stats count() by tool"),
        Some((vec![Agent, Tool], false))
    );
    assert_eq!(
        fields("not (tool ~ \"fs.*\" or hour(time) < 6) | top 3 tool by agent"),
        Some((vec![Tool, Agent], true))
    );
    assert_eq!(
        fields("| where agent = \"a\" | count by weekday(time), date(time)"),
        Some((vec![Agent], true))
    );
    assert_eq!(fields("| stats count(agent) by bin(time, 2h)"), Some((vec![Agent], true)));
    for no in [
        "| count by bin(time, 30m)",
        "| count by bin(time, 90m)",
        "| count by severity",
        "| count by time",
        "params.n > 1 | count",
        "| stats count(), dcount(agent)",
        "| stats max(time)",
        "| limit 5 | count",
        "| sort time | count by agent",
        "| fields agent | count by agent",
        "(time < 2026-01-01 or agent = \"a\") | count",
        "not time < 2026-01-01 | count",
        "time != 2026-01-01 | count",
        "time in [2026-01-01, 2026-02-01] | count",
        "agent = \"a\"",
        "| top 3 params.path",
    ] {
        assert_eq!(shape(no), None, "{no}");
    }
}
