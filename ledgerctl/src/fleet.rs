//! `ledgerctl fleet …`: runs `ledger-ship fleet …` (docs/FLEET.md).
//!
//! Fleet verification reads Parquet from S3-compatible storage; those libraries (an S3
//! client with TLS, Arrow and Parquet) live in the `ledger-ship` crate, and ledgerctl does
//! not link them: ledgerctl and the shims run on every agent host, where they have no
//! business. Like git's external commands, ledgerctl finds
//! `ledger-ship` next to its own executable (where both are installed), else on `PATH`,
//! and hands it the arguments; its exit code is passed through.

use std::ffi::OsString;
use std::path::PathBuf;

/// The `ledger-ship` binary ledgerctl runs.
pub(crate) fn ledger_ship() -> PathBuf {
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join("ledger-ship")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("ledger-ship"),
    }
}

/// Runs `ledger-ship fleet COMMAND ARGS…`; returns its exit code (2 if it cannot be run).
pub(crate) fn run(command: &str, args: &[OsString]) -> u8 {
    let program = ledger_ship();
    match std::process::Command::new(&program).arg("fleet").arg(command).args(args).status() {
        Ok(status) => status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(2),
        Err(e) => {
            eprintln!(
                "ledgerctl: error: cannot run {} ({e}): `ledgerctl fleet` needs the ledger-ship binary; install it next to ledgerctl or on PATH",
                program.display()
            );
            2
        }
    }
}
