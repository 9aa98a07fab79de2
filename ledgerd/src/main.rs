//! The `ledgerd` binary: flags, logging and signals; the work is in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ledgerd::Config;

/// ledgerd: a tamper-evident audit ledger for AI agents' tool calls.
///
/// Serves gRPC on a Unix socket, appends every decision to a BLAKE3 Merkle log on disk
/// before acknowledging it, and signs Ed25519 checkpoints over the log.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  ledgerd                                  # ./ledger-data, socket ./ledger-data/ledgerd.sock\n  ledgerd --data-dir /var/lib/ledgerd --socket /run/ledgerd/ledgerd.sock\n  ledgerd --config /etc/ledgerd/ledgerd.toml\n  ledgerd --check-config /etc/ledgerd/ledgerd.toml\n  ledgerd --config /etc/ledgerd/ledgerd.toml --rotate-key   # with ledgerd stopped"
)]
struct Args {
    /// Data directory (created with mode 0700) [default: $LEDGERD_DATA_DIR or ./ledger-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Socket path [default: <data-dir>/ledgerd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// TOML config file (see docs/CONFIG.md); flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate a config file, print the effective config, and exit
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Rebuild the registry, policy and agent-index projections from the log, then exit
    /// (the daemon must be stopped)
    #[arg(long)]
    rebuild_projections: bool,
    /// Rotate the signing key, then exit (the daemon must be stopped): the log gets a
    /// `key_rotated` entry signed by the old key naming the new one (docs/DEPLOY.md)
    #[arg(long, conflicts_with = "rebuild_projections")]
    rotate_key: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: in journald or a log file they are escape codes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGERD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match real_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledgerd: error: {e:#}");
            if e.downcast_ref::<ledgerd::daemon::StorageFailed>().is_some() {
                ExitCode::from(ledgerd::daemon::EXIT_STORAGE_FAILED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    if let Some(path) = &args.check_config {
        let config = Config::load(path)?;
        print!("{}", config.to_toml());
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => {
            // It says who may connect and with which role: only ledgerd's user or root may
            // have written it.
            ledgerd::storage::datadir::owned_if_present(path)?;
            Config::load(path)?
        }
        None => Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(socket) = args.socket {
        config.socket = Some(socket);
    }
    if args.rebuild_projections {
        let n = ledgerd::daemon::rebuild_projections(&config)?;
        println!(
            "rebuilt the registry and policies from {n} admin entries, the agent index and the hourly counters"
        );
        return Ok(());
    }
    if args.rotate_key {
        let r = ledgerd::rotate::rotate_key(&config)?;
        println!(
            "rotated: entry {} (key_rotated) names the new key; the tree of {} entries is signed by both keys\nold key (kept as {}): {}\nnew key (now in verifier.vkey): {}\nGive the new verifier.vkey to your verifiers; `ledgerctl verify --state` follows the rotation by itself.",
            r.seq, r.size, r.retired_file, r.old_key, r.new_key
        );
        return Ok(());
    }
    let runtime = ledgerd::runtime_builder().build()?;
    runtime.block_on(async {
        // Installed before anything else happens: a SIGTERM that arrives as soon as the
        // ready line is out must start a clean shutdown, not kill the process outright.
        let shutdown = shutdown_signal()?;
        ledgerd::run(config, shutdown, |ready| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{ready}");
            let _ = out.flush();
        })
        .await
    })
}

/// Installs the SIGTERM and SIGINT handlers now, and returns a future that resolves on
/// either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| anyhow::anyhow!("cannot handle SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
