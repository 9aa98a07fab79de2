//! The daemon's lifecycle: open everything, announce the start in the log, serve until
//! told to stop, then record the stop and sign a final checkpoint.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger_proto::pb::{self, admin_server::AdminServer, ledger_server::LedgerServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::admin::AdminService;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::intake::Peer;
use crate::log::{Log, hex};
use crate::server::LedgerService;
use crate::store::Store;
use crate::writer::{self, WriterHandle};

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
    let dir = DataDir::prepare(&config.data_dir)?;
    let host: Arc<str> = gethostname::gethostname().to_string_lossy().into();
    let signer = dir.signing_key_or_create(|| key_name(&host))?;
    let store_path = dir.store();
    let store = {
        let path = store_path.clone();
        let cache = config.storage.cache_bytes;
        tokio::task::spawn_blocking(move || Store::open(&path, cache)).await??
    };
    let (log, recovery) = tokio::task::spawn_blocking(move || Log::open(store, signer)).await??;
    if recovery.adopted > 0 {
        tracing::warn!(
            adopted = recovery.adopted,
            "took in entries that reached disk just before a crash but were never acknowledged"
        );
    }
    let previous_size = log.size();
    let previous_checkpoint = log.last_checkpoint().map(|c| c.checkpoint.size);
    let verifier = Arc::new(log.verifier().clone());
    let store = log.store().clone();
    let shared = log.shared();
    let (writer, writer_thread) = writer::spawn(log);

    // Monitoring gaps must be visible: every start is in the log, with what it found.
    let details = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "key": verifier.to_vkey_string(),
        "previous_size": previous_size,
        "previous_checkpoint_size": previous_checkpoint,
        "adopted_after_crash": recovery.adopted,
    });
    append_own(&writer, pb::Kind::DaemonStarted, &host, details).await?;
    let cp = writer.checkpoint(false).await?;

    let socket = config.socket_path();
    let listener = bind(&socket)?;
    let ready = Ready { socket: socket.clone(), size: cp.checkpoint.size, root: hex(&cp.checkpoint.root) };
    on_ready(&ready);

    let service = LedgerService {
        writer: writer.clone(),
        store,
        verifier,
        host: host.clone(),
        shared: shared.clone(),
        require_token: config.require_agent_token,
    };
    let admin = AdminService { writer: writer.clone(), shared, host: host.clone() };
    let ticker = tokio::spawn(checkpoint_ticker(writer.clone(), interval));
    let served = tonic::transport::Server::builder()
        .add_service(LedgerServer::new(service))
        .add_service(AdminServer::new(admin))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    ticker.abort();
    let _ = std::fs::remove_file(&socket);

    let stop_details = serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "reason": "signal" });
    let stopped = append_own(&writer, pb::Kind::DaemonStopped, &host, stop_details).await;
    let final_cp = writer.checkpoint(false).await;
    drop(writer);
    let joined = tokio::task::spawn_blocking(move || writer_thread.join()).await?;
    served?;
    stopped?;
    final_cp?;
    match joined {
        Ok(Ok(_log)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(anyhow::anyhow!("the writer thread panicked")),
    }
}

/// Appends an entry written by ledgerd itself.
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
    let entry = pb::Entry {
        kind: kind as i32,
        agent: "ledgerd".into(),
        host: host.into(),
        writer_uid: me.uid,
        writer_gid: me.gid,
        writer_pid: me.pid,
        details: details.to_string(),
        ..Default::default()
    };
    writer.append(vec![entry]).await.map(|_| ())
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
/// socket is removed first, and it is created under a umask-equivalent (the dir is 0700
/// by default), then set to 0660.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
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
        Err(_) if path.exists() => std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("cannot remove stale socket {}: {e}", path.display()))?,
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("cannot bind socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| anyhow::anyhow!("cannot set mode 0660 on {}: {e}", path.display()))?;
    Ok(listener)
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
