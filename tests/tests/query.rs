//! Queries and exports against a real daemon: output formats, exit codes, errors with
//! positions from the daemon, CSV read back with a real CSV reader, closed pipes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ledger_client::ClientError;
use ledger_proto::pb;
use ledger_tests::{Daemon, bin, stderr, stdout};

fn entry(agent: &str, tool: &str, deny: bool, params: &str, reason: &str) -> pb::NewEntry {
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: agent.into(),
        tool: tool.into(),
        decision: if deny { pb::Decision::Deny } else { pb::Decision::Allow } as i32,
        params: params.into(),
        reason: reason.into(),
        rule: if deny { "no-shell".into() } else { "read-only".into() },
        ..Default::default()
    }
}

async fn seed(daemon: &Daemon) {
    let mut client = daemon.client().await;
    let entries = (0..60).map(|i| {
        let agent = ["billing-bot", "ops-bot", "ci-7"][i % 3];
        let tool = ["db.query", "shell.exec", "fs.read_file"][i % 3];
        entry(agent, tool, i % 3 == 1, &format!(r#"{{"n":{i}}}"#), "routine")
    });
    client.append_stream(tokio_stream::iter(entries.collect::<Vec<_>>())).await.expect("seed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_formats_and_exit_codes() {
    let daemon = Daemon::start();
    seed(&daemon).await;

    let out = daemon.ctl(&["query", "decision = deny | count by agent, tool"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("agent") && lines[1].contains("ops-bot") && lines[1].contains("20"),
        "{table}"
    );
    // Columns line up: every line is as wide as the header's layout allows.
    let count_col = lines[0].find("count").expect("count column");
    assert!(lines[1].len() >= count_col, "{table}");

    let out = daemon.ctl(&["query", "agent = \"ci-7\" | fields seq, tool | limit 2", "--format", "json"]);
    let rows: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["tool"], "fs.read_file");

    let out = daemon.ctl(&["query", "agent = \"nobody\""]);
    assert_eq!(out.status.code(), Some(1), "no rows is exit 1");
    assert!(stdout(&out).is_empty());

    let out = daemon.ctl(&["query", "decison = deny"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("error[Q101]") && err.contains("^^^^^^^") && err.contains("did you mean `decision`?"),
        "{err}"
    );

    let out = daemon.ctl(&["query", "decision = deny", "--tz", "Mars/Olympus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown time zone"), "{}", stderr(&out));

    // hour() follows --tz: the same entries in UTC and 14 hours east are in other hours.
    let utc = stdout(&daemon.ctl(&["query", "| stats min(time) as t | fields t"]));
    let east =
        stdout(&daemon.ctl(&["query", "| stats min(time) as t | fields t", "--tz", "Pacific/Kiritimati"]));
    assert!(utc.contains('Z') && east.contains("+14:00"), "{utc}\n{east}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_returns_query_errors_with_their_position() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    // The library sends the text as is (no local parse): the daemon's error comes back
    // structured and renders with its caret.
    let text = "last 7d agnet = \"x\"";
    let err = client.query(text, "").await.err().expect("must fail");
    let ClientError::Query { rendered } = err else { panic!("not a query error: {err}") };
    assert!(rendered.contains("error[Q101]") && rendered.contains("query:1:9"), "{rendered}");
    assert!(rendered.contains("        ^^^^^"), "{rendered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_reads_back_exactly_with_a_real_csv_reader() {
    let daemon = Daemon::start();
    let tricky = [
        ("comma,agent", "a, b, c"),
        ("quote\"agent", "she said \"no\""),
        ("newline-agent", "line one\nline two\r\nline three"),
        ("ünïcödé-агент", "日本語の理由 — ok"),
        ("=cmd|' /C calc'!A0", "=HYPERLINK(\"http://x\")"),
        ("+plus", "-minus"),
        ("@at", "\ttab first"),
        ("'=already", "'quoted"),
    ];
    let mut client = daemon.client().await;
    for (agent, reason) in tricky {
        let params = serde_json::json!({ "path": "/srv/a,b", "note": reason }).to_string();
        client.append(entry(agent, "=SUM(A1)", false, &params, reason)).await.expect("append");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("export.csv");
    let out = daemon.ctl(&["export", "--query", "kind = decision", "--out", path.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("exported 8 rows") && err.contains("prefixed with '"), "{err}");

    let mut reader = csv::Reader::from_path(&path).expect("open csv");
    let headers = reader.headers().expect("header").clone();
    let col =
        |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("records");
    assert_eq!(rows.len(), tricky.len());
    let mut stream = client.entries(0, 0, false).await.expect("entries");
    let mut stored = Vec::new();
    while let Some(item) = stream.message().await.expect("entry") {
        stored.extend(item.entry.filter(|e| e.kind == pb::Kind::Decision as i32));
    }
    for (row, e) in rows.iter().zip(&stored) {
        let cell = |name: &str| ledger_query::unneutralise(&row[col(name)]).into_owned();
        assert_eq!(cell("seq"), e.seq.to_string());
        assert_eq!(cell("agent"), e.agent);
        assert_eq!(cell("tool"), e.tool);
        assert_eq!(cell("reason"), e.reason);
        assert_eq!(cell("params"), e.params);
        assert_eq!(cell("decision"), "allow");
    }
    // Formula-looking cells were neutralised in the file itself.
    let raw = std::fs::read_to_string(&path).expect("read");
    assert!(raw.contains("'=SUM(A1)") && !raw.contains(",=SUM(A1)"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_flags_filter_and_a_closed_pipe_is_not_an_error() {
    let daemon = Daemon::start();
    seed(&daemon).await;
    seed(&daemon).await;
    let out = daemon.ctl(&["export", "--agent", "ops-bot", "--decision", "deny", "--from", "1d ago"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1 + 40, "header + 40 rows");
    assert!(text.lines().skip(1).all(|l| l.contains("ops-bot") && l.contains("deny")));

    // A reader that stops after one line (like `| head -1`), with far more output than a
    // pipe buffers, so ledgerctl does hit the closed pipe.
    let mut client = daemon.client().await;
    let bulk: Vec<_> =
        (0..3000).map(|i| entry("bulk", "t", false, &format!(r#"{{"pad":"{i:0>200}"}}"#), "")).collect();
    client.append_stream(tokio_stream::iter(bulk)).await.expect("bulk");
    let mut child = Command::new(bin("ledgerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["query", "| fields seq, agent, params", "--format", "csv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("read");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(first.trim(), "seq,agent,params");
    assert_eq!(out.status.code(), Some(0), "closed pipe: {}", stderr(&out));
}

/// `export --out` into a directory others can write to: a link planted under any name
/// next to the target is never followed (the old predictable `NAME.csv.partial` was), the
/// file appears whole or not at all, and nothing is left beside it.
#[tokio::test]
async fn export_out_never_follows_a_planted_link_and_leaves_no_partial_file() {
    let daemon = Daemon::start();
    seed(&daemon).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious").expect("write");
    let path = dir.path().join("export.csv");
    std::os::unix::fs::symlink(&victim, dir.path().join("export.csv.partial")).expect("symlink");
    let out = daemon.ctl(&["export", "--out", path.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
    let text = std::fs::read_to_string(&path).expect("read the export");
    assert!(text.starts_with("seq,"), "{text}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["export.csv", "export.csv.partial", "victim"]);

    // A failed export (no daemon there) leaves the old file as it was and nothing beside it.
    let out = Command::new(bin("ledgerctl"))
        .arg("--socket")
        .arg(dir.path().join("no.sock"))
        .args(["export", "--out", path.to_str().expect("path")])
        .output()
        .expect("run ledgerctl");
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 3);
}
