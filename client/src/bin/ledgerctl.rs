//! `ledgerctl`: the command line for writers, auditors and admins. Flags and output
//! only; the work is in the `ledger_client` library.
//!
//! Exit codes: 0 success; 1 a check failed (verification, proof); 2 an error (bad
//! usage, daemon unreachable, refused call). `verify --state` adds 3 to 7
//! (`ledger_client::state::exit`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ledger_client::state::Alarm;
use ledger_client::verify::{self, Failure, LogWalk, Pinned};
use ledger_client::{Client, default_data_dir, default_socket};
use ledger_proto::note::NoteVerifier;
use ledger_proto::pb;
use tokio_stream::StreamExt;

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
        after_help = "Examples:\n  ledgerctl evidence --from 2026-01-01 --to 2026-04-01 --out q1-evidence\n  ledgerctl evidence --from 2026-03-01 --to 2026-03-02 --agent billing-bot --out incident\n\nThe bundle is checked offline with `ledgerctl verify-bundle DIR --key FILE` (docs/FORMAT.md, \"Evidence bundle\")."
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
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = ledger_client::shim::mcp::parse_heartbeat)]
        heartbeat: std::time::Duration,
        /// The MCP server to run, and its arguments (after --)
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// LLM gateway: the agent's model API; decides every tool call in each response
    #[command(
        after_help = "Point the agent at it, with its ledgerd token as the API key (see docs/SHIMS.md):\n  ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_API_KEY=lgt_... python3 agent.py\n  OPENAI_BASE_URL=http://127.0.0.1:8787/v1 OPENAI_API_KEY=lgt_... python3 agent.py\n\nExamples:\n  ANTHROPIC_API_KEY=sk-ant-... ledgerctl shim llm --listen 127.0.0.1:8787\n  ledgerctl shim llm --config /etc/ledgerd/gateway.toml\n\nPrints `ready listen=ADDR` once listening; runs until SIGTERM."
    )]
    Llm {
        #[command(flatten)]
        args: ledger_client::shim::llm::LlmArgs,
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

impl ShimArgs {
    fn options(self, socket: PathBuf, default_agent: &str) -> ledger_client::shim::ShimOptions {
        let agent = self
            .agent
            .or_else(|| std::env::var("LEDGER_AGENT").ok().filter(|a| !a.is_empty()))
            .unwrap_or_else(|| default_agent.to_string());
        ledger_client::shim::ShimOptions { socket, agent, token: self.token, fail_open: self.fail_open }
    }
}

/// The shims manage their own runtime and exit codes (the hook must never exit with a code
/// other than 0 or 2).
fn shim(explicit_socket: Option<PathBuf>, cmd: ShimCommand) -> ExitCode {
    let socket = explicit_socket.clone().unwrap_or_else(default_socket);
    match cmd {
        ShimCommand::ClaudeCode { shim } => {
            ledger_client::shim::claude::main(shim.options(socket, "claude-code"))
        }
        ShimCommand::Llm { args } => ledger_client::shim::llm::main(args, explicit_socket, socket),
        ShimCommand::Mcp { shim, heartbeat, command } => {
            if shim.agent.is_none() && std::env::var("LEDGER_AGENT").map_or(true, |a| a.is_empty()) {
                eprintln!("ledgerctl shim mcp: error: name the agent with --agent NAME (or $LEDGER_AGENT)");
                return ExitCode::from(2);
            }
            ledger_client::shim::mcp::main(shim.options(socket, ""), heartbeat, &command)
        }
    }
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

#[derive(Clone, Copy, Debug, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    if let Command::Shim(cmd) = cli.command {
        return shim(cli.socket, cmd);
    }
    if matches!(cli.command, Command::Completions { .. } | Command::Man { .. }) {
        return generated(cli.command);
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
        // The daemon's own words, without the gRPC wrapping.
        Err(e) if e.downcast_ref::<tonic::Status>().is_some() => {
            let message =
                e.downcast_ref::<tonic::Status>().map(|s| s.message().to_string()).unwrap_or_default();
            eprintln!("ledgerctl: error: {message}");
            ExitCode::from(2)
        }
        Err(e) if e.downcast_ref::<Alarm>().is_some() => {
            let code = e.downcast_ref::<Alarm>().map_or(2, Alarm::exit_code);
            eprintln!("ledgerctl: {e}");
            ExitCode::from(code)
        }
        Err(e) if e.downcast_ref::<CheckFailed>().is_some() => {
            eprintln!("ledgerctl: FAILED: {e}");
            ExitCode::from(1)
        }
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        // Query errors are already rendered, caret and all.
        Err(e) if e.downcast_ref::<Rendered>().is_some() => {
            eprint!("{e}");
            ExitCode::from(2)
        }
        Err(e)
            if matches!(
                e.downcast_ref::<ledger_client::ClientError>(),
                Some(ledger_client::ClientError::Query { .. })
            ) =>
        {
            eprint!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("ledgerctl: error: {e:#}");
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
    }
}

fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

async fn append(socket: &Path, args: AppendArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.jsonl {
        return append_jsonl(socket, path).await;
    }
    let params = match &args.params {
        Some(p) => normalize_params(p).context("--params")?,
        None => String::new(),
    };
    let entry = pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: args.agent.unwrap_or_default(),
        tool: args.tool.unwrap_or_default(),
        decision: args.decision.map_or(pb::Decision::Unspecified, pb::Decision::from) as i32,
        action: args.action.unwrap_or_default(),
        params,
        rule: args.rule.unwrap_or_default(),
        policy_version: args.policy_version.unwrap_or(0),
        reason: args.reason.unwrap_or_default(),
        session: args.session.unwrap_or_default(),
        agent_token: args.token.unwrap_or_default(),
        ..Default::default()
    };
    let ack = Client::connect(socket).await?.append(entry).await?;
    write_out(format!("{}\n", ack.seq).as_bytes())
}

/// Parses and re-serializes parameters so what is stored is compact, valid JSON.
fn normalize_params(text: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| anyhow!("not valid JSON ({e}); pass an object such as '{{\"path\":\"/tmp/x\"}}'"))?;
    Ok(value.to_string())
}

/// One line of `append --jsonl`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    agent: String,
    tool: String,
    decision: DecisionArg,
    #[serde(default)]
    action: String,
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    policy_version: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    session: String,
}

fn parse_line(line: &str) -> anyhow::Result<pb::NewEntry> {
    // serde_json counts lines within the text it parsed; on one line, only the column helps.
    let j: JsonLine = serde_json::from_str(line).map_err(|e| {
        anyhow!(
            "{}",
            e.to_string()
                .replace(&format!(" at line 1 column {}", e.column()), &format!(" (column {})", e.column()))
        )
    })?;
    let params = match j.params {
        None | Some(serde_json::Value::Null) => String::new(),
        // A string holding JSON is accepted too, as the producers send it.
        Some(serde_json::Value::String(s)) => normalize_params(&s).context("params")?,
        Some(v) => v.to_string(),
    };
    Ok(pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: j.agent,
        tool: j.tool,
        decision: pb::Decision::from(j.decision) as i32,
        action: j.action,
        params,
        rule: j.rule,
        policy_version: j.policy_version,
        reason: j.reason,
        session: j.session,
        ..Default::default()
    })
}

async fn append_jsonl(socket: &Path, path: &Path) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead + Send> = if path == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut client = Client::connect(socket).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::NewEntry>(1024);
    // Lines are parsed on a plain thread and streamed as they come; the first bad line
    // ends the stream there, so nothing from it on is appended.
    let parser = std::thread::spawn(move || -> Option<(u64, String)> {
        for (i, line) in reader.lines().enumerate() {
            let n = i as u64 + 1;
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some((n, format!("cannot read: {e}"))),
            };
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line) {
                Ok(entry) => {
                    if tx.blocking_send(entry).is_err() {
                        return None;
                    }
                }
                Err(e) => return Some((n, format!("{e:#}"))),
            }
        }
        None
    });
    let result = client.append_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let bad = parser.join().map_err(|_| anyhow!("the line reader panicked"))?;
    let summary = |r: &pb::AppendStreamResponse| {
        if r.count == 0 {
            "appended 0 entries".to_string()
        } else {
            format!("appended {} entries, last seq {}", r.count, r.last_seq)
        }
    };
    match (result, bad) {
        (Ok(r), None) => write_out(format!("{}\n", summary(&r)).as_bytes()),
        (Ok(r), Some((line, why))) => {
            eprintln!("{}", summary(&r));
            bail!("{}: line {line}: {why}; nothing from that line on was appended", path.display())
        }
        (Err(e), _) => Err(e.into()),
    }
}

/// Finds the verifier key: --key, else next to the socket, else in the data dir.
fn load_key(socket: &Path, key: &KeyArg) -> anyhow::Result<NoteVerifier> {
    let candidates: Vec<PathBuf> = match &key.key {
        Some(k) => vec![k.clone()],
        None => {
            let mut c = Vec::new();
            if let Some(dir) = socket.parent() {
                c.push(dir.join("verifier.vkey"));
            }
            c.push(default_data_dir().join("verifier.vkey"));
            c
        }
    };
    for path in &candidates {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                return NoteVerifier::parse(&text)
                    .with_context(|| format!("{} is not a verifier key", path.display()));
            }
            Err(e) if key.key.is_some() => return Err(anyhow!("cannot read key {}: {e}", path.display())),
            Err(_) => {}
        }
    }
    bail!(
        "no verifier key found (looked for {}); pass --key FILE with the ledger's verifier.vkey",
        display_list(&candidates)
    )
}

fn display_list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn read_pinned(path: &Path, verifier: &NoteVerifier) -> anyhow::Result<Pinned> {
    let note = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let checkpoint = verify::checkpoint(verifier, &note)
        .map_err(|f| CheckFailed(format!("pinned checkpoint {}: {f}", path.display())))?;
    Ok(Pinned { name: path.display().to_string(), checkpoint })
}

async fn prove(socket: &Path, seq: u64, pinned: Option<&Path>, key: &KeyArg) -> anyhow::Result<()> {
    let verifier = load_key(socket, key)?;
    let mut client = Client::connect(socket).await?;
    let cp = match pinned {
        Some(path) => read_pinned(path, &verifier)?.checkpoint,
        None => {
            let latest = client.checkpoint(false).await?;
            verify::checkpoint(&verifier, &latest.note).map_err(|f| CheckFailed(f.to_string()))?
        }
    };
    let proof = client.prove(seq, cp.size).await?;
    let entry = verify::inclusion(&proof, &cp).map_err(|f| CheckFailed(f.to_string()))?;
    write_out(
        format!(
            "ok: entry {seq} is leaf {} of the tree of {} entries with root {} (signed by {})\nleaf hash {}, proof of {} hashes\nentry: {} {} {} {}\n",
            seq,
            cp.size,
            verify::hex(&cp.root),
            verifier.name(),
            verify::hex(&proof.leaf_hash),
            proof.path.len(),
            time_text(entry.time_unix_nanos),
            pb::Kind::name_of(entry.kind),
            entry.agent,
            entry.tool,
        )
        .as_bytes(),
    )
}

async fn verify_log(socket: &Path, pinned_files: &[PathBuf], key: &KeyArg) -> anyhow::Result<()> {
    let verifier = load_key(socket, key)?;
    let pinned =
        pinned_files.iter().map(|p| read_pinned(p, &verifier)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut client = Client::connect(socket).await?;
    let latest = client.checkpoint(false).await?;
    let cp = verify::checkpoint(&verifier, &latest.note)
        .map_err(|f| CheckFailed(format!("latest checkpoint: {f}")))?;
    let fail = |f: Failure| anyhow::Error::new(CheckFailed(f.to_string()));

    // Consistency proofs first: they are cheap and name the checkpoint that fails.
    for pin in &pinned {
        if pin.checkpoint.size > cp.size {
            return Err(fail(Failure::PinnedBeyond {
                name: pin.name.clone(),
                pinned: pin.checkpoint.size,
                size: cp.size,
            }));
        }
        let proof = client.consistency(pin.checkpoint.size, cp.size).await?;
        verify::consistency(pin, &cp, &proof).map_err(fail)?;
    }

    let mut walk = LogWalk::new(pinned).map_err(fail)?;
    let mut stream = client.entries(0, cp.size, false).await?;
    while let Some(item) = stream.next().await {
        walk.push(&item?).map_err(fail)?;
    }
    let size = walk.size();
    walk.finish(&cp).map_err(fail)?;
    write_out(
        format!(
            "ok: {size} entries recomputed; root {} matches the checkpoint signed by {}; {} pinned checkpoint(s) consistent\n",
            verify::hex(&cp.root),
            verifier.name(),
            pinned_files.len()
        )
        .as_bytes(),
    )
}

async fn verify_state(
    socket: &Path,
    state: PathBuf,
    key: &KeyArg,
    full: bool,
    max_age: Option<&str>,
) -> anyhow::Result<()> {
    use ledger_client::state;
    let max_age = match max_age {
        Some(text) => {
            let d: jiff::SignedDuration =
                text.parse().map_err(|e| anyhow!("--max-age {text:?}: {e}; write e.g. \"15m\" or \"1h\""))?;
            Some(std::time::Duration::try_from(d).map_err(|_| anyhow!("--max-age cannot be negative"))?)
        }
        None => None,
    };
    let pinned = state::load(&state)?;
    // The key matters only on first use; afterwards the state file's key (which follows
    // rotations) is the one that counts.
    let key = match &pinned {
        None => Some(load_key(socket, key)?),
        Some(s) => {
            if let Some(path) = &key.key
                && let Ok(text) = std::fs::read_to_string(path)
                && text.trim() != s.key
            {
                eprintln!(
                    "ledgerctl: note: {} differs from the key pinned in {} (which follows key rotations); using the pinned key",
                    path.display(),
                    state.display()
                );
            }
            None
        }
    };
    let opts = state::Options { state, key, full, max_age };
    let report = state::check(socket, &opts).await?;
    write_out(format!("{}\n", report.line).as_bytes())
}

async fn status(socket: &Path, format: StatusFormat) -> anyhow::Result<()> {
    let status = Client::connect(socket).await?.status().await?;
    match format {
        StatusFormat::Table => write_out(ledger_client::status::table(&status).as_bytes()),
        StatusFormat::Json => write_out(
            format!("{}\n", serde_json::to_string_pretty(&ledger_client::status::json(&status))?).as_bytes(),
        ),
    }
}

async fn tail(socket: &Path, n: u64, follow: bool) -> anyhow::Result<()> {
    let mut client = Client::connect(socket).await?;
    let head = client.head().await?;
    let start = head.size.saturating_sub(n);
    let mut stream = client.entries(start, if follow { 0 } else { head.size }, follow).await?;
    let mut rows = Vec::new();
    let columns = ["SEQ", "TIME", "KIND", "AGENT", "TOOL", "DECISION", "RULE", "REASON"];
    // Without --follow the whole table is known, so widths fit it; with --follow the first
    // screenful sets them (at least the stream widths) and later rows keep them.
    // (With nothing to show yet, a follower starts with the header alone.)
    while start < head.size
        && let Some(item) = stream.next().await
    {
        let item = item?;
        let Some(e) = item.entry else { continue };
        rows.push(row(&e));
        if follow && e.seq + 1 >= head.size {
            break;
        }
    }
    if !follow {
        return print_table(&columns, &rows);
    }
    let widths = table_widths(&columns, &rows, &stream_widths(&columns));
    print_aligned(&widths, &columns, &rows, true)?;
    while let Some(item) = stream.next().await {
        if let Some(e) = item?.entry {
            print_aligned(&widths, &columns, &[row(&e)], false)?;
        }
    }
    Ok(())
}

async fn watch(socket: &Path, min_severity: u32, agent: &str, format: WatchFormat) -> anyhow::Result<()> {
    let mut stream = Client::connect(socket).await?.watch(min_severity, agent).await?;
    let render = ledger_client::wire::EntryRenderer::default();
    // The `tail` columns, with the severity and its flags after the time.
    let columns = ["SEQ", "TIME", "SEV", "FLAGS", "KIND", "AGENT", "TOOL", "DECISION", "RULE", "REASON"];
    let widths = table_widths(&columns, &[], &stream_widths(&columns));
    if format == WatchFormat::Table {
        print_aligned(&widths, &columns, &[], true)?;
    }
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::watch_event::Event::Entry(e)) => match format {
                WatchFormat::Json => write_out(render.json_line(&e).as_bytes())?,
                WatchFormat::Table => {
                    let mut cells = row(&e);
                    cells.insert(2, e.severity.to_string());
                    cells.insert(3, e.flags.join(","));
                    print_aligned(&widths, &columns, &[cells], false)?;
                }
            },
            Some(pb::watch_event::Event::Missed(n)) => {
                eprintln!(
                    "ledgerctl: missed {n} entries: this watcher fell behind; find them with `ledgerctl query`"
                )
            }
            None => {}
        }
    }
    bail!("ledgerd closed the stream (it is stopping); run `ledgerctl watch` again once it is back")
}

fn row(e: &pb::Entry) -> Vec<String> {
    vec![
        e.seq.to_string(),
        time_text(e.time_unix_nanos),
        pb::Kind::name_of(e.kind).to_string(),
        e.agent.clone(),
        e.tool.clone(),
        pb::Decision::name_of(e.decision).to_string(),
        e.rule.clone(),
        e.reason.clone(),
    ]
}

fn print_table(columns: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    print_aligned(&table_widths(columns, rows, &[]), columns, rows, true)
}

/// Column widths that fit the header and `rows`, and are at least `min` (by position).
fn table_widths(columns: &[&str], rows: &[Vec<String>], min: &[usize]) -> Vec<usize> {
    let mut widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.chars().count().max(min.get(i).copied().unwrap_or(0)))
        .collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// Widths for tables printed a row at a time (`tail --follow`, `watch`): wide enough for
/// typical cells, so that later rows line up with the header (a longer cell only pushes
/// the rest of its own row).
const STREAM_WIDTHS: &[(&str, usize)] = &[
    ("SEQ", 6),
    ("TIME", 24),
    ("SEV", 3),
    ("FLAGS", 24),
    ("KIND", 14),
    ("AGENT", 16),
    ("TOOL", 24),
    ("DECISION", 8),
    ("RULE", 16),
];

fn stream_widths(columns: &[&str]) -> Vec<usize> {
    columns.iter().map(|c| STREAM_WIDTHS.iter().find(|(n, _)| n == c).map_or(0, |(_, w)| *w)).collect()
}

/// Left-aligned columns of the given widths, separated by two spaces.
fn print_aligned(
    widths: &[usize],
    columns: &[&str],
    rows: &[Vec<String>],
    header: bool,
) -> anyhow::Result<()> {
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            l.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if header {
        line(&mut columns.iter().copied());
    }
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    write_out(out.as_bytes())
}

fn time_text(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|_| nanos.to_string())
}

/// Resolves `--tz` (checked here so a typo fails before the daemon is asked).
fn time_zone(tz: Option<&str>) -> anyhow::Result<(String, jiff::tz::TimeZone)> {
    match tz {
        None | Some("") => Ok((String::new(), jiff::tz::TimeZone::UTC)),
        Some(name) => {
            let zone = jiff::tz::TimeZone::get(name).map_err(|e| {
                anyhow!("unknown time zone {name:?} ({e}); use an IANA name such as Europe/Berlin or UTC")
            })?;
            Ok((name.to_string(), zone))
        }
    }
}

/// Parses locally first: errors show at once, rendered with carets, without a daemon.
fn check_query(text: &str) -> anyhow::Result<()> {
    ledger_query::parse(text).map(|_| ()).map_err(|e| Rendered(e.render(text)).into())
}

async fn run_query(socket: &Path, text: &str, out: &OutputArgs) -> anyhow::Result<()> {
    check_query(text)?;
    let (tz_name, tz) = time_zone(out.tz.as_deref())?;
    let mut stream = Client::connect(socket).await?.query(text, &tz_name).await?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut count = 0usize;
    match out.format {
        Format::Table => {
            // A table's widths depend on every row, so it is laid out at the end.
            let mut rows = Vec::new();
            while let Some(chunk) = stream.next_rows().await? {
                rows.extend(chunk);
            }
            count = rows.len();
            if count > 0 {
                let rs = ledger_query::ResultSet { columns: stream.columns.clone(), rows };
                ledger_query::write_table(&mut w, &rs, &tz)?;
            }
        }
        Format::Csv => {
            let mut csv = ledger_query::CsvWriter::new(&mut w, &stream.columns, tz.clone())?;
            while let Some(chunk) = stream.next_rows().await? {
                count += chunk.len();
                csv.write_rows(&chunk)?;
            }
            report_neutralised(csv.finish()?);
        }
        Format::Json => {
            while let Some(chunk) = stream.next_rows().await? {
                count += chunk.len();
                ledger_query::write_json_rows(&mut w, &stream.columns, &chunk, &tz)?;
            }
        }
    }
    w.flush()?;
    if count == 0 {
        return Err(NoRows.into());
    }
    Ok(())
}

fn report_neutralised(n: usize) {
    if n > 0 {
        eprintln!(
            "note: {n} cell(s) began with =, +, -, @, tab or CR and were prefixed with ' so a spreadsheet shows them as text instead of running them (docs/QUERY.md explains how to undo it)"
        );
    }
}

/// Quotes a value for the query language.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The query an export's flags stand for.
fn export_query(args: &ExportArgs) -> String {
    let mut parts = Vec::new();
    if let Some(from) = &args.from {
        parts.push(format!("time >= {}", time_literal(from)));
    }
    if let Some(to) = &args.to {
        parts.push(format!("time < {}", time_literal(to)));
    }
    let list = |items: &[String]| items.iter().map(|i| quoted(i)).collect::<Vec<_>>().join(", ");
    if !args.agents.is_empty() {
        parts.push(format!("agent in [{}]", list(&args.agents)));
    }
    if !args.actions.is_empty() {
        parts.push(format!("action in [{}]", list(&args.actions)));
    }
    if let Some(d) = args.decision {
        parts.push(format!("decision = {}", pb::Decision::from(d).name()));
    }
    if let Some(q) = &args.query {
        parts.push(format!("({q})"));
    }
    parts.join(" and ")
}

/// Time flags may be written as in queries (`2026-01-01`, `7d ago`, RFC 3339).
fn time_literal(t: &str) -> String {
    t.trim().to_string()
}

async fn export(socket: &Path, args: &ExportArgs) -> anyhow::Result<()> {
    let text = export_query(args);
    check_query(&text)?;
    let (tz_name, tz) = time_zone(args.tz.as_deref())?;
    let mut stream = Client::connect(socket).await?.query(&text, &tz_name).await?;
    let progress = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} exporting: {human_pos} rows, {per_sec} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let (out, tmp): (Box<dyn Write>, Option<(PathBuf, PathBuf)>) = match &args.out {
        Some(path) => {
            let tmp = path.with_extension("csv.partial");
            let file =
                std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(file)), Some((tmp, path.clone())))
        }
        None => (Box::new(std::io::BufWriter::new(std::io::stdout().lock())), None),
    };
    let result = async {
        let mut csv = ledger_query::CsvWriter::new(out, &stream.columns, tz.clone())?;
        let mut count = 0u64;
        while let Some(chunk) = stream.next_rows().await? {
            count += chunk.len() as u64;
            csv.write_rows(&chunk)?;
            progress.set_position(count);
        }
        let neutralised = csv.finish()?;
        anyhow::Ok((count, neutralised))
    }
    .await;
    progress.finish_and_clear();
    match (result, tmp) {
        (Ok((count, neutralised)), Some((tmp, path))) => {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot move the export to {}", path.display()))?;
            eprintln!("exported {count} rows to {}", path.display());
            report_neutralised(neutralised);
            Ok(())
        }
        (Ok((_, neutralised)), None) => {
            report_neutralised(neutralised);
            Ok(())
        }
        (Err(e), tmp) => {
            if let Some((tmp, _)) = tmp {
                let _ = std::fs::remove_file(tmp);
            }
            Err(e)
        }
    }
}

/// Parses `--at`: RFC 3339, or a date (midnight UTC). Returns nanoseconds.
fn parse_at(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    let ts = t
        .parse::<jiff::Timestamp>()
        .or_else(|_| {
            t.parse::<jiff::civil::Date>()
                .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC))
                .map(|z| z.timestamp())
        })
        .map_err(|_| {
            anyhow!("{t:?} is not a time: write RFC 3339 (2026-03-31T17:00:00Z) or a date (2026-03-31)")
        })?;
    i64::try_from(ts.as_nanosecond()).map_err(|_| anyhow!("{t:?} is out of range"))
}

fn at_nanos(at: Option<&str>) -> anyhow::Result<i64> {
    at.map(parse_at).transpose().map(|t| t.unwrap_or(0))
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".to_string() } else { s.to_string() }
}

fn agent_rows(agents: &[pb::Agent]) -> Vec<Vec<String>> {
    agents
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.id.clone(),
                or_dash(&a.owner),
                or_dash(&a.purpose),
                if a.retired { "retired".into() } else { "active".into() },
                if a.policy_version == 0 { "-".into() } else { format!("v{}", a.policy_version) },
                time_text(a.registered_unix_nanos),
            ]
        })
        .collect()
}

const AGENT_COLUMNS: [&str; 7] = ["NAME", "ID", "OWNER", "PURPOSE", "STATUS", "POLICY", "REGISTERED"];

fn show_agent(a: &pb::Agent) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13} {v}\n"));
    line("name", a.name.clone());
    line("id", a.id.clone());
    line("owner", or_dash(&a.owner));
    line("purpose", or_dash(&a.purpose));
    line("scope", or_dash(&a.scope));
    line("status", if a.retired { format!("retired ({})", a.retired_reason) } else { "active".into() });
    line(
        "policy",
        if a.policy_version == 0 { "none of its own".into() } else { format!("v{}", a.policy_version) },
    );
    line("registered", format!("{} (seq {})", time_text(a.registered_unix_nanos), a.registered_seq));
    line("last change", format!("{} (seq {})", time_text(a.changed_unix_nanos), a.changed_seq));
    out
}

async fn agents(socket: &Path, cmd: AgentsCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(socket).await?;
    let admin = client.admin();
    match cmd {
        AgentsCommand::Register { name, owner, purpose, scope } => {
            let r = admin
                .register_agent(pb::RegisterAgentRequest { name, owner, purpose, scope })
                .await?
                .into_inner();
            let a = r.agent.unwrap_or_default();
            write_out(
                format!(
                    "registered {} (seq {})\nid     {}\ntoken  {}\n\nThe token is shown once; ledgerd keeps only its hash. Give it to the agent's shim\n(--token or $LEDGER_AGENT_TOKEN).\n",
                    a.name, r.seq, a.id, r.token
                )
                .as_bytes(),
            )
        }
        AgentsCommand::List { retired, at, format } => {
            let at_unix_nanos = at_nanos(at.as_deref())?;
            let list = admin
                .list_agents(pb::ListAgentsRequest { at_unix_nanos, include_retired: retired })
                .await?
                .into_inner();
            if list.agents.is_empty() {
                eprintln!("no agents registered{}", if at_unix_nanos != 0 { " at that time" } else { "" });
                return Err(NoRows.into());
            }
            print_rows(format, &AGENT_COLUMNS, &agent_rows(&list.agents))
        }
        AgentsCommand::Show { name } => {
            let a = admin.get_agent(pb::GetAgentRequest { name }).await?.into_inner();
            write_out(show_agent(&a).as_bytes())
        }
        AgentsCommand::Update { name, owner, purpose, scope, reason } => {
            let r = admin
                .update_agent(pb::UpdateAgentRequest { name, owner, purpose, scope, reason })
                .await?
                .into_inner();
            let a = r.agent.unwrap_or_default();
            write_out(format!("updated {} (seq {})\n{}", a.name, r.seq, show_agent(&a)).as_bytes())
        }
        AgentsCommand::Retire { name, reason } => {
            let r = admin.retire_agent(pb::RetireAgentRequest { name, reason }).await?.into_inner();
            let a = r.agent.unwrap_or_default();
            write_out(format!("retired {} (seq {})\n", a.name, r.seq).as_bytes())
        }
        AgentsCommand::RotateToken { name, reason } => {
            let r = admin.rotate_token(pb::RotateTokenRequest { name, reason }).await?.into_inner();
            let a = r.agent.unwrap_or_default();
            write_out(
                format!(
                    "new token for {} (seq {})\ntoken  {}\n\nThe old token no longer matches.\n",
                    a.name, r.seq, r.token
                )
                .as_bytes(),
            )
        }
    }
}

/// A policy document that the daemon refused: its errors come back structured, and are
/// rendered against the text sent, with line, column and caret.
fn policy_error(status: tonic::Status, text: &str) -> anyhow::Error {
    if status.code() == tonic::Code::InvalidArgument
        && let Ok(errors) = std::str::from_utf8(status.details())
            .map_err(|_| ())
            .and_then(|d| ledger_query::policy::PolicyErrors::from_json_str(d).map_err(|_| ()))
    {
        return Rendered(errors.render(text)).into();
    }
    ledger_client::ClientError::Rpc(status).into()
}

async fn policy(socket: &Path, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set { agent, file, author, approver, reason } => {
            let text = if file == Path::new("-") {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                t
            } else {
                read_policy_file(&file)?
            };
            // Checked here first, so a mistake is shown without a daemon and before anything is sent.
            if let Err(e) = ledger_query::policy::Policy::parse(&text) {
                return Err(Rendered(e.render(&text)).into());
            }
            let mut client = Client::connect(socket).await?;
            let request = pb::SetPolicyRequest { agent, text: text.clone(), author, approver, reason };
            let p =
                client.admin().set_policy(request).await.map_err(|s| policy_error(s, &text))?.into_inner();
            write_out(
                format!(
                    "policy for {} is now version {} (seq {}, hash {})\n",
                    p.agent,
                    p.version,
                    p.seq,
                    short(&p.hash)
                )
                .as_bytes(),
            )
        }
        PolicyCommand::Show { agent, version, at } => {
            let mut client = Client::connect(socket).await?;
            let request = pb::GetPolicyRequest {
                agent,
                version: version.unwrap_or(0),
                at_unix_nanos: at_nanos(at.as_deref())?,
            };
            let p = client.admin().get_policy(request).await?.into_inner();
            write_out(p.text.as_bytes())
        }
        PolicyCommand::History { agent, format } => {
            let mut client = Client::connect(socket).await?;
            let h = client
                .admin()
                .get_policy_history(pb::PolicyHistoryRequest { agent: agent.clone() })
                .await?
                .into_inner();
            if h.versions.is_empty() {
                eprintln!("{agent:?} has no policy versions");
                return Err(NoRows.into());
            }
            let columns = ["VERSION", "TIME", "AUTHOR", "APPROVER", "REASON", "HASH", "PREVIOUS", "SEQ"];
            let rows: Vec<Vec<String>> = h
                .versions
                .iter()
                .map(|v| {
                    vec![
                        v.version.to_string(),
                        time_text(v.time_unix_nanos),
                        v.author.clone(),
                        or_dash(&v.approver),
                        v.reason.clone(),
                        short(&v.hash),
                        if v.prev_hash.is_empty() { "-".into() } else { short(&v.prev_hash) },
                        v.seq.to_string(),
                    ]
                })
                .collect();
            print_rows(format, &columns, &rows)
        }
        PolicyCommand::Diff { agent, from, to } => {
            let client = Client::connect(socket).await?;
            let get = |version| {
                let mut c = client.clone();
                let agent = agent.clone();
                async move {
                    c.admin().get_policy(pb::GetPolicyRequest { agent, version, at_unix_nanos: 0 }).await
                }
            };
            let a = get(from).await?.into_inner();
            let b = get(to).await?.into_inner();
            let diff = similar::TextDiff::from_lines(&a.text, &b.text);
            let text = diff
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("{agent} v{from} ({})", short(&a.hash)),
                    &format!("{agent} v{to} ({})", short(&b.hash)),
                )
                .to_string();
            write_out(text.as_bytes())
        }
        PolicyCommand::Check { agent, tool, params } => {
            let params = if params.is_empty() {
                String::new()
            } else {
                normalize_params(&params).context("--params")?
            };
            let mut client = Client::connect(socket).await?;
            let c = client
                .admin()
                .check_policy(pb::CheckPolicyRequest { agent, tool, params })
                .await?
                .into_inner();
            let mut out = format!(
                "{} by {} (policy {} v{}, hash {})\n{}\n\n",
                c.decision.to_uppercase(),
                c.rule,
                c.policy_agent,
                c.version,
                short(&c.hash),
                c.reason
            );
            for r in &c.rules {
                let mark = if r.matched { "matched" } else { "no match" };
                out.push_str(&format!(
                    "  line {:<4} {:<9} {} {}: {}\n",
                    r.line, mark, r.effect, r.id, r.condition
                ));
            }
            write_out(out.as_bytes())?;
            if c.decision == "allow" { Ok(()) } else { Err(NoRows.into()) }
        }
    }
}

fn read_policy_file(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > ledger_query::policy::MAX_BYTES as u64 {
        bail!(
            "{} is {} bytes; a policy document may be at most {} bytes",
            path.display(),
            meta.len(),
            ledger_query::policy::MAX_BYTES
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {} as UTF-8 text", path.display()))
}

fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// Prints rows as a table, CSV or JSON lines.
fn print_rows(format: Format, columns: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    match format {
        Format::Table => print_table(columns, rows),
        Format::Csv => {
            let mut w = csv_writer();
            w.write_record(columns.iter().map(|c| c.to_lowercase()))?;
            let mut neutralised = 0;
            for r in rows {
                let cells: Vec<String> = r
                    .iter()
                    .map(|c| {
                        let n = ledger_query::neutralise(c);
                        neutralised += usize::from(matches!(n, std::borrow::Cow::Owned(_)));
                        n.into_owned()
                    })
                    .collect();
                w.write_record(&cells)?;
            }
            w.flush()?;
            report_neutralised(neutralised);
            Ok(())
        }
        Format::Json => {
            let mut out = String::new();
            for r in rows {
                let obj: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| (c.to_lowercase(), serde_json::Value::String(v.clone())))
                    .collect();
                out.push_str(&serde_json::Value::Object(obj).to_string());
                out.push('\n');
            }
            write_out(out.as_bytes())
        }
    }
}

fn csv_writer() -> csv::Writer<std::io::Stdout> {
    csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(std::io::stdout())
}

async fn access_review(socket: &Path, at: Option<&str>, format: Format) -> anyhow::Result<()> {
    let at_unix_nanos = at_nanos(at)?;
    let mut client = Client::connect(socket).await?;
    let review =
        client.admin().get_access_review(pb::AccessReviewRequest { at_unix_nanos }).await?.into_inner();
    if review.rows.is_empty() {
        eprintln!("no agents were registered at {}", time_text(review.at_unix_nanos));
        return Err(NoRows.into());
    }
    let columns = ["AGENT", "OWNER", "POLICY", "VERSION", "HASH", "ALLOWS", "DENIES", "DEFAULT"];
    let rows: Vec<Vec<String>> = review
        .rows
        .iter()
        .map(|r| {
            let a = r.agent.clone().unwrap_or_default();
            let with = |prefix: &str| {
                let items: Vec<&str> = r.rules.iter().filter_map(|x| x.strip_prefix(prefix)).collect();
                if items.is_empty() { "-".to_string() } else { items.join("; ") }
            };
            vec![
                a.name,
                or_dash(&a.owner),
                match r.policy_agent.as_str() {
                    "" => "none".to_string(),
                    "*" => "* (default)".to_string(),
                    own => own.to_string(),
                },
                if r.policy_version == 0 { "-".into() } else { format!("v{}", r.policy_version) },
                if r.policy_hash.is_empty() { "-".into() } else { short(&r.policy_hash) },
                with("allow "),
                with("deny "),
                with("default "),
            ]
        })
        .collect();
    if format == Format::Table {
        eprintln!("access review at {}", time_text(review.at_unix_nanos));
    }
    print_rows(format, &columns, &rows)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `completions` and `man`: generated from the clap definitions above, no daemon needed.
fn generated(command: Command) -> ExitCode {
    use clap::CommandFactory;
    let result = match command {
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ledgerctl", &mut out);
            write_out(&out)
        }
        Command::Man { out: Some(dir) } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .with_context(|| format!("cannot write man pages into {}", dir.display())),
        Command::Man { out: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(anyhow::Error::from)
                .and_then(|()| write_out(&out))
        }
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledgerctl: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn evidence(socket: &Path, args: &EvidenceArgs) -> anyhow::Result<()> {
    use ledger_client::evidence::{export, verify};
    let opts = export::ExportOptions {
        from_unix_nanos: parse_at(&args.from)?,
        to_unix_nanos: parse_at(&args.to)?,
        agents: args.agents.clone(),
        out: args.out.clone(),
        progress: true,
    };
    let mut client = Client::connect(socket).await?;
    let done = export::export(&mut client, &opts).await?;
    // What was written must check out, with the key the daemon just named.
    verify::verify_bundle(&args.out, None)
        .map_err(|e| anyhow!("the bundle just written does not verify: {e}"))?;
    eprintln!(
        "wrote {}: entries {}..={} ({} rows in events.csv), checkpoint size {}",
        args.out.display(),
        done.first_seq,
        done.last_seq,
        done.events,
        done.tree_size
    );
    Ok(())
}

fn verify_bundle(args: &VerifyBundleArgs) -> anyhow::Result<()> {
    use ledger_client::evidence::verify::{self, BundleError, KeySource};
    match verify::verify_bundle(&args.dir, args.key.as_deref()) {
        Ok(report) => {
            if report.key == KeySource::Bundle {
                eprintln!(
                    "WARNING: checked against the bundle's own verifier.vkey, NOT against a key obtained out of band: this only shows the bundle is consistent with itself; pass --key FILE with the ledger's key"
                );
            }
            println!(
                "ok: {} files, checkpoint {} size {}, entries {}..={} complete and in the tree, {} events.csv rows equal their leaves",
                report.files,
                report.origin,
                report.tree_size,
                report.first_seq,
                report.last_seq,
                report.events_rows
            );
            Ok(())
        }
        Err(BundleError::Usage(message)) => bail!("{message}"),
        Err(e @ BundleError::Failed { .. }) => Err(CheckFailed(e.to_string()).into()),
    }
}
