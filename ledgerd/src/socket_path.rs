//! What may be at the socket path before ledgerd binds there, and where the socket may
//! not be: only a stale socket is ever removed, never a file, a directory or a link, and
//! never anything inside the data dir's `store/` (binding there once deleted the log).

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Why the socket path is refused, each with what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error(
        "the socket path {path} is inside the data dir's store ({store}), where the log itself lives; pass a --socket outside it (the default is <data-dir>/ledgerd.sock)"
    )]
    InStore { path: PathBuf, store: PathBuf },
    #[error(
        "{path} exists and is {what}, not a socket; ledgerd only ever replaces a stale socket. Pass another --socket, or move {path} away yourself if it is not needed"
    )]
    NotSocket { path: PathBuf, what: &'static str },
    #[error("cannot inspect the socket path {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Checks `socket` before anything is written: refused inside `<data_dir>/store`, and
/// refused when something other than a socket is already there.
pub fn check(socket: &Path, data_dir: &Path) -> Result<(), SocketPathError> {
    let store = absolute(&data_dir.join("store"));
    let at = absolute(socket);
    if at.starts_with(&store) {
        return Err(SocketPathError::InStore { path: socket.to_path_buf(), store });
    }
    match existing_kind(socket)? {
        None | Some(Kind::Socket) => Ok(()),
        Some(Kind::Other(what)) => Err(SocketPathError::NotSocket { path: socket.to_path_buf(), what }),
    }
}

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Socket,
    /// Anything else, named for the message.
    Other(&'static str),
}

/// What is at `path` (not following a link), `None` when nothing is.
pub fn existing_kind(path: &Path) -> Result<Option<Kind>, SocketPathError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SocketPathError::Io { path: path.to_path_buf(), source }),
    };
    let t = meta.file_type();
    Ok(Some(if t.is_socket() {
        Kind::Socket
    } else if t.is_file() {
        Kind::Other("a regular file")
    } else if t.is_dir() {
        Kind::Other("a directory")
    } else if t.is_symlink() {
        Kind::Other("a symbolic link")
    } else if t.is_fifo() {
        Kind::Other("a named pipe")
    } else {
        Kind::Other("a device or other special file")
    }))
}

/// `path` with its existing ancestors resolved (links, `..`), the rest appended as is:
/// the socket and the store need not exist yet to be compared.
fn absolute(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    let mut head = path.as_path();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(head) {
            // What does not exist yet is taken as written, `.` and `..` included.
            for part in rest.iter().rev() {
                match part.to_str() {
                    Some(".") => {}
                    Some("..") => {
                        real.pop();
                    }
                    _ => real.push(part),
                }
            }
            return real;
        }
        match (head.parent(), head.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last.as_os_str().to_os_string());
                head = parent;
            }
            _ => return path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_socket_or_nothing_may_be_at_the_path_and_never_in_the_store() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("store")).expect("store");
        std::fs::write(data.join("store/db"), "log").expect("db");
        assert!(matches!(check(&data.join("store/db"), &data), Err(SocketPathError::InStore { .. })));
        assert!(matches!(check(&data.join("store/new.sock"), &data), Err(SocketPathError::InStore { .. })));
        // Through a `..` and a link, too.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(data.join("store"), &link).expect("symlink");
        assert!(matches!(check(&link.join("x.sock"), &data), Err(SocketPathError::InStore { .. })));
        assert!(matches!(
            check(&data.join("sub/../store/x.sock"), &data),
            Err(SocketPathError::InStore { .. })
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, "precious").expect("file");
        let err = check(&file, &data).expect_err("a file").to_string();
        assert!(err.contains("a regular file") && err.contains("not a socket"), "{err}");
        assert!(check(&link, &data).is_err(), "a link is not a socket");
        assert!(check(tmp.path(), &data).is_err(), "a directory is not a socket");
        check(&data.join("ledgerd.sock"), &data).expect("nothing there yet");
        let sock = tmp.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        check(&sock, &data).expect("a socket may be replaced if stale");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "precious");
    }
}
