//! ledger-shims, the enforcement shims (run as `ledgerctl shim …`), on top of the client
//! library: decide a tool call under the agent's policy, record the decision in
//! the ledger, and only then answer (docs/SHIMS.md).
//!
//! [`Decider`] is shared by the three shims ([`claude`], the Claude Code hook, [`mcp`], the
//! MCP stdio proxy, and [`llm`], the LLM gateway). It fetches the agent's policy (its own, else the default policy of
//! agent `*`), checks that the text hashes to the hash the daemon gives, parses it, keeps
//! it for [`POLICY_TTL`], evaluates each call locally with `ledger_query::policy`, and
//! appends the decision durably before returning it.
//!
//! **Fail closed**: when the daemon cannot be reached, there is no policy, the policy does
//! not parse or its hash does not match, or the append fails, [`Decider::decide`] returns a
//! [`ShimError`] that says why and what to check, and each shim turns it into a refusal.
//! Only [`ShimOptions::fail_open`] (`--fail-open`) turns such an error into an allow, and
//! that is said loudly on stderr and recorded in the ledger when the daemon can be reached.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ledger_proto::pb;
use ledger_query::policy::{Call, Effect, Policy};

use ledger_client::{Client, ClientError};

// One module per agent host.
pub mod claude;
pub mod llm;
pub mod mcp;

/// How long a fetched policy is used before it is fetched again.
pub const POLICY_TTL: Duration = Duration::from_secs(2);

/// How long one daemon call may take before the shim gives up (and fails closed).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// What a shim needs to know, from its flags.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The agent whose policy decides.
    pub agent: String,
    /// The agent's token (`--token` / `$LEDGER_AGENT_TOKEN`), sent with every entry; may be empty.
    pub token: String,
    /// Allow calls when no decision can be made or recorded (never the default).
    pub fail_open: bool,
}

/// A refusal to decide: why, and what to check. Shims deny (fail closed) on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShimError(pub String);

/// A decision that was made and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allow: bool,
    /// The rule id, `default`, or `fail-open`.
    pub rule: String,
    /// The decision's seq in the ledger (`None` only for a fail-open decision that could
    /// not be recorded).
    pub seq: Option<u64>,
    /// The policy's one-line reason (or why the call was let through under `--fail-open`).
    pub reason: String,
    /// The policy version that decided (0 under `--fail-open`).
    pub policy_version: u64,
    /// This shim's decision number (`shim_seq`).
    pub shim_seq: u64,
}

impl Verdict {
    /// `allow` or `deny`.
    pub fn effect(&self) -> &'static str {
        if self.allow { "allow" } else { "deny" }
    }

    /// `ledger seq N`, or `not recorded`.
    pub fn seq_text(&self) -> String {
        self.seq.map_or_else(|| "not recorded".to_string(), |s| format!("ledger seq {s}"))
    }
}

/// One tool call to decide.
#[derive(Debug, Clone, Default)]
pub struct ShimCall {
    pub tool: String,
    /// The parameters as JSON text.
    pub params: String,
    pub session: String,
    pub action: String,
    /// Extra context for the entry's `details` (a JSON object; the shim adds its own keys).
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A policy as fetched: whose it is (the agent, or `*`), and the parsed document.
#[derive(Debug, Clone)]
pub struct FetchedPolicy {
    pub owner: String,
    pub policy: Arc<Policy>,
    pub version: u64,
    pub hash: String,
}

/// Decides calls for one shim process (see the module docs).
pub struct Decider {
    opts: ShimOptions,
    /// The shim's kind, recorded in `details.shim` (`claude-code`, `mcp`).
    kind: &'static str,
    client: Option<Client>,
    cached: Option<(Instant, FetchedPolicy)>,
    shim_id: String,
    seq: u64,
    /// An append was sent and its answer not yet taken (still true if the caller dropped
    /// the call midway).
    sending: bool,
    /// The `shim_seq` its last recorded heartbeat carried.
    beat: Option<u64>,
}

impl std::fmt::Debug for Decider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decider")
            .field("agent", &self.opts.agent)
            .field("shim_id", &self.shim_id)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// Resolves on SIGTERM or SIGINT (never, if the handlers cannot be installed).
pub(crate) async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A query string literal for `s`.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A random id for one shim process (hex of 16 random bytes).
fn new_shim_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: still unique enough per process for gap finding.
        let seed = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
        bytes.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ShimError> {
    match tokio::time::timeout(RPC_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ShimError(format!("{what}: {e}"))),
        Err(_) => Err(ShimError(format!(
            "{what}: ledgerd did not answer within {}s; check that it is running and not stuck",
            RPC_TIMEOUT.as_secs()
        ))),
    }
}

impl Decider {
    /// A decider for `opts`; `kind` names the shim in each entry's details.
    pub fn new(opts: ShimOptions, kind: &'static str) -> Decider {
        Decider {
            opts,
            kind,
            client: None,
            cached: None,
            shim_id: new_shim_id(),
            seq: 0,
            sending: false,
            beat: None,
        }
    }

    /// This process's shim id (each decision's `shim_id`).
    pub fn shim_id(&self) -> &str {
        &self.shim_id
    }

    /// The options it was made with.
    pub fn options(&self) -> &ShimOptions {
        &self.opts
    }

    /// Whether a call of it was dropped while its append was on the way: that entry may
    /// still reach the daemon after a later one of the same `shim_id`, so a pool retires
    /// such a decider instead of reusing it.
    pub fn interrupted(&self) -> bool {
        self.sending
    }

    /// Whether it holds a connection (it drops the one that failed a call).
    pub fn connected(&self) -> bool {
        self.client.is_some()
    }

    /// Makes its calls on `client` (a clone shares the connection: gRPC calls on one
    /// connection run concurrently) until a call fails; then it connects on its own.
    pub fn use_client(&mut self, client: Client) {
        self.client = Some(client);
    }

    /// The policy it holds and when that was fetched.
    pub fn cached_policy(&self) -> Option<&(Instant, FetchedPolicy)> {
        self.cached.as_ref()
    }

    /// Takes `policy`, fetched `at`, if it is newer than the one it holds (so deciders of
    /// one agent share a fetch).
    pub fn offer_policy(&mut self, at: Instant, policy: &FetchedPolicy) {
        if self.cached.as_ref().is_none_or(|(mine, _)| *mine < at) {
            self.cached = Some((at, policy.clone()));
        }
    }

    async fn client(&mut self) -> Result<&mut Client, ShimError> {
        if self.client.is_none() {
            let client = timed("cannot reach ledgerd", Client::connect(&self.opts.socket)).await?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| ShimError("no connection to ledgerd".into()))
    }

    /// The agent's applicable policy, fetched (and checked) at most every [`POLICY_TTL`].
    pub async fn policy(&mut self) -> Result<FetchedPolicy, ShimError> {
        if let Some((at, p)) = &self.cached
            && at.elapsed() < POLICY_TTL
        {
            return Ok(p.clone());
        }
        let result = self.fetch_policy().await;
        if result.is_err() {
            // Reconnect next time: the connection may be what failed.
            self.client = None;
            self.cached = None;
        }
        let fetched = result?;
        self.cached = Some((Instant::now(), fetched.clone()));
        Ok(fetched)
    }

    async fn fetch_policy(&mut self) -> Result<FetchedPolicy, ShimError> {
        let agent = self.opts.agent.clone();
        let mut found = None;
        for owner in [agent.as_str(), "*"] {
            let client = self.client().await?;
            let request = pb::GetPolicyRequest { agent: owner.to_string(), version: 0, at_unix_nanos: 0 };
            let answer = tokio::time::timeout(RPC_TIMEOUT, client.admin().get_policy(request)).await;
            match answer {
                Ok(Ok(p)) => {
                    found = Some(p.into_inner());
                    break;
                }
                Ok(Err(status)) if status.code() == tonic::Code::NotFound => continue,
                Ok(Err(status)) => {
                    return Err(ShimError(format!(
                        "cannot read the policy of agent {owner:?}: ledgerd refused: {}",
                        status.message()
                    )));
                }
                Err(_) => {
                    return Err(ShimError(format!(
                        "cannot read the policy of agent {owner:?}: ledgerd did not answer within {}s",
                        RPC_TIMEOUT.as_secs()
                    )));
                }
            }
        }
        let Some(p) = found else {
            return Err(ShimError(format!(
                "agent {agent:?} has no policy and there is no default policy (agent \"*\"); set one with `ledgerctl policy set {agent} --file POLICY`"
            )));
        };
        let actual = blake3::hash(p.text.as_bytes()).to_hex().to_string();
        if !actual.eq_ignore_ascii_case(p.hash.trim()) {
            return Err(ShimError(format!(
                "the policy of {:?} version {} does not match its hash (ledgerd says {}, the text hashes to {actual}); it was not used: check the ledger with `ledgerctl verify`",
                p.agent, p.version, p.hash
            )));
        }
        let policy = Policy::parse(&p.text).map_err(|e| {
            ShimError(format!(
                "the policy of {:?} version {} does not parse:\n{}check it with `ledgerctl policy show {}` and fix it with `ledgerctl policy set`",
                p.agent,
                p.version,
                e.render(&p.text),
                p.agent
            ))
        })?;
        let policy = Arc::new(policy.with_version(p.version));
        Ok(FetchedPolicy { owner: p.agent, policy, version: p.version, hash: p.hash })
    }

    /// Decides `call` and records the decision; only then returns it. Errors fail closed,
    /// unless `--fail-open` was given (then the call is allowed, loudly, and recorded if
    /// possible).
    pub async fn decide(&mut self, call: &ShimCall) -> Result<Verdict, ShimError> {
        self.seq += 1;
        let shim_seq = self.seq;
        match self.decide_inner(call, shim_seq).await {
            Ok(v) => Ok(v),
            Err(e) if self.opts.fail_open => Ok(self.fail_open(call, shim_seq, &e).await),
            Err(e) => Err(e),
        }
    }

    async fn decide_inner(&mut self, call: &ShimCall, shim_seq: u64) -> Result<Verdict, ShimError> {
        let fetched = self.policy().await?;
        let decision = fetched.policy.evaluate(&Call {
            tool: &call.tool,
            params: &call.params,
            agent: &self.opts.agent,
            session: &call.session,
            action: &call.action,
        });
        let allow = decision.effect == Effect::Allow;
        let rule = decision.rule_id.to_string();
        let reason = decision.reason.clone();
        let mut details = call.details.clone();
        details.insert("policy_agent".into(), fetched.owner.clone().into());
        details.insert("policy_hash".into(), fetched.hash.clone().into());
        let decision = if allow { pb::Decision::Allow } else { pb::Decision::Deny };
        let entry = self.decision_entry(call, shim_seq, (decision, &rule, fetched.version, &reason), details);
        let seq = self.append(entry).await?;
        Ok(Verdict { allow, rule, seq: Some(seq), reason, policy_version: fetched.version, shim_seq })
    }

    /// A decision entry for `call`: (decision, rule, policy version, reason), with `details`
    /// and this shim's kind in it.
    fn decision_entry(
        &self,
        call: &ShimCall,
        shim_seq: u64,
        (decision, rule, policy_version, reason): (pb::Decision, &str, u64, &str),
        mut details: serde_json::Map<String, serde_json::Value>,
    ) -> pb::NewEntry {
        details.insert("shim".into(), self.kind.into());
        pb::NewEntry {
            kind: pb::Kind::Decision as i32,
            agent: self.opts.agent.clone(),
            session: call.session.clone(),
            action: call.action.clone(),
            tool: call.tool.clone(),
            params: call.params.clone(),
            decision: decision as i32,
            rule: rule.to_string(),
            policy_version,
            reason: reason.to_string(),
            shim_id: self.shim_id.clone(),
            shim_seq,
            ref_seq: None,
            details: serde_json::Value::Object(details).to_string(),
            agent_token: self.opts.token.clone(),
        }
    }

    /// The seq of the latest entry matching the query `filter` (a `where` clause of
    /// docs/QUERY.md), if any.
    pub async fn latest_seq(&mut self, filter: &str) -> Result<Option<u64>, ShimError> {
        let text = format!("{filter} | sort seq desc | limit 1 | fields seq");
        let client = self.client().await?;
        let mut stream = timed("cannot look up the ledger", client.query(&text, "")).await?;
        let mut found = None;
        while let Some(rows) = timed("cannot look up the ledger", stream.next_rows()).await? {
            for row in rows {
                if let Some(ledger_query::Value::Int(n)) = row.first() {
                    found = u64::try_from(*n).ok();
                }
            }
        }
        Ok(found)
    }

    /// Records a denial that no policy made: the call could not be judged (for example its
    /// arguments are not JSON), so it is refused without evaluating it, under `rule`. Like
    /// [`Decider::decide`], the entry is durable before this returns, and errors fail closed
    /// (there is no fail-open for a call that cannot be judged).
    pub async fn refuse(&mut self, call: &ShimCall, rule: &str, reason: &str) -> Result<Verdict, ShimError> {
        self.seq += 1;
        let shim_seq = self.seq;
        let version = match self.policy().await {
            Ok(p) => p.version,
            Err(_) => 0,
        };
        let entry = self.decision_entry(
            call,
            shim_seq,
            (pb::Decision::Deny, rule, version, reason),
            call.details.clone(),
        );
        let seq = self.append(entry).await?;
        Ok(Verdict {
            allow: false,
            rule: rule.to_string(),
            seq: Some(seq),
            reason: reason.to_string(),
            policy_version: version,
            shim_seq,
        })
    }

    /// Appends one entry durably (on error the connection is dropped and re-made next time).
    pub async fn append(&mut self, entry: pb::NewEntry) -> Result<u64, ShimError> {
        self.append_as("cannot record the decision in the ledger", entry).await
    }

    async fn append_as(&mut self, what: &str, entry: pb::NewEntry) -> Result<u64, ShimError> {
        self.client().await?;
        self.sending = true;
        let mut refused = false;
        let result = match self.client.as_mut() {
            Some(client) => {
                timed(what, async {
                    let answer = client.append_each(entry).await;
                    // The daemon refused this one entry (too big, bad JSON): the
                    // connection is fine and stays.
                    refused = matches!(&answer, Err(ClientError::Rpc(s)) if s.code() == tonic::Code::InvalidArgument);
                    answer
                })
                .await
            }
            None => Err(ShimError("no connection to ledgerd".into())),
        };
        self.sending = false;
        if result.is_err() && !refused {
            self.client = None;
        }
        Ok(result
            .map_err(|e| ShimError(format!("{e}; check that ledgerd is running and its disk is not full")))?
            .seq)
    }

    /// The number of the last decision this shim sent (or tried to send), 0 before the
    /// first: what its heartbeats carry.
    pub fn last_shim_seq(&self) -> u64 {
        self.seq
    }

    /// Records a `shim_heartbeat` entry: this shim's id and, in `shim_seq`, the number of
    /// its last decision (not a new number), so a decision that never reached the ledger
    /// shows as a gap even when no later decision follows it. `at_exit` marks the one sent
    /// when the shim ends cleanly (`action` = `exit`, else `heartbeat`). A heartbeat is not
    /// a decision: the caller reports a failure and carries on.
    pub async fn heartbeat(&mut self, at_exit: bool) -> Result<u64, ShimError> {
        let mut details = serde_json::Map::new();
        details.insert("shim".into(), self.kind.into());
        let entry = pb::NewEntry {
            kind: pb::Kind::ShimHeartbeat as i32,
            agent: self.opts.agent.clone(),
            action: if at_exit { "exit" } else { "heartbeat" }.into(),
            shim_id: self.shim_id.clone(),
            shim_seq: self.seq,
            details: serde_json::Value::Object(details).to_string(),
            agent_token: self.opts.token.clone(),
            ..Default::default()
        };
        let seq = self.append_as("cannot record the shim heartbeat in the ledger", entry).await?;
        self.beat = Some(self.seq);
        Ok(seq)
    }

    /// Whether it decided anything since its last recorded heartbeat.
    pub fn beat_due(&self) -> bool {
        self.seq > 0 && self.beat != Some(self.seq)
    }

    async fn fail_open(&mut self, call: &ShimCall, shim_seq: u64, error: &ShimError) -> Verdict {
        let reason =
            format!("FAIL-OPEN: allowed without a policy decision because --fail-open was given: {error}");
        eprintln!(
            "ledgerctl shim: WARNING: --fail-open: allowing {} for agent {} WITHOUT a policy decision: {error}",
            call.tool, self.opts.agent
        );
        let mut details = call.details.clone();
        details.insert("fail_open".into(), true.into());
        let entry =
            self.decision_entry(call, shim_seq, (pb::Decision::Allow, "fail-open", 0, &reason), details);
        let seq = match self.append(entry).await {
            Ok(seq) => Some(seq),
            Err(e) => {
                eprintln!("ledgerctl shim: WARNING: the fail-open decision was not recorded either: {e}");
                None
            }
        };
        Verdict { allow: true, rule: "fail-open".into(), seq, reason, policy_version: 0, shim_seq }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_escaped() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn shim_ids_are_random_hex() {
        let (a, b) = (new_shim_id(), new_shim_id());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// A decider whose socket leads nowhere, and a call to decide.
    fn unreachable(dir: &tempfile::TempDir, fail_open: bool) -> (Decider, ShimCall) {
        let opts = ShimOptions {
            socket: dir.path().join("nothing.sock"),
            agent: "a".into(),
            token: String::new(),
            fail_open,
        };
        let call = ShimCall { tool: "fs.read_file".into(), params: "{}".into(), ..ShimCall::default() };
        (Decider::new(opts, "test"), call)
    }

    #[tokio::test]
    async fn an_unreachable_daemon_fails_closed_and_numbers_the_attempt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut d, call) = unreachable(&dir, false);
        let err = d.decide(&call).await.expect_err("fails closed");
        assert!(err.0.contains("cannot reach ledgerd"), "{err}");
        assert!(d.decide(&call).await.is_err());
        assert_eq!(d.seq, 2, "each attempt uses a shim_seq, so a lost one shows as a gap");
    }

    #[tokio::test]
    async fn fail_open_allows_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut d, call) = unreachable(&dir, true);
        let v = d.decide(&call).await.expect("fail-open allows");
        assert!(v.allow && v.rule == "fail-open" && v.seq.is_none(), "{v:?}");
        assert!(v.reason.contains("FAIL-OPEN"), "{v:?}");
    }
}
