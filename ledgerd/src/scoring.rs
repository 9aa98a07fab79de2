//! The scorer in the daemon: scores every entry of a commit, in commit order, with the
//! time the log will stamp, before its leaf hash is computed; and rebuilds the baselines
//! at start by replaying the log, so a restart does not forget what is normal.
//!
//! The writer thread owns the one [`Scoring`]. Replaying the log into empty baselines
//! reaches the state live scoring reached (the scorer is deterministic and reads only what
//! is stored: the entries, their times and intake's flags), which
//! `tests/tests/severity.rs` checks against a real daemon.

use std::time::{Duration, Instant};

use ledger_proto::pb;

use crate::record::{self, ArchivedRecord};
use crate::scorer::{InvalidConfig, Scorer, ScorerConfig};
use crate::store::{Store, StoreError};

/// Scores entries for the writer, or leaves them unscored when `[scorer] enabled = false`.
pub struct Scoring {
    scorer: Option<Scorer>,
}

/// What a replay of the log did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replayed {
    pub entries: u64,
    pub took: Duration,
}

impl Scoring {
    /// A scorer with empty baselines (`None` inside when scoring is off).
    pub fn new(config: &ScorerConfig) -> Result<Scoring, InvalidConfig> {
        let scorer = if config.enabled { Some(Scorer::new(config.clone())?) } else { None };
        Ok(Scoring { scorer })
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
        let mut view = pb::Entry::default();
        let mut n = 0u64;
        for item in store.entries.range(..size.to_be_bytes()) {
            let (_, bytes) = item?;
            record::with_archived(&bytes, |r| copy_scored_fields(r, &mut view))
                .map_err(|e| StoreError::Encode(format!("stored entry {n} does not decode: {e}")))?;
            scorer.score(&view);
            n += 1;
        }
        Ok(Replayed { entries: n, took: started.elapsed() })
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

/// Copies what the scorer reads of a stored entry into `view`, reusing its buffers.
fn copy_scored_fields(r: &ArchivedRecord, view: &mut pb::Entry) {
    fn set(to: &mut String, from: &str) {
        to.clear();
        to.push_str(from);
    }
    view.seq = r.seq.to_native();
    view.time_unix_nanos = r.time_unix_nanos.to_native();
    view.kind = r.kind.to_native();
    view.decision = r.decision.to_native();
    view.shim_seq = r.shim_seq.to_native();
    set(&mut view.agent, &r.agent);
    set(&mut view.tool, &r.tool);
    set(&mut view.policy_check, &r.policy_check);
    set(&mut view.shim_id, &r.shim_id);
    view.flags.truncate(r.flags.len());
    for (i, flag) in r.flags.iter().enumerate() {
        match view.flags.get_mut(i) {
            Some(to) => set(to, flag),
            None => view.flags.push(flag.to_string()),
        }
    }
}
