//! Counts the connections on the socket and holds them to `limits.max_connections`, so
//! that nobody who can reach the socket can lock the role holders out.
//!
//! [`Connections::incoming`] is the accept loop: every accepted stream carries a guard
//! that keeps the count until the connection closes.
//!
//! - A peer that holds no role (it can only ever be refused) gets a small pool of its own,
//!   [`NO_ROLE_CONNECTIONS`], outside `max_connections`; beyond it its connections are
//!   closed at once. 300 idle connections from such a user cannot take a writer's place.
//! - A role holder beyond `max_connections` is still accepted (dropping it would leave
//!   the caller with a bare "connection reset"), but [`Connections::gate`] answers each of
//!   its calls with `RESOURCE_EXHAUSTED` and a message that names the limit; at most
//!   [`OVER_LIMIT_CONNECTIONS`] such connections are kept, the rest are closed.
//! - A connection that sends nothing within [`FIRST_BYTES_DEADLINE`] is closed: an idle
//!   socket holds no slot for long.
//! - Every refusal is logged, once per uid and reason per 10 s ([`RefusalLimiter`]).
//! - When `accept` fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM) the loop
//!   waits [`ACCEPT_BACKOFF`] before the next try instead of spinning on a core.
//!
//! [`check_fd_limit`] checks at start that the process may open enough files for all this.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::service::auth::{RefusalLimiter, Roles};
use crate::service::intake::Peer;

/// Connections kept open at once for peers that hold no role (outside `max_connections`).
pub const NO_ROLE_CONNECTIONS: usize = 16;
/// Connections of role holders over `max_connections` kept open to be told so.
pub const OVER_LIMIT_CONNECTIONS: usize = 32;
/// A connection that has sent nothing after this long is closed.
pub const FIRST_BYTES_DEADLINE: Duration = Duration::from_secs(10);
/// The pause after `accept` failed for want of file descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// File descriptors ledgerd needs besides its connections (sled, the data dir, logs,
/// publishing, the runtime).
pub const RESERVED_FDS: u64 = 128;

/// The open-connection count and its limit, shared by the listener and `Status`.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    /// Of `open`: peers without a role.
    no_role: AtomicUsize,
    /// Of `open`: role holders over the limit, waiting to be told or to go.
    over: AtomicUsize,
    max: usize,
    roles: Arc<Roles>,
    logged: RefusalLimiter,
}

/// Which pool a connection counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Served,
    NoRole,
    Over,
}

impl Connections {
    pub fn new(max: usize, roles: Arc<Roles>) -> Arc<Connections> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            no_role: AtomicUsize::new(0),
            over: AtomicUsize::new(0),
            max,
            roles,
            logged: RefusalLimiter::default(),
        })
    }

    /// Connections open now (every pool).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The configured limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The accepted connections of `listener`, each counted while it is open. Never
    /// yields an error: a failed accept is logged and retried (after a pause when the
    /// process is out of resources), so the server never ends or spins because of one.
    pub fn incoming(
        self: &Arc<Self>,
        listener: UnixListener,
    ) -> impl Stream<Item = io::Result<Conn>> + use<> {
        futures_util::stream::unfold((listener, self.clone()), |(listener, this)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if let Some(conn) = this.admit(stream) {
                            return Some((Ok(conn), (listener, this)));
                        }
                    }
                    Err(e) => {
                        let starved = matches!(
                            e.raw_os_error(),
                            Some(
                                libc_errno::EMFILE
                                    | libc_errno::ENFILE
                                    | libc_errno::ENOBUFS
                                    | libc_errno::ENOMEM
                            )
                        );
                        this.log_once(u32::MAX, "accept", || {
                            tracing::error!(
                                error = %e,
                                open = this.open(),
                                "cannot accept a connection{}",
                                if starved {
                                    "; out of file descriptors or memory: raise LimitNOFILE (deploy/ledgerd.service) or lower limits.max_connections; retrying"
                                } else {
                                    "; retrying"
                                }
                            );
                        });
                        tokio::time::sleep(if starved { ACCEPT_BACKOFF } else { Duration::from_millis(10) })
                            .await;
                    }
                }
            }
        })
    }

    /// Counts an accepted stream into its pool, or closes it (`None`) when that pool is full.
    fn admit(self: &Arc<Self>, stream: UnixStream) -> Option<Conn> {
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid().and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            },
            Err(e) => {
                tracing::warn!(error = %e, "closing a connection whose peer credentials cannot be read");
                return None;
            }
        };
        let pool = if self.roles.of(&peer).is_empty() {
            if !take_slot(&self.no_role, NO_ROLE_CONNECTIONS) {
                self.log_once(peer.uid, "no-role", || {
                    tracing::warn!(
                        uid = peer.uid,
                        limit = NO_ROLE_CONNECTIONS,
                        "closing a connection from a user who holds no role: users without a role already hold {NO_ROLE_CONNECTIONS} connections (they cannot take the place of role holders); give the user a role in [roles] if it should connect"
                    );
                });
                return None;
            }
            Pool::NoRole
        } else {
            let served = self
                .open()
                .saturating_sub(self.no_role.load(Ordering::Relaxed) + self.over.load(Ordering::Relaxed));
            if served < self.max {
                Pool::Served
            } else if take_slot(&self.over, OVER_LIMIT_CONNECTIONS) {
                self.log_once(peer.uid, "max", || {
                    tracing::warn!(
                        uid = peer.uid,
                        max = self.max,
                        "refusing a connection: limits.max_connections reached; raise it in the config if this load is expected"
                    );
                });
                Pool::Over
            } else {
                self.log_once(peer.uid, "max-closed", || {
                    tracing::warn!(
                        uid = peer.uid,
                        max = self.max,
                        "closing a connection: limits.max_connections reached and {OVER_LIMIT_CONNECTIONS} refused connections are already open"
                    );
                });
                return None;
            }
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        let over = (pool == Pool::Over).then_some(self.max);
        let deadline = Box::pin(tokio::time::sleep(FIRST_BYTES_DEADLINE));
        Some(Conn { stream, over, first_bytes: Some(deadline), _guard: Guard(self.clone(), pool) })
    }

    /// Runs `log` unless this uid was logged for this reason in the last 10 s.
    fn log_once(&self, uid: u32, reason: &'static str, log: impl FnOnce()) {
        if self.logged.admit(uid, reason, Instant::now()).is_some() {
            log();
        }
    }

    /// The interceptor every call passes first: refuses calls on a connection over the
    /// limit, and hands the others the socket credentials the services read.
    pub fn gate(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(info) = req.extensions().get::<ConnInfo>().cloned() else { return Ok(req) };
        if let Some(max) = info.over {
            return Err(tonic::Status::resource_exhausted(format!(
                "ledgerd already has {max} connections open (limits.max_connections = {max}); retry later, close idle clients, or raise the limit in ledgerd's config"
            )));
        }
        req.extensions_mut().insert(info.uds);
        Ok(req)
    }
}

/// Takes one of `limit` slots counted by `count`; false when none is left.
fn take_slot(count: &AtomicUsize, limit: usize) -> bool {
    count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
}

/// The errno values `accept` reports when the process or system is out of resources.
mod libc_errno {
    pub const EMFILE: i32 = 24;
    pub const ENFILE: i32 = 23;
    pub const ENOBUFS: i32 = 105;
    pub const ENOMEM: i32 = 12;
}

/// Why the file limit is too low for `limits.max_connections`.
#[derive(Debug, thiserror::Error)]
#[error(
    "limits.max_connections = {max} needs up to {need} open files, but ledgerd may open only {limit} (RLIMIT_NOFILE, hard limit {hard}); raise LimitNOFILE= in the systemd unit (deploy/ledgerd.service sets 65536) or `ulimit -n`, or lower limits.max_connections"
)]
pub struct FdLimitTooLow {
    pub max: usize,
    pub need: u64,
    pub limit: u64,
    pub hard: u64,
}

/// Checks that every connection ledgerd may keep fits the process's file limit, raising
/// the soft limit up to the hard one if needed. Returns the limit in force.
pub fn check_fd_limit(max_connections: usize) -> Result<u64, FdLimitTooLow> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let need = (max_connections + NO_ROLE_CONNECTIONS + OVER_LIMIT_CONNECTIONS) as u64 + RESERVED_FDS;
    let now = getrlimit(Resource::Nofile);
    let (soft, hard) = (now.current.unwrap_or(u64::MAX), now.maximum.unwrap_or(u64::MAX));
    if soft >= need {
        return Ok(soft);
    }
    let raised = need.min(hard);
    if raised > soft
        && setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: now.maximum }).is_ok()
    {
        tracing::info!(from = soft, to = raised, "raised the open-file limit for limits.max_connections");
        if raised >= need {
            return Ok(raised);
        }
    }
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    Err(FdLimitTooLow { max: max_connections, need, limit, hard })
}

/// Gives the count back when a connection closes.
#[derive(Debug)]
struct Guard(Arc<Connections>, Pool);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        match self.1 {
            Pool::Served => {}
            Pool::NoRole => {
                self.0.no_role.fetch_sub(1, Ordering::Relaxed);
            }
            Pool::Over => {
                self.0.over.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// An accepted connection: the stream, and whether it is over the limit.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    /// `Some(limit)` when accepting it went over the limit.
    over: Option<usize>,
    /// Until the first bytes arrive: when to give up on the connection.
    first_bytes: Option<Pin<Box<tokio::time::Sleep>>>,
    _guard: Guard,
}

/// What every call on a connection learns about it.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    uds: UdsConnectInfo,
    over: Option<usize>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo { uds: self.stream.connect_info(), over: self.over }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.first_bytes.is_some() {
            match &read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.first_bytes = None,
                Poll::Pending => {
                    if let Some(deadline) = self.first_bytes.as_mut()
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        // Silent since it connected: end it as if the peer had closed.
                        self.first_bytes = None;
                        return Poll::Ready(Ok(()));
                    }
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
