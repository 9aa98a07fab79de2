//! The `ledger-ship` binary's flags and the errors a careless caller gets (no store, no
//! daemon needed): each names what is wrong and exits 2.

use std::process::{Command, Output};

fn ship(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger-ship"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("run ledger-ship")
}

fn says(out: &Output, code: i32, text: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(text), "expected {text:?} in: {err}");
}

#[test]
fn mistakes_are_named_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trust = dir.path().join("fleet.trust");
    std::fs::write(&trust, "not-a-key\n").expect("write");
    let trust_arg = trust.to_string_lossy().into_owned();
    says(&ship(&["run", "--once"]), 2, "no bucket");
    says(&ship(&["run", "--once", "--bucket", "b/x"]), 2, "s3://BUCKET/PREFIX");
    says(&ship(&["run", "--once", "--bucket", "s3://b", "--max-entries", "0"]), 2, "max_entries");
    says(&ship(&["run", "--once", "--bucket", "s3://b", "--interval", "soon"]), 2, "batch.interval");
    let missing = dir.path().join("missing.toml");
    says(&ship(&["run", "--config", &missing.to_string_lossy()]), 2, "cannot read config");
    says(&ship(&["fleet", "verify", "s3://b/p", "--trust", &trust_arg]), 2, "line 1");
    says(
        &ship(&["fleet", "verify", "s3://b/p", "--trust", "/nonexistent/trust"]),
        2,
        "cannot read trust file",
    );
    says(&ship(&["status", "--state-dir", &dir.path().to_string_lossy()]), 2, "has ledger-ship run");
    // Credentials are not flags.
    let out = ship(&["run", "--access-key", "x"]);
    assert_eq!(out.status.code(), Some(2));
}
