//! Real OS users and groups for the tests that run as root (`roles.rs`, `deploy.rs`):
//! created for one test, deleted when it ends, panicking or not.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{bin, stderr};

/// Why this machine cannot run a test that creates OS users, if it cannot: it is not root,
/// or one of `tools` (besides useradd, userdel, groupadd, groupdel) is missing.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    let euid = rustix::process::geteuid().as_raw();
    if euid != 0 {
        return Some(format!(
            "it runs as euid {euid}, and creating OS users needs root (CI runs it as root)"
        ));
    }
    for tool in ["useradd", "userdel", "groupadd", "groupdel"].iter().chain(tools) {
        if Command::new(tool).arg("--help").output().is_err() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Runs a command and returns its output (panics if it cannot be started).
pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// The users and groups created so far; all deleted on drop.
#[derive(Default)]
pub struct OsAccounts {
    users: Vec<String>,
    groups: Vec<String>,
}

/// One created user.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl OsAccounts {
    /// A system group; its gid.
    pub fn group(&mut self, name: &str) -> u32 {
        let out = run("groupadd", &["--system", name]);
        assert!(out.status.success(), "groupadd {name}: {}", stderr(&out));
        self.groups.push(name.into());
        id_of("group", name)
    }

    /// A system user with no home and no shell, whose primary group is `primary` (or a
    /// group of its own), in the supplementary `groups`.
    pub fn user(&mut self, name: &str, primary: Option<&str>, groups: &[&str]) -> User {
        let mut args = vec!["--system", "--no-create-home", "--shell", "/usr/sbin/nologin"];
        match primary {
            Some(group) => args.extend(["--gid", group]),
            None => args.push("--user-group"),
        }
        let list = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &list]);
        }
        args.push(name);
        let out = run("useradd", &args);
        assert!(out.status.success(), "useradd {name}: {}", stderr(&out));
        self.users.push(name.into());
        let gid = id_of("group", primary.unwrap_or(name));
        User { name: name.into(), uid: id_of("passwd", name), gid }
    }
}

impl Drop for OsAccounts {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = run("userdel", &[user]);
            // The user's own group, where userdel leaves it (USERGROUPS_ENAB no).
            let _ = Command::new("groupdel").arg(user).stderr(Stdio::null()).status();
        }
        for group in &self.groups {
            let _ = run("groupdel", &[group]);
        }
    }
}

/// The id of a user (`passwd`) or group (`group`) name, from the account files.
pub fn id_of(file: &str, name: &str) -> u32 {
    let text = std::fs::read_to_string(format!("/etc/{file}")).expect("read account file");
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2)?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /etc/{file}"))
}

/// Whether every user may run the file at `path`: it and each directory above it are
/// executable by others.
pub fn runnable_by_all(path: &Path) -> bool {
    path.ancestors().all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// A workspace binary where every user can run it: where cargo built it, or a copy in
/// `dir` (made 0755).
pub fn for_all(name: &str, dir: &Path) -> PathBuf {
    let built = bin(name);
    if runnable_by_all(&built) {
        return built;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join(name);
    std::fs::copy(&built, &copy).expect("copy binary");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(runnable_by_all(&copy), "{} is not reachable by other users", copy.display());
    copy
}
