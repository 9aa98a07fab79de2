//! Issue 13 regressions through the real binaries, one test per item, named after it: what
//! `ledgerctl` says about `export --query` and query errors, `**` across lines in an export,
//! `0s`, and the agent id of a registration. (The language itself is covered in
//! `query/tests/issue13.rs`, and against DuckDB in `query_duckdb.rs`.)

use ledger_proto::pb;
use ledger_tests::{Daemon, ok, stderr, stdout};

fn decision(agent: &str, reason: &str) -> pb::NewEntry {
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: agent.into(),
        tool: "shell.exec".into(),
        decision: pb::Decision::Allow as i32,
        reason: reason.into(),
        ..Default::default()
    }
}

async fn seed(daemon: &Daemon) {
    let mut client = daemon.client().await;
    let entries = vec![
        decision("a", "one line"),
        decision("a", "first line\nsecond line"),
        decision("a", ""),
        decision("a", "x\r\ny"),
        decision("b", ""),
    ];
    client.append_stream(tokio_stream::iter(entries)).await.expect("seed");
}

/// The seqs of an export's rows.
fn export_seqs(csv: &str) -> Vec<u64> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    reader.records().map(|r| r.expect("a CSV record")[0].parse().expect("a seq")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_query_not_double_star_finds_exactly_the_entries_without_a_reason() {
    let daemon = Daemon::start();
    seed(&daemon).await;
    // seq 0 is daemon_started (no reason), then the five entries from seq 1.
    let out = ok(&daemon.ctl(&["export", "--query", "not reason ~ \"**\""]));
    assert_eq!(export_seqs(&out), vec![0, 3, 5], "{out}");
    let out = ok(&daemon.ctl(&["export", "--query", "kind = decision and reason ~ \"**\""]));
    assert_eq!(export_seqs(&out), vec![1, 2, 4], "{out}");
    let out = ok(&daemon.ctl(&["query", "not reason ~ \"**\" | count"]));
    assert!(out.lines().nth(1).is_some_and(|l| l.trim() == "3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_query_with_a_pipeline_stage_says_query_takes_no_stages() {
    let daemon = Daemon::start();
    seed(&daemon).await;
    let filter = "agent = \"a\" | count by tool";
    let out = daemon.ctl(&["export", "--from", "2020-01-01", "--query", filter]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("`--query` takes a filter expression, not pipeline stages"), "{err}");
    // The caret sits under the `|` of the text the user wrote, and nothing else is quoted.
    let line = err.lines().find(|l| l.starts_with("1 |")).unwrap_or_else(|| panic!("no source line:\n{err}"));
    assert_eq!(line, format!("1 | {filter}"), "{err}");
    let caret = err.lines().find(|l| l.contains('^')).unwrap_or_else(|| panic!("no caret:\n{err}"));
    let stage = line.find(" | count").expect("the stage in the source line") + 1;
    assert_eq!(caret.find('^'), Some(stage), "{err}");
    assert!(!err.contains("time >="), "text the user never wrote: {err}");
    assert!(stdout(&out).is_empty());

    let out = daemon.ctl(&["export", "--query", "last 7d agent = \"a\""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a period") && stderr(&out).contains("--from"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_query_cannot_escape_the_from_bound_with_parentheses() {
    let daemon = Daemon::start();
    seed(&daemon).await;
    // Joined naively this reads `time >= 2999-01-01 and (agent = "a") or (agent = "b")`,
    // which would export entries from long before --from.
    let out = daemon.ctl(&["export", "--from", "2999-01-01", "--query", "agent = \"a\") or (agent = \"b\""]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(export_seqs(&stdout(&out)).is_empty());
    assert!(stderr(&out).contains("error[Q100]"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_query_errors_on_stderr_end_with_a_newline() {
    let daemon = Daemon::start();
    for args in [
        vec!["query", "decison = deny"],
        vec!["query", "| count by bin(time, 0s)"],
        vec!["export", "--query", "reason = "],
        vec!["export", "--query", "a | b"],
    ] {
        let out = daemon.ctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("error[Q") && err.ends_with('\n') && !err.ends_with("\n\n"),
            "{args:?}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_duration_allowed_by_the_grammar_is_accepted() {
    let daemon = Daemon::start();
    seed(&daemon).await;
    // `last 0s` is the instant now: a query that runs and finds nothing (exit 1, not 2).
    let out = daemon.ctl(&["query", "last 0s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = ok(&daemon.ctl(&["query", "time < 0s ago | count"]));
    assert!(out.lines().nth(1).is_some_and(|l| l.trim() == "6"), "{out}");
    let out = ok(&daemon.ctl(&["export", "--to", "0s ago"]));
    assert_eq!(export_seqs(&out).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registered_entries_carry_the_agent_id_they_create() {
    let daemon = Daemon::start();
    ok(&daemon.ctl(&["agents", "register", "ops-bot", "--owner", "o", "--purpose", "p"]));
    let mut client = daemon.client().await;
    client.append(decision("ops-bot", "r")).await.expect("append");
    let out = ok(&daemon.ctl(&[
        "query",
        "agent = \"ops-bot\" | fields kind, agent_id, details.id",
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let id = rows[0]["details.id"].as_str().expect("the registration names its id");
    assert_eq!(rows[0]["kind"], "agent_registered");
    assert_eq!(rows[0]["agent_id"], id, "{out}");
    assert_eq!(rows[1]["agent_id"], id, "the agent's entries carry the same id: {out}");
    // So one filter finds the agent's whole life, registration included.
    let out = ok(&daemon.ctl(&["query", &format!("agent_id = \"{id}\" | count")]));
    assert!(out.lines().nth(1).is_some_and(|l| l.trim() == "2"), "{out}");
}
