//! The shipper: follows one daemon's log and writes it to the bucket, range by range.
//!
//! A range runs from the last shipped checkpoint S to a newer checkpoint T. It is cut into
//! parts of at most `max_entries` entries; each part is written as its leaves object
//! (first: its name records the part), then its Parquet file(s) (one per UTC day). Once
//! every part is there, the consistency proof S → T, then T's signed note, which commits
//! the range. Every put is write-once and idempotent ([`Bucket::put_once`]).
//!
//! The cursor is the bucket itself: at start the shipper lists the newest checkpoint and
//! any parts past it, re-writes the last such part exactly (its Parquet may be missing
//! after a crash: the same bytes again are accepted) and goes on from its end, so a
//! crash at any point neither skips nor repeats an entry. The cursor file in the state
//! dir only narrows those listings; `status.json` there shows the backlog.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ledger_client::Client;
use ledger_proto::merkle::{self, Hash};
use ledger_proto::note::Checkpoint;
use ledger_proto::{leaf, pb};
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use crate::bucket::{Bucket, BucketError};
use crate::columns;
use crate::config::Settings;
use crate::layout::{Layout, day_of, day_text};

/// What stopped a shipping attempt (the loop backs off and tries again).
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Client(#[from] ledger_client::ClientError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Columns(#[from] columns::ColumnsError),
    #[error("{0}")]
    Log(String),
    #[error("cannot write {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
}

/// `status.json`: what `ledger-ship status` prints.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub bucket: String,
    pub log: String,
    /// The newest checkpoint in the bucket (entries shipped and committed).
    pub shipped: u64,
    /// The daemon's log size when last asked.
    pub head: u64,
    /// `head - shipped`.
    pub backlog: u64,
    /// RFC 3339 time of the last committed range.
    pub last_shipped_at: String,
    /// The last failure, while it lasts ("" when the last attempt worked).
    pub error: String,
    pub failing_since: String,
}

/// The cursor file: where the last run's listings may start.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Cursor {
    bucket: String,
    log: String,
    shipped: u64,
}

const CURSOR: &str = "cursor.json";
const STATUS: &str = "status.json";

fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), ShipError> {
    use std::io::Write;
    let path = dir.join(name);
    let err = |source| ShipError::State { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(())
}

/// Reads `status.json` from a state dir.
pub fn read_status(state_dir: &Path) -> Result<Status, String> {
    let path = state_dir.join(STATUS);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("cannot read {}: {e}; has ledger-ship run with this --state-dir?", path.display())
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{} is damaged: {e}", path.display()))
}

/// The checkpoint a note carries (the daemon's own answer; the fleet verifier checks
/// signatures, the shipper only needs the origin and size).
fn parse_note(note: &str) -> Result<Checkpoint, ShipError> {
    ledger_client::state::unsigned_body(note).map_err(ShipError::Log)
}

/// One shipper: a daemon, a bucket, a state dir.
pub struct Shipper {
    settings: Settings,
    bucket: Bucket,
    layout: Option<Layout>,
    /// The newest checkpoint in the bucket (0: none yet).
    shipped: u64,
    /// Entries in the bucket past `shipped` (parts of an unfinished range).
    written: u64,
    status: Status,
}

impl Shipper {
    pub fn new(settings: Settings) -> Result<Shipper, ShipError> {
        let bucket = Bucket::open(&settings.bucket, &settings.endpoint)?;
        let status = Status { bucket: settings.bucket.clone(), ..Status::default() };
        Ok(Shipper { settings, bucket, layout: None, shipped: 0, written: 0, status })
    }

    /// Entries committed in the bucket (the newest shipped checkpoint's size).
    pub fn shipped(&self) -> u64 {
        self.shipped
    }

    fn save_status(&self) {
        if let Err(e) = write_json(&self.settings.state_dir, STATUS, &self.status) {
            tracing::warn!("{e}");
        }
    }

    /// Finds where the bucket ends for this log: the newest checkpoint, and the last part
    /// written past it (rewritten by the caller).
    async fn resume(&mut self, client: &mut Client) -> Result<Option<(u64, u64)>, ShipError> {
        let latest = client.checkpoint(false).await?;
        let origin = parse_note(&latest.note)?.origin;
        let layout = Layout::new(&self.bucket.prefix, &origin);
        let cursor: Option<Cursor> = std::fs::read_to_string(self.settings.state_dir.join(CURSOR))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .filter(|c: &Cursor| c.bucket == self.settings.bucket && c.log == layout.log);
        // The cursor narrows the listings, if the checkpoint it names is still there.
        let mut from = 0;
        if let Some(c) = cursor
            && c.shipped > 0
        {
            match self.bucket.get(&layout.checkpoint(c.shipped)).await {
                Ok(_) => from = c.shipped,
                Err(e) if e.is_not_found() => {
                    tracing::warn!(
                        "the cursor says {} entries were shipped, but that checkpoint is not in the bucket; listing the whole log",
                        c.shipped
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        let checkpoints = if from > 0 {
            self.bucket.list_after(&layout.checkpoints_dir(), &layout.checkpoint(from)).await?
        } else {
            self.bucket.list(&layout.checkpoints_dir()).await?
        };
        let shipped =
            checkpoints.iter().filter_map(|m| layout.parse_checkpoint(&m.location)).max().unwrap_or(from);
        // Parts past the checkpoint start at or after it: their names sort after this.
        let after = object_store::path::Path::from(format!("{}/{shipped:020}", layout.leaves_dir()));
        let parts = self.bucket.list_after(&layout.leaves_dir(), &after).await?;
        let last_part = parts
            .iter()
            .filter_map(|m| layout.parse_leaves(&m.location))
            .filter(|(_, end)| *end > shipped)
            .max_by_key(|(start, _)| *start);
        if shipped > latest.size {
            return Err(ShipError::Log(format!(
                "the bucket holds a checkpoint of {shipped} entries for {}, but the daemon's newest covers {}: the daemon's log was rolled back or replaced; ship it under another prefix and have the log checked",
                layout.log, latest.size
            )));
        }
        tracing::info!(log = %layout.log, shipped, "resuming");
        self.layout = Some(layout);
        self.shipped = shipped;
        self.written = last_part.map_or(shipped, |(start, _)| start);
        self.status.log = self.layout.as_ref().map(|l| l.log.clone()).unwrap_or_default();
        self.status.shipped = shipped;
        Ok(last_part)
    }

    /// Ships everything up to a checkpoint at least as new as the daemon's head now.
    /// Returns the size shipped.
    pub async fn ship_once(&mut self, client: &mut Client) -> Result<u64, ShipError> {
        // The bucket is read once per start (and after a failure, when what reached it is
        // unknown); after that this process knows where it ends.
        let redo = if self.layout.is_none() { self.resume(client).await? } else { None };
        let head = client.head().await?;
        self.status.head = head.size;
        let mut cp = client.checkpoint(false).await?;
        if cp.size < head.size {
            cp = client.checkpoint(true).await?;
        }
        self.ship_range(client, redo, &cp).await?;
        Ok(self.shipped)
    }

    /// Ships `shipped..cp.size` (after rewriting the unfinished part `redo`, if any).
    async fn ship_range(
        &mut self,
        client: &mut Client,
        redo: Option<(u64, u64)>,
        cp: &pb::Checkpoint,
    ) -> Result<(), ShipError> {
        let layout = self.layout.clone().ok_or_else(|| ShipError::Log("resume first".into()))?;
        if let Some((start, end)) = redo {
            if end > cp.size {
                return Err(ShipError::Log(format!(
                    "the bucket holds leaves up to {end}, past the daemon's checkpoint of {}: the daemon's log was rolled back; ship it under another prefix",
                    cp.size
                )));
            }
            self.ship_parts(client, &layout, start, end, end).await?;
            self.written = end;
        }
        if cp.size <= self.shipped {
            return Ok(());
        }
        let written = self.written;
        self.ship_parts(client, &layout, written, cp.size, self.settings.max_entries).await?;
        self.written = cp.size;
        if self.shipped > 0 {
            let proof = client.consistency(self.shipped, cp.size).await?;
            let bytes: Vec<u8> = proof.path.concat();
            self.bucket.put_once(&layout.consistency(self.shipped, cp.size), Bytes::from(bytes)).await?;
        }
        // The note last: it commits the range.
        self.bucket.put_once(&layout.checkpoint(cp.size), Bytes::from(cp.note.clone().into_bytes())).await?;
        self.shipped = cp.size;
        self.status.shipped = cp.size;
        self.status.backlog = self.status.head.saturating_sub(cp.size);
        self.status.last_shipped_at = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        write_json(
            &self.settings.state_dir,
            CURSOR,
            &Cursor { bucket: self.settings.bucket.clone(), log: layout.log.clone(), shipped: cp.size },
        )?;
        Ok(())
    }

    /// Writes entries `start..end` as parts of at most `max` entries.
    async fn ship_parts(
        &mut self,
        client: &mut Client,
        layout: &Layout,
        start: u64,
        end: u64,
        max: u64,
    ) -> Result<(), ShipError> {
        let mut stream = client.entries(start, end, false).await?;
        let mut part: Vec<(pb::Entry, Hash)> = Vec::new();
        // The part's leaves, framed as they arrive (each entry is encoded once).
        let mut framed: Vec<u8> = Vec::new();
        let mut part_start = start;
        let mut next = start;
        while let Some(item) = stream.next().await {
            let item = item.map_err(ledger_client::ClientError::from)?;
            let entry = item
                .entry
                .ok_or_else(|| ShipError::Log("the daemon sent an entry without contents".into()))?;
            if entry.seq != next {
                return Err(ShipError::Log(format!("asked for entry {next}, the daemon sent {}", entry.seq)));
            }
            let bytes = leaf::leaf_bytes(&entry);
            let hash = merkle::leaf_hash(&bytes);
            if item.leaf_hash != hash {
                return Err(ShipError::Log(format!(
                    "entry {next} does not hash to the leaf the daemon stores: the ledger is damaged; run `ledgerctl verify --full`"
                )));
            }
            ledger_client::evidence::frame_leaf(&mut framed, &bytes).map_err(ShipError::Log)?;
            part.push((entry, hash));
            next += 1;
            if next - part_start == max || next == end {
                self.put_part(layout, part_start, next, &part, &framed).await?;
                part.clear();
                framed.clear();
                part_start = next;
            }
            if next == end {
                break;
            }
        }
        if next != end {
            return Err(ShipError::Log(format!("the daemon's entries ended at {next}, before {end}")));
        }
        Ok(())
    }

    async fn put_part(
        &mut self,
        layout: &Layout,
        start: u64,
        end: u64,
        rows: &[(pb::Entry, Hash)],
        framed: &[u8],
    ) -> Result<(), ShipError> {
        // The leaves first: their name records the part, so a restart rewrites exactly it.
        let leaves = compress(framed)?;
        self.bucket.put_once(&layout.leaves(start, end), Bytes::from(leaves)).await?;
        // One Parquet file per UTC day (times never decrease along seq, so days are runs).
        let mut i = 0;
        while i < rows.len() {
            let day = day_of(rows[i].0.time_unix_nanos);
            let mut j = i + 1;
            while j < rows.len() && day_of(rows[j].0.time_unix_nanos) == day {
                j += 1;
            }
            let date = day_text(day);
            let bytes = columns::parquet_bytes(&layout.origin, &rows[i..j])?;
            let path = layout.parquet(&date, rows[i].0.seq, rows[j - 1].0.seq);
            self.bucket.put_once(&path, Bytes::from(bytes)).await?;
            i = j;
        }
        tracing::debug!(start, end, "part written");
        Ok(())
    }

    /// Runs until `shutdown` resolves: ships every `interval`, or sooner when
    /// `max_entries` wait; backs off on failures.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ShipError> {
        tokio::pin!(shutdown);
        let mut backoff = self.settings.backoff_initial;
        let mut client: Option<Client> = None;
        let mut last_ship = Instant::now() - self.settings.interval;
        let poll = self.settings.interval.min(Duration::from_secs(1));
        loop {
            let attempt = async {
                if client.is_none() {
                    client = Some(Client::connect(&self.settings.socket).await?);
                }
                let Some(c) = client.as_mut() else { return Ok::<_, ShipError>(false) };
                let head = c.head().await?;
                self.status.head = head.size;
                self.status.backlog = head.size.saturating_sub(self.shipped);
                let due = last_ship.elapsed() >= self.settings.interval;
                let full = head.size.saturating_sub(self.shipped) >= self.settings.max_entries;
                if self.layout.is_none() || ((due || full) && head.size > self.shipped) {
                    self.ship_once(c).await?;
                    return Ok(true);
                }
                Ok(false)
            };
            let outcome = tokio::select! {
                r = attempt => r,
                () = &mut shutdown => return Ok(()),
            };
            let wait = match outcome {
                Ok(shipped) => {
                    if shipped {
                        last_ship = Instant::now();
                    }
                    backoff = self.settings.backoff_initial;
                    self.status.error.clear();
                    self.status.failing_since.clear();
                    self.save_status();
                    poll
                }
                Err(e) => {
                    tracing::warn!(
                        "shipping failed, retrying in {}: {e}",
                        ledger_client::state::human(backoff)
                    );
                    if matches!(e, ShipError::Client(_)) {
                        client = None;
                    }
                    // What reached the bucket is unknown: read where it ends again.
                    self.layout = None;
                    if self.status.failing_since.is_empty() {
                        self.status.failing_since =
                            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                    }
                    self.status.error = e.to_string();
                    self.save_status();
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.settings.backoff_max);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// A part's leaves object: the `leaves.bin` framing of evidence bundles (each leaf as a
/// 4-byte big-endian length and its canonical bytes), zstd-compressed.
pub fn leaves_object(rows: &[(pb::Entry, Hash)]) -> Result<Vec<u8>, ShipError> {
    let mut framed = Vec::with_capacity(rows.len() * 256);
    for (entry, _) in rows {
        ledger_client::evidence::frame_leaf(&mut framed, &leaf::leaf_bytes(entry)).map_err(ShipError::Log)?;
    }
    compress(&framed)
}

fn compress(framed: &[u8]) -> Result<Vec<u8>, ShipError> {
    zstd::bulk::compress(framed, columns::ZSTD_LEVEL)
        .map_err(|e| ShipError::Log(format!("cannot compress the leaves: {e}")))
}

/// The leaves of a leaves object, decompressed (tools and tests; `fleet verify` streams).
pub fn leaves_of(object: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let decoder = zstd::stream::read::Decoder::new(object).map_err(|e| format!("not a zstd stream: {e}"))?;
    let mut reader = ledger_client::evidence::LeafReader::new(decoder);
    let mut out = Vec::new();
    while let Some(leaf) = reader.next_leaf()? {
        out.push(leaf.to_vec());
    }
    Ok(out)
}

/// The leaf hashes of a consistency proof object (concatenated 32-byte hashes).
pub fn proof_hashes(bytes: &[u8]) -> Result<Vec<Hash>, String> {
    if !bytes.len().is_multiple_of(32) {
        return Err(format!("{} bytes is not a whole number of 32-byte hashes", bytes.len()));
    }
    Ok(bytes.chunks_exact(32).filter_map(|c| <Hash>::try_from(c).ok()).collect())
}
