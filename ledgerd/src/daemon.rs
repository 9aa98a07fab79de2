//! The daemon's lifecycle: open everything, announce the start in the log, serve until
//! told to stop, then record the stop and sign a final checkpoint.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_proto::pb::{self, admin_server::AdminServer, ledger_server::LedgerServer};
use tokio::net::UnixListener;

use crate::config::{Config, GroupSpec};
use crate::log::merkle::{Log, hex};
use crate::scoring::commit::Scoring;
use crate::scoring::watch::Feed;
use crate::scoring::writer::{self, WriterHandle};
use crate::service::admin::AdminService;
use crate::service::auth::{AccountFiles, Roles};
use crate::service::connections::Connections;
use crate::service::intake::{Peer, own_entry};
use crate::service::publish::Publisher;
use crate::service::redact::Redactor;
use crate::service::server::{Access, LedgerService};
use crate::service::status::{Rate, StatusSource};
use crate::storage::datadir::DataDir;
use crate::storage::store::Store;

/// How long the stop waits for the publishing targets to take the last checkpoints
/// (well within systemd's `TimeoutStopSec=30s`).
const PUBLISH_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a stop waits for open streams to finish before it goes on without them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a daemon whose writer stopped keeps answering (appends with the error,
/// `status` with it) before it exits, so callers and monitoring see why.
pub const WRITER_FAILED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// The exit status after the writer stopped on a storage error (EX_TEMPFAIL): systemd
/// restarts ledgerd (`deploy/ledgerd.service`), which works again once space is freed.
pub const EXIT_STORAGE_FAILED: u8 = 75;

/// The daemon ends because its writer stopped on a storage error (a full disk, an I/O
/// error): what is on disk is then unknown, and only a restart (which recovers from what
/// was synced) can append again.
#[derive(Debug, thiserror::Error)]
#[error(
    "the ledger's writer stopped after a storage error: {0}. Nothing can be appended until ledgerd restarts; free space or fix the disk, then start it again (systemd restarts it by itself, see docs/DEPLOY.md)"
)]
pub struct StorageFailed(pub String);

/// Holds one handle of the store until `run` ends. sled flushes when its last handle is
/// dropped, and after an I/O error (a full disk) that flush waits forever: the daemon hung
/// instead of exiting. So when the writer stopped on a storage error the last handle is
/// leaked instead (nothing more may be written anyway; the OS closes the files at exit and
/// the next start recovers from what was synced).
struct LastStoreHandle {
    store: Option<Store>,
    failure: tokio::sync::watch::Receiver<Option<String>>,
}

impl Drop for LastStoreHandle {
    fn drop(&mut self) {
        if self.failure.borrow().is_some() {
            std::mem::forget(self.store.take());
        }
    }
}

/// An error opening the store: [`StorageFailed`] when the disk failed under it (sled's I/O
/// errors: a full disk, EIO), so a start on a still-full disk exits 75 like a writer
/// that stopped, and systemd keeps retrying; anything else as it is (status 1).
fn storage_io(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    let io = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some()
            || matches!(c.downcast_ref::<sled::Error>(), Some(sled::Error::Io(_)))
    });
    if io { StorageFailed(format!("{e:#}")).into() } else { e }
}

/// Turns a writer error that means the storage failed into [`StorageFailed`].
fn storage_exit(writer: &WriterHandle, e: writer::WriterError) -> anyhow::Error {
    match (e, writer.failure().borrow().clone()) {
        (writer::WriterError::Failed(detail), _) | (_, Some(detail)) => StorageFailed(detail).into(),
        (other, None) => other.into(),
    }
}

/// What the daemon prints once it serves: the line tests and scripts wait for.
#[derive(Clone, Debug)]
pub struct Ready {
    pub socket: PathBuf,
    pub size: u64,
    pub root: String,
}

impl std::fmt::Display for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ready socket={} size={} root={}", self.socket.display(), self.size, self.root)
    }
}

/// The runtime [`run`] is meant to run on: multi-threaded, with one worker thread fewer
/// than the machine has cores (at least one). The writer thread spends every commit in a
/// `write`, an `fdatasync` and the commit's projection; with a core of its own it never
/// waits for a worker to be descheduled, and with fewer workers a request is not handed
/// from one worker to another, each hop a futex wake and two context switches (measured
/// on 2 cores with `ledger-bench --only-unary 1`, before appends could commit on their
/// caller's thread: p50 ack 329 → 285 µs, daemon CPU per append 187 → 154 µs).
/// `TOKIO_WORKER_THREADS`, when set, chooses the number of workers instead.
pub fn runtime_builder() -> tokio::runtime::Builder {
    let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    builder
}

/// Runs the daemon until `shutdown` resolves. `on_ready` is called once the socket
/// accepts connections.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Ready) + Send,
) -> anyhow::Result<()> {
    // Everything ledgerd creates is private unless it says otherwise (the socket and the
    // verifier key are opened up explicitly), so nothing is ever briefly world-readable.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let interval = config.checkpoint_interval().map_err(|e| anyhow::anyhow!("checkpoint.interval: {e}"))?;
    // Who may connect is settled before anything is written, so a bad [roles] section or
    // socket group stops the start instead of a half-started daemon.
    let daemon_uid = rustix::process::geteuid().as_raw();
    let roles = Arc::new(match &config.roles {
        Some(section) => Roles::from_config(section, daemon_uid)?,
        None => Roles::daemon_only(daemon_uid),
    });
    let (socket_group, socket_mode) = socket_permissions(&config)?;
    // Before anything is written: a socket path that would replace a file (the log's own
    // `store/db` once) stops the start.
    crate::socket_path::check(&config.socket_path(), &config.data_dir)?;
    // Every connection the limits allow must fit the open-file limit, or accept fails
    // with EMFILE under load.
    crate::service::connections::check_fd_limit(config.limits.max_connections)?;
    let dir = DataDir::prepare(&config.data_dir)?;
    let host: Arc<str> = gethostname::gethostname().to_string_lossy().into();
    crate::rotate::resume(&dir, config.storage.cache_bytes)?;
    let signer = dir.signing_key_or_create(|| key_name(&host))?;
    let redactor = Arc::new(
        Redactor::new(&config.redaction, dir.redaction_key_or_create()?)
            .map_err(|e| anyhow::anyhow!("[redaction]: {e}"))?,
    );
    let store_path = dir.store();
    let store = {
        let path = store_path.clone();
        let cache = config.storage.cache_bytes;
        tokio::task::spawn_blocking(move || Store::open(&path, cache)).await?.map_err(storage_io)?
    };
    // The service signs evidence manifests with the same key; the log owns the original.
    let manifest_signer = Arc::new(signer.clone());
    let (log, recovery) =
        tokio::task::spawn_blocking(move || Log::open(store, signer)).await?.map_err(storage_io)?;
    if recovery.adopted > 0 {
        tracing::warn!(
            adopted = recovery.adopted,
            "took in entries that reached disk just before a crash but were never acknowledged"
        );
    }
    // Baselines are a projection of the log: the snapshot of the last clean stop plus a
    // replay of what came after it, or a replay of the whole log (docs/SEVERITY.md).
    let mut scoring = Scoring::new(&config.scorer).map_err(|e| anyhow::anyhow!("[{e}]"))?;
    let (log, scoring, replayed) = tokio::task::spawn_blocking(move || {
        scoring.resume(log.store(), log.size()).map(|replayed| (log, scoring, replayed))
    })
    .await??;
    if scoring.enabled() {
        tracing::info!(
            from = replayed.from,
            replayed = replayed.entries,
            took = ?replayed.took,
            "scorer baselines brought up to date"
        );
    }
    let previous_size = log.size();
    let previous_checkpoint = log.last_checkpoint().map(|c| c.checkpoint.size);
    let verifier = Arc::new(log.verifier().clone());
    let store = log.store().clone();
    let shared = log.shared();
    let feed = Feed::new();
    let (writer, writer_thread) = writer::spawn(log, scoring, feed.clone());
    // Dropped last of what `run` holds (locals drop in reverse order).
    let _last_store = LastStoreHandle { store: Some(store.clone()), failure: writer.failure() };
    let alerts = crate::alerts::spawn(&config.alerts, &feed);
    // Publishing reads the stored checkpoints on its own tasks: never on the write path.
    let publisher = Publisher::start(&config.publish, &dir.root, &store)?;
    let connections = Connections::new(config.limits.max_connections, roles.clone());
    let status = StatusSource {
        started_unix_nanos: crate::log::merkle::now_nanos(),
        head: writer.head(),
        store: store.clone(),
        data_dir: dir.root.clone(),
        connections: connections.clone(),
        publish: publisher.board(),
        verifier_key: verifier.to_vkey_string(),
        rate: Rate::start(writer.head()),
        writer_failure: writer.failure(),
    };

    // Monitoring gaps must be visible: every start is in the log, with what it found.
    let details = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "key": verifier.to_vkey_string(),
        "previous_size": previous_size,
        "previous_checkpoint_size": previous_checkpoint,
        "adopted_after_crash": recovery.adopted,
    });
    append_own(&writer, pb::Kind::DaemonStarted, &host, details)
        .await
        .map_err(|e| storage_exit(&writer, e))?;
    let cp = writer.checkpoint(false).await.map_err(|e| storage_exit(&writer, e))?;

    let socket = config.socket_path();
    let listener = bind(&socket, socket_group, socket_mode)?;
    if roles.maps_others() && socket_inside(&socket, &dir.root) {
        tracing::warn!(
            socket = %socket.display(),
            "[roles] maps other users, but the socket is inside the data dir (mode 0700), where only ledgerd's user can reach it; set `socket` outside it, e.g. /run/ledgerd/ledgerd.sock in a directory of mode 0750 whose group (and `socket_group`) is that of the users who connect; see docs/CONFIG.md"
        );
    }
    let ready = Ready { socket: socket.clone(), size: cp.checkpoint.size, root: hex(&cp.checkpoint.root) };
    on_ready(&ready);

    // One role check (and one refusal limiter) for every service on the socket. It holds
    // a writer handle: it must be moved into the services (dropped with the server), or
    // the writer thread never sees its queue close and the stop hangs.
    let access = Access::new(roles, writer.clone(), host.clone());
    let admin = AdminService {
        writer: writer.clone(),
        shared: shared.clone(),
        host: host.clone(),
        access: access.clone(),
        status,
    };
    let service = LedgerService {
        writer: writer.clone(),
        store,
        verifier,
        host: host.clone(),
        shared: shared.clone(),
        require_token: config.require_agent_token,
        access,
        redactor,
        manifest_signer,
        max_params_bytes: config.limits.max_params_bytes,
        retired: Arc::new(crate::rotate::retired_verifiers(&dir)),
        feed: feed.clone(),
    };
    // Open `Watch` streams end when the server stops, or its graceful shutdown would
    // wait for them forever.
    let closing = feed.clone();
    let (stopping, stop_started) = tokio::sync::oneshot::channel::<()>();
    // A writer that stopped on a storage error ends the daemon too, after a short grace
    // in which `status` and every append say why (fail loudly, restart to recover).
    let mut failure = writer.failure();
    let writer_failed = async move {
        while failure.borrow_and_update().is_none() {
            if failure.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        tracing::error!(
            "the writer has stopped; ledgerd exits with status {EXIT_STORAGE_FAILED} in {}s so that it is restarted (see docs/DEPLOY.md)",
            WRITER_FAILED_GRACE.as_secs()
        );
        tokio::time::sleep(WRITER_FAILED_GRACE).await;
    };
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = writer_failed => {}
        }
        closing.close();
        let _ = stopping.send(());
    };
    let ticker = tokio::spawn(checkpoint_ticker(writer.clone(), interval));
    let serve = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(Connections::gate))
        .add_service(LedgerServer::new(service))
        .add_service(AdminServer::new(admin))
        .serve_with_incoming_shutdown(connections.incoming(listener), shutdown);
    // A client that stopped reading a stream (`watch`, `tail --follow`) keeps its answer
    // unfinished; after a grace period the stop goes on without it, so the stop is still
    // recorded and checkpointed.
    let grace = async {
        if stop_started.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        served = serve => served,
        () = grace => {
            tracing::warn!(
                "a client still had an unfinished stream {}s after the stop began (a stalled `ledgerctl watch` or `tail --follow`?); stopping without it",
                SHUTDOWN_GRACE.as_secs()
            );
            Ok(())
        }
    };
    ticker.abort();
    let _ = std::fs::remove_file(&socket);
    // After a storage error nothing more can be written: no `daemon_stopped`, no final
    // checkpoint (the next start recovers from what was synced and records its start).
    let failed = writer.failure().borrow().clone();
    let (stopped, final_cp) = if failed.is_none() {
        let stop_details = serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "reason": "signal" });
        let stopped = append_own(&writer, pb::Kind::DaemonStopped, &host, stop_details).await;
        (stopped, writer.checkpoint(false).await.map(|_| ()))
    } else {
        (Ok(()), Ok(()))
    };
    // The final checkpoint goes out too, if the targets take it promptly; otherwise it
    // is delivered after the next start (each target keeps a cursor).
    publisher.finish(PUBLISH_GRACE).await;
    writer.stop().await;
    let joined = tokio::task::spawn_blocking(move || writer_thread.join()).await?;
    // With the writer and the server gone, the feed closes and the alerts thread ends
    // once it has sent what it holds (a stream left behind by the grace period above
    // keeps the feed open: then the stop goes on after a while).
    drop(feed);
    if let Some(alerts) = alerts {
        let joined = tokio::time::timeout(
            crate::alerts::COMMAND_TIMEOUT + SHUTDOWN_GRACE,
            tokio::task::spawn_blocking(move || alerts.join()),
        )
        .await;
        if joined.is_err() {
            tracing::warn!("the alerts thread did not finish; stopping without it");
        }
    }
    if let Some(detail) = failed {
        return Err(StorageFailed(detail).into());
    }
    served?;
    stopped?;
    final_cp?;
    match joined {
        Ok(Ok(_log)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(anyhow::anyhow!("the writer thread panicked")),
    }
}

/// Rebuilds every projection of the log in `config`'s data dir (daemon stopped: sled
/// locks the store, so a running daemon makes this fail with a clear error). Returns the
/// number of admin entries replayed.
pub fn rebuild_projections(config: &Config) -> anyhow::Result<u64> {
    let dir = DataDir::prepare(&config.data_dir)?;
    let signer = dir.signing_key_or_create(|| key_name("localhost"))?;
    let store = Store::open(&dir.store(), config.storage.cache_bytes).map_err(|e| {
        anyhow::anyhow!("cannot open the store in {} ({e}); stop ledgerd first", dir.root.display())
    })?;
    store.by_agent.clear()?;
    let (mut log, _) = Log::open(store, signer)?;
    Ok(log.rebuild_projections()?)
}

/// Appends an entry written by ledgerd itself, stamped with its own credentials.
async fn append_own(
    writer: &WriterHandle,
    kind: pb::Kind,
    host: &str,
    details: serde_json::Value,
) -> Result<(), writer::WriterError> {
    let me = Peer {
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        pid: std::process::id(),
    };
    writer.append(vec![own_entry(kind, host, me, details)]).await.map(|_| ())
}

/// Signs a checkpoint every `interval` if the tree grew.
async fn checkpoint_ticker(writer: WriterHandle, interval: std::time::Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = writer.checkpoint(false).await {
            tracing::error!(error = %e, "periodic checkpoint failed");
            return;
        }
    }
}

/// Binds the socket so that it is never reachable by more users than intended: a stale
/// socket is removed first, it is created under the umask 077 set in [`run`] (so only
/// its owner can connect at first), then given `group` (if set) and `mode`.
fn bind(path: &Path, group: Option<u32>, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        anyhow::bail!(
            "the socket's directory {} does not exist; create it or pass another --socket",
            parent.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "another ledgerd is already serving on {}; stop it or pass another --socket",
            path.display()
        ),
        // Only a stale socket is removed: anything else there was checked away at start,
        // and is refused again here in case it appeared since.
        Err(_) => match crate::socket_path::existing_kind(path)? {
            Some(crate::socket_path::Kind::Socket) => std::fs::remove_file(path)
                .map_err(|e| anyhow::anyhow!("cannot remove stale socket {}: {e}", path.display()))?,
            None => {}
            Some(crate::socket_path::Kind::Other(what)) => {
                return Err(crate::socket_path::SocketPathError::NotSocket {
                    path: path.to_path_buf(),
                    what,
                }
                .into());
            }
        },
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind socket {}: {e}", path.display()))?;
    if let Some(gid) = group {
        // Never follow a link that replaced the socket since it was bound.
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            None,
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot give socket {} to group {gid} (socket_group): {e}; ledgerd's user must be root or a member of that group",
                path.display()
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
        anyhow::anyhow!("cannot set mode {mode:04o} on {} (socket_mode): {e}", path.display())
    })?;
    Ok(listener)
}

/// The socket's group (`None`: keep the one it is created with, the daemon's primary
/// group) and mode, from the config.
fn socket_permissions(config: &Config) -> anyhow::Result<(Option<u32>, u32)> {
    let mode = config.socket_mode().map_err(|e| anyhow::anyhow!("socket_mode: {e}"))?;
    let gid = match &config.socket_group {
        None => return Ok((None, mode)),
        Some(GroupSpec::Gid(gid)) => *gid,
        Some(GroupSpec::Name(name)) => match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => AccountFiles::system().group_id(name)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "socket_group = {name:?}: no such group in /etc/group; create it (`groupadd {name}`) or name another"
                )
            })?,
        },
    };
    if gid == u32::MAX {
        anyhow::bail!("socket_group = {gid}: that means \"no group\" to the kernel; name a real group");
    }
    Ok((Some(gid), mode))
}

/// Whether the socket lies inside the data dir (where only ledgerd's user can reach it).
fn socket_inside(socket: &Path, data_dir: &Path) -> bool {
    match (std::fs::canonicalize(socket), std::fs::canonicalize(data_dir)) {
        (Ok(socket), Ok(dir)) => socket.starts_with(dir),
        _ => false,
    }
}

/// The log's key name (and checkpoint origin): this host plus a random id, so two
/// ledgers on one host never share a name.
fn key_name(host: &str) -> String {
    let mut id = [0u8; 4];
    let _ = getrandom::fill(&mut id);
    let host: String = host.chars().filter(|c| !c.is_whitespace() && *c != '+').collect();
    let host = if host.is_empty() { "localhost".to_string() } else { host };
    format!("{host}/ledgerd/{}", hex(&id))
}
