//! The streaming pipeline: records go in one at a time, rows come out, and memory stays
//! bounded by the result (rows kept, groups counted, or the `N` of `sort | limit N`).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::aggregate::{Aggregate, Row, Top};
use crate::eval::{RowSource, View, eval, read};
use crate::plan::{Access, Cond, Lowered, Step};
use crate::record::Record;
use crate::time::Context;
use crate::value::{OwnedValue, Value};

/// The rows a query produced, with their column names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<String>,
    /// Each row has one value per column, in column order.
    pub rows: Vec<Row>,
}

impl ResultSet {
    /// The rows as `(column, value)` pairs.
    pub fn named_rows(&self) -> impl Iterator<Item = Vec<(&str, &OwnedValue)>> + '_ {
        self.rows.iter().map(|row| self.columns.iter().map(String::as_str).zip(row.iter()).collect())
    }
}

/// A query running over a scan.
///
/// ```
/// use ledger_query::{parse, Context, Field, Record, Value};
///
/// struct E(u64, &'static str);
/// impl Record for E {
///     fn get(&self, f: &Field) -> Value<'_> {
///         match f {
///             Field::Seq => Value::from(self.0),
///             Field::Decision => Value::text(self.1),
///             _ => Value::Missing,
///         }
///     }
/// }
///
/// let query = parse("decision = deny | fields seq | limit 1").unwrap();
/// let ctx = Context::utc(jiff::Timestamp::UNIX_EPOCH);
/// let mut pipeline = query.pipeline(&ctx);
/// for e in [E(0, "allow"), E(1, "deny"), E(2, "deny")] {
///     if pipeline.is_done() {
///         break; // `limit` without `sort`: the scan can stop early
///     }
///     pipeline.push(&e);
/// }
/// assert_eq!(pipeline.finish().rows, vec![vec![Value::Int(1)]]);
/// ```
#[derive(Debug)]
pub struct Pipeline {
    ctx: Context,
    live: Vec<LiveOp>,
    entry: Entry,
    ops: Vec<Op>,
    out: Vec<Row>,
    columns: Vec<String>,
    done: bool,
}

/// Steps that see the record itself.
#[derive(Debug)]
enum LiveOp {
    Filter(Cond),
    Limit { n: u64, seen: u64 },
}

/// Where a record turns into a row, or into an aggregation's state.
#[derive(Debug)]
enum Entry {
    Map(Vec<Access>),
    Aggregate(Aggregate),
    Top(Top),
}

/// Steps over rows.
#[derive(Debug)]
enum Op {
    Filter(Cond),
    /// `ends_scan`: nothing before this limit buffers, so once it is reached no later
    /// record can change the result.
    Limit {
        n: u64,
        seen: u64,
        ends_scan: bool,
    },
    Map(Vec<Access>),
    Sort(Sorter),
    Aggregate(Aggregate),
    Top(Top),
}

impl Op {
    fn buffers(&self) -> bool {
        matches!(self, Op::Sort(_) | Op::Aggregate(_) | Op::Top(_))
    }
}

impl Pipeline {
    pub(crate) fn new(lowered: &Lowered, columns: Vec<String>, ctx: &Context) -> Pipeline {
        let live = lowered
            .live
            .iter()
            .filter_map(|s| match s.resolved(ctx) {
                Step::Filter(c) => Some(LiveOp::Filter(c)),
                Step::Limit(n) => Some(LiveOp::Limit { n, seen: 0 }),
                _ => None,
            })
            .collect();
        let entry = match lowered.entry.clone() {
            Step::Aggregate { keys, aggs } => Entry::Aggregate(Aggregate::new(keys, aggs)),
            Step::Top { n, keys, value } => Entry::Top(Top::new(n, keys, value)),
            Step::Map(accesses) => Entry::Map(accesses),
            _ => Entry::Map(Vec::new()),
        };
        let mut buffered = !matches!(entry, Entry::Map(_));
        let mut ops: Vec<Op> = Vec::new();
        for step in &lowered.rows {
            let op = match step.resolved(ctx) {
                Step::Filter(c) => Op::Filter(c),
                Step::Limit(n) => {
                    // `sort | limit N` keeps only N rows while scanning.
                    if let Some(Op::Sort(sorter)) = ops.last_mut() {
                        if sorter.limit.is_none() {
                            sorter.limit = Some(usize::try_from(n).unwrap_or(usize::MAX));
                            continue;
                        }
                    }
                    Op::Limit { n, seen: 0, ends_scan: !buffered }
                }
                Step::Map(accesses) => Op::Map(accesses),
                Step::Sort(keys) => Op::Sort(Sorter::new(keys)),
                Step::Aggregate { keys, aggs } => Op::Aggregate(Aggregate::new(keys, aggs)),
                Step::Top { n, keys, value } => Op::Top(Top::new(n, keys, value)),
            };
            buffered |= op.buffers();
            ops.push(op);
        }
        let done = lowered.live.iter().any(|s| matches!(s, Step::Limit(0)))
            || ops.iter().any(|op| matches!(op, Op::Limit { n: 0, ends_scan: true, .. }));
        Pipeline { ctx: ctx.clone(), live, entry, ops, out: Vec::new(), columns, done }
    }

    /// The output column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether no further record can change the result (a `limit` without `sort` was
    /// reached): the scan may stop.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feeds one record.
    pub fn push<R: Record + ?Sized>(&mut self, rec: &R) {
        self.push_weighted(rec, 1);
    }

    /// Feeds one record standing for `n` records with the same values, as if it were
    /// pushed `n` times in a row (`n = 0` feeds nothing): `count` adds `n`, a `limit`
    /// takes as many of the `n` as it has room for, rows are repeated.
    ///
    /// This is how the daemon feeds pre-aggregated counts (see [`crate::Query::count_shape`]):
    /// one record per counted combination of field values, weighted by its count.
    ///
    /// ```
    /// use ledger_query::{parse, Context, Field, Record, Value};
    ///
    /// struct E(&'static str);
    /// impl Record for E {
    ///     fn get(&self, f: &Field) -> Value<'_> {
    ///         match f {
    ///             Field::Agent => Value::text(self.0),
    ///             _ => Value::Missing,
    ///         }
    ///     }
    /// }
    ///
    /// let query = parse("| count by agent").unwrap();
    /// let ctx = Context::utc(jiff::Timestamp::UNIX_EPOCH);
    /// let mut pipeline = query.pipeline(&ctx);
    /// pipeline.push_weighted(&E("ci-1"), 40);
    /// pipeline.push(&E("ci-1"));
    /// assert_eq!(pipeline.finish().rows, vec![vec![Value::text("ci-1").into_owned(), Value::Int(41)]]);
    /// ```
    pub fn push_weighted<R: Record + ?Sized>(&mut self, rec: &R, n: u64) {
        let view = View::new(rec);
        let n = self.admit(&view, n);
        if n == 0 {
            return;
        }
        let weight = i64::try_from(n).unwrap_or(i64::MAX);
        let row = match &mut self.entry {
            Entry::Map(accesses) => accesses.iter().map(|a| owned(read(&view, a, &self.ctx))).collect(),
            Entry::Aggregate(agg) => return agg.add(&view, &self.ctx, weight),
            Entry::Top(top) => return top.add(&view, &self.ctx, weight),
        };
        // Repeated rows: stop once a `limit` after this point is full, as `push` would.
        let stop = self.done;
        for _ in 1..n {
            self.push_row(0, Row::clone(&row));
            if self.done && !stop {
                return;
            }
        }
        self.push_row(0, row);
    }

    /// Runs the steps that see the record (filters, a `limit` before any other stage) on a
    /// record standing for `n`: how many of the `n` go on (0 when it is filtered out or
    /// the pipeline is done).
    fn admit<R: Record + ?Sized>(&mut self, view: &View<'_, R>, n: u64) -> u64 {
        if self.done || n == 0 {
            return 0;
        }
        let mut n = n;
        for op in &mut self.live {
            match op {
                LiveOp::Filter(c) => {
                    if !eval(c, view, &self.ctx) {
                        return 0;
                    }
                }
                LiveOp::Limit { n: limit, seen } => {
                    if *seen >= *limit {
                        self.done = true;
                        return 0;
                    }
                    n = n.min(*limit - *seen);
                    *seen += n;
                    if *seen >= *limit {
                        self.done = true;
                    }
                }
            }
        }
        n
    }

    /// The filters every record must pass before any other step sees it (those before
    /// the first `limit`), as a [`Prefilter`] another thread can evaluate; `None` when
    /// there are none (every record would pass) or the pipeline is done.
    ///
    /// A record it rejects would change nothing if pushed: the pipeline would evaluate
    /// the same conditions, in the same order (so read the same fields), and drop it. A
    /// scan may so skip such records, or test them elsewhere, and push only the others.
    pub fn prefilter(&self) -> Option<Prefilter> {
        if self.done {
            return None;
        }
        let conds: Vec<Cond> = self
            .live
            .iter()
            .map_while(|op| match op {
                LiveOp::Filter(c) => Some(c.clone()),
                LiveOp::Limit { .. } => None,
            })
            .collect();
        (!conds.is_empty()).then(|| Prefilter { conds, ctx: self.ctx.clone() })
    }

    /// Whether a record that passes becomes an output row as it is (nothing after the
    /// filter but `fields` and `limit`): then [`Pipeline::push_cells`] hands its cells
    /// out without building a row.
    pub fn is_direct(&self) -> bool {
        matches!(self.entry, Entry::Map(_)) && self.ops.is_empty()
    }

    /// Whether the pipeline [`is_direct`](Pipeline::is_direct) and no `limit` counts its
    /// records: then a record's row depends on that record alone, so parts of a scan can
    /// run through copies of the pipeline apart and their rows be put together in order.
    pub fn rows_are_independent(&self) -> bool {
        self.is_direct() && !self.done && self.live.iter().all(|op| matches!(op, LiveOp::Filter(_)))
    }

    /// Feeds one record, as [`Pipeline::push`] does; but when the pipeline
    /// [`is_direct`](Pipeline::is_direct), the row the record makes is not kept: its
    /// cells are handed to `cell` in column order, borrowed from the record, and the
    /// call returns true (false when the record was filtered out). A writer can so write
    /// rows straight from stored entries, with no owned row or string per cell. When the
    /// pipeline is not direct the record is pushed as usual (rows come from
    /// [`Pipeline::take_rows`]) and the call returns false.
    pub fn push_cells<R: Record + ?Sized>(&mut self, rec: &R, cell: &mut dyn FnMut(&Value<'_>)) -> bool {
        if !self.is_direct() {
            self.push(rec);
            return false;
        }
        let view = View::new(rec);
        if self.admit(&view, 1) == 0 {
            return false;
        }
        if let Entry::Map(accesses) = &self.entry {
            for a in accesses {
                cell(&read(&view, a, &self.ctx));
            }
        }
        true
    }

    /// Rows that are final already (for a pipeline that does not sort or aggregate), so
    /// they can be sent while the scan goes on. [`Pipeline::finish`] returns the rest.
    pub fn take_rows(&mut self) -> Vec<Row> {
        std::mem::take(&mut self.out)
    }

    /// Ends the scan: flushes sorts and aggregations and returns the remaining rows.
    pub fn finish(mut self) -> ResultSet {
        let entry = std::mem::replace(&mut self.entry, Entry::Map(Vec::new()));
        let flushed = match entry {
            Entry::Aggregate(agg) => agg.finish(),
            Entry::Top(top) => top.finish(),
            Entry::Map(_) => Vec::new(),
        };
        if self.ops.is_empty() {
            self.out.reserve(flushed.len());
        }
        for row in flushed {
            self.push_row(0, row);
        }
        for i in 0..self.ops.len() {
            if !self.ops[i].buffers() {
                continue;
            }
            let flushed = match std::mem::replace(&mut self.ops[i], Op::Map(Vec::new())) {
                Op::Sort(sorter) => sorter.finish(),
                Op::Aggregate(agg) => agg.finish(),
                Op::Top(top) => top.finish(),
                _ => Vec::new(),
            };
            for row in flushed {
                self.push_row(i + 1, row);
            }
        }
        ResultSet { columns: self.columns, rows: self.out }
    }

    /// Runs a row through the row steps from `from` on.
    fn push_row(&mut self, from: usize, mut row: Row) {
        let ctx = &self.ctx;
        for op in self.ops.iter_mut().skip(from) {
            match op {
                Op::Filter(c) => {
                    if !eval(c, &RowSource(&row), ctx) {
                        return;
                    }
                }
                Op::Limit { n, seen, ends_scan } => {
                    if *seen >= *n {
                        return;
                    }
                    *seen += 1;
                    if *seen >= *n && *ends_scan {
                        self.done = true;
                    }
                }
                Op::Map(accesses) => {
                    row = accesses.iter().map(|a| owned(read(&RowSource(&row), a, ctx))).collect();
                }
                Op::Sort(sorter) => return sorter.add(row, ctx),
                Op::Aggregate(agg) => return agg.add(&RowSource(&row), ctx, 1),
                Op::Top(top) => return top.add(&RowSource(&row), ctx, 1),
            }
        }
        self.out.push(row);
    }
}

/// The leading filters of a [`Pipeline`] (see [`Pipeline::prefilter`]), on their own: no
/// state, so copies of it can test records on several threads.
#[derive(Debug, Clone)]
pub struct Prefilter {
    conds: Vec<Cond>,
    ctx: Context,
}

impl Prefilter {
    /// Whether `rec` passes every leading filter (if not, pushing it would change nothing).
    pub fn matches<R: Record + ?Sized>(&self, rec: &R) -> bool {
        let view = View::new(rec);
        self.conds.iter().all(|c| eval(c, &view, &self.ctx))
    }
}

fn owned(v: std::borrow::Cow<'_, Value<'_>>) -> OwnedValue {
    v.into_owned().into_owned()
}

/// `sort`, keeping everything, or only the first `limit` rows in a bounded heap.
#[derive(Debug)]
struct Sorter {
    keys: Vec<Access>,
    desc: Arc<[bool]>,
    limit: Option<usize>,
    arrived: u64,
    heap: BinaryHeap<Item>,
    all: Vec<Item>,
}

/// A row with its sort key; ties keep arrival order, so sorting is stable.
#[derive(Debug)]
struct Item {
    key: Vec<OwnedValue>,
    desc: Arc<[bool]>,
    arrived: u64,
    row: Row,
}

impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        for ((a, b), desc) in self.key.iter().zip(&other.key).zip(self.desc.iter()) {
            let o = if *desc { b.cmp(a) } else { a.cmp(b) };
            if o != Ordering::Equal {
                return o;
            }
        }
        self.arrived.cmp(&other.arrived)
    }
}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Item {}

impl Sorter {
    fn new(keys: Vec<(Access, bool)>) -> Sorter {
        let desc: Arc<[bool]> = keys.iter().map(|(_, d)| *d).collect();
        let keys = keys.into_iter().map(|(a, _)| a).collect();
        Sorter { keys, desc, limit: None, arrived: 0, heap: BinaryHeap::new(), all: Vec::new() }
    }

    fn add(&mut self, row: Row, ctx: &Context) {
        let key = self.keys.iter().map(|k| owned(read(&RowSource(&row), k, ctx)).normalized()).collect();
        let item = Item { key, desc: Arc::clone(&self.desc), arrived: self.arrived, row };
        self.arrived += 1;
        match self.limit {
            None => self.all.push(item),
            Some(0) => {}
            Some(n) => {
                // The heap's top is the worst row kept; a new row only enters if it beats it.
                if self.heap.len() < n {
                    self.heap.push(item);
                } else if self.heap.peek().is_some_and(|worst| item < *worst) {
                    self.heap.pop();
                    self.heap.push(item);
                }
            }
        }
    }

    fn finish(self) -> Vec<Row> {
        let mut items = match self.limit {
            None => self.all,
            Some(_) => self.heap.into_vec(),
        };
        items.sort();
        items.into_iter().map(|i| i.row).collect()
    }
}
