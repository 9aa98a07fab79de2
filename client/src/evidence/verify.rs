//! Checks an evidence bundle offline, with nothing but its files and a verifier key, in
//! the order docs/FORMAT.md gives; the first check that fails is named and ends it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ledger_proto::merkle::{self, Hash};
use ledger_proto::note::NoteVerifier;
use ledger_proto::{leaf, manifest, pb};
use ledger_query::{neutralise, unneutralise};

use super::layout::{POLICIES, POLICY_CHANGES, REQUIRED};
use super::{
    CHECKPOINT, EVENTS, LEAVES, LeafReader, MANIFEST, PROOF, PROOF_FORMAT, ProofFile, VKEY, event_row,
    manifest_files, parse_hash, parse_hex, policies, rebuild_root, time_text,
};

/// Where the verifier key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--key FILE`: obtained out of band; this is what makes the check mean something.
    OutOfBand(PathBuf),
    /// The bundle's own `verifier.vkey`: only shows the bundle is self-consistent.
    Bundle,
}

/// What held.
#[derive(Debug, Clone)]
pub struct Report {
    pub key: KeySource,
    pub origin: String,
    pub tree_size: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub export_seq: u64,
    pub files: usize,
    pub events_rows: usize,
}

/// Why a bundle was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The check could not be run (no such directory, unreadable key): exit 2.
    #[error("{0}")]
    Usage(String),
    /// A check failed: `check` names it (a file or a property), exit 1.
    #[error("{check}: {why}")]
    Failed { check: String, why: String },
}

fn fail(check: &str, why: impl Into<String>) -> BundleError {
    BundleError::Failed { check: check.to_string(), why: why.into() }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, BundleError> {
    std::fs::read(dir.join(name)).map_err(|e| fail(name, format!("cannot read it: {e}")))
}

fn read_text(dir: &Path, name: &str) -> Result<String, BundleError> {
    String::from_utf8(read(dir, name)?).map_err(|_| fail(name, "it is not UTF-8"))
}

/// Verifies the bundle in `dir`, with the key in `key` (else the bundle's own key).
pub fn verify_bundle(dir: &Path, key: Option<&Path>) -> Result<Report, BundleError> {
    if !dir.is_dir() {
        return Err(BundleError::Usage(format!("{} is not a directory", dir.display())));
    }
    // 1. The key.
    let (verifier, source) = match key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| BundleError::Usage(format!("cannot read key {}: {e}", path.display())))?;
            let v = NoteVerifier::parse(&text)
                .map_err(|e| BundleError::Usage(format!("{} is not a verifier key: {e}", path.display())))?;
            (v, KeySource::OutOfBand(path.to_path_buf()))
        }
        None => {
            let text = read_text(dir, VKEY)?;
            (NoteVerifier::parse(&text).map_err(|e| fail(VKEY, e.to_string()))?, KeySource::Bundle)
        }
    };

    // 2. The manifest: signed by the ledger's key, listing exactly the files present, and
    // those are the files of a bundle.
    let manifest_note = read_text(dir, MANIFEST)?;
    let body = verifier.verify(&manifest_note).map_err(|e| fail(MANIFEST, format!("signature: {e}")))?;
    let (origin, listed) = manifest::parse(body).map_err(|e| fail(MANIFEST, e.to_string()))?;
    if origin != verifier.name() {
        return Err(fail(MANIFEST, format!("it names origin {origin:?}, the key is {:?}", verifier.name())));
    }
    let present = manifest_files(dir).map_err(|e| fail(MANIFEST, e))?;
    let listed_paths: BTreeSet<&str> = listed.iter().map(|f| f.path.as_str()).collect();
    let present_paths: BTreeSet<&str> = present.iter().map(|f| f.path.as_str()).collect();
    if let Some(missing) = listed_paths.difference(&present_paths).next() {
        return Err(fail(MANIFEST, format!("{missing} is listed but missing from the bundle")));
    }
    if let Some(extra) = present_paths.difference(&listed_paths).next() {
        return Err(fail(MANIFEST, format!("{extra} is in the bundle but not in the manifest")));
    }
    for (want, have) in listed.iter().zip(&present) {
        if want.blake3 != have.blake3 {
            return Err(fail(
                &want.path,
                format!(
                    "its BLAKE3 is {}, the signed manifest says {}: the file was changed",
                    have.blake3, want.blake3
                ),
            ));
        }
    }
    if let Some(missing) = REQUIRED.iter().find(|f| **f != MANIFEST && !listed_paths.contains(**f)) {
        return Err(fail(MANIFEST, format!("{missing} is missing: every bundle has it")));
    }
    let policy_prefix = format!("{POLICIES}/");
    if let Some(extra) =
        listed_paths.iter().find(|p| !REQUIRED.contains(*p) && !p.starts_with(&policy_prefix))
    {
        return Err(fail(MANIFEST, format!("{extra} is not a file of an evidence bundle")));
    }
    let policy_files: BTreeSet<String> =
        listed_paths.iter().filter(|p| p.starts_with(&policy_prefix)).map(|p| (*p).to_string()).collect();

    // 3. The bundle's own key is the key it was checked with.
    if source != KeySource::Bundle {
        let text = read_text(dir, VKEY)?;
        let own = NoteVerifier::parse(&text).map_err(|e| fail(VKEY, e.to_string()))?;
        if own.to_vkey_string() != verifier.to_vkey_string() {
            return Err(fail(
                VKEY,
                format!("it names key {}, not the --key {}", own.to_vkey_string(), verifier.to_vkey_string()),
            ));
        }
    }

    // 4. The checkpoint.
    let cp_note = read_text(dir, CHECKPOINT)?;
    let cp = verifier.verify_checkpoint(&cp_note).map_err(|e| fail(CHECKPOINT, format!("signature: {e}")))?;

    // 5. The leaves: canonical, contiguous, the whole period, and tied to the root.
    let proof: ProofFile =
        serde_json::from_slice(&read(dir, PROOF)?).map_err(|e| fail(PROOF, format!("not valid: {e}")))?;
    if proof.format != PROOF_FORMAT {
        return Err(fail(PROOF, format!("format {:?}, expected {PROOF_FORMAT:?}", proof.format)));
    }
    if proof.tree_size != cp.size {
        return Err(fail(
            PROOF,
            format!("it is for tree size {}, the checkpoint for {}", proof.tree_size, cp.size),
        ));
    }
    // Read one leaf at a time: only the leaf hashes (32 bytes each) are kept, and the
    // entries the later checks need (policy changes, export entries).
    let mut hashes: Vec<Hash> = Vec::new();
    let mut kept: BTreeMap<u64, pb::Entry> = BTreeMap::new();
    let mut in_period: Option<(u64, u64)> = None;
    let mut prev_time = None;
    let mut leaves = open_leaves(dir)?;
    while let Some(bytes) = leaves.next_leaf().map_err(|e| fail(LEAVES, e))? {
        let i = hashes.len();
        let seq = proof.start + i as u64;
        let entry =
            leaf::decode_canonical(bytes).map_err(|e| fail(LEAVES, format!("leaf of entry {seq}: {e}")))?;
        if entry.seq != seq {
            return Err(fail(LEAVES, format!("leaf {i} should be entry {seq}, it is entry {}", entry.seq)));
        }
        if prev_time.is_some_and(|prev| entry.time_unix_nanos < prev) {
            return Err(fail(LEAVES, format!("entry {seq} is older than the entry before it")));
        }
        prev_time = Some(entry.time_unix_nanos);
        if (proof.from_unix_nanos..proof.to_unix_nanos).contains(&entry.time_unix_nanos) {
            in_period = Some((in_period.map_or(seq, |(first, _)| first), seq));
        }
        hashes.push(merkle::leaf_hash(bytes));
        if [pb::Kind::PolicyChanged as i32, pb::Kind::EvidenceExported as i32].contains(&entry.kind) {
            kept.insert(seq, entry);
        }
    }
    if proof.start.checked_add(hashes.len() as u64) != Some(proof.end) {
        return Err(fail(
            LEAVES,
            format!(
                "it holds {} leaves, proof.json says entries {}..{}",
                hashes.len(),
                proof.start,
                proof.end
            ),
        ));
    }
    let outside: Vec<Hash> = proof
        .hashes
        .iter()
        .enumerate()
        .map(|(i, h)| parse_hash(h).ok_or_else(|| fail(PROOF, format!("hash {i} is not 64 hex digits"))))
        .collect::<Result<_, _>>()?;
    let root = rebuild_root(cp.size, proof.start, &hashes, &outside).map_err(|e| fail("range proof", e))?;
    if root != cp.root {
        return Err(fail(
            "range proof",
            format!(
                "the leaves and proof.json rebuild root {}, the signed checkpoint says {}: leaves.bin or proof.json was changed",
                crate::verify::hex(&root),
                crate::verify::hex(&cp.root)
            ),
        ));
    }
    check_proven(&proof, &cp.root, &mut kept)?;

    // 6. Completeness: a proven entry before the period (unless it starts at entry 0) and
    // one after it, always.
    check_period(&proof, in_period)?;

    // 7. The export recorded itself: the entry proof.json names, after the period.
    check_export(&proof, &kept)?;

    // 8. events.csv: one row per entry of the period (narrowed by agent), equal to its
    // leaf; the leaves are read a second time, beside the CSV rows.
    let rows = check_events(dir, &proof, open_leaves(dir)?, &hashes)?;

    // 9. policy_changes.csv and policies/ against the policy_changed leaves.
    let claims = policies::Claims {
        leaves: &kept,
        first_seq: proof.first_seq,
        last_seq: proof.last_seq,
        to_unix_nanos: proof.to_unix_nanos,
        agents: &proof.agents,
        files: &policy_files,
    };
    let read_policy = |path: &str| {
        if policy_files.contains(path) {
            std::fs::read(dir.join(path)).map_err(|e| format!("cannot read {path}: {e}"))
        } else {
            Err(format!("{path} is not in the bundle"))
        }
    };
    policies::check(&read(dir, POLICY_CHANGES)?, &claims, read_policy)
        .map_err(|e| fail(POLICY_CHANGES, e))?;

    Ok(Report {
        key: source,
        origin,
        tree_size: cp.size,
        first_seq: proof.first_seq,
        last_seq: proof.last_seq,
        export_seq: proof.export_seq,
        files: listed.len(),
        events_rows: rows,
    })
}

/// `proof.json`'s `entries`: sorted, outside the range, canonical leaves of their seq, each
/// in the checkpoint's tree. They join `kept`.
fn check_proven(
    proof: &ProofFile,
    root: &Hash,
    kept: &mut BTreeMap<u64, pb::Entry>,
) -> Result<(), BundleError> {
    let mut previous = None;
    for p in &proof.entries {
        let what = format!("entries: entry {}", p.seq);
        if previous.is_some_and(|prev| prev >= p.seq) || (proof.start..proof.end).contains(&p.seq) {
            return Err(fail(PROOF, format!("{what} is out of order, repeated or inside the range")));
        }
        previous = Some(p.seq);
        let bytes = parse_hex(&p.leaf)
            .ok_or_else(|| fail(PROOF, format!("{what}: the leaf is not lowercase hex")))?;
        let entry = leaf::decode_canonical(&bytes).map_err(|e| fail(PROOF, format!("{what}: {e}")))?;
        if entry.seq != p.seq {
            return Err(fail(PROOF, format!("{what}: the leaf is entry {}", entry.seq)));
        }
        let path: Vec<Hash> = p
            .path
            .iter()
            .map(|h| {
                parse_hash(h).ok_or_else(|| fail(PROOF, format!("{what}: a path hash is not 64 hex digits")))
            })
            .collect::<Result<_, _>>()?;
        merkle::verify_inclusion(&merkle::leaf_hash(&bytes), p.seq, proof.tree_size, &path, root)
            .map_err(|e| fail("inclusion proof", format!("{what} is not in the checkpoint's tree: {e}")))?;
        kept.insert(p.seq, entry);
    }
    Ok(())
}

/// The `evidence_exported` entry of `export_seq`: proven, after the period, naming the
/// bundle's period and agents.
fn check_export(proof: &ProofFile, kept: &BTreeMap<u64, pb::Entry>) -> Result<(), BundleError> {
    let check = "export entry";
    let seq = proof.export_seq;
    // The range's entries of other kinds are not kept.
    let entry = kept.get(&seq).ok_or_else(|| match (proof.start..proof.end).contains(&seq) {
        true => fail(check, format!("entry {seq} of leaves.bin is not evidence_exported")),
        false => fail(check, format!("entry {seq} is neither in leaves.bin nor proven in proof.json")),
    })?;
    if entry.kind != pb::Kind::EvidenceExported as i32 {
        return Err(fail(
            check,
            format!("entry {seq} is a {} entry, not evidence_exported", pb::Kind::name_of(entry.kind)),
        ));
    }
    if entry.time_unix_nanos < proof.to_unix_nanos || seq <= proof.last_seq {
        return Err(fail(check, format!("entry {seq} is not after the period")));
    }
    #[derive(serde::Deserialize)]
    struct Details {
        from: String,
        to: String,
        agents: Vec<String>,
    }
    let d: Details = serde_json::from_str(&entry.details)
        .map_err(|e| fail(check, format!("entry {seq}: its details do not name a period: {e}")))?;
    let want = (time_text(proof.from_unix_nanos), time_text(proof.to_unix_nanos), &proof.agents);
    if (&d.from, &d.to, &d.agents) != (&want.0, &want.1, want.2) {
        return Err(fail(
            check,
            format!(
                "entry {seq} recorded an export of {}..{} for {:?}, proof.json says {}..{} for {:?}",
                d.from, d.to, d.agents, want.0, want.1, want.2
            ),
        ));
    }
    Ok(())
}

/// The period is complete: the leaf before it is in the range and older than `from` (or
/// the period starts at entry 0), and the leaf after it is in the range, at or after `to`.
/// `in_period`: the first and last seq of the leaves whose time is in the period (times
/// never decrease along the leaves, which the caller checked, so those are all between).
fn check_period(proof: &ProofFile, in_period: Option<(u64, u64)>) -> Result<(), BundleError> {
    let check = "completeness";
    let Some((first, last)) = in_period else {
        return Err(fail(check, "no entry of the bundle is in the period"));
    };
    if (first, last) != (proof.first_seq, proof.last_seq) {
        return Err(fail(
            check,
            format!(
                "the period holds entries {first}..={last}, proof.json says {}..={}",
                proof.first_seq, proof.last_seq
            ),
        ));
    }
    if !(first == proof.start + 1 || (first == 0 && proof.start == 0)) {
        return Err(fail(
            check,
            format!("the entry before {first} (the proof that none was left out) is missing"),
        ));
    }
    if proof.end != last + 2 {
        return Err(fail(
            check,
            format!(
                "the range must end with the one entry after {last} (at or after the period's end, the proof that none was left out); it ends at {}",
                proof.end
            ),
        ));
    }
    Ok(())
}

fn open_leaves(dir: &Path) -> Result<LeafReader<std::io::BufReader<std::fs::File>>, BundleError> {
    let file =
        std::fs::File::open(dir.join(LEAVES)).map_err(|e| fail(LEAVES, format!("cannot read: {e}")))?;
    Ok(LeafReader::new(std::io::BufReader::new(file)))
}

/// At most 120 characters of a cell, for a one-line message.
fn clip(cell: &str) -> String {
    match cell.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &cell[..at]),
        None => cell.to_string(),
    }
}

fn check_events(
    dir: &Path,
    proof: &ProofFile,
    mut leaves: LeafReader<impl std::io::Read>,
    hashes: &[Hash],
) -> Result<usize, BundleError> {
    let file =
        std::fs::File::open(dir.join(EVENTS)).map_err(|e| fail(EVENTS, format!("cannot read: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(fail(EVENTS, format!("header: {e}"))),
        None => return Err(fail(EVENTS, "it is empty (no header)")),
    };
    let columns = super::event_columns();
    if !header.iter().eq(columns.iter().copied()) {
        return Err(fail(EVENTS, format!("the header is not {}", columns.join(","))));
    }
    let wanted = |agent: &str| proof.agents.is_empty() || proof.agents.iter().any(|a| a == agent);
    let mut count = 0;
    for hash in hashes {
        // The leaves were checked (framing, canonical form, seq) on the first read.
        let Some(bytes) = leaves.next_leaf().map_err(|e| fail(LEAVES, e))? else { break };
        let entry = leaf::decode_canonical(bytes).map_err(|e| fail(LEAVES, e.to_string()))?;
        if !((proof.first_seq..=proof.last_seq).contains(&entry.seq) && wanted(&entry.agent)) {
            continue;
        }
        let entry = &entry;
        let line = count + 2;
        let record = match records.next() {
            Some(Ok(r)) => r,
            Some(Err(e)) => return Err(fail(EVENTS, format!("line {line}: {e}"))),
            None => {
                return Err(fail(
                    EVENTS,
                    format!("it ends at line {}, but entry {} is missing", line - 1, entry.seq),
                ));
            }
        };
        if record.len() != columns.len() {
            return Err(fail(
                EVENTS,
                format!("line {line} has {} cells, expected {}", record.len(), columns.len()),
            ));
        }
        let raw: Vec<&str> = record.iter().collect();
        if unneutralise(raw[0]) != entry.seq.to_string() {
            return Err(fail(
                EVENTS,
                format!(
                    "line {line} is entry {}, expected entry {}: rows were dropped, added or reordered",
                    raw[0], entry.seq
                ),
            ));
        }
        // The raw cell must be the neutralised form of the leaf's value: a formula cell
        // whose protecting `'` was taken off fails here.
        let want = event_row(entry, hash);
        for ((column, have), want) in columns.iter().zip(&raw).zip(&want) {
            if *have != neutralise(want) {
                return Err(fail(
                    EVENTS,
                    format!(
                        "line {line} (entry {}), column {column}: the CSV says {:?}, the signed leaf says {:?}",
                        entry.seq,
                        clip(have),
                        clip(&neutralise(want))
                    ),
                ));
            }
        }
        count += 1;
    }
    if let Some(extra) = records.next() {
        let seq = extra.ok().and_then(|r| r.get(0).map(|c| unneutralise(c).into_owned())).unwrap_or_default();
        return Err(fail(
            EVENTS,
            format!("line {} (entry {seq:?}) is not an entry of the period: rows were added", count + 2),
        ));
    }
    Ok(count)
}
