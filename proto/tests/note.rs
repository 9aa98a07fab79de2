//! Checks the signed checkpoint notes: known-answer vectors from the C2SP spec and from
//! Go's `golang.org/x/mod/sumdb/note`, round trips, tampering, and that every malformed
//! input is refused with an error rather than a panic.

use ed25519_dalek::SigningKey;
use ledger_proto::merkle::{self, Hash, leaf_hash};
use ledger_proto::note::{
    Checkpoint, MAX_NOTE_BYTES, MAX_SIGNATURES, NoteError, NoteSigner, NoteVerifier, key_id,
};

// The example of Go's sumdb/note package documentation and tests: a signer key, its
// verifier key, a text, and the exact signature line Go's note.Sign writes for it.
const GO_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
// A second key of the same tests, and its signature of the same text.
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

// The example of the C2SP signed-note specification.
const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

fn must<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

fn signer(name: &str, seed_byte: u8) -> NoteSigner {
    must(NoteSigner::new(name, SigningKey::from_bytes(&[seed_byte; 32])), "signer")
}

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint { origin: "example.com/ledger".into(), size, root: [size as u8; 32], extensions: vec![] }
}

#[test]
fn go_vector_key_strings_and_key_id() {
    let signer = must(NoteSigner::from_private_key_string(GO_SKEY), "Go signer key");
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.to_private_key_string(), GO_SKEY);
    let verifier = signer.verifier();
    assert_eq!(verifier.to_vkey_string(), GO_VKEY);
    assert_eq!(verifier.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(key_id("PeterNeumann", &verifier.public_key()), [0xc7, 0x4f, 0x20, 0xa3]);
    assert_eq!(must(NoteVerifier::parse(GO_VKEY), "Go verifier key"), verifier);
    // Key files end in a newline; parsing ignores the whitespace around a key.
    assert_eq!(must(NoteVerifier::parse(&format!("  {GO_VKEY}\n")), "padded key"), verifier);
    let from_file = must(NoteSigner::from_private_key_string(&format!("{GO_SKEY}\n")), "key file");
    assert_eq!(from_file.verifier(), verifier);
}

#[test]
fn go_vector_signature_is_byte_identical() {
    let signer = must(NoteSigner::from_private_key_string(GO_SKEY), "Go signer key");
    let note = must(signer.sign(GO_TEXT), "sign");
    assert_eq!(note, format!("{GO_TEXT}\n{GO_SIG}"));
    let verifier = must(NoteVerifier::parse(GO_VKEY), "Go verifier key");
    assert_eq!(verifier.verify(&note), Ok(GO_TEXT));
}

#[test]
fn notes_with_several_signers_verify_for_each_and_ignore_the_others() {
    let note = format!("{GO_TEXT}\n{GO_SIG}{ENOCH_SIG}");
    let peter = must(NoteVerifier::parse(GO_VKEY), "Peter");
    let enoch = must(NoteVerifier::parse(ENOCH_VKEY), "Enoch");
    assert_eq!(peter.verify(&note), Ok(GO_TEXT));
    assert_eq!(enoch.verify(&note), Ok(GO_TEXT));
    let stranger = signer("example.com/stranger", 9).verifier();
    assert!(matches!(stranger.verify(&note), Err(NoteError::NoTrustedSignature { .. })));
}

#[test]
fn spec_example_verifies() {
    let verifier = must(NoteVerifier::parse(SPEC_VKEY), "spec key");
    assert_eq!(verifier.name(), "example.com/foo");
    assert_eq!(verifier.key_id(), [0x53, 0x0d, 0x90, 0x3a]);
    assert_eq!(verifier.to_vkey_string(), SPEC_VKEY);
    assert_eq!(verifier.verify(SPEC_NOTE), Ok("This is an example message.\n"));
}

/// Go's TestNewVerifier and TestNewSigner: no proper substring of a key string and no
/// string with one byte changed is accepted.
#[test]
fn mangled_key_strings_are_refused() {
    for key in [GO_VKEY, GO_SKEY] {
        let parses = |s: &str| {
            if key == GO_VKEY {
                NoteVerifier::parse(s).is_ok()
            } else {
                NoteSigner::from_private_key_string(s).is_ok()
            }
        };
        assert!(parses(key));
        let b = key.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if (i, j) == (0, b.len()) {
                    continue;
                }
                // Every key string is ASCII, so every substring is a valid str.
                let sub = &key[i..j];
                // Trimming makes a substring that only drops surrounding whitespace the
                // same key; there is no whitespace in these keys, so no exception applies.
                assert!(!parses(sub), "accepted substring {sub:?}");
            }
        }
        for i in 0..b.len() {
            let mut changed = b.to_vec();
            changed[i] = changed[i].wrapping_add(1);
            if let Ok(s) = std::str::from_utf8(&changed) {
                assert!(!parses(s), "accepted {s:?}");
            }
        }
    }
    // From Go's tests: a key of the wrong length and an unknown algorithm, each with a key
    // ID that matches the altered key. (Go's lenient base64 decodes the first to a 38-byte
    // key; ours already refuses its non-zero trailing bits. Either way it is refused.)
    assert_eq!(
        NoteVerifier::parse("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="),
        Err(NoteError::MalformedVerifierKey("the key is not valid base64"))
    );
    assert_eq!(
        NoteVerifier::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        Err(NoteError::UnsupportedKeyType(0x65))
    );
}

#[test]
fn key_errors_say_what_is_wrong() {
    let err = |s: &str| match NoteVerifier::parse(s) {
        Ok(v) => panic!("accepted {s:?} as {v:?}"),
        Err(e) => e,
    };
    assert_eq!(
        err("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"),
        NoteError::KeyIdMismatch { stated: "c74f20a4".into(), computed: "c74f20a3".into() }
    );
    assert!(matches!(err("Peter Neumann+c74f20a3+AAAA"), NoteError::InvalidKeyName(_)));
    assert!(matches!(err("PeterNeumann+c74f20a3"), NoteError::MalformedVerifierKey(_)));
    assert!(matches!(err("PeterNeumann+c74f20a3+!!!!"), NoteError::MalformedVerifierKey(_)));
    assert!(matches!(err("PeterNeumann+c74f+ARpc"), NoteError::MalformedVerifierKey(_)));
    assert!(matches!(err(""), NoteError::InvalidKeyName(_) | NoteError::MalformedVerifierKey(_)));
    // A small-order point is a valid encoding but no key: the identity point (y = 1).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = {
        use base64::Engine;
        let mut blob = vec![1u8];
        blob.extend_from_slice(&identity);
        let id = key_id("weak", &identity);
        format!(
            "weak+{:08x}+{}",
            u32::from_be_bytes(id),
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    };
    assert_eq!(err(&weak), NoteError::InvalidPublicKey);
    let message = err("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").to_string();
    assert!(message.contains("c74f20a4") && message.contains("c74f20a3"), "{message}");

    for bad_name in ["", "a b", "a+b"] {
        assert!(matches!(
            NoteSigner::new(bad_name, SigningKey::from_bytes(&[1; 32])),
            Err(NoteError::InvalidKeyName(_))
        ));
        assert!(matches!(NoteSigner::generate(bad_name), Err(NoteError::InvalidKeyName(_))));
    }
    assert!(matches!(
        NoteSigner::from_private_key_string("PRIVATE+KEY+x+00000000+AQ=="),
        Err(NoteError::MalformedSignerKey(_))
    ));
}

#[test]
fn generated_keys_round_trip_through_their_strings() {
    let a = must(NoteSigner::generate("example.com/ledger"), "generate");
    let b = must(NoteSigner::generate("example.com/ledger"), "generate");
    assert_ne!(a.verifier().public_key(), b.verifier().public_key());
    let again = must(NoteSigner::from_private_key_string(&a.to_private_key_string()), "reload");
    assert_eq!(again.verifier(), a.verifier());
    let vkey = a.verifier().to_vkey_string();
    assert_eq!(must(NoteVerifier::parse(&vkey), "vkey"), a.verifier());
    // The private key never shows in debug output.
    let debug = format!("{a:?}");
    let skey = a.to_private_key_string();
    assert!(!debug.contains(&skey[skey.len() - 20..]), "{debug}");
}

#[test]
fn checkpoint_round_trips_with_extensions() {
    let signer = signer("example.com/ledger", 7);
    let mut cp = checkpoint(12345);
    cp.extensions = vec!["first extension".into(), "second: with spaces and + signs".into()];
    let note = must(signer.sign_checkpoint(&cp), "sign");
    let body = cp.body();
    assert!(note.starts_with(&format!("{body}\n\u{2014} example.com/ledger ")));
    assert!(body.ends_with("first extension\nsecond: with spaces and + signs\n"));
    assert_eq!(signer.verifier().verify_checkpoint(&note), Ok(cp.clone()));
    assert_eq!(Checkpoint::parse_body(&body), Ok(cp));

    // Size 0 (the empty tree) is written and read as "0".
    let mut empty = checkpoint(0);
    empty.root = merkle::empty_root();
    assert!(empty.body().contains("\n0\n"));
    let note = must(signer.sign_checkpoint(&empty), "sign");
    assert_eq!(signer.verifier().verify_checkpoint(&note), Ok(empty));
}

#[test]
fn tampered_notes_fail() {
    let signer = signer("example.com/ledger", 7);
    let verifier = signer.verifier();
    let note = must(signer.sign_checkpoint(&checkpoint(10)), "sign");
    let invalid = Err(NoteError::InvalidSignature {
        name: "example.com/ledger".into(),
        key_id: format!("{:08x}", u32::from_be_bytes(verifier.key_id())),
    });
    let invalid: Result<&str, NoteError> = invalid;

    // A changed size, a changed root, an added extension line, an added trailing space.
    let changed_size = note.replacen("\n10\n", "\n11\n", 1);
    assert_eq!(verifier.verify(&changed_size), invalid.clone());
    let root_b64 = note.lines().nth(2).unwrap_or_default().to_owned();
    let mut other_root = root_b64.clone().into_bytes();
    other_root[0] = if other_root[0] == b'A' { b'B' } else { b'A' };
    let changed_root = note.replacen(&root_b64, &String::from_utf8_lossy(&other_root), 1);
    assert_eq!(verifier.verify(&changed_root), invalid.clone());
    let (body, signatures) = note.split_at(note.rfind("\n\n").unwrap_or_default() + 1);
    let extended = format!("{body}extra\n{signatures}");
    assert_eq!(verifier.verify(&extended), invalid.clone());
    // A flipped bit in the signature itself.
    let sig_start = note.rfind(' ').unwrap_or_default() + 1;
    let mut flipped = note.clone().into_bytes();
    flipped[sig_start + 10] = if flipped[sig_start + 10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8_lossy(&flipped).into_owned();
    assert_eq!(verifier.verify(&flipped), invalid);
}

#[test]
fn another_key_with_the_same_name_is_not_trusted() {
    let ours = signer("example.com/ledger", 7);
    let impostor = signer("example.com/ledger", 8);
    let note = must(impostor.sign_checkpoint(&checkpoint(10)), "sign");
    let err = ours.verifier().verify(&note);
    assert!(matches!(err, Err(NoteError::NoTrustedSignature { .. })), "{err:?}");
    let message = match err {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    };
    assert!(message.contains("no signature by key example.com/ledger+"), "{message}");

    // The impostor's signature relabelled with our key ID is checked, and fails.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let line_start = note.rfind(' ').unwrap_or_default() + 1;
    let mut blob = must(b64.decode(note[line_start..].trim_end()), "decode");
    blob[..4].copy_from_slice(&ours.verifier().key_id());
    let relabelled = format!("{}{}\n", &note[..line_start], b64.encode(&blob));
    assert!(matches!(ours.verifier().verify(&relabelled), Err(NoteError::InvalidSignature { .. })));
    // So is a signature of ours that is cut short.
    blob.truncate(40);
    let short = format!("{}{}\n", &note[..line_start], b64.encode(&blob));
    assert!(matches!(ours.verifier().verify(&short), Err(NoteError::InvalidSignature { .. })));
    // And one bad signature by our key spoils the note even next to a good one.
    let good = must(ours.sign_checkpoint(&checkpoint(10)), "sign");
    let both = format!("{good}{}", &relabelled[relabelled.rfind("\n\n").unwrap_or_default() + 2..]);
    assert!(matches!(ours.verifier().verify(&both), Err(NoteError::InvalidSignature { .. })));
}

fn other_signature_line(i: usize) -> String {
    use base64::Engine;
    // Unknown keys' signatures may have any length (a post-quantum one is kilobytes).
    let blob = vec![i as u8; 4 + 1 + i % 200];
    format!("\u{2014} witness{i}.example {}\n", base64::engine::general_purpose::STANDARD.encode(blob))
}

#[test]
fn signature_count_is_limited() {
    let signer = signer("example.com/ledger", 7);
    let verifier = signer.verifier();
    let note = must(signer.sign_checkpoint(&checkpoint(10)), "sign");
    let others: String = (0..MAX_SIGNATURES - 1).map(other_signature_line).collect();
    let at_limit = format!("{note}{others}");
    assert!(verifier.verify_checkpoint(&at_limit).is_ok());
    let over_limit = format!("{at_limit}{}", other_signature_line(100));
    assert_eq!(verifier.verify(&over_limit), Err(NoteError::TooManySignatures));
}

#[test]
fn malformed_notes_are_refused() {
    let signer = signer("example.com/ledger", 7);
    let v = signer.verifier();
    let note = must(signer.sign_checkpoint(&checkpoint(10)), "sign");
    let body = checkpoint(10).body();
    let sig_line = &note[body.len() + 1..];

    let huge = format!("{}\n{sig_line}", "x".repeat(MAX_NOTE_BYTES));
    assert_eq!(v.verify(&huge), Err(NoteError::TooLarge { len: huge.len() }));

    let with_tab = note.replacen("example.com/ledger\n", "example.com/ledger\t\n", 1);
    assert!(matches!(v.verify(&with_tab), Err(NoteError::ControlCharacter { code: 9, .. })));
    let with_cr = note.replace('\n', "\r\n");
    assert!(matches!(v.verify(&with_cr), Err(NoteError::ControlCharacter { code: 13, .. })));

    assert_eq!(v.verify(&body), Err(NoteError::MissingSignatures));
    assert_eq!(v.verify(""), Err(NoteError::MissingSignatures));
    assert_eq!(v.verify(&format!("{body}\n")), Err(NoteError::MissingSignatures));
    let no_final_newline = note.trim_end_matches('\n');
    assert_eq!(v.verify(no_final_newline), Err(NoteError::MissingSignatures));

    let line_err = |n: &str| match v.verify(n) {
        Err(NoteError::MalformedSignatureLine { line, reason }) => (line, reason),
        other => panic!("expected a malformed signature line, got {other:?} for {n:?}"),
    };
    let hyphen = note.replacen('\u{2014}', "-", 1);
    assert_eq!(line_err(&hyphen).0, 1);
    let bad_base64 = format!("{body}\n\u{2014} example.com/ledger not*base64\n");
    assert_eq!(line_err(&bad_base64), (1, "the signature is not valid base64"));
    let unpadded = note.trim_end_matches("=\n").to_owned() + "\n";
    assert_eq!(line_err(&unpadded), (1, "the signature is not valid base64"));
    let no_space = format!("{body}\n\u{2014} example.com/ledger\n");
    assert_eq!(line_err(&no_space).0, 1);
    let empty_name = format!("{body}\n\u{2014}  AAAAAAA=\n");
    assert_eq!(line_err(&empty_name).0, 1);
    let too_short = format!("{note}\u{2014} other AAAA\n");
    assert_eq!(line_err(&too_short).0, 2);
    // A malformed line is refused even when a good signature is there too.
    let good_then_bad = format!("{note}garbage\n");
    assert_eq!(line_err(&good_then_bad).0, 2);
}

#[test]
fn malformed_checkpoint_bodies_are_refused() {
    let root = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let parse = |s: &str| Checkpoint::parse_body(s);
    assert!(parse(&format!("o\n5\n{root}\n")).is_ok());
    assert_eq!(parse(&format!("o\n5\n{root}")), Err(NoteError::CheckpointMissingFinalNewline));
    assert_eq!(parse("o\n5\n"), Err(NoteError::CheckpointTooShort(2)));
    assert_eq!(parse(""), Err(NoteError::CheckpointMissingFinalNewline));
    assert_eq!(parse(&format!("\n5\n{root}\n")), Err(NoteError::EmptyOrigin));
    for size in ["05", "00", "+5", "-5", "5.0", "five", "", " 5", "18446744073709551616"] {
        assert_eq!(
            parse(&format!("o\n{size}\n{root}\n")),
            Err(NoteError::BadTreeSize(size.into())),
            "size {size:?}"
        );
    }
    let short_root = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let long_root = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let unpadded = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let url_safe = "_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let non_canonical = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=";
    for bad in [short_root, long_root, unpadded, url_safe, non_canonical, "", "not base64!"] {
        assert_eq!(parse(&format!("o\n5\n{bad}\n")), Err(NoteError::BadRootHash(bad.into())), "root {bad:?}");
    }
    assert_eq!(parse(&format!("o\n5\n{root}\next\n\n")), Err(NoteError::EmptyExtensionLine(2)));
    assert_eq!(parse(&format!("o\n5\n{root}\x01\n")), Err(NoteError::CheckpointControlCharacter { code: 1 }));

    // A verified note whose body is not a checkpoint is refused by verify_checkpoint.
    let signer = signer("example.com/ledger", 7);
    let note = must(signer.sign("just a message\n"), "sign");
    assert_eq!(signer.verifier().verify(&note), Ok("just a message\n"));
    assert_eq!(signer.verifier().verify_checkpoint(&note), Err(NoteError::CheckpointTooShort(1)));
}

#[test]
fn unsignable_texts_and_checkpoints_are_refused() {
    let signer = signer("example.com/ledger", 7);
    assert!(matches!(signer.sign(""), Err(NoteError::UnsignableText(_))));
    assert!(matches!(signer.sign("no newline"), Err(NoteError::UnsignableText(_))));
    assert!(matches!(signer.sign("bell \x07\n"), Err(NoteError::UnsignableText(_))));
    let huge = "x".repeat(MAX_NOTE_BYTES) + "\n";
    assert!(matches!(signer.sign(&huge), Err(NoteError::TooLarge { .. })));
    // Text with empty lines is a valid note (the last blank line separates the signatures).
    let with_blank = "one\n\ntwo\n\n";
    let note = must(signer.sign(with_blank), "sign");
    assert_eq!(signer.verifier().verify(&note), Ok(with_blank));

    let mut cp = checkpoint(1);
    cp.origin = String::new();
    assert_eq!(signer.sign_checkpoint(&cp), Err(NoteError::EmptyOrigin));
    cp.origin = "two\nlines".into();
    assert!(matches!(signer.sign_checkpoint(&cp), Err(NoteError::OriginHasNewline(_))));
    let mut cp = checkpoint(1);
    cp.extensions = vec!["ok".into(), String::new()];
    assert_eq!(signer.sign_checkpoint(&cp), Err(NoteError::EmptyExtensionLine(2)));
    cp.extensions = vec!["a\nb".into()];
    assert_eq!(signer.sign_checkpoint(&cp), Err(NoteError::ExtensionHasNewline(1)));
}

/// The worked example of docs/FORMAT.md ("Tree and note formats"): the checkpoint of the
/// tree over the leaves "a", "b", "c", signed by the key whose seed is 32 bytes of 0x01.
/// These values are printed there, and this test keeps them true.
#[test]
fn format_doc_worked_example() {
    let leaves: Vec<Hash> = [b"a", b"b", b"c"].iter().map(|l| leaf_hash(*l)).collect();
    let root = must(merkle::root(&leaves, 3), "root");
    let signer = signer("example.com/ledger", 0x01);
    let cp = Checkpoint { origin: "example.com/ledger".into(), size: 3, root, extensions: vec![] };
    let vkey = signer.verifier().to_vkey_string();
    let note = must(signer.sign_checkpoint(&cp), "sign");
    println!("vkey: {vkey}");
    println!("skey: {}", signer.to_private_key_string());
    println!("note:\n{note}");
    assert_eq!(vkey, "example.com/ledger+3481d542+AYqI4910CfGV/VLbLTy6XXLKZwm/HZQSG/N0iAG0D29c");
    assert_eq!(
        note,
        "example.com/ledger\n\
         3\n\
         bGLdUqCXG30Ap86tAE4MPzwHZuP1NZoPgpd2jSsC0Dw=\n\
         \n\
         \u{2014} example.com/ledger NIHVQrfN9N2MT/9WPcwuDE1LAMAXBnug7y0zvuIAgmSMvAmXeP4fp1JznM0H8WAvetMSa23w9CPn6eDmvUlVs1pjrAQ=\n"
    );
    assert_eq!(signer.verifier().verify_checkpoint(&note), Ok(cp));
    let public_hex: String = signer.verifier().public_key().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(public_hex, "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    assert_eq!(
        signer.to_private_key_string(),
        "PRIVATE+KEY+example.com/ledger+3481d542+AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
    );
}
