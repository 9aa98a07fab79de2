//! `ledgerctl status`: the daemon's health.

use std::path::Path;

use ledger_client::Client;

use crate::StatusFormat;
use crate::print::write_out;

pub(crate) async fn status(socket: &Path, format: StatusFormat) -> anyhow::Result<()> {
    let status = Client::connect(socket).await?.status().await?;
    match format {
        StatusFormat::Table => write_out(ledger_client::status::table(&status).as_bytes()),
        StatusFormat::Json => write_out(
            format!("{}\n", serde_json::to_string_pretty(&ledger_client::status::json(&status))?).as_bytes(),
        ),
    }
}
