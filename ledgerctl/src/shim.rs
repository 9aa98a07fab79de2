//! `ledgerctl shim …`: runs an enforcement shim from `ledger_shims` (outside the tokio runtime of the other commands).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{ShimArgs, ShimCommand};

impl ShimArgs {
    fn options(self, socket: PathBuf, default_agent: &str) -> ledger_shims::ShimOptions {
        let agent = self
            .agent
            .or_else(|| std::env::var("LEDGER_AGENT").ok().filter(|a| !a.is_empty()))
            .unwrap_or_else(|| default_agent.to_string());
        ledger_shims::ShimOptions { socket, agent, token: self.token, fail_open: self.fail_open }
    }
}

/// The shims manage their own runtime and exit codes (the hook must never exit with a code
/// other than 0 or 2).
pub(crate) fn shim(explicit_socket: Option<PathBuf>, cmd: ShimCommand) -> ExitCode {
    let socket = explicit_socket.clone().unwrap_or_else(ledger_client::default_socket);
    match cmd {
        ShimCommand::Llm { args } => ledger_shims::llm::main(args, explicit_socket, socket),
        ShimCommand::ClaudeCode { shim } => ledger_shims::claude::main(shim.options(socket, "claude-code")),
        ShimCommand::Mcp { shim, heartbeat, command } => {
            if shim.agent.is_none() && std::env::var("LEDGER_AGENT").map_or(true, |a| a.is_empty()) {
                eprintln!("ledgerctl shim mcp: error: name the agent with --agent NAME (or $LEDGER_AGENT)");
                return ExitCode::from(2);
            }
            ledger_shims::mcp::main(shim.options(socket, ""), heartbeat, &command)
        }
    }
}
