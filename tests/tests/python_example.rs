//! The Python gRPC example (`examples/python/client.py`) against a real daemon: it appends
//! a decision over the Unix socket with the official gRPC packages and reads it back.
//!
//! Where `python3` or its `grpc`/`grpc_tools` modules are missing the test says so and
//! skips, except under CI (`CI=true`), whose `.ci/run` installs them: there it fails.

use std::path::PathBuf;
use std::process::Command;

use ledger_tests::{Daemon, stderr, stdout};

/// Why the example cannot run here, if it cannot.
fn missing_python() -> Option<String> {
    match Command::new("python3").args(["-c", "import grpc, grpc_tools"]).output() {
        Err(e) => Some(format!("python3 cannot be run: {e}")),
        Ok(out) if !out.status.success() => Some(format!(
            "python3 cannot import grpc and grpc_tools ({}); install examples/python/requirements.txt",
            stderr(&out).trim().lines().last().unwrap_or("")
        )),
        Ok(_) => None,
    }
}

#[test]
fn the_python_example_appends_and_reads_back_a_decision() {
    if let Some(why) = missing_python() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run the Python example: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let daemon = Daemon::start();
    let out = Command::new("python3")
        .arg(repo.join("examples/python/client.py"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("--agent")
        .arg("py-agent")
        .output()
        .expect("run python3");
    let text = stdout(&out);
    assert!(out.status.success(), "exit {:?}\nstdout: {text}\nstderr: {}", out.status.code(), stderr(&out));
    let mut lines = text.lines();
    let entry: serde_json::Value =
        serde_json::from_str(lines.next().expect("the entry line")).expect("the entry is JSON");
    let seq = daemon.ready_size();
    assert_eq!(lines.next(), Some(format!("ok: seq {seq} read back equal").as_str()), "{text}");
    assert_eq!(entry["seq"], seq.to_string());
    assert_eq!(entry["agent"], "py-agent");
    assert_eq!(entry["kind"], "KIND_DECISION");
    assert_eq!(entry["decision"], "DECISION_ALLOW");
    assert_eq!(entry["params"], r#"{"path": "/srv/reports/q3.csv"}"#);
    assert_eq!(entry["writer_uid"].as_u64().unwrap_or(0), u64::from(rustix::process::getuid().as_raw()));

    // The daemon holds the same entry.
    let json = stdout(&daemon.ctl(&["query", "agent = \"py-agent\"", "--format", "json"]));
    let stored: serde_json::Value = serde_json::from_str(json.trim()).expect("one entry as JSON");
    assert_eq!((stored["seq"].as_u64(), stored["tool"].as_str()), (Some(seq), Some("fs.read_file")));
    assert!(daemon.stop());
}
