//! The Merkle log: appends a batch of entries durably, and signs checkpoints over it.
//!
//! [`Log`] is owned by the writer thread alone (see [`crate::writer`]): it holds the
//! right edge of the tree in memory, so an append never reads from disk. Opening it
//! recovers from a crash and checks the stored tree against the last signed checkpoint.
//!
//! Invariants (docs/ARCHITECTURE.md):
//! - seq starts at 0 and has no gaps; entry `seq` is leaf `seq` of the tree;
//! - an entry is acknowledged only after the batch holding it is on stable storage;
//! - entry times never decrease along seq;
//! - every checkpoint is consistent with the one before it (checked before signing).

use std::time::{SystemTime, UNIX_EPOCH};

use ledger_proto::merkle::{self, CompactRange, Hash};
use ledger_proto::note::{self, NoteSigner, NoteVerifier};
use ledger_proto::{leaf, pb};

use crate::record::{self, Record};
use crate::store::{MAX_RECORD_BYTES, Store, StoreError, Syncer, seq_from_key};
use crate::tiles::{TILE_WIDTH, TileWriter, tile_key};

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
}

/// What [`Log::open`] found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Entries that were on disk without their tree hashes (written, never acknowledged)
    /// and were added to the tree.
    pub adopted: u64,
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
        let mut log = Log { store, syncer, range, tiles, signer, verifier, last_checkpoint: None, last_time };

        let mut recovery = Recovery::default();
        if entries_end > size {
            // A crash after the entries reached disk but before their tree hashes did.
            // They are whole entries (sled batches are atomic): take them into the tree.
            for seq in size..entries_end {
                let entry = log.store.entry(seq)?.ok_or(LogError::Gap { seq })?;
                let hash = leaf::entry_leaf_hash(&entry);
                let tiles = &mut log.tiles;
                log.range.append(hash, |level, index, h| tiles.on_node(level, index, h));
                log.last_time = log.last_time.max(entry.time_unix_nanos);
            }
            log.write_tiles()?;
            log.store.sync(&mut log.syncer)?;
            recovery.adopted = entries_end - size;
        }

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

    /// The store this log writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The latest signed checkpoint, if any.
    pub fn last_checkpoint(&self) -> Option<&SignedCheckpoint> {
        self.last_checkpoint.as_ref()
    }

    /// The key checkpoints are signed with.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Appends entries as one group commit and makes them durable.
    ///
    /// Each entry gets the next seq, and a receive time of `now` (never earlier than the
    /// entry before it). Returns one [`Ack`] per entry, in order, only after `fdatasync`.
    pub fn append(&mut self, entries: Vec<pb::Entry>, now: i64) -> Result<Vec<Ack>, LogError> {
        let time = now.max(self.last_time);
        let mut batch = sled::Batch::default();
        let mut acks = Vec::with_capacity(entries.len());
        let mut encoded = Vec::with_capacity(entries.len());
        for (seq, mut entry) in (self.size()..).zip(entries) {
            entry.seq = seq;
            entry.time_unix_nanos = time;
            let bytes = record::encode(&Record::from(entry.clone()))
                .map_err(|e| StoreError::Encode(e.to_string()))?;
            if bytes.len() > MAX_RECORD_BYTES {
                return Err(StoreError::TooLarge { size: bytes.len() }.into());
            }
            encoded.push((seq, leaf::entry_leaf_hash(&entry), bytes));
        }
        // Only now, with every entry accepted, does the tree move.
        for (seq, hash, bytes) in encoded {
            batch.insert(&seq.to_be_bytes(), bytes.as_slice());
            let tiles = &mut self.tiles;
            self.range.append(hash, |level, index, h| tiles.on_node(level, index, h));
            acks.push(Ack { seq, leaf_hash: hash });
        }
        // Entries first, then their tree hashes: after a crash the entries are either all
        // there or all absent, and hashes missing for present entries are recomputed.
        self.store.entries.apply_batch(batch).map_err(StoreError::from)?;
        self.write_tiles()?;
        self.store.sync(&mut self.syncer)?;
        self.last_time = time;
        Ok(acks)
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
            extensions: vec![format!("time {}", rfc3339(now))],
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
        let entry = self.store.entry(seq)?.ok_or(LogError::Gap { seq })?;
        let actual = leaf::entry_leaf_hash(&entry);
        let expected = self.store.leaf_hash(seq)?;
        if actual != expected {
            return Err(LogError::LeafMismatch { seq, actual: hex(&actual), expected: hex(&expected) });
        }
        Ok(())
    }

    fn write_tiles(&mut self) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for (key, value) in self.tiles.take_dirty() {
            batch.insert(&key, value);
        }
        self.store.tiles.apply_batch(batch).map_err(StoreError::from)?;
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

/// Lowercase hex of a hash, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339 UTC time with second precision for nanoseconds since the epoch.
pub fn rfc3339(unix_nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| unix_nanos.to_string())
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
