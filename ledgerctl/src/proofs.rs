//! `ledgerctl verify`, `checkpoint`, `prove` and the verifier key: checking the log, one entry's inclusion, or a saved state.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use ledger_client::verify::{self, Failure, LogWalk, Pinned};
use ledger_client::{Client, default_data_dir};
use ledger_proto::note::NoteVerifier;
use ledger_proto::pb;
use tokio_stream::StreamExt;

use crate::print::{time_text, write_out};
use crate::{CheckFailed, KeyArg};

/// Finds the verifier key: --key, else next to the socket, else in the data dir.
pub(crate) fn load_key(socket: &Path, key: &KeyArg) -> anyhow::Result<NoteVerifier> {
    let candidates: Vec<PathBuf> = match &key.key {
        Some(k) => vec![k.clone()],
        None => {
            let mut c = Vec::new();
            if let Some(dir) = socket.parent() {
                c.push(dir.join("verifier.vkey"));
            }
            c.push(default_data_dir().join("verifier.vkey"));
            c
        }
    };
    for path in &candidates {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                return NoteVerifier::parse(&text)
                    .with_context(|| format!("{} is not a verifier key", path.display()));
            }
            Err(e) if key.key.is_some() => return Err(anyhow!("cannot read key {}: {e}", path.display())),
            Err(_) => {}
        }
    }
    bail!(
        "no verifier key found (looked for {}); pass --key FILE with the ledger's verifier.vkey",
        display_list(&candidates)
    )
}

pub(crate) fn display_list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

pub(crate) fn read_pinned(path: &Path, verifier: &NoteVerifier) -> anyhow::Result<Pinned> {
    let note = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let checkpoint = verify::checkpoint(verifier, &note)
        .map_err(|f| CheckFailed(format!("pinned checkpoint {}: {f}", path.display())))?;
    Ok(Pinned { name: path.display().to_string(), checkpoint })
}

pub(crate) async fn prove(
    socket: &Path,
    seq: u64,
    pinned: Option<&Path>,
    key: &KeyArg,
) -> anyhow::Result<()> {
    let verifier = load_key(socket, key)?;
    let mut client = Client::connect(socket).await?;
    let cp = match pinned {
        Some(path) => read_pinned(path, &verifier)?.checkpoint,
        None => {
            let latest = client.checkpoint(false).await?;
            verify::checkpoint(&verifier, &latest.note).map_err(|f| CheckFailed(f.to_string()))?
        }
    };
    let proof = client.prove(seq, cp.size).await?;
    let entry = verify::inclusion(&proof, &cp).map_err(|f| CheckFailed(f.to_string()))?;
    write_out(
        format!(
            "ok: entry {seq} is leaf {} of the tree of {} entries with root {} (signed by {})\nleaf hash {}, proof of {} hashes\nentry: {} {} {} {}\n",
            seq,
            cp.size,
            verify::hex(&cp.root),
            verifier.name(),
            verify::hex(&proof.leaf_hash),
            proof.path.len(),
            time_text(entry.time_unix_nanos),
            pb::Kind::name_of(entry.kind),
            entry.agent,
            entry.tool,
        )
        .as_bytes(),
    )
}

pub(crate) async fn verify_log(socket: &Path, pinned_files: &[PathBuf], key: &KeyArg) -> anyhow::Result<()> {
    let verifier = load_key(socket, key)?;
    let pinned =
        pinned_files.iter().map(|p| read_pinned(p, &verifier)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut client = Client::connect(socket).await?;
    let latest = client.checkpoint(false).await?;
    let cp = verify::checkpoint(&verifier, &latest.note)
        .map_err(|f| CheckFailed(format!("latest checkpoint: {f}")))?;
    let fail = |f: Failure| anyhow::Error::new(CheckFailed(f.to_string()));

    // Consistency proofs first: they are cheap and name the checkpoint that fails.
    for pin in &pinned {
        if pin.checkpoint.size > cp.size {
            return Err(fail(Failure::PinnedBeyond {
                name: pin.name.clone(),
                pinned: pin.checkpoint.size,
                size: cp.size,
            }));
        }
        let proof = client.consistency(pin.checkpoint.size, cp.size).await?;
        verify::consistency(pin, &cp, &proof).map_err(fail)?;
    }

    let mut walk = LogWalk::new(pinned).map_err(fail)?;
    let mut stream = client.entries(0, cp.size, false).await?;
    while let Some(item) = stream.next().await {
        walk.push(&item?).map_err(fail)?;
    }
    let size = walk.size();
    walk.finish(&cp).map_err(fail)?;
    write_out(
        format!(
            "ok: {size} entries recomputed; root {} matches the checkpoint signed by {}; {} pinned checkpoint(s) consistent\n",
            verify::hex(&cp.root),
            verifier.name(),
            pinned_files.len()
        )
        .as_bytes(),
    )
}

pub(crate) async fn verify_state(
    socket: &Path,
    state: PathBuf,
    key: &KeyArg,
    full: bool,
    max_age: Option<&str>,
) -> anyhow::Result<()> {
    use ledger_client::state;
    let max_age = match max_age {
        Some(text) => {
            let d: jiff::SignedDuration =
                text.parse().map_err(|e| anyhow!("--max-age {text:?}: {e}; write e.g. \"15m\" or \"1h\""))?;
            Some(std::time::Duration::try_from(d).map_err(|_| anyhow!("--max-age cannot be negative"))?)
        }
        None => None,
    };
    let pinned = state::load(&state)?;
    // The key matters only on first use; afterwards the state file's key (which follows
    // rotations) is the one that counts.
    let key = match &pinned {
        None => Some(load_key(socket, key)?),
        Some(s) => {
            if let Some(path) = &key.key
                && let Ok(text) = std::fs::read_to_string(path)
                && text.trim() != s.key
            {
                eprintln!(
                    "ledgerctl: note: {} differs from the key pinned in {} (which follows key rotations); using the pinned key",
                    path.display(),
                    state.display()
                );
            }
            None
        }
    };
    let opts = state::Options { state, key, full, max_age };
    let report = state::check(socket, &opts).await?;
    write_out(format!("{}\n", report.line).as_bytes())
}
