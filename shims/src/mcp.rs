//! The MCP stdio proxy: `ledgerctl shim mcp --agent NAME -- COMMAND [ARGS…]` (docs/SHIMS.md).
//!
//! Starts the real MCP server as a child and relays newline-delimited JSON-RPC both ways:
//!
//! - client → server: every `tools/call` request is decided first (the entry's `tool` is
//!   the MCP tool name, its params the call's `arguments`). Allowed calls are forwarded
//!   unchanged; denied ones (and any call that cannot be decided: fail closed) are answered
//!   by the proxy with a tool result `{"content":[{"type":"text","text":"denied by rule R
//!   (ledger seq N): …"}],"isError":true}` and the server never sees them. The client's
//!   `clientInfo` from `initialize` and a request's `_meta` go into the decision's details.
//! - server → client: results of `tools/list` requests lose the tools that the policy can
//!   never allow (`Policy::may_allow_tool`); everything else passes unchanged.
//! - A client line that is not JSON gets a JSON-RPC parse error (-32700) and is not
//!   forwarded; a batch (a JSON array) gets an invalid-request error (-32600) and is not
//!   forwarded (batches were removed from MCP in 2025-06-18, and a batch could otherwise
//!   smuggle an undecided call). A server line that is not JSON is passed on unchanged.
//! - A message longer than [`MAX_MESSAGE_BYTES`] is read to its end and dropped, in either
//!   direction: the client gets a JSON-RPC error with a null id (-32600 for its own
//!   message, -32603 for the server's) and stderr says so; a client line that is not UTF-8
//!   gets a parse error. So no sender can make the proxy hold more than the bound, and a
//!   call too large to read is never forwarded undecided.
//! - Client EOF closes the child's stdin and waits for it to exit (killing it after
//!   [`CHILD_GRACE`]); the child's exit (its stdout closing) ends the proxy, and so do
//!   SIGTERM and SIGINT (the child is killed). The proxy's exit status is 0 when the child
//!   exited 0.
//! - Heartbeats: every `heartbeat` interval while it runs, and once when it ends, the proxy
//!   records a `shim_heartbeat` entry whose `shim_seq` is the number of its last decision
//!   ([`Decider::heartbeat`]), so a decision lost after the last one that was recorded still
//!   shows as a gap. A heartbeat that cannot be recorded is reported on stderr and the proxy
//!   carries on: heartbeats are not decisions, and decisions still fail closed.

use std::collections::HashSet;
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ledger_client::lines::{Line, next_line_async, size_text};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};

use super::{Decider, ShimCall, ShimError, ShimOptions, terminated};

/// How long the server gets to exit after its stdin is closed, before it is killed.
pub const CHILD_GRACE: Duration = Duration::from_secs(5);

/// The default interval between heartbeats (`--heartbeat`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);

/// Parses a `--heartbeat` value: a number with a unit (`200ms`, `30s`, `5m`, `1h`), or `0`
/// / `off` for no periodic heartbeats (`Duration::ZERO`; the one at exit is still sent).
pub fn parse_heartbeat(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" || text.eq_ignore_ascii_case("off") {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let hint = "write a number and a unit (200ms, 30s, 5m, 1h), or 0 / off for none";
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a heartbeat interval; {hint}"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("{text:?} has no known unit; {hint}")),
    };
    millis.map(Duration::from_millis).ok_or_else(|| format!("{text:?} is too long; use at most a few hours"))
}

/// State shared by both directions.
struct Shared {
    decider: Mutex<Decider>,
    /// Ids (as JSON text) of `tools/list` requests whose responses are still to come.
    pending_lists: Mutex<HashSet<String>>,
    /// `clientInfo` from `initialize`, once seen.
    client_info: Mutex<Option<Value>>,
}

/// The longest message (one line) the proxy relays in either direction: 64 MiB, far above
/// what MCP tools exchange, and a bound on what a sender that never ends its line can make
/// the proxy hold.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

fn too_long(who: &str, len: u64) -> String {
    format!(
        "{who} sent a message of {} (more than the {} ledgerctl shim mcp relays); it was dropped",
        size_text(len),
        size_text(MAX_MESSAGE_BYTES as u64)
    )
}

fn rpc_error(id: Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

/// The tool result the proxy sends for a refused call.
pub fn denied_result(id: Value, text: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {"content": [{"type": "text", "text": text}], "isError": true}
    })
    .to_string()
}

/// What to do with one line from the client.
enum ClientLine {
    /// Pass this line on to the server.
    Forward(String),
    /// Answer the client with this line; the server sees nothing.
    Answer(String),
    /// Drop it (a refused notification has nobody to answer).
    Drop,
}

async fn from_client(shared: &Shared, line: String) -> ClientLine {
    let msg: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => return ClientLine::Answer(rpc_error(Value::Null, -32700, &format!("Parse error: {e}"))),
    };
    let Some(obj) = msg.as_object() else {
        let text = if msg.is_array() {
            "Invalid Request: JSON-RPC batches are not accepted by ledgerctl shim mcp"
        } else {
            "Invalid Request: not a JSON-RPC object"
        };
        return ClientLine::Answer(rpc_error(Value::Null, -32600, text));
    };
    let method = obj.get("method").and_then(Value::as_str).unwrap_or("");
    let id = obj.get("id").cloned();
    match method {
        "initialize" => {
            let info = obj.get("params").and_then(|p| p.get("clientInfo")).cloned();
            *shared.client_info.lock().await = info;
            ClientLine::Forward(line)
        }
        "tools/list" => {
            if let Some(id) = &id {
                shared.pending_lists.lock().await.insert(id.to_string());
            }
            ClientLine::Forward(line)
        }
        "tools/call" => {
            let params = obj.get("params");
            let answer = |text: String| match &id {
                Some(id) => ClientLine::Answer(denied_result(id.clone(), &text)),
                None => ClientLine::Drop,
            };
            let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
                return match &id {
                    Some(id) => ClientLine::Answer(rpc_error(
                        id.clone(),
                        -32602,
                        "Invalid params: tools/call without a tool name",
                    )),
                    None => ClientLine::Drop,
                };
            };
            let arguments =
                params.and_then(|p| p.get("arguments")).map_or_else(|| "{}".to_string(), Value::to_string);
            let mut details = Map::new();
            if let Some(info) = shared.client_info.lock().await.clone() {
                details.insert("client".into(), info);
            }
            if let Some(meta) = params.and_then(|p| p.get("_meta")) {
                details.insert("_meta".into(), meta.clone());
            }
            if let Some(id) = &id {
                details.insert("request_id".into(), id.clone());
            }
            let call = ShimCall {
                tool: name.to_string(),
                params: arguments,
                session: String::new(),
                action: "tools/call".into(),
                details,
            };
            let verdict = shared.decider.lock().await.decide(&call).await;
            match verdict {
                Ok(v) if v.allow => ClientLine::Forward(line),
                Ok(v) => answer(format!("denied by rule {} ({}): {}", v.rule, v.seq_text(), v.reason)),
                Err(e) => {
                    eprintln!("ledgerctl shim mcp: denied {name} (fail closed): {e}");
                    answer(format!("denied by ledgerctl shim (fail closed, not recorded): {e}"))
                }
            }
        }
        _ => ClientLine::Forward(line),
    }
}

/// Filters a server line: `tools/list` results lose the tools the policy never allows.
async fn from_server(shared: &Shared, line: String) -> String {
    let Ok(mut msg) = serde_json::from_str::<Value>(&line) else { return line };
    let Some(id) = msg.get("id").filter(|_| msg.get("method").is_none()).map(Value::to_string) else {
        return line;
    };
    if !shared.pending_lists.lock().await.remove(&id) {
        return line;
    }
    let Some(tools) = msg.get_mut("result").and_then(|r| r.get_mut("tools")).and_then(Value::as_array_mut)
    else {
        return line;
    };
    let policy = match shared.decider.lock().await.policy().await {
        Ok(p) => Some(p.policy),
        Err(e) => {
            eprintln!("ledgerctl shim mcp: cannot read the policy, hiding every tool: {e}");
            None
        }
    };
    tools.retain(|tool| {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        policy.as_ref().is_some_and(|p| p.may_allow_tool(name))
    });
    msg.to_string()
}

/// A message and its newline as one buffer: one write, so the line goes out whole at once
/// (tokio's stdout hands each write to a thread; two writes would be two round trips).
fn with_newline(line: String) -> Vec<u8> {
    let mut bytes = line.into_bytes();
    bytes.push(b'\n');
    bytes
}

/// Sends a heartbeat every `every` (the first one interval after the start) until `stop`
/// fires. It is told to stop, not aborted: an abort could drop a heartbeat whose request had
/// already left, and the daemon could then record it after the exit heartbeat, which must be
/// the proxy's last word.
async fn heartbeats(shared: Arc<Shared>, every: Duration, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut stop => return,
        }
        let result = shared.decider.lock().await.heartbeat(false).await;
        if let Err(e) = result {
            eprintln!(
                "ledgerctl shim mcp: heartbeat not recorded (the proxy carries on; calls are refused while no decision can be recorded): {e}"
            );
        }
    }
}

/// Runs the proxy over the given client streams (stdin/stdout in production), with a
/// heartbeat every `heartbeat` (`Duration::ZERO`: only the one at exit).
pub async fn proxy<R, W>(
    opts: ShimOptions,
    heartbeat: Duration,
    command: &[String],
    input: R,
    output: W,
) -> Result<i32, ShimError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (program, args) =
        command.split_first().ok_or_else(|| ShimError("no MCP server command given after --".into()))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ShimError(format!("cannot start the MCP server {program:?}: {e}")))?;
    let (Some(mut child_in), Some(child_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ShimError("the MCP server's stdin/stdout are not piped".into()));
    };
    let shared = Arc::new(Shared {
        decider: Mutex::new(Decider::new(opts, "mcp")),
        pending_lists: Mutex::new(HashSet::new()),
        client_info: Mutex::new(None),
    });

    let beat = (!heartbeat.is_zero()).then(|| {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        (stop, tokio::spawn(heartbeats(shared.clone(), heartbeat, stopped)))
    });
    let last_beat = shared.clone();

    // One writer for the client, fed by both directions.
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(line) = rx.recv().await {
            if output.write_all(&with_newline(line)).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });

    let server_shared = shared.clone();
    let server_tx = tx.clone();
    let mut server = tokio::spawn(async move {
        let mut reader = BufReader::new(child_out);
        loop {
            let line = match next_line_async(&mut reader, MAX_MESSAGE_BYTES).await {
                Ok(Some(Line::Bytes(bytes))) => match String::from_utf8(bytes) {
                    Ok(line) => from_server(&server_shared, line).await,
                    // Not JSON either, so no client can parse it: passed on as is would
                    // need a byte channel; the lossy text keeps the client's parse error.
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                },
                Ok(Some(Line::TooLong(len))) => {
                    let why = too_long("the MCP server", len);
                    eprintln!("ledgerctl shim mcp: {why}");
                    rpc_error(Value::Null, -32603, &why)
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("ledgerctl shim mcp: cannot read from the MCP server: {e}");
                    break;
                }
            };
            if server_tx.send(line).await.is_err() {
                break;
            }
        }
    });

    let client_tx = tx;
    let mut client = tokio::spawn(async move {
        let mut reader = BufReader::new(input);
        loop {
            let line = match next_line_async(&mut reader, MAX_MESSAGE_BYTES).await {
                Ok(Some(Line::Bytes(bytes))) => match String::from_utf8(bytes) {
                    Ok(line) => line,
                    Err(_) => {
                        let answer =
                            rpc_error(Value::Null, -32700, "Parse error: the message is not UTF-8 text");
                        if client_tx.send(answer).await.is_err() {
                            break;
                        }
                        continue;
                    }
                },
                Ok(Some(Line::TooLong(len))) => {
                    // Never forwarded: a call too large to read cannot be decided.
                    let why = too_long("the client", len);
                    eprintln!("ledgerctl shim mcp: {why}");
                    if client_tx
                        .send(rpc_error(Value::Null, -32600, &format!("Invalid Request: {why}")))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("ledgerctl shim mcp: cannot read from the client: {e}");
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            match from_client(&shared, line).await {
                ClientLine::Forward(line) => {
                    let ok = child_in.write_all(&with_newline(line)).await.is_ok()
                        && child_in.flush().await.is_ok();
                    if !ok {
                        break;
                    }
                }
                ClientLine::Answer(line) => {
                    if client_tx.send(line).await.is_err() {
                        break;
                    }
                }
                ClientLine::Drop => {}
            }
        }
        // Dropping child_in closes the server's stdin.
    });

    tokio::select! {
        _ = &mut client => {
            // Client EOF: the server's stdin is closed; let it finish its answers and exit.
            if tokio::time::timeout(CHILD_GRACE, &mut server).await.is_err() {
                eprintln!("ledgerctl shim mcp: the MCP server did not exit within {}s of its stdin closing; killing it", CHILD_GRACE.as_secs());
                let _ = child.start_kill();
                let _ = server.await;
            }
        }
        _ = &mut server => {
            // The server closed its stdout (it exited): nothing more can be answered.
            client.abort();
        }
        () = terminated() => {
            eprintln!("ledgerctl shim mcp: terminated by a signal; stopping the MCP server");
            client.abort();
            let _ = child.start_kill();
        }
    }
    if let Some((stop, beat)) = beat {
        // A heartbeat under way finishes (recorded or failed) before the exit heartbeat; one
        // that hangs (a stopped daemon) is given up after the grace.
        let _ = stop.send(());
        let abort = beat.abort_handle();
        if tokio::time::timeout(CHILD_GRACE, beat).await.is_err() {
            abort.abort();
        }
    }
    let status = match tokio::time::timeout(CHILD_GRACE, child.wait()).await {
        Ok(Ok(status)) => status.code().unwrap_or(2),
        Ok(Err(e)) => return Err(ShimError(format!("cannot wait for the MCP server: {e}"))),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            2
        }
    };
    // The last word: the number of the last decision, after every decision was made.
    if let Err(e) = last_beat.decider.lock().await.heartbeat(true).await {
        eprintln!("ledgerctl shim mcp: the exit heartbeat was not recorded: {e}");
    }
    let _ = writer.await;
    Ok(status)
}

/// The whole command on stdin/stdout: exits with the server's status (2 on a proxy error).
pub fn main(opts: ShimOptions, heartbeat: Duration, command: &[String]) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledgerctl shim mcp: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(proxy(opts, heartbeat, command, tokio::io::stdin(), tokio::io::stdout()));
    // A read of stdin may still be blocked in a thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
        Err(e) => {
            eprintln!("ledgerctl shim mcp: error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_intervals() {
        assert_eq!(parse_heartbeat("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_heartbeat("60s"), Ok(DEFAULT_HEARTBEAT));
        assert_eq!(parse_heartbeat("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_heartbeat("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_heartbeat("off"), Ok(Duration::ZERO));
        assert_eq!(parse_heartbeat("0"), Ok(Duration::ZERO));
        for bad in ["", "60", "s", "1.5s", "-1s", "10x", "99999999999999999h"] {
            let err = parse_heartbeat(bad).expect_err(bad);
            assert!(
                err.contains("heartbeat") || err.contains("unit") || err.contains("too long"),
                "{bad}: {err}"
            );
        }
    }
}
