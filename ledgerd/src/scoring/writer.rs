//! The group-commit writer: one OS thread that turns whatever appends are waiting into a
//! single durable batch, and the one lock ([`Core`]) that makes every commit the only one.
//!
//! Callers send [`Command`]s over a bounded channel (so under overload they wait: that
//! is the backpressure) and get their answer on a oneshot channel once the batch holding
//! their entries is on disk. While one batch is being synced, the next one gathers in the
//! channel, so batches grow with load and the sync cost is shared.
//!
//! A unary append that finds nothing else in flight (no other append, nothing queued,
//! no commit under way) while the disk syncs fast ([`HERE_WHILE_SYNC_UNDER`]) commits on
//! its caller's thread instead ([`WriterHandle::append`]): with one writer there is
//! nothing to share a sync with, and the two hand-offs to and from the writer thread (each
//! a wake-up of an idle thread on another core) took about 50 µs of its 290. It takes the
//! same lock and runs the same [`Core::commit`], so there is
//! still one commit at a time, in one order, on one path to disk; what it blocks is one
//! runtime worker for one write and `fdatasync`, while every other caller would be
//! waiting for that commit anyway. What is derived from such a commit (its tree hashes
//! and indexes) is written before its answer goes out; the writer thread writes it
//! right after its answers.
//!
//! If a write or sync fails, what is on disk is unknown: the writer answers that batch
//! with the error, stops, and every later call fails with [`WriterError::Stopped`]. The
//! error is published ([`WriterHandle::failure`]): `Status` reports it and the daemon
//! exits non-zero soon after, so that it is restarted once the disk is fixed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
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
/// A lone append commits on its caller's thread only while the last commit's write and
/// sync took less than this: a slow disk's sync would hold that runtime worker (and what
/// else it serves) for its whole length, and next to it the hand-offs cost little.
pub const HERE_WHILE_SYNC_UNDER: std::time::Duration = std::time::Duration::from_micros(1000);

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
/// Where the writer answers a checkpoint.
type CheckpointSender = oneshot::Sender<Result<SignedCheckpoint, WriterError>>;
/// Where the writer answers an admin entry.
type AdminSender = oneshot::Sender<Result<pb::Entry, WriterError>>;
/// An admin entry, its compiled policy, and where it is answered.
type AdminCommand = (Box<pb::Entry>, Option<Arc<Policy>>, AdminSender);

/// A request to the writer.
pub enum Command {
    /// Append these entries (seq and time are assigned by the writer).
    Append { entries: Vec<pb::Entry>, reply: AckSender },
    /// Append one admin entry (registry or policy change) as its own commit, after
    /// checking it against the registry and policies as they stand (see
    /// `projection::State::prepare`). Answers with the entry as committed.
    /// A policy change comes with its document compiled by the caller, so the writer
    /// thread never compiles one.
    Admin { entry: Box<pb::Entry>, policy: Option<Arc<Policy>>, reply: AdminSender },
    /// Finish what is queued before this, then end the thread (answered once it has).
    Stop { reply: oneshot::Sender<()> },
    /// Sign a checkpoint (a new one even if the tree has not grown, when `force`).
    Checkpoint { force: bool, reply: CheckpointSender },
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
    shared: Arc<Shared>,
}

/// What the writer thread and the callers that commit on their own thread share.
struct Shared {
    /// Whoever holds it commits; `Err` once the writer stopped or failed.
    core: Mutex<Result<Core, Ended>>,
    /// Unary appends under way, through either path: only one that is alone commits on
    /// its own thread, so that concurrent appends still gather into group commits.
    appending: AtomicUsize,
    /// Commits made on a caller's thread so far ([`WriterHandle::commits_here`]).
    here: AtomicU64,
    /// How long the last commit's write and sync took, in nanoseconds (see
    /// [`HERE_WHILE_SYNC_UNDER`]); written by [`Core::commit`].
    last_sync_nanos: Arc<AtomicU64>,
    /// [`HERE_WHILE_SYNC_UNDER`], in nanoseconds (tests change it).
    here_while_sync_under: u64,
}

/// Why there is no [`Core`] any more.
enum Ended {
    /// A write, sync or derived write failed: what is on disk is unknown until a restart.
    Failed(LogError),
    /// The writer thread ended (a stop, or every handle dropped), or took the error.
    Stopped,
}

impl WriterHandle {
    /// Appends entries and waits until they are durable: on this thread when nothing
    /// else is in flight (see the module docs), otherwise as part of the writer thread's
    /// next group commit.
    pub async fn append(&self, entries: Vec<pb::Entry>) -> Result<Vec<Ack>, WriterError> {
        let _appending = Appending::enter(&self.shared);
        if self.may_commit_here() {
            // Requests that arrived with this one may still be unread in their sockets
            // (one runtime worker reads one request at a time): a yield lets the runtime
            // poll its sockets and bring them this far, so that they are counted and
            // this append does not commit alone ahead of them.
            tokio::task::yield_now().await;
        }
        let entries = match self.commit_here(entries) {
            Ok(answer) => return answer,
            Err(entries) => entries,
        };
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Append { entries, reply }).await.map_err(|_| WriterError::Stopped)?;
        rx.await.map_err(|_| WriterError::Stopped)?
    }

    /// Whether an append may commit on its caller's thread, as far as can be told without
    /// the lock: it is the only one under way, nothing is queued, and the last sync was
    /// fast.
    fn may_commit_here(&self) -> bool {
        // The `after-ack` crash point sits between the writer thread's answer and what it
        // derives from a commit; on this path the answer goes out after both.
        self.shared.appending.load(Ordering::Acquire) == 1
            && self.tx.capacity() == self.tx.max_capacity()
            && self.shared.last_sync_nanos.load(Ordering::Relaxed) < self.shared.here_while_sync_under
            && !crate::storage::failpoint::armed("after-ack")
    }

    /// Commits `entries` on this thread if this is the only append in flight, nothing is
    /// queued and no commit is under way; gives them back otherwise.
    fn commit_here(&self, entries: Vec<pb::Entry>) -> Result<Result<Vec<Ack>, WriterError>, Vec<pb::Entry>> {
        if !self.may_commit_here() {
            return Err(entries);
        }
        let mut slot = match self.shared.core.try_lock() {
            Ok(slot) => slot,
            // Busy; or a commit panicked half-way, which the writer thread reports and
            // stops on when it takes the lock for this one.
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return Err(entries),
        };
        let Ok(core) = slot.as_mut() else { return Ok(Err(WriterError::Stopped)) };
        let (reply, mut rx) = oneshot::channel();
        self.shared.here.fetch_add(1, Ordering::Relaxed);
        // What is derived from the commit is written here, before the answer goes out:
        // handing it to the writer thread cost more (its wake-up) than the writes.
        if let Err(e) = core.commit(vec![entries], vec![reply]) {
            core.published.failed(&e);
            *slot = Err(Ended::Failed(e));
        }
        drop(slot);
        Ok(rx.try_recv().unwrap_or(Err(WriterError::Stopped)))
    }

    /// How many commits were made on their caller's thread rather than the writer
    /// thread's, since the start.
    pub fn commits_here(&self) -> u64 {
        self.shared.here.load(Ordering::Relaxed)
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

/// Counts one unary append in [`Shared::appending`] while it lives.
struct Appending<'a>(&'a Shared);

impl<'a> Appending<'a> {
    fn enter(shared: &'a Shared) -> Appending<'a> {
        shared.appending.fetch_add(1, Ordering::AcqRel);
        Appending(shared)
    }
}

impl Drop for Appending<'_> {
    fn drop(&mut self) {
        self.0.appending.fetch_sub(1, Ordering::AcqRel);
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
    spawn_with(log, scoring, feed, HERE_WHILE_SYNC_UNDER)
}

/// [`spawn`], with lone appends committing on their callers' threads only while the last
/// sync took less than `here_while_sync_under`.
fn spawn_with(
    log: Log,
    scoring: Scoring,
    feed: Feed,
    here_while_sync_under: std::time::Duration,
) -> (WriterHandle, thread::JoinHandle<Result<Log, LogError>>) {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (head_tx, head) = watch::channel(Head { size: log.size(), root: log.root() });
    let (acked_tx, acked) = watch::channel(log.size());
    let (failure_tx, failure) = watch::channel(None);
    let published = Published { head: head_tx, acked: acked_tx, failure: failure_tx };
    let last_sync_nanos = Arc::new(AtomicU64::new(0));
    let core = Core { log, scoring, feed, published, last_sync_nanos: last_sync_nanos.clone() };
    let shared = Arc::new(Shared {
        core: Mutex::new(Ok(core)),
        appending: AtomicUsize::new(0),
        here: AtomicU64::new(0),
        last_sync_nanos,
        here_while_sync_under: here_while_sync_under.as_nanos().try_into().unwrap_or(u64::MAX),
    });
    let thread_shared = shared.clone();
    let join = thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || run(&thread_shared, rx))
        .map_err(|e| e.to_string());
    let join = match join {
        Ok(j) => j,
        // Without a writer thread nothing can be written; fail every call clearly.
        Err(e) => {
            if let Ok(mut slot) = shared.core.lock() {
                *slot = Err(Ended::Stopped);
            }
            thread::spawn(move || {
                Err(LogError::Store(StoreError::Encode(format!("cannot start the writer thread: {e}"))))
            })
        }
    };
    (WriterHandle { tx, head, acked, failure, shared }, join)
}

/// What the writer publishes after commits: the readable head and the acknowledged size,
/// and the error that stopped it.
struct Published {
    head: watch::Sender<Head>,
    acked: watch::Sender<u64>,
    failure: watch::Sender<Option<String>>,
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

    /// A write or sync failed: no entry can be appended until ledgerd is restarted.
    fn failed(&self, e: &LogError) {
        tracing::error!(error = %e, "the writer stopped after a storage error; no entry can be appended until ledgerd is restarted");
        self.failure.send_replace(Some(e.to_string()));
    }
}

/// Everything a commit changes, behind [`Shared::core`]: whoever holds the lock is the one
/// writer, the writer thread or a caller committing on its own thread.
struct Core {
    log: Log,
    scoring: Scoring,
    feed: Feed,
    published: Published,
    /// [`Shared::last_sync_nanos`].
    last_sync_nanos: Arc<AtomicU64>,
}

impl Core {
    /// One group commit of `groups` (one per caller, answered through `waiting` in the
    /// same order): scored with one receive time, made durable with one write and one
    /// `fdatasync`, answered; then what is derived from it is written (its tree hashes
    /// and indexes, `Log::project`), the head moves, its entries go out on the feed, and
    /// the next segment file is prepared when the newest is full. A batch too large to
    /// store is refused and the writer goes on; any other error leaves what is on disk
    /// unknown: every caller not yet answered is answered with it, it is returned, and
    /// the writer stops.
    fn commit(&mut self, mut groups: Vec<Vec<pb::Entry>>, waiting: Vec<AckSender>) -> Result<(), LogError> {
        let Core { log, scoring, feed, published, last_sync_nanos } = self;
        let queued = groups.iter().map(Vec::len).sum();
        // The one time the log stamps on this commit (it never goes back), so the
        // scorer sees exactly the stored time.
        let time = now_nanos().max(log.last_time());
        scoring.score(groups.iter_mut().flatten(), time);
        let committed = feed.capture(groups.iter().flatten(), log.size(), time);
        crate::scoring::commit_sizes::record(queued);
        let started = std::time::Instant::now();
        let result = log.commit(groups, time);
        last_sync_nanos.store(started.elapsed().as_nanos().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
        match result {
            Ok(acks) => {
                // Durable: answered now. The tree hashes and indexes derived from the
                // entries are written after the answers, and only then does the head
                // move; reads for a caller wait for it (`WriterHandle::readable`).
                published.acked(log);
                for (group, reply) in acks.into_iter().zip(waiting) {
                    let _ = reply.send(Ok(group));
                }
                failpoint_after_ack();
                if let Err(e) = log.project() {
                    tracing::error!(error = %e, "writing the tree hashes and indexes of a durable commit failed; the writer stops");
                    return Err(e);
                }
                published.readable(log);
                feed.publish(committed);
                self.after_ack()
            }
            Err(LogError::Store(StoreError::TooLarge { size })) => {
                // Nothing was written: refuse the batch and go on, with baselines
                // that never learned it.
                resync(scoring, log)?;
                let msg = StoreError::TooLarge { size }.to_string();
                for reply in waiting {
                    let _ = reply.send(Err(WriterError::Rejected(msg.clone())));
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "append failed; the writer stops");
                let failed = WriterError::Failed(e.to_string());
                for reply in waiting {
                    let _ = reply.send(Err(failed.clone()));
                }
                Err(e)
            }
        }
    }

    /// Work that follows the answers and must not delay them (the next segment file).
    fn after_ack(&mut self) -> Result<(), LogError> {
        self.log.after_ack().inspect_err(|e| {
            tracing::error!(error = %e, "preparing the next segment file failed; the writer stops");
        })
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

/// The writer thread: takes what is queued as one group commit at a time, under the
/// lock. Returns the log once stopped, or the error that stopped it.
fn run(shared: &Shared, mut rx: mpsc::Receiver<Command>) -> Result<Log, LogError> {
    let ended = loop {
        let Some(first) = rx.blocking_recv() else { break Ended::Stopped };
        let mut slot = match shared.core.lock() {
            Ok(slot) => slot,
            // A commit panicked half-way: what is on disk is unknown.
            Err(poisoned) => {
                let e = LogError::Interrupted("a commit panicked half-way".into());
                let mut slot = poisoned.into_inner();
                if let Ok(core) = slot.as_ref() {
                    core.published.failed(&e);
                }
                *slot = Err(Ended::Stopped);
                refuse(first);
                break Ended::Failed(e);
            }
        };
        let core = match slot.as_mut() {
            Ok(core) => core,
            // A caller's own commit failed (or the writer was stopped): end here.
            Err(_) => {
                refuse(first);
                break std::mem::replace(&mut *slot, Err(Ended::Stopped)).err().unwrap_or(Ended::Stopped);
            }
        };
        match serve(core, first, &mut rx) {
            Ok(Served::More) => {}
            Ok(Served::Stop(reply)) => {
                // Whatever arrives after the stop is refused: the receiver goes with `rx`.
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    refuse(cmd);
                }
                // So the next start need not replay the whole log into the baselines.
                if let Err(e) = core.scoring.save(core.log.store(), core.log.size(), &core.log.root()) {
                    tracing::warn!(error = %e, "cannot save the scorer's baselines; the next start replays the whole log");
                }
                let _ = reply.send(());
                let Ok(core) = std::mem::replace(&mut *slot, Err(Ended::Stopped)) else {
                    break Ended::Stopped;
                };
                return Ok(core.log);
            }
            Err(e) => {
                core.published.failed(&e);
                *slot = Err(Ended::Stopped);
                break Ended::Failed(e);
            }
        }
    };
    // Later calls fail with `Stopped`: the receiver goes with `rx`.
    rx.close();
    while let Ok(cmd) = rx.try_recv() {
        refuse(cmd);
    }
    // Every handle is gone: the log goes back to the caller.
    if let Ok(mut slot) = shared.core.lock()
        && let Ok(core) = std::mem::replace(&mut *slot, Err(Ended::Stopped))
    {
        return Ok(core.log);
    }
    match ended {
        Ended::Failed(e) => Err(e),
        Ended::Stopped => Err(LogError::Interrupted("the writer had already stopped".into())),
    }
}

/// What [`serve`] leaves the writer thread to do.
enum Served {
    /// Wait for more.
    More,
    /// Stop, answering here once stopped.
    Stop(oneshot::Sender<()>),
}

/// Serves `first` and whatever is queued behind it (up to [`MAX_BATCH_ENTRIES`] entries)
/// as one group commit, then the admin entries and checkpoints among them. An error
/// stops the writer: every caller still waiting has been answered with it.
fn serve(core: &mut Core, first: Command, rx: &mut mpsc::Receiver<Command>) -> Result<Served, LogError> {
    let mut stopping: Option<oneshot::Sender<()>> = None;
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
    // Whoever waits for an answer after an error gets it.
    let fail_rest = |e: &LogError, checkpoints: Vec<(bool, CheckpointSender)>, admins: Vec<AdminCommand>| {
        let failed = WriterError::Failed(e.to_string());
        for (_, reply) in checkpoints {
            let _ = reply.send(Err(failed.clone()));
        }
        for (_, _, reply) in admins {
            let _ = reply.send(Err(failed.clone()));
        }
    };

    if !groups.is_empty()
        && let Err(e) = core.commit(groups, waiting)
    {
        fail_rest(&e, checkpoints, admins);
        return Err(e);
    }
    let had_admins = !admins.is_empty();
    let Core { log, scoring, feed, published, .. } = &mut *core;
    let mut admins = admins.into_iter();
    while let Some((entry, policy, reply)) = admins.next() {
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
                published.readable(log);
                feed.publish(committed);
                if let Some(ack) = acks.first().and_then(|g| g.first()) {
                    entry.seq = ack.seq;
                }
                let committed = log.store().entry(entry.seq).ok().flatten().unwrap_or(entry);
                let _ = reply.send(Ok(committed));
            }
            Err(LogError::Store(StoreError::TooLarge { size })) => {
                resync(scoring, log)?;
                let _ = reply.send(Err(WriterError::Rejected(StoreError::TooLarge { size }.to_string())));
            }
            Err(e) => {
                tracing::error!(error = %e, "admin append failed; the writer stops");
                let _ = reply.send(Err(WriterError::Failed(e.to_string())));
                fail_rest(&e, checkpoints, admins.collect());
                return Err(e);
            }
        }
    }
    // An append batch did this in its commit; admin entries are committed without it.
    if had_admins && let Err(e) = core.after_ack() {
        fail_rest(&e, checkpoints, Vec::new());
        return Err(e);
    }
    for (force, reply) in checkpoints {
        match core.log.sign_checkpoint(force, now_nanos()) {
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
    Ok(stopping.map_or(Served::More, Served::Stop))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::Log;
    use crate::log::merkle::tests::entry;
    use crate::scoring::scorer::ScorerConfig;
    use crate::storage::store::Store;
    use ledger_proto::note::NoteSigner;

    /// A writer on `dir` whose lone appends commit on their callers' threads while the
    /// last sync took less than `here_while_sync_under`.
    fn start(
        dir: &std::path::Path,
        here_while_sync_under: std::time::Duration,
    ) -> (WriterHandle, thread::JoinHandle<Result<Log, LogError>>) {
        let store = Store::open(dir, 8 << 20).expect("open store");
        let signer = NoteSigner::generate("test/writer").expect("key");
        let (log, _) = Log::open(store, signer).expect("open log");
        let scoring = Scoring::new(&ScorerConfig::default()).expect("scoring");
        spawn_with(log, scoring, Feed::new(), here_while_sync_under)
    }

    /// A lone append commits on its caller's thread; appends that overlap go to the
    /// writer thread and share its commits; either way seqs are consecutive, each caller
    /// gets its own, and the log read back after a stop holds every entry once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lone_appends_commit_here_and_overlapping_ones_share_the_writer_threads_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        // However slow this machine's disk is today.
        let (writer, thread) = start(dir.path(), std::time::Duration::MAX);
        for i in 0..20 {
            let acks = writer.append(vec![entry(i)]).await.expect("append");
            assert_eq!(acks.len(), 1);
            assert_eq!(acks[0].seq, i, "seqs are consecutive");
            assert_eq!(writer.readable().await.size, i + 1, "a caller reads its own entry");
        }
        assert_eq!(writer.commits_here(), 20, "one at a time, each commits on its own thread");

        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let acks = writer.append(vec![entry(1000 + t * 100 + i)]).await.expect("append");
                    seqs.extend(acks.iter().map(|a| a.seq));
                }
                seqs
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.extend(t.await.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (20..20 + 32 * 25).collect::<Vec<_>>(), "no gap, no seq given twice");
        let here = writer.commits_here();
        assert!(here < 20 + 32 * 25, "overlapping appends went to the writer thread ({here} here)");

        writer.stop().await;
        let log = thread.join().expect("writer thread").expect("clean stop");
        assert_eq!(log.size(), 20 + 32 * 25);
        assert!(matches!(writer.append(vec![entry(0)]).await, Err(WriterError::Stopped)));
    }

    /// While syncs are slow, a lone append goes to the writer thread like any other: a
    /// runtime worker is never held for a slow disk's sync.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lone_appends_go_to_the_writer_thread_while_syncs_are_slow() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Every sync counts as slow.
        let (writer, thread) = start(dir.path(), std::time::Duration::ZERO);
        for i in 0..10 {
            let acks = writer.append(vec![entry(i)]).await.expect("append");
            assert_eq!(acks[0].seq, i);
        }
        assert_eq!(writer.commits_here(), 0);
        writer.stop().await;
        assert_eq!(thread.join().expect("writer thread").expect("clean stop").size(), 10);
    }
}
