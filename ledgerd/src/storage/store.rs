//! The sled database under `<data-dir>/store`: its trees, and the one durable write path.
//!
//! Trees:
//! - `blocks`: the entries, in blocks of up to 16 (see [`crate::storage::blocks`]): seq of the
//!   block's first entry (u64 big-endian) → the block's [`crate::storage::record::Record`]s as rkyv
//!   bytes;
//! - `tiles`: Merkle subtree hashes (see [`crate::storage::tiles`]);
//! - `checkpoints`: tree size ‖ signing time (both u64 big-endian) → signed note text;
//! - `meta`: format version;
//! - `by_agent`: the agent index (see [`crate::projections::agent_index`]), a projection of `entries`;
//! - `counters`: entries per hour and `(kind, agent, tool, decision)` (see
//!   [`crate::projections::counters`]), a projection of `entries`;
//! - `agents`, `policies`: the registry and policy store (see [`crate::projections::registry`]).
//!
//! Durability: sled 0.34's `flush()` writes with `pwrite` and `sync_file_range` but never
//! `fsync`s, so a flushed batch can still be lost on power failure. [`Store::sync`]
//! follows every flush with a real `fdatasync` of sled's log file (and of any blob file,
//! which sled writes with no sync at all). Nothing is acknowledged before `sync` returns.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use ledger_proto::merkle::{self, Hash, NodeSource};
use ledger_proto::pb;
use rkyv::util::AlignedVec;

use crate::storage::blocks::{self, Block};
use crate::storage::record::{self, ArchivedRecord, FORMAT_VERSION};
use crate::storage::tiles::{SledTiles, TILE_WIDTH, TileError, tile_key};

/// sled's page cache size. sled's default is 1 GiB, far more than a ledger on an agent
/// host should take; reads beyond the cache go to the OS page cache anyway.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// sled's log segment size. sled writes a log item bigger than `segment_size / 4` to a
/// separate blob file, which it never syncs; leaf nodes hold up to 16 values, so with
/// 1 MiB segments every node of typical entries (a few hundred bytes) stays inline in the
/// synced log file. Entries near [`MAX_RECORD_BYTES`] can still produce a blob file:
/// [`Syncer`] syncs any it finds before a commit is acknowledged.
const SEGMENT_SIZE: usize = 1024 * 1024;

/// The largest stored record accepted.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "stored entry {seq} cannot be decoded ({message}): the data dir is damaged or was changed; run `ledgerctl verify`"
    )]
    BadRecord { seq: u64, message: String },
    #[error("entry {seq} is not in the log (the log holds {size} entries)")]
    NoSuchEntry { seq: u64, size: u64 },
    #[error(transparent)]
    Tiles(#[from] TileError),
    #[error(
        "the data dir was written by a newer ledgerd (storage format {found}, this build reads {FORMAT_VERSION}); run the newer ledgerd"
    )]
    NewerFormat { found: u32 },
    #[error(
        "damaged `{key}` data in the store ({detail}); run `ledgerd --rebuild-projections` if it is a projection, else restore the data dir"
    )]
    BadMeta { key: &'static str, detail: String },
    #[error(
        "entry is {size} bytes once stored, over the limit of {MAX_RECORD_BYTES}; shorten its params, reason or details"
    )]
    TooLarge { size: usize },
    #[error("cannot serialize entry: {0}")]
    Encode(String),
    #[error(
        "{path} is in use by another process (another ledgerd on this data dir?); stop it first, or give this one its own --data-dir"
    )]
    Locked { path: PathBuf },
}

/// An open store. Cloning is cheap; clones share the database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The entries, in blocks: read them through [`Store::entry`], [`Store::scan`] and
    /// [`EntryReader`]; only `Log::append` writes them.
    pub blocks: sled::Tree,
    pub tiles: sled::Tree,
    pub checkpoints: sled::Tree,
    pub meta: sled::Tree,
    pub by_agent: sled::Tree,
    pub counters: sled::Tree,
    pub agents: sled::Tree,
    pub policies: sled::Tree,
    dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SEGMENT_SIZE)
            // Our own commits flush; the background flusher would only add writes.
            .flush_every_ms(None);
        let db = open_locked(&config, dir)?;
        let store = Store {
            blocks: db.open_tree("blocks")?,
            tiles: db.open_tree("tiles")?,
            checkpoints: db.open_tree("checkpoints")?,
            meta: db.open_tree("meta")?,
            by_agent: db.open_tree("by_agent")?,
            counters: db.open_tree("counters")?,
            agents: db.open_tree("agents")?,
            policies: db.open_tree("policies")?,
            db,
            dir: dir.to_path_buf(),
        };
        match store.meta.get("format")? {
            None => {
                store.meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::BadMeta { key: "format", detail: "not 4 bytes".into() })?,
                );
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat { found });
                }
                if found < 2 {
                    store.migrate_to_blocks()?;
                }
            }
        }
        Ok(store)
    }

    /// Storage format 1 kept one entry per key in the tree `entries`; format 2 keeps them
    /// in blocks. Copies every entry into `blocks` (records unchanged), syncs, and only
    /// then records the new format and drops the old tree. A crash before that leaves
    /// format 1 in place and the copy starts over on the next start.
    fn migrate_to_blocks(&self) -> Result<(), StoreError> {
        self.blocks.clear()?;
        let old = self.db.open_tree("entries")?;
        let mut open = blocks::OpenBlock::default();
        let mut batch = sled::Batch::default();
        let mut expected = 0u64;
        for item in old.iter() {
            let (key, value) = item?;
            let seq =
                seq_from_key(&key).ok_or(StoreError::BadMeta { key: "entries", detail: "bad key".into() })?;
            if seq != expected {
                return Err(StoreError::BadRecord {
                    seq: expected,
                    message: "missing from the format-1 entries".into(),
                });
            }
            let mut record = AlignedVec::with_capacity(value.len());
            record.extend_from_slice(&value);
            open.push(seq, record, &mut batch);
            expected += 1;
            if expected.is_multiple_of(65_536) {
                self.blocks.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        open.write_partial(&mut batch);
        self.blocks.apply_batch(batch)?;
        self.db.flush()?;
        self.syncer()?.sync()?;
        self.meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
        self.db.drop_tree("entries")?;
        self.db.flush()?;
        self.syncer()?.sync()?;
        tracing::info!(entries = expected, "moved the entries to storage format 2 (blocks)");
        Ok(())
    }

    /// The Merkle node source over the stored tiles.
    pub fn node_source(&self) -> SledTiles {
        SledTiles { tree: self.tiles.clone() }
    }

    /// One past the highest seq stored (the tree may be shorter after a crash; see
    /// `Log::open`).
    pub fn entries_end(&self) -> Result<u64, StoreError> {
        Ok(match self.blocks.last()? {
            Some((k, v)) => {
                let first = block_first(&k)?;
                first + parse_block(first, &v)?.len() as u64
            }
            None => 0,
        })
    }

    /// The block holding `seq`: its first seq and its value.
    fn block_of(&self, seq: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
        let Some((k, v)) = self.blocks.range(..=seq.to_be_bytes()).next_back().transpose()? else {
            return Ok(None);
        };
        let first = block_first(&k)?;
        Ok((seq - first < parse_block(first, &v)?.len() as u64).then_some((first, v)))
    }

    /// Calls `f` with the stored record of entry `seq`, read in place.
    pub fn with_record<T>(
        &self,
        seq: u64,
        f: impl FnOnce(&ArchivedRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        self.reader().with_record(seq, f)
    }

    /// The stored entry with this seq.
    pub fn entry(&self, seq: u64) -> Result<Option<pb::Entry>, StoreError> {
        self.with_record(seq, ArchivedRecord::to_entry)
    }

    /// A reader for entries by seq that keeps the last block it read: reading seqs in
    /// increasing order costs one sled read per block.
    pub fn reader(&self) -> EntryReader<'_> {
        EntryReader { store: self, cached: None }
    }

    /// Calls `f(seq, record bytes)` for every stored entry in `lo..hi`, in order, until it
    /// returns `Ok(false)`. A missing block inside the range is an error (seq has no gaps).
    pub fn scan(
        &self,
        lo: u64,
        hi: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if lo >= hi {
            return Ok(());
        }
        let start = match self.blocks.range(..=lo.to_be_bytes()).next_back().transpose()? {
            Some((k, _)) => block_first(&k)?,
            None => lo,
        };
        let mut expected = start;
        for item in self.blocks.range(start.to_be_bytes()..hi.to_be_bytes()) {
            let (k, v) = item?;
            let first = block_first(&k)?;
            if first != expected {
                return Err(StoreError::BadRecord {
                    seq: expected,
                    message: format!("the entry block starting at {expected} is missing"),
                });
            }
            let block = parse_block(first, &v)?;
            for (seq, record) in (first..).zip(block.records()) {
                if seq < lo {
                    continue;
                }
                if seq >= hi {
                    return Ok(());
                }
                let record = record.map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
                if !f(seq, record)? {
                    return Ok(());
                }
            }
            expected = first + block.len() as u64;
        }
        Ok(())
    }

    /// The records of the last block if it is not full (with its first seq), for the
    /// writer to go on filling it; `(size, [])` otherwise.
    pub fn open_block(&self, size: u64) -> Result<blocks::OpenBlock, StoreError> {
        let Some(last) = size.checked_sub(1) else { return Ok(blocks::OpenBlock::resume(0, 0, Vec::new())) };
        let (first, value) = self.block_of(last)?.ok_or(StoreError::NoSuchEntry { seq: last, size })?;
        let block = parse_block(first, &value)?;
        let mut records = Vec::new();
        let mut bytes = 0;
        for (seq, record) in (first..size).zip(block.records()) {
            let record = record.map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
            bytes += record.len();
            let mut copy = AlignedVec::with_capacity(record.len());
            copy.extend_from_slice(record);
            records.push(copy);
        }
        if blocks::OpenBlock::is_full(records.len(), bytes) {
            records.clear();
        }
        Ok(blocks::OpenBlock::resume(size, first, records))
    }

    /// Writes entries behind the log's back, as an attacker with write access to the data
    /// dir (or a crash) could: `Some(entry)` replaces the record of `seq`, or adds it when
    /// `seq` is one past the last stored entry (an entry with no tree hashes, what a crash
    /// between a commit's batches leaves); `None` removes every entry from `seq` on. The
    /// Merkle tree is never touched. Nothing in ledgerd calls this: it exists for tests
    /// and forensic tooling, with the daemon stopped.
    pub fn tamper(&self, seq: u64, entry: Option<&pb::Entry>) -> Result<(), StoreError> {
        let end = self.entries_end()?;
        if let (Some(entry), true) = (entry, seq == end) {
            let bytes = record::encode(&record::Record::from(entry.clone()))
                .map_err(|e| StoreError::Encode(e.to_string()))?;
            let mut open = self.open_block(end)?;
            let mut batch = sled::Batch::default();
            open.push(seq, bytes, &mut batch);
            open.write_partial(&mut batch);
            self.blocks.apply_batch(batch)?;
            self.db.flush()?;
            return Ok(());
        }
        let (first, value) = self.block_of(seq)?.ok_or(StoreError::NoSuchEntry { seq, size: end })?;
        let block = parse_block(first, &value)?;
        let mut records: Vec<Vec<u8>> = Vec::with_capacity(block.len());
        for (s, record) in (first..).zip(block.records()) {
            let record = record.map_err(|e| StoreError::BadRecord { seq: s, message: e.to_string() })?;
            records.push(record.to_vec());
        }
        let i = (seq - first) as usize;
        let mut batch = sled::Batch::default();
        match entry {
            Some(entry) => {
                let bytes = record::encode(&record::Record::from(entry.clone()))
                    .map_err(|e| StoreError::Encode(e.to_string()))?;
                records[i] = bytes.to_vec();
                batch.insert(&first.to_be_bytes(), blocks::encode(&records));
            }
            None => {
                records.truncate(i);
                if records.is_empty() {
                    batch.remove(&first.to_be_bytes());
                } else {
                    batch.insert(&first.to_be_bytes(), blocks::encode(&records));
                }
                for later in self.blocks.range((first + 1).to_be_bytes()..).keys() {
                    batch.remove(later?);
                }
            }
        }
        self.blocks.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Root hash of the first `size` leaves, from the tiles.
    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        Ok(merkle::root(&self.node_source(), size)?)
    }

    /// The leaf hash the tiles hold for `seq`.
    pub fn leaf_hash(&self, seq: u64) -> Result<Hash, StoreError> {
        Ok(self.node_source().node(0, seq)?)
    }

    /// The leaf hashes the tiles hold for seqs `start..end`, one tile read per 16.
    pub fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<Hash>, StoreError> {
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut seq = start;
        while seq < end {
            let j = seq / TILE_WIDTH;
            let tile = self.tiles.get(tile_key(0, j))?.map(|v| v.to_vec()).unwrap_or_default();
            let upto = end.min((j + 1) * TILE_WIDTH);
            for s in seq..upto {
                let at = (s % TILE_WIDTH) as usize * merkle::HASH_LEN;
                // A leaf hash missing below the durable size means the tree data is damaged.
                let bytes = tile.get(at..at + merkle::HASH_LEN).ok_or(TileError::Missing {
                    t: 0,
                    j,
                    have: tile.len() / merkle::HASH_LEN,
                    need: (s % TILE_WIDTH) as usize + 1,
                    level: 0,
                    index: s,
                })?;
                let mut h = [0u8; merkle::HASH_LEN];
                h.copy_from_slice(bytes);
                out.push(h);
            }
            seq = upto;
        }
        Ok(out)
    }

    /// Reads a meta value as text.
    pub fn meta_str(&self, key: &'static str) -> Result<Option<String>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| StoreError::BadMeta { key, detail: "not UTF-8".into() }),
        }
    }

    /// Makes everything written so far durable: sled's flush, then a real `fdatasync`.
    pub fn sync(&self, syncer: &mut Syncer) -> Result<(), StoreError> {
        self.db.flush()?;
        syncer.sync()
    }

    /// A syncer for this store's files (see [`Syncer`]).
    pub fn syncer(&self) -> Result<Syncer, StoreError> {
        Syncer::new(&self.dir)
    }
}

/// Holds sled's log file open and `fdatasync`s it (and new blob files) on demand.
pub struct Syncer {
    log: File,
    log_path: PathBuf,
    blobs_dir: PathBuf,
    synced_blobs: HashSet<std::ffi::OsString>,
    /// The blobs directory's modification time when it was last listed: it changes when a
    /// file is added, so an unchanged time means there is nothing new to sync.
    blobs_listed: Option<std::time::SystemTime>,
}

impl Syncer {
    fn new(dir: &Path) -> Result<Syncer, StoreError> {
        let log_path = dir.join("db");
        let log =
            File::open(&log_path).map_err(|source| StoreError::Io { path: log_path.clone(), source })?;
        Ok(Syncer {
            log,
            log_path,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
            blobs_listed: None,
        })
    }

    /// `fdatasync` on sled's log file: it flushes the pages sled wrote through its own
    /// descriptor, since they belong to the same inode.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.log.sync_data().map_err(|source| StoreError::Io { path: self.log_path.clone(), source })?;
        self.sync_blobs()
    }

    /// sled never syncs blob files. Values are capped so that none should exist, but if
    /// one does, it is synced before anything is acknowledged.
    fn sync_blobs(&mut self) -> Result<(), StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let Ok(modified) = std::fs::metadata(&self.blobs_dir).and_then(|m| m.modified()) else {
            return Ok(());
        };
        if self.blobs_listed == Some(modified) {
            return Ok(());
        }
        let Ok(dir) = std::fs::read_dir(&self.blobs_dir) else { return Ok(()) };
        // File system timestamps are coarse: a file added in the same tick as the last
        // change would not move the time. Trust a time only once it is well in the past.
        let settled = modified.elapsed().is_ok_and(|age| age > std::time::Duration::from_secs(1));
        self.blobs_listed = settled.then_some(modified);
        let mut any_new = false;
        for item in dir {
            let item = item.map_err(io(&self.blobs_dir))?;
            if self.synced_blobs.insert(item.file_name()) {
                let path = item.path();
                File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
                any_new = true;
            }
        }
        if any_new {
            File::open(&self.blobs_dir).and_then(|d| d.sync_all()).map_err(io(&self.blobs_dir))?;
        }
        Ok(())
    }
}

/// Opens sled, which takes an exclusive lock on its files. The lock of a store closed in
/// this process is released once sled's I/O threads let go of it, a moment after the last
/// handle is dropped: a reopen waits for that (up to 5 s). A lock still held after that
/// belongs to another process.
fn open_locked(config: &sled::Config, dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::Locked { path: dir.to_path_buf() });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

/// Reads entries by seq, keeping the last block read (see [`Store::reader`]).
pub struct EntryReader<'a> {
    store: &'a Store,
    cached: Option<(u64, sled::IVec)>,
}

impl EntryReader<'_> {
    /// Calls `f` with the stored record of entry `seq`, read in place; `None` when the log
    /// does not hold it.
    pub fn with_record<T>(
        &mut self,
        seq: u64,
        f: impl FnOnce(&ArchivedRecord) -> T,
    ) -> Result<Option<T>, StoreError> {
        let hit = matches!(&self.cached, Some((first, v)) if seq >= *first
            && Block::parse(v).is_ok_and(|b| seq - first < b.len() as u64));
        if !hit {
            self.cached = self.store.block_of(seq)?;
        }
        let Some((first, value)) = &self.cached else { return Ok(None) };
        let bad = |message: String| StoreError::BadRecord { seq, message };
        let block = parse_block(*first, value)?;
        let bytes = block.record((seq - first) as usize).map_err(|e| bad(e.to_string()))?;
        record::with_archived(bytes, f).map(Some).map_err(|e| bad(e.to_string()))
    }
}

fn block_first(key: &[u8]) -> Result<u64, StoreError> {
    seq_from_key(key)
        .ok_or(StoreError::BadMeta { key: "blocks", detail: format!("a key of {} bytes", key.len()) })
}

fn parse_block(first: u64, value: &[u8]) -> Result<Block<'_>, StoreError> {
    Block::parse(value).map_err(|e| StoreError::BadRecord { seq: first, message: e.to_string() })
}

/// Decodes a big-endian seq key.
pub fn seq_from_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> pb::Entry {
        pb::Entry {
            seq,
            time_unix_nanos: seq as i64 * 10,
            kind: pb::Kind::Decision as i32,
            agent: format!("agent-{}", seq % 3),
            // Sizes vary so that some blocks close on bytes before 16 entries.
            params: "x".repeat((seq as usize * 37) % 1500),
            ..Default::default()
        }
    }

    fn write(store: &Store, n: u64, per_commit: u64) {
        let mut open = store.open_block(0).expect("open block");
        let mut batch = sled::Batch::default();
        for seq in 0..n {
            let bytes = record::encode(&record::Record::from(entry(seq))).expect("encode");
            open.push(seq, bytes, &mut batch);
            if (seq + 1) % per_commit == 0 {
                open.write_partial(&mut batch);
                store.blocks.apply_batch(std::mem::take(&mut batch)).expect("batch");
            }
        }
        open.write_partial(&mut batch);
        store.blocks.apply_batch(batch).expect("batch");
    }

    #[test]
    fn entries_read_back_by_seq_by_scan_and_by_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        write(&store, 300, 7);
        assert_eq!(store.entries_end().expect("end"), 300);
        for seq in [0, 1, 15, 16, 17, 150, 299] {
            assert_eq!(store.entry(seq).expect("read"), Some(entry(seq)), "seq {seq}");
        }
        assert_eq!(store.entry(300).expect("read"), None);
        for (lo, hi) in [(0, 300), (5, 6), (16, 33), (290, 400), (299, 300), (7, 7)] {
            let mut seen = Vec::new();
            store
                .scan(lo, hi, |seq, bytes| {
                    assert_eq!(record::decode_entry(bytes).expect("decode"), entry(seq));
                    seen.push(seq);
                    Ok(true)
                })
                .expect("scan");
            assert_eq!(seen, (lo..hi.min(300)).collect::<Vec<_>>(), "{lo}..{hi}");
        }
        let mut first_two = Vec::new();
        store
            .scan(10, 300, |seq, _| {
                Ok({
                    first_two.push(seq);
                    first_two.len() < 2
                })
            })
            .expect("scan");
        assert_eq!(first_two, vec![10, 11], "a scan stops when asked");
        let mut reader = store.reader();
        for seq in (0..300).step_by(3) {
            assert_eq!(reader.with_record(seq, |r| r.seq.to_native()).expect("read"), Some(seq));
        }
        // Several commits filled the blocks: keys are the first seqs, without gaps.
        let mut next = 0;
        for item in store.blocks.iter() {
            let (k, v) = item.expect("block");
            assert_eq!(seq_from_key(&k), Some(next));
            next += Block::parse(&v).expect("block").len() as u64;
        }
        assert_eq!(next, 300);
    }

    #[test]
    fn tampering_replaces_appends_and_truncates_without_touching_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        write(&store, 40, 40);
        let mut changed = entry(20);
        changed.agent = "mallory".into();
        store.tamper(20, Some(&changed)).expect("replace");
        assert_eq!(store.entry(20).expect("read"), Some(changed));
        assert_eq!(store.entry(21).expect("read"), Some(entry(21)));
        store.tamper(40, Some(&entry(40))).expect("add");
        assert_eq!(store.entries_end().expect("end"), 41);
        store.tamper(18, None).expect("truncate");
        assert_eq!(store.entries_end().expect("end"), 18);
        assert_eq!(store.entry(17).expect("read"), Some(entry(17)));
        assert_eq!(store.entry(18).expect("read"), None);
    }

    #[test]
    fn a_store_in_use_is_refused_with_the_reason_and_free_once_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Store::open(dir.path(), 8 << 20).expect("open");
        let err = Store::open(dir.path(), 8 << 20).err().expect("the lock is held");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another ledgerd"), "{err}");
        drop(first);
        Store::open(dir.path(), 8 << 20).expect("reopened once closed");
    }

    #[test]
    fn a_missing_block_inside_a_scan_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("open");
        write(&store, 100, 100);
        let second = store.blocks.iter().keys().nth(1).expect("two blocks").expect("key");
        store.blocks.remove(&second).expect("remove");
        let err = store.scan(0, 100, |_, _| Ok(true)).expect_err("gap");
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn a_format_1_store_is_moved_to_blocks_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::Config::new()
                .path(dir.path())
                .segment_size(SEGMENT_SIZE)
                .flush_every_ms(None)
                .open()
                .expect("sled");
            let old = db.open_tree("entries").expect("tree");
            for seq in 0..50u64 {
                let bytes = record::encode(&record::Record::from(entry(seq))).expect("encode");
                old.insert(seq.to_be_bytes(), bytes.as_slice()).expect("insert");
            }
            db.open_tree("meta").expect("meta").insert("format", &1u32.to_be_bytes()).expect("format");
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path(), 8 << 20).expect("open migrates");
        assert_eq!(store.entries_end().expect("end"), 50);
        for seq in 0..50 {
            assert_eq!(store.entry(seq).expect("read"), Some(entry(seq)));
        }
        assert_eq!(
            store.meta.get("format").expect("meta").as_deref(),
            Some(&FORMAT_VERSION.to_be_bytes()[..])
        );
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"entries"), "old tree dropped");
    }
}
