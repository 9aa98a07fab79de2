//! `ledgerctl policy`: set, show, list, diff and test agents' policies.

use std::path::Path;

use anyhow::{Context, bail};
use ledger_client::Client;
use ledger_proto::pb;
use ledger_query::terminal;

use crate::agents::at_nanos;
use crate::append::normalize_params;
use crate::print::{or_dash, print_rows, time_text, write_out};
use crate::{NoRows, PolicyCommand, Rendered};

/// A policy document that the daemon refused: its errors come back structured, and are
/// rendered against the text sent, with line, column and caret.
pub(crate) fn policy_error(status: tonic::Status, text: &str) -> anyhow::Error {
    if status.code() == tonic::Code::InvalidArgument
        && let Ok(errors) = std::str::from_utf8(status.details())
            .map_err(|_| ())
            .and_then(|d| ledger_query::policy::PolicyErrors::from_json_str(d).map_err(|_| ()))
    {
        return Rendered(errors.render(text)).into();
    }
    ledger_client::ClientError::from(status).into()
}

pub(crate) async fn policy(socket: &Path, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set { agent, file, author, approver, reason } => {
            let text = if file == Path::new("-") {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)?;
                t
            } else {
                read_policy_file(&file)?
            };
            let text = strip_bom(text);
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
            write_out(terminal::text(&p.text).as_bytes())
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
            write_out(terminal::text(&text).as_bytes())
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
                terminal::line(&c.decision.to_uppercase()),
                terminal::line(&c.rule),
                terminal::line(&c.policy_agent),
                c.version,
                terminal::line(&short(&c.hash)),
                terminal::line(&c.reason)
            );
            for r in &c.rules {
                let mark = if r.matched { "matched" } else { "no match" };
                out.push_str(&format!(
                    "  line {:<4} {:<9} {} {}: {}\n",
                    r.line,
                    mark,
                    terminal::line(&r.effect),
                    terminal::line(&r.id),
                    terminal::line(&r.condition)
                ));
            }
            write_out(out.as_bytes())?;
            if c.decision == "allow" { Ok(()) } else { Err(NoRows.into()) }
        }
    }
}

pub(crate) fn read_policy_file(path: &Path) -> anyhow::Result<String> {
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

/// Editors on Windows start UTF-8 files with a byte-order mark; it is not part of the policy.
fn strip_bom(text: String) -> String {
    match text.strip_prefix('\u{FEFF}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

pub(crate) fn short(hash: &str) -> String {
    hash.chars().take(12).collect()
}
