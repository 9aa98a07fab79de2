//! How many entries the writer's group commits held, counted in this process since the
//! last [`reset`]: benchmarks compare the daemon against the disk at its own median
//! batch size (`ledger-bench`). Counting is one relaxed atomic add per commit.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sizes counted one by one; larger commits share the last bucket. The writer's own
/// limit (`writer::MAX_BATCH_ENTRIES`) is 8,192.
const LARGEST: usize = 8192;

/// Commits by number of entries.
static SIZES: [AtomicU64; LARGEST + 1] = [const { AtomicU64::new(0) }; LARGEST + 1];

/// Counts one commit of `entries` entries.
pub fn record(entries: usize) {
    SIZES[entries.min(LARGEST)].fetch_add(1, Ordering::Relaxed);
}

/// Forgets every commit counted so far.
pub fn reset() {
    for s in &SIZES {
        s.store(0, Ordering::Relaxed);
    }
}

/// The number of commits counted and their median size in entries (0 when none).
pub fn median() -> (u64, usize) {
    let counts: Vec<u64> = SIZES.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    let mut seen = 0;
    for (size, n) in counts.iter().enumerate() {
        seen += n;
        if seen * 2 > total {
            return (total, size);
        }
    }
    (total, 0)
}
