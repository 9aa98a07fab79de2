//! OpenAI Chat Completions: `choices[].message.tool_calls` in a response (whole, or
//! streamed as `delta.tool_calls[index]` fragments, the id and name only in the first,
//! ended by the choice's `finish_reason`), and `role: tool` messages and `tools` in a
//! request.
//!
//! A choice's tool calls are held until its `finish_reason` arrives; then each is decided,
//! the allowed ones are sent whole (one delta each, re-indexed 0, 1, …) and each denied one
//! becomes text in `content`. `finish_reason: tool_calls` becomes `stop` when no allowed
//! call is left.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::decide::{Ruling, ToolCall, ToolResult};
use super::rawjson::{Obj, array, present};
use super::sse::Event;
use super::stream::Rewriter;

/// The calls in a response body: (choice position, call position, call).
pub fn calls(body: &Obj) -> Vec<(usize, usize, ToolCall)> {
    let Some(choices) = body.get("choices").and_then(|c| array(c).ok()) else { return Vec::new() };
    let mut out = Vec::new();
    for (ci, choice) in choices.iter().enumerate() {
        // The common shape read without building a tree (the message's text is skipped,
        // not copied); anything unusual through `Value`, which reads it as the SDKs do.
        if let Ok(typed) = serde_json::from_str::<Choice<'_>>(choice.get()) {
            let found = typed.message.and_then(|m| m.tool_calls).unwrap_or_default();
            out.extend(found.into_iter().enumerate().map(|(ti, tc)| {
                let call = ToolCall {
                    id: tc.id.into_owned(),
                    name: tc.function.name.into_owned(),
                    args: tc.function.arguments.into_owned(),
                };
                (ci, ti, call)
            }));
            continue;
        }
        let Ok(choice) = serde_json::from_str::<Value>(choice.get()) else { continue };
        for (ti, tc) in choice["message"]["tool_calls"].as_array().into_iter().flatten().enumerate() {
            out.push((ci, ti, call_of(tc)));
        }
    }
    out
}

/// [`results`] without building a tree, for the usual shapes (see `outcomes::results`);
/// `None` for anything it does not read exactly as [`results`] would.
pub fn results_typed(messages: &str) -> Option<Vec<ToolResult>> {
    #[derive(serde::Deserialize)]
    struct Sent<'a> {
        #[serde(default, borrow)]
        role: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        tool_call_id: Option<Cow<'a, str>>,
        #[serde(default, borrow, deserialize_with = "present")]
        content: Option<&'a RawValue>,
        #[serde(default, borrow)]
        tool_calls: Option<Vec<SentCall<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct SentCall<'a> {
        #[serde(default, borrow)]
        id: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        function: Option<SentFunction<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct SentFunction<'a> {
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
    }
    let messages: Vec<Sent<'_>> = serde_json::from_str(messages).ok()?;
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for m in messages {
        for tc in m.tool_calls.into_iter().flatten() {
            if let (Some(id), Some(name)) = (tc.id, tc.function.and_then(|f| f.name)) {
                names.insert(id.into_owned(), name.into_owned());
            }
        }
        if m.role.as_deref() == Some("tool")
            && let Some(id) = m.tool_call_id
        {
            out.push(ToolResult {
                tool: names.get(id.as_ref()).cloned(),
                id: id.into_owned(),
                content: m.content.map_or_else(String::new, |c| c.get().to_string()),
                is_error: false,
            });
        }
    }
    Some(out)
}

/// A choice as far as finding calls needs it (see [`calls`]).
#[derive(serde::Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
}

#[derive(serde::Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    tool_calls: Option<Vec<Call<'a>>>,
}

#[derive(serde::Deserialize)]
struct Call<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: Function<'a>,
}

#[derive(serde::Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Cow<'a, str>,
}

fn call_of(tc: &Value) -> ToolCall {
    ToolCall {
        id: tc["id"].as_str().unwrap_or_default().to_string(),
        name: tc["function"]["name"].as_str().unwrap_or_default().to_string(),
        args: tc["function"]["arguments"].as_str().unwrap_or_default().to_string(),
    }
}

/// `content` with `extra` text added (on a line of its own after any text).
fn with_text(content: Option<&str>, extra: &str) -> String {
    match content {
        Some(c) if !c.is_empty() => format!("{c}\n\n{extra}"),
        _ => extra.to_string(),
    }
}

/// The body with denied calls removed and their text put in `content`.
pub fn rewrite(
    mut body: Obj,
    found: &[(usize, usize, ToolCall)],
    rulings: &[Ruling],
) -> Result<String, serde_json::Error> {
    let Some(choices) = body.get("choices") else { return Ok(body.to_string()) };
    let mut choices = array(choices)?;
    for (ci, choice_raw) in choices.iter_mut().enumerate() {
        let mine: Vec<(usize, &Ruling)> = found
            .iter()
            .zip(rulings)
            .filter(|((c, _, _), _)| *c == ci)
            .map(|((_, t, _), r)| (*t, r))
            .collect();
        if mine.iter().all(|(_, r)| r.allow) {
            continue;
        }
        let mut choice = Obj::of(choice_raw)?;
        let Some(message) = choice.get("message") else { continue };
        let mut message = Obj::of(message)?;
        let tool_calls = message.get("tool_calls").map(array).transpose()?.unwrap_or_default();
        let mut kept = Vec::new();
        let mut texts = Vec::new();
        for (ti, tc) in tool_calls.into_iter().enumerate() {
            match mine.iter().find(|(t, _)| *t == ti) {
                Some((_, r)) if !r.allow => texts.push(r.text.clone()),
                _ => kept.push(tc),
            }
        }
        let content = with_text(message.str("content").as_deref(), &texts.join("\n\n"));
        message.set("content", &content)?;
        if kept.is_empty() {
            message.remove("tool_calls");
            if choice.str("finish_reason").as_deref() == Some("tool_calls") {
                choice.set("finish_reason", &"stop")?;
            }
        } else {
            message.set("tool_calls", &kept)?;
        }
        choice.set_raw("message", message.to_raw()?);
        *choice_raw = choice.to_raw()?;
    }
    body.set("choices", &choices)?;
    Ok(body.to_string())
}

/// The results of tool calls (`role: tool` messages) in a request.
pub fn results(request: &Value) -> Vec<ToolResult> {
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for msg in request["messages"].as_array().into_iter().flatten() {
        for tc in msg["tool_calls"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (tc["id"].as_str(), tc["function"]["name"].as_str()) {
                names.insert(id.to_string(), name.to_string());
            }
        }
        if msg["role"] == "tool"
            && let Some(id) = msg["tool_call_id"].as_str()
        {
            out.push(ToolResult {
                id: id.to_string(),
                tool: names.get(id).cloned(),
                content: msg.get("content").map_or_else(String::new, Value::to_string),
                is_error: false,
            });
        }
    }
    out
}

/// The name of a function tool in `tools`.
pub fn tool_name(tool: &Value) -> Option<&str> {
    (tool["type"] == "function").then(|| tool["function"]["name"].as_str()).flatten()
}

/// One call being assembled from fragments.
#[derive(Default, Clone)]
struct Partial {
    id: String,
    name: String,
    args: String,
}

/// The streaming rewriter (see the module docs).
#[derive(Default)]
pub struct Stream {
    /// Per choice index: its calls by their `index`.
    pending: BTreeMap<u64, BTreeMap<u64, Partial>>,
    /// The chunks that carried call fragments, held whole (their other deltas too, so the
    /// order of what the client sees is the upstream's).
    held: Vec<(Event, Value)>,
    /// The finishing chunk being held, and the choices it finishes that have calls.
    finishing: Option<(Event, Value, Vec<u64>)>,
    /// Why the stream cannot be followed (see [`Rewriter::broken`]).
    broken: Option<String>,
}

impl Rewriter for Stream {
    fn feed_json(&mut self, ev: Event, v: Value, out: &mut Vec<Event>) -> Option<Vec<ToolCall>> {
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            self.pass(ev, out);
            return None;
        };
        let mut fragments = false;
        let mut finishing = Vec::new();
        for choice in choices {
            let ci = choice["index"].as_u64().unwrap_or(0);
            for tc in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
                fragments = true;
                let p =
                    self.pending.entry(ci).or_default().entry(tc["index"].as_u64().unwrap_or(0)).or_default();
                if let Some(id) = tc["id"].as_str() {
                    p.id = id.to_string();
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    p.name.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    p.args.push_str(a);
                }
            }
            if !choice["finish_reason"].is_null() && self.pending.contains_key(&ci) {
                finishing.push(ci);
            }
        }
        if !finishing.is_empty() {
            let calls = finishing
                .iter()
                .flat_map(|ci| self.pending.get(ci).into_iter().flat_map(|m| m.values()))
                .map(|p| ToolCall { id: p.id.clone(), name: p.name.clone(), args: p.args.clone() })
                .collect();
            self.finishing = Some((ev, v, finishing));
            return Some(calls);
        }
        if fragments {
            self.held.push((ev, v));
        } else {
            self.pass(ev, out);
        }
        None
    }

    fn resolve(&mut self, rulings: &[Ruling], out: &mut Vec<Event>) {
        let Some((ev, mut v, finishing)) = self.finishing.take() else { return };
        // (choice, upstream index) -> the index the client sees, or None when denied.
        let mut mapping: BTreeMap<(u64, u64), Option<u64>> = BTreeMap::new();
        let mut denials: Vec<(u64, String)> = Vec::new();
        let mut rulings = rulings.iter();
        for ci in &finishing {
            let calls = self.pending.remove(ci).unwrap_or_default();
            let mine: Vec<&Ruling> = rulings.by_ref().take(calls.len()).collect();
            // The upstream's own indexes while nothing is taken out; 0, 1, … once a call is.
            let keep_index = mine.iter().all(|r| r.allow);
            let mut allowed = 0u64;
            for (upstream_index, r) in calls.keys().zip(mine) {
                if r.allow {
                    mapping.insert(
                        (*ci, *upstream_index),
                        Some(if keep_index { *upstream_index } else { allowed }),
                    );
                    allowed += 1;
                } else {
                    mapping.insert((*ci, *upstream_index), None);
                    denials.push((*ci, r.text.clone()));
                }
            }
            if allowed == 0
                && let Some(choice) = v["choices"]
                    .as_array_mut()
                    .and_then(|cs| cs.iter_mut().find(|c| c["index"].as_u64().unwrap_or(0) == *ci))
                && choice["finish_reason"] == "tool_calls"
            {
                choice["finish_reason"] = "stop".into();
            }
        }
        let template = self.held.first().map(|(_, t)| t.clone());
        for (held_ev, mut chunk) in std::mem::take(&mut self.held) {
            if !edit_fragments(&mut chunk, &mapping) {
                out.push(held_ev);
                continue;
            }
            let empty = chunk["choices"].as_array().is_some_and(|cs| {
                cs.iter().all(|c| {
                    c["finish_reason"].is_null()
                        && c["delta"].as_object().is_none_or(|d| d.values().all(Value::is_null))
                })
            });
            if !empty {
                out.push(Event { data: chunk.to_string(), ..held_ev });
            }
        }
        let mut template = template.unwrap_or_else(|| v.clone());
        if let Some(t) = template.as_object_mut() {
            t.remove("usage");
        }
        for (ci, text) in denials {
            let mut c = template.clone();
            c["choices"] = json!([{"index": ci, "delta": {"content": format!("\n\n{text}")}, "logprobs": null, "finish_reason": null}]);
            out.push(Event { data: c.to_string(), ..ev.clone() });
        }
        out.push(Event { data: v.to_string(), ..ev });
    }

    fn unfinished(&self) -> Option<String> {
        self.pending.values().flat_map(|m| m.values()).next().map(|p| p.name.clone())
    }

    fn broken(&self) -> Option<String> {
        self.broken.clone()
    }

    fn pass(&mut self, ev: Event, out: &mut Vec<Event>) {
        // Once a call is being held, later chunks wait behind it (their order is kept).
        if self.held.is_empty() {
            out.push(ev);
        } else {
            let v = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
            self.held.push((ev, v));
        }
    }

    fn break_with(&mut self, why: String) {
        self.broken = Some(why);
    }
}

/// Applies `mapping` to the call fragments of `chunk` (drops denied calls' fragments,
/// renumbers the rest); false when nothing had to change.
fn edit_fragments(chunk: &mut Value, mapping: &BTreeMap<(u64, u64), Option<u64>>) -> bool {
    let mut changed = false;
    for choice in chunk["choices"].as_array_mut().into_iter().flatten() {
        let ci = choice["index"].as_u64().unwrap_or(0);
        let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else { continue };
        let Some(Value::Array(tcs)) = delta.get_mut("tool_calls") else { continue };
        let before = tcs.clone();
        tcs.retain(|tc| mapping.get(&(ci, tc["index"].as_u64().unwrap_or(0))).is_none_or(Option::is_some));
        for tc in tcs.iter_mut() {
            let i = tc["index"].as_u64().unwrap_or(0);
            if let Some(Some(to)) = mapping.get(&(ci, i)) {
                tc["index"] = (*to).into();
            }
        }
        if *tcs != before {
            changed = true;
            if tcs.is_empty() {
                delta.remove("tool_calls");
            }
        }
    }
    changed
}
