//! The store under `<data-dir>/store`: the entries in segment files under `log/` (see
//! [`crate::storage::segments`]: the write-ahead log, the one thing a commit syncs), and a sled
//! database beside them holding what is derived from the entries, and the checkpoints.
//!
//! Trees:
//! - `tiles`: Merkle subtree hashes (see [`crate::storage::tiles`]);
//! - `checkpoints`: tree size ‖ signing time (both u64 big-endian) → signed note text;
//! - `meta`: format version;
//! - `by_agent`: the agent index (see [`crate::projections::agent_index`]), a projection of `entries`;
//! - `counters`: entries per hour and `(kind, agent, tool, decision)` (see
//!   [`crate::projections::counters`]), a projection of `entries`;
//! - `agents`, `policies`: the registry and policy store (see [`crate::projections::registry`]).
//!
//! Durability: an entry is acknowledged once its segment file is `fdatasync`ed
//! ([`crate::storage::segments::Segments::append`]). sled is written after that, unsynced: what a
//! crash takes from it is derived again from the segments at start. When sled itself must
//! be durable (a checkpoint, a migration), [`Store::sync`] follows sled 0.34's `flush()`
//! (which writes with `pwrite` and `sync_file_range` but never `fsync`s) with a real
//! `fdatasync` of sled's log file (and of any blob file, which sled never syncs).
//!
//! Formats (`meta` key `format`): 1 kept one entry per key in the tree `entries`, 2 kept
//! them in blocks of 16 in the tree `blocks` (see [`crate::storage::blocks`]); both are moved into
//! segments on open (see [`Store::open`]). 3 had segments without the pre-zeroed tail of 4
//! (a format-3 reader takes the zeros for damage); it is recorded as 4 on open.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use ledger_proto::merkle::{self, Hash, NodeSource};
use ledger_proto::pb;

use std::sync::Arc;

use crate::storage::blocks::Block;
use crate::storage::record::{self, FORMAT_VERSION};
use crate::storage::segments::{self, SEGMENT_BYTES, SegmentError, SegmentReader, Segments};
use crate::storage::stored::{self, LazyEntry, StoredEntry};
use crate::storage::tiles::{SledTiles, TILE_WIDTH, TileError, tile_key};

/// sled's page cache size. sled's default is 1 GiB, far more than a ledger on an agent
/// host should take; reads beyond the cache go to the OS page cache anyway.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// sled's log segment size. sled writes a log item bigger than `segment_size / 4` to a
/// separate blob file, which it never syncs; with 1 MiB segments the small derived values
/// sled holds stay inline in its log file. [`Syncer`] syncs any blob file it finds.
const SEGMENT_SIZE: usize = 1024 * 1024;

/// The largest stored record accepted (defined with the segment framing).
pub use crate::storage::segments::MAX_RECORD_BYTES;

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
    #[error(transparent)]
    Segments(#[from] SegmentError),
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
    /// The entries: read them through [`Store::entry`], [`Store::scan`] and
    /// [`EntryReader`]; only `Log::append` writes them.
    segments: Arc<Segments>,
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
    /// Opens (or creates) the store in `dir`, moving the entries of an older format into
    /// segments first.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SEGMENT_SIZE)
            // Checkpoints and recovery flush; the background flusher would only add writes.
            .flush_every_ms(None);
        let db = open_locked(&config, dir)?;
        let meta = db.open_tree("meta")?;
        let found = match meta.get("format")? {
            None => None,
            Some(v) => Some(u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::BadMeta { key: "format", detail: "not 4 bytes".into() })?,
            )),
        };
        if let Some(found) = found {
            if found > FORMAT_VERSION {
                return Err(StoreError::NewerFormat { found });
            }
            if found < 3 {
                migrate_to_segments(&db, dir, found)?;
            } else if found == 3 {
                // Format 3 segments are format 4 segments that never had a pre-zeroed tail:
                // nothing to move, only the version to record (durably, before the first
                // commit can leave zeros a format-3 reader would take for damage).
                meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
                Syncer::new(dir)?.sync()?;
                tracing::info!("storage format 3 recorded as 4 (segments with a pre-zeroed tail)");
            }
        }
        let segments = Arc::new(Segments::open(&dir.join(LOG_DIR), SEGMENT_BYTES)?);
        if found.is_none() {
            meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
        }
        // A migration that stopped after recording the new format leaves the old trees.
        for old in ["blocks", "entries"] {
            if db.tree_names().iter().any(|n| n.as_ref() == old.as_bytes()) {
                db.drop_tree(old)?;
            }
        }
        Ok(Store {
            segments,
            tiles: db.open_tree("tiles")?,
            checkpoints: db.open_tree("checkpoints")?,
            meta,
            by_agent: db.open_tree("by_agent")?,
            counters: db.open_tree("counters")?,
            agents: db.open_tree("agents")?,
            policies: db.open_tree("policies")?,
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// The segment files (the writer appends through them; see `log::merkle`).
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// Bytes the store takes on disk (allocated blocks): the segment files and sled's files.
    pub fn disk_bytes(&self) -> u64 {
        Store::disk_bytes_of(&self.dir)
    }

    /// Bytes the files under `dir` take on disk (allocated blocks, not apparent sizes).
    pub fn disk_bytes_of(dir: &Path) -> u64 {
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => Store::disk_bytes_of(&e.path()),
                    Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                    Err(_) => 0,
                })
                .sum()
        })
    }

    /// The Merkle node source over the stored tiles.
    pub fn node_source(&self) -> SledTiles {
        SledTiles { tree: self.tiles.clone() }
    }

    /// One past the highest seq stored (the tree may be shorter after a crash; see
    /// `Log::open`).
    pub fn entries_end(&self) -> Result<u64, StoreError> {
        Ok(self.segments.end())
    }

    /// Calls `f` with the stored record of entry `seq`, read in place.
    pub fn with_record<T>(
        &self,
        seq: u64,
        f: impl FnOnce(&StoredEntry<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        self.reader().with_record(seq, f)
    }

    /// The stored entry with this seq.
    pub fn entry(&self, seq: u64) -> Result<Option<pb::Entry>, StoreError> {
        self.with_record(seq, |e| e.to_entry())
    }

    /// A reader for entries by seq that keeps its place: reading seqs in increasing order
    /// reads the segment files sequentially.
    pub fn reader(&self) -> EntryReader<'_> {
        EntryReader { store: self, inner: SegmentReader::default() }
    }

    /// Calls `f(seq, record bytes)` for every stored entry in `lo..hi`, in order, until it
    /// returns `Ok(false)`, reading the segment files sequentially.
    pub fn scan(
        &self,
        lo: u64,
        hi: u64,
        f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.segments.scan(lo, hi, f)
    }

    /// [`Store::scan`], also giving each record's frame offset in its segment file (what
    /// the agent index keeps).
    pub fn scan_located(
        &self,
        lo: u64,
        hi: u64,
        f: impl FnMut(u64, u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        self.segments.scan_located(lo, hi, f)
    }

    /// Writes entries behind the log's back, as an attacker with write access to the data
    /// dir (or a crash) could: `Some(entry)` replaces the record of `seq`, or adds it when
    /// `seq` is one past the last stored entry (an entry with no tree hashes, what a crash
    /// between a commit's batches leaves); `None` removes every entry from `seq` on. The
    /// Merkle tree is never touched. Nothing in ledgerd calls this: it exists for tests
    /// and forensic tooling, with the daemon stopped.
    pub fn tamper(&self, seq: u64, entry: Option<&pb::Entry>) -> Result<(), StoreError> {
        let end = self.entries_end()?;
        if seq > end || (seq == end && entry.is_none()) {
            return Err(StoreError::NoSuchEntry { seq, size: end });
        }
        let mut records = Vec::new();
        self.scan(seq, end, |_, bytes| {
            records.push(bytes.to_vec());
            Ok(true)
        })?;
        match entry {
            Some(entry) => {
                let bytes = stored::encode(entry);
                match records.first_mut() {
                    Some(first) => *first = bytes,
                    None => records.push(bytes),
                }
            }
            None => records.clear(),
        }
        self.segments.rewrite_from(seq, &records)?;
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

/// Reads entries by seq, keeping its place in the segment files (see [`Store::reader`]).
pub struct EntryReader<'a> {
    store: &'a Store,
    inner: SegmentReader,
}

impl EntryReader<'_> {
    /// Calls `f` with the stored record of entry `seq`, read in place; `None` when the log
    /// does not hold it.
    pub fn with_record<T>(
        &mut self,
        seq: u64,
        f: impl FnOnce(&StoredEntry<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let Some(bytes) = self.inner.record(&self.store.segments, seq)? else { return Ok(None) };
        stored::with_entry(bytes, f)
            .map(Some)
            .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })
    }
}

impl EntryReader<'_> {
    /// Calls `f` with entry `seq` walked but its strings not yet checked (see
    /// [`LazyEntry`]); `None` when the log does not hold it.
    pub fn with_lazy<T>(
        &mut self,
        seq: u64,
        f: impl FnOnce(&LazyEntry<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let bytes = self.inner.record(&self.store.segments, seq)?;
        lazy(seq, bytes, f)
    }

    /// The record (stored bytes) of entry `seq`, whose frame an index says is the `len`
    /// bytes at `offset` in its segment file (see `SegmentReader::record_at`).
    pub fn record_at(&mut self, (seq, offset, len): (u64, u64, u64)) -> Result<Option<&[u8]>, StoreError> {
        Ok(self.inner.record_at(&self.store.segments, seq, (offset, len))?)
    }

    /// [`EntryReader::with_lazy`] for an entry whose frame an index says is the `len`
    /// bytes at `offset` in its segment file: one exact read when it is (see
    /// `SegmentReader::record_at`).
    pub fn with_lazy_at<T>(
        &mut self,
        (seq, offset, len): (u64, u64, u64),
        f: impl FnOnce(&LazyEntry<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let bytes = self.record_at((seq, offset, len))?;
        lazy(seq, bytes, f)
    }
}

/// `f` of entry `seq` read in place from its stored bytes, if there are any.
fn lazy<T>(
    seq: u64,
    bytes: Option<&[u8]>,
    f: impl FnOnce(&LazyEntry<'_>) -> T,
) -> Result<Option<T>, StoreError> {
    let Some(bytes) = bytes else { return Ok(None) };
    let entry = LazyEntry::parse(bytes).map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
    Ok(Some(f(&entry)))
}

/// The directory of the segment files, under the store's directory.
pub const LOG_DIR: &str = "log";
/// Where a migration writes the segments before moving them to [`LOG_DIR`].
const MIGRATING_DIR: &str = "log.migrating";

/// Moves the entries of a format-1 (`entries` tree, one record per key) or format-2
/// (`blocks` tree) store into segment files, records unchanged. Crash-safe: the segments
/// are written and synced under [`MIGRATING_DIR`], renamed to [`LOG_DIR`] (the directory
/// synced), and only then is the current format recorded (sled flushed and synced) and the old tree
/// dropped. Until the format is recorded the old tree is the only truth: a restart
/// removes whatever segments a stopped migration left and starts over.
fn migrate_to_segments(db: &sled::Db, dir: &Path, found: u32) -> Result<(), StoreError> {
    let (tmp, log) = (dir.join(MIGRATING_DIR), dir.join(LOG_DIR));
    for stale in [&tmp, &log] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .map_err(|source| StoreError::Io { path: stale.clone(), source })?;
        }
    }
    let segs = Segments::open(&tmp, SEGMENT_BYTES)?;
    let old_name = if found < 2 { "entries" } else { "blocks" };
    let old = db.open_tree(old_name)?;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut end = 0u64;
    let flush = |pending: &mut Vec<Vec<u8>>, end: u64| -> Result<(), StoreError> {
        let first = end - pending.len() as u64;
        segs.append(first, pending.iter().map(Vec::as_slice))?;
        pending.clear();
        Ok(())
    };
    for item in old.iter() {
        let (key, value) = item?;
        let first =
            seq_from_key(&key).ok_or(StoreError::BadMeta { key: old_name, detail: "bad key".into() })?;
        if first != end {
            return Err(StoreError::BadRecord {
                seq: end,
                message: format!("missing from the `{old_name}` tree"),
            });
        }
        let records: Vec<&[u8]> = if found < 2 {
            vec![&value[..]]
        } else {
            let block = parse_block(first, &value)?;
            block
                .records()
                .enumerate()
                .map(|(i, r)| {
                    r.map_err(|e| StoreError::BadRecord { seq: first + i as u64, message: e.to_string() })
                })
                .collect::<Result<_, _>>()?
        };
        for r in records {
            // Formats 1 and 2 stored rkyv archives; format 3 stores the canonical leaf.
            let entry = record::decode_entry(r)
                .map_err(|e| StoreError::BadRecord { seq: end, message: e.to_string() })?;
            let bytes = stored::encode(&entry);
            pending_bytes += bytes.len();
            pending.push(bytes);
            end += 1;
        }
        if pending_bytes >= 16 << 20 {
            flush(&mut pending, end)?;
            pending_bytes = 0;
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, end)?;
    }
    drop(segs);
    segments::sync_dir(&tmp)?;
    crate::storage::failpoint::hit("migrate-before-rename");
    std::fs::rename(&tmp, &log).map_err(|source| StoreError::Io { path: log.clone(), source })?;
    segments::sync_dir(dir)?;
    crate::storage::failpoint::hit("migrate-before-format");
    db.open_tree("meta")?.insert("format", &FORMAT_VERSION.to_be_bytes())?;
    db.flush()?;
    Syncer::new(dir)?.sync()?;
    db.drop_tree(old_name)?;
    db.flush()?;
    Syncer::new(dir)?.sync()?;
    tracing::info!(
        entries = end,
        from_format = found,
        "moved the entries to segment files (storage format 4)"
    );
    Ok(())
}

fn parse_block(first: u64, value: &[u8]) -> Result<Block<'_>, StoreError> {
    Block::parse(value).map_err(|e| StoreError::BadRecord { seq: first, message: e.to_string() })
}

/// Writes for one tree, applied in order by [`write_in_order`].
pub type Writes = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes `(key, value)` pairs to `tree` one insert at a time, in order. Not a
/// `sled::Batch`: sled 0.34 writes out and `sync_file_range`s its log buffer before and
/// after every batch (about two device syncs each), while plain inserts only fill the
/// buffer. Atomicity is not needed for what is derived from the entries: sled recovers a
/// prefix of its writes, so a marker written last never claims more than the writes
/// before it, and a start catches up from the marker.
pub fn write_in_order(tree: &sled::Tree, writes: Writes) -> Result<(), sled::Error> {
    for (k, v) in writes {
        tree.insert(k, v)?;
    }
    Ok(())
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
        let records: Vec<Vec<u8>> = (0..n).map(|seq| stored::encode(&entry(seq))).collect();
        for (i, chunk) in records.chunks(per_commit as usize).enumerate() {
            let first = i as u64 * per_commit;
            store.segments().append(first, chunk.iter().map(Vec::as_slice)).expect("append");
        }
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
                    assert_eq!(stored::decode_entry(bytes).expect("decode"), entry(seq));
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
            assert_eq!(reader.with_record(seq, |r| r.seq).expect("read"), Some(seq));
        }
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

    fn old_store(dir: &Path, format: u32, n: u64) {
        let db = sled::Config::new()
            .path(dir)
            .segment_size(SEGMENT_SIZE)
            .flush_every_ms(None)
            .open()
            .expect("sled");
        let mut open = crate::storage::blocks::OpenBlock::default();
        let mut batch = sled::Batch::default();
        let tree = db.open_tree(if format == 1 { "entries" } else { "blocks" }).expect("tree");
        for seq in 0..n {
            let bytes = record::encode(&record::Record::from(entry(seq))).expect("encode");
            if format == 1 {
                tree.insert(seq.to_be_bytes(), bytes.as_slice()).expect("insert");
            } else {
                // The format-2 writer's own code path: blocks filled over several commits.
                open.push(seq, bytes, &mut batch);
                if seq % 5 == 4 {
                    open.write_partial(&mut batch);
                    tree.apply_batch(std::mem::take(&mut batch)).expect("batch");
                }
            }
        }
        open.write_partial(&mut batch);
        tree.apply_batch(batch).expect("batch");
        db.open_tree("meta").expect("meta").insert("format", &format.to_be_bytes()).expect("format");
        db.flush().expect("flush");
    }

    fn check_migrated(dir: &Path, n: u64) {
        let store = Store::open(dir, 8 << 20).expect("open migrates");
        assert_eq!(store.entries_end().expect("end"), n);
        for seq in 0..n {
            assert_eq!(store.entry(seq).expect("read"), Some(entry(seq)));
        }
        assert_eq!(
            store.meta.get("format").expect("meta").as_deref(),
            Some(&FORMAT_VERSION.to_be_bytes()[..])
        );
        for old in ["entries", "blocks"] {
            assert!(!store.db.tree_names().iter().any(|t| t.as_ref() == old.as_bytes()), "{old} dropped");
        }
        assert!(!dir.join(MIGRATING_DIR).exists());
    }

    #[test]
    fn a_format_3_store_is_recorded_as_format_4_with_its_segments_as_they_are() {
        // Format 3: the same segments, never pre-zeroed (a plain append-grown file).
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), 8 << 20).expect("open");
            write(&store, 40, 3);
            store.meta.insert("format", &3u32.to_be_bytes()).expect("format 3");
            store.db.flush().expect("flush");
        }
        check_migrated(dir.path(), 40);
        let store = Store::open(dir.path(), 8 << 20).expect("reopen");
        store.segments().append(40, [stored::encode(&entry(40)).as_slice()].into_iter()).expect("append");
        assert_eq!(store.entry(40).expect("read"), Some(entry(40)));
    }

    #[test]
    fn a_format_1_store_is_moved_to_segments_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        old_store(dir.path(), 1, 50);
        check_migrated(dir.path(), 50);
    }

    #[test]
    fn a_format_2_store_is_moved_to_segments_on_open_even_after_a_crash_mid_migration() {
        // Clean: blocks written by the format-2 code path, moved over on open.
        let dir = tempfile::tempdir().expect("tempdir");
        old_store(dir.path(), 2, 83);
        check_migrated(dir.path(), 83);
        // A crash while the segments were being written (a partial `log.migrating`), and
        // one after they were renamed into place but before the format was recorded (a
        // `log` directory the old format does not know): the old tree is still the truth,
        // and the migration starts over from it.
        for leftover in [MIGRATING_DIR, LOG_DIR] {
            let dir = tempfile::tempdir().expect("tempdir");
            old_store(dir.path(), 2, 83);
            let segs = Segments::open(&dir.path().join(leftover), SEGMENT_BYTES).expect("segments");
            segs.append(0, [b"not a record".as_slice(); 3].into_iter()).expect("append");
            drop(segs);
            check_migrated(dir.path(), 83);
            // And reopening a migrated store changes nothing.
            check_migrated(dir.path(), 83);
        }
        // A crash after the format was recorded but before the old tree was dropped.
        let dir = tempfile::tempdir().expect("tempdir");
        old_store(dir.path(), 2, 20);
        check_migrated(dir.path(), 20);
        {
            let db = sled::Config::new().path(dir.path()).segment_size(SEGMENT_SIZE).open().expect("sled");
            db.open_tree("blocks").expect("tree").insert(b"stale", b"x").expect("insert");
            db.flush().expect("flush");
        }
        check_migrated(dir.path(), 20);
    }
}
