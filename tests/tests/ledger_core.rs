//! The ledger core against real daemons: appends over both RPCs, concurrency and gap-free
//! seq, crash safety under SIGKILL, tamper detection, served proofs, key permissions.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use futures_util::StreamExt;
use ledger_client::Client;
use ledger_proto::merkle::{self, Hash};
use ledger_proto::note::NoteVerifier;
use ledger_proto::{leaf, pb};
use ledger_tests::{Daemon, stderr, stdout};
use tokio::sync::Mutex;

fn decision(agent: &str, tool: &str, n: u64) -> pb::NewEntry {
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: agent.into(),
        tool: tool.into(),
        decision: if n.is_multiple_of(3) { pb::Decision::Deny } else { pb::Decision::Allow } as i32,
        params: format!(r#"{{"n":{n},"path":"/srv/data/{n}.csv"}}"#),
        rule: format!("rule-{}", n % 5),
        policy_version: 1 + n % 2,
        reason: format!("call {n}"),
        session: "s-1".into(),
        ..Default::default()
    }
}

/// The fields a writer chose must come back exactly.
fn assert_same_as_sent(sent: &pb::NewEntry, got: &pb::Entry) {
    assert_eq!(got.kind, sent.kind);
    assert_eq!(got.agent, sent.agent);
    assert_eq!(got.tool, sent.tool);
    assert_eq!(got.decision, sent.decision);
    assert_eq!(got.params, sent.params);
    assert_eq!(got.rule, sent.rule);
    assert_eq!(got.policy_version, sent.policy_version);
    assert_eq!(got.reason, sent.reason);
    assert_eq!(got.session, sent.session);
}

async fn all_entries(client: &mut Client) -> Vec<pb::StoredEntry> {
    let mut stream = client.entries(0, 0, false).await.expect("entries");
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.push(item.expect("entry"));
    }
    out
}

/// `AppendEach` (`Client::append_each`): one stream shared by every clone of a client, its
/// answers matched to callers in order. 64 callers at once, each appending entries that
/// name it; a refused entry in the middle is refused alone and the stream goes on; callers
/// that give up after sending do not shift anyone's answer. Every seq a caller is given
/// holds exactly its entry, with the leaf hash it was told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn append_each_answers_every_caller_of_a_shared_stream_with_its_own_entry() {
    use futures_util::FutureExt;
    let daemon = Daemon::start();
    let client = daemon.client().await;
    type Answered = BTreeMap<u64, (pb::NewEntry, Vec<u8>)>;
    let sent: Arc<Mutex<Answered>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let mut client = client.clone();
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let n = w * 1000 + i;
                if i % 10 == 5 {
                    // Refused: params that are not JSON. Only this entry fails.
                    let mut bad = decision(&format!("each-{w}"), "db.query", n);
                    bad.params = "{not json".into();
                    let err = client.append_each(bad).await.expect_err("bad params are refused");
                    assert!(err.to_string().contains("params"), "{err}");
                    continue;
                }
                if i % 10 == 7 {
                    // Sent, then given up on before the answer: polled once and dropped.
                    let _ =
                        client.append_each(decision(&format!("gave-up-{w}"), "db.query", n)).now_or_never();
                    continue;
                }
                let e = decision(&format!("each-{w}"), "db.query", n);
                let ack = client.append_each(e.clone()).await.expect("append_each");
                sent.lock().await.insert(ack.seq, (e, ack.leaf_hash));
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller task");
    }
    let mut reader = daemon.client().await;
    let entries = all_entries(&mut reader).await;
    let sent = sent.lock().await;
    assert_eq!(sent.len(), 64 * 24, "every accepted entry was answered once, with its own seq");
    for (seq, (e, hash)) in sent.iter() {
        let stored = &entries[*seq as usize];
        let got = stored.entry.as_ref().expect("entry");
        assert_same_as_sent(e, got);
        assert_eq!(&stored.leaf_hash, hash, "the leaf hash given to the caller of seq {seq}");
    }
    for (i, stored) in entries.iter().enumerate() {
        let e = stored.entry.as_ref().expect("entry");
        assert_eq!(e.seq, i as u64, "seq must be gap-free and in order");
        assert!(e.params != "{not json", "a refused entry was written: {e:?}");
    }
    // The entries given up on were still written (they were sent), each once.
    let gave_up =
        entries.iter().filter(|s| s.entry.as_ref().is_some_and(|e| e.agent.starts_with("gave-up-"))).count();
    assert_eq!(gave_up, 64 * 3, "every entry sent and given up on is written once");

    // When ledgerd stops, a caller gets an error at once, not a hang, and a new client
    // appends on the restarted daemon.
    let dir = daemon.data_dir.clone();
    let mut d = daemon;
    let keep = d.keep_dir();
    assert!(d.stop(), "ledgerd stops cleanly with the stream open");
    let mut c = client.clone();
    let err =
        tokio::time::timeout(std::time::Duration::from_secs(10), c.append_each(decision("after", "t", 1)))
            .await
            .expect("an append on a stream whose daemon stopped fails at once")
            .expect_err("no daemon");
    assert!(!err.to_string().is_empty());
    let again = Daemon::start_in(&dir).expect("restart");
    let mut c = again.client().await;
    c.append_each(decision("after", "t", 2)).await.expect("append on the restarted daemon");
    drop(keep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_over_both_rpcs_from_concurrent_writers_are_gap_free_and_read_back_equal() {
    let daemon = Daemon::start();
    let sent: Arc<Mutex<BTreeMap<u64, pb::NewEntry>>> = Arc::default();
    let mut tasks = Vec::new();
    // Eight unary writers, each on its own connection.
    for w in 0..8u64 {
        let mut client = daemon.client().await;
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let e = decision(&format!("unary-{w}"), "db.query", w * 1000 + i);
                let ack = client.append(e.clone()).await.expect("append");
                assert_eq!(ack.leaf_hash.len(), 32);
                sent.lock().await.insert(ack.seq, e);
            }
        }));
    }
    // Two streaming writers at the same time.
    for w in 0..2u64 {
        let mut client = daemon.client().await;
        tasks.push(tokio::spawn(async move {
            let entries: Vec<_> = (0..500).map(|i| decision(&format!("stream-{w}"), "fs.read", i)).collect();
            let r = client.append_stream(tokio_stream::iter(entries)).await.expect("append_stream");
            assert_eq!(r.count, 500);
            assert!(r.last_seq >= r.first_seq + 499);
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }

    let mut client = daemon.client().await;
    let entries = all_entries(&mut client).await;
    let start = daemon.ready_size();
    assert_eq!(entries.len() as u64, start + 8 * 40 + 2 * 500);
    for (i, stored) in entries.iter().enumerate() {
        let e = stored.entry.as_ref().expect("entry");
        assert_eq!(e.seq, i as u64, "seq must be gap-free and in order");
        assert_eq!(leaf::entry_leaf_hash(e).to_vec(), stored.leaf_hash, "leaf hash of entry {i}");
        assert!(
            i == 0 || e.time_unix_nanos >= entries[i - 1].entry.as_ref().map_or(0, |p| p.time_unix_nanos)
        );
    }
    for (seq, e) in sent.lock().await.iter() {
        let got = entries[*seq as usize].entry.as_ref().expect("entry");
        assert_same_as_sent(e, got);
        assert_eq!(got.writer_pid, std::process::id(), "the daemon stamps the writer's pid");
    }
    // Each stream's entries are in the order they were sent.
    for w in 0..2 {
        let reasons: Vec<_> = entries
            .iter()
            .filter_map(|s| s.entry.as_ref())
            .filter(|e| e.agent == format!("stream-{w}"))
            .map(|e| e.reason.clone())
            .collect();
        let expected: Vec<_> = (0..500).map(|i| format!("call {i}")).collect();
        assert_eq!(reasons, expected);
    }
    let out = daemon.ctl(&["verify"]);
    assert!(out.status.success(), "verify: {}{}", stdout(&out), stderr(&out));
}

#[test]
fn ledgerctl_append_prints_the_seq_and_jsonl_stops_at_a_bad_line() {
    let daemon = Daemon::start();
    let out = daemon.ctl(&[
        "append",
        "--agent",
        "billing-bot",
        "--tool",
        "db.query",
        "--decision",
        "allow",
        "--params",
        r#"{"sql": "select 1"}"#,
        "--rule",
        "read-invoices",
        "--policy-version",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), daemon.ready_size().to_string());

    let input = concat!(
        r#"{"agent":"a","tool":"t","decision":"deny","params":{"x":1}}"#,
        "\n",
        r#"{"agent":"a","tool":"t","decision":"allow","params":"{\"y\":2}"}"#,
        "\n",
        r#"{"agent":"a","tool":"t","decision":"maybe"}"#,
        "\n",
        r#"{"agent":"a","tool":"t","decision":"allow"}"#,
        "\n"
    );
    let out = daemon.ctl_stdin(&["append", "--jsonl", "-"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 3") && err.contains("maybe") && err.contains("appended 2 entries"), "{err}");

    let out = daemon.ctl_stdin(&["append", "--jsonl", "-"], Some(b"{\"agent\":\"a\",\"tool\":\"t\"}\n"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing field `decision`"), "{}", stderr(&out));

    let out = daemon.ctl_stdin(&["append", "--jsonl", "-"], Some(b"not json\n"));
    assert!(stderr(&out).contains("line 1"), "{}", stderr(&out));

    // 1 + 2 appended; the bad line and everything after it were not.
    let out = daemon.ctl(&["tail", "-n", "3"]);
    let table = stdout(&out);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().last().is_some_and(|l| l.contains("allow")), "{table}");
    let head = table.lines().next().unwrap_or_default();
    assert!(head.starts_with("SEQ") && head.contains("DECISION"), "{table}");
}

/// `tail --follow` prints rows as they come; each lines up with the header as long as its
/// cells fit the widths (only a longer cell pushes the rest of its own row).
#[test]
fn tail_follow_rows_line_up_with_the_header() {
    use std::io::{BufRead, BufReader};
    let daemon = Daemon::start();
    let mut child = std::process::Command::new(ledger_tests::bin("ledgerctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["tail", "-n", "1", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start tail --follow");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let header = lines.next().expect("a header").expect("text");
    let first = lines.next().expect("the daemon_started row").expect("text");
    for (agent, tool) in [("a", "fs.read"), ("billing-bot", "db.query")] {
        assert!(
            daemon.ctl(&["append", "--agent", agent, "--tool", tool, "--decision", "allow"]).status.success()
        );
    }
    let later: Vec<String> = (0..2).map(|_| lines.next().expect("a followed row").expect("text")).collect();
    let _ = child.kill();
    let _ = child.wait();
    for column in ["TIME", "KIND", "AGENT", "TOOL", "DECISION"] {
        let at = header.find(column).expect("column in header");
        for row in std::iter::once(&first).chain(&later) {
            if row.len() <= at {
                continue; // empty trailing cells are trimmed (daemon_started has no tool)
            }
            assert!(
                row.get(at.saturating_sub(2)..at).is_some_and(|gap| gap == "  ")
                    && row[at..].chars().next().is_some_and(|c| c != ' '),
                "{column} is not at {at} in {row:?} (header {header:?})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_nothing_acknowledged_and_the_sequence_continues() {
    let mut daemon = Daemon::start();
    let tmp = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    let acked: Arc<Mutex<BTreeMap<u64, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..6u64 {
        let mut client = daemon.client().await;
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.append(decision(&format!("w{w}"), "shell.exec", i)).await {
                    Ok(ack) => {
                        acked.lock().await.insert(ack.seq, ack.leaf_hash);
                    }
                    Err(_) => return, // the daemon died mid-call: not acknowledged
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    daemon.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer task");
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() > 50, "too few appends before the kill: {}", acked.len());

    let daemon = Daemon::start_in(&data_dir).expect("restart after SIGKILL");
    let mut client = daemon.client().await;
    let entries = all_entries(&mut client).await;
    for (seq, hash) in &acked {
        let stored = entries.get(*seq as usize).unwrap_or_else(|| panic!("acknowledged entry {seq} is gone"));
        let e = stored.entry.as_ref().expect("entry");
        assert_eq!(&leaf::entry_leaf_hash(e).to_vec(), hash, "entry {seq} changed across the crash");
    }
    // Whatever else is there is whole (decodes, hashes right), and the restart is recorded
    // right after it.
    let last = entries.last().and_then(|s| s.entry.as_ref()).expect("entries");
    assert_eq!(last.kind, pb::Kind::DaemonStarted as i32);
    assert_eq!(last.seq + 1, entries.len() as u64);
    let ack = client.append(decision("after", "t", 1)).await.expect("append after restart");
    assert_eq!(ack.seq, entries.len() as u64, "new appends continue the sequence");
    let out = daemon.ctl(&["verify"]);
    assert!(out.status.success(), "verify after crash: {}{}", stdout(&out), stderr(&out));
    drop(tmp);
}

/// Opens the stopped daemon's store and rewrites entry `seq` with another agent name,
/// as someone with access to the files could.
fn tamper_entry(data_dir: &std::path::Path, seq: u64) {
    let store = ledgerd::storage::store::Store::open(&data_dir.join("store"), 8 << 20).expect("open store");
    let mut entry = store.entry(seq).expect("read").expect("entry exists");
    entry.agent = "someone-else".into();
    store.tamper(seq, Some(&entry)).expect("rewrite the entry");
}

#[test]
fn a_changed_entry_is_reported_with_its_seq() {
    let mut daemon = Daemon::start();
    let tmp = daemon.keep_dir();
    for i in 0..20 {
        let n = i.to_string();
        let out =
            daemon.ctl(&["append", "--agent", "a", "--tool", "t", "--decision", "allow", "--reason", &n]);
        assert!(out.status.success());
    }
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop(), "clean stop");
    tamper_entry(&data_dir, 7);

    let daemon = Daemon::start_in(&data_dir).expect("the tampered entry is covered by a checkpoint: start");
    let out = daemon.ctl(&["verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("entry 7") && err.contains("changed"), "{err}");
    drop(tmp);
}

#[test]
fn deleting_the_newest_entries_breaks_a_pinned_checkpoint() {
    let mut daemon = Daemon::start();
    let tmp = daemon.keep_dir();
    for _ in 0..10 {
        assert!(
            daemon.ctl(&["append", "--agent", "a", "--tool", "t", "--decision", "deny"]).status.success()
        );
    }
    let pinned = tmp.as_ref().expect("tmp").path().join("pinned.note");
    let out = daemon.ctl(&["checkpoint", "--new"]);
    std::fs::write(&pinned, &out.stdout).expect("save checkpoint");
    let pinned_size: u64 = stdout(&out).lines().nth(1).and_then(|l| l.parse().ok()).expect("size line");
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop());

    // Remove the newest five entries (and with them the checkpoints that cover them).
    {
        let store =
            ledgerd::storage::store::Store::open(&data_dir.join("store"), 8 << 20).expect("open store");
        let end = store.entries_end().expect("end");
        store.tamper(end - 5, None).expect("remove the newest five");
        assert_eq!(store.entries_end().expect("end"), end - 5);
        // With the checkpoints still there the daemon refuses to start at all.
    }
    let refused = Daemon::start_in(&data_dir).err().expect("must refuse a truncated log");
    assert!(refused.contains("acknowledged entries are missing"), "{refused}");

    {
        let store =
            ledgerd::storage::store::Store::open(&data_dir.join("store"), 8 << 20).expect("open store");
        let end = store.entries_end().expect("end");
        let doomed: Vec<_> = store
            .checkpoints
            .iter()
            .keys()
            .filter_map(Result::ok)
            .filter(|k| ledgerd::storage::store::seq_from_key(&k[..8]).is_some_and(|size| size > end))
            .collect();
        for k in doomed {
            store.checkpoints.remove(k).expect("remove checkpoint");
        }
        store.checkpoints.flush().expect("flush");
    }
    let daemon = Daemon::start_in(&data_dir).expect("starts on the shortened log");
    let out = daemon.ctl(&["verify", "--checkpoint", pinned.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("pinned.note") && err.contains(&pinned_size.to_string()), "{err}");
    drop(tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_proofs_verify_for_every_size_up_to_300_and_match_an_independent_tree() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let start = daemon.ready_size();
    let entries: Vec<_> = (start..300).map(|i| decision("p", "t", i)).collect();
    client.append_stream(tokio_stream::iter(entries)).await.expect("append");
    let all = all_entries(&mut client).await;
    assert!(all.len() >= 300);
    let leaves: Vec<Hash> =
        all.iter().take(300).map(|s| leaf::entry_leaf_hash(s.entry.as_ref().expect("entry"))).collect();
    // Many requests in flight at once: the daemon answers them concurrently, and a debug
    // build would take minutes one round trip at a time.
    let roots: Vec<Hash> = (0..=300).map(|n| merkle::root_from_leaf_hashes(&leaves[..n])).collect();
    let tree = Arc::new((leaves, roots));
    let checks = (1..=300u64).flat_map(|size| {
        (0..size).map(move |seq| (size, Some(seq), 0)).chain((0..=size).map(move |old| (size, None, old)))
    });
    let results: Vec<Result<(), String>> = tokio_stream::iter(checks)
        .map(|(size, seq, old)| {
            let mut client = client.clone();
            let tree = tree.clone();
            async move { check_served_proof(&mut client, &tree.0, &tree.1, size, seq, old).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failures: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert!(failures.is_empty(), "{} proofs failed, first: {}", failures.len(), failures[0]);
}

/// Checks one served proof: an inclusion proof of `seq` in `size`, or (seq None) a
/// consistency proof from `old` to `size`, against roots computed from the leaves.
async fn check_served_proof(
    client: &mut Client,
    leaves: &[Hash],
    roots: &[Hash],
    size: u64,
    seq: Option<u64>,
    old: u64,
) -> Result<(), String> {
    let root = roots[size as usize];
    let mut wrong = root;
    wrong[0] ^= 1;
    if let Some(seq) = seq {
        let proof = client.prove(seq, size).await.map_err(|e| e.to_string())?;
        let path = merkle::hashes_from_bytes(&proof.path).map_err(|e| e.to_string())?;
        // The same path an in-memory tree over the recomputed leaves gives.
        let expected = merkle::inclusion_proof(leaves, seq, size).map_err(|e| format!("{e:?}"))?;
        if path != expected {
            return Err(format!("inclusion proof seq {seq} size {size} differs from the reference"));
        }
        let leaf = &leaves[seq as usize];
        merkle::verify_inclusion(leaf, seq, size, &path, &root)
            .map_err(|e| format!("seq {seq} size {size}: {e}"))?;
        if merkle::verify_inclusion(leaf, seq, size, &path, &wrong).is_ok() {
            return Err(format!("inclusion seq {seq} size {size} verified against a wrong root"));
        }
    } else {
        let proof = client.consistency(old, size).await.map_err(|e| e.to_string())?;
        let path = merkle::hashes_from_bytes(&proof.path).map_err(|e| e.to_string())?;
        let expected = if old == 0 {
            Vec::new()
        } else {
            merkle::consistency_proof(leaves, old, size).map_err(|e| format!("{e:?}"))?
        };
        if path != expected {
            return Err(format!("consistency proof {old} -> {size} differs from the reference"));
        }
        let old_root = roots[old as usize];
        merkle::verify_consistency(old, size, &old_root, &root, &path)
            .map_err(|e| format!("consistency {old} -> {size}: {e}"))?;
        if old > 0 && old < size && merkle::verify_consistency(old, size, &old_root, &wrong, &path).is_ok() {
            return Err(format!("consistency {old} -> {size} verified against a wrong root"));
        }
    }
    Ok(())
}

#[test]
fn a_signing_key_readable_by_others_is_refused() {
    let mut daemon = Daemon::start();
    let tmp = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop());
    let key = data_dir.join("signing.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = Daemon::start_in(&data_dir).err().expect("must refuse");
    assert!(err.contains("chmod 600") && err.contains("signing.key"), "{err}");
    drop(tmp);
}

#[test]
fn a_data_dir_readable_by_others_is_refused_and_a_missing_one_is_created_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = Daemon::start_in(&open).err().expect("must refuse");
    assert!(err.contains("chmod 700"), "{err}");

    let fresh = tmp.path().join("fresh");
    let daemon = Daemon::start_in(&fresh).expect("start");
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("signing.key")), 0o600);
    assert_eq!(mode(&daemon.socket), 0o660);
    let vkey = std::fs::read_to_string(fresh.join("verifier.vkey")).expect("vkey");
    NoteVerifier::parse(&vkey).expect("verifier.vkey is a C2SP verifier key");
}

#[test]
fn restarts_are_recorded_and_each_start_signs_a_checkpoint_consistent_with_the_last() {
    let mut daemon = Daemon::start();
    let tmp = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    let first = daemon.ctl(&["checkpoint"]);
    assert!(daemon.stop());
    let daemon = Daemon::start_in(&data_dir).expect("restart");
    let pinned = data_dir.join("first.note");
    std::fs::write(&pinned, &first.stdout).expect("save");
    let out = daemon.ctl(&["verify", "--checkpoint", pinned.to_str().expect("path")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = daemon.ctl(&["tail"]);
    let kinds: Vec<_> =
        stdout(&out).lines().skip(1).filter_map(|l| l.split_whitespace().nth(2).map(String::from)).collect();
    assert_eq!(kinds, ["daemon_started", "daemon_stopped", "daemon_started"]);
    drop(tmp);
}
