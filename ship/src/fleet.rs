//! `fleet verify`: checks every shipped log in a bucket against the trust file, streaming
//! one part at a time (memory bounded by the largest part, `batch.max_entries` entries).
//!
//! For each log: the leaves objects chain from entry 0 without gaps or overlaps; every
//! leaf is re-hashed into the Merkle tree; at each checkpoint object the note must be the
//! checkpoint of that size (an older one there is a ROLLBACK), signed by the pinned key or
//! a successor named by a `key_rotated` entry in the leaves below it (else KEY CHANGED),
//! consistent with the previous checkpoint through the shipped proof (else FORK), and its
//! root must be the recomputed one (else the leaves were changed: FAILED). Every Parquet
//! row must re-encode to exactly its leaf (same canonical bytes, same leaf hash, `time` the
//! microseconds of `time_unix_nanos`, in the partition of its own day), and the Parquet
//! files must cover every shipped entry once. With `--max-age`, a log whose newest
//! checkpoint is older is STALE (a host that stopped shipping). With `--state DIR`, each
//! log is also held to the checkpoint trusted on the last run, exactly as
//! `ledgerctl verify --state` does (rollback, fork), and the state moves on only when
//! every check of that log passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use ledger_client::state::{self, Alarm, exit};
use ledger_proto::merkle::{self, CompactRange, Hash};
use ledger_proto::note::{Checkpoint, NoteError, NoteVerifier};
use ledger_proto::{hex, leaf, pb};
use object_store::path::Path as ObjPath;

use crate::bucket::{Bucket, BucketError};
use crate::columns::{self, Row};
use crate::layout::{Layout, date_of, day_of, day_text, log_id};
use crate::trust::TrustedLog;

/// What kind of problem a line reports; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    // In the order the exit code is chosen when several logs have problems.
    Fork,
    Rollback,
    KeyChanged,
    Failed,
    Stale,
    Unreachable,
    Error,
}

impl Severity {
    pub fn exit_code(self) -> u8 {
        match self {
            Severity::Fork => exit::FORK,
            Severity::Rollback => exit::ROLLBACK,
            Severity::KeyChanged => exit::KEY_CHANGED,
            Severity::Failed => exit::FAILED,
            Severity::Stale => exit::STALE,
            Severity::Unreachable => exit::UNREACHABLE,
            Severity::Error => exit::ERROR,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Severity::Fork => "FORK",
            Severity::Rollback => "ROLLBACK",
            Severity::KeyChanged => "KEY CHANGED",
            Severity::Failed => "FAILED",
            Severity::Stale => "STALE",
            Severity::Unreachable => "UNREACHABLE",
            Severity::Error => "ERROR",
        }
    }
}

/// One problem, printed as one line.
#[derive(Debug, Clone)]
pub struct Problem {
    pub log: String,
    pub severity: Severity,
    pub text: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.log, self.severity.label(), self.text)
    }
}

/// What was found for one log (a row of the summary table).
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub log: String,
    /// Entries covered by the newest verified checkpoint.
    pub verified: u64,
    pub checkpoints: u64,
    pub parquet_rows: u64,
    /// Entries shipped past the newest checkpoint (an upload under way).
    pub pending: u64,
    /// Age of the newest checkpoint.
    pub age: Option<Duration>,
    pub ok: bool,
    /// Key rotations followed.
    pub rotations: Vec<String>,
}

/// The whole run.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<Problem>,
    pub logs: Vec<LogSummary>,
}

impl Report {
    /// 0 if nothing was found, else the code of the gravest problem.
    pub fn exit_code(&self) -> u8 {
        self.problems.iter().map(|p| p.severity).min().map_or(exit::OK, Severity::exit_code)
    }

    /// The summary table printed after the problem lines.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "LOG".to_string(),
            "VERIFIED".into(),
            "CHECKPOINTS".into(),
            "ROWS".into(),
            "PENDING".into(),
            "NEWEST".into(),
            "STATUS".into(),
        ]];
        for l in &self.logs {
            rows.push([
                l.log.clone(),
                l.verified.to_string(),
                l.checkpoints.to_string(),
                l.parquet_rows.to_string(),
                l.pending.to_string(),
                l.age.map_or("-".into(), |a| format!("{} ago", state::human(a))),
                if l.ok { "ok".into() } else { "PROBLEMS".into() },
            ]);
        }
        let widths: Vec<usize> =
            (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for r in rows {
            let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    pub trust: Vec<TrustedLog>,
    pub max_age: Option<Duration>,
    /// A directory of `verify --state` files, one per log (`LOG.json`).
    pub state_dir: Option<PathBuf>,
}

/// At most this many row mismatches are listed per log (then a count).
const MAX_ROW_LINES: usize = 5;

/// A leaves object decompresses to at most this many bytes per entry it names (a
/// hostile object cannot make the verifier allocate without bound).
const MAX_LEAF_BYTES: u64 = 16 * 1024 * 1024;

/// Verifies every log under the bucket's prefix.
pub async fn verify(bucket: &Bucket, opts: &Options) -> Report {
    let mut report = Report::default();
    // Logs present in the bucket (by their object-name form).
    let logs_dir = if bucket.prefix.is_empty() {
        ObjPath::from("logs")
    } else {
        ObjPath::from(format!("{}/logs", bucket.prefix))
    };
    let present = match bucket.subdirs(&logs_dir).await {
        Ok(dirs) => dirs.iter().filter_map(|d| d.filename().map(str::to_string)).collect::<Vec<_>>(),
        Err(e) => {
            report.problems.push(Problem {
                log: "-".into(),
                severity: unreachable_or_error(&e),
                text: e.to_string(),
            });
            return report;
        }
    };
    for name in &present {
        if !opts.trust.iter().any(|t| log_id(&t.origin) == *name) {
            report.problems.push(Problem {
                log: name.clone(),
                severity: Severity::Failed,
                text: "this log is in the bucket but not in the trust file: nothing it holds can be checked; add its `LOG-NAME VERIFIER-KEY` line".into(),
            });
        }
    }
    for trusted in &opts.trust {
        let layout = Layout::new(&bucket.prefix, &trusted.origin);
        let mut check = LogCheck::new(trusted, layout, opts);
        if !present.contains(&check.layout.log) {
            check.problem(Severity::Failed, "nothing shipped: the bucket holds no object of this log".into());
        } else {
            check.run(bucket).await;
        }
        check.finish_state();
        report.problems.append(&mut check.problems);
        report.logs.push(check.summary);
    }
    report
}

fn unreachable_or_error(e: &BucketError) -> Severity {
    match e {
        BucketError::Store { cause: object_store::Error::Generic { .. }, .. } => Severity::Unreachable,
        _ => Severity::Error,
    }
}

/// The check of one log.
struct LogCheck<'a> {
    trusted: &'a TrustedLog,
    layout: Layout,
    opts: &'a Options,
    key: NoteVerifier,
    problems: Vec<Problem>,
    summary: LogSummary,
    /// The state file's checkpoint, if any.
    pinned: Option<(state::State, Checkpoint)>,
    /// Newest verified checkpoint (note, parsed).
    newest: Option<(String, Checkpoint)>,
    row_lines: usize,
    row_mismatches: u64,
}

impl<'a> LogCheck<'a> {
    fn new(trusted: &'a TrustedLog, layout: Layout, opts: &'a Options) -> LogCheck<'a> {
        let summary = LogSummary { log: trusted.origin.clone(), ..LogSummary::default() };
        let mut check = LogCheck {
            trusted,
            layout,
            opts,
            key: trusted.key.clone(),
            problems: Vec::new(),
            summary,
            pinned: None,
            newest: None,
            row_lines: 0,
            row_mismatches: 0,
        };
        if let Some(path) = check.state_path() {
            match state::load(&path) {
                Ok(Some(st)) => match NoteVerifier::parse(&st.key)
                    .and_then(|k| k.verify_checkpoint(&st.note).map(|c| (k, c)))
                {
                    Ok((k, cp)) => {
                        // The state's key may be a successor of the trust file's (a rotation
                        // followed on an earlier run).
                        check.key = k;
                        check.pinned = Some((st, cp));
                    }
                    Err(e) => check.problem(Severity::Error, format!("state file {}: {e}", path.display())),
                },
                Ok(None) => {}
                Err(a) => check.problem(Severity::Error, a.to_string()),
            }
        }
        check
    }

    fn state_path(&self) -> Option<PathBuf> {
        self.opts.state_dir.as_ref().map(|d| d.join(format!("{}.json", self.layout.log)))
    }

    fn problem(&mut self, severity: Severity, text: String) {
        self.problems.push(Problem { log: self.trusted.origin.clone(), severity, text });
    }

    fn alarm(&mut self, alarm: Alarm) {
        let severity = match alarm {
            Alarm::Rollback { .. } => Severity::Rollback,
            Alarm::Fork { .. } => Severity::Fork,
            Alarm::KeyChanged { .. } => Severity::KeyChanged,
            Alarm::Stale { .. } => Severity::Stale,
            Alarm::Unreachable(_) => Severity::Unreachable,
            Alarm::Failed(_) => Severity::Failed,
            Alarm::Error(_) => Severity::Error,
        };
        let text = alarm.to_string();
        // The alarm's own label is the severity's; keep the line to one label.
        let text = text.split_once(": ").map_or(text.clone(), |(_, rest)| rest.to_string());
        self.problem(severity, text);
    }

    async fn run(&mut self, bucket: &Bucket) {
        match self.walk(bucket).await {
            Ok(()) => {}
            Err(e) => {
                let sev = unreachable_or_error(&e);
                self.problem(sev, e.to_string());
            }
        }
    }

    /// Lists the log's objects and walks its parts in order.
    async fn walk(&mut self, bucket: &Bucket) -> Result<(), BucketError> {
        let layout = self.layout.clone();
        let mut parts: Vec<(u64, u64, ObjPath)> = Vec::new();
        for m in bucket.list(&layout.leaves_dir()).await? {
            match layout.parse_leaves(&m.location) {
                Some((s, e)) if s < e => parts.push((s, e, m.location)),
                _ => self.problem(
                    Severity::Failed,
                    format!("{}: not a leaves object name this layout writes", m.location),
                ),
            }
        }
        parts.sort_by_key(|p| (p.0, p.1));
        let mut checkpoints: BTreeMap<u64, ObjPath> = BTreeMap::new();
        for m in bucket.list(&layout.checkpoints_dir()).await? {
            match layout.parse_checkpoint(&m.location) {
                Some(size) => {
                    checkpoints.insert(size, m.location);
                }
                None => self.problem(
                    Severity::Failed,
                    format!("{}: not a checkpoint name this layout writes", m.location),
                ),
            }
        }
        let mut proofs: BTreeMap<(u64, u64), ObjPath> = BTreeMap::new();
        for m in bucket.list(&layout.consistency_dir()).await? {
            if let Some(pair) = layout.parse_consistency(&m.location) {
                proofs.insert(pair, m.location);
            } else {
                self.problem(
                    Severity::Failed,
                    format!("{}: not a consistency proof name this layout writes", m.location),
                );
            }
        }
        // This log's Parquet files (the host's directory also holds other logs').
        let mut files: Vec<(u64, u64, String, ObjPath)> = Vec::new();
        for m in bucket.list(&layout.entries_dir()).await? {
            if let Some((date, first, last)) = layout.parse_parquet(&m.location) {
                files.push((first, last, date, m.location));
            }
        }
        files.sort_by_key(|f| (f.0, f.1));
        self.summary.checkpoints = checkpoints.len() as u64;

        let mut range = CompactRange::new();
        let mut rotations: Vec<pb::Entry> = Vec::new();
        let mut prev: Option<Checkpoint> = None;
        let mut file_idx = 0;
        let mut walked_to = 0u64;
        let mut checked = std::collections::BTreeSet::new();
        // Plan every part first (which Parquet files it has; the tiling problems), then
        // load parts ahead of the walk: the next part's objects are fetched, its Parquet
        // decoded and its leaves decompressed on other threads while this one is walked.
        let mut plans: Vec<Plan> = Vec::new();
        // Parts past the newest checkpoint are an upload under way (leaves are written
        // before their Parquet): their missing rows are not a problem yet.
        let committed_to = checkpoints.keys().next_back().copied().unwrap_or(0);
        for (start, end, path) in &parts {
            if *start != walked_to {
                let text = if *start > walked_to {
                    format!(
                        "entries {walked_to}..{start} have no leaves object (an object was deleted from the middle?); the log cannot be re-hashed past entry {walked_to}"
                    )
                } else {
                    format!(
                        "{path} overlaps entries already shipped up to {walked_to}: two uploads of the same entries"
                    )
                };
                self.problem(Severity::Failed, text);
                break;
            }
            // The Parquet files of this part: they must tile start..end exactly.
            let mut plan = Plan { start: *start, end: *end, leaves: path.clone(), files: Vec::new() };
            let mut covered = *start;
            while file_idx < files.len() && files[file_idx].0 < *end {
                let (first, last, date, fpath) = files[file_idx].clone();
                file_idx += 1;
                if first != covered || last < first || last >= *end {
                    self.problem(
                        Severity::Failed,
                        format!(
                            "{fpath} holds rows {first}..={last}, but the rows of part {start}..{end} so far end at {covered}: {}",
                            if first > covered { "a Parquet file before it is missing (deleted?)" } else { "rows are shipped twice or the file straddles parts" }
                        ),
                    );
                    if first < covered {
                        continue;
                    }
                }
                plan.files.push((first, last, date, fpath));
                covered = last + 1;
            }
            if covered < *end && *end <= committed_to {
                self.problem(
                    Severity::Failed,
                    format!("entries {covered}..{end} have no Parquet rows (a Parquet file was deleted?)"),
                );
            }
            plans.push(plan);
            walked_to = *end;
        }
        walked_to = 0;
        let mut loads = plans.into_iter().map(|plan| tokio::spawn(load(bucket.clone(), plan)));
        let mut next = loads.next();
        while let Some(current) = next.take() {
            next = loads.next();
            let loaded = match current.await {
                Ok(l) => l?,
                Err(e) => {
                    self.problem(Severity::Error, format!("a loading task failed: {e}"));
                    break;
                }
            };
            let (start, end, path) = (loaded.plan.start, loaded.plan.end, loaded.plan.leaves.clone());
            for p in loaded.problems {
                self.problem(Severity::Failed, p);
            }
            let rows = loaded.rows;
            self.summary.parquet_rows += rows.len() as u64;
            let (start, end) = (&start, &end);
            // The leaves, one at a time.
            let ok = match loaded.leaves {
                Ok(bytes) => self.walk_part(&bytes, *start, *end, &path, &rows, &mut range, &mut rotations),
                Err(why) => {
                    self.problem(Severity::Failed, format!("{path}: {why}"));
                    false
                }
            };
            if !ok {
                break;
            }
            walked_to = *end;
            if let Some(cp_path) = checkpoints.get(end).cloned() {
                checked.insert(*end);
                let note = bucket.get(&cp_path).await?;
                let proof = match &prev {
                    Some(p) if p.size > 0 => match proofs.get(&(p.size, *end)) {
                        Some(pp) => Some(bucket.get(pp).await?),
                        None => None,
                    },
                    _ => None,
                };
                match self.check_checkpoint(*end, &note, prev.as_ref(), proof, &range, &rotations) {
                    Some(cp) => {
                        self.summary.verified = cp.size;
                        self.newest = Some((String::from_utf8_lossy(&note).into_owned(), cp.clone()));
                        prev = Some(cp);
                    }
                    None => break,
                }
            }
        }
        for (size, path) in checkpoints.range(1..walked_to) {
            if !checked.contains(size) {
                self.problem(
                    Severity::Failed,
                    format!("{path}: checkpoint of {size} entries, but no leaves object ends there"),
                );
            }
        }
        for (size, path) in checkpoints.range(walked_to + 1..) {
            if parts.last().is_some_and(|p| p.1 >= *size) {
                continue; // beyond a problem already reported
            }
            self.problem(Severity::Failed, format!("{path}: checkpoint of {size} entries, but the leaves end at {walked_to}: leaves objects are missing"));
        }
        if let Some((first, _, _, fpath)) = files.get(file_idx)
            && parts.last().is_some_and(|p| *first >= p.1)
        {
            self.problem(Severity::Failed, format!("{fpath}: rows past the last leaves object"));
        }
        self.summary.pending = walked_to.saturating_sub(self.summary.verified);
        if self.newest.is_none() && self.problems.is_empty() {
            self.problem(Severity::Failed, "no checkpoint shipped yet: nothing can be verified".into());
        }
        if self.row_mismatches > MAX_ROW_LINES as u64 {
            let more = self.row_mismatches - MAX_ROW_LINES as u64;
            self.problem(Severity::Failed, format!("and {more} more Parquet rows differ from their leaves"));
        }
        Ok(())
    }

    /// Re-hashes one part's leaves into `range` and compares them with the Parquet rows.
    /// `false` if the walk cannot go on.
    #[allow(clippy::too_many_arguments)]
    fn walk_part(
        &mut self,
        bytes: &[u8],
        start: u64,
        end: u64,
        path: &ObjPath,
        rows: &[(Row, String, ObjPath)],
        range: &mut CompactRange,
        rotations: &mut Vec<pb::Entry>,
    ) -> bool {
        let mut reader = ledger_client::evidence::LeafReader::new(bytes);
        let mut seq = start;
        // The partition text of the last day seen (one conversion per day, not per row).
        let mut day = (i64::MIN, String::new());
        loop {
            let leaf_bytes = match reader.next_leaf() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    self.problem(Severity::Failed, format!("{path}: {e}"));
                    return false;
                }
            };
            if seq >= end {
                self.problem(
                    Severity::Failed,
                    format!("{path} holds more than the {} leaves its name says", end - start),
                );
                return false;
            }
            let hash = merkle::leaf_hash(leaf_bytes);
            range.append(hash, |_, _, _| {});
            if let Some((st, cp)) = &self.pinned
                && range.size() == cp.size
                && range.root() != cp.root
            {
                let alarm = Alarm::Fork {
                    trusted: cp.size,
                    trusted_root: hex(&cp.root),
                    latest: range.size(),
                    latest_root: hex(&range.root()),
                    why: format!(
                        "the shipped leaves do not extend the checkpoint trusted at {}",
                        st.trusted_at
                    ),
                };
                self.alarm(alarm);
                return false;
            }
            let row = rows.get((seq - start) as usize);
            if let Some((r, _, _)) = row
                && day_of(r.entry.time_unix_nanos) != day.0
            {
                day = (day_of(r.entry.time_unix_nanos), day_text(day_of(r.entry.time_unix_nanos)));
            }
            let matches = row.is_some_and(|(r, date, _)| {
                r.entry.seq == seq
                    && r.log == self.trusted.origin
                    && r.leaf_hash == hash
                    && r.time_micros == columns::time_micros(r.entry.time_unix_nanos)
                    && *date == day.1
                    && leaf::leaf_bytes(&r.entry) == leaf_bytes
            });
            let entry = match (matches, row) {
                (true, Some((r, _, _))) if r.entry.kind != pb::Kind::KeyRotated as i32 => None,
                (true, Some((r, _, _))) => Some(r.entry.clone()),
                _ => {
                    let decoded = <pb::Entry as prost::Message>::decode(leaf_bytes).ok();
                    if let Some((r, date, fpath)) = row {
                        self.row_mismatch(seq, r, date, fpath, decoded.as_ref(), &hash);
                    }
                    decoded
                }
            };
            if let Some(e) = entry
                && e.kind == pb::Kind::KeyRotated as i32
            {
                rotations.push(e);
            }
            seq += 1;
        }
        if seq != end {
            self.problem(
                Severity::Failed,
                format!("{path} holds {} leaves, its name says {}", seq - start, end - start),
            );
            return false;
        }
        true
    }

    fn row_mismatch(
        &mut self,
        seq: u64,
        row: &Row,
        date: &str,
        fpath: &ObjPath,
        leaf: Option<&pb::Entry>,
        hash: &Hash,
    ) {
        self.row_mismatches += 1;
        if self.row_lines >= MAX_ROW_LINES {
            return;
        }
        self.row_lines += 1;
        let why = match leaf {
            None => "the leaf itself does not decode".to_string(),
            Some(_) if row.log != self.trusted.origin => {
                format!("column log: Parquet has {:?}, this log is {:?}", row.log, self.trusted.origin)
            }
            Some(l) => describe_difference(row, date, l, hash),
        };
        self.problem(
            Severity::Failed,
            format!("{fpath}: the row for entry {seq} differs from its leaf: {why}"),
        );
    }

    /// Checks the checkpoint object of `size`; the parsed checkpoint if it holds.
    fn check_checkpoint(
        &mut self,
        size: u64,
        note: &[u8],
        prev: Option<&Checkpoint>,
        proof: Option<Bytes>,
        range: &CompactRange,
        rotations: &[pb::Entry],
    ) -> Option<Checkpoint> {
        let path = self.layout.checkpoint(size);
        let Ok(note) = std::str::from_utf8(note) else {
            self.problem(Severity::Failed, format!("{path} is not text"));
            return None;
        };
        let body = match state::unsigned_body(note) {
            Ok(b) => b,
            Err(why) => {
                self.problem(Severity::Failed, format!("{path}: {why}"));
                return None;
            }
        };
        if body.origin != self.trusted.origin {
            self.problem(
                Severity::Failed,
                format!("{path} holds a checkpoint of another log, {:?}", body.origin),
            );
            return None;
        }
        if body.size != size {
            let prev_size = prev.map_or(0, |p| p.size);
            if body.size < size {
                self.problem(
                    Severity::Rollback,
                    format!(
                        "{path} should hold the checkpoint of {size} entries but holds an older one of {} entries (the previous checkpoint covers {prev_size}): it was replaced by an older checkpoint",
                        body.size
                    ),
                );
            } else {
                self.problem(
                    Severity::Failed,
                    format!("{path} holds a checkpoint of {} entries, not {size}", body.size),
                );
            }
            return None;
        }
        // The signature: the pinned key, or a successor named in the leaves below.
        match self.key.verify_checkpoint(note) {
            Ok(_) => {}
            Err(NoteError::NoTrustedSignature { .. }) => {
                let mut current = self.key.clone();
                let mut followed = Vec::new();
                for _ in 0..rotations.len() {
                    let Some((e, next)) =
                        rotations.iter().find_map(|e| state::rotation_successor(&current, e).map(|k| (e, k)))
                    else {
                        break;
                    };
                    followed.push(format!(
                        "followed a key rotation at entry {} to {}",
                        e.seq,
                        next.to_vkey_string()
                    ));
                    current = next;
                    if current.verify_checkpoint(note).is_ok() {
                        break;
                    }
                }
                // The rotation entries count only if they are in this checkpoint's tree:
                // the root check below proves that.
                if current.verify_checkpoint(note).is_ok() && range.root() == body.root {
                    self.key = current;
                    self.summary.rotations.extend(followed);
                } else {
                    self.alarm(Alarm::KeyChanged {
                        pinned: format!("{}+{}", self.key.name(), hex(&self.key.key_id())),
                        why: format!("checkpoint {size} in the bucket is signed by another key"),
                    });
                    return None;
                }
            }
            Err(e) => {
                self.problem(Severity::Failed, format!("{path}: its signature: {e}"));
                return None;
            }
        }
        // Consistency with the previous checkpoint, through the shipped proof.
        if let Some(p) = prev
            && p.size > 0
        {
            let proof_path = self.layout.consistency(p.size, size);
            let Some(proof) = proof else {
                self.problem(Severity::Failed, format!("{proof_path} is missing (deleted?): the consistency of checkpoints {} and {size} cannot be shown", p.size));
                return None;
            };
            let hashes = match crate::shipper::proof_hashes(&proof) {
                Ok(h) => h,
                Err(why) => {
                    self.problem(Severity::Failed, format!("{proof_path}: {why}"));
                    return None;
                }
            };
            if let Err(e) = merkle::verify_consistency(p.size, size, &p.root, &body.root, &hashes) {
                self.alarm(Alarm::Fork {
                    trusted: p.size,
                    trusted_root: hex(&p.root),
                    latest: size,
                    latest_root: hex(&body.root),
                    why: format!("the shipped consistency proof does not verify ({e}); checkpoint {size} in the bucket is not a later state of checkpoint {}", p.size),
                });
                return None;
            }
        }
        let root = range.root();
        if root != body.root {
            self.problem(
                Severity::Failed,
                format!(
                    "the leaves up to {size} hash to root {}, but the signed checkpoint says {}: a leaves object was changed",
                    hex(&root),
                    hex(&body.root)
                ),
            );
            return None;
        }
        Some(body)
    }

    /// `--max-age`, the state file's rollback check, and saving the new state.
    fn finish_state(&mut self) {
        let now = jiff::Timestamp::now();
        if let Some((_, cp)) = &self.newest {
            let age = state::checkpoint_time(cp).and_then(|t| Duration::try_from(now.duration_since(t)).ok());
            self.summary.age = age;
            if let (Some(max), Some(age)) = (self.opts.max_age, age)
                && age > max
            {
                let text = format!(
                    "the newest shipped checkpoint ({} entries) was signed {} ago, over --max-age {}: the host has stopped shipping (or ledgerd stopped signing); check its ledger-ship and ledgerd",
                    cp.size,
                    state::human(age),
                    state::human(max)
                );
                self.problem(Severity::Stale, text);
            }
        }
        if let (Some((st, pinned)), Some((_, newest))) = (&self.pinned, &self.newest)
            && newest.size < pinned.size
        {
            let alarm = Alarm::Rollback {
                trusted: pinned.size,
                latest: newest.size,
                trusted_at: st.trusted_at.clone(),
            };
            self.alarm(alarm);
        }
        self.summary.ok = self.problems.is_empty();
        if let (true, Some(path), Some((note, cp))) = (self.summary.ok, self.state_path(), &self.newest) {
            let st = state::State {
                format: state::FORMAT.into(),
                key: self.key.to_vkey_string(),
                note: note.clone(),
                size: cp.size,
                root: hex(&cp.root),
                trusted_at: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            };
            if let Some(dir) = path.parent()
                && let Err(e) = std::fs::create_dir_all(dir)
            {
                self.problem(Severity::Error, format!("cannot create the state dir {}: {e}", dir.display()));
                return;
            }
            if let Err(a) = state::save(&path, &st) {
                self.alarm(a);
            }
        }
    }
}

/// A part of a log to check: its leaves object and the Parquet files that cover it.
struct Plan {
    start: u64,
    end: u64,
    leaves: ObjPath,
    files: Vec<(u64, u64, String, ObjPath)>,
}

/// A part fetched and decoded.
struct Loaded {
    plan: Plan,
    rows: Vec<(Row, String, ObjPath)>,
    /// The decompressed leaves, or why they could not be.
    leaves: Result<Vec<u8>, String>,
    problems: Vec<String>,
}

/// Fetches a part's objects; decodes the Parquet and decompresses the leaves on blocking
/// threads (so the walk of the previous part goes on meanwhile).
async fn load(bucket: Bucket, plan: Plan) -> Result<Loaded, BucketError> {
    let leaves_bytes = bucket.get(&plan.leaves).await?;
    let limit = (plan.end - plan.start).saturating_mul(MAX_LEAF_BYTES);
    let leaves = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let decoder = zstd::stream::read::Decoder::new(&leaves_bytes[..])
            .map_err(|e| format!("not a zstd stream: {e}"))?;
        let mut out = Vec::new();
        decoder.take(limit).read_to_end(&mut out).map_err(|e| format!("cannot decompress: {e}"))?;
        Ok::<_, String>(out)
    });
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (first, last, date, fpath) in &plan.files {
        let bytes = bucket.get(fpath).await?;
        let read = tokio::task::spawn_blocking(move || columns::read_rows(bytes)).await;
        match read {
            Ok(Ok(read)) => {
                if read.len() as u64 != last.saturating_sub(*first) + 1 {
                    problems.push(format!(
                        "{fpath} has {} rows, its name says {}",
                        read.len(),
                        last - first + 1
                    ));
                }
                rows.extend(read.into_iter().map(|r| (r, date.clone(), fpath.clone())));
            }
            Ok(Err(e)) => problems.push(format!("{fpath} is not a readable shipped Parquet file: {e}")),
            Err(e) => problems.push(format!("{fpath}: decoding failed: {e}")),
        }
    }
    let leaves = leaves.await.unwrap_or_else(|e| Err(format!("decompression failed: {e}")));
    Ok(Loaded { plan, rows, leaves, problems })
}

/// The first field where a Parquet row and its leaf differ, as the query language
/// names and prints fields (the same cells as `ledgerctl export`).
fn describe_difference(row: &Row, date: &str, leaf: &pb::Entry, hash: &Hash) -> String {
    use ledger_query::Record;
    let utc = jiff::tz::TimeZone::UTC;
    let ours = ledger_proto::wire::EntryRecord(&row.entry);
    let theirs = ledger_proto::wire::EntryRecord(leaf);
    for name in ledger_query::DEFAULT_COLUMNS {
        let Some(field) = ledger_query::Field::from_name(name) else { continue };
        let a = ledger_query::format_value(&ours.get(&field), &utc);
        let b = ledger_query::format_value(&theirs.get(&field), &utc);
        if a != b {
            return format!("column {name}: Parquet has {a:?}, the leaf has {b:?}");
        }
    }
    if row.leaf_hash != hash {
        return format!(
            "column leaf_hash: Parquet has {}, the leaf hashes to {}",
            hex(&row.leaf_hash),
            hex(hash)
        );
    }
    if row.time_micros != columns::time_micros(leaf.time_unix_nanos) {
        return format!("column time is {} µs, not the leaf's time", row.time_micros);
    }
    if date != date_of(leaf.time_unix_nanos) {
        return format!(
            "it is in partition date={date}, the entry's day is {}",
            date_of(leaf.time_unix_nanos)
        );
    }
    "a column outside the export's (kind or decision code, time_unix_nanos) differs".into()
}

/// Where an error came from, for `--state` paths in messages.
pub fn state_file(dir: &Path, origin: &str) -> PathBuf {
    dir.join(format!("{}.json", log_id(origin)))
}
