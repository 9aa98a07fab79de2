//! The shape, hashing, proofs and proof verification of the ledger's Merkle tree: RFC 9162
//! (Certificate Transparency v2) §2.1 exactly, with BLAKE3 in place of SHA-256.
//!
//! - leaf hash: `BLAKE3(0x00 ‖ leaf bytes)`;
//! - interior node hash: `BLAKE3(0x01 ‖ left ‖ right)`;
//! - the root of the empty tree: `BLAKE3("")`;
//! - a tree of `n > 1` leaves splits into a left subtree of the largest power of two
//!   smaller than `n` leaves and a right subtree of the rest.
//!
//! Proof generation reads only hashes of complete, aligned subtrees through [`NodeSource`],
//! which is what a store on disk can keep cheaply (a complete subtree never changes once
//! written); [`CompactRange`] produces exactly those hashes as leaves are appended.
//! Verification needs nothing but the proof, the sizes and the roots.

use std::convert::Infallible;

/// A BLAKE3 hash: of a leaf, an interior node or a whole tree.
pub type Hash = [u8; 32];

/// The length of a [`Hash`](type@Hash) in bytes.
pub const HASH_LEN: usize = 32;

/// The domain-separation prefix of a leaf hash, so that no leaf can pose as a node.
const LEAF_PREFIX: u8 = 0x00;
/// The domain-separation prefix of an interior node hash.
const NODE_PREFIX: u8 = 0x01;

/// The hash of one leaf: `BLAKE3(0x00 ‖ leaf_bytes)`.
pub fn leaf_hash(leaf_bytes: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[LEAF_PREFIX]);
    hasher.update(leaf_bytes);
    *hasher.finalize().as_bytes()
}

/// The hash of an interior node: `BLAKE3(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&[NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// The root of the tree with no leaves: `BLAKE3` of the empty string.
pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// The largest power of two strictly smaller than `n`, which is where RFC 9162 splits a
/// tree of `n` leaves. Only meaningful for `n >= 2`.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// O(n) reference: root of the tree over these leaf hashes.
///
/// This is RFC 9162's MTH written as the recursion it is defined by, so that the faster
/// code paths in this module have something obviously right to be compared with.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [only] => *only,
        _ => {
            // The length of a slice always fits in u64 on the platforms Rust supports, and
            // the split point is smaller than the length, so it fits back in usize.
            let k = split_point(leaves.len() as u64) as usize;
            node_hash(&root_from_leaf_hashes(&leaves[..k]), &root_from_leaf_hashes(&leaves[k..]))
        }
    }
}

/// A store of the hashes of complete, aligned subtrees: node (level, index) covers leaves
/// `[index << level, (index + 1) << level)`. Level 0 = leaf hashes.
///
/// The functions of this module only ask for nodes whose leaves all lie below the tree size
/// they were given, so a store needs to answer only for complete subtrees of the tree it
/// holds.
pub trait NodeSource {
    /// Why a node could not be read.
    type Error;
    /// The hash of the complete subtree over leaves `[index << level, (index + 1) << level)`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes held in memory; nodes above level 0 are computed from them on every read,
/// which costs `2^level` hashes, so this suits tests and verifiers rather than a large log.
///
/// # Panics
///
/// Reading a node that covers leaves beyond the end of the slice panics: the error type is
/// [`Infallible`], and such a read means the caller passed a tree size larger than the
/// number of leaves it holds, a bug in the caller rather than bad input.
impl NodeSource for [Hash] {
    type Error = Infallible;

    fn node(&self, level: u32, index: u64) -> Result<Hash, Infallible> {
        // Checked arithmetic, so that a node far out of range is reported below rather than
        // wrapping around to a node that exists.
        let range = 1u64
            .checked_shl(level)
            .and_then(|width| {
                let start = index.checked_mul(width)?;
                let end = start.checked_add(width)?;
                Some(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
            })
            .filter(|range| range.end <= self.len());
        match range {
            Some(range) => Ok(root_from_leaf_hashes(&self[range])),
            None => panic!(
                "node (level {level}, index {index}) lies beyond the {} leaf hashes in memory; \
                 the tree size passed in is larger than the number of leaves",
                self.len()
            ),
        }
    }
}

/// The same as the slice implementation; see there, including its panic.
impl NodeSource for Vec<Hash> {
    type Error = Infallible;

    fn node(&self, level: u32, index: u64) -> Result<Hash, Infallible> {
        self.as_slice().node(level, index)
    }
}

/// `MTH(D[start:end])` using only complete aligned subtrees from `src` (O(log n) node reads).
///
/// The O(log n) bound holds for every range that is a subtree of an RFC 9162 tree (which are
/// the only ranges the proofs here ask for): such a range starts at a multiple of the
/// smallest power of two not below its length. Any other range still gets its correct
/// MTH, at the cost of more reads. An empty (or reversed) range gives [`empty_root`].
pub fn subtree_hash<S: NodeSource + ?Sized>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    if end <= start {
        return Ok(empty_root());
    }
    let len = end - start;
    // `len` is a power of two, so `len - 1` masks the bits that must be zero when aligned.
    if len.is_power_of_two() && start & (len - 1) == 0 {
        // A complete aligned subtree: the store has it as a single node.
        let level = len.trailing_zeros();
        return src.node(level, start >> level);
    }
    let k = split_point(len);
    let left = subtree_hash(src, start, start + k)?;
    let right = subtree_hash(src, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of the first `size` leaves of `src` ([`empty_root`] for size 0).
pub fn root<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Hash, S::Error> {
    subtree_hash(src, 0, size)
}

/// Why a proof could not be produced.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError<E> {
    /// The node store failed.
    #[error("reading a hash from the tree's node store failed: {0}")]
    Store(E),
    /// An inclusion proof was asked for a leaf the tree does not have.
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    /// A consistency proof was asked from the empty tree. Every tree extends the empty tree
    /// and the proof of that is empty, so callers treat old size 0 as trivially consistent
    /// (and [`verify_consistency`] accepts it with an empty proof) instead of asking.
    #[error(
        "a consistency proof from the empty tree is not defined; size 0 is trivially consistent with every tree"
    )]
    EmptyOld,
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldLargerThanNew { old_size: u64, new_size: u64 },
}

/// RFC 9162 §2.1.3.1 `PATH(m, D[n])`; error if index >= size.
///
/// The path is ordered from the leaf up: first the sibling of the leaf, last the sibling
/// of the root's child on the leaf's side.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    // Walk from the root down to the leaf, taking the subtree that is not on the leaf's side
    // at each split; PATH lists them in the opposite order, so reverse at the end.
    let mut path = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            path.push(subtree_hash(src, lo + k, hi).map_err(ProofError::Store)?);
            hi = lo + k;
        } else {
            path.push(subtree_hash(src, lo, lo + k).map_err(ProofError::Store)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// RFC 9162 §2.1.4.1 `PROOF(m, D[n])`; 0 < old <= new; old == new gives an empty proof.
///
/// Old size 0 is refused with [`ProofError::EmptyOld`]: every tree extends the empty tree,
/// so callers treat it as trivially consistent (an empty proof, which
/// [`verify_consistency`] accepts) rather than ask for a proof.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old_size > new_size {
        return Err(ProofError::OldLargerThanNew { old_size, new_size });
    }
    if old_size == 0 {
        return Err(ProofError::EmptyOld);
    }
    // SUBPROOF(m, D[lo:hi], b) unrolled from the top: each step records the subtree on the
    // far side of the split, and the walk ends where the old tree is a whole subtree.
    let mut siblings = Vec::new();
    let (mut lo, mut hi) = (0, new_size);
    let mut m = old_size; // The old tree's size, counted from `lo`.
    let mut old_is_whole_prefix = true; // RFC 9162's `b`.
    while m != hi - lo {
        let k = split_point(hi - lo);
        if m <= k {
            siblings.push(subtree_hash(src, lo + k, hi).map_err(ProofError::Store)?);
            hi = lo + k;
        } else {
            siblings.push(subtree_hash(src, lo, lo + k).map_err(ProofError::Store)?);
            lo += k;
            m -= k;
            old_is_whole_prefix = false;
        }
    }
    let mut proof = Vec::with_capacity(siblings.len() + 1);
    if !old_is_whole_prefix {
        // The subtree where the old tree ends is not the whole old tree, so the verifier
        // cannot start from the old root it already has; give it that subtree's hash.
        proof.push(subtree_hash(src, lo, hi).map_err(ProofError::Store)?);
    }
    proof.extend(siblings.into_iter().rev());
    Ok(proof)
}

/// Why a proof did not verify.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("leaf index {index} is not in a tree of {size} leaves")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    OldLargerThanNew { old_size: u64, new_size: u64 },
    #[error("the proof has {actual} hashes, but a proof for these tree sizes has exactly {expected}")]
    WrongPathLength { expected: usize, actual: usize },
    #[error("proof hash number {position} is {len} bytes long; every hash is 32 bytes")]
    BadHashLength { position: usize, len: usize },
    #[error(
        "the inclusion proof does not lead to the given root: the leaf, its index, the tree size or the root is wrong"
    )]
    RootMismatch,
    #[error(
        "the consistency proof does not reproduce the old root: the old tree is not a prefix of the new one, or the old size or root is wrong"
    )]
    OldRootMismatch,
    #[error(
        "the consistency proof does not reproduce the new root: the new tree does not extend the old one, or the new size or root is wrong"
    )]
    NewRootMismatch,
    #[error("two trees of the same size {size} have different roots")]
    SameSizeRootsDiffer { size: u64 },
}

/// The number of hashes in `PATH(index, D[size])`; `index < size`.
fn inclusion_path_len(index: u64, size: u64) -> usize {
    let (mut lo, mut hi, mut len) = (0, size, 0);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            hi = lo + k;
        } else {
            lo += k;
        }
        len += 1;
    }
    len
}

/// The number of hashes in `PROOF(old_size, D[new_size])`; `0 < old_size <= new_size`.
fn consistency_path_len(old_size: u64, new_size: u64) -> usize {
    let (mut lo, mut hi, mut m, mut whole, mut len) = (0, new_size, old_size, true, 0);
    while m != hi - lo {
        let k = split_point(hi - lo);
        if m <= k {
            hi = lo + k;
        } else {
            lo += k;
            m -= k;
            whole = false;
        }
        len += 1;
    }
    len + usize::from(!whole)
}

/// RFC 9162 §2.1.3.2 verification algorithm.
///
/// The path is ordered from the leaf up, as [`inclusion_proof`] produces it. Its length is
/// checked first, so a wrong-length path gets [`VerifyError::WrongPathLength`] rather than
/// a root mismatch.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_path_len(index, size);
    if path.len() != expected {
        return Err(VerifyError::WrongPathLength { expected, actual: path.len() });
    }
    // `fnode` is the index of the current node on its level, `snode` the index of the last
    // node on that level; RFC 9162 calls them fn and sn.
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in path {
        if snode == 0 {
            // Unreachable after the length check, but it is the RFC's own guard and costs
            // nothing.
            return Err(VerifyError::WrongPathLength { expected, actual: path.len() });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                // The current node is the last on its level with no right sibling: it moves
                // up unchanged until it becomes a right child (or reaches the left edge).
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 || r != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// RFC 9162 §2.1.4.2 verification algorithm. old_size == 0: Ok only if path is empty (any
/// tree extends the empty tree; the roots are not examined). old == new: Ok iff roots are
/// equal and path empty.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), VerifyError> {
    if old_size > new_size {
        return Err(VerifyError::OldLargerThanNew { old_size, new_size });
    }
    if old_size == new_size {
        if !path.is_empty() {
            return Err(VerifyError::WrongPathLength { expected: 0, actual: path.len() });
        }
        if old_root != new_root {
            return Err(VerifyError::SameSizeRootsDiffer { size: old_size });
        }
        return Ok(());
    }
    if old_size == 0 {
        if !path.is_empty() {
            return Err(VerifyError::WrongPathLength { expected: 0, actual: path.len() });
        }
        return Ok(());
    }
    let expected = consistency_path_len(old_size, new_size);
    if path.len() != expected {
        return Err(VerifyError::WrongPathLength { expected, actual: path.len() });
    }

    // When the old tree is a complete subtree of the new one the proof leaves out its hash
    // (the verifier has it already); put it back so both cases run the same loop.
    let mut hashes = path.iter();
    let first = if old_size.is_power_of_two() {
        *old_root
    } else {
        match hashes.next() {
            Some(h) => *h,
            None => {
                return Err(VerifyError::WrongPathLength { expected, actual: 0 });
            }
        }
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    // Skip the levels where the old tree's last node is a right child: those siblings are
    // inside the subtree whose hash `first` already is.
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in hashes {
        if snode == 0 {
            return Err(VerifyError::WrongPathLength { expected, actual: path.len() });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if fr != *old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if snode != 0 || sr != *new_root {
        return Err(VerifyError::NewRootMismatch);
    }
    Ok(())
}

/// Parse proof hashes that arrive as byte strings (e.g. `repeated bytes` in protobuf): each
/// must be exactly 32 bytes.
pub fn hashes_from_bytes<B: AsRef<[u8]>>(items: &[B]) -> Result<Vec<Hash>, VerifyError> {
    items
        .iter()
        .enumerate()
        .map(|(position, item)| {
            let bytes = item.as_ref();
            Hash::try_from(bytes).map_err(|_| VerifyError::BadHashLength { position, len: bytes.len() })
        })
        .collect()
}

/// An incremental builder (a "compact range" over [0, size)): the right edge of the tree.
///
/// It holds one hash per set bit of the size: the roots of the complete subtrees that the
/// leaves `[0, size)` decompose into, largest (leftmost) first. That is all that appending
/// and computing the root need, so a log keeps this in memory and stores the nodes that
/// [`CompactRange::append`] reports as complete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Roots of the complete subtrees covering `[0, size)`, left to right; their sizes are
    /// the set bits of `size`, from the highest down.
    peaks: Vec<Hash>,
}

impl CompactRange {
    /// The range of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild the right edge for a tree of `size` leaves from complete subtree hashes.
    pub fn from_source<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                peaks.push(src.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Self { size, peaks })
    }

    /// The number of leaves appended (or the size rebuilt from).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf hash; calls `on_complete(level, index, hash)` for the leaf (level 0) and
    /// every node that this append completes, bottom up.
    ///
    /// # Panics
    ///
    /// Panics if the tree already holds `u64::MAX` leaves, a size no log reaches.
    pub fn append(&mut self, leaf: Hash, mut on_complete: impl FnMut(u32, u64, &Hash)) {
        let new_size = self.size.checked_add(1).expect("a Merkle tree cannot hold more than u64::MAX leaves");
        let mut hash = leaf;
        let mut level = 0u32;
        let mut index = self.size;
        on_complete(level, index, &hash);
        // Each trailing one bit of the old size is a complete subtree of the same height
        // just left of the new node: the two merge into their parent, which is complete too.
        while level < 64 && (self.size >> level) & 1 == 1 {
            let Some(left) = self.peaks.pop() else {
                // The peaks always match the set bits of the size; this cannot happen.
                break;
            };
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            on_complete(level, index, &hash);
        }
        self.peaks.push(hash);
        self.size = new_size;
    }

    /// Root of the tree [0, size) (empty_root() when size == 0).
    pub fn root(&self) -> Hash {
        // RFC 9162 splits at the largest power of two, which is the leftmost peak; the rest
        // split the same way, so the root folds the peaks together from the right.
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn ok<T>(r: Result<T, Infallible>) -> T {
        match r {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    #[test]
    fn hashes_are_domain_separated_blake3() {
        assert_eq!(leaf_hash(b"a"), *blake3::hash(b"\x00a").as_bytes());
        let (l, r) = ([1u8; 32], [2u8; 32]);
        let mut concat = vec![1u8];
        concat.extend_from_slice(&l);
        concat.extend_from_slice(&r);
        assert_eq!(node_hash(&l, &r), *blake3::hash(&concat).as_bytes());
        assert_eq!(empty_root(), *blake3::hash(b"").as_bytes());
    }

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        let expected = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1 << 40, 1 << 39)];
        for (n, k) in expected {
            assert_eq!(split_point(n), k, "n = {n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn small_trees_have_the_rfc_shape() {
        let l = leaves(7);
        assert_eq!(root_from_leaf_hashes(&l[..1]), l[0]);
        assert_eq!(root_from_leaf_hashes(&l[..2]), node_hash(&l[0], &l[1]));
        let ab = node_hash(&l[0], &l[1]);
        let cd = node_hash(&l[2], &l[3]);
        assert_eq!(root_from_leaf_hashes(&l[..3]), node_hash(&ab, &l[2]));
        let abcd = node_hash(&ab, &cd);
        let ef = node_hash(&l[4], &l[5]);
        let efg = node_hash(&ef, &l[6]);
        assert_eq!(root_from_leaf_hashes(&l), node_hash(&abcd, &efg));
        assert_eq!(ok(root(&l, 7)), node_hash(&abcd, &efg));
        assert_eq!(ok(root(&l, 0)), empty_root());
    }

    #[test]
    fn rfc_example_proofs_have_the_rfc_contents() {
        // RFC 9162 §2.1.5's seven-leaf example: a..g are leaves 0..6.
        let l = leaves(7);
        let (a, b, c, d, e, f, g) = (l[0], l[1], l[2], l[3], l[4], l[5], l[6]);
        let h = |x: &Hash, y: &Hash| node_hash(x, y);
        let (ab, cd, ef) = (h(&a, &b), h(&c, &d), h(&e, &f));
        let (abcd, efg) = (h(&ab, &cd), h(&ef, &g));
        // The RFC names the leaf hashes a..f and j, and the nodes g = ab, h = cd, i = ef,
        // k = abcd and l = efg; its proofs, translated to the names here:
        // inclusion of d0 is [b, h, l], of d3 is [c, g, l], of d4 is [f, j, k].
        assert_eq!(ok_proof(inclusion_proof(&l, 0, 7)), vec![b, cd, efg]);
        assert_eq!(ok_proof(inclusion_proof(&l, 3, 7)), vec![c, ab, efg]);
        assert_eq!(ok_proof(inclusion_proof(&l, 4, 7)), vec![f, g, abcd]);
        assert_eq!(ok_proof(inclusion_proof(&l, 0, 3)), vec![b, c]);
        // Consistency from size 3 to 7 is [c, d, g, l].
        assert_eq!(ok_proof(consistency_proof(&l, 3, 7)), vec![c, d, ab, efg]);
        // From size 4 to 7 it is [l]: the old tree is a complete subtree, so its root is
        // left out.
        assert_eq!(ok_proof(consistency_proof(&l, 4, 7)), vec![efg]);
        // From size 6 to 7 it is [i, j, k].
        assert_eq!(ok_proof(consistency_proof(&l, 6, 7)), vec![ef, g, abcd]);
        assert_eq!(ok_proof(consistency_proof(&l, 7, 7)), Vec::<Hash>::new());
    }

    fn ok_proof(r: Result<Vec<Hash>, ProofError<Infallible>>) -> Vec<Hash> {
        match r {
            Ok(v) => v,
            Err(e) => panic!("proof failed: {e}"),
        }
    }

    #[test]
    fn every_proof_up_to_64_leaves_verifies_and_lengths_match() {
        let l = leaves(64);
        for n in 1..=64u64 {
            let leaves = &l[..n as usize];
            let r = root_from_leaf_hashes(leaves);
            for i in 0..n {
                let path = ok_proof(inclusion_proof(leaves, i, n));
                assert_eq!(path.len(), inclusion_path_len(i, n));
                assert_eq!(verify_inclusion(&l[i as usize], i, n, &path, &r), Ok(()));
            }
            for m in 1..=n {
                let old = root_from_leaf_hashes(&l[..m as usize]);
                let path = ok_proof(consistency_proof(leaves, m, n));
                assert_eq!(path.len(), if m == n { 0 } else { consistency_path_len(m, n) });
                assert_eq!(verify_consistency(m, n, &old, &r, &path), Ok(()), "{m} -> {n}");
            }
        }
    }

    #[test]
    fn argument_errors_are_reported() {
        let l = leaves(5);
        assert_eq!(inclusion_proof(&l, 5, 5), Err(ProofError::IndexOutOfRange { index: 5, size: 5 }));
        assert_eq!(consistency_proof(&l, 0, 5), Err(ProofError::EmptyOld));
        assert_eq!(
            consistency_proof(&l, 4, 3),
            Err(ProofError::OldLargerThanNew { old_size: 4, new_size: 3 })
        );
        let r = root_from_leaf_hashes(&l);
        assert_eq!(
            verify_inclusion(&l[0], 5, 5, &[], &r),
            Err(VerifyError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            verify_inclusion(&l[0], 0, 5, &[], &r),
            Err(VerifyError::WrongPathLength { expected: 3, actual: 0 })
        );
        assert_eq!(
            verify_consistency(4, 3, &r, &r, &[]),
            Err(VerifyError::OldLargerThanNew { old_size: 4, new_size: 3 })
        );
        assert_eq!(verify_consistency(0, 5, &[9; 32], &r, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 5, &empty_root(), &r, &[r]),
            Err(VerifyError::WrongPathLength { expected: 0, actual: 1 })
        );
        assert_eq!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]), Ok(()));
        assert_eq!(verify_consistency(5, 5, &r, &r, &[]), Ok(()));
        assert_eq!(
            verify_consistency(5, 5, &r, &l[0], &[]),
            Err(VerifyError::SameSizeRootsDiffer { size: 5 })
        );
        assert_eq!(
            verify_consistency(5, 5, &r, &r, &[r]),
            Err(VerifyError::WrongPathLength { expected: 0, actual: 1 })
        );
    }

    #[test]
    fn hashes_from_bytes_checks_lengths() {
        let good: Vec<Vec<u8>> = vec![vec![1; 32], vec![2; 32]];
        assert_eq!(hashes_from_bytes(&good), Ok(vec![[1; 32], [2; 32]]));
        let bad: Vec<Vec<u8>> = vec![vec![1; 32], vec![2; 31]];
        assert_eq!(hashes_from_bytes(&bad), Err(VerifyError::BadHashLength { position: 1, len: 31 }));
        let none: [&[u8]; 0] = [];
        assert_eq!(hashes_from_bytes(&none), Ok(vec![]));
    }

    #[test]
    fn compact_range_reports_completed_nodes_bottom_up() {
        let l = leaves(4);
        let mut range = CompactRange::new();
        assert_eq!(range.root(), empty_root());
        let mut seen = Vec::new();
        for leaf in &l {
            range.append(*leaf, |level, index, hash| seen.push((level, index, *hash)));
        }
        let ab = node_hash(&l[0], &l[1]);
        let cd = node_hash(&l[2], &l[3]);
        assert_eq!(
            seen,
            vec![
                (0, 0, l[0]),
                (0, 1, l[1]),
                (1, 0, ab),
                (0, 2, l[2]),
                (0, 3, l[3]),
                (1, 1, cd),
                (2, 0, node_hash(&ab, &cd)),
            ]
        );
        assert_eq!(range.size(), 4);
        assert_eq!(range.root(), root_from_leaf_hashes(&l));
    }

    #[test]
    fn compact_range_rebuilds_from_source() {
        let l = leaves(100);
        let mut appended = CompactRange::new();
        for (n, leaf) in l.iter().enumerate() {
            assert_eq!(ok(CompactRange::from_source(&l, n as u64)), appended);
            appended.append(*leaf, |_, _, _| {});
        }
        assert_eq!(ok(CompactRange::from_source(&l, 100)), appended);
    }

    #[test]
    #[should_panic(expected = "beyond the 3 leaf hashes")]
    fn slice_source_refuses_sizes_beyond_its_leaves() {
        let l = leaves(3);
        let _ = root(&l, 4);
    }
}
