//! Delivers every signed checkpoint to the `[[publish]]` targets: a directory (one file
//! per checkpoint) or a command (the note on its stdin).
//!
//! The store's `checkpoints` tree is the queue: each target has its own task and its own
//! cursor (the key of the last checkpoint it took, in `<data_dir>/publish/<id>.cursor`),
//! and delivers what lies after the cursor, oldest first, one at a time. A failure is
//! logged and retried with exponential backoff ([`FIRST_RETRY`] doubling up to
//! [`LAST_RETRY`]); the cursor only moves after a delivery worked, so every checkpoint
//! is delivered, in order, at least once, across restarts too. A new target (no cursor
//! yet) starts with the oldest stored checkpoint.
//!
//! None of this is on the write path: the writer signs and stores checkpoints without
//! waiting for anyone, and the tasks learn of new ones from a sled subscription drained
//! by a task of its own (so a slow target never fills sled's subscriber queue, which
//! would block the writer).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ledger_proto::pb;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log::merkle::now_nanos;
use crate::storage::store::Store;

/// The wait after the first failure; it doubles after each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const LAST_RETRY: Duration = Duration::from_secs(300);
/// How often the tasks look at the store even without news (a missed wake-up costs at
/// most this much delay).
const POLL: Duration = Duration::from_secs(5);
/// Checkpoints read from the store per round.
const CHUNK: usize = 64;

/// A checkpoint's store key: tree size ‖ signing time, both u64 big-endian.
type Key = [u8; 16];

/// The file name a checkpoint gets in a directory target (and `$LEDGERD_CHECKPOINT_NAME`
/// for a command): names sort by tree size, then signing time.
pub fn file_name(key: &Key) -> String {
    let (size, time) = split_key(key);
    format!("checkpoint-{size:020}-{time:020}.note")
}

fn split_key(key: &Key) -> (u64, u64) {
    let mut size = [0u8; 8];
    let mut time = [0u8; 8];
    size.copy_from_slice(&key[..8]);
    time.copy_from_slice(&key[8..]);
    (u64::from_be_bytes(size), u64::from_be_bytes(time))
}

/// Where a target delivers to.
#[derive(Clone, Debug)]
enum Sink {
    Dir(PathBuf),
    Command(Vec<String>),
}

/// One target and what is known of its deliveries.
struct Target {
    /// "dir /path" or "command prog args", for messages and `ledgerctl status`.
    label: String,
    sink: Sink,
    timeout: Duration,
    cursor_path: PathBuf,
    state: Mutex<pb::PublishState>,
}

/// The running publisher: one task per target.
pub struct Publisher {
    targets: Board,
    tasks: Vec<JoinHandle<()>>,
    draining: watch::Sender<bool>,
    wake_task: Option<JoinHandle<()>>,
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare checkpoint publishing: {path}: {source}")]
pub struct PublishError {
    path: PathBuf,
    source: std::io::Error,
}

impl Publisher {
    /// Starts a task per target, each resuming after its cursor in `data_dir/publish`.
    pub fn start(
        configs: &[PublishConfig],
        data_dir: &Path,
        store: &Store,
    ) -> Result<Publisher, PublishError> {
        let (draining, draining_rx) = watch::channel(false);
        let (wake, wake_rx) = watch::channel(0u64);
        if configs.is_empty() {
            return Ok(Publisher { targets: Board::default(), tasks: Vec::new(), draining, wake_task: None });
        }
        let cursors = data_dir.join("publish");
        fs::create_dir_all(&cursors).map_err(|source| PublishError { path: cursors.clone(), source })?;
        let mut targets = Vec::new();
        for config in configs {
            let (sink, label) = match (&config.dir, &config.command) {
                (Some(dir), _) => (Sink::Dir(dir.clone()), format!("dir {}", dir.display())),
                (None, Some(cmd)) => (Sink::Command(cmd.clone()), format!("command {}", cmd.join(" "))),
                (None, None) => continue,
            };
            let id = ledger_proto::hex(&blake3::hash(label.as_bytes()).as_bytes()[..8]);
            let cursor_path = cursors.join(format!("{id}.cursor"));
            let cursor = read_cursor(&cursor_path);
            let delivered_size = cursor.map_or(0, |k| split_key(&k).0);
            let state = pb::PublishState { target: label.clone(), delivered_size, ..Default::default() };
            targets.push(Arc::new(Target {
                label,
                sink,
                timeout: config.timeout().unwrap_or(Duration::from_secs(30)),
                cursor_path,
                state: Mutex::new(state),
            }));
        }
        // The subscription is drained here, always, whatever the targets do.
        let mut events = store.checkpoints.watch_prefix(Vec::<u8>::new());
        let wake_task = tokio::spawn(async move {
            while (&mut events).await.is_some() {
                wake.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        let tasks = targets
            .iter()
            .map(|t| tokio::spawn(run(t.clone(), store.clone(), wake_rx.clone(), draining_rx.clone())))
            .collect();
        Ok(Publisher { targets: Board(Arc::new(targets)), tasks, draining, wake_task: Some(wake_task) })
    }

    /// A handle on the targets' states, for `Status`.
    pub fn board(&self) -> Board {
        self.targets.clone()
    }

    /// At shutdown: lets every target deliver what is pending (the final checkpoint
    /// included) for up to `grace`, without retrying failures, then stops them. What is
    /// left is delivered after the next start.
    pub async fn finish(mut self, grace: Duration) {
        let _ = self.draining.send(true);
        let all = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            for task in &self.tasks {
                task.abort();
            }
            tracing::warn!(
                "checkpoint publishing did not finish within {grace:?} of the stop; the rest is delivered after the next start"
            );
        }
        if let Some(task) = self.wake_task.take() {
            task.abort();
        }
    }
}

/// What `ledgerctl status` shows of the targets; outlives nothing but the daemon.
#[derive(Clone, Default)]
pub struct Board(Arc<Vec<Arc<Target>>>);

impl Board {
    /// Each target's state now.
    pub fn states(&self) -> Vec<pb::PublishState> {
        self.0.iter().map(|t| lock(&t.state).clone()).collect()
    }
}

fn lock(state: &Mutex<pb::PublishState>) -> std::sync::MutexGuard<'_, pb::PublishState> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One target's loop: deliver everything after the cursor, then wait for news.
async fn run(
    target: Arc<Target>,
    store: Store,
    mut wake: watch::Receiver<u64>,
    mut draining: watch::Receiver<bool>,
) {
    let mut cursor = read_cursor(&target.cursor_path);
    let mut failures: u32 = 0;
    loop {
        let (batch, pending) = match pending_after(&store, cursor).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(target = %target.label, error = %e, "cannot read checkpoints to publish; publishing to this target stops until ledgerd restarts");
                return;
            }
        };
        lock(&target.state).pending = pending;
        if batch.is_empty() {
            if *draining.borrow() {
                return;
            }
            tokio::select! {
                changed = wake.changed() => {
                    // No more news (the store is closing): look now and then instead.
                    if changed.is_err() {
                        tokio::time::sleep(POLL).await;
                    }
                }
                changed = draining.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            continue;
        }
        for (key, note) in batch {
            let result = deliver(&target, &key, &note).await;
            let result = result.and_then(|()| write_cursor(&target.cursor_path, &key, &target.label));
            match result {
                Ok(()) => {
                    cursor = Some(key);
                    failures = 0;
                    let mut state = lock(&target.state);
                    state.delivered_size = split_key(&key).0;
                    state.pending = state.pending.saturating_sub(1);
                    state.failures = 0;
                    state.last_error.clear();
                    state.next_retry_unix_nanos = 0;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures);
                    let size = split_key(&key).0;
                    {
                        let mut state = lock(&target.state);
                        state.failures = u64::from(failures);
                        state.last_error = error.clone();
                        state.next_retry_unix_nanos =
                            now_nanos().saturating_add(i64::try_from(wait.as_nanos()).unwrap_or(i64::MAX));
                    }
                    if *draining.borrow() {
                        tracing::warn!(target = %target.label, size, error = %error, "cannot publish the checkpoint at shutdown; it and any later ones are delivered after the next start");
                        return;
                    }
                    tracing::warn!(
                        target = %target.label,
                        size,
                        failures,
                        retry_in = ?wait,
                        error = %error,
                        "cannot publish checkpoint; will retry. Appends and signing go on; undelivered checkpoints are kept and sent in order once the target works again. Fix the target (mounted? writable by ledgerd? does the command exit 0?) and watch `ledgerctl status`"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        changed = draining.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    break;
                }
            }
        }
    }
}

/// The wait after `failures` failures in a row.
fn backoff(failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_RETRY.saturating_mul(factor).min(LAST_RETRY)
}

/// Up to [`CHUNK`] checkpoints after `cursor`, and how many there are in all.
async fn pending_after(store: &Store, cursor: Option<Key>) -> Result<(Vec<(Key, Vec<u8>)>, u64), String> {
    let tree = store.checkpoints.clone();
    let read = tokio::task::spawn_blocking(move || {
        let range = match cursor {
            Some(c) => tree.range((std::ops::Bound::Excluded(c.to_vec()), std::ops::Bound::Unbounded)),
            None => tree.range::<Vec<u8>, _>(..),
        };
        let mut batch = Vec::new();
        let mut count = 0u64;
        for item in range {
            let (key, value) = item.map_err(|e| e.to_string())?;
            count += 1;
            if batch.len() < CHUNK {
                let key: Key =
                    key.as_ref().try_into().map_err(|_| "a checkpoint key is not 16 bytes".to_string())?;
                batch.push((key, value.to_vec()));
            }
        }
        Ok((batch, count))
    });
    read.await.map_err(|e| e.to_string())?
}

/// One delivery attempt, bounded by the target's timeout.
async fn deliver(target: &Target, key: &Key, note: &[u8]) -> Result<(), String> {
    let name = file_name(key);
    let attempt = async {
        match &target.sink {
            Sink::Dir(dir) => {
                let (dir, note, name) = (dir.clone(), note.to_vec(), name.clone());
                tokio::task::spawn_blocking(move || write_file(&dir, &name, &note))
                    .await
                    .map_err(|e| e.to_string())?
            }
            Sink::Command(cmd) => run_command(cmd, key, &name, note).await,
        }
    };
    match tokio::time::timeout(target.timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "gave up after {:?} (the target's timeout); a command is killed then",
            target.timeout
        )),
    }
}

/// Writes one checkpoint file atomically: a temporary file, synced, renamed into place,
/// then the directory synced. A file already there is left alone: the same note is a
/// delivery that was done before (its cursor update was lost), another one is an error.
fn write_file(dir: &Path, name: &str, note: &[u8]) -> Result<(), String> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(existing) if existing == note => return Ok(()),
        Ok(_) => {
            return Err(format!(
                "{} exists with other contents; ledgerd never overwrites a published checkpoint. Find out who wrote it, then move it aside",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }
    // Checkpoints are public.
    crate::storage::datadir::replace_file(&path, note, 0o644)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Runs the command with the note on stdin; it worked if it exits 0.
async fn run_command(cmd: &[String], key: &Key, name: &str, note: &[u8]) -> Result<(), String> {
    let (program, args) = cmd.split_first().ok_or("the command is empty")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("LEDGERD_CHECKPOINT_SIZE", split_key(key).0.to_string())
        .env("LEDGERD_CHECKPOINT_NAME", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that exits without reading is judged by its exit status alone.
        let _ = stdin.write_all(note).await;
        drop(stdin);
    }
    let out = child.wait_with_output().await.map_err(|e| format!("cannot wait for {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let last: String = last.chars().take(300).collect();
    let status = match out.status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(if last.is_empty() { format!("{program} {status}") } else { format!("{program} {status}: {last}") })
}

/// The last delivered key, from its file; none if missing or unreadable (then delivery
/// starts again from the oldest: a directory target skips files it already has).
fn read_cursor(path: &Path) -> Option<Key> {
    let text = fs::read_to_string(path).ok()?;
    let hex = text.lines().next()?.trim();
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Replaces the cursor file atomically (see [`crate::storage::datadir::replace_file`]).
fn write_cursor(path: &Path, key: &Key, label: &str) -> Result<(), String> {
    let text = format!("{}\n{label}\n", ledger_proto::hex(key));
    let write = || crate::storage::datadir::replace_file(path, text.as_bytes(), 0o600);
    write().map_err(|e| {
        format!("delivered, but cannot record it in {}: {e}; check the data dir", path.display())
    })
}

/// One `[[publish]]` target: exactly one of `dir` and `command`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// A directory that receives one file per checkpoint (e.g. a write-once share).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A program and its arguments, run once per checkpoint with the note on stdin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// How long one delivery may take before it counts as failed (default "30s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_size_then_time_and_backoff_is_capped() {
        let mut a = [0u8; 16];
        a[7] = 9;
        let mut b = [0u8; 16];
        b[6] = 1;
        assert!(file_name(&a) < file_name(&b));
        assert_eq!(file_name(&a), "checkpoint-00000000000000000009-00000000000000000000.note");
        assert_eq!(backoff(1), FIRST_RETRY);
        assert_eq!(backoff(3), FIRST_RETRY * 4);
        assert_eq!(backoff(40), LAST_RETRY);
    }

    #[test]
    fn a_file_is_written_once_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_file(dir.path(), "c.note", b"one").expect("write");
        write_file(dir.path(), "c.note", b"one").expect("same note again is fine");
        let err = write_file(dir.path(), "c.note", b"two").expect_err("different note");
        assert!(err.contains("never overwrites"), "{err}");
        assert_eq!(fs::read(dir.path().join("c.note")).expect("read"), b"one");
        let cursor = dir.path().join("x.cursor");
        let key = [7u8; 16];
        write_cursor(&cursor, &key, "dir /x").expect("cursor");
        assert_eq!(read_cursor(&cursor), Some(key));
    }
}
