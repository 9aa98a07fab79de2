//! `ledgerctl status`: the daemon's health; exit 1 when its writer has stopped.

use std::path::Path;

use ledger_client::Client;

use crate::print::write_out;
use crate::{CheckFailed, StatusFormat};

pub(crate) async fn status(socket: &Path, format: StatusFormat) -> anyhow::Result<()> {
    let status = Client::connect(socket).await?.status().await?;
    match format {
        StatusFormat::Table => write_out(ledger_client::status::table(&status).as_bytes())?,
        StatusFormat::Json => write_out(
            format!("{}\n", serde_json::to_string_pretty(&ledger_client::status::json(&status))?).as_bytes(),
        )?,
    }
    // Monitoring reads the exit status: a daemon that cannot append is not healthy.
    if !status.writer_error.is_empty() {
        return Err(CheckFailed(format!("ledgerd's writer has stopped: {}", status.writer_error)).into());
    }
    Ok(())
}
