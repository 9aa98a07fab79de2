//! Aggregation: `count`, `stats` and `top`, holding one state per group.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ast::AggFunc;
use crate::eval::{Source, read};
use crate::plan::{Access, AggSpec};
use crate::time::Context;
use crate::value::{OwnedValue, Value};

/// A row of values, aligned with a column list.
pub type Row = Vec<OwnedValue>;

/// `count` and `stats`: memory grows with the number of groups (and, for `dcount`, with
/// the distinct values seen).
///
/// Groups are found without building a key: each key column's values are interned
/// ([`Interner`], looked up by the borrowed value), a group is the tuple of their ids,
/// found in a hash map, and only [`Aggregate::finish`] orders the groups, by the rank of
/// each id among its column's distinct values, which is the order of the values
/// themselves (`Value`'s `Ord`), so the rows come out as a map ordered by the keys would
/// give them.
#[derive(Debug, Clone)]
pub(crate) struct Aggregate {
    keys: Vec<Access>,
    aggs: Vec<AggSpec>,
    columns: Vec<Interner>,
    /// Group key (one id per key column) → the group's number, in the order the groups
    /// first appeared.
    index: HashMap<Box<[u32]>, usize>,
    /// The accumulators of group `g` at `g * aggs.len()..`.
    accs: Vec<Acc>,
    /// The key being looked up, reused from record to record.
    probe: Vec<u32>,
}

/// The distinct values of one key column, each with an id (its index in `values`),
/// looked up by a borrowed value with no allocation for strings and scalars.
#[derive(Debug, Clone, Default)]
struct Interner {
    values: Vec<OwnedValue>,
    strs: HashMap<Box<str>, u32>,
    jsons: HashMap<Box<str>, u32>,
    /// Every other value (scalars own nothing; lists are copied), by `Value`'s `Eq`/`Hash`.
    others: HashMap<OwnedValue, u32>,
}

impl Interner {
    /// The id of `v` (already normalised: empty is `Missing`), adding it when new.
    fn id(&mut self, v: &Value<'_>) -> u32 {
        let next = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        let (map, text) = match v {
            Value::Str(s) => (&mut self.strs, s.as_ref()),
            Value::Json(s) => (&mut self.jsons, s.as_ref()),
            other => {
                let owned = other.clone().into_owned();
                return match self.others.get(&owned) {
                    Some(id) => *id,
                    None => {
                        self.others.insert(owned.clone(), next);
                        self.values.push(owned);
                        next
                    }
                };
            }
        };
        if let Some(id) = map.get(text) {
            return *id;
        }
        map.insert(Box::from(text), next);
        self.values.push(v.clone().into_owned());
        next
    }

    /// The ids in the order of their values (`Value`'s `Ord`; no two are equal).
    fn order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.values.len() as u32).collect();
        order.sort_unstable_by(|a, b| self.values[*a as usize].cmp(&self.values[*b as usize]));
        order
    }
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
        let columns = vec![Interner::default(); keys.len()];
        Aggregate { keys, aggs, columns, index: HashMap::new(), accs: Vec::new(), probe: Vec::new() }
    }

    /// Folds in a record standing for `weight` identical ones: the same state as adding
    /// it `weight` times (`count` adds the weight; the other aggregates ignore it).
    pub(crate) fn add<S: Source + ?Sized>(&mut self, s: &S, ctx: &Context, weight: i64) {
        self.probe.clear();
        for (k, column) in self.keys.iter().zip(&mut self.columns) {
            let v = read(s, k, ctx);
            let id = if v.is_missing() { column.id(&Value::Missing) } else { column.id(&v) };
            self.probe.push(id);
        }
        let n = self.aggs.len();
        let g = match self.index.get(self.probe.as_slice()) {
            Some(g) => *g,
            None => {
                let g = self.index.len();
                self.index.insert(Box::from(self.probe.as_slice()), g);
                self.accs.extend(self.aggs.iter().map(|a| Acc::new(a.func)));
                g
            }
        };
        for (acc, spec) in self.accs[g * n..(g + 1) * n].iter_mut().zip(&self.aggs) {
            match &spec.arg {
                None => acc.add(None, weight),
                Some(arg) => acc.add(Some(&read(s, arg, ctx)), weight),
            }
        }
    }

    /// One row per group, ordered by the group keys; with no keys, exactly one row.
    pub(crate) fn finish(self) -> Vec<Row> {
        let Aggregate { keys, aggs, columns, index, mut accs, .. } = self;
        let n = aggs.len();
        let mut groups: Vec<(Box<[u32]>, usize)> = index.into_iter().collect();
        if keys.is_empty() && groups.is_empty() {
            groups.push((Box::from([]), 0));
            accs.extend(aggs.iter().map(|a| Acc::new(a.func)));
        }
        // Ids become ranks in place: comparing keys is then comparing integers.
        let orders: Vec<Vec<u32>> = columns.iter().map(Interner::order).collect();
        let ranks: Vec<Vec<u32>> = orders
            .iter()
            .map(|order| {
                let mut ranks = vec![0u32; order.len()];
                for (rank, id) in order.iter().enumerate() {
                    ranks[*id as usize] = rank as u32;
                }
                ranks
            })
            .collect();
        for (key, _) in &mut groups {
            for (id, r) in key.iter_mut().zip(&ranks) {
                *id = r[*id as usize];
            }
        }
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let sorted: Vec<Vec<&OwnedValue>> = (orders.iter().zip(&columns))
            .map(|(order, c)| order.iter().map(|id| &c.values[*id as usize]).collect())
            .collect();
        let mut accs: Vec<Option<Acc>> = accs.into_iter().map(Some).collect();
        groups
            .into_iter()
            .map(|(key, g)| {
                let mut row: Row = Vec::with_capacity(key.len() + n);
                row.extend(key.iter().zip(&sorted).map(|(rank, values)| values[*rank as usize].clone()));
                row.extend(accs[g * n..(g + 1) * n].iter_mut().filter_map(Option::take).map(Acc::result));
                row
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
