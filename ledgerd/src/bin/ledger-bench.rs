//! `ledger-bench`: durable append throughput and ack latency of a real daemon, against
//! the disk's own limit measured in the same run.
//!
//! Starts ledgerd in this process on a temporary data dir (clients talk to it over its
//! real Unix socket), then measures 1, 16 and 64 concurrent unary writers and one
//! streaming writer, and the rate of 256-byte file appends with `fdatasync` after each
//! record and after each batch. Run it with `cargo run --release -p ledgerd --bin ledger-bench`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use ledger_client::Client;
use ledger_proto::pb;

#[derive(Parser, Debug)]
#[command(
    about = "Measure durable appends/s and ack latency of a real ledgerd",
    after_help = "Example:\n  cargo run --release -p ledgerd --bin ledger-bench -- --seconds 5"
)]
struct Args {
    /// Seconds each unary scenario runs
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Entries the streaming writer sends
    #[arg(long, default_value_t = 300_000)]
    stream_entries: u64,
    /// sled page cache of the daemon under test [default: the daemon's default]
    #[arg(long)]
    cache_bytes: Option<u64>,
    /// Repeat every measurement this many times and report medians
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// The policy the benchmark's decisions are re-checked against: the matching rule is the
/// fourth, after a regex and two globs that do not match.
const BENCH_POLICY: &str = "rule no-shell: deny tool ~ \"shell.*\"
rule sql-select: allow tool = \"db.query\" and params.sql ~ /(?i)^select /
rule no-secrets: deny tool ~ \"fs.*\" and params.path ~ \"/etc/**\"
rule read-reports: allow tool = \"fs.read_file\" and params.path ~ \"/srv/data/**\"
default deny
";

/// A ~256-byte decision, the size of a typical shim record.
fn entry(i: u64) -> pb::NewEntry {
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: "bench-agent".into(),
        tool: "fs.read_file".into(),
        decision: pb::Decision::Allow as i32,
        params: format!(
            r#"{{"path":"/srv/data/reports/2026/q3/customer-{i:08}.csv","offset":0,"limit":4096}}"#
        ),
        rule: "read-reports".into(),
        policy_version: 1,
        reason: "matched rule read-reports".into(),
        session: "bench-session-0001".into(),
        ..Default::default()
    }
}

struct Sample {
    rate: f64,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn unary(socket: &Path, writers: usize, seconds: f64) -> anyhow::Result<Sample> {
    let mut tasks = Vec::new();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    for w in 0..writers {
        let mut client = Client::connect(socket).await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w as u64 * 1_000_000_000;
            while Instant::now() < until {
                let t = Instant::now();
                client.append(entry(i)).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    Ok(Sample { rate: all.len() as f64 / elapsed, p50: percentile(&all, 0.5), p99: percentile(&all, 0.99) })
}

async fn stream(socket: &Path, n: u64) -> anyhow::Result<Sample> {
    let mut client = Client::connect(socket).await?;
    let start = Instant::now();
    let r = client.append_stream(tokio_stream::iter((0..n).map(entry))).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(r.count == n, "stream appended {} of {n}", r.count);
    Ok(Sample { rate: n as f64 / elapsed.as_secs_f64(), p50: elapsed, p99: elapsed })
}

/// 256-byte records appended to a file with `fdatasync` after every `batch` records.
fn disk_limit(dir: &Path, batch: usize, seconds: f64) -> anyhow::Result<f64> {
    let path = dir.join(format!("fsync-{batch}.bin"));
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let record = [0x5au8; 256];
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    while Instant::now() < until {
        for _ in 0..batch {
            file.write_all(&record)?;
        }
        file.sync_data()?;
        n += batch as u64;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_dur(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    let mut config = ledgerd::Config { data_dir: data_dir.clone(), ..Default::default() };
    if let Some(bytes) = args.cache_bytes {
        config.storage.cache_bytes = bytes;
    }
    let socket = config.socket_path();

    // The daemon runs on its own runtime and threads, as it would in its own process.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(ledgerd::run(
            config,
            async {
                let _ = stop_rx.await;
            },
            move |ready| {
                let _ = ready_tx.send(ready.to_string());
            },
        ))
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(30))?;
    eprintln!("{ready}");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // A registered agent with a realistic policy, so every append pays for identity
    // resolution and the policy re-check the daemon does on each decision.
    rt.block_on(async {
        let mut client = Client::connect(&socket).await?;
        let admin = client.admin();
        admin
            .register_agent(pb::RegisterAgentRequest {
                name: "bench-agent".into(),
                owner: "bench@example.com".into(),
                purpose: "benchmark".into(),
                scope: String::new(),
            })
            .await?;
        admin
            .set_policy(pb::SetPolicyRequest {
                agent: "bench-agent".into(),
                text: BENCH_POLICY.into(),
                author: "ledger-bench".into(),
                approver: String::new(),
                reason: "benchmark policy".into(),
            })
            .await?;
        anyhow::Ok(())
    })?;
    println!("ledger-bench: {} run(s) per figure, medians shown; 2-core machines are noisy\n", args.runs);

    let mut disk = Vec::new();
    for batch in [1usize, 16, 64] {
        let rates: Vec<f64> =
            (0..args.runs).map(|_| disk_limit(tmp.path(), batch, 1.0)).collect::<anyhow::Result<_>>()?;
        disk.push((batch, median(rates)));
    }
    println!("disk limit (256-byte records, fdatasync per batch, same file system):");
    for (batch, rate) in &disk {
        println!("  fdatasync every {batch:>3} records  {rate:>10.0} records/s");
    }
    let disk_rate = |b: usize| disk.iter().find(|(x, _)| *x == b).map_or(1.0, |(_, r)| *r);
    println!();
    println!(
        "{:<22} {:>12} {:>10} {:>10} {:>14} {:>14}",
        "scenario", "appends/s", "p50", "p99", "vs fsync/1", "vs fsync/batch"
    );
    for writers in [1usize, 16, 64] {
        let mut rates = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for _ in 0..args.runs {
            let s = rt.block_on(unary(&socket, writers, args.seconds))?;
            rates.push(s.rate);
            p50.push(s.p50);
            p99.push(s.p99);
        }
        let rate = median(rates);
        println!(
            "{:<22} {:>12.0} {:>10.3?} {:>10.3?} {:>13.2}x {:>13.2}x",
            format!("unary, {writers} writer(s)"),
            rate,
            median_dur(p50),
            median_dur(p99),
            rate / disk_rate(1),
            rate / disk_rate(writers),
        );
    }
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        let s = rt.block_on(stream(&socket, args.stream_entries))?;
        eprintln!("  stream run: {:.0} appends/s", s.rate);
        rates.push(s.rate);
    }
    let rate = median(rates);
    println!(
        "{:<22} {:>12.0} {:>10} {:>10} {:>13.2}x {:>13.2}x",
        "stream, 1 writer",
        rate,
        "-",
        "-",
        rate / disk_rate(1),
        rate / disk_rate(64)
    );
    println!("\ntargets: 64 unary writers >= 25000/s; one stream >= 100000/s; 1 writer p99 < 2 ms");
    let blobs = data_dir.join("store").join("blobs");
    let blob_files = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    println!("sled blob files written (must be 0; they would need their own sync): {blob_files}");

    let _ = stop_tx.send(());
    daemon.join().map_err(|_| anyhow::anyhow!("daemon thread panicked"))??;
    Ok(())
}
