//! Aggregation: `count`, `stats` and `top`, holding one state per group.

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::AggFunc;
use crate::eval::{Source, read};
use crate::plan::{Access, AggSpec};
use crate::time::Context;
use crate::value::{OwnedValue, Value};

/// A row of values, aligned with a column list.
pub type Row = Vec<OwnedValue>;

/// `count` and `stats`: memory grows with the number of groups (and, for `dcount`, with
/// the distinct values seen).
#[derive(Debug, Clone)]
pub(crate) struct Aggregate {
    keys: Vec<Access>,
    aggs: Vec<AggSpec>,
    groups: BTreeMap<Vec<OwnedValue>, Vec<Acc>>,
}

#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Distinct(BTreeSet<OwnedValue>),
    Min(Option<OwnedValue>),
    Max(Option<OwnedValue>),
    First(Option<OwnedValue>),
    Last(Option<OwnedValue>),
}

impl Acc {
    fn new(func: AggFunc) -> Acc {
        match func {
            AggFunc::Count => Acc::Count(0),
            AggFunc::Dcount => Acc::Distinct(BTreeSet::new()),
            AggFunc::Min => Acc::Min(None),
            AggFunc::Max => Acc::Max(None),
            AggFunc::First => Acc::First(None),
            AggFunc::Last => Acc::Last(None),
        }
    }

    /// Folds in one value standing for `weight` entries that all hold it (the same as
    /// folding it in `weight` times); `None` is `count()` with no argument (counts every
    /// entry).
    fn add(&mut self, v: Option<&Value<'_>>, weight: i64) {
        let present = v.filter(|v| !v.is_missing());
        match self {
            Acc::Count(n) => {
                if v.is_none() || present.is_some() {
                    *n = n.saturating_add(weight);
                }
            }
            Acc::Distinct(set) => {
                if let Some(v) = present {
                    set.insert(v.clone().into_owned());
                }
            }
            Acc::Min(m) => {
                if let Some(v) = present {
                    if m.as_ref().is_none_or(|cur| v < cur) {
                        *m = Some(v.clone().into_owned());
                    }
                }
            }
            Acc::Max(m) => {
                if let Some(v) = present {
                    if m.as_ref().is_none_or(|cur| v > cur) {
                        *m = Some(v.clone().into_owned());
                    }
                }
            }
            Acc::First(f) => {
                if let (None, Some(v)) = (&f, present) {
                    *f = Some(v.clone().into_owned());
                }
            }
            Acc::Last(l) => {
                if let Some(v) = present {
                    *l = Some(v.clone().into_owned());
                }
            }
        }
    }

    fn result(self) -> OwnedValue {
        match self {
            Acc::Count(n) => Value::Int(n),
            Acc::Distinct(set) => Value::Int(i64::try_from(set.len()).unwrap_or(i64::MAX)),
            Acc::Min(v) | Acc::Max(v) | Acc::First(v) | Acc::Last(v) => v.unwrap_or(Value::Missing),
        }
    }
}

impl Aggregate {
    pub(crate) fn new(keys: Vec<Access>, aggs: Vec<AggSpec>) -> Aggregate {
        Aggregate { keys, aggs, groups: BTreeMap::new() }
    }

    /// Folds in a record standing for `weight` identical ones: the same state as adding
    /// it `weight` times (`count` adds the weight; the other aggregates ignore it).
    pub(crate) fn add<S: Source + ?Sized>(&mut self, s: &S, ctx: &Context, weight: i64) {
        // Room for the aggregates too: the key becomes the group's row in `finish`.
        let mut key: Vec<OwnedValue> = Vec::with_capacity(self.keys.len() + self.aggs.len());
        key.extend(self.keys.iter().map(|k| owned(read(s, k, ctx))));
        let aggs = &self.aggs;
        let accs = self.groups.entry(key).or_insert_with(|| aggs.iter().map(|a| Acc::new(a.func)).collect());
        for (acc, spec) in accs.iter_mut().zip(aggs) {
            match &spec.arg {
                None => acc.add(None, weight),
                Some(arg) => acc.add(Some(&read(s, arg, ctx)), weight),
            }
        }
    }

    /// One row per group, ordered by the group keys; with no keys, exactly one row.
    pub(crate) fn finish(mut self) -> Vec<Row> {
        if self.keys.is_empty() && self.groups.is_empty() {
            let accs = self.aggs.iter().map(|a| Acc::new(a.func)).collect();
            self.groups.insert(Vec::new(), accs);
        }
        self.groups
            .into_iter()
            .map(|(mut key, accs)| {
                key.extend(accs.into_iter().map(Acc::result));
                key
            })
            .collect()
    }
}

/// `top N value by keys`: the N most frequent values per group, with their counts.
#[derive(Debug, Clone)]
pub(crate) struct Top {
    n: u64,
    keys: Vec<Access>,
    value: Access,
    counts: BTreeMap<Vec<OwnedValue>, BTreeMap<OwnedValue, i64>>,
}

impl Top {
    pub(crate) fn new(n: u64, keys: Vec<Access>, value: Access) -> Top {
        Top { n, keys, value, counts: BTreeMap::new() }
    }

    /// Counts a record standing for `weight` identical ones.
    pub(crate) fn add<S: Source + ?Sized>(&mut self, s: &S, ctx: &Context, weight: i64) {
        let v = read(s, &self.value, ctx);
        if v.is_missing() {
            return;
        }
        let key: Vec<OwnedValue> = self.keys.iter().map(|k| owned(read(s, k, ctx))).collect();
        let n = self.counts.entry(key).or_default().entry(owned(v)).or_insert(0);
        *n = n.saturating_add(weight);
    }

    /// Groups in key order; within a group, the most frequent first (ties by value).
    pub(crate) fn finish(self) -> Vec<Row> {
        let n = usize::try_from(self.n).unwrap_or(usize::MAX);
        let mut rows = Vec::new();
        for (key, per_value) in self.counts {
            let mut ranked: Vec<(OwnedValue, i64)> = per_value.into_iter().collect();
            // Stable: equal counts stay in value order.
            ranked.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
            for (value, count) in ranked.into_iter().take(n) {
                let mut row = key.clone();
                row.push(value);
                row.push(Value::Int(count));
                rows.push(row);
            }
        }
        rows
    }
}

fn owned(v: std::borrow::Cow<'_, Value<'_>>) -> OwnedValue {
    v.into_owned().into_owned().normalized()
}
