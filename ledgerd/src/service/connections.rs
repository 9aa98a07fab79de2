//! Counts the connections on the socket and holds them to `limits.max_connections`.
//!
//! [`Connections::incoming`] wraps the listener: every accepted stream carries a guard
//! that keeps the count until the connection closes. A connection beyond the limit is
//! still accepted (dropping it would leave the caller with a bare "connection reset"),
//! but [`Connections::gate`] answers each of its calls with `RESOURCE_EXHAUSTED` and a
//! message that names the limit, and nothing else runs for it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The open-connection count and its limit, shared by the listener and `Status`.
#[derive(Debug)]
pub struct Connections {
    open: AtomicUsize,
    max: usize,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections { open: AtomicUsize::new(0), max })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The configured limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The accepted connections of `listener`, each counted while it is open.
    pub fn incoming(
        self: &Arc<Self>,
        listener: UnixListener,
    ) -> impl Stream<Item = io::Result<Conn>> + use<> {
        let this = self.clone();
        UnixListenerStream::new(listener).map(move |accepted| {
            accepted.map(|stream| {
                let now_open = this.open.fetch_add(1, Ordering::Relaxed) + 1;
                let over = (now_open > this.max).then_some(this.max);
                if over.is_some() {
                    tracing::warn!(
                        open = now_open,
                        max = this.max,
                        "refusing a connection: limits.max_connections reached; raise it in the config if this load is expected"
                    );
                }
                Conn { stream, over, _guard: Guard(this.clone()) }
            })
        })
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

/// Gives the count back when a connection closes.
#[derive(Debug)]
struct Guard(Arc<Connections>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted connection: the stream, and whether it is over the limit.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    /// `Some(limit)` when accepting it went over the limit.
    over: Option<usize>,
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
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
