//! Issue 12, the client and query half, against real daemons: hostile text never reaches
//! the terminal raw; query errors stay small and reach official gRPC clients; `append
//! --jsonl` always says what it stored; every `ledgerctl` call has a deadline (a SIGSTOPped
//! daemon); messages name the real problem.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ledger_tests::{Daemon, bin, ok, stderr};

/// Text a hostile writer or admin puts in entries: a colour, an OSC 8 link, a bell, a
/// C1 CSI, a right-to-left override and an isolate, a zero-width space and a BOM.
const HOSTILE: &str =
    "x\u{1b}[31mRED\u{1b}]8;;http://evil\u{7}link\u{9b}2J\u{202e}exe.txt\u{2066}i\u{200b}\u{feff}";

/// No escape byte, bell, C1 control, bidi control or invisible format character, and the
/// override shown escaped.
fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let raw: Vec<char> =
        text.chars().filter(|&c| c != '\n' && c != '\t' && ledger_query::terminal::is_unsafe(c)).collect();
    assert!(raw.is_empty(), "{what}: raw {raw:?} in output:\n{text}");
    assert!(text.contains("\\u{202e}"), "{what}: the override is not shown escaped:\n{text}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().expect("utf-8 path").to_string()
}

/// `ledgerctl ARGS` that must exit on its own within `limit` (else killed, and the test
/// fails: a hang is the defect).
fn ctl_within(socket: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(bin("ledgerctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerctl");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("ledgerctl {args:?} hung ({limit:?}); stderr: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn terminal_injection_is_escaped_in_every_human_readable_output() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = "bot\u{202e}gpj.exe";
    ok(&daemon.ctl(&["agents", "register", "hostile-bot", "--owner", "o@example.com", "--purpose", HOSTILE]));
    let policy = format!(
        "# {HOSTILE}\nrule r1: deny tool = \"{}\"\ndefault allow\n",
        HOSTILE.replace('\u{1b}', "\\u{1b}").replace('\u{7}', "\\u{7}").replace('\u{9b}', "\\u{9b}")
    );
    let file = write(dir.path(), "hostile.policy", &policy);
    let set =
        daemon.ctl(&["policy", "set", "hostile-bot", "--file", &file, "--author", "a", "--reason", "r"]);
    ok(&set);

    // A watcher started before the entries arrive.
    let mut watch = Command::new(bin("ledgerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("watch")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watch");
    let (tx, lines) = mpsc::channel::<Vec<u8>>();
    let watch_out = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(watch_out);
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 || tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut watched = Vec::new();
    for _ in 0..50 {
        ok(&daemon.ctl(&[
            "append",
            "--agent",
            agent,
            "--tool",
            HOSTILE,
            "--decision",
            "deny",
            "--rule",
            HOSTILE,
            "--reason",
            HOSTILE,
        ]));
        while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            watched.extend(line);
        }
        if String::from_utf8_lossy(&watched).contains("gpj") {
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(String::from_utf8_lossy(&watched).contains("gpj"), "watch showed no entry");
    assert_clean("watch", &watched);

    let outputs: Vec<(&str, Vec<&str>)> = vec![
        ("tail", vec!["tail", "-n", "5"]),
        ("agents list", vec!["agents", "list"]),
        ("agents show", vec!["agents", "show", "hostile-bot"]),
        ("policy show", vec!["policy", "show", "hostile-bot"]),
        ("policy check", vec!["policy", "check", "hostile-bot", "--tool", HOSTILE]),
        ("query table", vec!["query", "kind = decision | fields agent, tool, rule, reason"]),
        ("query count table", vec!["query", "| count by agent"]),
    ];
    for (what, args) in outputs {
        let out = daemon.ctl(&args);
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{what}: exit {:?} {}",
            out.status.code(),
            stderr(&out)
        );
        assert_clean(what, &out.stdout);
    }
    // Errors quoting hostile names: the daemon's words pass through the same rule.
    let out = daemon.ctl(&["agents", "show", agent]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_clean("an error naming the agent", &out.stderr);
    assert!(daemon.stop());
}

/// `python3 examples/python/client.py --query TEXT`: (exit code, stderr), or `None` where
/// Python's gRPC packages are missing outside CI.
fn python_query(socket: &Path, query: &str) -> Option<(Option<i32>, String)> {
    let ready = Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output();
    if !ready.is_ok_and(|o| o.status.success()) {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must have Python's grpc packages");
        eprintln!("skipped the Python client: python3 cannot import grpc and grpc_tools");
        return None;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(repo.join("examples/python/client.py"))
        .arg("--socket")
        .arg(socket)
        .arg("--query")
        .arg(query)
        .output()
        .expect("run python3");
    Some((out.status.code(), stderr(&out)))
}

#[test]
fn query_errors_are_capped_rendered_once_and_fit_grpc_trailers() {
    let daemon = Daemon::start();
    // ~500 characters with 20 unknown fields: over 16 KB of trailers before.
    let short: String =
        (0..20).map(|i| format!("agent_nme{i:02} = \"value\"")).collect::<Vec<_>>().join(" and ");
    assert!((400..700).contains(&short.len()), "{}", short.len());
    // ~56 KB with thousands of mistakes: a 463 MB message before.
    let long: String = (0..3200).map(|i| format!("agnt{i} = 1")).collect::<Vec<_>>().join(" or ");
    assert!((50_000..65_536).contains(&long.len()), "{}", long.len());
    let too_long = "agent = \"x\" or ".repeat(5000) + "agent = \"y\"";

    if let Some((code, err)) = python_query(&daemon.socket, &short) {
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("INVALID_ARGUMENT") && err.contains("Q101"), "{err}");
        assert!(!err.contains("RESOURCE_EXHAUSTED"), "{err}");
        assert!(err.contains("structured errors: Q101 at 1:1"), "{err}");
    }
    if let Some((code, err)) = python_query(&daemon.socket, &long) {
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("INVALID_ARGUMENT") && err.contains("unknown field"), "{err}");
        assert!(err.contains("Q111"), "the count of what was left out: {err}");
        assert!(err.len() < 8192, "{} bytes", err.len());
    }
    if let Some((code, err)) = python_query(&daemon.socket, &too_long) {
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("INVALID_ARGUMENT") && err.contains("query too long"), "{err}");
    }

    // The Rust client renders the structured errors against its own text.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = daemon.client().await;
        let err = client.query(&long, "").await.err().expect("refused").to_string();
        assert!(err.contains("error[Q101]") && err.contains("too many errors"), "{err}");
        assert!(err.len() < 16 * 1024, "{} bytes rendered", err.len());
        // Two heavy queries at once while a writer appends: all answered, the daemon lives.
        let mut a = daemon.client().await;
        let mut b = daemon.client().await;
        let mut w = daemon.client().await;
        let entry = ledger_proto::pb::NewEntry {
            kind: ledger_proto::pb::Kind::Decision as i32,
            agent: "writer".into(),
            tool: "t".into(),
            decision: ledger_proto::pb::Decision::Allow as i32,
            ..Default::default()
        };
        let (ra, rb, rw) = tokio::join!(a.query(&long, ""), b.query(&long, ""), w.append(entry));
        assert!(ra.is_err() && rb.is_err(), "both refused");
        assert!(rw.is_ok(), "{:?}", rw.err());
    });
    // ledgerctl checks locally first, with the same bounds.
    let out = daemon.ctl(&["query", &long]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("error[Q111]: too many errors") && err.len() < 16 * 1024, "{}", err.len());
    let out = daemon.ctl(&["query", &too_long]);
    assert!(stderr(&out).contains("query too long"), "{}", stderr(&out));
    assert!(daemon.stop());
}

#[test]
fn append_jsonl_reports_how_many_were_stored_and_the_last_seq_also_on_failure() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = r#"{"agent":"a","tool":"t","decision":"allow"}"#;
    // The daemon refuses a control character in an agent name: line 6 (blank lines count).
    let refused = r#"{"agent":"a\u0001b","tool":"t","decision":"allow"}"#;
    let file =
        write(dir.path(), "refused.jsonl", &format!("{good}\n\n{good}\n{good}\n\n{refused}\n{good}\n"));
    let before = daemon.ready_size();
    let out = daemon.ctl(&["append", "--jsonl", &file]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let last = before + 2;
    assert!(err.contains(&format!("appended 3 entries, last seq {last}")), "{err}");
    assert!(err.contains("line 6:") && err.contains("control character"), "{err}");
    assert!(!err.contains("message "), "{err}");

    // A line the client cannot parse: its line number, and what was stored before it.
    let file = write(dir.path(), "bad.jsonl", &format!("\n{good}\n\n{{\"agent\":\"a\",\"tool\":\n{good}\n"));
    let out = daemon.ctl(&["append", "--jsonl", &file]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("appended 1 entries, last seq {}", last + 1)), "{err}");
    assert!(err.contains("line 4:"), "{err}");

    // Success says the same.
    let file = write(dir.path(), "fine.jsonl", &format!("{good}\n\n{good}\n"));
    assert_eq!(
        ok(&daemon.ctl(&["append", "--jsonl", &file])).trim(),
        format!("appended 2 entries, last seq {}", last + 3)
    );

    // A line over the bound (65 MiB, no newline ever) is refused by number without being
    // held whole; a line that is not UTF-8 is named too. What came before is stored.
    let huge = format!("{good}\n{}", "x".repeat(65 << 20));
    let file = write(dir.path(), "huge.jsonl", &huge);
    let out = daemon.ctl(&["append", "--jsonl", &file]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("appended 1 entries, last seq {}", last + 4)), "{err}");
    assert!(err.contains("line 2: the line is 65 MiB long, over the 64 MiB"), "{err}");
    std::fs::write(
        dir.path().join("latin1.jsonl"),
        b"{\"agent\":\"caf\xe9\",\"tool\":\"t\",\"decision\":\"allow\"}\n",
    )
    .expect("write");
    let out = daemon.ctl(&["append", "--jsonl", dir.path().join("latin1.jsonl").to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 1: not UTF-8 text (byte 14)"), "{}", stderr(&out));
    assert!(daemon.stop());
}

#[test]
fn a_sigstopped_daemon_makes_every_call_time_out_verify_state_unreachable() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("trusted.state");
    let state = state.to_str().expect("utf-8");
    let key = daemon.data_dir.join("verifier.vkey");
    ok(&daemon.ctl(&["verify", "--state", state, "--key", key.to_str().expect("utf-8")]));
    daemon.pause();
    let limit = Duration::from_secs(60);
    let out = ctl_within(&daemon.socket, &["verify", "--state", state, "--timeout", "2s"], limit);
    assert_eq!(out.status.code(), Some(7), "UNREACHABLE: {}", stderr(&out));
    assert!(stderr(&out).contains("did not answer within 2s"), "{}", stderr(&out));
    // The default deadline, no flag.
    let out = ctl_within(&daemon.socket, &["status"], limit);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did not answer within 10s") && stderr(&out).contains("SIGSTOP"),
        "{}",
        stderr(&out)
    );
    // Streams: a watcher and a query learn it too.
    for args in [&["watch", "--timeout", "2s"][..], &["query", "agent = \"x\"", "--timeout", "2s"]] {
        let out = ctl_within(&daemon.socket, args, limit);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains("did not answer within 2s"), "{args:?}: {}", stderr(&out));
    }
    let out = ctl_within(&daemon.socket, &["status", "--timeout", "soon"], limit);
    assert!(stderr(&out).contains("--timeout \"soon\""), "{}", stderr(&out));
    daemon.resume();
    // A live daemon streaming a long result is not cut off: pings are answered.
    ok(&ctl_within(&daemon.socket, &["status", "--timeout", "2s"], limit));
    ok(&ctl_within(&daemon.socket, &["verify", "--state", state, "--timeout", "2s"], limit));
    assert!(daemon.stop());
}

#[test]
fn misleading_messages_name_the_real_problem() {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    for text in ["since 2026-03-15T25:00:00Z", "since 9999-12-31T00:00:00Z"] {
        let out = daemon.ctl(&["query", text]);
        let err = stderr(&out);
        assert!(err.contains("bad time") && !err.contains("duration"), "{text}: {err}");
    }
    let huge = "n".repeat(100 * 1024);
    for (flag, field) in [("--agent", "agent name"), ("--tool", "tool name")] {
        let mut args = vec!["append", "--agent", "a", "--tool", "t", "--decision", "allow"];
        let at = args.iter().position(|a| *a == flag).expect("flag") + 1;
        args[at] = &huge;
        let out = daemon.ctl(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2));
        assert!(err.contains(&format!("its {field} alone is 102400 bytes")), "{field}: {err}");
        assert!(!err.contains("reason or details"), "{err}");
    }
    // A policy saved with a byte-order mark: ledgerctl removes it.
    ok(&daemon.ctl(&["agents", "register", "bom-bot", "--owner", "o", "--purpose", "p"]));
    let file = write(dir.path(), "bom.policy", "\u{feff}rule r: deny tool = \"x\"\ndefault allow\n");
    ok(&daemon.ctl(&["policy", "set", "bom-bot", "--file", &file, "--author", "a", "--reason", "r"]));
    let shown = ok(&daemon.ctl(&["policy", "show", "bom-bot"]));
    assert!(shown.starts_with("rule r:"), "{shown:?}");
    // Another client sending it raw is told what the invisible character is.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut client = daemon.client().await;
        let request = ledger_proto::pb::SetPolicyRequest {
            agent: "bom-bot".into(),
            text: "\u{feff}default allow\n".into(),
            author: "a".into(),
            approver: String::new(),
            reason: "r".into(),
        };
        let status = client.admin().set_policy(request).await.expect_err("refused");
        assert!(status.message().contains("byte-order mark (U+FEFF)"), "{}", status.message());
    });
    let mut text = String::new();
    let _ = std::fs::File::open(&file).and_then(|mut f| f.read_to_string(&mut text));
    assert!(text.starts_with('\u{feff}'), "the file itself is left alone");
    assert!(daemon.stop());
}
