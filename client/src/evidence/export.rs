//! Writes an evidence bundle from a running daemon: the entries of one period with a
//! witness entry outside each end, a fresh checkpoint, the range proof, the CSV views of
//! the registry and policies, the summary page, and the manifest the daemon signs.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use ledger_proto::merkle::{self, Hash};
use ledger_proto::{leaf, pb};
use ledger_query::{CsvWriter, OwnedValue, Value};

use super::layout::{ACCESS_REVIEW, AGENTS, POLICY_CHANGES, SUMMARY, VERIFY_MD, policy_path};
use super::{
    CHECKPOINT, EVENTS, LEAVES, MANIFEST, PROOF, PROOF_FORMAT, ProofFile, ProvenEntry, VKEY, event_row,
    frame_leaf, inclusion_ranges, manifest_files, outside_subtrees, time_text,
};
use crate::{Client, ClientError};

/// What to put in a bundle.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The period: entries with `from <= time < to` (ns since the Unix epoch, UTC).
    pub from_unix_nanos: i64,
    pub to_unix_nanos: i64,
    /// Narrow the CSV views and the summary to these agents (empty: all).
    pub agents: Vec<String>,
    /// The directory to create; it must not exist yet, or be empty.
    pub out: PathBuf,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub first_seq: u64,
    pub last_seq: u64,
    pub tree_size: u64,
    pub events: u64,
    /// The `evidence_exported` entry the export wrote.
    pub export_seq: u64,
}

/// Why no bundle was written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write {path}: {source}", path = .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the daemon returned something that does not hold together: {0}")]
    Malformed(String),
}

impl From<tonic::Status> for ExportError {
    fn from(status: tonic::Status) -> Self {
        ExportError::Client(ClientError::from(status))
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ExportError> {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ExportError::Io { path: parent.into(), source })?;
    }
    create_new(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
        .map_err(|source| ExportError::Io { path, source })
}

/// A bundle's files are created, never opened if there (`O_EXCL`: a link or file planted in
/// the directory between its check and the write makes the export fail, not follow it).
fn create_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

/// Rows of strings as CSV through the query crate's writer, so every cell is neutralised
/// against spreadsheet formulas exactly as `ledgerctl query --format csv` does.
pub(super) fn csv_bytes(
    columns: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<Vec<u8>, String> {
    let columns: Vec<String> = columns.iter().map(|c| (*c).to_string()).collect();
    let mut out = Vec::new();
    let mut writer = CsvWriter::new(&mut out, &columns, TimeZone::UTC).map_err(|e| e.to_string())?;
    let mut chunk: Vec<Vec<OwnedValue>> = Vec::with_capacity(1024);
    for row in rows {
        chunk.push(row.into_iter().map(|s| Value::Str(Cow::Owned(s))).collect());
        if chunk.len() == 1024 {
            writer.write_rows(&chunk).map_err(|e| e.to_string())?;
            chunk.clear();
        }
    }
    writer.write_rows(&chunk).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} entries ({eta})")
    {
        bar.set_style(style);
    }
    bar.set_message("reading the log");
    bar
}

/// Writes the bundle. The daemon is asked for everything once; nothing it says is
/// trusted: the caller should run [`super::verify::verify_bundle`] on the result (the
/// CLI does).
pub async fn export(client: &mut Client, opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let now = jiff::Timestamp::now().as_nanosecond();
    let to = i128::from(opts.to_unix_nanos).min(now) as i64;
    if opts.from_unix_nanos >= to {
        return Err(ExportError::Usage(format!(
            "the period is empty: --from {} is not before --to {} (cut at now)",
            time_text(opts.from_unix_nanos),
            time_text(to)
        )));
    }
    if std::fs::read_dir(&opts.out).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ExportError::Usage(format!(
            "{} exists and is not empty: give a new directory",
            opts.out.display()
        )));
    }
    let created = !opts.out.exists();
    std::fs::create_dir_all(&opts.out)
        .map_err(|source| ExportError::Io { path: opts.out.clone(), source })?;
    let result = write_bundle(client, opts, to).await;
    if result.is_err() {
        // No half bundle is left behind: the directory was new or empty.
        let cleared = if created {
            std::fs::remove_dir_all(&opts.out)
        } else {
            std::fs::read_dir(&opts.out).and_then(|entries| {
                entries.flatten().try_for_each(|e| {
                    let path = e.path();
                    if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) }
                })
            })
        };
        if let Err(e) = cleared {
            eprintln!("ledgerctl: could not remove the partial bundle in {}: {e}", opts.out.display());
        }
    }
    result
}

/// The open output files of the walk over the period.
struct Streams {
    leaves: BufWriter<File>,
    leaves_path: PathBuf,
    events: CsvWriter<BufWriter<File>>,
    events_path: PathBuf,
    /// Rows waiting for the CSV writer, which takes them in chunks.
    rows: Vec<Vec<OwnedValue>>,
    frame: Vec<u8>,
    /// The `policy_changed` and `evidence_exported` entries written to leaves.bin.
    kept: BTreeMap<u64, pb::Entry>,
}

impl Streams {
    fn create(dir: &Path) -> Result<Streams, ExportError> {
        let open = |name: &str| {
            let path = dir.join(name);
            create_new(&path)
                .map(|f| (BufWriter::new(f), path.clone()))
                .map_err(|source| ExportError::Io { path, source })
        };
        let (leaves, leaves_path) = open(LEAVES)?;
        let (events, events_path) = open(EVENTS)?;
        let columns: Vec<String> = super::event_columns().iter().map(|c| (*c).to_string()).collect();
        let events = CsvWriter::new(events, &columns, TimeZone::UTC)
            .map_err(|source| ExportError::Io { path: events_path.clone(), source })?;
        Ok(Streams {
            leaves,
            leaves_path,
            events,
            events_path,
            rows: Vec::with_capacity(1024),
            frame: Vec::new(),
            kept: BTreeMap::new(),
        })
    }

    fn leaf(&mut self, read: &Read) -> Result<(), ExportError> {
        if [pb::Kind::PolicyChanged as i32, pb::Kind::EvidenceExported as i32].contains(&read.entry.kind) {
            self.kept.insert(read.entry.seq, read.entry.clone());
        }
        self.frame.clear();
        frame_leaf(&mut self.frame, &read.leaf).map_err(ExportError::Malformed)?;
        self.leaves
            .write_all(&self.frame)
            .map_err(|source| ExportError::Io { path: self.leaves_path.clone(), source })
    }

    fn event(&mut self, row: Vec<String>) -> Result<(), ExportError> {
        self.rows.push(row.into_iter().map(|s| Value::Str(Cow::Owned(s))).collect());
        if self.rows.len() == 1024 { self.flush_rows() } else { Ok(()) }
    }

    fn flush_rows(&mut self) -> Result<(), ExportError> {
        self.events
            .write_rows(&self.rows)
            .map_err(|source| ExportError::Io { path: self.events_path.clone(), source })?;
        self.rows.clear();
        Ok(())
    }

    /// Flushes both files; returns the kept entries.
    fn finish(mut self) -> Result<BTreeMap<u64, pb::Entry>, ExportError> {
        self.flush_rows()?;
        let events_path = self.events_path.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ExportError::Io { path, source }
        };
        // Flushes through to the file (the csv writer flushes its BufWriter).
        self.events.finish().map_err(io(&events_path))?;
        self.leaves.flush().map_err(io(&self.leaves_path))?;
        Ok(self.kept)
    }
}

/// One entry as read: the entry, its leaf bytes and leaf hash.
struct Read {
    entry: pb::Entry,
    leaf: Vec<u8>,
    hash: Hash,
}

impl Read {
    fn new(entry: pb::Entry) -> Read {
        let leaf = leaf::leaf_bytes(&entry);
        let hash = merkle::leaf_hash(&leaf);
        Read { entry, leaf, hash }
    }
}

async fn write_bundle(
    client: &mut Client,
    opts: &ExportOptions,
    to: i64,
) -> Result<ExportSummary, ExportError> {
    // An empty period is refused before anything is recorded.
    let first = first_at_or_after(client, opts.from_unix_nanos).await?;
    let Some((first, _)) = first.filter(|(_, time)| *time < to) else {
        return Err(ExportError::Usage(format!(
            "no entries between {} and {}: a bundle needs at least one; widen the period",
            time_text(opts.from_unix_nanos),
            time_text(to)
        )));
    };
    // The export records itself, and the checkpoint the daemon signs right after covers
    // that entry: the bundle always proves an entry after its period.
    let recorded = client.record_export(opts.from_unix_nanos, to, opts.agents.clone()).await?;
    let to = recorded.to_unix_nanos;
    let cp = recorded
        .checkpoint
        .ok_or_else(|| ExportError::Malformed("RecordExport sent no checkpoint".into()))?;
    let size = cp.size;
    if recorded.from_unix_nanos != opts.from_unix_nanos || to > opts.to_unix_nanos || recorded.seq >= size {
        return Err(ExportError::Malformed(format!(
            "RecordExport recorded entry {} for {}..{} under a checkpoint of size {size}",
            recorded.seq, recorded.from_unix_nanos, to
        )));
    }

    // Walk the log from just before the period up to the checkpoint, writing leaves.bin
    // and events.csv as the entries come (nothing of the period is held in memory): the
    // last entry before the period, the period, and the first entry after it. Entry times
    // never decrease along seq, so the daemon finds where the period starts by binary
    // search.
    let walk_from = first.min(size).saturating_sub(1);
    let bar = progress_bar(opts.progress, size - walk_from);
    let dir = &opts.out;
    let mut out = Streams::create(dir)?;
    let wanted = |agent: &str| opts.agents.is_empty() || opts.agents.iter().any(|a| a == agent);
    let mut period = super::html::Period::default();
    let mut before: Option<Read> = None;
    let (mut start, mut end) = (None, walk_from);
    let (mut first_seq, mut last_seq) = (None, 0);
    let mut witness = false;
    let mut expected = walk_from;
    let mut stream = client.entries(walk_from, size, false).await?;
    while let Some(stored) = stream.message().await? {
        let entry = stored.entry.ok_or_else(|| ExportError::Malformed("an entry without contents".into()))?;
        if entry.seq != expected {
            return Err(ExportError::Malformed(format!("expected entry {expected} next, got {}", entry.seq)));
        }
        expected += 1;
        bar.set_position(expected - walk_from);
        let read = Read::new(entry);
        let time = read.entry.time_unix_nanos;
        if time < opts.from_unix_nanos {
            // Only the last one before the period is kept, as its witness.
            before = Some(read);
            continue;
        }
        if start.is_none() {
            start = Some(before.as_ref().map_or(read.entry.seq, |b| b.entry.seq));
            if let Some(b) = before.take() {
                out.leaf(&b)?;
            }
        }
        if time >= to {
            if first_seq.is_some() {
                // The witness after the period.
                out.leaf(&read)?;
                end = read.entry.seq + 1;
                witness = true;
            }
            break;
        }
        out.leaf(&read)?;
        end = read.entry.seq + 1;
        first_seq.get_or_insert(read.entry.seq);
        last_seq = read.entry.seq;
        if wanted(&read.entry.agent) {
            out.event(event_row(&read.entry, &read.hash))?;
            period.add(&read.entry);
        }
    }
    drop(stream);
    bar.finish_and_clear();
    let Some(first_seq) = first_seq else {
        return Err(ExportError::Malformed(format!(
            "the daemon listed entries before {} but none of them is in the period",
            time_text(to)
        )));
    };
    if !witness {
        return Err(ExportError::Malformed(format!(
            "checkpoint of size {size} holds no entry after the period, not even export entry {}",
            recorded.seq
        )));
    }
    let kept = out.finish()?;
    let start = start.unwrap_or(first_seq);

    // The outside hashes are the siblings on the inclusion paths of the range's ends.
    let mut known: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for m in [start, end - 1] {
        let proof = client.prove(m, size).await?;
        let ranges = inclusion_ranges(m, size);
        if proof.path.len() != ranges.len() {
            return Err(ExportError::Malformed(format!(
                "the inclusion proof of entry {m} has the wrong length"
            )));
        }
        known.extend(ranges.into_iter().zip(proof.path));
    }
    let mut hashes = Vec::new();
    for r in outside_subtrees(size, start, end) {
        let hash = known
            .get(&r)
            .ok_or_else(|| ExportError::Malformed(format!("no hash for subtree {}..{}", r.0, r.1)))?;
        hashes.push(crate::verify::hex(hash));
    }

    // Entries outside the range the bundle relies on: its export entry and the policy
    // versions set before the period, each proven on its own.
    let mut leaves = Leaves { kept, proven: BTreeMap::new(), size, range: start..end };
    leaves.get(client, recorded.seq).await?;
    let views = registry_views(client, &mut leaves, opts, to, first_seq, last_seq).await?;

    write(dir, CHECKPOINT, cp.note.as_bytes())?;
    let proof = ProofFile {
        format: PROOF_FORMAT.into(),
        tree_size: size,
        start,
        end,
        from_unix_nanos: opts.from_unix_nanos,
        to_unix_nanos: to,
        first_seq,
        last_seq,
        export_seq: recorded.seq,
        agents: opts.agents.clone(),
        hashes,
        entries: leaves.proven.into_values().collect(),
    };
    let proof_text =
        serde_json::to_string_pretty(&proof).map_err(|e| ExportError::Malformed(e.to_string()))?;
    write(dir, PROOF, format!("{proof_text}\n").as_bytes())?;

    for (name, bytes) in &views.files {
        write(dir, name, bytes)?;
    }
    let html = super::html::summary(&super::html::Inputs {
        period: &period,
        from: opts.from_unix_nanos,
        to,
        first_seq,
        last_seq,
        policy_changes: &views.policy_changes,
    });
    write(dir, SUMMARY, html.as_bytes())?;

    // The daemon names its key when it signs; the first signature (of the files so far)
    // only tells us the key, so that verifier.vkey and VERIFY.md are covered by the
    // manifest that is kept.
    let vkey =
        client.sign_manifest(to_wire(manifest_files(dir).map_err(ExportError::Malformed)?)).await?.vkey;
    write(dir, VKEY, format!("{vkey}\n").as_bytes())?;
    write(dir, VERIFY_MD, super::html::verify_md(&vkey).as_bytes())?;
    let signed = client.sign_manifest(to_wire(manifest_files(dir).map_err(ExportError::Malformed)?)).await?;
    write(dir, MANIFEST, signed.note.as_bytes())?;

    Ok(ExportSummary { first_seq, last_seq, tree_size: size, events: period.len(), export_seq: recorded.seq })
}

/// The leaves the bundle relies on besides the walk: those kept from the range
/// (`policy_changed`, `evidence_exported`), and any other fetched with an inclusion proof.
struct Leaves {
    kept: BTreeMap<u64, pb::Entry>,
    proven: BTreeMap<u64, ProvenEntry>,
    size: u64,
    range: std::ops::Range<u64>,
}

impl Leaves {
    /// The entry at `seq`: from the range, or proven against the checkpoint's tree and
    /// added to `proof.json`'s `entries`.
    async fn get(&mut self, client: &mut Client, seq: u64) -> Result<pb::Entry, ExportError> {
        if let Some(e) = self.kept.get(&seq) {
            return Ok(e.clone());
        }
        if self.range.contains(&seq) {
            return Err(ExportError::Malformed(format!("entry {seq} of the range was not kept")));
        }
        let proof = client.prove(seq, self.size).await?;
        let entry =
            proof.entry.ok_or_else(|| ExportError::Malformed(format!("no entry {seq} in its proof")))?;
        if entry.seq != seq || proof.path.len() != inclusion_ranges(seq, self.size).len() {
            return Err(ExportError::Malformed(format!("the inclusion proof of entry {seq} does not fit")));
        }
        let leaf = crate::verify::hex(&leaf::leaf_bytes(&entry));
        let path = proof.path.iter().map(|h| crate::verify::hex(h)).collect();
        self.proven.insert(seq, ProvenEntry { seq, leaf, path });
        self.kept.insert(seq, entry.clone());
        Ok(entry)
    }
}

/// The seq and time of the first entry at or after `from` (ns), if any, found by the
/// daemon's query engine (a binary search over entry times).
async fn first_at_or_after(client: &mut Client, from: i64) -> Result<Option<(u64, i64)>, ExportError> {
    let text = format!("time >= {} | fields seq, time | limit 1", time_text(from));
    let mut rows = client.query(&text, "").await?;
    while let Some(chunk) = rows.next_rows().await? {
        if let Some(row) = chunk.first() {
            return match row.as_slice() {
                [ledger_query::Value::Int(seq), ledger_query::Value::Time(time)] => u64::try_from(*seq)
                    .map(|seq| Some((seq, *time)))
                    .map_err(|_| ExportError::Malformed(format!("the daemon answered seq {seq}"))),
                other => {
                    Err(ExportError::Malformed(format!("the daemon answered {other:?} for a seq and time")))
                }
            };
        }
    }
    Ok(None)
}

fn to_wire(files: Vec<ledger_proto::manifest::ManifestFile>) -> Vec<pb::ManifestFile> {
    files.into_iter().map(|f| pb::ManifestFile { path: f.path, blake3: f.blake3 }).collect()
}

/// The registry and policy files, and the policy changes for the summary.
struct Views {
    files: Vec<(String, Vec<u8>)>,
    policy_changes: Vec<pb::PolicyVersion>,
}

async fn registry_views(
    client: &mut Client,
    leaves: &mut Leaves,
    opts: &ExportOptions,
    to: i64,
    first_seq: u64,
    last_seq: u64,
) -> Result<Views, ExportError> {
    let wanted = |agent: &str| opts.agents.is_empty() || opts.agents.iter().any(|a| a == agent);
    let in_period = |seq: u64| (first_seq..=last_seq).contains(&seq);
    let mut files = Vec::new();

    let agents = client
        .admin()
        .list_agents(pb::ListAgentsRequest { at_unix_nanos: to, include_retired: true })
        .await?
        .into_inner()
        .agents;
    let agent_rows = agents.iter().filter(|a| wanted(&a.name)).map(|a| {
        vec![
            a.name.clone(),
            a.id.clone(),
            a.owner.clone(),
            a.purpose.clone(),
            a.scope.clone(),
            a.retired.to_string(),
            a.retired_reason.clone(),
            time_text(a.registered_unix_nanos),
            a.registered_seq.to_string(),
            time_text(a.changed_unix_nanos),
            a.changed_seq.to_string(),
            a.policy_version.to_string(),
            (in_period(a.registered_seq) || in_period(a.changed_seq)).to_string(),
        ]
    });
    let columns = [
        "name",
        "id",
        "owner",
        "purpose",
        "scope",
        "retired",
        "retired_reason",
        "registered",
        "registered_seq",
        "changed",
        "changed_seq",
        "policy_version",
        "changed_in_period",
    ];
    files.push((AGENTS.to_string(), csv_bytes(&columns, agent_rows).map_err(ExportError::Malformed)?));

    // Every policy version in force at some moment of the period.
    let mut names: BTreeSet<String> = agents.iter().map(|a| a.name.clone()).collect();
    names.insert("*".into());
    let mut versions: Vec<pb::PolicyVersion> = Vec::new();
    for name in names.iter().filter(|n| *n == "*" || wanted(n)) {
        let history =
            match client.admin().get_policy_history(pb::PolicyHistoryRequest { agent: name.clone() }).await {
                Ok(h) => h.into_inner().versions,
                Err(status) if status.code() == tonic::Code::NotFound => Vec::new(),
                Err(status) => return Err(status.into()),
            };
        for (i, v) in history.iter().enumerate() {
            let next = history.get(i + 1).map(|n| n.time_unix_nanos);
            if v.time_unix_nanos < to && next.is_none_or(|t| t > opts.from_unix_nanos) {
                versions.push(v.clone());
            }
        }
    }
    let mut policy_rows = Vec::new();
    for v in &versions {
        // The row and the text come from the version's signed leaf, as the verifier reads them.
        let entry = leaves.get(client, v.seq).await?;
        let version = super::policies::version(&entry, in_period(v.seq)).map_err(ExportError::Malformed)?;
        if version.row[11] != policy_path(&v.agent, v.version) || version.text != v.text {
            return Err(ExportError::Malformed(format!(
                "policy {} v{} differs from its entry {}",
                v.agent, v.version, v.seq
            )));
        }
        files.push((version.row[11].clone(), version.text.into_bytes()));
        policy_rows.push(version.row);
    }
    files.push((
        POLICY_CHANGES.into(),
        csv_bytes(&super::policies::COLUMNS, policy_rows).map_err(ExportError::Malformed)?,
    ));

    let mut review_rows = Vec::new();
    for (label, at) in [("start", opts.from_unix_nanos), ("end", to)] {
        let review = client
            .admin()
            .get_access_review(pb::AccessReviewRequest { at_unix_nanos: at })
            .await?
            .into_inner();
        for row in review.rows {
            let agent = row.agent.unwrap_or_default();
            if !wanted(&agent.name) {
                continue;
            }
            review_rows.push(vec![
                label.to_string(),
                time_text(at),
                agent.name,
                agent.id,
                row.policy_agent,
                row.policy_version.to_string(),
                row.policy_hash,
                serde_json::Value::from(row.rules).to_string(),
            ]);
        }
    }
    let columns =
        ["when", "at", "agent", "agent_id", "policy_agent", "policy_version", "policy_hash", "rules"];
    files.push((ACCESS_REVIEW.into(), csv_bytes(&columns, review_rows).map_err(ExportError::Malformed)?));
    let policy_changes = versions.into_iter().filter(|v| in_period(v.seq)).collect();
    Ok(Views { files, policy_changes })
}
