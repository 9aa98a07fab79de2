//! Differential test of query execution over storage: random entries with synthetic
//! times are appended through the log, random queries run through `engine::run` (which
//! plans with the time binary search and the agent index) and through the query crate's
//! straightforward evaluation over a `Vec` of the same entries. The rows must be equal.

use ledger_proto::note::NoteSigner;
use ledger_proto::pb;
use ledger_query::{Context, Field, Record, Row, Value};
use ledgerd::engine;
use ledgerd::log::Log;
use ledgerd::store::Store;

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

#[test]
fn engine_over_storage_agrees_with_evaluation_over_a_vec() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 16 << 20).expect("store");
    let signer = NoteSigner::generate("test/engine").expect("key");
    let (mut log, _) = Log::open(store.clone(), signer).expect("log");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = T0;
    for _ in 0..120 {
        let batch: Vec<pb::Entry> = (0..1 + rng.below(40))
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
