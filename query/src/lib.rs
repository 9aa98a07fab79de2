//! The ledger query language: parse, check, plan and evaluate queries over ledger entries,
//! and write the results as a table, CSV or JSON lines.
//!
//! ```
//! use ledger_query::{parse, Context};
//!
//! let query = parse(r#"during 2026-Q1 agent = "build-bot" and decision = deny | sort time desc"#).unwrap();
//! let ctx = Context::utc("2026-06-01T00:00:00Z".parse().unwrap());
//! assert_eq!(query.agents(), Some(vec!["build-bot".to_string()]));
//! assert!(query.time_range(&ctx).is_some());
//! let mut pipeline = query.pipeline(&ctx);
//! // for entry in scan { pipeline.push(&entry); if pipeline.is_done() { break } }
//! let rows = pipeline.finish();
//! assert!(rows.rows.is_empty());
//! ```
//!
//! The crate does no I/O of its own: writers take any `std::io::Write`. `docs/QUERY.md`
//! in the workspace is the language reference.

mod aggregate;
mod ast;
mod check;
mod error;
mod eval;
mod field;
mod output;
mod parse;
mod pattern;
mod pipeline;
mod plan;
pub mod policy;
mod record;
mod suggest;
mod time;
mod value;

pub use aggregate::Row;
pub use error::{
    Code, JsonError, MAX_ERRORS, MAX_MESSAGE_CHARS, MAX_QUERY_BYTES, QueryError, QueryErrors, check_length,
};
pub use field::{DECISIONS, DEFAULT_COLUMNS, Field, KINDS, POLICY_CHECKS, WEEKDAYS};
pub use output::{
    CsvWriter, format_value, neutralise, terminal, unneutralise, write_csv, write_json_lines,
    write_json_rows, write_table,
};
pub use pattern::glob_to_regex;
pub use pipeline::{Pipeline, Prefilter, ResultSet};
pub use record::Record;
pub use time::Context;
pub use value::{OwnedValue, Value};

use plan::{Cond, Lowered, ShapeScan, Step};

/// A parsed and checked query, ready to run any number of times.
///
/// Patterns are compiled once, here; times (`now`, `7d ago`, dates in the context's zone)
/// are fixed when a [`Pipeline`] is made.
#[derive(Debug, Clone)]
pub struct Query {
    lowered: Lowered,
    columns: Vec<String>,
    /// The conditions every record must meet before any limit, sort or aggregation.
    prefilter: Vec<Cond>,
    aggregation: bool,
}

/// Parses and type-checks a query.
///
/// On failure: one syntax error (where parsing got furthest), or every type error found.
pub fn parse(text: &str) -> Result<Query, QueryErrors> {
    let ast = parse::parse_query(text).map_err(|e| QueryErrors::new(vec![e]))?;
    let checked = check::check_query(text, &ast)?;
    let aggregation = checked.steps.iter().any(|s| matches!(s, Step::Aggregate { .. } | Step::Top { .. }));
    let lowered = plan::lower(checked.steps);
    let prefilter = lowered
        .live
        .iter()
        .take_while(|s| !matches!(s, Step::Limit(_)))
        .filter_map(|s| match s {
            Step::Filter(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    Ok(Query { lowered, columns: checked.columns, prefilter, aggregation })
}

/// Parses and type-checks a bare condition, as used in a policy rule:
/// `tool = "db.query" and params.sql ~ /(?i)^select /`.
pub fn parse_condition(text: &str) -> Result<Filter, QueryErrors> {
    let ast = parse::parse_expr(text).map_err(|e| QueryErrors::new(vec![e]))?;
    let cond = check::check_condition(text, &ast)?;
    Ok(Filter { cond })
}

impl Query {
    /// The output column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Whether the query aggregates (`count`, `stats`, `top`): its rows are groups, not
    /// entries.
    pub fn is_aggregation(&self) -> bool {
        self.aggregation
    }

    /// The half-open range `[start, end)` of `time` (nanoseconds) outside which no entry
    /// can matter, from the period and from `and`-ed comparisons on `time`; `None` when
    /// the query does not bound time. Conservative: the pipeline still checks every entry.
    pub fn time_range(&self, ctx: &Context) -> Option<(i64, i64)> {
        self.prefilter
            .iter()
            .filter_map(|c| plan::time_range(c, ctx))
            .reduce(|a, b| (a.0.max(b.0), a.1.min(b.1)))
    }

    /// The agents outside which no entry can matter (from `agent = "x"`, `agent in [...]`,
    /// and `or`s of them), sorted; `None` when the query does not restrict agents.
    pub fn agents(&self) -> Option<Vec<String>> {
        self.prefilter
            .iter()
            .filter_map(plan::agents)
            .reduce(|a, b| a.intersection(&b).cloned().collect())
            .map(|set| set.into_iter().collect())
    }

    /// The condition every entry must meet to matter (period, filter, and `where` stages
    /// before any `limit`, `sort` or aggregation).
    pub fn filter(&self) -> Filter {
        Filter { cond: Cond::All(self.prefilter.clone()) }
    }

    /// Whether the query could be answered from counts of entries kept per hour and per
    /// combination of values of `fields` (the fields the caller keeps counts for), and if
    /// so what it reads. `Some` when:
    ///
    /// - it counts: its aggregation (`count`, `stats` with only `count()` / `count(f)`, or
    ///   `top`) comes before any `limit`, `sort` or `fields`;
    /// - its conditions before the aggregation compare `time` only in comparisons `and`-ed
    ///   at the top (periods included), which [`Query::time_range`] covers exactly; apart
    ///   from those they read only `fields` and calendar functions of `time`;
    /// - its group keys (and counted or `top` value) are `fields` or calendar functions of
    ///   `time` that are steady within an hour: `hour`, `weekday`, `date`, and `bin` with a
    ///   width that is a whole number of hours.
    ///
    /// Then, over whole hours inside the time range, entries that agree on
    /// [`CountShape::fields`] and lie in the same hour are interchangeable: one record with
    /// their values and a time in that hour, fed with [`Pipeline::push_weighted`] and their
    /// number, gives the result that feeding each of them would, in any order. When
    /// [`CountShape::calendar`] is set this holds only in hours over which the context's
    /// zone has a steady offset that is a whole number of hours (UTC always does); the
    /// caller checks that. Later stages (`where`, `sort`, `limit` on the groups) are free.
    ///
    /// ```
    /// use ledger_query::{parse, Field};
    ///
    /// let counted = [Field::Kind, Field::Agent, Field::Tool, Field::Decision];
    /// let q = parse("last 7d decision = deny | count by agent, bin(time, 1h) | where count > 20").unwrap();
    /// let shape = q.count_shape(&counted).unwrap();
    /// assert_eq!(shape.fields, vec![Field::Decision, Field::Agent]);
    /// assert!(shape.calendar);
    /// // Reads a field that is not counted, or bins by half hours: no.
    /// assert!(parse("params.n > 3 | count").unwrap().count_shape(&counted).is_none());
    /// assert!(parse("| count by bin(time, 30m)").unwrap().count_shape(&counted).is_none());
    /// ```
    pub fn count_shape(&self, fields: &[Field]) -> Option<CountShape> {
        let mut scan = ShapeScan::new(fields);
        for step in &self.lowered.live {
            match step {
                Step::Filter(c) if scan.cond(c, true) => {}
                _ => return None,
            }
        }
        let counts = match &self.lowered.entry {
            Step::Aggregate { keys, aggs } => {
                keys.iter().all(|k| scan.access(k))
                    && aggs.iter().all(|a| {
                        a.func == ast::AggFunc::Count && a.arg.as_ref().is_none_or(|arg| scan.access(arg))
                    })
            }
            Step::Top { keys, value, .. } => keys.iter().all(|k| scan.access(k)) && scan.access(value),
            _ => false,
        };
        counts.then_some(CountShape { fields: scan.fields, calendar: scan.calendar })
    }

    /// A pipeline that runs the query in `ctx`.
    pub fn pipeline(&self, ctx: &Context) -> Pipeline {
        Pipeline::new(&self.lowered, self.columns.clone(), ctx)
    }

    /// Runs the query over records in memory (tests, small exports).
    pub fn run<'r, R: Record + 'r>(
        &self,
        records: impl IntoIterator<Item = &'r R>,
        ctx: &Context,
    ) -> ResultSet {
        let mut pipeline = self.pipeline(ctx);
        for r in records {
            if pipeline.is_done() {
                break;
            }
            pipeline.push(r);
        }
        pipeline.finish()
    }
}

/// What a query answerable from hourly counts reads of each entry (see
/// [`Query::count_shape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountShape {
    /// The entry fields its conditions, group keys and aggregates read, besides `time`,
    /// in order of first use.
    pub fields: Vec<Field>,
    /// Whether it reads `time` through a calendar function (`bin`, `hour`, `weekday`,
    /// `date`), as a group key or in a condition: then the hour of each entry matters,
    /// and the time zone must have a whole-hour offset over the hours counted.
    pub calendar: bool,
}

/// A checked condition: a policy rule's, or a query's [`Query::filter`].
#[derive(Debug, Clone)]
pub struct Filter {
    cond: Cond,
}

impl Filter {
    /// Whether `record` meets the condition. `ctx` supplies `now` and the time zone;
    /// time literals are resolved on each call, so one `Filter` serves any context.
    pub fn matches<R: Record + ?Sized>(&self, record: &R, ctx: &Context) -> bool {
        eval::eval(&self.cond, &eval::View::new(record), ctx)
    }
}
