//! The syntax tree the parser builds: what was written, with byte spans, before any checking.

use crate::time::{Duration, Period, TimeLit};

/// A byte range `start..end` of the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub(crate) fn to(self, other: Span) -> Span {
        Span::new(self.start, other.end)
    }
}

/// `query ::= period? expr? ( "|" stage )*`
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub(crate) period: Option<PeriodClause>,
    pub(crate) filter: Option<Expr>,
    pub(crate) stages: Vec<Stage>,
}

/// The leading period.
#[derive(Debug, Clone)]
pub(crate) enum PeriodClause {
    Last(Duration),
    Since(TimeLit, Option<TimeLit>),
    Until(TimeLit),
    During(Period),
}

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(Box<Cmp>),
}

/// `operand op rhs`
#[derive(Debug, Clone)]
pub(crate) struct Cmp {
    pub(crate) operand: Operand,
    pub(crate) op: CmpOp,
    pub(crate) op_span: Span,
    pub(crate) rhs: Rhs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Has,
    Match,
    NotMatch,
}

impl CmpOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
            CmpOp::Has => "has",
            CmpOp::Match => "~",
            CmpOp::NotMatch => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Rhs {
    Value(Literal),
    List(Vec<Literal>),
    Pattern(Pattern),
}

#[derive(Debug, Clone)]
pub(crate) struct Literal {
    pub(crate) kind: LitKind,
    /// The token as written (without quotes for strings).
    pub(crate) text: String,
    pub(crate) span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum LitKind {
    Str,
    Int(i64),
    Float(f64),
    /// A bare word: an enum value, `true`, a weekday.
    Word,
    /// A date, date-time or `now`: an instant once a time zone is known.
    Time(TimeLit),
    /// `24h` on its own (only `7d ago` is a time).
    Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    pub(crate) kind: PatternKind,
    pub(crate) source: String,
    pub(crate) span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternKind {
    Glob,
    Regex,
}

/// `operand ::= FUNC "(" path ( "," DURATION )? ")" | path`
#[derive(Debug, Clone)]
pub(crate) struct Operand {
    pub(crate) kind: OperandKind,
    pub(crate) span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum OperandKind {
    Path(Vec<String>),
    Func { func: Func, arg: Vec<String>, arg_span: Span, width: Option<Duration> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Hour,
    Weekday,
    Date,
    Bin,
}

impl Func {
    pub(crate) const NAMES: &'static [&'static str] = &["hour", "weekday", "date", "bin"];

    pub(crate) fn from_name(name: &str) -> Option<Func> {
        match name {
            "hour" => Some(Func::Hour),
            "weekday" => Some(Func::Weekday),
            "date" => Some(Func::Date),
            "bin" => Some(Func::Bin),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Func::Hour => "hour",
            Func::Weekday => "weekday",
            Func::Date => "date",
            Func::Bin => "bin",
        }
    }
}

impl Operand {
    /// The column name an operand gets unless renamed with `as`: the path as written,
    /// `hour` for `hour(time)`, and the argument's name for `bin(time, 1h)`.
    pub(crate) fn default_name(&self) -> String {
        match &self.kind {
            OperandKind::Path(path) => path.join("."),
            OperandKind::Func { func: Func::Bin, arg, .. } => arg.join("."),
            OperandKind::Func { func, .. } => func.name().to_string(),
        }
    }
}

/// `column ::= operand ( "as" IDENT )?`
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) operand: Operand,
    pub(crate) alias: Option<(String, Span)>,
}

impl Column {
    pub(crate) fn name(&self) -> String {
        self.alias.as_ref().map_or_else(|| self.operand.default_name(), |(a, _)| a.clone())
    }

    pub(crate) fn span(&self) -> Span {
        self.alias.as_ref().map_or(self.operand.span, |(_, s)| self.operand.span.to(*s))
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Stage {
    Where(Expr),
    Sort(Vec<SortKey>),
    Limit(u64),
    Fields(Vec<Column>),
    Count(Vec<Column>),
    Stats(Vec<Agg>, Vec<Column>),
    Top { n: u64, operand: Operand, by: Vec<Column> },
}

#[derive(Debug, Clone)]
pub(crate) struct SortKey {
    pub(crate) operand: Operand,
    pub(crate) desc: bool,
}

/// `agg ::= AGG "(" operand? ")" ( "as" IDENT )?`
#[derive(Debug, Clone)]
pub(crate) struct Agg {
    pub(crate) func: AggFunc,
    pub(crate) arg: Option<Operand>,
    pub(crate) alias: Option<(String, Span)>,
    pub(crate) span: Span,
}

impl Agg {
    pub(crate) fn name(&self) -> String {
        if let Some((alias, _)) = &self.alias {
            return alias.clone();
        }
        match &self.arg {
            None => self.func.name().to_string(),
            Some(arg) => format!("{}_{}", self.func.name(), arg.default_name()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    Dcount,
    Min,
    Max,
    First,
    Last,
}

impl AggFunc {
    pub(crate) const NAMES: &'static [&'static str] = &["count", "dcount", "min", "max", "first", "last"];

    pub(crate) fn from_name(name: &str) -> Option<AggFunc> {
        match name {
            "count" => Some(AggFunc::Count),
            "dcount" => Some(AggFunc::Dcount),
            "min" => Some(AggFunc::Min),
            "max" => Some(AggFunc::Max),
            "first" => Some(AggFunc::First),
            "last" => Some(AggFunc::Last),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Dcount => "dcount",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::First => "first",
            AggFunc::Last => "last",
        }
    }
}
