//! `RecordExport`: an evidence export records itself in the log before the bundle is
//! written. The `evidence_exported` entry names the period, the agents the views are
//! narrowed to and who asked (stamped from the connection), and the checkpoint signed
//! right after it covers it, so every bundle proves an entry after its period
//! (docs/FORMAT.md, "Evidence bundle").

use ledger_proto::pb;
use tonic::Status;

use crate::log::merkle::rfc3339_nanos;
use crate::service::intake::{Peer, own_entry};

/// At most this many `--agent` names in one export.
pub const MAX_AGENTS: usize = 256;
/// At most this many bytes in one of them.
pub const MAX_AGENT_BYTES: usize = 128;

/// The period as it will be recorded: `to` cut to `now`; refused when empty or when the
/// agent list is unreasonable. Errors say what to change.
pub fn period(req: &pb::RecordExportRequest, now: i64) -> Result<(i64, i64), Status> {
    let to = req.to_unix_nanos.min(now);
    if req.from_unix_nanos >= to {
        return Err(Status::invalid_argument(format!(
            "the period is empty: from {} is not before to {} (to is cut to the daemon's clock); pass an earlier --from",
            rfc3339_nanos(req.from_unix_nanos),
            rfc3339_nanos(to)
        )));
    }
    if req.agents.len() > MAX_AGENTS {
        return Err(Status::invalid_argument(format!(
            "{} --agent names; at most {MAX_AGENTS} are allowed: export without --agent and filter the CSV",
            req.agents.len()
        )));
    }
    if let Some(bad) = req
        .agents
        .iter()
        .find(|a| a.is_empty() || a.len() > MAX_AGENT_BYTES || a.chars().any(char::is_control))
    {
        return Err(Status::invalid_argument(format!(
            "--agent {bad:?} is not an agent name (1 to {MAX_AGENT_BYTES} bytes, no control characters)"
        )));
    }
    Ok((req.from_unix_nanos, to))
}

/// The `evidence_exported` entry: agent `ledgerd`, the caller's credentials, and in
/// `details` the period (RFC 3339 UTC, to the nanosecond, as `events.csv` writes times),
/// the narrowing agents and the caller's user name when `/etc/passwd` knows it.
pub fn entry(
    host: &str,
    who: Peer,
    user: Option<String>,
    from: i64,
    to: i64,
    agents: &[String],
) -> pb::Entry {
    let mut details = serde_json::json!({
        "from": rfc3339_nanos(from),
        "to": rfc3339_nanos(to),
        "agents": agents,
    });
    if let Some(user) = user {
        details["user"] = user.into();
    }
    own_entry(pb::Kind::EvidenceExported, host, who, details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(from: i64, to: i64, agents: &[&str]) -> pb::RecordExportRequest {
        pb::RecordExportRequest {
            from_unix_nanos: from,
            to_unix_nanos: to,
            agents: agents.iter().map(|a| (*a).to_string()).collect(),
        }
    }

    #[test]
    fn the_period_is_cut_to_now_and_never_empty() {
        assert_eq!(period(&req(5, 100, &[]), 50).ok(), Some((5, 50)));
        assert_eq!(period(&req(5, 10, &["bot"]), 50).ok(), Some((5, 10)));
        for bad in [req(50, 100, &[]), req(60, 100, &[]), req(10, 10, &[]), req(1, 9, &[""])] {
            assert!(period(&bad, 50).is_err(), "{bad:?}");
        }
        let many: Vec<&str> = vec!["a"; MAX_AGENTS + 1];
        assert!(period(&req(1, 9, &many), 50).is_err());
        assert!(period(&req(1, 9, &["a\nb"]), 50).is_err());
    }
}
