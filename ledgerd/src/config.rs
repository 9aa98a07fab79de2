//! The daemon's configuration: embedded defaults, an optional TOML file, then flags.
//!
//! With no file at all ledgerd runs with [`Config::default`]: data in `./ledger-data`
//! (or `$LEDGERD_DATA_DIR`), the socket inside it. Unknown keys in a file are errors
//! (with their line), so a misspelt setting never silently does nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The data dir used when neither a flag, a config file nor `$LEDGERD_DATA_DIR` names one.
pub const DEFAULT_DATA_DIR: &str = "./ledger-data";

/// Everything ledgerd can be told.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the log, its keys and (by default) the socket live.
    pub data_dir: PathBuf,
    /// The gRPC socket; default `<data_dir>/ledgerd.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Flag decisions that carry no agent token (`missing_token`). Off by default: on a
    /// laptop, agents have no tokens.
    pub require_agent_token: bool,
    pub checkpoint: CheckpointConfig,
    pub storage: StorageConfig,
}

/// When checkpoints are signed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// How often to sign a checkpoint when the tree has grown, e.g. "10s", "1m".
    pub interval: String,
}

/// sled tuning.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// sled's page cache in bytes (sled's own default, 1 GiB, is too much for a sidecar).
    pub cache_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: std::env::var_os("LEDGERD_DATA_DIR")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
            socket: None,
            require_agent_token: false,
            checkpoint: CheckpointConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { interval: "10s".into() }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { cache_bytes: crate::store::DEFAULT_CACHE_BYTES }
    }
}

/// A config that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key} = {value:?} is not valid: {why}")]
    Invalid { path: PathBuf, key: &'static str, value: String, why: String },
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, path)
    }

    /// Parses TOML text (`path` is for messages) and checks every value.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.checkpoint_interval().map_err(|why| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "checkpoint.interval",
            value: self.checkpoint.interval.clone(),
            why,
        })?;
        Ok(())
    }

    /// The socket path in effect.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| self.data_dir.join("ledgerd.sock"))
    }

    /// `checkpoint.interval` as a duration (at least one second).
    pub fn checkpoint_interval(&self) -> Result<Duration, String> {
        parse_duration(&self.checkpoint.interval)
    }

    /// The effective config as TOML, for `--check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Parses durations like "10s", "5m", "1h 30m" (at least one second).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        text.parse().map_err(|e| format!("{e}; write a duration such as \"10s\", \"5m\" or \"1h\""))?;
    let d = Duration::try_from(d).map_err(|_| "a negative duration makes no sense here".to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", Path::new("x.toml")).expect("parse");
        assert_eq!(c.checkpoint_interval(), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn unknown_key_names_its_line() {
        let err = Config::parse("[checkpoint]\ninterval = \"5s\"\nintreval = \"1s\"\n", Path::new("x.toml"))
            .expect_err("unknown key must fail");
        let msg = err.to_string();
        assert!(msg.contains("intreval") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_interval_is_explained() {
        let err =
            Config::parse("[checkpoint]\ninterval = \"soon\"\n", Path::new("x.toml")).expect_err("must fail");
        assert!(err.to_string().contains("checkpoint.interval"), "{err}");
    }
}
