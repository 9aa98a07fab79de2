//! OpenAI Responses: `function_call` output items in a response (whole, or streamed as
//! `response.output_item.added` / `response.function_call_arguments.delta` / `.done` /
//! `response.output_item.done`, and again in `response.completed`), and
//! `function_call_output` items and `tools` in a request.
//!
//! A denied `function_call` item becomes an assistant `message` item with one
//! `output_text` part at the same `output_index`; in a stream its events are replaced by the
//! events of such a message, and later `sequence_number`s are shifted so they stay
//! contiguous. The response stays `completed`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::decide::{Ruling, ToolCall, ToolResult};
use super::rawjson::{Obj, array, present, raw};
use super::sse::Event;
use super::stream::Rewriter;

fn call_of(item: &Value) -> ToolCall {
    ToolCall {
        id: item["call_id"].as_str().unwrap_or_default().to_string(),
        name: item["name"].as_str().unwrap_or_default().to_string(),
        args: item["arguments"].as_str().unwrap_or_default().to_string(),
    }
}

/// The `message` item that stands for a denied call.
fn message_item(item_id: &str, text: &str) -> Value {
    json!({
        "id": format!("msg_ledgerd_{item_id}"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    })
}

/// The calls in a response body, with their positions in `output`.
pub fn calls(body: &Obj) -> Vec<(usize, ToolCall)> {
    let Some(output) = body.get("output").and_then(|c| array(c).ok()) else { return Vec::new() };
    output
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            // The common shape read without building a tree; anything unusual through
            // `Value`, which reads it as the SDKs do.
            match serde_json::from_str::<Item<'_>>(item.get()) {
                Ok(it) if it.kind != "function_call" => return None,
                Ok(Item { call_id: Some(id), name: Some(name), arguments: Some(args), .. }) => {
                    let call =
                        ToolCall { id: id.into_owned(), name: name.into_owned(), args: args.into_owned() };
                    return Some((i, call));
                }
                _ => {}
            }
            let v: Value = serde_json::from_str(item.get()).ok()?;
            (v["type"] == "function_call").then(|| (i, call_of(&v)))
        })
        .collect()
}

/// [`results`] without building a tree, for the usual shapes (see `outcomes::results`);
/// `None` for anything it does not read exactly as [`results`] would.
pub fn results_typed(input: &str) -> Option<Vec<ToolResult>> {
    #[derive(serde::Deserialize)]
    struct Sent<'a> {
        #[serde(rename = "type", default, borrow)]
        kind: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        call_id: Option<Cow<'a, str>>,
        #[serde(default, borrow)]
        name: Option<Cow<'a, str>>,
        #[serde(default, borrow, deserialize_with = "present")]
        output: Option<&'a RawValue>,
    }
    // A plain-text input has no items.
    if !input.trim_start().starts_with('[') {
        return serde_json::from_str::<serde::de::IgnoredAny>(input).ok().map(|_| Vec::new());
    }
    let items: Vec<Sent<'_>> = serde_json::from_str(input).ok()?;
    let names: HashMap<&str, &str> = items
        .iter()
        .filter(|i| i.kind.as_deref() == Some("function_call"))
        .filter_map(|i| Some((i.call_id.as_deref()?, i.name.as_deref()?)))
        .collect();
    let out = items
        .iter()
        .filter(|i| i.kind.as_deref() == Some("function_call_output"))
        .filter_map(|i| {
            let id = i.call_id.as_deref()?;
            Some(ToolResult {
                id: id.to_string(),
                tool: names.get(id).map(|n| n.to_string()),
                content: i.output.map_or_else(String::new, |c| c.get().to_string()),
                is_error: false,
            })
        })
        .collect();
    Some(out)
}

/// An output item as far as finding calls needs it (see [`calls`]).
#[derive(serde::Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// The body with each denied call's item replaced by a message item.
pub fn rewrite(
    mut body: Obj,
    found: &[(usize, ToolCall)],
    rulings: &[Ruling],
) -> Result<String, serde_json::Error> {
    let Some(output) = body.get("output") else { return Ok(body.to_string()) };
    let mut output = array(output)?;
    for ((i, _), r) in found.iter().zip(rulings) {
        if !r.allow {
            let item: Value = serde_json::from_str(output[*i].get())?;
            output[*i] = raw(&message_item(item["id"].as_str().unwrap_or_default(), &r.text))?;
        }
    }
    body.set("output", &output)?;
    Ok(body.to_string())
}

/// The results of function calls (`function_call_output` items) in a request's `input`.
pub fn results(request: &Value) -> Vec<ToolResult> {
    let items = request["input"].as_array();
    let names: HashMap<&str, &str> = items
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "function_call")
        .filter_map(|i| Some((i["call_id"].as_str()?, i["name"].as_str()?)))
        .collect();
    items
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "function_call_output")
        .filter_map(|i| {
            let id = i["call_id"].as_str()?;
            Some(ToolResult {
                id: id.to_string(),
                tool: names.get(id).map(|n| n.to_string()),
                content: i.get("output").map_or_else(String::new, Value::to_string),
                is_error: false,
            })
        })
        .collect()
}

/// The name of a function tool in `tools`.
pub fn tool_name(tool: &Value) -> Option<&str> {
    (tool["type"] == "function").then(|| tool["name"].as_str()).flatten()
}

struct Held {
    output_index: u64,
    events: Vec<Event>,
    after: Vec<Event>,
    item: Option<Value>,
}

/// The streaming rewriter (see the module docs).
#[derive(Default)]
pub struct Stream {
    held: Option<Held>,
    /// Added to each upstream `sequence_number` (replacements change the event count).
    shift: i64,
    /// Denied calls by call id: the text, for `response.completed`.
    denied: HashMap<String, String>,
    /// Output indexes of the calls already decided.
    decided: std::collections::HashSet<u64>,
    broken: Option<String>,
}

impl Stream {
    fn renumber(&self, ev: Event) -> Event {
        if self.shift == 0 {
            return ev;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else { return ev };
        if let Some(n) = v["sequence_number"].as_i64() {
            v["sequence_number"] = (n + self.shift).into();
            return Event { data: v.to_string(), ..ev };
        }
        ev
    }
}

impl Rewriter for Stream {
    fn feed_json(&mut self, ev: Event, mut v: Value, out: &mut Vec<Event>) -> Option<Vec<ToolCall>> {
        let index = v["output_index"].as_u64();
        let kind = v["type"].as_str().unwrap_or_default().to_string();
        let holding = matches!((&self.held, index), (Some(h), Some(i)) if h.output_index == i);
        let late = index.is_some_and(|i| self.decided.contains(&i));
        let nested = self.held.is_some() && !holding && kind == "response.output_item.added";
        if late || nested {
            self.broken = Some(format!(
                "the upstream stream sent {kind} for output item {} out of order; it was stopped so that no undecided tool call goes through; retry the request",
                index.unwrap_or_default()
            ));
            return None;
        }
        match kind.as_str() {
            "response.output_item.added" if v["item"]["type"] == "function_call" && self.held.is_none() => {
                self.held = Some(Held {
                    output_index: index.unwrap_or(0),
                    events: vec![ev],
                    after: Vec::new(),
                    item: None,
                });
                None
            }
            "response.output_item.done" if holding => {
                let held = self.held.as_mut()?;
                let item = v["item"].take();
                let call = call_of(&item);
                held.item = Some(item);
                held.events.push(ev);
                Some(vec![call])
            }
            _ if holding => {
                if let Some(h) = self.held.as_mut() {
                    h.events.push(ev);
                }
                None
            }
            "response.completed" | "response.incomplete" | "response.failed" if !self.denied.is_empty() => {
                if let Some(output) = v["response"]["output"].as_array_mut() {
                    for item in output.iter_mut() {
                        if item["type"] == "function_call"
                            && let Some(text) = item["call_id"].as_str().and_then(|c| self.denied.get(c))
                        {
                            *item = message_item(item["id"].as_str().unwrap_or_default(), text);
                        }
                    }
                }
                let ev = Event { data: v.to_string(), ..ev };
                self.pass(ev, out);
                None
            }
            _ => {
                self.pass(ev, out);
                None
            }
        }
    }

    fn resolve(&mut self, rulings: &[Ruling], out: &mut Vec<Event>) {
        let Some(held) = self.held.take() else { return };
        self.decided.insert(held.output_index);
        match rulings.first() {
            Some(r) if r.allow => {
                for ev in held.events {
                    out.push(self.renumber(ev));
                }
            }
            Some(r) => {
                let item = held.item.unwrap_or_default();
                let call = call_of(&item);
                self.denied.insert(call.id, r.text.clone());
                let first = held
                    .events
                    .first()
                    .and_then(|e| serde_json::from_str::<Value>(&e.data).ok())
                    .and_then(|v| v["sequence_number"].as_i64())
                    .map(|n| n + self.shift);
                let msg = message_item(item["id"].as_str().unwrap_or_default(), &r.text);
                let id = msg["id"].clone();
                let oi = held.output_index;
                let part = json!({"type": "output_text", "text": r.text, "annotations": [], "logprobs": []});
                let mut added = msg.clone();
                added["status"] = "in_progress".into();
                added["content"] = json!([]);
                let events = [
                    json!({"type": "response.output_item.added", "output_index": oi, "item": added}),
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": oi, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                    json!({"type": "response.output_text.delta", "item_id": id, "output_index": oi, "content_index": 0, "delta": r.text, "logprobs": []}),
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": oi, "content_index": 0, "text": r.text, "logprobs": []}),
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": oi, "content_index": 0, "part": part}),
                    json!({"type": "response.output_item.done", "output_index": oi, "item": msg}),
                ];
                let count = events.len() as i64;
                for (k, mut e) in events.into_iter().enumerate() {
                    if let Some(n) = first {
                        e["sequence_number"] = (n + k as i64).into();
                    }
                    let name = e["type"].as_str().unwrap_or_default().to_string();
                    out.push(Event::new(name, e.to_string()));
                }
                if first.is_some() {
                    self.shift += count - held.events.len() as i64;
                }
            }
            None => {}
        }
        for ev in held.after {
            self.pass(ev, out);
        }
    }

    fn broken(&self) -> Option<String> {
        self.broken.clone()
    }

    fn pass(&mut self, ev: Event, out: &mut Vec<Event>) {
        match self.held.as_mut() {
            Some(h) => h.after.push(ev),
            None => out.push(self.renumber(ev)),
        }
    }

    fn break_with(&mut self, why: String) {
        self.broken = Some(why);
    }

    fn unfinished(&self) -> Option<String> {
        self.held.as_ref().map(|h| {
            h.events
                .first()
                .and_then(|e| serde_json::from_str::<Value>(&e.data).ok())
                .and_then(|v| v["item"]["name"].as_str().map(String::from))
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Value) -> Event {
        Event::new(v["type"].as_str().unwrap_or_default().to_string(), v.to_string())
    }

    #[test]
    fn a_denied_call_becomes_a_message_and_sequence_numbers_stay_contiguous() {
        let item =
            json!({"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "rm", "arguments": ""});
        let done_item =
            json!({"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "rm", "arguments": "{}"});
        let mut s = Stream::default();
        let mut out = Vec::new();
        s.feed(ev(json!({"type": "response.output_item.added", "output_index": 0, "item": item, "sequence_number": 2})), &mut out);
        s.feed(ev(json!({"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{}", "sequence_number": 3})), &mut out);
        assert!(out.is_empty());
        let calls = s
            .feed(ev(json!({"type": "response.output_item.done", "output_index": 0, "item": done_item, "sequence_number": 4})), &mut out)
            .expect("complete");
        assert_eq!(calls[0].args, "{}");
        s.resolve(&[Ruling { allow: false, text: "no".into() }], &mut out);
        let seqs: Vec<i64> = out
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(&e.data).expect("json")["sequence_number"].as_i64().expect("n")
            })
            .collect();
        assert_eq!(seqs, [2, 3, 4, 5, 6, 7]);
        out.clear();
        let completed = json!({"type": "response.completed", "sequence_number": 5, "response": {"status": "completed", "output": [done_item]}});
        s.feed(ev(completed), &mut out);
        let v: Value = serde_json::from_str(&out[0].data).expect("json");
        assert_eq!(v["sequence_number"], 8);
        assert_eq!(v["response"]["output"][0]["type"], "message");
        assert_eq!(v["response"]["output"][0]["content"][0]["text"], "no");
    }
}
