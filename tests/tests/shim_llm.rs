//! The LLM gateway (`ledgerctl shim llm`) end to end: a real daemon, the gateway binary, a
//! scripted upstream that replays recorded API responses and logs what reaches it
//! (tests/interop/llm_upstream.py), and the official `anthropic` and `openai` Python SDKs
//! (and the OpenAI Agents SDK and pydantic-ai) pointed at the gateway by base URL and API
//! key only (tests/interop/llm_client.py).
//!
//! Skips (with a printed reason) when python3 or the SDKs are not installed (`.ci/run`
//! installs them).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ledger_tests::{Daemon, bin, ok};
use serde_json::{Value, json};

const POLICY: &str = "rule no-p2: deny tool = \"rollDie\" and params.player = \"player2\"
rule no-b10: deny tool = \"calculator\" and params.b = 10
rule no-paris: deny tool = \"get_weather\" and params.city = \"Paris\"
rule tools: allow tool in [\"json\", \"rollDie\", \"weather\", \"get_weather\", \"calculator\", \"readNoteTree\", \"parallel\"]
default deny
";

const ANTHROPIC_KEY: &str = "sk-ant-real-key-only-the-gateway-holds";
const OPENAI_KEY: &str = "sk-openai-real-key-only-the-gateway-holds";

fn interop() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

fn have_sdks() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import anthropic, openai, agents"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIP: python3 with the anthropic, openai and openai-agents packages is not installed (.ci/run installs them)"
        );
    }
    ok
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd`, reads its first stdout line, returns the process and that line.
fn start(mut cmd: Command) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("first line");
    assert!(line.starts_with("ready"), "no ready line: {line:?}");
    (Proc(child), line.trim().to_string())
}

/// The daemon, an agent with the test policy, the upstream and the gateway.
struct Env {
    daemon: Option<Daemon>,
    socket: PathBuf,
    token: String,
    log: PathBuf,
    upstream_url: String,
    gateway: String,
    _upstream: Proc,
    gateway_proc: Option<Proc>,
    tmp: tempfile::TempDir,
}

impl Env {
    fn new(extra: &[&str]) -> Env {
        let daemon = Daemon::start();
        let tmp = tempfile::tempdir().expect("tempdir");
        let out =
            ok(&daemon.ctl(&["agents", "register", "bot", "--owner", "o", "--purpose", "llm gateway tests"]));
        let token =
            out.lines().find_map(|l| l.strip_prefix("token")).map(str::trim).expect("token").to_string();
        let policy = tmp.path().join("bot.policy");
        std::fs::write(&policy, POLICY).expect("write policy");
        ok(&daemon.ctl(&[
            "policy",
            "set",
            "bot",
            "--file",
            policy.to_str().expect("utf-8"),
            "--author",
            "t",
            "--reason",
            "tests",
        ]));
        let log = tmp.path().join("upstream.log");
        let mut up = Command::new("python3");
        up.arg(interop().join("llm_upstream.py")).arg(&log);
        let (upstream, ready) = start(up);
        let port = ready.split_whitespace().nth(1).expect("port");
        let upstream_url = format!("http://127.0.0.1:{port}");
        let mut env = Env {
            socket: daemon.socket.clone(),
            daemon: Some(daemon),
            token,
            log,
            upstream_url,
            gateway: String::new(),
            _upstream: upstream,
            gateway_proc: None,
            tmp,
        };
        env.start_gateway(extra);
        env
    }

    fn start_gateway(&mut self, extra: &[&str]) {
        let mut gw = Command::new(bin("ledgerctl"));
        gw.arg("--socket")
            .arg(&self.socket)
            .args(["shim", "llm", "--listen", "127.0.0.1:0", "--upstream-anthropic"])
            .arg(&self.upstream_url)
            .arg("--upstream-openai")
            .arg(&self.upstream_url)
            .args(extra)
            .env("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
            .env("OPENAI_API_KEY", OPENAI_KEY)
            .env_remove("CREDENTIALS_DIRECTORY");
        let (proc_, ready) = start(gw);
        self.gateway = ready.strip_prefix("ready listen=").expect("listen").to_string();
        self.gateway_proc = Some(proc_);
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// Starts the SDK driver on `cases`, through the gateway (`direct`: to the upstream).
    fn spawn_cases(&self, cases: &[Value], direct: bool) -> Child {
        let base = if direct { self.upstream_url.clone() } else { format!("http://{}", self.gateway) };
        let mut child = Command::new("python3")
            .arg(interop().join("llm_client.py"))
            .args(["cases", &base, &format!("{base}/v1")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn llm_client.py");
        let input = serde_json::to_vec(cases).expect("json");
        child.stdin.take().expect("stdin").write_all(&input).expect("write cases");
        child
    }

    /// Runs SDK cases through the gateway (`direct`: straight to the upstream).
    fn cases(&self, cases: &[Value], direct: bool) -> Vec<Value> {
        let out = self.spawn_cases(cases, direct).wait_with_output().expect("llm_client.py");
        assert!(out.status.success(), "llm_client.py failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("result JSON"))
            .collect()
    }

    /// What reached the upstream, one object per request.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log JSON"))
            .collect()
    }

    /// `ledgerctl query Q --format json`, one object per row (exit 1: no rows).
    fn query(&self, q: &str) -> Vec<Value> {
        let out = self.daemon().ctl(&["query", q, "--format", "json"]);
        if out.status.code() == Some(1) && out.stdout.is_empty() {
            return Vec::new();
        }
        let rows = ok(&out);
        rows.lines().map(|l| serde_json::from_str(l).expect("row JSON")).collect()
    }
}

fn case(api: &str, scenario: &str, stream: bool, key: &str) -> Value {
    json!({"name": format!("{scenario}{}", if stream { " (stream)" } else { "" }), "api": api, "scenario": scenario, "stream": stream, "key": key})
}

fn texts(r: &Value) -> String {
    r["texts"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")
}

fn call_names(r: &Value) -> Vec<String> {
    r["calls"].as_array().into_iter().flatten().filter_map(|c| c[1].as_str().map(String::from)).collect()
}

/// Asserts `got == want`, showing only the first difference (the values are large).
fn same(what: &str, got: &Value, want: &Value) {
    if got == want {
        return;
    }
    let short = |v: &Value| v.to_string().chars().take(1500).collect::<String>();
    if let (Some(g), Some(w)) = (got.as_array(), want.as_array()) {
        let i = g.iter().zip(w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
        panic!(
            "{what} differ at element {i} of {} (want {}):\n got: {}\nwant: {}",
            g.len(),
            w.len(),
            g.get(i).map_or_else(String::new, short),
            w.get(i).map_or_else(String::new, short)
        );
    }
    panic!("{what} differ:\n got: {}\nwant: {}", short(got), short(want));
}

fn ended(api: &str) -> &'static str {
    match api {
        "anthropic" => "end_turn",
        "chat" => "stop",
        _ => "completed",
    }
}

#[test]
fn llm_gateway_sdks_see_allowed_calls_unchanged_and_denied_calls_as_text() {
    if !have_sdks() {
        return;
    }
    let env = Env::new(&[]);
    let apis = [("anthropic", "a"), ("chat", "c"), ("responses", "r")];
    let mut cases = Vec::new();
    for (api, p) in apis {
        for s in ["text", "tool", "denied", "mixed"] {
            for stream in [false, true] {
                cases.push(case(api, &format!("{p}-{s}"), stream, &env.token));
            }
        }
    }
    for s in ["a-prefilled-allowed", "a-prefilled-denied"] {
        cases.push(case("anthropic", s, true, &env.token));
    }
    let via = env.cases(&cases, false);
    let direct_cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c["key"] = "direct".into();
            c
        })
        .collect();
    let direct = env.cases(&direct_cases, true);
    assert_eq!(via.len(), cases.len());

    for ((c, g), d) in cases.iter().zip(&via).zip(&direct) {
        let name = c["name"].as_str().unwrap_or_default();
        let api = c["api"].as_str().unwrap_or_default();
        let scenario = c["scenario"].as_str().unwrap_or_default();
        let stream = c["stream"].as_bool().unwrap_or(false);
        assert_eq!(g["ok"], true, "{name}: the SDK raised through the gateway: {g}");
        if scenario.ends_with("text") || scenario.ends_with("tool") || scenario.ends_with("allowed") {
            // Allowed: exactly what the upstream sent.
            assert_eq!(d["ok"], true, "{name}: the SDK raised on the recording itself: {d}");
            if stream {
                same(&format!("{name}: the stream's events"), &g["events"], &d["events"]);
                same(&format!("{name}: the accumulated result"), &g["final"], &d["final"]);
            } else {
                assert!(
                    g["raw"] == d["raw"],
                    "{name}: the body is not byte for byte the upstream's:\n{}\n{}",
                    g["raw"],
                    d["raw"]
                );
            }
            if scenario.ends_with("tool") || scenario.ends_with("allowed") {
                assert!(!call_names(g).is_empty(), "{name}: the allowed call is missing: {g}");
            }
        } else if scenario.ends_with("denied") {
            assert!(call_names(g).is_empty(), "{name}: a denied call reached the SDK: {g}");
            let t = texts(g);
            assert!(t.contains("ledgerd denied ") && t.contains(", policy v 1, ledger seq "), "{name}: {t}");
            if scenario != "a-prefilled-denied" || api != "anthropic" {
                assert_eq!(g["stop"], ended(api), "{name}: the stop reason is not the end of a turn");
            } else {
                assert_eq!(g["stop"], "end_turn", "{name}");
            }
        } else {
            // Mixed: the allowed call is there, unchanged; the denied one is text.
            let allowed: Vec<&Value> = d["calls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|call| g["calls"].as_array().is_some_and(|gc| gc.contains(call)))
                .collect();
            assert!(!allowed.is_empty(), "{name}: no allowed call came through: {g}");
            assert!(call_names(g).len() < call_names(d).len(), "{name}: every call came through: {g}");
            assert!(texts(g).contains("ledgerd denied "), "{name}: no denial text: {g}");
        }
    }

    // Which calls were decided how, with which rule.
    let want = [
        ("a-denied", "website_update", "deny", "default"),
        ("a-mixed", "rollDie", "deny", "no-p2"),
        ("c-denied", "get_weather", "deny", "no-paris"),
        ("c-denied", "read_file", "deny", "default"),
        ("r-denied", "calculator", "deny", "no-b10"),
        ("a-tool", "json", "allow", "tools"),
        ("c-tool", "weather", "allow", "tools"),
    ];
    let rows = env.query("kind = decision | fields tool, decision, rule, shim_id, shim_seq, details");
    for (what, tool, decision, rule) in want {
        assert!(
            rows.iter().any(|r| r["tool"] == tool && r["decision"] == decision && r["rule"] == rule),
            "{what}: no {decision} decision of {tool} by rule {rule} in {rows:?}"
        );
    }
    for r in &rows {
        let details: Value = serde_json::from_str(r["details"].as_str().unwrap_or("{}")).unwrap_or_default();
        assert_eq!(details["shim"], "llm-gateway", "{r}");
        assert!(details["tool_call_id"].as_str().is_some_and(|i| !i.is_empty()), "{r}");
    }
    // Every decision's text names its seq, and that seq holds it.
    let g = &via[cases.iter().position(|c| c["name"] == "a-denied").expect("a-denied")];
    let seq: u64 = texts(g)
        .split("ledger seq ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .expect("seq in the text");
    let one = env.query(&format!("seq = {seq} | fields tool, decision"));
    assert_eq!(one, [json!({"tool": "website_update", "decision": "deny"})]);

    // The upstream got the real key on every request and never the agent's token.
    let received = env.received();
    assert!(received.len() >= cases.len() * 2, "{}", received.len());
    for r in &received {
        let headers = &r["headers"];
        let text = headers.to_string();
        assert!(!text.contains(&env.token), "the agent token reached the upstream: {text}");
        if headers["x-api-key"] == "direct" || headers["authorization"] == "Bearer direct" {
            continue; // the direct runs
        }
        let path = r["path"].as_str().unwrap_or_default();
        if path.starts_with("/v1/messages") {
            assert_eq!(headers["x-api-key"], ANTHROPIC_KEY, "{path}");
            assert!(headers["anthropic-version"].is_string(), "anthropic-version forwarded: {text}");
        } else {
            assert_eq!(headers["authorization"], format!("Bearer {OPENAI_KEY}"), "{path}");
        }
        assert_eq!(headers["accept-encoding"], "identity", "{text}");
    }
}

#[test]
fn llm_gateway_unknown_or_missing_token_gets_the_apis_own_401() {
    if !have_sdks() {
        return;
    }
    let env = Env::new(&[]);
    let mut cases = Vec::new();
    for (api, s) in [("anthropic", "a-tool"), ("chat", "c-tool"), ("responses", "r-tool")] {
        cases.push(case(
            api,
            s,
            false,
            "lgt_0000000000000000000000000000000000000000000000000000000000000000",
        ));
        cases.push(case(api, s, true, ANTHROPIC_KEY));
    }
    let via = env.cases(&cases, false);
    for r in &via {
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error_type"], "AuthenticationError", "{r}");
        assert_eq!(r["status"], 401, "{r}");
    }
    assert!(env.received().is_empty(), "a refused request reached the upstream");
    // No token at all, by hand.
    let (status, body) = http(&env.gateway, "POST", "/v1/messages", &[], b"{}");
    assert_eq!(status, 401);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    let (status, body) = http(&env.gateway, "POST", "/v1/chat/completions", &[], b"{}");
    assert_eq!(status, 401);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"]["code"], "invalid_api_key");
}

/// One HTTP/1.1 request by hand; returns the status and body (read to EOF).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    let split = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
    let head = &text[..split];
    let mut rest = out[split..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        rest = dechunk(&rest);
    }
    (status, rest)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
    out
}

#[test]
fn llm_gateway_bad_input_gets_api_shaped_errors_and_the_gateway_keeps_serving() {
    if !have_sdks() {
        return;
    }
    let env = Env::new(&["--max-body-bytes", "4096"]);
    let auth = [("x-api-key", env.token.as_str()), ("anthropic-version", "2023-06-01")];
    let bearer = format!("Bearer {}", env.token);
    let oauth = [("authorization", bearer.as_str())];

    // Not JSON: the API's 400.
    let (status, body) = http(&env.gateway, "POST", "/v1/messages", &auth, b"this is not json");
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("not JSON")), "{v}");
    let (status, body) = http(&env.gateway, "POST", "/v1/chat/completions", &oauth, b"[1,2]");
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // Oversized: 413, saying the limit.
    let big = format!("{{\"model\":\"a-text\",\"pad\":\"{}\"}}", "x".repeat(10_000));
    let (status, body) = http(&env.gateway, "POST", "/v1/messages", &auth, big.as_bytes());
    assert_eq!(status, 413);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "request_too_large");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("4096")), "{v}");
    assert!(env.received().is_empty(), "bad input reached the upstream");

    // An upstream error passes through unchanged.
    let (status, body) = http(
        &env.gateway,
        "POST",
        "/v1/messages",
        &auth,
        br#"{"model":"overloaded","max_tokens":1,"messages":[]}"#,
    );
    assert_eq!(status, 529);
    let v: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["error"]["type"], "overloaded_error");

    // The upstream closes in the middle of a tool call: the SDK gets an error, the call is
    // neither released nor decided.
    let before = env.query("kind = decision | fields seq").len();
    let cut = [
        case("anthropic", "cut:a-tool", true, &env.token),
        case("chat", "cut:c-tool", true, &env.token),
        case("responses", "cut:r-tool", true, &env.token),
    ];
    for r in env.cases(&cut, false) {
        assert_eq!(r["ok"], false, "a cut stream must not look complete: {r}");
        assert!(call_names(&r).is_empty(), "{r}");
        let e = format!("{} {}", r["error"], r["body"]);
        assert!(e.contains("in the middle of a call"), "{r}");
    }
    assert_eq!(env.query("kind = decision | fields seq").len(), before, "a cut call was recorded");

    // A hostile upstream. JSON that Python reads and serde_json refuses (NaN): not passed
    // on, whole or streamed, and nothing decided. The calls' member sent twice, the first
    // empty: the gateway decides the last, which is the one the SDK reads.
    let before = env.query("kind = decision | fields seq").len();
    let mut nan = Vec::new();
    for (api, p) in [("anthropic", "a"), ("chat", "c"), ("responses", "r")] {
        for stream in [false, true] {
            nan.push(case(api, &format!("nan:{p}-tool"), stream, &env.token));
        }
    }
    for (c, r) in nan.iter().zip(env.cases(&nan, false)) {
        assert_eq!(r["ok"], false, "{}: an unreadable body reached the SDK: {r}", c["name"]);
        assert!(call_names(&r).is_empty(), "{r}");
        let e = format!("{} {}", r["error"], r["body"]);
        assert!(
            e.contains("not JSON the gateway can read")
                || e.contains("not a JSON object the gateway can read"),
            "{r}"
        );
    }
    assert_eq!(env.query("kind = decision | fields seq").len(), before, "an unreadable call was decided");
    let dup = [
        case("anthropic", "dup:a-denied", false, &env.token),
        case("chat", "dup:c-denied", false, &env.token),
        case("responses", "dup:r-denied", false, &env.token),
    ];
    for (c, r) in dup.iter().zip(env.cases(&dup, false)) {
        assert_eq!(r["ok"], true, "{}: {r}", c["name"]);
        assert!(
            call_names(&r).is_empty(),
            "{}: a denied call reached the SDK behind a repeated member: {r}",
            c["name"]
        );
        assert!(texts(&r).contains("ledgerd denied "), "{}: {r}", c["name"]);
    }

    // A client that goes away mid-stream: the gateway carries on with the next one.
    {
        let mut s = TcpStream::connect(&env.gateway).expect("connect");
        let body = br#"{"model":"pause:a-tool","max_tokens":10,"stream":true,"messages":[]}"#;
        let req = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\ncontent-length: {}\r\n\r\n",
            env.token,
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        s.write_all(body).expect("write");
        let paused = PathBuf::from(format!("{}.paused", env.log.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !paused.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(paused.exists(), "the upstream never reached the tool call");
        drop(s);
        std::fs::write(format!("{}.go", env.log.display()), b"").expect("go");
    }
    let again = env.cases(&[case("anthropic", "a-tool", true, &env.token)], false);
    assert_eq!(again[0]["ok"], true, "{}", again[0]);
    assert_eq!(call_names(&again[0]), ["json"]);
}

#[test]
fn llm_gateway_daemon_stopped_mid_stream_denies_the_held_call() {
    if !have_sdks() {
        return;
    }
    let mut env = Env::new(&[]);
    // Warm the gateway (identity and policy cached) so only the decision needs the daemon.
    let warm = env.cases(&[case("anthropic", "a-text", false, &env.token)], false);
    assert_eq!(warm[0]["ok"], true, "{}", warm[0]);
    let client = env.spawn_cases(&[case("anthropic", "pause:a-tool", true, &env.token)], false);
    let paused = PathBuf::from(format!("{}.paused", env.log.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !paused.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(paused.exists(), "the upstream never reached the tool call");
    // The call is held by the gateway now; the daemon goes away before it is complete.
    let daemon = env.daemon.take().expect("daemon");
    let data_dir = daemon.data_dir.clone();
    let mut daemon = daemon;
    let keep = daemon.keep_dir();
    assert!(daemon.stop(), "ledgerd stops cleanly");
    std::fs::write(format!("{}.go", env.log.display()), b"").expect("go");
    let out = client.wait_with_output().expect("client");
    let r: Value = serde_json::from_slice(&out.stdout).expect("result");
    assert_eq!(r["ok"], true, "the SDK sees a well-formed response: {r}");
    assert!(call_names(&r).is_empty(), "the held call was released without a decision: {r}");
    let t = texts(&r);
    assert!(
        t.contains("ledgerd denied json: no decision could be made or recorded") && t.contains("fail closed"),
        "{t}"
    );
    assert_eq!(r["stop"], "end_turn");
    // Back up: the ledger holds no decision allowing that call.
    let daemon = Daemon::start_in(&data_dir).expect("restart");
    env.daemon = Some(daemon);
    let allowed = env.query("kind = decision and tool = \"json\" | fields seq");
    assert!(allowed.is_empty(), "{allowed:?}");
    drop(keep);
}

#[test]
fn llm_gateway_records_outcomes_once_and_flags_results_of_calls_never_allowed() {
    if !have_sdks() {
        return;
    }
    let env = Env::new(&[]);
    let first = env.cases(
        &[case("anthropic", "a-tool", false, &env.token), case("anthropic", "a-denied", false, &env.token)],
        false,
    );
    assert!(first.iter().all(|r| r["ok"] == true), "{first:?}");
    let allowed_id = "toolu_01Q9ExVZnzZj7E2QQYHYtNUa";
    let denied_id = "toolu_01JKBd25gEfr9ZpVvn8quK2v";
    let unseen_id = "toolu_never_decided";
    let result_text = json!([{"type": "text", "text": "4 cities"}]);
    let messages = json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": allowed_id, "name": "json", "input": {}},
            {"type": "tool_use", "id": denied_id, "name": "website_update", "input": {}},
            {"type": "tool_use", "id": unseen_id, "name": "shell", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": allowed_id, "content": result_text},
            {"type": "tool_result", "tool_use_id": denied_id, "content": "ran anyway", "is_error": true},
            {"type": "tool_result", "tool_use_id": unseen_id, "content": "rm -rf done"}
        ]}
    ]);
    let mut next = case("anthropic", "a-text", false, &env.token);
    next["messages"] = messages;
    // Twice: a conversation resends its history; each outcome is recorded once.
    for _ in 0..2 {
        let r = env.cases(std::slice::from_ref(&next), false);
        assert_eq!(r[0]["ok"], true, "{}", r[0]);
    }
    let decisions = env.query("kind = decision | fields seq, tool, decision, details");
    let seq_of = |tool: &str| {
        decisions.iter().find(|d| d["tool"] == tool).and_then(|d| d["seq"].as_u64()).expect("decision")
    };
    let outcomes = env.query("kind = outcome | fields tool, ref_seq, reason, details");
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    // The query docs/SHIMS.md gives for finding them.
    assert_eq!(env.query("kind = outcome and details.flag ~ \"ran_*\" | fields seq").len(), 2);
    let by_id = |id: &str| {
        outcomes
            .iter()
            .find(|o| {
                serde_json::from_str::<Value>(o["details"].as_str().unwrap_or("{}"))
                    .is_ok_and(|d| d["tool_call_id"] == id)
            })
            .unwrap_or_else(|| panic!("no outcome for {id}: {outcomes:?}"))
    };
    let ok_one = by_id(allowed_id);
    assert_eq!(ok_one["ref_seq"].as_u64(), Some(seq_of("json")));
    let d: Value = serde_json::from_str(ok_one["details"].as_str().expect("details")).expect("JSON");
    let text = result_text.to_string();
    assert_eq!(d["is_error"], false);
    assert_eq!(d["result_bytes"].as_u64(), Some(text.len() as u64));
    assert_eq!(d["result_blake3"], blake3::hash(text.as_bytes()).to_hex().as_str());
    assert!(d.get("flag").is_none(), "{d}");
    assert!(!ok_one.to_string().contains("4 cities"), "the result's text is not stored");

    let denied = by_id(denied_id);
    assert_eq!(denied["ref_seq"].as_u64(), Some(seq_of("website_update")));
    let d: Value = serde_json::from_str(denied["details"].as_str().expect("details")).expect("JSON");
    assert_eq!(d["flag"], "ran_denied_call");
    assert_eq!(d["is_error"], true);

    let unseen = by_id(unseen_id);
    assert!(unseen["ref_seq"].is_null(), "{unseen}");
    let d: Value = serde_json::from_str(unseen["details"].as_str().expect("details")).expect("JSON");
    assert_eq!(d["flag"], "ran_unseen_call");
    assert_eq!(unseen["tool"], "shell");

    // Chat and Responses results are found too.
    let first = env.cases(&[case("chat", "c-tool", false, &env.token)], false);
    let call_id = first[0]["calls"][0][0].as_str().expect("call id").to_string();
    let mut chat = case("chat", "c-text", false, &env.token);
    chat["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny"}
    ]);
    let mut resp = case("responses", "r-text", false, &env.token);
    resp["input"] = json!([{"type": "function_call_output", "call_id": "call_unknown_r", "output": "x"}]);
    let r = env.cases(&[chat, resp], false);
    assert!(r.iter().all(|x| x["ok"] == true), "{r:?}");
    let outcomes = env.query("kind = outcome | fields tool, ref_seq, details");
    assert_eq!(outcomes.len(), 5, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| o["tool"] == "weather" && o["ref_seq"].as_u64() == Some(seq_of_tool(&env, "weather")))
    );
}

fn seq_of_tool(env: &Env, tool: &str) -> u64 {
    env.query(&format!("kind = decision and tool = \"{tool}\" | fields seq"))
        .first()
        .and_then(|r| r["seq"].as_u64())
        .expect("decision")
}

#[test]
fn llm_gateway_removes_tools_the_policy_never_allows_from_the_request() {
    if !have_sdks() {
        return;
    }
    let env = Env::new(&[]);
    let mut c = case("anthropic", "a-tool", false, &env.token);
    c["tools"] = json!(["json", "website_update", "delete_everything"]);
    let mut o = case("chat", "c-tool", false, &env.token);
    o["tools"] = json!(["weather", "delete_everything"]);
    let r = env.cases(&[c.clone(), c, o], false);
    assert!(r.iter().all(|x| x["ok"] == true), "{r:?}");
    let received = env.received();
    let tools = |i: usize| -> Vec<String> {
        let body: Value = serde_json::from_str(received[i]["body"].as_str().expect("body")).expect("JSON");
        body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().or(t["function"]["name"].as_str()).map(String::from))
            .collect()
    };
    assert_eq!(tools(0), ["json"]);
    assert_eq!(tools(1), ["json"]);
    assert_eq!(tools(2), ["weather"]);
    // Recorded once per tool and policy version, as denials.
    let rows = env.query("kind = decision and action = \"request_tools\" | fields tool, decision, rule");
    let mut got: Vec<String> =
        rows.iter().map(|r| format!("{} {} {}", r["tool"], r["decision"], r["rule"])).collect();
    got.sort();
    assert_eq!(
        got,
        ["\"delete_everything\" \"deny\" \"default\"", "\"website_update\" \"deny\" \"default\""]
    );
}

#[test]
fn llm_gateway_openai_agents_tool_loop_runs_allowed_tools_only() {
    if !have_sdks() {
        return;
    }
    calculator_loop("agent");
}

/// The same tool loop with pydantic-ai (its OpenAI Responses model), when installed.
#[test]
fn llm_gateway_pydantic_ai_tool_loop_runs_allowed_tools_only() {
    if !have_sdks() {
        return;
    }
    let installed =
        Command::new("python3").args(["-c", "import pydantic_ai"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIP: pydantic-ai-slim[openai] is not installed (.ci/run installs it)");
        return;
    }
    calculator_loop("pydantic_agent");
}

/// Runs the recorded calculator tool loop with the framework `driver` of llm_client.py:
/// the allowed calls run, the denied one never does, and the ledger holds the three
/// decisions and an outcome for each allowed call.
fn calculator_loop(driver: &str) {
    let env = Env::new(&[]);
    let ran = env.tmp.path().join("ran.log");
    let out = Command::new("python3")
        .arg(interop().join("llm_client.py"))
        .args([driver, &format!("http://{}/v1", env.gateway), &env.token])
        .arg(&ran)
        .output()
        .expect("run the agent");
    assert!(out.status.success(), "the agent failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ran = std::fs::read_to_string(&ran).expect("ran log");
    let ran: Vec<Value> = ran.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    // The recorded loop: 12 + 7, then 19 * 3 (allowed, run), then 57 * 10 (denied: never run).
    assert_eq!(
        ran,
        [json!({"a": 12.0, "b": 7.0, "op": "add"}), json!({"a": 19.0, "b": 3.0, "op": "multiply"})]
    );
    let final_output = result["final_output"].as_str().unwrap_or_default();
    assert!(final_output.contains("ledgerd denied calculator: rule no-b10"), "{final_output}");
    let decisions = env.query("kind = decision and tool = \"calculator\" | fields seq, decision, rule");
    let got: Vec<(String, String)> = decisions
        .iter()
        .map(|d| (d["decision"].as_str().unwrap_or("").into(), d["rule"].as_str().unwrap_or("").into()))
        .collect();
    assert_eq!(
        got,
        [
            ("allow".into(), "tools".into()),
            ("allow".into(), "tools".into()),
            ("deny".into(), "no-b10".into())
        ]
    );
    let outcomes = env.query("kind = outcome | fields ref_seq, details");
    let refs: Vec<u64> = outcomes.iter().filter_map(|o| o["ref_seq"].as_u64()).collect();
    let allowed: Vec<u64> = decisions.iter().take(2).filter_map(|d| d["seq"].as_u64()).collect();
    assert_eq!(refs, allowed, "one outcome per allowed call, linked to its decision: {outcomes:?}");
}

/// 64 tool calls of one agent at once, twice, through a gateway whose pool may hold at
/// most 16 deciders: every call is decided and in the ledger, each under its own
/// (shim_id, shim_seq), every shim_id numbered 1, 2, 3, … without a gap (and the daemon,
/// which flags any number above the next as `shim_gap`, saw them in order), and no more
/// shim_ids than the bound.
#[test]
fn llm_gateway_concurrent_tool_calls_of_one_agent_are_each_decided_gap_free() {
    if !have_sdks() {
        return;
    }
    const CALLS: usize = 64;
    const MOST: usize = 16;
    let env = Env::new(&["--deciders-per-agent", &MOST.to_string()]);
    let body = br#"{"model":"a-tool","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let direct = env.upstream_url.trim_start_matches("http://").to_string();
    let auth = [("x-api-key", env.token.as_str()), ("anthropic-version", "2023-06-01")];
    let (status, want) = http(&direct, "POST", "/v1/messages", &auth, body);
    assert_eq!(status, 200);
    let want: Value = serde_json::from_slice(&want).expect("JSON");
    assert!(want["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_use")), "{want}");
    for round in 1..=2 {
        let start = std::sync::Barrier::new(CALLS);
        let answers: Vec<(u16, Vec<u8>)> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..CALLS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        http(&env.gateway, "POST", "/v1/messages", &auth, body)
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().expect("client thread")).collect()
        });
        for (status, got) in &answers {
            assert_eq!(*status, 200, "{}", String::from_utf8_lossy(got));
            let got: Value = serde_json::from_slice(got).expect("JSON");
            assert_eq!(got, want, "round {round}: an allowed call must arrive unchanged");
        }
        let rows = env.query("kind = decision | fields seq, tool, decision, shim_id, shim_seq, flags");
        assert_eq!(rows.len(), CALLS * round, "round {round}: every call decided and recorded: {rows:?}");
        let mut by_shim: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for r in &rows {
            assert_eq!((r["tool"].as_str(), r["decision"].as_str()), (Some("json"), Some("allow")), "{r}");
            let flags = r["flags"].as_array().into_iter().flatten();
            assert!(flags.filter_map(Value::as_str).all(|f| f != "shim_gap"), "the daemon saw a gap: {r}");
            let id = r["shim_id"].as_str().expect("shim_id").to_string();
            by_shim.entry(id).or_default().push(r["shim_seq"].as_u64().expect("shim_seq"));
        }
        assert!(by_shim.len() <= MOST, "round {round}: {} shim_ids for a bound of {MOST}", by_shim.len());
        for (id, seqs) in &by_shim {
            // Log order is the order the daemon received them: 1, 2, 3, … exactly.
            let want: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, &want, "round {round}: shim {id} numbered with a gap or out of order");
        }
    }
}

/// A path the gateway does not govern (`POST /v1/messages/count_tokens`), called by the
/// official `anthropic` SDK: forwarded as it is with the real key in place of the agent's
/// token (which never reaches the upstream), the upstream's answer back unchanged, and
/// nothing decided.
#[test]
fn llm_gateway_passes_count_tokens_through_with_the_real_key() {
    if !have_sdks() {
        return;
    }
    let env = Env::new(&[]);
    let out = Command::new("python3")
        .arg(interop().join("llm_client.py"))
        .args(["count_tokens", &format!("http://{}", env.gateway), &env.token])
        .output()
        .expect("llm_client.py");
    assert!(out.status.success(), "count_tokens failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer, json!({"input_tokens": 2095}), "the upstream's answer, unchanged");
    let received = env.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let r = &received[0];
    assert_eq!((r["method"].as_str(), r["path"].as_str()), (Some("POST"), Some("/v1/messages/count_tokens")));
    assert_eq!(r["headers"]["x-api-key"], ANTHROPIC_KEY, "the real key is sent: {r}");
    assert!(r["headers"]["anthropic-version"].is_string(), "the SDK's headers are forwarded: {r}");
    let body: Value =
        serde_json::from_str(r["body"].as_str().expect("body")).expect("forwarded body is JSON");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]), "{body}");
    assert!(!r.to_string().contains(&env.token), "the agent token reached the upstream: {r}");
    assert!(env.query("kind = decision | fields seq").is_empty(), "a pass-through decided something");
}

/// Each decider's `shim_id` is covered by heartbeats: one carrying the number of its last
/// decision after each interval in which it decided (none while it did not), and one
/// `exit` heartbeat for it when the gateway stops on SIGTERM.
#[test]
fn llm_gateway_heartbeats_carry_each_deciders_last_shim_seq() {
    if !have_sdks() {
        return;
    }
    let mut env = Env::new(&["--heartbeat", "200ms"]);
    let body = br#"{"model":"a-tool","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let auth = [("x-api-key", env.token.as_str()), ("anthropic-version", "2023-06-01")];
    let (status, _) = http(&env.gateway, "POST", "/v1/messages", &auth, body);
    assert_eq!(status, 200);
    let decisions = env.query("kind = decision | fields shim_id, shim_seq");
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let shim = decisions[0]["shim_id"].as_str().expect("shim_id").to_string();
    let beats = |env: &Env| {
        env.query(&format!("kind = shim_heartbeat and shim_id = \"{shim}\" | fields shim_seq, action"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while beats(&env).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several intervals without a decision add no heartbeat.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(beats(&env), [json!({"shim_seq": 1, "action": "heartbeat"})]);
    let pid = env.gateway_proc.as_ref().expect("gateway").0.id();
    let status = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("kill");
    assert!(status.success());
    let mut gateway = env.gateway_proc.take().expect("gateway");
    assert!(gateway.0.wait().expect("wait").success(), "the gateway ends cleanly on SIGTERM");
    assert_eq!(
        beats(&env),
        [json!({"shim_seq": 1, "action": "heartbeat"}), json!({"shim_seq": 1, "action": "exit"})]
    );
}
