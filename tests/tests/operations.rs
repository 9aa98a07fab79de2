//! Running ledgerd for real (issue 8): `verify --state` against rollbacks, forks, changed
//! keys, stale checkpoints and key rotations; checkpoint publishing to a directory and to
//! a failing command; `status`; `[limits]`. Every test drives real `ledgerd` processes on
//! temporary data dirs over the real socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ledger_tests::{Daemon, ctl, stderr, stdout};

const OK: i32 = 0;
const ROLLBACK: i32 = 3;
const FORK: i32 = 4;
const KEY_CHANGED: i32 = 5;
const STALE: i32 = 6;
const UNREACHABLE: i32 = 7;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn append(d: &Daemon, n: usize, tag: &str) {
    for i in 0..n {
        let reason = format!("{tag}-{i}");
        let out =
            d.ctl(&["append", "--agent", "bot", "--tool", "t", "--decision", "allow", "--reason", &reason]);
        assert!(out.status.success(), "append: {}", stderr(&out));
    }
}

/// `ledgerctl verify --state STATE [extra]` against `socket`.
fn verify_state(socket: &Path, state: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "--state", state.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    ctl(socket, &args, None)
}

fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().expect("cp");
    assert!(out.status.success(), "cp -a: {}", stderr(&out));
}

/// The verdict line of a run, for assertion messages.
fn said(out: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", out.status.code(), stdout(out), stderr(out))
}

#[test]
fn verify_state_trusts_on_first_use_follows_growth_and_reports_a_restored_old_copy_as_rollback() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let state = tmp.path().join("verify.state");
    let d = Daemon::start_in(&data).expect("start");
    append(&d, 3, "first");
    let vkey = data.join("verifier.vkey");
    let first = verify_state(&d.socket, &state, &["--key", vkey.to_str().expect("utf-8")]);
    assert_eq!(code(&first), OK, "{}", said(&first));
    assert!(stdout(&first).contains("trusted on first use"), "{}", said(&first));
    assert!(state.exists(), "the state file is written on first use");
    assert!(d.stop());

    // The backup an attacker (or a careless restore) would bring back.
    let backup = tmp.path().join("backup");
    copy_dir(&data, &backup);

    let d = Daemon::start_in(&data).expect("restart");
    append(&d, 5, "second");
    // Signed now rather than at the next tick, so the trusted checkpoint covers them.
    assert!(d.ctl(&["checkpoint", "--new"]).status.success());
    let grown = verify_state(&d.socket, &state, &["--full"]);
    assert_eq!(code(&grown), OK, "{}", said(&grown));
    assert!(stdout(&grown).contains("grew consistently"), "{}", said(&grown));
    assert!(stdout(&grown).contains("recomputed"), "{}", said(&grown));
    assert!(d.stop());

    std::fs::remove_dir_all(&data).expect("remove data dir");
    copy_dir(&backup, &data);
    let d = Daemon::start_in(&data).expect("start on the restored copy");
    let before = std::fs::read(&state).expect("state");
    let rolled_back = verify_state(&d.socket, &state, &[]);
    assert_eq!(code(&rolled_back), ROLLBACK, "{}", said(&rolled_back));
    assert!(stderr(&rolled_back).contains("ROLLBACK"), "{}", said(&rolled_back));
    assert_eq!(stderr(&rolled_back).lines().count(), 1, "one line for cron: {}", said(&rolled_back));
    assert_eq!(std::fs::read(&state).expect("state"), before, "an alarm leaves the state file alone");
    assert!(d.stop());
}

#[test]
fn a_different_log_signed_with_the_same_key_at_a_larger_size_is_a_fork() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let state = tmp.path().join("verify.state");
    let d = Daemon::start_in(&data).expect("start");
    append(&d, 2, "original");
    let vkey = data.join("verifier.vkey");
    assert_eq!(code(&verify_state(&d.socket, &state, &["--key", vkey.to_str().expect("utf-8")])), OK);
    assert!(d.stop());

    // A rewritten log: a new data dir holding only the same signing key.
    let forged = tmp.path().join("forged");
    std::fs::create_dir(&forged).expect("mkdir");
    std::fs::set_permissions(&forged, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = Command::new("cp").arg("-p").arg(data.join("signing.key")).arg(&forged).output().expect("cp");
    assert!(out.status.success());
    let d = Daemon::start_in(&forged).expect("start the forged log");
    append(&d, 10, "rewritten");
    let fork = verify_state(&d.socket, &state, &[]);
    assert_eq!(code(&fork), FORK, "{}", said(&fork));
    assert!(stderr(&fork).contains("FORK"), "{}", said(&fork));
    assert!(d.stop());
}

#[test]
fn a_checkpoint_signed_by_another_key_is_a_changed_key_and_a_stopped_daemon_is_unreachable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("verify.state");
    let d = Daemon::start_in(&tmp.path().join("one")).expect("start");
    let vkey = d.data_dir.join("verifier.vkey");
    assert_eq!(code(&verify_state(&d.socket, &state, &["--key", vkey.to_str().expect("utf-8")])), OK);
    let socket = d.socket.clone();
    assert!(d.stop());
    let gone = verify_state(&socket, &state, &[]);
    assert_eq!(code(&gone), UNREACHABLE, "{}", said(&gone));
    assert!(stderr(&gone).contains("UNREACHABLE"), "{}", said(&gone));

    let other = Daemon::start_in(&tmp.path().join("two")).expect("start another ledger");
    let changed = verify_state(&other.socket, &state, &[]);
    assert_eq!(code(&changed), KEY_CHANGED, "{}", said(&changed));
    assert!(stderr(&changed).contains("KEY CHANGED"), "{}", said(&changed));
    assert!(other.stop());
}

#[test]
fn a_checkpoint_older_than_max_age_while_the_log_grew_past_it_is_stale() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("ledgerd.toml");
    std::fs::write(&config, "[checkpoint]\ninterval = \"1h\"\n").expect("config");
    let state = tmp.path().join("verify.state");
    let data = tmp.path().join("data");
    let d = Daemon::start_with(&data, &["--config", config.to_str().expect("utf-8")]).expect("start");
    let vkey = data.join("verifier.vkey");
    let first = verify_state(&d.socket, &state, &["--key", vkey.to_str().expect("utf-8"), "--max-age", "1s"]);
    assert_eq!(code(&first), OK, "an idle log is not stale: {}", said(&first));
    // Entries the daemon does not sign for an hour.
    append(&d, 2, "unsigned");
    std::thread::sleep(Duration::from_millis(2100));
    let stale = verify_state(&d.socket, &state, &["--max-age", "1s"]);
    assert_eq!(code(&stale), STALE, "{}", said(&stale));
    assert!(stderr(&stale).contains("STALE"), "{}", said(&stale));
    let relaxed = verify_state(&d.socket, &state, &["--max-age", "1h"]);
    assert_eq!(code(&relaxed), OK, "{}", said(&relaxed));
    assert!(d.stop());
}

#[test]
fn a_rotated_key_is_followed_by_verify_state_and_the_daemon_still_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let state = tmp.path().join("verify.state");
    let d = Daemon::start_in(&data).expect("start");
    append(&d, 2, "before");
    let vkey = data.join("verifier.vkey");
    let old_key = std::fs::read_to_string(&vkey).expect("vkey");
    assert_eq!(code(&verify_state(&d.socket, &state, &["--key", vkey.to_str().expect("utf-8")])), OK);
    assert!(d.stop());

    let out = ledger_tests::rotate_key(&data);
    assert!(out.status.success(), "rotate: {}", stderr(&out));
    assert!(stdout(&out).contains("rotated"), "{}", stdout(&out));
    let new_key = std::fs::read_to_string(&vkey).expect("vkey");
    assert_ne!(new_key, old_key, "verifier.vkey holds the new key");
    let retired: Vec<PathBuf> = std::fs::read_dir(&data)
        .expect("read data dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("signing.key.retired-")))
        .collect();
    assert_eq!(retired.len(), 1, "the old key is kept");
    let mode = std::fs::metadata(&retired[0]).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The daemon starts on the rotated ledger (its stored checkpoints chain across keys).
    let d = Daemon::start_in(&data).expect("start after the rotation");
    append(&d, 1, "after");
    let followed = verify_state(&d.socket, &state, &[]);
    assert_eq!(code(&followed), OK, "{}", said(&followed));
    assert!(stdout(&followed).contains("followed a key rotation"), "{}", said(&followed));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert_eq!(saved["key"].as_str(), Some(new_key.trim()), "the state pins the new key now");
    let again = verify_state(&d.socket, &state, &["--full"]);
    assert_eq!(code(&again), OK, "{}", said(&again));
    let full = d.ctl(&["verify", "--key", vkey.to_str().expect("utf-8")]);
    assert!(full.status.success(), "{}", said(&full));
    // A checkpoint from before the rotation is still served by its size.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let early = runtime.block_on(async {
        let mut client = d.client().await;
        client.checkpoint_at(1).await
    });
    let early = early.unwrap_or_else(|e| panic!("the first checkpoint, signed by the old key: {e}"));
    let old_verifier = ledger_proto::note::NoteVerifier::parse(&old_key).expect("old key");
    assert!(old_verifier.verify_checkpoint(&early.note).is_ok(), "signed by the old key");
    drop(runtime);
    let rotations = d.ctl(&["query", "kind = key_rotated | count"]);
    assert!(stdout(&rotations).contains('1'), "{}", said(&rotations));
    assert!(d.stop());
}

/// Every checkpoint the store holds, oldest first, as (file name, note).
fn stored_checkpoints(data: &Path) -> Vec<(String, Vec<u8>)> {
    let store = ledgerd::storage::store::Store::open(&data.join("store"), 8 << 20).expect("open store");
    store
        .checkpoints
        .iter()
        .map(|item| {
            let (key, note) = item.expect("read checkpoint");
            let key: [u8; 16] = key.as_ref().try_into().expect("16-byte key");
            (ledgerd::service::publish::file_name(&key), note.to_vec())
        })
        .collect()
}

fn status_json(d: &Daemon) -> serde_json::Value {
    let out = d.ctl(&["status", "--format", "json"]);
    assert!(out.status.success(), "status: {}", said(&out));
    serde_json::from_str(&stdout(&out)).expect("status json")
}

#[test]
fn every_checkpoint_reaches_a_dir_and_a_command_that_fails_three_times_without_blocking_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let published = tmp.path().join("published");
    let received = tmp.path().join("received");
    std::fs::create_dir(&published).expect("mkdir");
    std::fs::create_dir(&received).expect("mkdir");
    let counter = tmp.path().join("attempts");
    let order = tmp.path().join("order");
    let script = tmp.path().join("publish.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nn=$(cat '{c}' 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > '{c}'\nif [ $n -le 3 ]; then echo \"simulated outage $n\" >&2; exit 1; fi\ncat > '{r}'/\"$LEDGERD_CHECKPOINT_NAME\"\necho \"$LEDGERD_CHECKPOINT_NAME\" >> '{o}'\n",
            c = counter.display(),
            r = received.display(),
            o = order.display()
        ),
    )
    .expect("script");
    let config = tmp.path().join("ledgerd.toml");
    std::fs::write(
        &config,
        format!(
            "[checkpoint]\ninterval = \"1s\"\n\n[[publish]]\ndir = \"{}\"\n\n[[publish]]\ncommand = [\"/bin/sh\", \"{}\"]\ntimeout = \"10s\"\n",
            published.display(),
            script.display()
        ),
    )
    .expect("config");
    let data = tmp.path().join("data");
    let d = Daemon::start_with(&data, &["--config", config.to_str().expect("utf-8")]).expect("start");

    // While the command target fails (its retries wait 1 s, 2 s, 4 s), appends and
    // checkpoints go on, each acknowledged promptly.
    let attempts =
        || std::fs::read_to_string(&counter).ok().and_then(|t| t.trim().parse::<u32>().ok()).unwrap_or(0);
    let mut during_failure = 0;
    let mut saw_failure_in_status = false;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        append(&d, 1, "while-failing");
        assert!(t.elapsed() < Duration::from_secs(3), "an append took {:?}", t.elapsed());
        if attempts() < 4 {
            during_failure += 1;
        }
        if !saw_failure_in_status && attempts() >= 1 {
            let s = status_json(&d);
            let target = &s["publish"][1];
            if target["failures"].as_u64().unwrap_or(0) >= 1 {
                assert!(target["last_error"].as_str().unwrap_or("").contains("simulated outage"), "{s}");
                assert!(target["next_retry"].is_string(), "{s}");
                assert!(target["pending"].as_u64().unwrap_or(0) >= 1, "{s}");
                saw_failure_in_status = true;
            }
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(during_failure >= 5, "appends were acknowledged while the target failed ({during_failure})");
    assert!(saw_failure_in_status, "status shows the failing target");
    assert!(d.ctl(&["checkpoint", "--new"]).status.success());

    // Then everything gets through.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = status_json(&d);
        let done = s["publish"].as_array().is_some_and(|targets| {
            targets.iter().all(|t| t["pending"].as_u64() == Some(0) && t["failures"].as_u64() == Some(0))
        }) && s["publish"][1]["delivered_size"].as_u64() == s["checkpoint_size"].as_u64();
        if done {
            let rate = s["appends_per_second"].as_f64().unwrap_or(0.0);
            assert!(rate > 0.0, "appends were made within the last minute: {s}");
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not catch up: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(d.stop(), "clean stop");

    let expected = stored_checkpoints(&data);
    assert!(expected.len() >= 4, "several checkpoints were signed: {}", expected.len());
    let names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    let mut in_dir: Vec<String> = std::fs::read_dir(&published)
        .expect("read published")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    in_dir.sort();
    assert_eq!(in_dir, names, "the directory holds exactly the stored checkpoints");
    for (name, note) in &expected {
        assert_eq!(&std::fs::read(published.join(name)).expect("published"), note, "{name}");
        assert_eq!(&std::fs::read(received.join(name)).expect("received"), note, "{name}");
    }
    let delivered: Vec<String> =
        std::fs::read_to_string(&order).expect("order").lines().map(String::from).collect();
    assert_eq!(delivered, names, "the command got every checkpoint once, in order (the final one included)");
    assert_eq!(attempts() as usize, names.len() + 3, "three failed attempts, then one per checkpoint");
}

// Multi-threaded: the client connections' background tasks must run while the test
// blocks on ledgerctl, or they never close and the daemon's graceful stop waits on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn status_reports_the_tree_and_limits_refuse_large_params_and_extra_connections() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("ledgerd.toml");
    std::fs::write(&config, "[limits]\nmax_params_bytes = 100\nmax_connections = 4\n").expect("config");
    let data = tmp.path().join("data");
    let d = Daemon::start_with(&data, &["--config", config.to_str().expect("utf-8")]).expect("start");
    append(&d, 3, "s");

    let s = status_json(&d);
    let head = d.client().await.head().await.expect("head");
    assert_eq!(s["size"].as_u64(), Some(head.size));
    assert_eq!(s["root"].as_str().map(str::len), Some(64));
    assert!(s["checkpoint_size"].as_u64().is_some_and(|c| c >= 1 && c <= head.size), "{s}");
    assert!(s["checkpoint_age_seconds"].as_f64().is_some_and(|a| (0.0..60.0).contains(&a)), "{s}");
    assert!(s["uptime_seconds"].as_f64().is_some_and(|u| (0.0..120.0).contains(&u)), "{s}");
    assert!(s["connections"].as_u64().is_some_and(|c| c >= 1), "{s}");
    assert_eq!(s["max_connections"].as_u64(), Some(4));
    assert!(s["data_dir_bytes"].as_u64().is_some_and(|b| b > 1000), "{s}");
    assert!(s["appends_per_second"].as_f64().is_some_and(|r| r >= 0.0), "{s}");
    assert_eq!(s["publish"].as_array().map(Vec::len), Some(0));
    let table = d.ctl(&["status"]);
    let text = stdout(&table);
    for label in [
        "tree size",
        "root",
        "latest checkpoint",
        "uptime",
        "connections",
        "appends/s",
        "data dir",
        "publishing",
    ] {
        assert!(text.contains(label), "{label}: {text}");
    }

    // Params over limits.max_params_bytes: refused, nothing written.
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(200));
    let out = d.ctl(&["append", "--agent", "bot", "--tool", "t", "--decision", "allow", "--params", &big]);
    assert_eq!(code(&out), 2, "{}", said(&out));
    assert!(stderr(&out).contains("limits.max_params_bytes = 100"), "{}", said(&out));
    assert_eq!(d.client().await.head().await.expect("head").size, head.size, "nothing was written");

    // Four idle connections take every slot; the next caller is told why it is refused.
    // The daemon notices a closed connection (this test's client, the last ledgerctl)
    // some time after the close: one still counted when the four arrive pushes the last
    // of them over the limit, and once it is gone a slot is free again. So the four are
    // opened again until they hold every slot (a loaded CI machine needed that).
    let mut attempts = 0;
    let (held, refused) = loop {
        let held: Vec<std::os::unix::net::UnixStream> =
            (0..4).map(|_| std::os::unix::net::UnixStream::connect(&d.socket).expect("connect")).collect();
        std::thread::sleep(Duration::from_millis(300));
        let refused = d.ctl(&["status"]);
        attempts += 1;
        if code(&refused) == 2 || attempts == 10 {
            break (held, refused);
        }
        drop(held);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(code(&refused), 2, "after {attempts} attempts: {}", said(&refused));
    assert!(stderr(&refused).contains("limits.max_connections = 4"), "{}", said(&refused));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d.ctl(&["status"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "connections were not given back: {}", said(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.stop());
}
