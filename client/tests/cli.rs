//! The `ledgerctl` binary's contract without a daemon: help, usage errors, and a clear
//! message when the daemon is not there. (Its presence also makes `cargo test` build the
//! binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn ledgerctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
}

#[test]
fn every_subcommand_help_has_an_example() {
    for sub in ["append", "checkpoint", "prove", "verify", "tail"] {
        let out = ledgerctl().args([sub, "--help"]).output().expect("run ledgerctl");
        assert!(out.status.success(), "{sub} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{sub} --help has no example:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = ledgerctl().args(["append", "--agent", "a"]).output().expect("run ledgerctl");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_daemon_is_explained_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("nope.sock");
    let out = ledgerctl()
        .arg("--socket")
        .arg(&socket)
        .args(["append", "--agent", "a", "--tool", "t", "--decision", "allow"])
        .output()
        .expect("run ledgerctl");
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("cannot connect to ledgerd") && text.contains("Is ledgerd running?"), "{text}");
}
