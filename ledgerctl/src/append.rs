//! `ledgerctl append`: one entry from flags, or many from a JSON-lines file.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use ledger_client::{Client, jsonl};
use ledger_proto::pb;

use crate::AppendArgs;
use crate::print::write_out;

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
    Ok(jsonl::normalize_params(text)?)
}

/// `append --jsonl`: the lines are parsed (`ledger_client::jsonl`) and streamed; whatever
/// happens, what was stored is reported (how many, the last seq), and every message names
/// a line of the file.
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
    let parser = std::thread::spawn(move || jsonl::read(reader, &tx));
    let result = client.append_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    let read = parser.join().map_err(|_| anyhow!("the line reader panicked"))?;
    let name = path.display();
    match (result, read.bad) {
        (Ok(r), None) => write_out(format!("{}\n", jsonl::summary(r.count, r.last_seq)).as_bytes()),
        (Ok(r), Some((line, why))) => {
            eprintln!("{}", jsonl::summary(r.count, r.last_seq));
            bail!("{name}: line {line}: {why:#}; nothing from that line on was appended")
        }
        (Err(ledger_client::ClientError::Rpc(status)), _) => {
            let (count, last_seq) = jsonl::appended(&status);
            eprintln!("{}", jsonl::summary(count, last_seq));
            bail!("{name}: {}", read.lines.describe(status.message()))
        }
        (Err(e), _) => {
            eprintln!(
                "appended an unknown number of entries: the daemon did not answer; `ledgerctl tail` shows the newest"
            );
            Err(e.into())
        }
    }
}
