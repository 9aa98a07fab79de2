//! The scorer in the daemon: scores every entry of a commit, in commit order, with the
//! time the log will stamp, before its leaf hash is computed; and rebuilds the baselines
//! at start by replaying the log, so a restart does not forget what is normal.
//!
//! The writer thread owns the one [`Scoring`]. Replaying the log into empty baselines
//! reaches the state live scoring reached (the scorer is deterministic and reads only what
//! is stored: the entries, their times and intake's flags), which
//! `tests/tests/severity.rs` checks against a real daemon.
//!
//! Replaying a long log takes seconds (reading it dominates), so at a clean stop the
//! writer also leaves a snapshot of the baselines in the `meta` tree, tagged with the log
//! size and root it covers and the `[scorer]` section it was learned with. A start whose
//! log still has that root at that size, with the same section, loads it and replays only
//! the entries after it. The snapshot is a cache: a missing, stale, foreign or damaged one
//! means a full replay, which gives the same state.

use std::time::{Duration, Instant};

use ledger_proto::pb;
use serde::{Deserialize, Serialize};

use crate::scoring::scorer::{InvalidConfig, Scorer, ScorerConfig};
use crate::storage::store::{Store, StoreError};
use crate::storage::stored::{self, StoredEntry};

/// The `meta` key of the baselines snapshot: a JSON [`SnapshotTag`] line, then the
/// scorer's [`Scorer::snapshot`].
const SNAPSHOT_KEY: &[u8] = b"scorer_baselines";

/// What a snapshot covers.
#[derive(Serialize, Deserialize, PartialEq, Eq)]
struct SnapshotTag {
    /// The baselines learned from entries `0..size`...
    size: u64,
    /// ...of the log whose root at `size` is this (hex)...
    root: String,
    /// ...with this `[scorer]` section (JSON).
    config: String,
}

/// Scores entries for the writer, or leaves them unscored when `[scorer] enabled = false`.
pub struct Scoring {
    scorer: Option<Scorer>,
    /// The `[scorer]` section as JSON, to tag snapshots with.
    config: String,
}

/// How the baselines were brought up to date.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replayed {
    /// Entries replayed.
    pub entries: u64,
    /// The seq the replay started at: 0 for the whole log, else the size of the snapshot
    /// it started from.
    pub from: u64,
    pub took: Duration,
}

impl Scoring {
    /// A scorer with empty baselines (`None` inside when scoring is off).
    pub fn new(config: &ScorerConfig) -> Result<Scoring, InvalidConfig> {
        let scorer = if config.enabled { Some(Scorer::new(config.clone())?) } else { None };
        let config = serde_json::to_string(config).map_err(|e| InvalidConfig(e.to_string()))?;
        Ok(Scoring { scorer, config })
    }

    /// Brings the baselines up to the first `size` entries of the log: from the snapshot
    /// a clean stop left when it fits this log and config, else by a full replay.
    pub fn resume(&mut self, store: &Store, size: u64) -> Result<Replayed, StoreError> {
        let started = Instant::now();
        let Some(scorer) = self.scorer.as_mut() else { return Ok(Replayed::default()) };
        match load_snapshot(scorer, &self.config, store, size) {
            Ok(from) => {
                let entries = replay(scorer, store, from, size)?;
                Ok(Replayed { entries, from, took: started.elapsed() })
            }
            Err(why) => {
                tracing::info!("replaying the whole log into the scorer's baselines: {why}");
                self.rebuild(store, size)
            }
        }
    }

    /// Leaves a snapshot of the baselines, which cover the `size` entries of the log whose
    /// root is `root` (the writer calls this as it stops). Best effort: without one, the
    /// next start replays the whole log.
    pub fn save(&self, store: &Store, size: u64, root: &[u8]) -> Result<(), String> {
        let Some(scorer) = &self.scorer else { return Ok(()) };
        let tag = SnapshotTag { size, root: ledger_proto::hex(root), config: self.config.clone() };
        let mut value = serde_json::to_vec(&tag).map_err(|e| e.to_string())?;
        value.push(b'\n');
        value.extend(scorer.snapshot().map_err(|e| e.to_string())?);
        store.meta.insert(SNAPSHOT_KEY, value).map_err(|e| e.to_string())?;
        store.meta.flush().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Whether entries are scored at all.
    pub fn enabled(&self) -> bool {
        self.scorer.is_some()
    }

    /// Forgets the baselines and learns them again from the first `size` entries of the
    /// log, in seq order. Reads each stored record in place and copies only the fields the
    /// scorer reads into one reused entry, so a replay allocates almost nothing per entry.
    pub fn rebuild(&mut self, store: &Store, size: u64) -> Result<Replayed, StoreError> {
        let started = Instant::now();
        let Some(scorer) = self.scorer.as_mut() else { return Ok(Replayed::default()) };
        scorer.reset();
        let entries = replay(scorer, store, 0, size)?;
        Ok(Replayed { entries, from: 0, took: started.elapsed() })
    }

    /// Scores `entries` (one commit, in commit order) as stamped at `time`, the time the
    /// log gives them: each gets its severity and the flags that explain it. With scoring
    /// off, nothing changes (severity stays 0).
    pub fn score<'a>(&mut self, entries: impl IntoIterator<Item = &'a mut pb::Entry>, time: i64) {
        let Some(scorer) = self.scorer.as_mut() else { return };
        for entry in entries {
            entry.time_unix_nanos = time;
            scorer.score(entry).apply(entry);
        }
    }
}

/// Scores entries `from..to` of the log into the baselines; returns how many.
fn replay(scorer: &mut Scorer, store: &Store, from: u64, to: u64) -> Result<u64, StoreError> {
    let mut view = pb::Entry::default();
    let mut n = 0u64;
    store.scan(from, to, |seq, bytes| {
        stored::with_entry(bytes, |r| copy_scored_fields(r, &mut view))
            .map_err(|e| StoreError::BadRecord { seq, message: e.to_string() })?;
        scorer.score(&view);
        n += 1;
        Ok(true)
    })?;
    if n != to - from {
        return Err(StoreError::Encode(format!(
            "the log should hold entries {from}..{to} but {n} were read; run `ledgerd --rebuild-projections` or restore the data dir from backup"
        )));
    }
    Ok(n)
}

/// Loads the snapshot into `scorer` if it belongs to this log (same root at its size,
/// no longer than the log) and config; returns the size it covers, or why not.
fn load_snapshot(scorer: &mut Scorer, config: &str, store: &Store, size: u64) -> Result<u64, String> {
    let value = store
        .meta
        .get(SNAPSHOT_KEY)
        .map_err(|e| e.to_string())?
        .ok_or("no snapshot (first start, or no clean stop since scoring began)")?;
    let newline = value.iter().position(|b| *b == b'\n').ok_or("the snapshot is damaged")?;
    let tag: SnapshotTag =
        serde_json::from_slice(&value[..newline]).map_err(|e| format!("the snapshot is damaged: {e}"))?;
    if tag.config != config {
        return Err("the [scorer] section changed since the snapshot".into());
    }
    if tag.size > size {
        return Err(format!("the snapshot covers {} entries but the log holds {size}", tag.size));
    }
    let root = store.root(tag.size).map_err(|e| e.to_string())?;
    if ledger_proto::hex(&root) != tag.root {
        return Err("the snapshot belongs to another log".into());
    }
    scorer.restore(&value[newline + 1..]).map_err(|e| format!("the snapshot is damaged: {e}"))?;
    Ok(tag.size)
}

/// Copies what the scorer reads of a stored entry into `view`, reusing its buffers.
fn copy_scored_fields(r: &StoredEntry<'_>, view: &mut pb::Entry) {
    fn set(to: &mut String, from: &str) {
        to.clear();
        to.push_str(from);
    }
    view.seq = r.seq;
    view.time_unix_nanos = r.time_unix_nanos;
    view.kind = r.kind;
    view.decision = r.decision;
    view.shim_seq = r.shim_seq;
    set(&mut view.agent, r.agent);
    set(&mut view.tool, r.tool);
    set(&mut view.policy_check, r.policy_check);
    set(&mut view.shim_id, r.shim_id);
    view.flags.truncate(r.flags.len());
    for (i, flag) in r.flags.iter().enumerate() {
        match view.flags.get_mut(i) {
            Some(to) => set(to, flag),
            None => view.flags.push(flag.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::merkle::Log;
    use ledger_proto::note::NoteSigner;
    use ledger_proto::pb::{Decision, Kind};

    fn entry(i: u64) -> pb::Entry {
        pb::Entry {
            kind: Kind::Decision as i32,
            agent: format!("agent-{}", i % 3),
            tool: ["fs.read_file", "shell.exec", "kv.get", "fs.delete_file"][(i % 4) as usize].into(),
            decision: if i.is_multiple_of(5) { Decision::Deny } else { Decision::Allow } as i32,
            shim_id: "s".into(),
            shim_seq: i + i / 7,
            ..Default::default()
        }
    }

    /// Appends entries `from..to` as the writer does, one commit per 10, an hour apart.
    fn append(log: &mut Log, scoring: &mut Scoring, from: u64, to: u64) {
        for start in (from..to).step_by(10) {
            let mut group: Vec<pb::Entry> = (start..(start + 10).min(to)).map(entry).collect();
            let time = (start as i64 * 360 + 1_767_571_200) * 1_000_000_000;
            let time = time.max(log.last_time());
            scoring.score(group.iter_mut(), time);
            log.append(vec![group], time).expect("append");
        }
    }

    fn same(a: &Scoring, b: &Scoring) -> bool {
        match (&a.scorer, &b.scorer) {
            (Some(a), Some(b)) => a.same_baselines(b),
            _ => false,
        }
    }

    #[test]
    fn a_snapshot_and_a_replay_of_the_rest_equal_a_full_replay_and_live_scoring() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("store");
        let (mut log, _) = Log::open(store, NoteSigner::generate("test/scoring").expect("key")).expect("log");
        let config = ScorerConfig::default();
        let mut live = Scoring::new(&config).expect("config");
        append(&mut log, &mut live, 0, 300);
        let resumed = |log: &Log, config: &ScorerConfig| {
            let mut s = Scoring::new(config).expect("config");
            let r = s.resume(log.store(), log.size()).expect("resume");
            (s, r)
        };

        // No snapshot yet: the whole log.
        let (full, r) = resumed(&log, &config);
        assert_eq!((r.from, r.entries), (0, 300));
        assert!(same(&full, &live));

        // A snapshot at 300, then 150 more entries: only those are replayed.
        live.save(log.store(), log.size(), &log.root()).expect("save");
        append(&mut log, &mut live, 300, 450);
        let (from_snapshot, r) = resumed(&log, &config);
        assert_eq!((r.from, r.entries), (300, 150));
        assert!(same(&from_snapshot, &live), "snapshot + replay = live");
        let mut full = Scoring::new(&config).expect("config");
        full.rebuild(log.store(), log.size()).expect("rebuild");
        assert!(same(&full, &live), "full replay = live");

        // Another [scorer] section: the whole log again.
        let other = ScorerConfig { base: 2, ..ScorerConfig::default() };
        assert_eq!(resumed(&log, &other).1.from, 0);

        // A snapshot that is not this log's, or is damaged: the whole log again.
        for bad in
            [b"{\"size\":999,\"root\":\"00\",\"config\":\"x\"}\n[]".to_vec(), b"garbage".to_vec(), Vec::new()]
        {
            log.store().meta.insert(SNAPSHOT_KEY, bad).expect("insert");
            let (s, r) = resumed(&log, &config);
            assert_eq!((r.from, r.entries), (0, 450));
            assert!(same(&s, &live));
        }
        let mut tag = SnapshotTag { size: 300, root: "ab".repeat(32), config: live.config.clone() };
        let mut value = serde_json::to_vec(&tag).expect("json");
        value.extend(b"\n[{},{},{}]");
        log.store().meta.insert(SNAPSHOT_KEY, value).expect("insert");
        assert_eq!(resumed(&log, &config).1.from, 0, "another log's root at 300");
        tag.root = ledger_proto::hex(&log.store().root(300).expect("root"));
        let mut value = serde_json::to_vec(&tag).expect("json");
        value.extend(b"\nnot json");
        log.store().meta.insert(SNAPSHOT_KEY, value).expect("insert");
        assert_eq!(resumed(&log, &config).1.from, 0, "a damaged body");
    }

    #[test]
    fn scoring_off_leaves_entries_unscored_and_saves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 8 << 20).expect("store");
        let (mut log, _) = Log::open(store, NoteSigner::generate("test/scoring").expect("key")).expect("log");
        let config = ScorerConfig { enabled: false, ..ScorerConfig::default() };
        let mut off = Scoring::new(&config).expect("config");
        assert!(!off.enabled());
        append(&mut log, &mut off, 0, 20);
        assert!((0..20).all(|seq| log.store().entry(seq).expect("read").is_some_and(|e| e.severity == 0)));
        off.save(log.store(), log.size(), &log.root()).expect("save");
        assert!(log.store().meta.get(SNAPSHOT_KEY).expect("read").is_none());
        assert_eq!(off.resume(log.store(), log.size()).expect("resume").entries, 0);
    }
}
