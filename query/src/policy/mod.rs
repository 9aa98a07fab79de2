//! Policy documents: an agent's rules for which tool calls are allowed, parsed, checked and
//! compiled once, then evaluated for each call by the shims and the daemon alike.
//!
//! ```
//! use ledger_query::policy::{Call, Effect, Policy};
//!
//! let text = r#"# policy for billing-bot
//! rule read-invoices: allow tool = "db.query" and params.sql ~ /(?i)^select /
//! rule no-shell:      deny  tool ~ "shell.*"
//! default deny
//! "#;
//! let policy = Policy::parse(text).map_err(|e| e.render(text)).unwrap();
//! let call = Call::new("db.query", r#"{"sql": "SELECT * FROM invoices"}"#);
//! let decision = policy.evaluate(&call);
//! assert_eq!((decision.effect, decision.rule_id), (Effect::Allow, "read-invoices"));
//! assert_eq!(policy.evaluate(&Call::new("shell.exec", "{}")).rule_id, "no-shell");
//! assert_eq!(policy.evaluate(&Call::new("fs.write_file", "{}")).rule_id, "default");
//! assert!(!policy.may_allow_tool("shell.exec"));
//! ```
//!
//! The language is described in `docs/POLICY.md`; conditions are the query language's
//! expressions (`docs/QUERY.md`) over the fields in [`POLICY_FIELDS`].

mod condition;
mod document;
mod error;

use std::fmt;

pub use condition::POLICY_FIELDS;
pub use error::{PolicyCode, PolicyError, PolicyErrors};

use crate::eval::View;
use crate::field::Field;
use crate::plan::Cond;
use crate::record::Record;
use crate::time::Context;
use crate::value::Value;
use condition::Truth;

/// The largest document accepted, in bytes (256 KiB); a larger one is refused before it
/// is read.
pub const MAX_BYTES: usize = 256 * 1024;

/// The most rules a document may hold.
pub const MAX_RULES: usize = 10_000;

/// The longest rule id, in characters (every decision records its rule id).
pub const MAX_ID_LEN: usize = 128;

/// The most heap memory all compiled patterns (`~` regexes and globs) of one document may
/// hold: 16 MiB. Checked rule by rule as they compile, so a document over it is refused
/// (P117, naming the rule that crossed it) without compiling the rest.
pub const MAX_REGEX_BYTES: usize = 16 * 1024 * 1024;

/// The most errors reported for one document; a P116 error says that more were left out.
pub const MAX_ERRORS: usize = 100;

/// What a rule or the default decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    /// `"allow"` or `"deny"`, as written in documents and recorded in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }

    /// The effect written as `s` (lowercase only).
    pub fn parse(s: &str) -> Option<Effect> {
        match s {
            "allow" => Some(Effect::Allow),
            "deny" => Some(Effect::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a policy: `rule ID: allow|deny CONDITION`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The id, unique in the document; decisions record it.
    pub id: String,
    pub effect: Effect,
    /// The condition as written, on one line: continuation lines are joined with single
    /// spaces and comments are left out.
    pub condition_text: String,
    /// The line of `rule`, from 1.
    pub line: usize,
    cond: Cond,
}

impl Rule {
    /// The rule as one line: `rule no-shell: deny tool ~ "shell.*"`.
    pub fn text(&self) -> String {
        format!("rule {}: {} {}", self.id, self.effect, self.condition_text)
    }

    /// Whether the rule's condition holds for `call` (whatever the rules before it say).
    pub fn matches(&self, call: &Call<'_>) -> bool {
        condition::holds(&self.cond, &View::new(call), &decision_context())
    }
}

/// Rules are equal when they read the same: id, effect, condition and line (the
/// condition compiles the same way from the same text).
impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.effect, &self.condition_text, self.line)
            == (&other.id, other.effect, &other.condition_text, other.line)
    }
}

impl Eq for Rule {}

/// A tool call about to be made, as a policy sees it.
///
/// `params` is the call's parameters as JSON text: `params.path` reads its `path` member.
/// Text that is not JSON leaves every `params.…` missing (comparisons with it are false),
/// while `params ~ "…"` still matches the text itself. Fields left empty are missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Call<'a> {
    pub tool: &'a str,
    pub params: &'a str,
    pub agent: &'a str,
    pub session: &'a str,
    pub action: &'a str,
}

impl<'a> Call<'a> {
    /// A call of `tool` with `params` (JSON text), with no agent, session or action.
    pub fn new(tool: &'a str, params: &'a str) -> Call<'a> {
        Call { tool, params, ..Call::default() }
    }
}

impl Record for Call<'_> {
    fn get(&self, field: &Field) -> Value<'_> {
        match field {
            Field::Tool => Value::text(self.tool),
            Field::Params(_) => Value::text(self.params),
            Field::Agent => Value::text(self.agent),
            Field::Session => Value::text(self.session),
            Field::Action => Value::text(self.action),
            _ => Value::Missing,
        }
    }
}

/// The outcome of evaluating a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub effect: Effect,
    /// The rule that matched; `None` when no rule did and the default decided.
    pub rule: Option<&'p Rule>,
    /// The matching rule's id, or `"default"`.
    pub rule_id: &'p str,
    /// Why, in one line: `rule no-shell (line 4): deny tool ~ "shell.*"`, or
    /// `default deny (line 5): no rule matched`.
    pub reason: String,
    /// The version the caller gave the policy ([`Policy::with_version`]), if any.
    pub version: Option<u64>,
    /// BLAKE3 of the policy document ([`Policy::hash`]).
    pub hash: [u8; 32],
}

/// A parsed and compiled policy document.
///
/// Cheap to evaluate (conditions and patterns are compiled once, a call's JSON is parsed
/// at most once per evaluation), and `Send + Sync`, so one `Arc<Policy>` serves every
/// thread.
#[derive(Debug, Clone)]
pub struct Policy {
    text: String,
    hash: [u8; 32],
    rules: Vec<Rule>,
    default: Effect,
    default_line: usize,
    version: Option<u64>,
    ctx: Context,
}

/// The evaluation context for conditions. Conditions cannot read the clock (the checker
/// refuses time fields, functions and literals in a policy), so any instant will do; a
/// fixed one keeps evaluation deterministic.
fn decision_context() -> Context {
    Context::utc(jiff::Timestamp::UNIX_EPOCH)
}

impl Policy {
    /// Parses, checks and compiles a policy document.
    ///
    /// On failure, every problem found (up to [`MAX_ERRORS`]), in order of position. A
    /// document over [`MAX_BYTES`] is refused without being read.
    pub fn parse(text: &str) -> Result<Policy, PolicyErrors> {
        if text.len() > MAX_BYTES {
            return Err(PolicyErrors::new(vec![PolicyError::whole(
                PolicyCode::P112,
                format!(
                    "policy too large: {} bytes, the limit is {MAX_BYTES} bytes ({} KiB)",
                    text.len(),
                    MAX_BYTES / 1024
                ),
                Some(
                    "a policy holds rules, not data: match many values with patterns and `in [...]`"
                        .to_string(),
                ),
            )]));
        }
        if text.starts_with('\u{FEFF}') {
            return Err(PolicyErrors::new(vec![PolicyError::new(
                PolicyCode::P100,
                text,
                0,
                '\u{FEFF}'.len_utf8(),
                "the policy starts with a byte-order mark (U+FEFF), an invisible character",
                "byte-order mark",
                Some(
                    "save the file as UTF-8 without a byte-order mark (`ledgerctl policy set --file` removes it)"
                        .to_string(),
                ),
            )]));
        }
        let mut errors = Vec::new();
        let outline = document::outline(text, &mut errors);
        let mut rules = Vec::with_capacity(outline.rules.len());
        let mut pattern_bytes = 0usize;
        for raw in outline.rules {
            if let Some(cond) = condition::compile(text, raw.cond_start, &raw.cond, &mut errors) {
                pattern_bytes = pattern_bytes.saturating_add(cond.pattern_bytes());
                if pattern_bytes > MAX_REGEX_BYTES {
                    errors.push(PolicyError::new(
                        PolicyCode::P117,
                        text,
                        raw.cond_start,
                        raw.cond_start + raw.cond.trim_end().len(),
                        format!(
                            "rule {}: the policy's patterns take {:.1} MiB compiled with this rule, over the limit of {} MiB",
                            raw.id,
                            pattern_bytes as f64 / (1024.0 * 1024.0),
                            MAX_REGEX_BYTES / (1024 * 1024)
                        ),
                        "the patterns up to here cross the limit",
                        Some(
                            "use fewer or smaller patterns: ASCII classes such as [A-Za-z0-9_] instead of \\w (all of Unicode), fewer and shorter repetitions, one `in [...]` or one alternation instead of many rules".to_string(),
                        ),
                    ));
                    // The rest is not compiled: refusing must stay quick.
                    break;
                }
                let condition_text =
                    raw.cond.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
                rules.push(Rule { id: raw.id, effect: raw.effect, condition_text, line: raw.line, cond });
            }
        }
        match outline.default {
            Some((default, default_line)) if errors.is_empty() => Ok(Policy {
                text: text.to_string(),
                hash: *blake3::hash(text.as_bytes()).as_bytes(),
                rules,
                default,
                default_line,
                version: None,
                ctx: decision_context(),
            }),
            _ => Err(PolicyErrors::new(finish_errors(text, errors))),
        }
    }

    /// The same policy, tagged with the version number the caller keeps it under (the
    /// daemon's per-agent version); decisions carry it.
    pub fn with_version(mut self, version: u64) -> Policy {
        self.version = Some(version);
        self
    }

    /// The version given with [`Policy::with_version`].
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// The rules, in document order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What the `default` line decides.
    pub fn default_effect(&self) -> Effect {
        self.default
    }

    /// The document, exactly as parsed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// BLAKE3 of the exact document bytes.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// [`Policy::hash`] as 64 lowercase hex digits.
    pub fn hash_hex(&self) -> String {
        blake3::Hash::from_bytes(self.hash).to_hex().to_string()
    }

    /// Decides `call`: the first rule whose condition holds, or the default.
    pub fn evaluate(&self, call: &Call<'_>) -> Decision<'_> {
        let view = View::new(call);
        let rule = self.rules.iter().find(|r| condition::holds(&r.cond, &view, &self.ctx));
        let (effect, rule_id, reason) = match rule {
            Some(r) => (
                r.effect,
                r.id.as_str(),
                format!("rule {} (line {}): {} {}", r.id, r.line, r.effect, r.condition_text),
            ),
            None => (
                self.default,
                "default",
                format!("default {} (line {}): no rule matched", self.default, self.default_line),
            ),
        };
        Decision { effect, rule, rule_id, reason, version: self.version, hash: self.hash }
    }

    /// Whether some call of the tool named `tool` could be allowed, whatever its other
    /// fields: used to hide tools (from an MCP `tools/list`) that no rule can allow.
    ///
    /// Rules are taken in order with only the tool name known: an allow rule that can
    /// hold for this tool makes it possibly allowed; a deny rule that holds for it
    /// whatever the parameters makes every later rule unreachable, so it is not; if no
    /// rule decides, the default does. Conservative: a tool is hidden only when no call
    /// of it can be allowed.
    pub fn may_allow_tool(&self, tool: &str) -> bool {
        let call = Call { tool, ..Call::default() };
        let view = View::new(&call);
        for rule in &self.rules {
            match (rule.effect, condition::holds_for_tool(&rule.cond, &view, &self.ctx)) {
                (Effect::Allow, Truth::True | Truth::Unknown) => return true,
                (Effect::Deny, Truth::True) => return false,
                _ => {}
            }
        }
        self.default == Effect::Allow
    }

    /// Every rule in order with whether its condition holds for `call`, for
    /// `policy check`: the first `true` is the rule [`Policy::evaluate`] picks.
    pub fn explain(&self, call: &Call<'_>) -> Vec<(&Rule, bool)> {
        let view = View::new(call);
        self.rules.iter().map(|r| (r, condition::holds(&r.cond, &view, &self.ctx))).collect()
    }
}

/// Orders errors by position and caps them at [`MAX_ERRORS`].
fn finish_errors(text: &str, mut errors: Vec<PolicyError>) -> Vec<PolicyError> {
    errors.sort_by_key(|e| (e.start, e.end));
    if errors.len() > MAX_ERRORS {
        let total = errors.len();
        let at = errors[MAX_ERRORS].start;
        errors.truncate(MAX_ERRORS);
        errors.push(PolicyError::new(
            PolicyCode::P116,
            text,
            at,
            at,
            format!("too many errors: {total} found, the first {MAX_ERRORS} are shown"),
            "the errors from here on are left out",
            Some("fix these and check the policy again".to_string()),
        ));
    }
    errors
}
