//! Merkle subtree hashes kept in fixed-width tiles, so the tree costs about one sled
//! write per sixteen leaves instead of one per node.
//!
//! A tile at tile-level `t` and index `j` holds up to [`TILE_WIDTH`] hashes of tree level
//! `t * TILE_HEIGHT`, namely nodes `j * 16 .. j * 16 + 16` of that level (level 0 = leaf
//! hashes). Nodes of the levels in between are recomputed from the tile below them (at
//! most 15 hashes), which is how C2SP tlog-tiles work too. Only the right-most tile of each
//! level is ever partial; a full tile never changes again.
//!
//! Key: `[t: u8][j: u64 big-endian]`; value: the hashes concatenated, 32 bytes each.

use std::collections::BTreeSet;

use ledger_proto::merkle::{self, HASH_LEN, Hash, NodeSource};

/// Levels covered by one tile.
pub const TILE_HEIGHT: u32 = 4;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// The sled key of tile `(t, j)`.
pub fn tile_key(t: u8, j: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = t;
    key[1..].copy_from_slice(&j.to_be_bytes());
    key
}

/// Why a node could not be read from the tiles.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    #[error("storage error reading Merkle tiles: {0}")]
    Storage(#[from] sled::Error),
    #[error(
        "Merkle tile ({t}, {j}) holds {have} hashes but node (level {level}, index {index}) needs {need}: the tree data is incomplete or damaged; run `ledgerctl verify`"
    )]
    Missing { t: u8, j: u64, have: usize, need: usize, level: u32, index: u64 },
    #[error("Merkle tile ({t}, {j}) is {len} bytes, not a multiple of 32: the tree data is damaged")]
    Corrupt { t: u8, j: u64, len: usize },
}

/// Reads complete subtree hashes from the tiles tree.
#[derive(Clone)]
pub struct SledTiles {
    pub tree: sled::Tree,
}

impl SledTiles {
    fn tile(&self, t: u8, j: u64) -> Result<Vec<u8>, TileError> {
        let value = self.tree.get(tile_key(t, j))?;
        let bytes = value.map(|v| v.to_vec()).unwrap_or_default();
        if bytes.len() % HASH_LEN != 0 {
            return Err(TileError::Corrupt { t, j, len: bytes.len() });
        }
        Ok(bytes)
    }
}

impl NodeSource for SledTiles {
    type Error = TileError;

    fn node(&self, level: u32, index: u64) -> Result<Hash, TileError> {
        let t = (level / TILE_HEIGHT) as u8;
        let rise = level % TILE_HEIGHT;
        // The node covers 2^rise consecutive hashes of the tile's base level.
        let first = index << rise;
        let j = first / TILE_WIDTH;
        let offset = (first % TILE_WIDTH) as usize;
        let need = 1usize << rise;
        let bytes = self.tile(t, j)?;
        let have = bytes.len() / HASH_LEN;
        if have < offset + need {
            return Err(TileError::Missing { t, j, have, need: offset + need, level, index });
        }
        let mut row: Vec<Hash> = bytes[offset * HASH_LEN..(offset + need) * HASH_LEN]
            .chunks_exact(HASH_LEN)
            .map(|c| {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect();
        while row.len() > 1 {
            row = row.chunks_exact(2).map(|p| merkle::node_hash(&p[0], &p[1])).collect();
        }
        Ok(row[0])
    }
}

/// The tiles a group commit changed, to be written in the same batch as its entries.
///
/// It keeps the right-most (partial) tile of each tile-level in memory, so appending never
/// reads from disk.
#[derive(Debug, Default)]
pub struct TileWriter {
    /// Right-edge tile per tile-level: (tile index, hashes so far).
    edge: Vec<(u64, Vec<u8>)>,
    /// Edge tiles changed since the last [`TileWriter::take_dirty`].
    dirty: BTreeSet<(u8, u64)>,
    /// Tiles that filled up and left the edge since the last `take_dirty`.
    filled: Vec<([u8; 9], Vec<u8>)>,
}

impl TileWriter {
    /// Loads the right edge for a tree of `size` leaves.
    pub fn load(tiles: &SledTiles, size: u64) -> Result<Self, TileError> {
        let mut edge = Vec::new();
        let mut level_size = size;
        let mut t = 0u8;
        while level_size > 0 {
            let j = level_size / TILE_WIDTH;
            let bytes = if level_size.is_multiple_of(TILE_WIDTH) { Vec::new() } else { tiles.tile(t, j)? };
            let want = (level_size % TILE_WIDTH) as usize * HASH_LEN;
            if bytes.len() < want {
                return Err(TileError::Missing {
                    t,
                    j,
                    have: bytes.len() / HASH_LEN,
                    need: want / HASH_LEN,
                    level: u32::from(t) * TILE_HEIGHT,
                    index: level_size - 1,
                });
            }
            // Hashes past `size` would be from a batch that never completed: drop them.
            edge.push((j, bytes[..want].to_vec()));
            level_size /= TILE_WIDTH;
            t += 1;
        }
        Ok(TileWriter { edge, dirty: BTreeSet::new(), filled: Vec::new() })
    }

    /// Records a completed node reported by `CompactRange::append`.
    pub fn on_node(&mut self, level: u32, index: u64, hash: &Hash) {
        if !level.is_multiple_of(TILE_HEIGHT) {
            return;
        }
        let t = (level / TILE_HEIGHT) as usize;
        while self.edge.len() <= t {
            self.edge.push((0, Vec::new()));
        }
        let j = index / TILE_WIDTH;
        let slot = &mut self.edge[t];
        if slot.0 != j {
            let old = std::mem::replace(slot, (j, Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN)));
            if self.dirty.remove(&(t as u8, old.0)) {
                self.filled.push((tile_key(t as u8, old.0), old.1));
            }
        }
        slot.1.extend_from_slice(hash);
        self.dirty.insert((t as u8, j));
    }

    /// The changed tiles as (key, value) pairs, and forgets them.
    pub fn take_dirty(&mut self) -> Vec<([u8; 9], Vec<u8>)> {
        let mut out = std::mem::take(&mut self.filled);
        for (t, j) in std::mem::take(&mut self.dirty) {
            if let Some((edge_j, bytes)) = self.edge.get(t as usize) {
                debug_assert_eq!(*edge_j, j, "a dirty tile is always on the edge");
                out.push((tile_key(t, j), bytes.clone()));
            }
        }
        out
    }
}
