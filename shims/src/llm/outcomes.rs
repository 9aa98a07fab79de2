//! The request side: the results of earlier tool calls become `outcome` entries (linked to
//! their decision by `ref_seq`; flagged when the call was denied or never seen), and tools
//! the policy can never allow are taken out of the request's `tools`.
//!
//! An outcome holds `is_error` and the size and BLAKE3 of the result (its JSON text), not
//! the result itself. Each result is recorded once: a conversation resends its whole
//! history with every request.

use std::collections::HashSet;
use std::sync::Mutex;

use ledger_proto::pb;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::api::Api;
use super::auth::AgentCtx;
use super::decide::{Memory, Seen, ToolResult};
use super::rawjson::{Obj, array};
use super::{anthropic, chat, responses};
use crate::{ShimCall, quoted};

/// Reads the results out of a request member's raw text, if it has the usual shape.
type ReadResults = fn(&str) -> Option<Vec<ToolResult>>;

/// The results in a request of `api`. The usual shapes are read without building a tree
/// (a conversation resends its whole history with every request); anything unusual (a
/// repeated or oddly typed member) is read through `Value`, as before, which reads it as
/// the SDKs do. A result's `content` is its raw JSON text; [`record`] writes it compactly.
pub fn results(api: Api, request: &Obj) -> Vec<ToolResult> {
    let (member, typed): (&str, ReadResults) = match api {
        Api::Anthropic => ("messages", anthropic::results_typed),
        Api::Chat => ("messages", chat::results_typed),
        Api::Responses => ("input", responses::results_typed),
        _ => return Vec::new(),
    };
    let Some(raw) = request.get(member) else { return Vec::new() };
    if let Some(found) = typed(raw.get()) {
        return found;
    }
    let Ok(list) = serde_json::from_str::<Value>(raw.get()) else { return Vec::new() };
    let request = Value::Object(Map::from_iter([(member.to_string(), list)]));
    match api {
        Api::Anthropic => anthropic::results(&request),
        Api::Chat => chat::results(&request),
        _ => responses::results(&request),
    }
}

/// A result's content as recorded: its JSON written compactly, as serde_json writes it
/// (the form `details.result_blake3` hashes, whatever spacing the agent sent).
fn compact(raw: &str) -> String {
    serde_json::from_str::<Value>(raw).map_or_else(|_| raw.to_string(), |v| v.to_string())
}

/// What the ledger says about a call the gateway does not remember (it was restarted, or
/// another gateway decided it).
async fn look_up(ctx: &AgentCtx, id: &str) -> Option<Seen> {
    let mut d = ctx.decider().await;
    let base = format!("agent = {} and details.tool_call_id = {}", quoted(&ctx.agent), quoted(id));
    let outcome = d.latest_seq(&format!("kind = outcome and {base}")).await.ok()?;
    let decision = d.latest_seq(&format!("kind = decision and {base}")).await.ok()?;
    let allowed = d.latest_seq(&format!("kind = decision and decision = allow and {base}")).await.ok()?;
    let allow = decision.is_some() && allowed == decision;
    Some(Seen { seq: decision, allow, tool: String::new(), outcome_recorded: outcome.is_some() })
}

/// Records an outcome for each result not recorded before. Failures are reported on
/// stderr and do not stop the request (the decision, not the outcome, is what gates a call).
pub async fn record(ctx: &AgentCtx, memory: &Memory, api: Api, results: Vec<ToolResult>) {
    for r in results {
        let seen = match memory.get(&ctx.agent, &r.id) {
            Some(s) => s,
            None => match look_up(ctx, &r.id).await {
                Some(s) => {
                    memory.remember(&ctx.agent, &r.id, s.clone());
                    s
                }
                None => {
                    eprintln!(
                        "ledgerctl shim llm: agent {}: cannot look up call {} in the ledger; its outcome is not recorded now",
                        ctx.agent, r.id
                    );
                    continue;
                }
            },
        };
        if seen.outcome_recorded || !memory.mark_outcome(&ctx.agent, &r.id) {
            continue;
        }
        if let Err(e) = record_one(ctx, api, &r, &seen).await {
            eprintln!(
                "ledgerctl shim llm: agent {}: the outcome of call {} was not recorded: {e}",
                ctx.agent, r.id
            );
            memory.remember(&ctx.agent, &r.id, Seen { outcome_recorded: false, ..seen });
        }
    }
}

async fn record_one(ctx: &AgentCtx, api: Api, r: &ToolResult, seen: &Seen) -> Result<u64, crate::ShimError> {
    let content = compact(&r.content);
    let tool = [seen.tool.as_str(), r.tool.as_deref().unwrap_or("")]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("unknown")
        .to_string();
    let mut details = Map::new();
    details.insert("shim".into(), "llm-gateway".into());
    details.insert("api".into(), api.name().into());
    details.insert("tool_call_id".into(), r.id.clone().into());
    details.insert("is_error".into(), r.is_error.into());
    details.insert("result_bytes".into(), content.len().into());
    details.insert("result_blake3".into(), blake3::hash(content.as_bytes()).to_hex().as_str().into());
    let flag = match (seen.seq, seen.allow) {
        (Some(_), true) => None,
        (Some(_), false) => Some("ran_denied_call"),
        (None, _) => Some("ran_unseen_call"),
    };
    let reason = match flag {
        Some("ran_denied_call") => {
            format!(
                "the agent sent a result for call {} of {tool}, which ledgerd denied: the tool ran although it was not allowed",
                r.id
            )
        }
        Some(_) => format!(
            "the agent sent a result for call {} of {tool}, which the gateway never allowed (no decision found): the tool ran without a decision",
            r.id
        ),
        None => String::new(),
    };
    if let Some(flag) = flag {
        details.insert("flag".into(), flag.into());
        details.insert("decision_found".into(), seen.seq.is_some().into());
    }
    let mut d = ctx.decider().await;
    let opts = d.options().clone();
    let entry = pb::NewEntry {
        kind: pb::Kind::Outcome as i32,
        agent: opts.agent.clone(),
        action: "tool_result".into(),
        tool,
        params: "{}".into(),
        reason,
        shim_id: d.shim_id().to_string(),
        ref_seq: seen.seq,
        details: Value::Object(details).to_string(),
        agent_token: opts.token,
        ..Default::default()
    };
    d.append(entry).await
}

/// Tools already recorded as removed, by (agent, policy version, tool).
#[derive(Debug, Default)]
pub struct Removed(Mutex<HashSet<(String, u64, String)>>);

/// Takes the tools the agent's policy can never allow out of the request's `tools` (and
/// `tool_choice` when it names one, or when no tool is left); records each removal once
/// per policy version as a denial. Returns the new body (every other member's text as the
/// agent sent it, in its order), or `None` when nothing changed (then the original bytes
/// are sent). When the policy cannot be read the request is left
/// as it is: every call in the response is then denied (fail closed).
pub async fn filter_tools(ctx: &AgentCtx, removed: &Removed, api: Api, mut request: Obj) -> Option<Vec<u8>> {
    let name_of = match api {
        Api::Anthropic => anthropic::tool_name,
        Api::Chat => chat::tool_name,
        Api::Responses => responses::tool_name,
        _ => return None,
    };
    // Each tool as a tree (they are small), kept beside its raw text, which is what is
    // sent on for the tools that stay.
    let tools: Vec<(Box<RawValue>, Value)> = array(request.get("tools")?)
        .ok()?
        .into_iter()
        .map(|raw| {
            let tree = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            (raw, tree)
        })
        .collect();
    if tools.is_empty() {
        return None;
    }
    let fetched = ctx.policy().await.ok()?;
    let gone: Vec<String> = tools
        .iter()
        .filter_map(|(_, t)| name_of(t))
        .filter(|n| !fetched.policy.may_allow_tool(n))
        .map(String::from)
        .collect();
    if gone.is_empty() {
        return None;
    }
    let kept: Vec<Box<RawValue>> = tools
        .into_iter()
        .filter(|(_, t)| name_of(t).is_none_or(|n| !gone.iter().any(|g| g == n)))
        .map(|(raw, _)| raw)
        .collect();
    if kept.is_empty() {
        request.remove("tools");
        request.remove("tool_choice");
    } else {
        request.set("tools", &kept).ok()?;
    }
    let choice: Option<Value> = request.get("tool_choice").and_then(|c| serde_json::from_str(c.get()).ok());
    let chosen = choice.as_ref().and_then(|c| {
        c.get("name").or_else(|| c.get("function").and_then(|f| f.get("name"))).and_then(Value::as_str)
    });
    if chosen.is_some_and(|c| gone.iter().any(|g| g == c)) {
        request.remove("tool_choice");
    }
    for name in &gone {
        let key = (ctx.agent.clone(), fetched.version, name.clone());
        let new = removed.0.lock().map(|mut s| s.insert(key)).unwrap_or(false);
        if !new {
            continue;
        }
        let mut details = Map::new();
        details.insert("api".into(), api.name().into());
        let call = ShimCall {
            tool: name.clone(),
            params: "{}".into(),
            session: String::new(),
            action: "request_tools".into(),
            details,
        };
        let result = ctx.decider().await.decide(&call).await;
        if let Err(e) = result {
            eprintln!(
                "ledgerctl shim llm: agent {}: the removal of tool {name} was not recorded: {e}",
                ctx.agent
            );
            if let Ok(mut s) = removed.0.lock() {
                s.remove(&(ctx.agent.clone(), fetched.version, name.clone()));
            }
        }
    }
    Some(request.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The results as the `Value` path reads them, contents written compactly.
    fn by_tree(api: Api, text: &str) -> Vec<ToolResult> {
        let v: Value = serde_json::from_str(text).expect("JSON");
        match api {
            Api::Anthropic => anthropic::results(&v),
            Api::Chat => chat::results(&v),
            _ => responses::results(&v),
        }
    }

    fn compacted(found: Vec<ToolResult>) -> Vec<ToolResult> {
        found.into_iter().map(|r| ToolResult { content: compact(&r.content), ..r }).collect()
    }

    #[test]
    fn results_read_without_a_tree_are_those_read_through_value() {
        let cases = [
            (
                Api::Anthropic,
                r#"{"model":"m","messages":[
                    {"role":"user","content":"plain text"},
                    {"role":"assistant","content":[{"type":"text","text":"x"},{"type":"tool_use","id":"t1","name":"read","input":{}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"ok"}], "is_error": true},
                                              {"type":"tool_result","tool_use_id":"t9","content":null},
                                              {"type":"tool_result","tool_use_id":"t8"},
                                              {"type":"tool_result","tool_use_id":"t7","content":{ "b" : 1, "a" : "\u0041" }}]}]}"#,
            ),
            // Oddly typed members: read through Value.
            (
                Api::Anthropic,
                r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","is_error":"yes","content":"r"}]}]}"#,
            ),
            (
                Api::Anthropic,
                r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"a","tool_use_id":"b","content":"r"}]}]}"#,
            ),
            (Api::Anthropic, r#"{"messages":null}"#),
            (
                Api::Chat,
                r#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{}"}}]},
                    {"role":"tool","tool_call_id":"c1","content":"sunny"},
                    {"role":"tool","tool_call_id":"c2","content":null},
                    {"role":"tool","tool_call_id":"c3"},
                    {"role":"user","content":[{"type":"text","text":"hi"}]}]}"#,
            ),
            (
                Api::Chat,
                r#"{"messages":[{"role":"tool","tool_call_id":5,"content":"x"},{"role":"tool","tool_call_id":"c","content":"y"}]}"#,
            ),
            (
                Api::Responses,
                r#"{"input":[{"type":"function_call","call_id":"r1","name":"calc","arguments":"{}"},
                    {"type":"function_call_output","call_id":"r1","output":"3"},
                    {"type":"function_call_output","call_id":"r2","output":{ "x" : [1, 2] }},
                    {"type":"message","role":"user","content":"more"}]}"#,
            ),
            (Api::Responses, r#"{"input":"just text"}"#),
            (
                Api::Responses,
                r#"{"input":[{"type":7},{"type":"function_call_output","call_id":"r","output":"o"}]}"#,
            ),
        ];
        for (api, text) in cases {
            let typed = compacted(results(api, &Obj::parse(text).expect("object")));
            assert_eq!(typed, by_tree(api, text), "{text}");
        }
        // The usual shapes are found without the fallback, contents as sent.
        let typed = anthropic::results_typed(
            r#"[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":{ "a" : 1 }}]}]"#,
        )
        .expect("read without a tree");
        assert_eq!(typed[0].content, r#"{ "a" : 1 }"#);
        assert_eq!(compact(&typed[0].content), r#"{"a":1}"#);
    }
}
