//! Differential test of query execution over storage: random entries with synthetic
//! times are appended through the log, random queries run through `engine::run` (which
//! plans with the time binary search and the agent index) and through the query crate's
//! straightforward evaluation over a `Vec` of the same entries. The rows must be equal.

use ledger_proto::note::NoteSigner;
use ledger_proto::pb;
use std::collections::BTreeMap;

use ledger_query::{Context, Field, Record, Row, Value};
use ledgerd::log::merkle::Log;
use ledgerd::projections::{counters, engine};
use ledgerd::storage::store::Store;

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const AGENTS: &[&str] = &["billing-bot", "ops-bot", "ci-7", "ci-8", "support", "analyst"];
const TOOLS: &[&str] = &["db.query", "fs.read_file", "fs.write_file", "shell.exec", "http.get", "mail.send"];
const DAY: i64 = 86_400_000_000_000;
const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

/// The reference side: a plain entry held in memory.
struct Plain(pb::Entry);

impl Record for Plain {
    fn get(&self, field: &Field) -> Value<'_> {
        let e = &self.0;
        // An empty string counts as missing in the query crate, as it does in the daemon.
        let text = Value::text;
        match field {
            Field::Seq => Value::from(e.seq),
            Field::Time => Value::Time(e.time_unix_nanos),
            Field::Kind => Value::text(pb::Kind::name_of(e.kind)),
            Field::Agent => text(&e.agent),
            Field::Tool => text(&e.tool),
            Field::Params(_) => text(&e.params),
            Field::Decision => text(pb::Decision::name_of(e.decision)),
            Field::Rule => text(&e.rule),
            Field::Session => text(&e.session),
            Field::PolicyVersion => {
                if e.policy_version == 0 {
                    Value::Missing
                } else {
                    Value::from(e.policy_version)
                }
            }
            Field::Reason => text(&e.reason),
            Field::WriterUid => Value::from(e.writer_uid),
            Field::WriterGid => Value::from(e.writer_gid),
            Field::WriterPid => Value::from(e.writer_pid),
            Field::Host => text(&e.host),
            Field::Flags => Value::List(e.flags.iter().map(|f| Value::text(f)).collect()),
            Field::AgentId => text(&e.agent_id),
            Field::Action => text(&e.action),
            Field::PolicyCheck => text(&e.policy_check),
            Field::ShimId => text(&e.shim_id),
            Field::Details(_) => text(&e.details),
            Field::Severity | Field::ShimSeq | Field::RefSeq => Value::Missing,
        }
    }
}

fn random_query(rng: &mut Rng) -> String {
    let day = |rng: &mut Rng| {
        jiff::Timestamp::from_nanosecond(i128::from(T0 + rng.below(30) as i64 * DAY))
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let mut conds = Vec::new();
    for _ in 0..=rng.below(3) {
        let c = match rng.below(9) {
            0 => format!("agent = {:?}", rng.pick(AGENTS)),
            1 => format!("agent in [{:?}, {:?}]", rng.pick(AGENTS), rng.pick(AGENTS)),
            2 => format!("time >= {}", day(rng)),
            3 => format!("time < {}", day(rng)),
            4 => format!("decision = {}", rng.pick(&["allow", "deny"])),
            5 => format!("tool ~ {:?}", rng.pick(&["fs.*", "*.exec", "db.query", "*"])),
            6 => format!("params.n > {}", rng.below(100)),
            7 => format!("(agent = {:?} or tool = {:?})", rng.pick(AGENTS), rng.pick(TOOLS)),
            _ => format!("not agent = {:?}", rng.pick(AGENTS)),
        };
        conds.push(c);
    }
    let period = match rng.below(4) {
        0 => format!("since {} ", day(rng)),
        1 => format!("during 2026-01-{:02} ", 1 + rng.below(28)),
        _ => String::new(),
    };
    let stage = match rng.below(6) {
        0 => " | limit 7".to_string(),
        1 => " | sort time desc | limit 5".to_string(),
        2 => " | count by agent".to_string(),
        3 => " | count by agent, bin(time, 1d)".to_string(),
        4 => " | fields seq, agent, tool, params.n".to_string(),
        _ => String::new(),
    };
    format!("{period}{}{stage}", conds.join(" and "))
}

/// A log of `commits` commits of random decisions (up to `batch` each) with times hours
/// apart; its dir, store, size and the time after its last entry.
fn random_log(rng: &mut Rng, commits: usize, batch: u64) -> (tempfile::TempDir, Store, u64, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 16 << 20).expect("store");
    let signer = NoteSigner::generate("test/engine").expect("key");
    let (mut log, _) = Log::open(store.clone(), signer).expect("log");
    let mut now = T0;
    for _ in 0..commits {
        let batch: Vec<pb::Entry> = (0..1 + rng.below(batch))
            .map(|_| pb::Entry {
                kind: pb::Kind::Decision as i32,
                agent: rng.pick(AGENTS).into(),
                tool: rng.pick(TOOLS).into(),
                decision: if rng.below(5) == 0 { pb::Decision::Deny } else { pb::Decision::Allow } as i32,
                params: format!(r#"{{"n":{},"path":"/srv/{}"}}"#, rng.below(100), rng.below(9)),
                ..Default::default()
            })
            .collect();
        log.append(vec![batch], now).expect("append");
        now += rng.below(DAY as u64 / 4) as i64;
    }
    let size = log.size();
    (dir, store, size, now)
}

#[test]
fn engine_over_storage_agrees_with_evaluation_over_a_vec() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (_dir, store, size, now) = random_log(&mut rng, 120, 40);
    let all: Vec<Plain> = (0..size).map(|s| Plain(store.entry(s).expect("read").expect("entry"))).collect();
    let ctx = Context::utc(jiff::Timestamp::from_nanosecond(i128::from(now)).expect("now"));

    let mut checked = 0;
    for _ in 0..400 {
        let text = random_query(&mut rng);
        let query = ledger_query::parse(&text).unwrap_or_else(|e| panic!("{}", e.render(&text)));
        let mut got: Vec<Row> = Vec::new();
        let stats = engine::run(&store, size, &query, &ctx, &mut |rows| {
            got.extend(rows);
            true
        })
        .expect("run");
        let expected = query.run(all.iter(), &ctx).rows;
        assert_eq!(format!("{got:?}"), format!("{expected:?}"), "query: {text}\nplan: {stats:?}");
        checked += usize::from(!expected.is_empty());
    }
    assert!(checked > 100, "too few queries had any rows ({checked}); the generator is off");
}

/// Issue 17: a range cut into parts scanned by helper threads (which hand over only the
/// records passing the query's leading filters), or the entries of an agent filter read by
/// a helper thread through the agent index, give what one thread reading them in order
/// gives: the same rows, the same CSV, the same stats, the same first error.
#[test]
fn a_parallel_scan_gives_what_a_sequential_scan_gives() {
    let mut rng = Rng(0x17_5ca1_0001);
    let (_dir, store, size, now) = random_log(&mut rng, 150, 60);
    let ctx = Context::utc(jiff::Timestamp::from_nanosecond(i128::from(now)).expect("now"));
    let sequential = engine::Scan { threads: 1, ..engine::Scan::default() };
    let parallel = [
        engine::Scan { threads: 2, parallel_min: 1, handover_bytes: 1, block: 7 },
        engine::Scan { threads: 3, parallel_min: 1, handover_bytes: 4096, block: 500 },
        engine::Scan { threads: 4, parallel_min: 100, handover_bytes: 1 << 20, block: 1 << 20 },
        engine::Scan { threads: 2, parallel_min: 1, handover_bytes: 1 << 20, block: 64 },
    ];
    let rows = |query: &ledger_query::Query, scan: &engine::Scan| {
        // The rows, and where they were handed over.
        let mut got: Vec<Vec<Row>> = Vec::new();
        let stats = engine::run_with(&store, size, query, &ctx, scan, &mut |rows| {
            got.push(rows);
            true
        });
        (format!("{got:?}"), stats.map_err(|e| e.to_string()))
    };
    // The CSV bytes (flushed after a failed run too), rows and neutralised cells counted.
    let csv = |query: &ledger_query::Query, scan: &engine::Scan| {
        let mut bytes = Vec::new();
        let mut out =
            ledger_query::CsvWriter::new(&mut bytes, query.columns(), ctx.tz().clone()).expect("csv header");
        let stats =
            engine::run_csv_with(&store, size, query, &ctx, scan, &mut out).map_err(|e| e.to_string());
        let rows = out.rows();
        let neutralised = out.finish().expect("flush");
        (String::from_utf8_lossy(&bytes).into_owned(), rows, neutralised, stats)
    };
    let fixed = [
        "decision = deny and tool ~ \"shell.*\"",
        "decision = deny | limit 3",
        "tool = \"db.query\" | limit 200",
        "params.n > 50 | count by agent",
        "decision = allow",
        "params.n > 98 | sort time desc | limit 4",
        "",
        "| fields seq, tool, params.path",
        r#"since 2026-01-03 tool ~ "*.exec" | fields time, agent"#,
    ];
    let mut texts: Vec<String> = fixed.iter().map(|t| t.to_string()).collect();
    texts.extend((0..150).map(|_| random_query(&mut rng)));
    for text in &texts {
        let query = ledger_query::parse(text).unwrap_or_else(|e| panic!("{}", e.render(text)));
        let expected = rows(&query, &sequential);
        let expected_csv = csv(&query, &sequential);
        for scan in &parallel {
            assert_eq!(rows(&query, scan), expected, "query: {text}, {scan:?}");
            assert_eq!(csv(&query, scan), expected_csv, "CSV of query: {text}, {scan:?}");
        }
    }

    // A string that is not UTF-8 in the middle of the log: the same first error, or the
    // same rows when the query never reads it.
    let bad = size * 2 / 3;
    let mut records: Vec<Vec<u8>> = (bad..size)
        .map(|s| ledgerd::storage::stored::encode(&store.entry(s).expect("read").expect("entry")))
        .collect();
    let tool = store.entry(bad).expect("read").expect("entry").tool;
    let at = records[0].windows(tool.len()).position(|w| w == tool.as_bytes()).expect("tool bytes");
    records[0][at] = 0xff;
    store.segments().rewrite_from(bad, &records).expect("rewrite");
    for text in [
        "tool ~ \"*\"",
        "decision = deny and tool = \"x\"",
        "decision = deny",
        "agent = \"ci-7\" or tool = \"x\"",
        "agent = \"ci-7\"",
        "agent in [\"ci-7\", \"ops-bot\"] and tool ~ \"*\"",
        "",
        "| fields seq, agent",
    ] {
        let query = ledger_query::parse(text).expect("parse");
        let expected = rows(&query, &sequential);
        for scan in &parallel {
            assert_eq!(rows(&query, scan), expected, "after damage, query: {text}, {scan:?}");
            assert_eq!(csv(&query, scan), csv(&query, &sequential), "after damage, CSV of: {text}, {scan:?}");
        }
    }
    let damaged = rows(&ledger_query::parse("tool ~ \"*\"").expect("parse"), &parallel[0]).1;
    assert!(
        damaged.as_ref().is_err_and(|e| e.contains(&format!("stored entry {bad} "))),
        "the damaged entry is named: {damaged:?}"
    );
}

#[test]
fn plans_use_the_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 16 << 20).expect("store");
    let signer = NoteSigner::generate("test/engine").expect("key");
    let (mut log, _) = Log::open(store.clone(), signer).expect("log");
    for day in 0..10 {
        let batch = (0..100)
            .map(|i| pb::Entry {
                kind: pb::Kind::Decision as i32,
                agent: AGENTS[i % AGENTS.len()].into(),
                tool: "t".into(),
                decision: pb::Decision::Allow as i32,
                ..Default::default()
            })
            .collect();
        log.append(vec![batch], T0 + day * DAY).expect("append");
    }
    let ctx = Context::utc(jiff::Timestamp::from_nanosecond(i128::from(T0 + 20 * DAY)).expect("now"));
    let run = |text: &str| {
        let q = ledger_query::parse(text).expect("parse");
        engine::run(&store, 1000, &q, &ctx, &mut |_| true).expect("run")
    };
    // A period reads only its days: 3 days of 100 entries.
    let s = run("since 2026-01-04 until 2026-01-07");
    assert_eq!((s.range, s.scanned), ((300, 600), 300));
    // An agent reads only its entries.
    let s = run("agent = \"ops-bot\"");
    assert!(s.by_agent);
    assert_eq!(s.scanned, 170);
    // `limit` stops the scan early.
    assert_eq!(run("| limit 5").scanned, 5);
}

// ---- hourly counters ----

const HOUR: i64 = 3_600_000_000_000;
/// 2026-03-28T12:00:00Z: the ledger below spans Europe's change to summer time.
const T1: i64 = 1_774_699_200_000_000_000;
const KINDS: &[pb::Kind] =
    &[pb::Kind::Decision, pb::Kind::Outcome, pb::Kind::AccessRefused, pb::Kind::DaemonStarted];
const FEW_AGENTS: &[&str] = &["billing-bot", "ops-bot", "ci-7", ""];
const FEW_TOOLS: &[&str] = &["db.query", "fs.read_file", "shell.exec", ""];

fn counted_entry(rng: &mut Rng) -> pb::Entry {
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    let decision = match (kind, rng.below(5)) {
        (pb::Kind::Decision, 0) => pb::Decision::Deny,
        (pb::Kind::Decision, _) => pb::Decision::Allow,
        (_, 0) => pb::Decision::Deny,
        _ => pb::Decision::Unspecified,
    };
    pb::Entry {
        kind: kind as i32,
        agent: rng.pick(FEW_AGENTS).into(),
        tool: rng.pick(FEW_TOOLS).into(),
        decision: decision as i32,
        params: format!(r#"{{"n":{}}}"#, rng.below(10)),
        ..Default::default()
    }
}

/// Appends `commits` group commits of random entries, a few per hour, from `*now` on.
fn append_counted(log: &mut Log, rng: &mut Rng, now: &mut i64, commits: usize) {
    for _ in 0..commits {
        let batch: Vec<pb::Entry> = (0..1 + rng.below(30)).map(|_| counted_entry(rng)).collect();
        log.append(vec![batch], *now).expect("append");
        *now += rng.below(40 * 60) as i64 * 1_000_000_000 + rng.below(1_000_000_000) as i64;
    }
}

/// A time literal near the ledger's times: on an hour, or inside one.
fn instant(rng: &mut Rng) -> String {
    let mut t = T1 + (rng.below(60) as i64 - 4) * HOUR;
    if rng.below(2) == 0 {
        t += rng.below(HOUR as u64) as i64;
    }
    jiff::Timestamp::from_nanosecond(i128::from(t)).map(|t| t.to_string()).unwrap_or_default()
}

fn counting_query(rng: &mut Rng) -> String {
    let mut conds = Vec::new();
    for _ in 0..rng.below(3) {
        conds.push(match rng.below(13) {
            0 => format!("agent = {:?}", rng.pick(FEW_AGENTS)),
            1 => format!("agent in [{:?}, {:?}]", rng.pick(FEW_AGENTS), rng.pick(FEW_AGENTS)),
            2 => format!("tool != {:?}", rng.pick(FEW_TOOLS)),
            3 => format!("decision = {}", rng.pick(&["allow", "deny"])),
            4 => format!("kind in [{}]", rng.pick(&["decision", "outcome", "access_refused"])),
            5 => format!("time >= {}", instant(rng)),
            6 => format!("time < {}", instant(rng)),
            7 => format!("(tool ~ \"fs.*\" or not kind = {})", rng.pick(&["decision", "outcome"])),
            8 => format!("hour(time) >= {}", rng.below(24)),
            9 => "weekday(time) = sun".to_string(),
            // Not countable.
            10 => format!("params.n < {}", rng.below(10)),
            11 => format!("(time < {} or decision = deny)", instant(rng)),
            _ => format!("time != {}", instant(rng)),
        });
    }
    let period = match rng.below(5) {
        0 => format!("since {} ", instant(rng)),
        1 => format!("since {} until {} ", instant(rng), instant(rng)),
        2 => format!("during 2026-03-{} ", 28 + rng.below(3)),
        _ => String::new(),
    };
    let key = |rng: &mut Rng| {
        rng.pick(&[
            "agent",
            "tool",
            "kind",
            "decision",
            "bin(time, 1h)",
            "bin(time, 2h)",
            "bin(time, 1d)",
            "hour(time)",
            "date(time)",
            "bin(time, 30m)",
            "params.n",
        ])
    };
    let mut keys = vec![key(rng), key(rng)];
    if keys[0] == keys[1] || keys.iter().all(|k| k.starts_with("bin")) {
        keys.pop();
    }
    let by = keys.join(", ");
    let first = keys[0];
    let stage = match rng.below(8) {
        0 | 1 => format!(" | count by {by}"),
        2 => format!(" | count by {by} | where count > 2 | sort count desc, {first} | limit 5"),
        3 => format!(" | stats count() as n, count(tool) by {by}"),
        4 if first != "tool" => format!(" | top 2 tool by {first}"),
        5 => " | count".to_string(),
        6 => format!(" | stats count(), dcount(tool) by {first}"),
        _ => format!(" | limit 40 | count by {by}"),
    };
    format!("{period}{}{stage}", conds.join(" and "))
}

fn run_rows(
    store: &Store,
    size: u64,
    query: &ledger_query::Query,
    ctx: &Context,
) -> (Vec<Row>, engine::Stats) {
    let mut got: Vec<Row> = Vec::new();
    let stats = engine::run(store, size, query, ctx, &mut |rows| {
        got.extend(rows);
        true
    })
    .expect("run");
    (got, stats)
}

fn context(zone: &str, now: i64) -> Context {
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("zone {zone}: {e}"));
    Context::new(jiff::Timestamp::from_nanosecond(i128::from(now)).expect("now"), tz)
}

/// Everything the counters hold, summed per hour and combination.
fn stored_counts(store: &Store) -> BTreeMap<(i64, i32, String, String, i32), u64> {
    let mut out = BTreeMap::new();
    for item in counters::parts(&store.counters, i64::MIN / HOUR, i64::MAX / HOUR) {
        let (hour, value) = item.expect("read counters");
        let part = counters::PartView::parse(&value).expect("well-formed part");
        assert_eq!(part.cells().count(), part.len());
        for c in part.counted() {
            *out.entry((hour, c.kind, c.agent.to_string(), c.tool.to_string(), c.decision)).or_default() +=
                c.count;
        }
    }
    out
}

/// The same, computed from the entries.
fn counts_of(entries: &[Plain]) -> BTreeMap<(i64, i32, String, String, i32), u64> {
    let mut out = BTreeMap::new();
    for Plain(e) in entries {
        let key = (counters::hour_of(e.time_unix_nanos), e.kind, e.agent.clone(), e.tool.clone(), e.decision);
        *out.entry(key).or_default() += 1;
    }
    out
}

fn all_entries(store: &Store, size: u64) -> Vec<Plain> {
    (0..size).map(|s| Plain(store.entry(s).expect("read").expect("entry"))).collect()
}

#[test]
fn counting_queries_from_the_hourly_counters_agree_with_evaluation_over_a_vec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 16 << 20).expect("store");
    let signer = NoteSigner::generate("test/engine").expect("key");
    let (mut log, _) = Log::open(store.clone(), signer).expect("log");
    let mut rng = Rng(0x0ddc_0ffe_e123_4567);
    let mut now = T1;
    append_counted(&mut log, &mut rng, &mut now, 200);
    let size = log.size();
    let all = all_entries(&store, size);
    let end = stored_end(&store);
    assert_eq!(
        stored_counts(&store),
        counts_of(&all[..end as usize]),
        "the counters hold what the log holds"
    );

    // Whole-hour zones (Berlin changes to summer time inside the ledger) use the counters;
    // half-hour zones fall back to the scan for queries that read the local hour.
    let zones = ["UTC", "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"];
    let (mut from_counters, mut scanned, mut partial_view) = (0, 0, 0);
    for i in 0..700 {
        let zone = zones[i % zones.len()];
        let ctx = context(zone, now);
        let text = counting_query(&mut rng);
        let query = ledger_query::parse(&text).unwrap_or_else(|e| panic!("{}", e.render(&text)));
        // A reader may see fewer entries than the counters already hold (a commit landed
        // after it took the head): it must not count them.
        let seen = if i % 4 == 3 { 1 + rng.below(size) } else { size };
        let (got, stats) = run_rows(&store, seen, &query, &ctx);
        let expected = query.run(all[..seen as usize].iter(), &ctx).rows;
        assert_eq!(
            format!("{got:?}"),
            format!("{expected:?}"),
            "query: {text}\nzone: {zone}\nsize: {seen}\nplan: {stats:?}"
        );
        if stats.counters {
            from_counters += 1;
            partial_view += usize::from(seen < size);
            assert!(query.count_shape(&[Field::Kind, Field::Agent, Field::Tool, Field::Decision]).is_some());
            assert!(
                stats.counted.0 <= stats.counted.1
                    && stats.range.0 <= stats.counted.0
                    && stats.counted.1 <= stats.range.1
            );
            let (range, counted) = (stats.range.1 - stats.range.0, stats.counted.1 - stats.counted.0);
            if stats.by_agent {
                assert!(stats.scanned + counted <= range, "{stats:?}");
            } else {
                assert_eq!(stats.scanned + counted, range, "{stats:?}");
            }
        } else {
            scanned += 1;
        }
    }
    assert!(
        from_counters > 200 && scanned > 150 && partial_view > 30,
        "generator is off: {from_counters} from counters, {scanned} scanned, {partial_view} on a partial view"
    );

    // The plan: `count by agent, bin(time, 1h)` reads cells, not entries; only the last
    // (open) hour is scanned.
    let q = ledger_query::parse("| count by agent, bin(time, 1h)").expect("parse");
    let (_, stats) = run_rows(&store, size, &q, &context("UTC", now));
    let open_hour = counters::hour_of(all[all.len() - 1].0.time_unix_nanos);
    let in_open_hour =
        all.iter().filter(|Plain(e)| counters::hour_of(e.time_unix_nanos) == open_hour).count() as u64;
    assert!(stats.counters && stats.cells > 0, "{stats:?}");
    assert_eq!((stats.scanned, stats.counted), (in_open_hour, (0, size - in_open_hour)), "{stats:?}");
    // In a zone with half-hour offsets the hours are not local hours: scanned.
    let (_, stats) = run_rows(&store, size, &q, &context("Asia/Kolkata", now));
    assert!(!stats.counters && stats.scanned == size, "{stats:?}");
    // ... unless the query does not read the hour.
    let q = ledger_query::parse("decision = deny | count by agent, tool").expect("parse");
    let (_, stats) = run_rows(&store, size, &q, &context("Asia/Kolkata", now));
    assert!(stats.counters, "{stats:?}");
}

/// The seq of the first entry no stored part counts.
fn stored_end(store: &Store) -> u64 {
    counters::counted_end(&store.counters).expect("read").expect("a marker")
}

/// Checks that the stored counters count exactly the entries below their marker, and that
/// counting queries answered from them give the rows evaluation over a `Vec` gives.
fn check_counters(store: &Store, size: u64, now: i64) {
    let all = all_entries(store, size);
    let end = stored_end(store);
    assert!(end <= size);
    assert_eq!(stored_counts(store), counts_of(&all[..end as usize]), "the counters hold what the log holds");
    let ctx = context("UTC", now);
    for text in [
        "| count by agent, bin(time, 1h)",
        "decision = deny | count by tool, kind",
        "| top 2 agent by bin(time, 1d)",
    ] {
        let query = ledger_query::parse(text).expect("parse");
        let (got, stats) = run_rows(store, size, &query, &ctx);
        assert!(stats.counters, "{text}: {stats:?}");
        assert_eq!(got, query.run(all.iter(), &ctx).rows, "{text}");
    }
}

#[test]
fn counters_survive_a_reopen_catch_up_after_a_crash_and_are_rebuilt_when_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = NoteSigner::generate("test/engine").expect("key");
    let open = || {
        // sled may hold its lock a moment after the last handle is dropped.
        let mut tries = 0;
        let store = loop {
            match Store::open(dir.path(), 16 << 20) {
                Ok(store) => break store,
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("store: {e}"),
            }
        };
        let (log, recovery) = Log::open(store.clone(), signer.clone()).expect("log");
        (store, log, recovery)
    };
    let mut rng = Rng(0x5eed_0fc0_c0a1_b2c3);
    let mut now = T1;
    let (store, mut log, _) = open();
    append_counted(&mut log, &mut rng, &mut now, 60);
    check_counters(&store, log.size(), now);

    // Parts are stored when they close; the open one is in memory. Reopening counts its
    // entries again, and no others.
    let (size, end) = (log.size(), stored_end(&store));
    assert!(end < size && end > 0, "{end} of {size}");
    drop((store, log));
    let (store, mut log, recovery) = open();
    assert_eq!(recovery.recounted, size - end);
    check_counters(&store, log.size(), now);
    log.append(vec![vec![counted_entry(&mut rng)]], now - 1).expect("append in the open hour");
    check_counters(&store, log.size(), now);

    // A crash after the entries (and tiles and index) of a commit reached disk but before
    // the part it closed did: put the counters tree back as it was before the commit.
    let before: Vec<(sled::IVec, sled::IVec)> = store.counters.iter().map(|kv| kv.expect("read")).collect();
    let end = stored_end(&store);
    while stored_end(&store) == end {
        append_counted(&mut log, &mut rng, &mut now, 1);
    }
    store.counters.clear().expect("clear");
    for (k, v) in &before {
        store.counters.insert(k, v).expect("restore");
    }
    store.counters.flush().expect("flush");
    assert_eq!(stored_end(&store), end);
    // Until the log is opened again the counters lag it by more than the open part: queries
    // use them only for the hours they hold in full.
    let ctx = context("UTC", now);
    let all = all_entries(&store, log.size());
    for text in ["| count by agent, bin(time, 1h)", "| count by tool"] {
        let query = ledger_query::parse(text).expect("parse");
        let (got, stats) = run_rows(&store, log.size(), &query, &ctx);
        assert!(stats.counters && stats.counted.1 <= end, "{text}: {stats:?}");
        assert_eq!(got, query.run(all.iter(), &ctx).rows, "{text}");
    }
    drop((store, log));
    let (store, log, recovery) = open();
    assert_eq!(recovery.recounted, log.size() - end);
    check_counters(&store, log.size(), now);

    // The same crash, as `log.rs` simulates one for the tiles: entries on disk with no
    // tree hashes, no index and no counters. They are adopted and counted.
    let mut last = log.store().entry(log.size() - 1).expect("read").expect("entry");
    for seq in log.size()..log.size() + 4 {
        last.seq = seq;
        last.agent = format!("late-{}", seq % 2);
        store.tamper(seq, Some(&last)).expect("write an entry with no tree hashes");
    }
    let end = stored_end(&store);
    drop((store, log));
    let (store, mut log, recovery) = open();
    assert_eq!((recovery.adopted, recovery.recounted), (4, log.size() - end));
    check_counters(&store, log.size(), now);
    append_counted(&mut log, &mut rng, &mut now, 5);
    check_counters(&store, log.size(), now);

    // Counters deleted: rebuilt from the whole log on the next start.
    store.counters.clear().expect("clear");
    store.counters.flush().expect("flush");
    drop((store, log));
    let (store, mut log, recovery) = open();
    assert_eq!(recovery.recounted, log.size());
    check_counters(&store, log.size(), now);

    // Damaged counters are not trusted: the query is scanned (and still right), and
    // rebuilding the projections (`ledgerd --rebuild-projections`) recounts them.
    let (key, _) = store.counters.first().expect("read").expect("a part");
    store.counters.insert(&key, &[1u8, 9, 9][..]).expect("damage");
    let query = ledger_query::parse("| count by agent, bin(time, 1h)").expect("parse");
    let ctx = context("UTC", now);
    let (got, stats) = run_rows(&store, log.size(), &query, &ctx);
    assert!(!stats.counters && stats.scanned == log.size(), "{stats:?}");
    assert_eq!(got, query.run(all_entries(&store, log.size()).iter(), &ctx).rows);
    log.rebuild_projections().expect("rebuild");
    check_counters(&store, log.size(), now);
    // So are counters whose counts do not add up to the entries (a part gone missing).
    let (key, _) = store.counters.first().expect("read").expect("a part");
    store.counters.remove(&key).expect("remove");
    let (got, stats) = run_rows(&store, log.size(), &query, &ctx);
    assert!(!stats.counters && stats.scanned == log.size(), "{stats:?}");
    assert_eq!(got, query.run(all_entries(&store, log.size()).iter(), &ctx).rows);
    log.rebuild_projections().expect("rebuild");
    check_counters(&store, log.size(), now);
    // A marker of another format also makes them be rebuilt.
    store.counters.insert([0xff], &[99u8, 0, 0, 0, 0, 0, 0, 0, 0][..]).expect("marker");
    store.counters.flush().expect("flush");
    let size = log.size();
    drop((store, log));
    let (store, log, recovery) = open();
    assert_eq!((recovery.recounted, log.size()), (size, size));
    check_counters(&store, log.size(), now);
}
