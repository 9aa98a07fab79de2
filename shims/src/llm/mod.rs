//! The LLM gateway, `ledgerctl shim llm` (docs/SHIMS.md): an HTTP server that agents use as
//! their model API. It forwards each request to the real upstream with the real key, and
//! decides every tool call in the response under the agent's policy, durably, before any
//! byte of that call reaches the agent.
//!
//! Modules: [`api`] routing and error shapes, [`auth`] token → agent, [`upstream`] the
//! HTTP(S) client, [`sse`] event framing, [`stream`] the streaming driver, [`decide`] the
//! decisions, [`outcomes`] the request side, [`rawjson`] order-keeping edits, and one module
//! per API: [`anthropic`], [`chat`], [`responses`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

pub mod anthropic;
pub mod api;
pub mod auth;
pub mod chat;
pub mod decide;
pub mod outcomes;
pub mod rawjson;
pub mod responses;
pub mod sse;
pub mod stream;
pub mod upstream;

use api::{Api, Body, Fault, Vendor, error_body};
use auth::{AgentCtx, Identity, Refusal};
use decide::{Memory, Meta, decide_all};
use rawjson::Obj;
use upstream::{Target, Upstream};

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The public Anthropic API.
pub const DEFAULT_ANTHROPIC: &str = "https://api.anthropic.com";
/// The public OpenAI API (the agent's paths keep their `/v1`).
pub const DEFAULT_OPENAI: &str = "https://api.openai.com";
/// The default largest request body (the Anthropic API's own limit is 32 MB).
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;
/// The largest non-streamed upstream response the gateway reads.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;
/// The most deciders (each its own `shim_id`, deciding one call at a time) per agent: the
/// most tool calls of one agent decided at the same moment; more wait for a decider.
pub const DEFAULT_DECIDERS: usize = 128;

/// `ledgerctl shim llm` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LlmArgs {
    /// A TOML config file (keys as the long flags with _ for -; flags win)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to listen [default: 127.0.0.1:8787; port 0 picks a free port]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The Anthropic API [default: https://api.anthropic.com]
    #[arg(long, value_name = "URL")]
    pub upstream_anthropic: Option<String>,
    /// The OpenAI API [default: https://api.openai.com]
    #[arg(long, value_name = "URL")]
    pub upstream_openai: Option<String>,
    /// File holding the real Anthropic key [default: $CREDENTIALS_DIRECTORY/anthropic-key, else $ANTHROPIC_API_KEY]
    #[arg(long, value_name = "FILE")]
    pub anthropic_key_file: Option<PathBuf>,
    /// File holding the real OpenAI key [default: $CREDENTIALS_DIRECTORY/openai-key, else $OPENAI_API_KEY]
    #[arg(long, value_name = "FILE")]
    pub openai_key_file: Option<PathBuf>,
    /// The largest request body accepted, in bytes [default: 33554432]
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// The most tool calls of one agent decided at once, each by its own decider (shim_id), made as needed [default: 128]
    #[arg(long, value_name = "N")]
    pub deciders_per_agent: Option<usize>,
    /// Heartbeat interval of each decider (200ms, 30s, 5m; 0 or off: only at exit) [default: 60s]
    #[arg(long, value_name = "INTERVAL")]
    pub heartbeat: Option<String>,
    /// Allow calls when no decision can be made or recorded (loud on stderr, recorded when possible)
    #[arg(long)]
    pub fail_open: bool,
}

/// The config file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    socket: Option<PathBuf>,
    upstream_anthropic: Option<String>,
    upstream_openai: Option<String>,
    anthropic_key_file: Option<PathBuf>,
    openai_key_file: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    deciders_per_agent: Option<usize>,
    heartbeat: Option<String>,
    fail_open: Option<bool>,
}

/// Everything the gateway runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub socket: PathBuf,
    pub anthropic: Target,
    pub openai: Target,
    pub max_body_bytes: usize,
    pub deciders_per_agent: usize,
    /// Between heartbeats (`Duration::ZERO`: only the ones at exit).
    pub heartbeat: std::time::Duration,
    pub fail_open: bool,
}

fn read_key(file: Option<&Path>, credential: &str, env: &str) -> Result<Option<String>, String> {
    let from_credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(credential))
        .filter(|p| p.exists());
    match file.map(Path::to_path_buf).or(from_credentials) {
        Some(path) => std::fs::read_to_string(&path)
            .map(|k| Some(k.trim().to_string()))
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display())),
        None => Ok(std::env::var(env).ok().filter(|k| !k.trim().is_empty())),
    }
}

impl Config {
    /// Flags over the config file over the defaults. `socket` is `--socket` if given.
    pub fn load(args: &LlmArgs, socket: Option<PathBuf>, default_socket: PathBuf) -> Result<Config, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .map_err(|e| format!("the config file {} is not valid: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let anthropic_key = read_key(
            args.anthropic_key_file.as_deref().or(file.anthropic_key_file.as_deref()),
            "anthropic-key",
            "ANTHROPIC_API_KEY",
        )?;
        let openai_key = read_key(
            args.openai_key_file.as_deref().or(file.openai_key_file.as_deref()),
            "openai-key",
            "OPENAI_API_KEY",
        )?;
        let pick = |flag: &Option<String>, file: &Option<String>, default: &str| {
            flag.clone().or_else(|| file.clone()).unwrap_or_else(|| default.to_string())
        };
        Ok(Config {
            listen: pick(&args.listen, &file.listen, DEFAULT_LISTEN),
            socket: socket.or(file.socket).unwrap_or(default_socket),
            anthropic: Target::new(
                &pick(&args.upstream_anthropic, &file.upstream_anthropic, DEFAULT_ANTHROPIC),
                anthropic_key,
            )
            .map_err(|e| format!("upstream_anthropic: {e}"))?,
            openai: Target::new(
                &pick(&args.upstream_openai, &file.upstream_openai, DEFAULT_OPENAI),
                openai_key,
            )
            .map_err(|e| format!("upstream_openai: {e}"))?,
            max_body_bytes: args.max_body_bytes.or(file.max_body_bytes).unwrap_or(DEFAULT_MAX_BODY),
            deciders_per_agent: args
                .deciders_per_agent
                .or(file.deciders_per_agent)
                .unwrap_or(DEFAULT_DECIDERS)
                .max(1),
            heartbeat: match args.heartbeat.as_deref().or(file.heartbeat.as_deref()) {
                Some(text) => crate::mcp::parse_heartbeat(text).map_err(|e| format!("heartbeat: {e}"))?,
                None => crate::mcp::DEFAULT_HEARTBEAT,
            },
            fail_open: args.fail_open || file.fail_open.unwrap_or(false),
        })
    }
}

/// The gateway's shared state.
pub struct Gateway {
    config: Config,
    identity: Identity,
    upstream: Upstream,
    memory: Arc<Memory>,
    removed: outcomes::Removed,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("config", &self.config.listen).finish_non_exhaustive()
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

fn refuse(vendor: Vendor, fault: Fault, message: &str) -> Response<Body> {
    let mut response = Response::new(full(error_body(vendor, fault, message)));
    *response.status_mut() = fault.status();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl Gateway {
    pub fn new(config: Config) -> Result<Gateway, String> {
        let upstream = Upstream::new(config.anthropic.clone(), config.openai.clone())?;
        let identity = Identity::new(config.socket.clone(), config.fail_open, config.deciders_per_agent);
        Ok(Gateway {
            config,
            identity,
            upstream,
            memory: Arc::new(Memory::default()),
            removed: outcomes::Removed::default(),
        })
    }

    /// Answers one request (never fails: every error is an API-shaped response).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let api = Api::route(req.method(), req.uri().path(), req.headers());
        let vendor = api.vendor();
        let Some(token) = auth::token(req.headers()) else {
            return refuse(
                vendor,
                Fault::Auth,
                "no API key: send the agent's ledgerd token (lgt_…) as the API key (x-api-key or Authorization: Bearer)",
            );
        };
        let ctx = match self.identity.resolve(&token).await {
            Ok(ctx) => ctx,
            Err(Refusal::Unknown(why)) => return refuse(vendor, Fault::Auth, &why),
            Err(Refusal::Unavailable(why)) => return refuse(vendor, Fault::Unavailable, &why),
        };
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.config.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return refuse(
                    vendor,
                    Fault::TooLarge,
                    &format!(
                        "the request body is over the gateway's limit of {} bytes (max_body_bytes); send less or raise the limit",
                        self.config.max_body_bytes
                    ),
                );
            }
            Err(e) => {
                return refuse(vendor, Fault::BadRequest, &format!("cannot read the request body: {e}"));
            }
        };
        if !api.governed() {
            return self.pass(vendor, &parts, body).await;
        }
        // Read as raw members: a long conversation is checked, not rebuilt (its text is
        // neither copied into a tree nor written again unless a tool is taken out).
        let request = match Obj::parse_bytes(&body) {
            Ok(obj) => obj,
            Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() => {
                return refuse(vendor, Fault::BadRequest, "the request body is not a JSON object");
            }
            Err(e) => {
                return refuse(vendor, Fault::BadRequest, &format!("the request body is not JSON: {e}"));
            }
        };
        let meta = Meta {
            model: request.str("model").unwrap_or_default(),
            stream: request
                .get("stream")
                .and_then(|v| serde_json::from_str::<bool>(v.get()).ok())
                .unwrap_or(false),
        };
        let results = outcomes::results(api, &request);
        let body = match outcomes::filter_tools(&ctx, &self.removed, api, request).await {
            Some(new) => Bytes::from(new),
            None => body,
        };
        let record = outcomes::record(&ctx, &self.memory, api, results);
        let send = self.upstream.send(vendor, &parts, body);
        let ((), answer) = tokio::join!(record, send);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return refuse(vendor, Fault::Upstream, &e),
        };
        if !answer.status().is_success() {
            return answer.map(BodyExt::boxed);
        }
        // The gateway asked for `identity`; a body it cannot read could hide a tool call.
        if let Some(enc) = answer.headers().get(header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return refuse(
                vendor,
                Fault::Upstream,
                &format!(
                    "the upstream sent a {} body although the gateway asked for identity; it was not passed on (its tool calls could not be checked)",
                    String::from_utf8_lossy(enc.as_bytes())
                ),
            );
        }
        let is_sse = answer
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if is_sse {
            let (mut head, body) = answer.into_parts();
            head.headers = upstream::end_to_end(&head.headers);
            let rewriter: Box<dyn stream::Rewriter> = match api {
                Api::Anthropic => Box::new(anthropic::Stream::default()),
                Api::Chat => Box::new(chat::Stream::default()),
                _ => Box::new(responses::Stream::default()),
            };
            let body = stream::drive(body, rewriter, ctx, self.memory.clone(), api, meta);
            return Response::from_parts(head, body);
        }
        self.whole(api, ctx, meta, answer).await
    }

    /// A non-streamed response: decided as a whole; sent byte for byte unless a call is denied.
    async fn whole(
        &self,
        api: Api,
        ctx: Arc<AgentCtx>,
        meta: Meta,
        answer: Response<Incoming>,
    ) -> Response<Body> {
        let vendor = api.vendor();
        let (mut head, body) = answer.into_parts();
        head.headers = upstream::end_to_end(&head.headers);
        let bytes = match Limited::new(body, MAX_RESPONSE_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return refuse(
                    vendor,
                    Fault::Upstream,
                    &format!("cannot read the upstream's response: {e}; retry the request"),
                );
            }
        };
        // A body the gateway cannot read could hold a call it never saw (an SDK's parser
        // may accept what serde_json refuses, such as Python's `NaN`): it is not passed on.
        let obj = match Obj::parse_bytes(&bytes) {
            Ok(obj) => obj,
            Err(e) => {
                return refuse(
                    vendor,
                    Fault::Upstream,
                    &format!(
                        "the upstream's response is not a JSON object the gateway can read ({e}); it was not passed on (its tool calls could not be checked); retry the request"
                    ),
                );
            }
        };
        let rewritten = match api {
            Api::Anthropic => {
                let found = anthropic::calls(&obj);
                let calls: Vec<_> = found.iter().map(|(_, c)| c.clone()).collect();
                let rulings = decide_all(&ctx, &self.memory, api, &meta, &calls).await;
                (!rulings.iter().all(|r| r.allow)).then(|| anthropic::rewrite(obj, &found, &rulings))
            }
            Api::Chat => {
                let found = chat::calls(&obj);
                let calls: Vec<_> = found.iter().map(|(_, _, c)| c.clone()).collect();
                let rulings = decide_all(&ctx, &self.memory, api, &meta, &calls).await;
                (!rulings.iter().all(|r| r.allow)).then(|| chat::rewrite(obj, &found, &rulings))
            }
            _ => {
                let found = responses::calls(&obj);
                let calls: Vec<_> = found.iter().map(|(_, c)| c.clone()).collect();
                let rulings = decide_all(&ctx, &self.memory, api, &meta, &calls).await;
                (!rulings.iter().all(|r| r.allow)).then(|| responses::rewrite(obj, &found, &rulings))
            }
        };
        match rewritten {
            None => Response::from_parts(head, full(bytes)),
            Some(Ok(text)) => Response::from_parts(head, full(text)),
            Some(Err(e)) => refuse(
                vendor,
                Fault::Upstream,
                &format!(
                    "a tool call was denied but the response could not be rewritten ({e}); nothing of it was sent"
                ),
            ),
        }
    }

    /// Anything the gateway does not govern: forwarded as it is, with the real key.
    async fn pass(&self, vendor: Vendor, parts: &http::request::Parts, body: Bytes) -> Response<Body> {
        match self.upstream.send(vendor, parts, body).await {
            Ok(answer) => {
                let (mut head, body) = answer.into_parts();
                head.headers = upstream::end_to_end(&head.headers);
                Response::from_parts(head, body.boxed())
            }
            Err(e) => refuse(vendor, Fault::Upstream, &e),
        }
    }
}

/// Heartbeats every `every` until `stop` fires. Told to stop, not aborted, so no heartbeat
/// is cut off mid-append (and recorded after the exit heartbeats).
async fn heartbeats(
    gateway: Arc<Gateway>,
    every: std::time::Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => gateway.identity.heartbeat(false).await,
            _ = &mut stop => return,
        }
    }
}

/// Serves on `listener` until `shutdown` resolves; records the deciders' heartbeats every
/// `heartbeat` meanwhile, and once more (`exit`) at the end.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let every = gateway.config.heartbeat;
    let beat = (!every.is_zero()).then(|| {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        (stop, tokio::spawn(heartbeats(gateway.clone(), every, stopped)))
    });
    accept(gateway.clone(), listener, shutdown).await;
    if let Some((stop, task)) = beat {
        let _ = stop.send(());
        let _ = task.await;
    }
    // A daemon that does not answer must not hold up the stop for long.
    if tokio::time::timeout(crate::RPC_TIMEOUT, gateway.identity.heartbeat(true)).await.is_err() {
        eprintln!(
            "ledgerctl shim llm: the exit heartbeats were not all recorded within {}s",
            crate::RPC_TIMEOUT.as_secs()
        );
    }
}

async fn accept(
    gateway: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("ledgerctl shim llm: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(req).await) }
            });
            // A client that goes away mid-request is its own business: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `config.listen` and returns the listener and its address.
pub async fn bind(config: &Config) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("cannot read the listen address: {e}"))?;
    Ok((listener, addr))
}

/// The whole command: prints `ready listen=ADDR` once listening, serves until SIGTERM.
pub fn main(args: LlmArgs, socket: Option<PathBuf>, default_socket: PathBuf) -> ExitCode {
    let config = match Config::load(&args, socket, default_socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ledgerctl shim llm: error: {e}");
            return ExitCode::from(2);
        }
    };
    for (name, target, var) in
        [("Anthropic", &config.anthropic, "ANTHROPIC_API_KEY"), ("OpenAI", &config.openai, "OPENAI_API_KEY")]
    {
        if target.key.is_none() {
            eprintln!(
                "ledgerctl shim llm: warning: no {name} key (set {var} for the gateway, or --{}-key-file): its requests go upstream without one",
                name.to_lowercase()
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledgerctl shim llm: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        let gateway = Arc::new(Gateway::new(config.clone())?);
        let (listener, addr) = bind(&config).await?;
        println!("ready listen={addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        serve(gateway, listener, crate::terminated()).await;
        Ok::<(), String>(())
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledgerctl shim llm: error: {e}");
            ExitCode::from(2)
        }
    }
}
