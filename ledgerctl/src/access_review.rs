//! `ledgerctl access-review`: who holds which role, as the daemon sees it.

use std::path::Path;

use ledger_client::Client;
use ledger_proto::pb;

use crate::agents::at_nanos;
use crate::policy::short;
use crate::print::{or_dash, print_rows, time_text};
use crate::{Format, NoRows};

pub(crate) async fn access_review(socket: &Path, at: Option<&str>, format: Format) -> anyhow::Result<()> {
    let at_unix_nanos = at_nanos(at)?;
    let mut client = Client::connect(socket).await?;
    let review =
        client.admin().get_access_review(pb::AccessReviewRequest { at_unix_nanos }).await?.into_inner();
    if review.rows.is_empty() {
        eprintln!("no agents were registered at {}", time_text(review.at_unix_nanos));
        return Err(NoRows.into());
    }
    let columns = ["AGENT", "OWNER", "POLICY", "VERSION", "HASH", "ALLOWS", "DENIES", "DEFAULT"];
    let rows: Vec<Vec<String>> = review
        .rows
        .iter()
        .map(|r| {
            let a = r.agent.clone().unwrap_or_default();
            let with = |prefix: &str| {
                let items: Vec<&str> = r.rules.iter().filter_map(|x| x.strip_prefix(prefix)).collect();
                if items.is_empty() { "-".to_string() } else { items.join("; ") }
            };
            vec![
                a.name,
                or_dash(&a.owner),
                match r.policy_agent.as_str() {
                    "" => "none".to_string(),
                    "*" => "* (default)".to_string(),
                    own => own.to_string(),
                },
                if r.policy_version == 0 { "-".into() } else { format!("v{}", r.policy_version) },
                if r.policy_hash.is_empty() { "-".into() } else { short(&r.policy_hash) },
                with("allow "),
                with("deny "),
                with("default "),
            ]
        })
        .collect();
    if format == Format::Table {
        eprintln!("access review at {}", time_text(review.at_unix_nanos));
    }
    print_rows(format, &columns, &rows)
}
