//! The ledgerd client library: connect to the daemon's Unix socket and call it.
//!
//! [`Client`] wraps the generated gRPC client with errors that say what to do next;
//! [`verify`] checks what the daemon returns (proofs, checkpoints, the whole log)
//! against signed checkpoints, trusting nothing the daemon says without proof.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ledger_proto::pb::{self, admin_client::AdminClient, ledger_client::LedgerClient};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub mod evidence;
pub mod files;
pub mod jsonl;
pub mod lines;
pub mod pipe;
pub mod state;
pub mod status;
pub mod verify;
/// Moved to `ledger_proto::wire` (the daemon needs it too); kept here for old paths.
pub use ledger_proto::wire;

/// The socket `ledgerctl` and the shims use when none is given: `$LEDGER_SOCKET`, else
/// `${LEDGERD_DATA_DIR:-./ledger-data}/ledgerd.sock` (where `ledgerd` puts it by default).
pub fn default_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("LEDGER_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    default_data_dir().join("ledgerd.sock")
}

/// `${LEDGERD_DATA_DIR:-./ledger-data}`, as the daemon resolves it.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("LEDGERD_DATA_DIR")
        .filter(|s| !s.is_empty())
        .map_or_else(|| PathBuf::from("./ledger-data"), PathBuf::from)
}

/// How long a call may wait for ledgerd when the program sets nothing ([`set_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

static TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets, once for the whole process, how long ledgerd may stay silent: while connecting,
/// before answering a call, and during a stream (HTTP/2 pings must be answered; a live
/// daemon working on a long query answers them, a stopped or hung one does not). For a
/// program that talks to one daemon with one deadline (`ledgerctl --timeout`); later calls
/// are ignored. Without it, [`DEFAULT_TIMEOUT`].
pub fn set_timeout(timeout: Duration) {
    let _ = TIMEOUT.set(timeout);
}

/// The deadline [`Client::connect`] uses (see [`set_timeout`]).
pub fn timeout() -> Duration {
    TIMEOUT.get().copied().unwrap_or(DEFAULT_TIMEOUT)
}

/// What went wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to ledgerd at {}: {cause}. Is ledgerd running? Start it with `ledgerd`, or point to its socket with --socket or $LEDGER_SOCKET",
        socket.display()
    )]
    // Not a `source`: the message already says it, and error chains would repeat it.
    Connect { socket: PathBuf, cause: std::io::Error },
    /// The daemon answered with an error; its message is already meant for people (and
    /// is not repeated as a "source").
    #[error("ledgerd refused: {}", .0.message())]
    Rpc(tonic::Status),
    #[error("internal client error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The daemon accepted the connection or the call and then said nothing for too long.
    #[error(
        "ledgerd did not answer within {}: it may be stopped (SIGSTOP), hung or overloaded; check its log and `systemctl status ledgerd`, or allow longer with --timeout",
        state::human(*after)
    )]
    Timeout { after: Duration },
    /// The query does not parse or type-check; the text is rendered with carets.
    #[error("{rendered}")]
    Query { rendered: String },
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        if is_timeout(&status) {
            return ClientError::Timeout { after: timeout() };
        }
        ClientError::Rpc(status)
    }
}

/// Whether a status is the client's own deadline or a missed HTTP/2 ping, not the daemon's
/// answer.
pub fn is_timeout(status: &tonic::Status) -> bool {
    let message = status.message();
    if (status.code() == tonic::Code::Cancelled && message.contains("Timeout expired"))
        || status.code() == tonic::Code::DeadlineExceeded
        || message.contains("keep-alive timed out")
    {
        return true;
    }
    // A missed ping surfaces as an "http2 error" whose causes name it.
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::TimeoutExpired>() || e.to_string().contains("keep-alive timed out") {
            return true;
        }
        source = e.source();
    }
    false
}

/// The result of a query as it streams in: the columns first, then rows in chunks.
pub struct QueryStream {
    pub columns: Vec<String>,
    inner: tonic::Streaming<pb::QueryResponse>,
    /// Entries the daemon looked at (known once the stream has ended).
    pub scanned: u64,
}

impl QueryStream {
    /// The next chunk of rows, or `None` at the end.
    pub async fn next_rows(&mut self) -> Result<Option<Vec<ledger_query::Row>>, ClientError> {
        loop {
            let Some(msg) = self.inner.message().await? else { return Ok(None) };
            self.scanned = self.scanned.max(msg.scanned);
            if !msg.rows.is_empty() {
                return Ok(Some(msg.rows.into_iter().map(wire::row_from_wire).collect()));
            }
        }
    }
}

/// A refused query comes back with its structured errors in the status details; render
/// them against the text the caller sent, exactly as a local parse would.
fn query_error(status: tonic::Status, text: &str) -> ClientError {
    if status.code() == tonic::Code::InvalidArgument
        && let Ok(errors) = std::str::from_utf8(status.details())
            .map_err(|_| ())
            .and_then(|d| ledger_query::QueryErrors::from_json_str(d).map_err(|_| ()))
    {
        return ClientError::Query { rendered: errors.render(text) };
    }
    ClientError::from(status)
}

/// A connection to one daemon. Cloning shares the connection (calls are multiplexed).
#[derive(Clone)]
pub struct Client {
    inner: LedgerClient<Channel>,
    admin: AdminClient<Channel>,
    socket: PathBuf,
    /// The append stream shared by this connection's clones ([`Client::append_each`]).
    pipe: pipe::Pipe,
}

impl Client {
    /// Connects to the daemon's socket now, so a missing daemon is reported here.
    ///
    /// Every call made through it has the process's deadline ([`timeout`]): a call that
    /// gets no answer in time, and a stream whose daemon stops answering HTTP/2 pings for
    /// that long, fail with [`ClientError::Timeout`]. A stream may run for any length of
    /// time while the daemon is alive.
    pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, ClientError> {
        let socket = socket.as_ref().to_path_buf();
        let after = timeout();
        let timed_out = || ClientError::Timeout { after };
        // Fail early with the real OS error (no such file, permission denied, refused).
        tokio::time::timeout(after, UnixStream::connect(&socket))
            .await
            .map_err(|_| timed_out())?
            .map_err(|cause| ClientError::Connect { socket: socket.clone(), cause })?;
        let path = socket.clone();
        // Pings while idle too: a watcher waiting for entries learns that the daemon stopped.
        let ping = (after / 2).max(Duration::from_millis(500));
        // The URI is required by the API but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://ledgerd.invalid")
            .timeout(after)
            .connect_timeout(after)
            .http2_keep_alive_interval(ping)
            .keep_alive_timeout(ping)
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }));
        let channel = tokio::time::timeout(after, channel).await.map_err(|_| timed_out())??;
        let inner = LedgerClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
        let admin = AdminClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        Ok(Client { inner, admin, socket, pipe: pipe::Pipe::default() })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Appends one entry; returns once it is durable.
    pub async fn append(&mut self, entry: pb::NewEntry) -> Result<pb::AppendResponse, ClientError> {
        Ok(self.inner.append(pb::AppendRequest { entry: Some(entry) }).await?.into_inner())
    }

    /// Appends one entry on the append stream that every clone of this client shares
    /// ([`pipe`]), opened on first use and again after it ends; returns once the entry is
    /// durable. For callers that append all day: a message each way instead of an RPC. An
    /// older ledgerd without the stream gets a unary [`Client::append`].
    pub async fn append_each(&mut self, entry: pb::NewEntry) -> Result<pb::AppendResponse, ClientError> {
        let pipe = self.pipe.clone();
        pipe.append(&mut self.inner, entry).await
    }

    /// Appends a stream of entries; returns once all are durable.
    pub async fn append_stream(
        &mut self,
        entries: impl tokio_stream::Stream<Item = pb::NewEntry> + Send + 'static,
    ) -> Result<pb::AppendStreamResponse, ClientError> {
        use tokio_stream::StreamExt;
        let requests = entries.map(|e| pb::AppendRequest { entry: Some(e) });
        Ok(self.inner.append_stream(requests).await?.into_inner())
    }

    /// The latest signed checkpoint, or a newly signed one with `sign_new`.
    pub async fn checkpoint(&mut self, sign_new: bool) -> Result<pb::Checkpoint, ClientError> {
        Ok(self.inner.get_checkpoint(pb::GetCheckpointRequest { sign_new, size: 0 }).await?.into_inner())
    }

    /// The checkpoint signed at exactly this tree size (the latest of them if several).
    pub async fn checkpoint_at(&mut self, size: u64) -> Result<pb::Checkpoint, ClientError> {
        Ok(self.inner.get_checkpoint(pb::GetCheckpointRequest { sign_new: false, size }).await?.into_inner())
    }

    /// The log's current size and root (durable, possibly not yet signed).
    pub async fn head(&mut self) -> Result<pb::Head, ClientError> {
        Ok(self.inner.get_head(pb::GetHeadRequest {}).await?.into_inner())
    }

    /// An inclusion proof for `seq` in the tree of `tree_size` (0 = latest checkpoint).
    pub async fn prove(&mut self, seq: u64, tree_size: u64) -> Result<pb::InclusionProof, ClientError> {
        Ok(self.inner.get_inclusion_proof(pb::InclusionProofRequest { seq, tree_size }).await?.into_inner())
    }

    /// A consistency proof between two tree sizes.
    pub async fn consistency(
        &mut self,
        old_size: u64,
        new_size: u64,
    ) -> Result<pb::ConsistencyProof, ClientError> {
        Ok(self
            .inner
            .get_consistency_proof(pb::ConsistencyProofRequest { old_size, new_size })
            .await?
            .into_inner())
    }

    /// Has the daemon sign an evidence bundle's manifest (docs/FORMAT.md, "Evidence bundle").
    pub async fn sign_manifest(
        &mut self,
        files: Vec<pb::ManifestFile>,
    ) -> Result<pb::SignedManifest, ClientError> {
        Ok(self.inner.sign_manifest(pb::SignManifestRequest { files }).await?.into_inner())
    }

    /// Records an evidence export in the log (auditor role): the daemon appends an
    /// `evidence_exported` entry for the period (`to` cut to its clock) and signs a
    /// checkpoint covering it.
    pub async fn record_export(
        &mut self,
        from_unix_nanos: i64,
        to_unix_nanos: i64,
        agents: Vec<String>,
    ) -> Result<pb::RecordedExport, ClientError> {
        let req = pb::RecordExportRequest { from_unix_nanos, to_unix_nanos, agents };
        Ok(self.inner.record_export(req).await?.into_inner())
    }

    /// The daemon's health (`ledgerctl status`).
    pub async fn status(&mut self) -> Result<pb::DaemonStatus, ClientError> {
        Ok(self.admin.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// The registry and policy service (same connection).
    pub fn admin(&mut self) -> &mut AdminClient<Channel> {
        &mut self.admin
    }

    /// Runs a query (docs/QUERY.md) in the daemon; `tz` is an IANA zone name or "" for UTC.
    pub async fn query(&mut self, text: &str, tz: &str) -> Result<QueryStream, ClientError> {
        let request = pb::QueryRequest { query: text.to_string(), tz: tz.to_string() };
        let mut inner = self.inner.query(request).await.map_err(|s| query_error(s, text))?.into_inner();
        let header = inner.message().await.map_err(|s| query_error(s, text))?;
        let columns = header.map(|h| h.columns).unwrap_or_default();
        Ok(QueryStream { columns, inner, scanned: 0 })
    }

    /// Entries `start..end` (`end` 0 = to the current end), streamed; with `follow`, the
    /// stream stays open and delivers new entries as they are appended.
    pub async fn entries(
        &mut self,
        start: u64,
        end: u64,
        follow: bool,
    ) -> Result<tonic::Streaming<pb::StoredEntry>, ClientError> {
        Ok(self.inner.get_entries(pb::GetEntriesRequest { start, end, follow }).await?.into_inner())
    }

    /// Entries as they are committed from now on, of at least `min_severity` (0: all)
    /// and of `agent` ("": all), with `missed` events when this watcher falls behind.
    pub async fn watch(
        &mut self,
        min_severity: u32,
        agent: &str,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, ClientError> {
        let request = pb::WatchRequest { min_severity, agent: agent.to_string() };
        Ok(self.inner.watch(request).await?.into_inner())
    }
}
