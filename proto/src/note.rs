//! Signed checkpoints: the C2SP `tlog-checkpoint` body, signed and verified as a C2SP
//! `signed-note` with Ed25519, and the key strings of `golang.org/x/mod/sumdb/note`.
//!
//! A checkpoint note looks like this (the dash is U+2014 EM DASH):
//!
//! ```text
//! example.com/ledger
//! 3
//! <base64 of the 32-byte root hash>
//!
//! — example.com/ledger <base64 of key ID (4 bytes) ‖ Ed25519 signature (64 bytes)>
//! ```
//!
//! The signed message is the body: every line above the blank line, including the final
//! newline of the last of them. Keeping to the published formats means Go's `note`
//! package, witnesses and other tlog tooling can read and check our checkpoints, with one
//! difference in meaning: our root hash is a BLAKE3 tree hash (see [`crate::merkle`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::{HASH_LEN, Hash};

/// Notes longer than this are refused unread, so a hostile note cannot cost much.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// Notes with more signature lines than this are refused before any signature is checked
/// (the same limit as Go's `note.Open`; the spec asks verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 100;

/// The start of every signature line: U+2014 EM DASH and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The C2SP signature type byte of Ed25519, used in key IDs and key strings.
const ALG_ED25519: u8 = 0x01;
/// The fixed start of a signer key string, as in `golang.org/x/mod/sumdb/note`.
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// What is wrong with a note, a checkpoint, a key string or a key name.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error(
        "key name {0:?} is not valid: it must be non-empty and contain no whitespace, no '+' and no control characters"
    )]
    InvalidKeyName(String),
    #[error(
        "verifier key string is malformed: {0} (expected <name>+<8 hex digit key ID>+<base64 of 0x01 and the 32-byte public key>)"
    )]
    MalformedVerifierKey(&'static str),
    #[error(
        "signer key string is malformed: {0} (expected PRIVATE+KEY+<name>+<8 hex digit key ID>+<base64 of 0x01 and the 32-byte seed>)"
    )]
    MalformedSignerKey(&'static str),
    #[error("key type 0x{0:02x} is not supported; only Ed25519 (0x01) is")]
    UnsupportedKeyType(u8),
    #[error("the key string says key ID {stated} but its name and public key give key ID {computed}")]
    KeyIdMismatch { stated: String, computed: String },
    #[error("the public key is not a usable Ed25519 key (not a curve point, or a weak key of small order)")]
    InvalidPublicKey,
    #[error("could not get random bytes from the operating system to make a key: {0}")]
    RandomUnavailable(String),

    #[error("the note is {len} bytes long; notes over {MAX_NOTE_BYTES} bytes are refused")]
    TooLarge { len: usize },
    #[error("the note contains control character U+{code:04X} at byte {offset}; only newline is allowed")]
    ControlCharacter { offset: usize, code: u32 },
    #[error(
        "the note has no signatures: its text must be followed by a blank line and signature lines, each ending in a newline"
    )]
    MissingSignatures,
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignatureLine { line: usize, reason: &'static str },
    #[error("the note has more than {MAX_SIGNATURES} signature lines")]
    TooManySignatures,
    #[error(
        "the signature by key {name}+{key_id} does not verify: the note was altered after signing, or was signed by another key with the same name and ID"
    )]
    InvalidSignature { name: String, key_id: String },
    #[error(
        "the note has no signature by key {name}+{key_id}; signatures by other keys (including other keys of the same name) are not trusted"
    )]
    NoTrustedSignature { name: String, key_id: String },
    #[error("this text cannot be signed as a note: {0}")]
    UnsignableText(&'static str),

    #[error("checkpoint body does not end with a newline")]
    CheckpointMissingFinalNewline,
    #[error("checkpoint body has {0} lines; it needs at least three: origin, tree size and root hash")]
    CheckpointTooShort(usize),
    #[error("checkpoint origin (the first line) is empty")]
    EmptyOrigin,
    #[error("checkpoint origin {0:?} contains a newline")]
    OriginHasNewline(String),
    #[error("checkpoint tree size {0:?} is not a decimal number without leading zeros that fits in 64 bits")]
    BadTreeSize(String),
    #[error("checkpoint root hash {0:?} is not the standard padded base64 encoding of 32 bytes")]
    BadRootHash(String),
    #[error("checkpoint extension line {0} is empty; extension lines must be non-empty")]
    EmptyExtensionLine(usize),
    #[error("checkpoint extension line {0} contains a newline")]
    ExtensionHasNewline(usize),
    #[error("checkpoint contains control character U+{code:04X}; only newline is allowed")]
    CheckpointControlCharacter { code: u32 },
}

/// The key ID of an Ed25519 key: the first 4 bytes of
/// `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)`, as C2SP `signed-note` recommends.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALG_ED25519]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Key names are non-empty and hold no Unicode whitespace and no '+' (C2SP), and no control
/// characters, which a note may not contain anywhere.
fn check_key_name(name: &str) -> Result<(), NoteError> {
    let valid = !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control());
    if valid { Ok(()) } else { Err(NoteError::InvalidKeyName(name.to_owned())) }
}

fn hex_key_id(id: [u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

/// Parses exactly eight hex digits (either case, as Go does) into a big-endian key ID.
fn parse_hex_key_id(text: &str) -> Option<[u8; 4]> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok().map(u32::to_be_bytes)
}

/// The first control character (other than newline) in `text`, with its byte offset.
fn find_control(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|&(_, c)| c < ' ' && c != '\n')
}

/// A checkpoint: the signed statement "log `origin` has `size` leaves and this root".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `example.com/ledger`.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The BLAKE3 Merkle root of the first `size` leaves.
    pub root: Hash,
    /// Optional opaque lines after the root, each non-empty, without their newline.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note body: `origin\nsize\nbase64(root)\n` and one line per extension.
    ///
    /// This does not check the fields; [`NoteSigner::sign_checkpoint`] does, so that a
    /// checkpoint that would not parse back is never signed.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root));
        for extension in &self.extensions {
            body.push_str(extension);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body (the text of a note, ending in a newline).
    pub fn parse_body(text: &str) -> Result<Self, NoteError> {
        if let Some((_, c)) = find_control(text) {
            return Err(NoteError::CheckpointControlCharacter { code: u32::from(c) });
        }
        let Some(without_last_newline) = text.strip_suffix('\n') else {
            return Err(NoteError::CheckpointMissingFinalNewline);
        };
        let lines: Vec<&str> = without_last_newline.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(NoteError::CheckpointTooShort(lines.len()));
        };
        if origin.is_empty() {
            return Err(NoteError::EmptyOrigin);
        }
        let size = parse_tree_size(size).ok_or_else(|| NoteError::BadTreeSize((*size).to_owned()))?;
        let root = parse_root(root).ok_or_else(|| NoteError::BadRootHash((*root).to_owned()))?;
        if let Some(position) = extensions.iter().position(|line| line.is_empty()) {
            return Err(NoteError::EmptyExtensionLine(position + 1));
        }
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            extensions: extensions.iter().map(|line| (*line).to_owned()).collect(),
        })
    }

    /// Checks that [`Checkpoint::body`] will parse back into this same checkpoint.
    fn check_fields(&self) -> Result<(), NoteError> {
        if self.origin.is_empty() {
            return Err(NoteError::EmptyOrigin);
        }
        if self.origin.contains('\n') {
            return Err(NoteError::OriginHasNewline(self.origin.clone()));
        }
        for (position, extension) in self.extensions.iter().enumerate() {
            if extension.is_empty() {
                return Err(NoteError::EmptyExtensionLine(position + 1));
            }
            if extension.contains('\n') {
                return Err(NoteError::ExtensionHasNewline(position + 1));
            }
        }
        Ok(())
    }
}

/// ASCII decimal with no sign and no leading zeros (except "0" itself), as C2SP requires.
/// `str::parse::<u64>` alone would also take "+5" and "007".
fn parse_tree_size(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    text.parse().ok()
}

/// Standard padded base64 of exactly 32 bytes; the decoder refuses non-canonical
/// encodings, so each root has one spelling.
fn parse_root(text: &str) -> Option<Hash> {
    let bytes = BASE64.decode(text).ok()?;
    if bytes.len() != HASH_LEN {
        return None;
    }
    Hash::try_from(bytes.as_slice()).ok()
}

/// Signs notes with one named Ed25519 key.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
}

impl std::fmt::Debug for NoteSigner {
    // Deliberately leaves the private key out, so a signer can be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &hex_key_id(self.key_id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer for `key` under `name`, which must be a valid key name.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self { name: name.to_owned(), key, key_id })
    }

    /// A signer with a new key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| NoteError::RandomUnavailable(e.to_string()))?;
        let signer = Self::new(name, SigningKey::from_bytes(&seed));
        seed.fill(0);
        signer
    }

    /// The key name that appears in signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier for this signer's public key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key_id: self.key_id, key: self.key.verifying_key() }
    }

    /// Signs `body` and returns the full note text: the body, a blank line and one
    /// signature line.
    ///
    /// The body must be non-empty, end with a newline and contain no control characters
    /// other than newline, and the note must stay within [`MAX_NOTE_BYTES`], so that every
    /// note signed here also verifies here and in Go's `note.Open`.
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        if body.is_empty() {
            return Err(NoteError::UnsignableText("it is empty"));
        }
        if !body.ends_with('\n') {
            return Err(NoteError::UnsignableText("it does not end with a newline"));
        }
        if find_control(body).is_some() {
            return Err(NoteError::UnsignableText("it contains a control character other than newline"));
        }
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&signature.to_bytes());
        let note = format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.name, BASE64.encode(blob));
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        Ok(note)
    }

    /// Signs the body of `cp`, after checking that it would parse back unchanged.
    pub fn sign_checkpoint(&self, cp: &Checkpoint) -> Result<String, NoteError> {
        cp.check_fields()?;
        self.sign(&cp.body())
    }

    /// `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 ‖ 32-byte seed)>`, the
    /// `golang.org/x/mod/sumdb/note` signer key form, for the key file. It holds the private
    /// key: keep it out of logs.
    pub fn to_private_key_string(&self) -> String {
        let mut blob = Vec::with_capacity(33);
        blob.push(ALG_ED25519);
        blob.extend_from_slice(self.key.as_bytes());
        format!("{PRIVATE_KEY_PREFIX}{}+{}+{}", self.name, hex_key_id(self.key_id), BASE64.encode(&blob))
    }

    /// Parses the form [`NoteSigner::to_private_key_string`] writes (surrounding whitespace,
    /// such as a file's final newline, is ignored). The key ID in the string must match
    /// the name and key.
    pub fn from_private_key_string(s: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::MalformedSignerKey;
        let rest = s
            .trim()
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(malformed("it does not start with PRIVATE+KEY+"))?;
        // The base64 part may itself contain '+', so split off only the first two fields.
        let mut fields = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed("it does not have a name, a key ID and a key"));
        };
        check_key_name(name)?;
        let stated = parse_hex_key_id(id_hex).ok_or(malformed("the key ID is not 8 hex digits"))?;
        let blob = BASE64.decode(key_b64).map_err(|_| malformed("the key is not valid base64"))?;
        let (&alg, seed) = blob.split_first().ok_or(malformed("the key is empty"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedKeyType(alg));
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| malformed("an Ed25519 seed is exactly 32 bytes"))?;
        let signer = Self::new(name, SigningKey::from_bytes(&seed))?;
        if signer.key_id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated: hex_key_id(stated),
                computed: hex_key_id(signer.key_id),
            });
        }
        Ok(signer)
    }
}

/// Checks notes against one trusted, named Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key string `<name>+<key ID hex>+<base64(0x01 ‖ public key)>`,
    /// ignoring surrounding whitespace. The key ID must match the name and key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let malformed = NoteError::MalformedVerifierKey;
        // The base64 part may itself contain '+', so split off only the first two fields.
        let mut fields = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed("it does not have a name, a key ID and a key"));
        };
        check_key_name(name)?;
        let stated = parse_hex_key_id(id_hex).ok_or(malformed("the key ID is not 8 hex digits"))?;
        let blob = BASE64.decode(key_b64).map_err(|_| malformed("the key is not valid base64"))?;
        let (&alg, public) = blob.split_first().ok_or(malformed("the key is empty"))?;
        if alg != ALG_ED25519 {
            return Err(NoteError::UnsupportedKeyType(alg));
        }
        let public: [u8; 32] =
            public.try_into().map_err(|_| malformed("an Ed25519 public key is exactly 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(NoteError::InvalidPublicKey);
        }
        let computed = key_id(name, &public);
        if computed != stated {
            return Err(NoteError::KeyIdMismatch {
                stated: hex_key_id(stated),
                computed: hex_key_id(computed),
            });
        }
        Ok(Self { name: name.to_owned(), key_id: computed, key })
    }

    /// The verifier key string, as [`NoteVerifier::parse`] reads it.
    pub fn to_vkey_string(&self) -> String {
        let mut blob = Vec::with_capacity(33);
        blob.push(ALG_ED25519);
        blob.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex_key_id(self.key_id), BASE64.encode(&blob))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID (big-endian, as it appears in signatures).
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Verify the note's signature and return its body text.
    ///
    /// The note is refused if it is too large or not well formed (every signature line
    /// must parse, whoever signed it), if it has too many signatures, if any signature by
    /// this key (same name and same key ID) fails to verify, or if there is none.
    /// Signatures by other keys are skipped unchecked, as C2SP requires: they may be
    /// witnesses' cosignatures or a rotated key's.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        if let Some((offset, c)) = find_control(note) {
            return Err(NoteError::ControlCharacter { offset, code: u32::from(c) });
        }
        // The text ends at the last blank line; it keeps its own final newline.
        let split = note.rfind("\n\n").ok_or(NoteError::MissingSignatures)?;
        let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
        if signatures.is_empty() || !signatures.ends_with('\n') {
            return Err(NoteError::MissingSignatures);
        }
        let lines: Vec<&str> = signatures[..signatures.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }

        let mut trusted = false;
        for (i, line) in lines.iter().enumerate() {
            let malformed = |reason| NoteError::MalformedSignatureLine { line: i + 1, reason };
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(malformed("it does not start with an em dash (U+2014) and a space"))?;
            let (name, sig_b64) =
                rest.split_once(' ').ok_or(malformed("it has no space between key name and signature"))?;
            if check_key_name(name).is_err() {
                return Err(malformed("the key name is empty or contains whitespace or '+'"));
            }
            let blob = BASE64.decode(sig_b64).map_err(|_| malformed("the signature is not valid base64"))?;
            if blob.len() < 5 {
                return Err(malformed("the signature is shorter than a key ID and one byte"));
            }
            let (id, signature) = blob.split_at(4);
            if name != self.name || id != self.key_id {
                continue; // Another key's signature: not ours to judge.
            }
            let invalid =
                || NoteError::InvalidSignature { name: self.name.clone(), key_id: hex_key_id(self.key_id) };
            let signature = Signature::from_slice(signature).map_err(|_| invalid())?;
            // Strict verification refuses the malleable and small-order forms that plain
            // RFC 8032 verification lets through; honest signers never produce them.
            self.key.verify_strict(body.as_bytes(), &signature).map_err(|_| invalid())?;
            trusted = true;
        }
        if !trusted {
            return Err(NoteError::NoTrustedSignature {
                name: self.name.clone(),
                key_id: hex_key_id(self.key_id),
            });
        }
        Ok(body)
    }

    /// Verify and parse as a checkpoint.
    pub fn verify_checkpoint(&self, note: &str) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse_body(self.verify(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sizes_must_be_plain_decimal() {
        assert_eq!(parse_tree_size("0"), Some(0));
        assert_eq!(parse_tree_size("10"), Some(10));
        assert_eq!(parse_tree_size("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "00", "01", "+1", "-1", " 1", "1 ", "0x10", "18446744073709551616", "١"] {
            assert_eq!(parse_tree_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_names_follow_c2sp() {
        for good in ["example.com/log", "PeterNeumann", "ünïcode"] {
            assert_eq!(check_key_name(good), Ok(()));
        }
        for bad in ["", "a b", "a+b", "a\tb", "a\u{a0}b", "a\u{2003}b", "a\u{7f}b"] {
            assert!(check_key_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hex_key_ids_are_exactly_eight_digits() {
        assert_eq!(parse_hex_key_id("c74f20a3"), Some([0xc7, 0x4f, 0x20, 0xa3]));
        assert_eq!(parse_hex_key_id("C74F20A3"), Some([0xc7, 0x4f, 0x20, 0xa3]));
        for bad in ["", "c74f20a", "c74f20a30", "+74f20a3", "c74f20ag"] {
            assert_eq!(parse_hex_key_id(bad), None, "{bad:?}");
        }
        assert_eq!(hex_key_id([0, 0, 0x0a, 0xff]), "00000aff");
    }
}
