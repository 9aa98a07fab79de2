//! Storage format 2 kept the entries in blocks: one sled value held the records of up to
//! [`BLOCK_ENTRIES`] consecutive entries (fewer once it reached [`BLOCK_BYTES`]). Format 3
//! keeps them in segment files (see `crate::storage::segments`); this module stays to read a
//! format-2 data dir while it is moved over, and (`OpenBlock`) to write one in tests.
//!
//! Why: sled's cost is per key (a tree descent, a page delta, and a leaf split every 16
//! keys), not per byte, so one key per entry made sled the append path's bottleneck and
//! the full scan's. A block is keyed by the seq of its first entry (u64 big-endian);
//! blocks follow each other without gaps, so the block holding `seq` is the last key at
//! or before it. Only the newest block is ever rewritten (it fills up over several group
//! commits), and it is rewritten inside the commit's one sled batch, so a crash leaves
//! either the old or the new version of it.
//!
//! Value layout (all integers little-endian):
//!
//! ```text
//! u32 count ‖ count × (u32 offset, u32 length) ‖ zero padding to a multiple of 8 ‖ records
//! ```
//!
//! Each record (an rkyv [`crate::storage::record::Record`]) starts at an offset that is a multiple
//! of 8 from the start of the value, so scans read records in place without copying.

use rkyv::util::AlignedVec;

/// Most entries in one block.
pub const BLOCK_ENTRIES: usize = 16;
/// A block takes no more entries once its records reach this many bytes. With sled's
/// leaves of up to 16 values this keeps a leaf well under sled's blob threshold
/// (`store::SEGMENT_SIZE / 4`) for entries of typical size.
pub const BLOCK_BYTES: usize = 8 * 1024;

/// Why a stored block cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged entry block: {0}")]
pub struct BadBlock(pub String);

/// A parsed block value.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    bytes: &'a [u8],
    count: usize,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
}

fn header_len(count: usize) -> usize {
    (4 + 8 * count).next_multiple_of(8)
}

impl<'a> Block<'a> {
    /// Checks the header; records are bounds-checked when read.
    pub fn parse(bytes: &'a [u8]) -> Result<Block<'a>, BadBlock> {
        let count = u32_at(bytes, 0).ok_or_else(|| BadBlock("shorter than its header".into()))? as usize;
        if count == 0 || count > BLOCK_ENTRIES || header_len(count) > bytes.len() {
            return Err(BadBlock(format!("header claims {count} records in {} bytes", bytes.len())));
        }
        Ok(Block { bytes, count })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always false: a stored block holds at least one record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes of record `i`.
    pub fn record(&self, i: usize) -> Result<&'a [u8], BadBlock> {
        if i >= self.count {
            return Err(BadBlock(format!("record {i} asked of a block of {}", self.count)));
        }
        let at = 4 + 8 * i;
        let (Some(offset), Some(len)) = (u32_at(self.bytes, at), u32_at(self.bytes, at + 4)) else {
            return Err(BadBlock("header cut short".into()));
        };
        let (offset, len) = (offset as usize, len as usize);
        self.bytes
            .get(offset..offset.saturating_add(len))
            .filter(|_| offset >= header_len(self.count))
            .ok_or_else(|| BadBlock(format!("record {i} at {offset}+{len} lies outside the block")))
    }

    /// The records in order.
    pub fn records(&self) -> impl Iterator<Item = Result<&'a [u8], BadBlock>> + '_ {
        (0..self.count).map(|i| self.record(i))
    }
}

/// Writes the block value holding `records` (at most [`BLOCK_ENTRIES`]).
pub fn encode<R: AsRef<[u8]>>(records: &[R]) -> Vec<u8> {
    let head = header_len(records.len());
    let total = head + records.iter().map(|r| r.as_ref().len().next_multiple_of(8)).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let mut offset = head;
    for r in records {
        let len = r.as_ref().len();
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        offset += len.next_multiple_of(8);
    }
    out.resize(head, 0);
    for r in records {
        let r = r.as_ref();
        out.extend_from_slice(r);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    out
}

/// The newest block while it fills: its first seq and its records so far.
#[derive(Debug, Default)]
pub struct OpenBlock {
    first: u64,
    records: Vec<AlignedVec>,
    bytes: usize,
}

impl OpenBlock {
    /// The open block of a log of `size` entries whose last block starts at `first` and
    /// holds `records` (empty when the last block is full or the log is empty).
    pub fn resume(size: u64, first: u64, records: Vec<AlignedVec>) -> OpenBlock {
        if records.is_empty() {
            return OpenBlock { first: size, records, bytes: 0 };
        }
        let bytes = records.iter().map(|r| r.len()).sum();
        OpenBlock { first, records, bytes }
    }

    /// Whether a block of `count` records totalling `bytes` takes no more.
    pub fn is_full(count: usize, bytes: usize) -> bool {
        count >= BLOCK_ENTRIES || bytes >= BLOCK_BYTES
    }

    /// Adds the record of entry `seq` (the next seq). When this fills the block, its
    /// finished value is added to `batch` and a new block starts after it.
    pub fn push(&mut self, seq: u64, record: AlignedVec, batch: &mut sled::Batch) {
        if self.records.is_empty() {
            self.first = seq;
        }
        self.bytes += record.len();
        self.records.push(record);
        if Self::is_full(self.records.len(), self.bytes) {
            batch.insert(&self.first.to_be_bytes(), encode(&self.records));
            self.records.clear();
            self.bytes = 0;
            self.first = seq + 1;
        }
    }

    /// Adds the partly filled block, if any, to `batch` (it is rewritten by later commits).
    pub fn write_partial(&self, batch: &mut sled::Batch) {
        if !self.records.is_empty() {
            batch.insert(&self.first.to_be_bytes(), encode(&self.records));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(bytes: &[u8]) -> AlignedVec {
        let mut v = AlignedVec::new();
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn records_round_trip_aligned() {
        let records: Vec<Vec<u8>> = (0..BLOCK_ENTRIES).map(|i| vec![i as u8; i * 3 + 1]).collect();
        let value = encode(&records);
        let block = Block::parse(&value).expect("parse");
        assert_eq!(block.len(), records.len());
        for (i, r) in records.iter().enumerate() {
            let got = block.record(i).expect("record");
            assert_eq!(got, r.as_slice());
            let offset = got.as_ptr() as usize - value.as_ptr() as usize;
            assert_eq!(offset % 8, 0, "record {i} starts 8-aligned");
        }
        assert!(block.record(records.len()).is_err());
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let value = encode(&[vec![1u8; 20], vec![2u8; 20]]);
        for cut in 0..value.len() {
            if let Ok(block) = Block::parse(&value[..cut]) {
                let _ = block.records().collect::<Vec<_>>();
            }
        }
        assert!(Block::parse(&[]).is_err());
        assert!(Block::parse(&0u32.to_le_bytes()).is_err());
        assert!(Block::parse(&99u32.to_le_bytes()).is_err());
        let mut lying = value.clone();
        lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let block = Block::parse(&lying).expect("header still parses");
        assert!(block.record(0).is_err());
    }

    #[test]
    fn blocks_close_at_sixteen_entries_or_at_the_byte_limit() {
        let mut open = OpenBlock::resume(0, 0, Vec::new());
        let mut batch = sled::Batch::default();
        for seq in 0..40u64 {
            open.push(seq, aligned(&[7u8; 100]), &mut batch);
        }
        open.write_partial(&mut batch);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).temporary(true).open().expect("sled");
        db.apply_batch(batch).expect("batch");
        let keys: Vec<u64> = db
            .iter()
            .keys()
            .map(|k| u64::from_be_bytes(k.expect("key").as_ref().try_into().expect("8 bytes")))
            .collect();
        assert_eq!(keys, vec![0, 16, 32]);
        let big = BLOCK_BYTES / 3 + 1;
        let mut open = OpenBlock::resume(0, 0, Vec::new());
        let mut batch = sled::Batch::default();
        for seq in 0..3u64 {
            open.push(seq, aligned(&vec![1u8; big]), &mut batch);
        }
        assert!(open.records.is_empty(), "three records over a third of the limit fill a block");
        assert_eq!(open.first, 3);
    }
}
