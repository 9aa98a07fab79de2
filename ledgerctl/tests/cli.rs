//! The `ledgerctl` binary's contract without a daemon: help, usage errors, and a clear
//! message when the daemon is not there. (Its presence also makes `cargo test` build the
//! binary that the end-to-end tests in `tests/` run.)

use std::process::Command;

fn ledgerctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ledgerctl"))
}

/// The subcommands listed in the "Commands:" section of a `--help` text (without `help`).
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("          "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// Every subcommand path (`["agents", "register"]`), found by walking `--help` from the top,
/// so subcommands added later are covered without listing them here.
fn all_subcommands() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let out = ledgerctl().args(&path).arg("--help").output().expect("run ledgerctl");
        assert!(out.status.success(), "ledgerctl {} --help failed", path.join(" "));
        for sub in listed_subcommands(&String::from_utf8_lossy(&out.stdout)) {
            let mut child = path.clone();
            child.push(sub);
            todo.push(child.clone());
            found.push(child);
        }
    }
    found
}

#[test]
fn every_subcommand_help_has_an_example() {
    let subcommands = all_subcommands();
    let names: Vec<String> = subcommands.iter().map(|p| p.join(" ")).collect();
    for expected in
        ["append", "verify", "agents", "agents register", "shim claude-code", "completions", "man"]
    {
        assert!(names.iter().any(|n| n == expected), "`{expected}` not found in --help: {names:?}");
    }
    let mut missing = Vec::new();
    for path in &subcommands {
        let out = ledgerctl().args(path).arg("--help").output().expect("run ledgerctl");
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains("\nExamples:\n") {
            missing.push(path.join(" "));
        }
    }
    assert!(missing.is_empty(), "--help without an \"Examples:\" section: {missing:?}");
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in
        [("bash", "complete -F _ledgerctl"), ("zsh", "#compdef ledgerctl"), ("fish", "complete -c ledgerctl")]
    {
        let out = ledgerctl().args(["completions", shell]).output().expect("run ledgerctl");
        assert!(out.status.success(), "completions {shell}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "completions {shell} lacks {marker:?}");
        // The nested subcommands are in the script too.
        assert!(text.contains("rotate-token") && text.contains("claude-code"), "completions {shell}");
    }
    let out = ledgerctl().args(["completions", "tcsh"]).output().expect("run ledgerctl");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_cover_every_subcommand_with_its_examples() {
    let out = ledgerctl().arg("man").output().expect("run ledgerctl");
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH ledgerctl 1") && page.contains("Examples:"), "{page}");

    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man1");
    let out = ledgerctl().arg("man").arg("--out").arg(&out_dir).output().expect("run ledgerctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for path in all_subcommands() {
        let file = out_dir.join(format!("ledgerctl-{}.1", path.join("-")));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(".TH ledgerctl-") && text.contains("Examples:"), "{}", file.display());
    }
    assert!(out_dir.join("ledgerctl.1").exists());
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
