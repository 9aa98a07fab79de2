//! The entry schema as the language sees it: field names, aliases, types and enum values.

use std::fmt;

/// A field of a ledger entry, as a query names it.
///
/// `Params` and `Details` carry a path into the entry's JSON text: an empty path is the
/// whole text, `params.a.b` is `Params(vec!["a", "b"])`. The aliases `author`,
/// `approver`, `owner` and `purpose` mean `details.author` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Seq,
    Time,
    Kind,
    Agent,
    AgentId,
    Session,
    Action,
    Tool,
    Params(Vec<String>),
    Decision,
    Rule,
    PolicyVersion,
    Reason,
    WriterUid,
    WriterGid,
    WriterPid,
    Host,
    Severity,
    Flags,
    PolicyCheck,
    ShimId,
    ShimSeq,
    RefSeq,
    Details(Vec<String>),
}

/// Values of the `kind` field, in the order of the protobuf enum.
pub const KINDS: &[&str] = &[
    "decision",
    "outcome",
    "agent_registered",
    "agent_updated",
    "agent_retired",
    "policy_changed",
    "daemon_started",
    "daemon_stopped",
    "key_rotated",
    "access_refused",
    "shim_heartbeat",
    "evidence_exported",
];

/// Values of the `decision` field.
pub const DECISIONS: &[&str] = &["allow", "deny"];

/// Values of the `policy_check` field.
pub const POLICY_CHECKS: &[&str] = &["match", "mismatch", "stale_version", "no_policy"];

/// Values of `weekday(time)`, Monday first (the order they sort in).
pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The columns a query without `fields` or an aggregation returns, in this order:
/// every field of the entry, so an export holds everything a verifier needs.
pub const DEFAULT_COLUMNS: &[&str] = &[
    "seq",
    "time",
    "kind",
    "agent",
    "agent_id",
    "session",
    "action",
    "tool",
    "decision",
    "rule",
    "policy_version",
    "reason",
    "params",
    "severity",
    "flags",
    "policy_check",
    "uid",
    "gid",
    "pid",
    "host",
    "shim_id",
    "shim_seq",
    "ref_seq",
    "details",
];

/// Names a user may write for a top-level field (for "did you mean").
pub(crate) const FIELD_NAMES: &[&str] = &[
    "seq",
    "time",
    "kind",
    "agent",
    "agent_id",
    "session",
    "action",
    "tool",
    "params",
    "decision",
    "rule",
    "policy_version",
    "reason",
    "uid",
    "gid",
    "pid",
    "host",
    "severity",
    "flags",
    "policy_check",
    "shim_id",
    "shim_seq",
    "ref_seq",
    "details",
    "author",
    "approver",
    "owner",
    "purpose",
];

/// The static type of a field or column, which decides the operators and literals it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    /// A whole number (`seq`, `severity`, `uid`, a count).
    Int,
    /// An instant (`time`, `bin(time, 1h)`).
    Time,
    /// Free text.
    Str,
    /// Text restricted to the listed values.
    Enum(&'static [&'static str]),
    /// A list of strings (`flags`).
    List,
    /// A value inside JSON text (`params.x`): its type is known only per entry.
    Json,
    /// `hour(time)`: 0..=23.
    Hour,
    /// `weekday(time)`: mon..sun.
    Weekday,
    /// `date(time)`: a calendar date, shown as `2026-03-15`.
    Date,
}

impl Type {
    /// How an error message names this type ("an integer field").
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Type::Int => "an integer",
            Type::Time => "a time",
            Type::Str => "a string",
            Type::Enum(_) => "an enumeration",
            Type::List => "a list",
            Type::Json => "a JSON value",
            Type::Hour => "an hour (0-23)",
            Type::Weekday => "a weekday",
            Type::Date => "a date",
        }
    }
}

impl Field {
    /// The field a name refers to, or `None` for an unknown name. `path` is the rest of a
    /// dotted name; only `params` and `details` take one (the caller reports the others).
    pub fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "seq" => Field::Seq,
            "time" => Field::Time,
            "kind" => Field::Kind,
            "agent" => Field::Agent,
            "agent_id" => Field::AgentId,
            "session" => Field::Session,
            "action" => Field::Action,
            "tool" => Field::Tool,
            "params" => Field::Params(Vec::new()),
            "decision" => Field::Decision,
            "rule" => Field::Rule,
            "policy_version" => Field::PolicyVersion,
            "reason" => Field::Reason,
            "uid" => Field::WriterUid,
            "gid" => Field::WriterGid,
            "pid" => Field::WriterPid,
            "host" => Field::Host,
            "severity" => Field::Severity,
            "flags" => Field::Flags,
            "policy_check" => Field::PolicyCheck,
            "shim_id" => Field::ShimId,
            "shim_seq" => Field::ShimSeq,
            "ref_seq" => Field::RefSeq,
            "details" => Field::Details(Vec::new()),
            "author" | "approver" | "owner" | "purpose" => Field::Details(vec![name.to_string()]),
            _ => return None,
        })
    }

    /// The canonical name: `params.a.b` for a path, `uid` for `WriterUid`.
    pub fn name(&self) -> String {
        let base = match self {
            Field::Seq => "seq",
            Field::Time => "time",
            Field::Kind => "kind",
            Field::Agent => "agent",
            Field::AgentId => "agent_id",
            Field::Session => "session",
            Field::Action => "action",
            Field::Tool => "tool",
            Field::Params(_) => "params",
            Field::Decision => "decision",
            Field::Rule => "rule",
            Field::PolicyVersion => "policy_version",
            Field::Reason => "reason",
            Field::WriterUid => "uid",
            Field::WriterGid => "gid",
            Field::WriterPid => "pid",
            Field::Host => "host",
            Field::Severity => "severity",
            Field::Flags => "flags",
            Field::PolicyCheck => "policy_check",
            Field::ShimId => "shim_id",
            Field::ShimSeq => "shim_seq",
            Field::RefSeq => "ref_seq",
            Field::Details(_) => "details",
        };
        match self {
            Field::Params(path) | Field::Details(path) if !path.is_empty() => {
                format!("{base}.{}", path.join("."))
            }
            _ => base.to_string(),
        }
    }

    /// The static type of the field.
    pub(crate) fn ty(&self) -> Type {
        match self {
            Field::Seq
            | Field::PolicyVersion
            | Field::WriterUid
            | Field::WriterGid
            | Field::WriterPid
            | Field::Severity
            | Field::ShimSeq
            | Field::RefSeq => Type::Int,
            Field::Time => Type::Time,
            Field::Kind => Type::Enum(KINDS),
            Field::Decision => Type::Enum(DECISIONS),
            Field::PolicyCheck => Type::Enum(POLICY_CHECKS),
            Field::Flags => Type::List,
            Field::Params(path) | Field::Details(path) => {
                if path.is_empty() {
                    Type::Str
                } else {
                    Type::Json
                }
            }
            Field::Agent
            | Field::AgentId
            | Field::Session
            | Field::Action
            | Field::Tool
            | Field::Rule
            | Field::Reason
            | Field::Host
            | Field::ShimId => Type::Str,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
