//! `ledgerctl evidence` and `ledgerctl verify-bundle`: build and check an evidence bundle.

use std::path::Path;

use anyhow::{anyhow, bail};
use ledger_client::Client;
use ledger_query::terminal;

use crate::agents::parse_at;
use crate::{CheckFailed, EvidenceArgs, VerifyBundleArgs};

pub(crate) async fn evidence(socket: &Path, args: &EvidenceArgs) -> anyhow::Result<()> {
    use ledger_client::evidence::{export, verify};
    let opts = export::ExportOptions {
        from_unix_nanos: parse_at(&args.from)?,
        to_unix_nanos: parse_at(&args.to)?,
        agents: args.agents.clone(),
        out: args.out.clone(),
        progress: true,
    };
    let mut client = Client::connect(socket).await?;
    let done = export::export(&mut client, &opts).await?;
    // What was written must check out, with the key the daemon just named.
    verify::verify_bundle(&args.out, None)
        .map_err(|e| anyhow!("the bundle just written does not verify: {e}"))?;
    eprintln!(
        "wrote {}: entries {}..={} ({} rows in events.csv), recorded as entry {}, checkpoint size {}",
        args.out.display(),
        done.first_seq,
        done.last_seq,
        done.events,
        done.export_seq,
        done.tree_size
    );
    Ok(())
}

pub(crate) fn verify_bundle(args: &VerifyBundleArgs) -> anyhow::Result<()> {
    use ledger_client::evidence::verify::{self, BundleError, KeySource};
    match verify::verify_bundle(&args.dir, args.key.as_deref()) {
        Ok(report) => {
            if report.key == KeySource::Bundle {
                eprintln!(
                    "WARNING: checked against the bundle's own verifier.vkey, NOT against a key obtained out of band: this only shows the bundle is consistent with itself; pass --key FILE with the ledger's key"
                );
            }
            println!(
                "ok: {} files, checkpoint {} size {}, entries {}..={} complete and in the tree, {} events.csv rows equal their leaves, export recorded as entry {}",
                report.files,
                terminal::line(&report.origin),
                report.tree_size,
                report.first_seq,
                report.last_seq,
                report.events_rows,
                report.export_seq
            );
            Ok(())
        }
        Err(BundleError::Usage(message)) => bail!("{message}"),
        Err(e @ BundleError::Failed { .. }) => Err(CheckFailed(e.to_string()).into()),
    }
}
