//! What scoring costs (issue 6): the time per entry in the writer, and the replay of a
//! large log at start. Ignored by default (they write a large log); run them with
//!
//! ```text
//! cargo test --release -p ledgerd --test scoring_cost -- --ignored --nocapture --test-threads 1
//! ```
//!
//! `LEDGER_REPLAY_ENTRIES` sets the size of the replayed log (default 1,000,000).

use std::time::Instant;

use ledger_proto::note::NoteSigner;
use ledger_proto::pb::{self, Decision, Kind};
use ledgerd::log::merkle::Log;
use ledgerd::scoring::commit::Scoring;
use ledgerd::scoring::scorer::ScorerConfig;
use ledgerd::storage::store::Store;

const TOOLS: [&str; 12] = [
    "fs.read_file",
    "fs.list_dir",
    "kv.get",
    "db.query",
    "fs.write_file",
    "fs.delete_file",
    "shell.exec",
    "http.get",
    "Read",
    "Edit",
    "Bash",
    "search.docs",
];

/// Entry `i` of a steady synthetic workload: 64 agents, 12 tools, one deny in ten, a
/// shim per agent, `spread` × 5 ms apart (with 40, a million entries span 55 hours, so
/// hours and days change).
fn entry(i: u64, spread: i64) -> pb::Entry {
    let agent = i % 64;
    pb::Entry {
        time_unix_nanos: 1_767_571_200_000_000_000 + i as i64 * 5_000_000 * spread,
        kind: Kind::Decision as i32,
        agent: format!("agent-{agent}"),
        tool: TOOLS[(i / 64 % 12) as usize].into(),
        decision: if i % 10 == 9 { Decision::Deny } else { Decision::Allow } as i32,
        params: format!(r#"{{"path":"/srv/data/{i}.csv","n":{i}}}"#),
        rule: "rule-1".into(),
        policy_version: 1,
        policy_check: "match".into(),
        shim_id: format!("shim-{agent}"),
        shim_seq: i / 64 + 1,
        reason: "routine".into(),
        host: "bench".into(),
        ..Default::default()
    }
}

fn entries_wanted() -> u64 {
    std::env::var("LEDGER_REPLAY_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn scoring_cost_per_entry() {
    let n = 1_000_000u64;
    let batch: Vec<pb::Entry> = (0..n).map(|i| entry(i, 40)).collect();
    let mut scoring = Scoring::new(&ScorerConfig::default()).expect("default config");
    let started = Instant::now();
    let mut high = 0u64;
    for chunk in batch.chunks(8192) {
        let mut chunk = chunk.to_vec();
        let time = chunk[0].time_unix_nanos;
        scoring.score(chunk.iter_mut(), time);
        high += chunk.iter().filter(|e| e.severity >= 8).count() as u64;
    }
    let took = started.elapsed();
    // The copies of the chunks are part of the figure; measure them alone to subtract.
    let copied = Instant::now();
    let mut bytes = 0usize;
    for chunk in batch.chunks(8192) {
        bytes += chunk.to_vec().len();
    }
    let copy = copied.elapsed();
    let per_entry = (took.saturating_sub(copy)).as_nanos() as f64 / n as f64;
    println!(
        "scoring: {n} entries in {took:?} ({per_entry:.0} ns/entry after {copy:?} of copying {bytes}); {high} scored >= 8"
    );
    assert!(per_entry < 10_000.0, "scoring takes {per_entry} ns per entry");

    // With a watcher or alerts subscribed, the writer also copies and publishes each entry.
    let feed = ledgerd::scoring::watch::Feed::new();
    let mut subscription = feed.subscribe(0);
    let started = Instant::now();
    let mut published = 0usize;
    for (i, chunk) in batch.chunks(8192).enumerate() {
        let copies = feed.capture(chunk, (i * 8192) as u64, 0);
        published += copies.as_ref().map_or(0, Vec::len);
        feed.publish(copies);
        // The subscriber reads what it can, as a fast watcher would.
        while subscription.try_recv().is_ok() {}
    }
    let per_entry = started.elapsed().as_nanos() as f64 / n as f64;
    println!("feed: copied and published {published} entries ({per_entry:.0} ns/entry)");
    assert_eq!(published as u64, n);
}

#[test]
#[ignore = "a measurement: writes a large log; run with --release --ignored --nocapture"]
fn replaying_a_large_log_at_start() {
    let n = entries_wanted();
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = NoteSigner::generate("bench/replay").expect("key");
    let config = ScorerConfig::default();
    let mut live = Scoring::new(&config).expect("default config");
    {
        let store = Store::open(dir.path(), 64 << 20).expect("store");
        let (mut log, _) = Log::open(store, signer.clone()).expect("log");
        let started = Instant::now();
        let mut i = 0u64;
        while i < n {
            let mut group: Vec<pb::Entry> = (i..(i + 8192).min(n)).map(|j| entry(j, 40)).collect();
            // As the writer does: one time per commit, the one the log stamps.
            let time = group[0].time_unix_nanos.max(log.last_time());
            live.score(group.iter_mut(), time);
            i += group.len() as u64;
            log.append(vec![group], time).expect("append");
        }
        println!("wrote {n} scored entries in {:?}", started.elapsed());
    }
    let started = Instant::now();
    let store = Store::open(dir.path(), 64 << 20).expect("store");
    let (log, _) = Log::open(store, signer).expect("reopen");
    let opened = started.elapsed();
    // The scan alone, first (cold): what reading the log costs without scoring.
    let started = Instant::now();
    let mut kinds = 0i64;
    log.store()
        .scan(0, log.size(), |_, bytes| {
            kinds += ledgerd::storage::stored::with_entry(bytes, |r| i64::from(r.kind)).expect("decode");
            Ok(true)
        })
        .expect("read");
    let scan = started.elapsed();
    let mut rebuilt = Scoring::new(&config).expect("default config");
    let replayed = rebuilt.rebuild(log.store(), log.size()).expect("replay");
    let mut again = Scoring::new(&config).expect("default config");
    let second = again.rebuild(log.store(), log.size()).expect("replay");
    println!("second replay {:?}", second.took);
    println!(
        "start with {n} entries: Log::open {opened:?}, scorer replay {:?} ({:.0} ns/entry; the scan alone {scan:?})",
        replayed.took,
        replayed.took.as_nanos() as f64 / n as f64
    );
    assert_eq!(kinds, n as i64, "every entry is a decision");
    assert_eq!(replayed.entries, n);
    // What a clean stop leaves, and a start from it.
    let saved = Instant::now();
    rebuilt.save(log.store(), log.size(), &log.root()).expect("save");
    let saved = saved.elapsed();
    let mut resumed = Scoring::new(&config).expect("default config");
    let from_snapshot = resumed.resume(log.store(), log.size()).expect("resume");
    let size = log.store().meta.get(b"scorer_baselines").expect("read").map_or(0, |v| v.len());
    println!(
        "snapshot of {size} bytes saved in {saved:?}; a start from it took {:?} (replayed {})",
        from_snapshot.took, from_snapshot.entries
    );
    assert_eq!((from_snapshot.from, from_snapshot.entries), (n, 0));
    // The replayed baselines score what comes next exactly as the live ones.
    for j in n..n + 20_000 {
        let mut a = vec![entry(j, 40)];
        let mut b = a.clone();
        let time = a[0].time_unix_nanos;
        live.score(a.iter_mut(), time);
        rebuilt.score(b.iter_mut(), time);
        assert_eq!((a[0].severity, &a[0].flags), (b[0].severity, &b[0].flags), "entry {j}");
        let mut c = a.clone();
        c[0].severity = 0;
        c[0].flags.clear();
        resumed.score(c.iter_mut(), time);
        assert_eq!(
            (a[0].severity, &a[0].flags),
            (c[0].severity, &c[0].flags),
            "entry {j} after the snapshot"
        );
    }
}
