//! Live escalation: the writer publishes every committed entry (after it is durable) on a
//! bounded broadcast channel, the [`Feed`]; `Watch` RPCs and the alerts thread each
//! subscribe to it.
//!
//! A subscriber that falls more than [`CAPACITY`] entries behind loses the oldest ones and
//! is told how many (`missed`): the writer never waits for a subscriber, so a slow watcher
//! cannot slow appends down. With no subscriber the writer does not even copy entries.

use std::sync::Arc;

use ledger_proto::pb;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Entries the feed keeps for subscribers that are behind. About 2 MB at typical entry
/// sizes; a subscriber further behind than this is told what it missed.
pub const CAPACITY: usize = 4096;

/// Events a `Watch` stream may hold for a client that reads slowly before the watcher
/// starts to fall behind on the feed.
const STREAM_BUFFER: usize = 256;

/// A committed entry as the feed carries it (shared by every subscriber).
pub type Committed = Arc<pb::Entry>;

/// The broadcast of committed entries. Cloning shares it.
#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Committed>,
    /// Set when the daemon stops serving, so open `Watch` streams end and the server's
    /// graceful shutdown does not wait for them forever.
    closing: watch::Sender<bool>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Feed {
        Feed { tx: broadcast::channel(CAPACITY).0, closing: watch::channel(false).0 }
    }

    /// A receiver of every entry committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.tx.subscribe()
    }

    /// Copies of `entries` (about to be appended at seqs from `first_seq`, stamped `time`)
    /// as they will be stored, or `None` when nobody listens (then nothing is copied).
    pub fn capture<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a pb::Entry>,
        first_seq: u64,
        time: i64,
    ) -> Option<Vec<Committed>> {
        if self.tx.receiver_count() == 0 {
            return None;
        }
        let copies = (first_seq..)
            .zip(entries)
            .map(|(seq, e)| {
                let mut e = e.clone();
                e.seq = seq;
                e.time_unix_nanos = time;
                Arc::new(e)
            })
            .collect();
        Some(copies)
    }

    /// Publishes entries that are now durable. Never blocks.
    pub fn publish(&self, entries: Option<Vec<Committed>>) {
        for e in entries.into_iter().flatten() {
            // An error only means that every subscriber has gone since the capture.
            let _ = self.tx.send(e);
        }
    }

    /// Ends every `Watch` stream (the daemon is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The server-streaming answer to a `Watch` RPC: matching entries as they are
    /// committed, and `missed` counts when this watcher fell behind.
    pub fn stream(&self, req: pb::WatchRequest) -> ReceiverStream<Result<pb::WatchEvent, Status>> {
        let mut rx = self.subscribe();
        let mut closing = self.closing.subscribe();
        let (tx, out) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    received = rx.recv() => match received {
                        Ok(entry) if matches(&req, &entry) => pb::watch_event::Event::Entry(entry.as_ref().clone()),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => pb::watch_event::Event::Missed(n),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = closing.wait_for(|closing| *closing) => return,
                    _ = tx.closed() => return,
                };
                if tx.send(Ok(pb::WatchEvent { event: Some(event) })).await.is_err() {
                    return; // the client went away
                }
            }
        });
        ReceiverStream::new(out)
    }
}

/// Whether a committed entry is one the watcher asked for.
pub fn matches(req: &pb::WatchRequest, entry: &pb::Entry) -> bool {
    entry.severity >= req.min_severity && (req.agent.is_empty() || entry.agent == req.agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    fn entry(seq: u64, severity: u32, agent: &str) -> pb::Entry {
        pb::Entry { seq, severity, agent: agent.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn nothing_is_copied_without_subscribers() {
        let feed = Feed::new();
        assert!(feed.capture([&entry(0, 1, "a")], 0, 5).is_none());
        let _rx = feed.subscribe();
        let copies = feed.capture([&entry(0, 1, "a"), &entry(0, 9, "b")], 7, 5).expect("a subscriber");
        assert_eq!(copies.iter().map(|e| (e.seq, e.time_unix_nanos)).collect::<Vec<_>>(), [(7, 5), (8, 5)]);
    }

    #[tokio::test]
    async fn a_watch_gets_matching_entries_and_what_it_missed() {
        let feed = Feed::new();
        let req = pb::WatchRequest { min_severity: 8, agent: "a".into() };
        let mut events = feed.stream(req);
        let batch = |from: u64, n: u64| (from..from + n).map(|s| Arc::new(entry(s, 8, "a"))).collect();
        feed.publish(Some(vec![
            Arc::new(entry(0, 7, "a")),
            Arc::new(entry(1, 9, "b")),
            Arc::new(entry(2, 8, "a")),
        ]));
        let first = events.next().await.expect("an event").expect("ok");
        assert_eq!(first.event, Some(pb::watch_event::Event::Entry(entry(2, 8, "a"))));
        // The stream's own buffer fills, then the feed overtakes the watcher.
        let total = (CAPACITY + STREAM_BUFFER + 500) as u64;
        feed.publish(Some(batch(3, total)));
        let mut seen = 0u64;
        let mut missed = 0u64;
        while seen + missed < total {
            match events.next().await.expect("an event").expect("ok").event {
                Some(pb::watch_event::Event::Entry(_)) => seen += 1,
                Some(pb::watch_event::Event::Missed(n)) => missed += n,
                None => panic!("an empty event"),
            }
        }
        assert!(missed > 0, "the watcher fell behind");
        assert_eq!(seen + missed, total, "every entry is either delivered or counted as missed");
        // Closing ends the stream.
        feed.close();
        assert!(events.next().await.is_none());
    }
}
