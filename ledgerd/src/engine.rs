//! Runs a parsed query over the store, streaming rows out as they become final.
//!
//! Planning: entry times never decrease along seq, so a time period becomes a seq range
//! by binary search over the entries tree itself (that is the time index). An agent filter
//! reads the agent index instead of the range. Whatever is read is still checked against
//! the whole filter, so the plan only decides what to read, never what matches. Entries
//! are read as rkyv archives in place; memory is bounded by the result (the pipeline's
//! rows, sort buffer or groups), not by the log.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use ledger_proto::pb;
use ledger_query::{Context, Field, Query, Record, Row, Value};

use crate::agent_index;
use crate::record::{self, ArchivedRecord};
use crate::store::{Store, StoreError};

/// Entries scanned between two hand-overs of finished rows.
const EMIT_EVERY: u64 = 1024;

/// A stored entry as the query engine sees it.
pub struct View<'a>(pub &'a ArchivedRecord);

impl Record for View<'_> {
    fn get(&self, field: &Field) -> Value<'_> {
        let r = self.0;
        match field {
            Field::Seq => Value::from(r.seq.to_native()),
            Field::Time => Value::Time(r.time_unix_nanos.to_native()),
            Field::Kind => match r.kind.to_native() {
                0 => Value::Missing,
                k => Value::text(pb::Kind::name_of(k)),
            },
            Field::Agent => Value::text(&r.agent),
            Field::AgentId => Value::text(&r.agent_id),
            Field::Session => Value::text(&r.session),
            Field::Action => Value::text(&r.action),
            Field::Tool => Value::text(&r.tool),
            Field::Params(_) => Value::text(&r.params),
            Field::Decision => Value::text(pb::Decision::name_of(r.decision.to_native())),
            Field::Rule => Value::text(&r.rule),
            Field::PolicyVersion => match r.policy_version.to_native() {
                0 => Value::Missing,
                v => Value::from(v),
            },
            Field::Reason => Value::text(&r.reason),
            Field::WriterUid => Value::from(r.writer_uid.to_native()),
            Field::WriterGid => Value::from(r.writer_gid.to_native()),
            Field::WriterPid => Value::from(r.writer_pid.to_native()),
            Field::Host => Value::text(&r.host),
            Field::Severity => match r.severity.to_native() {
                0 => Value::Missing,
                s => Value::from(s),
            },
            Field::Flags => Value::List(r.flags.iter().map(|f| Value::text(f.as_str())).collect()),
            Field::PolicyCheck => Value::text(&r.policy_check),
            Field::ShimId => Value::text(&r.shim_id),
            Field::ShimSeq => match r.shim_seq.to_native() {
                0 => Value::Missing,
                s => Value::from(s),
            },
            Field::RefSeq => r.ref_seq.as_ref().map_or(Value::Missing, |s| Value::from(s.to_native())),
            Field::Details(_) => Value::text(&r.details),
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
    let mut pipeline = query.pipeline(ctx);
    let (lo, hi) = match query.time_range(ctx) {
        Some((from, to)) => (first_at_or_after(store, size, from)?, first_at_or_after(store, size, to)?),
        None => (0, size),
    };
    let mut stats = Stats { scanned: 0, range: (lo, hi.max(lo)), by_agent: false };
    let mut step = |bytes: &[u8], seq: u64, stats: &mut Stats| -> Result<bool, StoreError> {
        record::with_archived(bytes, |a| pipeline.push(&View(a)))
            .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
        stats.scanned += 1;
        if stats.scanned.is_multiple_of(EMIT_EVERY) || pipeline.is_done() {
            let rows = pipeline.take_rows();
            if !rows.is_empty() && !emit(rows) {
                return Ok(false);
            }
        }
        Ok(!pipeline.is_done())
    };
    if lo < hi {
        match query.agents() {
            Some(agents) => {
                stats.by_agent = true;
                for seq in merged_agent_seqs(store, &agents, lo, hi) {
                    let seq = seq?;
                    let bytes =
                        store.entries.get(seq.to_be_bytes())?.ok_or(StoreError::NoSuchEntry { seq, size })?;
                    if !step(&bytes, seq, &mut stats)? {
                        break;
                    }
                }
            }
            None => {
                for item in store.entries.range(lo.to_be_bytes()..hi.to_be_bytes()) {
                    let (key, bytes) = item?;
                    let seq = crate::store::seq_from_key(&key).unwrap_or(0);
                    if !step(&bytes, seq, &mut stats)? {
                        break;
                    }
                }
            }
        }
    }
    let rest = pipeline.finish().rows;
    if !rest.is_empty() {
        emit(rest);
    }
    Ok(stats)
}

/// The first seq below `size` whose time is at or after `t` (`size` if none): entry times
/// never decrease along seq, so this is a binary search.
fn first_at_or_after(store: &Store, size: u64, t: i64) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let bytes =
            store.entries.get(mid.to_be_bytes())?.ok_or(StoreError::NoSuchEntry { seq: mid, size })?;
        let time = record::with_archived(&bytes, |a| a.time_unix_nanos.to_native())
            .map_err(|e| StoreError::BadRecord { seq: mid, message: e.to_string() })?;
        if time < t {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// The seqs of several agents' entries in `lo..hi`, merged in ascending order.
fn merged_agent_seqs(
    store: &Store,
    agents: &[String],
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = Result<u64, StoreError>> {
    let mut sources: Vec<_> = agents.iter().map(|a| agent_index::seqs(&store.by_agent, a, lo, hi)).collect();
    let mut heap = BinaryHeap::new();
    let mut pending_error = None;
    for (i, source) in sources.iter_mut().enumerate() {
        match source.next() {
            Some(Ok(seq)) => heap.push(Reverse((seq, i))),
            Some(Err(e)) => pending_error = Some(e),
            None => {}
        }
    }
    let mut failed = pending_error.map(StoreError::from);
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let Reverse((seq, i)) = heap.pop()?;
        match sources[i].next() {
            Some(Ok(next)) => heap.push(Reverse((next, i))),
            Some(Err(e)) => failed = Some(e.into()),
            None => {}
        }
        Some(Ok(seq))
    })
}
