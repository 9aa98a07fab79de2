//! `ledgerctl query` and `ledgerctl export`: run a query and print its rows; export a period as CSV or JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use ledger_client::Client;
use ledger_client::files::Pending;
use ledger_proto::pb;

use crate::{ExportArgs, Format, NoRows, OutputArgs, Rendered};

/// Resolves `--tz` (checked here so a typo fails before the daemon is asked).
pub(crate) fn time_zone(tz: Option<&str>) -> anyhow::Result<(String, jiff::tz::TimeZone)> {
    match tz {
        None | Some("") => Ok((String::new(), jiff::tz::TimeZone::UTC)),
        Some(name) => {
            let zone = jiff::tz::TimeZone::get(name).map_err(|e| {
                anyhow!("unknown time zone {name:?} ({e}); use an IANA name such as Europe/Berlin or UTC")
            })?;
            Ok((name.to_string(), zone))
        }
    }
}

/// Parses locally first: errors show at once, rendered with carets, without a daemon.
pub(crate) fn check_query(text: &str) -> anyhow::Result<()> {
    ledger_query::check_length(text).map_err(|m| anyhow!(m))?;
    ledger_query::parse(text).map(|_| ()).map_err(|e| Rendered(e.render(text)).into())
}

pub(crate) async fn run_query(socket: &Path, text: &str, out: &OutputArgs) -> anyhow::Result<()> {
    check_query(text)?;
    let (tz_name, tz) = time_zone(out.tz.as_deref())?;
    let mut stream = Client::connect(socket).await?.query(text, &tz_name).await?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut count = 0usize;
    match out.format {
        Format::Table => {
            // A table's widths depend on every row, so it is laid out at the end.
            let mut rows = Vec::new();
            while let Some(chunk) = stream.next_rows().await? {
                rows.extend(chunk);
            }
            count = rows.len();
            if count > 0 {
                let rs = ledger_query::ResultSet { columns: stream.columns.clone(), rows };
                ledger_query::write_table(&mut w, &rs, &tz)?;
            }
        }
        Format::Csv => {
            let mut csv = ledger_query::CsvWriter::new(&mut w, &stream.columns, tz.clone())?;
            while let Some(chunk) = stream.next_rows().await? {
                count += chunk.len();
                csv.write_rows(&chunk)?;
            }
            report_neutralised(csv.finish()?);
        }
        Format::Json => {
            while let Some(chunk) = stream.next_rows().await? {
                count += chunk.len();
                ledger_query::write_json_rows(&mut w, &stream.columns, &chunk, &tz)?;
            }
        }
    }
    w.flush()?;
    if count == 0 {
        return Err(NoRows.into());
    }
    Ok(())
}

pub(crate) fn report_neutralised(n: usize) {
    if n > 0 {
        eprintln!(
            "note: {n} cell(s) began with =, +, -, @, tab or CR and were prefixed with ' so a spreadsheet shows them as text instead of running them (docs/QUERY.md explains how to undo it)"
        );
    }
}

/// Quotes a value for the query language.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The query an export's flags stand for.
pub(crate) fn export_query(args: &ExportArgs) -> String {
    let mut parts = Vec::new();
    if let Some(from) = &args.from {
        parts.push(format!("time >= {}", time_literal(from)));
    }
    if let Some(to) = &args.to {
        parts.push(format!("time < {}", time_literal(to)));
    }
    let list = |items: &[String]| items.iter().map(|i| quoted(i)).collect::<Vec<_>>().join(", ");
    if !args.agents.is_empty() {
        parts.push(format!("agent in [{}]", list(&args.agents)));
    }
    if !args.actions.is_empty() {
        parts.push(format!("action in [{}]", list(&args.actions)));
    }
    if let Some(d) = args.decision {
        parts.push(format!("decision = {}", pb::Decision::from(d).name()));
    }
    if let Some(q) = &args.query {
        parts.push(format!("({q})"));
    }
    parts.join(" and ")
}

/// Checks `--query` on its own, before it is joined with the other flags: it must be one
/// filter expression. Errors point into the text the user wrote, and a pipeline stage or a
/// period is named as such (the joined query would otherwise put a caret in text nobody
/// wrote, and unbalanced parentheses could escape the `--from`/`--to` bounds).
fn check_export_filter(text: &str) -> anyhow::Result<()> {
    let Err(errors) = ledger_query::parse_condition(text) else { return Ok(()) };
    let lead = text.len() - text.trim_start().len();
    let first = text[lead..].split_whitespace().next().unwrap_or("");
    if let (true, Some(e)) = (
        ["last", "since", "until", "during"].contains(&first.to_ascii_lowercase().as_str()),
        errors.errors().first(),
    ) {
        // The parser stumbles after the keyword; point at the keyword itself.
        let mut e = e.clone();
        e.code = ledger_query::Code::Q100;
        e.message = "`--query` takes a filter expression, not a period".to_string();
        e.label = "a period starts here".to_string();
        e.help = Some("give the period with `--from` and `--to`".to_string());
        e.line = 1 + text[..lead].matches('\n').count();
        e.col = 1 + text[..lead].rsplit('\n').next().unwrap_or("").chars().count();
        e.start = lead;
        e.end = lead + first.len();
        return Err(Rendered(e.render(text)).into());
    }
    let mut rendered = Vec::new();
    for e in errors.errors() {
        let mut e = e.clone();
        if text.get(e.start..).unwrap_or("").trim_start().starts_with('|') {
            e.message = "`--query` takes a filter expression, not pipeline stages".to_string();
            e.label = "a stage starts here".to_string();
            e.help = Some(
                "export writes whole entries; for `| count`, `| fields` and the like run `ledgerctl query`"
                    .to_string(),
            );
        }
        rendered.push(e.render(text));
    }
    Err(Rendered(rendered.join("\n\n")).into())
}

/// Time flags may be written as in queries (`2026-01-01`, `7d ago`, RFC 3339).
pub(crate) fn time_literal(t: &str) -> String {
    t.trim().to_string()
}

pub(crate) async fn export(socket: &Path, args: &ExportArgs) -> anyhow::Result<()> {
    if let Some(filter) = &args.query {
        check_export_filter(filter)?;
    }
    let text = export_query(args);
    check_query(&text)?;
    let (tz_name, tz) = time_zone(args.tz.as_deref())?;
    let mut stream = Client::connect(socket).await?.query(&text, &tz_name).await?;
    let progress = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} exporting: {human_pos} rows, {per_sec} [{elapsed}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    // --out: written beside the target under a fresh name, put in place only when whole.
    let (out, pending): (Box<dyn Write>, Option<(Pending, &PathBuf)>) = match &args.out {
        Some(path) => {
            let pending = Pending::beside(path)
                .with_context(|| format!("cannot create a file beside {}", path.display()))?;
            let file = pending.file()?;
            (Box::new(std::io::BufWriter::new(file)), Some((pending, path)))
        }
        None => (Box::new(std::io::BufWriter::new(std::io::stdout().lock())), None),
    };
    let result = async {
        let mut csv = ledger_query::CsvWriter::new(out, &stream.columns, tz.clone())?;
        let mut count = 0u64;
        while let Some(chunk) = stream.next_rows().await? {
            count += chunk.len() as u64;
            csv.write_rows(&chunk)?;
            progress.set_position(count);
        }
        let neutralised = csv.finish()?;
        anyhow::Ok((count, neutralised))
    }
    .await;
    progress.finish_and_clear();
    match (result, pending) {
        (Ok((count, neutralised)), Some((pending, path))) => {
            pending.commit().with_context(|| format!("cannot move the export to {}", path.display()))?;
            eprintln!("exported {count} rows to {}", path.display());
            report_neutralised(neutralised);
            Ok(())
        }
        (Ok((_, neutralised)), None) => {
            report_neutralised(neutralised);
            Ok(())
        }
        // Dropping the pending file removes it.
        (Err(e), _) => Err(e),
    }
}
