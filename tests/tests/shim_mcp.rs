//! The MCP stdio proxy (`ledgerctl shim mcp`) against a real daemon and a small MCP server
//! (a Python script using only the standard library, written by the test): allowed calls
//! reach the server, denied ones are answered by the proxy and never reach it, `tools/list`
//! hides what the policy never allows, the ledger holds exactly the decisions with shim_seq
//! 1, 2, 3…, and EOF, a dying server and malformed JSON end or answer without hanging.
//!
//! Skips (with a printed reason) when `python3` is not installed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ledger_tests::{Daemon, bin, ok};
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

/// A running proxy with its server, driven line by line.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proxy {
    fn start(socket: &Path, agent: &str, server: &[&str], env: &[(&str, &Path)]) -> Proxy {
        Proxy::start_with(socket, agent, &[], server, env, None)
    }

    /// Like `start`, with extra shim flags, and the proxy's stderr written to `stderr_file`.
    fn start_with(
        socket: &Path,
        agent: &str,
        flags: &[&str],
        server: &[&str],
        env: &[(&str, &Path)],
        stderr_file: Option<&Path>,
    ) -> Proxy {
        let mut cmd = Command::new(bin("ledgerctl"));
        cmd.arg("--socket")
            .arg(socket)
            .args(["shim", "mcp", "--agent", agent])
            .args(flags)
            .arg("--")
            .args(server);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let stderr = match stderr_file {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the stderr file")),
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
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

    let policy = format!(
        "rule no-write: deny tool = \"write_file\"\nrule read-data: allow tool = \"read_file\" and params.path ~ \"{}/**\"\ndefault deny\n",
        data.display()
    );
    agent_with_policy(&daemon, tmp.path(), "analyst", &policy);

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
    let policy = format!(
        "rule no-write: deny tool in [\"write_file\", \"edit_file\", \"create_directory\", \"move_file\"]\n\
         rule read: allow tool in [\"read_text_file\", \"read_file\", \"list_directory\", \"list_allowed_directories\"]\n    and (params.path ~ \"{}/**\" or not params.path ~ \"**\")\n\
         default deny\n",
        data.display()
    );
    agent_with_policy(&daemon, tmp.path(), "fs-agent", &policy);

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

/// Registers `agent` with a policy that allows `read_file` and denies everything else.
/// A Python MCP server behind the proxy for agent `agent` (allowed to read `file`), with
/// `--heartbeat beat`; the server logs each call it sees to `log`, the proxy its stderr to
/// `errors`.
struct Fixture {
    tmp: tempfile::TempDir,
    file: PathBuf,
    log: PathBuf,
    errors: PathBuf,
    proxy: Proxy,
}

impl Fixture {
    fn start(socket: &Path, daemon: &Daemon, agent: &str, beat: &str) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let server = tmp.path().join("server.py");
        std::fs::write(&server, SERVER).expect("write server");
        let file = tmp.path().join("f.txt");
        std::fs::write(&file, "f\n").expect("write");
        reader_agent(daemon, tmp.path(), agent);
        let log = tmp.path().join("server.log");
        let errors = tmp.path().join("proxy.stderr");
        let proxy = Proxy::start_with(
            socket,
            agent,
            &["--heartbeat", beat],
            &["python3", server.to_str().expect("utf-8")],
            &[("SERVER_LOG", &log)],
            Some(&errors),
        );
        Fixture { tmp, file, log, errors, proxy }
    }
}

fn reader_agent(daemon: &Daemon, dir: &Path, agent: &str) {
    agent_with_policy(daemon, dir, agent, "rule r: allow tool = \"read_file\"\ndefault deny\n");
}

/// Registers `agent` and gives it `policy`.
fn agent_with_policy(daemon: &Daemon, dir: &Path, agent: &str, policy: &str) {
    let file = dir.join(format!("{agent}.policy"));
    std::fs::write(&file, policy).expect("write");
    ok(&daemon.ctl(&["agents", "register", agent, "--owner", "o", "--purpose", "p"]));
    let file = file.to_str().expect("utf-8");
    ok(&daemon.ctl(&["policy", "set", agent, "--file", file, "--author", "a", "--reason", "r"]));
}

/// The decisions and heartbeats in the ledger, in log order, as JSON rows (maybe none).
fn shim_entries(daemon: &Daemon) -> Vec<Value> {
    let out = daemon.ctl(&[
        "query",
        "kind in [decision, shim_heartbeat] | fields seq, kind, agent, agent_id, action, decision, shim_id, shim_seq, flags, details",
        "--format",
        "json",
    ]);
    // Exit 1: the query ran and found nothing.
    let out = if out.status.code() == Some(1) { String::new() } else { ok(&out) };
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn heartbeats(rows: &[Value]) -> Vec<&Value> {
    rows.iter().filter(|r| r["kind"] == "shim_heartbeat").collect()
}

/// Polls until `f` holds for the ledger's rows (heartbeats come on their own clock).
fn wait_for(daemon: &Daemon, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = shim_entries(daemon);
        if f(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {rows:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 5: the proxy's heartbeats carry its shim_id and, in shim_seq, the number of its
/// LAST decision (not a new number): every heartbeat equals the count of that shim's
/// decisions before it in the log. A clean exit adds a final one (`action = exit`).
#[test]
fn heartbeats_carry_the_number_of_the_last_decision_and_one_is_sent_at_exit() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start();
    let Fixture { tmp: _tmp, file, mut proxy, .. } =
        Fixture::start(&daemon.socket, &daemon, "beater", "200ms");
    // Before any decision: heartbeats with no shim_seq (0, shown as missing).
    let rows = wait_for(&daemon, "a heartbeat before any decision", |rows| !heartbeats(rows).is_empty());
    assert_eq!(heartbeats(&rows)[0]["shim_seq"], Value::Null, "{rows:#?}");

    assert_eq!(proxy.request(call(1, "read_file", json!({"path": file})))["result"]["isError"], false);
    assert_eq!(
        proxy.request(call(2, "write_file", json!({"path": file, "content": "x"})))["result"]["isError"],
        true
    );
    wait_for(&daemon, "a heartbeat after the two decisions", |rows| {
        heartbeats(rows).iter().any(|h| h["shim_seq"] == 2)
    });
    assert_eq!(proxy.finish(), Some(0));

    let rows = shim_entries(&daemon);
    let decisions: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(decisions.len(), 2, "{rows:#?}");
    let shim_id = decisions[0]["shim_id"].as_str().expect("shim_id");
    let beats = heartbeats(&rows);
    assert!(beats.len() >= 3, "before, after, at exit: {rows:#?}");
    let mut decided = 0u64;
    for r in &rows {
        assert_eq!(r["shim_id"], shim_id, "one proxy, one shim_id: {r}");
        assert_eq!(r["agent"], "beater");
        assert!(r["agent_id"].as_str().is_some_and(|id| !id.is_empty()), "identity resolved: {r}");
        assert!(!r["flags"].to_string().contains("unknown_agent"), "{r}");
        if r["kind"] == "decision" {
            decided += 1;
            continue;
        }
        let carried = r["shim_seq"].as_u64().unwrap_or(0);
        assert_eq!(carried, decided, "a heartbeat carries the number of the last decision: {r}");
        assert_eq!(r["decision"], Value::Null, "a heartbeat decides nothing: {r}");
        let d: Value = serde_json::from_str(r["details"].as_str().expect("details")).expect("JSON");
        assert_eq!(d["shim"], "mcp");
    }
    let last = beats.last().expect("a heartbeat");
    assert_eq!((last["action"].as_str(), last["shim_seq"].as_u64()), (Some("exit"), Some(2)), "{rows:#?}");
    assert_eq!(beats.iter().filter(|b| b["action"] == "exit").count(), 1, "{rows:#?}");
    assert!(beats[..beats.len() - 1].iter().all(|b| b["action"] == "heartbeat"), "{rows:#?}");
}

/// Issue 5: with the daemon stopped, heartbeats fail (said on stderr) but the proxy keeps
/// running, and a tools/call in that state is refused (fail closed). When the daemon is
/// back, the heartbeats (and the exit heartbeat) carry the number of the lost decision, so
/// the gap shows although no later decision follows it.
#[test]
fn a_failed_heartbeat_does_not_stop_the_proxy_and_reveals_the_lost_last_decision() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let mut daemon = Daemon::start();
    let keep = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    let socket = daemon.socket.canonicalize().expect("socket");
    let Fixture { tmp: _tmp, file, log, errors, mut proxy } =
        Fixture::start(&socket, &daemon, "steady", "200ms");
    assert_eq!(proxy.request(call(1, "read_file", json!({"path": file})))["result"]["isError"], false);
    assert!(daemon.stop());

    // Heartbeats fail while the daemon is down; the proxy goes on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&errors).unwrap_or_default().contains("heartbeat not recorded") {
        assert!(Instant::now() < deadline, "no failed heartbeat reported on stderr");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(proxy.child.try_wait(), Ok(None)), "a failed heartbeat does not stop the proxy");
    let lost = proxy.request(call(2, "read_file", json!({"path": file})));
    assert_eq!(lost["result"]["isError"], true, "fail closed: {lost}");
    assert!(text_of(&lost).contains("fail closed"), "{lost}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default().lines().count(),
        1,
        "the server saw only call 1"
    );

    let daemon = Daemon::start_in(&data_dir).expect("restart");
    // No decision follows the lost one, yet the next heartbeat says there were two.
    wait_for(&daemon, "a heartbeat naming the lost decision", |rows| {
        heartbeats(rows).iter().any(|h| h["shim_seq"] == 2)
    });
    assert_eq!(proxy.finish(), Some(0));
    let rows = shim_entries(&daemon);
    let last = heartbeats(&rows).into_iter().last().expect("heartbeats");
    assert_eq!((last["action"].as_str(), last["shim_seq"].as_u64()), (Some("exit"), Some(2)), "{rows:#?}");

    // The query in docs/SHIMS.md: recorded decisions against the last number sent.
    let out = ok(&daemon.ctl(&[
        "query",
        "kind in [decision, shim_heartbeat] | stats count(decision) as recorded, max(shim_seq) as sent by shim_id",
        "--format",
        "json",
    ]));
    let row: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((row["recorded"].as_u64(), row["sent"].as_u64()), (Some(1), Some(2)), "{row}");
    // And the scorer flags the first heartbeat that names a decision it never saw, so one
    // filter finds the gap (docs/SHIMS.md).
    let out = ok(&daemon.ctl(&[
        "query",
        "kind = shim_heartbeat and flags has \"shim_gap\" | fields shim_seq, flags",
        "--format",
        "json",
    ]));
    let gaps: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(gaps.len(), 1, "flagged once: {out}");
    assert_eq!(gaps[0]["shim_seq"], 2, "{out}");
    drop(keep);
}

/// `--heartbeat off`: no periodic heartbeats, but the one at exit is still recorded.
#[test]
fn heartbeat_off_leaves_only_the_exit_heartbeat() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start();
    let Fixture { tmp: _tmp, file, mut proxy, .. } = Fixture::start(&daemon.socket, &daemon, "quiet", "off");
    assert_eq!(proxy.request(call(1, "read_file", json!({"path": file})))["result"]["isError"], false);
    std::thread::sleep(Duration::from_millis(600));
    assert!(heartbeats(&shim_entries(&daemon)).is_empty(), "no periodic heartbeat");
    assert_eq!(proxy.finish(), Some(0));
    let rows = shim_entries(&daemon);
    let beats = heartbeats(&rows);
    assert_eq!(beats.len(), 1, "{rows:#?}");
    assert_eq!((beats[0]["action"].as_str(), beats[0]["shim_seq"].as_u64()), (Some("exit"), Some(1)));
}

/// SIGTERM (how MCP clients stop a server that does not exit on EOF) ends the proxy and its
/// server, with an exit heartbeat recorded first.
#[test]
fn sigterm_ends_the_proxy_with_an_exit_heartbeat() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start();
    let Fixture { tmp: _tmp, file, mut proxy, .. } =
        Fixture::start(&daemon.socket, &daemon, "stopped", "off");
    assert_eq!(proxy.request(call(1, "read_file", json!({"path": file})))["result"]["isError"], false);
    let status = Command::new("kill").arg("-TERM").arg(proxy.child.id().to_string()).status().expect("kill");
    assert!(status.success());
    assert_eq!(proxy.wait(), Some(2), "the server was killed, so there is no status of its own");
    let rows = shim_entries(&daemon);
    let beats = heartbeats(&rows);
    assert_eq!(beats.len(), 1, "{rows:#?}");
    assert_eq!((beats[0]["action"].as_str(), beats[0]["shim_seq"].as_u64()), (Some("exit"), Some(1)));
}

/// An MCP server whose `huge` tool answers with one line longer than the proxy relays,
/// and whose `echo` tool answers normally; it logs the calls it gets to `$SERVER_LOG`.
const HUGE_SERVER: &str = r#"
import json, os, sys
log = open(os.environ["SERVER_LOG"], "a")
for line in sys.stdin:
    msg = json.loads(line)
    name = msg.get("params", {}).get("name")
    log.write(json.dumps(name) + "\n"); log.flush()
    if name == "huge":
        text = "x" * (65 << 20)
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": text}]}}) + "\n")
    else:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": [{"type": "text", "text": "echo"}], "isError": False}}) + "\n")
    sys.stdout.flush()
"#;

#[test]
fn a_message_over_the_bound_from_either_side_is_dropped_with_an_error_and_the_proxy_goes_on() {
    if !have_python() {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = tmp.path().join("huge.py");
    std::fs::write(&server, HUGE_SERVER).expect("write server");
    let log = tmp.path().join("server.log");
    let stderr = tmp.path().join("proxy.err");
    agent_with_policy(&daemon, tmp.path(), "analyst", "default allow\n");
    let server_arg = server.to_str().expect("utf-8");
    let mut proxy = Proxy::start_with(
        &daemon.socket,
        "analyst",
        &[],
        &["python3", server_arg],
        &[("SERVER_LOG", &log)],
        Some(&stderr),
    );

    // The client's 65 MiB call: never forwarded (it could not be decided), answered with an
    // invalid-request error (null id: the id was past the bound), and the proxy carries on.
    let big = call(1, "echo", json!({"blob": "y".repeat(65 << 20)}));
    proxy.send(&big.to_string());
    let refused = proxy.recv();
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert_eq!(refused["id"], Value::Null);
    let why = refused["error"]["message"].as_str().expect("message");
    assert!(why.contains("more than the 64 MiB"), "{why}");

    // Not UTF-8: a parse error, not the end of the session.
    let stdin = proxy.stdin.as_mut().expect("stdin open");
    stdin.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"x\xff\"}\n").expect("write");
    stdin.flush().expect("flush");
    let parse = proxy.recv();
    assert_eq!(parse["error"]["code"], -32700, "{parse}");

    // The server's 65 MiB answer: dropped, replaced by an internal error, and the next
    // call still goes through both ways.
    proxy.send(&call(2, "huge", json!({})).to_string());
    let dropped = proxy.recv();
    assert_eq!(dropped["error"]["code"], -32603, "{dropped}");
    assert!(
        dropped["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("the MCP server sent a message of 65")
    );
    let echo = proxy.request(call(3, "echo", json!({})));
    assert_eq!(text_of(&echo), "echo", "{echo}");
    assert_eq!(proxy.finish(), Some(0));

    let reached = std::fs::read_to_string(&log).expect("server log");
    assert_eq!(
        reached.lines().collect::<Vec<_>>(),
        ["\"huge\"", "\"echo\""],
        "the over-long call never reached the server"
    );
    let err = std::fs::read_to_string(&stderr).expect("stderr");
    assert!(err.contains("the client sent a message of 65"), "{err}");
    assert!(err.contains("the MCP server sent a message of 65"), "{err}");
}
