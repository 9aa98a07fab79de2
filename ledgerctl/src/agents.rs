//! `ledgerctl agents`: the agent registry (register, update, retire, list, show, tokens).

use std::path::Path;

use anyhow::anyhow;
use ledger_client::Client;
use ledger_proto::pb;
use ledger_query::terminal;

use crate::print::{or_dash, print_rows, time_text, write_out};
use crate::{AgentsCommand, NoRows};

/// Parses `--at`: RFC 3339, or a date (midnight UTC). Returns nanoseconds.
pub(crate) fn parse_at(text: &str) -> anyhow::Result<i64> {
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

pub(crate) fn at_nanos(at: Option<&str>) -> anyhow::Result<i64> {
    at.map(parse_at).transpose().map(|t| t.unwrap_or(0))
}

pub(crate) fn agent_rows(agents: &[pb::Agent]) -> Vec<Vec<String>> {
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

pub(crate) const AGENT_COLUMNS: [&str; 7] =
    ["NAME", "ID", "OWNER", "PURPOSE", "STATUS", "POLICY", "REGISTERED"];

pub(crate) fn show_agent(a: &pb::Agent) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13} {}\n", terminal::line(&v)));
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

pub(crate) async fn agents(socket: &Path, cmd: AgentsCommand) -> anyhow::Result<()> {
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
