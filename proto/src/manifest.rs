//! The body of an evidence bundle's signed manifest: which files, with which BLAKE3.
//!
//! The daemon formats this body itself from a list of (path, hash) and signs it with the
//! ledger's key; it never signs text a caller wrote, because a body that parsed as a C2SP
//! checkpoint would let a caller forge one. The layout is in docs/FORMAT.md ("Evidence
//! bundle"):
//!
//! ```text
//! ledgerd evidence manifest v1
//! <origin>
//! <blake3 hex>  <path>
//! ...
//! ```

/// The first line of every manifest body.
pub const MANIFEST_HEADER: &str = "ledgerd evidence manifest v1";

/// One file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// Relative path inside the bundle, `/`-separated.
    pub path: String,
    /// BLAKE3 of the file's bytes, 64 lowercase hex digits.
    pub blake3: String,
}

/// Why a manifest body cannot be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("a manifest lists at least one file")]
    Empty,
    #[error(
        "bad path {0:?}: paths are relative, '/'-separated, without empty, '.' or '..' parts, spaces or control characters"
    )]
    BadPath(String),
    #[error("bad hash {0:?} for a file: it must be 64 lowercase hex digits")]
    BadHash(String),
    #[error("files are not sorted by path, or {0:?} is listed twice")]
    Unsorted(String),
    #[error("the origin {0:?} is empty or has a newline")]
    BadOrigin(String),
    #[error("the manifest does not start with the line {MANIFEST_HEADER:?}")]
    BadHeader,
    #[error("manifest line {0} is not \"<blake3 hex>  <path>\"")]
    BadLine(usize),
}

fn check_path(path: &str) -> Result<(), ManifestError> {
    let bad = path.is_empty()
        || path.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        || path.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad { Err(ManifestError::BadPath(path.to_owned())) } else { Ok(()) }
}

fn check_hash(hash: &str) -> Result<(), ManifestError> {
    let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok { Ok(()) } else { Err(ManifestError::BadHash(hash.to_owned())) }
}

/// The body to sign: header, origin, then one `<hash>  <path>` line per file (sorted by
/// path, each once). Refuses anything that does not fit that shape.
pub fn body(origin: &str, files: &[ManifestFile]) -> Result<String, ManifestError> {
    if origin.is_empty() || origin.contains('\n') {
        return Err(ManifestError::BadOrigin(origin.to_owned()));
    }
    if files.is_empty() {
        return Err(ManifestError::Empty);
    }
    let mut out = format!("{MANIFEST_HEADER}\n{origin}\n");
    let mut previous: Option<&str> = None;
    for file in files {
        check_path(&file.path)?;
        check_hash(&file.blake3)?;
        if previous.is_some_and(|p| p >= file.path.as_str()) {
            return Err(ManifestError::Unsorted(file.path.clone()));
        }
        previous = Some(&file.path);
        out.push_str(&format!("{}  {}\n", file.blake3, file.path));
    }
    Ok(out)
}

/// Reads a (verified) manifest body back: its origin and files.
pub fn parse(text: &str) -> Result<(String, Vec<ManifestFile>), ManifestError> {
    let mut lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
    if lines.next() != Some(MANIFEST_HEADER) {
        return Err(ManifestError::BadHeader);
    }
    let origin = lines.next().unwrap_or_default().to_owned();
    let mut files = Vec::new();
    for (i, line) in lines.enumerate() {
        let (hash, path) = line.split_once("  ").ok_or(ManifestError::BadLine(i + 3))?;
        files.push(ManifestFile { path: path.to_owned(), blake3: hash.to_owned() });
    }
    // Re-formatting must give back the same text: one spelling per manifest.
    if body(&origin, &files)? != text {
        return Err(ManifestError::BadLine(0));
    }
    Ok((origin, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> ManifestFile {
        ManifestFile { path: path.into(), blake3: "ab".repeat(32) }
    }

    #[test]
    fn round_trips_and_refuses_what_could_be_a_checkpoint() {
        let files = vec![file("a.csv"), file("policies/bot/v1.txt")];
        let text = body("example.com/log", &files).expect("body");
        assert_eq!(parse(&text), Ok(("example.com/log".to_string(), files)));
        assert!(body("o", &[]).is_err());
        assert!(body("o", &[file("b"), file("a")]).is_err());
        for bad in ["", "/abs", "a/../b", "a b", "a\nb", "./a"] {
            assert!(body("o", &[file(bad)]).is_err(), "{bad:?}");
        }
        // A checkpoint's second line is a decimal size; ours is the header's fixed text first.
        assert!(ledger_checkpoint_parse(&text).is_err());
    }

    fn ledger_checkpoint_parse(text: &str) -> Result<crate::note::Checkpoint, crate::note::NoteError> {
        crate::note::Checkpoint::parse_body(text)
    }
}
