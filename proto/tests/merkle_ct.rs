//! Checks `ledger_proto::merkle` against the independent `ct-merkle` crate, byte for byte
//! and for every tree size from 1 to 300: roots, every inclusion proof and every
//! consistency proof; and checks that altered proofs, roots and leaves are refused.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use ledger_proto::merkle::{
    self, CompactRange, Hash, NodeSource, ProofError, VerifyError, consistency_proof, empty_root,
    inclusion_proof, leaf_hash, node_hash, root, root_from_leaf_hashes, subtree_hash, verify_consistency,
    verify_inclusion,
};

const MAX_SIZE: u64 = 300;

/// ct-merkle's tree with BLAKE3 as its hash; it hashes a leaf as `H(0x00 ‖ bytes)` and a
/// node as `H(0x01 ‖ left ‖ right)`, like RFC 9162, so the same leaf bytes go in on both
/// sides.
type CtTree = MemoryBackedTree<blake3::Hasher, Vec<u8>>;
type CtRoot = RootHash<blake3::Hasher>;

/// Every complete node of the tree, kept the way a log's node store would keep them: filled
/// only from what `CompactRange::append` reports, so proofs read from it also test that the
/// reported nodes are the right ones at the right places.
#[derive(Default)]
struct Store {
    levels: Vec<Vec<Hash>>,
}

#[derive(Debug, PartialEq, Eq)]
struct MissingNode {
    level: u32,
    index: u64,
}

impl NodeSource for Store {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        self.levels
            .get(level as usize)
            .and_then(|nodes| nodes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(MissingNode { level, index })
    }
}

impl Store {
    fn record(&mut self, level: u32, index: u64, hash: &Hash) {
        let level = level as usize;
        if self.levels.len() <= level {
            self.levels.resize(level + 1, Vec::new());
        }
        // Nodes of one level complete left to right, each exactly once.
        assert_eq!(self.levels[level].len() as u64, index, "node ({level}, {index}) out of order");
        self.levels[level].push(*hash);
    }
}

fn leaf_bytes(i: u64) -> Vec<u8> {
    // Lengths vary so that nothing depends on leaves being one block long.
    format!("leaf {i}: {}", "x".repeat((i % 70) as usize)).into_bytes()
}

fn concat(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

fn flip(hash: &Hash) -> Hash {
    let mut h = *hash;
    h[7] ^= 0x20;
    h
}

fn ct_root_bytes(r: &CtRoot) -> Hash {
    match Hash::try_from(r.as_bytes().as_slice()) {
        Ok(h) => h,
        Err(_) => panic!("ct-merkle with BLAKE3 gave a root that is not 32 bytes"),
    }
}

fn must<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// Grows one tree to MAX_SIZE leaves in both implementations and, at every size, compares
/// everything that can be compared.
#[test]
fn matches_ct_merkle_for_every_size_up_to_300() {
    let mut ct = CtTree::new();
    let mut range = CompactRange::new();
    let mut store = Store::default();
    let mut leaves: Vec<Hash> = Vec::new();
    let mut roots: Vec<Hash> = vec![empty_root()];
    let mut ct_roots: Vec<CtRoot> = vec![ct.root()];
    assert_eq!(ct_root_bytes(&ct.root()), empty_root());

    for n in 1..=MAX_SIZE {
        let bytes = leaf_bytes(n - 1);
        ct.push(bytes.clone());
        let leaf = leaf_hash(&bytes);
        leaves.push(leaf);
        range.append(leaf, |level, index, hash| {
            // Each completed node is the MTH of the leaves it covers.
            let start = index << level;
            let end = (index + 1) << level;
            assert!(end <= n, "node ({level}, {index}) reported complete in a tree of {n}");
            let expected = root_from_leaf_hashes(&leaves[start as usize..end as usize]);
            assert_eq!(*hash, expected, "node ({level}, {index}) at size {n}");
            assert_eq!(subtree_hash(&leaves, start, end), Ok(expected));
            store.record(level, index, hash);
        });

        // Roots: four ways of ours and ct-merkle's.
        let r = root_from_leaf_hashes(&leaves);
        assert_eq!(range.size(), n);
        assert_eq!(range.root(), r, "CompactRange root at size {n}");
        assert_eq!(must(root(&store, n), "root from store"), r);
        assert_eq!(must(root(&leaves, n), "root from slice"), r);
        assert_eq!(ct_root_bytes(&ct.root()), r, "ct-merkle root at size {n}");
        assert_eq!(must(CompactRange::from_source(&store, n), "rebuild"), range);
        roots.push(r);
        ct_roots.push(ct.root());
        let ct_root = ct.root();

        for i in 0..n {
            check_inclusion(&ct, &ct_root, &store, &leaves, &roots, i, n);
        }
        for m in 0..=n {
            check_consistency(&ct, &ct_roots, &store, &roots, m, n);
        }
    }
}

fn check_inclusion(
    ct: &CtTree,
    ct_root: &CtRoot,
    store: &Store,
    leaves: &[Hash],
    roots: &[Hash],
    i: u64,
    n: u64,
) {
    let r = &roots[n as usize];
    let leaf = &leaves[i as usize];
    let path = must(inclusion_proof(store, i, n), "inclusion proof");
    let ct_path = ct.prove_inclusion(i as usize);
    assert_eq!(concat(&path), ct_path.as_bytes(), "inclusion proof of {i} in {n}");
    assert_eq!(verify_inclusion(leaf, i, n, &path, r), Ok(()), "inclusion of {i} in {n}");
    // ct-merkle accepts ours (the same bytes, but this also checks its verifier agrees).
    let ours_for_ct = must(
        InclusionProof::<blake3::Hasher>::try_from_bytes(concat(&path)),
        "ct-merkle proof from our bytes",
    );
    assert!(ct_root.verify_inclusion(&leaf_bytes(i), i, &ours_for_ct).is_ok());

    // A wrong root, a wrong leaf, each altered path hash: the root no longer matches.
    assert_eq!(verify_inclusion(leaf, i, n, &path, &flip(r)), Err(VerifyError::RootMismatch));
    assert_eq!(verify_inclusion(&flip(leaf), i, n, &path, r), Err(VerifyError::RootMismatch));
    for k in 0..path.len() {
        let mut tampered = path.clone();
        tampered[k] = flip(&tampered[k]);
        assert_eq!(
            verify_inclusion(leaf, i, n, &tampered, r),
            Err(VerifyError::RootMismatch),
            "tampered hash {k} of the proof of {i} in {n}"
        );
    }
    // A path one hash short or long is refused for its length.
    if let Some((_, shorter)) = path.split_last() {
        assert!(matches!(verify_inclusion(leaf, i, n, shorter, r), Err(VerifyError::WrongPathLength { .. })));
    }
    let mut longer = path.clone();
    longer.push(*r);
    assert!(matches!(verify_inclusion(leaf, i, n, &longer, r), Err(VerifyError::WrongPathLength { .. })));
    // The same proof does not prove the leaf at the neighbouring position. (It may well
    // "prove" it in a tree of another size whose shape is the same along the path: a root
    // is bound to its size by the signed checkpoint, not by the proof.)
    if i + 1 < n {
        assert!(verify_inclusion(leaf, i + 1, n, &path, r).is_err());
    }
}

fn check_consistency(ct: &CtTree, ct_roots: &[CtRoot], store: &Store, roots: &[Hash], m: u64, n: u64) {
    let (old, new) = (&roots[m as usize], &roots[n as usize]);
    if m == 0 {
        assert_eq!(consistency_proof(store, 0, n), Err(ProofError::EmptyOld));
        assert_eq!(verify_consistency(0, n, old, new, &[]), Ok(()));
        return;
    }
    let path = must(consistency_proof(store, m, n), "consistency proof");
    let ct_path = ct.prove_consistency((n - m) as usize);
    assert_eq!(concat(&path), ct_path.as_bytes(), "consistency proof {m} -> {n}");
    assert_eq!(verify_consistency(m, n, old, new, &path), Ok(()), "consistency {m} -> {n}");
    let ours_for_ct = must(
        ConsistencyProof::<blake3::Hasher>::try_from_bytes(concat(&path)),
        "ct-merkle proof from our bytes",
    );
    assert!(
        ct_roots[n as usize].verify_consistency(&ct_roots[m as usize], &ours_for_ct).is_ok(),
        "ct-merkle refuses our consistency proof {m} -> {n}"
    );

    if m == n {
        assert!(path.is_empty());
        assert_eq!(
            verify_consistency(m, n, old, &flip(new), &path),
            Err(VerifyError::SameSizeRootsDiffer { size: n })
        );
        return;
    }
    assert!(verify_consistency(m, n, &flip(old), new, &path).is_err(), "wrong old root {m} -> {n}");
    assert_eq!(
        verify_consistency(m, n, old, &flip(new), &path),
        Err(VerifyError::NewRootMismatch),
        "wrong new root {m} -> {n}"
    );
    for k in 0..path.len() {
        let mut tampered = path.clone();
        tampered[k] = flip(&tampered[k]);
        assert!(
            verify_consistency(m, n, old, new, &tampered).is_err(),
            "tampered hash {k} of the consistency proof {m} -> {n}"
        );
    }
    assert!(matches!(
        verify_consistency(m, n, old, new, &path[1..]),
        Err(VerifyError::WrongPathLength { .. })
    ));
    // The proof is for these sizes only.
    if m + 1 < n {
        assert!(verify_consistency(m + 1, n, &roots[m as usize + 1], new, &path).is_err());
    }
}

/// A node store that fails: its error reaches the caller as `ProofError::Store`.
#[test]
fn store_errors_are_passed_on() {
    let empty = Store::default();
    assert_eq!(inclusion_proof(&empty, 0, 2), Err(ProofError::Store(MissingNode { level: 0, index: 1 })));
    assert!(matches!(consistency_proof(&empty, 1, 2), Err(ProofError::Store(_))));
    assert_eq!(root(&empty, 0), Ok(empty_root()));
    assert_eq!(CompactRange::from_source(&empty, 0).map(|r| r.root()), Ok(empty_root()));
    let message = ProofError::Store("disk on fire").to_string();
    assert!(message.contains("disk on fire"), "{message}");
}

/// subtree_hash over a store reads the same hash as the O(n) reference, for every range
/// that is a subtree of some RFC 9162 tree and also for arbitrary ranges.
#[test]
fn subtree_hash_matches_the_reference_for_all_ranges() {
    let leaves: Vec<Hash> = (0..40).map(|i| leaf_hash(&leaf_bytes(i))).collect();
    let mut store = Store::default();
    let mut range = CompactRange::new();
    for leaf in &leaves {
        range.append(*leaf, |level, index, hash| store.record(level, index, hash));
    }
    for start in 0..=40u64 {
        for end in start..=40u64 {
            let expected = root_from_leaf_hashes(&leaves[start as usize..end as usize]);
            assert_eq!(subtree_hash(&store, start, end), Ok(expected), "[{start}, {end})");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The worked example of docs/FORMAT.md ("Tree and note formats"): these values are printed
/// there, and this test keeps them true.
#[test]
fn format_doc_worked_example() {
    let (a, b, c) = (leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c"));
    let ab = node_hash(&a, &b);
    let root3 = node_hash(&ab, &c);
    let leaves = vec![a, b, c];
    assert_eq!(merkle::root(&leaves, 3), Ok(root3));
    assert_eq!(merkle::root(&leaves, 2), Ok(ab));

    let inclusion = must(inclusion_proof(&leaves, 1, 3), "inclusion");
    assert_eq!(inclusion, vec![a, c]);
    let consistency = must(consistency_proof(&leaves, 2, 3), "consistency");
    assert_eq!(consistency, vec![c]);
    assert_eq!(verify_inclusion(&b, 1, 3, &inclusion, &root3), Ok(()));
    assert_eq!(verify_consistency(2, 3, &ab, &root3, &consistency), Ok(()));

    let shown = [
        ("empty", hex(&empty_root())),
        ("a", hex(&a)),
        ("b", hex(&b)),
        ("c", hex(&c)),
        ("ab", hex(&ab)),
        ("root3", hex(&root3)),
    ];
    for (name, value) in &shown {
        println!("{name} = {value}");
    }
    let expected = [
        ("empty", "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        ("a", "1ff621ee3430890e869728995a6cee4f2b0b61271bfc19b0092b06d778750ae8"),
        ("b", "3acbabc85b6b9ceff22334abe02e3752f93875f0c2fcdc7ef48ded6117df4170"),
        ("c", "732874dc36c7e6c2cb61920dc5740c9bd14b0495c6933217631c0191559e3fa1"),
        ("ab", "6564e87d8619ea09c801c567c641d47fe817ae3b2cf80685cde2eb6557247eca"),
        ("root3", "6c62dd52a0971b7d00a7cead004e0c3f3c0766e3f5359a0f8297768d2b02d03c"),
    ];
    for ((name, value), (expected_name, expected_value)) in shown.iter().zip(expected) {
        assert_eq!((name.to_string(), value.as_str()), (expected_name.to_string(), expected_value));
    }
}
