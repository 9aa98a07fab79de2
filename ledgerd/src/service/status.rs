//! The daemon's health for `ledgerctl status` (the `Status` RPC): tree, latest
//! checkpoint, publishing, uptime, connections, append rate, data dir size, and whether
//! the writer stopped.
//!
//! Everything is read from what already exists (the writer's published head, the
//! store's checkpoints tree, the publisher's board, the connection count); the only
//! thing of its own is a sampler that notes the tree size once a second for the rate.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_proto::pb;
use tokio::sync::watch;

use crate::log::merkle::now_nanos;
use crate::scoring::writer::Head;
use crate::service::connections::Connections;
use crate::service::publish::Board;
use crate::storage::store::Store;

/// How far back the append rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What `Status` reads from.
#[derive(Clone)]
pub struct StatusSource {
    pub started_unix_nanos: i64,
    pub head: watch::Receiver<Head>,
    pub store: Store,
    pub data_dir: PathBuf,
    pub connections: Arc<Connections>,
    pub publish: Board,
    pub verifier_key: String,
    pub rate: Rate,
    /// The error that stopped the writer, if one did ([`crate::writer::WriterHandle::failure`]).
    pub writer_failure: watch::Receiver<Option<String>>,
}

impl StatusSource {
    /// The status now. Walking the data dir for its size is the only slow part; it runs
    /// on a blocking thread.
    pub async fn status(&self) -> Result<pb::DaemonStatus, tonic::Status> {
        let head = *self.head.borrow();
        let (store, dir) = (self.store.clone(), self.data_dir.clone());
        let (latest, bytes) =
            tokio::task::spawn_blocking(move || (latest_checkpoint(&store), dir_bytes(&dir)))
                .await
                .map_err(|e| tonic::Status::internal(format!("status: {e}")))?;
        let (checkpoint_size, checkpoint_time) =
            latest.map_err(|e| tonic::Status::internal(format!("cannot read the checkpoints: {e}")))?;
        Ok(pb::DaemonStatus {
            size: head.size,
            root: head.root.to_vec(),
            checkpoint_size,
            checkpoint_time_unix_nanos: checkpoint_time,
            now_unix_nanos: now_nanos(),
            started_unix_nanos: self.started_unix_nanos,
            publish: self.publish.states(),
            connections: self.connections.open() as u64,
            max_connections: self.connections.max() as u64,
            appends_per_second: self.rate.per_second(head.size),
            data_dir_bytes: bytes,
            version: env!("CARGO_PKG_VERSION").to_string(),
            verifier_key: self.verifier_key.clone(),
            writer_error: self.writer_failure.borrow().clone().unwrap_or_default(),
        })
    }
}

/// The latest checkpoint's tree size and signing time (0, 0 with none).
fn latest_checkpoint(store: &Store) -> Result<(u64, i64), sled::Error> {
    let Some((key, _)) = store.checkpoints.last()? else { return Ok((0, 0)) };
    let part = |range: std::ops::Range<usize>| {
        key.get(range).and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, u64::from_be_bytes)
    };
    Ok((part(0..8), i64::try_from(part(8..16)).unwrap_or(i64::MAX)))
}

/// Bytes of the regular files under `dir` (links are not followed).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(items) = std::fs::read_dir(&d) else { continue };
        for item in items.flatten() {
            match item.metadata() {
                Ok(m) if m.is_dir() => todo.push(item.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// The tree size once a second over the last minute.
#[derive(Clone, Default)]
pub struct Rate(Arc<Mutex<VecDeque<(Instant, u64)>>>);

impl Rate {
    /// Starts sampling `head` (the task ends with the runtime).
    pub fn start(head: watch::Receiver<Head>) -> Rate {
        let rate = Rate::default();
        let samples = rate.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let size = head.borrow().size;
                samples.note(Instant::now(), size);
            }
        });
        rate
    }

    fn note(&self, at: Instant, size: u64) {
        let mut samples = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.push_back((at, size));
        while samples.front().is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW) {
            samples.pop_front();
        }
    }

    /// Entries per second from the oldest sample in the window to `size` now.
    pub fn per_second(&self, size: u64) -> f64 {
        let samples = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((since, then)) = samples.front().copied() else { return 0.0 };
        let secs = since.elapsed().as_secs_f64();
        if secs < 0.5 { 0.0 } else { size.saturating_sub(then) as f64 / secs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_the_last_minute_only() {
        let rate = Rate::default();
        let now = Instant::now();
        let Some(start) = now.checked_sub(Duration::from_secs(120)) else { return };
        rate.note(start, 0);
        rate.note(now - Duration::from_secs(10), 1000);
        // The sample of two minutes ago fell out; 1000 → 1100 over about 10 s.
        let r = rate.per_second(1100);
        assert!((8.0..=10.5).contains(&r), "{r}");
    }
}
