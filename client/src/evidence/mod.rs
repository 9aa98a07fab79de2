//! Evidence bundles: one directory an auditor can check offline, without trusting the
//! machine it came from (docs/FORMAT.md, "Evidence bundle").
//!
//! [`export`] asks a daemon for a contiguous range of entries, a fresh checkpoint, the
//! registry and policies, and writes the bundle; [`verify`] checks a bundle with nothing but
//! its files and a verifier key. This module holds what both sides must agree on: file
//! names, the `leaves.bin` framing, the range proof and the `events.csv` row of an entry.

use std::path::Path;

use ledger_proto::manifest::ManifestFile;
use ledger_proto::merkle::{self, Hash};
use ledger_proto::pb;
use serde::{Deserialize, Serialize};

pub mod export;
mod html;
pub mod layout;
mod policies;
pub mod verify;

/// The signed manifest (BLAKE3 of every other file).
pub const MANIFEST: &str = "MANIFEST";
/// The signed checkpoint covering the whole period.
pub const CHECKPOINT: &str = "checkpoint.note";
/// The canonical leaf bytes of every entry in the bundle's range.
pub const LEAVES: &str = "leaves.bin";
/// The range, the period and the hashes that tie the leaves to the checkpoint's root.
pub const PROOF: &str = "proof.json";
/// One row per entry in the period.
pub const EVENTS: &str = "events.csv";
/// The ledger's verifier key, as the daemon reported it.
pub const VKEY: &str = "verifier.vkey";

/// The `format` value of `proof.json`.
pub const PROOF_FORMAT: &str = "ledgerd evidence proof v2";

/// The columns of `events.csv`, in order: those of `ledgerctl export` (every field, in
/// [`ledger_query::DEFAULT_COLUMNS`] order, so a bundle's rows line up with an export's),
/// then the leaf hash.
pub fn event_columns() -> Vec<&'static str> {
    ledger_query::DEFAULT_COLUMNS.iter().copied().chain(["leaf_hash"]).collect()
}

/// `proof.json`: which leaves the bundle holds and how they tie to the checkpoint. Every
/// integer is a decimal string ([`layout::decimal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofFile {
    /// Always [`PROOF_FORMAT`].
    pub format: String,
    /// The checkpoint's tree size.
    #[serde(with = "layout::decimal")]
    pub tree_size: u64,
    /// `leaves.bin` holds leaves `start..end`.
    #[serde(with = "layout::decimal")]
    pub start: u64,
    #[serde(with = "layout::decimal")]
    pub end: u64,
    /// The period: `from <= time < to`, ns since the Unix epoch (UTC), as the export
    /// entry records it.
    #[serde(with = "layout::decimal")]
    pub from_unix_nanos: i64,
    #[serde(with = "layout::decimal")]
    pub to_unix_nanos: i64,
    /// The first and last entry of the period (the leaves outside them are the witnesses
    /// that nothing at either end was left out).
    #[serde(with = "layout::decimal")]
    pub first_seq: u64,
    #[serde(with = "layout::decimal")]
    pub last_seq: u64,
    /// The `evidence_exported` entry this bundle's export wrote.
    #[serde(with = "layout::decimal")]
    pub export_seq: u64,
    /// `--agent` names that narrowed the CSV views (empty: all agents).
    pub agents: Vec<String>,
    /// The subtree hashes outside `start..end`, in the order [`rebuild_root`] takes them.
    pub hashes: Vec<String>,
    /// Entries outside `start..end` the bundle relies on (its export entry, the
    /// `policy_changed` entries of policy versions set before the period), each with its
    /// inclusion proof; sorted by seq.
    pub entries: Vec<ProvenEntry>,
}

/// One leaf outside the range, proven by an RFC 9162 inclusion path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenEntry {
    #[serde(with = "layout::decimal")]
    pub seq: u64,
    /// The leaf bytes, lowercase hex.
    pub leaf: String,
    /// The inclusion path from the leaf up, 64 lowercase hex digits each.
    pub path: Vec<String>,
}

/// RFC 3339 UTC text of a time in ns, as `events.csv` writes it.
pub fn time_text(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns)).map_or_else(|_| ns.to_string(), |t| t.to_string())
}

/// The `events.csv` row of an entry, before formula neutralisation: each field exactly as
/// `ledgerctl export` writes it (times in UTC; see docs/FORMAT.md), then the leaf hash.
pub fn event_row(e: &pb::Entry, leaf_hash: &Hash) -> Vec<String> {
    use ledger_query::Record;
    let utc = jiff::tz::TimeZone::UTC;
    let record = crate::wire::EntryRecord(e);
    // As a query row holds them: an empty string or list is missing, an empty cell.
    let cells_of = |f| {
        let v = record.get(f);
        if v.is_missing() { String::new() } else { ledger_query::format_value(&v, &utc) }
    };
    let mut cells: Vec<String> = EVENT_FIELDS.iter().map(cells_of).collect();
    cells.push(crate::verify::hex(leaf_hash));
    cells
}

/// The fields of [`ledger_query::DEFAULT_COLUMNS`], resolved once.
static EVENT_FIELDS: std::sync::LazyLock<Vec<ledger_query::Field>> = std::sync::LazyLock::new(|| {
    ledger_query::DEFAULT_COLUMNS.iter().filter_map(|name| ledger_query::Field::from_name(name)).collect()
});

/// Appends one leaf to `leaves.bin`: its length as u32 big-endian, then its bytes.
pub fn frame_leaf(out: &mut Vec<u8>, leaf: &[u8]) -> Result<(), String> {
    let len =
        u32::try_from(leaf.len()).map_err(|_| format!("a leaf of {} bytes is too large", leaf.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(leaf);
    Ok(())
}

/// Reads `leaves.bin` one leaf at a time (no more than one leaf in memory); the error
/// says where the framing breaks.
pub struct LeafReader<R> {
    inner: R,
    offset: u64,
    index: usize,
    leaf: Vec<u8>,
}

impl<R: std::io::Read> LeafReader<R> {
    pub fn new(inner: R) -> LeafReader<R> {
        LeafReader { inner, offset: 0, index: 0, leaf: Vec::new() }
    }

    /// The next leaf's bytes, or `None` at a clean end of the file.
    pub fn next_leaf(&mut self) -> Result<Option<&[u8]>, String> {
        let io = |e: std::io::Error| format!("cannot read: {e}");
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(format!("truncated length prefix at byte {}", self.offset)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        let len = u64::from(u32::from_be_bytes(len));
        self.leaf.clear();
        // Grows as bytes arrive: a forged length cannot make it allocate 4 GiB up front.
        let read = std::io::Read::read_to_end(&mut std::io::Read::take(&mut self.inner, len), &mut self.leaf)
            .map_err(io)?;
        if (read as u64) < len {
            return Err(format!(
                "leaf {} at byte {} claims {len} bytes, only {read} remain (the file is truncated)",
                self.index, self.offset
            ));
        }
        self.offset += 4 + len;
        self.index += 1;
        Ok(Some(&self.leaf))
    }
}

/// RFC 9162's split: the largest power of two smaller than `n` (for `n > 1`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The subtrees of the tree of `size` leaves that lie wholly outside `start..end` and whose
/// parent overlaps it, in the order a left-to-right walk of the tree meets them: exactly
/// the hashes that, with the range's leaves, rebuild the root.
pub fn outside_subtrees(size: u64, start: u64, end: u64) -> Vec<(u64, u64)> {
    fn walk(lo: u64, hi: u64, start: u64, end: u64, out: &mut Vec<(u64, u64)>) {
        if hi <= start || lo >= end {
            out.push((lo, hi));
        } else if hi - lo > 1 {
            let k = split(hi - lo);
            walk(lo, lo + k, start, end, out);
            walk(lo + k, hi, start, end, out);
        }
    }
    let mut out = Vec::new();
    if size > 0 {
        walk(0, size, start, end, &mut out);
    }
    out
}

/// The subtree ranges of an RFC 9162 inclusion path for leaf `m` in a tree of `size`,
/// from the leaf up (the same order as the path's hashes).
pub fn inclusion_ranges(m: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0, size);
    let mut stack = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if m < lo + k {
            stack.push((lo + k, hi));
            hi = lo + k;
        } else {
            stack.push((lo, lo + k));
            lo += k;
        }
    }
    while let Some(r) = stack.pop() {
        out.push(r);
    }
    out
}

/// Rebuilds the root of a tree of `size` leaves from the leaf hashes of `start..end` and
/// the hashes of [`outside_subtrees`], taken in order; every hash must be used.
pub fn rebuild_root(size: u64, start: u64, leaves: &[Hash], outside: &[Hash]) -> Result<Hash, String> {
    fn walk(
        lo: u64,
        hi: u64,
        start: u64,
        leaves: &[Hash],
        outside: &mut std::slice::Iter<'_, Hash>,
    ) -> Result<Hash, String> {
        let end = start + leaves.len() as u64;
        if hi <= start || lo >= end {
            return outside.next().copied().ok_or_else(|| "proof.json has too few hashes".to_string());
        }
        if hi - lo == 1 {
            return Ok(leaves[(lo - start) as usize]);
        }
        let k = split(hi - lo);
        let left = walk(lo, lo + k, start, leaves, outside)?;
        let right = walk(lo + k, hi, start, leaves, outside)?;
        Ok(merkle::node_hash(&left, &right))
    }
    if leaves.is_empty() || size == 0 || start.checked_add(leaves.len() as u64).is_none_or(|end| end > size) {
        return Err(format!("{} leaves from entry {start} do not fit in a tree of {size}", leaves.len()));
    }
    let mut iter = outside.iter();
    let root = walk(0, size, start, leaves, &mut iter)?;
    if iter.next().is_some() {
        return Err("proof.json has more hashes than the tree needs".into());
    }
    Ok(root)
}

/// Every file of a bundle except the manifest, sorted, with its BLAKE3: what the manifest
/// lists. Paths are `/`-separated and relative to `dir`.
pub fn manifest_files(dir: &Path) -> Result<Vec<ManifestFile>, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<ManifestFile>) -> Result<(), String> {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| format!("{prefix}{}: file name is not UTF-8", n.to_string_lossy()))?;
            let path = format!("{prefix}{name}");
            let kind = entry.file_type().map_err(|e| format!("{path}: {e}"))?;
            if kind.is_dir() {
                walk(&entry.path(), &format!("{path}/"), out)?;
            } else if kind.is_file() {
                if path != MANIFEST {
                    let bytes =
                        std::fs::read(entry.path()).map_err(|e| format!("cannot read {path}: {e}"))?;
                    out.push(ManifestFile { path, blake3: blake3::hash(&bytes).to_hex().to_string() });
                }
            } else {
                return Err(format!("{path} is not a regular file or directory"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Parses 64 lowercase hex digits.
pub fn parse_hash(text: &str) -> Option<Hash> {
    parse_hex(text)?.try_into().ok()
}

/// Parses lowercase hex (an even number of `0-9a-f` digits).
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_export_column_is_a_field() {
        assert_eq!(EVENT_FIELDS.len(), ledger_query::DEFAULT_COLUMNS.len());
        assert_eq!(event_columns().len(), EVENT_FIELDS.len() + 1);
    }

    #[test]
    fn range_proofs_rebuild_every_root() {
        for size in 1..40u64 {
            let leaves: Vec<Hash> = (0..size).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
            let root = merkle::root_from_leaf_hashes(&leaves);
            for start in 0..size {
                for end in start + 1..=size {
                    // The outside hashes come from the two inclusion paths, as export takes them.
                    let mut known = std::collections::HashMap::new();
                    for m in [start, end - 1] {
                        for (lo, hi) in inclusion_ranges(m, size) {
                            let sub = merkle::root_from_leaf_hashes(&leaves[lo as usize..hi as usize]);
                            known.insert((lo, hi), sub);
                        }
                    }
                    let outside: Vec<Hash> =
                        outside_subtrees(size, start, end).iter().map(|r| known[r]).collect();
                    let rebuilt = rebuild_root(size, start, &leaves[start as usize..end as usize], &outside);
                    assert_eq!(rebuilt, Ok(root), "size {size} range {start}..{end}");
                }
            }
        }
    }

    #[test]
    fn framing_round_trips_and_reports_truncation() {
        let mut bytes = Vec::new();
        frame_leaf(&mut bytes, b"abc").expect("frame");
        frame_leaf(&mut bytes, b"").expect("frame");
        let all = |bytes: &[u8]| -> Result<Vec<Vec<u8>>, String> {
            let mut reader = LeafReader::new(bytes);
            let mut leaves = Vec::new();
            while let Some(leaf) = reader.next_leaf()? {
                leaves.push(leaf.to_vec());
            }
            Ok(leaves)
        };
        assert_eq!(all(&bytes), Ok(vec![b"abc".to_vec(), Vec::new()]));
        for cut in 1..bytes.len() {
            if cut != 7 {
                assert!(all(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        let forged = [0xff, 0xff, 0xff, 0xff, 1, 2];
        assert!(all(&forged).is_err_and(|e| e.contains("claims 4294967295 bytes, only 2 remain")));
    }
}
