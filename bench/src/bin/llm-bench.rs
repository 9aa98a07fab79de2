//! `llm-bench`: what the LLM gateway (`ledgerctl shim llm`, docs/SHIMS.md) adds to a model
//! API call, against a fast in-process upstream that answers with recorded responses
//! (tests/interop/llm-fixtures) and a real `ledgerd` (the binary next to this one) on a
//! temporary data dir. The gateway is the real `ledgerctl shim llm`, its own process as
//! deployed (`--in-process`: in this process instead, on the clients' runtime). The
//! concurrent figure also prints the CPU each process spent per tool call.
//!
//! In one run, each figure measured directly against the upstream and through the gateway
//! with the two interleaved (so both see the same load), added = through − direct per
//! percentile:
//! 1. a text-only response (Anthropic Messages, non-streamed), 1 client;
//! 2. a response with one tool call (decision + durable append included), 1 client and
//!    64 concurrent clients;
//! 3. time to the first text byte of a stream (`text_delta`);
//! 4. requests/s of text-only responses at 64 concurrent clients, upstream alone and
//!    through the gateway.
//!
//! Run: `cargo build --release -p ledgerd -p ledgerctl -p ledger-bench && target/release/llm-bench`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ledger_shims::llm::{Config, Gateway, serve, upstream::Target};

/// The gateway runs in this process: on ledgerctl's allocator, as in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    about = "Measure the latency the LLM gateway adds, and its throughput, against a fast in-process upstream",
    after_help = "Example:\n  cargo build --release -p ledgerd -p ledgerctl -p ledger-bench && target/release/llm-bench\n\nTargets: text-only added p99 < 0.3 ms; one tool call added p99 < 2 ms (1 client), < 5 ms (64 clients); first text byte added < 0.3 ms."
)]
struct Args {
    /// Requests timed per figure (each directly and through the gateway)
    #[arg(long, default_value_t = 2000, value_name = "N")]
    requests: usize,
    /// Concurrent clients for the concurrent figures
    #[arg(long, default_value_t = 64, value_name = "N")]
    clients: usize,
    /// Seconds per throughput measurement
    #[arg(long, default_value_t = 3, value_name = "S")]
    seconds: u64,
    /// The gateway's most deciders per agent (`--deciders-per-agent`)
    #[arg(long, default_value_t = ledger_shims::llm::DEFAULT_DECIDERS, value_name = "N")]
    deciders_per_agent: usize,
    /// Only the concurrent tool-call figure, `--requests` times (to profile it)
    #[arg(long)]
    only_concurrent: bool,
    /// Run the gateway inside this process (sharing its runtime with the clients and the
    /// upstream) instead of as `ledgerctl shim llm`, its own process as deployed
    #[arg(long)]
    in_process: bool,
}

const TEXT: &str = include_str!("../../../tests/interop/llm-fixtures/anthropic-text.json");
const TOOL: &str = include_str!("../../../tests/interop/llm-fixtures/anthropic-json-tool.1.json");
const STREAM: &str = include_str!("../../../tests/interop/llm-fixtures/anthropic-text.chunks.txt");

const POLICY: &str = "rule ok: allow tool = \"json\"\ndefault deny\n";

/// The recorded stream in SSE framing.
fn sse() -> String {
    let mut out = String::new();
    for line in STREAM.lines().filter(|l| !l.trim().is_empty()) {
        let kind = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["type"].as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!("event: {kind}\ndata: {line}\n\n"));
    }
    out
}

/// The fast upstream: the recorded body named by the request's `model`.
async fn upstream(listener: tokio::net::TcpListener) {
    let stream_body = Bytes::from(sse());
    loop {
        let Ok((conn, _)) = listener.accept().await else { continue };
        let _ = conn.set_nodelay(true);
        let stream_body = stream_body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let stream_body = stream_body.clone();
                async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let text = String::from_utf8_lossy(&body);
                    let (ctype, out) = if text.contains("\"stream\":true") {
                        ("text/event-stream", stream_body)
                    } else if text.contains("\"model\":\"tool\"") {
                        ("application/json", Bytes::from_static(TOOL.as_bytes()))
                    } else {
                        ("application/json", Bytes::from_static(TEXT.as_bytes()))
                    };
                    let mut r = hyper::Response::new(Full::new(out));
                    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static(ctype));
                    Ok::<_, Infallible>(r)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(conn), service)
                .await;
        });
    }
}

/// A child process (ledgerd, the gateway), killed when dropped.
struct Ledgerd(Child);

impl Drop for Ledgerd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (killed when the result drops) and returns the value of `key` in the ready
/// line it prints first (`socket=` of ledgerd, `listen=` of the gateway).
fn start(mut cmd: Command, key: &str) -> anyhow::Result<(Ledgerd, String)> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
    let stdout = child.stdout.take();
    let process = Ledgerd(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout.context("no stdout")?), &mut line)?;
    let value =
        line.split_whitespace().find_map(|w| w.strip_prefix(key)).context("it printed no ready line")?;
    Ok((process, value.to_string()))
}

fn next_to_me(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let path = exe.parent().context("no parent directory")?.join(name);
    ensure!(
        path.is_file(),
        "{} is missing: build it with the same profile, e.g. `cargo build --release -p ledgerd -p ledgerctl -p ledger-bench`",
        path.display()
    );
    Ok(path)
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn request(base: &str, token: &str, body: &'static str) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    Ok(hyper::Request::post(format!("{base}/v1/messages"))
        .header("x-api-key", token)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?)
}

/// One request, timed to its whole body (or, `first_text`, to the first `text_delta`).
async fn timed(
    client: &HttpClient,
    base: &str,
    token: &str,
    body: &'static str,
    first_text: bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let resp = client.request(request(base, token, body)?).await?;
    ensure!(resp.status().is_success(), "status {}", resp.status());
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    let mut at = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data()
            && first_text
            && at.is_none()
        {
            seen.extend_from_slice(&data);
            if seen.windows(10).any(|w| w == b"text_delta") {
                at = Some(start.elapsed());
            }
        }
    }
    Ok(at.unwrap_or_else(|| start.elapsed()))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// p50/p99 directly and through the gateway, and the added ms at each.
fn report(name: &str, mut direct: Vec<Duration>, mut via: Vec<Duration>, target: Option<f64>) {
    direct.sort();
    via.sort();
    let (d50, d99, v50, v99) = (pct(&direct, 0.5), pct(&direct, 0.99), pct(&via, 0.5), pct(&via, 0.99));
    let added99 = ms(v99) - ms(d99);
    let verdict = target.map_or_else(String::new, |t| {
        format!("  target p99 < {t} ms: {}", if added99 < t { "met" } else { "NOT met" })
    });
    println!(
        "{name:<44} direct p50 {:.3} p99 {:.3} | gateway p50 {:.3} p99 {:.3} | added p50 {:+.3} p99 {:+.3} ms{verdict}",
        ms(d50),
        ms(d99),
        ms(v50),
        ms(v99),
        ms(v50) - ms(d50),
        added99
    );
}

/// Where the requests go: the upstream directly, or the gateway with the agent's token.
#[derive(Clone)]
struct Ends {
    client: HttpClient,
    direct: String,
    gateway: String,
    token: String,
}

/// `clients` tasks, each alternating direct and gateway requests, `per_client` of each.
async fn interleaved(
    t: &Ends,
    body: &'static str,
    clients: usize,
    per_client: usize,
    first_text: bool,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let Ends { client, direct, gateway, token } = t.clone();
        tasks.push(tokio::spawn(async move {
            let (mut d, mut g) = (Vec::new(), Vec::new());
            for i in 0..per_client {
                // Alternate which goes first, so neither always follows the other.
                if i % 2 == 0 {
                    d.push(timed(&client, &direct, "direct", body, first_text).await?);
                    g.push(timed(&client, &gateway, &token, body, first_text).await?);
                } else {
                    g.push(timed(&client, &gateway, &token, body, first_text).await?);
                    d.push(timed(&client, &direct, "direct", body, first_text).await?);
                }
            }
            Ok::<_, anyhow::Error>((d, g))
        }));
    }
    let (mut d, mut g) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await??;
        d.extend(a);
        g.extend(b);
    }
    Ok((d, g))
}

/// Requests/s of `clients` clients for `secs` seconds.
async fn throughput(
    client: &HttpClient,
    base: &str,
    token: &str,
    clients: usize,
    secs: u64,
) -> anyhow::Result<f64> {
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, token) = (client.clone(), base.to_string(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                timed(&client, &base, &token, TEXT_REQ, false).await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// A text-only request whose history holds `turns` tool calls and their results, each
/// with about a kilobyte of text, as a long agent session sends. Built once and kept for
/// the whole run (the requests take `&'static str` bodies).
fn long_conversation(turns: usize) -> &'static str {
    let filler = "The quick brown fox jumps over the lazy dog, then reads the file again. ".repeat(14);
    let mut messages = vec![serde_json::json!({"role": "user", "content": "Work through the list."})];
    for i in 0..turns {
        messages.push(serde_json::json!({"role": "assistant", "content": [
            {"type": "text", "text": format!("Step {i}: {filler}")},
            {"type": "tool_use", "id": format!("toolu_bench_{i:04}"), "name": "json", "input": {"step": i, "path": format!("/data/{i}.json")}},
        ]}));
        messages.push(serde_json::json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_bench_{i:04}"), "content": [{"type": "text", "text": format!("result {i}: {filler}")}]},
        ]}));
    }
    let body = serde_json::json!({"model": "text", "max_tokens": 64, "messages": messages,
        "tools": [{"name": "json", "input_schema": {"type": "object"}}]});
    Box::leak(body.to_string().into_boxed_str())
}

const TEXT_REQ: &str = r#"{"model":"text","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const TOOL_REQ: &str = r#"{"model":"tool","max_tokens":64,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"json","input_schema":{"type":"object"}}]}"#;
const STREAM_REQ: &str =
    r#"{"model":"text","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// CPU seconds (user + system) used so far by process `pid` (`self` for this one).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = std::env::temp_dir().join(format!("llm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut ledgerd = Command::new(next_to_me("ledgerd")?);
    ledgerd.arg("--data-dir").arg(tmp.join("data")).env("LEDGERD_LOG", "warn");
    let (daemon, socket) = start(ledgerd, "socket=").context("cannot start ledgerd")?;
    let daemon_pid = daemon.0.id().to_string();
    let socket = PathBuf::from(socket);
    let ctl = next_to_me("ledgerctl")?;
    let run = |a: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(&ctl).arg("--socket").arg(&socket).args(a).output()?;
        if !out.status.success() {
            bail!("ledgerctl {a:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let reg = run(&["agents", "register", "bench", "--owner", "bench", "--purpose", "llm-bench"])?;
    let token =
        reg.lines().find_map(|l| l.strip_prefix("token")).map(str::trim).context("no token")?.to_string();
    let policy = tmp.join("policy");
    std::fs::write(&policy, POLICY)?;
    run(&[
        "policy",
        "set",
        "bench",
        "--file",
        policy.to_str().context("utf-8")?,
        "--author",
        "b",
        "--reason",
        "bench",
    ])?;

    let query = |q: &str| -> anyhow::Result<Vec<serde_json::Value>> {
        let text = run(&["query", q, "--format", "json"])?;
        Ok(text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?)
    };
    let last_decision = || -> anyhow::Result<u64> {
        let rows = query("kind = decision | sort seq desc | limit 1 | fields seq")?;
        rows.first().and_then(|r| r["seq"].as_u64()).context("no decision in the ledger")
    };
    // The decisions of one group commit share its receive time: how many concurrent tool
    // calls each device sync carried.
    let commits_since = |seq: u64| -> anyhow::Result<()> {
        let mut sizes: Vec<u64> = query(&format!("kind = decision and seq > {seq} | count by time"))?
            .iter()
            .filter_map(|r| r["count"].as_u64())
            .collect();
        sizes.sort_unstable();
        let total: u64 = sizes.iter().sum();
        println!(
            "{:<44} decisions per daemon group commit: mean {:.1}, median {}, max {} ({total} decisions in {} commits)",
            "",
            total as f64 / sizes.len().max(1) as f64,
            sizes.get(sizes.len() / 2).copied().unwrap_or(0),
            sizes.last().copied().unwrap_or(0),
            sizes.len()
        );
        Ok(())
    };

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let up_addr = format!("http://{}", up.local_addr()?);
        tokio::spawn(upstream(up));
        let config = Config {
            listen: "127.0.0.1:0".into(),
            socket: socket.clone(),
            anthropic: Target::new(&up_addr, Some("real-key".into())).map_err(anyhow::Error::msg)?,
            openai: Target::new(&up_addr, Some("real-key".into())).map_err(anyhow::Error::msg)?,
            max_body_bytes: 1 << 20,
            deciders_per_agent: args.deciders_per_agent,
            heartbeat: ledger_shims::mcp::DEFAULT_HEARTBEAT,
            fail_open: false,
        };
        // The gateway as deployed: `ledgerctl shim llm`, its own process (killed on drop).
        let mut _gateway_process = None;
        let mut gateway_pid = None;
        let gw_addr = if args.in_process {
            let gateway = Arc::new(Gateway::new(config).map_err(anyhow::Error::msg)?);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let gw_addr = format!("http://{}", listener.local_addr()?);
            tokio::spawn(serve(gateway, listener, std::future::pending()));
            gw_addr
        } else {
            drop(config);
            let mut gateway = Command::new(&ctl);
            gateway
                .arg("--socket")
                .arg(&socket)
                .args(["shim", "llm", "--listen", "127.0.0.1:0", "--upstream-anthropic", &up_addr])
                .args(["--upstream-openai", &up_addr, "--deciders-per-agent", &args.deciders_per_agent.to_string()])
                .env("ANTHROPIC_API_KEY", "real-key")
                .env("OPENAI_API_KEY", "real-key");
            let (process, addr) = start(gateway, "listen=").context("cannot start `ledgerctl shim llm`")?;
            gateway_pid = Some(process.0.id().to_string());
            _gateway_process = Some(process);
            format!("http://{addr}")
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(256).build(connector);
        let ends = Ends { client: client.clone(), direct: up_addr.clone(), gateway: gw_addr.clone(), token: token.clone() };

        // Warm up: connections, the agent's identity and policy.
        interleaved(&ends, TOOL_REQ, 4, 50, false).await?;
        let n = args.requests;
        println!("llm-bench: {n} requests per figure, {} concurrent clients; load average before: {}", args.clients, load());
        if !args.only_concurrent {
            let (d, g) = interleaved(&ends, TEXT_REQ, 1, n, false).await?;
            report("text-only response, 1 client", d, g, Some(0.3));
            // An agent deep in a session resends its whole history with every request.
            let long = long_conversation(100);
            interleaved(&ends, long, 1, 10, false).await?;
            let (d, g) = interleaved(&ends, long, 1, n, false).await?;
            report(&format!("text-only, {} KiB history, 100 tool results", long.len() / 1024), d, g, None);
            let (d, g) = interleaved(&ends, TOOL_REQ, 1, n, false).await?;
            report("one tool call (decided, durable), 1 client", d, g, Some(2.0));
        }
        let per = (n / args.clients).max(10);
        // The first requests at this concurrency open the connections and grow the agent's
        // decider pool: reported on their own line, then the steady state is timed.
        let (d, g) = interleaved(&ends, TOOL_REQ, args.clients, 4, false).await?;
        report(&format!("one tool call, {} clients, cold (pool growing)", args.clients), d, g, None);
        let before = last_decision()?;
        let gateway_cpu = || gateway_pid.as_deref().map_or(0.0, cpu_secs);
        let cpu_before = (cpu_secs(&daemon_pid), gateway_cpu(), cpu_secs("self"));
        let (d, g) = interleaved(&ends, TOOL_REQ, args.clients, per, false).await?;
        let calls = g.len() as f64;
        let per_call = |after: f64, before: f64| (after - before) / calls * 1e6;
        let (daemon_us, gateway_us, here_us) = (
            per_call(cpu_secs(&daemon_pid), cpu_before.0),
            per_call(gateway_cpu(), cpu_before.1),
            per_call(cpu_secs("self"), cpu_before.2),
        );
        report(&format!("one tool call, {} clients", args.clients), d, g, Some(5.0));
        commits_since(before)?;
        if gateway_pid.is_some() {
            println!(
                "{:<44} CPU per gateway tool call: daemon {daemon_us:.0} us, gateway {gateway_us:.0} us; this process (clients and upstream, both halves) {here_us:.0} us",
                ""
            );
        } else {
            println!(
                "{:<44} CPU per gateway tool call: daemon {daemon_us:.0} us; this process (clients, upstream, gateway; both halves) {here_us:.0} us",
                ""
            );
        }
        if args.only_concurrent {
            return Ok(());
        }
        let (d, g) = interleaved(&ends, STREAM_REQ, 1, n, true).await?;
        report("stream: time to first text byte, 1 client", d, g, Some(0.3));
        let direct_rps = throughput(&client, &up_addr, "direct", args.clients, args.seconds).await?;
        let gw_rps = throughput(&client, &gw_addr, &token, args.clients, args.seconds).await?;
        println!(
            "requests/s, text-only, {} clients: upstream alone {direct_rps:.0}, through the gateway {gw_rps:.0} ({:.0}% of alone)",
            args.clients,
            gw_rps / direct_rps * 100.0
        );
        println!("load average after: {}", load());
        Ok::<_, anyhow::Error>(())
    })?;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
