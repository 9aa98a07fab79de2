//! The agent registry and versioned policies against a real daemon: every command, the
//! change log as entries, identity flags on appends, policy checks on decisions, invalid
//! documents refused with nothing appended, and projections rebuilt from the log.

use std::path::Path;

use ledger_tests::{Daemon, ok, stderr, stdout};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

fn head_size(daemon: &Daemon) -> u64 {
    let out = daemon.ctl(&["query", "| stats count() as n | fields n", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    v["n"].as_u64().expect("count")
}

const V1: &str = "# billing-bot, first version\n\
rule read-invoices: allow tool = \"db.query\" and params.sql ~ /(?i)^select /\n\
rule no-shell: deny tool ~ \"shell.*\"\n\
default deny\n";

const V2: &str = "# billing-bot, second version: may also read invoice files\n\
rule read-invoices: allow tool = \"db.query\" and params.sql ~ /(?i)^select /\n\
rule invoice-files: allow tool = \"fs.read_file\" and params.path ~ \"/srv/invoices/**\"\n\
rule no-shell: deny tool ~ \"shell.*\"\n\
default deny\n";

#[test]
fn registry_commands_and_their_change_log() {
    let daemon = Daemon::start();
    let out = ok(&daemon.ctl(&[
        "agents",
        "register",
        "billing-bot",
        "--owner",
        "finance@example.com",
        "--purpose",
        "reconcile invoices",
        "--scope",
        "invoices db",
    ]));
    let id = out.lines().find_map(|l| l.strip_prefix("id")).map(str::trim).expect("id line").to_string();
    let token =
        out.lines().find_map(|l| l.strip_prefix("token")).map(str::trim).expect("token line").to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert!(token.starts_with("lgt_") && token.len() > 60, "{token}");

    ok(&daemon.ctl(&[
        "agents",
        "register",
        "ops-bot",
        "--owner",
        "sre@example.com",
        "--purpose",
        "restarts",
    ]));
    let dup = daemon.ctl(&["agents", "register", "ops-bot", "--owner", "x", "--purpose", "y"]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(stderr(&dup).contains("already registered"), "{}", stderr(&dup));

    let list = ok(&daemon.ctl(&["agents", "list"]));
    assert!(
        list.lines().next().is_some_and(|h| h.starts_with("NAME")) && list.contains("billing-bot"),
        "{list}"
    );
    let show = ok(&daemon.ctl(&["agents", "show", "billing-bot"]));
    assert!(
        show.contains(&id) && show.contains("finance@example.com") && show.contains("invoices db"),
        "{show}"
    );

    ok(&daemon.ctl(&[
        "agents",
        "update",
        "billing-bot",
        "--owner",
        "ap-team@example.com",
        "--reason",
        "team change",
    ]));
    assert!(ok(&daemon.ctl(&["agents", "show", "billing-bot"])).contains("ap-team@example.com"));

    // The token identifies the agent; a wrong one, a retired agent, an unknown one are flagged.
    let append = |agent: &str, token: &str| {
        ok(&daemon.ctl(&[
            "append",
            "--agent",
            agent,
            "--tool",
            "db.query",
            "--decision",
            "allow",
            "--token",
            token,
        ]))
    };
    append("billing-bot", &token);
    append("billing-bot", "lgt_wrong");
    let rotated = ok(&daemon.ctl(&["agents", "rotate-token", "billing-bot"]));
    let new_token =
        rotated.lines().find_map(|l| l.strip_prefix("token")).map(str::trim).expect("token").to_string();
    append("billing-bot", &token); // the old token no longer matches
    append("billing-bot", &new_token);
    ok(&daemon.ctl(&["agents", "retire", "ops-bot", "--reason", "replaced"]));
    append("ops-bot", "");
    append("nobody", "");
    let flags =
        ok(&daemon.ctl(&["query", "kind = decision | fields agent, agent_id, flags", "--format", "csv"]));
    let rows: Vec<&str> = flags.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{flags}");
    // No identity flag: only the scorer's first use of the tool (docs/SEVERITY.md).
    assert_eq!(rows[0], format!("billing-bot,{id},\"[\"\"first_use\"\"]\""), "no identity flags");
    assert!(
        rows[1].contains("bad_token") && rows[2].contains("bad_token") && !rows[3].contains("bad_token"),
        "{flags}"
    );
    assert!(rows[4].contains("retired_agent") && rows[5].contains("unknown_agent"), "{flags}");

    // Every change is an entry, with who made it.
    let log = ok(&daemon.ctl(&[
        "query",
        "kind in [agent_registered, agent_updated, agent_retired] | fields kind, agent, uid",
        "--format",
        "csv",
    ]));
    let kinds: Vec<&str> = log.lines().skip(1).map(|l| l.split(',').next().unwrap_or("")).collect();
    assert_eq!(
        kinds,
        ["agent_registered", "agent_registered", "agent_updated", "agent_updated", "agent_retired"]
    );
    let uid = rustix_uid();
    assert!(log.lines().skip(1).all(|l| l.ends_with(&format!(",{uid}"))), "{log}");
    let retired = ok(&daemon.ctl(&["agents", "list", "--retired"]));
    assert!(retired.contains("ops-bot") && retired.contains("retired"), "{retired}");
    assert!(!ok(&daemon.ctl(&["agents", "list"])).contains("ops-bot"));
}

fn rustix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

#[test]
fn policy_versions_history_show_at_diff_check_and_decisions_under_both() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&daemon.ctl(&["agents", "register", "billing-bot", "--owner", "o", "--purpose", "p"]));
    let v1 = write(dir.path(), "v1.policy", V1);
    let v2 = write(dir.path(), "v2.policy", V2);
    let set1 = ok(&daemon.ctl(&[
        "policy",
        "set",
        "billing-bot",
        "--file",
        &v1,
        "--author",
        "alice",
        "--approver",
        "bob",
        "--reason",
        "CHG-1",
    ]));
    assert!(set1.contains("version 1"), "{set1}");
    let decision = |tool: &str, params: &str, decision: &str, version: &str| {
        ok(&daemon.ctl(&[
            "append",
            "--agent",
            "billing-bot",
            "--tool",
            tool,
            "--params",
            params,
            "--decision",
            decision,
            "--policy-version",
            version,
        ]))
    };
    decision("db.query", r#"{"sql":"SELECT * FROM invoices"}"#, "allow", "1");
    decision("fs.read_file", r#"{"path":"/srv/invoices/1.pdf"}"#, "deny", "1");
    let between = ok(&daemon.ctl(&["query", "| stats max(time) as t | fields t", "--format", "json"]));
    let between: serde_json::Value = serde_json::from_str(between.trim()).expect("json");
    let between = between["t"].as_str().expect("time").to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));

    ok(&daemon.ctl(&[
        "policy",
        "set",
        "billing-bot",
        "--file",
        &v2,
        "--author",
        "carol",
        "--reason",
        "CHG-2: files",
    ]));
    decision("fs.read_file", r#"{"path":"/srv/invoices/1.pdf"}"#, "allow", "2");
    decision("shell.exec", r#"{"cmd":"ls"}"#, "deny", "2");

    // Decisions under both versions matched their policy.
    let checks = ok(&daemon.ctl(&[
        "query",
        "kind = decision | fields policy_version, policy_check",
        "--format",
        "csv",
    ]));
    assert_eq!(
        checks.lines().skip(1).collect::<Vec<_>>(),
        ["1,match", "1,match", "2,match", "2,match"],
        "{checks}"
    );

    let history = ok(&daemon.ctl(&["policy", "history", "billing-bot"]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(lines[0].contains("AUTHOR") && lines[0].contains("APPROVER") && lines[0].contains("REASON"));
    assert!(
        lines[1].contains("alice") && lines[1].contains("bob") && lines[1].contains("CHG-1"),
        "{history}"
    );
    assert!(lines[2].contains("carol") && lines[2].contains("CHG-2: files"), "{history}");
    // Version 2 names the hash of version 1.
    let hashes: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().nth(5).unwrap_or("")).collect();
    assert!(lines[2].contains(hashes[0]), "{history}");

    assert_eq!(ok(&daemon.ctl(&["policy", "show", "billing-bot"])), V2);
    assert_eq!(ok(&daemon.ctl(&["policy", "show", "billing-bot", "--version", "1"])), V1);
    assert_eq!(ok(&daemon.ctl(&["policy", "show", "billing-bot", "--at", &between])), V1);
    let before = daemon.ctl(&["policy", "show", "billing-bot", "--at", "2000-01-01"]);
    assert_eq!(before.status.code(), Some(2));
    assert!(stderr(&before).contains("no policy of its own at that time"), "{}", stderr(&before));

    let diff = ok(&daemon.ctl(&["policy", "diff", "billing-bot", "1", "2"]));
    assert!(diff.contains("--- billing-bot v1") && diff.contains("+++ billing-bot v2"), "{diff}");
    assert!(
        diff.contains("\n+rule invoice-files") && diff.contains("\n-# billing-bot, first version"),
        "{diff}"
    );

    let check = daemon.ctl(&["policy", "check", "billing-bot", "--tool", "shell.exec"]);
    assert_eq!(check.status.code(), Some(1), "denied is exit 1");
    let text = stdout(&check);
    assert!(
        text.starts_with("DENY by no-shell") && text.contains("matched") && text.contains("v2"),
        "{text}"
    );
    let check = daemon.ctl(&[
        "policy",
        "check",
        "billing-bot",
        "--tool",
        "db.query",
        "--params",
        r#"{"sql":"select 1"}"#,
    ]);
    assert!(
        check.status.success() && stdout(&check).starts_with("ALLOW by read-invoices"),
        "{}",
        stdout(&check)
    );

    // policy check appends nothing; the access review shows what is allowed.
    let review = ok(&daemon.ctl(&["access-review", "--format", "csv"]));
    assert!(
        review.contains("billing-bot") && review.contains("invoice-files") && review.contains(",v2,"),
        "{review}"
    );
    let review_then = ok(&daemon.ctl(&["access-review", "--at", &between, "--format", "csv"]));
    assert!(review_then.contains(",v1,") && !review_then.contains("invoice-files"), "{review_then}");
}

#[test]
fn a_decision_that_contradicts_its_policy_is_stored_and_flagged() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&daemon.ctl(&["agents", "register", "billing-bot", "--owner", "o", "--purpose", "p"]));
    let v1 = write(dir.path(), "v1.policy", V1);
    ok(&daemon.ctl(&["policy", "set", "billing-bot", "--file", &v1, "--author", "a", "--reason", "r"]));
    // The shim says allow; version 1 denies shell.exec.
    let seq = ok(&daemon.ctl(&[
        "append",
        "--agent",
        "billing-bot",
        "--tool",
        "shell.exec",
        "--decision",
        "allow",
        "--policy-version",
        "1",
    ]));
    let found = ok(&daemon.ctl(&[
        "query",
        "kind = decision and policy_check = mismatch | fields seq, severity, flags",
        "--format",
        "csv",
    ]));
    // A mismatch always scores 10 (docs/SEVERITY.md); first_use is the scorer's too.
    assert_eq!(
        found.lines().nth(1),
        Some(format!("{},10,\"[\"\"first_use\"\",\"\"policy_mismatch\"\"]\"", seq.trim()).as_str()),
        "{found}"
    );
    let flagged = ok(&daemon.ctl(&["query", "flags has policy_mismatch | fields seq"]));
    assert!(flagged.contains(seq.trim()));
}

#[test]
fn invalid_policy_documents_are_refused_and_nothing_is_appended() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&daemon.ctl(&["agents", "register", "a1", "--owner", "o", "--purpose", "p"]));
    let size = head_size(&daemon);
    let cases = [
        ("unknown-field", "rule r: allow toool = \"x\"\ndefault deny\n", "unknown field `toool`"),
        ("bad-regex", "rule r: allow params.sql ~ /(unclosed/\ndefault deny\n", "regex"),
        (
            "duplicate",
            "rule r: allow tool = \"a\"\nrule r: deny tool = \"b\"\ndefault deny\n",
            "duplicate rule id `r`",
        ),
        ("empty", "# nothing here\n\n", "empty"),
    ];
    for (name, text, expected) in cases {
        let path = write(dir.path(), name, text);
        let out = daemon.ctl(&["policy", "set", "a1", "--file", &path, "--author", "a", "--reason", "r"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert!(err.contains(expected) && err.contains(" --> policy:"), "{name}: {err}");
    }
    let big = dir.path().join("big.policy");
    let mut text = String::from("rule r: allow tool = \"x\"\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, format!("{text}default deny\n")).expect("write");
    let out = daemon.ctl(&[
        "policy",
        "set",
        "a1",
        "--file",
        big.to_str().expect("path"),
        "--author",
        "a",
        "--reason",
        "r",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("at most"), "{}", stderr(&out));
    // The daemon refuses them too, with the same rendering, if a client skips the local check.
    assert_eq!(head_size(&daemon), size, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_checks_documents_itself() {
    let daemon = Daemon::start();
    ok(&daemon.ctl(&["agents", "register", "a1", "--owner", "o", "--purpose", "p"]));
    let mut client = daemon.client().await;
    let text = "rule r: allow tool ~ /[/\ndefault deny\n";
    let request = ledger_proto::pb::SetPolicyRequest {
        agent: "a1".into(),
        text: text.into(),
        author: "a".into(),
        reason: "r".into(),
        ..Default::default()
    };
    let status = client.admin().set_policy(request).await.expect_err("refused");
    assert_eq!(status.code(), tonic_code_invalid());
    let errors = ledger_query::policy::PolicyErrors::from_json_str(
        std::str::from_utf8(status.details()).expect("utf-8"),
    )
    .expect("structured errors");
    assert!(errors.render(text).contains("policy:1:"), "{}", errors.render(text));
}

fn tonic_code_invalid() -> tonic::Code {
    tonic::Code::InvalidArgument
}

#[test]
fn projections_rebuilt_from_the_log_give_the_same_state() {
    let mut daemon = Daemon::start();
    let tmp = daemon.keep_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["a1", "a2", "a3"] {
        ok(&daemon.ctl(&["agents", "register", name, "--owner", "o", "--purpose", "p"]));
    }
    ok(&daemon.ctl(&["agents", "retire", "a2", "--reason", "gone"]));
    let v1 = write(dir.path(), "v1.policy", V1);
    let v2 = write(dir.path(), "v2.policy", V2);
    ok(&daemon.ctl(&["policy", "set", "a1", "--file", &v1, "--author", "x", "--reason", "r1"]));
    ok(&daemon.ctl(&["policy", "set", "a1", "--file", &v2, "--author", "y", "--reason", "r2"]));
    ok(&daemon.ctl(&["policy", "set", "*", "--file", &v1, "--author", "x", "--reason", "default"]));
    let snapshot = |d: &Daemon| {
        (
            ok(&d.ctl(&["agents", "list", "--retired", "--format", "csv"])),
            ok(&d.ctl(&["policy", "history", "a1", "--format", "csv"])),
            ok(&d.ctl(&["policy", "history", "*", "--format", "csv"])),
            ok(&d.ctl(&["access-review", "--format", "csv"])),
        )
    };
    let before = snapshot(&daemon);
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop());

    // Explicitly, with the daemon stopped.
    let out = std::process::Command::new(ledger_tests::bin("ledgerd"))
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--rebuild-projections")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let daemon = Daemon::start_in(&data_dir).expect("restart");
    assert_eq!(snapshot(&daemon), before);
    assert!(daemon.stop());

    // Automatically, when the projection trees are gone.
    {
        let store = ledgerd::storage::store::Store::open(&data_dir.join("store"), 8 << 20).expect("store");
        store.agents.clear().expect("clear");
        store.policies.clear().expect("clear");
        store.by_agent.clear().expect("clear");
        store.meta.remove("projections").expect("remove");
        store.meta.flush().expect("flush");
    }
    let daemon = Daemon::start_in(&data_dir).expect("restart");
    assert_eq!(snapshot(&daemon), before);
    drop(tmp);
}
