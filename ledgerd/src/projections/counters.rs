//! Hourly counters: for each hour, how many entries there were per `(kind, agent, tool,
//! decision)`, so that `count by agent, bin(time, 1h)` and its like read a few values per
//! hour instead of every entry (see `engine`).
//!
//! Stored in the `counters` tree. Key: the hour (hours since the epoch, i64 big-endian with
//! the sign bit flipped, so keys sort by time) ‖ a part number (u32 BE). Value: one part
//! of that hour's counts (see [`encode`]), for a run of consecutive entries. Readers add up
//! all parts of an hour.
//!
//! The writer keeps the open part in memory and writes it once, when it closes: when the
//! next entry falls in a later hour, or the part has grown to [`PART_BYTES`] or counted
//! [`PART_ENTRIES`] entries. Most commits therefore write nothing here; one per hour (or
//! per 65,536 entries) writes a closed part. The key `[0xff]` (shorter than every hour
//! key) holds [`FORMAT`] ‖ the seq of the first entry not in any stored part (u64 BE),
//! written in the same batch as the parts it follows: the stored parts always count
//! exactly the entries below it. Those past it (the open part's, at most an hour or
//! [`PART_ENTRIES`] of them, plus whatever a crash cut off) are counted again from the log
//! when the log opens. Queries never read the hour of the marker or later ones (see
//! `engine`). With no marker (a data dir from before counters, a cleared tree, another
//! format) the whole log is counted again. Like the agent index, the counters are a
//! projection of the log.

use std::collections::HashMap;

use crate::storage::store::{Store, StoreError};
use crate::storage::stored;

/// One hour in nanoseconds.
pub const HOUR_NS: i64 = 3_600_000_000_000;
/// Layout of the values; a marker with another format makes the counters be rebuilt.
pub const FORMAT: u8 = 1;
/// A part is closed once its encoding would pass this size (sled keeps values under a
/// quarter of its 1 MiB segments in its log, which [`crate::storage::store::Syncer`] syncs).
pub const PART_BYTES: usize = 64 * 1024;
/// A part is closed once it has counted this many entries, which bounds what the log
/// counts again when it opens.
pub const PART_ENTRIES: u64 = 65_536;

const END_KEY: &[u8] = &[0xff];
const KEY_LEN: usize = 12;

/// The hour holding `time` (hours since the epoch, rounded down).
pub fn hour_of(time: i64) -> i64 {
    time.div_euclid(HOUR_NS)
}

fn hour_prefix(hour: i64) -> [u8; 8] {
    ((hour as u64) ^ (1 << 63)).to_be_bytes()
}

fn key(hour: i64, part: u32) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&hour_prefix(hour));
    k[8..].copy_from_slice(&part.to_be_bytes());
    k
}

/// The hour and part of a counters key (`None` for the marker).
fn parse_key(k: &[u8]) -> Option<(i64, u32)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let hour = (u64::from_be_bytes(k[..8].try_into().ok()?) ^ (1 << 63)) as i64;
    Some((hour, u32::from_be_bytes(k[8..].try_into().ok()?)))
}

/// One counted combination, with the strings as indexes into the part's string table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Cell {
    kind: i32,
    decision: i32,
    agent: u32,
    tool: u32,
}

/// The part being written: the open hour's counts since the part began.
#[derive(Debug)]
struct Part {
    hour: i64,
    part: u32,
    /// The seq of its first entry, and how many it has counted.
    first: u64,
    entries: u64,
    strings: Vec<String>,
    ids: HashMap<String, u32>,
    cells: HashMap<Cell, u64>,
    /// About what the encoding takes.
    bytes: usize,
}

impl Part {
    fn new(hour: i64, part: u32, first: u64) -> Part {
        Part {
            hour,
            part,
            first,
            entries: 0,
            strings: Vec::new(),
            ids: HashMap::new(),
            cells: HashMap::new(),
            bytes: 16,
        }
    }

    fn is_full(&self) -> bool {
        self.bytes >= PART_BYTES || self.entries >= PART_ENTRIES
    }

    fn id(&mut self, s: &str) -> u32 {
        if let Some(id) = self.ids.get(s) {
            return *id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        self.bytes += s.len() + 2;
        id
    }

    fn encode(&self) -> Vec<u8> {
        encode(&self.strings, self.cells.iter().map(|(c, n)| (c.kind, c.decision, c.agent, c.tool, *n)))
    }
}

/// Encodes a part: a format byte, the string table (count, then each as length ‖ UTF-8),
/// then the cells (count, then each as kind, decision, agent string, tool string, count).
/// Numbers are LEB128 varints; kind and decision as their `u32` bit pattern.
pub fn encode(
    strings: &[String],
    cells: impl ExactSizeIterator<Item = (i32, i32, u32, u32, u64)>,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + strings.iter().map(|s| s.len() + 2).sum::<usize>() + cells.len() * 8);
    out.push(FORMAT);
    put(&mut out, strings.len() as u64);
    for s in strings {
        put(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    put(&mut out, cells.len() as u64);
    for (kind, decision, agent, tool, n) in cells {
        put(&mut out, u64::from(kind as u32));
        put(&mut out, u64::from(decision as u32));
        put(&mut out, u64::from(agent));
        put(&mut out, u64::from(tool));
        put(&mut out, n);
    }
    out
}

/// Appends `v` as a LEB128 varint (also the agent index's).
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`, moving past it (also the agent index's).
pub(crate) fn get(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// One counted combination of a stored part, with its strings resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted<'a> {
    pub kind: i32,
    pub agent: &'a str,
    pub tool: &'a str,
    pub decision: i32,
    pub count: u64,
}

/// A stored part, read in place: its string table and its cells.
#[derive(Debug)]
pub struct PartView<'a> {
    /// The strings the cells refer to by index.
    pub strings: Vec<&'a str>,
    cells: &'a [u8],
    len: usize,
}

/// A cell of a [`PartView`]: strings as indexes into [`PartView::strings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawCell {
    pub kind: i32,
    pub decision: i32,
    pub agent: u32,
    pub tool: u32,
    pub count: u64,
}

impl<'a> PartView<'a> {
    /// Reads a stored value; `None` if it is not a well-formed part of this format.
    pub fn parse(bytes: &'a [u8]) -> Option<PartView<'a>> {
        if bytes.first() != Some(&FORMAT) {
            return None;
        }
        let mut at = 1;
        let n = usize::try_from(get(bytes, &mut at)?).ok()?;
        let mut strings = Vec::with_capacity(n.min(bytes.len()));
        for _ in 0..n {
            let len = usize::try_from(get(bytes, &mut at)?).ok()?;
            let s = std::str::from_utf8(bytes.get(at..at.checked_add(len)?)?).ok()?;
            strings.push(s);
            at += len;
        }
        let len = usize::try_from(get(bytes, &mut at)?).ok()?;
        Some(PartView { strings, cells: &bytes[at..], len })
    }

    /// The cells; a malformed one ends the iteration early (see [`PartView::len`]).
    pub fn cells(&self) -> impl Iterator<Item = RawCell> + '_ {
        let mut at = 0;
        let n = self.strings.len() as u64;
        (0..self.len).map_while(move |_| {
            let b = self.cells;
            let kind = get(b, &mut at)? as u32 as i32;
            let decision = get(b, &mut at)? as u32 as i32;
            let agent = get(b, &mut at)?;
            let tool = get(b, &mut at)?;
            let count = get(b, &mut at)?;
            (agent < n && tool < n).then_some(RawCell {
                kind,
                decision,
                agent: agent as u32,
                tool: tool as u32,
                count,
            })
        })
    }

    /// The number of cells the part says it holds: [`PartView::cells`] yields fewer
    /// when the part is damaged.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the part holds no cells.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cells with their strings.
    pub fn counted(&self) -> impl Iterator<Item = Counted<'a>> + '_ {
        self.cells().map(|c| Counted {
            kind: c.kind,
            agent: self.strings[c.agent as usize],
            tool: self.strings[c.tool as usize],
            decision: c.decision,
            count: c.count,
        })
    }
}

/// The seq of the first entry that no stored part counts; `None` when there are no
/// counters in this format (never built, cleared, or another format): then they must be
/// rebuilt.
pub fn counted_end(tree: &sled::Tree) -> Result<Option<u64>, sled::Error> {
    Ok(tree.get(END_KEY)?.and_then(|v| match v.as_ref() {
        [FORMAT, end @ ..] => end.try_into().ok().map(u64::from_be_bytes),
        _ => None,
    }))
}

/// The stored parts of hours `from..to`, in order: `(hour, value)`.
pub fn parts(
    tree: &sled::Tree,
    from: i64,
    to: i64,
) -> impl Iterator<Item = Result<(i64, sled::IVec), sled::Error>> + use<> {
    tree.range(key(from, 0)..key(to.max(from), 0)).filter_map(|item| match item {
        Err(e) => Some(Err(e)),
        Ok((k, v)) => parse_key(&k).map(|(hour, _)| Ok((hour, v))),
    })
}

/// The writer's counts not yet stored (see the module docs).
#[derive(Debug, Default)]
pub struct Counters {
    open: Option<Part>,
    /// Parts closed since the last batch: (key, value).
    closed: Vec<([u8; KEY_LEN], Vec<u8>)>,
}

impl Counters {
    /// Counts entry `seq`. Entries must come in seq order, with times that never decrease
    /// (an hour left is never counted again in practice, but would get a new part if it were).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        tree: &sled::Tree,
        seq: u64,
        time: i64,
        kind: i32,
        agent: &str,
        tool: &str,
        decision: i32,
    ) -> Result<(), sled::Error> {
        let hour = hour_of(time);
        if !matches!(&self.open, Some(p) if p.hour == hour && !p.is_full()) {
            self.open_part(tree, hour, seq)?;
        }
        let Some(part) = self.open.as_mut() else { return Ok(()) };
        let cell = Cell { kind, decision, agent: part.id(agent), tool: part.id(tool) };
        let n = part.cells.entry(cell).or_insert_with(|| {
            part.bytes += 8;
            0
        });
        *n += 1;
        part.entries += 1;
        Ok(())
    }

    /// Closes the open part and opens the next part of `hour`, starting at `seq`.
    fn open_part(&mut self, tree: &sled::Tree, hour: i64, seq: u64) -> Result<(), sled::Error> {
        let mut next = None;
        if let Some(old) = self.open.take() {
            if old.entries > 0 {
                self.closed.push((key(old.hour, old.part), old.encode()));
            }
            if old.hour == hour {
                next = Some(old.part + 1);
            }
        }
        let part = match next {
            Some(part) => part,
            None => {
                // The next part number after any of this hour's, pending or stored.
                let pending =
                    self.closed.iter().filter_map(|(k, _)| parse_key(k)).filter(|(h, _)| *h == hour);
                let stored = tree.scan_prefix(hour_prefix(hour)).keys().next_back().transpose()?;
                let stored = stored.and_then(|k| parse_key(&k)).map(|(_, p)| p);
                pending.map(|(_, p)| p).chain(stored).max().map_or(0, |p| p + 1)
            }
        };
        self.open = Some(Part::new(hour, part, seq));
        Ok(())
    }

    /// The writes owed after counting the entries below `end`: the parts closed since the
    /// last batch and the new marker, as one batch; `None` when no part closed (unless
    /// `always`, which writes the marker anyway).
    pub fn take_writes(&mut self, end: u64, always: bool) -> Option<crate::storage::store::Writes> {
        if self.closed.is_empty() && !always {
            return None;
        }
        let mut batch: crate::storage::store::Writes = Vec::with_capacity(self.closed.len() + 1);
        for (k, v) in self.closed.drain(..) {
            batch.push((k.to_vec(), v));
        }
        let first_unstored = self.open.as_ref().map_or(end, |p| p.first);
        let mut marker = [0u8; 9];
        marker[0] = FORMAT;
        marker[1..].copy_from_slice(&first_unstored.to_be_bytes());
        batch.push((END_KEY.to_vec(), marker.to_vec()));
        Some(batch)
    }
}

/// Counts the stored entries `from..to` into `counters` and writes the parts that close
/// (with their marker; the marker always at the end). Returns the number of entries
/// counted. Does not sync.
pub fn catch_up(counters: &mut Counters, store: &Store, from: u64, to: u64) -> Result<u64, StoreError> {
    let tree = &store.counters;
    let mut counted = 0;
    store.scan(from, to, |seq, bytes| {
        stored::with_entry(bytes, |r| {
            counters.add(tree, seq, r.time_unix_nanos, r.kind, r.agent, r.tool, r.decision)
        })
        .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })??;
        counted += 1;
        if let Some(batch) = counters.take_writes(seq + 1, false) {
            crate::storage::store::write_in_order(tree, batch)?;
        }
        Ok(true)
    })?;
    if let Some(batch) = counters.take_writes(to, true) {
        crate::storage::store::write_in_order(tree, batch)?;
    }
    Ok(counted)
}

/// Removes every counter, the marker first: a crash halfway leaves no marker, so the
/// counters are rebuilt rather than trusted.
pub fn clear(tree: &sled::Tree) -> Result<(), sled::Error> {
    tree.remove(END_KEY)?;
    tree.flush()?;
    tree.clear()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(tree: &sled::Tree, from: i64, to: i64) -> HashMap<(i64, i32, String, String, i32), u64> {
        let mut out = HashMap::new();
        for item in parts(tree, from, to) {
            let (hour, v) = item.expect("read");
            let view = PartView::parse(&v).expect("well formed");
            assert_eq!(view.cells().count(), view.len());
            for c in view.counted() {
                *out.entry((hour, c.kind, c.agent.to_string(), c.tool.to_string(), c.decision))
                    .or_default() += c.count;
            }
        }
        out
    }

    #[test]
    fn keys_sort_by_hour_and_round_trip() {
        let hours = [i64::MIN / HOUR_NS, -2, -1, 0, 1, 490_896, i64::MAX / HOUR_NS];
        for w in hours.windows(2) {
            assert!(key(w[0], u32::MAX) < key(w[1], 0));
        }
        for h in hours {
            assert_eq!(parse_key(&key(h, 7)), Some((h, 7)));
        }
        assert_eq!(parse_key(END_KEY), None);
        assert_eq!((hour_of(-1), hour_of(0), hour_of(HOUR_NS)), (-1, 0, 1));
    }

    #[test]
    fn parts_encode_and_decode() {
        let strings = vec!["a".to_string(), "é/ü".to_string(), String::new()];
        let cells = vec![(1, 2, 0, 1, 5u64), (-3, 0, 2, 2, u64::MAX), (10, 1, 1, 0, 300)];
        let bytes = encode(&strings, cells.clone().into_iter());
        let view = PartView::parse(&bytes).expect("parse");
        let back: Vec<_> = view.cells().map(|c| (c.kind, c.decision, c.agent, c.tool, c.count)).collect();
        assert_eq!(back, cells);
        // Truncated or foreign bytes are refused, not misread.
        for cut in 0..bytes.len() {
            let ok = PartView::parse(&bytes[..cut]).is_some_and(|v| v.cells().count() == v.len());
            assert!(!ok, "a prefix of {cut} bytes passed");
        }
        assert!(PartView::parse(&[2, 0, 0]).is_none());
    }

    #[test]
    fn stored_parts_count_exactly_the_entries_below_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let tree = db.open_tree("counters").expect("tree");
        type Key = (i64, i32, String, String, i32);
        let mut log: Vec<Key> = Vec::new();
        let expected_below = |log: &[Key], end: u64| {
            let mut out: HashMap<Key, u64> = HashMap::new();
            for k in &log[..end as usize] {
                *out.entry(k.clone()).or_default() += 1;
            }
            out
        };
        let mut counters = Counters::default();
        let mut time = 5 * HOUR_NS - 7;
        let (mut writes, mut seq) = (0, 0u64);
        for round in 0..3 {
            for i in 0..100_000u64 {
                // Many distinct tools in hour 6 fill parts by size; hour 20 is long enough
                // to fill one by entries.
                time += if hour_of(time) == 20 { 10_000_000 } else { (i % 3) as i64 * 1_000_000_000 };
                let agent = format!("agent-{}", i % 7);
                let tool = if hour_of(time) == 6 { format!("tool-{i}") } else { "t".into() };
                let (kind, decision) = ((i % 3) as i32, (i % 2) as i32 + 1);
                counters.add(&tree, seq, time, kind, &agent, &tool, decision).expect("add");
                log.push((hour_of(time), kind, agent, tool, decision));
                seq += 1;
                let batch = if i % 777 == 0 { counters.take_writes(seq, false) } else { None };
                if let Some(batch) = batch {
                    crate::storage::store::write_in_order(&tree, batch).expect("write");
                    writes += 1;
                }
            }
            if let Some(batch) = counters.take_writes(seq, true) {
                crate::storage::store::write_in_order(&tree, batch).expect("write");
            }
            let end = counted_end(&tree).expect("marker").expect("a marker");
            assert!(end <= seq && seq - end <= PART_ENTRIES, "the open part is at most one part behind");
            assert_eq!(
                sum(&tree, i64::MIN / HOUR_NS, i64::MAX / HOUR_NS),
                expected_below(&log, end),
                "round {round}"
            );
            // A restart: a fresh writer counts the entries past the marker again, into new parts.
            counters = Counters::default();
            seq = end;
            log.truncate(end as usize);
        }
        assert!(writes < 200, "parts are written when they close, not at every batch ({writes} writes)");
        let parts_of = |h: i64| tree.scan_prefix(hour_prefix(h)).count();
        assert!(parts_of(6) >= 2 && parts_of(20) >= 2, "hours 6 and 20 should have split into parts");
        // Only hours in range are read.
        let seven = sum(&tree, 7, 8);
        assert!(!seven.is_empty() && seven.keys().all(|k| k.0 == 7));
        assert!(sum(&tree, 7, 7).is_empty() && sum(&tree, 7, 3).is_empty());
        clear(&tree).expect("clear");
        assert_eq!((counted_end(&tree).expect("marker"), tree.len()), (None, 0));
    }
}
