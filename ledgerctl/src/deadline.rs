//! `--timeout`: the deadline of every call to ledgerd, per command unless given.

use std::time::Duration;

use anyhow::{anyhow, bail};

use crate::{Cli, Command, PolicyCommand};

/// Commands whose daemon side may legitimately work for long (compiling a large policy,
/// signing a bundle's manifest after export) get this much by default.
const LONG: Duration = Duration::from_secs(60);

/// The deadline of every call: `--timeout` (or `$LEDGER_TIMEOUT`), else the command's
/// default.
pub(crate) fn timeout(cli: &Cli) -> anyhow::Result<Duration> {
    let Some(text) = &cli.timeout else {
        let long = matches!(cli.command, Command::Policy(PolicyCommand::Set { .. }) | Command::Evidence(_));
        return Ok(if long { LONG } else { ledger_client::DEFAULT_TIMEOUT });
    };
    let d: jiff::SignedDuration =
        text.parse().map_err(|e| anyhow!("--timeout {text:?}: {e}; write e.g. \"30s\" or \"2m\""))?;
    let d = Duration::try_from(d).map_err(|_| anyhow!("--timeout cannot be negative"))?;
    if d.is_zero() {
        bail!("--timeout must be more than 0s");
    }
    Ok(d)
}
