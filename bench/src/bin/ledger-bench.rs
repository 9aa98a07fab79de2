//! `ledger-bench`: durable append throughput and ack latency of a real daemon, against
//! the disk's own limit measured in the same run.
//!
//! Starts ledgerd in this process on a fresh temporary data dir for every run (clients
//! talk to it over its real Unix socket), then measures 1, 16 and 64 concurrent unary
//! writers and one streaming writer, one stream sustained over a growing log, and the rate
//! of 256-byte file writes with `fdatasync` after each record and after each batch, both
//! appending to a growing file and overwriting a pre-zeroed one (what ledgerd's segments
//! do; the ratios are taken against it, the faster of the two on ext4). Run it with `cargo run --release -p ledger-bench --bin ledger-bench`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "ledger-bench/sqlite_peer.rs"]
mod sqlite_peer;
use ledger_client::Client;
use ledger_proto::pb;

#[derive(Parser, Debug)]
#[command(
    about = "Measure durable appends/s and ack latency of a real ledgerd",
    after_help = "Example:\n  cargo run --release -p ledger-bench --bin ledger-bench -- --seconds 5"
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
    /// Streams sent one after another to one daemon for the sustained line (the log grows
    /// to their total); the first and the last are compared
    #[arg(long, default_value_t = 10)]
    sustained_chunks: usize,
    /// Entries in each stream of the sustained line
    #[arg(long, default_value_t = 1_000_000)]
    sustained_chunk_entries: u64,
    /// Measure only this many unary writers (and the disk at one record and at their
    /// batch), for A/B runs and profiles of one scenario
    #[arg(long, value_name = "WRITERS")]
    only_unary: Option<usize>,
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

/// What each unary caller does, over and over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `Append` one entry (durable before it returns).
    Append,
    /// `GetHead`: a round trip through the same socket, gRPC stack and role check that
    /// touches no storage; the floor under any unary append's latency.
    Head,
}

/// `writers` unary callers, each with its own connection, calling one after another
/// until `seconds` have passed. One caller runs on a thread of its own with a
/// current-thread runtime, as a shim process does (`ledgerctl append`, the Claude Code
/// hook, the MCP proxy); several run as tasks of one client process's multi-threaded
/// runtime (`rt`, whose threads [`client_cpu_time`] counts), as many agents' calls through
/// one gateway or proxy do. Returns the sample and the CPU time of a lone caller's thread
/// (zero for several: theirs is in [`client_cpu_time`]).
fn unary(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    writers: usize,
    seconds: f64,
    call: Call,
) -> anyhow::Result<(Sample, Duration)> {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let caller = move |w: usize, socket: std::path::PathBuf| async move {
        let mut client = Client::connect(&socket).await?;
        let mut lat = Vec::new();
        let mut i = w as u64 * 1_000_000_000;
        while Instant::now() < until {
            let t = Instant::now();
            match call {
                Call::Append => drop(client.append(entry(i)).await?),
                Call::Head => drop(client.head().await?),
            }
            lat.push(t.elapsed());
            i += 1;
        }
        anyhow::Ok(lat)
    };
    let (mut all, cpu) = if writers == 1 {
        let socket = socket.to_path_buf();
        let thread = std::thread::Builder::new().name(CLIENT_THREADS.into()).spawn(
            move || -> anyhow::Result<(Vec<Duration>, Duration)> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                let lat = rt.block_on(caller(0, socket))?;
                Ok((lat, thread_cpu_time()))
            },
        )?;
        thread.join().map_err(|_| anyhow::anyhow!("the caller's thread panicked"))??
    } else {
        let tasks: Vec<_> = (0..writers).map(|w| rt.spawn(caller(w, socket.to_path_buf()))).collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(rt.block_on(t)??);
        }
        (all, Duration::ZERO)
    };
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let sample =
        Sample { rate: all.len() as f64 / elapsed, p50: percentile(&all, 0.5), p99: percentile(&all, 0.99) };
    Ok((sample, cpu))
}

async fn stream(socket: &Path, n: u64) -> anyhow::Result<Sample> {
    let mut client = Client::connect(socket).await?;
    let start = Instant::now();
    let r = client.append_stream(tokio_stream::iter((0..n).map(entry))).await?;
    let elapsed = start.elapsed();
    anyhow::ensure!(r.count == n, "stream appended {} of {n}", r.count);
    Ok(Sample { rate: n as f64 / elapsed.as_secs_f64(), p50: elapsed, p99: elapsed })
}

/// Bytes of the pre-zeroed file [`disk_limit`] overwrites (from its start again at the end).
const ZEROED_BYTES: u64 = 16 << 20;

/// 256-byte records written to a file with `fdatasync` after every `batch` records:
/// appended to a growing file, or (`pre_zeroed`) written over a file of zeros that was
/// synced beforehand, as ledgerd's segments are. Returns the records/s and the CPU time
/// (this thread's, the kernel's work in the syscalls included) per `fdatasync` round.
fn disk_limit(dir: &Path, batch: usize, seconds: f64, pre_zeroed: bool) -> anyhow::Result<(f64, Duration)> {
    let path = dir.join(format!("fsync-{batch}.bin"));
    let mut file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    if pre_zeroed {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..ZEROED_BYTES >> 20 {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
    }
    let record = [0x5au8; 256];
    let cpu_before = thread_cpu_time();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let (mut n, mut at) = (0u64, 0u64);
    while Instant::now() < until {
        for _ in 0..batch {
            if pre_zeroed {
                file.write_all_at(&record, at)?;
                at = (at + 256) % ZEROED_BYTES;
            } else {
                file.write_all(&record)?;
            }
        }
        file.sync_data()?;
        n += batch as u64;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu_per_sync = (thread_cpu_time() - cpu_before) / (n / batch as u64).max(1) as u32;
    std::fs::remove_file(&path)?;
    Ok((rate, cpu_per_sync))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_usize(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v[v.len() / 2]
}

fn median_dur(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A daemon under test, in this process on its own runtime and threads, as it would run
/// in its own process; clients reach it over its real Unix socket.
struct Daemon {
    _tmp: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    socket: std::path::PathBuf,
    daemon: ledger_bench::background::Background,
}

impl Daemon {
    /// Starts a daemon on a fresh data dir, with a registered agent and its policy, so
    /// every append pays for identity resolution and the policy re-check.
    fn start(args: &Args, rt: &tokio::runtime::Runtime, scoring: Scoring) -> anyhow::Result<Daemon> {
        let tmp = tempfile::tempdir()?;
        let data_dir = tmp.path().join("data");
        let mut config = ledgerd::Config { data_dir: data_dir.clone(), ..Default::default() };
        config.scorer.enabled = scoring == Scoring::On;
        if let Some(bytes) = args.cache_bytes {
            config.storage.cache_bytes = bytes;
        }
        let daemon = ledger_bench::background::Background::start(config)?;
        let socket = daemon.ready.socket.clone();
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
        Ok(Daemon { _tmp: tmp, data_dir, socket, daemon })
    }

    /// Stops the daemon; returns how many sled blob files it left (must be 0: see the
    /// `store` module on why values stay inline).
    fn stop(self) -> anyhow::Result<usize> {
        self.daemon.stop()?;
        let blobs = self.data_dir.join("store").join("blobs");
        Ok(std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0))
    }
}

/// Whether the daemon under test scores entries (`[scorer] enabled`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scoring {
    On,
    Off,
}

/// One run of `scenario` on a fresh daemon, into `figures`; returns the sled blob files
/// the daemon left.
fn run_once(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    scoring: Scoring,
    figures: &mut Figures,
    scenario: Scenario,
) -> anyhow::Result<usize> {
    let daemon = Daemon::start(args, rt, scoring)?;
    ledgerd::scoring::commit_sizes::reset();
    let started = Instant::now();
    let cpu = cpu_time();
    let client_cpu = client_cpu_time();
    let (s, appends, writers_cpu) = match scenario {
        Scenario::Unary(writers) | Scenario::Head(writers) => {
            let call = if matches!(scenario, Scenario::Head(_)) { Call::Head } else { Call::Append };
            let (s, writers_cpu) = unary(rt, &daemon.socket, writers, args.seconds, call)?;
            let appends = s.rate * args.seconds;
            (s, appends, writers_cpu)
        }
        Scenario::Stream => (
            rt.block_on(stream(&daemon.socket, args.stream_entries))?,
            args.stream_entries as f64,
            Duration::ZERO,
        ),
    };
    let cpu = cpu_time().saturating_sub(cpu);
    let daemon_cpu =
        cpu.saturating_sub(client_cpu_time().saturating_sub(client_cpu)).saturating_sub(writers_cpu);
    figures.add(s, cpu, appends);
    figures.daemon_cpu_per_append.push(daemon_cpu.div_f64(appends.max(1.0)));
    let (commits, median_batch) = ledgerd::scoring::commit_sizes::median();
    figures.median_batch.push(median_batch);
    figures.commits.push(commits as f64 / started.elapsed().as_secs_f64());
    daemon.stop()
}

#[derive(Clone, Copy)]
enum Scenario {
    Unary(usize),
    /// `GetHead` round trips (see [`Call::Head`]) from this many callers.
    Head(usize),
    Stream,
}

/// CPU time this process has used (the daemon's threads and the benchmark's clients).
fn cpu_time() -> Duration {
    clock(rustix::time::ClockId::ProcessCPUTime)
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    clock(rustix::time::ClockId::ThreadCPUTime)
}

fn clock(id: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(id);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The name of the benchmark's own client threads: a lone unary caller's and those of the
/// runtime the other callers, the stream and the setup run on (see `main`).
const CLIENT_THREADS: &str = "bench-client";

/// CPU time of the benchmark's side: its client runtime's threads and the main thread
/// (from `/proc/self/task/*/stat`, in clock ticks of 10 ms). The daemon's share is
/// [`cpu_time`] minus this: its threads come and go, the runtime's live all along (a
/// lone unary caller's thread ends within a run and counts its own CPU time).
fn client_cpu_time() -> Duration {
    let me = std::process::id().to_string();
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        // pid (comm) state ... utime stime are fields 14 and 15; comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        if comm != CLIENT_THREADS && task.file_name().to_str() != Some(me.as_str()) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(11) + field(12);
    }
    Duration::from_millis(ticks * 10)
}

/// One scenario's figures over its runs.
#[derive(Default)]
struct Figures {
    rates: Vec<f64>,
    p50: Vec<Duration>,
    p99: Vec<Duration>,
    cpu_per_append: Vec<Duration>,
    /// The daemon's threads alone.
    daemon_cpu_per_append: Vec<Duration>,
    /// The median number of entries per group commit in each run.
    median_batch: Vec<usize>,
    /// Group commits per second in each run (each is one `fdatasync`).
    commits: Vec<f64>,
}

impl Figures {
    fn add(&mut self, sample: Sample, cpu: Duration, appends: f64) {
        self.rates.push(sample.rate);
        self.p50.push(sample.p50);
        self.p99.push(sample.p99);
        self.cpu_per_append.push(cpu.div_f64(appends.max(1.0)));
    }
}

fn print_header() {
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>11} {:>14}",
        "scenario",
        "appends/s",
        "p50",
        "p99",
        "CPU/append",
        "daemon CPU",
        "batch",
        "vs fsync/1",
        "vs fsync/batch"
    );
}

fn print_line(name: &str, f: Figures, latency: bool, fsync_1: f64, fsync_batch: f64) -> f64 {
    let rate = median(f.rates);
    let (p50, p99) = if latency {
        (format!("{:.3?}", median_dur(f.p50)), format!("{:.3?}", median_dur(f.p99)))
    } else {
        ("-".into(), "-".into())
    };
    let batch = if f.median_batch.is_empty() { 0 } else { median_usize(f.median_batch) };
    println!(
        "{:<34} {:>10.0} {:>10} {:>10} {:>10.1?} {:>10.1?} {:>6} {:>10.2}x {:>13.2}x",
        name,
        rate,
        p50,
        p99,
        median_dur(f.cpu_per_append),
        if f.daemon_cpu_per_append.is_empty() { Duration::ZERO } else { median_dur(f.daemon_cpu_per_append) },
        batch,
        rate / fsync_1,
        rate / fsync_batch,
    );
    rate
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    anyhow::ensure!(args.sustained_chunks > 0, "--sustained-chunks must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread().thread_name(CLIENT_THREADS).enable_all().build()?;
    let tmp = tempfile::tempdir()?;
    println!(
        "ledger-bench: {} run(s) per figure, medians shown, each run on a fresh daemon and data dir;\n\
         2-core machines are noisy: CPU/append (this process's CPU time per append, daemon and\n\
         clients together) moves less with background load than the rates do; `daemon CPU` is\n\
         the daemon's threads alone; `batch` is the daemon's median entries per group commit.\n",
        args.runs
    );

    // (batch, appending to a growing file, overwriting a pre-zeroed file), records/s; the
    // two interleaved, so both see the same load. The ratios below use the pre-zeroed one.
    let mut disk: Vec<(usize, f64, f64)> = Vec::new();
    // The CPU time of one fdatasync round of one record (pre-zeroed): on a VM, much of it
    // is the kernel's work and the exit to the hypervisor, which a commit pays as well.
    let sync_cpu: std::cell::RefCell<Vec<Duration>> = Default::default();
    let measure_disk = |batch: usize, disk: &mut Vec<(usize, f64, f64)>| -> anyhow::Result<f64> {
        if let Some((_, _, r)) = disk.iter().find(|(b, _, _)| *b == batch) {
            return Ok(*r);
        }
        let (mut append, mut zeroed) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            append.push(disk_limit(tmp.path(), batch, 1.0, false)?.0);
            let (rate, cpu) = disk_limit(tmp.path(), batch, 1.0, true)?;
            zeroed.push(rate);
            if batch == 1 {
                sync_cpu.borrow_mut().push(cpu);
            }
        }
        let (append, zeroed) = (median(append), median(zeroed));
        disk.push((batch, append, zeroed));
        Ok(zeroed)
    };
    for batch in [1usize, 16, 64] {
        measure_disk(batch, &mut disk)?;
    }
    let print_disk = |disk: &[(usize, f64, f64)]| {
        println!("disk limit (256-byte records, fdatasync per batch, same file system):");
        for (batch, append, zeroed) in disk {
            println!(
                "  fdatasync every {batch:>3} records  appending {append:>10.0} records/s, overwriting a pre-zeroed file {zeroed:>10.0} records/s"
            );
        }
    };
    print_disk(&disk);
    let (fsync_1_append, fsync_1) = (disk[0].1, disk[0].2);
    let fsync_latency = Duration::from_secs_f64(1.0 / fsync_1);
    let sync_cpu = median_dur(sync_cpu.borrow().clone());
    println!(
        "  one fdatasync of one record: {:.3?} appending, {fsync_latency:.3?} overwriting a pre-zeroed file ({sync_cpu:.1?} of CPU, the write and the sync)",
        Duration::from_secs_f64(1.0 / fsync_1_append)
    );
    println!();
    print_header();
    let mut blob_files = 0;
    let mut results: Vec<(usize, f64)> = Vec::new();
    // The 64-writer and stream scenarios also run with scoring off, interleaved with the
    // runs with it on, so that both see the same background load.
    let mut off_64 = Figures::default();
    let (mut p50_1, mut cpu_1, mut daemon_cpu_1) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // The 1-writer runs are interleaved with `GetHead` round trips from one caller: the
    // latency of the same socket, gRPC stack and role check without the append.
    let mut head_1 = Figures::default();
    let mut batch_64 = 1usize;
    let mut commits_64 = 0.0;
    let all_writers = [1usize, 16, 64];
    let only = args.only_unary.map(|w| [w]);
    for &writers in only.as_ref().map_or(&all_writers[..], |o| &o[..]) {
        let mut figures = Figures::default();
        for _ in 0..args.runs {
            blob_files += run_once(&args, &rt, Scoring::On, &mut figures, Scenario::Unary(writers))?;
            if writers == 1 {
                blob_files += run_once(&args, &rt, Scoring::On, &mut head_1, Scenario::Head(1))?;
            }
            if writers == 64 {
                blob_files += run_once(&args, &rt, Scoring::Off, &mut off_64, Scenario::Unary(64))?;
            }
        }
        if writers == 1 || args.only_unary == Some(writers) {
            p50_1 = median_dur(figures.p50.clone());
            cpu_1 = median_dur(figures.cpu_per_append.clone());
            daemon_cpu_1 = median_dur(figures.daemon_cpu_per_append.clone());
        }
        let batch = median_usize(figures.median_batch.clone()).max(1);
        if writers == 64 {
            batch_64 = batch;
            commits_64 = median(figures.commits.clone());
        }
        let fsync_batch = measure_disk(batch, &mut disk)?;
        let name = format!("unary, {writers} writer(s)");
        let rate = print_line(&name, figures, true, fsync_1, fsync_batch);
        results.push((writers, rate));
    }
    let floor = (!head_1.p50.is_empty()).then(|| median_dur(head_1.p50.clone()));
    if floor.is_some() {
        print_line("GetHead round trips, 1 caller", head_1, true, fsync_1, fsync_1);
    }
    // What no unary append can beat on this stack: one round trip plus one sync.
    let floor_line = |floor: Duration| {
        format!(
            "a GetHead round trip ({floor:.3?}) + one fdatasync = {:.3?} = {:.2}x one fdatasync",
            floor + fsync_latency,
            (floor + fsync_latency).as_secs_f64() / fsync_latency.as_secs_f64()
        )
    };
    if args.only_unary.is_some() {
        println!(
            "  p50 vs one fdatasync: {:.2}x; daemon CPU per append {daemon_cpu_1:.1?}",
            p50_1.as_secs_f64() / fsync_latency.as_secs_f64()
        );
        if let Some(floor) = floor {
            println!("  the floor: {}", floor_line(floor));
        }
        return Ok(());
    }
    let fsync_64 = measure_disk(batch_64, &mut disk)?;
    let mut figures = Figures::default();
    for _ in 0..args.runs {
        blob_files += run_once(&args, &rt, Scoring::On, &mut figures, Scenario::Stream)?;
    }
    print_line(
        &format!("stream, 1 writer ({}k entries)", args.stream_entries / 1000),
        figures,
        false,
        fsync_1,
        measure_disk(64, &mut disk)?,
    );
    print_line("unary, 64 writers, scoring off", off_64, true, fsync_1, fsync_64);

    // The peer a team would build instead, in process, at the daemon's commit sizes.
    let peer_dir = tmp.path().join("sqlite");
    let peer_1 = median(
        (0..args.runs)
            .map(|_| sqlite_peer::rate(&peer_dir, 1, args.seconds))
            .collect::<anyhow::Result<_>>()?,
    );
    let peer_batch = median(
        (0..args.runs)
            .map(|_| sqlite_peer::rate(&peer_dir, batch_64, args.seconds))
            .collect::<anyhow::Result<_>>()?,
    );
    println!(
        "{:<34} {:>10.0}   (one commit per record; per {batch_64}: {peer_batch:.0}/s)",
        "SQLite WAL FULL + BLAKE3 chain", peer_1
    );
    // The same peer as a team would deploy it behind 64 concurrent callers that each need
    // their entry durable before the call returns (SQLite has no group commit).
    let peer_64 = median(
        (0..args.runs)
            .map(|_| sqlite_peer::rate_concurrent(&peer_dir, 64, args.seconds))
            .collect::<anyhow::Result<_>>()?,
    );
    println!(
        "{:<34} {:>10.0}   (64 caller threads, one shared connection behind a mutex, one commit per call)",
        "SQLite peer, 64 callers", peer_64
    );

    // Sustained: one daemon, one stream after another, so the log grows to millions of
    // entries; the first and the last stream are compared.
    let daemon = Daemon::start(&args, &rt, Scoring::On)?;
    let mut chunk_rates = Vec::new();
    for _ in 0..args.sustained_chunks {
        let s = rt.block_on(stream(&daemon.socket, args.sustained_chunk_entries))?;
        chunk_rates.push(s.rate);
    }
    let store_bytes = ledgerd::storage::store::Store::disk_bytes_of(&daemon.data_dir.join("store"));
    blob_files += daemon.stop()?;
    let total = args.sustained_chunk_entries * args.sustained_chunks as u64;
    let chunks: Vec<String> = chunk_rates.iter().map(|r| format!("{:.0}k", r / 1000.0)).collect();
    println!(
        "\nsustained: one stream of {}k entries after another into one daemon, {}k in all: {}/s",
        args.sustained_chunk_entries / 1000,
        total / 1000,
        chunks.join(", ")
    );
    let (first, last) = (chunk_rates[0], chunk_rates[chunk_rates.len() - 1]);
    println!(
        "  first {first:.0}/s, last {last:.0}/s ({:+.1}%); store {:.0} MiB = {:.0} bytes per entry",
        100.0 * (last - first) / first,
        store_bytes as f64 / (1024.0 * 1024.0),
        store_bytes as f64 / total.max(1) as f64
    );

    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let rate_of = |w: usize| results.iter().find(|(x, _)| *x == w).map_or(0.0, |(_, r)| *r);
    println!("\ntargets (issue 17; every baseline measured above, in this run):");
    println!(
        "  1 writer p50 <= 1.5x one fdatasync: {} ({p50_1:.3?} vs {fsync_latency:.3?}: {:.2}x)",
        met(p50_1.as_secs_f64() <= 1.5 * fsync_latency.as_secs_f64()),
        p50_1.as_secs_f64() / fsync_latency.as_secs_f64()
    );
    if let Some(floor) = floor {
        println!("    the floor under it: {}", floor_line(floor));
    }
    println!(
        "  1 writer CPU per append <= 150 us: {} (daemon {daemon_cpu_1:.1?}, of which the raw write + fdatasync of one record costs {sync_cpu:.1?} on its own; with the client {cpu_1:.1?})",
        met(daemon_cpu_1 <= Duration::from_micros(150))
    );
    println!(
        "  64 writers >= 0.5x fdatasync at the median batch of {batch_64}: {} ({:.0}/s vs {fsync_64:.0}/s: {:.2}x)",
        met(rate_of(64) >= 0.5 * fsync_64),
        rate_of(64),
        rate_of(64) / fsync_64
    );
    // The median hides how the entries were spread: a few large commits and many of one
    // or two give a small median. Each commit is one sync, so the rate of commits against
    // the disk's rate of syncs shows how busy the daemon kept the disk.
    println!(
        "    its commits: {commits_64:.0}/s ({:.1} entries each on average), each one fdatasync; the disk syncs one record {fsync_1:.0} times/s: {:.2}x",
        rate_of(64) / commits_64.max(1.0),
        commits_64 / fsync_1
    );
    println!(
        "  64 writers >= 2x SQLite peer at commits of {batch_64} (one thread batching for them): {} ({:.0}/s vs {peer_batch:.0}/s: {:.2}x)",
        met(rate_of(64) >= 2.0 * peer_batch),
        rate_of(64),
        rate_of(64) / peer_batch
    );
    println!(
        "  64 writers >= 2x SQLite peer with 64 callers, one commit per call: {} ({:.0}/s vs {peer_64:.0}/s: {:.2}x)",
        met(rate_of(64) >= 2.0 * peer_64),
        rate_of(64),
        rate_of(64) / peer_64
    );
    println!(
        "  the ceiling at the median batch of {batch_64}: fdatasync per {batch_64} records {fsync_64:.0}/s pre-zeroed; \
         the single-thread peer there reaches {:.2}x of it, so 2x the peer needs {:.2}x the disk",
        peer_batch / fsync_64,
        2.0 * peer_batch / fsync_64
    );
    println!(
        "  1 writer vs SQLite peer at one commit per record: {:.0}/s vs {peer_1:.0}/s: {:.2}x",
        rate_of(1),
        rate_of(1) / peer_1
    );
    println!(
        "  one stream sustained over {}k, no downward slope: first {}k {first:.0}/s, last {}k {last:.0}/s ({:+.1}%)",
        total / 1000,
        args.sustained_chunk_entries / 1000,
        args.sustained_chunk_entries / 1000,
        100.0 * (last - first) / first
    );
    println!("sled blob files written (must be 0; they would need their own sync): {blob_files}");
    println!();
    // Every batch size measured, the daemon's median batches included.
    print_disk(&disk);
    Ok(())
}
