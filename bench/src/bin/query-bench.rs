//! `query-bench`: the query engine on a million-entry ledger, against DuckDB on the same data.
//!
//! Builds a ledger through the library (`Store` + `Log::append`, durable group commits with
//! synthetic, increasing receive times, since the daemon stamps the real time), then times
//! four queries with `engine::run`, the code path of the daemon's Query RPC minus the
//! socket: a full-scan filter, an agent + 7-day filter (agent index and time range), `count
//! by agent, bin(time, 1h)`, and a full CSV export. The export is then handed to DuckDB
//! (`bench/benches/duckdb_compare.py`), which runs the same four queries reading the CSV
//! each time, and on a table it loaded beforehand. Row counts must agree on both sides and
//! with what the generator wrote. Run it with
//! `cargo run --release -p ledger-bench --bin query-bench` (add `-- --entries 100000` for a
//! quick run).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use ledger_proto::note::NoteSigner;
use ledger_proto::pb;
use ledger_query::{Context, CsvWriter, Query, Value};
use ledgerd::log::merkle::{Log, rfc3339};
use ledgerd::projections::engine::{self, Stats};
use ledgerd::storage::store::{DEFAULT_CACHE_BYTES, Store};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    about = "Time the query engine on a synthetic ledger, and DuckDB on the same data as CSV",
    after_help = "Example:\n  cargo run --release -p ledger-bench --bin query-bench -- --entries 100000"
)]
struct Args {
    /// Entries in the ledger
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Agents the entries are spread over (named agent-00, agent-01, ...)
    #[arg(long, default_value_t = 50)]
    agents: u32,
    /// Days the entries' receive times are spread over
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Timed runs per query after the first (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Entries per group commit while building (each commit ends with an fdatasync)
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Python interpreter that runs the DuckDB side
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the DuckDB comparison
    #[arg(long)]
    no_duckdb: bool,
    /// Entries of a second, larger ledger (same agents and days) on which the agent +
    /// 7-day query is timed again; 0 skips it
    #[arg(long, default_value_t = 10_000_000)]
    large_entries: u64,
    /// Entries per group commit while building the larger ledger
    #[arg(long, default_value_t = 4096)]
    large_batch: usize,
    /// Time only these of the four queries (letters a-d, as labelled in the output); the
    /// others are skipped, with their checks and DuckDB comparisons. For profiling one
    /// query while iterating
    #[arg(long, default_value = "abcd")]
    only: String,
}

/// 2026-01-01T00:00:00Z: day 0 of the synthetic ledger.
const T0_SECS: i64 = 1_767_225_600;
const NS: i64 = 1_000_000_000;
const DAY_SECS: i64 = 86_400;

/// The DuckDB side, next to this crate's manifest.
const DUCKDB_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/duckdb_compare.py");

/// What a tool's parameters look like.
#[derive(Clone, Copy)]
enum Shape {
    File,
    Sql,
    Shell,
    Http,
    Git,
    Email,
    Chat,
    Object,
    Kube,
    Browser,
    Script,
}

/// The tools agents call: name, action, and the shape of their parameters.
const TOOLS: [(&str, &str, Shape); 20] = [
    ("fs.read_file", "read", Shape::File),
    ("fs.write_file", "write", Shape::File),
    ("fs.list_dir", "read", Shape::File),
    ("fs.delete_file", "delete", Shape::File),
    ("db.query", "read", Shape::Sql),
    ("db.execute", "write", Shape::Sql),
    ("shell.exec", "execute", Shape::Shell),
    ("shell.spawn", "execute", Shape::Shell),
    ("http.get", "fetch", Shape::Http),
    ("http.post", "send", Shape::Http),
    ("git.clone", "read", Shape::Git),
    ("git.push", "write", Shape::Git),
    ("email.send", "send", Shape::Email),
    ("slack.post_message", "send", Shape::Chat),
    ("s3.get_object", "read", Shape::Object),
    ("s3.put_object", "write", Shape::Object),
    ("k8s.apply", "write", Shape::Kube),
    ("k8s.get_pods", "read", Shape::Kube),
    ("browser.open", "fetch", Shape::Browser),
    ("python.run", "execute", Shape::Script),
];

const DEPTS: [&str; 6] = ["finance", "sales", "support", "hr", "eng", "legal"];
const TABLES: [&str; 5] = ["invoices", "customers", "orders", "payments", "tickets"];
const COMMANDS: [&str; 6] = [
    "grep -rn 'ERROR' /var/log/app/worker-3.log | tail -n 200",
    "ls -la /srv/data/exports",
    "df -h /srv && du -sh /srv/data/*",
    "systemctl status nginx --no-pager",
    "tar czf /tmp/backup.tgz /srv/data/reports",
    "curl -s http://localhost:9090/metrics | grep http_requests_total",
];
const DENY_REASONS: [&str; 5] = [
    "path outside the agent's workspace",
    "shell commands need a human approval",
    "writes to production need a change ticket",
    "destination is not on the allow list",
    "rate limit for this tool exceeded",
];

/// splitmix64: a small, fast, deterministic generator (the data is the same on every run).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The JSON parameters of one call, 100-200 bytes.
fn params(shape: Shape, rng: &mut Rng, agent: u32, day: i64) -> String {
    let n = rng.below(1_000_000);
    let dept = DEPTS[rng.below(DEPTS.len() as u64) as usize];
    match shape {
        Shape::File => format!(
            r#"{{"path":"/srv/data/{dept}/2026/q{}/report-{n:06}.csv","offset":0,"limit":65536,"encoding":"utf-8"}}"#,
            1 + day / 91
        ),
        Shape::Sql => {
            let table = TABLES[rng.below(TABLES.len() as u64) as usize];
            format!(
                r#"{{"db":"{dept}","sql":"SELECT id, customer_id, total FROM {table} WHERE customer_id = {n} AND created_at >= '2026-01-01' LIMIT 100"}}"#
            )
        }
        Shape::Shell => format!(
            r#"{{"cmd":"{}","cwd":"/home/agent-{agent:02}/work","timeout_s":30}}"#,
            COMMANDS[rng.below(COMMANDS.len() as u64) as usize]
        ),
        Shape::Http => format!(
            r#"{{"url":"https://api.internal.example.com/v2/{dept}/orders/{n}?expand=items","timeout_ms":5000,"headers":{{"accept":"application/json"}}}}"#
        ),
        Shape::Git => format!(
            r#"{{"repo":"git@git.example.com:acme/service-{}.git","branch":"main","depth":1,"path":"/home/agent-{agent:02}/src"}}"#,
            n % 40
        ),
        Shape::Email => format!(
            r#"{{"to":"{dept}-team@example.com","subject":"Daily report, day {day}","attachments":["/srv/reports/daily-{n:06}.pdf"]}}"#
        ),
        Shape::Chat => format!(
            r##"{{"channel":"#{dept}-alerts","text":"Deployment of service-{} finished in {}s, all checks green"}}"##,
            n % 40,
            n % 300
        ),
        Shape::Object => format!(
            r#"{{"bucket":"acme-{dept}-prod","key":"exports/2026/day-{day:03}/part-{n:06}.parquet","region":"eu-west-1"}}"#
        ),
        Shape::Kube => format!(
            r#"{{"namespace":"{dept}-prod","manifest":"deploy/service-{}.yaml","context":"cluster-eu-1","dry_run":false}}"#,
            n % 40
        ),
        Shape::Browser => format!(
            r#"{{"url":"https://docs.example.com/runbooks/{dept}/incident-{n}","headless":true,"timeout_ms":15000}}"#
        ),
        Shape::Script => format!(
            r#"{{"script":"/home/agent-{agent:02}/jobs/reconcile_{dept}.py","args":["--since","2026-01-01","--batch","{n}"],"venv":"/opt/venvs/jobs"}}"#
        ),
    }
}

/// What the generator wrote that the queries should find again.
#[derive(Default)]
struct Truth {
    /// `decision = deny and tool ~ "shell.*"`.
    deny_shell: u64,
    /// The agent + 7-day query.
    agent_week: u64,
    /// Distinct (agent, hour) pairs.
    agent_hours: HashSet<(u32, i64)>,
}

/// The synthetic ledger's shape, and the parameters of the agent + 7-day query.
#[derive(Clone, Copy)]
struct Plan {
    entries: u64,
    agents: u32,
    days: u32,
    batch: usize,
    week_agent: u32,
    week: (i64, i64),
}

impl Plan {
    fn agent_name(a: u32) -> String {
        format!("agent-{a:02}")
    }
}

/// One decision entry as the intake would have stamped it.
fn decision(rng: &mut Rng, agent: u32, time_secs: i64, shim_seq: u64) -> pb::Entry {
    let day = (time_secs - T0_SECS) / DAY_SECS;
    let (tool, action, shape) = TOOLS[rng.below(TOOLS.len() as u64) as usize];
    let deny = rng.below(10) == 0;
    let family = tool.split('.').next().unwrap_or(tool);
    let (rule, reason) = if deny {
        let reason = DENY_REASONS[rng.below(DENY_REASONS.len() as u64) as usize];
        (format!("deny-{family}-default"), reason.to_string())
    } else {
        let rule = format!("allow-{family}-{action}");
        let reason = format!("matched rule {rule}");
        (rule, reason)
    };
    pb::Entry {
        kind: pb::Kind::Decision as i32,
        agent: Plan::agent_name(agent),
        session: format!("sess-{agent:02}-{day:03}-{}", (time_secs % DAY_SECS) / (4 * 3600)),
        action: action.into(),
        tool: tool.into(),
        params: params(shape, rng, agent, day),
        decision: if deny { pb::Decision::Deny } else { pb::Decision::Allow } as i32,
        rule,
        policy_version: 1 + (day / 14) as u64,
        reason,
        writer_uid: 1000 + agent,
        writer_gid: 1000,
        writer_pid: 4000 + 7 * agent,
        host: "bench-host".into(),
        shim_id: format!("shim-{agent:02}"),
        shim_seq,
        ..Default::default()
    }
}

/// Builds the ledger in `dir` through `Log::append`, one group commit per `batch` entries,
/// with receive times spread evenly over the days.
fn build(dir: &Path, plan: &Plan) -> anyhow::Result<(u64, Truth)> {
    let store = Store::open(dir, DEFAULT_CACHE_BYTES).context("cannot open the bench store")?;
    let signer = NoteSigner::generate("query-bench.example").context("cannot make a signing key")?;
    let (mut log, _) = Log::open(store, signer).context("cannot open the log")?;
    let mut rng = Rng(0x5eed_1ed6_e5d0_0001);
    let mut truth = Truth::default();
    let mut shim_seqs = vec![0u64; plan.agents as usize];
    let span = i64::from(plan.days) * DAY_SECS;
    let commits = plan.entries.div_ceil(plan.batch as u64);
    let start = Instant::now();
    let mut written = 0u64;
    let mut next_report = 0.1;
    for k in 0..commits {
        let time_secs = T0_SECS + (i128::from(k) * i128::from(span) / i128::from(commits)) as i64;
        let time = time_secs * NS;
        let n = (plan.entries - written).min(plan.batch as u64);
        let mut group = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let agent = rng.below(u64::from(plan.agents)) as u32;
            let shim_seq = &mut shim_seqs[agent as usize];
            *shim_seq += 1;
            let entry = decision(&mut rng, agent, time_secs, *shim_seq);
            if entry.decision == pb::Decision::Deny as i32 && entry.tool.starts_with("shell.") {
                truth.deny_shell += 1;
            }
            if agent == plan.week_agent && (plan.week.0..plan.week.1).contains(&time) {
                truth.agent_week += 1;
            }
            truth.agent_hours.insert((agent, time_secs.div_euclid(3600)));
            group.push(entry);
        }
        log.append(vec![group], time).with_context(|| format!("group commit {k} failed"))?;
        written += n;
        if written as f64 >= next_report * plan.entries as f64 {
            eprintln!(
                "  built {written} entries ({:.0}%), {:.0} entries/s",
                100.0 * written as f64 / plan.entries as f64,
                written as f64 / start.elapsed().as_secs_f64()
            );
            next_report += 0.1;
        }
    }
    ensure!(log.size() == plan.entries, "the log holds {} entries, expected {}", log.size(), plan.entries);
    Ok((log.size(), truth))
}

/// Opens the store again for reading. sled locks its files; a handle dropped a moment ago
/// may still hold the lock for a short while, so retry briefly.
fn reopen(dir: &Path) -> anyhow::Result<Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open(dir, DEFAULT_CACHE_BYTES) {
            Ok(store) => return Ok(store),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e).context("cannot reopen the bench store"),
        }
    }
}

/// One query's timings on the ledgerd side.
struct Measured {
    first: Duration,
    median: Duration,
    rows: u64,
    stats: Stats,
}

/// Reopens the store (so the first run starts with sled's cache empty; the OS page cache
/// is warm), then runs `once` one time plus `runs` times. Every run must give the same
/// row count.
fn measure(
    dir: &Path,
    runs: usize,
    mut once: impl FnMut(&Store) -> anyhow::Result<(u64, Stats)>,
) -> anyhow::Result<Measured> {
    let store = reopen(dir)?;
    let mut first = None;
    let mut times = Vec::with_capacity(runs);
    let mut result = None;
    for _ in 0..=runs {
        let t = Instant::now();
        let (rows, stats) = once(&store)?;
        let elapsed = t.elapsed();
        match result {
            None => result = Some((rows, stats)),
            Some((r, _)) => ensure!(r == rows, "one run returned {r} rows, another {rows}"),
        }
        if first.is_none() {
            first = Some(elapsed);
        } else {
            times.push(elapsed);
        }
    }
    let (rows, stats) = result.context("no run")?;
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    Ok(Measured { first: first.unwrap_or_default(), median, rows, stats })
}

/// Runs a query and counts (or, for `count`, sums into `total`) the rows it returns.
fn run_counting(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    count_column: Option<usize>,
) -> anyhow::Result<(u64, Stats, i64)> {
    let mut rows = 0u64;
    let mut total = 0i64;
    let stats = engine::run(store, size, query, ctx, &mut |chunk| {
        rows += chunk.len() as u64;
        if let Some(c) = count_column {
            total += chunk
                .iter()
                .filter_map(|r| match r.get(c) {
                    Some(Value::Int(n)) => Some(*n),
                    _ => None,
                })
                .sum::<i64>();
        }
        true
    })?;
    Ok((rows, stats, total))
}

/// Runs the export query and writes every row to `path` with `CsvWriter` (`engine::run_csv`).
fn export(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    path: &Path,
) -> anyhow::Result<(u64, Stats, usize)> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let out = BufWriter::with_capacity(1 << 20, file);
    let mut csv = CsvWriter::new(out, query.columns(), ctx.tz().clone())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let stats = engine::run_csv(store, size, query, ctx, &mut csv)
        .with_context(|| format!("cannot export to {}", path.display()))?;
    let rows = csv.rows();
    let neutralised = csv.finish().with_context(|| format!("cannot write {}", path.display()))?;
    Ok((rows, stats, neutralised))
}

fn parse_query(text: &str) -> anyhow::Result<Query> {
    ledger_query::parse(text).map_err(|e| anyhow::anyhow!("query does not parse:\n{}", e.render(text)))
}

/// DuckDB's figures for one query in one mode.
#[derive(Debug, Deserialize)]
struct DuckQuery {
    median_ms: f64,
    first_ms: f64,
    rows: u64,
}

#[derive(Debug, Deserialize)]
struct DuckMode {
    scan: DuckQuery,
    agent_week: DuckQuery,
    count: DuckQuery,
    export: DuckQuery,
}

impl DuckMode {
    fn get(&self, i: usize) -> &DuckQuery {
        [&self.scan, &self.agent_week, &self.count, &self.export][i]
    }
}

#[derive(Debug, Deserialize)]
struct DuckModes {
    csv: DuckMode,
    preloaded: DuckMode,
}

#[derive(Debug, Deserialize)]
struct DuckReport {
    duckdb_version: String,
    threads: u64,
    load_ms: f64,
    modes: DuckModes,
}

/// Runs the DuckDB side. `Ok(None)` (with a message printed) when python3 or duckdb is
/// not available; an error when it is but fails.
fn duckdb(args: &Args, csv: &Path, week: (i64, i64), agent: &str) -> anyhow::Result<Option<DuckReport>> {
    if !Path::new(DUCKDB_SCRIPT).is_file() {
        println!("DuckDB comparison skipped: {DUCKDB_SCRIPT} is missing");
        return Ok(None);
    }
    let output = match Command::new(&args.python)
        .arg(DUCKDB_SCRIPT)
        .arg(csv)
        .arg(rfc3339(week.0))
        .arg(rfc3339(week.1))
        .arg(args.runs.to_string())
        .arg("--agent")
        .arg(agent)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            println!(
                "DuckDB comparison skipped: cannot run `{}` ({e}); install Python 3 and `pip install duckdb`, or pass --python",
                args.python
            );
            return Ok(None);
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(0) => {}
        Some(3) => {
            println!("DuckDB comparison skipped: {}", stderr.trim());
            return Ok(None);
        }
        _ => bail!("the DuckDB side failed ({}): {}", output.status, stderr.trim()),
    }
    let report: DuckReport = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "cannot read the DuckDB side's JSON output: {}",
            String::from_utf8_lossy(&output.stdout).chars().take(500).collect::<String>()
        )
    })?;
    Ok(Some(report))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The canonical leaf bytes of every entry in the store at `dir`, and the bytes its files
/// take on disk.
fn sizes(dir: &Path, size: u64) -> anyhow::Result<(u64, u64)> {
    let store = reopen(dir)?;
    let mut leaf_bytes = 0u64;
    store.scan(0, size, |seq, bytes| {
        // The stored bytes are the canonical leaf; re-encoding checks that they are.
        let entry = ledgerd::storage::stored::decode_entry(bytes)
            .map_err(|e| ledgerd::storage::store::StoreError::BadRecord { seq, message: e.to_string() })?;
        leaf_bytes += ledger_proto::leaf::leaf_bytes(&entry).len() as u64;
        Ok(true)
    })?;
    Ok((leaf_bytes, store.disk_bytes()))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(items) = std::fs::read_dir(dir) else { return 0 };
    items
        .flatten()
        .map(|item| match item.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&item.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.runs > 0, "--runs must be at least 1");
    ensure!(args.entries > 0, "--entries must be at least 1");
    ensure!((1..=100).contains(&args.agents), "--agents must be 1 to 100 (names are agent-00 to agent-99)");
    ensure!(args.days > 0, "--days must be at least 1");
    ensure!(args.batch > 0, "--batch must be at least 1");

    // The agent + 7-day query: agent-07 from day 40 to day 47 (earlier in shorter ledgers).
    let week_day = i64::from(args.days.saturating_sub(7).min(40));
    let week_start = (T0_SECS + week_day * DAY_SECS) * NS;
    let plan = Plan {
        entries: args.entries,
        agents: args.agents,
        days: args.days,
        batch: args.batch,
        week_agent: 7.min(args.agents - 1),
        week: (week_start, week_start + 7 * DAY_SECS * NS),
    };
    let week_agent = Plan::agent_name(plan.week_agent);

    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let store_dir = tmp.path().join("store");
    let csv_path: PathBuf = tmp.path().join("ledgerd-export.csv");
    println!(
        "query-bench: {} entries, {} agents, {} days; {} run(s) per query after the first, medians shown; 2-core machines are noisy\n",
        plan.entries, plan.agents, plan.days, args.runs
    );

    // 1. Build.
    let start = Instant::now();
    let (size, truth) = build(&store_dir, &plan)?;
    let built = start.elapsed();
    println!(
        "build: {size} entries in {:.1} s = {:.0} entries/s ({} group commits of {} entries, each with fdatasync); store {:.0} MiB",
        built.as_secs_f64(),
        size as f64 / built.as_secs_f64(),
        size.div_ceil(plan.batch as u64),
        plan.batch,
        dir_bytes(&store_dir) as f64 / (1024.0 * 1024.0)
    );

    // 2. The queries, each parsed once, in one fixed context (UTC, "now" after the last entry).
    let (leaf_bytes, disk_bytes) = sizes(&store_dir, size)?;
    println!(
        "bytes on disk: {:.0} per entry ({:.0} MiB in all: segment files and sled); the entries' canonical leaf bytes: {:.0} per entry; ratio {:.2}x",
        disk_bytes as f64 / size as f64,
        disk_bytes as f64 / (1024.0 * 1024.0),
        leaf_bytes as f64 / size as f64,
        disk_bytes as f64 / leaf_bytes as f64
    );

    let now = jiff::Timestamp::from_second(T0_SECS + (i64::from(plan.days) + 1) * DAY_SECS)
        .context("bad context time")?;
    let ctx = Context::utc(now);
    let texts = [
        r#"decision = deny and tool ~ "shell.*""#.to_string(),
        format!(
            r#"agent = "{week_agent}" and time >= {} and time < {}"#,
            rfc3339(plan.week.0),
            rfc3339(plan.week.1)
        ),
        "| count by agent, bin(time, 1h)".to_string(),
        String::new(),
    ];
    let labels = [
        "(a) full-scan filter",
        "(b) agent + 7 days",
        "(c) count by agent, bin(time, 1h)",
        "(d) full CSV export",
    ];
    let queries: Vec<Query> = texts.iter().map(|t| parse_query(t)).collect::<anyhow::Result<_>>()?;
    println!("\nqueries (ledgerd query language; the export is the empty query, every default column):");
    for (label, text) in labels.iter().zip(&texts) {
        println!("  {label:<36} {}", if text.is_empty() { "(empty query)" } else { text });
    }
    println!("\nledgerd (engine::run over the store; the store is reopened before each query's first run):");

    let mut results = Vec::new();
    let mut count_total = 0i64;
    let mut neutralised = 0usize;
    for (i, query) in queries.iter().enumerate() {
        if !args.only.contains(char::from(b'a' + i as u8)) {
            continue;
        }
        let m = match i {
            3 => measure(&store_dir, args.runs, |store| {
                let (rows, stats, n) = export(store, size, query, &ctx, &csv_path)?;
                neutralised = n;
                Ok((rows, stats))
            })?,
            2 => measure(&store_dir, args.runs, |store| {
                let (rows, stats, total) = run_counting(store, size, query, &ctx, Some(2))?;
                count_total = total;
                Ok((rows, stats))
            })?,
            _ => measure(&store_dir, args.runs, |store| {
                let (rows, stats, _) = run_counting(store, size, query, &ctx, None)?;
                Ok((rows, stats))
            })?,
        };
        let counted = if m.stats.counters {
            format!(
                ", hourly counters: {} cells for seqs {}..{}",
                m.stats.cells, m.stats.counted.0, m.stats.counted.1
            )
        } else {
            String::new()
        };
        println!(
            "  {:<36} first {:>9.1} ms  median {:>9.1} ms  rows {:>8}  scanned {:>8} ({:.0} entries/s)  seqs {}..{}{}{counted}",
            labels[i],
            ms(m.first),
            ms(m.median),
            m.rows,
            m.stats.scanned,
            m.stats.scanned as f64 / m.median.as_secs_f64(),
            m.stats.range.0,
            m.stats.range.1,
            if m.stats.by_agent { ", agent index" } else { "" }
        );
        results.push(m);
    }
    println!(
        "  export file: {:.0} MiB, {neutralised} cell(s) neutralised",
        std::fs::metadata(&csv_path).map(|m| m.len()).unwrap_or(0) as f64 / (1024.0 * 1024.0)
    );

    if args.only != "abcd" {
        println!("(--only {}: the other queries, the checks and DuckDB are skipped)", args.only);
        std::fs::remove_dir_all(&store_dir).ok();
        return if args.only.contains('b') {
            large(&args, &plan, tmp.path(), &queries[1], &ctx)
        } else {
            Ok(())
        };
    }
    // What the generator wrote must come back.
    let expected = [truth.deny_shell, truth.agent_week, truth.agent_hours.len() as u64, size];
    for (i, m) in results.iter().enumerate() {
        ensure!(
            m.rows == expected[i],
            "{}: ledgerd returned {} rows, but the generator wrote {}",
            labels[i],
            m.rows,
            expected[i]
        );
    }
    ensure!(count_total == size as i64, "count by agent, hour sums to {count_total}, not {size}");
    let week = &results[1].stats;
    ensure!(
        week.by_agent && week.range.1 - week.range.0 < size,
        "the agent + 7-day query did not use the agent index and a time range (seqs {}..{}, agent index: {})",
        week.range.0,
        week.range.1,
        week.by_agent
    );

    // 3. DuckDB on the exported CSV.
    println!();
    let duck = if args.no_duckdb {
        println!("DuckDB comparison skipped (--no-duckdb)");
        None
    } else {
        eprintln!("running DuckDB on {} ...", csv_path.display());
        duckdb(&args, &csv_path, plan.week, &week_agent)?
    };
    if let Some(d) = &duck {
        println!(
            "DuckDB {} ({} threads) on the export; loading it into a table took {:.0} ms (not timed below)",
            d.duckdb_version, d.threads, d.load_ms
        );
        println!("row counts (ledgerd / DuckDB reading the CSV / DuckDB preloaded):");
        let mut mismatch = false;
        for (i, m) in results.iter().enumerate() {
            let (c, p) = (d.modes.csv.get(i).rows, d.modes.preloaded.get(i).rows);
            let same = c == m.rows && p == m.rows;
            mismatch |= !same;
            println!(
                "  {:<36} {:>8} / {:>8} / {:>8}  {}",
                labels[i],
                m.rows,
                c,
                p,
                if same { "same" } else { "DIFFERENT" }
            );
        }
        ensure!(!mismatch, "ledgerd and DuckDB return different row counts: the queries are not equivalent");
    }

    // 4. The table and the targets.
    println!(
        "\n{:<36} {:>11} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "query", "ledgerd ms", "(first)", "DuckDB+CSV", "DuckDB pre", "+CSV/ledgerd", "pre/ledgerd"
    );
    for (i, m) in results.iter().enumerate() {
        let lm = ms(m.median);
        let (c, p, rc, rp) = match &duck {
            Some(d) => {
                let (c, p) = (d.modes.csv.get(i), d.modes.preloaded.get(i));
                (
                    format!("{:.1}", c.median_ms),
                    format!("{:.1}", p.median_ms),
                    format!("{:.2}x", c.median_ms / lm),
                    format!("{:.2}x", p.median_ms / lm),
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<36} {:>11.1} {:>10.1} {:>12} {:>12} {:>12} {:>12}",
            labels[i],
            lm,
            ms(m.first),
            c,
            p,
            rc,
            rp
        );
    }
    if let Some(d) = &duck {
        println!(
            "(ratios are DuckDB ms / ledgerd ms: above 1 means ledgerd is faster; DuckDB first runs: {})",
            (0..4)
                .map(|i| format!(
                    "{:.0}/{:.0} ms",
                    d.modes.csv.get(i).first_ms,
                    d.modes.preloaded.get(i).first_ms
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    let scan_rate = results[0].stats.scanned as f64 / results[0].median.as_secs_f64();
    let week_ms = ms(results[1].median);
    let count_ms = ms(results[2].median);
    let met = |ok: bool| if ok { "met" } else { "NOT MET" };
    println!("\ntargets (issues 3 and 17):");
    println!(
        "  bytes on disk per entry <= 1.5x canonical leaf bytes: {:.0} vs {:.0} ({:.2}x)  {}",
        disk_bytes as f64 / size as f64,
        leaf_bytes as f64 / size as f64,
        disk_bytes as f64 / leaf_bytes as f64,
        met(disk_bytes as f64 <= 1.5 * leaf_bytes as f64)
    );
    println!(
        "  full-scan filter >= 1,000,000 entries/s:     {scan_rate:>10.0} entries/s  {}",
        met(scan_rate >= 1_000_000.0)
    );
    match &duck {
        Some(d) => {
            let pre = &d.modes.preloaded;
            let export_ms = ms(results[3].median);
            println!(
                "  CSV export at least as fast as DuckDB preloaded: {export_ms:.1} ms vs {:.1} ms  {}",
                pre.export.median_ms,
                met(export_ms <= pre.export.median_ms)
            );
            println!(
                "  full-scan filter >= 0.5x DuckDB preloaded:      {:.1} ms vs {:.1} ms ({:.2}x)  {}",
                ms(results[0].median),
                pre.scan.median_ms,
                pre.scan.median_ms / ms(results[0].median),
                met(pre.scan.median_ms / ms(results[0].median) >= 0.5)
            );
            println!(
                "  count by agent, bin(time, 1h) faster than DuckDB preloaded: {count_ms:.1} ms vs {:.1} ms  {}",
                pre.count.median_ms,
                met(count_ms < pre.count.median_ms)
            );
            println!(
                "  aggregation faster than DuckDB reading CSV:  {count_ms:.1} ms vs {:.1} ms  {}",
                d.modes.csv.count.median_ms,
                met(count_ms < d.modes.csv.count.median_ms)
            );
        }
        None => println!("  DuckDB comparisons: not measured"),
    }
    println!("  agent + 7-day query under 50 ms at {size} entries: {week_ms:.1} ms  {}", met(week_ms < 50.0));
    drop(results);
    std::fs::remove_file(&csv_path).ok();
    std::fs::remove_dir_all(&store_dir).ok();

    large(&args, &plan, tmp.path(), &queries[1], &ctx)
}

/// The agent + 7-day query again on a larger ledger (`--large-entries`; 0 skips it).
fn large(args: &Args, plan: &Plan, tmp: &Path, query: &Query, ctx: &Context) -> anyhow::Result<()> {
    if args.large_entries > 0 {
        let large = Plan { entries: args.large_entries, batch: args.large_batch, ..*plan };
        let dir = tmp.join("large");
        let start = Instant::now();
        let (size, truth) = build(&dir, &large)?;
        let built = start.elapsed();
        let m = measure(&dir, args.runs, |store| {
            let (rows, stats, _) = run_counting(store, size, query, ctx, None)?;
            Ok((rows, stats))
        })?;
        ensure!(
            m.rows == truth.agent_week,
            "agent + 7 days: {} rows, the generator wrote {}",
            m.rows,
            truth.agent_week
        );
        let store_bytes = Store::disk_bytes_of(&dir);
        println!(
            "  agent + 7-day query under 20 ms at {size} entries: {:.1} ms (first {:.1} ms, {} rows; built in {:.0} s at {:.0} entries/s, {:.0} bytes on disk per entry)  {}",
            ms(m.median),
            ms(m.first),
            m.rows,
            built.as_secs_f64(),
            size as f64 / built.as_secs_f64(),
            store_bytes as f64 / size as f64,
            if ms(m.median) < 20.0 { "met" } else { "NOT MET" }
        );
    }
    Ok(())
}
