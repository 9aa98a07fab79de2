//! Periodic verification against a checkpoint kept outside the ledger:
//! `ledgerctl verify --state FILE`.
//!
//! FILE holds the last checkpoint this verifier trusted and the verifier key it pinned.
//! Each run fetches the latest checkpoint, checks its signature against the pinned key
//! (following a `key_rotated` entry signed by that key, if there is one), checks that the
//! log grew consistently from the trusted checkpoint (and with `full`, every leaf), and
//! only then replaces FILE atomically. Everything else is an [`Alarm`] with its own exit
//! code ([`Alarm::exit_code`]), and FILE is left as it was.
//!
//! Nothing here trusts the daemon: its answers are only believed once a signature by
//! the pinned key, and proofs from it, hold.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ledger_proto::merkle;
use ledger_proto::note::{Checkpoint, NoteError, NoteVerifier};
use ledger_proto::pb;
use ledger_proto::rotation::Rotation;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;

use crate::verify::{self, LogWalk, Pinned, hex};
use crate::{Client, ClientError};

/// The `format` of a state file this version writes and reads.
pub const FORMAT: &str = "ledgerctl-verify-state/1";

/// Exit codes of `verify --state` (also in `ledgerctl verify --help` and docs/DEPLOY.md).
pub mod exit {
    /// Every check held (also: first use, and a followed key rotation).
    pub const OK: u8 = 0;
    /// Another verification failure (a bad signature by the pinned key, a bad proof, a
    /// changed entry with `--full`).
    pub const FAILED: u8 = 1;
    /// An error that says nothing about the log: bad usage, unreadable state or key file,
    /// a refused call.
    pub const ERROR: u8 = 2;
    pub const ROLLBACK: u8 = 3;
    pub const FORK: u8 = 4;
    pub const KEY_CHANGED: u8 = 5;
    pub const STALE: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
}

/// The state file: JSON, replaced whole on every successful run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub format: String,
    /// The pinned verifier key (`name+id+base64`), updated only by a verified rotation.
    pub key: String,
    /// The trusted checkpoint, exactly as signed.
    pub note: String,
    /// For people reading the file; the note is what counts.
    pub size: u64,
    pub root: String,
    /// When this verifier trusted it (RFC 3339).
    pub trusted_at: String,
}

/// What a run found that must not pass quietly; FILE is not changed.
#[derive(Debug, thiserror::Error)]
pub enum Alarm {
    #[error(
        "ROLLBACK: the latest checkpoint covers {latest} entries, but one for {trusted} entries was trusted at {trusted_at}: entries were removed or an older copy of the data dir was restored"
    )]
    Rollback { trusted: u64, latest: u64, trusted_at: String },
    #[error(
        "FORK: the log at {latest} entries (root {latest_root}) does not extend the trusted checkpoint of {trusted} entries (root {trusted_root}): {why}; the log was rewritten"
    )]
    Fork { trusted: u64, trusted_root: String, latest: u64, latest_root: String, why: String },
    #[error(
        "KEY CHANGED: the latest checkpoint is not signed by the pinned key {pinned}, and no key_rotated entry signed by that key names the one that signed it ({why}); if the key was replaced on purpose, check with ledgerd's operators and start a new state file"
    )]
    KeyChanged { pinned: String, why: String },
    #[error(
        "STALE: the latest checkpoint ({size} entries) was signed {age} ago (over --max-age {max_age}) and the log has {head} entries, past it: ledgerd has stopped signing checkpoints; check its log"
    )]
    Stale { size: u64, head: u64, age: String, max_age: String },
    #[error("UNREACHABLE: {0}")]
    Unreachable(String),
    #[error("FAILED: {0}")]
    Failed(String),
    #[error("error: {0}")]
    Error(String),
}

impl Alarm {
    /// The exit code `ledgerctl` ends with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Alarm::Rollback { .. } => exit::ROLLBACK,
            Alarm::Fork { .. } => exit::FORK,
            Alarm::KeyChanged { .. } => exit::KEY_CHANGED,
            Alarm::Stale { .. } => exit::STALE,
            Alarm::Unreachable(_) => exit::UNREACHABLE,
            Alarm::Failed(_) => exit::FAILED,
            Alarm::Error(_) => exit::ERROR,
        }
    }
}

/// What to check.
#[derive(Clone, Debug)]
pub struct Options {
    pub state: PathBuf,
    /// The key to pin on first use (later runs use the key pinned in the state file).
    pub key: Option<NoteVerifier>,
    /// Also recompute every leaf and the root from the entries.
    pub full: bool,
    /// Alarm if the latest checkpoint is older than this while the log has grown past it.
    pub max_age: Option<Duration>,
}

/// What a successful run did: one line for cron or the journal.
#[derive(Debug)]
pub struct Report {
    pub line: String,
    pub state: State,
}

/// Loads the state file; `None` if there is none yet.
pub fn load(path: &Path) -> Result<Option<State>, Alarm> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Alarm::Error(format!("cannot read state file {}: {e}", path.display()))),
    };
    let damaged = |why: String| {
        Alarm::Error(format!(
            "state file {} is damaged ({why}); restore it from backup, or move it aside to trust the current log anew",
            path.display()
        ))
    };
    let state: State = serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
    if state.format != FORMAT {
        return Err(damaged(format!("format {:?}, this ledgerctl reads {FORMAT:?}", state.format)));
    }
    let key = NoteVerifier::parse(&state.key).map_err(|e| damaged(format!("key: {e}")))?;
    key.verify_checkpoint(&state.note)
        .map_err(|e| damaged(format!("its checkpoint does not verify: {e}")))?;
    Ok(Some(state))
}

/// Writes the state file atomically ([`crate::files::Pending`]: a fresh, exclusively
/// created temporary file beside it, synced, renamed over it, the directory synced), so
/// nothing planted in the directory is followed or overwritten.
pub fn save(path: &Path, state: &State) -> Result<(), Alarm> {
    use std::io::Write;
    let err = |what: &str, e: std::io::Error| {
        Alarm::Error(format!("checks passed, but cannot {what} the state file {}: {e}", path.display()))
    };
    let mut text = serde_json::to_string_pretty(state).map_err(|e| Alarm::Error(e.to_string()))?;
    text.push('\n');
    let pending = crate::files::Pending::beside(path).map_err(|e| err("create", e))?;
    pending.file().and_then(|mut f| f.write_all(text.as_bytes())).map_err(|e| err("write", e))?;
    pending.commit().map_err(|e| err("replace", e))
}

fn unreachable(socket: &Path, e: &ClientError) -> Alarm {
    Alarm::Unreachable(format!("cannot reach ledgerd at {}: {e}", socket.display()))
}

/// A failed call: unreachable if the daemon went away, an error otherwise.
fn call_failed(socket: &Path, what: &str, e: ClientError) -> Alarm {
    match &e {
        ClientError::Connect { .. } | ClientError::Transport(_) | ClientError::Timeout { .. } => {
            unreachable(socket, &e)
        }
        ClientError::Rpc(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
            unreachable(socket, &e)
        }
        _ => Alarm::Error(format!("{what}: {e}")),
    }
}

/// The signing time a checkpoint carries in its `time` extension line.
pub fn checkpoint_time(cp: &Checkpoint) -> Option<jiff::Timestamp> {
    cp.extensions.iter().find_map(|l| l.strip_prefix("time ")).and_then(|t| t.parse().ok())
}

fn short_key(key: &NoteVerifier) -> String {
    format!("{}+{}", key.name(), hex(&key.key_id()))
}

/// One run of `verify --state` (see the module docs).
pub async fn check(socket: &Path, opts: &Options) -> Result<Report, Alarm> {
    let trusted = load(&opts.state)?;
    let mut key = match (&trusted, &opts.key) {
        (Some(state), _) => NoteVerifier::parse(&state.key).map_err(|e| Alarm::Error(e.to_string()))?,
        (None, Some(key)) => key.clone(),
        (None, None) => {
            return Err(Alarm::Error(
                "no state file yet and no key to pin: pass --key FILE with the ledger's verifier.vkey".into(),
            ));
        }
    };
    let trusted_cp = match &trusted {
        Some(state) => Some(key.verify_checkpoint(&state.note).map_err(|e| Alarm::Error(e.to_string()))?),
        None => None,
    };
    let mut client = Client::connect(socket).await.map_err(|e| unreachable(socket, &e))?;
    let latest =
        client.checkpoint(false).await.map_err(|e| call_failed(socket, "cannot fetch the checkpoint", e))?;

    // The signature: by the pinned key, or by a successor it named.
    let mut rotated = Vec::new();
    let cp = match key.verify_checkpoint(&latest.note) {
        Ok(cp) => cp,
        Err(NoteError::NoTrustedSignature { .. }) => {
            let pinned = short_key(&key);
            let body = unsigned_body(&latest.note)
                .map_err(|why| Alarm::KeyChanged { pinned: pinned.clone(), why })?;
            let found = follow_rotations(&mut client, socket, &key, &body, &latest.note).await?;
            match found {
                Ok((new_key, steps)) => {
                    rotated = steps;
                    key = new_key;
                    body
                }
                Err(why) => return Err(Alarm::KeyChanged { pinned, why }),
            }
        }
        Err(e) => return Err(Alarm::Failed(format!("the latest checkpoint's signature: {e}"))),
    };

    // The tree: the same as trusted, or grown from it.
    let mut grew_from = None;
    if let (Some(state), Some(old)) = (&trusted, &trusted_cp) {
        if cp.size < old.size {
            return Err(Alarm::Rollback {
                trusted: old.size,
                latest: cp.size,
                trusted_at: state.trusted_at.clone(),
            });
        }
        let fork = |why: String| Alarm::Fork {
            trusted: old.size,
            trusted_root: hex(&old.root),
            latest: cp.size,
            latest_root: hex(&cp.root),
            why,
        };
        if cp.size == old.size {
            if cp.root != old.root {
                return Err(fork("same size, different root".into()));
            }
        } else if old.size > 0 {
            let proof = client
                .consistency(old.size, cp.size)
                .await
                .map_err(|e| call_failed(socket, "cannot fetch the consistency proof", e))?;
            let path = merkle::hashes_from_bytes(&proof.path).map_err(|e| Alarm::Failed(e.to_string()))?;
            merkle::verify_consistency(old.size, cp.size, &old.root, &cp.root, &path)
                .map_err(|e| fork(format!("the consistency proof does not verify ({e})")))?;
        }
        grew_from = Some(old.size);
    }

    if opts.full {
        let pins = trusted_cp
            .iter()
            .map(|c| Pinned { name: opts.state.display().to_string(), checkpoint: c.clone() })
            .collect();
        let mut walk = LogWalk::new(pins).map_err(|f| Alarm::Failed(f.to_string()))?;
        let mut stream = client
            .entries(0, cp.size, false)
            .await
            .map_err(|e| call_failed(socket, "cannot read the entries", e))?;
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| call_failed(socket, "reading the entries", e.into()))?;
            walk.push(&item).map_err(|f| Alarm::Failed(f.to_string()))?;
        }
        walk.finish(&cp).map_err(|f| Alarm::Failed(f.to_string()))?;
    }

    let now = jiff::Timestamp::now();
    let age = checkpoint_time(&cp).map(|t| now.duration_since(t));
    if let (Some(max), Some(age)) = (opts.max_age, age)
        && age.as_secs() > 0
        && Duration::try_from(age).is_ok_and(|a| a > max)
    {
        let head = client.head().await.map_err(|e| call_failed(socket, "cannot fetch the head", e))?;
        if head.size > cp.size {
            return Err(Alarm::Stale {
                size: cp.size,
                head: head.size,
                age: human(Duration::try_from(age).unwrap_or_default()),
                max_age: human(max),
            });
        }
    }

    let state = State {
        format: FORMAT.into(),
        key: key.to_vkey_string(),
        note: latest.note.clone(),
        size: cp.size,
        root: hex(&cp.root),
        trusted_at: now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    save(&opts.state, &state)?;

    let age_text = age.and_then(|a| Duration::try_from(a).ok()).map(human).unwrap_or_else(|| "?".into());
    let mut line = match grew_from {
        None => format!(
            "ok: trusted on first use: checkpoint of {} entries, root {}, signed by {}, {age_text} old; saved to {}",
            cp.size,
            hex(&cp.root),
            short_key(&key),
            opts.state.display()
        ),
        Some(old) if old == cp.size => format!(
            "ok: no new checkpoint since the trusted one ({} entries, root {}), signed {age_text} ago by {}",
            cp.size,
            hex(&cp.root),
            short_key(&key)
        ),
        Some(old) => format!(
            "ok: the log grew consistently from {old} to {} entries; root {} signed {age_text} ago by {}",
            cp.size,
            hex(&cp.root),
            short_key(&key)
        ),
    };
    if opts.full {
        line.push_str(&format!("; all {} entries recomputed", cp.size));
    }
    for step in &rotated {
        line.push_str(&format!("; {step}"));
    }
    Ok(Report { line, state })
}

/// The checkpoint a note carries, before its signature is known to be good (only used
/// to look for the rotation that would make it good, or to learn a log's origin and size).
pub fn unsigned_body(note: &str) -> Result<Checkpoint, String> {
    let split = note.rfind("\n\n").ok_or("the checkpoint note has no signatures")?;
    Checkpoint::parse_body(&note[..split + 1]).map_err(|e| format!("the checkpoint note is malformed: {e}"))
}

/// Follows `key_rotated` entries from `key` to the key that signed `note`: each must be
/// in the tree of `cp` (an inclusion proof against its root) and carry a statement signed
/// by the key before it. `Ok(Err(why))` if there is no such chain.
async fn follow_rotations(
    client: &mut Client,
    socket: &Path,
    key: &NoteVerifier,
    cp: &Checkpoint,
    note: &str,
) -> Result<Result<(NoteVerifier, Vec<String>), String>, Alarm> {
    let mut seqs = Vec::new();
    let mut rows = match client.query("kind = key_rotated | fields seq", "").await {
        Ok(rows) => rows,
        Err(e) => return Err(call_failed(socket, "cannot look for key_rotated entries", e)),
    };
    while let Some(chunk) = rows.next_rows().await.map_err(|e| call_failed(socket, "reading the query", e))? {
        for row in chunk {
            if let Some(ledger_query::Value::Int(seq)) = row.first()
                && let Ok(seq) = u64::try_from(*seq)
                && seq < cp.size
            {
                seqs.push(seq);
            }
        }
    }
    if seqs.is_empty() {
        return Ok(Err("the log has no key_rotated entry".into()));
    }
    let mut current = key.clone();
    let mut steps = Vec::new();
    // Each step must move to a key not seen yet, so this ends.
    for _ in 0..seqs.len() {
        if current.verify_checkpoint(note).is_ok() {
            return Ok(Ok((current, steps)));
        }
        let mut next = None;
        for &seq in &seqs {
            let proof = client
                .prove(seq, cp.size)
                .await
                .map_err(|e| call_failed(socket, "cannot fetch an inclusion proof", e))?;
            let Ok(entry) = verify::inclusion(&proof, cp) else { continue };
            if let Some(new_key) = rotation_successor(&current, &entry) {
                next = Some((seq, new_key));
                break;
            }
        }
        let Some((seq, new_key)) = next else { break };
        steps.push(format!(
            "followed a key rotation at entry {seq} from {} to {} (named by the old key, entry proven in the log)",
            short_key(&current),
            short_key(&new_key)
        ));
        current = new_key;
    }
    if current.verify_checkpoint(note).is_ok() {
        return Ok(Ok((current, steps)));
    }
    Ok(Err("no key_rotated entry in the log, signed by the pinned key, names the signing key".into()))
}

/// The key a `key_rotated` entry names as the successor of `current`, if the entry is one
/// and its statement is signed by `current` (the caller has proven the entry is in the
/// log). Used by `verify --state` and by fleet verification of shipped logs.
pub fn rotation_successor(current: &NoteVerifier, entry: &pb::Entry) -> Option<NoteVerifier> {
    if entry.kind != pb::Kind::KeyRotated as i32 {
        return None;
    }
    let details = serde_json::from_str::<serde_json::Value>(&entry.details).ok()?;
    let statement = details.get("endorsement")?.as_str()?;
    let rotation = Rotation::verify(current, statement).ok()?;
    let new_key = NoteVerifier::parse(&rotation.new_key).ok()?;
    (new_key.to_vkey_string() != current.to_vkey_string()).then_some(new_key)
}

/// "3h 2m", "45s".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}
