//! `policy_changes.csv` and `policies/`: every policy version in force at some moment of
//! the period. Both sides build a row from the version's `policy_changed` leaf, so the
//! verifier checks each claim against the signed log, not against the daemon's word.

use std::collections::{BTreeMap, BTreeSet};

use ledger_proto::pb;
use serde::Deserialize;

use super::layout::policy_path;
use super::time_text;

/// The columns of `policy_changes.csv`.
pub const COLUMNS: [&str; 12] = [
    "agent",
    "version",
    "time",
    "seq",
    "author",
    "approver",
    "reason",
    "hash",
    "prev_hash",
    "writer_uid",
    "changed_in_period",
    "file",
];

/// What a `policy_changed` entry's `details` hold (other members are ignored).
#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    text: String,
    #[serde(default)]
    hash: String,
    #[serde(default)]
    prev_hash: String,
    #[serde(default)]
    author: String,
    #[serde(default)]
    approver: String,
}

/// One policy version as its leaf states it: the CSV row (before neutralisation) and the
/// document text (the bytes of its file).
pub struct Version {
    pub row: Vec<String>,
    pub text: String,
}

/// The row and text of the version a `policy_changed` leaf records; `in_period`: its seq
/// is one of the period's entries.
pub fn version(e: &pb::Entry, in_period: bool) -> Result<Version, String> {
    if e.kind != pb::Kind::PolicyChanged as i32 {
        return Err(format!("entry {} is not a policy_changed entry", e.seq));
    }
    let d: Details = serde_json::from_str(&e.details)
        .map_err(|err| format!("entry {}: its details are not a policy change: {err}", e.seq))?;
    let row = vec![
        e.agent.clone(),
        e.policy_version.to_string(),
        time_text(e.time_unix_nanos),
        e.seq.to_string(),
        d.author,
        d.approver,
        e.reason.clone(),
        d.hash,
        d.prev_hash,
        e.writer_uid.to_string(),
        in_period.to_string(),
        policy_path(&e.agent, e.policy_version),
    ];
    Ok(Version { row, text: d.text })
}

/// What the verifier needs to check `policy_changes.csv`.
pub struct Claims<'a> {
    /// The proven leaves the bundle keeps, by seq: every `policy_changed` and
    /// `evidence_exported` leaf of the range, and every entry of `proof.json`'s `entries`.
    pub leaves: &'a BTreeMap<u64, pb::Entry>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub to_unix_nanos: i64,
    /// `proof.json`'s agents (empty: all).
    pub agents: &'a [String],
    /// The `policies/` files the manifest lists.
    pub files: &'a BTreeSet<String>,
}

/// Checks `policy_changes.csv` (its raw bytes) and the `policies/` files against the
/// leaves; `read` gives a file's bytes. Returns the number of rows. The error names the
/// row or file.
pub fn check(
    csv_bytes: &[u8],
    claims: &Claims<'_>,
    read: impl Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<usize, String> {
    let wanted =
        |agent: &str| agent == "*" || claims.agents.is_empty() || claims.agents.iter().any(|a| a == agent);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(csv_bytes);
    let mut records = reader.records();
    match records.next() {
        Some(Ok(h)) if h.iter().eq(COLUMNS) => {}
        Some(Err(e)) => return Err(format!("header: {e}")),
        _ => return Err(format!("the header is not {}", COLUMNS.join(","))),
    }
    let mut listed: BTreeSet<u64> = BTreeSet::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut versions: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for (i, record) in records.enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| format!("line {line}: {e}"))?;
        if record.len() != COLUMNS.len() {
            return Err(format!("line {line} has {} cells, expected {}", record.len(), COLUMNS.len()));
        }
        let seq: u64 = super::layout::decimal::parse(&record[3])
            .ok_or_else(|| format!("line {line}: seq {:?} is not a decimal number", &record[3]))?;
        let leaf = claims.leaves.get(&seq).ok_or_else(|| {
            format!("line {line}: entry {seq} is neither in leaves.bin nor proven in proof.json's entries")
        })?;
        let version = version(leaf, (claims.first_seq..=claims.last_seq).contains(&seq))
            .map_err(|e| format!("line {line}: {e}"))?;
        for ((column, have), want) in COLUMNS.iter().zip(record.iter()).zip(&version.row) {
            if have != ledger_query::neutralise(want) {
                return Err(format!(
                    "line {line} (entry {seq}), column {column}: the CSV says {have:?}, the signed leaf says {:?}",
                    ledger_query::neutralise(want)
                ));
            }
        }
        if leaf.time_unix_nanos >= claims.to_unix_nanos {
            return Err(format!("line {line}: version set by entry {seq} came after the period"));
        }
        if !wanted(&leaf.agent) {
            return Err(format!("line {line}: agent {:?} is not among proof.json's agents", leaf.agent));
        }
        let file = &version.row[11];
        let bytes = read(file).map_err(|e| format!("line {line}: {e}"))?;
        if bytes != version.text.as_bytes() {
            return Err(format!("{file} is not the text the signed entry {seq} records"));
        }
        if !listed.insert(seq) || !files.insert(file.clone()) {
            return Err(format!("line {line}: entry {seq} is listed twice"));
        }
        versions.entry(leaf.agent.clone()).or_default().push((leaf.policy_version, seq));
    }
    // Every change in the period is listed, and each agent's versions follow each other.
    for (seq, leaf) in claims.leaves.range(claims.first_seq..=claims.last_seq) {
        if leaf.kind == pb::Kind::PolicyChanged as i32 && wanted(&leaf.agent) && !listed.contains(seq) {
            return Err(format!("the policy change of entry {seq} (agent {:?}) is not listed", leaf.agent));
        }
    }
    for (agent, mut list) in versions {
        list.sort_unstable();
        if list.windows(2).any(|w| w[1].0 != w[0].0 + 1) {
            let numbers: Vec<u64> = list.iter().map(|v| v.0).collect();
            return Err(format!("the versions listed for agent {agent:?} are not consecutive: {numbers:?}"));
        }
        // A first listed version set inside the period replaced one in force at its start.
        if let Some(&(version, seq)) = list.first()
            && version > 1
            && (claims.first_seq..=claims.last_seq).contains(&seq)
        {
            return Err(format!(
                "version {} of agent {agent:?}, in force at the start of the period, is not listed",
                version - 1
            ));
        }
    }
    if let Some(extra) = claims.files.difference(&files).next() {
        return Err(format!("{extra} is in the bundle but no row of policy_changes.csv names it"));
    }
    Ok(listed.len())
}
