//! The files of a bundle: which must be there, how an agent's name becomes the folder of
//! its policy files, and the decimal-string integers of `proof.json` (docs/FORMAT.md,
//! "Evidence bundle").

/// The registry at the end of the period.
pub const AGENTS: &str = "agents.csv";
/// Every policy version in force at some moment of the period.
pub const POLICY_CHANGES: &str = "policy_changes.csv";
/// Who could do what, at the start and at the end of the period.
pub const ACCESS_REVIEW: &str = "access_review.csv";
/// The human summary.
pub const SUMMARY: &str = "summary.html";
/// How to check the bundle, in words.
pub const VERIFY_MD: &str = "VERIFY.md";

/// Every file a bundle has besides the policy texts, sorted; a bundle holds exactly these
/// and the `policies/` files its `policy_changes.csv` names.
pub const REQUIRED: [&str; 11] = [
    super::MANIFEST,
    VERIFY_MD,
    ACCESS_REVIEW,
    AGENTS,
    super::CHECKPOINT,
    super::EVENTS,
    super::LEAVES,
    POLICY_CHANGES,
    super::PROOF,
    SUMMARY,
    super::VKEY,
];

/// The folder of the policy texts.
pub const POLICIES: &str = "policies";

/// Longest piece of an encoded agent name in one path component (file systems allow 255
/// bytes; agent names have at most 128 and every escaped byte takes 3).
pub const PIECE: usize = 120;

/// The folder (under `policies/`) of an agent's policy texts: an injective encoding of the
/// name, the same on case-insensitive file systems. Every byte of the UTF-8 name that is
/// `a`-`z`, `0`-`9` or `-` stays; every other byte (capitals, `_`, `.`, `@`, `*`, `/`,
/// bytes of non-ASCII characters) becomes `_` and two lowercase hex digits. The result is
/// cut into pieces of [`PIECE`] bytes, nested folders (almost always one). The default
/// policy `*` is `_2a`.
pub fn agent_folder(agent: &str) -> String {
    let mut encoded = String::with_capacity(agent.len());
    for b in agent.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("_{b:02x}"));
        }
    }
    // Every character is ASCII, so any byte offset is a char boundary.
    let pieces: Vec<&str> =
        encoded.as_bytes().chunks(PIECE).filter_map(|c| std::str::from_utf8(c).ok()).collect();
    pieces.join("/")
}

/// Where a policy version's text is in the bundle: `policies/<folder>/v<version>.txt`.
pub fn policy_path(agent: &str, version: u64) -> String {
    format!("{POLICIES}/{}/v{version}.txt", agent_folder(agent))
}

/// `proof.json` writes every integer as a JSON string of decimal digits (nanosecond times
/// exceed 2^53, which JSON readers that use doubles would round): `-` only for negative
/// numbers, no `+`, no leading zeros, `0` for zero.
pub mod decimal {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: ToString, S: Serializer>(n: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_string())
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr + ToString,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| D::Error::custom(format!("{text:?} is not a decimal integer in range")))
    }

    /// The number `text` spells, only if it is spelled the one way `serialize` writes it.
    pub fn parse<T: std::str::FromStr + ToString>(text: &str) -> Option<T> {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: T = text.parse().ok()?;
        (n.to_string() == text).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_files_never_overwrite_each_other() {
        let names = [
            "*",
            "_default",
            "_2a",
            "x@y",
            "x_y",
            "x_40y",
            "..",
            ".",
            "a/b",
            "a_2fb",
            "Bot",
            "bot",
            "_42ot",
            "é",
            "_c3_a9",
            "billing-bot",
        ];
        let folders: std::collections::BTreeSet<String> = names.iter().map(|n| agent_folder(n)).collect();
        assert_eq!(folders.len(), names.len(), "{folders:?}");
        assert_eq!(agent_folder("billing-bot"), "billing-bot");
        assert_eq!(agent_folder("*"), "_2a");
        assert_eq!(agent_folder("x@y"), "x_40y");
        assert_eq!(agent_folder("Bot"), "_42ot");
        assert_eq!(agent_folder("é"), "_c3_a9");
        for name in names {
            let folder = agent_folder(name);
            // Never ".", "..", empty, or a separator: always a folder of its own under policies/.
            assert!(
                folder.split('/').all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('.')),
                "{name}"
            );
        }
        // The longest names (128 bytes, every byte escaped) stay within file-name limits.
        let long = "@".repeat(128);
        let folder = agent_folder(&long);
        assert!(folder.split('/').all(|p| p.len() <= PIECE) && folder.replace('/', "").len() == 384);
        assert_ne!(agent_folder(&"@".repeat(40)), agent_folder(&"@".repeat(41)));
    }

    #[test]
    fn decimals_have_one_spelling() {
        assert_eq!(decimal::parse::<u64>("0"), Some(0));
        assert_eq!(decimal::parse::<i64>("-5"), Some(-5));
        assert_eq!(decimal::parse::<u64>("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "-", "+1", "01", "-0", " 1", "1.0", "1e3", "18446744073709551616"] {
            assert_eq!(decimal::parse::<u64>(bad), None, "{bad:?}");
            assert_eq!(decimal::parse::<i64>(bad), None, "{bad:?}");
        }
    }
}
