//! The peer `ledger-bench` compares against: what a team would build instead of ledgerd,
//! in process. SQLite in WAL mode with `synchronous=FULL` (every commit is synced), one
//! row per entry holding the entry's columns, its canonical leaf bytes and a BLAKE3 hash
//! chain (`chain = BLAKE3(previous chain ‖ leaf)`), for the same entries the daemon gets,
//! committed `per_commit` at a time.

use std::path::Path;
use std::time::{Duration, Instant};

use ledger_proto::{leaf, pb};

/// Entries per second over `seconds`, committing `per_commit` entries per transaction,
/// on a fresh database in `dir`.
pub fn rate(dir: &Path, per_commit: usize, seconds: f64) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut db = rusqlite::Connection::open(dir.join("peer.db"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, agent TEXT NOT NULL,
         tool TEXT NOT NULL, decision INTEGER NOT NULL, leaf BLOB NOT NULL, chain BLOB NOT NULL)",
    )?;
    let mut chain = [0u8; 32];
    let mut seq = 0u64;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let tx = db.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO entries (seq, time, agent, tool, decision, leaf, chain) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for _ in 0..per_commit {
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
                h.update(&chain);
                h.update(&bytes);
                chain = *h.finalize().as_bytes();
                insert.execute(rusqlite::params![
                    seq as i64,
                    entry.time_unix_nanos,
                    entry.agent,
                    entry.tool,
                    entry.decision,
                    bytes,
                    chain.as_slice()
                ])?;
                seq += 1;
            }
        }
        tx.commit()?;
    }
    Ok(seq as f64 / start.elapsed().as_secs_f64())
}
