//! The MCP stdio proxy (`ledgerctl shim mcp`) against a real daemon and a small MCP server
//! (a Python script using only the standard library, written by the test): allowed calls
//! reach the server, denied ones are answered by the proxy and never reach it, `tools/list`
//! hides what the policy never allows, the ledger holds exactly the decisions with shim_seq
//! 1, 2, 3…, and EOF, a dying server and malformed JSON end or answer without hanging.
//!
//! Skips (with a printed reason) when `python3` is not installed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ledger_tests::{Daemon, bin, stderr, stdout};
use serde_json::{Value, json};

/// A newline-delimited JSON-RPC MCP server with two tools over real files. It logs every
/// `tools/call` it receives to `$SERVER_LOG`, so the test can see what reached it.
const SERVER: &str = r#"
import json, os, sys
log = open(os.environ["SERVER_LOG"], "a")
def reply(id, result=None, error=None):
    msg = {"jsonrpc": "2.0", "id": id}
    if error is not None:
        msg["error"] = error
    else:
        msg["result"] = result
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()
TOOLS = [
    {"name": "read_file", "description": "Read a file", "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "write_file", "description": "Write a file", "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"]}},
]
for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    method, id = msg.get("method"), msg.get("id")
    if id is None:
        continue
    if method == "initialize":
        reply(id, {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "tiny-fs", "version": "0.1"}})
    elif method == "tools/list":
        reply(id, {"tools": TOOLS})
    elif method == "tools/call":
        name, args = msg["params"]["name"], msg["params"].get("arguments", {})
        log.write(json.dumps([name, args]) + "\n"); log.flush()
        try:
            if name == "read_file":
                text = open(args["path"]).read()
            elif name == "write_file":
                open(args["path"], "w").write(args["content"]); text = "written"
            else:
                reply(id, error={"code": -32602, "message": "unknown tool " + name}); continue
            reply(id, {"content": [{"type": "text", "text": text}], "isError": False})
        except OSError as e:
            reply(id, {"content": [{"type": "text", "text": str(e)}], "isError": True})
    else:
        reply(id, error={"code": -32601, "message": "Method not found"})
"#;

fn have_python() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// A running proxy with its server, driven line by line.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    fn start(socket: &Path, agent: &str, server: &[&str], env: &[(&str, &Path)]) -> Proxy {
        let mut cmd = Command::new(bin("ledgerctl"));
        cmd.arg("--socket").arg(socket).args(["shim", "mcp", "--agent", agent, "--"]).args(server);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ledgerctl shim mcp");
        let stdin = child.stdin.take();
        let out: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proxy { child, stdin, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to the proxy");
        stdin.flush().expect("flush");
    }

    fn recv(&self) -> Value {
        let line = self.lines.recv_timeout(Duration::from_secs(20)).expect("an answer from the proxy");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    fn request(&mut self, msg: Value) -> Value {
        self.send(&msg.to_string());
        let answer = self.recv();
        assert_eq!(answer["id"], msg["id"], "{answer}");
        answer
    }

    /// Closes stdin and waits (bounded) for the exit code.
    fn finish(mut self) -> Option<i32> {
        drop(self.stdin.take());
        self.wait()
    }

    fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the proxy did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

fn text_of(answer: &Value) -> String {
    answer["result"]["content"][0]["text"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_proxy_decides_every_call_and_the_ledger_holds_exactly_those_decisions() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed; the test MCP server needs it");
        return;
    }
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("a.txt"), "hello from a.txt\n").expect("write");
    std::fs::write(tmp.path().join("secret.txt"), "top secret\n").expect("write");
    let server = tmp.path().join("server.py");
    std::fs::write(&server, SERVER).expect("write server");
    let log = tmp.path().join("server.log");

    ok(&daemon.ctl(&["agents", "register", "analyst", "--owner", "o", "--purpose", "p"]));
    let policy = format!(
        "rule no-write: deny tool = \"write_file\"\nrule read-data: allow tool = \"read_file\" and params.path ~ \"{}/**\"\ndefault deny\n",
        data.display()
    );
    let policy_file = tmp.path().join("analyst.policy");
    std::fs::write(&policy_file, policy).expect("write");
    ok(&daemon.ctl(&[
        "policy",
        "set",
        "analyst",
        "--file",
        policy_file.to_str().expect("utf-8"),
        "--author",
        "a",
        "--reason",
        "r",
    ]));

    let server_arg = server.to_str().expect("utf-8");
    let mut proxy =
        Proxy::start(&daemon.socket, "analyst", &["python3", server_arg], &[("SERVER_LOG", &log)]);
    let init = proxy.request(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "shim-test", "version": "1.2.3"}}}));
    assert_eq!(init["result"]["serverInfo"]["name"], "tiny-fs", "{init}");
    proxy.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let list = proxy.request(json!({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list"}));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["read_file"], "write_file is hidden: {list}");

    let a = data.join("a.txt");
    let read = proxy.request(call(2, "read_file", json!({"path": a})));
    assert_eq!(read["result"]["isError"], false, "{read}");
    assert_eq!(text_of(&read), "hello from a.txt\n");

    let target = data.join("new.txt");
    let write = proxy.request(call(3, "write_file", json!({"path": target, "content": "x"})));
    assert_eq!(write["result"]["isError"], true, "{write}");
    let text = text_of(&write);
    assert!(text.starts_with("denied by rule no-write (ledger seq "), "{text}");
    assert!(!target.exists(), "the server never saw the denied write");

    let secret = tmp.path().join("secret.txt");
    let outside = proxy.request(call(4, "read_file", json!({"path": secret})));
    assert_eq!(outside["result"]["isError"], true, "{outside}");
    assert!(text_of(&outside).starts_with("denied by rule default"), "{outside}");

    // Not JSON: a parse error, nothing forwarded, and the proxy carries on.
    proxy.send("this is not json");
    let parse = proxy.recv();
    assert_eq!(parse["error"]["code"], -32700, "{parse}");
    assert_eq!(parse["id"], Value::Null);

    // A request with _meta: recorded with the decision.
    let mut with_meta = call(5, "read_file", json!({"path": a}));
    with_meta["params"]["_meta"] = json!({"progressToken": "p-5"});
    let again = proxy.request(with_meta);
    assert_eq!(text_of(&again), "hello from a.txt\n", "{again}");

    assert_eq!(proxy.finish(), Some(0), "client EOF ends the proxy and the server");

    // Only the allowed calls reached the server.
    let reached = std::fs::read_to_string(&log).expect("server log");
    let reached: Vec<Value> = reached.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(reached, [json!(["read_file", {"path": a}]), json!(["read_file", {"path": a}])]);

    // The ledger holds exactly these decisions.
    let rows = ok(&daemon.ctl(&[
        "query",
        "kind = decision | fields agent, tool, decision, rule, policy_version, shim_id, shim_seq, action, details",
        "--format",
        "json",
    ]));
    let rows: Vec<Value> = rows.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let got: Vec<(String, String, String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["tool"].as_str().unwrap_or_default().to_string(),
                r["decision"].as_str().unwrap_or_default().to_string(),
                r["rule"].as_str().unwrap_or_default().to_string(),
                r["policy_version"].as_u64().unwrap_or_default(),
                r["shim_seq"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let want = [
        ("read_file", "allow", "read-data", 1, 1),
        ("write_file", "deny", "no-write", 1, 2),
        ("read_file", "deny", "default", 1, 3),
        ("read_file", "allow", "read-data", 1, 4),
    ];
    let want: Vec<(String, String, String, u64, u64)> =
        want.iter().map(|w| (w.0.into(), w.1.into(), w.2.into(), w.3, w.4)).collect();
    assert_eq!(got, want, "{rows:?}");
    let shim_id = rows[0]["shim_id"].as_str().expect("shim_id");
    assert_eq!(shim_id.len(), 32);
    for r in &rows {
        assert_eq!(r["agent"], "analyst");
        assert_eq!(r["action"], "tools/call");
        assert_eq!(r["shim_id"], shim_id, "one shim process, one id");
        let d: Value = serde_json::from_str(r["details"].as_str().expect("details")).expect("JSON");
        assert_eq!(d["client"], json!({"name": "shim-test", "version": "1.2.3"}), "{d}");
        assert_eq!(d["shim"], "mcp");
    }
    let d: Value = serde_json::from_str(rows[3]["details"].as_str().expect("details")).expect("JSON");
    assert_eq!(d["_meta"], json!({"progressToken": "p-5"}), "{d}");
    // The write's seq named in the refusal is the write's entry.
    let seq: u64 = text
        .trim_start_matches("denied by rule no-write (ledger seq ")
        .split(')')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("seq");
    let one = ok(&daemon.ctl(&["query", &format!("seq = {seq} | fields tool, rule"), "--format", "json"]));
    assert_eq!(
        serde_json::from_str::<Value>(one.trim()).expect("JSON"),
        json!({"tool": "write_file", "rule": "no-write"})
    );
}

#[test]
fn a_server_that_exits_ends_the_proxy_with_its_status() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut proxy =
        Proxy::start(&tmp.path().join("no.sock"), "a", &["python3", "-c", "import sys; sys.exit(3)"], &[]);
    // stdin stays open: the child's exit alone must end the proxy.
    assert_eq!(proxy.wait(), Some(3));
}

#[test]
fn without_a_daemon_every_call_is_refused_and_never_reaches_the_server() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = tmp.path().join("server.py");
    std::fs::write(&server, SERVER).expect("write server");
    let log = tmp.path().join("server.log");
    let mut proxy = Proxy::start(
        &tmp.path().join("no.sock"),
        "a",
        &["python3", server.to_str().expect("utf-8")],
        &[("SERVER_LOG", &log)],
    );
    let list = proxy.request(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    assert_eq!(list["result"]["tools"], json!([]), "no policy, no tools: {list}");
    let target = tmp.path().join("x.txt");
    let answer = proxy.request(call(2, "write_file", json!({"path": target, "content": "x"})));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert!(text_of(&answer).contains("fail closed"), "{answer}");
    assert!(text_of(&answer).contains("cannot reach ledgerd"), "{answer}");
    // A batch is refused whole.
    proxy.send(&json!([call(3, "write_file", json!({"path": target, "content": "x"}))]).to_string());
    assert_eq!(proxy.recv()["error"]["code"], -32600);
    assert_eq!(proxy.finish(), Some(0));
    assert!(!target.exists());
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "", "the server saw no call");
}

/// Why the real-software test cannot run here, if it cannot.
fn interop_missing(interop: &Path) -> Option<String> {
    if !have_python() {
        return Some("python3 is not installed".into());
    }
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("node is not installed".into());
    }
    if !interop.join("node_modules/@modelcontextprotocol/server-filesystem/dist/index.js").exists() {
        return Some(format!(
            "@modelcontextprotocol/server-filesystem is not installed (run `npm ci` in {})",
            interop.display()
        ));
    }
    if !Command::new("python3").args(["-c", "import mcp"]).output().is_ok_and(|o| o.status.success()) {
        return Some("the Python MCP SDK is not installed (`pip install mcp`)".into());
    }
    None
}

/// Issue 5, point 1: the npm `@modelcontextprotocol/server-filesystem` behind the proxy,
/// driven by the official Python MCP client SDK. `.ci/run` installs both.
#[test]
fn the_real_filesystem_server_behind_the_proxy_driven_by_the_python_sdk() {
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop");
    if let Some(why) = interop_missing(&interop) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    // The server resolves symlinks; give it (and the policy) the real path.
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let data = data.canonicalize().expect("canonical");
    std::fs::write(data.join("a.txt"), "hello from the filesystem server\n").expect("write");
    ok(&daemon.ctl(&["agents", "register", "fs-agent", "--owner", "o", "--purpose", "p"]));
    let policy = format!(
        "rule no-write: deny tool in [\"write_file\", \"edit_file\", \"create_directory\", \"move_file\"]\n\
         rule read: allow tool in [\"read_text_file\", \"read_file\", \"list_directory\", \"list_allowed_directories\"]\n    and (params.path ~ \"{}/**\" or not params.path ~ \"**\")\n\
         default deny\n",
        data.display()
    );
    let policy_file = tmp.path().join("fs.policy");
    std::fs::write(&policy_file, policy).expect("write");
    let policy_file = policy_file.to_str().expect("utf-8");
    ok(&daemon.ctl(&["policy", "set", "fs-agent", "--file", policy_file, "--author", "a", "--reason", "r"]));

    let socket = daemon.socket.canonicalize().expect("socket path");
    let out = Command::new("python3")
        .arg(interop.join("drive_filesystem.py"))
        .arg(bin("ledgerctl"))
        .arg(&socket)
        .arg("fs-agent")
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("run the Python MCP client");
    let text = ok(&out);
    let got: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        got["tools"],
        json!(["list_allowed_directories", "list_directory", "read_file", "read_text_file"]),
        "write tools (and everything the policy never allows) are hidden: {got}"
    );
    assert_eq!(got["read"], json!({"isError": false, "text": "hello from the filesystem server\n"}), "{got}");
    assert_eq!(got["write"]["isError"], true, "{got}");
    let refusal = got["write"]["text"].as_str().expect("text");
    assert!(refusal.starts_with("denied by rule no-write (ledger seq "), "{refusal}");
    assert!(!data.join("new.txt").exists(), "the write never reached the server");

    let rows = ok(&daemon.ctl(&[
        "query",
        "kind = decision | fields agent, tool, decision, rule, policy_version, shim_seq",
        "--format",
        "json",
    ]));
    let rows: Vec<Value> = rows.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(
        rows,
        [
            json!({"agent": "fs-agent", "tool": "read_text_file", "decision": "allow", "rule": "read", "policy_version": 1, "shim_seq": 1}),
            json!({"agent": "fs-agent", "tool": "write_file", "decision": "deny", "rule": "no-write", "policy_version": 1, "shim_seq": 2}),
        ]
    );
}

/// A decision that never reached the ledger leaves a gap in its shim's `shim_seq`, which the
/// query in docs/SHIMS.md finds; the proxy reconnects when the daemon is back.
#[test]
fn a_lost_decision_shows_as_a_gap_in_shim_seq() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let mut daemon = Daemon::start();
    let keep = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = tmp.path().join("server.py");
    std::fs::write(&server, SERVER).expect("write server");
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "f\n").expect("write");
    let policy = tmp.path().join("p.policy");
    std::fs::write(&policy, "rule r: allow tool = \"read_file\"\ndefault deny\n").expect("write");
    ok(&daemon.ctl(&["agents", "register", "gappy", "--owner", "o", "--purpose", "p"]));
    ok(&daemon.ctl(&[
        "policy",
        "set",
        "gappy",
        "--file",
        policy.to_str().expect("utf-8"),
        "--author",
        "a",
        "--reason",
        "r",
    ]));
    let socket = daemon.socket.canonicalize().expect("socket");
    let log = tmp.path().join("server.log");
    let mut proxy = Proxy::start(
        &socket,
        "gappy",
        &["python3", server.to_str().expect("utf-8")],
        &[("SERVER_LOG", &log)],
    );
    assert_eq!(proxy.request(call(1, "read_file", json!({"path": file})))["result"]["isError"], false);
    assert!(daemon.stop());
    let lost = proxy.request(call(2, "read_file", json!({"path": file})));
    assert_eq!(lost["result"]["isError"], true, "fail closed: {lost}");
    let daemon = Daemon::start_in(&data_dir).expect("restart");
    assert_eq!(proxy.request(call(3, "read_file", json!({"path": file})))["result"]["isError"], false);
    assert_eq!(proxy.finish(), Some(0));

    let out = ok(&daemon.ctl(&[
        "query",
        "kind = decision and shim_seq > 0 | stats count() as n, max(shim_seq) as hi by shim_id",
        "--format",
        "json",
    ]));
    let row: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((row["n"].as_u64(), row["hi"].as_u64()), (Some(2), Some(3)), "one decision is missing: {row}");
    drop(keep);
}
