//! The AWS shared config and credentials files (`~/.aws/credentials`, `~/.aws/config`)
//! as the AWS SDKs read them, for the parts `object_store` leaves out: static keys and the
//! region of the profile `AWS_PROFILE` names (default `default`).
//!
//! Precedence, as in the SDKs: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` in the
//! environment win over the files (then the files' keys are not used at all), and
//! `AWS_REGION`/`AWS_DEFAULT_REGION` (or the shipper's `region` setting) win over the
//! profile's region. Within the files, the credentials file wins over the config file.
//! `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` move the files. A profile that has
//! no keys leaves the rest of the chain (web identity, container, instance metadata) to
//! `object_store`. Errors name the file, line or profile and what to do; a secret is
//! never printed.

use std::path::{Path, PathBuf};

/// What went wrong reading the shared files.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {why} (set {var} to a readable file, or unset it to use the default)")]
    NamedFileUnreadable { path: String, var: &'static str, why: String },
    #[error("{path}: cannot read: {why}")]
    Unreadable { path: String, why: String },
    #[error("{path} line {line}: {why}")]
    Syntax { path: String, line: usize, why: String },
    #[error(
        "AWS_PROFILE={profile:?}, but no [{profile}] in {credentials} nor [profile {profile}] in {config}: add the profile or fix AWS_PROFILE"
    )]
    UnknownProfile { profile: String, credentials: String, config: String },
    #[error(
        "profile {profile:?} in {path} has {has} but not {lacks}: give both keys (or neither, to use the instance's or container's credentials)"
    )]
    HalfKey { profile: String, path: String, has: &'static str, lacks: &'static str },
    #[error(
        "profile {profile:?} ({path}) gets its credentials through `{key}`, which the shipper does not support: give it static keys, or run the shipper with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or web identity, container or instance credentials) in its environment"
    )]
    Unsupported { profile: String, path: String, key: String },
}

/// What the selected profile gives.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// `(access key id, secret access key, session token)`, unless the environment has
    /// keys of its own or the profile has none.
    pub keys: Option<(String, String, Option<String>)>,
    /// The profile's region, unless the environment names one.
    pub region: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        let keys =
            self.keys.as_ref().map(|(id, _, token)| (id, "<secret>", token.as_ref().map(|_| "<token>")));
        f.debug_struct("Profile").field("keys", &keys).field("region", &self.region).finish()
    }
}

/// The settings of one section: `(key, value, line)` in file order.
type Section = Vec<(String, String, usize)>;

/// Parses the INI dialect of the AWS files: `[section]` headers, `key = value` lines,
/// whole-line comments (`#`, `;`), blank lines, and indented lines under a key with an
/// empty value (nested settings such as `s3 =`, which the shipper skips). Sections named
/// twice are merged, a later value winning. Anything else is an error naming its line.
pub fn parse(path: &str, text: &str) -> Result<Vec<(String, Section)>, ProfileError> {
    let mut sections: Vec<(String, Section)> = Vec::new();
    let mut nested = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |why: String| ProfileError::Syntax { path: path.into(), line, why };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = raw.starts_with([' ', '\t']);
        if indented && nested {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| err("a section header must end with `]`".into()))?
                .trim();
            if name.is_empty() {
                return Err(err("a section header names no profile".into()));
            }
            nested = false;
            if !sections.iter().any(|(n, _)| n == name) {
                sections.push((name.to_string(), Vec::new()));
            }
            continue;
        }
        let (key, value) = trimmed.split_once('=').ok_or_else(|| {
            err(format!(
                "expected `[profile]` or `key = value`, found {:?}",
                // Never echo what may be a secret in full.
                trimmed.chars().take(12).collect::<String>() + "…"
            ))
        })?;
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(err("a setting without a name before `=`".into()));
        }
        let value = value.trim().to_string();
        nested = value.is_empty();
        let Some((_, section)) = sections.last_mut() else {
            return Err(err(format!("setting {key:?} comes before any `[profile]` header")));
        };
        section.retain(|(k, _, _)| *k != key);
        section.push((key, value, line));
    }
    Ok(sections)
}

/// The files and profile the environment selects.
struct Files {
    profile: String,
    explicit_profile: bool,
    credentials: (PathBuf, Option<&'static str>),
    config: (PathBuf, Option<&'static str>),
}

fn files(env: &dyn Fn(&str) -> Option<String>) -> Option<Files> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let home = set("HOME").map(PathBuf::from);
    let pick = |var: &'static str, default: &str| match set(var) {
        Some(p) => Some((PathBuf::from(p), Some(var))),
        None => home.as_ref().map(|h| (h.join(".aws").join(default), None)),
    };
    let (profile, explicit_profile) = match set("AWS_PROFILE") {
        Some(p) => (p, true),
        None => ("default".to_string(), false),
    };
    Some(Files {
        profile,
        explicit_profile,
        credentials: pick("AWS_SHARED_CREDENTIALS_FILE", "credentials")?,
        config: pick("AWS_CONFIG_FILE", "config")?,
    })
}

/// Reads a file; `None` if a default-located one does not exist or may not be read (a
/// service hardened with systemd's `ProtectHome=` cannot see its home: it gets its keys
/// from its environment, and the skip is logged).
fn read(path: &Path, var: Option<&'static str>) -> Result<Option<String>, ProfileError> {
    match (std::fs::read_to_string(path), var) {
        (Ok(text), _) => Ok(Some(text)),
        (Err(e), None) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        (Err(e), None) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!("{}: {e}; not using the AWS shared files", path.display());
            Ok(None)
        }
        (Err(e), Some(var)) => Err(ProfileError::NamedFileUnreadable {
            path: path.display().to_string(),
            var,
            why: e.to_string(),
        }),
        (Err(e), None) => {
            Err(ProfileError::Unreadable { path: path.display().to_string(), why: e.to_string() })
        }
    }
}

/// The non-empty value of `key` in a section.
fn setting<'a>(section: Option<&'a Section>, key: &str) -> Option<&'a str> {
    section?.iter().find(|(k, v, _)| k == key && !v.is_empty()).map(|(_, v, _)| v.as_str())
}

/// The selected profile's keys and region, with the environment's precedence applied.
/// `env` reads an environment variable (the process's in the shipper, a map in tests).
pub fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Profile, ProfileError> {
    let Some(f) = files(env) else {
        // No HOME and no file named: nothing to read.
        return Ok(Profile::default());
    };
    let credentials_path = f.credentials.0.display().to_string();
    let config_path = f.config.0.display().to_string();
    let credentials = match read(&f.credentials.0, f.credentials.1)? {
        Some(text) => parse(&credentials_path, &text)?,
        None => Vec::new(),
    };
    let config = match read(&f.config.0, f.config.1)? {
        Some(text) => parse(&config_path, &text)?,
        None => Vec::new(),
    };
    let in_credentials = credentials.iter().find(|(n, _)| *n == f.profile).map(|(_, s)| s);
    // In the config file a profile is `[profile NAME]`, except `[default]`.
    let in_config = config
        .iter()
        .find(|(n, _)| {
            n.strip_prefix("profile")
                .is_some_and(|rest| rest.starts_with([' ', '\t']) && rest.trim() == f.profile)
                || (f.profile == "default" && n == "default")
        })
        .map(|(_, s)| s);
    if in_credentials.is_none() && in_config.is_none() {
        if f.explicit_profile {
            return Err(ProfileError::UnknownProfile {
                profile: f.profile,
                credentials: credentials_path,
                config: config_path,
            });
        }
        return Ok(Profile::default());
    }
    let get = |key: &str| -> Option<(&str, &str)> {
        setting(in_credentials, key).map(|v| (v, "c")).or_else(|| setting(in_config, key).map(|v| (v, "f")))
    };
    let path_of = |which: &str| if which == "c" { credentials_path.clone() } else { config_path.clone() };
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let env_has_keys = set("AWS_ACCESS_KEY_ID").is_some() || set("AWS_SECRET_ACCESS_KEY").is_some();
    let keys = if env_has_keys {
        None
    } else {
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some((id, _)), Some((secret, _))) => Some((
                id.to_string(),
                secret.to_string(),
                get("aws_session_token").map(|(t, _)| t.to_string()),
            )),
            (Some((_, w)), None) => {
                return Err(ProfileError::HalfKey {
                    profile: f.profile,
                    path: path_of(w),
                    has: "aws_access_key_id",
                    lacks: "aws_secret_access_key",
                });
            }
            (None, Some((_, w))) => {
                return Err(ProfileError::HalfKey {
                    profile: f.profile,
                    path: path_of(w),
                    has: "aws_secret_access_key",
                    lacks: "aws_access_key_id",
                });
            }
            (None, None) => {
                const UNSUPPORTED: [&str; 5] =
                    ["role_arn", "credential_process", "sso_session", "sso_start_url", "login_session"];
                if let Some((key, (_, w))) = UNSUPPORTED.iter().find_map(|k| get(k).map(|g| (*k, g))) {
                    return Err(ProfileError::Unsupported {
                        profile: f.profile,
                        path: path_of(w),
                        key: key.into(),
                    });
                }
                None
            }
        }
    };
    let env_has_region = set("AWS_REGION").is_some() || set("AWS_DEFAULT_REGION").is_some();
    let region = if env_has_region { None } else { get("region").map(|(r, _)| r.to_string()) };
    Ok(Profile { keys, region })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Home {
        dir: tempfile::TempDir,
        vars: HashMap<String, String>,
    }

    impl Home {
        fn new(credentials: Option<&str>, config: Option<&str>) -> Home {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join(".aws")).expect("mkdir");
            if let Some(c) = credentials {
                std::fs::write(dir.path().join(".aws/credentials"), c).expect("write");
            }
            if let Some(c) = config {
                std::fs::write(dir.path().join(".aws/config"), c).expect("write");
            }
            let mut vars = HashMap::new();
            vars.insert("HOME".to_string(), dir.path().display().to_string());
            Home { dir, vars }
        }

        fn with(mut self, k: &str, v: &str) -> Home {
            self.vars.insert(k.into(), v.into());
            self
        }

        fn resolve(&self) -> Result<Profile, ProfileError> {
            resolve(&|k: &str| self.vars.get(k).cloned())
        }
    }

    const CREDENTIALS: &str = "# keys\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s3cr3t/default\n\n[ship]\naws_access_key_id=AKIDSHIP\naws_secret_access_key=s3cr3t+ship\naws_session_token = tok\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 10\n  addressing_style = path\n\n[profile ship]\nregion = us-east-2\n; a comment\n[profile only-config]\naws_access_key_id = AKIDCFG\naws_secret_access_key = cfgsecret\nregion = ap-south-1\n";

    fn keys(id: &str, secret: &str, token: Option<&str>) -> Option<(String, String, Option<String>)> {
        Some((id.into(), secret.into(), token.map(String::from)))
    }

    #[test]
    fn the_default_profile_gives_keys_and_region() {
        let p = Home::new(Some(CREDENTIALS), Some(CONFIG)).resolve().expect("resolve");
        assert_eq!(
            p,
            Profile { keys: keys("AKIDDEFAULT", "s3cr3t/default", None), region: Some("eu-west-1".into()) }
        );
    }

    #[test]
    fn aws_profile_selects_a_profile_across_both_files() {
        let h = Home::new(Some(CREDENTIALS), Some(CONFIG)).with("AWS_PROFILE", "ship");
        let p = h.resolve().expect("resolve");
        assert_eq!(
            p,
            Profile { keys: keys("AKIDSHIP", "s3cr3t+ship", Some("tok")), region: Some("us-east-2".into()) }
        );
        let p = Home::new(Some(CREDENTIALS), Some(CONFIG))
            .with("AWS_PROFILE", "only-config")
            .resolve()
            .expect("cfg");
        assert_eq!(p.keys, keys("AKIDCFG", "cfgsecret", None));
        assert_eq!(p.region.as_deref(), Some("ap-south-1"));
    }

    #[test]
    fn environment_keys_and_region_win_over_the_files() {
        let h = Home::new(Some(CREDENTIALS), Some(CONFIG))
            .with("AWS_ACCESS_KEY_ID", "AKIDENV")
            .with("AWS_SECRET_ACCESS_KEY", "envsecret")
            .with("AWS_REGION", "us-west-2");
        assert_eq!(h.resolve().expect("resolve"), Profile::default());
        let h = Home::new(Some(CREDENTIALS), Some(CONFIG)).with("AWS_DEFAULT_REGION", "us-west-1");
        let p = h.resolve().expect("resolve");
        assert_eq!((p.keys.is_some(), p.region), (true, None));
    }

    #[test]
    fn the_file_variables_move_the_files() {
        let h = Home::new(None, None);
        let other = h.dir.path().join("elsewhere");
        std::fs::write(&other, "[default]\naws_access_key_id = A\naws_secret_access_key = B\n")
            .expect("write");
        let h = h.with("AWS_SHARED_CREDENTIALS_FILE", &other.display().to_string());
        assert_eq!(h.resolve().expect("resolve").keys, keys("A", "B", None));
    }

    #[test]
    fn no_files_or_no_default_profile_leave_the_rest_of_the_chain() {
        assert_eq!(Home::new(None, None).resolve().expect("none"), Profile::default());
        assert_eq!(
            Home::new(Some("[other]\nregion = x\n"), None).resolve().expect("other"),
            Profile::default()
        );
        assert_eq!(resolve(&|_| None).expect("no HOME"), Profile::default());
        // A profile with only a region: no keys, the region.
        let p = Home::new(None, Some("[default]\nregion = eu-north-1\n")).resolve().expect("region only");
        assert_eq!(p, Profile { keys: None, region: Some("eu-north-1".into()) });
    }

    fn error(h: &Home) -> String {
        h.resolve().err().map(|e| e.to_string()).unwrap_or_else(|| "no error".into())
    }

    #[test]
    fn hostile_or_careless_files_are_refused_with_their_line() {
        for (text, says) in [
            ("[default\naws_access_key_id = A\n", "line 1: a section header must end with `]`"),
            ("[]\n", "line 1: a section header names no profile"),
            ("aws_access_key_id = A\n[default]\n", "line 1: setting \"aws_access_key_id\" comes before"),
            (
                "[default]\naws_secret_access_key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
                "line 2: expected `[profile]`",
            ),
            ("[default]\n= value\n", "line 2: a setting without a name"),
            ("\u{feff}\u{0}\u{1}garbage\n", "line 1: expected"),
        ] {
            let e = error(&Home::new(Some(text), None));
            assert!(e.contains(says), "{text:?}: {e}");
            // A secret on a bad line is not echoed whole.
            assert!(!e.contains("EXAMPLEKEY"), "{e}");
        }
    }

    #[test]
    fn an_unknown_profile_a_missing_named_file_and_half_keys_are_clear_errors() {
        let e = error(&Home::new(Some(CREDENTIALS), Some(CONFIG)).with("AWS_PROFILE", "nope"));
        assert!(e.contains("AWS_PROFILE=\"nope\"") && e.contains("[profile nope]"), "{e}");
        let e = error(&Home::new(None, None).with("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds"));
        assert!(e.contains("/nonexistent/creds") && e.contains("AWS_SHARED_CREDENTIALS_FILE"), "{e}");
        let e = error(&Home::new(None, None).with("AWS_CONFIG_FILE", "/nonexistent/config"));
        assert!(e.contains("AWS_CONFIG_FILE"), "{e}");
        let e = error(&Home::new(Some("[default]\naws_access_key_id = A\n"), None));
        assert!(e.contains("not aws_secret_access_key"), "{e}");
        let e = error(&Home::new(Some("[default]\naws_secret_access_key = hunter2\n"), None));
        assert!(e.contains("not aws_access_key_id") && !e.contains("hunter2"), "{e}");
        let e =
            error(&Home::new(None, Some("[profile sso]\nsso_session = corp\n")).with("AWS_PROFILE", "sso"));
        assert!(e.contains("`sso_session`") && e.contains("does not support"), "{e}");
        // A directory where the file should be.
        let h = Home::new(None, None);
        std::fs::create_dir_all(h.dir.path().join(".aws/credentials")).expect("mkdir");
        assert!(error(&h).contains("cannot read"), "{}", error(&h));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let p = Home::new(Some(CREDENTIALS), None).resolve().expect("resolve");
        let shown = format!("{p:?}");
        assert!(shown.contains("AKIDDEFAULT") && !shown.contains("s3cr3t"), "{shown}");
    }
}
