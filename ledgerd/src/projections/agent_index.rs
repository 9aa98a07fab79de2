//! The agent index: for each agent, the seqs of its entries, so a query for one agent
//! reads its entries instead of scanning the log.
//!
//! Stored in the `by_agent` tree as chunks: key `agent ‖ 0x00 ‖ first seq (u64 BE)`,
//! value up to [`CHUNK_SEQS`] seqs as u64 BE. Only each agent's last chunk is ever
//! rewritten, so a group commit costs one write per agent it touched, not one per entry.
//! The key `[0xff]` (never the start of a UTF-8 agent name) holds the seq the index is
//! complete up to; it is written in the same batch as the chunks, so after a crash the
//! index knows where to catch up from. The index is a projection of the log: deleting the
//! tree rebuilds it on the next start.

use std::collections::{BTreeSet, HashMap};

/// Seqs per chunk (1 KiB values).
pub const CHUNK_SEQS: usize = 128;
const END_KEY: &[u8] = &[0xff];

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

fn seqs_of(value: &[u8]) -> impl Iterator<Item = u64> + '_ {
    value.chunks_exact(8).filter_map(|c| c.try_into().ok().map(u64::from_be_bytes))
}

/// The open (last) chunk of one agent.
#[derive(Debug)]
struct Chunk {
    first: u64,
    seqs: Vec<u8>,
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

    /// Records that entry `seq` belongs to `agent`. Seqs must come in increasing order.
    pub fn add(&mut self, tree: &sled::Tree, agent: &str, seq: u64) -> Result<(), sled::Error> {
        if !self.open.contains_key(agent) {
            // First sight of this agent since start: continue its last stored chunk.
            let last = tree.scan_prefix(prefix(agent)).next_back().transpose()?;
            let chunk = match last {
                Some((k, v)) if v.len() < CHUNK_SEQS * 8 => {
                    let first = k.get(k.len() - 8..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
                    // Drop seqs from a batch that never completed (at or past `seq`).
                    let kept: Vec<u8> =
                        seqs_of(&v).take_while(|s| *s < seq).flat_map(u64::to_be_bytes).collect();
                    match first {
                        Some(first) if !kept.is_empty() => Chunk { first, seqs: kept },
                        _ => Chunk { first: seq, seqs: Vec::new() },
                    }
                }
                _ => Chunk { first: seq, seqs: Vec::new() },
            };
            self.open.insert(agent.to_string(), chunk);
        }
        let Some(chunk) = self.open.get_mut(agent) else { return Ok(()) };
        if chunk.seqs.len() >= CHUNK_SEQS * 8 {
            let old =
                std::mem::replace(chunk, Chunk { first: seq, seqs: Vec::with_capacity(CHUNK_SEQS * 8) });
            self.full.push((key(agent, old.first), old.seqs));
        }
        if chunk.seqs.is_empty() {
            chunk.first = seq;
        }
        chunk.seqs.extend_from_slice(&seq.to_be_bytes());
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
                out.push((key(&agent, chunk.first), chunk.seqs.clone()));
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
            if k.as_ref() == END_KEY || k.len() < 9 {
                continue;
            }
            let kept: Vec<u8> = seqs_of(&v).take_while(|s| *s < end).flat_map(u64::to_be_bytes).collect();
            if kept.is_empty() {
                tree.remove(&k)?;
            } else if kept.len() < v.len() {
                tree.insert(&k, kept)?;
            }
        }
        Ok(())
    }
}

/// The seqs in `lo..hi` of `agent`'s entries, ascending, read from the stored index.
pub fn seqs(
    tree: &sled::Tree,
    agent: &str,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = Result<u64, sled::Error>> + use<> {
    let start_key = key(agent, lo);
    let pfx = prefix(agent);
    // The chunk holding `lo` starts at or before it.
    let start = match tree.range(..=start_key.clone()).next_back() {
        Some(Ok((k, _))) if k.starts_with(&pfx) && k.len() == pfx.len() + 8 => k.to_vec(),
        _ => start_key,
    };
    let end = key(agent, hi);
    tree.range(start..end).flat_map(move |item| {
        let seqs: Vec<Result<u64, sled::Error>> = match item {
            Err(e) => vec![Err(e)],
            Ok((_, v)) => seqs_of(&v).filter(|s| (lo..hi).contains(s)).map(Ok).collect(),
        };
        seqs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fill_split_and_read_back_by_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let tree = db.open_tree("by_agent").expect("tree");
        let mut index = AgentIndex::default();
        let mut expected: HashMap<&str, Vec<u64>> = HashMap::new();
        for seq in 0..1000u64 {
            let agent = ["a", "ab", "b"][(seq % 7 % 3) as usize];
            index.add(&tree, agent, seq).expect("add");
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
        index.add(&tree, "a", 1000).expect("add");
        crate::storage::store::write_in_order(&tree, index.take_writes(1001)).expect("write");
        let got: Vec<u64> = seqs(&tree, "a", 990, 1001).collect::<Result<_, _>>().expect("read");
        assert_eq!(got.last(), Some(&1000));
        assert!(seqs(&tree, "nobody", 0, 1001).next().is_none());
    }
}
