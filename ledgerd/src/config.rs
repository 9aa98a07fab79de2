//! The daemon's configuration: embedded defaults, an optional TOML file, then flags.
//!
//! With no file at all ledgerd runs with [`Config::default`]: data in `./ledger-data`
//! (or `$LEDGERD_DATA_DIR`), the socket inside it, and every role held by the user who
//! runs the daemon. Unknown keys in a file are errors (with their line), so a misspelt
//! setting never silently does nothing. Every key is documented in `docs/CONFIG.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

// Each layer keeps its own config types; the reader assembles them.
pub use crate::scoring::scorer::parse_duration;
pub use crate::service::auth::{RoleMembers, RolesConfig};
pub use crate::service::publish::PublishConfig;
pub use crate::service::redact::RedactionConfig;

/// The data dir used when neither a flag, a config file nor `$LEDGERD_DATA_DIR` names one.
pub const DEFAULT_DATA_DIR: &str = "./ledger-data";

/// The socket's mode unless the config says otherwise: owner and group may connect.
pub const DEFAULT_SOCKET_MODE: &str = "0660";

/// Everything ledgerd can be told.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the log, its keys and (by default) the socket live.
    pub data_dir: PathBuf,
    /// The gRPC socket; default `<data_dir>/ledgerd.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The group that owns the socket; default: the group it is created with (the
    /// daemon's primary group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<GroupSpec>,
    /// The socket's permission bits in octal, e.g. "0660". Connecting needs write
    /// permission, so "0660" lets the owner and the socket's group connect.
    pub socket_mode: String,
    /// Flag decisions that carry no agent token (`missing_token`). Off by default: on a
    /// laptop, agents have no tokens.
    pub require_agent_token: bool,
    pub checkpoint: CheckpointConfig,
    pub storage: StorageConfig,
    /// Who holds which role. `None` (no `[roles]` section): only the daemon's own user,
    /// which holds every role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roles: Option<RolesConfig>,
    /// What is redacted from an entry's params before it is stored (`docs/REDACTION.md`).
    pub redaction: RedactionConfig,
    /// What one caller may send and how many may be connected.
    pub limits: LimitsConfig,
    /// Where every checkpoint is delivered besides the store (`[[publish]]`, see
    /// [`crate::service::publish`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishConfig>,
    /// Severity scoring: weights, action classes, baselines (`docs/SEVERITY.md`).
    pub scorer: crate::scoring::scorer::ScorerConfig,
    /// Where entries at or above a severity are sent as they are committed.
    pub alerts: crate::alerts::AlertsConfig,
}

/// The `[limits]` section.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Params (JSON text, as sent) longer than this are refused and nothing is written.
    /// Params under it but over `redaction.max_params_bytes` are stored cut.
    pub max_params_bytes: usize,
    /// Connections open at once; a caller beyond it is refused with a message saying so.
    pub max_connections: usize,
}

/// Default of `limits.max_params_bytes`: 1 MiB.
pub const DEFAULT_LIMIT_PARAMS_BYTES: usize = 1024 * 1024;
/// Highest `limits.max_params_bytes`: a request larger than 4 MiB is refused by gRPC anyway.
pub const MAX_LIMIT_PARAMS_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;
/// Default of `limits.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_params_bytes: DEFAULT_LIMIT_PARAMS_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl LimitsConfig {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: usize, why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value: value.to_string(),
            why,
        };
        if !(1..=MAX_LIMIT_PARAMS_BYTES).contains(&self.max_params_bytes) {
            return Err(invalid(
                "limits.max_params_bytes",
                self.max_params_bytes,
                format!("must be from 1 to {MAX_LIMIT_PARAMS_BYTES}"),
            ));
        }
        if !(1..=65536).contains(&self.max_connections) {
            return Err(invalid(
                "limits.max_connections",
                self.max_connections,
                "must be from 1 to 65536".into(),
            ));
        }
        Ok(())
    }
}

/// Default of a `[[publish]]` target's `timeout`.
pub const DEFAULT_PUBLISH_TIMEOUT: &str = "30s";

impl PublishConfig {
    /// How long one delivery may take.
    pub fn timeout(&self) -> Result<Duration, String> {
        parse_duration(self.timeout.as_deref().unwrap_or(DEFAULT_PUBLISH_TIMEOUT))
    }

    fn validate(&self, path: &Path, n: usize) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            why: format!("[[publish]] number {n}: {why}"),
        };
        match (&self.dir, &self.command) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "publish",
                    format!("{self:?}"),
                    "give exactly one of dir = \"/path\" or command = [\"program\", \"arg\"]; write two [[publish]] tables for both".into(),
                ));
            }
            (Some(dir), None) if !dir.is_absolute() => {
                return Err(invalid(
                    "publish.dir",
                    dir.display().to_string(),
                    "write an absolute path (the daemon's working directory is not where you think)".into(),
                ));
            }
            (None, Some(cmd)) if cmd.first().is_none_or(|p| p.trim().is_empty()) => {
                return Err(invalid(
                    "publish.command",
                    format!("{cmd:?}"),
                    "name the program first, e.g. [\"logger\", \"-t\", \"ledgerd-checkpoint\"]".into(),
                ));
            }
            _ => {}
        }
        self.timeout()
            .map_err(|why| invalid("publish.timeout", self.timeout.clone().unwrap_or_default(), why))?;
        Ok(())
    }
}

/// A group named in the config: a name from `/etc/group`, or a gid (as a number or a
/// string of digits).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum GroupSpec {
    Gid(u32),
    Name(String),
}

impl<'de> Deserialize<'de> for GroupSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<GroupSpec, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GroupSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a group name such as \"ledger-writers\" or a gid such as 1500")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GroupSpec, E> {
                Ok(GroupSpec::Name(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GroupSpec, E> {
                u32::try_from(v)
                    .ok()
                    .filter(|gid| *gid != u32::MAX)
                    .map(GroupSpec::Gid)
                    .ok_or_else(|| E::custom(format!("{v} is not a gid; a gid is from 0 to 4294967294")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GroupSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// When checkpoints are signed.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// How often to sign a checkpoint when the tree has grown, e.g. "10s", "1m".
    pub interval: String,
}

impl RedactionConfig {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, value: String, why: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            why,
        };
        for (key, list) in [("redaction.keys", &self.keys), ("redaction.extra_keys", &self.extra_keys)] {
            if let Some(k) = list.iter().find(|k| crate::service::redact::key_words(k).is_empty()) {
                return Err(invalid(key, k.clone(), "a key needs at least one letter or digit".into()));
            }
        }
        for (key, list) in
            [("redaction.patterns", &self.patterns), ("redaction.extra_patterns", &self.extra_patterns)]
        {
            for pattern in list {
                crate::service::redact::compile(pattern).map_err(|why| invalid(key, pattern.clone(), why))?;
            }
        }
        let (min, max) =
            (crate::service::redact::MIN_MAX_PARAMS_BYTES, crate::service::redact::MAX_MAX_PARAMS_BYTES);
        if !(min..=max).contains(&self.max_params_bytes) {
            return Err(invalid(
                "redaction.max_params_bytes",
                self.max_params_bytes.to_string(),
                format!("must be from {min} to {max} (the whole entry must stay under 60 KiB)"),
            ));
        }
        if self.output_excerpt_bytes > crate::service::redact::MAX_OUTPUT_EXCERPT_BYTES {
            return Err(invalid(
                "redaction.output_excerpt_bytes",
                self.output_excerpt_bytes.to_string(),
                format!(
                    "must be from 0 (no excerpt, the default) to {}",
                    crate::service::redact::MAX_OUTPUT_EXCERPT_BYTES
                ),
            ));
        }
        Ok(())
    }
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
            socket_group: None,
            socket_mode: DEFAULT_SOCKET_MODE.into(),
            require_agent_token: false,
            checkpoint: CheckpointConfig::default(),
            storage: StorageConfig::default(),
            roles: None,
            redaction: RedactionConfig::default(),
            limits: LimitsConfig::default(),
            publish: Vec::new(),
            scorer: crate::scoring::scorer::ScorerConfig::default(),
            alerts: crate::alerts::AlertsConfig::default(),
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
        StorageConfig { cache_bytes: crate::storage::store::DEFAULT_CACHE_BYTES }
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
    #[error("config file {path}: [{section}] {why}")]
    Section { path: PathBuf, section: &'static str, why: String },
    #[error(transparent)]
    Accounts(#[from] crate::service::auth::AccountsError),
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
        self.socket_mode().map_err(|why| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "socket_mode",
            value: self.socket_mode.clone(),
            why,
        })?;
        if let Some(GroupSpec::Name(name)) = &self.socket_group
            && !name.bytes().all(|b| b.is_ascii_digit())
        {
            check_name(name).map_err(|why| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "socket_group",
                value: name.clone(),
                why,
            })?;
        }
        if let Some(roles) = &self.roles {
            roles.validate(path)?;
        }
        self.redaction.validate(path)?;
        self.limits.validate(path)?;
        for (i, target) in self.publish.iter().enumerate() {
            target.validate(path, i + 1)?;
        }
        let section = |section: &'static str| {
            move |why: String| ConfigError::Section { path: path.to_path_buf(), section, why }
        };
        crate::scoring::scorer::Scorer::new(self.scorer.clone()).map_err(|e| section("scorer")(e.0))?;
        self.alerts.validate().map_err(section("alerts"))?;
        Ok(())
    }

    /// The socket path in effect.
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| self.data_dir.join("ledgerd.sock"))
    }

    /// `socket_mode` as permission bits: octal, at most 0777 (no setuid, setgid or sticky bit).
    pub fn socket_mode(&self) -> Result<u32, String> {
        let text = self.socket_mode.trim();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let mode = u32::from_str_radix(digits, 8)
            .ok()
            .filter(|_| !digits.is_empty() && digits.len() <= 4)
            .ok_or_else(|| "write the mode as octal digits in quotes, such as \"0660\"".to_string())?;
        if mode > 0o777 {
            return Err("only permission bits (at most 0777) can be set on the socket".into());
        }
        Ok(mode)
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

impl RolesConfig {
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let roles = [("writer", &self.writer), ("auditor", &self.auditor), ("admin", &self.admin)];
        for (role, members) in roles {
            let invalid = |list: &str, value: String, why: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: role_key(role, list),
                value,
                why,
            };
            for (list, names) in [("users", &members.users), ("groups", &members.groups)] {
                for name in names {
                    check_name(name).map_err(|why| invalid(list, name.clone(), why))?;
                }
            }
            for (list, ids) in [("uids", &members.uids), ("gids", &members.gids)] {
                if let Some(id) = ids.iter().find(|id| **id == u32::MAX) {
                    let why = "4294967295 means \"no id\" to the kernel; list a real id".to_string();
                    return Err(invalid(list, id.to_string(), why));
                }
            }
        }
        Ok(())
    }
}

/// The config key of one list of one role, for messages.
fn role_key(role: &str, list: &str) -> &'static str {
    match (role, list) {
        ("writer", "users") => "roles.writer.users",
        ("writer", "groups") => "roles.writer.groups",
        ("writer", "uids") => "roles.writer.uids",
        ("writer", _) => "roles.writer.gids",
        ("auditor", "users") => "roles.auditor.users",
        ("auditor", "groups") => "roles.auditor.groups",
        ("auditor", "uids") => "roles.auditor.uids",
        ("auditor", _) => "roles.auditor.gids",
        (_, "users") => "roles.admin.users",
        (_, "groups") => "roles.admin.groups",
        (_, "uids") => "roles.admin.uids",
        _ => "roles.admin.gids",
    }
}

/// A user or group name as `/etc/passwd` and `/etc/group` can hold it.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.chars().any(|c| c == ':' || c == ',' || c.is_whitespace() || c.is_control()) {
        return Err("user and group names cannot contain ':', ',', spaces or control characters".into());
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err("this is a number, not a name; list numeric ids in uids or gids".into());
    }
    Ok(())
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

    /// Every TOML example in docs/CONFIG.md, so the documentation cannot rot.
    fn documented_examples() -> Vec<String> {
        let doc = include_str!("../../docs/CONFIG.md");
        doc.split("```toml\n").skip(1).filter_map(|rest| rest.split("```").next()).map(String::from).collect()
    }

    #[test]
    fn the_documented_configs_parse_and_read_back_the_same() {
        let examples = documented_examples();
        assert!(!examples.is_empty(), "docs/CONFIG.md has TOML examples");
        for text in &examples {
            let c = Config::parse(text, Path::new("CONFIG.md")).unwrap_or_else(|e| panic!("{e}\n{text}"));
            // `--check-config` prints what parses back to the same config.
            assert_eq!(Config::parse(&c.to_toml(), Path::new("effective.toml")).expect("round trip"), c);
        }
        let production = Config::parse(&examples[0], Path::new("CONFIG.md")).expect("parse");
        assert_eq!(production.socket_group, Some(GroupSpec::Name("ledger".into())));
        assert_eq!(production.socket_mode(), Ok(0o660));
        let roles = production.roles.as_ref().expect("roles");
        assert_eq!(
            (roles.writer.users.as_slice(), roles.admin.groups.as_slice()),
            (&["agent-host".to_string()][..], &["ledger-admins".to_string()][..])
        );
    }

    #[test]
    fn socket_and_roles_settings_are_checked() {
        let c = Config::parse("", Path::new("x.toml")).expect("parse");
        assert_eq!((c.socket_mode(), c.roles), (Ok(0o660), None));
        let c = Config::parse("socket_group = 1234\nsocket_mode = \"666\"\n", Path::new("x.toml"))
            .expect("parse");
        assert_eq!((c.socket_mode(), c.socket_group), (Ok(0o666), Some(GroupSpec::Gid(1234))));
        for (text, key) in [
            ("socket_mode = \"rw\"\n", "socket_mode"),
            ("socket_mode = \"4770\"\n", "socket_mode"),
            ("socket_group = \"a b\"\n", "socket_group"),
            ("socket_group = -3\n", "-3 is not a gid"),
            ("[roles]\nauditor = { users = [\"\"] }\n", "roles.auditor.users"),
            ("[roles]\nadmin = { groups = [\"1000\"] }\n", "roles.admin.groups"),
            ("[roles]\nwriter = { gids = [4294967295] }\n", "roles.writer.gids"),
        ] {
            let err = Config::parse(text, Path::new("x.toml")).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Config::parse("[roles]\nwriter = { user = [\"a\"] }\n", Path::new("x.toml"))
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("user") && err.contains("line 2"), "{err}");
        let err = Config::parse("[roles]\nwriters = {}\n", Path::new("x.toml"))
            .expect_err("unknown role")
            .to_string();
        assert!(err.contains("writers") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn redaction_settings_are_read_and_checked() {
        let c = Config::parse("", Path::new("x.toml")).expect("parse");
        assert_eq!(c.redaction, RedactionConfig::default());
        assert!(c.redaction.enabled && c.redaction.keys.iter().any(|k| k == "password"));
        let c = Config::parse(
            "[redaction]\nkeys = [\"pin\"]\nextra_patterns = ['card=(?P<secret>\\d+)']\nmax_params_bytes = 4096\n",
            Path::new("x.toml"),
        )
        .expect("parse");
        assert_eq!(c.redaction.keys, ["pin"]);
        assert_eq!(c.redaction.patterns, RedactionConfig::default().patterns);
        assert_eq!((c.redaction.extra_patterns.len(), c.redaction.max_params_bytes), (1, 4096));
        assert_eq!(Config::parse(&c.to_toml(), Path::new("effective.toml")).expect("round trip"), c);
        for (text, key) in [
            ("[redaction]\npatterns = ['(unclosed']\n", "redaction.patterns"),
            ("[redaction]\nextra_patterns = ['[z-a]']\n", "redaction.extra_patterns"),
            ("[redaction]\nextra_keys = ['--']\n", "redaction.extra_keys"),
            ("[redaction]\nmax_params_bytes = 10\n", "redaction.max_params_bytes"),
            ("[redaction]\nmax_params_bytes = 1000000\n", "redaction.max_params_bytes"),
            ("[redaction]\nenable = false\n", "enable"),
        ] {
            let err = Config::parse(text, Path::new("x.toml")).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn publish_targets_and_limits_are_read_and_checked() {
        let text = "[[publish]]\ndir = \"/mnt/worm/ledger-checkpoints\"\n\n[[publish]]\ncommand = [\"logger\", \"-t\", \"ledgerd-checkpoint\"]\ntimeout = \"5s\"\n\n[limits]\nmax_params_bytes = 65536\nmax_connections = 8\n";
        let c = Config::parse(text, Path::new("x.toml")).expect("parse");
        assert_eq!(c.publish.len(), 2);
        assert_eq!(c.publish[0].dir.as_deref(), Some(Path::new("/mnt/worm/ledger-checkpoints")));
        assert_eq!(c.publish[1].command.as_deref().map(<[String]>::len), Some(3));
        assert_eq!(c.publish[1].timeout(), Ok(Duration::from_secs(5)));
        assert_eq!(c.publish[0].timeout(), Ok(Duration::from_secs(30)));
        assert_eq!((c.limits.max_params_bytes, c.limits.max_connections), (65536, 8));
        assert_eq!(Config::parse(&c.to_toml(), Path::new("effective.toml")).expect("round trip"), c);
        for (text, key) in [
            ("[[publish]]\n", "exactly one of"),
            ("[[publish]]\ndir = \"/a\"\ncommand = [\"x\"]\n", "exactly one of"),
            ("[[publish]]\ndir = \"relative\"\n", "publish.dir"),
            ("[[publish]]\ncommand = []\n", "publish.command"),
            ("[[publish]]\ncommand = [\"x\"]\ntimeout = \"never\"\n", "publish.timeout"),
            ("[[publish]]\ndirectory = \"/a\"\n", "line 2"),
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            ("[limits]\nmax_params_bytes = 0\n", "limits.max_params_bytes"),
        ] {
            let err = Config::parse(text, Path::new("x.toml")).expect_err(text).to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn bad_interval_is_explained() {
        let err =
            Config::parse("[checkpoint]\ninterval = \"soon\"\n", Path::new("x.toml")).expect_err("must fail");
        assert!(err.to_string().contains("checkpoint.interval"), "{err}");
    }
}
