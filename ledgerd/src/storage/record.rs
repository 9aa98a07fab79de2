//! The stored form of an entry in storage formats 1 and 2: an rkyv archive. Format 3
//! stores the canonical leaf bytes instead (see [`crate::storage::stored`]); this is kept to read
//! older data dirs while they are moved over (`store::migrate_to_segments`).
//!
//! `Record` mirrors `ledger.v1.Entry` field for field, so converting it back gives the
//! same `Entry` and therefore the same canonical leaf bytes (see `ledger_proto::leaf`).
//! The layout is versioned by [`FORMAT_VERSION`], kept in the `meta` tree.

use ledger_proto::pb;
use rkyv::rancor;
use rkyv::util::AlignedVec;

/// Bumped whenever [`Record`]'s layout changes.
/// 1: one entry per key in the tree `entries`; 2: entries in blocks in the tree `blocks`
/// (see `crate::storage::blocks`); 3: canonical leaf bytes in segment files (see `crate::storage::segments`
/// and `crate::storage::stored`; formats 1 and 2 are moved over on open); 4: the same
/// segments, the newest with a pre-zeroed tail (format 3 is recorded as 4 on open).
pub const FORMAT_VERSION: u32 = 4;

/// One entry as it is kept on disk (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Record {
    pub seq: u64,
    pub time_unix_nanos: i64,
    pub kind: i32,
    pub agent: String,
    pub agent_id: String,
    pub session: String,
    pub action: String,
    pub tool: String,
    pub params: String,
    pub decision: i32,
    pub rule: String,
    pub policy_version: u64,
    pub reason: String,
    pub writer_uid: u32,
    pub writer_gid: u32,
    pub writer_pid: u32,
    pub host: String,
    pub severity: u32,
    pub flags: Vec<String>,
    pub policy_check: String,
    pub shim_id: String,
    pub shim_seq: u64,
    pub ref_seq: Option<u64>,
    pub details: String,
}

impl From<pb::Entry> for Record {
    fn from(e: pb::Entry) -> Self {
        Record {
            seq: e.seq,
            time_unix_nanos: e.time_unix_nanos,
            kind: e.kind,
            agent: e.agent,
            agent_id: e.agent_id,
            session: e.session,
            action: e.action,
            tool: e.tool,
            params: e.params,
            decision: e.decision,
            rule: e.rule,
            policy_version: e.policy_version,
            reason: e.reason,
            writer_uid: e.writer_uid,
            writer_gid: e.writer_gid,
            writer_pid: e.writer_pid,
            host: e.host,
            severity: e.severity,
            flags: e.flags,
            policy_check: e.policy_check,
            shim_id: e.shim_id,
            shim_seq: e.shim_seq,
            ref_seq: e.ref_seq,
            details: e.details,
        }
    }
}

impl ArchivedRecord {
    /// The wire/leaf form of this stored entry.
    pub fn to_entry(&self) -> pb::Entry {
        pb::Entry {
            seq: self.seq.to_native(),
            time_unix_nanos: self.time_unix_nanos.to_native(),
            kind: self.kind.to_native(),
            agent: self.agent.to_string(),
            agent_id: self.agent_id.to_string(),
            session: self.session.to_string(),
            action: self.action.to_string(),
            tool: self.tool.to_string(),
            params: self.params.to_string(),
            decision: self.decision.to_native(),
            rule: self.rule.to_string(),
            policy_version: self.policy_version.to_native(),
            reason: self.reason.to_string(),
            writer_uid: self.writer_uid.to_native(),
            writer_gid: self.writer_gid.to_native(),
            writer_pid: self.writer_pid.to_native(),
            host: self.host.to_string(),
            severity: self.severity.to_native(),
            flags: self.flags.iter().map(|f| f.to_string()).collect(),
            policy_check: self.policy_check.to_string(),
            shim_id: self.shim_id.to_string(),
            shim_seq: self.shim_seq.to_native(),
            ref_seq: self.ref_seq.as_ref().map(|s| s.to_native()),
            details: self.details.to_string(),
        }
    }
}

/// Serializes a record for storage.
pub fn encode(record: &Record) -> Result<AlignedVec, rancor::BoxedError> {
    // Sized up front: growing the buffer while serializing was a visible share of the
    // writer thread's time. Strings take their length plus an 8-byte header at most.
    let strings = [
        &record.agent,
        &record.agent_id,
        &record.session,
        &record.action,
        &record.tool,
        &record.params,
        &record.rule,
        &record.reason,
        &record.host,
        &record.policy_check,
        &record.shim_id,
        &record.details,
    ];
    let text = strings.iter().map(|s| s.len() + 8).sum::<usize>()
        + record.flags.iter().map(|f| f.len() + 8).sum::<usize>();
    let capacity = (text + 160).next_multiple_of(16);
    rkyv::api::high::to_bytes_in::<_, rancor::BoxedError>(record, AlignedVec::<16>::with_capacity(capacity))
}

/// Runs `f` on the archived record in `bytes`, validating it first.
///
/// sled hands out values whose alignment is an accident of its allocator, and rkyv's
/// checked access refuses misaligned input, so misaligned bytes are copied first.
pub fn with_archived<T>(bytes: &[u8], f: impl FnOnce(&ArchivedRecord) -> T) -> Result<T, rancor::BoxedError> {
    let align = std::mem::align_of::<ArchivedRecord>();
    if (bytes.as_ptr() as usize).is_multiple_of(align) {
        let archived = rkyv::access::<ArchivedRecord, rancor::BoxedError>(bytes)?;
        Ok(f(archived))
    } else {
        let mut copy = AlignedVec::<16>::with_capacity(bytes.len());
        copy.extend_from_slice(bytes);
        let archived = rkyv::access::<ArchivedRecord, rancor::BoxedError>(&copy)?;
        Ok(f(archived))
    }
}

/// Decodes stored bytes back into the wire entry.
pub fn decode_entry(bytes: &[u8]) -> Result<pb::Entry, rancor::BoxedError> {
    with_archived(bytes, ArchivedRecord::to_entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_to_the_same_entry() {
        let entry = pb::Entry {
            seq: 42,
            time_unix_nanos: -5,
            kind: pb::Kind::Decision as i32,
            agent: "ops-bot".into(),
            params: r#"{"path":"/etc/passwd"}"#.into(),
            decision: pb::Decision::Deny as i32,
            flags: vec!["deny_burst".into(), "first_use".into()],
            ref_seq: Some(0),
            ..Default::default()
        };
        let bytes = encode(&Record::from(entry.clone())).expect("encode");
        assert_eq!(decode_entry(&bytes).expect("decode"), entry);
        // The same bytes at an odd address must still decode.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode_entry(&shifted[1..]).expect("decode shifted"), entry);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_entry(&[0xff; 7]).is_err());
        assert!(decode_entry(&[]).is_err());
    }
}
