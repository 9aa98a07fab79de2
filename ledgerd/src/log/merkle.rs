//! The Merkle log: appends a batch of entries durably, and signs checkpoints over it.
//!
//! [`Log`] is owned by the writer thread alone (see [`crate::scoring::writer`]): it holds the
//! right edge of the tree in memory, so an append never reads from disk. Opening it
//! recovers from a crash and checks the stored tree against the last signed checkpoint.
//! A commit is two steps: [`Log::commit`] makes the entries durable (what an ack needs),
//! [`Log::project`] then writes what is derived from them to sled.
//!
//! Invariants (docs/ARCHITECTURE.md):
//! - seq starts at 0 and has no gaps; entry `seq` is leaf `seq` of the tree;
//! - an entry is acknowledged only after the batch holding it is on stable storage;
//! - entry times never decrease along seq;
//! - every checkpoint is consistent with the one before it (checked before signing).

use std::time::{SystemTime, UNIX_EPOCH};

use ledger_proto::merkle::{self, CompactRange, Hash};
use ledger_proto::note::{self, NoteSigner, NoteVerifier};
use ledger_proto::pb;

use std::sync::Arc;

use crate::projections::agent_index::{AgentIndex, Located};
use crate::projections::counters::{self, Counters};
use crate::projections::registry::{Shared, State, is_admin_kind};
use crate::storage::segments::frame_len;
use crate::storage::store::{
    MAX_RECORD_BYTES, Store, StoreError, Syncer, Writes, seq_from_key, write_in_order,
};
use crate::storage::tiles::{TILE_WIDTH, TileWriter, tile_key};

/// Errors of the log. Any of them during an append leaves the in-memory tree ahead of
/// what is known to be on disk, so the writer stops serving after one (fail-stop).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the stored checkpoint cannot be verified with this ledger's key ({0}); was signing.key replaced? Restore the original key or move the data dir aside"
    )]
    CheckpointSignature(note::NoteError),
    #[error(
        "the log holds {size} entries, but a checkpoint for {checkpoint_size} entries was signed: acknowledged entries are missing (the data dir was rolled back, truncated or damaged). Restore it from backup"
    )]
    Truncated { size: u64, checkpoint_size: u64 },
    #[error(
        "the stored tree at size {size} has root {stored}, but the signed checkpoint says {signed}: the log was changed after it was signed. Run `ledgerctl verify` against a copy to find the entry"
    )]
    RootMismatch { size: u64, stored: String, signed: String },
    #[error(
        "entry {seq}'s stored bytes hash to {actual}, but the tree holds {expected} for it: the entry was changed after it was written"
    )]
    LeafMismatch { seq: u64, actual: String, expected: String },
    #[error("entry {seq} is missing from the store, but later entries exist: the data dir is damaged")]
    Gap { seq: u64 },
    #[error(
        "refusing to sign: the tree at size {new_size} is not consistent with the checkpoint at size {old_size} ({reason})"
    )]
    Inconsistent { old_size: u64, new_size: u64, reason: String },
    #[error("stored checkpoint is damaged: {0}")]
    BadCheckpoint(String),
    #[error("cannot sign checkpoint: {0}")]
    Sign(note::NoteError),
    #[error("cannot apply an admin entry to the registry/policies: {0}")]
    Projection(String),
    #[error("{0}: what reached the disk is unknown. Restart ledgerd; it recovers from what was synced")]
    Interrupted(String),
}

/// A signed checkpoint and its parsed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub note: String,
    pub checkpoint: note::Checkpoint,
}

/// An acknowledgement: where an entry landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub leaf_hash: Hash,
}

/// See the module docs.
pub struct Log {
    store: Store,
    syncer: Syncer,
    range: CompactRange,
    tiles: TileWriter,
    signer: NoteSigner,
    verifier: NoteVerifier,
    last_checkpoint: Option<SignedCheckpoint>,
    last_time: i64,
    /// Encoded entries of the commit in progress (kept for its capacity).
    scratch: Vec<Encoded>,
    index: AgentIndex,
    counters: Counters,
    /// The registry and policies, as of the last commit.
    state: State,
    /// Where connections read the state from; replaced after each admin commit.
    shared: Shared,
    /// What the last commit still has to write to sled (see [`Log::project`]).
    pending: Option<Pending>,
}

/// The part of a commit that [`Log::project`] writes; the entries are in `Log::scratch`.
struct Pending {
    time: i64,
    /// The registry and policies after the commit's admin entries, with their writes.
    state: Option<State>,
    agents: Writes,
    policies: Writes,
}

/// One entry of the commit in progress, encoded, with what the projections need of it.
struct Encoded {
    seq: u64,
    hash: Hash,
    bytes: Vec<u8>,
    /// Its frame's offset in its segment file, once appended (for the agent index).
    offset: u64,
    /// Moved out of the entry once it is encoded (no copies).
    agent: String,
    tool: String,
    kind: i32,
    decision: i32,
}

/// What [`Log::open`] found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Entries that were on disk without their tree hashes (written, never acknowledged)
    /// and were added to the tree.
    pub adopted: u64,
    /// Entries added to the agent index because it lagged the log.
    pub reindexed: u64,
    /// Admin entries replayed into the registry and policy projections.
    pub reprojected: u64,
    /// Entries counted into the hourly counters again: those of the part that was still
    /// open (never stored), those a crash cut off, or all of them when the counters were
    /// missing.
    pub recounted: u64,
}

impl Log {
    /// Opens the log: recovers an interrupted commit, then checks the stored tree
    /// against the last signed checkpoint and refuses to continue if they differ.
    pub fn open(store: Store, signer: NoteSigner) -> Result<(Log, Recovery), LogError> {
        let syncer = store.syncer()?;
        let verifier = signer.verifier();
        let tiles_size = tiles_leaf_count(&store)?;
        let entries_end = store.entries_end()?;
        let size = tiles_size.min(entries_end);
        let source = store.node_source();
        let range = CompactRange::from_source(&source, size).map_err(StoreError::from)?;
        let tiles = TileWriter::load(&source, size).map_err(StoreError::from)?;
        let last_time = match size.checked_sub(1) {
            Some(last) => store.entry(last)?.map_or(0, |e| e.time_unix_nanos),
            None => 0,
        };
        let mut log = Log {
            store,
            syncer,
            range,
            tiles,
            signer,
            verifier,
            last_checkpoint: None,
            last_time,
            scratch: Vec::new(),
            index: AgentIndex::default(),
            counters: Counters::default(),
            state: State::default(),
            shared: Shared::default(),
            pending: None,
        };

        let mut recovery = Recovery::default();
        if entries_end > size {
            // A crash after the entries were synced but before their tree hashes reached
            // sled's disk. They are whole (their frames check): take them into the tree.
            let mut reader = log.store.reader();
            for seq in size..entries_end {
                let (hash, time) = reader
                    .with_record(seq, |e| (e.leaf_hash(), e.time_unix_nanos))?
                    .ok_or(LogError::Gap { seq })?;
                let tiles = &mut log.tiles;
                log.range.append(hash, |level, index, h| tiles.on_node(level, index, h));
                log.last_time = log.last_time.max(time);
            }
            log.write_tiles()?;
            log.store.sync(&mut log.syncer)?;
            recovery.adopted = entries_end - size;
        }

        // The agent index, registry and policies are projections of the log. One marker
        // (written last in every commit) says how far all three are complete; replay what
        // a crash cut off. With no projections at all (a data dir from before they
        // existed, or deleted trees), rebuild them from the whole log.
        let indexed = AgentIndex::indexed_end(&log.store.by_agent).map_err(StoreError::from)?.min(log.size());
        if !State::exists(&log.store)? {
            recovery.reprojected = log.rebuild_state()?;
        } else {
            log.state = State::load(&log.store)?;
        }
        // Agent-index chunks of an older encoding are removed and rebuilt from the start.
        let current = AgentIndex::check_format(&log.store.by_agent).map_err(StoreError::from)?;
        let index_from = if current { indexed } else { 0 };
        if index_from < log.size() {
            AgentIndex::trim(&log.store.by_agent, index_from).map_err(StoreError::from)?;
            let size = log.size();
            let (index, tree) = (&mut log.index, &log.store.by_agent);
            let mut next = index_from;
            log.store.scan_located(index_from, size, |seq, offset, record| {
                let agent = crate::storage::stored::with_entry(record, |r| r.agent.to_string())
                    .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
                index.add(tree, &agent, Located { seq, offset, len: frame_len(record.len()) as u64 })?;
                next = seq + 1;
                Ok(true)
            })?;
            if next < size {
                return Err(LogError::Gap { seq: next });
            }
            if indexed < log.size() {
                recovery.reprojected += log.state.catch_up(&log.store, indexed, log.size())?;
            }
            let writes = log.index.take_writes(log.size());
            write_in_order(&log.store.by_agent, writes).map_err(StoreError::from)?;
            recovery.reindexed = log.size() - index_from;
        }
        if !current {
            AgentIndex::mark_format(&log.store.by_agent).map_err(StoreError::from)?;
        }
        if index_from < log.size() || !current {
            log.store.sync(&mut log.syncer)?;
        }
        // The hourly counters carry their own marker (written with them): count again
        // what it does not cover (the part that was open, and what a crash cut off), or
        // everything when there is none.
        recovery.recounted = match counters::counted_end(&log.store.counters).map_err(StoreError::from)? {
            Some(end) if end == log.size() => 0,
            Some(end) if end < log.size() => log.count_entries(end)?,
            _ => log.recount()?,
        };
        log.publish();

        log.last_checkpoint = log.load_last_checkpoint()?;
        if let Some(cp) = &log.last_checkpoint {
            let cp = &cp.checkpoint;
            if cp.size > log.size() {
                return Err(LogError::Truncated { size: log.size(), checkpoint_size: cp.size });
            }
            let stored = log.store.root(cp.size)?;
            if stored != cp.root {
                return Err(LogError::RootMismatch {
                    size: cp.size,
                    stored: hex(&stored),
                    signed: hex(&cp.root),
                });
            }
            // Entries not yet covered by a signature are checked against their tree hashes.
            let from = cp.size;
            for seq in from..log.size() {
                log.check_leaf(seq)?;
            }
        }
        Ok((log, recovery))
    }

    /// Number of entries (= leaves) in the log.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    /// Current root hash.
    pub fn root(&self) -> Hash {
        self.range.root()
    }

    /// The receive time of the last entry: the next commit is stamped no earlier.
    pub fn last_time(&self) -> i64 {
        self.last_time
    }

    /// The store this log writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The latest signed checkpoint, if any.
    pub fn last_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.last_checkpoint.as_ref()
    }

    /// The registry and policies as of the last commit.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Hands the projection a policy compiled off the writer thread for the next admin
    /// commit ([`State::offer`]); `None` takes back what was not used.
    pub fn offer_policy(&mut self, policy: Option<Arc<ledger_query::policy::Policy>>) {
        self.state.offer(policy);
    }

    /// The handle connections read the registry and policies from.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    fn publish(&self) {
        let snapshot = Arc::new(self.state.clone());
        match self.shared.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Rebuilds the registry and policy trees and the hourly counters from the whole log.
    /// Returns the number of admin entries replayed.
    pub fn rebuild_projections(&mut self) -> Result<u64, LogError> {
        self.recount()?;
        self.rebuild_state()
    }

    /// Rebuilds the registry and policy trees from the whole log; returns the number of
    /// admin entries replayed.
    fn rebuild_state(&mut self) -> Result<u64, LogError> {
        self.store.agents.clear().map_err(StoreError::from)?;
        self.store.policies.clear().map_err(StoreError::from)?;
        let mut state = State::default();
        let n = state.catch_up(&self.store, 0, self.size())?;
        State::mark_exists(&self.store)?;
        self.store.sync(&mut self.syncer)?;
        self.state = state;
        self.publish();
        Ok(n)
    }

    /// Counts entries `from..size` into the hourly counters and makes them durable.
    fn count_entries(&mut self, from: u64) -> Result<u64, LogError> {
        let size = self.size();
        let n = counters::catch_up(&mut self.counters, &self.store, from, size)?;
        self.store.sync(&mut self.syncer)?;
        Ok(n)
    }

    /// Rebuilds the hourly counters from the whole log.
    fn recount(&mut self) -> Result<u64, LogError> {
        counters::clear(&self.store.counters).map_err(StoreError::from)?;
        self.counters = Counters::default();
        self.count_entries(0)
    }

    /// The key checkpoints are signed with.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Signs later checkpoints with `signer` (a key rotation: see [`crate::rotate`]).
    pub fn set_signer(&mut self, signer: NoteSigner) {
        self.verifier = signer.verifier();
        self.signer = signer;
    }

    /// Appends groups of entries (one group per caller) as one group commit and makes
    /// them durable, then writes what is derived from them: [`Log::commit`] followed by
    /// [`Log::project`], for callers that answer only once both are done.
    pub fn append(&mut self, groups: Vec<Vec<pb::Entry>>, now: i64) -> Result<Vec<Vec<Ack>>, LogError> {
        let acks = self.commit(groups, now)?;
        self.project()?;
        Ok(acks)
    }

    /// Appends groups of entries (one group per caller) as one group commit and makes
    /// them durable; the writes derived from them are left for [`Log::project`], which
    /// must be called before the next commit and before anything is read from the store
    /// at the new size.
    ///
    /// Each entry gets the next seq, and a receive time of `now` (never earlier than the
    /// entry before it). Returns one [`Ack`] per entry, grouped as given, only after the
    /// `fdatasync` of the segment file that holds them (the one device sync of a commit).
    /// If an entry cannot be stored, nothing is written and the tree does not move.
    pub fn commit(&mut self, groups: Vec<Vec<pb::Entry>>, now: i64) -> Result<Vec<Vec<Ack>>, LogError> {
        debug_assert!(self.pending.is_none(), "a commit's projections were not written");
        let time = now.max(self.last_time);
        // Reused across commits: a fresh multi-megabyte buffer per batch costs more in
        // page faults than the encoding itself.
        let mut encoded = std::mem::take(&mut self.scratch);
        encoded.clear();
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        let mut admin = Vec::new();
        for (seq, mut entry) in (self.size()..).zip(groups.into_iter().flatten()) {
            entry.seq = seq;
            entry.time_unix_nanos = time;
            // The stored bytes are the canonical leaf: hashed once, written as they are.
            let bytes = crate::storage::stored::encode(&entry);
            let hash = merkle::leaf_hash(&bytes);
            if is_admin_kind(entry.kind) {
                admin.push(entry.clone());
            }
            if bytes.len() > MAX_RECORD_BYTES {
                self.scratch = encoded;
                return Err(StoreError::TooLarge { size: bytes.len() }.into());
            }
            let (kind, decision) = (entry.kind, entry.decision);
            let (agent, tool) = (entry.agent, entry.tool);
            encoded.push(Encoded { seq, hash, bytes, offset: 0, agent, tool, kind, decision });
        }
        // Admin entries (checked by `State::prepare` before they were queued) change the
        // registry and policies; a copy is changed so that a failure leaves nothing half-done.
        let mut state = None;
        let (mut agents, mut policies) = (Writes::new(), Writes::new());
        if !admin.is_empty() {
            let mut next = self.state.clone();
            for e in &admin {
                if let Err(e) = next.apply(e) {
                    self.scratch = encoded;
                    return Err(LogError::Projection(e.0));
                }
                next.batch_for(e, &mut agents, &mut policies);
            }
            state = Some(next);
        }
        // Only now, with every entry accepted, does the tree move. The entries go to the
        // segment file with one write and one fdatasync: that is what makes them durable.
        // Everything derived from them is written by `project`, to sled, unsynced; a
        // crash before sled reaches the disk is made good from the segments at start.
        if let Some(first) = encoded.first().map(|e| e.seq) {
            match self.store.segments().append(first, encoded.iter().map(|e| e.bytes.as_slice())) {
                Ok(mut at) => {
                    for e in &mut encoded {
                        e.offset = at;
                        at += frame_len(e.bytes.len()) as u64;
                    }
                }
                Err(e) => {
                    self.scratch = encoded;
                    return Err(StoreError::from(e).into());
                }
            }
        }
        crate::storage::failpoint::hit("after-entries-sync");
        // The tree in memory (its right edge, and the tiles to write) moves with the
        // durable entries: the acks carry their leaf hashes, and the root is known.
        let mut acks = Vec::with_capacity(sizes.len());
        let mut items = encoded.iter();
        for n in sizes {
            let mut group = Vec::with_capacity(n);
            for e in items.by_ref().take(n) {
                let tiles = &mut self.tiles;
                self.range.append(e.hash, |level, index, h| tiles.on_node(level, index, h));
                group.push(Ack { seq: e.seq, leaf_hash: e.hash });
            }
            acks.push(group);
        }
        self.scratch = encoded;
        self.last_time = time;
        self.pending = Some(Pending { time, state, agents, policies });
        Ok(acks)
    }

    /// Writes what is derived from the last [`Log::commit`] to sled, unsynced: the
    /// changed Merkle tiles, the registry and policy changes, any closed part of the
    /// hourly counters and the agent index with its end marker last. Until it returns,
    /// the store holds the new entries but not their tree hashes or indexes, so nothing
    /// may be read from it at the new size (the writer publishes the new head after it).
    pub fn project(&mut self) -> Result<(), LogError> {
        let Some(Pending { time, state, agents, policies }) = self.pending.take() else {
            return Ok(());
        };
        let mut encoded = std::mem::take(&mut self.scratch);
        let added = encoded.iter().try_for_each(|e| {
            let len = frame_len(e.bytes.len()) as u64;
            self.index.add(&self.store.by_agent, &e.agent, Located { seq: e.seq, offset: e.offset, len })?;
            self.counters.add(&self.store.counters, e.seq, time, e.kind, &e.agent, &e.tool, e.decision)
        });
        encoded.clear();
        self.scratch = encoded;
        added.map_err(StoreError::from)?;
        self.write_tiles()?;
        if let Some(state) = state {
            write_in_order(&self.store.agents, agents).map_err(StoreError::from)?;
            write_in_order(&self.store.policies, policies).map_err(StoreError::from)?;
            self.state = state;
            self.publish();
        }
        // The hourly counters, when a part closed (about once an hour), with their marker.
        if let Some(writes) = self.counters.take_writes(self.size(), false) {
            write_in_order(&self.store.counters, writes).map_err(StoreError::from)?;
        }
        // Last: its end marker covers the agent index and the projections above, so after
        // a crash (sled keeps a prefix of what it was given) it never claims more than the
        // trees hold.
        let writes = self.index.take_writes(self.size());
        write_in_order(&self.store.by_agent, writes).map_err(StoreError::from)?;
        Ok(())
    }

    /// Work that follows the acknowledgement of a commit and would otherwise delay it:
    /// once the newest segment file is full, the next one is created and synced.
    pub fn after_ack(&mut self) -> Result<(), LogError> {
        self.store.segments().prepare_next().map_err(StoreError::from)?;
        Ok(())
    }

    /// Signs a checkpoint for the current tree, unless the tree has not grown since the
    /// last one and `force` is false. Checks consistency with the previous checkpoint
    /// first, and stores the note durably before returning it.
    pub fn sign_checkpoint(&mut self, force: bool, now: i64) -> Result<SignedCheckpoint, LogError> {
        let size = self.size();
        let root = self.root();
        if let Some(prev) = &self.last_checkpoint {
            if !force && prev.checkpoint.size == size {
                return Ok(prev.clone());
            }
            let prev = &prev.checkpoint;
            let inconsistent =
                |reason: String| LogError::Inconsistent { old_size: prev.size, new_size: size, reason };
            if prev.size > 0 {
                let proof = merkle::consistency_proof(&self.store.node_source(), prev.size, size)
                    .map_err(|e| inconsistent(format!("{e:?}")))?;
                merkle::verify_consistency(prev.size, size, &prev.root, &root, &proof)
                    .map_err(|e| inconsistent(e.to_string()))?;
            }
        }
        let checkpoint = note::Checkpoint {
            origin: self.signer.name().to_string(),
            size,
            root,
            extensions: vec![format!("time {}", rfc3339_nanos(now))],
        };
        let note = self.signer.sign_checkpoint(&checkpoint).map_err(LogError::Sign)?;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&size.to_be_bytes());
        key[8..].copy_from_slice(&(now.max(0) as u64).to_be_bytes());
        self.store.checkpoints.insert(key, note.as_bytes()).map_err(StoreError::from)?;
        self.store.sync(&mut self.syncer)?;
        let signed = SignedCheckpoint { note, checkpoint };
        self.last_checkpoint = Some(signed.clone());
        Ok(signed)
    }

    fn load_last_checkpoint(&self) -> Result<Option<SignedCheckpoint>, LogError> {
        let Some((_, note)) = self.store.checkpoints.last().map_err(StoreError::from)? else {
            return Ok(None);
        };
        let note = String::from_utf8(note.to_vec())
            .map_err(|_| LogError::BadCheckpoint("the note is not UTF-8".into()))?;
        let checkpoint = self.verifier.verify_checkpoint(&note).map_err(LogError::CheckpointSignature)?;
        Ok(Some(SignedCheckpoint { note, checkpoint }))
    }

    fn check_leaf(&self, seq: u64) -> Result<(), LogError> {
        let actual = self.store.with_record(seq, |e| e.leaf_hash())?.ok_or(LogError::Gap { seq })?;
        let expected = self.store.leaf_hash(seq)?;
        if actual != expected {
            return Err(LogError::LeafMismatch { seq, actual: hex(&actual), expected: hex(&expected) });
        }
        Ok(())
    }

    fn write_tiles(&mut self) -> Result<(), LogError> {
        // Highest level first: the level-0 tiles say how far the tree goes, so once they
        // are in sled (which keeps a prefix of its writes) so is every node above them.
        let mut writes = self.tiles.take_dirty();
        writes.sort_by(|a, b| b.0[0].cmp(&a.0[0]));
        for (key, value) in writes {
            self.store.tiles.insert(key, value).map_err(StoreError::from)?;
        }
        Ok(())
    }
}

/// Number of leaf hashes in the tiles: the tree size as far as the tiles know it.
fn tiles_leaf_count(store: &Store) -> Result<u64, StoreError> {
    let last = store.tiles.range(tile_key(0, 0)..tile_key(1, 0)).next_back().transpose()?;
    Ok(match last {
        None => 0,
        Some((key, value)) => {
            let j = seq_from_key(&key[1..]).unwrap_or(0);
            j * TILE_WIDTH + (value.len() / merkle::HASH_LEN) as u64
        }
    })
}

pub use ledger_proto::hex;

/// RFC 3339 UTC time with second precision for nanoseconds since the epoch.
pub fn rfc3339(unix_nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

/// RFC 3339 UTC with as many fractional digits as the nanoseconds need (none for whole
/// seconds): exact. Checkpoint `time` lines (whole seconds before issue 13, which
/// every reader still accepts) and the period of an `evidence_exported` entry use it.
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ledger_proto::merkle::NodeSource;

    #[test]
    fn checkpoint_times_are_exact_to_the_nanosecond() {
        assert_eq!(rfc3339_nanos(1_767_225_600_000_000_000), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(1_767_225_600_000_000_001), "2026-01-01T00:00:00.000000001Z");
        assert_eq!(rfc3339_nanos(1_767_225_600_500_000_000), "2026-01-01T00:00:00.5Z");
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
    }

    /// A decision of one of three agents, told apart by its reason (also the writer's tests').
    pub(crate) fn entry(i: u64) -> pb::Entry {
        pb::Entry {
            kind: pb::Kind::Decision as i32,
            agent: format!("agent-{}", i % 3),
            tool: "t".into(),
            decision: pb::Decision::Allow as i32,
            reason: format!("{i}"),
            ..Default::default()
        }
    }

    fn open(dir: &std::path::Path, signer: &NoteSigner) -> (Log, Recovery) {
        let store = Store::open(dir, 8 << 20).expect("open store");
        Log::open(store, signer.clone()).expect("open log")
    }

    /// A model test: random batch sizes against an in-memory list of leaf hashes; the
    /// stored tiles must give the same roots, nodes and proofs at every size.
    #[test]
    fn stored_tree_matches_an_in_memory_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = NoteSigner::generate("test/log").expect("key");
        let (mut log, _) = open(dir.path(), &signer);
        let mut model: Vec<Hash> = Vec::new();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = 0u64;
        while model.len() < 700 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let groups: Vec<Vec<pb::Entry>> = (0..1 + rng % 3)
                .map(|g| {
                    (0..(rng >> (8 * g)) % 40)
                        .map(|_| {
                            next += 1;
                            entry(next)
                        })
                        .collect()
                })
                .collect();
            let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
            let acks = log.append(groups, 1000).expect("append");
            assert_eq!(acks.iter().map(Vec::len).collect::<Vec<_>>(), sizes, "acks grouped as sent");
            for ack in acks.iter().flatten() {
                assert_eq!(ack.seq, model.len() as u64, "seq is gap-free");
                model.push(ack.leaf_hash);
            }
            let size = model.len() as u64;
            assert_eq!(log.root(), merkle::root_from_leaf_hashes(&model));
            assert_eq!(log.store().root(size).expect("root"), log.root());
        }
        let src = log.store().node_source();
        let size = model.len() as u64;
        for level in 0..10u32 {
            for index in 0..(size >> level) {
                assert_eq!(
                    src.node(level, index).expect("node"),
                    model[..].node(level, index).expect("model node")
                );
            }
        }
        for old in [1, 15, 16, 17, 255, 256, 257, size] {
            assert_eq!(
                merkle::consistency_proof(&src, old, size).expect("proof"),
                merkle::consistency_proof(&model[..], old, size).expect("model proof")
            );
        }
        assert_eq!(log.store().leaf_hashes(3, 40).expect("hashes"), model[3..40].to_vec());

        // Reopening gives the same tree, and appends continue from it.
        let root = log.root();
        drop((log, src));
        let (mut log, recovery) = open(dir.path(), &signer);
        assert_eq!((log.size(), log.root(), recovery.adopted), (size, root, 0));
        let acks = log.append(vec![vec![entry(0)]], 1000).expect("append after reopen");
        assert_eq!(acks[0][0].seq, size);
    }

    #[test]
    fn entries_without_tree_hashes_are_adopted_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = NoteSigner::generate("test/log").expect("key");
        let (mut log, _) = open(dir.path(), &signer);
        log.append(vec![(0..20).map(entry).collect()], 5).expect("append");
        log.sign_checkpoint(false, 5).expect("checkpoint");
        // What a crash between the entries batch and the tiles batch leaves behind: the
        // open block (16..20) rewritten with three more entries.
        for seq in 20..23u64 {
            let mut e = entry(seq);
            e.seq = seq;
            log.store().tamper(seq, Some(&e)).expect("write an entry with no tree hashes");
        }
        drop(log);
        let (log, recovery) = open(dir.path(), &signer);
        assert_eq!((recovery.adopted, log.size()), (3, 23));
        let leaves: Vec<Hash> = (0..23)
            .map(|s| {
                ledger_proto::leaf::entry_leaf_hash(&log.store().entry(s).expect("read").expect("entry"))
            })
            .collect();
        assert_eq!(log.root(), merkle::root_from_leaf_hashes(&leaves));
    }

    #[test]
    fn times_never_go_backwards_and_checkpoints_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = NoteSigner::generate("test/log").expect("key");
        let (mut log, _) = open(dir.path(), &signer);
        log.append(vec![vec![entry(1)]], 2_000).expect("append");
        let first = log.sign_checkpoint(false, 2_000).expect("checkpoint");
        log.append(vec![vec![entry(2)]], 1_000).expect("append with the clock stepped back");
        assert_eq!(log.store().entry(1).expect("read").expect("entry").time_unix_nanos, 2_000);
        let second = log.sign_checkpoint(false, 3_000).expect("checkpoint");
        assert_eq!((first.checkpoint.size, second.checkpoint.size), (1, 2));
        // Not grown: the same checkpoint again, unless forced.
        assert_eq!(log.sign_checkpoint(false, 4_000).expect("checkpoint"), second);
        let forced = log.sign_checkpoint(true, 5_000_000_000).expect("checkpoint");
        assert_ne!(forced.note, second.note);
        assert_eq!(forced.checkpoint.size, 2);
        assert!(signer.verifier().verify_checkpoint(&second.note).is_ok());
    }

    #[test]
    fn a_store_that_does_not_match_its_checkpoint_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = NoteSigner::generate("test/log").expect("key");
        let (mut log, _) = open(dir.path(), &signer);
        log.append(vec![(0..40).map(entry).collect()], 5).expect("append");
        log.sign_checkpoint(false, 5).expect("checkpoint");
        // Change a stored level-4 hash, as if the tree had been rewritten.
        let key = crate::storage::tiles::tile_key(1, 0);
        let mut tile = log.store().tiles.get(key).expect("get").expect("tile").to_vec();
        tile[0] ^= 1;
        log.store().tiles.insert(key, tile).expect("insert");
        log.store().tiles.flush().expect("flush");
        drop(log);
        let store = Store::open(dir.path(), 8 << 20).expect("open store");
        let err = Log::open(store, signer).err().expect("must refuse");
        assert!(matches!(err, LogError::RootMismatch { size: 40, .. }), "{err}");
    }
}
