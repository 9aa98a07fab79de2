//! Redaction of an entry's parameters before it is stored (see `docs/REDACTION.md`).
//!
//! Values under keys that look secret are replaced whole, credentials found inside any
//! string are replaced in place (only the matching span), and parameters over a size
//! limit are cut to a small, valid JSON document that keeps the whole value's hash.
//! A replaced value becomes `"[redacted:<16 hex>]"`: the first 8 bytes of the keyed
//! BLAKE3 hash of the secret, with a key kept in the data dir (`redaction.key`), so the
//! same secret always gives the same marker without the marker revealing it.
//!
//! [`Redactor::apply`] is a pure function of the text, the rules and the key.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Keys whose values are replaced whole, matched case-insensitively word by word (see
/// [`key_words`]): `password` matches `db_password` and `Password`, `api_key` matches
/// `apiKey` and `X-Api-Key`, but `token` does not match `max_tokens`.
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "auth",
    "cookie",
    "private_key",
    "client_secret",
    "access_key",
    "secret_key",
    "credentials",
    "session_key",
];

/// Keys that contain a secret key's words but are protocol fields known not to hold a
/// secret, compared word by word: MCP's `progressToken` (a request's progress handle,
/// which the MCP proxy keeps in `details._meta`).
pub const NOT_SECRET_KEYS: &[&str] = &["progress_token"];

/// Credential patterns found in any string. When a pattern has a group named `secret`,
/// only that group's span is replaced; otherwise the whole match is.
pub const DEFAULT_PATTERNS: &[&str] = &[
    // HTTP bearer tokens: "Authorization: Bearer abc…", "bearer abc…".
    r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]+=*)",
    // HTTP basic credentials in a header.
    r"(?i)\bauthorization:\s*basic\s+(?P<secret>[A-Za-z0-9+/]+=*)",
    // AWS access key ids.
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    // An AWS secret key (40 base64 characters) right after an access key id.
    r#"\b(?:AKIA|ASIA)[0-9A-Z]{16}[\s"',:;=|]{1,5}(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
    // An AWS secret key after its usual names.
    r#"(?i)(?:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)["']?\s*[=:]\s*["']?(?P<secret>[A-Za-z0-9/+]{40})"#,
    // PEM private keys, to their END line or, cut short, to the end of the text.
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|$)",
    // GitHub tokens.
    r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
    // Slack tokens.
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    // JSON Web Tokens.
    r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}",
    // Assignments in command lines and config text: password=…, token: …, API_KEY="…".
    r#"(?i)\b(?:password|passwd|secret|token|api[_-]?key)["']?\s*[=:]\s*["']?(?P<secret>[^\s"'&;,]{4,})"#,
    // Command-line options: --password …, --token=….
    r#"(?i)(?:^|\s)--?(?:password|passwd|token|api[_-]?key|secret)(?:=|\s+)["']?(?P<secret>[^\s"'&;,]{4,})"#,
    // ledgerd's own agent tokens (`ledgerctl agents register` prints them).
    r"\blgt_[A-Za-z0-9]{16,}",
    // A password in a URL: postgres://user:pass@host, https://user:pass@host, redis://:pass@host.
    r#"(?i)\b[a-z][a-z0-9+.-]*://[^\s:/?#@"'<>]*:(?P<secret>[^\s/?#@"'<>]+)@"#,
    // KEY=value lines of .env and credentials files (and `export KEY=value`) whose key
    // names a secret as one of its words: DB_PASSWORD=…, aws_session_token = …,
    // GITHUB_TOKEN=…, PGPASSWORD=… (the value: quoted, or up to a space, `;`, `&` or `|`).
    r#"(?im)^[ \t]*(?:export[ \t]+)?(?:[A-Za-z0-9]*[_.-])*[A-Za-z0-9]*?(?:password|passwd|passphrase|secret|token|api_?key|apikey|access_?key|private_?key|credentials?|auth|cookie|session_?key)(?:[_.-][A-Za-z0-9_.-]*)?[ \t]*[=:][ \t]*(?P<secret>"[^"\r\n]*"?|'[^'\r\n]*'?|[^\s;&|]+)"#,
];

/// The default limit on the params text, in bytes of JSON.
pub const DEFAULT_MAX_PARAMS_BYTES: usize = 16 * 1024;

/// The smallest allowed limit: room for the truncation document and a short prefix.
pub const MIN_MAX_PARAMS_BYTES: usize = 256;

/// The largest allowed limit: the whole entry must stay under
/// [`crate::service::intake::MAX_ENTRY_BYTES`].
pub const MAX_MAX_PARAMS_BYTES: usize = 48 * 1024;

/// The largest `redaction.output_excerpt_bytes`: an excerpt must leave room in the entry.
pub const MAX_OUTPUT_EXCERPT_BYTES: usize = 8 * 1024;

/// Bytes of the keyed hash shown in a marker (16 hex digits).
const MARKER_HASH_BYTES: usize = 8;

/// The result of [`Redactor::apply`]: always valid JSON (or empty, for empty params).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// How many values or spans were replaced.
    pub redacted: usize,
    /// Whether the text was over the limit and cut.
    pub truncated: bool,
}

/// The redaction rules, compiled, and the key for the markers.
pub struct Redactor {
    enabled: bool,
    key: [u8; 32],
    /// Each secret key name, split into its words.
    keys: Vec<Vec<String>>,
    patterns: Vec<Regex>,
    /// All patterns at once, multi-line, for [`Redactor::nothing_to_redact`]; `None` when
    /// a pattern uses `\A` or `\z`, which that check cannot honour.
    any_pattern: Option<regex::RegexSet>,
    max_bytes: usize,
    /// `redaction.output_excerpt_bytes` (0: outcomes keep no excerpt of a tool's output).
    output_excerpt_bytes: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Redactor")
            .field("enabled", &self.enabled)
            .field("keys", &self.keys.len())
            .field("patterns", &self.patterns.len())
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// Compiles one configured pattern; the error says what is wrong with it.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| e.to_string())
}

impl Redactor {
    /// Builds the rules of `config` with `key` (the data dir's `redaction.key`).
    pub fn new(config: &RedactionConfig, key: [u8; 32]) -> Result<Redactor, String> {
        let keys = config
            .keys
            .iter()
            .chain(&config.extra_keys)
            .map(|k| key_words(k))
            .filter(|words| !words.is_empty())
            .collect();
        let patterns = config
            .patterns
            .iter()
            .chain(&config.extra_patterns)
            .map(|p| compile(p).map_err(|e| format!("pattern {p:?}: {e}")))
            .collect::<Result<Vec<Regex>, _>>()?;
        let unsure = |p: &Regex| ["\\A", "\\z", "-m"].iter().any(|s| p.as_str().contains(s));
        let any_pattern = if patterns.iter().any(unsure) {
            None
        } else {
            Some(
                regex::RegexSet::new(patterns.iter().map(|p| format!("(?m){}", p.as_str())))
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Redactor {
            enabled: config.enabled,
            key,
            keys,
            patterns,
            any_pattern,
            max_bytes: config.max_params_bytes,
            output_excerpt_bytes: config.output_excerpt_bytes,
        })
    }

    /// How much of a tool's output an outcome keeps, redacted (0: none; see
    /// [`crate::outcome`]).
    pub fn output_excerpt_bytes(&self) -> usize {
        self.output_excerpt_bytes
    }

    /// The full keyed BLAKE3 hash of `bytes` (64 hex), with the markers' key: two equal
    /// texts give the same hash, and nobody without the key can test a guess.
    pub fn keyed_hash_hex(&self, bytes: &[u8]) -> String {
        blake3::keyed_hash(&self.key, bytes).to_hex().to_string()
    }

    /// Redacts `text` like params (every string at any depth) without cutting it: for
    /// `details`, whose size the entry limit bounds.
    pub fn redact_only(&self, text: &str) -> Redacted {
        if !self.enabled || text.is_empty() || self.nothing_to_redact(text) {
            return Redacted { text: text.to_string(), redacted: 0, truncated: false };
        }
        let (text, redacted) = self.redact(text);
        Redacted { text, redacted, truncated: false }
    }

    /// Redacts a parsed value in place (every string at any depth, secret keys' values);
    /// returns how many values or spans were replaced.
    pub fn redact_value(&self, value: &mut Value) -> usize {
        if self.enabled { self.walk(value) } else { 0 }
    }

    /// Redacts and, if needed, cuts `params`. Text that is not a JSON object or array is
    /// treated as one string value.
    pub fn apply(&self, params: &str) -> Redacted {
        if !self.enabled || params.is_empty() {
            return Redacted { text: params.to_string(), redacted: 0, truncated: false };
        }
        let Redacted { text, redacted, .. } = self.redact_only(params);
        if text.len() <= self.max_bytes {
            return Redacted { text, redacted, truncated: false };
        }
        Redacted { text: self.truncate(&text), redacted, truncated: true }
    }

    /// A quick proof that [`Redactor::redact`] would leave `params` as it is, without
    /// building the JSON tree: it is JSON, with no escapes (so every string's text appears
    /// as is), no pattern matches anywhere in it, and no object key in it is a secret key
    /// (each key checked exactly as the full redaction checks it, in one pass of the
    /// parser that builds nothing). Most calls carry no secret; this keeps the common case
    /// off the allocator.
    ///
    /// The patterns run over the text with every `"` turned into a line break, in
    /// multi-line mode: each string value is then a line of its own, so `^`, `$`, `\b` and
    /// `\s` see the same boundaries as when a pattern runs on that one string.
    fn nothing_to_redact(&self, params: &str) -> bool {
        let Some(any_pattern) = &self.any_pattern else { return false };
        if params.contains('\\') || any_pattern.is_match(&params.replace('"', "\n")) {
            return false;
        }
        let mut de = serde_json::Deserializer::from_str(params);
        matches!(serde::de::DeserializeSeed::deserialize(NoSecretKey(self), &mut de), Ok(true))
            && de.end().is_ok()
    }

    /// The full redaction: parse, replace secret keys' values and pattern spans, write back
    /// (only if something was replaced).
    fn redact(&self, params: &str) -> (String, usize) {
        match serde_json::from_str::<Value>(params) {
            Ok(mut value @ (Value::Object(_) | Value::Array(_))) => {
                let n = self.walk(&mut value);
                if n == 0 { (params.to_string(), 0) } else { (value.to_string(), n) }
            }
            Ok(Value::String(s)) => {
                let (out, n) = self.scrub(&s);
                if n == 0 { (params.to_string(), 0) } else { (Value::String(out).to_string(), n) }
            }
            Ok(_) => (params.to_string(), 0),
            // Not JSON: one string value, stored as a JSON string so the result is JSON.
            Err(_) => {
                let (out, n) = self.scrub(params);
                (Value::String(out).to_string(), n)
            }
        }
    }

    /// The marker for one secret.
    pub fn marker(&self, secret: &str) -> String {
        let hash = blake3::keyed_hash(&self.key, secret.as_bytes());
        let hex: String = hash.as_bytes()[..MARKER_HASH_BYTES].iter().map(|b| format!("{b:02x}")).collect();
        format!("[redacted:{hex}]")
    }

    fn walk(&self, value: &mut Value) -> usize {
        match value {
            Value::Object(map) => {
                let mut n = 0;
                for (key, child) in map.iter_mut() {
                    if !child.is_null() && self.secret_key(key) {
                        let secret = match &mut *child {
                            Value::String(s) => std::mem::take(s),
                            other => other.to_string(),
                        };
                        *child = Value::String(self.marker(&secret));
                        n += 1;
                    } else {
                        n += self.walk(child);
                    }
                }
                n
            }
            Value::Array(items) => items.iter_mut().map(|v| self.walk(v)).sum(),
            Value::String(s) => {
                let (out, n) = self.scrub(s);
                if n > 0 {
                    *s = out;
                }
                n
            }
            _ => 0,
        }
    }

    /// Whether a key looks secret: some configured key's words appear in it, in order and
    /// next to each other.
    fn secret_key(&self, key: &str) -> bool {
        // Each word of a key is a run of its characters, lowercased: a key none of whose
        // first words appears in it, ignoring ASCII case, cannot match (most keys; no
        // allocation). Keys with other than ASCII take the whole path.
        if key.is_ascii()
            && !self.keys.iter().any(|k| k.first().is_some_and(|w| contains_ignore_ascii_case(key, w)))
        {
            return false;
        }
        let words = key_words(key);
        if NOT_SECRET_KEYS.iter().any(|k| key_words(k) == words) {
            return false;
        }
        self.keys.iter().any(|k| words.windows(k.len()).any(|w| w == k.as_slice()))
    }

    /// Replaces every credential span in `s`; returns the new text and how many spans.
    fn scrub(&self, s: &str) -> (String, usize) {
        // One pass of the set says which patterns match at all (most strings: none); only
        // those are run again to find their spans.
        let matched = match &self.any_pattern {
            Some(set) => {
                let m = set.matches(s);
                if !m.matched_any() {
                    return (s.to_string(), 0);
                }
                Some(m)
            }
            None => None,
        };
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (i, re) in self.patterns.iter().enumerate() {
            if matched.as_ref().is_some_and(|m| !m.matched(i)) {
                continue;
            }
            for caps in re.captures_iter(s) {
                if let Some(m) = caps.name("secret").or_else(|| caps.get(0))
                    && !m.is_empty()
                {
                    spans.push((m.start(), m.end()));
                }
            }
        }
        if spans.is_empty() {
            return (s.to_string(), 0);
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for &(start, end) in &merged {
            out.push_str(&s[at..start]);
            out.push_str(&self.marker(&s[start..end]));
            at = end;
        }
        out.push_str(&s[at..]);
        (out, merged.len())
    }

    /// Cuts `text` to a JSON document of at most `max_bytes` that says what was cut:
    /// `{"_blake3": <hash of the whole text>, "_original_bytes": N, "_truncated": true,
    /// "prefix": <the text's first characters>}`.
    fn truncate(&self, text: &str) -> String {
        let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
        let mut keep = floor_boundary(text, self.max_bytes.saturating_sub(160));
        loop {
            let doc = serde_json::json!({
                "_truncated": true,
                "_original_bytes": text.len(),
                "_blake3": hash,
                "prefix": &text[..keep],
            })
            .to_string();
            if doc.len() <= self.max_bytes || keep == 0 {
                return doc;
            }
            let over = doc.len() - self.max_bytes;
            keep = floor_boundary(text, keep.saturating_sub(over));
        }
    }
}

/// Walks a JSON document without building it: `Ok(true)` if no object key in it is a
/// secret key of the redactor ([`Redactor::secret_key`]); `Ok(false)` as soon as one is.
/// Keys must be unescaped (the caller checked there is no `\\` in the text).
struct NoSecretKey<'r>(&'r Redactor);

impl<'de> serde::de::DeserializeSeed<'de> for NoSecretKey<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoSecretKey<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            if self.0.secret_key(key) || !map.next_value_seed(NoSecretKey(self.0))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(clean) = seq.next_element_seed(NoSecretKey(self.0))? {
            if !clean {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(true)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }
}

/// Whether `needle` (lowercase) appears in `hay`, ignoring ASCII case.
fn contains_ignore_ascii_case(hay: &str, needle: &str) -> bool {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    needle.is_empty() || hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// The largest char boundary of `s` at or below `at`.
fn floor_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A key's words, lowercase: split at anything not a letter or digit and where a lowercase
/// letter or digit is followed by an uppercase one (`apiKey` → `api`, `key`).
pub fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The `[redaction]` section: the rules of [`crate::service::redact::Redactor`].
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Redact and cut params at all.
    pub enabled: bool,
    /// Keys whose values are replaced whole; replaces the default list.
    pub keys: Vec<String>,
    /// Keys added to `keys`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_keys: Vec<String>,
    /// Credential regexes found in any string; replaces the default list.
    pub patterns: Vec<String>,
    /// Regexes added to `patterns`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_patterns: Vec<String>,
    /// Params longer than this (bytes of JSON text, after redaction) are cut.
    pub max_params_bytes: usize,
    /// Bytes of a tool's output an entry keeps as a redacted excerpt (0, the default:
    /// only its size, status and keyed hash; see docs/REDACTION.md for the risk).
    pub output_excerpt_bytes: usize,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            enabled: true,
            keys: crate::service::redact::DEFAULT_KEYS.iter().map(|k| k.to_string()).collect(),
            extra_keys: Vec::new(),
            patterns: crate::service::redact::DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect(),
            extra_patterns: Vec::new(),
            max_params_bytes: crate::service::redact::DEFAULT_MAX_PARAMS_BYTES,
            output_excerpt_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&RedactionConfig::default(), [7; 32]).expect("default rules compile")
    }

    fn apply(params: &str) -> Redacted {
        let r = redactor().apply(params);
        if !r.text.is_empty() {
            serde_json::from_str::<Value>(&r.text).unwrap_or_else(|e| panic!("{e}: {}", r.text));
        }
        r
    }

    #[test]
    fn the_quick_check_never_skips_what_the_full_redaction_replaces() {
        let r = redactor();
        let samples = [
            r#"{"path":"/srv/data/reports/q3.csv","limit":4096}"#,
            r#"{"command":"--password hunter2x"}"#,
            r#"{"command":"deploy --token abcd1234 now"}"#,
            r#"{"cmd":"export API_KEY=abcd1234"}"#,
            r#"{"note":"Bearer abcdefghijklmnop1234"}"#,
            r#"{"url":"https://bob:hunter22@example.com/x"}"#,
            r#"["AKIAIOSFODNN7EXAMPLE"]"#,
            r#"{"apiKey":"x"}"#,
            r#"{"a":"b","Secret":{"n":1}}"#,
            r#""token=abcdef""#,
            r#"{"text":"the word passwordless is fine"}"#,
            r#"{"escaped":"password=hunter2"}"#,
            "not json at all",
            "42",
            r#"{"tokens_used":5}"#,
            r#"{"t":"lgt_0123456789abcdef0123456789abcdef"}"#,
            r#"{"dsn":"postgres://app:hunter22@db:5432/x"}"#,
            r#"{"dsn":"redis://:hunter22@cache"}"#,
            r#"{"url":"https://example.com/a:b@c"}"#,
            r#"{"line":"DB_PASSWORD=hunter22"}"#,
            r#"{"line":"export GITHUB_TOKEN=abc"}"#,
            r#"{"line":"MAX_TOKENS=4096"}"#,
            r#"{"line":"AUTHOR=bob"}"#,
            r#"["x","PGPASSWORD=abc",1]"#,
            r#"{"a":"aws_session_token = FwoGZXIvYXdzEBYaDH"}"#,
        ];
        for text in samples {
            let full = r.redact(text);
            if r.nothing_to_redact(text) {
                assert_eq!(full, (text.to_string(), 0), "the quick check skipped {text}");
            }
            assert_eq!(r.apply(text).redacted, full.1, "{text}");
        }
        assert!(r.nothing_to_redact(samples[0]), "an ordinary call takes the quick path");
        assert!(!r.nothing_to_redact(samples[1]), "a secret at the start of a string is seen");
        // A key that shares only a word with a secret key (`api` of `api_key`) is not one:
        // the LLM gateway's decision details take the quick path.
        let details = r#"{"api":"anthropic","tool_call_id":"toolu_01","model":"m","stream":false,"policy_agent":"a","policy_hash":"ab12","shim":"llm"}"#;
        assert!(r.nothing_to_redact(details));
    }

    #[test]
    fn the_quick_check_agrees_with_the_full_redaction_on_every_key_in_any_place() {
        let r = redactor();
        let keys = [
            "api",
            "apiKey",
            "api_key",
            "API-KEY",
            "tokens_used",
            "progress_token",
            "token",
            "author",
            "AUTH",
            "my-secret-thing",
            "secretary",
            "sessionKey",
            "session",
            "client",
            "clientSecret",
            "private",
            "cookie_jar",
            "passwordless",
            "x",
            "Access_Key_Id",
            "credentials",
            "path",
        ];
        let values = [r#""v""#, "null", "1", r#"{"path":"/tmp"}"#, r#"["a",{"b":2}]"#, "true"];
        for key in keys {
            for value in values {
                for text in [
                    format!(r#"{{"{key}":{value}}}"#),
                    format!(r#"{{"a":1,"n":{{"m":[{{"{key}":{value}}}]}},"z":"q"}}"#),
                    format!(r#"[1,{{"{key}":{value},"b":null}}]"#),
                    format!(r#"{{"{key}":{value},"{key}2":{value}}}"#),
                ] {
                    let full = r.redact(&text);
                    if r.nothing_to_redact(&text) {
                        assert_eq!(full, (text.clone(), 0), "the quick check skipped {text}");
                    } else if value != "null" && key_words(key) == key_words("path") {
                        panic!("an ordinary key took the slow path: {text}");
                    }
                    assert_eq!(r.apply(&text).redacted, full.1, "{text}");
                }
            }
        }
    }

    fn is_marker(v: &Value) -> bool {
        v.as_str().is_some_and(|s| s.starts_with("[redacted:") && s.len() == "[redacted:]".len() + 16)
    }

    #[test]
    fn secret_keys_are_replaced_whole_at_any_depth() {
        let r = apply(
            r#"{"user":"bob","Password":"hunter2","nested":{"headers":{"X-Api-Key":"k1","Authorization":"Basic Ym9iOmh1bnRlcjI="}},"list":[{"client_secret":{"a":1}},{"max_tokens":5,"author":"ann"}],"db_password":null}"#,
        );
        let v: Value = serde_json::from_str(&r.text).expect("json");
        assert!(is_marker(&v["Password"]), "{}", r.text);
        assert!(is_marker(&v["nested"]["headers"]["X-Api-Key"]));
        assert!(is_marker(&v["nested"]["headers"]["Authorization"]));
        assert!(is_marker(&v["list"][0]["client_secret"]));
        assert_eq!((v["user"].as_str(), v["list"][1]["max_tokens"].as_u64()), (Some("bob"), Some(5)));
        assert_eq!(v["list"][1]["author"], "ann");
        assert!(v["db_password"].is_null());
        assert_eq!((r.redacted, r.truncated), (4, false));
        assert!(!r.text.contains("hunter2") && !r.text.contains("k1\""));
    }

    #[test]
    fn key_words_split_like_people_write_keys() {
        assert_eq!(key_words("X-Api-Key"), ["x", "api", "key"]);
        assert_eq!(key_words("apiKey"), ["api", "key"]);
        assert_eq!(key_words("AWS_SECRET_ACCESS_KEY"), ["aws", "secret", "access", "key"]);
        let r = redactor();
        for yes in
            ["password", "PASSWORD", "apiKey", "x-api-key", "apikey", "accessToken", "Set-Cookie", "auth"]
        {
            assert!(r.secret_key(yes), "{yes}");
        }
        for no in ["max_tokens", "author", "path", "keyboard", "passwords_checked", "progressToken"] {
            assert!(!r.secret_key(no), "{no}");
        }
    }

    #[test]
    fn every_pattern_replaces_only_its_span() {
        let cases = [
            ("curl -H 'Authorization: Bearer abc.def-123' https://x", "abc.def-123", "Bearer "),
            ("AKIAIOSFODNN7EXAMPLE is the id", "AKIAIOSFODNN7EXAMPLE", " is the id"),
            (
                "aws configure set AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY done",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                " done",
            ),
            (
                "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "export AWS_SECRET_ACCESS_KEY=",
            ),
            (
                "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nend",
                "MIIEow",
                "\nend",
            ),
            ("cut -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC", "b3BlbnNzaC", "cut "),
            ("push with ghp_0123456789abcdefghijABCDEFGHIJ0123456789 now", "ghp_0123", " now"),
            ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890", "slack "),
            ("jwt eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl!", "eyJhbGciOi", "!"),
            ("mysql --password=s3cr3tpw -h db", "s3cr3tpw", " -h db"),
            ("PGPASSWORD=x; login token: tok_12345", "tok_12345", "login token: "),
            (
                "export LEDGER_AGENT_TOKEN=lgt_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "lgt_0123",
                "export LEDGER_AGENT_TOKEN=",
            ),
            ("token lgt_0123456789abcdef0123456789abcdef in a sentence", "lgt_0123", " in a sentence"),
            ("psql postgres://app:hunter22@db:5432/billing -c x", "hunter22", "postgres://app:"),
            (
                "git clone https://bob:ghx-s3cret@git.example.com/r.git",
                "ghx-s3cret",
                "@git.example.com/r.git",
            ),
            ("redis-cli -u redis://:hunter22@cache:6379", "hunter22", "redis://:"),
            ("DB_HOST=db\nDB_PASSWORD=hunter2 # prod\nDB_USER=app", "hunter2", "DB_USER=app"),
            ("[default]\naws_session_token = FwoGZXIvYXdzEBYaDHabc\nregion=x", "FwoGZXIv", "region=x"),
            ("STRIPE_SECRET_KEY=sk_live_abcdef\n", "sk_live_abcdef", "STRIPE_SECRET_KEY="),
            ("PGPASSWORD=pw42x psql", "pw42x", "PGPASSWORD="),
            ("API_KEY='two words'\nNEXT=1", "two words", "NEXT=1"),
        ];
        for (input, secret, kept) in cases {
            let params = serde_json::json!({ "command": input }).to_string();
            let r = apply(&params);
            let v: Value = serde_json::from_str(&r.text).expect("json");
            let out = v["command"].as_str().expect("string");
            assert!(r.redacted >= 1, "{input}: {out}");
            assert!(!out.contains(secret), "{input}: {out}");
            assert!(out.contains(kept) && out.contains("[redacted:"), "{input}: {out}");
        }
        let r = apply(r#"{"command":"ls -la /tmp","sha":"0123456789abcdef0123456789abcdef01234567"}"#);
        assert_eq!(r.redacted, 0);
        // Lines whose key only looks like a secret word, and URLs without a password, stay.
        for kept in [
            "MAX_TOKENS=4096",
            "AUTHOR=bob",
            "TOKENIZER=bpe",
            "see https://example.com/a:b@c",
            "https://user@host/x",
            "lgt_short",
        ] {
            let params = serde_json::json!({ "command": kept }).to_string();
            assert_eq!(apply(&params).redacted, 0, "{kept}");
        }
    }

    #[test]
    fn the_same_secret_gives_the_same_marker_and_another_key_another() {
        let a = redactor();
        let b = Redactor::new(&RedactionConfig::default(), [8; 32]).expect("rules");
        let one = a.apply(r#"{"password":"hunter2"}"#);
        let two = a.apply(r#"{"cmd":"login --password hunter2","nested":[{"passwd":"hunter2"}]}"#);
        let m = a.marker("hunter2");
        assert_eq!(one.text, format!(r#"{{"password":"{m}"}}"#));
        assert_eq!(two.text.matches(&m).count(), 2, "{}", two.text);
        assert_ne!(b.marker("hunter2"), m);
        assert_ne!(a.marker("hunter3"), m);
    }

    #[test]
    fn text_that_is_not_an_object_is_one_string() {
        let r = apply(r#""Bearer abcdefgh""#);
        assert!(r.text.starts_with("\"Bearer [redacted:") && r.redacted == 1, "{}", r.text);
        assert_eq!(apply("42").text, "42");
        assert_eq!(apply("").text, "");
        let r = apply("not json, token=abcd1234");
        assert!(r.text.starts_with("\"not json, token=[redacted:"), "{}", r.text);
        // Nothing to redact: the text is kept byte for byte (key order and spacing).
        let text = r#"{ "z": 1, "a": [true, null] }"#;
        assert_eq!(apply(text), Redacted { text: text.into(), redacted: 0, truncated: false });
    }

    #[test]
    fn big_params_are_cut_to_valid_json_with_the_whole_hash() {
        let big = serde_json::json!({ "content": "é\"x".repeat(20_000), "token": "t0k3n" }).to_string();
        let r = apply(&big);
        assert!(r.truncated && r.redacted == 1);
        assert!(r.text.len() <= DEFAULT_MAX_PARAMS_BYTES, "{}", r.text.len());
        let v: Value = serde_json::from_str(&r.text).expect("json");
        assert_eq!(v["_truncated"], true);
        let whole = big.len() - "t0k3n".len() + redactor().marker("t0k3n").len();
        assert_eq!(v["_original_bytes"], whole);
        assert!(v["prefix"].as_str().is_some_and(|p| p.len() > 8_000 && !p.contains("t0k3n")));
        // Nothing redacted: the hash is that of the text as sent.
        let plain = serde_json::json!({ "content": "y".repeat(100_000) }).to_string();
        let r = apply(&plain);
        let v: Value = serde_json::from_str(&r.text).expect("json");
        assert_eq!(v["_blake3"], blake3::hash(plain.as_bytes()).to_hex().as_str());
        assert_eq!(v["_original_bytes"], plain.len());
        // A tiny limit still gives valid JSON.
        let config = RedactionConfig { max_params_bytes: MIN_MAX_PARAMS_BYTES, ..RedactionConfig::default() };
        let r = Redactor::new(&config, [0; 32]).expect("rules").apply(&big);
        assert!(r.text.len() <= MIN_MAX_PARAMS_BYTES && serde_json::from_str::<Value>(&r.text).is_ok());
    }

    #[test]
    fn output_is_always_valid_json() {
        let inputs = [
            r#"{"a":"\u0000-----BEGIN PRIVATE KEY-----\n\"\\"}"#,
            r#"[["Bearer x\"y"],{"cookie":[1,2]}]"#,
            r#""plain""#,
            "\"eyJabcd.eyJabcd.abcd\"",
            "{\"k\":\"ghp_0123456789abcdefghijABCDEFGHIJ0123456789\u{1F600}\"}",
            "true",
            "unparsable {{",
        ];
        for input in inputs {
            apply(input);
        }
    }

    #[test]
    fn configured_rules_replace_or_extend_the_defaults() {
        let config = RedactionConfig {
            keys: vec!["pin".into()],
            extra_keys: vec!["ssn".into()],
            patterns: vec![r"\d{4}-\d{4}".into()],
            extra_patterns: vec![r"card=(?P<secret>\d+)".into()],
            ..RedactionConfig::default()
        };
        let r = Redactor::new(&config, [1; 32]).expect("rules");
        let out = r.apply(r#"{"pin":"1234","SSN":"x","password":"kept","note":"call 1234-5678, card=99"}"#);
        let v: Value = serde_json::from_str(&out.text).expect("json");
        assert!(is_marker(&v["pin"]) && is_marker(&v["SSN"]));
        assert_eq!(v["password"], "kept");
        let note = v["note"].as_str().expect("note");
        assert!(note.starts_with("call [redacted:") && note.contains(", card=[redacted:"), "{note}");
        let off = RedactionConfig { enabled: false, ..RedactionConfig::default() };
        let text = r#"{"password":"x"}"#;
        assert_eq!(Redactor::new(&off, [1; 32]).expect("rules").apply(text).text, text);
        let bad = RedactionConfig { extra_patterns: vec!["(".into()], ..RedactionConfig::default() };
        assert!(Redactor::new(&bad, [1; 32]).is_err());
    }
}
