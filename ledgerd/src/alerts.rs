//! Alerts: committed entries at or above `[alerts] min_severity` are appended as JSON
//! lines to a file and/or handed to a command, one process per alert with the entry's
//! JSON on its stdin.
//!
//! Alerts run on a thread of their own, fed by the [`Feed`] like any watcher: never on
//! the write path. A slow command makes the alerts fall behind, never the appends; what
//! they miss is counted in the daemon's log. A failing target is logged with what to do,
//! and the next alert tries again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ledger_proto::wire::EntryRenderer;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::scoring::watch::{Feed, Subscription};

/// How long an alert command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[alerts]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Entries with at least this severity (1–10) are alerted.
    pub min_severity: u32,
    /// A program and its arguments, run once per alert with the entry as one JSON line on
    /// stdin (no shell: `["sh", "-c", "..."]` for one). Empty: no command.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A file the alerts are appended to, one JSON object per line (created 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { min_severity: 8, command: Vec::new(), file: None }
    }
}

impl AlertsConfig {
    /// Checks the values; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=crate::scoring::scorer::MAX_SEVERITY).contains(&self.min_severity) {
            return Err(format!("min_severity = {} is not a severity; use 1 to 10", self.min_severity));
        }
        if self.command.first().is_some_and(|p| p.is_empty()) {
            return Err(
                "command starts with an empty program name; write command = [\"/path/to/prog\", \"arg\"]"
                    .into(),
            );
        }
        if let Some(file) = &self.file
            && file.as_os_str().is_empty()
        {
            return Err("file is empty; name a file such as \"/var/log/ledgerd/alerts.jsonl\"".into());
        }
        Ok(())
    }

    /// Whether any target is set.
    pub fn any(&self) -> bool {
        !self.command.is_empty() || self.file.is_some()
    }
}

/// Starts the alerts thread when a target is configured. It ends when the feed closes
/// (every sender gone: the writer has stopped and the server is down).
pub fn spawn(config: &AlertsConfig, feed: &Feed) -> Option<thread::JoinHandle<()>> {
    if !config.any() {
        return None;
    }
    let subscription = feed.subscribe(config.min_severity);
    let config = config.clone();
    let spawned =
        thread::Builder::new().name("ledger-alerts".into()).spawn(move || run(&config, subscription));
    match spawned {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the alerts thread; no alerts will be sent. Check the process limits (ulimit -u) and restart ledgerd");
            None
        }
    }
}

fn run(config: &AlertsConfig, mut subscription: Subscription) {
    let render = EntryRenderer::default();
    loop {
        let entry = match subscription.blocking_recv() {
            Ok(entry) => entry,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "alerts fell behind and skipped {n} committed entries (a slow alert command?); find them with `ledgerctl query 'severity >= {}'`",
                    config.min_severity
                );
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if entry.severity < config.min_severity {
            continue;
        }
        let line = render.json_line(&entry);
        if let Some(path) = &config.file
            && let Err(e) = append_line(path, &line)
        {
            tracing::error!(
                seq = entry.seq,
                file = %path.display(),
                error = %e,
                "cannot append an alert to [alerts] file; check that its directory exists and ledgerd's user may write there"
            );
        }
        if !config.command.is_empty()
            && let Err(e) = run_command(&config.command, &line)
        {
            tracing::error!(
                seq = entry.seq,
                command = ?config.command,
                error = %e,
                "alert command failed; run it by hand with an entry on stdin to see why"
            );
        }
    }
}

/// Appends one line; the file is opened per alert so that it can be rotated (moved away)
/// at any time.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    file.write_all(line.as_bytes())
}

/// Runs the command with `line` on stdin and waits (at most [`COMMAND_TIMEOUT`]).
fn run_command(command: &[String], line: &str) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no program")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    // Written from a thread of its own (not joined): a command that does not read its
    // stdin must not block the alerts past the timeout; killing it ends the write.
    if let Some(mut stdin) = child.stdin.take() {
        let line = line.to_string();
        thread::spawn(move || {
            let _ = stdin.write_all(line.as_bytes());
        });
    }
    wait_or_kill(&mut child, program)
}

/// Waits for the command at most [`COMMAND_TIMEOUT`], then kills it.
fn wait_or_kill(child: &mut std::process::Child, program: &str) -> Result<(), String> {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(format!("{program} exited with {status}")),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{program} ran longer than {}s and was killed",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
            None => thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_proto::pb;
    use std::sync::Arc;

    #[test]
    fn the_section_is_checked() {
        assert!(AlertsConfig::default().validate().is_ok());
        assert!(!AlertsConfig::default().any());
        let bad = AlertsConfig { min_severity: 11, ..AlertsConfig::default() };
        assert!(bad.validate().expect_err("11 is no severity").contains("1 to 10"));
        let bad = AlertsConfig { command: vec![String::new()], ..AlertsConfig::default() };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn entries_at_or_above_the_threshold_reach_the_file_and_the_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("alerts.jsonl");
        let copied = dir.path().join("from-command.jsonl");
        let config = AlertsConfig {
            min_severity: 8,
            command: vec!["sh".into(), "-c".into(), format!("cat >> {}", copied.display())],
            file: Some(file.clone()),
        };
        let feed = Feed::new();
        let handle = spawn(&config, &feed).expect("a target is set");
        let entries = [(0, 3), (1, 8), (2, 10), (3, 7)]
            .map(|(seq, severity)| Arc::new(pb::Entry { seq, severity, ..Default::default() }));
        feed.publish(Some(entries.to_vec()));
        drop(feed);
        handle.join().expect("the alerts thread ends when the feed closes");
        for path in [&file, &copied] {
            let text = std::fs::read_to_string(path).expect("alerts written");
            let seqs: Vec<u64> = text
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).expect("JSON")["seq"].as_u64().expect("seq")
                })
                .collect();
            assert_eq!(seqs, [1, 2], "{}", path.display());
        }
    }
}
