//! The gRPC service on the Unix socket: checks the caller's role ([`Access`]), maps each
//! RPC to the writer or to a read of the store, and maps every library error to a
//! `tonic::Status` in one place ([`status`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use ledger_proto::manifest::{self, ManifestFile};
use ledger_proto::merkle;
use ledger_proto::note::{NoteSigner, NoteVerifier};
use ledger_proto::pb::{self, ledger_server::Ledger};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};

use crate::log::merkle::Ack;
use crate::projections::engine;
use crate::projections::registry::{Shared, State};
use crate::scoring::writer::{WriterError, WriterHandle};
use crate::service::auth::{Need, Refusal, RefusalLimiter, Role, Roles};
use crate::service::intake::{self, Invalid, Peer};
use crate::service::redact::Redactor;
use crate::storage::store::{Store, StoreError};

/// Entries read per blocking chunk when streaming a range.
const READ_CHUNK: u64 = 512;
/// Entries one AppendStream gathers into a single writer command.
const STREAM_CHUNK: usize = 256;
/// Writer commands one AppendStream keeps in flight before waiting for the oldest.
const STREAM_IN_FLIGHT: usize = 32;
/// Entries one `AppendEach` stream keeps in flight (checked and queued, not yet answered)
/// before it reads the next message: the shared stream of a gateway carries the concurrent
/// decisions of all its agents.
const EACH_IN_FLIGHT: usize = 1024;

/// The service state shared by every connection.
#[derive(Clone)]
pub struct LedgerService {
    pub(crate) writer: WriterHandle,
    pub(crate) store: Store,
    pub(crate) verifier: Arc<NoteVerifier>,
    pub(crate) host: Arc<str>,
    /// The registry and policies, as published by the writer after each admin change.
    pub(crate) shared: Shared,
    /// `require_agent_token` from the config: flag appends that carry no token.
    pub(crate) require_token: bool,
    /// The role check every RPC starts with.
    pub(crate) access: Access,
    /// What is redacted from params before they are stored.
    pub(crate) redactor: Arc<Redactor>,
    /// The ledger's own key, for evidence manifests (a clone of the one the log signs
    /// checkpoints with; the writer thread keeps the other).
    pub(crate) manifest_signer: Arc<NoteSigner>,
    /// `limits.max_params_bytes` from the config.
    pub(crate) max_params_bytes: usize,
    /// Keys this ledger signed with before a rotation: checkpoints older than the rotation
    /// verify with one of them.
    pub(crate) retired: Arc<Vec<NoteVerifier>>,
    /// Committed entries, for `Watch`.
    pub(crate) feed: crate::scoring::watch::Feed,
}

impl LedgerService {
    /// The registry and policies as they stand now.
    /// What intake checks an entry against, with `state` the registry and policies now.
    fn intake<'a>(&'a self, state: &'a State) -> intake::Context<'a> {
        intake::Context {
            state,
            require_token: self.require_token,
            redactor: &self.redactor,
            max_params_bytes: self.max_params_bytes,
        }
    }

    fn state(&self) -> Arc<State> {
        match self.shared.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl LedgerService {
    /// Checks that the caller holds a role `need` asks for and returns who it is; see
    /// [`Access::require`].
    pub(crate) fn require<T>(
        &self,
        req: &Request<T>,
        need: impl Into<Need>,
        rpc: &'static str,
    ) -> impl Future<Output = Result<Peer, Status>> + Send + '_ {
        self.access.require(req, need, rpc)
    }
}

/// The caller's credentials as the kernel gave them at accept time (SO_PEERCRED).
fn peer_cred<T>(req: &Request<T>) -> Option<Peer> {
    req.extensions().get::<UdsConnectInfo>().and_then(|info| info.peer_cred).map(|c| Peer {
        uid: c.uid(),
        gid: c.gid(),
        pid: c.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
    })
}

/// The role check every RPC on the socket starts with, shared by every service on it.
/// A refusal is answered with `PERMISSION_DENIED` and recorded in the log as an
/// `access_refused` entry (at most one per uid and RPC per [`crate::service::auth::REFUSAL_WINDOW`];
/// the next one counts those not recorded in `details.suppressed`).
#[derive(Clone)]
pub struct Access {
    roles: Arc<Roles>,
    refusals: Arc<RefusalLimiter>,
    writer: WriterHandle,
    host: Arc<str>,
}

impl Access {
    pub fn new(roles: Arc<Roles>, writer: WriterHandle, host: Arc<str>) -> Access {
        Access { roles, refusals: Arc::default(), writer, host }
    }

    /// `Ok(peer)` if the caller holds a role `need` asks for; otherwise records the refusal
    /// and returns the status to answer with. `rpc` is the RPC's name as in the .proto
    /// (`Query`, `SetPolicy`): it goes into the message and the entry's `tool`.
    ///
    /// Only the credentials are taken from `req`, before the returned future runs, so the
    /// future does not hold the request (a `Streaming` body is not `Sync`).
    pub fn require<T>(
        &self,
        req: &Request<T>,
        need: impl Into<Need>,
        rpc: &'static str,
    ) -> impl Future<Output = Result<Peer, Status>> + Send + '_ {
        self.check(peer_cred(req), need, rpc)
    }

    /// [`Access::require`] for credentials already taken (`None`: the kernel gave none):
    /// also how a long-lived stream checks the role again for each message.
    pub fn check(
        &self,
        peer: Option<Peer>,
        need: impl Into<Need>,
        rpc: &'static str,
    ) -> impl Future<Output = Result<Peer, Status>> + Send + '_ {
        let need = need.into();
        async move {
            let peer = peer.ok_or_else(|| status::no_credentials(rpc))?;
            let Err(refusal) = self.roles.require(&peer, need) else { return Ok(peer) };
            if let Some(suppressed) = self.refusals.admit(peer.uid, rpc, Instant::now()) {
                self.record(&refusal, rpc, suppressed).await;
            }
            Err(status::refused(rpc, &refusal))
        }
    }

    /// The user name of `uid`, if the account files know it.
    pub fn user_name(&self, uid: u32) -> Option<String> {
        self.roles.user_name(uid)
    }

    /// Writes the `access_refused` entry before the caller hears about the refusal. If the
    /// writer cannot take it, the refusal still stands; the daemon's log says why.
    async fn record(&self, refusal: &Refusal, rpc: &'static str, suppressed: u64) {
        let mut details = serde_json::json!({
            "needed_role": refusal.need.name(),
            "held_roles": refusal.held.names(),
            "suppressed": suppressed,
        });
        if let Some(user) = &refusal.user {
            details["user"] = user.as_str().into();
        }
        let mut entry =
            crate::service::intake::own_entry(pb::Kind::AccessRefused, &self.host, refusal.peer, details);
        entry.tool = rpc.into();
        entry.reason = refusal.to_string();
        if let Err(e) = self.writer.append(vec![entry]).await {
            tracing::error!(error = %e, uid = refusal.peer.uid, rpc, "cannot record a refused call in the log");
        }
    }
}

/// The one place library errors become gRPC statuses.
pub(crate) mod status {
    use super::*;

    pub fn invalid(e: Invalid) -> Status {
        Status::invalid_argument(e.0)
    }

    pub fn writer(e: WriterError) -> Status {
        match e {
            WriterError::Rejected(m) => Status::invalid_argument(m),
            WriterError::Failed(_) => Status::internal(e.to_string()),
            WriterError::Stopped => Status::unavailable(e.to_string()),
        }
    }

    pub fn store(e: StoreError) -> Status {
        match e {
            StoreError::NoSuchEntry { .. } => Status::out_of_range(e.to_string()),
            _ => Status::internal(e.to_string()),
        }
    }

    /// A query that does not parse: the errors rendered as the message, the structured
    /// errors (positions included) as JSON in the details, for the client to render; both
    /// kept within gRPC's trailer limits ([`positioned`]).
    pub fn query(e: &ledger_query::QueryErrors, text: &str) -> Status {
        positioned(
            e.errors().iter().map(|x| x.render(text)),
            e.to_json_string_within(text, MAX_DETAILS_BYTES),
        )
    }

    /// A policy document that does not parse, as [`query`].
    pub fn policy(e: &ledger_query::policy::PolicyErrors, text: &str) -> Status {
        positioned(
            e.errors().iter().map(|x| x.render(text)),
            e.to_json_string_within(text, MAX_DETAILS_BYTES),
        )
    }

    /// The most bytes of JSON error details in a status. Message and details travel in
    /// the HTTP/2 trailers, which gRPC C-core clients (Python, C++, Ruby, …) refuse over
    /// 8 KiB by default (answering RESOURCE_EXHAUSTED instead of the error); details are
    /// sent base64-encoded (4/3 of this).
    pub const MAX_DETAILS_BYTES: usize = 3000;
    /// The most bytes of a status message once percent-encoded as gRPC sends it.
    pub const MAX_MESSAGE_BYTES: usize = 1500;

    /// INVALID_ARGUMENT with positioned errors: as many `rendered` errors as fit in
    /// [`MAX_MESSAGE_BYTES`] (the first always, cut if it must be), a line saying how many
    /// more there are, and `details` (already bounded) for clients that render them.
    fn positioned(rendered: impl ExactSizeIterator<Item = String>, details: String) -> Status {
        let total = rendered.len();
        let mut message = String::new();
        let mut shown = 0;
        for r in rendered {
            let next = if shown == 0 { r } else { format!("{message}\n\n{r}") };
            if shown > 0 && grpc_encoded_len(&next) > MAX_MESSAGE_BYTES - 100 {
                break;
            }
            message = next;
            shown += 1;
        }
        message = clip_encoded(&message, MAX_MESSAGE_BYTES - 100);
        if shown < total {
            message.push_str(&format!(
                "\n\n({} more errors; a client that reads the status details shows them)",
                total - shown
            ));
        }
        Status::with_details(tonic::Code::InvalidArgument, message, details.into_bytes().into())
    }

    /// The size of `s` in a `grpc-message` header: bytes outside printable ASCII, and
    /// `%`, are percent-encoded.
    fn grpc_encoded_len(s: &str) -> usize {
        s.bytes().map(|b| if (0x20..=0x7e).contains(&b) && b != b'%' { 1 } else { 3 }).sum()
    }

    /// `s` cut (at a character boundary, `…` marking the cut) so that its encoded size is
    /// at most `max`.
    fn clip_encoded(s: &str, max: usize) -> String {
        if grpc_encoded_len(s) <= max {
            return s.to_string();
        }
        let mut size = 0;
        let mut out = String::new();
        for c in s.chars() {
            let mut buf = [0; 4];
            size += grpc_encoded_len(c.encode_utf8(&mut buf));
            if size > max - 9 {
                break;
            }
            out.push(c);
        }
        out.push('…');
        out
    }

    /// An `AppendStream` that ended early (a refused message, a stopped writer): the cause,
    /// then how many of the stream's entries were appended and the last one's seq, in the
    /// message and as trailers (`ledger_proto::APPENDED_COUNT_TRAILER`, `…_LAST_SEQ_TRAILER`), so a
    /// sender knows where to resume whatever went wrong.
    pub fn stream_stopped(e: Status, done: &pb::AppendStreamResponse) -> Status {
        let stored = if done.count == 0 {
            "no entry of this stream was appended".to_string()
        } else {
            format!(
                "{} entries of this stream were appended (seq {} to {}), nothing after them",
                done.count, done.first_seq, done.last_seq
            )
        };
        let mut status =
            Status::with_details(e.code(), format!("{}; {stored}", e.message()), e.details().to_vec().into());
        let meta = status.metadata_mut();
        meta.insert(ledger_proto::APPENDED_COUNT_TRAILER, done.count.into());
        if done.count > 0 {
            meta.insert(ledger_proto::APPENDED_LAST_SEQ_TRAILER, done.last_seq.into());
        }
        status
    }

    pub fn join(e: tokio::task::JoinError) -> Status {
        Status::internal(format!("a read task failed: {e}"))
    }

    /// A caller without the role the call needs.
    pub fn refused(rpc: &str, refusal: &Refusal) -> Status {
        Status::permission_denied(format!("{rpc}: {refusal}"))
    }

    /// A connection without peer credentials cannot be given any role.
    pub fn no_credentials(rpc: &str) -> Status {
        Status::permission_denied(format!(
            "{rpc}: permission denied: the connection carries no peer credentials (SO_PEERCRED); connect over ledgerd's Unix socket"
        ))
    }
}

impl LedgerService {
    /// The work of `AppendStream`: appends the stream's entries, counting in `result` those
    /// acknowledged, until its end or the first refused message.
    /// The work of one `AppendEach` stream: each message is checked and handed to the
    /// writer as soon as it arrives (so the messages of many callers sharing the stream
    /// join the same group commits), and answered in the order received once durable.
    /// A refused message gets its refusal and the stream goes on; the stream ends (after
    /// answering what is in flight) when the caller closes it, loses the writer role,
    /// the writer stops, or the daemon starts to stop.
    async fn append_each_into(
        self,
        peer: Peer,
        mut inbound: Streaming<pb::AppendRequest>,
        out: tokio::sync::mpsc::Sender<Result<pb::AppendResult, Status>>,
    ) {
        use futures_util::stream::FuturesOrdered;
        use pb::append_result::Result as Answer;
        let refused = |status: Status| pb::AppendResult {
            result: Some(Answer::Refused(pb::AppendRefused {
                code: status.code() as i32,
                message: status.message().to_string(),
            })),
        };
        let mut closing = self.feed.closing();
        let mut in_flight = FuturesOrdered::new();
        // Why the stream ends (after what is in flight is answered), if not by the caller.
        let mut end: Option<Status> = None;
        let mut reading = true;
        let mut received = 0u64;
        loop {
            tokio::select! {
                biased;
                Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                    let answer: Result<pb::AppendResult, Status> = answer;
                    let fatal = answer.is_err();
                    if out.send(answer).await.is_err() || fatal {
                        return;
                    }
                }
                () = futures_util::FutureExt::map(closing.wait_for(|c| *c), drop), if reading => {
                    reading = false;
                    end = Some(Status::unavailable("ledgerd is stopping; append on a new stream when it is back"));
                }
                msg = inbound.next(), if reading && in_flight.len() < EACH_IN_FLIGHT => {
                    let msg = match msg {
                        None => {
                            reading = false;
                            continue;
                        }
                        Some(Err(e)) => {
                            reading = false;
                            end = Some(Status::cancelled(format!("the stream broke after {received} messages: {}", e.message())));
                            continue;
                        }
                        Some(Ok(msg)) => msg,
                    };
                    received += 1;
                    // A role taken away (account files changed) stops the stream at once.
                    if let Err(status) = self.access.check(Some(peer), Role::Writer, "AppendEach").await {
                        reading = false;
                        end = Some(status);
                        continue;
                    }
                    let accepted = match msg.entry {
                        None => Err(Status::invalid_argument("AppendRequest has no entry")),
                        Some(new) => {
                            let state = self.state();
                            intake::accept(new, peer, &self.host, self.intake(&state)).map_err(status::invalid)
                        }
                    };
                    let entry = match accepted {
                        Ok(entry) => entry,
                        Err(status) => {
                            in_flight.push_back(futures_util::future::Either::Left(std::future::ready(Ok(refused(status)))));
                            continue;
                        }
                    };
                    match self.writer.submit(vec![entry]).await {
                        Ok(rx) => in_flight.push_back(futures_util::future::Either::Right(async move {
                            match rx.await.map_err(|_| WriterError::Stopped).and_then(|r| r) {
                                Ok(acks) => {
                                    let ack = acks.first().ok_or_else(|| Status::internal("the writer acknowledged nothing"))?;
                                    Ok(pb::AppendResult {
                                        result: Some(Answer::Appended(pb::AppendResponse {
                                            seq: ack.seq,
                                            leaf_hash: ack.leaf_hash.to_vec(),
                                        })),
                                    })
                                }
                                Err(e @ WriterError::Rejected(_)) => Ok(refused(status::writer(e))),
                                Err(e) => Err(status::writer(e)),
                            }
                        })),
                        Err(e) => {
                            reading = false;
                            end = Some(status::writer(e));
                        }
                    }
                }
                else => break,
            }
        }
        if let Some(status) = end {
            let _ = out.send(Err(status)).await;
        }
    }

    async fn append_stream_into(
        &self,
        peer: Peer,
        stream: Streaming<pb::AppendRequest>,
        result: &mut pb::AppendStreamResponse,
    ) -> Result<(), Status> {
        // Whatever messages have already arrived go to the writer as one command; the
        // writer merges commands further while it syncs the previous batch.
        let mut chunks = stream.ready_chunks(STREAM_CHUNK);
        let mut in_flight = VecDeque::new();
        let mut received = 0u64;
        while let Some(items) = chunks.next().await {
            let state = self.state();
            let ctx = self.intake(&state);
            let mut batch = Vec::with_capacity(items.len());
            let mut stop = None;
            for item in items {
                received += 1;
                let accepted = item
                    .map_err(|e| format!("the stream broke: {}", e.message()))
                    .and_then(|msg| msg.entry.ok_or_else(|| "the message has no entry".to_string()))
                    .and_then(|new| intake::accept(new, peer, &self.host, ctx).map_err(|e| e.0));
                match accepted {
                    Ok(entry) => batch.push(entry),
                    Err(why) => {
                        stop = Some(why);
                        break;
                    }
                }
            }
            if !batch.is_empty() {
                in_flight.push_back(self.writer.submit(batch).await.map_err(status::writer)?);
                while in_flight.len() > STREAM_IN_FLIGHT {
                    take_oldest(&mut in_flight, result).await?;
                }
            }
            if let Some(why) = stop {
                finish(&mut in_flight, result).await?;
                return Err(Status::invalid_argument(format!("message {received}: {why}")));
            }
        }
        finish(&mut in_flight, result).await
    }
}

/// An append the writer has queued but not yet made durable.
type Pending = oneshot::Receiver<Result<Vec<Ack>, WriterError>>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Ledger for LedgerService {
    async fn append(&self, req: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let peer = self.require(&req, Role::Writer, "Append").await?;
        let new =
            req.into_inner().entry.ok_or_else(|| Status::invalid_argument("AppendRequest has no entry"))?;
        let state = self.state();
        let ctx = self.intake(&state);
        let entry = intake::accept(new, peer, &self.host, ctx).map_err(status::invalid)?;
        let acks = self.writer.append(vec![entry]).await.map_err(status::writer)?;
        let ack = acks.first().ok_or_else(|| Status::internal("the writer acknowledged nothing"))?;
        Ok(Response::new(pb::AppendResponse { seq: ack.seq, leaf_hash: ack.leaf_hash.to_vec() }))
    }

    type AppendEachStream = ReceiverStream<Result<pb::AppendResult, Status>>;

    async fn append_each(
        &self,
        req: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<Self::AppendEachStream>, Status> {
        let peer = self.require(&req, Role::Writer, "AppendEach").await?;
        let (tx, rx) = tokio::sync::mpsc::channel(EACH_IN_FLIGHT);
        tokio::spawn(self.clone().append_each_into(peer, req.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn append_stream(
        &self,
        req: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<pb::AppendStreamResponse>, Status> {
        let peer = self.require(&req, Role::Writer, "AppendStream").await?;
        let mut result = pb::AppendStreamResponse::default();
        match self.append_stream_into(peer, req.into_inner(), &mut result).await {
            Ok(()) => Ok(Response::new(result)),
            Err(e) => Err(status::stream_stopped(e, &result)),
        }
    }

    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        // Any role: verifiers of every kind need checkpoints.
        self.require(&req, Need::any(), "GetCheckpoint").await?;
        let req = req.into_inner();
        let note = if req.sign_new {
            self.writer.checkpoint(true).await.map_err(status::writer)?.note
        } else {
            let store = self.store.clone();
            let size = req.size;
            tokio::task::spawn_blocking(move || checkpoint_note(&store, size))
                .await
                .map_err(status::join)??
        };
        let cp = self
            .verifier
            .verify_checkpoint(&note)
            .or_else(|e| self.retired.iter().find_map(|k| k.verify_checkpoint(&note).ok()).ok_or(e))
            .map_err(|e| Status::internal(format!("stored checkpoint does not verify: {e}")))?;
        Ok(Response::new(pb::Checkpoint { note, size: cp.size, root: cp.root.to_vec() }))
    }

    async fn sign_manifest(
        &self,
        req: Request<pb::SignManifestRequest>,
    ) -> Result<Response<pb::SignedManifest>, Status> {
        self.require(&req, Role::Auditor, "SignManifest").await?;
        let files: Vec<ManifestFile> = req
            .into_inner()
            .files
            .into_iter()
            .map(|f| ManifestFile { path: f.path, blake3: f.blake3 })
            .collect();
        // The body is ours, built from validated (path, hash) pairs: never caller text.
        let body = manifest::body(self.manifest_signer.name(), &files)
            .map_err(|e| Status::invalid_argument(format!("cannot sign this manifest: {e}")))?;
        let note = self
            .manifest_signer
            .sign(&body)
            .map_err(|e| Status::invalid_argument(format!("cannot sign this manifest: {e}")))?;
        Ok(Response::new(pb::SignedManifest { note, vkey: self.manifest_signer.verifier().to_vkey_string() }))
    }

    async fn record_export(
        &self,
        req: Request<pb::RecordExportRequest>,
    ) -> Result<Response<pb::RecordedExport>, Status> {
        let peer = self.require(&req, Role::Auditor, "RecordExport").await?;
        let req = req.into_inner();
        let (from, to) = super::evidence::period(&req, crate::log::merkle::now_nanos())?;
        let user = self.access.user_name(peer.uid);
        let entry = super::evidence::entry(&self.host, peer, user, from, to, &req.agents);
        let acks = self.writer.append(vec![entry]).await.map_err(status::writer)?;
        let seq = acks.first().ok_or_else(|| Status::internal("the writer acknowledged nothing"))?.seq;
        // Signed after the entry is durable, so the checkpoint covers it.
        let signed = self.writer.checkpoint(true).await.map_err(status::writer)?;
        let cp = &signed.checkpoint;
        Ok(Response::new(pb::RecordedExport {
            seq,
            from_unix_nanos: from,
            to_unix_nanos: to,
            checkpoint: Some(pb::Checkpoint {
                note: signed.note.clone(),
                size: cp.size,
                root: cp.root.to_vec(),
            }),
        }))
    }

    async fn get_head(&self, req: Request<pb::GetHeadRequest>) -> Result<Response<pb::Head>, Status> {
        self.require(&req, Need::any(), "GetHead").await?;
        let head = *self.writer.head().borrow();
        Ok(Response::new(pb::Head { size: head.size, root: head.root.to_vec() }))
    }

    type GetEntriesStream = BoxStream<pb::StoredEntry>;

    async fn get_entries(
        &self,
        req: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<Self::GetEntriesStream>, Status> {
        self.require(&req, Role::Auditor, "GetEntries").await?;
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel(READ_CHUNK as usize);
        let store = self.store.clone();
        let mut head = self.writer.head();
        tokio::spawn(async move {
            let mut next = req.start;
            loop {
                let size = head.borrow_and_update().size;
                let end = if req.end == 0 { size } else { req.end.min(size) };
                while next < end {
                    let to = (next + READ_CHUNK).min(end);
                    let s = store.clone();
                    let chunk = tokio::task::spawn_blocking(move || read_range(&s, next, to)).await;
                    let chunk = match chunk {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) => {
                            let _ = tx.send(Err(status::store(e))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(status::join(e))).await;
                            return;
                        }
                    };
                    for item in chunk {
                        if tx.send(Ok(item)).await.is_err() {
                            return; // the client went away
                        }
                    }
                    next = to;
                }
                let finished = req.end != 0 && next >= req.end;
                if !req.follow || finished {
                    return;
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type QueryStream = BoxStream<pb::QueryResponse>;

    async fn query(&self, req: Request<pb::QueryRequest>) -> Result<Response<Self::QueryStream>, Status> {
        self.require(&req, Role::Auditor, "Query").await?;
        let mut req = req.into_inner();
        ledger_query::check_length(&req.query).map_err(Status::invalid_argument)?;
        // Parsing, checking and rendering errors cost up to milliseconds for a long query:
        // off the runtime's threads, so that appends on them do not wait.
        let text = std::mem::take(&mut req.query);
        let query = tokio::task::spawn_blocking(move || {
            ledger_query::parse(&text).map_err(|e| status::query(&e, &text))
        })
        .await
        .map_err(status::join)??;
        let tz = if req.tz.is_empty() {
            jiff::tz::TimeZone::UTC
        } else {
            jiff::tz::TimeZone::get(&req.tz).map_err(|e| {
                Status::invalid_argument(format!(
                    "unknown time zone {:?} ({e}); use an IANA name such as Europe/Berlin or UTC",
                    req.tz
                ))
            })?
        };
        let ctx = ledger_query::Context::new(jiff::Timestamp::now(), tz);
        let size = self.writer.head().borrow().size;
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(8);
        let header = pb::QueryResponse { columns: query.columns().to_vec(), ..Default::default() };
        tx.send(Ok(header)).await.map_err(|_| Status::cancelled("the client went away"))?;
        tokio::task::spawn_blocking(move || {
            let mut emit = |rows: Vec<pb::Row>| {
                tx.blocking_send(Ok(pb::QueryResponse { rows, ..Default::default() })).is_ok()
            };
            let done = engine::run_wire(&store, size, &query, &ctx, &mut emit);
            let last = match done {
                Ok(stats) => Ok(pb::QueryResponse { scanned: stats.scanned, ..Default::default() }),
                Err(e) => Err(status::store(e)),
            };
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        // Entries in full, as Query and GetEntries give them: the auditor's read access.
        self.require(&req, Role::Auditor, "Watch").await?;
        Ok(Response::new(Box::pin(self.feed.stream(req.into_inner()))))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        self.require(&req, Role::Auditor, "GetInclusionProof").await?;
        let req = req.into_inner();
        let store = self.store.clone();
        let head = self.writer.head().borrow().size;
        let proof = tokio::task::spawn_blocking(move || -> Result<pb::InclusionProof, Status> {
            let size = if req.tree_size == 0 { latest_checkpoint_size(&store)? } else { req.tree_size };
            if size > head {
                return Err(Status::out_of_range(format!("tree size {size} is beyond the log's {head} entries")));
            }
            if req.seq >= size {
                return Err(Status::out_of_range(format!(
                    "entry {} is not in a tree of {size} entries; ask for a later checkpoint (`ledgerctl checkpoint --new`)",
                    req.seq
                )));
            }
            let path = merkle::inclusion_proof(&store.node_source(), req.seq, size)
                .map_err(|e| Status::internal(format!("cannot build inclusion proof: {e:?}")))?;
            let entry = store.entry(req.seq).map_err(status::store)?;
            Ok(pb::InclusionProof {
                seq: req.seq,
                tree_size: size,
                leaf_hash: store.leaf_hash(req.seq).map_err(status::store)?.to_vec(),
                path: path.iter().map(|h| h.to_vec()).collect(),
                entry,
            })
        })
        .await
        .map_err(status::join)??;
        Ok(Response::new(proof))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        self.require(&req, Role::Auditor, "GetConsistencyProof").await?;
        let req = req.into_inner();
        let store = self.store.clone();
        let head = self.writer.head().borrow().size;
        let proof = tokio::task::spawn_blocking(move || -> Result<pb::ConsistencyProof, Status> {
            if req.old_size > req.new_size || req.new_size > head {
                return Err(Status::out_of_range(format!(
                    "need old size <= new size <= {head} (the log's size); got {} and {}",
                    req.old_size, req.new_size
                )));
            }
            let path = if req.old_size == 0 {
                Vec::new()
            } else {
                merkle::consistency_proof(&store.node_source(), req.old_size, req.new_size)
                    .map_err(|e| Status::internal(format!("cannot build consistency proof: {e:?}")))?
            };
            Ok(pb::ConsistencyProof {
                old_size: req.old_size,
                new_size: req.new_size,
                path: path.iter().map(|h| h.to_vec()).collect(),
            })
        })
        .await
        .map_err(status::join)??;
        Ok(Response::new(proof))
    }
}

async fn take_oldest(
    in_flight: &mut VecDeque<Pending>,
    result: &mut pb::AppendStreamResponse,
) -> Result<(), Status> {
    let Some(rx) = in_flight.pop_front() else { return Ok(()) };
    let acks = rx.await.map_err(|_| status::writer(WriterError::Stopped))?.map_err(status::writer)?;
    if let (Some(first), Some(last)) = (acks.first(), acks.last()) {
        if result.count == 0 {
            result.first_seq = first.seq;
        }
        result.last_seq = last.seq;
        result.count += acks.len() as u64;
    }
    Ok(())
}

async fn finish(
    in_flight: &mut VecDeque<Pending>,
    result: &mut pb::AppendStreamResponse,
) -> Result<(), Status> {
    while !in_flight.is_empty() {
        take_oldest(in_flight, result).await?;
    }
    Ok(())
}

fn read_range(store: &Store, start: u64, end: u64) -> Result<Vec<pb::StoredEntry>, StoreError> {
    let hashes = store.leaf_hashes(start, end)?;
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut reader = store.reader();
    for (seq, hash) in (start..end).zip(hashes) {
        let entry =
            reader.with_record(seq, |e| e.to_entry())?.ok_or(StoreError::NoSuchEntry { seq, size: end })?;
        out.push(pb::StoredEntry { entry: Some(entry), leaf_hash: hash.to_vec() });
    }
    Ok(out)
}

fn checkpoint_note(store: &Store, size: u64) -> Result<String, Status> {
    let found = if size == 0 {
        store.checkpoints.last()
    } else {
        store.checkpoints.scan_prefix(size.to_be_bytes()).next_back().transpose()
    }
    .map_err(|e| status::store(e.into()))?;
    let (_, note) = found.ok_or_else(|| {
        if size == 0 {
            Status::not_found("no checkpoint has been signed yet")
        } else {
            Status::not_found(format!("no checkpoint was signed at tree size {size}"))
        }
    })?;
    String::from_utf8(note.to_vec()).map_err(|_| Status::internal("stored checkpoint is not UTF-8"))
}

fn latest_checkpoint_size(store: &Store) -> Result<u64, Status> {
    let (key, _) = store
        .checkpoints
        .last()
        .map_err(|e| status::store(e.into()))?
        .ok_or_else(|| Status::not_found("no checkpoint has been signed yet"))?;
    key.get(..8)
        .and_then(crate::storage::store::seq_from_key)
        .ok_or_else(|| Status::internal("damaged checkpoint key"))
}
