//! The trust file of `fleet verify`: each shipped log's name and the verifier key pinned
//! for it.
//!
//! One log per line, `LOG-NAME VERIFIER-KEY` (the log name is the checkpoint origin, e.g.
//! `web-1/ledgerd/0a1b2c3d`), or the verifier key alone (its name is the origin, as
//! ledgerd makes it: `cat */verifier.vkey > fleet.trust` gives a valid file). `#` starts a
//! comment; blank lines are skipped.

use std::path::Path;

use ledger_proto::note::NoteVerifier;

/// One trusted log.
#[derive(Clone, Debug)]
pub struct TrustedLog {
    /// The checkpoint origin.
    pub origin: String,
    pub key: NoteVerifier,
}

/// A trust file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustError(pub String);

/// Parses a trust file's text; `path` is for messages.
pub fn parse(text: &str, path: &Path) -> Result<Vec<TrustedLog>, TrustError> {
    let mut logs: Vec<TrustedLog> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), i + 1);
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (origin, vkey) = match fields.as_slice() {
            [vkey] => (None, *vkey),
            [origin, vkey] => (Some(*origin), *vkey),
            _ => {
                return Err(TrustError(format!(
                    "{}: expected `LOG-NAME VERIFIER-KEY` or a verifier key alone, found {} fields",
                    at(),
                    fields.len()
                )));
            }
        };
        let key = NoteVerifier::parse(vkey).map_err(|e| TrustError(format!("{}: {e}", at())))?;
        let origin = origin.unwrap_or(key.name()).to_string();
        if logs.iter().any(|l| l.origin == origin) {
            return Err(TrustError(format!("{}: log {origin} is listed twice; keep one line per log", at())));
        }
        logs.push(TrustedLog { origin, key });
    }
    if logs.is_empty() {
        return Err(TrustError(format!(
            "{} lists no log; add one line per host: `LOG-NAME VERIFIER-KEY` (from the host's verifier.vkey)",
            path.display()
        )));
    }
    Ok(logs)
}

/// Reads and parses a trust file.
pub fn load(path: &Path) -> Result<Vec<TrustedLog>, TrustError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrustError(format!("cannot read trust file {}: {e}", path.display())))?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_proto::note::NoteSigner;

    #[test]
    fn both_line_forms_parse_and_mistakes_name_their_line() {
        let a = NoteSigner::generate("web-1/ledgerd/0a1b2c3d").expect("key").verifier().to_vkey_string();
        let b = NoteSigner::generate("web-2/ledgerd/ffffffff").expect("key").verifier().to_vkey_string();
        let text = format!("# fleet\n{a}\n\nweb-2/ledgerd/ffffffff {b}  # second\n");
        let logs = parse(&text, Path::new("t")).expect("parses");
        assert_eq!(
            logs.iter().map(|l| l.origin.as_str()).collect::<Vec<_>>(),
            ["web-1/ledgerd/0a1b2c3d", "web-2/ledgerd/ffffffff"]
        );
        for (bad, says) in [
            (format!("{a}\n{a}\n"), "line 2: log web-1/ledgerd/0a1b2c3d is listed twice"),
            ("x y z\n".to_string(), "line 1: expected"),
            ("web-1 not-a-key\n".to_string(), "line 1: verifier key string is malformed"),
            ("# nothing\n".to_string(), "lists no log"),
        ] {
            let e = parse(&bad, Path::new("t")).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
