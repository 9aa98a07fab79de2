//! Streaming responses: the upstream's SSE events go through an API's [`Rewriter`], which
//! passes text on at once and holds a tool call's events until the call is complete; the
//! driver then has the call decided (durably), lets the rewriter release or replace it,
//! and only then reads on.
//!
//! An upstream that ends or fails while a call is held gets the API's error event in place
//! of the call (the call is never released undecided); a client that goes away stops the
//! reading of the upstream.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::mpsc;

use super::api::{Api, Body, Fault, error_event};
use super::auth::AgentCtx;
use super::decide::{Memory, Meta, Ruling, ToolCall, decide_all};
use super::sse::{self, Event};

/// What each API's stream rewriter does (see the module docs).
pub trait Rewriter: Send {
    /// Takes one upstream event: pushes what may go to the client now onto `out`, and
    /// returns the calls to decide when a held call is complete (then [`Rewriter::resolve`]
    /// comes next). Data with nothing to check passes; data that is not JSON breaks the
    /// stream (see [`json_data`]).
    fn feed(&mut self, ev: Event, out: &mut Vec<Event>) -> Option<Vec<ToolCall>> {
        match json_data(&ev) {
            Ok(Some(v)) => self.feed_json(ev, v, out),
            Ok(None) => {
                self.pass(ev, out);
                None
            }
            Err(why) => {
                self.break_with(why);
                None
            }
        }
    }
    /// [`Rewriter::feed`] for an event whose data is the JSON `v`.
    fn feed_json(&mut self, ev: Event, v: serde_json::Value, out: &mut Vec<Event>) -> Option<Vec<ToolCall>>;
    /// Passes an event on as it is (behind a held call, if one is held).
    fn pass(&mut self, ev: Event, out: &mut Vec<Event>);
    /// Marks the stream as one that cannot be followed, for `why` ([`Rewriter::broken`]).
    fn break_with(&mut self, why: String);
    /// Releases or replaces the held calls, given their rulings in order.
    fn resolve(&mut self, rulings: &[Ruling], out: &mut Vec<Event>);
    /// The name of a call still held (when the upstream ends).
    fn unfinished(&self) -> Option<String>;
    /// Why the stream cannot be followed (events of a call out of order, such as a second
    /// call starting inside a held one, or more of a call after it was decided): the
    /// stream is then ended with an error rather than letting anything undecided through.
    fn broken(&self) -> Option<String> {
        None
    }
}

/// An upstream event's data as JSON: `Ok(None)` for data that carries nothing to check
/// (none, or OpenAI's `[DONE]`), which passes as it is; an error, which ends the stream,
/// for anything else that is not JSON the gateway can read. An SDK's own parser may accept
/// what serde_json refuses (Python's `json` takes `NaN`, lone surrogates), so such an event
/// could carry a call the gateway never saw: it is never passed on.
pub fn json_data(ev: &Event) -> Result<Option<serde_json::Value>, String> {
    let data = ev.data.trim();
    if data.is_empty() || data == "[DONE]" {
        return Ok(None);
    }
    serde_json::from_str(data).map(Some).map_err(|e| {
        format!(
            "the upstream stream sent a {} event whose data is not JSON the gateway can read ({e}); it was stopped so that nothing unchecked reaches the agent; retry the request",
            ev.event
        )
    })
}

fn frame(events: &mut Vec<Event>) -> Option<Bytes> {
    if events.is_empty() {
        return None;
    }
    let mut buf = BytesMut::new();
    for e in events.drain(..) {
        e.write_to(&mut buf);
    }
    Some(buf.freeze())
}

/// The client's body for a streamed upstream response.
pub fn drive(
    upstream: Incoming,
    mut rewriter: Box<dyn Rewriter>,
    ctx: Arc<AgentCtx>,
    memory: Arc<Memory>,
    api: Api,
    meta: Meta,
) -> Body {
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(async move {
        let events = sse::events(upstream.into_data_stream());
        let mut events = std::pin::pin!(events);
        let mut out = Vec::new();
        let vendor = api.vendor();
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = tx.closed() => return,
            };
            let failure = match next {
                None => match rewriter.unfinished() {
                    Some(name) => format!(
                        "the upstream ended the stream in the middle of a call of {name}; the call was not released; retry the request"
                    ),
                    None => return,
                },
                Some(Err(e)) => {
                    let held = rewriter.unfinished().map_or_else(String::new, |n| {
                        format!(" in the middle of a call of {n} (not released)")
                    });
                    format!("the upstream stream failed{held}: {e}; retry the request")
                }
                Some(Ok(ev)) => {
                    let calls = rewriter.feed(ev, &mut out);
                    if let Some(why) = rewriter.broken() {
                        out.clear();
                        eprintln!("ledgerctl shim llm: agent {}: {why}", ctx.agent);
                        out.push(error_event(vendor, Fault::Upstream, &why));
                        if let Some(bytes) = frame(&mut out) {
                            let _ = tx.send(bytes).await;
                        }
                        return;
                    }
                    if let Some(calls) = calls {
                        if let Some(bytes) = frame(&mut out)
                            && tx.send(bytes).await.is_err()
                        {
                            return;
                        }
                        let rulings = decide_all(&ctx, &memory, api, &meta, &calls).await;
                        rewriter.resolve(&rulings, &mut out);
                    }
                    if let Some(bytes) = frame(&mut out)
                        && tx.send(bytes).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
            };
            eprintln!("ledgerctl shim llm: agent {}: {failure}", ctx.agent);
            out.push(error_event(vendor, Fault::Upstream, &failure));
            if let Some(bytes) = frame(&mut out) {
                let _ = tx.send(bytes).await;
            }
            return;
        }
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    StreamBody::new(body).map_err(|never| match never {}).boxed()
}
