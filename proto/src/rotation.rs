//! The signed statement of a signing-key rotation: the old key names its successor.
//!
//! A `key_rotated` entry's `details` carry it as `endorsement`, a signed note by the old
//! key whose body is
//!
//! ```text
//! ledgerd key rotation
//! origin <the log's origin line>
//! old <old verifier key>
//! new <new verifier key>
//! size <tree size when the rotation was written>
//! ```
//!
//! A verifier that trusts the old key trusts the new one once it has checked this note
//! with the old key and proved the entry is in the log (docs/FORMAT.md, "Key rotation").

use crate::note::{NoteError, NoteSigner, NoteVerifier};

/// The body's first line.
pub const HEADER: &str = "ledgerd key rotation";

/// What a rotation statement says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub origin: String,
    pub old_key: String,
    pub new_key: String,
    pub size: u64,
}

/// Why a rotation statement is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("the rotation statement is not signed by the old key: {0}")]
    Signature(#[from] NoteError),
    #[error("the rotation statement is malformed: {0}")]
    Malformed(&'static str),
}

impl Rotation {
    /// The body the old key signs.
    pub fn body(&self) -> String {
        format!(
            "{HEADER}\norigin {}\nold {}\nnew {}\nsize {}\n",
            self.origin, self.old_key, self.new_key, self.size
        )
    }

    /// Signs the statement with the old key.
    pub fn sign(&self, old: &NoteSigner) -> Result<String, NoteError> {
        old.sign(&self.body())
    }

    /// Checks `note` with `old` and parses it; the statement must name `old` as the old key.
    pub fn verify(old: &NoteVerifier, note: &str) -> Result<Rotation, RotationError> {
        let body = old.verify(note)?;
        let mut lines = body.lines();
        if lines.next() != Some(HEADER) {
            return Err(RotationError::Malformed("it does not start with \"ledgerd key rotation\""));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
                .ok_or(RotationError::Malformed("a line is missing or out of order"))
        };
        let origin = field("origin")?;
        let old_key = field("old")?;
        let new_key = field("new")?;
        let size = field("size")?.parse().map_err(|_| RotationError::Malformed("size is not a number"))?;
        if old_key != old.to_vkey_string() {
            return Err(RotationError::Malformed("it names another key as the old one"));
        }
        NoteVerifier::parse(&new_key)
            .map_err(|_| RotationError::Malformed("the new key is not a verifier key"))?;
        Ok(Rotation { origin, old_key, new_key, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_old_key_can_name_a_successor() {
        let old = NoteSigner::generate("host/ledgerd/1").expect("key");
        let new = NoteSigner::generate("host/ledgerd/1").expect("key");
        let r = Rotation {
            origin: "host/ledgerd/1".into(),
            old_key: old.verifier().to_vkey_string(),
            new_key: new.verifier().to_vkey_string(),
            size: 7,
        };
        let note = r.sign(&old).expect("sign");
        assert_eq!(Rotation::verify(&old.verifier(), &note).expect("verify"), r);
        assert!(Rotation::verify(&new.verifier(), &note).is_err(), "the new key cannot vouch for itself");
        let forged = r.sign(&new).expect("sign");
        assert!(Rotation::verify(&old.verifier(), &forged).is_err());
    }
}
