//! The data dir: its permissions, the signing key and the published verifier key.
//!
//! Layout: `store/` (sled), `signing.key` (0600), `redaction.key` (0600), `verifier.vkey`
//! (0644), and by default the socket `ledgerd.sock`. The dir itself is 0700: only the daemon's user reads it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ledger_proto::note::{NoteError, NoteSigner};

/// Problems with the data dir, each with the fix in its message.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create data dir {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a directory; pass another --data-dir")]
    NotDir { path: PathBuf },
    #[error("data dir {path} has mode {mode:04o}: group or others can read it. Fix with `chmod 700 {path}`")]
    OpenDir { path: PathBuf, mode: u32 },
    #[error(
        "signing key {path} has mode {mode:04o}: group or others can read it, so the key must be treated as leaked. Fix with `chmod 600 {path}` if you are sure nobody copied it; otherwise move the data dir aside and start a new ledger"
    )]
    OpenKey { path: PathBuf, mode: u32 },
    #[error(
        "redaction key {path} has mode {mode:04o}: group or others can read it, so anyone who read it can test guesses against the redaction markers. Fix with `chmod 600 {path}` if you are sure nobody copied it; otherwise move it aside (a new key is made at the next start, and later markers no longer match earlier ones)"
    )]
    OpenRedactionKey { path: PathBuf, mode: u32 },
    #[error("redaction key {path} is not valid: it must hold 64 hex digits (32 bytes)")]
    BadRedactionKey { path: PathBuf },
    #[error(
        "{path} belongs to uid {owner}, not to ledgerd's user (uid {me}) or root: another user could have put it there (a data dir or key of theirs would make ledgerd sign with their key). Check who made it; if it is really ledgerd's, `chown -R {me} {path}`"
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("signing key {path} is not valid: {source}")]
    BadKey { path: PathBuf, source: NoteError },
}

/// Paths inside a data dir.
#[derive(Clone, Debug)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing.key")
    }
    pub fn redaction_key(&self) -> PathBuf {
        self.root.join("redaction.key")
    }
    pub fn verifier_key(&self) -> PathBuf {
        self.root.join("verifier.vkey")
    }
    pub fn default_socket(&self) -> PathBuf {
        self.root.join("ledgerd.sock")
    }

    /// Creates the dir with mode 0700 if missing; refuses one that others can read.
    pub fn prepare(root: &Path) -> Result<DataDir, DataDirError> {
        match fs::metadata(root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(|source| DataDirError::Create { path: root.to_path_buf(), source })?;
            }
            Err(source) => return Err(DataDirError::Io { path: root.to_path_buf(), source }),
            Ok(meta) if !meta.is_dir() => return Err(DataDirError::NotDir { path: root.to_path_buf() }),
            Ok(meta) => {
                check_owner(root, &meta)?;
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(DataDirError::OpenDir { path: root.to_path_buf(), mode });
                }
            }
        }
        let dir = DataDir { root: root.to_path_buf() };
        // What another user left in the store would be served and signed as the log.
        owned_if_present(&dir.store())?;
        Ok(dir)
    }

    /// Loads the signing key, or creates one named `name` on first start. Also (re)writes
    /// `verifier.vkey` so the public half is always next to the log it verifies.
    pub fn signing_key_or_create(&self, name: impl FnOnce() -> String) -> Result<NoteSigner, DataDirError> {
        let path = self.signing_key();
        let io = |source| DataDirError::Io { path: path.clone(), source };
        let signer = match fs::metadata(&path) {
            Ok(meta) => {
                check_owner(&path, &meta)?;
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(DataDirError::OpenKey { path, mode });
                }
                let text = fs::read_to_string(&path).map_err(io)?;
                NoteSigner::from_private_key_string(text.trim())
                    .map_err(|source| DataDirError::BadKey { path: path.clone(), source })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = NoteSigner::generate(&name())
                    .map_err(|source| DataDirError::BadKey { path: path.clone(), source })?;
                let mut file =
                    OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
                file.write_all(format!("{}\n", signer.to_private_key_string()).as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                signer
            }
            Err(source) => return Err(io(source)),
        };
        let vkey_path = self.verifier_key();
        let vkey = format!("{}\n", signer.verifier().to_vkey_string());
        if fs::read_to_string(&vkey_path).ok().as_deref() != Some(vkey.as_str()) {
            // Public by design.
            replace_file(&vkey_path, vkey.as_bytes(), 0o644)
                .map_err(|source| DataDirError::Io { path: vkey_path.clone(), source })?;
        }
        Ok(signer)
    }

    /// Loads the 32-byte key of the redaction markers (64 hex digits), or creates one on
    /// first start. Like the signing key, refused if group or others can read it.
    pub fn redaction_key_or_create(&self) -> Result<[u8; 32], DataDirError> {
        let path = self.redaction_key();
        let io = |source| DataDirError::Io { path: path.clone(), source };
        match fs::metadata(&path) {
            Ok(meta) => {
                check_owner(&path, &meta)?;
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(DataDirError::OpenRedactionKey { path, mode });
                }
                let text = fs::read_to_string(&path).map_err(io)?;
                parse_hex_key(text.trim()).ok_or(DataDirError::BadRedactionKey { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                let mut file =
                    OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
                file.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(source) => Err(io(source)),
        }
    }
}

/// 64 hex digits as 32 bytes.
fn parse_hex_key(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Refuses a file or directory ledgerd trusts (the data dir, its keys, its config) unless
/// it belongs to ledgerd's own user or to root: a mode check alone would accept a private
/// directory another user prepared with a key of her own.
pub fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), DataDirError> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let owner = meta.uid();
    if owner == me || owner == 0 {
        return Ok(());
    }
    Err(DataDirError::Owner { path: path.to_path_buf(), owner, me })
}

/// [`check_owner`] for a path that may not exist yet (it is then made by ledgerd).
pub fn owned_if_present(path: &Path) -> Result<(), DataDirError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => check_owner(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataDirError::Io { path: path.to_path_buf(), source }),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, never
/// a mix: a hidden temporary file next to it is written with `mode` (set explicitly: the
/// daemon's umask is 077), synced, renamed over `path`, and the directory synced.
///
/// The temporary file has a fresh random name and is created with `O_EXCL|O_NOFOLLOW`:
/// whatever someone planted in the directory (a symlink at a name ledgerd used before, a
/// file of theirs) is never followed, truncated or chmod-ed.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|e| std::io::Error::other(format!("no randomness from the OS: {e}")))?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{}.{nonce}.tmp", name.to_string_lossy()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(mode)
        .open(&tmp)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_symlink_at_a_temporary_name_is_never_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        fs::write(&victim, "keep me").expect("victim");
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).expect("chmod");
        let target = tmp.path().join("verifier.vkey");
        // The old fixed temporary name, and a guess at every short one, point elsewhere.
        std::os::unix::fs::symlink(&victim, tmp.path().join(".verifier.vkey.tmp")).expect("symlink");
        replace_file(&target, b"public\n", 0o644).expect("replace");
        assert_eq!(fs::read_to_string(&target).expect("read"), "public\n");
        assert_eq!(fs::read_to_string(&victim).expect("victim"), "keep me");
        assert_eq!(fs::metadata(&victim).expect("meta").permissions().mode() & 0o777, 0o600);
        let left: Vec<_> = fs::read_dir(tmp.path())
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && n != ".verifier.vkey.tmp")
            .collect();
        assert!(left.is_empty(), "no temporary file is left behind: {left:?}");
    }

    #[test]
    fn the_redaction_key_is_made_once_private_and_refused_when_readable() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::prepare(&tmp.path().join("d")).expect("prepare");
        let key = dir.redaction_key_or_create().expect("create");
        let mode = fs::metadata(dir.redaction_key()).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(dir.redaction_key_or_create().expect("load"), key);
        fs::set_permissions(dir.redaction_key(), fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = dir.redaction_key_or_create().expect_err("readable key").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(dir.redaction_key(), fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(dir.redaction_key(), "zz\n").expect("write");
        assert!(dir.redaction_key_or_create().is_err());
    }
}
