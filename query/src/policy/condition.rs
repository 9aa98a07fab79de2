//! Rule conditions: the query language restricted to what is known when a decision is
//! made, compiled with the query checker, and evaluated in two or three values.

use super::error::{PolicyCode, PolicyError};
use crate::ast::{self, Expr, OperandKind};
use crate::check;
use crate::error::Code;
use crate::eval::{self, View};
use crate::field::Field;
use crate::parse;
use crate::plan::{Access, Cond};
use crate::record::Record;
use crate::suggest::did_you_mean;
use crate::time::Context;

/// The fields a rule may use: a decision is made before its entry exists, so only what
/// the caller says about the call is known.
pub const POLICY_FIELDS: &[&str] = &["tool", "params", "agent", "session", "action"];

const FIELDS_HELP: &str = "rules may use `tool`, `params.NAME`, `agent`, `session` and `action`";

/// Compiles the condition `text`, which starts at byte `base` of the document `doc`;
/// `None` after reporting every problem found into `errors`.
pub(super) fn compile(doc: &str, base: usize, text: &str, errors: &mut Vec<PolicyError>) -> Option<Cond> {
    let expr = match parse::parse_expr(text) {
        Ok(expr) => expr,
        Err(e) => {
            errors.push(PolicyError::from_condition(e, doc, base));
            return None;
        }
    };
    let mut leaves = Vec::new();
    collect_leaves(&expr, &mut leaves);
    let before = errors.len();
    let allowed: Vec<&ast::Cmp> =
        leaves.into_iter().filter(|cmp| operand_allowed(&cmp.operand, doc, base, errors)).collect();
    if errors.len() == before {
        return match check::check_condition(text, &expr) {
            Ok(cond) => Some(cond),
            Err(found) => {
                errors.extend(found.into_iter().map(|e| PolicyError::from_condition(e, doc, base)));
                None
            }
        };
    }
    // Some operands are refused: check the others one by one, so that every problem is
    // reported once.
    for cmp in allowed {
        if let Err(found) = check::check_condition(text, &Expr::Cmp(Box::new(cmp.clone()))) {
            errors.extend(found.into_iter().map(|e| PolicyError::from_condition(e, doc, base)));
        }
    }
    None
}

fn collect_leaves<'e>(e: &'e Expr, out: &mut Vec<&'e ast::Cmp>) {
    match e {
        Expr::Or(items) | Expr::And(items) => items.iter().for_each(|e| collect_leaves(e, out)),
        Expr::Not(inner) => collect_leaves(inner, out),
        Expr::Cmp(cmp) => out.push(cmp),
    }
}

/// Whether a rule may read `operand`; reports why not.
fn operand_allowed(operand: &ast::Operand, doc: &str, base: usize, errors: &mut Vec<PolicyError>) -> bool {
    let span = operand.span;
    let mut err = |code: PolicyCode, start: usize, end: usize, message: String, label: &str, help: &str| {
        errors.push(PolicyError::new(
            code,
            doc,
            base + start,
            base + end,
            message,
            label,
            Some(help.to_string()),
        ));
        false
    };
    let path = match &operand.kind {
        OperandKind::Func { func, .. } => {
            return err(
                PolicyCode::P111,
                span.start,
                span.end,
                format!("function `{}` is not available in a policy", func.name()),
                "not available in a policy",
                "a decision must not depend on the clock: a rule decides a call before its entry has a \
                 time, and the daemon checks decisions again when they arrive",
            );
        }
        OperandKind::Path(path) => path,
    };
    let Some(name) = path.first() else {
        return true;
    };
    let name_end = span.start + name.len();
    match name.as_str() {
        "params" => true,
        "tool" | "agent" | "session" | "action" if path.len() == 1 => true,
        "tool" | "agent" | "session" | "action" => err(
            PolicyCode::Query(Code::Q205),
            span.start,
            span.end,
            format!("`{name}` has no subfields"),
            "not a JSON field",
            "only `params.…` reaches into JSON",
        ),
        _ if Field::from_name(name).is_some() => err(
            PolicyCode::P110,
            span.start,
            name_end,
            format!("field `{name}` is not available in a policy"),
            "not known when a decision is made",
            "a rule decides a call before its entry exists; rules may use `tool`, `params.NAME`, \
             `agent`, `session` and `action`",
        ),
        _ => {
            let help = match did_you_mean(name, POLICY_FIELDS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => FIELDS_HELP.to_string(),
            };
            err(
                PolicyCode::Query(Code::Q101),
                span.start,
                name_end,
                format!("unknown field `{name}`"),
                "not a known field",
                &help,
            )
        }
    }
}

/// Whether `cond` holds for the record seen through `view`.
pub(super) fn holds<R: Record + ?Sized>(cond: &Cond, view: &View<'_, R>, ctx: &Context) -> bool {
    eval::eval(cond, view, ctx)
}

/// A truth value that may not be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Truth {
    True,
    False,
    Unknown,
}

/// Evaluates `cond` knowing only the tool name (`view` holds a call with only `tool`
/// set): comparisons on any other field are unknown, and `and`, `or` and `not` combine
/// them as in Kleene's three-valued logic, so `True` and `False` are certain whatever
/// the other fields hold.
pub(super) fn holds_for_tool<R: Record + ?Sized>(cond: &Cond, view: &View<'_, R>, ctx: &Context) -> Truth {
    match cond {
        Cond::All(items) => {
            let mut result = Truth::True;
            for item in items {
                match holds_for_tool(item, view, ctx) {
                    Truth::False => return Truth::False,
                    Truth::Unknown => result = Truth::Unknown,
                    Truth::True => {}
                }
            }
            result
        }
        Cond::Any(items) => {
            let mut result = Truth::False;
            for item in items {
                match holds_for_tool(item, view, ctx) {
                    Truth::True => return Truth::True,
                    Truth::Unknown => result = Truth::Unknown,
                    Truth::False => {}
                }
            }
            result
        }
        Cond::Not(inner) => match holds_for_tool(inner, view, ctx) {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        },
        Cond::Cmp { access, .. }
        | Cond::In { access, .. }
        | Cond::Has { access, .. }
        | Cond::Match { access, .. } => {
            if *access == Access::Field(Field::Tool) {
                if eval::eval(cond, view, ctx) { Truth::True } else { Truth::False }
            } else {
                Truth::Unknown
            }
        }
    }
}
