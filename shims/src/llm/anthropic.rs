//! Anthropic Messages: `tool_use` content blocks in a response (whole, or streamed as
//! `content_block_start` + `input_json_delta` fragments + `content_block_stop`), and
//! `tool_result` blocks and `tools` in a request.
//!
//! A denied `tool_use` block becomes a `text` block at the same index (so indexes stay
//! contiguous), and `stop_reason: tool_use` becomes `end_turn` when no allowed call is
//! left.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::decide::{Ruling, ToolCall, ToolResult};
use super::rawjson::{Obj, array, is_array, present, raw};
use super::sse::Event;
use super::stream::Rewriter;

/// The client tools in a response body, with their positions in `content`.
pub fn calls(body: &Obj) -> Vec<(usize, ToolCall)> {
    let Some(content) = body.get("content").and_then(|c| array(c).ok()) else { return Vec::new() };
    content
        .iter()
        .enumerate()
        .filter_map(|(i, block)| {
            // The common shapes read without building a tree; anything unusual (a repeated
            // or oddly typed member) through `Value`, which reads it as the SDKs do.
            match serde_json::from_str::<Block<'_>>(block.get()) {
                Ok(b) if b.kind != "tool_use" => return None,
                Ok(Block { id: Some(id), name: Some(name), input: Some(input), .. }) => {
                    let call = ToolCall {
                        id: id.into_owned(),
                        name: name.into_owned(),
                        args: input.get().to_string(),
                    };
                    return Some((i, call));
                }
                _ => {}
            }
            let v: Value = serde_json::from_str(block.get()).ok()?;
            (v["type"] == "tool_use").then(|| (i, call_of(&v)))
        })
        .collect()
}

/// [`results`] without building a tree, for the usual shapes (see `outcomes::results`);
/// `None` for anything it does not read exactly as [`results`] would.
pub fn results_typed(messages: &str) -> Option<Vec<ToolResult>> {
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(default, borrow)]
        content: Option<&'a RawValue>,
    }
    let messages: Vec<Message<'_>> = serde_json::from_str(messages).ok()?;
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for content in messages.into_iter().filter_map(|m| m.content).filter(|c| is_array(c)) {
        for part in serde_json::from_str::<Vec<Block<'_>>>(content.get()).ok()? {
            match part.kind.as_ref() {
                "tool_use" => {
                    if let (Some(id), Some(name)) = (part.id, part.name) {
                        names.insert(id.into_owned(), name.into_owned());
                    }
                }
                "tool_result" => {
                    let Some(id) = part.tool_use_id else { continue };
                    out.push(ToolResult {
                        tool: names.get(id.as_ref()).cloned(),
                        id: id.into_owned(),
                        content: part.content.map_or_else(String::new, |c| c.get().to_string()),
                        is_error: part.is_error.unwrap_or(false),
                    });
                }
                _ => {}
            }
        }
    }
    Some(out)
}

/// A content block as far as finding calls (in a response) and results (in a request)
/// needs it.
#[derive(serde::Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    content: Option<&'a RawValue>,
    #[serde(default)]
    is_error: Option<bool>,
}

fn call_of(block: &Value) -> ToolCall {
    ToolCall {
        id: block["id"].as_str().unwrap_or_default().to_string(),
        name: block["name"].as_str().unwrap_or_default().to_string(),
        args: block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
    }
}

/// The body with denied calls replaced (see the module docs).
pub fn rewrite(
    mut body: Obj,
    found: &[(usize, ToolCall)],
    rulings: &[Ruling],
) -> Result<String, serde_json::Error> {
    let Some(content) = body.get("content") else { return Ok(body.to_string()) };
    let mut content = array(content)?;
    for ((i, _), ruling) in found.iter().zip(rulings) {
        if !ruling.allow {
            content[*i] = raw(&json!({"type": "text", "text": ruling.text}))?;
        }
    }
    body.set("content", &content)?;
    if !rulings.iter().any(|r| r.allow) && body.str("stop_reason").as_deref() == Some("tool_use") {
        body.set("stop_reason", &"end_turn")?;
    }
    Ok(body.to_string())
}

/// The tool results in a request's messages, with the tool names from the `tool_use`
/// blocks they answer when the request carries them.
pub fn results(request: &Value) -> Vec<ToolResult> {
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for msg in request["messages"].as_array().into_iter().flatten() {
        for block in msg["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("tool_use") => {
                    if let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str()) {
                        names.insert(id.to_string(), name.to_string());
                    }
                }
                Some("tool_result") => {
                    let Some(id) = block["tool_use_id"].as_str() else { continue };
                    out.push(ToolResult {
                        id: id.to_string(),
                        tool: names.get(id).cloned(),
                        content: block.get("content").map_or_else(String::new, Value::to_string),
                        is_error: block["is_error"].as_bool().unwrap_or(false),
                    });
                }
                _ => {}
            }
        }
    }
    out
}

/// The name of a client tool in `tools` (server tools such as `web_search_…` have a
/// versioned `type` and are run by the API, not the agent: they are left alone).
pub fn tool_name(tool: &Value) -> Option<&str> {
    match tool["type"].as_str() {
        None | Some("custom") => tool["name"].as_str(),
        _ => None,
    }
}

/// A held `tool_use` block.
struct Held {
    index: u64,
    call: ToolCall,
    /// The initial `input` of `content_block_start` (used when no fragment follows).
    initial: String,
    events: Vec<Event>,
    /// Events that came while the block was held (pings): sent after it.
    after: Vec<Event>,
}

/// The streaming rewriter (see the module docs).
#[derive(Default)]
pub struct Stream {
    held: Option<Held>,
    /// A `message_start` whose `message.content` already holds `tool_use` blocks (the API
    /// may send them whole there), held until they are decided, with their positions.
    start: Option<(Event, Value, Vec<usize>)>,
    allowed: usize,
    denied: usize,
    /// Indexes of the `tool_use` blocks already decided.
    decided: std::collections::HashSet<u64>,
    broken: Option<String>,
}

impl Rewriter for Stream {
    fn feed_json(&mut self, ev: Event, v: Value, out: &mut Vec<Event>) -> Option<Vec<ToolCall>> {
        let index = v["index"].as_u64();
        let kind = v["type"].as_str().unwrap_or_default();
        let late = index.is_some_and(|i| self.decided.contains(&i));
        let nested =
            self.held.is_some() && kind == "content_block_start" && v["content_block"]["type"] == "tool_use";
        if late || nested {
            self.broken = Some(format!(
                "the upstream stream sent {kind} for content block {} out of order; it was stopped so that no undecided tool call goes through; retry the request",
                index.unwrap_or_default()
            ));
            return None;
        }
        match v["type"].as_str() {
            Some("message_start") if self.held.is_none() => {
                let found: Vec<(usize, ToolCall)> = v["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter(|(_, b)| b["type"] == "tool_use")
                    .map(|(i, b)| (i, call_of(b)))
                    .collect();
                if found.is_empty() {
                    out.push(ev);
                    return None;
                }
                let calls = found.iter().map(|(_, c)| c.clone()).collect();
                self.start = Some((ev, v, found.into_iter().map(|(i, _)| i).collect()));
                Some(calls)
            }
            Some("content_block_start")
                if v["content_block"]["type"] == "tool_use" && self.held.is_none() =>
            {
                let block = &v["content_block"];
                let mut call = call_of(block);
                let initial = std::mem::take(&mut call.args);
                self.held = Some(Held {
                    index: index.unwrap_or(0),
                    call,
                    initial,
                    events: vec![ev],
                    after: Vec::new(),
                });
                None
            }
            Some("content_block_delta") if self.holds(index) => {
                if let (Some(held), Some(part)) = (self.held.as_mut(), v["delta"]["partial_json"].as_str()) {
                    held.call.args.push_str(part);
                }
                if let Some(held) = self.held.as_mut() {
                    held.events.push(ev);
                }
                None
            }
            Some("content_block_stop") if self.holds(index) => {
                let held = self.held.as_mut()?;
                held.events.push(ev);
                if held.call.args.trim().is_empty() {
                    held.call.args = if held.initial.is_empty() { "{}".into() } else { held.initial.clone() };
                }
                Some(vec![held.call.clone()])
            }
            Some("message_delta")
                if self.held.is_none()
                    && self.allowed == 0
                    && self.denied > 0
                    && v["delta"]["stop_reason"] == "tool_use" =>
            {
                let mut v = v;
                v["delta"]["stop_reason"] = "end_turn".into();
                out.push(Event { data: v.to_string(), ..ev });
                None
            }
            _ => {
                self.pass(ev, out);
                None
            }
        }
    }

    fn resolve(&mut self, rulings: &[Ruling], out: &mut Vec<Event>) {
        if let Some((ev, mut v, positions)) = self.start.take() {
            for (i, r) in positions.iter().zip(rulings) {
                if r.allow {
                    self.allowed += 1;
                } else {
                    self.denied += 1;
                    v["message"]["content"][*i] = json!({"type": "text", "text": r.text});
                }
            }
            if self.denied == 0 {
                out.push(ev);
            } else {
                if self.allowed == 0 && v["message"]["stop_reason"] == "tool_use" {
                    v["message"]["stop_reason"] = "end_turn".into();
                }
                out.push(Event { data: v.to_string(), ..ev });
            }
            return;
        }
        let Some(held) = self.held.take() else { return };
        self.decided.insert(held.index);
        match rulings.first() {
            Some(r) if r.allow => {
                self.allowed += 1;
                out.extend(held.events);
            }
            Some(r) => {
                self.denied += 1;
                let i = held.index;
                let start = json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}});
                let delta = json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": r.text}});
                let stop = json!({"type": "content_block_stop", "index": i});
                out.push(Event::new("content_block_start", start.to_string()));
                out.push(Event::new("content_block_delta", delta.to_string()));
                out.push(Event::new("content_block_stop", stop.to_string()));
            }
            None => {}
        }
        out.extend(held.after);
    }

    fn unfinished(&self) -> Option<String> {
        self.held.as_ref().map(|h| h.call.name.clone())
    }

    fn broken(&self) -> Option<String> {
        self.broken.clone()
    }

    fn pass(&mut self, ev: Event, out: &mut Vec<Event>) {
        match self.held.as_mut() {
            Some(h) => h.after.push(ev),
            None => out.push(ev),
        }
    }

    fn break_with(&mut self, why: String) {
        self.broken = Some(why);
    }
}

impl Stream {
    fn holds(&self, index: Option<u64>) -> bool {
        matches!((&self.held, index), (Some(h), Some(i)) if h.index == i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(v: Value) -> Event {
        Event::new(v["type"].as_str().unwrap_or_default().to_string(), v.to_string())
    }

    fn start(i: u64, name: &str) -> Event {
        ev(
            json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": format!("t{i}"), "name": name, "input": {}}}),
        )
    }

    fn delta(i: u64, part: &str) -> Event {
        ev(
            json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}}),
        )
    }

    fn stop(i: u64) -> Event {
        ev(json!({"type": "content_block_stop", "index": i}))
    }

    #[test]
    fn a_held_call_is_replaced_in_place_and_the_turn_ends() {
        let mut s = Stream::default();
        let mut out = Vec::new();
        assert!(s.feed(start(0, "rm"), &mut out).is_none());
        assert!(s.feed(ev(json!({"type": "ping"})), &mut out).is_none());
        assert!(s.feed(delta(0, "{\"path\":"), &mut out).is_none());
        assert!(s.feed(delta(0, "\"/\"}"), &mut out).is_none());
        assert!(out.is_empty(), "nothing of the call (nor what follows it) before the decision");
        let calls = s.feed(stop(0), &mut out).expect("complete");
        assert_eq!(calls, [ToolCall { id: "t0".into(), name: "rm".into(), args: "{\"path\":\"/\"}".into() }]);
        s.resolve(&[Ruling { allow: false, text: "no".into() }], &mut out);
        let kinds: Vec<&str> = out.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(kinds, ["content_block_start", "content_block_delta", "content_block_stop", "ping"]);
        assert!(out[0].data.contains("\"index\":0") && out[1].data.contains("\"text\":\"no\""));
        out.clear();
        let md = ev(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}));
        assert!(s.feed(md, &mut out).is_none());
        assert!(out[0].data.contains("end_turn"), "{}", out[0].data);
    }

    #[test]
    fn calls_out_of_order_break_the_stream() {
        let mut s = Stream::default();
        let mut out = Vec::new();
        s.feed(start(0, "a"), &mut out);
        s.feed(start(1, "b"), &mut out);
        assert!(s.broken().is_some(), "a call starting inside a held one");
        let mut s = Stream::default();
        s.feed(start(0, "a"), &mut out);
        s.feed(stop(0), &mut out);
        s.resolve(&[Ruling { allow: false, text: "no".into() }], &mut out);
        s.feed(delta(0, "{}"), &mut out);
        assert!(s.broken().is_some(), "more of a call after its decision");
    }

    #[test]
    fn event_data_that_is_not_json_breaks_the_stream() {
        // Python's json reads NaN; serde_json does not: such an event could carry a call
        // the gateway never saw, so it ends the stream instead of passing.
        let mut s = Stream::default();
        let mut out = Vec::new();
        let nan = Event::new(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"rm","input":{"n":NaN}}}"#,
        );
        assert!(s.feed(nan, &mut out).is_none());
        assert!(out.is_empty(), "nothing passed");
        assert!(s.broken().is_some_and(|w| w.contains("not JSON")), "{:?}", s.broken());
        let mut s = Stream::default();
        s.feed(Event::new("message", "[DONE]"), &mut out);
        s.feed(Event::new("ping", ""), &mut out);
        assert!(s.broken().is_none() && out.len() == 2, "data with nothing to check passes");
    }

    #[test]
    fn calls_are_found_as_the_sdks_read_the_blocks() {
        let body = Obj::parse(
            r#"{"content":[
                {"type":"text","text":"a \"quoted\" tool_use"},
                {"type":"tool_use","id":"t1","name":"read","input":{ "path" : "/a" }},
                {"type":"tool_use","id":"t2","name":"harmless","name":"rm","input":{}},
                {"type":"tool_use","id":7,"name":"odd","input":null},
                {"type":"tool_use","id":"t\u0034","name":"esc","input":[1]}
            ]}"#,
        )
        .expect("object");
        let found = calls(&body);
        let got: Vec<(usize, &str, &str, &str)> =
            found.iter().map(|(i, c)| (*i, c.id.as_str(), c.name.as_str(), c.args.as_str())).collect();
        assert_eq!(
            got,
            [
                (1, "t1", "read", r#"{ "path" : "/a" }"#),
                (2, "t2", "rm", "{}"),
                (3, "", "odd", "null"),
                (4, "t4", "esc", "[1]"),
            ],
            "a repeated member is read last-wins (as the SDKs do), odd types as empty, escapes decoded"
        );
    }
}
