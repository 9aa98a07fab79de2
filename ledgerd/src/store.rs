//! The sled database under `<data-dir>/store`: its trees, and the one durable write path.
//!
//! Trees:
//! - `entries`: seq (u64 big-endian) → [`crate::record::Record`] as rkyv bytes;
//! - `tiles`: Merkle subtree hashes (see [`crate::tiles`]);
//! - `checkpoints`: tree size ‖ signing time (both u64 big-endian) → signed note text;
//! - `meta`: format version;
//! - `by_agent`: the agent index (see [`crate::agent_index`]), a projection of `entries`;
//! - `counters`: entries per hour and `(kind, agent, tool, decision)` (see
//!   [`crate::counters`]), a projection of `entries`;
//! - `agents`, `policies`: the registry and policy store (see [`crate::projection`]).
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

use crate::record::{self, FORMAT_VERSION};
use crate::tiles::{SledTiles, TILE_WIDTH, TileError, tile_key};

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
}

/// An open store. Cloning is cheap; clones share the database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    pub entries: sled::Tree,
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
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(SEGMENT_SIZE)
            // Our own commits flush; the background flusher would only add writes.
            .flush_every_ms(None)
            .open()?;
        let store = Store {
            entries: db.open_tree("entries")?,
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
            }
        }
        Ok(store)
    }

    /// The Merkle node source over the stored tiles.
    pub fn node_source(&self) -> SledTiles {
        SledTiles { tree: self.tiles.clone() }
    }

    /// One past the highest seq stored (the tree may be shorter after a crash; see
    /// `Log::open`).
    pub fn entries_end(&self) -> Result<u64, StoreError> {
        Ok(match self.entries.last()? {
            Some((k, _)) => seq_from_key(&k).map_or(0, |s| s + 1),
            None => 0,
        })
    }

    /// The stored entry with this seq.
    pub fn entry(&self, seq: u64) -> Result<Option<pb::Entry>, StoreError> {
        match self.entries.get(seq.to_be_bytes())? {
            None => Ok(None),
            Some(bytes) => record::decode_entry(&bytes)
                .map(Some)
                .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() }),
        }
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
}

impl Syncer {
    fn new(dir: &Path) -> Result<Syncer, StoreError> {
        let log_path = dir.join("db");
        let log =
            File::open(&log_path).map_err(|source| StoreError::Io { path: log_path.clone(), source })?;
        Ok(Syncer { log, log_path, blobs_dir: dir.join("blobs"), synced_blobs: HashSet::new() })
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
        let Ok(dir) = std::fs::read_dir(&self.blobs_dir) else { return Ok(()) };
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

/// Decodes a big-endian seq key.
pub fn seq_from_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}
