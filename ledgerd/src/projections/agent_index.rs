//! The agent index: for each agent, the seqs of its entries and where their frames are in
//! the segment files, so a query for one agent reads exactly its entries' frames instead
//! of scanning the log.
//!
//! Stored in the `by_agent` tree as chunks: key `agent ‖ 0x00 ‖ first seq (u64 BE)`,
//! value up to [`CHUNK_SEQS`] entries, each three LEB128 varints: the seq's difference to
//! the one before it (the first the difference to the key's seq, so 0); the offset of its
//! frame in its segment file, in units of 8 bytes (frames start at multiples of 8 and are
//! padded to them), as the zigzag-encoded difference to the offset before it (the first to
//! 0; an agent's entries move forward through a segment, and back to the start of the
//! next); and the frame's length, in units of 8 bytes. An entry so costs four or five
//! bytes instead of the twenty-four of three u64s, which keeps both the index and what sled
//! rewrites per commit small. Offset and length make a lookup one read of exactly the
//! entry's frame (see `SegmentReader::record_at`) instead of the frames before it in its
//! indexed group; they are only a hint: a frame read there whose checksum does not name the
//! seq is read again the slow way, so a wrong offset costs time, never a wrong entry. Only
//! each agent's last chunk is ever rewritten, so a group commit costs one write per agent
//! it touched, not one per entry.
//! The key `[0xff]` (never the start of a UTF-8 agent name) holds the seq the index is
//! complete up to; it is written after the chunks, so after a crash the index knows where
//! to catch up from. The key `[0xfe]` holds the chunks' [`FORMAT`]: chunks of another
//! format (format 1 kept each seq as a u64 BE, format 2 seqs alone as delta varints) are
//! removed and rebuilt from the log at open (see [`AgentIndex::check_format`]). The index
//! is a projection of the log: deleting the tree rebuilds it on the next start.

use std::collections::{BTreeSet, HashMap};

use crate::projections::counters::{get, put};

/// Entries per chunk. Every commit rewrites the last chunk of each agent it touched: at 32
/// entries of 4-5 bytes, sled's rewrites (and the garbage they leave until it cleans its
/// files) stay below format 2's 128 seqs of 1-2 bytes (measured with query-bench at 1M
/// entries in commits of 250: 364 bytes on disk per entry, against 358 for format 2 and 381
/// for format 3 in chunks of 128). A reader does not care how long a chunk is.
pub const CHUNK_SEQS: usize = 32;
/// The chunks' encoding (seq, frame offset and frame length varints); 1 was u64 BE seqs, 2
/// delta varint seqs without the frames' places.
pub const FORMAT: u8 = 3;
const END_KEY: &[u8] = &[0xff];
const FORMAT_KEY: &[u8] = &[0xfe];

fn key(agent: &str, first: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(agent.len() + 9);
    k.extend_from_slice(agent.as_bytes());
    k.push(0);
    k.extend_from_slice(&first.to_be_bytes());
    k
}

fn prefix(agent: &str) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    k.push(0);
    k
}

/// The first seq of a chunk, from its key.
fn first_of(key: &[u8]) -> Option<u64> {
    key.len().checked_sub(8).and_then(|at| key[at..].try_into().ok()).map(u64::from_be_bytes)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// One indexed entry: its seq, and the offset and length (padding included) of its frame
/// in its segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Located {
    pub seq: u64,
    pub offset: u64,
    pub len: u64,
}

/// The entries of a chunk whose key names `first`; a value cut inside a number (damage)
/// ends them there.
fn entries_of(value: &[u8], first: u64) -> impl Iterator<Item = Located> + '_ {
    let (mut at, mut seq, mut words) = (0usize, first, 0i64);
    std::iter::from_fn(move || {
        seq = seq.checked_add(get(value, &mut at)?)?;
        words = words.checked_add(unzigzag(get(value, &mut at)?))?;
        let len = get(value, &mut at)?.checked_mul(8)?;
        Some(Located { seq, offset: u64::try_from(words).ok()?.checked_mul(8)?, len })
    })
}

/// The open (last) chunk of one agent.
#[derive(Debug)]
struct Chunk {
    first: u64,
    /// Its last seq and frame offset (in 8-byte words), the bases of the next deltas.
    last: u64,
    last_words: i64,
    count: usize,
    bytes: Vec<u8>,
}

impl Chunk {
    fn new(first: u64) -> Chunk {
        Chunk { first, last: first, last_words: 0, count: 0, bytes: Vec::new() }
    }

    fn push(&mut self, e: Located) {
        if self.count == 0 {
            self.first = e.seq;
            self.last = e.seq;
        }
        let words = (e.offset / 8) as i64;
        put(&mut self.bytes, e.seq - self.last);
        put(&mut self.bytes, zigzag(words - self.last_words));
        put(&mut self.bytes, e.len / 8);
        self.last = e.seq;
        self.last_words = words;
        self.count += 1;
    }
}

/// Pending index updates, owned by the writer (see the module docs).
#[derive(Debug, Default)]
pub struct AgentIndex {
    open: HashMap<String, Chunk>,
    dirty: BTreeSet<String>,
    /// Chunks that filled up since the last batch: (key, value).
    full: crate::storage::store::Writes,
}

impl AgentIndex {
    /// The seq the stored index is complete up to.
    pub fn indexed_end(tree: &sled::Tree) -> Result<u64, sled::Error> {
        Ok(tree.get(END_KEY)?.and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0))
    }

    /// Whether the stored chunks are of this build's [`FORMAT`]. If not (a data dir from
    /// before it), removes them, keeping the end marker (which also stands for the
    /// registry; see `Log::open`): the caller rebuilds the index from the first entry and
    /// then calls [`AgentIndex::mark_format`]. A crash before that finds the chunks in no
    /// format and removes them again.
    pub fn check_format(tree: &sled::Tree) -> Result<bool, sled::Error> {
        if tree.get(FORMAT_KEY)?.is_some_and(|v| v.as_ref() == [FORMAT]) {
            return Ok(true);
        }
        for k in tree.iter().keys() {
            let k = k?;
            if k.as_ref() != END_KEY {
                tree.remove(k)?;
            }
        }
        Ok(false)
    }

    /// Records that the stored chunks are of this build's [`FORMAT`]; written after the
    /// chunks of a rebuild and their end marker.
    pub fn mark_format(tree: &sled::Tree) -> Result<(), sled::Error> {
        tree.insert(FORMAT_KEY, &[FORMAT])?;
        Ok(())
    }

    /// Records that entry `at.seq`, whose frame is at `at.offset` in its segment file,
    /// belongs to `agent`. Seqs must come in increasing order.
    pub fn add(&mut self, tree: &sled::Tree, agent: &str, at: Located) -> Result<(), sled::Error> {
        let seq = at.seq;
        if !self.open.contains_key(agent) {
            // First sight of this agent since start: continue its last stored chunk,
            // without the seqs of a batch that never completed (at or past `seq`).
            let mut chunk = Chunk::new(seq);
            if let Some((k, v)) = tree.scan_prefix(prefix(agent)).next_back().transpose()?
                && let Some(first) = first_of(&k)
            {
                let kept: Vec<Located> = entries_of(&v, first).take_while(|e| e.seq < seq).collect();
                if kept.len() < CHUNK_SEQS {
                    kept.into_iter().for_each(|s| chunk.push(s));
                }
            }
            self.open.insert(agent.to_string(), chunk);
        }
        let Some(chunk) = self.open.get_mut(agent) else { return Ok(()) };
        if chunk.count >= CHUNK_SEQS {
            let old = std::mem::replace(chunk, Chunk::new(seq));
            self.full.push((key(agent, old.first), old.bytes));
        }
        chunk.push(at);
        if !self.dirty.contains(agent) {
            self.dirty.insert(agent.to_string());
        }
        Ok(())
    }

    /// The writes of this commit, in order: changed chunks, then the new end marker
    /// (written with [`crate::storage::store::write_in_order`]).
    pub fn take_writes(&mut self, end: u64) -> crate::storage::store::Writes {
        let mut out: crate::storage::store::Writes = self.full.drain(..).collect();
        for agent in std::mem::take(&mut self.dirty) {
            if let Some(chunk) = self.open.get(&agent) {
                out.push((key(&agent, chunk.first), chunk.bytes.clone()));
            }
        }
        out.push((END_KEY.to_vec(), end.to_be_bytes().to_vec()));
        out
    }

    /// Removes from the stored index every seq at or past `end` (the marker): what a crash
    /// let reach sled of a commit whose marker it did not. Run before catching up from
    /// the marker, so no seq is indexed twice.
    pub fn trim(tree: &sled::Tree, end: u64) -> Result<(), sled::Error> {
        for item in tree.iter() {
            let (k, v) = item?;
            if k.as_ref() == END_KEY || k.as_ref() == FORMAT_KEY || k.len() < 9 {
                continue;
            }
            let Some(first) = first_of(&k) else { continue };
            let kept: Vec<Located> = entries_of(&v, first).take_while(|e| e.seq < end).collect();
            if kept.is_empty() {
                tree.remove(&k)?;
            } else if kept.len() < entries_of(&v, first).count() {
                let mut chunk = Chunk::new(first);
                kept.into_iter().for_each(|s| chunk.push(s));
                tree.insert(&k, chunk.bytes)?;
            }
        }
        Ok(())
    }
}

/// The entries in `lo..hi` of `agent`, ascending by seq, read from the stored index.
pub fn entries(
    tree: &sled::Tree,
    agent: &str,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = Result<Located, sled::Error>> + use<> {
    let start_key = key(agent, lo);
    let pfx = prefix(agent);
    // The chunk holding `lo` starts at or before it.
    let start = match tree.range(..=start_key.clone()).next_back() {
        Some(Ok((k, _))) if k.starts_with(&pfx) && k.len() == pfx.len() + 8 => k.to_vec(),
        _ => start_key,
    };
    let end = key(agent, hi);
    tree.range(start..end).flat_map(move |item| {
        let found: Vec<Result<Located, sled::Error>> = match item {
            Err(e) => vec![Err(e)],
            Ok((k, v)) => match first_of(&k) {
                Some(first) => entries_of(&v, first).filter(|e| (lo..hi).contains(&e.seq)).map(Ok).collect(),
                None => Vec::new(),
            },
        };
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read the seqs alone.
    fn seqs(
        tree: &sled::Tree,
        agent: &str,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = Result<u64, sled::Error>> {
        entries(tree, agent, lo, hi).map(|e| e.map(|e| e.seq))
    }

    /// A made-up frame offset for `seq`: forward through "segments" of 100 entries, back
    /// to the start of the next.
    fn off(seq: u64) -> u64 {
        16 + (seq % 100) * 344
    }

    fn at(seq: u64) -> Located {
        Located { seq, offset: off(seq), len: 8 * (1 + seq % 300) }
    }

    #[test]
    fn chunks_fill_split_and_read_back_by_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let tree = db.open_tree("by_agent").expect("tree");
        let mut index = AgentIndex::default();
        let mut expected: HashMap<&str, Vec<u64>> = HashMap::new();
        for seq in 0..1000u64 {
            let agent = ["a", "ab", "b"][(seq % 7 % 3) as usize];
            index.add(&tree, agent, at(seq)).expect("add");
            expected.entry(agent).or_default().push(seq);
            if seq % 50 == 49 {
                crate::storage::store::write_in_order(&tree, index.take_writes(seq + 1)).expect("write");
            }
        }
        assert_eq!(AgentIndex::indexed_end(&tree).expect("end"), 1000);
        for (agent, all) in &expected {
            let got: Vec<u64> = seqs(&tree, agent, 0, 1000).collect::<Result<_, _>>().expect("read");
            assert_eq!(&got, all, "agent {agent}");
            let got: Vec<u64> = seqs(&tree, agent, 300, 700).collect::<Result<_, _>>().expect("read");
            let want: Vec<u64> = all.iter().copied().filter(|s| (300..700).contains(s)).collect();
            assert_eq!(got, want, "agent {agent} in 300..700");
        }
        // A restarted writer continues the last chunk of each agent.
        let mut index = AgentIndex::default();
        index.add(&tree, "a", at(1000)).expect("add");
        crate::storage::store::write_in_order(&tree, index.take_writes(1001)).expect("write");
        let got: Vec<u64> = seqs(&tree, "a", 990, 1001).collect::<Result<_, _>>().expect("read");
        assert_eq!(got.last(), Some(&1000));
        assert!(seqs(&tree, "nobody", 0, 1001).next().is_none());
        // Every offset comes back with its seq.
        for (agent, all) in &expected {
            for e in entries(&tree, agent, 0, 1000) {
                let e = e.expect("read");
                assert_eq!(e, at(e.seq), "agent {agent}");
                assert!(all.contains(&e.seq));
            }
        }
        // Varints: far less than the 24 bytes of a u64 seq, offset and length.
        let stored: usize = tree.iter().values().map(|v| v.expect("value").len()).sum();
        assert!(stored < 1001 * 6, "{stored} bytes for 1001 seqs and frames");
        // A batch past the marker that never completed is trimmed away.
        let mut index = AgentIndex::default();
        for seq in 1001..1300 {
            index.add(&tree, ["a", "b"][(seq % 2) as usize], at(seq)).expect("add");
        }
        let mut writes = index.take_writes(1300);
        writes.pop();
        crate::storage::store::write_in_order(&tree, writes).expect("write without the marker");
        AgentIndex::trim(&tree, 1001).expect("trim");
        let got: Vec<u64> = seqs(&tree, "a", 0, 2000).collect::<Result<_, _>>().expect("read");
        assert_eq!(got, expected["a"].iter().copied().chain([1000]).collect::<Vec<_>>());
    }

    /// Issue 17: chunks of format 1 (u64 BE seqs, no format key) are removed at open, the
    /// marker kept (it also stands for the registry), and are not misread meanwhile.
    #[test]
    fn chunks_of_format_1_are_removed_for_a_rebuild() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let tree = db.open_tree("by_agent").expect("tree");
        let old: Vec<u8> = [3u64, 9, 12].iter().flat_map(|s| s.to_be_bytes()).collect();
        tree.insert(key("a", 3), old).expect("insert");
        tree.insert(END_KEY, &13u64.to_be_bytes()).expect("insert");
        assert!(!AgentIndex::check_format(&tree).expect("check"));
        assert_eq!(tree.len(), 1, "only the marker is left");
        assert_eq!(AgentIndex::indexed_end(&tree).expect("end"), 13);
        let mut index = AgentIndex::default();
        for seq in [3, 9, 12] {
            index.add(&tree, "a", at(seq)).expect("add");
        }
        crate::storage::store::write_in_order(&tree, index.take_writes(13)).expect("write");
        AgentIndex::mark_format(&tree).expect("mark");
        assert!(AgentIndex::check_format(&tree).expect("check"));
        let got: Vec<u64> = seqs(&tree, "a", 0, 13).collect::<Result<_, _>>().expect("read");
        assert_eq!(got, vec![3, 9, 12]);
    }
}
