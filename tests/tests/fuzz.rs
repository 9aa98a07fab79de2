//! Fuzzing, on stable Rust, of every parser of outside input (issue 12): the query and
//! policy languages, the JSON-lines intake of `append --jsonl`, the Claude Code hook input
//! and MCP messages (through the real shims and a real daemon), checkpoint notes, leaf
//! decoding, evidence bundle files and ledgerd's TOML config. Each target runs for a fixed
//! budget (`LEDGER_FUZZ_SECS`, default `ledger_tests::fuzz::DEFAULT_SECS`) from seeds taken
//! from the project's fixtures and test inputs; every input must come back without a panic,
//! in bounded time and memory (`ledger_tests::fuzz`), and errors carry a position where
//! the format has one. docs/FUZZING.md says how to run them longer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_proto::note::{Checkpoint, NoteSigner, NoteVerifier};
use ledger_proto::pb;
use ledger_query::policy::Policy;
use ledger_tests::fuzz::{self, seeds};
use ledger_tests::{Daemon, ok};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// The `query: ` lines of the query crate's case files.
fn query_seeds() -> Vec<String> {
    let mut out = vec![
        r#"during 2026-Q1 agent = "build-bot" and decision = deny | sort time desc"#.to_string(),
        r#"last 7d tool ~ "shell.*" and params.cmd ~ /rm -rf/ | count by agent, hour(time)"#.into(),
        r#"since 2026-03-01T00:00:00Z until 2026-03-02 | stats count(), max(severity) by agent | top 3 agent"#.into(),
        r#"flags has "burst" and not (decision = allow or severity < 5) | fields seq, agent as a | limit 10"#.into(),
    ];
    let dir = repo().join("query/tests/cases");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
        out.extend(body.lines().filter_map(|l| l.strip_prefix("query: ")).map(str::to_string));
    }
    out
}

const QUERY_DICT: &[&str] = &[
    " and ",
    " or ",
    "not ",
    "(",
    ")",
    " | ",
    "count by ",
    "stats ",
    "sort ",
    "limit ",
    "fields ",
    "top ",
    "where ",
    "agent",
    "tool",
    "params.",
    "details.",
    "time",
    "\"",
    "/",
    "~",
    "!=",
    ">=",
    " in [",
    "]",
    "has ",
    "last ",
    "since ",
    "until ",
    "during ",
    "2026-03-15T25:00:00Z",
    "9999-12-31",
    "99999999999999999999",
    "7d ago",
    "hour(",
    "\\",
    "\n",
    "agnet",
    "*",
    "**",
];

/// Positions within the text, lines and columns from 1; rendering bounded.
fn check_query_errors(text: &str, errors: &ledger_query::QueryErrors) {
    assert!(!errors.errors().is_empty());
    assert!(errors.errors().len() <= ledger_query::MAX_ERRORS + 1, "{} errors", errors.errors().len());
    for e in errors.errors() {
        assert!(e.line >= 1 && e.col >= 1, "{e:?}");
        assert!(e.start <= e.end && e.end <= text.len(), "{e:?} in {} bytes", text.len());
        assert!(text.is_char_boundary(e.start) && text.is_char_boundary(e.end), "{e:?}");
    }
    let rendered = errors.render(text);
    assert!(rendered.len() < 64 * 1024, "{} bytes rendered", rendered.len());
    let json = errors.to_json_string_within(text, 3000);
    assert!(json.len() < 8 * 1024, "{} bytes of JSON", json.len());
    assert!(ledger_query::QueryErrors::from_json_str(&json).is_ok(), "{json}");
}

#[test]
fn fuzz_query_language() {
    let seeds = seeds(query_seeds());
    fuzz::run("query", &seeds, QUERY_DICT, |input| {
        let text = text(input);
        match ledger_query::parse(&text) {
            Ok(q) => {
                let ctx = ledger_query::Context::utc(jiff::Timestamp::UNIX_EPOCH);
                let _ = q.time_range(&ctx);
                let _ = q.pipeline(&ctx).finish();
            }
            Err(e) => check_query_errors(&text, &e),
        }
        if let Err(e) = ledger_query::parse_condition(&text) {
            check_query_errors(&text, &e);
        }
    });
}

#[test]
fn fuzz_policy_language() {
    let mut items = vec![
        "# billing-bot\nrule read-invoices: allow tool = \"db.query\" and params.sql ~ /(?i)^select /\nrule no-shell: deny tool ~ \"shell.*\"\ndefault deny\n".to_string(),
        "rule files: allow tool = \"fs.read_file\"\n    and params.path ~ \"/srv/invoices/**\"\ndefault allow\n".into(),
        "rule a: deny tool in [\"a\", \"b\"] or not params.x = 3\ndefault deny\n".into(),
        "\u{feff}default allow\n".into(),
    ];
    for entry in std::fs::read_dir(repo().join("query/tests/policy_cases")).into_iter().flatten().flatten() {
        let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // The case file's documents (a header line, the document, `--`, the expected output).
        items.extend(
            body.split("\n== ")
                .filter_map(|c| c.split_once('\n'))
                .map(|(_, rest)| rest.split("\n--\n").next().unwrap_or("").to_string()),
        );
    }
    let dict = [
        "rule ",
        "allow ",
        "deny ",
        "default ",
        ": ",
        "\n",
        "\n    ",
        "# ",
        "tool",
        " = ",
        "\"",
        "/",
        "time",
        "hour(time)",
        "~",
    ];
    fuzz::run("policy", &seeds(items), &dict, |input| {
        let text = text(input);
        if let Err(errors) = Policy::parse(&text) {
            assert!(!errors.errors().is_empty());
            for e in errors.errors() {
                // Line 0 only for an error about the whole document (its size).
                assert!(e.start <= e.end && e.end <= text.len(), "{e:?}");
                assert!(e.line >= 1 || (e.line == 0 && e.start == 0), "{e:?}");
            }
            let rendered = errors.render(&text);
            assert!(rendered.len() < 256 * 1024, "{} bytes rendered", rendered.len());
            assert!(errors.to_json_string_within(&text, 3000).len() < 8 * 1024);
        }
    });
}

#[test]
fn fuzz_jsonl_intake() {
    let items = [
        r#"{"agent":"a","tool":"t","decision":"allow"}"#,
        r#"{"agent":"billing-bot","tool":"db.query","decision":"deny","params":{"sql":"select 1"},"rule":"r","policy_version":3,"reason":"x","session":"s","action":"q"}"#,
        r#"{"agent":"a","tool":"t","decision":"allow","params":"{\"path\":\"/etc\"}"}"#,
    ];
    let dict = ["\"", "{", "}", ":", ",", "null", "\"params\":", "\\u0000", "\\ud800", "1e999", "[", "]"];
    fuzz::run("jsonl", &seeds(items), &dict, |input| {
        let line = text(input);
        match ledger_client::jsonl::parse_line(&line) {
            Ok(entry) => assert!(entry.kind == pb::Kind::Decision as i32),
            Err(ledger_client::jsonl::LineError::Json { column, .. }) => {
                // serde_json counts columns in bytes.
                assert!(column <= line.len() + 1, "column {column} of {} bytes", line.len());
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}

/// A daemon with the agent `coder` registered under a small policy, for the shims.
fn shim_daemon() -> (Daemon, tempfile::TempDir) {
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().expect("tempdir");
    ok(&daemon.ctl(&["agents", "register", "coder", "--owner", "o", "--purpose", "fuzz"]));
    let policy = dir.path().join("coder.policy");
    std::fs::write(&policy, "rule no-shell: deny tool ~ \"Bash*\"\ndefault allow\n").expect("write");
    let path = policy.to_str().expect("utf-8");
    ok(&daemon.ctl(&["policy", "set", "coder", "--file", path, "--author", "a", "--reason", "fuzz"]));
    (daemon, dir)
}

fn shim_options(daemon: &Daemon) -> ledger_shims::ShimOptions {
    ledger_shims::ShimOptions {
        socket: daemon.socket.clone(),
        agent: "coder".into(),
        token: String::new(),
        fail_open: false,
    }
}

#[test]
fn fuzz_claude_code_hook_input() {
    let mut items: Vec<String> = vec![
        r#"{"hook_event_name":"PreToolUse","session_id":"s","tool_name":"Read","tool_input":{"file_path":"/etc/hosts"},"tool_use_id":"t1"}"#.into(),
        r#"{"hook_event_name":"PostToolUse","session_id":"s","tool_name":"Read","tool_input":{},"tool_use_id":"t1","tool_response":{"ok":true}}"#.into(),
    ];
    let fixtures = repo().join("../shared/fixtures/claude-code");
    for entry in std::fs::read_dir(&fixtures).into_iter().flatten().flatten() {
        items.extend(std::fs::read_to_string(entry.path()).ok());
    }
    let (daemon, _dir) = shim_daemon();
    let opts = shim_options(&daemon);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dict =
        ["\"PreToolUse\"", "\"PostToolUse\"", "\"tool_name\":", "\"Bash\"", "{", "}", "null", "\"\\u0000\""];
    fuzz::run("claude-hook", &seeds(items), &dict, |input| {
        let input = text(input);
        match rt.block_on(ledger_shims::claude::hook(opts.clone(), &input)) {
            Ok(answer) => {
                if !answer.is_empty() {
                    let v: serde_json::Value = serde_json::from_str(&answer).expect("the answer is JSON");
                    assert!(v["hookSpecificOutput"]["permissionDecision"].is_string(), "{answer}");
                }
            }
            Err(e) => {
                let e = e.to_string();
                // Not JSON (or not a hook object): serde's position is in the message.
                if serde_json::from_str::<serde_json::Value>(&input).is_err() {
                    assert!(e.contains(" line ") && e.contains(" column "), "{e}");
                }
            }
        }
    });
    assert!(daemon.stop());
}

#[test]
fn fuzz_mcp_messages() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (daemon, _dir) = shim_daemon();
    let opts = shim_options(&daemon);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The proxy in front of `cat`: every forwarded line comes back as the server's answer,
    // so both directions are parsed. A sentinel after each input shows the proxy lives.
    let (client_end, proxy_end) = tokio::io::duplex(1 << 20);
    let (proxy_in, proxy_out) = tokio::io::split(proxy_end);
    let proxy = rt.spawn(async move {
        let server = ["cat".to_string()];
        ledger_shims::mcp::proxy(opts, Duration::ZERO, &server, proxy_in, proxy_out).await
    });
    let (reader, mut writer) = tokio::io::split(client_end);
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let items = [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","clientInfo":{"name":"fuzz","version":"1"}}}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/hosts"}}}"#,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"Bash","arguments":{"cmd":"rm -rf /"},"_meta":{"x":1}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"a"},{"name":"Bash"}]}}"#,
        r#"[{"jsonrpc":"2.0","id":6,"method":"ping"}]"#,
    ];
    let dict = [
        "\"tools/call\"",
        "\"tools/list\"",
        "\"id\":",
        "null",
        "\"params\":",
        "\"name\":",
        "{",
        "}",
        "[",
        "]",
    ];
    let mut n = 0u64;
    fuzz::run("mcp", &seeds(items), &dict, |input| {
        n += 1;
        let sentinel = format!("sentinel-{n}-{:x}", 0x5eed_u64.wrapping_mul(n));
        let mut bytes = text(input).into_bytes();
        bytes
            .extend(format!("\n{{\"jsonrpc\":\"2.0\",\"id\":\"{sentinel}\",\"method\":\"ping\"}}\n").bytes());
        rt.block_on(async {
            writer.write_all(&bytes).await.expect("the proxy reads");
            loop {
                let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                    .await
                    .expect("the proxy answers within 30s")
                    .expect("read")
                    .expect("the proxy is still running");
                let _: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if line.contains(&sentinel) {
                    break;
                }
            }
        });
    });
    rt.block_on(async {
        let _ = writer.shutdown().await;
    });
    drop(writer);
    let _ = rt.block_on(proxy);
    assert!(daemon.stop());
}

#[test]
fn fuzz_checkpoint_notes_and_keys() {
    let signer = NoteSigner::generate("fuzz.example/ledger").expect("signer");
    let verifier = signer.verifier();
    let cp = Checkpoint {
        origin: "fuzz.example/ledger".into(),
        size: 42,
        root: [7; 32],
        extensions: vec!["time 2026-03-15T09:30:00Z".into()],
    };
    let note = signer.sign_checkpoint(&cp).expect("sign");
    let manifest = ledger_proto::manifest::body(
        "fuzz.example/ledger",
        &[ledger_proto::manifest::ManifestFile { path: "events.csv".into(), blake3: "ab".repeat(32) }],
    )
    .unwrap_or_default();
    let items = vec![note.clone(), cp.body(), verifier.to_vkey_string(), manifest];
    let dict = ["\n", "— ", "\u{2014} ", "+", "=", "time ", "ledger", "\n\n"];
    fuzz::run("notes", &seeds(items), &dict, |input| {
        let text = text(input);
        match verifier.verify_checkpoint(&text) {
            Ok(got) => assert!(text == note, "only the signed note verifies: {got:?}"),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let _ = Checkpoint::parse_body(&text);
        let _ = NoteVerifier::parse(&text);
        let _ = ledger_proto::manifest::parse(&text);
        let _ = ledger_proto::rotation::Rotation::verify(&verifier, &text);
    });
}

fn entry(i: u64) -> pb::Entry {
    pb::Entry {
        seq: i,
        time_unix_nanos: 1_770_000_000_000_000_000 + i as i64,
        kind: pb::Kind::Decision as i32,
        agent: format!("agent-{i}"),
        tool: "db.query".into(),
        params: r#"{"sql":"select 1"}"#.into(),
        decision: pb::Decision::Allow as i32,
        flags: vec!["burst".into()],
        details: r#"{"a":[1,2]}"#.into(),
        ..Default::default()
    }
}

#[test]
fn fuzz_leaf_decoding() {
    let items: Vec<Vec<u8>> = (0..4).map(|i| ledger_proto::leaf::leaf_bytes(&entry(i))).collect();
    fuzz::run("leaf", &items, &[], |input| {
        if let Ok(e) = ledger_proto::leaf::decode_canonical(input) {
            // Canonical: what decodes re-encodes to exactly the same bytes.
            assert_eq!(ledger_proto::leaf::leaf_bytes(&e), input);
        }
        // The bundle's framing of leaves (leaves.bin) over the same bytes.
        let mut reader = ledger_client::evidence::LeafReader::new(input);
        for _ in 0..10_000 {
            match reader.next_leaf() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    });
}

#[test]
fn fuzz_evidence_bundle_files() {
    use ledger_client::evidence::{EVENTS, LEAVES, MANIFEST, PROOF};
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let from = jiff::Timestamp::now().to_string();
    for i in 0..6 {
        let reason = format!("reason {i}, \"quoted\"");
        ok(&daemon.ctl(&[
            "append",
            "--agent",
            "a",
            "--tool",
            "t",
            "--decision",
            "deny",
            "--reason",
            &reason,
        ]));
    }
    let to = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    let bundle = tmp.path().join("bundle");
    ok(&daemon.ctl(&["evidence", "--from", &from, "--to", &to, "--out", bundle.to_str().expect("utf-8")]));
    let key = daemon.data_dir.join("verifier.vkey");
    let files = [MANIFEST, PROOF, LEAVES, EVENTS];
    let originals: Vec<Vec<u8>> =
        files.iter().map(|f| std::fs::read(bundle.join(f)).expect("bundle file")).collect();
    ledger_client::evidence::verify::verify_bundle(&bundle, Some(&key)).expect("the bundle verifies");
    // An input is a file's index (its first byte) and that file's new content.
    let items: Vec<Vec<u8>> =
        originals.iter().enumerate().map(|(i, body)| [vec![i as u8], body.clone()].concat()).collect();
    fuzz::run("bundle", &items, &["\n", ",", "\"", "0", "ff", "{", "}"], |input| {
        let Some((&which, body)) = input.split_first() else { return };
        let i = usize::from(which) % files.len();
        let path: &Path = &bundle.join(files[i]);
        std::fs::write(path, body).expect("write");
        let result = ledger_client::evidence::verify::verify_bundle(&bundle, Some(&key));
        std::fs::write(path, &originals[i]).expect("restore");
        match result {
            Ok(_) => assert_eq!(body, originals[i].as_slice(), "a changed {} verified", files[i]),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
    assert!(daemon.stop());
}

#[test]
fn fuzz_config_files() {
    let example = std::fs::read_to_string(repo().join("deploy/ledgerd.toml.example")).unwrap_or_default();
    let items = vec![
        example,
        "[limits]\nmax_connections = 64\nmax_params_bytes = 4096\n".to_string(),
        "[[publish]]\ndir = \"/tmp/x\"\n[alerts]\nmin_severity = 8\n".into(),
        "[roles]\nauditor = [\"root\"]\n".into(),
    ];
    let dict = [
        "[",
        "]",
        "=",
        "\"",
        "\n",
        "[[publish]]",
        "[roles]",
        "[limits]",
        "1h",
        "-1",
        "9999999999999999999999",
    ];
    let path = Path::new("fuzz.toml");
    fuzz::run("config", &seeds(items), &dict, |input| {
        let text = text(input);
        if let Err(e) = ledgerd::config::Config::parse(&text, path) {
            let message = e.to_string();
            // A TOML syntax error says where it is.
            if toml::from_str::<toml::Table>(&text).is_err() {
                assert!(message.contains("line"), "{message}");
            }
        }
    });
}
