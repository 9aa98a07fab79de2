//! `ledgerctl`: the command line for writers, auditors and admins. This file holds the
//! flags and the dispatch; each command group is its own module (shared table/CSV output
//! in [`print`]); the work is in the `ledger_client` library and the `ledger_shims`.
//!
//! Exit codes: 0 success; 1 a check failed (verification, proof); 2 an error (bad
//! usage, daemon unreachable, refused call). `verify --state` adds 3 to 7
//! (`ledger_client::state::exit`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ledger_client::state::Alarm;
use ledger_client::{Client, default_socket};
use ledger_proto::pb;
use ledger_query::terminal;

/// The allocator of ledgerctl and so of the shims it runs (the LLM gateway serves many
/// requests and allocates per response), as the daemon's (`ledgerd/src/lib.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access_review;
mod agents;
mod append;
mod completions;
mod deadline;
mod evidence;
mod fleet;
mod policy;
mod print;
mod proofs;
mod query;
mod shim;
mod status;
mod tail;

use access_review::access_review;
use agents::agents;
use append::append;
use completions::generated;
use evidence::{evidence, verify_bundle};
use policy::policy;
use print::write_out;
use proofs::{prove, verify_log, verify_state};
use query::{export, run_query};
use shim::shim;
use status::status;
use tail::{tail, watch};

#[derive(Parser, Debug)]
#[command(
    name = "ledgerctl",
    version,
    about = "Talk to ledgerd: append decisions, read the log, prove and verify it.",
    after_help = "The socket is --socket, else $LEDGER_SOCKET, else ${LEDGERD_DATA_DIR:-./ledger-data}/ledgerd.sock.\n\nExit codes: 0 success, 1 a check failed, 2 error (verify --state has more: see its --help).\n\nExamples:\n  ledgerctl append --agent billing-bot --tool db.query --decision allow --params '{\"sql\":\"select 1\"}'\n  ledgerctl tail -n 20\n  ledgerctl checkpoint > pinned.note\n  ledgerctl verify --checkpoint pinned.note"
)]
struct Cli {
    /// Path of ledgerd's Unix socket
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// How long ledgerd may stay silent (connecting, answering, or mid-stream: a live daemon
    /// answers pings while it works), e.g. "30s", "2m" [default: 10s; 60s for `policy set`
    /// and `evidence`]
    #[arg(long, global = true, value_name = "DURATION", env = "LEDGER_TIMEOUT")]
    timeout: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append a decision (or a JSON-lines file of them); prints the new seq
    #[command(
        after_help = "Examples:\n  ledgerctl append --agent billing-bot --tool db.query --decision allow --rule read-invoices --params '{\"sql\":\"select * from invoices\"}'\n  ledgerctl append --jsonl decisions.jsonl\n  producer | ledgerctl append --jsonl -\n\nJSON lines carry the same names: {\"agent\":\"a\",\"tool\":\"t\",\"decision\":\"deny\",\"params\":{\"path\":\"/etc\"},\"rule\":\"r\",\"policy_version\":3,\"reason\":\"...\",\"session\":\"s\",\"action\":\"x\"}"
    )]
    Append(AppendArgs),
    /// Print the latest signed checkpoint note (exactly its text)
    #[command(after_help = "Examples:\n  ledgerctl checkpoint > pinned.note\n  ledgerctl checkpoint --new")]
    Checkpoint {
        /// Sign a new checkpoint first
        #[arg(long)]
        new: bool,
    },
    /// Fetch and verify the inclusion proof of one entry
    #[command(
        after_help = "Examples:\n  ledgerctl prove 42\n  ledgerctl prove 42 --checkpoint pinned.note --key verifier.vkey"
    )]
    Prove {
        /// The entry's seq
        seq: u64,
        /// Prove against this saved checkpoint instead of the latest
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Recompute every leaf and the root, check the latest checkpoint and any pinned ones;
    /// or, with --state, check the log only grew since the checkpoint trusted last time
    #[command(after_help = VERIFY_HELP)]
    Verify {
        /// A checkpoint note saved earlier; the log must still contain it (repeatable)
        #[arg(long = "checkpoint", value_name = "FILE", conflicts_with = "state")]
        checkpoints: Vec<PathBuf>,
        #[command(flatten)]
        key: KeyArg,
        /// Keep the last trusted checkpoint (and the pinned key) in FILE: check the latest
        /// against it, then replace it; created on first use
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// With --state: also recompute every leaf and the root (without --state, verify
        /// always does)
        #[arg(long, requires = "state")]
        full: bool,
        /// With --state: exit 6 if the latest checkpoint is older than this while the log
        /// holds entries past it (ledgerd stopped signing), e.g. "15m", "1h"
        #[arg(long, value_name = "DURATION", requires = "state")]
        max_age: Option<String>,
    },
    /// Show the daemon's health: tree, checkpoint age, publishing, uptime, load
    #[command(
        after_help = "Examples:\n  ledgerctl status\n  ledgerctl status --format json | jq .publish\n\nAny role may ask. A publishing target that keeps failing shows its failures, last error and next retry."
    )]
    Status {
        /// Output format
        #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
        format: StatusFormat,
    },
    /// Run a query over the log (docs/QUERY.md); exit 0 rows found, 1 none, 2 error
    #[command(after_help = QUERY_HELP)]
    Query {
        /// The query, e.g. 'last 7d decision = deny | count by agent'
        query: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Export entries as CSV for an auditor (all fields, spreadsheet-safe)
    #[command(
        after_help = "Examples:\n  ledgerctl export --from 2026-01-01 --to 2026-04-01 --out q1.csv\n  ledgerctl export --agent billing-bot --agent ops-bot --decision deny --out denies.csv\n  ledgerctl export --from '7d ago' --query 'tool ~ \"shell.*\"' > shell.csv\n\nCells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) get a leading ' (see docs/QUERY.md); how many is reported on stderr."
    )]
    Export(ExportArgs),
    /// Write an evidence bundle for a period: entries, proofs, CSV views, summary, signed manifest
    #[command(
        after_help = "Examples:\n  ledgerctl evidence --from 2026-01-01 --to 2026-04-01 --out q1-evidence\n  ledgerctl evidence --from 2026-03-01 --to 2026-03-02 --agent billing-bot --out incident\n\nThe export is first recorded in the log (an evidence_exported entry: who asked, which period), and the bundle proves that entry. The bundle is checked offline with `ledgerctl verify-bundle DIR --key FILE` (docs/FORMAT.md, \"Evidence bundle\")."
    )]
    Evidence(EvidenceArgs),
    /// Check an evidence bundle offline: manifest, checkpoint, leaves, range proof, CSV rows
    #[command(
        name = "verify-bundle",
        after_help = "Examples:\n  ledgerctl verify-bundle q1-evidence --key trusted-verifier.vkey\n\nExit 0 when every check holds; 1 names the first check that fails; 2 usage errors."
    )]
    VerifyBundle(VerifyBundleArgs),
    /// The agent registry: register, list, show, update, retire, rotate tokens
    #[command(
        subcommand,
        after_help = "Examples:\n  ledgerctl agents register billing-bot --owner finance@example.com --purpose 'reconcile invoices'\n  ledgerctl agents list\n  ledgerctl agents retire billing-bot --reason 'replaced by billing-bot-2'"
    )]
    Agents(AgentsCommand),
    /// Agent policies: set, show, history, diff, check
    #[command(
        subcommand,
        after_help = "Examples:\n  ledgerctl policy set billing-bot --file billing-bot.policy --author alice --reason 'CHG-1234'\n  ledgerctl policy history billing-bot\n  ledgerctl policy check billing-bot --tool db.query"
    )]
    Policy(PolicyCommand),
    /// For every agent registered at a moment: the policy in force and what it allows
    #[command(
        name = "access-review",
        after_help = "Examples:\n  ledgerctl access-review\n  ledgerctl access-review --at 2026-03-31 --format csv > q1-access-review.csv"
    )]
    AccessReview {
        /// The moment to review (RFC 3339 or a date) [default: now]
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Enforcement shims: decide tool calls under the agent's policy before they run (docs/SHIMS.md)
    #[command(
        subcommand,
        after_help = "Examples:\n  ledgerctl shim claude-code --agent coder < pre-tool-use.json\n  ledgerctl shim mcp --agent analyst -- python3 my_server.py"
    )]
    Shim(ShimCommand),
    /// Print a shell completion script for bash, zsh or fish
    #[command(
        after_help = "Examples:\n  ledgerctl completions bash > /etc/bash_completion.d/ledgerctl\n  ledgerctl completions zsh > /usr/local/share/zsh/site-functions/_ledgerctl\n  ledgerctl completions fish > ~/.config/fish/completions/ledgerctl.fish"
    )]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write man pages generated from these commands (ledgerctl.1, ledgerctl-SUBCOMMAND.1)
    #[command(
        after_help = "Examples:\n  ledgerctl man --out /usr/local/share/man/man1\n  ledgerctl man | man -l -"
    )]
    Man {
        /// Write every page into DIR [default: print ledgerctl.1 on stdout]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Show the newest entries as a table
    #[command(after_help = "Examples:\n  ledgerctl tail\n  ledgerctl tail -n 100 --follow")]
    Tail {
        /// How many of the newest entries to show
        #[arg(short = 'n', default_value_t = 10)]
        n: u64,
        /// Keep printing entries as they are appended
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Stream entries as they are committed, with their severity and flags
    #[command(
        after_help = "Examples:\n  ledgerctl watch --min-severity 8\n  ledgerctl watch --agent billing-bot --format json | jq .flags\n\nOne entry per line as soon as it is durable (json: every field, as `ledgerctl query --format json` shows it). A watcher that reads too slowly is told on stderr how many entries it missed; appends never wait for it. Runs until interrupted; exit 2 if the daemon is unreachable or goes away."
    )]
    Watch {
        /// Only entries of at least this severity (1-10; docs/SEVERITY.md)
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10))]
        min_severity: u32,
        /// Only this agent's entries
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = WatchFormat::Table)]
        format: WatchFormat,
    },
    /// Fleet-wide checks of shipped logs in S3-compatible storage (runs `ledger-ship fleet`)
    #[command(
        subcommand,
        after_help = "Examples:\n  ledgerctl fleet verify s3://audit/fleet --trust fleet.trust --max-age 1h\n\nThe logs are shipped by ledger-ship (docs/FLEET.md); this runs `ledger-ship fleet …`, installed next to ledgerctl or on PATH."
    )]
    Fleet(FleetCommand),
}

#[derive(Subcommand, Debug)]
enum FleetCommand {
    /// Verify every shipped log in s3://BUCKET/PREFIX against a trust file
    #[command(
        after_help = "Examples:\n  ledgerctl fleet verify s3://audit/fleet --trust fleet.trust\n  ledgerctl fleet verify s3://audit/fleet --trust fleet.trust --max-age 1h --state /var/lib/fleet-verify\n\nOptions (after the URL): --trust FILE (one `LOG-NAME VERIFIER-KEY` line per host, or the key alone), --max-age D, --state DIR, --endpoint URL, --region R, --allow-http. Credentials come from the AWS environment chain.\n\nExit codes: 0 every log verified; 1 FAILED (a changed row or leaf, a missing object); 2 error; 3 ROLLBACK; 4 FORK; 5 KEY CHANGED; 6 STALE (--max-age); 7 UNREACHABLE. See docs/FLEET.md."
    )]
    Verify {
        /// s3://BUCKET/PREFIX, then the options
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1.., value_name = "URL [OPTIONS]")]
        args: Vec<std::ffi::OsString>,
    },
}

/// `watch` prints as it goes: a table (no CSV: its header would come once, its widths
/// never fit) or JSON lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WatchFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
enum ShimCommand {
    /// Claude Code hook: reads the PreToolUse/PostToolUse JSON on stdin, answers allow or deny
    #[command(
        name = "claude-code",
        after_help = "In .claude/settings.json (see docs/SHIMS.md):\n  {\"hooks\": {\"PreToolUse\": [{\"matcher\": \"*\", \"hooks\": [{\"type\": \"command\", \"command\": \"ledgerctl shim claude-code --agent coder\"}]}]}}\n\nExamples:\n  ledgerctl shim claude-code --agent coder < pre-tool-use.json\n  LEDGER_AGENT=coder LEDGER_AGENT_TOKEN=lgt_... ledgerctl shim claude-code\n\nExit codes: 0 with the answer on stdout; 2 on any error, with the reason on stderr (Claude Code then blocks the tool). Never another code."
    )]
    ClaudeCode {
        #[command(flatten)]
        shim: ShimArgs,
    },
    /// MCP stdio proxy: runs the MCP server COMMAND and decides every tools/call it is sent
    #[command(
        after_help = "Examples:\n  ledgerctl shim mcp --agent analyst -- npx -y @modelcontextprotocol/server-filesystem /data\n  ledgerctl shim mcp --agent analyst --token \"$TOKEN\" -- python3 my_server.py\n  ledgerctl shim mcp --agent analyst --heartbeat 5m -- python3 my_server.py\n\nDenied calls get a tool result with isError: true naming the rule and the ledger seq; tools/list hides tools the policy never allows. Every --heartbeat and at exit the proxy records a shim_heartbeat entry holding the number of its last decision, so a lost decision shows as a gap. Exit status: the server's (2 on a proxy error)."
    )]
    Mcp {
        #[command(flatten)]
        shim: ShimArgs,
        /// Record a shim_heartbeat this often (200ms, 30s, 5m, 1h); 0 or off: only the one at exit
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = ledger_shims::mcp::parse_heartbeat)]
        heartbeat: std::time::Duration,
        /// The MCP server to run, and its arguments (after --)
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// LLM gateway: the agent's model API; decides every tool call in each response
    #[command(
        after_help = "Point the agent at it, with its ledgerd token as the API key (see docs/SHIMS.md):\n  ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_API_KEY=lgt_... python3 agent.py\n  OPENAI_BASE_URL=http://127.0.0.1:8787/v1 OPENAI_API_KEY=lgt_... python3 agent.py\n\nExamples:\n  ANTHROPIC_API_KEY=sk-ant-... ledgerctl shim llm --listen 127.0.0.1:8787\n  ledgerctl shim llm --config /etc/ledger-gateway/gateway.toml\n\nPrints `ready listen=ADDR` once listening; runs until SIGTERM."
    )]
    Llm {
        #[command(flatten)]
        args: ledger_shims::llm::LlmArgs,
    },
}

#[derive(Args, Debug)]
struct ShimArgs {
    /// The agent whose policy decides [default: $LEDGER_AGENT, else claude-code for the hook]
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// The agent's token, sent with every entry
    #[arg(
        long,
        value_name = "T",
        env = "LEDGER_AGENT_TOKEN",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    token: String,
    /// Allow calls when no decision can be made or recorded (loud on stderr, recorded when possible)
    #[arg(long)]
    fail_open: bool,
}

const VERIFY_HELP: &str = "Examples:
  ledgerctl verify
  ledgerctl verify --checkpoint monday.note --checkpoint tuesday.note --key verifier.vkey
  ledgerctl verify --state verify.state --key /etc/ledgerd/verifier.vkey --max-age 1h
  ledgerctl verify --state verify.state --full

Without --state: exit 0 when everything holds; 1 names the first entry or checkpoint that
fails; 2 on an error.

With --state FILE, one line on stdout (ok) or stderr (anything else), and the exit code:
  0  ok: the log grew consistently (or trusted on first use: no FILE yet; or a key
     rotation, named by the pinned key in a key_rotated entry, was followed)
  1  FAILED: another verification failure (bad signature, bad proof, a changed entry)
  2  error: bad usage, unreadable FILE or key, a refused call
  3  ROLLBACK: the latest checkpoint covers fewer entries than the trusted one
  4  FORK: the log does not extend the trusted checkpoint (same or larger size)
  5  KEY CHANGED: the checkpoint is signed by a key the pinned key never named
  6  STALE: the latest checkpoint is older than --max-age and the log grew past it
  7  UNREACHABLE: the daemon cannot be reached
FILE is replaced (atomically) only when the exit code is 0. --key is the key pinned on
first use; afterwards FILE's key is used.";

const QUERY_HELP: &str = "Examples:
  ledgerctl query 'during 2026-Q1 agent = \"build-bot\" and decision = deny | sort time desc'
  ledgerctl query 'last 7d decision = deny | count by bin(time, 1h) | sort count desc | limit 24'
  ledgerctl query 'kind = policy_changed | fields time, agent, author, approver, reason' --format csv
  ledgerctl query 'last 30d (hour(time) < 6 or weekday(time) in [sat, sun]) | count by agent' --tz Europe/Berlin

The language is described in docs/QUERY.md. Exit codes: 0 rows found, 1 no rows, 2 error.";

#[derive(Args, Debug)]
struct OutputArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Time zone for times shown and for hour(), weekday(), date(), bin() and dates [default: UTC]
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum StatusFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
struct EvidenceArgs {
    /// The period starts at this time (RFC 3339 or a date, UTC)
    #[arg(long, value_name = "T")]
    from: String,
    /// The period ends before this time (cut at now)
    #[arg(long, value_name = "T")]
    to: String,
    /// Narrow the CSV views and the summary to this agent (repeatable; the leaves stay whole)
    #[arg(long = "agent", value_name = "A")]
    agents: Vec<String>,
    /// The directory to write (new or empty)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct VerifyBundleArgs {
    /// The bundle directory
    dir: PathBuf,
    /// The ledger's verifier key, obtained out of band [default: the bundle's own, which proves little]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Entries at or after this time (RFC 3339, a date, or e.g. '7d ago')
    #[arg(long, value_name = "T")]
    from: Option<String>,
    /// Entries before this time
    #[arg(long, value_name = "T")]
    to: Option<String>,
    /// Only this agent (repeatable)
    #[arg(long = "agent", value_name = "A")]
    agents: Vec<String>,
    /// Only this action (repeatable)
    #[arg(long = "action", value_name = "X")]
    actions: Vec<String>,
    /// Only this decision
    #[arg(long, value_enum)]
    decision: Option<DecisionArg>,
    /// A further filter expression in the query language (no stages)
    #[arg(long, value_name = "EXPR")]
    query: Option<String>,
    /// Write to FILE instead of stdout (written whole or not at all)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Time zone for the times written [default: UTC]
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
}

#[derive(Subcommand, Debug)]
enum AgentsCommand {
    /// Register an agent; prints its id and its token (shown once)
    #[command(
        after_help = "Examples:\n  ledgerctl agents register billing-bot --owner finance-platform@example.com --purpose 'reconcile invoices' --scope 'invoices db, read-only'"
    )]
    Register {
        name: String,
        /// Who answers for this agent
        #[arg(long)]
        owner: String,
        /// What it is for
        #[arg(long)]
        purpose: String,
        /// What it may touch, in words
        #[arg(long, default_value = "")]
        scope: String,
    },
    /// List registered agents
    #[command(
        after_help = "Examples:\n  ledgerctl agents list\n  ledgerctl agents list --retired --at 2026-03-31"
    )]
    List {
        /// Include retired agents
        #[arg(long)]
        retired: bool,
        /// The registry as it stood at this time (RFC 3339 or a date)
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show one agent
    #[command(after_help = "Examples:\n  ledgerctl agents show billing-bot")]
    Show { name: String },
    /// Change an agent's owner, purpose or scope
    #[command(
        after_help = "Examples:\n  ledgerctl agents update billing-bot --owner ap-team@example.com --reason 'team change'"
    )]
    Update {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        purpose: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        /// Why
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Retire an agent: its later calls are still recorded, and flagged
    #[command(
        after_help = "Examples:\n  ledgerctl agents retire billing-bot --reason 'replaced by billing-bot-2'"
    )]
    Retire {
        name: String,
        /// Why (required)
        #[arg(long)]
        reason: String,
    },
    /// Issue a new token for an agent (the old one stops matching)
    #[command(name = "rotate-token", after_help = "Examples:\n  ledgerctl agents rotate-token billing-bot")]
    RotateToken {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Set an agent's policy (a new version) from a file
    #[command(
        after_help = "Examples:\n  ledgerctl policy set billing-bot --file billing-bot.policy --author alice --approver bob --reason 'CHG-1234: read invoices'\n  ledgerctl policy set '*' --file default.policy --author alice --reason 'deny by default'\n\nThe document format is in docs/POLICY.md. It is checked first; errors show the line and column."
    )]
    Set {
        /// The agent, or '*' for the default policy
        agent: String,
        /// The policy document ('-' for stdin)
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Who wrote the change
        #[arg(long)]
        author: String,
        /// Who approved it
        #[arg(long, default_value = "")]
        approver: String,
        /// Why (a ticket reference helps auditors)
        #[arg(long)]
        reason: String,
    },
    /// Print a policy document
    #[command(
        after_help = "Examples:\n  ledgerctl policy show billing-bot\n  ledgerctl policy show billing-bot --version 1\n  ledgerctl policy show billing-bot --at 2026-02-01T09:00:00Z"
    )]
    Show {
        agent: String,
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// The version in force at this time (RFC 3339 or a date)
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Every version of a policy: when, who, who approved, why
    #[command(after_help = "Examples:\n  ledgerctl policy history billing-bot")]
    History {
        agent: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// A unified diff between two versions
    #[command(after_help = "Examples:\n  ledgerctl policy diff billing-bot 1 2")]
    Diff { agent: String, from: u64, to: u64 },
    /// Which rule decides a call, and why (nothing is appended)
    #[command(
        after_help = "Examples:\n  ledgerctl policy check billing-bot --tool db.query --params '{\"sql\":\"select 1\"}'\n  ledgerctl policy check ops-bot --tool shell.exec\n\nExit 0 when the call would be allowed, 1 when denied."
    )]
    Check {
        agent: String,
        #[arg(long)]
        tool: String,
        #[arg(long, value_name = "JSON", default_value = "")]
        params: String,
    },
}

#[derive(Args, Debug)]
struct KeyArg {
    /// The ledger's verifier key (verifier.vkey) [default: next to the socket, then in the data dir]
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct AppendArgs {
    /// Read JSON lines from FILE ('-' for stdin) and send them as one stream
    #[arg(long, value_name = "FILE", conflicts_with_all = ["agent", "tool", "decision"])]
    jsonl: Option<PathBuf>,
    /// The agent that made the call
    #[arg(long, required_unless_present = "jsonl")]
    agent: Option<String>,
    /// The tool it called
    #[arg(long, required_unless_present = "jsonl")]
    tool: Option<String>,
    /// The decision taken
    #[arg(long, value_enum, required_unless_present = "jsonl")]
    decision: Option<DecisionArg>,
    /// What the call does, in a word (read, write, exec, ...)
    #[arg(long)]
    action: Option<String>,
    /// The call's parameters as a JSON object
    #[arg(long, value_name = "JSON")]
    params: Option<String>,
    /// The policy rule that decided
    #[arg(long)]
    rule: Option<String>,
    /// The policy version that decided
    #[arg(long, value_name = "N")]
    policy_version: Option<u64>,
    /// Why, in words
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The agent's session id
    #[arg(long)]
    session: Option<String>,
    /// The agent's token (from `agents register`)
    #[arg(long, env = "LEDGER_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DecisionArg {
    Allow,
    Deny,
}

impl From<DecisionArg> for pb::Decision {
    fn from(d: DecisionArg) -> Self {
        match d {
            DecisionArg::Allow => pb::Decision::Allow,
            DecisionArg::Deny => pb::Decision::Deny,
        }
    }
}

/// A query that ran but found nothing: exit code 1, no message.
#[derive(Debug)]
struct NoRows;

impl std::fmt::Display for NoRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no rows")
    }
}
impl std::error::Error for NoRows {}

/// An error message that is already laid out (a query error with its caret).
#[derive(Debug)]
struct Rendered(String);

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Rendered {}

/// An error that maps to exit code 1 (a check failed) rather than 2.
#[derive(Debug)]
struct CheckFailed(String);

impl std::fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for CheckFailed {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Fleet(FleetCommand::Verify { args }) = &cli.command {
        return ExitCode::from(fleet::run("verify", args));
    }
    if let Command::Shim(cmd) = cli.command {
        return shim(cli.socket, cmd);
    }
    if matches!(cli.command, Command::Completions { .. } | Command::Man { .. }) {
        return generated(cli.command);
    }
    match deadline::timeout(&cli) {
        Ok(t) => ledger_client::set_timeout(t),
        Err(e) => {
            eprintln!("ledgerctl: error: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledgerctl: error: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<NoRows>().is_some() => ExitCode::from(1),
        Err(e) if e.downcast_ref::<tonic::Status>().is_some_and(ledger_client::is_timeout) => {
            let after = ledger_client::timeout();
            eprintln!("ledgerctl: error: {}", ledger_client::ClientError::Timeout { after });
            ExitCode::from(2)
        }
        // The daemon's own words, without the gRPC wrapping.
        Err(e) if e.downcast_ref::<tonic::Status>().is_some() => {
            let message =
                e.downcast_ref::<tonic::Status>().map(|s| s.message().to_string()).unwrap_or_default();
            eprintln!("ledgerctl: error: {}", terminal::text(&message));
            ExitCode::from(2)
        }
        Err(e) if e.downcast_ref::<Alarm>().is_some() => {
            let code = e.downcast_ref::<Alarm>().map_or(2, Alarm::exit_code);
            eprintln!("ledgerctl: {}", terminal::text(&e.to_string()));
            ExitCode::from(code)
        }
        Err(e) if e.downcast_ref::<CheckFailed>().is_some() => {
            eprintln!("ledgerctl: FAILED: {}", terminal::text(&e.to_string()));
            ExitCode::from(1)
        }
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Query errors are already rendered, caret and all; stderr gets them with the final
        // newline every other message has.
        Err(e) if e.downcast_ref::<Rendered>().is_some() => {
            eprintln!("{}", terminal::text(e.to_string().trim_end_matches('\n')));
            ExitCode::from(2)
        }
        Err(e)
            if matches!(
                e.downcast_ref::<ledger_client::ClientError>(),
                Some(ledger_client::ClientError::Query { .. })
            ) =>
        {
            eprintln!("{}", terminal::text(e.to_string().trim_end_matches('\n')));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ledgerctl: error: {}", terminal::text(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// Whether the error is a closed stdout (`ledgerctl query … | head`): not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let socket = cli.socket.clone().unwrap_or_else(default_socket);
    match cli.command {
        Command::Append(args) => append(&socket, args).await,
        Command::Checkpoint { new } => {
            let cp = Client::connect(&socket).await?.checkpoint(new).await?;
            write_out(cp.note.as_bytes())
        }
        Command::Prove { seq, checkpoint, key } => prove(&socket, seq, checkpoint.as_deref(), &key).await,
        Command::Verify { state: Some(state), key, full, max_age, .. } => {
            verify_state(&socket, state, &key, full, max_age.as_deref()).await
        }
        Command::Verify { checkpoints, key, .. } => verify_log(&socket, &checkpoints, &key).await,
        Command::Status { format } => status(&socket, format).await,
        Command::Tail { n, follow } => tail(&socket, n, follow).await,
        Command::Watch { min_severity, agent, format } => {
            watch(&socket, min_severity, agent.as_deref().unwrap_or(""), format).await
        }
        Command::Query { query, out } => run_query(&socket, &query, &out).await,
        Command::Export(args) => export(&socket, &args).await,
        Command::Evidence(args) => evidence(&socket, &args).await,
        Command::VerifyBundle(args) => verify_bundle(&args),
        Command::Agents(cmd) => agents(&socket, cmd).await,
        Command::Policy(cmd) => policy(&socket, cmd).await,
        Command::AccessReview { at, format } => access_review(&socket, at.as_deref(), format).await,
        Command::Shim(_) => bail!("the shims run outside this runtime"),
        Command::Completions { .. } | Command::Man { .. } => bail!("generated without a runtime"),
        Command::Fleet(_) => bail!("run by ledger-ship"),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}
