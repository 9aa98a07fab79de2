//! `ledger-ship`: the shipper (`run`), its status (`status`) and fleet verification
//! (`fleet verify`, also reached as `ledgerctl fleet verify`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::{Args, Parser, Subcommand};
use ledger_ship::bucket::{Bucket, Endpoint};
use ledger_ship::config::{self, File};
use ledger_ship::{fleet, shipper, trust};

#[derive(Parser)]
#[command(
    name = "ledger-ship",
    version,
    about = "Ship a ledgerd log to S3-compatible storage (Parquet, leaves, signed checkpoints, proofs) and verify a fleet's bucket",
    after_help = "Credentials come from the AWS environment chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, web identity, container or instance credentials), never from flags. AWS_ENDPOINT_URL, AWS_REGION and AWS_ALLOW_HTTP are read too. See docs/FLEET.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Follow the daemon and ship its log (until SIGTERM, or once with --once)
    #[command(
        after_help = "Examples:\n  ledger-ship run --config /etc/ledger-ship.toml\n  ledger-ship run --bucket s3://audit/fleet --socket /run/ledgerd/ledgerd.sock --state-dir /var/lib/ledger-ship"
    )]
    Run(RunArgs),
    /// Print the shipper's status: shipped entries, the daemon's head, the backlog, the last error
    Status {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The shipper's state dir (default: from the config, else ./ledger-ship)
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Fleet-wide checks of a bucket
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Verify every shipped log in s3://BUCKET/PREFIX against a trust file
    #[command(
        after_help = "Exit codes (the gravest problem found decides):\n  0  every log verified\n  1  FAILED: a changed Parquet row or leaf, a missing object, a log not in the trust file\n  2  ERROR: bad usage, unreadable trust or state file\n  3  ROLLBACK: a checkpoint replaced by an older one, or older than the one --state trusted\n  4  FORK: checkpoints that do not extend each other (a log rewritten under the same key)\n  5  KEY CHANGED: a checkpoint signed by a key the trust file does not lead to\n  6  STALE: a log's newest checkpoint is older than --max-age\n  7  UNREACHABLE: the bucket cannot be reached\n\nExamples:\n  ledgerctl fleet verify s3://audit/fleet --trust fleet.trust --max-age 1h --state /var/lib/fleet-verify"
    )]
    Verify(VerifyArgs),
}

#[derive(Args)]
struct EndpointArgs {
    /// S3 endpoint URL (default: AWS, or $AWS_ENDPOINT_URL)
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    region: Option<String>,
    /// Allow an http:// endpoint
    #[arg(long)]
    allow_http: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// s3://BUCKET/PREFIX
    url: String,
    /// The trust file: one `LOG-NAME VERIFIER-KEY` line per host (or the key alone)
    #[arg(long)]
    trust: PathBuf,
    /// Report a log whose newest checkpoint is older than this (e.g. 1h)
    #[arg(long)]
    max_age: Option<String>,
    /// A directory keeping each log's last trusted checkpoint (as `verify --state`)
    #[arg(long)]
    state: Option<PathBuf>,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The config file (docs/CONFIG.md, "ledger-ship"); flags override it
    #[arg(long)]
    config: Option<PathBuf>,
    /// ledgerd's socket
    #[arg(long)]
    socket: Option<PathBuf>,
    /// s3://BUCKET/PREFIX
    #[arg(long)]
    bucket: Option<String>,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Where the cursor and status files live
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Ship at least this often (e.g. 10s)
    #[arg(long)]
    interval: Option<String>,
    /// Ship when this many entries wait; the most entries per object
    #[arg(long)]
    max_entries: Option<u64>,
    /// Ship up to the daemon's head once, then exit
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGER_SHIP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn config_file(path: Option<&PathBuf>) -> anyhow::Result<File> {
    match path {
        Some(p) => Ok(config::load(p)?),
        None => Ok(File::default()),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Status { config, state_dir, json } => {
            let file = config_file(config.as_ref())?;
            let dir = state_dir.or(file.state_dir).unwrap_or_else(|| PathBuf::from("./ledger-ship"));
            let st = shipper::read_status(&dir).map_err(|e| anyhow!(e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                let st = shipper::Status {
                    error: ledger_query::terminal::line(&st.error).into_owned(),
                    log: ledger_query::terminal::line(&st.log).into_owned(),
                    ..st
                };
                println!("bucket        {}", st.bucket);
                println!("log           {}", st.log);
                println!("shipped       {}", st.shipped);
                println!("head          {}", st.head);
                println!("backlog       {}", st.backlog);
                println!(
                    "last shipped  {}",
                    if st.last_shipped_at.is_empty() { "never" } else { &st.last_shipped_at }
                );
                if !st.error.is_empty() {
                    println!("failing since {}", st.failing_since);
                    println!("error         {}", st.error);
                }
            }
            Ok(0)
        }
        Command::Fleet(FleetCommand::Verify(args)) => verify(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut file = config_file(args.config.as_ref())?;
    file.socket = args.socket.or(file.socket);
    file.bucket = args.bucket.or(file.bucket);
    file.endpoint = args.endpoint.endpoint.or(file.endpoint);
    file.region = args.endpoint.region.or(file.region);
    file.allow_http |= args.endpoint.allow_http;
    file.state_dir = args.state_dir.or(file.state_dir);
    if let Some(i) = args.interval {
        file.batch.interval = i;
    }
    if let Some(m) = args.max_entries {
        file.batch.max_entries = m;
    }
    let settings = file.settings()?;
    let socket = settings.socket.clone();
    let mut shipper = shipper::Shipper::new(settings)?;
    if args.once {
        let mut client = ledger_client::Client::connect(&socket).await?;
        let shipped = shipper.ship_once(&mut client).await?;
        println!("shipped {shipped} entries");
        return Ok(0);
    }
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    shipper.run(shutdown).await.context("the shipper stopped")?;
    Ok(0)
}

async fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let trust = trust::load(&args.trust)?;
    let max_age = args.max_age.as_deref().map(|t| config::duration("--max-age", t)).transpose()?;
    let endpoint = Endpoint {
        url: args.endpoint.endpoint,
        region: args.endpoint.region,
        allow_http: args.endpoint.allow_http,
    };
    let bucket = Bucket::open(&args.url, &endpoint)?;
    let opts = fleet::Options { trust, max_age, state_dir: args.state };
    let started = std::time::Instant::now();
    let report = fleet::verify(&bucket, &opts).await;
    // Names and texts come from the bucket (object names, checkpoint origins): shown
    // through the project's one terminal escaping rule.
    let line = |t: String| ledger_query::terminal::line(&t).into_owned();
    for p in &report.problems {
        println!("{}", line(p.to_string()));
    }
    for l in &report.logs {
        for r in &l.rotations {
            println!("{}", line(format!("{}: {r}", l.log)));
        }
    }
    for row in report.table().lines() {
        println!("{}", line(row.to_string()));
    }
    let entries: u64 = report.logs.iter().map(|l| l.verified).sum();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} logs, {entries} entries verified in {secs:.2}s ({:.0} entries/s); {} problems",
        report.logs.len(),
        entries as f64 / secs.max(1e-9),
        report.problems.len()
    );
    Ok(report.exit_code())
}
