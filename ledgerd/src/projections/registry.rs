//! The agent registry and the policy store: projections of the log's admin entries.
//!
//! [`State`] is what the entries `agent_registered`, `agent_updated`, `agent_retired` and
//! `policy_changed` add up to, with their whole history (so "as it stood at T" questions
//! are answered without replaying the log). The writer thread owns the authoritative
//! copy: it validates each admin change against it, assigns policy versions, and after
//! the commit publishes a new snapshot that every connection reads ([`Shared`]).
//!
//! Stored in sled, written in the same commit as the entries: `agents` (name ‖ 0x00 ‖ seq
//! → JSON [`AgentState`], one per change) and `policies` (agent ‖ 0x00 ‖ version → JSON
//! [`PolicyState`]), before the agent index's end marker, which therefore covers them too.
//! After a crash [`State::catch_up`] replays the entries past that marker; when the trees
//! were never built (the `meta` key `projections` is absent) or on `ledgerd
//! --rebuild-projections`, both are rebuilt from the whole log.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ledger_proto::pb::{self, Kind};
use ledger_query::policy::Policy;
use serde::{Deserialize, Serialize};

use crate::storage::store::{Store, StoreError, Writes, write_in_order};

const BUILT_KEY: &str = "projections";

/// One agent as it stood after one change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub purpose: String,
    pub scope: String,
    /// BLAKE3 of the agent's token, hex. The token itself is never stored.
    pub token_hash: String,
    pub retired: bool,
    pub retired_reason: String,
    pub registered_time: i64,
    pub registered_seq: u64,
    pub changed_time: i64,
    pub changed_seq: u64,
}

/// One version of one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Agent name, or `*` for the default policy.
    pub agent: String,
    pub version: u64,
    pub text: String,
    pub hash: String,
    pub prev_hash: String,
    pub author: String,
    pub approver: String,
    pub reason: String,
    pub time: i64,
    pub seq: u64,
    pub writer_uid: u32,
}

/// A policy version, with its compiled document if it is the newest of its policy.
///
/// Only the newest version of each policy is kept compiled: a policy with heavy patterns
/// must not be held once per version (1.35 GB each, issue 12), nor compiled again for every
/// version at each start. Older versions are compiled when read ([`PolicyEntry::policy`]:
/// a decision citing an old version, `policy check` at a past time) and not kept.
#[derive(Clone, Debug)]
pub struct PolicyEntry {
    pub state: PolicyState,
    compiled: Option<Arc<Policy>>,
}

impl PolicyEntry {
    /// The compiled document (compiled now if this is an older version).
    pub fn policy(&self) -> Result<Arc<Policy>, Refused> {
        match &self.compiled {
            Some(p) => Ok(p.clone()),
            None => compile(&self.state).map(Arc::new),
        }
    }
}

/// Compiles a stored policy version.
fn compile(state: &PolicyState) -> Result<Policy, Refused> {
    Policy::parse(&state.text).map(|p| p.with_version(state.version)).map_err(|e| {
        Refused(format!(
            "policy {:?} version {} (entry {}) does not parse: {}",
            state.agent,
            state.version,
            state.seq,
            e.render(&state.text)
        ))
    })
}

/// Why an admin change was refused (the message goes back to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The registry and policies with their history (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Every state of every agent name, oldest first.
    agents: BTreeMap<String, Vec<AgentState>>,
    /// Every version of every policy (`*` included), oldest first.
    policies: BTreeMap<String, Vec<PolicyEntry>>,
    /// A policy the admin service compiled (off the writer thread) for the change being
    /// committed; [`State::apply`] takes it when its text is the one committed.
    prepared: Option<Arc<Policy>>,
}

/// The published snapshot, read by every connection.
pub type Shared = Arc<RwLock<Arc<State>>>;

/// The kinds this projection is made of.
pub fn is_admin_kind(kind: i32) -> bool {
    matches!(
        Kind::try_from(kind),
        Ok(Kind::AgentRegistered | Kind::AgentUpdated | Kind::AgentRetired | Kind::PolicyChanged)
    )
}

fn key(name: &str, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// What an admin entry carries in `details`.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct AdminDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approver: String,
    /// The user name of the uid that made the change, for people reading the log.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
}

impl AdminDetails {
    pub fn parse(entry: &pb::Entry) -> Result<AdminDetails, Refused> {
        if entry.details.is_empty() {
            return Ok(AdminDetails::default());
        }
        serde_json::from_str(&entry.details)
            .map_err(|e| Refused(format!("entry {} has malformed details: {e}", entry.seq)))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl State {
    /// The agent's current state (retired agents included).
    pub fn agent(&self, name: &str) -> Option<&AgentState> {
        self.agents.get(name).and_then(|h| h.last())
    }

    /// The agent as it stood at time `t` (None if not registered yet then).
    pub fn agent_at(&self, name: &str, t: i64) -> Option<&AgentState> {
        self.agents.get(name)?.iter().rev().find(|a| a.changed_time <= t)
    }

    /// Every agent as it stood at `t` (`None` = now), by name.
    pub fn agents_at(&self, t: Option<i64>) -> Vec<&AgentState> {
        self.agents
            .values()
            .filter_map(|h| match t {
                None => h.last(),
                Some(t) => h.iter().rev().find(|a| a.changed_time <= t),
            })
            .collect()
    }

    /// Every version of a policy (`*` for the default), oldest first.
    pub fn policy_history(&self, agent: &str) -> &[PolicyEntry] {
        self.policies.get(agent).map_or(&[], Vec::as_slice)
    }

    /// A given version of `agent`'s own policy.
    pub fn policy_version(&self, agent: &str, version: u64) -> Option<&PolicyEntry> {
        self.policy_history(agent).iter().find(|p| p.state.version == version)
    }

    /// `agent`'s own policy in force at `t` (`None` = now).
    pub fn own_policy_at(&self, agent: &str, t: Option<i64>) -> Option<&PolicyEntry> {
        let history = self.policy_history(agent);
        match t {
            None => history.last(),
            Some(t) => history.iter().rev().find(|p| p.state.time <= t),
        }
    }

    /// The policy that applies to `agent` at `t`: its own, else the `*` default.
    pub fn applicable_policy(&self, agent: &str, t: Option<i64>) -> Option<&PolicyEntry> {
        self.own_policy_at(agent, t).or_else(|| self.own_policy_at("*", t))
    }

    /// Checks an admin entry against the current state and completes it (a policy's
    /// version and previous hash are assigned here, in commit order), without applying it.
    pub fn prepare(&self, entry: &mut pb::Entry) -> Result<(), Refused> {
        let name = entry.agent.clone();
        let mut details = AdminDetails::parse(entry)?;
        let active = self.agent(&name).filter(|a| !a.retired);
        match Kind::try_from(entry.kind) {
            Ok(Kind::AgentRegistered) => {
                if active.is_some() {
                    return Err(Refused(format!(
                        "agent {name:?} is already registered; update it with `ledgerctl agents update`, or retire it first"
                    )));
                }
                // The registration introduces the id: it carries it in `agent_id` like every
                // later entry of the agent, so `agent_id = "…"` finds the agent's whole life.
                entry.agent_id = details.id.clone();
            }
            Ok(Kind::AgentUpdated | Kind::AgentRetired) => {
                let agent = active.ok_or_else(|| match self.agent(&name) {
                    Some(_) => Refused(format!("agent {name:?} is retired; register a new agent instead")),
                    None => Refused(format!(
                        "no agent named {name:?} is registered (see `ledgerctl agents list`)"
                    )),
                })?;
                details.id = agent.id.clone();
            }
            Ok(Kind::PolicyChanged) => {
                if name != "*" && active.is_none() {
                    return Err(Refused(format!(
                        "no active agent named {name:?}: register it first (`ledgerctl agents register`), or set the default policy for every agent with agent `*`"
                    )));
                }
                let last = self.policy_history(&name).last();
                entry.policy_version = last.map_or(1, |p| p.state.version + 1);
                details.prev_hash = last.map(|p| p.state.hash.clone()).unwrap_or_default();
                if let Some(agent) = active {
                    details.id = agent.id.clone();
                    entry.agent_id = agent.id.clone();
                }
            }
            _ => return Err(Refused("not an admin entry".into())),
        }
        if let Some(agent) = active {
            entry.agent_id = agent.id.clone();
        }
        entry.details = details.to_json();
        Ok(())
    }

    /// Applies a committed admin entry (seq and time assigned).
    pub fn apply(&mut self, entry: &pb::Entry) -> Result<(), Refused> {
        let details = AdminDetails::parse(entry)?;
        let name = &entry.agent;
        let (t, seq) = (entry.time_unix_nanos, entry.seq);
        match Kind::try_from(entry.kind) {
            Ok(Kind::AgentRegistered) => {
                self.agents.entry(name.clone()).or_default().push(AgentState {
                    id: details.id,
                    name: name.clone(),
                    owner: details.owner.unwrap_or_default(),
                    purpose: details.purpose.unwrap_or_default(),
                    scope: details.scope.unwrap_or_default(),
                    token_hash: details.token_hash.unwrap_or_default(),
                    retired: false,
                    retired_reason: String::new(),
                    registered_time: t,
                    registered_seq: seq,
                    changed_time: t,
                    changed_seq: seq,
                });
            }
            Ok(Kind::AgentUpdated | Kind::AgentRetired) => {
                let history = self
                    .agents
                    .get_mut(name)
                    .ok_or_else(|| Refused(format!("entry {seq}: unknown agent {name:?}")))?;
                let mut next = history
                    .last()
                    .cloned()
                    .ok_or_else(|| Refused(format!("entry {seq}: unknown agent {name:?}")))?;
                if entry.kind == Kind::AgentRetired as i32 {
                    next.retired = true;
                    next.retired_reason = entry.reason.clone();
                }
                if let Some(v) = details.owner {
                    next.owner = v;
                }
                if let Some(v) = details.purpose {
                    next.purpose = v;
                }
                if let Some(v) = details.scope {
                    next.scope = v;
                }
                if let Some(v) = details.token_hash {
                    next.token_hash = v;
                }
                next.changed_time = t;
                next.changed_seq = seq;
                history.push(next);
            }
            Ok(Kind::PolicyChanged) => {
                let text = details.text.unwrap_or_default();
                let hash = ledger_proto::hex(blake3::hash(text.as_bytes()).as_bytes());
                // Never compiled here, on the writer thread: the admin service compiled
                // it; a replay compiles only the newest versions, after it.
                let compiled = match self.prepared.take() {
                    Some(p) if p.hash_hex() == hash => {
                        Some(Arc::new(Arc::unwrap_or_clone(p).with_version(entry.policy_version)))
                    }
                    _ => None,
                };
                let state = PolicyState {
                    agent: name.clone(),
                    version: entry.policy_version,
                    hash,
                    text,
                    prev_hash: details.prev_hash,
                    author: details.author,
                    approver: details.approver,
                    reason: entry.reason.clone(),
                    time: t,
                    seq,
                    writer_uid: entry.writer_uid,
                };
                let history = self.policies.entry(name.clone()).or_default();
                if let Some(previous) = history.last_mut() {
                    previous.compiled = None;
                }
                history.push(PolicyEntry { state, compiled });
            }
            _ => {}
        }
        Ok(())
    }

    /// The sled writes that store the effect of `entry` (already applied).
    pub fn batch_for(&self, entry: &pb::Entry, agents: &mut Writes, policies: &mut Writes) {
        let name = &entry.agent;
        if entry.kind == Kind::PolicyChanged as i32 {
            if let Some(p) = self.policy_version(name, entry.policy_version) {
                policies.push((
                    key(name, entry.policy_version),
                    serde_json::to_vec(&p.state).unwrap_or_default(),
                ));
            }
        } else if let Some(a) = self.agent(name).filter(|a| a.changed_seq == entry.seq) {
            agents.push((key(name, entry.seq), serde_json::to_vec(a).unwrap_or_default()));
        }
    }

    /// Loads the stored projection.
    pub fn load(store: &Store) -> Result<State, StoreError> {
        let mut state = State::default();
        for item in store.agents.iter() {
            let (_, v) = item?;
            let a: AgentState = serde_json::from_slice(&v)
                .map_err(|e| StoreError::BadMeta { key: "agents", detail: e.to_string() })?;
            state.agents.entry(a.name.clone()).or_default().push(a);
        }
        for item in store.policies.iter() {
            let (_, v) = item?;
            let p: PolicyState = serde_json::from_slice(&v)
                .map_err(|e| StoreError::BadMeta { key: "policies", detail: e.to_string() })?;
            state.policies.entry(p.agent.clone()).or_default().push(PolicyEntry { state: p, compiled: None });
        }
        state.compile_newest().map_err(|e| StoreError::BadMeta { key: "policies", detail: e.0 })?;
        Ok(state)
    }

    /// Hands [`State::apply`] the compiled form of the policy about to be committed (or
    /// takes back one left over).
    pub fn offer(&mut self, policy: Option<Arc<Policy>>) {
        self.prepared = policy;
    }

    /// Compiles the newest version of every policy that is not compiled yet (after a
    /// load or a replay); an error names the version that does not parse.
    pub fn compile_newest(&mut self) -> Result<(), Refused> {
        for history in self.policies.values_mut() {
            if let Some(newest) = history.last_mut()
                && newest.compiled.is_none()
            {
                newest.compiled = Some(Arc::new(compile(&newest.state)?));
            }
        }
        Ok(())
    }

    /// Whether the projection trees were ever built for this store.
    pub fn exists(store: &Store) -> Result<bool, StoreError> {
        Ok(store.meta.get(BUILT_KEY)?.is_some())
    }

    /// Records that the projection trees are built (they are kept up to date from then on).
    pub fn mark_exists(store: &Store) -> Result<(), StoreError> {
        store.meta.insert(BUILT_KEY, &[1u8])?;
        Ok(())
    }

    /// Replays entries `from..to` into the state and the trees (after a crash, or into
    /// empty trees for a rebuild). Idempotent: replaying an entry twice writes the same keys.
    pub fn catch_up(&mut self, store: &Store, from: u64, to: u64) -> Result<u64, StoreError> {
        let mut replayed = 0;
        let (mut agents, mut policies) = (Writes::new(), Writes::new());
        let mut reader = store.reader();
        for seq in from..to {
            // Only admin entries are decoded in full.
            let Some(kind) = reader.with_record(seq, |r| r.kind)? else { continue };
            if !is_admin_kind(kind) {
                continue;
            }
            let Some(entry) = reader.with_record(seq, |e| e.to_entry())? else {
                continue;
            };
            let already = match Kind::try_from(entry.kind) {
                Ok(Kind::PolicyChanged) => self.policy_version(&entry.agent, entry.policy_version).is_some(),
                _ => self.agents.get(&entry.agent).is_some_and(|h| h.iter().any(|a| a.changed_seq == seq)),
            };
            if !already {
                self.apply(&entry).map_err(|e| StoreError::BadMeta { key: "projections", detail: e.0 })?;
            }
            self.batch_for(&entry, &mut agents, &mut policies);
            replayed += 1;
        }
        write_in_order(&store.agents, agents)?;
        write_in_order(&store.policies, policies)?;
        self.compile_newest().map_err(|e| StoreError::BadMeta { key: "policies", detail: e.0 })?;
        Ok(replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_changed(seq: u64, version: u64, text: &str) -> pb::Entry {
        pb::Entry {
            seq,
            kind: Kind::PolicyChanged as i32,
            agent: "*".into(),
            policy_version: version,
            details: AdminDetails { text: Some(text.into()), ..Default::default() }.to_json(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_newest_version_of_a_policy_stays_compiled() {
        let one = "rule a: deny tool = \"x\"\ndefault allow\n";
        let two = "rule b: deny tool = \"y\"\ndefault allow\n";
        let mut state = State::default();
        state.offer(Some(Arc::new(Policy::parse(one).expect("parses"))));
        state.apply(&policy_changed(1, 1, one)).expect("apply");
        assert!(state.policy_history("*")[0].compiled.is_some(), "the offered policy is taken");
        // A policy offered for another text is not used; a replay compiles nothing.
        state.offer(Some(Arc::new(Policy::parse(one).expect("parses"))));
        state.apply(&policy_changed(2, 2, two)).expect("apply");
        let history = state.policy_history("*");
        assert!(history[0].compiled.is_none(), "the older version is no longer kept compiled");
        assert!(history[1].compiled.is_none());
        state.compile_newest().expect("compile");
        let history = state.policy_history("*");
        assert!(history[0].compiled.is_none() && history[1].compiled.is_some());
        // The old version is still there to read, compiled on demand.
        let old = history[0].policy().expect("compiles");
        assert_eq!((old.version(), old.rules()[0].id.as_str()), (Some(1), "a"));
        assert_eq!(history[1].policy().expect("compiled").rules()[0].id, "b");
    }
}
