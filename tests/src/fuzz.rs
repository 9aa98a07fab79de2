//! A small mutation fuzzer for stable Rust: each target starts from seed inputs (the
//! project's own fixtures and test inputs), mutates them (bit flips, inserted tokens,
//! deleted, duplicated and spliced ranges, repeated chunks that grow an input to tens of
//! kilobytes) and hands every input to a check for a fixed time budget.
//!
//! Every input must come back (no panic), within [`PER_INPUT_LIMIT`], allocating at most
//! [`memory_limit`] at its peak (measured by [`CountingAlloc`], which a fuzz test binary
//! installs as its global allocator). A failing input is written to
//! `$CARGO_TARGET_TMPDIR`-like `target/fuzz-failures/` and named in the panic.
//!
//! `LEDGER_FUZZ_SECS` sets each target's budget (default [`DEFAULT_SECS`]);
//! `LEDGER_FUZZ_SEED` fixes the random seed (default: from the clock, printed).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds per target when `LEDGER_FUZZ_SECS` is not set: eleven targets stay under two
/// minutes of CI.
pub const DEFAULT_SECS: u64 = 8;

/// The longest one input may take (debug build, shared CI machine): far above any
/// linear-time parse of a 64 KiB input, far below a quadratic one.
pub const PER_INPUT_LIMIT: Duration = Duration::from_secs(5);

/// The largest input made by mutation.
pub const MAX_INPUT: usize = 96 * 1024;

/// The most one input may allocate at its peak: 64 MiB plus 200 bytes per input byte.
pub fn memory_limit(input_len: usize) -> usize {
    64 * 1024 * 1024 + 200 * input_len
}

/// The budget of one target.
pub fn budget() -> Duration {
    let secs =
        std::env::var("LEDGER_FUZZ_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(DEFAULT_SECS);
    Duration::from_secs(secs)
}

/// Resets the process's peak resident size (Linux: `5` into `/proc/self/clear_refs`) and
/// returns the resident size now, in bytes; `None` where /proc cannot do it.
fn reset_peak() -> Option<usize> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_kib("VmRSS:").map(|k| k * 1024)
}

/// The peak resident size since the last [`reset_peak`], in bytes.
fn peak() -> Option<usize> {
    status_kib("VmHWM:").map(|k| k * 1024)
}

fn status_kib(key: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One target at a time: the memory peak is process-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A fast, seedable generator (xorshift64*): the same seed gives the same inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// One of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// Inputs made from `seeds` with tokens from `dict`.
pub struct Mutator<'a> {
    pub rng: Rng,
    seeds: &'a [Vec<u8>],
    dict: &'a [&'a str],
}

impl<'a> Mutator<'a> {
    pub fn new(seed: u64, seeds: &'a [Vec<u8>], dict: &'a [&'a str]) -> Mutator<'a> {
        Mutator { rng: Rng::new(seed), seeds, dict }
    }

    /// A seed with one to eight mutations; now and then the seed itself.
    pub fn input(&mut self) -> Vec<u8> {
        let mut data = self.seeds.get(self.rng.below(self.seeds.len())).cloned().unwrap_or_default();
        if self.rng.below(20) == 0 {
            return data;
        }
        for _ in 0..=self.rng.below(8) {
            self.mutate(&mut data);
        }
        data.truncate(MAX_INPUT);
        data
    }

    fn mutate(&mut self, data: &mut Vec<u8>) {
        let len = data.len();
        let at = self.rng.below(len + 1);
        match self.rng.below(9) {
            0 if len > 0 => {
                let i = self.rng.below(len);
                data[i] ^= 1 << self.rng.below(8);
            }
            1 if len > 0 => {
                let i = self.rng.below(len);
                data[i] = b"\0\n\r\t \"\\'{}[]()|:=~.,-#/*0123456789\x1b\x7f\xff\xc3"[self.rng.below(38)];
            }
            2 => {
                if let Some(tok) = self.dict.get(self.rng.below(self.dict.len())) {
                    data.splice(at..at, tok.bytes());
                }
            }
            3 if len > 0 => {
                let end = (at + 1 + self.rng.below(16)).min(len);
                data.drain(at.min(end)..end);
            }
            4 if len > 0 => {
                // A chunk repeated: long names, long lines, many clauses.
                let start = self.rng.below(len);
                let end = (start + 1 + self.rng.below(32)).min(len);
                let chunk = data[start..end].to_vec();
                let most = if self.rng.below(10) == 0 { 2000 } else { 8 };
                let times = 1 + self.rng.below(most);
                for _ in 0..times {
                    if data.len() >= MAX_INPUT {
                        break;
                    }
                    data.splice(end..end, chunk.iter().copied());
                }
            }
            5 => {
                // Splice in part of another seed.
                if let Some(other) = self.seeds.get(self.rng.below(self.seeds.len())) {
                    let s = self.rng.below(other.len() + 1);
                    let e = (s + self.rng.below(64)).min(other.len());
                    data.splice(at..at, other[s..e].iter().copied());
                }
            }
            6 if len > 0 => data.truncate(at),
            7 => {
                // A multi-byte or invisible character.
                let c = ["é", "漢", "🙂", "\u{202e}", "\u{feff}", "\u{200b}", "\u{85}", "\u{10ffff}"]
                    [self.rng.below(8)];
                data.splice(at..at, c.bytes());
            }
            _ => {
                let n = self.rng.below(4) + 1;
                for _ in 0..n {
                    let b = (self.rng.next_u64() & 0xff) as u8;
                    data.insert(at.min(data.len()), b);
                }
            }
        }
    }
}

/// The seed of a run: `LEDGER_FUZZ_SEED`, else the clock.
fn run_seed() -> u64 {
    std::env::var("LEDGER_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    })
}

/// Where failing inputs are kept.
fn failure_dir() -> PathBuf {
    crate::bin_dir().join("fuzz-failures")
}

/// Runs `check` on mutated inputs for the target's budget; panics naming the saved input
/// when one panics, takes too long or allocates too much. Returns how many inputs ran.
pub fn run(name: &str, seeds: &[Vec<u8>], dict: &[&str], mut check: impl FnMut(&[u8])) -> u64 {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let seed = run_seed();
    let budget = budget();
    let mut m = Mutator::new(seed, seeds, dict);
    let started = Instant::now();
    let mut count = 0u64;
    let mut slowest = Duration::ZERO;
    let mut most = 0usize;
    // Every seed as is first, then mutations.
    let mut pending: Vec<Vec<u8>> = seeds.to_vec();
    while started.elapsed() < budget || !pending.is_empty() {
        let input = pending.pop().unwrap_or_else(|| m.input());
        let base = reset_peak();
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = t.elapsed();
        let peak = base.and_then(|b| peak().map(|p| p.saturating_sub(b))).unwrap_or(0);
        count += 1;
        slowest = slowest.max(took);
        most = most.max(peak);
        let why = match outcome {
            Err(e) => Some(format!(
                "panicked: {}",
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
            Ok(()) if took > PER_INPUT_LIMIT => Some(format!("took {took:?}, over {PER_INPUT_LIMIT:?}")),
            Ok(()) if peak > memory_limit(input.len()) => {
                Some(format!("allocated {peak} bytes at its peak, over {}", memory_limit(input.len())))
            }
            Ok(()) => None,
        };
        if let Some(why) = why {
            let dir = failure_dir();
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{seed}-{count}"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "fuzz {name}: input {count} ({} bytes, saved in {}) {why}; rerun with LEDGER_FUZZ_SEED={seed}",
                input.len(),
                path.display()
            );
        }
    }
    eprintln!(
        "fuzz {name}: {count} inputs in {:.1}s (seed {seed}), slowest {slowest:?}, peak {} KiB",
        started.elapsed().as_secs_f64(),
        most / 1024
    );
    count
}

/// Seeds from text items.
pub fn seeds<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Vec<Vec<u8>> {
    items.into_iter().map(|s| s.as_ref().as_bytes().to_vec()).collect()
}
