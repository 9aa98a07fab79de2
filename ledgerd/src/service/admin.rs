//! The `Admin` gRPC service: the agent registry and policies. Every change becomes an
//! admin entry in the log (through the writer, which checks it against the current state);
//! reads come from the published projection snapshot.

use std::sync::Arc;

use ledger_proto::pb::{self, admin_server::Admin};
use ledger_query::policy::{Call, Policy};
use tonic::{Request, Response, Status};

use crate::projections::registry::{AdminDetails, AgentState, PolicyEntry, Shared, State};
use crate::scoring::writer::WriterHandle;
use crate::service::auth::{Need, Role};
use crate::service::intake::{Peer, token_hash};
use crate::service::server::{Access, status};

/// Longest agent name accepted.
const MAX_NAME: usize = 128;

/// The admin service state.
#[derive(Clone)]
pub struct AdminService {
    pub(crate) writer: WriterHandle,
    pub(crate) shared: Shared,
    pub(crate) host: Arc<str>,
    /// The role check shared with the ledger service (refusals are recorded).
    pub(crate) access: Access,
    /// Where `Status` reads the daemon's health from.
    pub(crate) status: crate::service::status::StatusSource,
}

impl AdminService {
    fn state(&self) -> Arc<State> {
        match self.shared.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Appends an admin entry written by the caller of `req`.
    async fn change(
        &self,
        who: Peer,
        kind: pb::Kind,
        agent: &str,
        reason: &str,
        details: AdminDetails,
        policy: Option<Arc<Policy>>,
    ) -> Result<pb::Entry, Status> {
        let entry = pb::Entry {
            kind: kind as i32,
            agent: agent.to_string(),
            reason: reason.to_string(),
            writer_uid: who.uid,
            writer_gid: who.gid,
            writer_pid: who.pid,
            host: self.host.to_string(),
            details: details.to_json(),
            ..Default::default()
        };
        self.writer.admin(entry, policy).await.map_err(status::writer)
    }

    fn agent_reply(&self, name: &str) -> Result<pb::Agent, Status> {
        let state = self.state();
        let agent = state.agent(name).ok_or_else(|| not_registered(name))?;
        Ok(agent_pb(&state, agent))
    }
}

fn not_registered(name: &str) -> Status {
    Status::not_found(format!("no agent named {name:?} is registered (see `ledgerctl agents list`)"))
}

fn check_name(name: &str) -> Result<(), Status> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "agent name {name:?} is not valid: use 1 to {MAX_NAME} letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

fn agent_pb(state: &State, a: &AgentState) -> pb::Agent {
    pb::Agent {
        id: a.id.clone(),
        name: a.name.clone(),
        owner: a.owner.clone(),
        purpose: a.purpose.clone(),
        scope: a.scope.clone(),
        retired: a.retired,
        retired_reason: a.retired_reason.clone(),
        registered_unix_nanos: a.registered_time,
        registered_seq: a.registered_seq,
        changed_unix_nanos: a.changed_time,
        changed_seq: a.changed_seq,
        policy_version: state.own_policy_at(&a.name, None).map_or(0, |p| p.state.version),
    }
}

fn policy_pb(p: &PolicyEntry) -> pb::PolicyVersion {
    let s = &p.state;
    pb::PolicyVersion {
        agent: s.agent.clone(),
        version: s.version,
        text: s.text.clone(),
        hash: s.hash.clone(),
        prev_hash: s.prev_hash.clone(),
        author: s.author.clone(),
        approver: s.approver.clone(),
        reason: s.reason.clone(),
        time_unix_nanos: s.time,
        seq: s.seq,
        writer_uid: s.writer_uid,
    }
}

/// A fresh agent id (UUID version 4) and token (256 random bits).
fn new_id_and_token() -> Result<(String, String), Status> {
    let mut bytes = [0u8; 48];
    getrandom::fill(&mut bytes).map_err(|e| Status::internal(format!("no randomness from the OS: {e}")))?;
    let (id, token) = bytes.split_at_mut(16);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let h = crate::log::merkle::hex(id);
    let uuid = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    Ok((uuid, format!("lgt_{}", crate::log::merkle::hex(token))))
}

/// `0` means "now".
fn at(t: i64) -> Option<i64> {
    (t != 0).then_some(t)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn register_agent(
        &self,
        req: Request<pb::RegisterAgentRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        let who = self.access.require(&req, Role::Admin, "RegisterAgent").await?;
        let r = req.get_ref();
        check_name(&r.name)?;
        if r.owner.trim().is_empty() || r.purpose.trim().is_empty() {
            return Err(Status::invalid_argument(
                "an agent needs an owner and a purpose (--owner, --purpose)",
            ));
        }
        let (id, token) = new_id_and_token()?;
        let details = AdminDetails {
            id,
            owner: Some(r.owner.clone()),
            purpose: Some(r.purpose.clone()),
            scope: Some(r.scope.clone()),
            token_hash: Some(token_hash(&token)),
            ..Default::default()
        };
        let entry = self.change(who, pb::Kind::AgentRegistered, &r.name, "", details, None).await?;
        let agent = self.agent_reply(&r.name)?;
        Ok(Response::new(pb::AgentToken { agent: Some(agent), token, seq: entry.seq }))
    }

    async fn update_agent(
        &self,
        req: Request<pb::UpdateAgentRequest>,
    ) -> Result<Response<pb::AgentChange>, Status> {
        let who = self.access.require(&req, Role::Admin, "UpdateAgent").await?;
        let r = req.get_ref();
        if r.owner.is_none() && r.purpose.is_none() && r.scope.is_none() {
            return Err(Status::invalid_argument("nothing to change: give --owner, --purpose or --scope"));
        }
        let details = AdminDetails {
            owner: r.owner.clone(),
            purpose: r.purpose.clone(),
            scope: r.scope.clone(),
            ..Default::default()
        };
        let entry = self.change(who, pb::Kind::AgentUpdated, &r.name, &r.reason, details, None).await?;
        Ok(Response::new(pb::AgentChange { agent: Some(self.agent_reply(&r.name)?), seq: entry.seq }))
    }

    async fn retire_agent(
        &self,
        req: Request<pb::RetireAgentRequest>,
    ) -> Result<Response<pb::AgentChange>, Status> {
        let who = self.access.require(&req, Role::Admin, "RetireAgent").await?;
        let r = req.get_ref();
        if r.reason.trim().is_empty() {
            return Err(Status::invalid_argument("retiring an agent needs a reason (--reason)"));
        }
        let entry = self
            .change(who, pb::Kind::AgentRetired, &r.name, &r.reason, AdminDetails::default(), None)
            .await?;
        Ok(Response::new(pb::AgentChange { agent: Some(self.agent_reply(&r.name)?), seq: entry.seq }))
    }

    async fn rotate_token(
        &self,
        req: Request<pb::RotateTokenRequest>,
    ) -> Result<Response<pb::AgentToken>, Status> {
        let who = self.access.require(&req, Role::Admin, "RotateToken").await?;
        let r = req.get_ref();
        let (_, token) = new_id_and_token()?;
        let details = AdminDetails { token_hash: Some(token_hash(&token)), ..Default::default() };
        let reason = if r.reason.is_empty() { "token rotated" } else { r.reason.as_str() };
        let entry = self.change(who, pb::Kind::AgentUpdated, &r.name, reason, details, None).await?;
        Ok(Response::new(pb::AgentToken { agent: Some(self.agent_reply(&r.name)?), token, seq: entry.seq }))
    }

    async fn get_agent(&self, req: Request<pb::GetAgentRequest>) -> Result<Response<pb::Agent>, Status> {
        let _who = self.access.require(&req, Need::one_of(&[Role::Auditor, Role::Admin]), "GetAgent").await?;
        Ok(Response::new(self.agent_reply(&req.get_ref().name)?))
    }

    async fn identify_agent(
        &self,
        req: Request<pb::IdentifyAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let _who =
            self.access.require(&req, Need::one_of(&[Role::Writer, Role::Admin]), "IdentifyAgent").await?;
        let token = &req.get_ref().token;
        let unknown = || {
            Status::not_found(
                "no registered agent holds this token; register the agent with `ledgerctl agents register` or rotate its token",
            )
        };
        if token.is_empty() {
            return Err(unknown());
        }
        let hash = token_hash(token);
        let state = self.state();
        let agent = state.agents_at(None).into_iter().find(|a| a.token_hash == hash).ok_or_else(unknown)?;
        Ok(Response::new(agent_pb(&state, agent)))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::AgentList>, Status> {
        let _who =
            self.access.require(&req, Need::one_of(&[Role::Auditor, Role::Admin]), "ListAgents").await?;
        let r = req.get_ref();
        let state = self.state();
        let agents = state
            .agents_at(at(r.at_unix_nanos))
            .into_iter()
            .filter(|a| r.include_retired || !a.retired)
            .map(|a| agent_pb(&state, a))
            .collect();
        Ok(Response::new(pb::AgentList { agents }))
    }

    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        let who = self.access.require(&req, Role::Admin, "SetPolicy").await?;
        let r = req.get_ref();
        if r.agent != "*" {
            check_name(&r.agent)?;
        }
        if r.author.trim().is_empty() || r.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a policy change needs an author and a reason (--author, --reason)",
            ));
        }
        // Compiled here, on a blocking thread (a document of heavy patterns takes a while,
        // within the bound of `policy::MAX_REGEX_BYTES`): never on the runtime's threads,
        // nor on the writer thread, which takes the compiled form.
        let text = r.text.clone();
        let parsed = tokio::task::spawn_blocking(move || Policy::parse(&text))
            .await
            .map_err(|e| Status::internal(format!("compiling the policy failed: {e}")))?;
        let policy = parsed.map_err(|e| super::server::status::policy(&e, &r.text))?;
        let details = AdminDetails {
            text: Some(r.text.clone()),
            hash: policy.hash_hex(),
            author: r.author.clone(),
            approver: r.approver.clone(),
            ..Default::default()
        };
        let entry = self
            .change(who, pb::Kind::PolicyChanged, &r.agent, &r.reason, details, Some(Arc::new(policy)))
            .await?;
        let state = self.state();
        let version = state
            .policy_version(&r.agent, entry.policy_version)
            .ok_or_else(|| Status::internal("the policy was written but is not in the store"))?;
        Ok(Response::new(policy_pb(version)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyVersion>, Status> {
        let _who = self.access.require(&req, Need::any(), "GetPolicy").await?;
        let r = req.get_ref();
        let state = self.state();
        let found = if r.version != 0 {
            state.policy_version(&r.agent, r.version)
        } else {
            state.own_policy_at(&r.agent, at(r.at_unix_nanos))
        };
        let p = found.ok_or_else(|| {
            Status::not_found(match (r.version, r.at_unix_nanos) {
                (0, 0) => {
                    format!("agent {:?} has no policy of its own (see `ledgerctl policy history`)", r.agent)
                }
                (0, _) => format!("agent {:?} had no policy of its own at that time", r.agent),
                (v, _) => format!("agent {:?} has no policy version {v}", r.agent),
            })
        })?;
        Ok(Response::new(policy_pb(p)))
    }

    async fn get_policy_history(
        &self,
        req: Request<pb::PolicyHistoryRequest>,
    ) -> Result<Response<pb::PolicyHistory>, Status> {
        let _who = self
            .access
            .require(&req, Need::one_of(&[Role::Auditor, Role::Admin]), "GetPolicyHistory")
            .await?;
        let state = self.state();
        let versions = state.policy_history(&req.get_ref().agent).iter().map(policy_pb).collect();
        Ok(Response::new(pb::PolicyHistory { versions }))
    }

    async fn check_policy(
        &self,
        req: Request<pb::CheckPolicyRequest>,
    ) -> Result<Response<pb::PolicyCheck>, Status> {
        let _who =
            self.access.require(&req, Need::one_of(&[Role::Auditor, Role::Admin]), "CheckPolicy").await?;
        let r = req.get_ref();
        let state = self.state();
        let p = state.applicable_policy(&r.agent, None).ok_or_else(|| {
            Status::not_found(format!(
                "no policy applies to {:?}: it has none and there is no `*` default",
                r.agent
            ))
        })?;
        let call = Call { tool: &r.tool, params: &r.params, agent: &r.agent, ..Call::default() };
        let policy = p.policy().map_err(|e| Status::internal(e.0))?;
        let decision = policy.evaluate(&call);
        let rules = policy
            .explain(&call)
            .into_iter()
            .map(|(rule, matched)| pb::RuleResult {
                id: rule.id.clone(),
                effect: rule.effect.as_str().to_string(),
                condition: rule.condition_text.clone(),
                matched,
                line: u32::try_from(rule.line).unwrap_or(u32::MAX),
            })
            .collect();
        Ok(Response::new(pb::PolicyCheck {
            decision: decision.effect.as_str().to_string(),
            rule: decision.rule_id.to_string(),
            reason: decision.reason.clone(),
            policy_agent: p.state.agent.clone(),
            version: p.state.version,
            hash: p.state.hash.clone(),
            rules,
        }))
    }

    async fn get_access_review(
        &self,
        req: Request<pb::AccessReviewRequest>,
    ) -> Result<Response<pb::AccessReview>, Status> {
        let _who =
            self.access.require(&req, Need::one_of(&[Role::Auditor, Role::Admin]), "GetAccessReview").await?;
        let t = at(req.get_ref().at_unix_nanos);
        let state = self.state();
        let rows = state
            .agents_at(t)
            .into_iter()
            .filter(|a| !a.retired)
            .map(|a| {
                let policy = state.applicable_policy(&a.name, t);
                let compiled = policy.and_then(|p| p.policy().ok());
                let mut rules: Vec<String> = compiled
                    .as_ref()
                    .map(|p| {
                        p.rules()
                            .iter()
                            .map(|r| format!("{} {} ({})", r.effect, r.condition_text, r.id))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(p) = &compiled {
                    rules.push(format!("default {}", p.default_effect()));
                }
                pb::AccessReviewRow {
                    agent: Some(agent_pb(&state, a)),
                    policy_agent: policy.map(|p| p.state.agent.clone()).unwrap_or_default(),
                    policy_version: policy.map_or(0, |p| p.state.version),
                    policy_hash: policy.map(|p| p.state.hash.clone()).unwrap_or_default(),
                    rules,
                }
            })
            .collect();
        Ok(Response::new(pb::AccessReview {
            at_unix_nanos: t.unwrap_or_else(crate::log::merkle::now_nanos),
            rows,
        }))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::DaemonStatus>, Status> {
        // Any role: health is what every operator and monitor needs, and it shows no
        // entry, only sizes, times and the publishing targets' errors.
        self.access.require(&req, Need::any(), "Status").await?;
        Ok(Response::new(self.status.status().await?))
    }
}
