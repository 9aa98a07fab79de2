//! Test-only crash points: `LEDGERD_FAILPOINT=<name>` (or `<name>:<n>`, the n-th time)
//! makes the process abort when it reaches that point, as a power cut or SIGKILL there
//! would stop it. The crash tests use it to stop ledgerd between two steps no signal can
//! be timed to fall between. Unset (always, outside tests), a point costs one load.
//!
//! Points: `after-entries-sync` (a commit's segment write is synced; nothing derived from
//! it is written yet), `after-ack` (the writer answered such a commit, waits a second for
//! the answers to leave, and aborts before anything derived from it is written),
//! `torn-entries-write` (only the first half of a commit's frames reached the segment
//! file, as a power cut mid-write leaves them), `migrate-before-rename` and
//! `migrate-before-format` (a storage migration wrote the new segments; they are not yet
//! in place, or the format not yet recorded).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn point() -> &'static Option<(String, u64)> {
    POINT.get_or_init(|| {
        let v = std::env::var("LEDGERD_FAILPOINT").ok()?;
        let (name, n) = match v.split_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().ok()?),
            None => (v, 1),
        };
        Some((name, n))
    })
}

/// Aborts the process if `name` is the configured point and this is its n-th hit.
pub fn hit(name: &str) {
    if reached(name) {
        abort(name);
    }
}

/// Whether `name` is the configured point and this is its n-th hit: for points that do
/// part of a step before calling [`abort`].
pub fn reached(name: &str) -> bool {
    matches!(point(), Some((point, n)) if point == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n)
}

/// Whether `name` is the configured point (hit or not yet): for paths that must take the
/// one the point is on.
pub fn armed(name: &str) -> bool {
    matches!(point(), Some((point, _)) if point == name)
}

/// Stops the process as a power cut would (no unwinding, no destructors).
pub fn abort(name: &str) -> ! {
    eprintln!("ledgerd: failpoint {name} reached: aborting");
    std::process::abort();
}
