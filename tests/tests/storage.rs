//! Issue 17: the storage format of segment files. A crash between a commit's sync and the
//! writes derived from it (before and after its ack), what a caller reads right after its ack, a commit torn mid-write over the pre-zeroed tail, a data dir of the previous format (2) moved over on open, also
//! after a crash mid-migration, and one device sync per commit under strace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use ledger_tests::{Daemon, bin, stderr, stdout};

fn append(daemon: &Daemon, agent: &str, i: u64) -> std::process::Output {
    let params = format!("{{\"i\":{i}}}");
    daemon.ctl(&["append", "--agent", agent, "--tool", "fs.read", "--decision", "allow", "--params", &params])
}

/// The one value of a `… | count` query, as CSV.
fn count(daemon: &Daemon, query: &str) -> u64 {
    let out = daemon.ctl(&["query", query, "--format", "csv"]);
    let text = stdout(&out);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{query}: {text}{}", stderr(&out)))
}

fn verify_ok(daemon: &Daemon, extra: &[&str]) {
    let mut args = vec!["verify"];
    args.extend_from_slice(extra);
    let out = daemon.ctl(&args);
    assert!(out.status.success(), "verify: {}{}", stdout(&out), stderr(&out));
}

/// A daemon on a fresh data dir (in `tmp`) with the failpoint `point` set, after five
/// acknowledged appends of `agent` (commits 2..=6; commit 1 is `daemon_started`).
fn five_appends_then_failpoint(tmp: &Path, point: &str, agent: &str) -> (std::path::PathBuf, Daemon) {
    let data_dir = tmp.join("data");
    let daemon =
        Daemon::start_env(&data_dir, &[], &[("LEDGERD_FAILPOINT", point)]).expect("start with the failpoint");
    for i in 0..5 {
        let out = append(&daemon, agent, i);
        assert!(out.status.success(), "append {i}: {}", stderr(&out));
    }
    (data_dir, daemon)
}

#[test]
fn a_crash_after_the_entries_sync_before_their_tree_and_indexes_loses_nothing() {
    // The 7th commit (the sixth append) aborts right after its segment write is synced,
    // before sled sees any of it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data_dir, daemon) = five_appends_then_failpoint(tmp.path(), "after-entries-sync:7", "crash-bot");
    let out = append(&daemon, "crash-bot", 5);
    assert!(!out.status.success(), "the commit that hits the failpoint is never acknowledged");
    assert!(daemon.wait_exit(), "ledgerd aborted at the failpoint");

    // The unacknowledged entry was durable: adopted (hashed from its stored bytes), then
    // indexed and counted like the rest; `daemon_started` follows it.
    let daemon = restart_finds_the_sixth_entry_adopted(&data_dir, "crash-bot");
    assert!(daemon.stop());
    // And once more after a clean stop: nothing left to adopt, the same tree.
    let daemon = Daemon::start_in(&data_dir).expect("restart");
    verify_ok(&daemon, &[]);
}

#[test]
fn a_crash_after_the_ack_before_the_tree_and_indexes_adopts_the_acknowledged_entry() {
    // The 7th commit (the sixth append) is answered right after its segment sync; the
    // daemon then dies before any of its tree hashes or indexes reach sled.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data_dir, daemon) = five_appends_then_failpoint(tmp.path(), "after-ack:7", "acked-bot");
    let out = append(&daemon, "acked-bot", 5);
    assert!(out.status.success(), "the commit was acknowledged before the crash: {}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "6", "its seq");
    assert!(daemon.wait_exit(), "ledgerd aborted at the failpoint");

    // Adopted from the segment (hashed from its stored bytes), never made up: exactly the
    // acknowledged entry at its seq, then this start's `daemon_started`.
    restart_finds_the_sixth_entry_adopted(&data_dir, "acked-bot");
}

/// Restarts on `data_dir` after a crash in commit 7 (the sixth append of `agent`, seq 6)
/// past its segment sync: the entry is adopted, indexed and counted, `daemon_started`
/// follows it, the sequence goes on and `verify` passes.
fn restart_finds_the_sixth_entry_adopted(data_dir: &Path, agent: &str) -> Daemon {
    let daemon = Daemon::start_in(data_dir).expect("restart after the crash");
    assert_eq!(daemon.ready_size(), 8, "{}", daemon.ready);
    let out = daemon.ctl(&["query", "seq >= 6 | fields seq, kind, agent, params", "--format", "csv"]);
    let rows: Vec<String> = stdout(&out).lines().skip(1).map(str::to_string).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].starts_with(&format!("6,decision,{agent},")) && rows[0].contains("\"\"i\"\":5"),
        "{rows:?}"
    );
    assert!(rows[1].starts_with("7,daemon_started"), "{rows:?}");
    assert_eq!(count(&daemon, &format!("agent = \"{agent}\" | count")), 6, "the agent index caught up");
    assert_eq!(count(&daemon, "kind = decision | count"), 6, "the counters caught up");
    let out = append(&daemon, agent, 6);
    assert_eq!(stdout(&out).trim(), "8", "the sequence continues: {}", stderr(&out));
    verify_ok(&daemon, &[]);
    daemon
}

#[test]
fn what_a_caller_reads_right_after_its_ack_already_holds_its_entry() {
    // The writer answers a commit once its entries are synced and writes their tree
    // hashes and indexes after the answer: every read a caller makes after its ack must
    // still see its entry (the head, a proof at its own size, the entry, a query).
    let tmp = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start_in(&tmp.path().join("data")).expect("start");
    let socket = daemon.socket.clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for w in 0..8u64 {
            let socket = socket.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = ledger_client::Client::connect(&socket).await.expect("connect");
                for i in 0..25u64 {
                    let entry = ledger_proto::pb::NewEntry {
                        kind: ledger_proto::pb::Kind::Decision as i32,
                        agent: format!("reader-{w}"),
                        tool: "fs.read".into(),
                        decision: ledger_proto::pb::Decision::Allow as i32,
                        params: format!("{{\"i\":{i}}}"),
                        ..Default::default()
                    };
                    let ack = c.append(entry).await.expect("append");
                    let head = c.head().await.expect("head");
                    assert!(head.size > ack.seq, "head {} after the ack of {}", head.size, ack.seq);
                    let proof = c.prove(ack.seq, head.size).await.expect("a proof at the head after the ack");
                    assert_eq!(proof.leaf_hash, ack.leaf_hash, "the proof is of the acked leaf");
                    let path: Vec<_> = proof.path.iter().map(|h| hash(h)).collect();
                    let checked = ledger_proto::merkle::verify_inclusion(
                        &hash(&ack.leaf_hash),
                        ack.seq,
                        head.size,
                        &path,
                        &hash(&head.root),
                    );
                    assert!(checked.is_ok(), "the proof of {} checks against the head: {checked:?}", ack.seq);
                    let mut rows =
                        c.query(&format!("seq = {} | fields agent", ack.seq), "").await.expect("query");
                    let mut found = Vec::new();
                    while let Some(batch) = rows.next_rows().await.expect("rows") {
                        found.extend(batch);
                    }
                    assert_eq!(found.len(), 1, "a query right after the ack finds entry {}", ack.seq);
                }
            }));
        }
        for t in tasks {
            t.await.expect("a reader task failed");
        }
    });
    verify_ok(&daemon, &[]);
}

fn hash(bytes: &[u8]) -> ledger_proto::merkle::Hash {
    bytes.try_into().expect("a 32-byte hash")
}

/// The newest segment file of a data dir and its size.
fn newest_segment(data_dir: &Path) -> (std::path::PathBuf, u64) {
    let mut segs: Vec<_> = std::fs::read_dir(data_dir.join("store/log"))
        .expect("store/log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let path = segs.pop().expect("a segment");
    let size = std::fs::metadata(&path).expect("meta").len();
    (path, size)
}

#[test]
fn a_pre_zeroed_segment_with_a_crash_torn_tail_recovers_exactly_the_acknowledged_entries() {
    // The 7th commit (the sixth append) writes half of its frames over the pre-zeroed
    // tail and the process dies unsynced.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data_dir, daemon) = five_appends_then_failpoint(tmp.path(), "torn-entries-write:7", "torn-bot");
    // The filler runs after acknowledgements, in the background: wait until the tail the
    // next commit overwrites is zeros the file already has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while newest_segment(&data_dir).1 < 1 << 20 {
        assert!(std::time::Instant::now() < deadline, "the segment was never pre-zeroed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = daemon.ctl(&[
        "append",
        "--agent",
        "torn-bot",
        "--tool",
        "fs.read",
        "--decision",
        "allow",
        "--params",
        &format!("{{\"pad\":\"{}\"}}", "x".repeat(3000)),
    ]);
    assert!(!out.status.success(), "the torn commit is never acknowledged");
    assert!(daemon.wait_exit(), "ledgerd aborted at the failpoint");

    let daemon = Daemon::start_in(&data_dir).expect("restart after the torn write");
    // Exactly the acknowledged entries, then this start's `daemon_started` in seq 6.
    assert_eq!(daemon.ready_size(), 7, "{}", daemon.ready);
    assert_eq!(count(&daemon, "agent = \"torn-bot\" | count"), 5);
    let out = daemon.ctl(&["query", "seq >= 5 | fields seq, kind, agent", "--format", "csv"]);
    let rows: Vec<String> = stdout(&out).lines().skip(1).map(str::to_string).collect();
    assert_eq!(rows, ["5,decision,torn-bot", "6,daemon_started,ledgerd"], "{}", stderr(&out));
    let out = append(&daemon, "torn-bot", 6);
    assert_eq!(stdout(&out).trim(), "7", "the sequence continues: {}", stderr(&out));
    verify_ok(&daemon, &[]);
    // The commits after the cut overwrote the torn bytes' place: a hard stop now and a
    // start find exactly them, nothing of the torn commit behind them.
    daemon.kill();
    let daemon = Daemon::start_in(&data_dir).expect("restart after SIGKILL");
    assert_eq!(daemon.ready_size(), 9, "{}", daemon.ready);
    assert_eq!(count(&daemon, "agent = \"torn-bot\" | count"), 6);
    verify_ok(&daemon, &[]);
}

/// A copy of `tests/fixtures/format2-data`: a data dir written by the ledgerd of storage
/// format 2 (entries in sled blocks): 45 entries (a registered agent, 37 of its decisions,
/// five of another agent, the start and stop), a checkpoint pinned at 39.
fn format2_copy(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format2-data");
    std::fs::create_dir_all(to.join("store")).expect("mkdir");
    for f in ["signing.key", "redaction.key", "verifier.vkey", "store/conf", "store/db"] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy fixture");
    }
    for (p, mode) in [("", 0o700), ("store", 0o700), ("signing.key", 0o600), ("redaction.key", 0o600)] {
        std::fs::set_permissions(to.join(p), std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

fn check_format2_migrated(daemon: &Daemon, data_dir: &Path, billing_decisions: u64) {
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format2-pinned.note");
    verify_ok(daemon, &["--checkpoint", pinned.to_str().expect("utf-8")]);
    assert_eq!(count(daemon, "agent = \"billing-bot\" and kind = decision | count"), billing_decisions);
    assert_eq!(count(daemon, "agent = \"billing-bot\" and decision = deny | count"), 7);
    assert_eq!(count(daemon, "agent = \"other\" | count"), 5);
    let out = daemon.ctl(&["agents", "list"]);
    assert!(stdout(&out).contains("billing-bot"), "the registry: {}", stdout(&out));
    assert!(data_dir.join("store/log").is_dir(), "segments in place");
    assert!(!data_dir.join("store/log.migrating").exists());
}

#[test]
fn a_format_2_data_dir_is_moved_to_segments_on_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    format2_copy(&data_dir);
    let daemon = Daemon::start_in(&data_dir).expect("start on a format-2 data dir");
    assert_eq!(daemon.ready_size(), 46, "45 old entries and this start: {}", daemon.ready);
    check_format2_migrated(&daemon, &data_dir, 37);
    let out = append(&daemon, "billing-bot", 99);
    assert_eq!(stdout(&out).trim(), "46", "{}", stderr(&out));
    daemon.kill();
    let daemon = Daemon::start_in(&data_dir).expect("restart after SIGKILL");
    check_format2_migrated(&daemon, &data_dir, 38);
    assert_eq!(daemon.ready_size(), 48);
}

#[test]
fn a_migration_stopped_by_a_crash_starts_over_on_the_next_start() {
    for point in ["migrate-before-rename", "migrate-before-format"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        format2_copy(&data_dir);
        let err = Daemon::start_env(&data_dir, &[], &[("LEDGERD_FAILPOINT", point)])
            .err()
            .unwrap_or_else(|| panic!("{point}: ledgerd must abort mid-migration"));
        assert!(err.contains("failpoint"), "{point}: {err}");
        let daemon = Daemon::start_in(&data_dir).unwrap_or_else(|e| panic!("{point}: restart: {e}"));
        assert_eq!(daemon.ready_size(), 46, "{point}: {}", daemon.ready);
        check_format2_migrated(&daemon, &data_dir, 37);
    }
}

/// Device syncs (`fdatasync`, `fsync`, `sync_file_range`) a daemon makes over its life
/// with `appends` single `ledgerctl append` calls; `None` where strace cannot trace.
fn device_syncs(appends: u64) -> Option<usize> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let trace = tmp.path().join("trace");
    // No periodic checkpoint inside the measured span: only the start's and the stop's.
    let config = tmp.path().join("ledgerd.toml");
    let text = format!(
        "data_dir = {:?}\n[checkpoint]\ninterval = \"1h\"\n",
        tmp.path().join("data").display().to_string()
    );
    std::fs::write(&config, text).expect("config");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=fdatasync,fsync,sync_file_range", "-o"])
        .arg(&trace)
        .arg(bin("ledgerd"))
        .arg("--config")
        .arg(&config)
        .env("LEDGERD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::BufRead;
    let line = std::io::BufReader::new(strace.stdout.take()?).lines().next();
    if !matches!(&line, Some(Ok(l)) if l.starts_with("ready ")) {
        let _ = strace.kill();
        let out = strace.wait_with_output().ok()?;
        println!("skipped: strace cannot trace ledgerd here: {}", stderr(&out));
        return None;
    }
    let socket = tmp.path().join("data/ledgerd.sock");
    for i in 0..appends {
        let out = ledger_tests::ctl(
            &socket,
            &["append", "--agent", "syncs", "--tool", "t", "--decision", "allow", "--reason", &i.to_string()],
            None,
        );
        assert!(out.status.success(), "append: {}", stderr(&out));
    }
    let pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).ok()?;
    let pid = pid.split_whitespace().next()?.to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let out = strace.wait_with_output().ok()?;
    assert!(out.status.success(), "ledgerd under strace: {}", stderr(&out));
    let text = std::fs::read_to_string(&trace).ok()?;
    Some(
        text.lines()
            .filter(|l| ["fdatasync(", "fsync(", "sync_file_range("].iter().any(|c| l.contains(c)))
            .count(),
    )
}

#[test]
fn one_device_sync_per_group_commit_on_the_append_path() {
    if Command::new("strace").arg("-V").output().is_err() {
        println!("skipped: needs strace (docs/ARCHITECTURE.md shows a traced run)");
        return;
    }
    // The same daemon life (start, checkpoints, stop) with 0 and with 60 appends: the 60
    // single appends, each its own group commit, add at most one device sync each.
    let (Some(base), Some(with)) = (device_syncs(0), device_syncs(60)) else { return };
    assert!(with >= base + 60, "every append is synced: {base} syncs without appends, {with} with 60");
    assert!(
        with <= base + 60,
        "more than one device sync per commit: {base} without appends, {with} with 60"
    );
}

/// `(seq, agent, params)` of every row of `query` (CSV through `ledgerctl`).
fn rows(daemon: &Daemon, query: &str) -> Vec<(u64, String, String)> {
    let out = daemon.ctl(&["query", query, "--format", "csv"]);
    // Exit code 1: no rows.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{query}: {:?} {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader
        .records()
        .map(|r| {
            let r = r.expect("a CSV record");
            (r[0].parse().expect("a seq"), r[1].to_string(), r[2].to_string())
        })
        .collect()
}

/// What the agent index answers (one agent, two agents merged, an agent with no entries)
/// is exactly what a scan of the whole log finds.
fn index_agrees_with_a_scan(daemon: &Daemon) {
    let all = rows(daemon, "| fields seq, agent, params");
    assert!(all.len() > 300, "{}", all.len());
    let want = |agents: &[&str]| -> Vec<(u64, String, String)> {
        all.iter().filter(|r| agents.contains(&r.1.as_str())).cloned().collect()
    };
    for agent in ["bot-0", "bot-3", "bot-6", "nobody"] {
        let got = rows(daemon, &format!("agent = \"{agent}\" | fields seq, agent, params"));
        assert_eq!(got, want(&[agent]), "agent {agent}");
    }
    let got = rows(daemon, "agent in [\"bot-1\", \"bot-5\"] and seq >= 40 | fields seq, agent, params");
    let both: Vec<_> = want(&["bot-1", "bot-5"]).into_iter().filter(|r| r.0 >= 40).collect();
    assert_eq!(got, both);
}

/// Replaces the agent index's chunks with `chunk(first seq, seqs)` per agent, every 128
/// seqs, the format key set to `format`; the end marker is kept.
fn rewrite_agent_index(
    data_dir: &Path,
    all: &[(u64, String, String)],
    format: u8,
    chunk: fn(u64, &[u64]) -> Vec<u8>,
) {
    let store =
        ledgerd::storage::store::Store::open(&data_dir.join("store"), 8 << 20).expect("open the store");
    let end = store.by_agent.get([0xff]).expect("read").expect("an end marker");
    store.by_agent.clear().expect("clear");
    let mut by_agent: std::collections::BTreeMap<&str, Vec<u64>> = std::collections::BTreeMap::new();
    for (seq, agent, _) in all {
        by_agent.entry(agent).or_default().push(*seq);
    }
    for (agent, seqs) in by_agent {
        for part in seqs.chunks(128) {
            let mut key = agent.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&part[0].to_be_bytes());
            store.by_agent.insert(key, chunk(part[0], part)).expect("insert");
        }
    }
    store.by_agent.insert([0xfe], &[format]).expect("format");
    store.by_agent.insert([0xff], end).expect("end");
    store.by_agent.flush().expect("flush");
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Issue 17 (agent + 7-day query at 10M entries): the agent index keeps each entry's frame
/// offset and length next to its seq (format 3), so a lookup is one exact read. Lookups
/// through it give the entries a scan gives: as written, after a restart, after a data
/// dir whose index is of format 2 (seqs alone) is upgraded on open, and when the offsets
/// it holds are wrong (a damaged or stale projection costs time, never a wrong entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_index_frame_offsets_read_the_entries_a_scan_reads_after_restart_upgrade_and_damage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("data");
    let daemon = Daemon::start_in(&data_dir).expect("start");
    let mut client = daemon.client().await;
    for round in 0..7u64 {
        // Frames of many sizes, agents interleaved, several commits.
        let entries: Vec<ledger_proto::pb::NewEntry> = (0..50u64)
            .map(|i| ledger_proto::pb::NewEntry {
                kind: ledger_proto::pb::Kind::Decision as i32,
                agent: format!("bot-{}", (round * 50 + i) % 7),
                tool: "fs.read".into(),
                decision: ledger_proto::pb::Decision::Allow as i32,
                params: format!("{{\"pad\":\"{}\"}}", "x".repeat(((round * 50 + i) * 37 % 1500) as usize)),
                ..Default::default()
            })
            .collect();
        client.append_stream(tokio_stream::iter(entries)).await.expect("append");
    }
    drop(client);
    index_agrees_with_a_scan(&daemon);
    assert!(daemon.stop());

    let daemon = Daemon::start_in(&data_dir).expect("restart");
    index_agrees_with_a_scan(&daemon);
    let all = rows(&daemon, "| fields seq, agent, params");
    assert!(daemon.stop());

    // Format 2: delta varint seqs, no frames. Upgraded (rebuilt) on open.
    rewrite_agent_index(&data_dir, &all, 2, |first, seqs| {
        let (mut out, mut last) = (Vec::new(), first);
        for s in seqs {
            varint(&mut out, s - last);
            last = *s;
        }
        out
    });
    let daemon = Daemon::start_in(&data_dir).expect("start on an index of format 2");
    index_agrees_with_a_scan(&daemon);
    let all = rows(&daemon, "| fields seq, agent, params");
    assert!(daemon.stop());
    {
        let store = ledgerd::storage::store::Store::open(&data_dir.join("store"), 8 << 20).expect("open");
        assert_eq!(
            store.by_agent.get([0xfe]).expect("read").as_deref(),
            Some(&[3u8][..]),
            "upgraded to format 3"
        );
    }

    // Format 3 with wrong frames: every offset the segment's header (16), every length 8.
    rewrite_agent_index(&data_dir, &all, 3, |first, seqs| {
        let (mut out, mut last) = (Vec::new(), first);
        for (i, s) in seqs.iter().enumerate() {
            varint(&mut out, s - last);
            varint(&mut out, if i == 0 { 4 } else { 0 });
            varint(&mut out, 1);
            last = *s;
        }
        out
    });
    let daemon = Daemon::start_in(&data_dir).expect("start on wrong frame offsets");
    index_agrees_with_a_scan(&daemon);
    verify_ok(&daemon, &[]);
    assert!(daemon.stop());
}
