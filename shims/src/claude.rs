//! The Claude Code hook: `ledgerctl shim claude-code` (docs/SHIMS.md).
//!
//! Claude Code runs the hook as a new process per tool call, with one JSON object on stdin.
//! For `PreToolUse` the hook decides the call (the entry's `tool` is `tool_name` exactly as
//! sent, the params are `tool_input`), records the decision, and prints the
//! `hookSpecificOutput` answer. For `PostToolUse` it records an `outcome` entry linked to
//! the decision by `ref_seq`: the hook keeps no state between processes, so it finds the
//! decision in the ledger by session and `tool_use_id` (which every decision keeps in its
//! `details`). Other events are ignored (exit 0, no output).
//!
//! Exit codes: 0 with an answer on stdout; 2 on any internal error, with the reason on
//! stderr (Claude Code then blocks the tool). Never any other code: Claude Code lets the
//! tool run on other non-zero codes, so even a panic is turned into exit 2.

use std::process::ExitCode;

use ledger_proto::pb;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Decider, ShimCall, ShimError, ShimOptions, quoted};

/// The largest `tool_response` (as JSON text) sent to the daemon, which keeps only its
/// status, size and keyed hash (docs/REDACTION.md); a larger one is sent as its size alone
/// (a gRPC message holds at most 4 MiB).
pub const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;

/// The hook input: only the fields used; unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct HookInput {
    pub hook_event_name: String,
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub tool_name: String,
    #[serde(default)]
    pub tool_input: Option<Value>,
    #[serde(default)]
    pub tool_use_id: Option<String>,
    #[serde(default)]
    pub tool_response: Option<Value>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub permission_mode: Option<String>,
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub agent_type: Option<String>,
}

/// Runs the hook on `input` (the JSON from stdin); returns what to print on stdout (may be
/// empty). An error means exit 2.
pub async fn hook(opts: ShimOptions, input: &str) -> Result<String, ShimError> {
    let input: HookInput = serde_json::from_str(input).map_err(|e| {
        ShimError(format!("the hook input on stdin is not a Claude Code hook JSON object: {e}"))
    })?;
    match input.hook_event_name.as_str() {
        "PreToolUse" => pre_tool_use(opts, &input).await,
        "PostToolUse" => post_tool_use(opts, &input).await.map(|()| String::new()),
        _ => Ok(String::new()),
    }
}

fn require_tool(input: &HookInput) -> Result<(), ShimError> {
    if input.tool_name.is_empty() {
        return Err(ShimError(format!("the {} hook input has no tool_name", input.hook_event_name)));
    }
    Ok(())
}

fn params_text(input: &HookInput) -> String {
    input.tool_input.as_ref().map_or_else(|| "{}".to_string(), Value::to_string)
}

fn context(input: &HookInput) -> Map<String, Value> {
    let mut d = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            d.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    put("tool_use_id", &input.tool_use_id);
    put("cwd", &input.cwd);
    put("permission_mode", &input.permission_mode);
    put("agent_id", &input.agent_id);
    put("agent_type", &input.agent_type);
    d
}

async fn pre_tool_use(opts: ShimOptions, input: &HookInput) -> Result<String, ShimError> {
    require_tool(input)?;
    let mut decider = Decider::new(opts, "claude-code");
    let call = ShimCall {
        tool: input.tool_name.clone(),
        params: params_text(input),
        session: input.session_id.clone(),
        action: "PreToolUse".into(),
        details: context(input),
    };
    let v = decider.decide(&call).await?;
    let reason = format!(
        "ledgerd: {} by rule {} (policy version {}), {}: {}",
        if v.allow { "allowed" } else { "denied" },
        v.rule,
        v.policy_version,
        v.seq_text(),
        v.reason
    );
    let answer = json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": v.effect(),
            "permissionDecisionReason": reason,
        }
    });
    Ok(answer.to_string())
}

async fn post_tool_use(opts: ShimOptions, input: &HookInput) -> Result<(), ShimError> {
    require_tool(input)?;
    let mut decider = Decider::new(opts, "claude-code");
    let mut details = context(input);
    details.insert("shim".into(), "claude-code".into());
    let ref_seq = match &input.tool_use_id {
        Some(id) if !id.is_empty() => find_decision(&mut decider, &input.session_id, id).await?,
        _ => None,
    };
    if ref_seq.is_none() {
        details.insert("decision_found".into(), false.into());
    }
    // The daemon summarises the output and redacts the rest (the hook need not get it
    // right); only an output too large for one message is reduced here, to its size.
    if let Some(response) = &input.tool_response {
        let text = response.to_string();
        if text.len() <= MAX_RESPONSE_BYTES {
            details.insert("tool_response".into(), response.clone());
        } else {
            details.insert("tool_response_bytes".into(), text.len().into());
        }
    }
    let opts = decider.options().clone();
    let entry = pb::NewEntry {
        kind: pb::Kind::Outcome as i32,
        agent: opts.agent.clone(),
        session: input.session_id.clone(),
        action: "PostToolUse".into(),
        tool: input.tool_name.clone(),
        params: params_text(input),
        shim_id: decider.shim_id().to_string(),
        ref_seq,
        details: Value::Object(details).to_string(),
        agent_token: opts.token,
        ..Default::default()
    };
    decider
        .append(entry)
        .await
        .map_err(|e| ShimError(format!("cannot record the outcome of {}: {e}", input.tool_name)))?;
    Ok(())
}

/// The seq of the latest decision of this agent with this session and `tool_use_id`.
async fn find_decision(
    decider: &mut Decider,
    session: &str,
    tool_use_id: &str,
) -> Result<Option<u64>, ShimError> {
    let agent = decider.options().agent.clone();
    let mut filter = format!(
        "kind = decision and agent = {} and details.tool_use_id = {}",
        quoted(&agent),
        quoted(tool_use_id)
    );
    if !session.is_empty() {
        filter.push_str(&format!(" and session = {}", quoted(session)));
    }
    decider.latest_seq(&filter).await
}

/// The whole command: reads stdin, runs the hook, prints the answer; exit 0, or 2 with the
/// reason on stderr. A panic also exits 2 (any other code would let the tool run).
pub fn main(opts: ShimOptions) -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ledgerctl shim claude-code: internal error, the tool is blocked: {info}");
        std::process::exit(2);
    }));
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
        eprintln!(
            "ledgerctl shim claude-code: cannot read the hook input on stdin: {e}; the tool is blocked"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledgerctl shim claude-code: cannot start: {e}; the tool is blocked");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(hook(opts, &input)) {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ledgerctl shim claude-code: denied (fail closed): {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_input_is_an_error() {
        let opts = ShimOptions {
            socket: "/nonexistent/ledgerd.sock".into(),
            agent: "a".into(),
            token: String::new(),
            fail_open: false,
        };
        assert!(hook(opts.clone(), "not json").await.is_err());
        assert!(hook(opts.clone(), r#"{"tool_name":"Bash"}"#).await.is_err(), "no hook_event_name");
        assert_eq!(hook(opts, r#"{"hook_event_name":"Stop"}"#).await.expect("ignored"), "");
    }
}
