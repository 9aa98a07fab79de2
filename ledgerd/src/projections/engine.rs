//! Runs a parsed query over the store, streaming rows out as they become final.
//!
//! Planning: entry times never decrease along seq, so a time period becomes a seq range
//! by binary search over the entries tree itself (that is the time index). An agent filter
//! reads the agent index instead of the range: each entry one exact read of its frame, done
//! by a helper thread ahead of the pipeline when the range is long ([`read_agents`]).
//! Whatever is read is still checked against the whole filter, so the plan only decides what to read, never what matches. Entries
//! are read in place, each walked once and a string checked only when the query reads it
//! ([`LazyEntry`]); memory is bounded by the result (the pipeline's rows, sort buffer or
//! groups), not by the log. Rows that come straight from entries (a filter, `fields`,
//! `limit`) are written from the entry's borrowed cells with no query row in between:
//! as CSV ([`run_csv`]) or protobuf rows ([`run_wire`], the Query RPC).
//!
//! Counting queries (`count by agent, bin(time, 1h)` and the like; the shapes are those of
//! [`Query::count_shape`] over kind, agent, tool and decision) take the whole hours of
//! their range from the hourly counters ([`crate::projections::counters`]) instead: the counts are
//! summed per combination of the values the query reads (and per hour when it reads the
//! hour), and each sum is fed to the pipeline as one record weighted by it
//! ([`ledger_query::Pipeline::push_weighted`]). The partial hours at the edges of the
//! range, and the hours the counters do not hold yet (the last hour of the log, which may
//! still grow, and is kept in memory by the writer), are scanned as usual. When
//! in doubt (counters behind the log, damaged, or not adding up to the number of entries
//! in the hours counted; a time zone whose offset is not whole hours over those hours) the
//! query is scanned.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};

use ledger_proto::pb;
use std::io::Write;

use ledger_query::{Context, CsvWriter, Field, Pipeline, Prefilter, Query, Record, Row, Value};

use crate::projections::agent_index::{self, Located};
use crate::projections::counters::{self, HOUR_NS, PartView};
use crate::storage::store::{Store, StoreError};
use crate::storage::stored::LazyEntry;

/// The entry fields the hourly counters keep counts for.
const COUNTED: &[Field] = &[Field::Kind, Field::Agent, Field::Tool, Field::Decision];

/// `kind` as the query language sees it (unset is missing).
fn kind_value(kind: i32) -> Value<'static> {
    match kind {
        0 => Value::Missing,
        k => Value::text(pb::Kind::name_of(k)),
    }
}

/// `decision` as the query language sees it (unset is the empty name, which is missing).
fn decision_value(decision: i32) -> Value<'static> {
    Value::text(pb::Decision::name_of(decision))
}

/// Entries scanned between two hand-overs of finished rows.
const EMIT_EVERY: u64 = 1024;

/// A stored entry as the query engine sees it: walked once, a string checked only when
/// the query reads it (see [`LazyEntry`]; the engine fails the run on one that is not
/// UTF-8, as a full parse would).
pub struct View<'a, 'b>(pub &'a LazyEntry<'b>);

impl Record for View<'_, '_> {
    fn get(&self, field: &Field) -> Value<'_> {
        let r = self.0;
        match field {
            Field::Seq => Value::from(r.seq),
            Field::Time => Value::Time(r.time_unix_nanos),
            Field::Kind => kind_value(r.kind),
            Field::Agent => Value::text(r.str(4)),
            Field::AgentId => Value::text(r.str(5)),
            Field::Session => Value::text(r.str(6)),
            Field::Action => Value::text(r.str(7)),
            Field::Tool => Value::text(r.str(8)),
            Field::Params(_) => Value::text(r.str(9)),
            Field::Decision => decision_value(r.decision),
            Field::Rule => Value::text(r.str(11)),
            Field::PolicyVersion => match r.policy_version {
                0 => Value::Missing,
                v => Value::from(v),
            },
            Field::Reason => Value::text(r.str(13)),
            Field::WriterUid => Value::from(r.writer_uid),
            Field::WriterGid => Value::from(r.writer_gid),
            Field::WriterPid => Value::from(r.writer_pid),
            Field::Host => Value::text(r.str(17)),
            Field::Severity => match r.severity {
                0 => Value::Missing,
                s => Value::from(s),
            },
            Field::Flags => Value::List(r.flags().into_iter().map(Value::text).collect()),
            Field::PolicyCheck => Value::text(r.str(20)),
            Field::ShimId => Value::text(r.str(21)),
            Field::ShimSeq => match r.shim_seq {
                0 => Value::Missing,
                s => Value::from(s),
            },
            Field::RefSeq => r.ref_seq.map_or(Value::Missing, Value::from),
            Field::Details(_) => Value::text(r.str(24)),
        }
    }
}

/// The entries of one counter cell, summed over what a query reads of them: the fields
/// it reads (the others are missing) and a time in their hour.
struct Summed<'a> {
    kind: i32,
    agent: &'a str,
    tool: &'a str,
    decision: i32,
    time: i64,
}

impl Record for Summed<'_> {
    fn get(&self, field: &Field) -> Value<'_> {
        match field {
            Field::Time => Value::Time(self.time),
            Field::Kind => kind_value(self.kind),
            Field::Agent => Value::text(self.agent),
            Field::Tool => Value::text(self.tool),
            Field::Decision => decision_value(self.decision),
            _ => Value::Missing,
        }
    }
}

/// What a run looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Entries read and checked against the filter.
    pub scanned: u64,
    /// First and one-past-last seq of the range the plan chose.
    pub range: (u64, u64),
    /// Whether the agent index was used.
    pub by_agent: bool,
    /// Whether whole hours were answered from the hourly counters.
    pub counters: bool,
    /// The seqs `start..end` inside `range` that were counted from the counters instead of
    /// read (empty when the counters were not used).
    pub counted: (u64, u64),
    /// Counter cells read.
    pub cells: u64,
}

/// Runs `query` over the first `size` entries. `emit` gets finished rows in order as they
/// come; when it returns false (the client went away) the run stops.
pub fn run(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    emit: &mut dyn FnMut(Vec<Row>) -> bool,
) -> Result<Stats, StoreError> {
    run_with(store, size, query, ctx, &Scan::default(), emit)
}

/// How long ranges are scanned (see [`scan_range`]). The default uses the machine's
/// cores; tests set it to compare a sequential scan with a parallel one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Threads that scan one range, the calling thread included (1: sequential; more:
    /// also one helper thread reading the entries an agent filter picks).
    pub threads: usize,
    /// Ranges shorter than this are scanned (or read through the agent index) on the
    /// calling thread alone.
    pub parallel_min: u64,
    /// A helper thread hands over the records that passed the filter about this many
    /// bytes at a time (those an agent filter picks: at most [`AGENT_HANDOVER_BYTES`]).
    pub handover_bytes: usize,
    /// Entries in each block of a parallel scan (blocks are dealt out to the threads in
    /// turn).
    pub block: u64,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_SCAN_THREADS),
            parallel_min: PARALLEL_MIN,
            handover_bytes: HANDOVER_BYTES,
            block: BLOCK,
        }
    }
}

/// [`run`] with the scan set by `scan`.
pub fn run_with(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    scan: &Scan,
    emit: &mut dyn FnMut(Vec<Row>) -> bool,
) -> Result<Stats, StoreError> {
    let mut out = Rows { emit, scanned: 0 };
    execute(store, size, query, ctx, scan, &mut out)
}

/// Where [`execute`] sends what a query gives.
trait Sink {
    /// Feeds one scanned entry to the pipeline; false stops the run.
    fn push(&mut self, pipeline: &mut Pipeline, entry: &View<'_, '_>) -> bool;
    /// Rows the pipeline finished (maybe none; called at the end of every run); false
    /// stops the run.
    fn rows(&mut self, rows: Vec<Row>) -> bool;
    /// Counts `n` scanned entries the pipeline rejected without being pushed them (see
    /// [`scan_range`]), handing over rows where pushing them would have; false stops
    /// the run.
    fn skip(&mut self, pipeline: &mut Pipeline, n: u64) -> bool;
    /// The time zone of the CSV this sink writes, when it takes rows rendered apart
    /// ([`Scanned::Rendered`]) for `pipeline`.
    fn renders(&self, _pipeline: &Pipeline) -> Option<jiff::tz::TimeZone> {
        None
    }
    /// Adds rows rendered apart (only offered when [`Sink::renders`] said so); false stops
    /// the run.
    fn rendered(&mut self, _rendered: &Rendered) -> bool {
        false
    }
}

/// Adds `n` to `scanned`; whether that passed a multiple of [`EMIT_EVERY`] (where a
/// sink hands over rows).
fn crossed(scanned: &mut u64, n: u64) -> bool {
    let before = *scanned;
    *scanned += n;
    *scanned / EMIT_EVERY > before / EMIT_EVERY
}

/// [`run`]'s sink: rows handed over every [`EMIT_EVERY`] entries.
struct Rows<'e> {
    emit: &'e mut dyn FnMut(Vec<Row>) -> bool,
    scanned: u64,
}

impl Sink for Rows<'_> {
    fn push(&mut self, pipeline: &mut Pipeline, entry: &View<'_, '_>) -> bool {
        pipeline.push(entry);
        self.scanned += 1;
        if self.scanned.is_multiple_of(EMIT_EVERY) || pipeline.is_done() {
            let rows = pipeline.take_rows();
            if !rows.is_empty() && !(self.emit)(rows) {
                return false;
            }
        }
        true
    }

    fn rows(&mut self, rows: Vec<Row>) -> bool {
        rows.is_empty() || (self.emit)(rows)
    }

    fn skip(&mut self, pipeline: &mut Pipeline, n: u64) -> bool {
        !crossed(&mut self.scanned, n) || self.rows(pipeline.take_rows())
    }
}

/// [`run_csv`]'s sink: a row that comes straight from an entry is written from its
/// borrowed cells (see [`Pipeline::push_cells`]); other rows as rows.
struct Csv<'w, W: Write> {
    csv: &'w mut CsvWriter<W>,
    failed: Option<std::io::Error>,
    scanned: u64,
}

impl<W: Write> Sink for Csv<'_, W> {
    fn push(&mut self, pipeline: &mut Pipeline, entry: &View<'_, '_>) -> bool {
        let csv = &mut *self.csv;
        if pipeline.push_cells(entry, &mut |v| csv.cell(v)) {
            // A string that was not UTF-8: the run fails (see `execute`), without the row.
            if entry.0.check().is_err() {
                return false;
            }
            if let Err(e) = csv.end_row() {
                self.failed = Some(e);
                return false;
            }
        }
        self.scanned += 1;
        if !pipeline.is_direct() && (self.scanned.is_multiple_of(EMIT_EVERY) || pipeline.is_done()) {
            let rows = pipeline.take_rows();
            return rows.is_empty() || self.rows(rows);
        }
        true
    }

    fn renders(&self, pipeline: &Pipeline) -> Option<jiff::tz::TimeZone> {
        pipeline.rows_are_independent().then(|| self.csv.tz().clone())
    }

    fn rendered(&mut self, r: &Rendered) -> bool {
        self.scanned += r.scanned;
        match self.csv.append_rendered(&r.bytes, r.rows, r.neutralised) {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    fn skip(&mut self, pipeline: &mut Pipeline, n: u64) -> bool {
        if !crossed(&mut self.scanned, n) || pipeline.is_direct() {
            return true;
        }
        let rows = pipeline.take_rows();
        rows.is_empty() || self.rows(rows)
    }

    fn rows(&mut self, rows: Vec<Row>) -> bool {
        if self.failed.is_some() {
            return false;
        }
        match self.csv.write_rows(&rows) {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }
}

/// [`run_wire`]'s sink: rows as protobuf rows, those that come straight from an entry
/// built from its borrowed cells (no owned query row in between), handed over every
/// [`EMIT_EVERY`] entries.
struct Wire<'e> {
    emit: &'e mut dyn FnMut(Vec<pb::Row>) -> bool,
    rows: Vec<pb::Row>,
    scanned: u64,
}

impl Sink for Wire<'_> {
    fn push(&mut self, pipeline: &mut Pipeline, entry: &View<'_, '_>) -> bool {
        let mut row = pb::Row::default();
        if pipeline.push_cells(entry, &mut |v| row.values.push(ledger_proto::wire::to_wire(v))) {
            self.rows.push(row);
        }
        self.scanned += 1;
        if self.scanned.is_multiple_of(EMIT_EVERY) || pipeline.is_done() {
            let rows = pipeline.take_rows();
            return self.rows(rows);
        }
        true
    }

    fn skip(&mut self, pipeline: &mut Pipeline, n: u64) -> bool {
        !crossed(&mut self.scanned, n) || self.rows(pipeline.take_rows())
    }

    fn rows(&mut self, rows: Vec<Row>) -> bool {
        let mut out = std::mem::take(&mut self.rows);
        out.extend(rows.iter().map(ledger_proto::wire::row_to_wire));
        out.is_empty() || (self.emit)(out)
    }
}

/// Runs `query` like [`run`], handing over its rows as protobuf rows (the Query RPC's
/// answer), built straight from the stored entries when no stage reshapes them.
pub fn run_wire(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    emit: &mut dyn FnMut(Vec<pb::Row>) -> bool,
) -> Result<Stats, StoreError> {
    let mut out = Wire { emit, rows: Vec::new(), scanned: 0 };
    execute(store, size, query, ctx, &Scan::default(), &mut out)
}

/// Why [`run_csv`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum CsvRunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the CSV: {0}")]
    Write(#[from] std::io::Error),
}

/// Runs `query` like [`run`] and writes its rows to `csv`. Rows that come straight from
/// entries (a filter, `fields`, `limit`: every export) are written from the stored
/// entries' borrowed fields, with no row built in between; the CSV is the same as
/// [`run`]'s rows written with [`CsvWriter::write_rows`].
pub fn run_csv<W: Write>(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    csv: &mut CsvWriter<W>,
) -> Result<Stats, CsvRunError> {
    run_csv_with(store, size, query, ctx, &Scan::default(), csv)
}

/// [`run_csv`] with the scan set by `scan`.
pub fn run_csv_with<W: Write>(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    scan: &Scan,
    csv: &mut CsvWriter<W>,
) -> Result<Stats, CsvRunError> {
    let mut out = Csv { csv, failed: None, scanned: 0 };
    let stats = execute(store, size, query, ctx, scan, &mut out)?;
    match out.failed {
        Some(e) => Err(e.into()),
        None => Ok(stats),
    }
}

/// Plans and runs `query`, feeding `out`.
fn execute(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    scan: &Scan,
    out: &mut dyn Sink,
) -> Result<Stats, StoreError> {
    let mut pipeline = query.pipeline(ctx);
    let (lo, hi) = match query.time_range(ctx) {
        Some((from, to)) => (first_at_or_after(store, size, from)?, first_at_or_after(store, size, to)?),
        None => (0, size),
    };
    let hi = hi.max(lo);
    let mut stats = Stats { range: (lo, hi), counted: (lo, lo), ..Stats::default() };
    let mut ranges = [(lo, hi), (hi, hi)];
    let counted = if lo < hi { from_counters(store, size, query, ctx, lo, &mut pipeline)? } else { None };
    if let Some(Counted { seqs, cells }) = counted {
        (stats.counters, stats.counted, stats.cells) = (true, seqs, cells);
        ranges = [(lo, seqs.0), (seqs.1, hi)];
    }
    let prefilter = pipeline.prefilter();
    let render = out.renders(&pipeline);
    let work = match (&render, &prefilter) {
        (Some(tz), _) => Some(Work::Csv { query, ctx, tz }),
        (None, Some(p)) => Some(Work::Filter(p)),
        (None, None) => None,
    };
    let mut step = |s: Scanned<'_, '_>, stats: &mut Stats| -> Result<bool, StoreError> {
        match s {
            Scanned::Entry(a) => {
                stats.scanned += 1;
                let going = out.push(&mut pipeline, &View(a)) && !pipeline.is_done();
                a.check().map_err(|e| StoreError::BadRecord { seq: a.seq, message: e.to_string() })?;
                Ok(going)
            }
            Scanned::Skipped(n) => {
                stats.scanned += n;
                Ok(out.skip(&mut pipeline, n))
            }
            Scanned::Rendered(r) => {
                stats.scanned += r.scanned;
                Ok(out.rendered(r))
            }
        }
    };
    let agents = query.agents();
    'scan: for (lo, hi) in ranges {
        if lo >= hi {
            continue;
        }
        match &agents {
            Some(agents) => {
                stats.by_agent = true;
                if !read_agents(store, size, agents, (lo, hi), scan, &mut |s| step(s, &mut stats))? {
                    break 'scan;
                }
            }
            None => {
                let going = scan_range(store, lo, hi, work.as_ref(), scan, &mut |s| step(s, &mut stats))?;
                if !going {
                    break 'scan;
                }
            }
        }
    }
    // Always called: a sink may hold rows of its own (see `Wire`).
    out.rows(pipeline.finish().rows);
    Ok(stats)
}

/// Feeds `step` the entries of `agents` in `lo..hi`, in seq order, read through the agent
/// index (each one exact read of its frame), until it returns false; returns whether it went
/// to the end.
///
/// With more than one thread and a range of at least [`Scan::parallel_min`] seqs, a
/// helper thread reads the index and the frames (the reads are most of the cost of a
/// lookup: a `pread` and a CRC each) and hands the records over, [`Scan::handover_bytes`]
/// at a time through a bounded queue, while this thread parses them and runs the pipeline:
/// `step` sees the same entries in the same order, and the same first error, as when
/// this thread reads them itself.
fn read_agents(
    store: &Store,
    size: u64,
    agents: &[String],
    (lo, hi): (u64, u64),
    scan: &Scan,
    step: &mut dyn FnMut(Scanned<'_, '_>) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    if scan.threads < 2 || hi - lo < scan.parallel_min.max(1) {
        let mut reader = store.reader();
        for found in merged_agent_entries(store, agents, lo, hi) {
            let Located { seq, offset, len } = found?;
            let going = reader
                .with_lazy_at((seq, offset, len), |a| step(Scanned::Entry(a)))?
                .ok_or(StoreError::NoSuchEntry { seq, size })??;
            if !going {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    let handover_bytes = scan.handover_bytes.clamp(1, AGENT_HANDOVER_BYTES);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Handover>(HANDOVER_QUEUE);
        let stop = &stop;
        scope.spawn(move || {
            let fresh = || Handover {
                bytes: Vec::with_capacity(handover_bytes.saturating_add(4096)),
                records: Vec::new(),
                scanned: 0,
                rendered: None,
                failed: None,
                last: false,
            };
            let mut out = fresh();
            let mut reader = store.reader();
            let read = (|| {
                for found in merged_agent_entries(store, agents, lo, hi) {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let Located { seq, offset, len } = found?;
                    let record =
                        reader.record_at((seq, offset, len))?.ok_or(StoreError::NoSuchEntry { seq, size })?;
                    let start = out.bytes.len();
                    out.bytes.extend_from_slice(record);
                    out.records.push((seq, start, out.bytes.len(), 0));
                    // The receiver stopped listening (it is done, or failed): stop too.
                    if out.bytes.len() >= handover_bytes
                        && tx.send(std::mem::replace(&mut out, fresh())).is_err()
                    {
                        return Ok(());
                    }
                }
                Ok(())
            })();
            out.failed = read.err();
            out.last = true;
            let _ = tx.send(out);
        });
        let result = (|| loop {
            let Ok(handover) = rx.recv() else {
                return Err(helper_stopped("the thread reading the agent index"));
            };
            for &(seq, start, end, _) in &handover.records {
                let entry = LazyEntry::parse(&handover.bytes[start..end])
                    .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
                if !step(Scanned::Entry(&entry))? {
                    return Ok(false);
                }
            }
            if let Some(e) = handover.failed {
                return Err(e);
            }
            if handover.last {
                return Ok(true);
            }
        })();
        // The helper, if still reading, stops at its next entry (and its queue is dropped).
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        result
    })
}

/// The error of a query whose helper thread ended without handing over its last part:
/// it panicked (a bug; ledgerd's log has its message). Nothing was changed.
fn helper_stopped(who: &str) -> StoreError {
    StoreError::Io {
        path: std::path::PathBuf::from("(query)"),
        source: std::io::Error::other(format!(
            "{who} stopped before the end of its part (see ledgerd's log); nothing was changed, retry the query"
        )),
    }
}

/// The most record bytes the helper of [`read_agents`] hands over at a time: small, so
/// that the records are still in cache when parsed, and the first rows come soon.
const AGENT_HANDOVER_BYTES: usize = 64 * 1024;

/// Ranges shorter than this are scanned on the calling thread alone (by default).
const PARALLEL_MIN: u64 = 64 * 1024;
/// At most this many threads scan one range (the calling thread among them).
const MAX_SCAN_THREADS: usize = 4;
/// Entries in each block of a parallel scan (by default): about 5 MiB of CSV.
const BLOCK: u64 = 16 * 1024;
/// A helper thread hands over the records that passed its filter, or its rendered CSV,
/// about this many bytes at a time (by default)...
const HANDOVER_BYTES: usize = 1 << 20;
/// ...with at most this many hand-overs waiting (a block's worth of CSV and one more):
/// what a helper holds is bounded whatever the filter lets through.
const HANDOVER_QUEUE: usize = 8;

/// Feeds `step` every entry of `lo..hi` in seq order, until it returns false; returns
/// whether it went to the end.
///
/// When there is `work` for helpers and the range is long, it is cut into blocks dealt
/// out in turn to as many threads as there are cores (up to [`MAX_SCAN_THREADS`]): the
/// calling thread runs its blocks through `step` itself, while helper threads read theirs
/// and either test each entry against the query's leading filters, handing over only the
/// records that pass ([`Work::Filter`]), or render its CSV row ([`Work::Csv`]), through a
/// bounded queue of byte buffers; the calling thread feeds every block to `step` in
/// order. `step` so sees exactly the entries a sequential scan would give it that can
/// change the result (or their rows, rendered alike), in the same order, and the number
/// of the others between them ([`Scanned::Skipped`]), so [`Stats`], the hand-overs of
/// rows and errors (a damaged record, a string that is not UTF-8: the first in seq
/// order) are those of a sequential scan.
fn scan_range(
    store: &Store,
    lo: u64,
    hi: u64,
    work: Option<&Work<'_>>,
    scan: &Scan,
    step: &mut dyn FnMut(Scanned<'_, '_>) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let threads = scan.threads.max(1) as u64;
    let parallel = match work {
        Some(w) if threads > 1 && hi - lo >= scan.parallel_min.max(1) => Some(w),
        _ => None,
    };
    let Some(work) = parallel else { return scan_part(store, lo, hi, step) };
    // Blocks dealt out in turn: block `i` is scanned by thread `i % threads` (0 is this
    // one), so every thread always has a block to work on while this one feeds the
    // blocks in order, and a helper runs at most one block and a few hand-overs ahead.
    let block = scan.block.max(1);
    let blocks: Vec<(u64, u64)> = (lo..hi)
        .step_by(usize::try_from(block).unwrap_or(usize::MAX))
        .map(|a| (a, (a + block).min(hi)))
        .collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut queues = Vec::new();
        for k in 1..threads as usize {
            let mine: Vec<(u64, u64)> = blocks.iter().copied().skip(k).step_by(threads as usize).collect();
            if mine.is_empty() {
                break;
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(HANDOVER_QUEUE);
            let stop = &stop;
            let handover_bytes = scan.handover_bytes;
            scope.spawn(move || {
                for part in mine {
                    if !helper(store, part, work, handover_bytes, stop, &tx) {
                        break;
                    }
                }
            });
            queues.push(rx);
        }
        let result = (|| {
            for (i, &(a, b)) in blocks.iter().enumerate() {
                let owner = i % threads as usize;
                if owner == 0 {
                    if !scan_part(store, a, b, step)? {
                        return Ok(false);
                    }
                    continue;
                }
                let Some(rx) = queues.get(owner - 1) else { break };
                // Entries of this block stepped or skipped so far.
                let mut seen = 0;
                // A helper ends each block with a hand-over marked `last` (see `helper`);
                // a queue that ends before (the helper panicked) is a failed scan.
                let mut done = false;
                while !done {
                    let Ok(handover) = rx.recv() else { break };
                    for &(seq, start, end, scanned) in &handover.records {
                        if scanned - seen > 1 && !step(Scanned::Skipped(scanned - seen - 1))? {
                            return Ok(false);
                        }
                        seen = scanned;
                        let entry = LazyEntry::parse(&handover.bytes[start..end])
                            .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
                        if !step(Scanned::Entry(&entry))? {
                            return Ok(false);
                        }
                    }
                    if let Some(r) = &handover.rendered {
                        if !step(Scanned::Rendered(r))? {
                            return Ok(false);
                        }
                        seen += r.scanned;
                    }
                    if let Some(e) = handover.failed {
                        return Err(e);
                    }
                    if handover.scanned > seen && !step(Scanned::Skipped(handover.scanned - seen))? {
                        return Ok(false);
                    }
                    seen = handover.scanned;
                    done = handover.last;
                }
                if !done {
                    return Err(helper_stopped("a scanning thread"));
                }
            }
            Ok(true)
        })();
        // Helpers still reading stop at their next entry (and their queues are dropped).
        stop.store(true, Ordering::Relaxed);
        drop(queues);
        result
    })
}

/// What [`scan_range`] feeds its caller.
enum Scanned<'e, 'b> {
    /// The next entry.
    Entry(&'e LazyEntry<'b>),
    /// So many entries, before the next, that the query's leading filters rejected.
    Skipped(u64),
    /// The CSV rows of the next entries, rendered by a helper (see [`Work::Csv`]).
    Rendered(&'e Rendered),
}

/// What the helper threads of [`scan_range`] do with their parts.
enum Work<'a> {
    /// Test each entry against the query's leading filters; hand over those that pass.
    Filter(&'a Prefilter),
    /// Run each entry through a copy of the query's pipeline (one whose rows are
    /// independent: [`Pipeline::rows_are_independent`]) and hand over its rows as CSV,
    /// rendered as the caller's writer would: the sink only appends the bytes.
    Csv { query: &'a Query, ctx: &'a Context, tz: &'a jiff::tz::TimeZone },
}

/// CSV rows a helper rendered (see [`Work::Csv`]).
struct Rendered {
    bytes: Vec<u8>,
    rows: u64,
    neutralised: usize,
    /// Entries these rows come from, rejected ones included.
    scanned: u64,
}

/// Feeds `step` every entry of `lo..hi` in seq order, on this thread.
fn scan_part(
    store: &Store,
    lo: u64,
    hi: u64,
    step: &mut dyn FnMut(Scanned<'_, '_>) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let mut going = true;
    store.scan(lo, hi, |seq, bytes| {
        let entry =
            LazyEntry::parse(bytes).map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
        going = step(Scanned::Entry(&entry))?;
        Ok(going)
    })?;
    Ok(going)
}

/// Records a helper thread of [`scan_range`] found to pass the filter, in seq order.
struct Handover {
    bytes: Vec<u8>,
    /// (seq, start, end in `bytes`, entries of the part scanned up to and with it).
    records: Vec<(u64, usize, usize, u64)>,
    /// Entries of the part scanned up to the end of this hand-over.
    scanned: u64,
    /// Or, for [`Work::Csv`], the CSV of this hand-over's entries (no `records` then).
    rendered: Option<Rendered>,
    /// Why the helper stopped after these records (the first error in seq order).
    failed: Option<StoreError>,
    /// Whether this is the helper's last hand-over.
    last: bool,
}

/// A helper's [`Work::Csv`]: its copy of the pipeline, its writer, and the rows,
/// neutralised cells and entries scanned at the last [`CsvPart::take`].
struct CsvPart {
    pipeline: Pipeline,
    writer: CsvWriter<Vec<u8>>,
    taken: (u64, usize, u64),
}

impl CsvPart {
    /// What the writer holds, as rendered rows since the last take.
    fn take(&mut self, scanned: u64) -> Result<Rendered, StoreError> {
        let w = &mut self.writer;
        let bytes =
            w.take_bytes().map_err(|e| StoreError::Io { path: std::path::PathBuf::new(), source: e })?;
        let (rows, neutralised, at) = self.taken;
        self.taken = (w.rows(), w.neutralised(), scanned);
        Ok(Rendered {
            bytes,
            rows: w.rows() - rows,
            neutralised: w.neutralised() - neutralised,
            scanned: scanned - at,
        })
    }
}

/// A helper of [`scan_range`]: scans the block `lo..hi` and hands over what `work` makes
/// of it, in order, ending with a hand-over marked `last` (holding the first error, if
/// any); whether to go on with its next block (not after an error, or once the caller
/// stopped listening).
fn helper(
    store: &Store,
    (lo, hi): (u64, u64),
    work: &Work<'_>,
    handover_bytes: usize,
    stop: &AtomicBool,
    tx: &std::sync::mpsc::SyncSender<Handover>,
) -> bool {
    let fresh = || Handover {
        bytes: Vec::new(),
        records: Vec::new(),
        scanned: 0,
        rendered: None,
        failed: None,
        last: false,
    };
    let bad = |seq: u64| {
        move |e: crate::storage::stored::BadEntry| StoreError::BadRecord { seq, message: e.to_string() }
    };
    let mut out = fresh();
    let mut scanned = 0u64;
    let mut csv = match work {
        Work::Csv { query, ctx, tz } => Some(CsvPart {
            pipeline: query.pipeline(ctx),
            writer: CsvWriter::in_memory((*tz).clone()),
            taken: (0, 0, 0),
        }),
        Work::Filter(_) => None,
    };
    let take = |csv: &mut Option<CsvPart>, out: &mut Handover, scanned: u64| -> Result<(), StoreError> {
        if let Some(part) = csv {
            out.rendered = Some(part.take(scanned)?);
        }
        Ok(())
    };
    let result = store.scan(lo, hi, |seq, bytes| {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let entry = LazyEntry::parse(bytes).map_err(bad(seq))?;
        scanned += 1;
        let full = match (work, &mut csv) {
            (_, Some(CsvPart { pipeline, writer: w, .. })) => {
                // As the caller's `Csv` sink does with an entry.
                if pipeline.push_cells(&View(&entry), &mut |v| w.cell(v)) {
                    entry.check().map_err(bad(seq))?;
                    w.end_row().map_err(|e| StoreError::Io { path: std::path::PathBuf::new(), source: e })?;
                } else {
                    entry.check().map_err(bad(seq))?;
                }
                w.bytes_len() >= handover_bytes
            }
            (Work::Filter(prefilter), None) => {
                if prefilter.matches(&View(&entry)) {
                    let start = out.bytes.len();
                    out.bytes.extend_from_slice(bytes);
                    out.records.push((seq, start, out.bytes.len(), scanned));
                } else {
                    // Rejected: what it read must still be text, as in a sequential scan.
                    entry.check().map_err(bad(seq))?;
                }
                out.bytes.len() >= handover_bytes
            }
            (Work::Csv { .. }, None) => false,
        };
        if full {
            take(&mut csv, &mut out, scanned)?;
            out.scanned = scanned;
            if tx.send(std::mem::replace(&mut out, fresh())).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    });
    out.failed = result.err();
    if let Err(e) = take(&mut csv, &mut out, scanned) {
        out.failed.get_or_insert(e);
    }
    out.scanned = scanned;
    out.last = true;
    let failed = out.failed.is_some();
    tx.send(out).is_ok() && !failed && !stop.load(Ordering::Relaxed)
}

/// A combination of counted values, reduced to what a query reads: strings as indexes
/// into the run's string table, unread fields zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SumKey {
    hour: i64,
    kind: i32,
    decision: i32,
    agent: u32,
    tool: u32,
}

/// The Fx hash (as in rustc): a multiply and a rotate per word. [`SumKey`]s are small
/// integers, nothing an attacker chooses the hash of.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_i32(&mut self, n: i32) {
        self.add(u64::from(n as u32));
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type Sums = HashMap<SumKey, u64, BuildHasherDefault<FxHasher>>;

/// Feeds the sums to the pipeline, one weighted record each.
fn feed(sums: &mut Sums, names: &[Box<str>], pipeline: &mut Pipeline) {
    let name = |id: u32| names.get(id as usize).map_or("", |s| &**s);
    for (k, n) in sums.drain() {
        let summed = Summed {
            kind: k.kind,
            agent: name(k.agent),
            tool: name(k.tool),
            decision: k.decision,
            time: k.hour * HOUR_NS,
        };
        pipeline.push_weighted(&summed, n);
    }
}

/// What [`from_counters`] answered.
struct Counted {
    /// The seqs the hours counted hold, which must not be scanned.
    seqs: (u64, u64),
    /// Counter cells read.
    cells: u64,
}

/// Feeds `pipeline` the whole hours of the query's range (from seq `lo` on) from the
/// hourly counters, if the query and the counters allow it (see the module docs), or
/// returns `None` when the query must be scanned (the pipeline is then as it was).
fn from_counters(
    store: &Store,
    size: u64,
    query: &Query,
    ctx: &Context,
    lo: u64,
    pipeline: &mut Pipeline,
) -> Result<Option<Counted>, StoreError> {
    let Some(shape) = query.count_shape(COUNTED) else { return Ok(None) };
    let Some(stored) = counters::counted_end(&store.counters)? else { return Ok(None) };
    // Whole hours inside the query's time range, from the first entry in it, and before
    // the hour of entry `min(stored, size - 1)`: the stored parts count exactly the entries
    // below `stored`, and times never decrease along seq, so an earlier hour holds neither
    // an entry they miss nor one past `size` (which they may already count).
    let (from, to) = query.time_range(ctx).unwrap_or((i64::MIN, i64::MAX));
    let first_hour = from.div_euclid(HOUR_NS) + i64::from(from.rem_euclid(HOUR_NS) != 0);
    let h_lo = first_hour.max(counters::hour_of(entry_time(store, size, lo)?));
    let edge = counters::hour_of(entry_time(store, size, stored.min(size - 1))?);
    let h_hi = to.div_euclid(HOUR_NS).min(edge);
    if h_lo >= h_hi {
        return Ok(None);
    }
    let read = |f: Field| shape.fields.contains(&f);
    let (by_kind, by_agent, by_tool, by_decision) =
        (read(Field::Kind), read(Field::Agent), read(Field::Tool), read(Field::Decision));
    // Entries of other agents cannot match (`agents()` is conservative): skip their cells.
    let agents: Option<HashSet<String>> = query.agents().map(|a| a.into_iter().collect());
    let utc = ctx.tz() == &jiff::tz::TimeZone::UTC;

    let mut names: Vec<Box<str>> = Vec::new();
    let mut ids: HashMap<Box<str>, u32> = HashMap::new();
    // Summed per hour when the query reads the hour (and fed hour by hour), else over all.
    let mut sums = Sums::default();
    let (mut local, mut wanted) = (Vec::new(), Vec::new());
    let (mut cells, mut total) = (0u64, 0u64);
    let mut current = None;
    let mut fed = false;
    let seqs =
        (first_at_or_after(store, size, h_lo * HOUR_NS)?, first_at_or_after(store, size, h_hi * HOUR_NS)?);
    // Giving up after some hours were fed: start the pipeline over for the scan.
    let give_up = |pipeline: &mut Pipeline, fed: bool| {
        if fed {
            *pipeline = query.pipeline(ctx);
        }
        Ok(None)
    };
    for item in counters::parts(&store.counters, h_lo, h_hi) {
        let (hour, value) = item?;
        if shape.calendar && current != Some(hour) {
            if !utc && !steady(ctx.tz(), hour) {
                return give_up(pipeline, fed);
            }
            fed |= !sums.is_empty();
            feed(&mut sums, &names, pipeline);
            current = Some(hour);
        }
        let Some(part) = PartView::parse(&value) else {
            tracing::warn!(
                hour,
                "damaged hourly counters; scanning instead (run `ledgerd --rebuild-projections`)"
            );
            return give_up(pipeline, fed);
        };
        local.clear();
        wanted.clear();
        for s in &part.strings {
            let id = match ids.get(*s) {
                Some(id) => *id,
                None => {
                    let id = names.len() as u32;
                    names.push(Box::from(*s));
                    ids.insert(Box::from(*s), id);
                    id
                }
            };
            local.push(id);
            wanted.push(agents.as_ref().is_none_or(|a| a.contains(*s)));
        }
        let mut read = 0;
        for c in part.cells() {
            read += 1;
            total = total.saturating_add(c.count);
            if !wanted[c.agent as usize] {
                continue;
            }
            let key = SumKey {
                hour: if shape.calendar { hour } else { h_lo },
                kind: if by_kind { c.kind } else { 0 },
                decision: if by_decision { c.decision } else { 0 },
                agent: if by_agent { local[c.agent as usize] } else { u32::MAX },
                tool: if by_tool { local[c.tool as usize] } else { u32::MAX },
            };
            *sums.entry(key).or_insert(0) += c.count;
        }
        if read != part.len() {
            tracing::warn!(
                hour,
                "damaged hourly counters; scanning instead (run `ledgerd --rebuild-projections`)"
            );
            return give_up(pipeline, fed);
        }
        cells += read as u64;
    }
    // The counts must add up to the entries those hours hold (a cheap check against parts
    // gone missing).
    if total != seqs.1 - seqs.0 {
        tracing::warn!(
            counted = total,
            entries = seqs.1 - seqs.0,
            "hourly counters do not match the log; scanning instead (run `ledgerd --rebuild-projections`)"
        );
        return give_up(pipeline, fed);
    }
    feed(&mut sums, &names, pipeline);
    Ok(Some(Counted { seqs, cells }))
}

/// Whether `tz` has one offset over the whole hour, a whole number of hours: then the
/// hour is one local wall-clock hour, and the calendar functions are steady over it.
fn steady(tz: &jiff::tz::TimeZone, hour: i64) -> bool {
    let at =
        |ns: i64| jiff::Timestamp::from_nanosecond(i128::from(ns)).map(|t| tz.to_offset(t).seconds()).ok();
    let start = hour.saturating_mul(HOUR_NS);
    match (at(start), at(start.saturating_add(HOUR_NS - 1))) {
        (Some(a), Some(b)) => a == b && a % 3600 == 0,
        _ => false,
    }
}

/// The time of entry `seq`.
fn entry_time(store: &Store, size: u64, seq: u64) -> Result<i64, StoreError> {
    store.with_record(seq, |a| a.time_unix_nanos)?.ok_or(StoreError::NoSuchEntry { seq, size })
}

/// The first seq below `size` whose time is at or after `t` (`size` if none): entry times
/// never decrease along seq, so this is a binary search.
fn first_at_or_after(store: &Store, size: u64, t: i64) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry_time(store, size, mid)? < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Several agents' entries in `lo..hi` from the agent index, merged in ascending seq order.
fn merged_agent_entries(
    store: &Store,
    agents: &[String],
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = Result<Located, StoreError>> {
    let mut sources: Vec<_> =
        agents.iter().map(|a| agent_index::entries(&store.by_agent, a, lo, hi)).collect();
    let mut heap = BinaryHeap::new();
    let mut pending_error = None;
    for (i, source) in sources.iter_mut().enumerate() {
        match source.next() {
            Some(Ok(e)) => heap.push(Reverse((e, i))),
            Some(Err(e)) => pending_error = Some(e),
            None => {}
        }
    }
    let mut failed = pending_error.map(StoreError::from);
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let Reverse((e, i)) = heap.pop()?;
        match sources[i].next() {
            Some(Ok(next)) => heap.push(Reverse((next, i))),
            Some(Err(e)) => failed = Some(e.into()),
            None => {}
        }
        Some(Ok(e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_query::{DEFAULT_COLUMNS, format_value};

    /// The daemon reads stored entries through `View`, clients read entries off the wire
    /// through `ledger_proto::wire::EntryRecord` (`watch`, alerts, evidence bundles): both
    /// must show every field alike, or a bundle row would differ from its export row.
    #[test]
    fn stored_and_wire_entries_read_the_same() {
        let full = pb::Entry {
            seq: 7,
            time_unix_nanos: 1_767_225_600_500_000_000,
            kind: pb::Kind::Decision as i32,
            agent: "ops-bot".into(),
            agent_id: "0b7c".into(),
            session: "s1".into(),
            action: "run".into(),
            tool: "shell.exec".into(),
            params: r#"{"cmd":"ls"}"#.into(),
            decision: pb::Decision::Deny as i32,
            rule: "no-shell".into(),
            policy_version: 3,
            reason: "=cmd".into(),
            writer_uid: 1000,
            writer_gid: 1000,
            writer_pid: 42,
            host: "vm".into(),
            severity: 9,
            flags: vec!["deny_burst".into(), "first_use".into()],
            policy_check: "match".into(),
            shim_id: "abc".into(),
            shim_seq: 5,
            ref_seq: Some(3),
            details: r#"{"a":1}"#.into(),
        };
        let unset = pb::Entry { seq: 0, kind: 0, ..Default::default() };
        let odd = pb::Entry { kind: 99, decision: 7, ref_seq: Some(0), ..full.clone() };
        let tz = jiff::tz::TimeZone::UTC;
        for entry in [full, unset, odd] {
            let bytes = crate::storage::stored::encode(&entry);
            {
                let archived = LazyEntry::parse(&bytes).expect("parse");
                let (stored, wire) = (View(&archived), ledger_proto::wire::EntryRecord(&entry));
                for name in DEFAULT_COLUMNS {
                    let field = Field::from_name(name).expect("a field");
                    let (a, b) = (stored.get(&field), wire.get(&field));
                    assert_eq!(
                        (a.is_missing(), format_value(&a, &tz)),
                        (b.is_missing(), format_value(&b, &tz)),
                        "{name} of {entry:?}"
                    );
                }
                assert!(archived.check().is_ok());
            }
        }
    }
}
