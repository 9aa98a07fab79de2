//! Live escalation: the writer publishes every committed entry (after it is durable) on a
//! bounded broadcast channel, the [`Feed`]; `Watch` RPCs and the alerts thread each
//! subscribe to it.
//!
//! A subscriber that falls more than [`CAPACITY`] entries behind loses the oldest ones and
//! is told how many (`missed`): the writer never waits for a subscriber, so a slow watcher
//! cannot slow appends down. Each subscriber says the lowest severity it wants, and the
//! writer copies and publishes only entries that some subscriber wants: with no
//! subscriber (or only `--min-severity 8` watchers and routine traffic) it copies nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

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
    wants: Arc<Wants>,
}

/// The severities subscribers want: how many want each lowest severity, and the lowest
/// of all (above [`MAX_SEVERITY`] when nobody listens), which the writer reads per commit.
struct Wants {
    counts: Mutex<[usize; MAX_SEVERITY as usize + 1]>,
    lowest: AtomicU32,
}

const MAX_SEVERITY: u32 = crate::scoring::scorer::MAX_SEVERITY;

/// A receiver of the feed; dropping it withdraws its interest. (Received through its
/// methods, so that whatever holds it holds the interest too.)
pub struct Subscription {
    rx: broadcast::Receiver<Committed>,
    _interest: Interest,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Committed, broadcast::error::RecvError> {
        self.rx.recv().await
    }

    /// For a thread outside the runtime (the alerts).
    pub fn blocking_recv(&mut self) -> Result<Committed, broadcast::error::RecvError> {
        self.rx.blocking_recv()
    }

    pub fn try_recv(&mut self) -> Result<Committed, broadcast::error::TryRecvError> {
        self.rx.try_recv()
    }
}

struct Interest {
    wants: Arc<Wants>,
    min: usize,
}

impl Wants {
    fn update(&self, min: usize, add: bool) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if add {
            counts[min] += 1;
        } else {
            counts[min] = counts[min].saturating_sub(1);
        }
        let lowest = counts.iter().position(|n| *n > 0).map_or(MAX_SEVERITY + 1, |i| i as u32);
        self.lowest.store(lowest, Ordering::Release);
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.wants.update(self.min, false);
    }
}

impl Default for Feed {
    fn default() -> Self {
        Feed::new()
    }
}

impl Feed {
    pub fn new() -> Feed {
        let wants = Wants {
            counts: Mutex::new([0; MAX_SEVERITY as usize + 1]),
            lowest: AtomicU32::new(MAX_SEVERITY + 1),
        };
        Feed { tx: broadcast::channel(CAPACITY).0, closing: watch::channel(false).0, wants: Arc::new(wants) }
    }

    /// A receiver of the entries of at least `min_severity` committed from now on (it may
    /// also get lower ones that another subscriber wants).
    pub fn subscribe(&self, min_severity: u32) -> Subscription {
        let min = min_severity.min(MAX_SEVERITY) as usize;
        self.wants.update(min, true);
        Subscription { rx: self.tx.subscribe(), _interest: Interest { wants: self.wants.clone(), min } }
    }

    /// Copies of the `entries` some subscriber wants (about to be appended at seqs from
    /// `first_seq`, stamped `time`) as they will be stored, or `None` when nobody listens
    /// (then nothing is copied).
    pub fn capture<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a pb::Entry>,
        first_seq: u64,
        time: i64,
    ) -> Option<Vec<Committed>> {
        let lowest = self.wants.lowest.load(Ordering::Acquire);
        if lowest > MAX_SEVERITY {
            return None;
        }
        let copies = (first_seq..)
            .zip(entries)
            .filter(|(_, e)| e.severity >= lowest)
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

    /// Ends every `Watch` stream (the daemon is stopping), and every other long-lived
    /// stream that watches [`Feed::closing`].
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes `true` when the daemon starts to stop.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The server-streaming answer to a `Watch` RPC: matching entries as they are
    /// committed, and `missed` counts when this watcher fell behind.
    pub fn stream(&self, req: pb::WatchRequest) -> ReceiverStream<Result<pb::WatchEvent, Status>> {
        let mut subscription = self.subscribe(req.min_severity);
        let mut closing = self.closing.subscribe();
        let (tx, out) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    received = subscription.recv() => match received {
                        Ok(entry) if matches(&req, &entry) => pb::watch_event::Event::Entry(entry.as_ref().clone()),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => pb::watch_event::Event::Missed(n),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = closing.wait_for(|closing| *closing) => return,
                    _ = tx.closed() => return,
                };
                // A client that does not read must not hold up the daemon's stop either.
                tokio::select! {
                    sent = tx.send(Ok(pb::WatchEvent { event: Some(event) })) => if sent.is_err() {
                        return; // the client went away
                    },
                    _ = closing.wait_for(|closing| *closing) => return,
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
    async fn only_what_a_subscriber_wants_is_copied() {
        let feed = Feed::new();
        let batch = [&entry(0, 1, "a"), &entry(0, 9, "b"), &entry(0, 8, "c")];
        assert!(feed.capture(batch, 0, 5).is_none());
        let high = feed.subscribe(8);
        let copies = feed.capture(batch, 7, 5).expect("a subscriber");
        assert_eq!(copies.iter().map(|e| (e.seq, e.time_unix_nanos)).collect::<Vec<_>>(), [(8, 5), (9, 5)]);
        let all = feed.subscribe(0);
        assert_eq!(feed.capture(batch, 7, 5).map(|c| c.len()), Some(3));
        drop(all);
        assert_eq!(feed.capture(batch, 7, 5).map(|c| c.len()), Some(2));
        drop(high);
        assert!(feed.capture(batch, 7, 5).is_none());
    }

    /// The stream's task holds the whole subscription, interest included (an async block
    /// that used only its receiver field would drop the interest at once).
    #[tokio::test]
    async fn a_watch_stream_keeps_its_interest() {
        let feed = Feed::new();
        let mut events = feed.stream(pb::WatchRequest { min_severity: 0, agent: String::new() });
        let entry = pb::Entry { severity: 6, ..Default::default() };
        let copies = feed.capture([&entry], 3, 9);
        assert_eq!(copies.as_ref().map(Vec::len), Some(1));
        feed.publish(copies);
        let got = events.next().await.expect("an event").expect("ok");
        assert!(matches!(got.event, Some(pb::watch_event::Event::Entry(e)) if e.seq == 3));
        drop(events);
        // Once the client is gone (and the task has noticed), nothing is copied.
        for _ in 0..100 {
            if feed.capture([&entry], 4, 9).is_none() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the interest outlived the stream");
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
