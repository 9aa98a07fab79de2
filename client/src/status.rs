//! `ledgerctl status`: the daemon's `Status` answer as an aligned table or as JSON.

use std::time::Duration;

use ledger_proto::pb;
use ledger_query::terminal;

use crate::state::human;
use crate::verify::hex;

fn ago(now: i64, then: i64) -> Duration {
    Duration::from_nanos(u64::try_from(now.saturating_sub(then)).unwrap_or(0))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The status as lines of "name  value", then one table row per publishing target.
pub fn table(s: &pb::DaemonStatus) -> String {
    let checkpoint = if s.checkpoint_time_unix_nanos == 0 {
        "none signed yet".to_string()
    } else {
        format!(
            "{} entries, signed {} ago",
            s.checkpoint_size,
            human(ago(s.now_unix_nanos, s.checkpoint_time_unix_nanos))
        )
    };
    let writer = if s.writer_error.is_empty() {
        "running".to_string()
    } else {
        format!("STOPPED: {}", s.writer_error.replace('\n', " "))
    };
    let rows = [
        ("writer", writer),
        ("tree size", s.size.to_string()),
        ("root", hex(&s.root)),
        ("latest checkpoint", checkpoint),
        ("uptime", human(ago(s.now_unix_nanos, s.started_unix_nanos))),
        ("connections", format!("{} (limit {})", s.connections, s.max_connections)),
        ("appends/s", format!("{:.2} (last minute)", s.appends_per_second)),
        ("data dir", bytes(s.data_dir_bytes)),
        ("version", terminal::line(&s.version).into_owned()),
        ("verifier key", terminal::line(&s.verifier_key).into_owned()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    if s.publish.is_empty() {
        out.push_str(&format!("{:<width$}  no [[publish]] targets configured\n", "publishing"));
        return out;
    }
    out.push_str("publishing:\n");
    let header = ["TARGET", "DELIVERED", "PENDING", "FAILURES", "NEXT RETRY", "LAST ERROR"].map(String::from);
    let mut cells = vec![header.to_vec()];
    for p in &s.publish {
        let retry = if p.next_retry_unix_nanos == 0 {
            "-".to_string()
        } else {
            format!("in {}", human(ago(p.next_retry_unix_nanos, s.now_unix_nanos)))
        };
        let error = if p.last_error.is_empty() {
            "-".to_string()
        } else {
            terminal::line(&p.last_error).into_owned()
        };
        cells.push(vec![
            terminal::line(&p.target).into_owned(),
            p.delivered_size.to_string(),
            p.pending.to_string(),
            p.failures.to_string(),
            retry,
            error,
        ]);
    }
    let mut widths = vec![0; 6];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    for row in &cells {
        let mut line = String::from("  ");
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The status as one JSON object (times as RFC 3339 and ages in seconds).
pub fn json(s: &pb::DaemonStatus) -> serde_json::Value {
    let time = |nanos: i64| {
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).map(|t| t.to_string()).unwrap_or_default()
    };
    let publish: Vec<serde_json::Value> = s
        .publish
        .iter()
        .map(|p| {
            serde_json::json!({
                "target": p.target,
                "delivered_size": p.delivered_size,
                "pending": p.pending,
                "failures": p.failures,
                "last_error": p.last_error,
                "next_retry": (p.next_retry_unix_nanos != 0).then(|| time(p.next_retry_unix_nanos)),
            })
        })
        .collect();
    serde_json::json!({
        "size": s.size,
        "root": hex(&s.root),
        "checkpoint_size": s.checkpoint_size,
        "checkpoint_time": (s.checkpoint_time_unix_nanos != 0).then(|| time(s.checkpoint_time_unix_nanos)),
        "checkpoint_age_seconds": (s.checkpoint_time_unix_nanos != 0)
            .then(|| ago(s.now_unix_nanos, s.checkpoint_time_unix_nanos).as_secs_f64()),
        "started": time(s.started_unix_nanos),
        "uptime_seconds": ago(s.now_unix_nanos, s.started_unix_nanos).as_secs_f64(),
        "connections": s.connections,
        "max_connections": s.max_connections,
        "appends_per_second": s.appends_per_second,
        "data_dir_bytes": s.data_dir_bytes,
        "version": s.version,
        "verifier_key": s.verifier_key,
        "writer": if s.writer_error.is_empty() { "running" } else { "stopped" },
        "writer_error": (!s.writer_error.is_empty()).then_some(&s.writer_error),
        "publish": publish,
    })
}
