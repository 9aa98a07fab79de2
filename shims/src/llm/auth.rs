//! Who is calling: the agent's ledgerd token, sent where the SDK sends its API key
//! (`x-api-key: lgt_…` or `Authorization: Bearer lgt_…`), is resolved to a registered agent
//! by the daemon (`IdentifyAgent`, which only hashes it), and cached for [`IDENTITY_TTL`].
//!
//! Each agent gets a pool of [`Decider`]s, each its own `shim_id` with its own gap-free
//! `shim_seq` and one decision at a time. The pool grows on demand, one decider per tool
//! call decided at the same moment, up to `--deciders-per-agent`; so the concurrent calls
//! of one agent are in flight together and share the daemon's group commit (one device
//! sync) instead of queueing for one. The deciders idle between bursts are kept and
//! reused, the most recently used first. All of them, and the token checks, share one
//! gRPC connection to the daemon ([`Link`]: HTTP/2 carries many calls at once), so the
//! gateway holds one of the daemon's `limits.max_connections` however many agents and
//! deciders it has; a decider whose call failed drops it and the next one reconnects.
//! They also share one policy fetch per [`POLICY_TTL`]. Each decider's last decision is
//! covered by heartbeats ([`AgentCtx::heartbeat`], run by [`super::serve`]).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ledger_proto::pb;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

use ledger_client::Client;

use crate::{Decider, FetchedPolicy, POLICY_TTL, RPC_TIMEOUT, ShimError, ShimOptions};

/// How long a resolved token is trusted before the daemon is asked again (a retired agent
/// or a rotated token is refused at most this long after the change).
pub const IDENTITY_TTL: Duration = Duration::from_secs(30);

/// The token in the request: `x-api-key`, else `Authorization: Bearer`.
pub fn token(headers: &http::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    let rest = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty()).then(|| rest.to_string())
}

/// The gateway's one connection to the daemon, shared by every decider and token check.
pub struct Link {
    socket: std::path::PathBuf,
    client: std::sync::Mutex<Option<Client>>,
    /// Held while connecting, so a burst of callers makes one connection.
    connecting: Mutex<()>,
}

impl Link {
    pub fn new(socket: std::path::PathBuf) -> Link {
        Link { socket, client: std::sync::Mutex::new(None), connecting: Mutex::new(()) }
    }

    fn current(&self) -> Option<Client> {
        self.client.lock().ok().and_then(|c| c.clone())
    }

    /// The shared connection, made now if there is none.
    pub async fn get(&self) -> Result<Client, String> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        match tokio::time::timeout(RPC_TIMEOUT, Client::connect(&self.socket)).await {
            Ok(Ok(c)) => {
                if let Ok(mut slot) = self.client.lock() {
                    *slot = Some(c.clone());
                }
                Ok(c)
            }
            Ok(Err(e)) => Err(format!("cannot reach ledgerd: {e}")),
            Err(_) => {
                Err(format!("cannot reach ledgerd: it did not answer within {}s", RPC_TIMEOUT.as_secs()))
            }
        }
    }

    /// A call on the shared connection failed: the next caller reconnects.
    pub fn broken(&self) {
        if let Ok(mut slot) = self.client.lock() {
            *slot = None;
        }
    }
}

/// One agent, as identified by its token.
pub struct AgentCtx {
    pub agent: String,
    opts: ShimOptions,
    link: Arc<Link>,
    /// One per decider that may be in use at once (`--deciders-per-agent`).
    permits: Semaphore,
    /// Deciders not in use, the most recently used last.
    idle: std::sync::Mutex<Vec<Decider>>,
    /// Deciders made so far (each a `shim_id`).
    made: AtomicUsize,
    /// The policy as last fetched by any of its deciders (handed to the others, and used
    /// by the request side).
    policy: std::sync::Mutex<Option<(Instant, FetchedPolicy)>>,
}

impl std::fmt::Debug for AgentCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCtx").field("agent", &self.agent).finish_non_exhaustive()
    }
}

/// A decider taken from an agent's pool for one decision (or outcome); it goes back to
/// the pool when dropped.
pub struct Lease<'a> {
    ctx: &'a AgentCtx,
    decider: Option<Decider>,
    _permit: Option<SemaphorePermit<'a>>,
}

impl Deref for Lease<'_> {
    type Target = Decider;
    fn deref(&self) -> &Decider {
        // Taken only in `drop`.
        self.decider.as_ref().unwrap_or_else(|| unreachable!("a lease holds its decider until dropped"))
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Decider {
        self.decider.as_mut().unwrap_or_else(|| unreachable!("a lease holds its decider until dropped"))
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(decider) = self.decider.take() else { return };
        if decider.interrupted() {
            // Its request went away mid-append (the client disconnected): the next number
            // of this shim_id could overtake that entry, so the shim_id retires here.
            return;
        }
        if !decider.connected() {
            self.ctx.link.broken();
        }
        if let Some((at, fetched)) = decider.cached_policy()
            && let Ok(mut shared) = self.ctx.policy.lock()
            && shared.as_ref().is_none_or(|(theirs, _)| theirs < at)
        {
            *shared = Some((*at, fetched.clone()));
        }
        if let Ok(mut idle) = self.ctx.idle.lock() {
            idle.push(decider);
        }
    }
}

impl AgentCtx {
    /// An agent whose pool holds at most `most` deciders.
    pub fn new(opts: ShimOptions, link: Arc<Link>, most: usize) -> AgentCtx {
        AgentCtx {
            agent: opts.agent.clone(),
            opts,
            link,
            permits: Semaphore::new(most.clamp(1, Semaphore::MAX_PERMITS)),
            idle: std::sync::Mutex::new(Vec::new()),
            made: AtomicUsize::new(0),
            policy: std::sync::Mutex::new(None),
        }
    }

    /// The agent's policy, fetched (by one of its deciders) at most every [`POLICY_TTL`].
    pub async fn policy(&self) -> Result<FetchedPolicy, ShimError> {
        if let Ok(cached) = self.policy.lock()
            && let Some((at, p)) = cached.as_ref()
            && at.elapsed() < POLICY_TTL
        {
            return Ok(p.clone());
        }
        self.decider().await.policy().await
    }

    /// A decider of this agent's pool: an idle one, else a new one while the pool is under
    /// its size, else the first to come back. It is connected (on the shared connection)
    /// when ledgerd can be reached; when not, its call fails closed and says why.
    pub async fn decider(&self) -> Lease<'_> {
        // The semaphore is never closed, so this waits for a permit and never fails; were
        // it closed, the pool would only lose its bound.
        let permit = self.permits.acquire().await.ok();
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let decider = idle.unwrap_or_else(|| {
            self.made.fetch_add(1, Ordering::Relaxed);
            Decider::new(self.opts.clone(), "llm-gateway")
        });
        self.lease(decider, permit).await
    }

    async fn lease<'a>(&'a self, mut decider: Decider, permit: Option<SemaphorePermit<'a>>) -> Lease<'a> {
        if !decider.connected()
            && let Ok(client) = self.link.get().await
        {
            decider.use_client(client);
        }
        if let Ok(shared) = self.policy.lock()
            && let Some((at, fetched)) = shared.as_ref()
        {
            decider.offer_policy(*at, fetched);
        }
        Lease { ctx: self, decider: Some(decider), _permit: permit }
    }

    /// Records a `shim_heartbeat` for each idle decider that decided something since its
    /// last one (at exit, `at_exit`, for each that ever decided), so a lost last decision
    /// of any `shim_id` shows as a gap. Deciders in use are skipped: their next heartbeat
    /// covers them. Stops at the first failure. Returns what could not be recorded.
    pub async fn heartbeat(&self, at_exit: bool) -> Vec<ShimError> {
        let mut failed = Vec::new();
        let idle = self.idle.lock().map(|idle| idle.len()).unwrap_or(0);
        // The least recently used first; each goes back to the end, so each is seen once.
        for _ in 0..idle {
            let Ok(permit) = self.permits.try_acquire() else { break };
            let taken = self.idle.lock().ok().and_then(|mut idle| (!idle.is_empty()).then(|| idle.remove(0)));
            let Some(decider) = taken else { break };
            let mut lease = self.lease(decider, Some(permit)).await;
            if ((at_exit && lease.last_shim_seq() > 0) || lease.beat_due())
                && let Err(e) = lease.heartbeat(at_exit).await
            {
                // ledgerd is likely away: the others wait for the next round.
                failed.push(e);
                break;
            }
        }
        failed
    }

    /// How many deciders (`shim_id`s) the pool has made.
    pub fn deciders_made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No agent holds it, or the agent is retired (401).
    Unknown(String),
    /// ledgerd could not be asked (503).
    Unavailable(String),
}

struct Known {
    checked: Instant,
    ctx: Arc<AgentCtx>,
}

/// Resolves tokens to agents (see the module docs).
pub struct Identity {
    socket: std::path::PathBuf,
    fail_open: bool,
    most: usize,
    known: Mutex<HashMap<String, Known>>,
    link: Arc<Link>,
}

impl Identity {
    /// Agents of the daemon at `socket`, each with a pool of at most `most` deciders.
    pub fn new(socket: std::path::PathBuf, fail_open: bool, most: usize) -> Identity {
        let link = Arc::new(Link::new(socket.clone()));
        Identity { socket, fail_open, most, known: Mutex::new(HashMap::new()), link }
    }

    /// The agent holding `token`.
    pub async fn resolve(&self, token: &str) -> Result<Arc<AgentCtx>, Refusal> {
        let cached = {
            let known = self.known.lock().await;
            known.get(token).map(|k| (k.checked.elapsed() < IDENTITY_TTL, k.ctx.clone()))
        };
        if let Some((true, ctx)) = &cached {
            return Ok(ctx.clone());
        }
        match self.ask(token).await {
            Ok(agent) => {
                let mut known = self.known.lock().await;
                // Requests that came in together all asked; they must share one agent (one
                // pool), so the first answer's stays.
                let ctx = match known.get(token).map(|k| k.ctx.clone()).or(cached.map(|(_, ctx)| ctx)) {
                    Some(ctx) if ctx.agent == agent => ctx,
                    _ => {
                        let opts = ShimOptions {
                            socket: self.socket.clone(),
                            agent,
                            token: token.to_string(),
                            fail_open: self.fail_open,
                        };
                        Arc::new(AgentCtx::new(opts, self.link.clone(), self.most))
                    }
                };
                known.insert(token.to_string(), Known { checked: Instant::now(), ctx: ctx.clone() });
                Ok(ctx)
            }
            Err(Refusal::Unknown(why)) => {
                self.known.lock().await.remove(token);
                Err(Refusal::Unknown(why))
            }
            // ledgerd is away: an agent already known goes on (its calls fail closed anyway).
            Err(Refusal::Unavailable(why)) => match cached {
                Some((_, ctx)) => Ok(ctx),
                None => Err(Refusal::Unavailable(why)),
            },
        }
    }

    /// Heartbeats of every known agent's deciders ([`AgentCtx::heartbeat`]); failures are
    /// said on stderr (heartbeats are not decisions: the gateway carries on).
    pub async fn heartbeat(&self, at_exit: bool) {
        let mut ctxs: Vec<Arc<AgentCtx>> = Vec::new();
        for known in self.known.lock().await.values() {
            if !ctxs.iter().any(|c| Arc::ptr_eq(c, &known.ctx)) {
                ctxs.push(known.ctx.clone());
            }
        }
        for ctx in ctxs {
            for e in ctx.heartbeat(at_exit).await {
                eprintln!(
                    "ledgerctl shim llm: a heartbeat of agent {} was not recorded (the gateway carries on; calls are refused while no decision can be recorded): {e}",
                    ctx.agent
                );
            }
        }
    }

    async fn ask(&self, token: &str) -> Result<String, Refusal> {
        let mut client = self
            .link
            .get()
            .await
            .map_err(|why| Refusal::Unavailable(format!("cannot check the agent token: {why}")))?;
        let request = pb::IdentifyAgentRequest { token: token.to_string() };
        match tokio::time::timeout(RPC_TIMEOUT, client.admin().identify_agent(request)).await {
            Ok(Ok(agent)) => {
                let agent = agent.into_inner();
                if agent.retired {
                    return Err(Refusal::Unknown(format!(
                        "agent {:?} is retired; register a new agent for this program",
                        agent.name
                    )));
                }
                Ok(agent.name)
            }
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => Err(Refusal::Unknown(
                "the API key is not the token of any registered ledgerd agent: use the lgt_… token from `ledgerctl agents register` as the API key".into(),
            )),
            Ok(Err(status)) => {
                self.link.broken();
                Err(Refusal::Unavailable(format!("ledgerd refused the token check: {}", status.message())))
            }
            Err(_) => {
                self.link.broken();
                Err(Refusal::Unavailable("ledgerd did not answer the token check in time".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_either_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(token(&h), None);
        h.insert("authorization", http::HeaderValue::from_static("Bearer lgt_b"));
        assert_eq!(token(&h).as_deref(), Some("lgt_b"));
        h.insert("x-api-key", http::HeaderValue::from_static("lgt_a"));
        assert_eq!(token(&h).as_deref(), Some("lgt_a"));
        let mut h = http::HeaderMap::new();
        h.insert("authorization", http::HeaderValue::from_static("Basic eA=="));
        assert_eq!(token(&h), None);
        h.insert("authorization", http::HeaderValue::from_static("Bearer "));
        assert_eq!(token(&h), None);
    }
}
