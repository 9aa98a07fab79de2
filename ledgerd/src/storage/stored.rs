//! The stored form of an entry (storage formats 3 and 4): its canonical leaf bytes, exactly what
//! the Merkle leaf hashes (`ledger_proto::leaf`), read in place.
//!
//! [`StoredEntry::parse`] walks the protobuf fields once and borrows every string from the
//! bytes (no allocation unless the entry has flags), so scans cost about what rkyv's
//! checked access did, while the bytes on disk are the entry's own size and a stored
//! entry's leaf hash is the hash of its stored bytes. Parsing refuses what prost would not
//! have written for an `Entry`: unknown fields, fields out of order, wrong wire types,
//! strings that are not UTF-8.

use ledger_proto::{leaf, pb};

/// Why stored bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stored entry: {0}")]
pub struct BadEntry(pub String);

/// A stored entry, its strings borrowed from its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredEntry<'a> {
    /// The canonical leaf bytes this was parsed from.
    pub bytes: &'a [u8],
    pub seq: u64,
    pub time_unix_nanos: i64,
    pub kind: i32,
    pub agent: &'a str,
    pub agent_id: &'a str,
    pub session: &'a str,
    pub action: &'a str,
    pub tool: &'a str,
    pub params: &'a str,
    pub decision: i32,
    pub rule: &'a str,
    pub policy_version: u64,
    pub reason: &'a str,
    pub writer_uid: u32,
    pub writer_gid: u32,
    pub writer_pid: u32,
    pub host: &'a str,
    pub severity: u32,
    pub flags: Vec<&'a str>,
    pub policy_check: &'a str,
    pub shim_id: &'a str,
    pub shim_seq: u64,
    pub ref_seq: Option<u64>,
    pub details: &'a str,
}

/// Why a number could not be read: small, so a read returns in registers.
#[derive(Debug, Clone, Copy)]
enum BadNumber {
    Cut,
    TooLong,
}

impl From<BadNumber> for BadEntry {
    fn from(e: BadNumber) -> BadEntry {
        BadEntry(
            match e {
                BadNumber::Cut => "cut inside a number",
                BadNumber::TooLong => "a number longer than 10 bytes",
            }
            .into(),
        )
    }
}

#[inline(always)]
fn varint(b: &[u8], at: &mut usize) -> Result<u64, BadNumber> {
    // Most numbers (tags, lengths, small values) are one byte.
    if let Some(&byte) = b.get(*at)
        && byte < 0x80
    {
        *at += 1;
        return Ok(u64::from(byte));
    }
    varint_long(b, at)
}

fn varint_long(b: &[u8], at: &mut usize) -> Result<u64, BadNumber> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(BadNumber::Cut)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(BadNumber::TooLong)
}

/// The highest field number of `Entry`.
const FIELDS: usize = 24;

/// A stored entry walked once, its numbers read and its strings only located: a string's
/// UTF-8 is checked when it is read ([`LazyEntry::str`]). A scan that looks at two fields
/// of an entry so checks two strings, not fourteen. Everything else
/// [`StoredEntry::parse`] refuses (unknown fields, order, wire types, lengths, ranges) is
/// refused here too; a string found not to be UTF-8 reads as empty and is remembered, so
/// the reader can fail with [`LazyEntry::check`].
#[derive(Debug, Clone, Default)]
pub struct LazyEntry<'a> {
    /// The canonical leaf bytes.
    pub bytes: &'a [u8],
    pub seq: u64,
    pub time_unix_nanos: i64,
    pub kind: i32,
    pub decision: i32,
    pub policy_version: u64,
    pub writer_uid: u32,
    pub writer_gid: u32,
    pub writer_pid: u32,
    pub severity: u32,
    pub shim_seq: u64,
    pub ref_seq: Option<u64>,
    /// Where each string field's bytes are (by field number; `(0, 0)` when unset).
    spans: [(u32, u32); FIELDS + 1],
    /// The bytes holding every `flags` element (field 19, tags and lengths included).
    flags: (u32, u32),
    /// The first string field read that is not UTF-8.
    bad: std::cell::Cell<Option<u64>>,
}

impl<'a> LazyEntry<'a> {
    /// Walks canonical leaf bytes (see the type's docs).
    pub fn parse(bytes: &'a [u8]) -> Result<LazyEntry<'a>, BadEntry> {
        if u32::try_from(bytes.len()).is_err() {
            return Err(BadEntry("over 4 GiB".into()));
        }
        let mut e = LazyEntry { bytes, ..LazyEntry::default() };
        let mut at = 0usize;
        let mut last = 0u64;
        while at < bytes.len() {
            let tag_at = at;
            let tag = varint(bytes, &mut at)?;
            let (field, wire) = (tag >> 3, tag & 7);
            if field < last || (field == last && field != 19) {
                return Err(BadEntry(format!("field {field} after field {last}")));
            }
            last = field;
            let string = matches!(field, 4..=9 | 11 | 13 | 17 | 19 | 20 | 21 | 24);
            if wire != if string { 2 } else { 0 } {
                return Err(BadEntry(format!("field {field} has wire type {wire}")));
            }
            if string {
                let len = varint(bytes, &mut at)? as usize;
                let end = at
                    .checked_add(len)
                    .filter(|e| *e <= bytes.len())
                    .ok_or_else(|| BadEntry(format!("field {field} cut")))?;
                if field == 19 {
                    if e.flags == (0, 0) {
                        e.flags.0 = tag_at as u32;
                    }
                    e.flags.1 = end as u32;
                } else {
                    e.spans[field as usize] = (at as u32, end as u32);
                }
                at = end;
                continue;
            }
            let v = varint(bytes, &mut at)?;
            let narrow =
                |v: u64| u32::try_from(v).map_err(|_| BadEntry(format!("field {field} out of range")));
            match field {
                1 => e.seq = v,
                2 => e.time_unix_nanos = v as i64,
                3 => e.kind = v as i64 as i32,
                10 => e.decision = v as i64 as i32,
                12 => e.policy_version = v,
                14 => e.writer_uid = narrow(v)?,
                15 => e.writer_gid = narrow(v)?,
                16 => e.writer_pid = narrow(v)?,
                18 => e.severity = narrow(v)?,
                22 => e.shim_seq = v,
                23 => e.ref_seq = Some(v),
                _ => return Err(BadEntry(format!("unknown field {field}"))),
            }
        }
        Ok(e)
    }

    fn utf8(&self, field: u64, raw: &'a [u8]) -> Result<&'a str, BadEntry> {
        std::str::from_utf8(raw).map_err(|_| BadEntry(format!("field {field} is not UTF-8")))
    }

    /// String field `field` (4 agent, 5 agent_id, … as in `ledger.v1.Entry`), or `Err`
    /// when it is not UTF-8.
    pub fn try_str(&self, field: u64) -> Result<&'a str, BadEntry> {
        let (a, b) = self.spans.get(field as usize).copied().unwrap_or_default();
        self.utf8(field, &self.bytes[a as usize..b as usize])
    }

    /// String field `field`; empty when it is not UTF-8, which [`LazyEntry::check`] then
    /// reports.
    pub fn str(&self, field: u64) -> &'a str {
        self.try_str(field).unwrap_or_else(|_| {
            if self.bad.get().is_none() {
                self.bad.set(Some(field));
            }
            ""
        })
    }

    /// The `flags` elements, or `Err` when one is not UTF-8.
    pub fn try_flags(&self) -> Result<Vec<&'a str>, BadEntry> {
        let (mut at, end) = (self.flags.0 as usize, self.flags.1 as usize);
        let mut out = Vec::new();
        while at < end {
            // Checked by `parse`: a tag of field 19, a length, the bytes.
            varint(self.bytes, &mut at)?;
            let len = varint(self.bytes, &mut at)? as usize;
            let raw = self.bytes.get(at..at + len).ok_or_else(|| BadEntry("field 19 cut".into()))?;
            out.push(self.utf8(19, raw)?);
            at += len;
        }
        Ok(out)
    }

    /// The `flags` elements; none when one is not UTF-8, which [`LazyEntry::check`]
    /// then reports.
    pub fn flags(&self) -> Vec<&'a str> {
        self.try_flags().unwrap_or_else(|_| {
            if self.bad.get().is_none() {
                self.bad.set(Some(19));
            }
            Vec::new()
        })
    }

    /// `Err` if a string read so far was not UTF-8.
    pub fn check(&self) -> Result<(), BadEntry> {
        match self.bad.get() {
            None => Ok(()),
            Some(field) => Err(BadEntry(format!("field {field} is not UTF-8"))),
        }
    }
}

impl<'a> StoredEntry<'a> {
    /// Parses canonical leaf bytes (see the module docs), every string checked.
    pub fn parse(bytes: &'a [u8]) -> Result<StoredEntry<'a>, BadEntry> {
        let l = LazyEntry::parse(bytes)?;
        Ok(StoredEntry {
            bytes,
            seq: l.seq,
            time_unix_nanos: l.time_unix_nanos,
            kind: l.kind,
            agent: l.try_str(4)?,
            agent_id: l.try_str(5)?,
            session: l.try_str(6)?,
            action: l.try_str(7)?,
            tool: l.try_str(8)?,
            params: l.try_str(9)?,
            decision: l.decision,
            rule: l.try_str(11)?,
            policy_version: l.policy_version,
            reason: l.try_str(13)?,
            writer_uid: l.writer_uid,
            writer_gid: l.writer_gid,
            writer_pid: l.writer_pid,
            host: l.try_str(17)?,
            severity: l.severity,
            flags: l.try_flags()?,
            policy_check: l.try_str(20)?,
            shim_id: l.try_str(21)?,
            shim_seq: l.shim_seq,
            ref_seq: l.ref_seq,
            details: l.try_str(24)?,
        })
    }

    /// The wire entry.
    pub fn to_entry(&self) -> pb::Entry {
        pb::Entry {
            seq: self.seq,
            time_unix_nanos: self.time_unix_nanos,
            kind: self.kind,
            agent: self.agent.into(),
            agent_id: self.agent_id.into(),
            session: self.session.into(),
            action: self.action.into(),
            tool: self.tool.into(),
            params: self.params.into(),
            decision: self.decision,
            rule: self.rule.into(),
            policy_version: self.policy_version,
            reason: self.reason.into(),
            writer_uid: self.writer_uid,
            writer_gid: self.writer_gid,
            writer_pid: self.writer_pid,
            host: self.host.into(),
            severity: self.severity,
            flags: self.flags.iter().map(|f| f.to_string()).collect(),
            policy_check: self.policy_check.into(),
            shim_id: self.shim_id.into(),
            shim_seq: self.shim_seq,
            ref_seq: self.ref_seq,
            details: self.details.into(),
        }
    }

    /// The Merkle leaf hash of the stored bytes.
    pub fn leaf_hash(&self) -> ledger_proto::merkle::Hash {
        ledger_proto::merkle::leaf_hash(self.bytes)
    }
}

/// The stored bytes of `entry`: its canonical leaf bytes.
pub fn encode(entry: &pb::Entry) -> Vec<u8> {
    leaf::leaf_bytes(entry)
}

/// Runs `f` on the entry stored in `bytes`.
pub fn with_entry<T>(bytes: &[u8], f: impl FnOnce(&StoredEntry<'_>) -> T) -> Result<T, BadEntry> {
    Ok(f(&StoredEntry::parse(bytes)?))
}

/// Decodes stored bytes into the wire entry.
pub fn decode_entry(bytes: &[u8]) -> Result<pb::Entry, BadEntry> {
    with_entry(bytes, |e| e.to_entry())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> pb::Entry {
        pb::Entry {
            seq: 300,
            time_unix_nanos: -5,
            kind: pb::Kind::Decision as i32,
            agent: "ops-bot".into(),
            agent_id: "ag-1".into(),
            session: "s".into(),
            action: "read".into(),
            tool: "fs.read".into(),
            params: r#"{"path":"/etc/passwd","é":1}"#.into(),
            decision: pb::Decision::Deny as i32,
            rule: "r".into(),
            policy_version: 3,
            reason: "why".into(),
            writer_uid: u32::MAX,
            writer_gid: 7,
            writer_pid: 9,
            host: "h".into(),
            severity: 10,
            flags: vec!["deny_burst".into(), "first_use".into()],
            policy_check: "mismatch".into(),
            shim_id: "shim".into(),
            shim_seq: 1 << 40,
            ref_seq: Some(0),
            details: "{}".into(),
        }
    }

    #[test]
    fn every_field_reads_back_in_place() {
        for entry in
            [full(), pb::Entry::default(), pb::Entry { kind: -1, decision: -7, ..pb::Entry::default() }]
        {
            let bytes = encode(&entry);
            let stored = StoredEntry::parse(&bytes).expect("parse");
            assert_eq!(stored.to_entry(), entry);
            assert_eq!(stored.leaf_hash(), leaf::entry_leaf_hash(&entry));
        }
    }

    /// Issue 17: a scan checks only the strings it reads, and a bad one still fails it.
    #[test]
    fn lazy_entries_check_strings_when_read() {
        let bytes = encode(&full());
        let lazy = LazyEntry::parse(&bytes).expect("parse");
        assert_eq!(
            (lazy.str(4), lazy.str(9), lazy.flags()),
            ("ops-bot", full().params.as_str(), vec!["deny_burst", "first_use"])
        );
        assert!(lazy.check().is_ok());
        let at = bytes.windows(6).position(|w| w == b"passwd").expect("params");
        let mut bad = bytes.clone();
        bad[at] = 0xff;
        assert!(StoredEntry::parse(&bad).is_err(), "a full parse checks every string");
        let lazy = LazyEntry::parse(&bad).expect("the structure is whole");
        assert_eq!(lazy.str(4), "ops-bot");
        assert!(lazy.check().is_ok(), "params not read yet");
        assert_eq!(lazy.str(9), "");
        assert!(lazy.check().is_err(), "params read: not UTF-8");
        let flag = bytes.windows(10).position(|w| w == b"deny_burst").expect("flag");
        let mut bad = bytes.clone();
        bad[flag] = 0xc3;
        let lazy = LazyEntry::parse(&bad).expect("the structure is whole");
        assert!(lazy.flags().is_empty() && lazy.check().is_err());
    }

    #[test]
    fn bytes_prost_would_not_write_are_refused_without_panicking() {
        let bytes = encode(&full());
        for cut in 0..bytes.len() {
            let _ = StoredEntry::parse(&bytes[..cut]);
            assert_eq!(LazyEntry::parse(&bytes[..cut]).is_ok(), StoredEntry::parse(&bytes[..cut]).is_ok());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = StoredEntry::parse(&b);
            if let Ok(lazy) = LazyEntry::parse(&b) {
                let _ = (lazy.str(9), lazy.flags(), lazy.check());
            }
        }
        assert!(StoredEntry::parse(&[0xff; 11]).is_err(), "an over-long number");
        assert!(StoredEntry::parse(&[(30 << 3) as u8, 1]).is_err(), "an unknown field");
        assert!(StoredEntry::parse(&[(4 << 3) as u8, 0]).is_err(), "a string as a number");
        assert!(StoredEntry::parse(&[(4 << 3 | 2) as u8, 2, 0xc3, 0x28]).is_err(), "not UTF-8");
        assert!(StoredEntry::parse(&[(2 << 3) as u8, 1, (1 << 3) as u8, 1]).is_err(), "out of order");
    }
}
