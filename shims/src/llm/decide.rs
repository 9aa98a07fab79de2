//! Deciding the tool calls of one response: each call under the agent's policy through a
//! [`Decider`](crate::Decider) (durable before it returns), independently and
//! concurrently; the text a denied call is replaced by; and the memory of which call id
//! was decided how (for the outcomes of the next request).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use futures_util::future::join_all;
use serde_json::{Map, Value};

use super::api::Api;
use super::auth::AgentCtx;
use crate::ShimCall;

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `tool_use` id / `tool_calls[].id` / `call_id`.
    pub id: String,
    pub name: String,
    /// The arguments as the model sent them (JSON text, possibly broken).
    pub args: String,
}

/// A tool's result as the agent sends it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    /// The call id it answers.
    pub id: String,
    /// The tool's name, when the request carries the call.
    pub tool: Option<String>,
    /// The result as JSON text.
    pub content: String,
    pub is_error: bool,
}

/// What the gateway does with one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruling {
    pub allow: bool,
    /// For a denied call, the text it is replaced by.
    pub text: String,
}

/// Request context recorded with each decision.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub model: String,
    pub stream: bool,
}

/// What the gateway remembers of a decided call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub seq: Option<u64>,
    pub allow: bool,
    pub tool: String,
    pub outcome_recorded: bool,
}

/// (agent, call id).
type CallKey = (String, String);

/// Decided calls by (agent, call id), the oldest forgotten first past [`Memory::CAP`].
#[derive(Debug, Default)]
pub struct Memory {
    inner: Mutex<(HashMap<CallKey, Seen>, VecDeque<CallKey>)>,
}

impl Memory {
    pub const CAP: usize = 100_000;

    pub fn remember(&self, agent: &str, id: &str, seen: Seen) {
        let Ok(mut g) = self.inner.lock() else { return };
        let key = (agent.to_string(), id.to_string());
        if g.0.insert(key.clone(), seen).is_none() {
            g.1.push_back(key);
            while g.1.len() > Self::CAP {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }

    pub fn get(&self, agent: &str, id: &str) -> Option<Seen> {
        let g = self.inner.lock().ok()?;
        g.0.get(&(agent.to_string(), id.to_string())).cloned()
    }

    /// Marks the call's outcome as recorded; false if it already was.
    pub fn mark_outcome(&self, agent: &str, id: &str) -> bool {
        let Ok(mut g) = self.inner.lock() else { return false };
        match g.0.get_mut(&(agent.to_string(), id.to_string())) {
            Some(s) if s.outcome_recorded => false,
            Some(s) => {
                s.outcome_recorded = true;
                true
            }
            None => true,
        }
    }
}

/// Decides every call (concurrently, each on its own decider of the agent's pool) and
/// remembers each decision; the result is in the order of `calls`.
pub async fn decide_all(
    ctx: &AgentCtx,
    memory: &Memory,
    api: Api,
    meta: &Meta,
    calls: &[ToolCall],
) -> Vec<Ruling> {
    join_all(calls.iter().map(|c| decide_one(ctx, memory, api, meta, c))).await
}

async fn decide_one(ctx: &AgentCtx, memory: &Memory, api: Api, meta: &Meta, call: &ToolCall) -> Ruling {
    let mut details = Map::new();
    details.insert("api".into(), api.name().into());
    details.insert("tool_call_id".into(), call.id.clone().into());
    if !meta.model.is_empty() {
        details.insert("model".into(), meta.model.clone().into());
    }
    details.insert("stream".into(), meta.stream.into());
    let args = if call.args.trim().is_empty() { "{}" } else { call.args.as_str() };
    let parsed = serde_json::from_str::<Value>(args);
    let mut decider = ctx.decider().await;
    let verdict = match parsed {
        Ok(params) => {
            let shim_call = ShimCall {
                tool: call.name.clone(),
                params: params.to_string(),
                session: String::new(),
                action: "tool_call".into(),
                details,
            };
            decider.decide(&shim_call).await
        }
        Err(e) => {
            let shim_call = ShimCall {
                tool: call.name.clone(),
                params: serde_json::json!({ "unparseable_arguments": call.args }).to_string(),
                session: String::new(),
                action: "tool_call".into(),
                details,
            };
            let reason =
                format!("the tool arguments are not valid JSON ({e}); they are refused, not guessed");
            decider.refuse(&shim_call, "unparseable-arguments", &reason).await
        }
    };
    drop(decider);
    match verdict {
        Ok(v) => {
            memory.remember(
                &ctx.agent,
                &call.id,
                Seen { seq: v.seq, allow: v.allow, tool: call.name.clone(), outcome_recorded: false },
            );
            let text = if v.allow {
                String::new()
            } else {
                format!(
                    "ledgerd denied {}: rule {}, policy v {}, {}: {}",
                    call.name,
                    v.rule,
                    v.policy_version,
                    v.seq_text(),
                    v.reason
                )
            };
            Ruling { allow: v.allow, text }
        }
        Err(e) => {
            eprintln!("ledgerctl shim llm: denied {} of agent {} (fail closed): {e}", call.name, ctx.agent);
            memory.remember(
                &ctx.agent,
                &call.id,
                Seen { seq: None, allow: false, tool: call.name.clone(), outcome_recorded: false },
            );
            Ruling {
                allow: false,
                text: format!(
                    "ledgerd denied {}: no decision could be made or recorded, so the call is refused (fail closed): {e}",
                    call.name
                ),
            }
        }
    }
}
