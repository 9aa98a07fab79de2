//! Server-sent events: the upstream's stream parsed into events by the `eventsource-stream`
//! codec (line endings, multi-line data, comments, a last event without its blank line),
//! and events written back in the standard framing.

use bytes::{BufMut, Bytes, BytesMut};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};

/// One event: its type (`message` when the stream names none) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
    pub id: String,
}

impl Event {
    pub fn new(event: impl Into<String>, data: impl Into<String>) -> Event {
        Event { event: event.into(), data: data.into(), id: String::new() }
    }

    /// A data-only event (OpenAI Chat Completions chunks).
    pub fn data(data: impl Into<String>) -> Event {
        Event::new("message", data)
    }

    /// Appends the event in SSE framing: `event:` (unless `message`), `id:` if any, one
    /// `data:` line per line of data, and the blank line that ends it.
    pub fn write_to(&self, out: &mut BytesMut) {
        if self.event != "message" && !self.event.is_empty() {
            out.put_slice(b"event: ");
            out.put_slice(self.event.as_bytes());
            out.put_u8(b'\n');
        }
        if !self.id.is_empty() {
            out.put_slice(b"id: ");
            out.put_slice(self.id.as_bytes());
            out.put_u8(b'\n');
        }
        for line in self.data.split('\n') {
            out.put_slice(b"data: ");
            out.put_slice(line.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.data.len() + 32);
        self.write_to(&mut out);
        out.freeze()
    }
}

/// Why an upstream stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the upstream stream failed: {0}")]
    Read(String),
    #[error("the upstream stream is not valid SSE: {0}")]
    Parse(String),
}

/// Parses a byte stream into events.
pub fn events<S, E>(body: S) -> impl Stream<Item = Result<Event, StreamError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    body.eventsource().map(|item| match item {
        Ok(e) => Ok(Event { event: e.event, data: e.data, id: e.id }),
        Err(eventsource_stream::EventStreamError::Transport(e)) => Err(StreamError::Read(e.to_string())),
        Err(e) => Err(StreamError::Parse(e.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let input =
            "event: ping\ndata: {\"type\":\"ping\"}\n\n: comment\ndata: a\ndata: b\n\ndata: [DONE]\n\n";
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            input.as_bytes().chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let got: Vec<Event> =
            events(futures_util::stream::iter(chunks)).map(|e| e.expect("event")).collect().await;
        assert_eq!(got[0], Event::new("ping", "{\"type\":\"ping\"}"));
        assert_eq!(got[1], Event::data("a\nb"));
        assert_eq!(got[2], Event::data("[DONE]"));
        let mut out = BytesMut::new();
        for e in &got {
            e.write_to(&mut out);
        }
        assert_eq!(
            &out[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\ndata: a\ndata: b\n\ndata: [DONE]\n\n"
        );
    }
}
