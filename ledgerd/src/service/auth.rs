//! Who may do what: the roles `writer`, `auditor` and `admin`, and which of them the peer
//! on the other end of a connection holds (from its SO_PEERCRED uid and gid).
//!
//! Rules, in order (documented for operators in `docs/CONFIG.md`):
//!
//! - The uid that runs the daemon holds every role, always. It owns the data dir and the
//!   signing key, so refusing it on the socket would protect nothing.
//! - With no `[roles]` section (or no config at all) no other uid holds any role.
//! - With a `[roles]` section, a uid holds a role if the role lists the uid, its user name
//!   (`/etc/passwd`), its primary gid as seen on the socket, or a group the user is a
//!   member of: its primary group in `/etc/passwd` or a group that lists the user name in
//!   `/etc/group`. Root (uid 0) is like any other uid here: it has no role unless it runs
//!   the daemon or is listed.
//!
//! Names are looked up in `/etc/passwd` and `/etc/group` only (no NSS: directory users
//! are mapped by `uids` and `gids`). They are resolved when the config is loaded and again
//! whenever either file changed (checked by a `stat` of both at each lookup), so a user
//! created, removed or added to a group after the daemon started is seen at its next call.
//! A name that resolves to nothing is not an error: it gets the role once it exists.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::service::intake::Peer;

/// What a caller may be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Appends decisions (and reads policies).
    Writer,
    /// Reads everything: entries, queries, exports, proofs.
    Auditor,
    /// Changes the registry and policies.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Writer, Role::Auditor, Role::Admin];

    /// The name used in the config, in messages and in `access_refused` entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::Writer => 1,
            Role::Auditor => 2,
            Role::Admin => 4,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleSet(u8);

impl RoleSet {
    pub const EMPTY: RoleSet = RoleSet(0);
    pub const ALL: RoleSet = RoleSet(7);

    pub fn of(roles: &[Role]) -> RoleSet {
        RoleSet(roles.iter().fold(0, |bits, r| bits | r.bit()))
    }
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }
    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn intersects(self, other: RoleSet) -> bool {
        self.0 & other.0 != 0
    }
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
    /// The role names, in the order writer, auditor, admin.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Role::as_str).collect()
    }
}

/// "writer", "writer or auditor", "writer, auditor or admin".
fn either(set: RoleSet) -> String {
    let names = set.names();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// What a call needs: at least one of these roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need(RoleSet);

impl Need {
    /// Any role at all (calls verifiers need, such as the head and checkpoints).
    pub fn any() -> Need {
        Need(RoleSet::ALL)
    }
    /// One of `roles`.
    pub fn one_of(roles: &[Role]) -> Need {
        Need(RoleSet::of(roles))
    }
    pub fn is_met_by(self, held: RoleSet) -> bool {
        held.intersects(self.0)
    }
    /// The value of `needed_role` in an `access_refused` entry: `auditor`,
    /// `writer or auditor`, or `any` for any role.
    pub fn name(self) -> String {
        if self.0 == RoleSet::ALL { "any".into() } else { either(self.0) }
    }
}

impl From<Role> for Need {
    fn from(role: Role) -> Need {
        Need(RoleSet::of(&[role]))
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == RoleSet::ALL {
            write!(f, "a role ({})", either(self.0))
        } else {
            write!(f, "the {} role", either(self.0))
        }
    }
}

/// A call refused for lack of a role. Its text says what was needed, who asked, and what
/// to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub need: Need,
    pub held: RoleSet,
    pub peer: Peer,
    /// The peer's user name, if `/etc/passwd` knows its uid.
    pub user: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match &self.user {
            Some(name) => format!("uid {} ({name})", self.peer.uid),
            None => format!("uid {}", self.peer.uid),
        };
        let held = if self.held.is_empty() {
            "holds no role".to_string()
        } else {
            format!("holds only the {} role", either(self.held))
        };
        let grant = if self.need == Need::any() { "a role".to_string() } else { self.need.to_string() };
        write!(
            f,
            "permission denied: this call needs {}, and {who} with gid {} {held}; ask an admin to map {who} to {grant} in [roles] of the config; see docs/CONFIG.md",
            self.need, self.peer.gid
        )
    }
}

impl std::error::Error for Refusal {}

/// The roles of every peer, from the config.
#[derive(Debug)]
pub struct Roles {
    daemon_uid: u32,
    /// `None`: no `[roles]` section, so only the daemon's uid holds any role.
    mapping: Option<Mapping>,
}

#[derive(Debug)]
struct Mapping {
    config: RolesConfig,
    files: AccountFiles,
    resolved: Mutex<Resolved>,
}

impl Roles {
    /// Roles with no `[roles]` section: `daemon_uid` holds every role, nobody else any.
    pub fn daemon_only(daemon_uid: u32) -> Roles {
        Roles { daemon_uid, mapping: None }
    }

    /// Roles from a `[roles]` section, with names looked up in `/etc/passwd` and `/etc/group`.
    pub fn from_config(config: &RolesConfig, daemon_uid: u32) -> Result<Roles, AccountsError> {
        Roles::with_files(config, daemon_uid, AccountFiles::system())
    }

    /// Roles from a `[roles]` section, with names looked up in the given files.
    pub fn with_files(
        config: &RolesConfig,
        daemon_uid: u32,
        files: AccountFiles,
    ) -> Result<Roles, AccountsError> {
        let (stamp, accounts) = files.read()?;
        let resolved = Resolved::new(config, accounts, stamp);
        if !resolved.unknown.is_empty() {
            tracing::warn!(
                names = resolved.unknown.join(", "),
                "[roles] names users or groups that do not exist (yet); they get their role once created"
            );
        }
        let mapping = Mapping { config: config.clone(), files, resolved: Mutex::new(resolved) };
        Ok(Roles { daemon_uid, mapping: Some(mapping) })
    }

    /// The roles `peer` holds now.
    pub fn of(&self, peer: &Peer) -> RoleSet {
        if peer.uid == self.daemon_uid {
            return RoleSet::ALL;
        }
        self.with_current(|r| r.roles_of(peer)).unwrap_or_default()
    }

    /// `Ok` if `peer` holds a role `need` asks for; otherwise the refusal to report.
    pub fn require(&self, peer: &Peer, need: impl Into<Need>) -> Result<(), Refusal> {
        let need = need.into();
        let held = self.of(peer);
        if need.is_met_by(held) {
            return Ok(());
        }
        Err(Refusal { need, held, peer: *peer, user: self.user_name(peer.uid) })
    }

    /// The user name of `uid`, if the account files know it.
    pub fn user_name(&self, uid: u32) -> Option<String> {
        match &self.mapping {
            Some(_) => self.with_current(|r| r.accounts.user_name(uid).map(str::to_string)).flatten(),
            // Without a mapping no names were ever needed; look this one up for the message.
            None => {
                AccountFiles::system().read().ok().and_then(|(_, a)| a.user_name(uid).map(str::to_string))
            }
        }
    }

    /// Whether the config gives a role to anyone but the daemon's own uid (used to warn
    /// when the socket sits where nobody else can reach it).
    pub fn maps_others(&self) -> bool {
        let daemon_uid = self.daemon_uid;
        self.with_current(|r| {
            !r.unknown.is_empty()
                || r.members.iter().any(|m| !m.gids.is_empty() || m.uids.iter().any(|u| *u != daemon_uid))
        })
        .unwrap_or(false)
    }

    /// Runs `f` on the resolution, re-reading the account files first if they changed.
    fn with_current<T>(&self, f: impl FnOnce(&Resolved) -> T) -> Option<T> {
        let mapping = self.mapping.as_ref()?;
        let mut resolved = match mapping.resolved.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stamp = mapping.files.stamp();
        if stamp != resolved.stamp {
            match mapping.files.read() {
                Ok((stamp, accounts)) => *resolved = Resolved::new(&mapping.config, accounts, stamp),
                Err(e) => {
                    // Keep the last good resolution; try again when the files change.
                    tracing::error!(error = %e, "keeping the previous [roles] resolution");
                    resolved.stamp = stamp;
                }
            }
        }
        Some(f(&resolved))
    }
}

/// Where user and group names are looked up.
#[derive(Clone, Debug)]
pub struct AccountFiles {
    pub passwd: PathBuf,
    pub group: PathBuf,
}

/// What identifies a version of the two files: changed when either is rewritten.
type Stamp = [Option<(u64, u64, i64, i64, i64, i64, u64)>; 2];

impl AccountFiles {
    pub fn system() -> AccountFiles {
        AccountFiles { passwd: "/etc/passwd".into(), group: "/etc/group".into() }
    }

    fn stamp(&self) -> Stamp {
        let one = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec(), m.size()))
        };
        [one(&self.passwd), one(&self.group)]
    }

    /// Reads both files (a missing file counts as empty), with the stamp taken first so a
    /// change during the read is seen at the next lookup.
    fn read(&self) -> Result<(Stamp, Accounts), AccountsError> {
        let stamp = self.stamp();
        let text = |path: &Path| match std::fs::read_to_string(path) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(AccountsError { path: path.to_path_buf(), source }),
        };
        Ok((stamp, Accounts::parse(&text(&self.passwd)?, &text(&self.group)?)))
    }

    /// The gid of a group name in the group file.
    pub fn group_id(&self, name: &str) -> Result<Option<u32>, AccountsError> {
        Ok(self.read()?.1.groups.iter().find(|g| g.name == name).map(|g| g.gid))
    }
}

/// The parsed account files.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    users: Vec<User>,
    groups: Vec<Group>,
}

#[derive(Clone, Debug)]
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Clone, Debug)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

impl Accounts {
    /// Parses `/etc/passwd` (`name:x:uid:gid:…`) and `/etc/group` (`name:x:gid:a,b`) text;
    /// comments, NIS `+`/`-` lines and malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        fn fields(line: &str) -> Option<Vec<&str>> {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
                return None;
            }
            Some(line.split(':').collect())
        }
        let users = passwd
            .lines()
            .filter_map(fields)
            .filter_map(|f| match f.as_slice() {
                [name, _, uid, gid, ..] if !name.is_empty() => {
                    Some(User { name: (*name).into(), uid: uid.parse().ok()?, gid: gid.parse().ok()? })
                }
                _ => None,
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(fields)
            .filter_map(|f| match f.as_slice() {
                [name, _, gid, rest @ ..] if !name.is_empty() => Some(Group {
                    name: (*name).into(),
                    gid: gid.parse().ok()?,
                    members: rest
                        .first()
                        .map(|m| {
                            m.split(',').map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect()
                        })
                        .unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        Accounts { users, groups }
    }

    fn user_name(&self, uid: u32) -> Option<&str> {
        self.users.iter().find(|u| u.uid == uid).map(|u| u.name.as_str())
    }
}

/// The config's names turned into ids against one version of the account files.
#[derive(Debug)]
struct Resolved {
    stamp: Stamp,
    accounts: Accounts,
    /// Per role, in the order of [`Role::ALL`].
    members: [Members; 3],
    /// Names that matched no account, for the warning at start.
    unknown: Vec<String>,
}

/// Who holds one role, as ids.
#[derive(Debug, Default)]
struct Members {
    /// Listed uids, listed user names, and every member of a listed group.
    uids: HashSet<u32>,
    /// Listed gids and listed group names, matched against the peer's gid.
    gids: HashSet<u32>,
}

impl Resolved {
    fn new(config: &RolesConfig, accounts: Accounts, stamp: Stamp) -> Resolved {
        let mut unknown = Vec::new();
        let members = [&config.writer, &config.auditor, &config.admin]
            .map(|list| Members::resolve(list, &accounts, &mut unknown));
        unknown.sort();
        unknown.dedup();
        Resolved { stamp, accounts, members, unknown }
    }

    fn roles_of(&self, peer: &Peer) -> RoleSet {
        let mut held = RoleSet::EMPTY;
        for (role, m) in Role::ALL.into_iter().zip(&self.members) {
            if m.uids.contains(&peer.uid) || m.gids.contains(&peer.gid) {
                held.insert(role);
            }
        }
        held
    }
}

impl Members {
    fn resolve(list: &RoleMembers, accounts: &Accounts, unknown: &mut Vec<String>) -> Members {
        let mut uids: HashSet<u32> = list.uids.iter().copied().collect();
        let mut gids: HashSet<u32> = list.gids.iter().copied().collect();
        for name in &list.users {
            let found: Vec<u32> = accounts.users.iter().filter(|u| &u.name == name).map(|u| u.uid).collect();
            if found.is_empty() {
                unknown.push(format!("user {name}"));
            }
            uids.extend(found);
        }
        for name in &list.groups {
            let found: Vec<u32> = accounts.groups.iter().filter(|g| &g.name == name).map(|g| g.gid).collect();
            if found.is_empty() {
                unknown.push(format!("group {name}"));
            }
            gids.extend(found);
        }
        // Members of the listed groups: those the group file lists by name (supplementary
        // groups) and those whose primary group it is.
        let by_name: HashMap<&str, Vec<u32>> = accounts.users.iter().fold(HashMap::new(), |mut m, u| {
            m.entry(u.name.as_str()).or_default().push(u.uid);
            m
        });
        for g in accounts.groups.iter().filter(|g| gids.contains(&g.gid)) {
            for member in &g.members {
                uids.extend(by_name.get(member.as_str()).into_iter().flatten());
            }
        }
        uids.extend(accounts.users.iter().filter(|u| gids.contains(&u.gid)).map(|u| u.uid));
        Members { uids, gids }
    }
}

/// How often a refusal is written to the log for one uid and one RPC: at most once per
/// window. The refusals in between are counted, and the next recorded one carries the
/// count (`suppressed`), so a client that retries in a loop cannot flood the log.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// Above this many tracked (uid, RPC) pairs, finished windows are forgotten.
const LIMITER_PRUNE_AT: usize = 4096;

/// Decides which refusals are recorded in the log.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    seen: Mutex<HashMap<(u32, &'static str), Window>>,
}

#[derive(Debug)]
struct Window {
    /// When the last recorded refusal was recorded.
    recorded_at: Instant,
    /// Refusals since then that were not recorded.
    suppressed: u64,
}

impl RefusalLimiter {
    /// `Some(n)`: record this refusal, saying `n` earlier ones were not recorded; `None`:
    /// do not record it (it is counted for the next one).
    pub fn admit(&self, uid: u32, rpc: &'static str, now: Instant) -> Option<u64> {
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.len() >= LIMITER_PRUNE_AT {
            seen.retain(|_, w| w.suppressed > 0 || now.duration_since(w.recorded_at) < REFUSAL_WINDOW);
        }
        match seen.get_mut(&(uid, rpc)) {
            Some(w) if now.duration_since(w.recorded_at) < REFUSAL_WINDOW => {
                w.suppressed += 1;
                None
            }
            Some(w) => {
                let suppressed = std::mem::take(&mut w.suppressed);
                w.recorded_at = now;
                Some(suppressed)
            }
            None => {
                seen.insert((uid, rpc), Window { recorded_at: now, suppressed: 0 });
                Some(0)
            }
        }
    }
}

/// The account files could not be read (a file that does not exist counts as empty).
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path} to look up the users and groups named in the config: {source}")]
pub struct AccountsError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The `[roles]` section: for each role, who holds it (see [`crate::service::auth`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// May append decisions (and read policies).
    #[serde(skip_serializing_if = "RoleMembers::is_empty")]
    pub writer: RoleMembers,
    /// May read everything: entries, queries, exports, proofs.
    #[serde(skip_serializing_if = "RoleMembers::is_empty")]
    pub auditor: RoleMembers,
    /// May change the registry and policies.
    #[serde(skip_serializing_if = "RoleMembers::is_empty")]
    pub admin: RoleMembers,
}

/// The users and groups that hold one role. A uid holds the role if it is listed, its
/// user name is listed, or its primary group or a group it is a member of is listed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RoleMembers {
    /// User names, looked up in `/etc/passwd`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Group names, looked up in `/etc/group`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uids: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gids: Vec<u32>,
}

impl RoleMembers {
    /// Whether the role is given to nobody (but the daemon's own user).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.uids.is_empty() && self.gids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
ledgerd:x:990:990::/var/lib/ledgerd:/usr/sbin/nologin
agent-host:x:1001:1001::/home/agent-host:/bin/sh
alice:x:1002:1002::/home/alice:/bin/sh
bob:x:1003:1100::/home/bob:/bin/sh
mallory:x:1004:1004::/home/mallory:/bin/sh
broken line
+nis
";

    const GROUP: &str = "\
root:x:0:
ledgerd:x:990:
ledger-writers:x:1100:agent-host
ledger-auditors:x:1200:alice, mallory
alice:x:1002:
mallory:x:1004:
";

    fn accounts(dir: &Path, passwd: &str, group: &str) -> AccountFiles {
        let files = AccountFiles { passwd: dir.join("passwd"), group: dir.join("group") };
        std::fs::write(&files.passwd, passwd).expect("write passwd");
        std::fs::write(&files.group, group).expect("write group");
        files
    }

    fn config(text: &str) -> RolesConfig {
        let c = crate::Config::parse(text, Path::new("x.toml")).expect("config");
        c.roles.expect("[roles]")
    }

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer { uid, gid, pid: 42 }
    }

    #[test]
    fn without_roles_only_the_daemon_user_holds_any_role_and_root_is_not_special() {
        let roles = Roles::daemon_only(990);
        assert_eq!(roles.of(&peer(990, 990)), RoleSet::ALL);
        assert_eq!(roles.of(&peer(0, 0)), RoleSet::EMPTY);
        assert_eq!(roles.of(&peer(1001, 1001)), RoleSet::EMPTY);
        let roles = Roles::daemon_only(0);
        assert_eq!(roles.of(&peer(0, 0)), RoleSet::ALL);
    }

    #[test]
    fn uids_names_primary_and_supplementary_groups_each_grant_a_role() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = accounts(tmp.path(), PASSWD, GROUP);
        let cfg = config(
            "[roles]\nwriter = { groups = [\"ledger-writers\"] }\nauditor = { groups = [\"ledger-auditors\"], uids = [2000] }\nadmin = { users = [\"root\"], gids = [3000] }\n",
        );
        let roles = Roles::with_files(&cfg, 990, files).expect("roles");
        let writer = RoleSet::of(&[Role::Writer]);
        let auditor = RoleSet::of(&[Role::Auditor]);
        // agent-host: a member of ledger-writers by name in the group file.
        assert_eq!(roles.of(&peer(1001, 1001)), writer);
        // bob: ledger-writers is his primary group in passwd, whatever gid he connects with.
        assert_eq!(roles.of(&peer(1003, 5)), writer);
        // alice and mallory: listed as members of ledger-auditors (", " separated too).
        assert_eq!(roles.of(&peer(1002, 1002)), auditor);
        assert_eq!(roles.of(&peer(1004, 1004)), auditor);
        // A uid listed by number, unknown to passwd.
        assert_eq!(roles.of(&peer(2000, 2000)), auditor);
        // A gid seen on the socket (e.g. a setgid helper), unknown to the files.
        assert_eq!(roles.of(&peer(4000, 3000)), RoleSet::of(&[Role::Admin]));
        assert_eq!(roles.of(&peer(0, 0)), RoleSet::of(&[Role::Admin]));
        // The daemon's uid holds everything; a stranger nothing.
        assert_eq!(roles.of(&peer(990, 990)), RoleSet::ALL);
        assert_eq!(roles.of(&peer(4001, 4001)), RoleSet::EMPTY);
        assert!(roles.maps_others());
    }

    #[test]
    fn names_are_resolved_again_when_the_account_files_change() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = accounts(tmp.path(), PASSWD, GROUP);
        let cfg = config("[roles]\nauditor = { users = [\"carol\"] }\nwriter = { groups = [\"late\"] }\n");
        let roles = Roles::with_files(&cfg, 990, files.clone()).expect("roles");
        assert_eq!(roles.of(&peer(1005, 1005)), RoleSet::EMPTY);
        // carol is created, and alice joins a new group, after the daemon started.
        accounts(
            tmp.path(),
            &format!("{PASSWD}carol:x:1005:1005::/home/carol:/bin/sh\n"),
            &format!("{GROUP}late:x:1300:alice\n"),
        );
        assert_eq!(roles.of(&peer(1005, 1005)), RoleSet::of(&[Role::Auditor]));
        assert_eq!(roles.of(&peer(1002, 1002)), RoleSet::of(&[Role::Writer]));
        assert_eq!(roles.user_name(1005).as_deref(), Some("carol"));
        // Removed again: the role goes with the account.
        accounts(tmp.path(), PASSWD, GROUP);
        assert_eq!(roles.of(&peer(1005, 1005)), RoleSet::EMPTY);
        assert_eq!(roles.of(&peer(1002, 1002)), RoleSet::EMPTY);
    }

    #[test]
    fn a_refusal_says_what_is_needed_who_asked_and_what_to_do() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = accounts(tmp.path(), PASSWD, GROUP);
        let cfg = config("[roles]\nwriter = { users = [\"agent-host\"] }\n");
        let roles = Roles::with_files(&cfg, 990, files).expect("roles");
        assert_eq!(roles.require(&peer(1001, 1001), Role::Writer), Ok(()));
        let r = roles.require(&peer(1001, 1001), Role::Auditor).expect_err("refused");
        assert_eq!(r.held, RoleSet::of(&[Role::Writer]));
        assert_eq!(
            r.to_string(),
            "permission denied: this call needs the auditor role, and uid 1001 (agent-host) with gid 1001 holds only the writer role; ask an admin to map uid 1001 (agent-host) to the auditor role in [roles] of the config; see docs/CONFIG.md"
        );
        let r = roles.require(&peer(1002, 1002), Need::any()).expect_err("refused");
        assert_eq!(
            r.to_string(),
            "permission denied: this call needs a role (writer, auditor or admin), and uid 1002 (alice) with gid 1002 holds no role; ask an admin to map uid 1002 (alice) to a role in [roles] of the config; see docs/CONFIG.md"
        );
        assert_eq!(Need::any().name(), "any");
        assert_eq!(Need::one_of(&[Role::Writer, Role::Auditor]).name(), "writer or auditor");
        let r = roles.require(&peer(7777, 7777), Role::Admin).expect_err("refused");
        assert!(r.to_string().contains("uid 7777 with gid 7777 holds no role"), "{r}");
    }

    #[test]
    fn unknown_names_are_not_errors_and_the_parsers_skip_junk() {
        let a = Accounts::parse(PASSWD, GROUP);
        assert_eq!(a.users.len(), 6);
        assert_eq!(a.user_name(1004), Some("mallory"));
        let g = a.groups.iter().find(|g| g.name == "ledger-auditors").expect("group");
        assert_eq!(g.members, ["alice", "mallory"]);
        let tmp = tempfile::tempdir().expect("tempdir");
        let files = accounts(tmp.path(), PASSWD, GROUP);
        let cfg = config("[roles]\nadmin = { users = [\"nobody-yet\"], groups = [\"nor-this\"] }\n");
        let roles = Roles::with_files(&cfg, 990, files).expect("roles");
        assert!(roles.maps_others(), "names still to be created count as others");
        let none = AccountFiles { passwd: tmp.path().join("nope"), group: tmp.path().join("nope2") };
        let roles = Roles::with_files(&cfg, 990, none).expect("missing files read as empty");
        assert_eq!(roles.of(&peer(1001, 1001)), RoleSet::EMPTY);
    }

    #[test]
    fn refusals_are_recorded_once_per_uid_and_rpc_per_window_with_a_count() {
        let limiter = RefusalLimiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.admit(1001, "Query", t0), Some(0));
        assert_eq!(limiter.admit(1001, "Query", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit(1001, "Query", t0 + Duration::from_secs(9)), None);
        // Another RPC or another uid has its own window.
        assert_eq!(limiter.admit(1001, "Append", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(limiter.admit(1002, "Query", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(limiter.admit(1001, "Query", t0 + REFUSAL_WINDOW), Some(2));
        assert_eq!(limiter.admit(1001, "Query", t0 + REFUSAL_WINDOW * 3), Some(0));
    }
}
