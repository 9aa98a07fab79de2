//! Checks an evidence bundle offline, with nothing but its files and a verifier key, in
//! the order docs/FORMAT.md gives; the first check that fails is named and ends it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ledger_proto::merkle::{self, Hash};
use ledger_proto::note::NoteVerifier;
use ledger_proto::{leaf, manifest};
use ledger_query::unneutralise;

use super::{
    CHECKPOINT, EVENTS, LEAVES, LeafReader, MANIFEST, PROOF, PROOF_FORMAT, ProofFile, VKEY, event_row,
    manifest_files, parse_hash, rebuild_root,
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

    // 1. The manifest: signed by the ledger's key, and listing exactly the files present.
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

    // 2. The checkpoint.
    let cp_note = read_text(dir, CHECKPOINT)?;
    let cp = verifier.verify_checkpoint(&cp_note).map_err(|e| fail(CHECKPOINT, format!("signature: {e}")))?;

    // 3. The leaves: canonical, contiguous, the whole period, and tied to the root.
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
    // Read one leaf at a time: only the leaf hashes (32 bytes each) are kept.
    let mut hashes: Vec<Hash> = Vec::new();
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
    check_period(&proof, in_period)?;

    // 4. events.csv: one row per entry of the period (narrowed by agent), equal to its
    // leaf; the leaves are read a second time, beside the CSV rows.
    let rows = check_events(dir, &proof, open_leaves(dir)?, &hashes)?;
    Ok(Report {
        key: source,
        origin,
        tree_size: cp.size,
        first_seq: proof.first_seq,
        last_seq: proof.last_seq,
        files: listed.len(),
        events_rows: rows,
    })
}

/// The period is complete: the witness before it is older than `from` (or the range starts
/// at entry 0), the one after is at or past `to` (or the range ends at the checkpoint).
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
    if first > proof.start + 1 || (first == proof.start && proof.start != 0) {
        return Err(fail(
            check,
            format!("the entry before {first} (the proof that none was left out) is missing"),
        ));
    }
    let last_leaf = proof.end - 1;
    if last + 1 < last_leaf || (last == last_leaf && proof.end != proof.tree_size) {
        return Err(fail(
            check,
            format!("the entry after {last} (the proof that none was left out) is missing"),
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
        let cells: Vec<String> = record.iter().map(|c| unneutralise(c).into_owned()).collect();
        if cells[0] != entry.seq.to_string() {
            return Err(fail(
                EVENTS,
                format!(
                    "line {line} is entry {}, expected entry {}: rows were dropped, added or reordered",
                    cells[0], entry.seq
                ),
            ));
        }
        let want = event_row(entry, hash);
        for ((column, have), want) in columns.iter().zip(&cells).zip(&want) {
            if have != want {
                return Err(fail(
                    EVENTS,
                    format!(
                        "line {line} (entry {}), column {column}: the CSV says {:?}, the signed leaf says {:?}",
                        entry.seq,
                        clip(have),
                        clip(want)
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
