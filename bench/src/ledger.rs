//! A synthetic ledger in a data dir, built through the library (`Store` + `Log::append`,
//! durable group commits) with receive times spread evenly over a span, since the daemon
//! would stamp the real time: what the evidence and ship benchmarks start from.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use ledger_proto::pb;
use ledgerd::log::merkle::Log;
use ledgerd::storage::datadir::DataDir;
use ledgerd::storage::store::{DEFAULT_CACHE_BYTES, Store};

/// What to build.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The signing key's name (the checkpoint origin).
    pub key_name: &'a str,
    pub entries: u64,
    /// Entries per group commit.
    pub batch: u64,
    /// The first commit's time and the span the commits are spread over, in ns.
    pub start_ns: i64,
    pub span_ns: i64,
}

/// Builds the ledger in `dir` (a data dir ledgerd can then serve), entry `i` from `entry(i)`.
pub fn build(dir: &Path, plan: &Plan<'_>, entry: impl Fn(u64) -> pb::Entry) -> anyhow::Result<()> {
    ensure!(plan.entries > 0 && plan.batch > 0, "entries and batch must be positive");
    let data = DataDir::prepare(dir)?;
    let name = plan.key_name.to_string();
    let signer = data.signing_key_or_create(|| name)?;
    let store = Store::open(&data.store(), DEFAULT_CACHE_BYTES).context("cannot open the bench store")?;
    let (mut log, _) = Log::open(store, signer).context("cannot open the log")?;
    let commits = plan.entries.div_ceil(plan.batch);
    let start = Instant::now();
    let mut written = 0;
    for k in 0..commits {
        let time = plan.start_ns + (i128::from(k) * i128::from(plan.span_ns) / i128::from(commits)) as i64;
        let n = (plan.entries - written).min(plan.batch);
        let group: Vec<pb::Entry> = (written..written + n).map(&entry).collect();
        log.append(vec![group], time).with_context(|| format!("group commit {k} failed"))?;
        written += n;
    }
    ensure!(log.size() == plan.entries, "the log holds {} entries, expected {}", log.size(), plan.entries);
    eprintln!("built {written} entries in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
