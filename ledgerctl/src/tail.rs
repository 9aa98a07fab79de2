//! `ledgerctl tail` and `ledgerctl watch`: the newest entries, and entries as they are committed.

use std::path::Path;

use anyhow::bail;
use ledger_client::Client;
use ledger_proto::pb;
use tokio_stream::StreamExt;

use crate::WatchFormat;
use crate::print::{print_aligned, print_table, stream_widths, table_widths, time_text, write_out};

pub(crate) async fn tail(socket: &Path, n: u64, follow: bool) -> anyhow::Result<()> {
    let mut client = Client::connect(socket).await?;
    let head = client.head().await?;
    let start = head.size.saturating_sub(n);
    let mut stream = client.entries(start, if follow { 0 } else { head.size }, follow).await?;
    let mut rows = Vec::new();
    let columns = ["SEQ", "TIME", "KIND", "AGENT", "TOOL", "DECISION", "RULE", "REASON"];
    // Without --follow the whole table is known, so widths fit it; with --follow the first
    // screenful sets them (at least the stream widths) and later rows keep them.
    // (With nothing to show yet, a follower starts with the header alone.)
    while start < head.size
        && let Some(item) = stream.next().await
    {
        let item = item?;
        let Some(e) = item.entry else { continue };
        rows.push(row(&e));
        if follow && e.seq + 1 >= head.size {
            break;
        }
    }
    if !follow {
        return print_table(&columns, &rows);
    }
    let widths = table_widths(&columns, &rows, &stream_widths(&columns));
    print_aligned(&widths, &columns, &rows, true)?;
    while let Some(item) = stream.next().await {
        if let Some(e) = item?.entry {
            print_aligned(&widths, &columns, &[row(&e)], false)?;
        }
    }
    Ok(())
}

pub(crate) async fn watch(
    socket: &Path,
    min_severity: u32,
    agent: &str,
    format: WatchFormat,
) -> anyhow::Result<()> {
    let mut stream = Client::connect(socket).await?.watch(min_severity, agent).await?;
    let render = ledger_proto::wire::EntryRenderer::default();
    // The `tail` columns, with the severity and its flags after the time.
    let columns = ["SEQ", "TIME", "SEV", "FLAGS", "KIND", "AGENT", "TOOL", "DECISION", "RULE", "REASON"];
    let widths = table_widths(&columns, &[], &stream_widths(&columns));
    if format == WatchFormat::Table {
        print_aligned(&widths, &columns, &[], true)?;
    }
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(pb::watch_event::Event::Entry(e)) => match format {
                WatchFormat::Json => write_out(render.json_line(&e).as_bytes())?,
                WatchFormat::Table => {
                    let mut cells = row(&e);
                    cells.insert(2, e.severity.to_string());
                    cells.insert(3, e.flags.join(","));
                    print_aligned(&widths, &columns, &[cells], false)?;
                }
            },
            Some(pb::watch_event::Event::Missed(n)) => {
                eprintln!(
                    "ledgerctl: missed {n} entries: this watcher fell behind; find them with `ledgerctl query`"
                )
            }
            None => {}
        }
    }
    bail!("ledgerd closed the stream (it is stopping); run `ledgerctl watch` again once it is back")
}

pub(crate) fn row(e: &pb::Entry) -> Vec<String> {
    vec![
        e.seq.to_string(),
        time_text(e.time_unix_nanos),
        pb::Kind::name_of(e.kind).to_string(),
        e.agent.clone(),
        e.tool.clone(),
        pb::Decision::name_of(e.decision).to_string(),
        e.rule.clone(),
        e.reason.clone(),
    ]
}
