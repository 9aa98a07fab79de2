//! Issue 6 against real daemons: every entry is scored as it is appended; a registered
//! agent's routine calls score low and a burst of denies high; `ledgerctl watch` gets the
//! high ones within a second and nothing below its threshold; `[alerts] file` gets
//! exactly the entries at or above its threshold; baselines survive a restart (live
//! scores equal replayed ones); a shim's skipped sequence number is a `shim_gap` that
//! `ledgerctl query` finds; `[scorer] enabled = false` leaves entries unscored.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ledger_client::Client;
use ledger_proto::pb;
use ledger_tests::{Daemon, bin, ok, stderr};
use ledgerd::scoring::scorer::{Scorer, ScorerConfig};

const AGENT: &str = "billing-bot";
const POLICY: &str = "# billing-bot: reads only\n\
rule reads: allow tool in [\"fs.read_file\", \"fs.list_dir\", \"kv.get\"]\n\
default deny\n";
const READS: [&str; 3] = ["fs.read_file", "fs.list_dir", "kv.get"];

/// Registers [`AGENT`] with [`POLICY`] (version 1) and returns its token.
fn register(daemon: &Daemon, dir: &Path) -> String {
    let out = ok(&daemon.ctl(&[
        "agents",
        "register",
        AGENT,
        "--owner",
        "finance@example.com",
        "--purpose",
        "invoices",
    ]));
    let token = out.lines().find_map(|l| l.strip_prefix("token")).map(str::trim).expect("token line");
    let policy = dir.join("billing-bot.policy");
    std::fs::write(&policy, POLICY).expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    ok(&daemon.ctl(&["policy", "set", AGENT, "--file", policy, "--author", "alice", "--reason", "CHG-1"]));
    token.to_string()
}

/// A decision by [`AGENT`] as its shim would send it, agreeing with [`POLICY`].
fn call(token: &str, tool: &str, allow: bool) -> pb::NewEntry {
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: AGENT.into(),
        tool: tool.into(),
        decision: if allow { pb::Decision::Allow } else { pb::Decision::Deny } as i32,
        rule: if allow { "reads".into() } else { String::new() },
        policy_version: 1,
        agent_token: token.into(),
        ..Default::default()
    }
}

/// The stored entry at `seq`.
async fn stored(client: &mut Client, seq: u64) -> pb::Entry {
    use tokio_stream::StreamExt;
    let mut stream = client.entries(seq, seq + 1, false).await.expect("entries");
    stream.next().await.expect("one entry").expect("ok").entry.expect("an entry")
}

/// Every stored entry, in seq order.
async fn all_entries(client: &mut Client) -> Vec<pb::Entry> {
    use tokio_stream::StreamExt;
    let mut stream = client.entries(0, 0, false).await.expect("entries");
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        out.extend(item.expect("ok").entry);
    }
    out
}

/// `ledgerctl watch ARGS` as a child process; each stdout line arrives on the channel
/// with the instant it was read.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    errors: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(socket: &Path, args: &[&str]) -> Watcher {
        let mut child = Command::new(bin("ledgerctl"))
            .arg("--socket")
            .arg(socket)
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ledgerctl watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (tx, errors) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher { child, lines, errors }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig}");
    }

    fn next(&self, within: Duration) -> Option<(Instant, serde_json::Value)> {
        let (at, line) = self.lines.recv_timeout(within).ok()?;
        let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        Some((at, value))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends an entry that scores 10 (an unknown agent's first denied shell call) until
/// the watcher shows one: from then on it is subscribed. Returns the canaries' seqs.
async fn wait_until_watching(client: &mut Client, watcher: &Watcher) -> Vec<u64> {
    let mut canaries = Vec::new();
    for _ in 0..50 {
        let canary = pb::NewEntry {
            kind: pb::Kind::Decision as i32,
            agent: "canary".into(),
            tool: "shell.exec".into(),
            decision: pb::Decision::Deny as i32,
            ..Default::default()
        };
        canaries.push(client.append(canary).await.expect("append canary").seq);
        if let Some((_, v)) = watcher.next(Duration::from_millis(300)) {
            assert!(canaries.contains(&v["seq"].as_u64().expect("seq")), "{v}");
            // Any other canary still in flight arrives now.
            while let Some((_, v)) = watcher.next(Duration::from_millis(300)) {
                assert!(canaries.contains(&v["seq"].as_u64().expect("seq")), "{v}");
            }
            return canaries;
        }
    }
    panic!("ledgerctl watch never showed an entry");
}

fn seqs_of(query_json: &str) -> BTreeSet<u64> {
    query_json
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["seq"].as_u64().expect("seq")
        })
        .collect()
}

fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("ledgerd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routine_calls_score_low_a_deny_burst_high_and_watch_and_alerts_get_the_high_ones_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alerts = tmp.path().join("alerts.jsonl");
    let config = config_file(
        tmp.path(),
        &format!("[alerts]\nmin_severity = 8\nfile = {:?}\n", alerts.to_str().expect("utf-8")),
    );
    let data = tmp.path().join("data");
    let daemon = Daemon::start_with(&data, &["--config", config.to_str().expect("utf-8")])
        .unwrap_or_else(|e| panic!("ledgerd did not start: {e}"));
    let token = register(&daemon, tmp.path());
    let mut client = daemon.client().await;
    let watcher = Watcher::start(&daemon.socket, &["--min-severity", "8", "--format", "json"]);
    let canaries = wait_until_watching(&mut client, &watcher).await;

    // Routine: allowed reads the policy allows, the first of each tool a first use.
    let mut routine = Vec::new();
    for i in 0..30 {
        let ack = client.append(call(&token, READS[i % 3], true)).await.expect("append");
        routine.push(stored(&mut client, ack.seq).await);
    }
    for e in &routine {
        assert!((1..=3).contains(&e.severity), "routine call scored {}: {e:?}", e.severity);
        assert!(e.flags.iter().all(|f| f == "first_use"), "{e:?}");
        assert_eq!(e.policy_check, "match");
    }
    assert_eq!(routine.iter().filter(|e| e.flags.iter().any(|f| f == "first_use")).count(), 3);

    // Probing: five denied shell calls in quick succession.
    let mut probes = Vec::new();
    for _ in 0..5 {
        let ack = client.append(call(&token, "shell.exec", false)).await.expect("append");
        probes.push((Instant::now(), stored(&mut client, ack.seq).await));
    }
    let severities: Vec<u32> = probes.iter().map(|(_, e)| e.severity).collect();
    assert!(severities[..2].iter().all(|s| *s < 8), "{severities:?}");
    for (_, e) in &probes[2..] {
        assert!(e.severity >= 8 && e.flags.iter().any(|f| f == "deny_burst"), "{e:?}");
        assert_eq!(e.policy_check, "match", "the policy denies it too");
    }

    // The watcher got every probe of 8 or more within a second of its append, and
    // nothing else.
    let mut received = Vec::new();
    for _ in 2..5 {
        let (at, v) = watcher.next(Duration::from_secs(5)).expect("watch shows the probe");
        received.push((at, v));
    }
    assert!(watcher.next(Duration::from_millis(300)).is_none(), "nothing below 8 reaches the watcher");
    for ((acked, e), (at, v)) in probes[2..].iter().zip(&received) {
        assert_eq!(v["seq"].as_u64(), Some(e.seq), "{v}");
        assert_eq!(v["severity"].as_u64(), Some(u64::from(e.severity)));
        assert_eq!(v["flags"], serde_json::json!(e.flags));
        assert_eq!(v["agent"], AGENT);
        let latency = at.saturating_duration_since(*acked);
        eprintln!("seq {}: append acknowledged -> watch line in {latency:?}", e.seq);
        assert!(
            latency < Duration::from_secs(1),
            "seq {} reached the watcher {latency:?} after its ack",
            e.seq
        );
    }

    // The query language finds them; the alerts file holds exactly the entries >= 8.
    let high = seqs_of(&ok(&daemon.ctl(&["query", "severity >= 8 | fields seq", "--format", "json"])));
    let expected: BTreeSet<u64> =
        canaries.iter().copied().chain(probes[2..].iter().map(|(_, e)| e.seq)).collect();
    assert_eq!(high, expected);
    let burst =
        seqs_of(&ok(&daemon.ctl(&["query", "flags has \"deny_burst\" | fields seq", "--format", "json"])));
    assert_eq!(burst, probes[2..].iter().map(|(_, e)| e.seq).collect());
    let deadline = Instant::now() + Duration::from_secs(5);
    let alerted = loop {
        let text = std::fs::read_to_string(&alerts).unwrap_or_default();
        let alerted = seqs_of(&text);
        if alerted.len() >= expected.len() || Instant::now() > deadline {
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("alert JSON");
                assert!(v["severity"].as_u64() >= Some(8), "{v}");
            }
            break alerted;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(alerted, expected, "the alerts file holds exactly the entries of severity 8 or more");
    drop(watcher);
    assert!(daemon.stop());
}

/// The traffic of the restart test, before and after the (possible) restart: routine
/// reads, then denies that straddle it.
async fn traffic(client: &mut Client, token: &str, second: bool) -> Vec<u64> {
    let mut seqs = Vec::new();
    let plan: &[(&str, bool)] = if second {
        &[
            ("fs.read_file", true),
            ("kv.get", true),
            ("shell.exec", false),
            ("shell.exec", false),
            ("fs.read_file", true),
        ]
    } else {
        &[
            ("fs.read_file", true),
            ("fs.list_dir", true),
            ("kv.get", true),
            ("shell.exec", false),
            ("shell.exec", false),
        ]
    };
    for (tool, allow) in plan {
        seqs.push(client.append(call(token, tool, *allow)).await.expect("append").seq);
    }
    seqs
}

/// What scoring depends on of an entry, for comparing two daemons' logs.
fn scored(e: &pb::Entry) -> (String, u32, Vec<String>) {
    (e.tool.clone(), e.severity, e.flags.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_rebuilt_at_restart_score_like_the_live_ones() {
    // Daemon A stops cleanly between the two halves of the traffic (and resumes from the
    // baselines it saved), C is killed there (and replays its whole log); B runs on.
    let tmp_a = tempfile::tempdir().expect("tempdir");
    let data_a = tmp_a.path().join("data");
    let a = Daemon::start_in(&data_a).expect("start A");
    let token_a = register(&a, tmp_a.path());
    traffic(&mut a.client().await, &token_a, false).await;
    assert!(a.stop());
    let a = Daemon::start_in(&data_a).expect("restart A");
    let mut client_a = a.client().await;
    let after_a = traffic(&mut client_a, &token_a, true).await;

    let tmp_c = tempfile::tempdir().expect("tempdir");
    let data_c = tmp_c.path().join("data");
    let c = Daemon::start_in(&data_c).expect("start C");
    let token_c = register(&c, tmp_c.path());
    traffic(&mut c.client().await, &token_c, false).await;
    c.kill();
    let c = Daemon::start_in(&data_c).expect("restart C");
    let mut client_c = c.client().await;
    let after_c = traffic(&mut client_c, &token_c, true).await;

    let b = Daemon::start();
    let token_b = register(&b, b.data_dir.parent().expect("tmp"));
    let mut client_b = b.client().await;
    traffic(&mut client_b, &token_b, false).await;
    let after_b = traffic(&mut client_b, &token_b, true).await;

    let mut second_a = Vec::new();
    let mut second_b = Vec::new();
    let mut second_c = Vec::new();
    for ((sa, sb), sc) in after_a.iter().zip(&after_b).zip(&after_c) {
        second_a.push(scored(&stored(&mut client_a, *sa).await));
        second_b.push(scored(&stored(&mut client_b, *sb).await));
        second_c.push(scored(&stored(&mut client_c, *sc).await));
    }
    assert_eq!(second_a, second_b, "after a clean restart the same traffic scores the same");
    assert_eq!(second_c, second_b, "after a crash and a full replay the same traffic scores the same");
    // And the baselines did matter: the tools are known, the denies continue a burst.
    assert!(second_a.iter().all(|(_, _, flags)| !flags.iter().any(|f| f == "first_use")), "{second_a:?}");
    assert!(second_a[2].2.contains(&"deny_burst".to_string()), "{second_a:?}");
    assert!(second_a[2].1 >= 8 && second_a[3].1 >= 8, "{second_a:?}");

    // A replay of the whole stored log scores every entry as it was scored live.
    for log in
        [all_entries(&mut client_a).await, all_entries(&mut client_b).await, all_entries(&mut client_c).await]
    {
        let mut replay = Scorer::new(ScorerConfig::default()).expect("default config");
        for e in &log {
            let mut again = e.clone();
            again.flags.retain(|f| {
                !matches!(f.as_str(), "first_use" | "deny_burst" | "rate_spike" | "off_hours" | "shim_gap")
            });
            replay.score(&again).apply(&mut again);
            assert_eq!((again.severity, &again.flags), (e.severity, &e.flags), "seq {}", e.seq);
        }
    }
    assert!(a.stop() && b.stop() && c.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_shim_seq_is_a_shim_gap_that_a_query_finds() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let mut seqs = Vec::new();
    for shim_seq in [1, 2, 4, 5] {
        let entry = pb::NewEntry {
            kind: pb::Kind::Decision as i32,
            agent: "analyst".into(),
            tool: "fs.read_file".into(),
            decision: pb::Decision::Allow as i32,
            shim_id: "mcp-7f3a".into(),
            shim_seq,
            ..Default::default()
        };
        seqs.push(client.append(entry).await.expect("append").seq);
    }
    let out = ok(&daemon.ctl(&[
        "query",
        "flags has \"shim_gap\" | fields seq, shim_id, shim_seq, severity",
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["seq"].as_u64(), Some(seqs[2]));
    assert_eq!((rows[0]["shim_id"].as_str(), rows[0]["shim_seq"].as_u64()), (Some("mcp-7f3a"), Some(4)));
    // The glob form over the list finds the same entry.
    let glob = ok(&daemon.ctl(&["query", "flags ~ \"*gap*\" | fields seq", "--format", "json"]));
    assert_eq!(seqs_of(&glob), BTreeSet::from([seqs[2]]));
    assert!(daemon.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_can_be_turned_off() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = config_file(tmp.path(), "[scorer]\nenabled = false\n");
    let daemon = Daemon::start_with(&tmp.path().join("data"), &["--config", config.to_str().expect("utf-8")])
        .unwrap_or_else(|e| panic!("ledgerd did not start: {e}"));
    let mut client = daemon.client().await;
    for _ in 0..4 {
        let entry = pb::NewEntry {
            kind: pb::Kind::Decision as i32,
            agent: "prober".into(),
            tool: "shell.exec".into(),
            decision: pb::Decision::Deny as i32,
            ..Default::default()
        };
        let seq = client.append(entry).await.expect("append").seq;
        let e = stored(&mut client, seq).await;
        assert_eq!(
            (e.severity, e.flags.as_slice()),
            (0, &["unknown_agent".to_string()][..]),
            "unscored: {e:?}"
        );
    }
    assert!(daemon.stop());
}

/// A watcher that stops reading falls behind, is told on stderr how many entries it
/// missed (delivered + missed = committed), and holds up neither appends nor the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_is_told_what_it_missed_and_holds_nothing_up() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let watcher = Watcher::start(&daemon.socket, &["--format", "json"]);
    wait_until_watching(&mut client, &watcher).await;
    watcher.signal("STOP");
    let total = 20_000u64;
    let entries = (0..total).map(|i| pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: "bulk".into(),
        tool: "kv.get".into(),
        decision: pb::Decision::Allow as i32,
        params: format!(r#"{{"n":{i}}}"#),
        ..Default::default()
    });
    let started = Instant::now();
    let appended = client.append_stream(tokio_stream::iter(entries)).await.expect("append stream");
    eprintln!("{total} entries appended in {:?} with a stalled watcher", started.elapsed());
    assert_eq!(appended.count, total);
    watcher.signal("CONT");
    let (mut delivered, mut missed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered + missed < total && Instant::now() < deadline {
        while let Ok(line) = watcher.errors.try_recv() {
            let n = line
                .strip_prefix("ledgerctl: missed ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("unexpected stderr: {line}"));
            assert!(line.contains("this watcher fell behind"), "{line}");
            missed += n;
        }
        if let Some((_, v)) = watcher.next(Duration::from_millis(50)) {
            assert_eq!(v["agent"], "bulk", "{v}");
            delivered += 1;
        }
    }
    assert!(missed > 0, "a watcher stalled for {total} entries falls behind");
    assert_eq!(delivered + missed, total, "every entry is delivered or counted as missed");
    // Stalled again, it does not hold up the daemon's stop.
    watcher.signal("STOP");
    client.append(call("", "kv.get", true)).await.expect("append");
    let stopping = Instant::now();
    assert!(daemon.stop(), "ledgerd stops with a stalled watcher");
    assert!(stopping.elapsed() < Duration::from_secs(10), "{:?}", stopping.elapsed());
    watcher.signal("CONT");
}

#[test]
fn watch_without_a_daemon_says_so() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = ledger_tests::ctl(&tmp.path().join("none.sock"), &["watch", "--min-severity", "8"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Is ledgerd running?"), "{}", stderr(&out));
}
