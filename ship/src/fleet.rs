//! `fleet verify`: checks every shipped log in a bucket against the trust file, streaming
//! part by part: while one part is walked, the next is fetched and checked (leaves
//! decompressed and hashed, Parquet rows compared) on another thread, so at most two parts
//! are in memory at once (each: its objects, its decompressed leaves, 33 bytes per entry
//! of hashes and flags, and one Parquet record batch of `columns::READ_BATCH_ROWS` rows).
//!
//! For each log: the leaves objects chain from entry 0 without gaps or overlaps; every
//! leaf is re-hashed into the Merkle tree; at each checkpoint object the note must be the
//! checkpoint of that size (an older one there is a ROLLBACK), signed by the pinned key or
//! a successor named by a `key_rotated` entry in the leaves below it (else KEY CHANGED),
//! consistent with the previous checkpoint through the shipped proof (else FORK), and its
//! root must be the recomputed one (else the leaves were changed: FAILED). Every Parquet
//! row's cells must encode to exactly its leaf's canonical bytes (no null cell, same seq,
//! log and leaf hash, `time` the microseconds of `time_unix_nanos`, in the partition of
//! its own day), and the Parquet
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
use ledger_proto::{hex, pb};
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
        let origin: std::sync::Arc<str> = self.trusted.origin.clone().into();
        let mut loads =
            plans.into_iter().map(|plan| tokio::spawn(load(bucket.clone(), plan, origin.clone())));
        let mut next = loads.next();
        while let Some(current) = next.take() {
            next = loads.next();
            let mut part = match current.await {
                Ok(l) => l?,
                Err(e) => {
                    self.problem(Severity::Error, format!("a loading task failed: {e}"));
                    break;
                }
            };
            let end = part.end;
            for p in std::mem::take(&mut part.problems) {
                self.problem(Severity::Failed, p);
            }
            self.summary.parquet_rows += part.rows;
            if !self.walk_part(part, &mut range, &mut rotations) {
                break;
            }
            walked_to = end;
            if let Some(cp_path) = checkpoints.get(&end).cloned() {
                checked.insert(end);
                let note = bucket.get(&cp_path).await?;
                let proof = match &prev {
                    Some(p) if p.size > 0 => match proofs.get(&(p.size, end)) {
                        Some(pp) => Some(bucket.get(pp).await?),
                        None => None,
                    },
                    _ => None,
                };
                match self.check_checkpoint(end, &note, prev.as_ref(), proof, &range, &rotations) {
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

    /// Appends one checked part's leaf hashes to `range` (holding the tree to the state
    /// file's checkpoint on the way) and reports its rows that differ from their leaves.
    /// `false` if the walk cannot go on.
    fn walk_part(
        &mut self,
        checked: Checked,
        range: &mut CompactRange,
        rotations: &mut Vec<pb::Entry>,
    ) -> bool {
        let mut mismatches = checked.mismatches.into_iter().peekable();
        for (k, hash) in checked.hashes.iter().enumerate() {
            range.append(*hash, |_, _, _| {});
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
            let seq = checked.start + k as u64;
            while let Some((_, text)) = mismatches.next_if(|m| m.0 == seq) {
                self.row_mismatches += 1;
                if self.row_lines < MAX_ROW_LINES
                    && let Some(text) = text
                {
                    self.row_lines += 1;
                    self.problem(Severity::Failed, text);
                }
            }
        }
        rotations.extend(checked.rotations);
        if let Some(why) = checked.leaf_error {
            self.problem(Severity::Failed, format!("{}: {why}", checked.leaves));
            return false;
        }
        true
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

/// A part fetched and checked on its own: what the walk needs to go on.
struct Checked {
    start: u64,
    end: u64,
    leaves: ObjPath,
    /// The leaf hashes, in order, of the leaves read before `leaf_error` (all if none).
    hashes: Vec<Hash>,
    /// Why the leaves object cannot be read past `hashes` (the walk stops there).
    leaf_error: Option<String>,
    /// The seqs whose Parquet row differs from its leaf, in order, with the problem line
    /// for the first [`MAX_ROW_LINES`] of them.
    mismatches: Vec<(u64, Option<String>)>,
    /// The `key_rotated` entries among the leaves.
    rotations: Vec<pb::Entry>,
    /// Parquet rows read.
    rows: u64,
    /// Problems with the part's Parquet files.
    problems: Vec<String>,
}

/// Fetches a part's objects, then checks them on a blocking thread, so that while the
/// walk goes through one part the next one is fetched and checked on the other core.
async fn load(bucket: Bucket, plan: Plan, origin: std::sync::Arc<str>) -> Result<Checked, BucketError> {
    let leaves = bucket.get(&plan.leaves).await?;
    let mut files = Vec::with_capacity(plan.files.len());
    for (first, last, date, fpath) in &plan.files {
        files.push((*first, *last, date.clone(), fpath.clone(), bucket.get(fpath).await?));
    }
    let (start, end, path) = (plan.start, plan.end, plan.leaves.clone());
    let checked = tokio::task::spawn_blocking(move || check_part(&origin, plan, &leaves, files)).await;
    Ok(checked.unwrap_or_else(|e| Checked {
        start,
        end,
        leaves: path,
        hashes: Vec::new(),
        leaf_error: Some(format!("checking failed: {e}")),
        mismatches: Vec::new(),
        rotations: Vec::new(),
        rows: 0,
        problems: Vec::new(),
    }))
}

/// Decompresses a part's leaves, hashes them, and compares every Parquet row with the
/// leaf at its position: the row's cells are encoded into canonical leaf bytes in one
/// reused buffer and compared byte for byte, with its `seq`, `log`, `leaf_hash`, `time`
/// and partition date checked beside (no entry is built unless a row differs).
fn check_part(
    origin: &str,
    plan: Plan,
    compressed: &[u8],
    files: Vec<(u64, u64, String, ObjPath, Bytes)>,
) -> Checked {
    let mut checked = Checked {
        start: plan.start,
        end: plan.end,
        leaves: plan.leaves,
        hashes: Vec::new(),
        leaf_error: None,
        mismatches: Vec::new(),
        rotations: Vec::new(),
        rows: 0,
        problems: Vec::new(),
    };
    let count = plan.end - plan.start;
    let bytes = match decompress(compressed, count.saturating_mul(MAX_LEAF_BYTES)) {
        Ok(b) => b,
        Err(why) => {
            checked.leaf_error = Some(why);
            return checked;
        }
    };
    let (leaves, error) = split_leaves(&bytes, count);
    checked.leaf_error = error;
    checked.hashes = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let mut matched = vec![false; leaves.len()];
    let mut buf = Vec::with_capacity(1024);
    for (first, last, date, fpath, bytes) in files {
        let mut read = 0u64;
        let result = (|| -> Result<(), columns::ColumnsError> {
            // The day of the partition, checked once per day of the rows.
            let mut day = (i64::MIN, false);
            for batch in columns::batches(bytes)? {
                let batch = batch?;
                let cols = columns::Columns::of(&batch)?;
                for i in 0..cols.len() {
                    // The row's position in the part: its file's name says where it starts.
                    let k = first.saturating_sub(plan.start).saturating_add(read + i as u64);
                    let Some(leaf) = usize::try_from(k).ok().and_then(|k| leaves.get(k)) else { continue };
                    let seq = plan.start + k;
                    let hash = &checked.hashes[k as usize];
                    let nanos = cols.nanos(i);
                    if day_of(nanos) != day.0 {
                        day = (day_of(nanos), day_text(day_of(nanos)) == date);
                    }
                    let ok = cols.seq(i) == seq
                        && day.1
                        && cols.log(i) == origin
                        && cols.leaf_hash(i) == hash
                        && cols.time_micros(i) == columns::time_micros(nanos)
                        && cols.null_column(i).is_none()
                        && cols.leaf_bytes_into(i, &mut buf)
                        && buf == *leaf;
                    if ok {
                        matched[k as usize] = true;
                        if cols.kind(i) == pb::Kind::KeyRotated.name() {
                            checked.rotations.push(cols.row(i).entry);
                        }
                    } else {
                        let text = (checked.mismatches.len() < MAX_ROW_LINES)
                            .then(|| row_mismatch(origin, seq, &cols, i, &date, &fpath, leaf, hash));
                        checked.mismatches.push((seq, text));
                    }
                }
                read += cols.len() as u64;
            }
            Ok(())
        })();
        checked.rows += read;
        let named = last.saturating_sub(first).saturating_add(1);
        match result {
            Ok(()) if read != named => {
                checked.problems.push(format!("{fpath} has {read} rows, its name says {named}"))
            }
            Ok(()) => {}
            Err(e) => checked.problems.push(format!("{fpath} is not a readable shipped Parquet file: {e}")),
        }
    }
    // A leaf without a row that equals it: its key rotation (if it is one) is read from
    // the leaf itself.
    for (leaf, _) in leaves.iter().zip(&matched).filter(|(_, m)| !**m) {
        if let Ok(e) = <pb::Entry as prost::Message>::decode(*leaf)
            && e.kind == pb::Kind::KeyRotated as i32
        {
            checked.rotations.push(e);
        }
    }
    checked.mismatches.sort_by_key(|m| m.0);
    checked.rotations.sort_by_key(|e| e.seq);
    checked
}

/// A leaves object's bytes, decompressed to at most `limit` bytes.
fn decompress(compressed: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder =
        zstd::stream::read::Decoder::new(compressed).map_err(|e| format!("not a zstd stream: {e}"))?;
    // Room for what the frame header says it holds (the shipper's objects say), so the
    // output is not copied as it grows; a hostile header gets no more than the limit, and
    // at most READ_AHEAD_CAP up front.
    const READ_AHEAD_CAP: u64 = 256 * 1024 * 1024;
    let said = zstd::zstd_safe::get_frame_content_size(compressed).ok().flatten();
    let room = said.unwrap_or(compressed.len() as u64 * 8).min(limit).min(READ_AHEAD_CAP);
    let mut out = Vec::with_capacity(usize::try_from(room).unwrap_or(0));
    decoder.take(limit).read_to_end(&mut out).map_err(|e| format!("cannot decompress: {e}"))?;
    Ok(out)
}

/// The leaves of a decompressed leaves object (each a 4-byte big-endian length, then
/// that many bytes), borrowed; at most `count`, the number its name says. With them, why
/// the object cannot be read further, if it cannot (the texts of `LeafReader`'s errors).
fn split_leaves(bytes: &[u8], count: u64) -> (Vec<&[u8]>, Option<String>) {
    let mut leaves = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 20));
    let mut at = 0usize;
    while at < bytes.len() {
        if leaves.len() as u64 == count {
            return (leaves, Some(format!("holds more than the {count} leaves its name says")));
        }
        let Some(len) = bytes.get(at..at + 4) else {
            return (leaves, Some(format!("truncated length prefix at byte {at}")));
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(leaf) = bytes.get(at + 4..).and_then(|rest| rest.get(..len)) else {
            let remain = bytes.len() - at - 4;
            let index = leaves.len();
            return (
                leaves,
                Some(format!(
                    "leaf {index} at byte {at} claims {len} bytes, only {remain} remain (the file is truncated)"
                )),
            );
        };
        leaves.push(leaf);
        at += 4 + len;
    }
    let error = (leaves.len() as u64 != count)
        .then(|| format!("holds {} leaves, its name says {count}", leaves.len()));
    (leaves, error)
}

/// The problem line of a Parquet row that differs from its leaf.
#[allow(clippy::too_many_arguments)]
fn row_mismatch(
    origin: &str,
    seq: u64,
    cols: &columns::Columns<'_>,
    i: usize,
    date: &str,
    fpath: &ObjPath,
    leaf: &[u8],
    hash: &Hash,
) -> String {
    let row = cols.row(i);
    let null = cols.null_column(i);
    let why = match <pb::Entry as prost::Message>::decode(leaf) {
        Err(_) => "the leaf itself does not decode".to_string(),
        Ok(_) if null.is_some() => {
            format!("column {} is null (a shipped file has no nulls there)", null.unwrap_or_default())
        }
        Ok(_) if row.log != origin => {
            format!("column log: Parquet has {:?}, this log is {origin:?}", row.log)
        }
        Ok(_) if row.entry.seq != seq => {
            format!("column seq: Parquet has {}, the row stands at entry {seq}", row.entry.seq)
        }
        Ok(l) => describe_difference(&row, date, &l, hash),
    };
    format!("{fpath}: the row for entry {seq} differs from its leaf: {why}")
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{
        Array, ArrayRef, FixedSizeBinaryArray, Int64Array, ListArray, RecordBatch, StringArray,
        TimestampMicrosecondArray, UInt32Array, UInt64Array,
    };
    use arrow_schema::{DataType, Field, Schema};
    use ledger_proto::pb::{Decision, Kind};

    use super::*;

    const ORIGIN: &str = "web-1/ledgerd/0a1b2c3d";
    /// The part starts here (not 0, so positions and seqs differ).
    const START: u64 = 1000;
    /// The row every tampering changes.
    const VICTIM: usize = 7;

    fn entry(seq: u64) -> pb::Entry {
        pb::Entry {
            seq,
            time_unix_nanos: 1_767_225_600_123_456_789 + seq as i64 * 1_000_000_000,
            kind: if seq == START + 3 { Kind::KeyRotated as i32 } else { Kind::Decision as i32 },
            agent: "billing-bot".into(),
            agent_id: "0b7e".into(),
            session: "s-1".into(),
            action: "write".into(),
            tool: "payments.refund".into(),
            params: r#"{"amount":12,"currency":"EUR"}"#.into(),
            decision: Decision::Deny as i32,
            rule: "no-refunds".into(),
            policy_version: 4,
            reason: "refunds need a human".into(),
            writer_uid: 1001,
            writer_gid: 1001,
            writer_pid: 4242,
            host: "web-1".into(),
            severity: 7,
            flags: vec!["deny_burst".into(), "first_use".into()],
            policy_check: "match".into(),
            shim_id: "shim-01".into(),
            shim_seq: seq + 1,
            ref_seq: Some(seq - 1),
            details: r#"{"note":"x"}"#.into(),
        }
    }

    fn rows() -> Vec<(pb::Entry, Hash)> {
        (START..START + 20).map(|s| (entry(s), ledger_proto::leaf::entry_leaf_hash(&entry(s)))).collect()
    }

    fn plan() -> Plan {
        Plan { start: START, end: START + 20, leaves: ObjPath::from("leaves"), files: Vec::new() }
    }

    fn check(parquet: Vec<u8>) -> Checked {
        let rows = rows();
        let leaves = crate::shipper::leaves_object(&rows).expect("leaves");
        let date = date_of(rows[0].0.time_unix_nanos);
        let files = vec![(START, START + 19, date, ObjPath::from("file.parquet"), Bytes::from(parquet))];
        check_part(ORIGIN, plan(), &leaves, files)
    }

    fn write(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).expect("writer");
        w.write(batch).expect("write");
        w.close().expect("close");
        out
    }

    /// `col` with the cell of row VICTIM changed (or made null), as a hostile editor of the
    /// bucket would.
    fn tampered(col: &ArrayRef, null: bool) -> ArrayRef {
        let n = col.len();
        let pick = |i: usize| i == VICTIM;
        match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_any().downcast_ref::<StringArray>().expect("utf8");
                let changed = format!("{}x", a.value(VICTIM));
                Arc::new(StringArray::from_iter((0..n).map(|i| match (pick(i), null) {
                    (true, true) => None,
                    (true, false) => Some(changed.clone()),
                    _ => Some(a.value(i).to_string()),
                })))
            }
            DataType::UInt64 => {
                let a = col.as_any().downcast_ref::<UInt64Array>().expect("u64");
                Arc::new(UInt64Array::from_iter((0..n).map(|i| match (pick(i), null) {
                    (true, true) if !a.is_null(i) => None,
                    (true, _) => Some(a.value(i) ^ 1),
                    _ => (!a.is_null(i)).then(|| a.value(i)),
                })))
            }
            DataType::UInt32 => {
                let a = col.as_any().downcast_ref::<UInt32Array>().expect("u32");
                Arc::new(UInt32Array::from_iter((0..n).map(|i| match (pick(i), null) {
                    (true, true) => None,
                    (true, false) => Some(a.value(i) ^ 1),
                    _ => Some(a.value(i)),
                })))
            }
            DataType::Int64 => {
                let a = col.as_any().downcast_ref::<Int64Array>().expect("i64");
                Arc::new(Int64Array::from_iter((0..n).map(|i| match (pick(i), null) {
                    (true, true) => None,
                    (true, false) => Some(a.value(i) ^ 1),
                    _ => Some(a.value(i)),
                })))
            }
            DataType::Timestamp(..) => {
                let a = col.as_any().downcast_ref::<TimestampMicrosecondArray>().expect("timestamp");
                let v: TimestampMicrosecondArray = (0..n)
                    .map(|i| match (pick(i), null) {
                        (true, true) => None,
                        (true, false) => Some(a.value(i) + 1),
                        _ => Some(a.value(i)),
                    })
                    .collect();
                Arc::new(v.with_timezone("UTC"))
            }
            DataType::List(_) => {
                let a = col.as_any().downcast_ref::<ListArray>().expect("list");
                let mut b = ListBuilder::new(StringBuilder::new());
                for i in 0..n {
                    let items = a.value(i);
                    let items = items.as_any().downcast_ref::<StringArray>().expect("strings");
                    for j in 0..items.len() {
                        match (pick(i) && j == 0, null) {
                            (true, true) => b.values().append_null(),
                            (true, false) => b.values().append_value("deny_burst_"),
                            _ => b.values().append_value(items.value(j)),
                        }
                    }
                    b.append(true);
                }
                Arc::new(b.finish())
            }
            DataType::FixedSizeBinary(32) => {
                let a = col.as_any().downcast_ref::<FixedSizeBinaryArray>().expect("binary");
                let cells = (0..n).map(|i| match (pick(i), null) {
                    (true, true) => None,
                    (true, false) => {
                        let mut v = a.value(i).to_vec();
                        v[31] ^= 1;
                        Some(v)
                    }
                    _ => Some(a.value(i).to_vec()),
                });
                Arc::new(FixedSizeBinaryArray::try_from_sparse_iter_with_size(cells, 32).expect("binary"))
            }
            other => panic!("no tampering for a column of type {other}"),
        }
    }

    #[test]
    fn shipped_rows_equal_their_leaves_and_rotations_are_found() {
        let c = check(columns::parquet_bytes(ORIGIN, &rows()).expect("parquet"));
        assert_eq!(c.leaf_error, None);
        assert_eq!(c.problems, Vec::<String>::new());
        assert_eq!(c.mismatches, Vec::new());
        assert_eq!(c.rows, 20);
        let want: Vec<Hash> = rows().iter().map(|r| r.1).collect();
        assert_eq!(c.hashes, want);
        assert_eq!(c.rotations, vec![entry(START + 3)]);
        // The same file in another day's partition: every row is out of place.
        let parquet = columns::parquet_bytes(ORIGIN, &rows()).expect("parquet");
        let leaves = crate::shipper::leaves_object(&rows()).expect("leaves");
        let files = vec![(START, START + 19, "1999-12-31".into(), ObjPath::from("f"), Bytes::from(parquet))];
        let c = check_part(ORIGIN, plan(), &leaves, files);
        assert_eq!(c.mismatches.len(), 20);
        let text = c.mismatches[0].1.as_deref().unwrap_or_default();
        assert!(text.contains("partition date=1999-12-31"), "{text}");
        assert_eq!(c.mismatches.iter().filter(|m| m.1.is_some()).count(), MAX_ROW_LINES);
    }

    /// issue 16: rows are compared column by column with the leaves (not re-encoded as
    /// entries); a changed or nulled cell in any one column is still caught, at its row.
    #[test]
    fn fleet_verify_catches_a_changed_cell_in_every_column() {
        let batch = columns::batch(ORIGIN, &rows()).expect("batch");
        let schema = batch.schema();
        for (c, field) in schema.fields().iter().enumerate() {
            for null in [false, true] {
                // A null needs a schema that allows it.
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(f.is_nullable() || (null && f == field)))
                    .collect();
                let mut cols = batch.columns().to_vec();
                cols[c] = tampered(&cols[c], null);
                let forged = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("forged batch");
                let checked = check(write(&forged));
                let what = format!("column {} {}", field.name(), if null { "nulled" } else { "changed" });
                assert_eq!(checked.problems, Vec::<String>::new(), "{what}");
                assert_eq!(checked.mismatches.len(), 1, "{what}: {:?}", checked.mismatches);
                let (seq, text) = &checked.mismatches[0];
                assert_eq!(*seq, START + VICTIM as u64, "{what}");
                let text = text.as_deref().unwrap_or_default();
                assert!(text.contains(&format!("entry {seq} differs from its leaf")), "{what}: {text}");
                // The line names the column (as the export names it: uid, not writer_uid).
                let name = match field.name().as_str() {
                    "time_unix_nanos" if !null => "time",
                    n if !null => n.trim_start_matches("writer_"),
                    n => n,
                };
                assert!(text.contains(&format!("column {name}")), "{what}: {text}");
            }
        }
    }

    /// A key rotation whose row was changed is still followed from the leaf itself.
    #[test]
    fn a_rotation_is_read_from_its_leaf_when_its_row_differs() {
        let mut forged = rows();
        forged[3].0.reason = "forged".into();
        let c = check(columns::parquet_bytes(ORIGIN, &forged).expect("parquet"));
        assert_eq!(c.mismatches.len(), 1);
        assert_eq!(c.rotations, vec![entry(START + 3)]);
    }

    #[test]
    fn leaves_objects_that_do_not_frame_are_named() {
        let mut framed = Vec::new();
        for s in 0..3u64 {
            ledger_client::evidence::frame_leaf(
                &mut framed,
                &ledger_proto::leaf::leaf_bytes(&entry(START + s)),
            )
            .expect("frame");
        }
        let (leaves, e) = split_leaves(&framed, 3);
        assert_eq!((leaves.len(), e), (3, None));
        let (leaves, e) = split_leaves(&framed, 2);
        assert_eq!(leaves.len(), 2);
        assert_eq!(e.as_deref(), Some("holds more than the 2 leaves its name says"));
        let (leaves, e) = split_leaves(&framed, 4);
        assert_eq!(leaves.len(), 3);
        assert_eq!(e.as_deref(), Some("holds 3 leaves, its name says 4"));
        let (leaves, e) = split_leaves(&framed[..framed.len() - 1], 3);
        assert_eq!(leaves.len(), 2);
        assert!(e.is_some_and(|e| e.contains("claims") && e.contains("truncated")));
        let (leaves, e) = split_leaves(&framed[..2], 3);
        assert_eq!(leaves.len(), 0);
        assert_eq!(e.as_deref(), Some("truncated length prefix at byte 0"));
        // A hostile length of 4 GiB allocates nothing.
        let (leaves, e) = split_leaves(&[0xff, 0xff, 0xff, 0xff, 1, 2], 1);
        assert_eq!(leaves.len(), 0);
        assert!(e.is_some_and(|e| e.contains("only 2 remain")));
        // Not zstd at all.
        let c = check_part(ORIGIN, plan(), b"not zstd", Vec::new());
        assert!(
            c.leaf_error.as_ref().is_some_and(|e| e.contains("decompress") || e.contains("zstd")),
            "{:?}",
            c.leaf_error
        );
        assert!(c.hashes.is_empty());
    }
}
