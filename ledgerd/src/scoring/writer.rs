//! The group-commit writer: one OS thread that owns the [`Log`] and turns whatever
//! appends are waiting into a single durable batch.
//!
//! Callers send [`Command`]s over a bounded channel (so under overload they wait: that
//! is the backpressure) and get their answer on a oneshot channel once the batch holding
//! their entries is on disk. While one batch is being synced, the next one gathers in the
//! channel, so batches grow with load and the sync cost is shared.
//!
//! If a write or sync fails, what is on disk is unknown: the writer answers that batch
//! with the error, stops, and every later call fails with [`WriterError::Stopped`]. The
//! error is published ([`WriterHandle::failure`]): `Status` reports it and the daemon
//! exits non-zero soon after, so that it is restarted once the disk is fixed.

use std::sync::Arc;
use std::thread;

use ledger_proto::merkle::Hash;
use ledger_proto::pb;
use ledger_query::policy::Policy;
use tokio::sync::{mpsc, oneshot, watch};

use crate::log::merkle::{Ack, Log, LogError, SignedCheckpoint, now_nanos};
use crate::scoring::commit::Scoring;
use crate::scoring::watch::Feed;
use crate::storage::store::StoreError;

/// Most entries in one group commit.
pub const MAX_BATCH_ENTRIES: usize = 8192;
/// Commands that may wait in the queue before callers block.
pub const QUEUE_DEPTH: usize = 1024;

/// The tree as of the last durable commit, published to readers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub root: Hash,
}

/// Why a write was not done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriterError {
    #[error("{0}")]
    Rejected(String),
    #[error(
        "the ledger's storage failed and ledgerd stopped accepting writes: {0}. Check the disk and the daemon log, then restart ledgerd"
    )]
    Failed(String),
    #[error("ledgerd is shutting down or its writer has stopped; retry against a running daemon")]
    Stopped,
}

/// Where the writer answers an append.
type AckSender = oneshot::Sender<Result<Vec<Ack>, WriterError>>;

/// A request to the writer.
pub enum Command {
    /// Append these entries (seq and time are assigned by the writer).
    Append { entries: Vec<pb::Entry>, reply: AckSender },
    /// Append one admin entry (registry or policy change) as its own commit, after
    /// checking it against the registry and policies as they stand (see
    /// `projection::State::prepare`). Answers with the entry as committed.
    /// A policy change comes with its document compiled by the caller, so the writer
    /// thread never compiles one.
    Admin {
        entry: Box<pb::Entry>,
        policy: Option<Arc<Policy>>,
        reply: oneshot::Sender<Result<pb::Entry, WriterError>>,
    },
    /// Finish what is queued before this, then end the thread (answered once it has).
    Stop { reply: oneshot::Sender<()> },
    /// Sign a checkpoint (a new one even if the tree has not grown, when `force`).
    Checkpoint { force: bool, reply: oneshot::Sender<Result<SignedCheckpoint, WriterError>> },
}

/// The sending side, shared by every connection.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
    head: watch::Receiver<Head>,
    /// The tree size acknowledged to callers: ahead of `head` while the writer writes a
    /// commit's tree hashes and indexes after answering (see [`WriterHandle::readable`]).
    acked: watch::Receiver<u64>,
    failure: watch::Receiver<Option<String>>,
}

impl WriterHandle {
    /// Appends entries and waits until they are durable.
    pub async fn append(&self, entries: Vec<pb::Entry>) -> Result<Vec<Ack>, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Append { entries, reply }).await.map_err(|_| WriterError::Stopped)?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Queues entries without waiting for them to be durable; the returned receiver
    /// answers when they are. Used by streams to keep many batches in flight.
    pub async fn submit(
        &self,
        entries: Vec<pb::Entry>,
    ) -> Result<oneshot::Receiver<Result<Vec<Ack>, WriterError>>, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Append { entries, reply }).await.map_err(|_| WriterError::Stopped)?;
        Ok(rx)
    }

    /// Appends an admin entry (see [`Command::Admin`]) and waits until it is durable.
    pub async fn admin(
        &self,
        entry: pb::Entry,
        policy: Option<Arc<Policy>>,
    ) -> Result<pb::Entry, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Admin { entry: Box::new(entry), policy, reply })
            .await
            .map_err(|_| WriterError::Stopped)?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Signs a checkpoint (see [`Command::Checkpoint`]).
    pub async fn checkpoint(&self, force: bool) -> Result<SignedCheckpoint, WriterError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Checkpoint { force, reply }).await.map_err(|_| WriterError::Stopped)?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Stops the writer after everything queued before this call. Later calls through any
    /// handle fail with [`WriterError::Stopped`]; a stray handle cannot keep it alive.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Stop { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The readable head, updated after every commit once its tree hashes and indexes
    /// are written: everything below it can be read from the store. It may lag the
    /// entries already acknowledged by the time those writes take; reads on behalf of a
    /// caller use [`WriterHandle::readable`].
    pub fn head(&self) -> watch::Receiver<Head> {
        self.head.clone()
    }

    /// The head once it covers every entry acknowledged before this call: what a caller
    /// that was answered may read (its own entry, a proof of it, a query that finds it).
    /// The writer answers a commit as soon as its entries are synced and writes their
    /// tree hashes and indexes right after, so this waits at most that long. If the
    /// writer stopped in between, the last head it published.
    pub async fn readable(&self) -> Head {
        let acked = *self.acked.borrow();
        let mut head = self.head.clone();
        let covered = match head.wait_for(|h| h.size >= acked).await {
            Ok(h) => Some(*h),
            Err(_) => None,
        };
        covered.unwrap_or_else(|| *self.head.borrow())
    }

    /// `None` while the writer runs; the error that stopped it once a write or sync
    /// failed (a clean stop leaves it `None`).
    pub fn failure(&self) -> watch::Receiver<Option<String>> {
        self.failure.clone()
    }
}

/// Starts the writer thread. It runs until [`WriterHandle::stop`] (or until every handle
/// is dropped), and returns the log when it ends (or the error that stopped it).
///
/// Every entry is scored by `scoring` in commit order before it is appended, and
/// published on `feed` once it is durable.
pub fn spawn(
    log: Log,
    scoring: Scoring,
    feed: Feed,
) -> (WriterHandle, thread::JoinHandle<Result<Log, LogError>>) {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (head_tx, head) = watch::channel(Head { size: log.size(), root: log.root() });
    let (acked_tx, acked) = watch::channel(log.size());
    let (failure_tx, failure) = watch::channel(None);
    let join = thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || {
            let ended = run(log, rx, Published { head: head_tx, acked: acked_tx }, scoring, feed);
            if let Err(e) = &ended {
                tracing::error!(error = %e, "the writer stopped after a storage error; no entry can be appended until ledgerd is restarted");
                let _ = failure_tx.send(Some(e.to_string()));
            }
            ended
        })
        .map_err(|e| e.to_string());
    let join = match join {
        Ok(j) => j,
        // Without a writer thread nothing can be written; fail every call clearly.
        Err(e) => thread::spawn(move || {
            Err(LogError::Store(StoreError::Encode(format!("cannot start the writer thread: {e}"))))
        }),
    };
    (WriterHandle { tx, head, acked, failure }, join)
}

/// What the writer publishes after commits: the readable head and the acknowledged size.
struct Published {
    head: watch::Sender<Head>,
    acked: watch::Sender<u64>,
}

impl Published {
    /// After a commit is durable, before its callers are answered.
    fn acked(&self, log: &Log) {
        self.acked.send_replace(log.size());
    }

    /// After a commit's derived writes: everything up to its size can be read.
    fn readable(&self, log: &Log) {
        self.acked.send_replace(log.size());
        self.head.send_replace(Head { size: log.size(), root: log.root() });
    }
}

/// Test-only crash point `after-ack` (see `storage::failpoint`): the commit's callers
/// were answered and nothing derived from it was written. The process lingers so that
/// the answers leave the socket before it aborts.
fn failpoint_after_ack() {
    if crate::storage::failpoint::reached("after-ack") {
        std::thread::sleep(std::time::Duration::from_secs(1));
        crate::storage::failpoint::abort("after-ack");
    }
}

fn run(
    mut log: Log,
    mut rx: mpsc::Receiver<Command>,
    head: Published,
    mut scoring: Scoring,
    feed: Feed,
) -> Result<Log, LogError> {
    let mut stopping: Option<oneshot::Sender<()>> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut groups = Vec::new();
        let mut waiting: Vec<AckSender> = Vec::new();
        let mut checkpoints = Vec::new();
        let mut admins = Vec::new();
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Append { entries, reply } => {
                    queued += entries.len();
                    groups.push(entries);
                    waiting.push(reply);
                }
                Command::Checkpoint { force, reply } => checkpoints.push((force, reply)),
                Command::Admin { entry, policy, reply } => admins.push((entry, policy, reply)),
                Command::Stop { reply } => {
                    stopping = Some(reply);
                    break;
                }
            }
            if queued < MAX_BATCH_ENTRIES {
                next = rx.try_recv().ok();
            }
        }

        if !groups.is_empty() {
            // The one time the log stamps on this commit (it never goes back), so the
            // scorer sees exactly the stored time.
            let time = now_nanos().max(log.last_time());
            scoring.score(groups.iter_mut().flatten(), time);
            let committed = feed.capture(groups.iter().flatten(), log.size(), time);
            crate::scoring::commit_sizes::record(queued);
            match log.commit(groups, time) {
                Ok(acks) => {
                    // Durable: answered now. The tree hashes and indexes derived from the
                    // entries are written after the answers, and only then does the head
                    // move; reads for a caller wait for it (`WriterHandle::readable`).
                    head.acked(&log);
                    for (group, reply) in acks.into_iter().zip(waiting) {
                        let _ = reply.send(Ok(group));
                    }
                    failpoint_after_ack();
                    if let Err(e) = log.project() {
                        tracing::error!(error = %e, "writing the tree hashes and indexes of a durable commit failed; the writer stops");
                        let failed = WriterError::Failed(e.to_string());
                        for (_, reply) in checkpoints {
                            let _ = reply.send(Err(failed.clone()));
                        }
                        for (_, _, reply) in admins {
                            let _ = reply.send(Err(failed.clone()));
                        }
                        return Err(e);
                    }
                    head.readable(&log);
                    feed.publish(committed);
                }
                Err(LogError::Store(StoreError::TooLarge { size })) => {
                    // Nothing was written: refuse the batch and go on, with baselines
                    // that never learned it.
                    resync(&mut scoring, &log)?;
                    let msg = StoreError::TooLarge { size }.to_string();
                    for reply in waiting {
                        let _ = reply.send(Err(WriterError::Rejected(msg.clone())));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "append failed; the writer stops");
                    let failed = WriterError::Failed(e.to_string());
                    for reply in waiting {
                        let _ = reply.send(Err(failed.clone()));
                    }
                    for (_, reply) in checkpoints {
                        let _ = reply.send(Err(failed.clone()));
                    }
                    return Err(e);
                }
            }
        }
        for (entry, policy, reply) in admins {
            let mut entry = *entry;
            if let Err(refused) = log.state().prepare(&mut entry) {
                let _ = reply.send(Err(WriterError::Rejected(refused.0)));
                continue;
            }
            let time = now_nanos().max(log.last_time());
            scoring.score([&mut entry], time);
            let committed = feed.capture([&entry], log.size(), time);
            log.offer_policy(policy);
            let appended = log.append(vec![vec![entry.clone()]], time);
            log.offer_policy(None);
            match appended {
                Ok(acks) => {
                    head.readable(&log);
                    feed.publish(committed);
                    if let Some(ack) = acks.first().and_then(|g| g.first()) {
                        entry.seq = ack.seq;
                    }
                    let committed = log.store().entry(entry.seq).ok().flatten().unwrap_or(entry);
                    let _ = reply.send(Ok(committed));
                }
                Err(LogError::Store(StoreError::TooLarge { size })) => {
                    resync(&mut scoring, &log)?;
                    let _ = reply.send(Err(WriterError::Rejected(StoreError::TooLarge { size }.to_string())));
                }
                Err(e) => {
                    tracing::error!(error = %e, "admin append failed; the writer stops");
                    let _ = reply.send(Err(WriterError::Failed(e.to_string())));
                    return Err(e);
                }
            }
        }
        // After the answers: work that must not delay them (the next segment file).
        if let Err(e) = log.after_ack() {
            tracing::error!(error = %e, "preparing the next segment file failed; the writer stops");
            let failed = WriterError::Failed(e.to_string());
            for (_, reply) in checkpoints {
                let _ = reply.send(Err(failed.clone()));
            }
            return Err(e);
        }
        for (force, reply) in checkpoints {
            match log.sign_checkpoint(force, now_nanos()) {
                Ok(cp) => {
                    let _ = reply.send(Ok(cp));
                }
                Err(e) => {
                    tracing::error!(error = %e, "checkpoint failed; the writer stops");
                    let _ = reply.send(Err(WriterError::Failed(e.to_string())));
                    return Err(e);
                }
            }
        }
        if let Some(reply) = stopping.take() {
            // Whatever arrives after the stop is refused: the receiver goes with `rx`.
            rx.close();
            while let Ok(cmd) = rx.try_recv() {
                refuse(cmd);
            }
            // So the next start need not replay the whole log into the baselines.
            if let Err(e) = scoring.save(log.store(), log.size(), &log.root()) {
                tracing::warn!(error = %e, "cannot save the scorer's baselines; the next start replays the whole log");
            }
            let _ = reply.send(());
            return Ok(log);
        }
    }
    Ok(log)
}

/// Relearns the baselines from the log (the last snapshot and what follows it) after a
/// commit that was scored but not written (an entry too large to store: intake's size
/// check makes this all but impossible), so that live scoring goes on to agree with a
/// replay.
fn resync(scoring: &mut Scoring, log: &Log) -> Result<(), LogError> {
    let replayed = scoring.resume(log.store(), log.size())?;
    tracing::warn!(entries = replayed.entries, took = ?replayed.took, "relearned the scorer's baselines after a refused commit");
    Ok(())
}

/// Answers a command that arrived after the writer stopped.
fn refuse(cmd: Command) {
    match cmd {
        Command::Append { reply, .. } => {
            let _ = reply.send(Err(WriterError::Stopped));
        }
        Command::Admin { reply, .. } => {
            let _ = reply.send(Err(WriterError::Stopped));
        }
        Command::Checkpoint { reply, .. } => {
            let _ = reply.send(Err(WriterError::Stopped));
        }
        Command::Stop { reply } => {
            let _ = reply.send(());
        }
    }
}
