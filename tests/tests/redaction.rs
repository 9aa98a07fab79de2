//! Redaction against a real daemon: secrets sent in params through `ledgerctl append` and
//! through the client library never reach the stored entries, a query, an export or the
//! files on disk; the same secret gives the same marker; the entries are flagged; a value
//! over the limit is cut and keeps its whole hash; the key file is private.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use ledger_proto::pb;
use ledger_tests::{Daemon, ok};
use serde_json::Value;

const PASSWORD: &str = "hunter2-correct-horse";
const BEARER: &str = "tok-ABCDEF1234567890xyz";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const PEM_BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
/// The bearer token in the Claude Code fixture.
const FIXTURE_BEARER: &str = "sk_live_51H8xExampleNotARealKey0000";

const SECRETS: &[&str] = &[PASSWORD, BEARER, AWS_ID, AWS_SECRET, PEM_BODY, FIXTURE_BEARER];

/// `tool_input` of the recorded Claude Code PreToolUse call with secrets in its params
/// (`shared/fixtures/claude-code/pre-secret-param.json`, beside the repository).
fn fixture_tool_input() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/claude-code/pre-secret-param.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<Value>(&text).expect("fixture is JSON")["tool_input"].clone(),
        Err(e) => {
            // The same content, for a checkout without the shared fixtures beside it.
            eprintln!("{}: {e}; using the inline copy of its tool_input", path.display());
            serde_json::json!({
                "url": "https://api.example.invalid/v1/charges",
                "headers": { "Authorization": format!("Bearer {FIXTURE_BEARER}") },
                "api_key": AWS_ID,
            })
        }
    }
}

fn new_entry(tool: &str, params: &str) -> pb::NewEntry {
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: "redaction-bot".into(),
        tool: tool.into(),
        decision: pb::Decision::Allow as i32,
        params: params.into(),
        ..Default::default()
    }
}

fn markers(text: &str) -> Vec<String> {
    text.match_indices("[redacted:").map(|(i, _)| text[i..i + "[redacted:]".len() + 16].to_string()).collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for item in std::fs::read_dir(dir).expect("read dir") {
        let path = item.expect("dir entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_params_are_never_stored() {
    let mut daemon = Daemon::start();
    let key_mode =
        std::fs::metadata(daemon.data_dir.join("redaction.key")).expect("key file").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // Through ledgerctl append.
    let fixture = fixture_tool_input().to_string();
    let via_ctl = [
        ("db.login", serde_json::json!({ "user": "bob", "password": PASSWORD }).to_string()),
        (
            "http.request",
            serde_json::json!({ "request": { "url": "https://x.invalid", "headers": {
                "Authorization": format!("Bearer {BEARER}"), "Accept": "*/*" } } })
            .to_string(),
        ),
        (
            "Bash",
            serde_json::json!({ "command": format!(
                "AWS_ACCESS_KEY_ID={AWS_ID} AWS_SECRET_ACCESS_KEY={AWS_SECRET} aws s3 ls s3://bucket"
            ) })
            .to_string(),
        ),
        ("mcp__http__request", fixture.clone()),
    ];
    let mut seqs = Vec::new();
    for (tool, params) in &via_ctl {
        let out = ok(&daemon.ctl(&[
            "append",
            "--agent",
            "redaction-bot",
            "--tool",
            tool,
            "--decision",
            "allow",
            "--params",
            params,
        ]));
        seqs.push(out.trim().parse::<u64>().expect("seq"));
    }

    // Through the client library.
    let mut client = daemon.client().await;
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{PEM_BODY}\n-----END PRIVATE KEY-----\n");
    let big = serde_json::json!({ "path": "/tmp/big.txt", "content": "x".repeat(100 * 1024) }).to_string();
    let via_client = [
        ("Write", serde_json::json!({ "file_path": "/home/dev/.ssh/id", "content": pem }).to_string()),
        ("Write", big.clone()),
        (
            "Bash",
            serde_json::json!({ "command": format!("mysql --password={PASSWORD} -h db"), "passwd": PASSWORD })
                .to_string(),
        ),
    ];
    for (tool, params) in &via_client {
        let ack = client.append(new_entry(tool, params)).await.expect("append");
        seqs.push(ack.seq);
    }

    let mut stream = client.entries(0, 0, false).await.expect("entries");
    let mut stored = std::collections::BTreeMap::new();
    while let Some(item) = stream.next().await {
        let entry = item.expect("entry").entry.expect("entry body");
        stored.insert(entry.seq, entry);
    }
    let get = |i: usize| &stored[&seqs[i]];
    for entry in stored.values() {
        let text = format!("{entry:?}");
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} stored in {text}");
        }
        if !entry.params.is_empty() {
            serde_json::from_str::<Value>(&entry.params).expect("stored params are JSON");
        }
    }
    for (i, &seq) in seqs.iter().enumerate() {
        let flags = &stored[&seq].flags;
        assert!(flags.iter().any(|f| f == "params_redacted") == (i != 5), "entry {i}: {flags:?}");
        assert!(flags.iter().any(|f| f == "params_truncated") == (i == 5), "entry {i}: {flags:?}");
    }

    // Whole values under secret keys; only the credential inside a longer string.
    let login: Value = serde_json::from_str(&get(0).params).expect("json");
    assert_eq!(login["user"], "bob");
    let password_marker = login["password"].as_str().expect("marker").to_string();
    assert_eq!(markers(&password_marker), std::slice::from_ref(&password_marker));
    let http: Value = serde_json::from_str(&get(1).params).expect("json");
    assert_eq!(http["request"]["headers"]["Accept"], "*/*");
    assert_eq!(markers(http["request"]["headers"]["Authorization"].as_str().expect("s")).len(), 1);
    let bash: Value = serde_json::from_str(&get(2).params).expect("json");
    let command = bash["command"].as_str().expect("command");
    assert!(
        command.starts_with("AWS_ACCESS_KEY_ID=[redacted:") && command.ends_with(" aws s3 ls s3://bucket")
    );
    assert_eq!(markers(command).len(), 2, "{command}");
    let from_fixture: Value = serde_json::from_str(&get(3).params).expect("json");
    assert_eq!(from_fixture["url"], "https://api.example.invalid/v1/charges");
    assert_eq!(markers(&get(3).params).len(), 2, "{}", get(3).params);
    let write: Value = serde_json::from_str(&get(4).params).expect("json");
    assert_eq!(write["file_path"], "/home/dev/.ssh/id");
    assert!(write["content"].as_str().is_some_and(|c| c.starts_with("[redacted:") && c.ends_with("]\n")));

    // The same secret, sent twice by two paths and in two forms, has one marker.
    let again: Value = serde_json::from_str(&get(6).params).expect("json");
    assert_eq!(again["passwd"].as_str(), Some(password_marker.as_str()));
    assert_eq!(again["command"].as_str(), Some(format!("mysql --password={password_marker} -h db").as_str()));
    // So does the AWS key id in the shell command and under the fixture's api_key.
    assert_eq!(from_fixture["api_key"].as_str(), Some(markers(command)[0].as_str()));

    // The cut value keeps the whole value's hash and size.
    let cut: Value = serde_json::from_str(&get(5).params).expect("json");
    assert!(get(5).params.len() <= 16 * 1024);
    assert_eq!(cut["_truncated"], true);
    assert_eq!(cut["_original_bytes"], big.len());
    assert_eq!(cut["_blake3"], blake3::hash(big.as_bytes()).to_hex().as_str());
    assert!(cut["prefix"].as_str().is_some_and(|p| big.starts_with(p) && p.len() > 15_000));

    // Queries and exports show the same redacted text.
    let json = ok(&daemon.ctl(&["query", "agent = \"redaction-bot\"", "--format", "json"]));
    let export = ok(&daemon.ctl(&["export"]));
    for secret in SECRETS {
        assert!(!json.contains(secret) && !export.contains(secret), "{secret}");
    }
    assert_eq!(json.lines().count(), 7);
    assert!(json.contains(&password_marker) && export.contains(&password_marker));
    let cut_rows = ok(&daemon.ctl(&["query", "flags has params_truncated", "--format", "json"]));
    assert_eq!(cut_rows.lines().count(), 1, "{cut_rows}");

    // Nor is any secret anywhere in the data dir once the daemon is stopped.
    let _keep = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop());
    let mut files = Vec::new();
    files_under(&data_dir, &mut files);
    assert!(files.len() > 3, "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        for secret in SECRETS {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {}",
                file.display()
            );
        }
    }
}

/// Realistic tool outputs with secrets in them, and the secret bytes each holds.
fn tool_outputs(agent_token: &str) -> Vec<(&'static str, String, Vec<String>)> {
    let aws_session = "FwoGZXIvYXdzEJr//////////wEaDNKSESSIONTOKENEXAMPLE0123456789";
    let db_password = "Sup3r-S3cret-DbPw";
    let redis_password = "r3disPassw0rd77";
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let ssh_body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW";
    let ghp = "ghp_R2d2C3poSecretToken0123456789abcdefAB";
    let slack = "xoxb-2048-4096-SlackBotSecretValue";
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXNlY3JldA";
    let mssql = "MssqlPassw0rd!x";
    let mongo = "M0ngoPassw0rd99";
    let git = "gitRemotePassw0rd";
    vec![
        (
            "~/.aws/credentials",
            format!(
                "[default]\naws_access_key_id = {AWS_ID}\naws_secret_access_key = {AWS_SECRET}\naws_session_token = {aws_session}\nregion = eu-west-1\n"
            ),
            vec![AWS_ID.into(), AWS_SECRET.into(), aws_session.into()],
        ),
        (
            ".env",
            format!(
                "# app\nDATABASE_URL=postgres://app:{db_password}@db.internal:5432/prod\nREDIS_URL=redis://:{redis_password}@cache:6379/0\nSTRIPE_SECRET_KEY={stripe}\nexport GITHUB_TOKEN={ghp}\nDEBUG=false\n"
            ),
            vec![db_password.into(), redis_password.into(), stripe.into(), ghp.into()],
        ),
        (
            "id_ed25519",
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{ssh_body}\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
            ),
            vec![ssh_body.into()],
        ),
        (
            ".claude/settings.json",
            serde_json::json!({ "env": { "LEDGER_AGENT": "coder", "LEDGER_AGENT_TOKEN": agent_token } })
                .to_string(),
            vec![agent_token.into()],
        ),
        (
            "tokens.log",
            format!(
                "slack: {slack}\nauth header Authorization: Bearer {jwt}\nlogin token is {agent_token} ok\n"
            ),
            vec![slack.into(), jwt.into(), agent_token.into()],
        ),
        (
            "appsettings.ini",
            format!(
                "[db]\nconn = Server=tcp:db,1433;Database=x;User Id=sa;Password={mssql};\nmongo = mongodb+srv://admin:{mongo}@cluster0.example.net/x\norigin = https://bob:{git}@git.example.com/r.git\n"
            ),
            vec![mssql.into(), mongo.into(), git.into()],
        ),
    ]
}

/// Issue 12: the Claude Code hook's PostToolUse sent the whole `tool_response` in an
/// outcome's details, which were never redacted. Every output here goes through the hook
/// (as `Read` and `Bash` responses) and through the client (details with an output and
/// with secrets elsewhere in them); no secret byte is in any file under the data dir, a
/// query, an export or an evidence bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_the_immutable_log_through_details() {
    let mut daemon = Daemon::start();
    let reg =
        ok(&daemon.ctl(&["agents", "register", "coder", "--owner", "dev@example.com", "--purpose", "t"]));
    let token = reg.lines().find_map(|l| l.strip_prefix("token")).map(str::trim).expect("token").to_string();
    assert!(token.starts_with("lgt_"), "{reg}");
    let outputs = tool_outputs(&token);
    let secrets: Vec<String> = outputs.iter().flat_map(|(_, _, s)| s.clone()).collect();

    let mut client = daemon.client().await;
    for (i, (file, text, _)) in outputs.iter().enumerate() {
        // Through the hook, as Claude Code runs it: a Read and a Bash `cat`.
        let read = serde_json::json!({
            "session_id": "s-1", "hook_event_name": "PostToolUse", "tool_name": "Read",
            "tool_use_id": format!("toolu_read_{i}"), "cwd": "/home/dev",
            "tool_input": { "file_path": format!("/home/dev/{file}") },
            "tool_response": { "type": "text", "file": { "filePath": format!("/home/dev/{file}"), "content": text, "numLines": text.lines().count() } },
        });
        let bash = serde_json::json!({
            "session_id": "s-1", "hook_event_name": "PostToolUse", "tool_name": "Bash",
            "tool_use_id": format!("toolu_bash_{i}"),
            "tool_input": { "command": format!("cat ~/{file}") },
            "tool_response": { "stdout": text, "stderr": "", "interrupted": false, "isImage": false },
        });
        for input in [read, bash] {
            let out = daemon.ctl_stdin(
                &["shim", "claude-code", "--agent", "coder", "--token", &token],
                Some(input.to_string().as_bytes()),
            );
            assert_eq!(ok(&out).trim(), "", "PostToolUse prints nothing");
        }
        // Through the client: an outcome with the output, and secrets in other details.
        let details = serde_json::json!({
            "output": text,
            "note": format!("read {file}"),
            "context": { "files": [{ "name": file, "text": text }] },
        });
        let entry = pb::NewEntry {
            kind: pb::Kind::Outcome as i32,
            agent: "coder".into(),
            tool: "fs.read".into(),
            params: serde_json::json!({ "path": file }).to_string(),
            details: details.to_string(),
            ..Default::default()
        };
        client.append(entry).await.expect("append an outcome");
    }
    // A decision's details too, with an output under another key and the same secrets
    // elsewhere.
    let env = &outputs[1].1;
    let details = serde_json::json!({ "stdout": env, "exit_code": 0, "env_dump": env }).to_string();
    let mut decision = new_entry("Bash", r#"{"command":"env"}"#);
    decision.agent = "coder".into();
    decision.details = details;
    client.append(decision).await.expect("append a decision");

    let check = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret} is in the {what}:\n{text}");
        }
    };
    let rows = ok(&daemon.ctl(&["query", "kind = outcome", "--format", "json"]));
    assert_eq!(rows.lines().count(), 3 * outputs.len(), "{rows}");
    check("query", &rows);
    check("query", &ok(&daemon.ctl(&["query", "agent = \"coder\"", "--format", "json"])));
    check("export", &ok(&daemon.ctl(&["export"])));
    // What is kept: how the call ended, the output's size and its keyed hash.
    let bash_rows = ok(&daemon.ctl(&[
        "query",
        "kind = outcome and tool = \"Bash\" | fields details",
        "--format",
        "json",
    ]));
    for line in bash_rows.lines() {
        let row: Value = serde_json::from_str(line).expect("row");
        let d: Value = serde_json::from_str(row["details"].as_str().expect("details")).expect("json");
        let kept = if d.get("tool_response").is_some() { &d["tool_response"] } else { &d["stdout"] };
        assert!(kept["output_bytes"].as_u64().is_some_and(|n| n > 10), "{d}");
        assert_eq!(kept["output_keyed_blake3"].as_str().map(str::len), Some(64), "{d}");
    }
    let flagged = ok(&daemon.ctl(&["query", "flags has details_redacted | count", "--format", "json"]));
    assert!(!flagged.contains("\"count\":0"), "the client's other details were redacted: {flagged}");

    let tmp = tempfile::tempdir().expect("tempdir");
    let bundle = tmp.path().join("bundle");
    let bundle_str = bundle.to_str().expect("utf-8");
    ok(&daemon.ctl(&["evidence", "--from", "2000-01-01", "--to", "2100-01-01", "--out", bundle_str]));
    let mut files = Vec::new();
    files_under(&bundle, &mut files);
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        check(&file.display().to_string(), &String::from_utf8_lossy(&std::fs::read(file).expect("read")));
    }

    let _keep = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop());
    let mut files = Vec::new();
    files_under(&data_dir, &mut files);
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {}",
                file.display()
            );
        }
    }
}
