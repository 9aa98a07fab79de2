//! `ledgerctl completions` and `ledgerctl man`: shell completions and the man page, generated from the flags.

use std::process::ExitCode;

use anyhow::Context;

use crate::print::write_out;
use crate::{Cli, Command, CompletionShell, is_broken_pipe};

/// `completions` and `man`: generated from the clap definitions above, no daemon needed.
pub(crate) fn generated(command: Command) -> ExitCode {
    use clap::CommandFactory;
    let result = match command {
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ledgerctl", &mut out);
            write_out(&out)
        }
        Command::Man { out: Some(dir) } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .with_context(|| format!("cannot write man pages into {}", dir.display())),
        Command::Man { out: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(anyhow::Error::from)
                .and_then(|()| write_out(&out))
        }
        _ => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledgerctl: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
