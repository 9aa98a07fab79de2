//! Files written whole or not at all, safely in directories others can write to: a
//! temporary file next to the target, with a fresh random name, created exclusively
//! (`O_EXCL`, which never follows a symlink, so nothing planted in the directory is followed
//! or overwritten), synced, renamed over the target, then the directory synced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// A temporary file beside its target; [`Pending::commit`] puts it in place, dropping it
/// without committing removes it.
pub struct Pending {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
}

impl Pending {
    /// Creates `.NAME.RANDOM.partial` beside `target` (which is untouched until commit).
    pub fn beside(target: &Path) -> io::Result<Pending> {
        let dir = parent(target);
        let name = target.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = dir.join(format!(".{name}.{}.partial", ledger_proto::hex(&nonce)));
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(Pending { file: Some(file), tmp, target: target.to_path_buf() })
    }

    /// The open temporary file, to write into.
    pub fn file(&self) -> io::Result<File> {
        self.file.as_ref().ok_or_else(|| io::Error::other("already committed"))?.try_clone()
    }

    /// Where it is written until the commit.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs the file, renames it over the target and syncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        std::fs::rename(&self.tmp, &self.target)?;
        File::open(parent(&self.target))?.sync_all()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn commit_puts_it_in_place_and_drop_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.csv");
        let pending = Pending::beside(&target).expect("create");
        pending.file().expect("file").write_all(b"a,b\n").expect("write");
        assert!(!target.exists(), "the target is untouched until commit");
        pending.commit().expect("commit");
        assert_eq!(std::fs::read(&target).expect("read"), b"a,b\n");

        let pending = Pending::beside(&target).expect("create");
        pending.file().expect("file").write_all(b"half").expect("write");
        drop(pending);
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, ["out.csv"], "an abandoned write leaves only the old file");
        assert_eq!(std::fs::read(&target).expect("read"), b"a,b\n");
    }

    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        // Whatever the attacker plants, the temporary name is fresh and created exclusively;
        // the target itself is replaced by rename (the link, not what it points to).
        let target = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&victim, &target).expect("symlink");
        let pending = Pending::beside(&target).expect("create");
        pending.file().expect("file").write_all(b"x").expect("write");
        pending.commit().expect("commit");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "x");
    }
}
