//! Turns what a writer sent into an entry for the log: checks it, then stamps what the
//! writer cannot forge (its uid/gid/pid from the socket, and this host), and redacts its
//! params ([`crate::service::redact`]) after the policy re-check has seen them as sent, and
//! its details, where a tool's output is summarised ([`crate::service::outcome`]).
//!
//! Seq and time are stamped later, by the writer thread, in commit order.

use ledger_proto::pb::{self, Decision, Kind};
use ledger_query::policy::{Call, Effect};
use prost::Message;

use crate::projections::registry::State;
use crate::service::redact::Redactor;

/// Largest encoded entry accepted from a writer. Keeps the stored record under
/// [`crate::storage::store::MAX_RECORD_BYTES`] (the rkyv form adds a few bytes per field).
pub const MAX_ENTRY_BYTES: usize = 60 * 1024;

/// Who is on the other end of the socket, from SO_PEERCRED at accept time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// Why an entry was refused; the text goes back to the caller as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// What the daemon knows when an entry arrives: the registry and policies as they stand,
/// whether a missing agent token is itself worth a flag, and the redaction rules.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub state: &'a State,
    pub require_token: bool,
    pub redactor: &'a Redactor,
    /// `limits.max_params_bytes`: params longer than this (as sent) are refused.
    pub max_params_bytes: usize,
}

/// Checks `new` and builds the entry to append: stamps the writer, resolves the agent
/// against the registry, re-checks a decision against the policy it cites, then redacts
/// the params (the stored entry only ever holds the redacted text) and checks the size.
pub fn accept(new: pb::NewEntry, peer: Peer, host: &str, ctx: Context<'_>) -> Result<pb::Entry, Invalid> {
    let kind = Kind::try_from(new.kind).unwrap_or(Kind::Unspecified);
    match kind {
        Kind::Decision | Kind::Outcome | Kind::ShimHeartbeat => {}
        Kind::Unspecified => {
            return Err(Invalid("entry has no kind; set kind to decision, outcome or shim_heartbeat".into()));
        }
        other => {
            return Err(Invalid(format!(
                "entries of kind {} are written by ledgerd itself or through admin commands, not appended by writers",
                other.name()
            )));
        }
    }
    if new.agent.trim().is_empty() {
        return Err(Invalid("entry has no agent; name the agent that made the call".into()));
    }
    if new.agent.chars().any(char::is_control) {
        return Err(Invalid("agent name contains a control character; use printable text".into()));
    }
    let decision = Decision::try_from(new.decision).unwrap_or(Decision::Unspecified);
    if kind == Kind::ShimHeartbeat {
        check_heartbeat(&new, decision)?;
    } else if new.tool.trim().is_empty() {
        return Err(Invalid("entry has no tool; name the tool that was called".into()));
    }
    if kind == Kind::Decision && decision == Decision::Unspecified {
        return Err(Invalid("a decision entry needs decision = allow or deny".into()));
    }
    if new.params.len() > ctx.max_params_bytes {
        return Err(Invalid(format!(
            "params are {} bytes, over limits.max_params_bytes = {}; nothing was written. Send less (a digest or a reference to the data), or raise the limit in ledgerd's config",
            new.params.len(),
            ctx.max_params_bytes
        )));
    }
    check_json("params", &new.params)?;
    check_json("details", &new.details)?;

    let token = new.agent_token;
    let mut entry = pb::Entry {
        seq: 0,
        time_unix_nanos: 0,
        kind: kind as i32,
        agent: new.agent,
        agent_id: String::new(),
        session: new.session,
        action: new.action,
        tool: new.tool,
        params: new.params,
        decision: decision as i32,
        rule: new.rule,
        policy_version: new.policy_version,
        reason: new.reason,
        writer_uid: peer.uid,
        writer_gid: peer.gid,
        writer_pid: peer.pid,
        host: host.to_string(),
        severity: 0,
        flags: Vec::new(),
        policy_check: String::new(),
        shim_id: new.shim_id,
        shim_seq: new.shim_seq,
        ref_seq: new.ref_seq,
        details: new.details,
    };
    let mut flags = identify(&mut entry, &token, ctx);
    if kind == Kind::Decision {
        let (check, flag) = check_policy(&entry, ctx.state);
        entry.policy_check = check.to_string();
        flags.extend(flag);
    }
    // After the policy re-check (it must see the params the shim decided on), before the
    // size check (a cut value fits).
    let redacted = ctx.redactor.apply(&entry.params);
    entry.params = redacted.text;
    if redacted.redacted > 0 {
        flags.push("params_redacted");
    }
    if redacted.truncated {
        flags.push("params_truncated");
    }
    // Details too: a tool's output is summarised, the rest redacted like params.
    let kept = crate::service::outcome::keep(&entry.details, ctx.redactor);
    entry.details = kept.details;
    if kept.redacted > 0 {
        flags.push("details_redacted");
    }
    let size = entry.encoded_len();
    if size > MAX_ENTRY_BYTES {
        let (field, bytes) = largest_field(&entry);
        return Err(Invalid(format!(
            "entry is {size} bytes encoded, over the limit of {MAX_ENTRY_BYTES}; its {field} alone is {bytes} bytes: shorten it"
        )));
    }
    flags.sort_unstable();
    flags.dedup();
    entry.flags = flags.into_iter().map(String::from).collect();
    Ok(entry)
}

/// The entry's longest text field and its length in bytes, to name in a refusal.
fn largest_field(e: &pb::Entry) -> (&'static str, usize) {
    [
        ("agent name", e.agent.len()),
        ("tool name", e.tool.len()),
        ("session", e.session.len()),
        ("action", e.action.len()),
        ("params", e.params.len()),
        ("rule", e.rule.len()),
        ("reason", e.reason.len()),
        ("shim_id", e.shim_id.len()),
        ("details", e.details.len()),
    ]
    .into_iter()
    .max_by_key(|&(_, n)| n)
    .unwrap_or(("reason", 0))
}

/// A heartbeat names its shim (`shim_id`; its `shim_seq` is the number of the shim's last
/// decision, 0 before the first) and decides nothing, so it cannot be mistaken for a
/// decision or an outcome. It needs no tool; the agent is checked like any other.
fn check_heartbeat(new: &pb::NewEntry, decision: Decision) -> Result<(), Invalid> {
    if new.shim_id.trim().is_empty() {
        return Err(Invalid(
            "a shim_heartbeat entry has no shim_id; send the id the shim puts in its decisions".into(),
        ));
    }
    if decision != Decision::Unspecified || new.ref_seq.is_some() {
        return Err(Invalid(
            "a shim_heartbeat entry carries no decision and no ref_seq; send the decision as its own entry of kind decision".into(),
        ));
    }
    Ok(())
}

/// Resolves the claimed agent name to its registered id. An unknown or retired agent, or
/// a wrong token, is still recorded (it is evidence), with a flag saying so.
fn identify(entry: &mut pb::Entry, token: &str, ctx: Context<'_>) -> Vec<&'static str> {
    let mut flags = Vec::new();
    match ctx.state.agent(&entry.agent) {
        None => flags.push("unknown_agent"),
        Some(agent) => {
            entry.agent_id = agent.id.clone();
            if agent.retired {
                flags.push("retired_agent");
            }
            if token.is_empty() {
                if ctx.require_token {
                    flags.push("missing_token");
                }
            } else if token_hash(token) != agent.token_hash {
                flags.push("bad_token");
            }
        }
    }
    flags
}

/// Re-evaluates a decision against the policy it cites (or, citing none, the one in force
/// on arrival): `match`, `mismatch` (the policy says otherwise: flagged), `stale_version`
/// (an older version than the one in force, which agrees: flagged), or `no_policy`.
fn check_policy(entry: &pb::Entry, state: &State) -> (&'static str, Option<&'static str>) {
    let Some(current) = state.applicable_policy(&entry.agent, None) else {
        return ("no_policy", None);
    };
    let cited = entry.policy_version;
    let (used, stale) = if cited == 0 || cited == current.state.version {
        (current, false)
    } else {
        match state.policy_version(&current.state.agent, cited) {
            Some(p) => (p, true),
            // A version that never existed cannot have decided anything.
            None => return ("mismatch", Some("policy_mismatch")),
        }
    };
    let call = Call {
        tool: &entry.tool,
        params: &entry.params,
        agent: &entry.agent,
        session: &entry.session,
        action: &entry.action,
    };
    let Ok(policy) = used.policy() else {
        // A stored version that no longer compiles cannot confirm anything.
        return ("mismatch", Some("policy_mismatch"));
    };
    let expected = match policy.evaluate(&call).effect {
        Effect::Allow => Decision::Allow,
        Effect::Deny => Decision::Deny,
    };
    if expected as i32 != entry.decision {
        ("mismatch", Some("policy_mismatch"))
    } else if stale {
        ("stale_version", Some("stale_policy"))
    } else {
        ("match", None)
    }
}

fn check_json(field: &str, text: &str) -> Result<(), Invalid> {
    if text.is_empty() {
        return Ok(());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ()).map_err(|e| {
        Invalid(format!(
            "{field} is not valid JSON ({e}); send a JSON object such as {{\"path\":\"/tmp/x\"}}"
        ))
    })
}

/// An entry ledgerd writes itself (agent `ledgerd`, this host), stamped with `who`: the
/// daemon's own credentials for its lifecycle entries, the caller's for a refusal it
/// records. It goes through the writer like any other entry.
pub(crate) fn own_entry(kind: pb::Kind, host: &str, who: Peer, details: serde_json::Value) -> pb::Entry {
    pb::Entry {
        kind: kind as i32,
        agent: "ledgerd".into(),
        host: host.into(),
        writer_uid: who.uid,
        writer_gid: who.gid,
        writer_pid: who.pid,
        details: details.to_string(),
        ..Default::default()
    }
}

/// The hash the registry keeps of a token.
pub fn token_hash(token: &str) -> String {
    crate::log::merkle::hex(blake3::hash(token.as_bytes()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::redact::RedactionConfig;

    fn redactor() -> Redactor {
        Redactor::new(&RedactionConfig::default(), [3; 32]).expect("default rules")
    }

    fn decision() -> pb::NewEntry {
        pb::NewEntry {
            kind: Kind::Decision as i32,
            agent: "a".into(),
            tool: "t".into(),
            decision: Decision::Allow as i32,
            ..Default::default()
        }
    }

    #[test]
    fn stamps_the_peer_and_host() {
        let peer = Peer { uid: 1, gid: 2, pid: 3 };
        let state = State::default();
        let redactor = redactor();
        let ctx =
            Context { state: &state, require_token: false, redactor: &redactor, max_params_bytes: 1 << 20 };
        let e = accept(decision(), peer, "h", ctx).expect("valid");
        assert_eq!(e.flags, ["unknown_agent"]);
        assert_eq!(e.policy_check, "no_policy");
        assert_eq!((e.writer_uid, e.writer_gid, e.writer_pid, e.host.as_str()), (1, 2, 3, "h"));
    }

    #[test]
    fn refuses_what_a_writer_may_not_send() {
        let peer = Peer::default();
        let state = State::default();
        let redactor = redactor();
        let ctx =
            Context { state: &state, require_token: false, redactor: &redactor, max_params_bytes: 1 << 20 };
        let mut e = decision();
        e.kind = Kind::DaemonStarted as i32;
        assert!(accept(e, peer, "h", ctx).is_err());
        let mut e = decision();
        e.decision = 0;
        assert!(accept(e, peer, "h", ctx).is_err());
        let mut e = decision();
        e.params = "{not json".into();
        assert!(accept(e, peer, "h", ctx).expect_err("bad json").0.contains("params is not valid JSON"));
        let mut e = decision();
        e.reason = "y".repeat(MAX_ENTRY_BYTES);
        let err = accept(e, peer, "h", ctx).expect_err("over the limit").0;
        assert!(err.contains("its reason alone is"), "{err}");
        let mut e = decision();
        e.tool = "t".repeat(100 * 1024);
        let err = accept(e, peer, "h", ctx).expect_err("over the limit").0;
        assert!(err.contains("its tool name alone is 102400 bytes"), "{err}");
        let mut e = decision();
        e.params = format!("{{\"x\":\"{}\"}}", "y".repeat(100));
        let small = Context { max_params_bytes: 64, ..ctx };
        let err = accept(e, peer, "h", small).expect_err("over the limit").0;
        assert!(err.contains("limits.max_params_bytes = 64"), "{err}");
    }

    fn heartbeat() -> pb::NewEntry {
        pb::NewEntry {
            kind: Kind::ShimHeartbeat as i32,
            agent: "a".into(),
            shim_id: "0123456789abcdef0123456789abcdef".into(),
            shim_seq: 7,
            ..Default::default()
        }
    }

    #[test]
    fn heartbeats_are_accepted_from_writers_and_identified_like_decisions() {
        let state = State::default();
        let redactor = redactor();
        let ctx =
            Context { state: &state, require_token: false, redactor: &redactor, max_params_bytes: 1 << 20 };
        let e = accept(heartbeat(), Peer::default(), "h", ctx).expect("a writer may send heartbeats");
        assert_eq!((e.kind, e.shim_seq, e.tool.as_str()), (Kind::ShimHeartbeat as i32, 7, ""));
        assert_eq!(e.flags, ["unknown_agent"], "the agent is checked as for a decision");
        assert_eq!(e.policy_check, "", "a heartbeat decides nothing, so nothing is re-checked");

        let mut no_id = heartbeat();
        no_id.shim_id.clear();
        assert!(accept(no_id, Peer::default(), "h", ctx).expect_err("no shim_id").0.contains("shim_id"));
        let mut deciding = heartbeat();
        deciding.decision = Decision::Allow as i32;
        assert!(accept(deciding, Peer::default(), "h", ctx).is_err(), "a heartbeat cannot carry a decision");
        let mut no_agent = heartbeat();
        no_agent.agent.clear();
        assert!(accept(no_agent, Peer::default(), "h", ctx).is_err());
    }

    #[test]
    fn params_are_redacted_and_cut_before_they_are_stored() {
        let state = State::default();
        let redactor = redactor();
        let ctx =
            Context { state: &state, require_token: false, redactor: &redactor, max_params_bytes: 1 << 20 };
        let mut e = decision();
        e.params = r#"{"password":"hunter2","path":"/tmp"}"#.into();
        let stored = accept(e, Peer::default(), "h", ctx).expect("valid");
        assert!(!stored.params.contains("hunter2") && stored.params.contains("/tmp"), "{}", stored.params);
        assert_eq!(stored.flags, ["params_redacted", "unknown_agent"]);
        let mut e = decision();
        e.params = format!("{{\"x\":\"{}\"}}", "y".repeat(MAX_ENTRY_BYTES));
        let stored = accept(e, Peer::default(), "h", ctx).expect("cut to fit");
        assert_eq!(stored.flags, ["params_truncated", "unknown_agent"]);
        assert!(stored.params.len() <= crate::service::redact::DEFAULT_MAX_PARAMS_BYTES);
    }
}
