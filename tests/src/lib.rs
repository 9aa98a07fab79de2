//! Helpers for the end-to-end tests: start a real `ledgerd` on a temporary data dir, run
//! `ledgerctl` against it, stop or kill it.
//!
//! The binaries are the ones cargo built for this workspace (`target/<profile>/`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ledger_client::Client;

pub mod accounts;
pub mod fuzz;
pub mod s3;

/// The directory holding this profile's binaries (`target/debug` for `cargo test`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// Path of a workspace binary.
///
/// `cargo test --workspace` builds them: `ledgerd` and `ledger-client` each have an
/// integration test, and cargo builds a package's binaries for those.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it)",
        path.display()
    );
    path
}

/// A running daemon on its own data dir.
pub struct Daemon {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    /// The `ready` line it printed.
    pub ready: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts a daemon on a fresh temporary data dir.
    pub fn start() -> Daemon {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut d = Daemon::start_in(&data_dir).unwrap_or_else(|e| panic!("ledgerd did not start: {e}"));
        d._tmp = Some(tmp);
        d
    }

    /// Starts a daemon on `data_dir` (which may hold an existing ledger).
    pub fn start_in(data_dir: &Path) -> Result<Daemon, String> {
        Daemon::start_with(data_dir, &[])
    }

    /// Starts a daemon with extra flags; `Err` holds its stderr if it exits instead.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Result<Daemon, String> {
        Daemon::start_env(data_dir, extra, &[])
    }

    /// Starts a daemon with extra flags and environment variables (e.g. a test-only
    /// `LEDGERD_FAILPOINT`); `Err` holds its stderr if it exits instead.
    pub fn start_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Daemon, String> {
        let mut child = Command::new(bin("ledgerd"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("LEDGERD_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn ledgerd: {e}"))?;
        match ready_line(&mut child)? {
            Some((line, socket)) => Ok(Daemon {
                child: Some(child),
                data_dir: data_dir.to_path_buf(),
                socket,
                ready: line,
                _tmp: None,
            }),
            _ => {
                let out = child.wait_with_output().map_err(|e| e.to_string())?;
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        }
    }

    /// The tree size from the ready line.
    pub fn ready_size(&self) -> u64 {
        self.ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("size="))
            .and_then(|s| s.parse().ok())
            .expect("ready line has size=")
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(&self.socket).await.expect("connect to ledgerd")
    }

    /// Runs `ledgerctl --socket <socket> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_stdin(args, None)
    }

    /// Runs `ledgerctl` with `input` on stdin.
    pub fn ctl_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        ctl(&self.socket, args, input)
    }

    /// Stops with SIGTERM and waits; returns the daemon's exit status success.
    pub fn stop(mut self) -> bool {
        self.signal("TERM");
        self.wait()
    }

    /// Kills with SIGKILL (no chance to clean up) and waits.
    pub fn kill(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        self.wait();
    }

    /// Stops the process where it stands (SIGSTOP): it keeps its socket, and the kernel
    /// still accepts connections that nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused daemon run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
        }
    }

    /// Waits for the daemon to exit; on a failure or a hang, prints its stderr (the test
    /// harness shows it with the failing test).
    fn wait(&mut self) -> bool {
        use std::io::Read;
        let Some(mut child) = self.child.take() else { return false };
        let deadline = Instant::now() + Duration::from_secs(30);
        let outcome = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ok = outcome.is_some_and(|s| s.success());
        if !ok {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            eprintln!("ledgerd did not stop cleanly ({:?}); its stderr:\n{err}", outcome.map(|s| s.code()));
        }
        ok
    }

    /// Waits (up to 30 s) for the daemon to exit by itself (a failpoint); true if it did.
    pub fn wait_exit(mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Keeps the data dir after the daemon is gone (for restarts).
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a starting `ledgerd`'s first line from its piped stdout: the `ready` line and the
/// socket it names, or `None` when it printed no ready line (it exited).
pub fn ready_line(child: &mut std::process::Child) -> Result<Option<(String, PathBuf)>, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    match BufReader::new(stdout).lines().next() {
        Some(Ok(line)) if line.starts_with("ready ") => {
            let socket = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("socket="))
                .map(PathBuf::from)
                .ok_or("ready line without socket")?;
            Ok(Some((line, socket)))
        }
        _ => Ok(None),
    }
}

/// Runs `ledgerd --data-dir DATA --rotate-key` (the daemon stopped) and returns its output.
pub fn rotate_key(data_dir: &Path) -> Output {
    Command::new(bin("ledgerd"))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--rotate-key")
        .env("LEDGERD_LOG", "warn")
        .output()
        .expect("ledgerd --rotate-key")
}

/// Runs `ledgerctl --socket SOCKET ARGS` with optional stdin.
pub fn ctl(socket: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin("ledgerctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerctl");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("ledgerctl output")
}

/// Text of a command's stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Text of a command's stderr.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stdout of a command that must have succeeded (else a panic showing its exit code,
/// stdout and stderr).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}
