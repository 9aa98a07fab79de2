//! What an entry keeps of a tool's output, and the redaction of `details`.
//!
//! A writer's `details` may carry the output of the call (the Claude Code hook's
//! `PostToolUse` sends the whole `tool_response`): a file read, a command's stdout, often
//! with secrets in it. The log can never forget anything, so the output itself is not kept.
//! Each output value under [`OUTPUT_KEYS`] becomes what an auditor needs to show the call
//! ran and how it ended: its status fields ([`STATUS_KEYS`], booleans and numbers only),
//! its size, and a keyed BLAKE3 hash (the redaction key) so two equal outputs can be
//! matched without revealing them; with `redaction.output_excerpt_bytes` set, also a
//! redacted excerpt. The rest of `details` is redacted like params, every string at any
//! depth. The summaries are filled by the daemon and are not redacted again (a marker in
//! an excerpt would otherwise be re-marked). See docs/REDACTION.md.

use serde_json::{Map, Value};

use crate::service::redact::Redactor;

/// Top-level keys of `details` that hold a tool's output.
pub const OUTPUT_KEYS: &[&str] = &["tool_response", "output", "stdout", "stderr"];

/// Fields of an output object kept as they are when they are a boolean or a number: how
/// the call ended.
pub const STATUS_KEYS: &[&str] = &[
    "interrupted",
    "is_error",
    "isError",
    "success",
    "exit_code",
    "exitCode",
    "returncode",
    "exit_status",
    "timed_out",
    "timedOut",
];

/// `details` as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub details: String,
    /// Values or spans the redaction replaced.
    pub redacted: usize,
    /// Outputs replaced by their summary.
    pub outputs: usize,
}

/// The stored form of a writer's `details` (valid JSON in, valid JSON out; empty stays
/// empty). Details that are not a JSON object are redacted as a whole.
pub fn keep(details: &str, redactor: &Redactor) -> Kept {
    let unchanged =
        |r: crate::service::redact::Redacted| Kept { details: r.text, redacted: r.redacted, outputs: 0 };
    if details.is_empty() || !OUTPUT_KEYS.iter().any(|k| details.contains(k)) {
        return unchanged(redactor.redact_only(details));
    }
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(details) else {
        return unchanged(redactor.redact_only(details));
    };
    let mut summaries = Vec::new();
    for key in OUTPUT_KEYS {
        if let Some(output) = map.remove(*key) {
            summaries.push((*key, summarize(output, redactor)));
        }
    }
    if summaries.is_empty() {
        return unchanged(redactor.redact_only(details));
    }
    let rest = redactor.redact_only(&Value::Object(map).to_string());
    let mut map = match serde_json::from_str::<Value>(&rest.text) {
        Ok(Value::Object(map)) => map,
        // Redaction keeps an object an object; should it not, nothing of it is kept.
        _ => Map::new(),
    };
    let outputs = summaries.len();
    for (key, summary) in summaries {
        map.insert(key.to_string(), summary);
    }
    Kept { details: Value::Object(map).to_string(), redacted: rest.redacted, outputs }
}

/// What is kept of one output: `null` stays `null`; anything else becomes
/// `{"output_bytes", "output_keyed_blake3", <status fields>, ["output_excerpt"]}`.
fn summarize(output: Value, redactor: &Redactor) -> Value {
    if output.is_null() {
        return Value::Null;
    }
    let mut summary = Map::new();
    if let Value::Object(fields) = &output {
        for key in STATUS_KEYS {
            if let Some(v @ (Value::Bool(_) | Value::Number(_))) = fields.get(*key) {
                summary.insert((*key).to_string(), v.clone());
            }
        }
    }
    // A string's own text, anything else its compact JSON.
    let text = match &output {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    summary.insert("output_bytes".into(), text.len().into());
    summary.insert("output_keyed_blake3".into(), redactor.keyed_hash_hex(text.as_bytes()).into());
    let max = redactor.output_excerpt_bytes();
    if max > 0 {
        // Redacted whole before it is cut, so a cut never splits a secret out of a match.
        let mut value = output;
        redactor.redact_value(&mut value);
        let redacted = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let mut end = redacted.len().min(max);
        while !redacted.is_char_boundary(end) {
            end -= 1;
        }
        if end < redacted.len() {
            summary.insert("output_excerpt_cut".into(), true.into());
        }
        summary.insert("output_excerpt".into(), redacted[..end].into());
    }
    Value::Object(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedactionConfig;

    fn redactor(excerpt: usize) -> Redactor {
        let config = RedactionConfig { output_excerpt_bytes: excerpt, ..RedactionConfig::default() };
        Redactor::new(&config, [9; 32]).expect("rules")
    }

    #[test]
    fn an_output_becomes_its_status_size_and_keyed_hash() {
        let r = redactor(0);
        let secret = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let response =
            serde_json::json!({"stdout": secret, "stderr": "", "interrupted": false, "isImage": false});
        let details =
            serde_json::json!({"tool_use_id": "toolu_1", "tool_response": response, "cwd": "/home/a"});
        let kept = keep(&details.to_string(), &r);
        assert!(!kept.details.contains("wJalr"), "{}", kept.details);
        let v: Value = serde_json::from_str(&kept.details).expect("json");
        assert_eq!(v["tool_use_id"], "toolu_1");
        assert_eq!(v["tool_response"]["interrupted"], false);
        assert!(v["tool_response"].get("isImage").is_none() && v["tool_response"].get("stdout").is_none());
        let text = response.to_string();
        assert_eq!(v["tool_response"]["output_bytes"], text.len());
        assert_eq!(v["tool_response"]["output_keyed_blake3"], r.keyed_hash_hex(text.as_bytes()));
        assert_eq!(kept.outputs, 1);
        // The same output gives the same hash; another key another.
        assert_eq!(keep(&details.to_string(), &r).details, kept.details);
        let other = Redactor::new(&RedactionConfig::default(), [1; 32]).expect("rules");
        assert_ne!(keep(&details.to_string(), &other).details, kept.details);
    }

    #[test]
    fn the_rest_of_details_is_redacted_and_an_excerpt_only_when_configured() {
        let details = r#"{"note":"Bearer abcdefghijklmnop","output":"DB_PASSWORD=hunter2\nok"}"#;
        let kept = keep(details, &redactor(0));
        assert!(!kept.details.contains("abcdefghijklmnop") && !kept.details.contains("hunter2"));
        assert!(!kept.details.contains("output_excerpt") && kept.redacted == 1, "{}", kept.details);
        let kept = keep(details, &redactor(12));
        let v: Value = serde_json::from_str(&kept.details).expect("json");
        let excerpt = v["output"]["output_excerpt"].as_str().expect("excerpt");
        assert!(excerpt.len() <= 12 && !excerpt.contains("hunter2"), "{excerpt}");
        assert_eq!(v["output"]["output_excerpt_cut"], true);
        // Details without an output are redacted like params; not JSON objects too.
        let kept = keep(r#"{"k":"postgres://u:hunter22@db/x"}"#, &redactor(0));
        assert!(!kept.details.contains("hunter22") && kept.outputs == 0);
        assert_eq!(keep("", &redactor(0)).details, "");
        assert_eq!(keep(r#"{"output":null}"#, &redactor(0)).details, r#"{"output":null}"#);
    }
}
