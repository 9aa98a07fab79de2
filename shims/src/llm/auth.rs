//! Who is calling: the agent's ledgerd token, sent where the SDK sends its API key
//! (`x-api-key: lgt_…` or `Authorization: Bearer lgt_…`), is resolved to a registered agent
//! by the daemon (`IdentifyAgent`, which only hashes it), and cached for [`IDENTITY_TTL`].
//!
//! Each agent gets a small pool of [`Decider`]s (each its own `shim_id` with its own
//! gap-free `shim_seq`), so concurrent requests of one agent are decided in parallel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ledger_proto::pb;
use tokio::sync::{Mutex, MutexGuard};

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

/// One agent, as identified by its token.
pub struct AgentCtx {
    pub agent: String,
    deciders: Vec<Mutex<Decider>>,
    next: AtomicUsize,
    /// The policy as last fetched, for the request side (which must not wait behind a
    /// decider that is busy appending).
    policy: std::sync::Mutex<Option<(Instant, FetchedPolicy)>>,
}

impl std::fmt::Debug for AgentCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCtx").field("agent", &self.agent).finish_non_exhaustive()
    }
}

impl AgentCtx {
    pub fn new(opts: ShimOptions, pool: usize) -> AgentCtx {
        let agent = opts.agent.clone();
        let deciders =
            (0..pool.max(1)).map(|_| Mutex::new(Decider::new(opts.clone(), "llm-gateway"))).collect();
        AgentCtx { agent, deciders, next: AtomicUsize::new(0), policy: std::sync::Mutex::new(None) }
    }

    /// The agent's policy, fetched (by one of its deciders) at most every [`POLICY_TTL`].
    pub async fn policy(&self) -> Result<FetchedPolicy, ShimError> {
        if let Ok(cached) = self.policy.lock()
            && let Some((at, p)) = cached.as_ref()
            && at.elapsed() < POLICY_TTL
        {
            return Ok(p.clone());
        }
        let fetched = self.decider().await.policy().await?;
        if let Ok(mut cached) = self.policy.lock() {
            *cached = Some((Instant::now(), fetched.clone()));
        }
        Ok(fetched)
    }

    /// A decider of this agent's pool: a free one if any, else the next in turn.
    pub async fn decider(&self) -> MutexGuard<'_, Decider> {
        let n = self.deciders.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.deciders[(start + i) % n].try_lock() {
                return guard;
            }
        }
        self.deciders[start % n].lock().await
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
    pool: usize,
    known: Mutex<HashMap<String, Known>>,
    client: Mutex<Option<Client>>,
}

impl Identity {
    pub fn new(socket: std::path::PathBuf, fail_open: bool, pool: usize) -> Identity {
        Identity { socket, fail_open, pool, known: Mutex::new(HashMap::new()), client: Mutex::new(None) }
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
                let ctx = match cached {
                    Some((_, ctx)) if ctx.agent == agent => ctx,
                    _ => {
                        let opts = ShimOptions {
                            socket: self.socket.clone(),
                            agent,
                            token: token.to_string(),
                            fail_open: self.fail_open,
                        };
                        Arc::new(AgentCtx::new(opts, self.pool))
                    }
                };
                self.known
                    .lock()
                    .await
                    .insert(token.to_string(), Known { checked: Instant::now(), ctx: ctx.clone() });
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

    async fn ask(&self, token: &str) -> Result<String, Refusal> {
        let mut slot = self.client.lock().await;
        if slot.is_none() {
            let c = tokio::time::timeout(RPC_TIMEOUT, Client::connect(&self.socket)).await;
            match c {
                Ok(Ok(c)) => *slot = Some(c),
                Ok(Err(e)) => {
                    return Err(Refusal::Unavailable(format!(
                        "cannot reach ledgerd to check the agent token: {e}"
                    )));
                }
                Err(_) => {
                    return Err(Refusal::Unavailable(
                        "ledgerd did not answer the token check in time".into(),
                    ));
                }
            }
        }
        let Some(client) = slot.as_mut() else {
            return Err(Refusal::Unavailable("no connection to ledgerd".into()));
        };
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
                *slot = None;
                Err(Refusal::Unavailable(format!("ledgerd refused the token check: {}", status.message())))
            }
            Err(_) => {
                *slot = None;
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
