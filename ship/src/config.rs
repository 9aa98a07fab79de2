//! The shipper's configuration: a TOML file (docs/CONFIG.md, "ledger-ship"), every key
//! optional but `bucket`, unknown keys refused with their line. No credentials: those come
//! from the AWS environment chain (see [`crate::bucket`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The file as written.
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// ledgerd's socket (default: as `ledgerctl` finds it).
    pub socket: Option<PathBuf>,
    /// `s3://BUCKET/PREFIX`.
    pub bucket: Option<String>,
    /// S3 endpoint URL for S3-compatible stores (default: AWS, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Allow an `http://` endpoint (a store on loopback or a private network).
    #[serde(default)]
    pub allow_http: bool,
    /// Where the cursor and status files live.
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub batch: Batch,
    #[serde(default)]
    pub backoff: Backoff,
}

/// `[batch]`: when a range is shipped.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Batch {
    /// Ship what has arrived at least this often.
    pub interval: String,
    /// Ship as soon as this many entries wait; also the most entries in one leaves
    /// object or Parquet file (which bounds the shipper's and the verifier's memory).
    pub max_entries: u64,
}

impl Default for Batch {
    fn default() -> Self {
        Batch { interval: "10s".into(), max_entries: 100_000 }
    }
}

/// `[backoff]`: waiting after a failure (the store or the daemon down).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial: String,
    pub max: String,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: "1s".into(), max: "1m".into() }
    }
}

/// The settings the shipper runs with, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub socket: PathBuf,
    pub bucket: String,
    pub endpoint: crate::bucket::Endpoint,
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub max_entries: u64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// A configuration that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parses `text` (from `path`, for messages).
pub fn parse(text: &str, path: &Path) -> Result<File, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
    parse(&text, path)
}

/// Parses "10s", "5m", "1h 30m", "500ms" (more than zero).
pub fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d: jiff::SignedDuration = text.parse().map_err(|e| {
        ConfigError(format!("{key} = {text:?}: {e}; write a duration such as \"10s\" or \"5m\""))
    })?;
    match Duration::try_from(d) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError(format!("{key} = {text:?}: must be more than zero"))),
    }
}

impl File {
    /// Checks the file and fills in defaults.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let bucket = self.bucket.clone().ok_or_else(|| {
            ConfigError("no bucket: set `bucket = \"s3://BUCKET/PREFIX\"` or pass --bucket".into())
        })?;
        crate::bucket::parse_url(&bucket).map_err(|e| ConfigError(e.to_string()))?;
        if self.batch.max_entries == 0 {
            return Err(ConfigError("batch.max_entries must be at least 1".into()));
        }
        let backoff_initial = duration("backoff.initial", &self.backoff.initial)?;
        let backoff_max = duration("backoff.max", &self.backoff.max)?;
        if backoff_max < backoff_initial {
            return Err(ConfigError("backoff.max must not be below backoff.initial".into()));
        }
        Ok(Settings {
            socket: self.socket.clone().unwrap_or_else(ledger_client::default_socket),
            bucket,
            endpoint: crate::bucket::Endpoint {
                url: self.endpoint.clone(),
                region: self.region.clone(),
                allow_http: self.allow_http,
            },
            state_dir: self.state_dir.clone().unwrap_or_else(|| PathBuf::from("./ledger-ship")),
            interval: duration("batch.interval", &self.batch.interval)?,
            max_entries: self.batch.max_entries,
            backoff_initial,
            backoff_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `toml ledger-ship` example in docs/CONFIG.md parses and checks.
    #[test]
    fn the_documented_configs_parse() {
        let doc = include_str!("../../docs/CONFIG.md");
        let examples: Vec<&str> =
            doc.split("```toml ledger-ship\n").skip(1).filter_map(|rest| rest.split("```").next()).collect();
        assert!(!examples.is_empty(), "docs/CONFIG.md has ledger-ship examples");
        for text in examples {
            let file = parse(text, Path::new("CONFIG.md")).unwrap_or_else(|e| panic!("{e}\n{text}"));
            file.settings().unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("bucket = \"s3://b\"\n[batch]\nmax_entires = 5\n", Path::new("x.toml")).err();
        assert!(e.is_some_and(|e| e.to_string().contains("max_entires")));
        let f =
            parse("bucket = \"s3://b\"\n[batch]\ninterval = \"0s\"\n", Path::new("x.toml")).expect("parses");
        assert!(f.settings().err().is_some_and(|e| e.to_string().contains("more than zero")));
        let f = parse("", Path::new("x.toml")).expect("parses");
        assert!(f.settings().err().is_some_and(|e| e.to_string().contains("--bucket")));
    }
}
