//! `evidence-bench`: evidence bundle export and offline verification on a large ledger
//! (issue 7: a million entries, target under 20 s each).
//!
//! Builds a ledger through the library (`Store` + `Log::append`, durable group commits with
//! synthetic, increasing receive times over 30 days), starts the daemon in-process on it,
//! then times `ledger_client::evidence::export::export` over the whole period (every entry
//! in the bundle) and `ledger_client::evidence::verify::verify_bundle` on the result, the
//! code paths of `ledgerctl evidence` and `ledgerctl verify-bundle`. Run it with
//! `cargo run --release -p ledger-bench --bin evidence-bench` (add `-- --entries 100000` for a
//! quick run).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use clap::Parser;
use ledger_client::Client;
use ledger_client::evidence::{export, verify};
use ledger_proto::pb;
use ledgerd::Config;

#[derive(Parser, Debug)]
#[command(
    about = "Time evidence bundle export and verification on a synthetic ledger",
    after_help = "Example:\n  cargo run --release -p ledger-bench --bin evidence-bench -- --entries 100000"
)]
struct Args {
    /// Entries in the ledger (all of them go into the bundle)
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Entries per group commit while building (each commit ends with an fdatasync)
    #[arg(long, default_value_t = 1000)]
    batch: u64,
}

/// 2026-01-01T00:00:00Z, in ns: the first entry's time.
const T0: i64 = 1_767_225_600_000_000_000;
const DAY: i64 = 86_400_000_000_000;

fn entry(i: u64) -> pb::Entry {
    let agent = i % 20;
    let deny = i.is_multiple_of(11);
    pb::Entry {
        kind: pb::Kind::Decision as i32,
        agent: format!("agent-{agent:02}"),
        session: format!("sess-{agent:02}-{}", i / 5000),
        action: "read".into(),
        tool: if deny { "shell.exec".into() } else { "db.query".into() },
        params: format!(r#"{{"sql":"select * from invoices where id = {i}"}}"#),
        decision: if deny { pb::Decision::Deny } else { pb::Decision::Allow } as i32,
        rule: if deny { "no-shell".into() } else { "read-invoices".into() },
        policy_version: 1,
        reason: if deny { "=shell is never allowed".into() } else { "matched read-invoices".into() },
        writer_uid: 1000,
        host: "bench-host".into(),
        ..Default::default()
    }
}

fn build(dir: &Path, args: &Args) -> anyhow::Result<()> {
    let plan = ledger_bench::ledger::Plan {
        key_name: "evidence-bench.example",
        entries: args.entries,
        batch: args.batch,
        start_ns: T0,
        span_ns: 30 * DAY,
    };
    ledger_bench::ledger::build(dir, &plan, entry)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.entries > 0 && args.batch > 0, "--entries and --batch must be positive");
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    build(&data_dir, &args)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = Config { data_dir: data_dir.clone(), ..Config::default() };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let daemon = tokio::spawn(ledgerd::run(
            config,
            async move {
                let _ = stop_rx.await;
            },
            move |ready| {
                let _ = ready_tx.send(ready.socket.clone());
            },
        ));
        let socket = ready_rx.await.context("the daemon did not start")?;
        let mut client = Client::connect(&socket).await?;

        let out = tmp.path().join("bundle");
        let opts = export::ExportOptions {
            from_unix_nanos: T0,
            to_unix_nanos: T0 + 31 * DAY,
            agents: Vec::new(),
            out: out.clone(),
            progress: false,
        };
        let start = Instant::now();
        let done = export::export(&mut client, &opts).await?;
        let export_secs = start.elapsed().as_secs_f64();
        let bytes: u64 = ledger_client::evidence::manifest_files(&out)
            .map_err(anyhow::Error::msg)?
            .iter()
            .filter_map(|f| std::fs::metadata(out.join(&f.path)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "export: {} entries ({}..={}) in {export_secs:.2} s, {:.1} MB written",
            done.events,
            done.first_seq,
            done.last_seq,
            bytes as f64 / 1e6
        );

        let start = Instant::now();
        let report = verify::verify_bundle(&out, Some(&data_dir.join("verifier.vkey")))
            .map_err(|e| anyhow::anyhow!("the bundle does not verify: {e}"))?;
        let verify_secs = start.elapsed().as_secs_f64();
        println!("verify: {} rows checked against their leaves in {verify_secs:.2} s", report.events_rows);
        ensure!(report.events_rows as u64 == args.entries, "every entry is in the bundle");

        let _ = stop_tx.send(());
        daemon.await??;
        anyhow::Ok(())
    })
}
