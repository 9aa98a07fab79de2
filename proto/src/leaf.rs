//! The canonical leaf bytes of an entry: its protobuf encoding exactly as prost writes it.
//!
//! prost writes fields in field-number order, omits fields that hold their default value,
//! and writes no unknown fields; `Entry` has no map fields (whose order would not be
//! fixed). Encoding the same `Entry` therefore always gives the same bytes, in any process,
//! and any protobuf implementation that follows those rules reproduces them.

use prost::Message;

use crate::merkle::{self, Hash};
use crate::pb::Entry;

/// The canonical leaf bytes of `entry`.
pub fn leaf_bytes(entry: &Entry) -> Vec<u8> {
    entry.encode_to_vec()
}

/// The Merkle leaf hash of `entry`: `BLAKE3(0x00 ‖ leaf bytes)`.
pub fn entry_leaf_hash(entry: &Entry) -> Hash {
    merkle::leaf_hash(&leaf_bytes(entry))
}

/// Decodes canonical leaf bytes, refusing bytes that are not exactly what prost would
/// write for the decoded entry (unknown fields, non-canonical varints, fields out of order),
/// so that one entry has one leaf and one hash.
pub fn decode_canonical(bytes: &[u8]) -> Result<Entry, LeafError> {
    let entry = Entry::decode(bytes).map_err(|e| LeafError::Decode(e.to_string()))?;
    if entry.encode_to_vec() != bytes {
        return Err(LeafError::NotCanonical);
    }
    Ok(entry)
}

/// Why leaf bytes were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeafError {
    #[error("leaf bytes are not a valid ledger.v1.Entry: {0}")]
    Decode(String),
    #[error("leaf bytes decode, but are not the canonical encoding of the entry they hold")]
    NotCanonical,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Decision, Kind};

    #[test]
    fn encoding_round_trips_and_is_canonical() {
        let entry = Entry {
            seq: 7,
            time_unix_nanos: 1_764_221_976_000_000_000,
            kind: Kind::Decision as i32,
            agent: "billing-bot".into(),
            tool: "db.query".into(),
            params: r#"{"sql":"select 1"}"#.into(),
            decision: Decision::Allow as i32,
            flags: vec!["first_use".into()],
            ref_seq: Some(0),
            ..Default::default()
        };
        let bytes = leaf_bytes(&entry);
        assert_eq!(decode_canonical(&bytes), Ok(entry.clone()));
        assert_eq!(entry_leaf_hash(&entry), merkle::leaf_hash(&bytes));
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let entry = Entry { seq: 1, ..Default::default() };
        let mut bytes = leaf_bytes(&entry);
        // The same field again: protobuf decoders accept it (last one wins), we must not.
        bytes.extend_from_slice(&[0x08, 0x01]);
        assert_eq!(decode_canonical(&bytes), Err(LeafError::NotCanonical));
    }
}
