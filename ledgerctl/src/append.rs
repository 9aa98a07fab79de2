//! `ledgerctl append`: one entry from flags, or many from a JSON-lines file.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use ledger_client::Client;
use ledger_proto::pb;

use crate::print::write_out;
use crate::{AppendArgs, DecisionArg};

pub(crate) async fn append(socket: &Path, args: AppendArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.jsonl {
        return append_jsonl(socket, path).await;
    }
    let params = match &args.params {
        Some(p) => normalize_params(p).context("--params")?,
        None => String::new(),
    };
    let entry = pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: args.agent.unwrap_or_default(),
        tool: args.tool.unwrap_or_default(),
        decision: args.decision.map_or(pb::Decision::Unspecified, pb::Decision::from) as i32,
        action: args.action.unwrap_or_default(),
        params,
        rule: args.rule.unwrap_or_default(),
        policy_version: args.policy_version.unwrap_or(0),
        reason: args.reason.unwrap_or_default(),
        session: args.session.unwrap_or_default(),
        agent_token: args.token.unwrap_or_default(),
        ..Default::default()
    };
    let ack = Client::connect(socket).await?.append(entry).await?;
    write_out(format!("{}\n", ack.seq).as_bytes())
}

/// Parses and re-serializes parameters so what is stored is compact, valid JSON.
pub(crate) fn normalize_params(text: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| anyhow!("not valid JSON ({e}); pass an object such as '{{\"path\":\"/tmp/x\"}}'"))?;
    Ok(value.to_string())
}

/// One line of `append --jsonl`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsonLine {
    agent: String,
    tool: String,
    decision: DecisionArg,
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

pub(crate) fn parse_line(line: &str) -> anyhow::Result<pb::NewEntry> {
    // serde_json counts lines within the text it parsed; on one line, only the column helps.
    let j: JsonLine = serde_json::from_str(line).map_err(|e| {
        anyhow!(
            "{}",
            e.to_string()
                .replace(&format!(" at line 1 column {}", e.column()), &format!(" (column {})", e.column()))
        )
    })?;
    let params = match j.params {
        None | Some(serde_json::Value::Null) => String::new(),
        // A string holding JSON is accepted too, as the producers send it.
        Some(serde_json::Value::String(s)) => normalize_params(&s).context("params")?,
        Some(v) => v.to_string(),
    };
    Ok(pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: j.agent,
        tool: j.tool,
        decision: pb::Decision::from(j.decision) as i32,
        action: j.action,
        params,
        rule: j.rule,
        policy_version: j.policy_version,
        reason: j.reason,
        session: j.session,
        ..Default::default()
    })
}

pub(crate) async fn append_jsonl(socket: &Path, path: &Path) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead + Send> = if path == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut client = Client::connect(socket).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::NewEntry>(1024);
    // Lines are parsed on a plain thread and streamed as they come; the first bad line
    // ends the stream there, so nothing from it on is appended.
    let parser = std::thread::spawn(move || -> Option<(u64, String)> {
        for (i, line) in reader.lines().enumerate() {
            let n = i as u64 + 1;
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some((n, format!("cannot read: {e}"))),
            };
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line) {
                Ok(entry) => {
                    if tx.blocking_send(entry).is_err() {
                        return None;
                    }
                }
                Err(e) => return Some((n, format!("{e:#}"))),
            }
        }
        None
    });
    let result = client.append_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let bad = parser.join().map_err(|_| anyhow!("the line reader panicked"))?;
    let summary = |r: &pb::AppendStreamResponse| {
        if r.count == 0 {
            "appended 0 entries".to_string()
        } else {
            format!("appended {} entries, last seq {}", r.count, r.last_seq)
        }
    };
    match (result, bad) {
        (Ok(r), None) => write_out(format!("{}\n", summary(&r)).as_bytes()),
        (Ok(r), Some((line, why))) => {
            eprintln!("{}", summary(&r));
            bail!("{}: line {line}: {why}; nothing from that line on was appended", path.display())
        }
        (Err(e), _) => Err(e.into()),
    }
}
