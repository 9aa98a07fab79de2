//! The `ledgerd` binary's own flags. (Its presence also makes `cargo test` build the
//! binary that the end-to-end tests in `tests/` start.)

use std::process::Command;

fn ledgerd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerd"))
}

#[test]
fn help_has_examples() {
    let out = ledgerd().arg("--help").output().expect("run ledgerd");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:") && text.contains("--data-dir"), "{text}");
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledgerd.toml");
    std::fs::write(&path, "[checkpoint]\ninterval = \"30s\"\n").expect("write config");
    let out = ledgerd().arg("--check-config").arg(&path).output().expect("run ledgerd");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interval = \"30s\""), "{text}");
}

#[test]
fn check_config_names_an_unknown_key_and_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledgerd.toml");
    std::fs::write(&path, "[checkpoint]\ninterval = \"30s\"\nevery = \"1s\"\n").expect("write config");
    let out = ledgerd().arg("--check-config").arg(&path).output().expect("run ledgerd");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("every") && text.contains("line 3"), "{text}");
}
