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

fn varint(b: &[u8], at: &mut usize) -> Result<u64, BadEntry> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or_else(|| BadEntry("cut inside a number".into()))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(BadEntry("a number longer than 10 bytes".into()))
}

impl<'a> StoredEntry<'a> {
    /// Parses canonical leaf bytes (see the module docs).
    pub fn parse(bytes: &'a [u8]) -> Result<StoredEntry<'a>, BadEntry> {
        let mut e = StoredEntry { bytes, ..StoredEntry::default() };
        let mut at = 0usize;
        let mut last = 0u64;
        while at < bytes.len() {
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
                let end = at.checked_add(len).filter(|e| *e <= bytes.len());
                let raw =
                    end.map(|end| &bytes[at..end]).ok_or_else(|| BadEntry(format!("field {field} cut")))?;
                at += len;
                let s =
                    std::str::from_utf8(raw).map_err(|_| BadEntry(format!("field {field} is not UTF-8")))?;
                match field {
                    4 => e.agent = s,
                    5 => e.agent_id = s,
                    6 => e.session = s,
                    7 => e.action = s,
                    8 => e.tool = s,
                    9 => e.params = s,
                    11 => e.rule = s,
                    13 => e.reason = s,
                    17 => e.host = s,
                    19 => e.flags.push(s),
                    20 => e.policy_check = s,
                    21 => e.shim_id = s,
                    _ => e.details = s,
                }
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

    #[test]
    fn bytes_prost_would_not_write_are_refused_without_panicking() {
        let bytes = encode(&full());
        for cut in 0..bytes.len() {
            let _ = StoredEntry::parse(&bytes[..cut]);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = StoredEntry::parse(&b);
        }
        assert!(StoredEntry::parse(&[0xff; 11]).is_err(), "an over-long number");
        assert!(StoredEntry::parse(&[(30 << 3) as u8, 1]).is_err(), "an unknown field");
        assert!(StoredEntry::parse(&[(4 << 3) as u8, 0]).is_err(), "a string as a number");
        assert!(StoredEntry::parse(&[(4 << 3 | 2) as u8, 2, 0xc3, 0x28]).is_err(), "not UTF-8");
        assert!(StoredEntry::parse(&[(2 << 3) as u8, 1, (1 << 3) as u8, 1]).is_err(), "out of order");
    }
}
