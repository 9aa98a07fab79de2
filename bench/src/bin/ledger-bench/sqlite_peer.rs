//! The peer `ledger-bench` compares against: what a team would build instead of ledgerd,
//! in process. SQLite in WAL mode with `synchronous=FULL` (every commit is synced), one
//! row per entry holding the entry's columns, its canonical leaf bytes and a BLAKE3 hash
//! chain (`chain = BLAKE3(previous chain ‖ leaf)`), for the same entries the daemon gets.
//!
//! Two shapes: [`rate`], one thread committing `per_commit` entries at a time (the
//! granularity ledgerd's group commit reaches, which SQLite itself never batches into for
//! independent callers); and [`rate_concurrent`], the way a team would deploy it behind 64
//! concurrent callers that each need their entry durable before the call returns: one
//! connection behind a mutex (SQLite takes one writer at a time, and the hash chain needs
//! the previous row's hash, so writers are serialized anyway; a pool of connections with
//! `busy_timeout` would only add lock retries), each call its own transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_proto::{leaf, pb};

/// The peer's database and the head of its hash chain.
struct Peer {
    db: rusqlite::Connection,
    chain: [u8; 32],
    seq: u64,
}

impl Peer {
    /// A fresh database in `dir`.
    fn create(dir: &Path) -> anyhow::Result<Peer> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let db = rusqlite::Connection::open(dir.join("peer.db"))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(
            "CREATE TABLE entries (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, agent TEXT NOT NULL,
             tool TEXT NOT NULL, decision INTEGER NOT NULL, leaf BLOB NOT NULL, chain BLOB NOT NULL)",
        )?;
        Ok(Peer { db, chain: [0u8; 32], seq: 0 })
    }

    /// Inserts and commits `n` entries in one transaction.
    fn commit(&mut self, n: usize) -> anyhow::Result<()> {
        let tx = self.db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO entries (seq, time, agent, tool, decision, leaf, chain) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for _ in 0..n {
                let seq = self.seq;
                let e = super::entry(seq);
                let entry = pb::Entry {
                    seq,
                    time_unix_nanos: ledgerd::log::merkle::now_nanos(),
                    kind: e.kind,
                    agent: e.agent,
                    session: e.session,
                    tool: e.tool,
                    params: e.params,
                    decision: e.decision,
                    rule: e.rule,
                    policy_version: e.policy_version,
                    reason: e.reason,
                    writer_uid: 1000,
                    writer_gid: 1000,
                    writer_pid: 4242,
                    host: "bench-host".into(),
                    ..Default::default()
                };
                let bytes = leaf::leaf_bytes(&entry);
                let mut h = blake3::Hasher::new();
                h.update(&self.chain);
                h.update(&bytes);
                self.chain = *h.finalize().as_bytes();
                insert.execute(rusqlite::params![
                    seq as i64,
                    entry.time_unix_nanos,
                    entry.agent,
                    entry.tool,
                    entry.decision,
                    bytes,
                    self.chain.as_slice()
                ])?;
                self.seq += 1;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Entries per second over `seconds`, one thread committing `per_commit` entries per
/// transaction, on a fresh database in `dir`.
pub fn rate(dir: &Path, per_commit: usize, seconds: f64) -> anyhow::Result<f64> {
    let mut peer = Peer::create(dir)?;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        peer.commit(per_commit)?;
    }
    Ok(peer.seq as f64 / start.elapsed().as_secs_f64())
}

/// Entries per second over `seconds` with `callers` threads, each committing one entry
/// per call in its own transaction through the one shared connection (see the module
/// docs), on a fresh database in `dir`.
pub fn rate_concurrent(dir: &Path, callers: usize, seconds: f64) -> anyhow::Result<f64> {
    let peer = Arc::new(Mutex::new(Peer::create(dir)?));
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let peer = peer.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                while Instant::now() < until {
                    peer.lock().map_err(|_| anyhow::anyhow!("a peer caller panicked"))?.commit(1)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("a peer caller panicked"))??;
    }
    let n = peer.lock().map_err(|_| anyhow::anyhow!("a peer caller panicked"))?.seq;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
