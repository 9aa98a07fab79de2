//! The JSON-lines intake of `ledgerctl append --jsonl`: one decision per line, parsed into
//! entries as the lines are read, blank lines skipped but counted, so that every message
//! (ours or the daemon's, which counts stream messages) names the file's line.

use std::io::BufRead;

use crate::lines::Line;
use ledger_proto::pb;

/// Why a line is not an entry. Positions are columns in characters of that line (1-based).
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("{message} (column {column})")]
    Json { message: String, column: usize },
    #[error("not valid JSON ({0}); pass an object such as '{{\"path\":\"/tmp/x\"}}'")]
    NotJson(String),
    #[error("params: {0}")]
    Params(Box<LineError>),
    #[error("cannot read: {0}")]
    Read(String),
    #[error("the line is {} long, over the {} a line may have; an entry's params are bounded by the daemon's limits.max_params_bytes anyway: shorten or split it", crate::lines::size_text(*.0), crate::lines::size_text(MAX_LINE_BYTES as u64))]
    TooLong(u64),
    #[error("not UTF-8 text (byte {0}); JSON lines must be UTF-8")]
    NotUtf8(usize),
}

/// The longest line [`read`] takes (64 MiB): far above any entry the daemon accepts, and a
/// bound on what one line may cost in memory.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// One line, as written by producers.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    agent: String,
    tool: String,
    decision: Decision,
    #[serde(default)]
    action: String,
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    policy_version: u64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    session: String,
}

#[derive(Clone, Copy, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Allow,
    Deny,
}

/// Parses and re-serializes parameters so what is stored is compact, valid JSON.
pub fn normalize_params(text: &str) -> Result<String, LineError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| LineError::NotJson(e.to_string()))?;
    Ok(value.to_string())
}

/// One line of the file as an entry (a decision).
pub fn parse_line(line: &str) -> Result<pb::NewEntry, LineError> {
    // serde_json counts lines within the text it parsed; on one line, only the column helps.
    let j: JsonLine = serde_json::from_str(line).map_err(|e| {
        let column = e.column();
        let message = e.to_string().replace(&format!(" at line {} column {column}", e.line()), "");
        LineError::Json { message, column }
    })?;
    let params = match j.params {
        None | Some(serde_json::Value::Null) => String::new(),
        // A string holding JSON is accepted too, as some producers send it.
        Some(serde_json::Value::String(s)) => {
            normalize_params(&s).map_err(|e| LineError::Params(Box::new(e)))?
        }
        Some(v) => v.to_string(),
    };
    let decision = match j.decision {
        Decision::Allow => pb::Decision::Allow,
        Decision::Deny => pb::Decision::Deny,
    };
    Ok(pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: j.agent,
        tool: j.tool,
        decision: decision as i32,
        action: j.action,
        params,
        rule: j.rule,
        policy_version: j.policy_version,
        reason: j.reason,
        session: j.session,
        ..Default::default()
    })
}

/// Which line of the file each sent message came from: message `k` (from 1) is line `k`
/// plus the blank lines skipped before it.
#[derive(Debug, Default)]
pub struct Lines {
    /// For each blank line skipped, how many messages had been sent before it.
    blanks: Vec<u64>,
}

impl Lines {
    /// The line (from 1) of message `k` (from 1).
    pub fn line_of(&self, k: u64) -> u64 {
        k + self.blanks.partition_point(|&sent| sent < k) as u64
    }

    /// A daemon's message about the stream with its leading `message K: ` turned into
    /// `line L: ` (the daemon counts messages; the file has lines).
    pub fn describe(&self, message: &str) -> String {
        if let Some(rest) = message.strip_prefix("message ")
            && let Some((k, why)) = rest.split_once(": ")
            && let Ok(k) = k.parse::<u64>()
        {
            return format!("line {}: {why}", self.line_of(k));
        }
        message.to_string()
    }
}

/// What [`read`] found: the line map, and the first bad line (its number and why).
#[derive(Debug, Default)]
pub struct Read {
    pub lines: Lines,
    pub bad: Option<(u64, LineError)>,
}

/// Reads `reader` line by line (each at most [`MAX_LINE_BYTES`]), sending each entry on
/// `tx`, until the end, the first bad line, or a closed channel.
pub fn read(mut reader: impl BufRead, tx: &tokio::sync::mpsc::Sender<pb::NewEntry>) -> Read {
    let mut out = Read::default();
    let mut sent = 0u64;
    for n in 1u64.. {
        let line = match crate::lines::next_line(&mut reader, MAX_LINE_BYTES) {
            Ok(None) => break,
            Ok(Some(Line::Bytes(bytes))) => match String::from_utf8(bytes) {
                Ok(line) => line,
                Err(e) => {
                    out.bad = Some((n, LineError::NotUtf8(e.utf8_error().valid_up_to() + 1)));
                    break;
                }
            },
            Ok(Some(Line::TooLong(len))) => {
                out.bad = Some((n, LineError::TooLong(len)));
                break;
            }
            Err(e) => {
                out.bad = Some((n, LineError::Read(e.to_string())));
                break;
            }
        };
        if line.trim().is_empty() {
            out.lines.blanks.push(sent);
            continue;
        }
        match parse_line(&line) {
            Ok(entry) => {
                if tx.blocking_send(entry).is_err() {
                    break;
                }
                sent += 1;
            }
            Err(e) => {
                out.bad = Some((n, e));
                break;
            }
        }
    }
    out
}

/// `appended N entries, last seq S`.
pub fn summary(count: u64, last_seq: u64) -> String {
    if count == 0 {
        "appended 0 entries".to_string()
    } else {
        format!("appended {count} entries, last seq {last_seq}")
    }
}

/// How many entries a failed `AppendStream` appended and the last one's seq, from its
/// trailers (0, 0 when the daemon did not say).
pub fn appended(status: &tonic::Status) -> (u64, u64) {
    let number = |key| {
        status.metadata().get(key).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (number(ledger_proto::APPENDED_COUNT_TRAILER), number(ledger_proto::APPENDED_LAST_SEQ_TRAILER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_numbers_become_line_numbers() {
        // Lines: 1 blank, 2 msg1, 3 blank, 4 blank, 5 msg2, 6 msg3.
        let lines = Lines { blanks: vec![0, 1, 1] };
        assert_eq!([1, 2, 3].map(|k| lines.line_of(k)), [2, 5, 6]);
        assert_eq!(lines.describe("message 2: agent is empty"), "line 5: agent is empty");
        assert_eq!(lines.describe("writer has stopped"), "writer has stopped");
    }
}
