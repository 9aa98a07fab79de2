//! Checks what a daemon returns against signed checkpoints: inclusion proofs, and the
//! whole log (every leaf recomputed from its entry, the root, pinned earlier checkpoints).
//!
//! Nothing here trusts the daemon: hashes are recomputed from entry contents, and the only
//! thing taken as given is the verifier key.

use ledger_proto::merkle::{self, CompactRange, Hash};
use ledger_proto::note::{Checkpoint, NoteVerifier};
use ledger_proto::{leaf, pb};

/// The first thing that did not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Failure {
    #[error("checkpoint signature: {0}")]
    Signature(String),
    #[error(
        "entry {seq}: its contents hash to {actual}, but the ledger's tree holds {stored}: entry {seq} was changed after it was written"
    )]
    LeafChanged { seq: u64, actual: String, stored: String },
    #[error("expected entry {expected} next, got {got}: the log has a gap or is out of order")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("the log ended after {got} entries, but the checkpoint covers {size}")]
    Short { got: u64, size: u64 },
    #[error(
        "the root recomputed from {size} entries is {actual}, but the signed checkpoint says {signed}: the log does not match its checkpoint"
    )]
    RootMismatch { size: u64, actual: String, signed: String },
    #[error(
        "pinned checkpoint {name} is for {pinned} entries, but the log now has {size}: entries were removed (the log was truncated or rolled back)"
    )]
    PinnedBeyond { name: String, pinned: u64, size: u64 },
    #[error(
        "pinned checkpoint {name} (size {size}) has root {signed}, but the log's first {size} entries hash to {actual}: entries it covers were changed or removed"
    )]
    PinnedMismatch { name: String, size: u64, actual: String, signed: String },
    #[error(
        "consistency proof from pinned checkpoint {name} (size {old}) to size {new} does not verify: {why}"
    )]
    Inconsistent { name: String, old: u64, new: u64, why: String },
    #[error("inclusion proof for entry {seq} does not verify against the checkpoint (size {size}): {why}")]
    Inclusion { seq: u64, size: u64, why: String },
    #[error("the daemon returned a malformed answer: {0}")]
    Malformed(String),
}

pub use ledger_proto::hex;

/// Verifies a signed note and parses its checkpoint.
pub fn checkpoint(verifier: &NoteVerifier, note: &str) -> Result<Checkpoint, Failure> {
    verifier.verify_checkpoint(note).map_err(|e| Failure::Signature(e.to_string()))
}

fn hash_from(bytes: &[u8], what: &str) -> Result<Hash, Failure> {
    bytes.try_into().map_err(|_| Failure::Malformed(format!("{what} is {} bytes, not 32", bytes.len())))
}

/// Checks an inclusion proof against a verified checkpoint, recomputing the leaf hash
/// from the entry the proof carries. Returns the entry.
pub fn inclusion(proof: &pb::InclusionProof, cp: &Checkpoint) -> Result<pb::Entry, Failure> {
    let entry = proof.entry.clone().ok_or_else(|| Failure::Malformed("the proof carries no entry".into()))?;
    if entry.seq != proof.seq {
        return Err(Failure::Malformed(format!(
            "asked for entry {}, the proof carries entry {}",
            proof.seq, entry.seq
        )));
    }
    if proof.tree_size != cp.size {
        return Err(Failure::Malformed(format!(
            "the proof is for tree size {}, the checkpoint for {}",
            proof.tree_size, cp.size
        )));
    }
    let actual = leaf::entry_leaf_hash(&entry);
    let path = merkle::hashes_from_bytes(&proof.path).map_err(|e| Failure::Malformed(e.to_string()))?;
    merkle::verify_inclusion(&actual, proof.seq, cp.size, &path, &cp.root)
        .map_err(|e| Failure::Inclusion { seq: proof.seq, size: cp.size, why: e.to_string() })?;
    Ok(entry)
}

/// A checkpoint the verifier was given to hold the log to (e.g. one saved earlier).
#[derive(Clone, Debug)]
pub struct Pinned {
    /// Where it came from, for messages.
    pub name: String,
    pub checkpoint: Checkpoint,
}

/// Walks the whole log in seq order, recomputing every leaf and the roots at the sizes of
/// the pinned checkpoints.
pub struct LogWalk {
    range: CompactRange,
    /// Pinned checkpoints not yet reached, smallest size last (popped as reached).
    pending: Vec<Pinned>,
}

impl LogWalk {
    pub fn new(mut pinned: Vec<Pinned>) -> Result<LogWalk, Failure> {
        pinned.sort_by_key(|p| std::cmp::Reverse(p.checkpoint.size));
        let mut walk = LogWalk { range: CompactRange::new(), pending: pinned };
        // A pin of the empty tree is checked before any entry arrives.
        match walk.check_pins_at_current_size() {
            Some(f) => Err(f),
            None => Ok(walk),
        }
    }

    /// Entries taken so far.
    pub fn size(&self) -> u64 {
        self.range.size()
    }

    fn check_pins_at_current_size(&mut self) -> Option<Failure> {
        while let Some(pin) = self.pending.last() {
            if pin.checkpoint.size != self.range.size() {
                break;
            }
            let root = self.range.root();
            let pin = self.pending.pop()?;
            if root != pin.checkpoint.root {
                return Some(Failure::PinnedMismatch {
                    name: pin.name,
                    size: pin.checkpoint.size,
                    actual: hex(&root),
                    signed: hex(&pin.checkpoint.root),
                });
            }
        }
        None
    }

    /// Takes the next entry with the leaf hash the ledger claims for it.
    pub fn push(&mut self, stored: &pb::StoredEntry) -> Result<(), Failure> {
        let entry = stored.entry.as_ref().ok_or_else(|| Failure::Malformed("a log entry is empty".into()))?;
        let expected = self.range.size();
        if entry.seq != expected {
            return Err(Failure::OutOfOrder { expected, got: entry.seq });
        }
        let actual = leaf::entry_leaf_hash(entry);
        let claimed = hash_from(&stored.leaf_hash, "a leaf hash")?;
        if actual != claimed {
            return Err(Failure::LeafChanged { seq: entry.seq, actual: hex(&actual), stored: hex(&claimed) });
        }
        self.range.append(actual, |_, _, _| {});
        match self.check_pins_at_current_size() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Checks the recomputed root against the latest checkpoint, and that no pinned
    /// checkpoint lies beyond the log.
    pub fn finish(self, latest: &Checkpoint) -> Result<(), Failure> {
        if self.range.size() != latest.size {
            return Err(Failure::Short { got: self.range.size(), size: latest.size });
        }
        let root = self.range.root();
        if root != latest.root {
            return Err(Failure::RootMismatch {
                size: latest.size,
                actual: hex(&root),
                signed: hex(&latest.root),
            });
        }
        if let Some(pin) = self.pending.first() {
            return Err(Failure::PinnedBeyond {
                name: pin.name.clone(),
                pinned: pin.checkpoint.size,
                size: latest.size,
            });
        }
        Ok(())
    }
}

/// Checks a consistency proof from a pinned checkpoint to a newer one.
pub fn consistency(pin: &Pinned, latest: &Checkpoint, proof: &pb::ConsistencyProof) -> Result<(), Failure> {
    let path = merkle::hashes_from_bytes(&proof.path).map_err(|e| Failure::Malformed(e.to_string()))?;
    merkle::verify_consistency(pin.checkpoint.size, latest.size, &pin.checkpoint.root, &latest.root, &path)
        .map_err(|e| Failure::Inconsistent {
            name: pin.name.clone(),
            old: pin.checkpoint.size,
            new: latest.size,
            why: e.to_string(),
        })
}
