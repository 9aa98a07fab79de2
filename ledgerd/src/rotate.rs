//! Rotating the signing key, with the daemon stopped: `ledgerd --rotate-key`.
//!
//! The old key vouches for the new one inside the log itself, so a verifier that pinned
//! the old key can follow (docs/DEPLOY.md, "Rotate the signing key"):
//!
//! 1. the new key is written to `signing.key.next` (0600, synced);
//! 2. a `key_rotated` entry is appended whose details hold both verifier keys and a
//!    statement naming the new key, signed by the old one ([`ledger_proto::rotation`]);
//! 3. a checkpoint covering it is signed with the old key;
//! 4. a checkpoint of the same tree is signed with the new key;
//! 5. `signing.key` becomes `signing.key.retired-<key id>` (0600, kept), the new key
//!    becomes `signing.key`, and `verifier.vkey` is rewritten.
//!
//! A crash anywhere leaves a state [`resume`] settles at the next start: if the latest
//! stored checkpoint verifies with `signing.key.next`, step 5 is finished; otherwise the
//! rotation never took effect and `signing.key.next` is removed (a `key_rotated` entry
//! may then name a key that never signed anything; verifiers only follow a key that
//! signed the latest checkpoint).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use ledger_proto::note::{NoteSigner, NoteVerifier};
use ledger_proto::pb;
use ledger_proto::rotation::Rotation;

use crate::config::Config;
use crate::log::merkle::{Log, hex, now_nanos};
use crate::service::intake::Peer;
use crate::storage::datadir::DataDir;
use crate::storage::store::Store;

/// What a rotation did, for the message.
#[derive(Debug)]
pub struct Rotated {
    pub old_key: String,
    pub new_key: String,
    pub retired_file: String,
    /// The tree size after the `key_rotated` entry, signed by both keys.
    pub size: u64,
    pub seq: u64,
}

fn next_key(dir: &DataDir) -> std::path::PathBuf {
    dir.root.join("signing.key.next")
}

/// Rotates the signing key of the ledger in `config`'s data dir (see the module docs).
pub fn rotate_key(config: &Config) -> anyhow::Result<Rotated> {
    // As in the daemon: nothing it creates is readable by others unless it says so.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let dir = DataDir::prepare(&config.data_dir)?;
    resume(&dir, config.storage.cache_bytes)?;
    if !dir.signing_key().exists() {
        bail!(
            "{} has no signing key: there is nothing to rotate (a new ledger gets a key at its first start)",
            dir.root.display()
        );
    }
    let old = dir.signing_key_or_create(String::new)?;
    let store = Store::open(&dir.store(), config.storage.cache_bytes).map_err(|e| {
        anyhow::anyhow!("cannot open the store in {} ({e}); stop ledgerd first", dir.root.display())
    })?;
    let (mut log, _) = Log::open(store, old.clone())?;
    let new = NoteSigner::generate(old.name()).context("cannot make a new key")?;
    write_private(&next_key(&dir), &new.to_private_key_string())?;

    let rotation = Rotation {
        origin: old.name().to_string(),
        old_key: old.verifier().to_vkey_string(),
        new_key: new.verifier().to_vkey_string(),
        size: log.size(),
    };
    let details = serde_json::json!({
        "old_key": rotation.old_key,
        "new_key": rotation.new_key,
        "size": rotation.size,
        "endorsement": rotation.sign(&old).context("cannot sign the rotation statement")?,
    });
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let me = Peer {
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        pid: std::process::id(),
    };
    let entry = crate::service::intake::own_entry(pb::Kind::KeyRotated, &host, me, details);
    let now = now_nanos();
    let acks = log.append(vec![vec![entry]], now)?;
    let seq = acks.first().and_then(|g| g.first()).map_or(0, |a| a.seq);
    log.sign_checkpoint(true, now)?;
    log.set_signer(new.clone());
    // A later time than the old key's checkpoint: the store key is size ‖ time.
    let signed = log.sign_checkpoint(true, now_nanos().max(now + 1))?;
    let size = signed.checkpoint.size;
    drop(log);
    let retired = finish(&dir, &old)?;
    Ok(Rotated { old_key: rotation.old_key, new_key: rotation.new_key, retired_file: retired, size, seq })
}

/// Settles a rotation a crash interrupted (see the module docs). Called at every start
/// before the key is loaded; does nothing without `signing.key.next`.
pub fn resume(dir: &DataDir, cache_bytes: u64) -> anyhow::Result<()> {
    let next_path = next_key(dir);
    crate::storage::datadir::owned_if_present(&next_path)?;
    let text = match fs::read_to_string(&next_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("cannot read {}: {e}", next_path.display()),
    };
    let next = NoteSigner::from_private_key_string(text.trim())
        .with_context(|| format!("{} is not a signing key; move it aside", next_path.display()))?;
    let store = Store::open(&dir.store(), cache_bytes).map_err(|e| {
        anyhow::anyhow!("cannot open the store in {} ({e}); stop ledgerd first", dir.root.display())
    })?;
    let last = store.checkpoints.last()?.map(|(_, note)| String::from_utf8_lossy(&note).into_owned());
    drop(store);
    let took_effect = last.is_some_and(|note| next.verifier().verify(&note).is_ok());
    if took_effect {
        let old = match fs::read_to_string(dir.signing_key()) {
            Ok(text) => Some(
                NoteSigner::from_private_key_string(text.trim())
                    .with_context(|| format!("{} is not a signing key", dir.signing_key().display()))?,
            ),
            Err(_) => None,
        };
        match old {
            Some(old) => {
                finish(dir, &old)?;
            }
            None => {
                fs::rename(&next_path, dir.signing_key())?;
                sync_dir(&dir.root)?;
            }
        }
        tracing::warn!("finished a key rotation that was interrupted after its last checkpoint");
    } else {
        fs::remove_file(&next_path)?;
        sync_dir(&dir.root)?;
        tracing::warn!(
            "discarded a key rotation that was interrupted before it took effect; the old key stays. Run `ledgerd --rotate-key` again"
        );
    }
    Ok(())
}

/// Step 5: keeps the old key under a new name, puts the new one in place, rewrites
/// `verifier.vkey`. Returns the retired key's file name.
fn finish(dir: &DataDir, old: &NoteSigner) -> anyhow::Result<String> {
    let retired = format!("signing.key.retired-{}", hex(&old.verifier().key_id()));
    fs::rename(dir.signing_key(), dir.root.join(&retired))
        .with_context(|| format!("cannot keep the old key as {retired}"))?;
    fs::rename(next_key(dir), dir.signing_key()).context("cannot put the new key in place")?;
    sync_dir(&dir.root)?;
    // Rewrites verifier.vkey for the key now in place.
    dir.signing_key_or_create(String::new)?;
    Ok(retired)
}

/// The public halves of the keys kept by earlier rotations (`signing.key.retired-*`),
/// so checkpoints signed before a rotation can still be served. Unreadable files are
/// skipped with a warning.
pub fn retired_verifiers(dir: &DataDir) -> Vec<NoteVerifier> {
    let Ok(items) = fs::read_dir(&dir.root) else { return Vec::new() };
    let mut keys = Vec::new();
    for item in items.flatten() {
        if !item.file_name().to_string_lossy().starts_with("signing.key.retired-") {
            continue;
        }
        let path = item.path();
        match fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| NoteSigner::from_private_key_string(text.trim()).map_err(|e| e.to_string()))
        {
            Ok(signer) => keys.push(signer.verifier()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a retired key; checkpoints it signed cannot be served by size")
            }
        }
    }
    keys
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger with a few entries and a checkpoint, as a stopped daemon leaves it.
    fn ledger(root: &Path) -> Config {
        let config = Config { data_dir: root.join("data"), ..Config::default() };
        let dir = DataDir::prepare(&config.data_dir).expect("data dir");
        let signer = dir.signing_key_or_create(|| "test/ledgerd/00000001".into()).expect("key");
        let store = Store::open(&dir.store(), 8 << 20).expect("store");
        let (mut log, _) = Log::open(store, signer).expect("log");
        let entry = pb::Entry {
            kind: pb::Kind::Decision as i32,
            agent: "a".into(),
            tool: "t".into(),
            decision: 1,
            ..Default::default()
        };
        log.append(vec![vec![entry]], 1_000).expect("append");
        log.sign_checkpoint(false, 1_000).expect("checkpoint");
        config
    }

    fn key_in(dir: &DataDir) -> NoteSigner {
        let text = fs::read_to_string(dir.signing_key()).expect("signing.key");
        NoteSigner::from_private_key_string(text.trim()).expect("key")
    }

    #[test]
    fn the_old_key_names_the_new_one_in_the_log_and_the_ledger_opens_with_the_new_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = ledger(tmp.path());
        let dir = DataDir { root: config.data_dir.clone() };
        let old = key_in(&dir);
        let rotated = rotate_key(&config).expect("rotate");
        let new = key_in(&dir);
        assert_eq!(new.name(), old.name(), "the origin stays");
        assert_eq!(rotated.new_key, new.verifier().to_vkey_string());
        assert_eq!(fs::read_to_string(dir.verifier_key()).expect("vkey").trim(), rotated.new_key);
        assert!(dir.root.join(&rotated.retired_file).exists());

        let store = Store::open(&dir.store(), 8 << 20).expect("store");
        let entry = store.entry(rotated.seq).expect("read").expect("entry");
        assert_eq!(entry.kind, pb::Kind::KeyRotated as i32);
        let details: serde_json::Value = serde_json::from_str(&entry.details).expect("json");
        let statement = details["endorsement"].as_str().expect("endorsement");
        let said = Rotation::verify(&old.verifier(), statement).expect("signed by the old key");
        assert_eq!(said.new_key, rotated.new_key);
        // Both keys signed the tree holding the entry; the newest checkpoint is the new key's.
        let notes: Vec<String> = store
            .checkpoints
            .iter()
            .map(|i| String::from_utf8(i.expect("read").1.to_vec()).expect("utf-8"))
            .collect();
        let size = rotated.size;
        assert!(notes.iter().any(|n| old.verifier().verify_checkpoint(n).is_ok_and(|c| c.size == size)));
        assert!(new.verifier().verify_checkpoint(notes.last().expect("last")).is_ok());
        let (log, _) = Log::open(store, new).expect("opens with the new key");
        assert_eq!(log.size(), size);
    }

    #[test]
    fn an_interrupted_rotation_is_finished_or_discarded_at_the_next_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = ledger(tmp.path());
        let dir = DataDir { root: config.data_dir.clone() };

        // Before it took effect: a new key waits, no checkpoint by it. Discarded.
        let old = key_in(&dir);
        let stray = NoteSigner::generate(old.name()).expect("key");
        write_private(&next_key(&dir), &stray.to_private_key_string()).expect("next");
        resume(&dir, 8 << 20).expect("resume");
        assert!(!next_key(&dir).exists());
        assert_eq!(key_in(&dir).to_private_key_string(), old.to_private_key_string());

        // After the new key signed, before the files moved: finished.
        let rotated = rotate_key(&config).expect("rotate");
        let new = key_in(&dir);
        fs::rename(dir.signing_key(), next_key(&dir)).expect("undo step 5");
        fs::rename(dir.root.join(&rotated.retired_file), dir.signing_key()).expect("undo step 5");
        resume(&dir, 8 << 20).expect("resume");
        assert_eq!(key_in(&dir).to_private_key_string(), new.to_private_key_string());
        assert!(!next_key(&dir).exists());
        let store = Store::open(&dir.store(), 8 << 20).expect("store");
        Log::open(store, new).expect("opens with the new key");
    }
}
