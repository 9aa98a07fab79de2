//! Differential test: random entries and random queries, run by the engine and by a
//! reference evaluator written here from the documented semantics (docs/QUERY.md), over a
//! plain `Vec`. They must produce the same rows.
//!
//! The reference shares no code with the engine: globs are matched by a recursive matcher,
//! calendar functions go through `jiff::Zoned`, grouping and sorting are done by hand.

mod common;

use std::cmp::Ordering;

use common::Entry;
use ledger_query::{Context, format_value, parse};

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

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const AGENTS: &[&str] = &["build-bot", "billing-bot", "ci-prod-7", "ops", ""];
const TOOLS: &[&str] = &["db.query", "fs.read_file", "fs.write_file", "shell.exec", "http.get", ""];
const KINDS: &[&str] = &["decision", "outcome", "policy_changed", "access_refused"];
const DECISIONS: &[&str] = &["allow", "deny", ""];
const RULES: &[&str] = &["no-shell", "read-only", "r1", ""];
const FLAGS: &[&str] = &["deny_burst", "off_hours", "sensitive_path", "unknown_agent"];
const PATHS: &[&str] =
    &["/etc/passwd", "/etc/ssh/sshd_config", "/srv/a.txt", "/srv/x/y/z", "relative/path", "/"];
const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"];

const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const DAY: i64 = 86_400_000_000_000;

fn entries(rng: &mut Rng, n: usize) -> Vec<Entry> {
    let mut time = T0;
    (0..n)
        .map(|i| {
            time += (rng.next() % (2 * DAY as u64)) as i64;
            let params = if rng.chance(20) {
                String::new()
            } else {
                let mut parts = vec![format!(r#""path":"{}""#, rng.pick(PATHS))];
                if rng.chance(70) {
                    parts.push(format!(r#""n":{}"#, rng.below(20) as i64 - 5));
                }
                if rng.chance(40) {
                    parts.push(format!(r#""x":{}.5"#, rng.below(6)));
                }
                if rng.chance(30) {
                    parts.push(r#""n":"7""#.to_string()); // a string where a number usually is
                }
                format!("{{{}}}", parts.join(","))
            };
            let mut flags: Vec<String> =
                FLAGS.iter().filter(|_| rng.chance(25)).map(|f| f.to_string()).collect();
            flags.sort();
            Entry {
                seq: i as u64,
                time,
                kind: rng.pick(KINDS),
                agent: rng.pick(AGENTS).to_string(),
                tool: rng.pick(TOOLS).to_string(),
                decision: rng.pick(DECISIONS),
                rule: rng.pick(RULES).to_string(),
                severity: rng.below(11) as u32,
                flags,
                params,
                ..Entry::default()
            }
        })
        .collect()
}

// ---- the reference: values and fields ----

#[derive(Debug, Clone, PartialEq)]
enum V {
    Str(String),
    Int(i64),
    Float(f64),
    Time(i64),
    Day(u8),
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
enum F {
    Agent,
    Tool,
    Kind,
    Decision,
    Rule,
    Severity,
    Seq,
    Time,
    Hour,
    Weekday,
    Flags,
    Path,
    N,
    X,
}

impl F {
    fn text(self) -> &'static str {
        match self {
            F::Agent => "agent",
            F::Tool => "tool",
            F::Kind => "kind",
            F::Decision => "decision",
            F::Rule => "rule",
            F::Severity => "severity",
            F::Seq => "seq",
            F::Time => "time",
            F::Hour => "hour(time)",
            F::Weekday => "weekday(time)",
            F::Flags => "flags",
            F::Path => "params.path",
            F::N => "params.n",
            F::X => "params.x",
        }
    }

    /// The value of this field in `e`, or `None` when missing.
    fn get(self, e: &Entry, tz: &jiff::tz::TimeZone) -> Option<V> {
        let text = |s: &str| (!s.is_empty()).then(|| V::Str(s.to_string()));
        let zoned = || {
            jiff::Timestamp::from_nanosecond(i128::from(e.time)).map(|t| t.to_zoned_datetime(tz.clone())).ok()
        };
        let json = || serde_json::from_str::<serde_json::Value>(&e.params).ok();
        match self {
            F::Agent => text(&e.agent),
            F::Tool => text(&e.tool),
            F::Kind => text(e.kind),
            F::Decision => text(e.decision),
            F::Rule => text(&e.rule),
            F::Severity => (e.severity != 0).then_some(V::Int(i64::from(e.severity))),
            F::Seq => Some(V::Int(e.seq as i64)),
            F::Time => Some(V::Time(e.time)),
            F::Hour => zoned().map(|z| V::Int(i64::from(z.hour()))),
            F::Weekday => zoned().map(|z| V::Day(z.weekday().to_monday_zero_offset() as u8)),
            F::Flags => (!e.flags.is_empty()).then(|| V::List(e.flags.clone())),
            F::Path | F::N | F::X => {
                let key = match self {
                    F::Path => "path",
                    F::N => "n",
                    _ => "x",
                };
                match json()?.get(key)? {
                    serde_json::Value::String(s) => text(s),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => Some(V::Int(i)),
                        None => n.as_f64().map(V::Float),
                    },
                    _ => None,
                }
            }
        }
    }
}

/// Equality and order as the docs define them: same kind of value (numbers together).
fn compare(a: &V, b: &V) -> Option<Ordering> {
    match (a, b) {
        (V::Str(x), V::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (V::Int(x), V::Int(y)) => Some(x.cmp(y)),
        (V::Int(x), V::Float(y)) => (*x as f64).partial_cmp(y),
        (V::Float(x), V::Int(y)) => x.partial_cmp(&(*y as f64)),
        (V::Float(x), V::Float(y)) => x.partial_cmp(y),
        (V::Time(x), V::Time(y)) => Some(x.cmp(y)),
        (V::Day(x), V::Day(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A glob matcher written from the rules in the docs, by recursion over characters.
fn glob(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            // `/**/` may also stand for a single `/`.
            if rest.first() == Some(&'/') && glob(&rest[1..], s) {
                return true;
            }
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some('*') => {
            let limit = s.iter().position(|c| *c == '/').unwrap_or(s.len());
            (0..=limit).any(|i| glob(&p[1..], &s[i..]))
        }
        Some('?') => s.first().is_some_and(|c| *c != '/') && glob(&p[1..], &s[1..]),
        Some(c) => s.first() == Some(c) && glob(&p[1..], &s[1..]),
    }
}

fn glob_str(p: &str, s: &str) -> bool {
    let p: Vec<char> = p.chars().collect();
    let s: Vec<char> = s.chars().collect();
    glob(&p, &s)
}

// ---- the reference: expressions ----

#[derive(Debug, Clone)]
enum Pat {
    Glob(String),
    Regex(String),
}

#[derive(Debug, Clone)]
enum E {
    Cmp(F, &'static str, V),
    In(F, Vec<V>, bool),
    Has(String),
    Match(F, Pat, bool),
    And(Box<E>, Box<E>),
    Or(Box<E>, Box<E>),
    Not(Box<E>),
}

fn literal(v: &V) -> String {
    match v {
        V::Str(s) => format!("{s:?}"),
        V::Int(n) => n.to_string(),
        V::Float(x) => format!("{x:?}"),
        V::Time(ns) => {
            jiff::Timestamp::from_nanosecond(i128::from(*ns)).map(|t| t.to_string()).unwrap_or_default()
        }
        V::Day(d) => ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][*d as usize].to_string(),
        V::List(_) => unreachable!("lists are never literals"),
    }
}

fn render(e: &E) -> String {
    match e {
        E::Cmp(f, op, v) => format!("{} {op} {}", f.text(), literal(v)),
        E::In(f, vs, neg) => format!(
            "{} {}in [{}]",
            f.text(),
            if *neg { "not " } else { "" },
            vs.iter().map(literal).collect::<Vec<_>>().join(", ")
        ),
        E::Has(s) => format!("flags has {s:?}"),
        E::Match(f, p, neg) => {
            let p = match p {
                Pat::Glob(g) => format!("{g:?}"),
                Pat::Regex(r) => format!("/{}/", r.replace('/', "\\/")),
            };
            format!("{} {} {p}", f.text(), if *neg { "!~" } else { "~" })
        }
        E::And(a, b) => format!("({} and {})", render(a), render(b)),
        E::Or(a, b) => format!("({} or {})", render(a), render(b)),
        E::Not(a) => format!("not {}", render(a)),
    }
}

fn eval(e: &E, entry: &Entry, tz: &jiff::tz::TimeZone) -> bool {
    match e {
        E::Cmp(f, op, lit) => {
            let Some(v) = f.get(entry, tz) else { return false };
            let ord = compare(&v, lit);
            match *op {
                "=" => ord == Some(Ordering::Equal),
                "!=" => ord != Some(Ordering::Equal),
                "<" => ord == Some(Ordering::Less),
                "<=" => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
                ">" => ord == Some(Ordering::Greater),
                _ => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
            }
        }
        E::In(f, lits, neg) => {
            let Some(v) = f.get(entry, tz) else { return false };
            lits.iter().any(|l| compare(&v, l) == Some(Ordering::Equal)) != *neg
        }
        E::Has(s) => entry.flags.contains(s),
        E::Match(f, p, neg) => {
            let Some(v) = f.get(entry, tz) else { return false };
            let texts: Vec<String> = match v {
                V::List(items) => items,
                V::Str(s) => vec![s],
                V::Int(n) => vec![n.to_string()],
                V::Float(x) => vec![x.to_string()],
                other => panic!("match on {other:?}"),
            };
            let hit = |t: &String| match p {
                Pat::Glob(g) => glob_str(g, t),
                Pat::Regex(r) => regex::Regex::new(r).is_ok_and(|re| re.is_match(t)),
            };
            texts.iter().any(hit) != *neg
        }
        E::And(a, b) => eval(a, entry, tz) && eval(b, entry, tz),
        E::Or(a, b) => eval(a, entry, tz) || eval(b, entry, tz),
        E::Not(a) => !eval(a, entry, tz),
    }
}

fn gen_value(rng: &mut Rng, f: F) -> V {
    match f {
        F::Agent => V::Str(rng.pick(&AGENTS[..4]).to_string()),
        F::Tool => V::Str(rng.pick(&TOOLS[..5]).to_string()),
        F::Kind => V::Str(rng.pick(KINDS).to_string()),
        F::Decision => V::Str(rng.pick(&DECISIONS[..2]).to_string()),
        F::Rule => V::Str(rng.pick(&RULES[..3]).to_string()),
        F::Severity => V::Int(rng.below(12) as i64),
        F::Seq => V::Int(rng.below(200) as i64),
        F::Time => V::Time(T0 + (rng.next() % (200 * DAY as u64)) as i64),
        F::Hour => V::Int(rng.below(24) as i64),
        F::Weekday => V::Day(rng.below(7) as u8),
        F::Path => V::Str(rng.pick(PATHS).to_string()),
        F::N => {
            if rng.chance(15) {
                V::Str("7".to_string())
            } else {
                V::Int(rng.below(20) as i64 - 5)
            }
        }
        F::X => {
            if rng.chance(50) {
                V::Float(rng.below(6) as f64 + 0.5)
            } else {
                V::Int(rng.below(6) as i64)
            }
        }
        F::Flags => unreachable!("flags take `has`"),
    }
}

const GLOBS: &[&str] = &[
    "*",
    "**",
    "/etc/*",
    "/etc/**",
    "/srv/**/z",
    "*.*",
    "fs.*",
    "*_file",
    "ci-*",
    "?s*",
    "*bot",
    "/**",
    "r?",
];
const REGEXES: &[&str] = &["^fs", "bot$", "(?i)SHELL", "^/etc/", "\\d", "o", "^(allow|deny)$", "^[a-c]"];

fn gen_expr(rng: &mut Rng, depth: u32) -> E {
    if depth < 3 && rng.chance(45) {
        let a = Box::new(gen_expr(rng, depth + 1));
        return match rng.below(3) {
            0 => E::And(a, Box::new(gen_expr(rng, depth + 1))),
            1 => E::Or(a, Box::new(gen_expr(rng, depth + 1))),
            _ => E::Not(a),
        };
    }
    let fields = [
        F::Agent,
        F::Tool,
        F::Kind,
        F::Decision,
        F::Rule,
        F::Severity,
        F::Seq,
        F::Time,
        F::Hour,
        F::Weekday,
        F::Flags,
        F::Path,
        F::N,
        F::X,
    ];
    let f = rng.pick(&fields);
    if matches!(f, F::Flags) {
        return match rng.below(3) {
            0 => E::Has(rng.pick(FLAGS).to_string()),
            1 => E::Match(
                f,
                Pat::Glob(rng.pick(&["*_*", "off_*", "*burst", "s*"]).to_string()),
                rng.chance(30),
            ),
            _ => E::Match(f, Pat::Regex(rng.pick(&["^d", "path$", "n"]).to_string()), rng.chance(30)),
        };
    }
    let textual = matches!(f, F::Agent | F::Tool | F::Kind | F::Decision | F::Rule | F::Path);
    let ordered = !matches!(f, F::Kind | F::Decision);
    match rng.below(if textual { 4 } else { 3 }) {
        0 | 1 if ordered || rng.chance(50) => {
            let ops: &[&'static str] =
                if ordered { &["=", "!=", "<", "<=", ">", ">="] } else { &["=", "!="] };
            E::Cmp(f, rng.pick(ops), gen_value(rng, f))
        }
        0..=2 => {
            let n = 1 + rng.below(3);
            E::In(f, (0..n).map(|_| gen_value(rng, f)).collect(), rng.chance(40))
        }
        _ => {
            let p = if rng.chance(60) {
                Pat::Glob(rng.pick(GLOBS).to_string())
            } else {
                Pat::Regex(rng.pick(REGEXES).to_string())
            };
            E::Match(f, p, rng.chance(30))
        }
    }
}

// ---- stages ----

#[derive(Debug)]
enum Tail {
    /// `| fields seq, agent`
    Rows,
    /// `| sort F [desc] | limit N | fields seq`
    SortLimit(F, bool, usize),
    /// `| limit N | fields seq`
    Limit(usize),
    /// `| count by F`
    CountBy(F),
}

fn format_ref(v: &Option<V>, tz: &jiff::tz::TimeZone) -> String {
    match v {
        None => String::new(),
        Some(V::Str(s)) => s.clone(),
        Some(V::Int(n)) => n.to_string(),
        Some(V::Float(x)) => x.to_string(),
        Some(V::Time(ns)) => format_value(&ledger_query::Value::Time(*ns), tz),
        Some(V::Day(d)) => ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][*d as usize].to_string(),
        Some(V::List(items)) => serde_json::to_string(items).unwrap_or_default(),
    }
}

/// Sort order for keys: missing first, then by value (values of one field share a type,
/// except JSON numbers and strings, which sort numbers before strings).
fn key_order(a: &Option<V>, b: &Option<V>) -> Ordering {
    let rank = |v: &Option<V>| match v {
        None => 0,
        Some(V::Int(_) | V::Float(_)) => 2,
        Some(V::Str(_)) => 3,
        Some(V::Time(_)) => 4,
        Some(V::Day(_)) => 5,
        Some(V::List(_)) => 6,
    };
    match (a, b) {
        (Some(V::List(x)), Some(V::List(y))) => x.cmp(y),
        (Some(x), Some(y)) => match compare(x, y) {
            Some(o) => o.then_with(|| rank(a).cmp(&rank(b))),
            None => rank(a).cmp(&rank(b)),
        },
        _ => rank(a).cmp(&rank(b)),
    }
}

fn reference(matching: &[&Entry], tail: &Tail, tz: &jiff::tz::TimeZone) -> Vec<Vec<String>> {
    match tail {
        Tail::Rows => matching.iter().map(|e| vec![e.seq.to_string(), e.agent.clone()]).collect(),
        Tail::Limit(n) => matching.iter().take(*n).map(|e| vec![e.seq.to_string()]).collect(),
        Tail::SortLimit(f, desc, n) => {
            let mut sorted: Vec<&&Entry> = matching.iter().collect();
            sorted.sort_by(|a, b| {
                let o = key_order(&f.get(a, tz), &f.get(b, tz));
                if *desc { o.reverse() } else { o }
            });
            sorted.into_iter().take(*n).map(|e| vec![e.seq.to_string()]).collect()
        }
        Tail::CountBy(f) => {
            let mut groups: Vec<(Option<V>, i64)> = Vec::new();
            for e in matching {
                let k = f.get(e, tz);
                match groups.iter_mut().find(|(g, _)| key_order(g, &k) == Ordering::Equal) {
                    Some((_, n)) => *n += 1,
                    None => groups.push((k, 1)),
                }
            }
            groups.sort_by(|a, b| key_order(&a.0, &b.0));
            groups.into_iter().map(|(k, n)| vec![format_ref(&k, tz), n.to_string()]).collect()
        }
    }
}

fn gen_tail(rng: &mut Rng) -> (String, Tail) {
    let sortable = [F::Severity, F::Time, F::Agent, F::Hour, F::Weekday, F::N, F::Path];
    let groupable = [F::Agent, F::Decision, F::Hour, F::Weekday, F::Flags, F::Path, F::N, F::Severity];
    match rng.below(4) {
        0 => ("| fields seq, agent".to_string(), Tail::Rows),
        1 => {
            let f = rng.pick(&sortable);
            let desc = rng.chance(50);
            let n = rng.below(15);
            (
                format!("| sort {}{} | limit {n} | fields seq", f.text(), if desc { " desc" } else { "" }),
                Tail::SortLimit(f, desc, n),
            )
        }
        2 => {
            let n = rng.below(20);
            (format!("| limit {n} | fields seq"), Tail::Limit(n))
        }
        _ => {
            let f = rng.pick(&groupable);
            (format!("| count by {}", f.text()), Tail::CountBy(f))
        }
    }
}

/// A period and the range it stands for, computed here with `jiff::Zoned`.
fn gen_period(rng: &mut Rng, now: i64, tz: &jiff::tz::TimeZone) -> (String, Option<(i64, i64)>) {
    let local_midnight = |y: i16, m: i8, d: i8| -> i64 {
        let z = jiff::civil::date(y, m, d)
            .at(0, 0, 0, 0)
            .to_zoned_datetime(tz.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        z.timestamp().as_nanosecond() as i64
    };
    match rng.below(5) {
        0 => (String::new(), None),
        1 => {
            let days = 1 + rng.below(60) as i64;
            (format!("last {days}d"), Some((now - days * DAY, now + 1)))
        }
        2 => {
            let q = 1 + rng.below(2) as i8;
            (
                format!("during 2026-Q{q}"),
                Some((local_midnight(2026, 3 * q - 2, 1), local_midnight(2026, 3 * q + 1, 1))),
            )
        }
        3 => {
            let m = 1 + rng.below(6) as i8;
            (
                format!("during 2026-{m:02}"),
                Some((local_midnight(2026, m, 1), local_midnight(2026, m + 1, 1))),
            )
        }
        _ => {
            let a = T0 + (rng.next() % (150 * DAY as u64)) as i64;
            let b = a + (rng.next() % (60 * DAY as u64)) as i64;
            (format!("since {} until {}", literal(&V::Time(a)), literal(&V::Time(b))), Some((a, b)))
        }
    }
}

#[test]
fn engine_agrees_with_reference() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut compared = 0;
    let mut nonempty = 0;
    for round in 0..40 {
        let data = entries(&mut rng, 150);
        let zone = rng.pick(ZONES);
        let tz = jiff::tz::TimeZone::get(zone).unwrap_or_else(|e| panic!("{zone}: {e}"));
        let now = T0 + 120 * DAY;
        let ctx = Context::new(
            jiff::Timestamp::from_nanosecond(i128::from(now)).unwrap_or_else(|e| panic!("{e}")),
            tz.clone(),
        );
        for _ in 0..40 {
            let (period, range) = gen_period(&mut rng, now, &tz);
            let expr = if rng.chance(85) { Some(gen_expr(&mut rng, 0)) } else { None };
            let (tail_text, tail) = gen_tail(&mut rng);
            let text = format!("{period} {} {tail_text}", expr.as_ref().map(render).unwrap_or_default());
            let query = parse(&text)
                .unwrap_or_else(|e| panic!("generated query does not parse:\n{}", e.render(&text)));

            let matching: Vec<&Entry> = data
                .iter()
                .filter(|e| range.is_none_or(|(lo, hi)| lo <= e.time && e.time < hi))
                .filter(|e| expr.as_ref().is_none_or(|x| eval(x, e, &tz)))
                .collect();
            let expected = reference(&matching, &tail, &tz);

            let rows = query.run(data.iter(), &ctx);
            let actual: Vec<Vec<String>> =
                rows.rows.iter().map(|r| r.iter().map(|v| format_value(v, &tz)).collect()).collect();
            assert_eq!(actual, expected, "round {round}, zone {zone}, query:\n{text}");

            // The planning hints never exclude a matching entry.
            if let Some((lo, hi)) = query.time_range(&ctx) {
                assert!(
                    matching.iter().all(|e| lo <= e.time && e.time < hi),
                    "time_range excludes a match: {text}"
                );
            }
            if let Some(agents) = query.agents() {
                assert!(
                    matching.iter().all(|e| agents.contains(&e.agent)),
                    "agents excludes a match: {text}"
                );
            }
            compared += 1;
            nonempty += usize::from(!expected.is_empty() && !matching.is_empty());
        }
    }
    assert_eq!(compared, 1600);
    // Guard against a generator that only makes queries matching nothing.
    assert!(nonempty > 800, "only {nonempty} of {compared} queries matched anything");
}

#[test]
fn globs_agree_with_reference_matcher() {
    let mut rng = Rng(42);
    let alphabet = ['a', 'b', '/', '.', '*', '?'];
    for _ in 0..5000 {
        let p: String = (0..rng.below(7)).map(|_| rng.pick(&alphabet)).collect();
        let s: String = (0..rng.below(8)).map(|_| rng.pick(&alphabet[..4])).collect();
        let query = format!("agent ~ {p:?}");
        let filter = ledger_query::parse_condition(&query).unwrap_or_else(|e| panic!("{}", e.render(&query)));
        let entry = Entry { agent: s.clone(), ..Entry::default() };
        let ctx = Context::utc(jiff::Timestamp::UNIX_EPOCH);
        let expected = !s.is_empty() && glob_str(&p, &s);
        assert_eq!(filter.matches(&entry, &ctx), expected, "glob {p:?} on {s:?}");
    }
}
