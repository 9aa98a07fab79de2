//! The deployment files in `deploy/` (issue 8): the systemd units carry every hardening
//! setting docs/DEPLOY.md promises, `systemd-analyze verify` accepts them (when systemd is
//! installed), the example config passes `ledgerd --check-config` and agrees with the
//! units, and, as root, ledgerd running as its own user keeps its data dir and key from
//! other users, who reach the socket only through its group and a role.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use ledger_tests::accounts::{OsAccounts, User, for_all, run, skip_reason};
use ledger_tests::{bin, stderr, stdout};

/// The workspace root (this package is `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn deploy(file: &str) -> PathBuf {
    root().join("deploy").join(file)
}

/// A systemd unit file: for each section, every assignment in order (keys may repeat).
#[derive(Debug)]
struct Unit {
    name: String,
    sections: BTreeMap<String, Vec<(String, String)>>,
}

impl Unit {
    /// Reads a unit the way systemd does, for what these files use: `[Section]` headers,
    /// `Key=Value` lines, `#`/`;` comments, and lines continued with a trailing `\`.
    fn load(file: &str) -> Unit {
        let path = deploy(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut section: Option<String> = None;
        let mut pending = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                pending.push_str(cont);
                pending.push(' ');
                continue;
            }
            let line = format!("{pending}{line}");
            pending.clear();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.to_string());
                sections.entry(name.to_string()).or_default();
                continue;
            }
            let (key, value) =
                line.split_once('=').unwrap_or_else(|| panic!("{file}:{}: not Key=Value: {raw}", n + 1));
            let section = section.clone().unwrap_or_else(|| panic!("{file}:{}: outside a section", n + 1));
            sections.entry(section).or_default().push((key.trim().to_string(), value.trim().to_string()));
        }
        assert!(pending.is_empty(), "{file}: ends with a continued line");
        Unit { name: file.to_string(), sections }
    }

    /// Every value assigned to `key` in `section`, in order.
    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .get(section)
            .map(|kv| kv.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect())
            .unwrap_or_default()
    }

    /// The value of a key that must be set exactly once.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [v] => v,
            [] => panic!("{}: [{section}] {key}= is missing", self.name),
            many => panic!("{}: [{section}] {key}= is set {} times: {many:?}", self.name, many.len()),
        }
    }

    /// Asserts a `[Service]` setting.
    fn expect(&self, key: &str, value: &str) {
        assert_eq!(self.one("Service", key), value, "{}: [Service] {key}=", self.name);
    }

    /// Asserts a boolean `[Service]` setting is on.
    fn expect_yes(&self, key: &str) {
        let v = self.one("Service", key);
        assert!(["yes", "true", "on", "1"].contains(&v), "{}: {key}={v} should be yes", self.name);
    }
}

/// systemd's time spans as used here: "30s", "2min", "1h", a bare number of seconds.
fn seconds(span: &str) -> u64 {
    let (digits, unit) = span.split_at(span.find(|c: char| !c.is_ascii_digit()).unwrap_or(span.len()));
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("time span {span:?}"));
    n * match unit.trim() {
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" | "hr" => 3600,
        other => panic!("time span unit {other:?} in {span:?}"),
    }
}

/// The hardening both ledgerd services share: what docs/DEPLOY.md lists.
fn assert_hardened(unit: &Unit) {
    assert_sandboxed(unit);
    unit.expect_yes("PrivateNetwork");
    unit.expect("RestrictAddressFamilies", "AF_UNIX");
}

/// Every service's sandbox, network aside.
fn assert_sandboxed(unit: &Unit) {
    unit.expect("ProtectSystem", "strict");
    for key in [
        "ProtectHome",
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "MemoryDenyWriteExecute",
        "LockPersonality",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
    ] {
        unit.expect_yes(key);
    }
    unit.expect("SystemCallArchitectures", "native");
    unit.expect("UMask", "0077");
    // An empty bounding set: no capability, ever (and none added back later in the file).
    let caps = unit.all("Service", "CapabilityBoundingSet");
    assert!(
        !caps.is_empty() && caps.iter().all(|v| v.is_empty()),
        "{}: CapabilityBoundingSet={caps:?}",
        unit.name
    );
    assert!(unit.all("Service", "AmbientCapabilities").iter().all(|v| v.is_empty()), "{}", unit.name);
    // An allow-list that starts from @system-service and then removes privileged calls and
    // resource changes (systemd applies SystemCallFilter= lines in order).
    let filters = unit.all("Service", "SystemCallFilter");
    assert_eq!(filters.first(), Some(&"@system-service"), "{}: SystemCallFilter={filters:?}", unit.name);
    let denied: Vec<&str> =
        filters.iter().filter_map(|f| f.strip_prefix('~')).flat_map(|f| f.split_whitespace()).collect();
    for set in ["@privileged", "@resources"] {
        assert!(denied.contains(&set), "{}: SystemCallFilter does not deny {set}: {filters:?}", unit.name);
    }
    // Nothing but @chown (for the socket's group) is given back after the denials.
    let denial = filters.iter().position(|f| f.starts_with('~')).expect("a ~ line");
    for later in &filters[denial + 1..] {
        assert!(later.starts_with('~') || *later == "@chown", "{}: {later} re-allowed", unit.name);
    }
    assert!(!unit.all("Service", "User").contains(&"root"), "{}: runs as root", unit.name);
}

/// The effective config of a file, as `ledgerd --check-config` prints it.
fn check_config(path: &Path) -> ledgerd::Config {
    let out = Command::new(bin("ledgerd")).arg("--check-config").arg(path).output().expect("run ledgerd");
    assert!(out.status.success(), "ledgerd --check-config {}: {}", path.display(), stderr(&out));
    ledgerd::Config::parse(&stdout(&out), Path::new("effective.toml")).expect("the effective config parses")
}

#[test]
fn ledgerd_service_is_hardened() {
    let unit = Unit::load("ledgerd.service");
    assert_hardened(&unit);
    unit.expect("User", "ledgerd");
    unit.expect("ExecStart", "/usr/local/bin/ledgerd --config /etc/ledgerd/ledgerd.toml");
    unit.expect("StateDirectory", "ledgerd");
    unit.expect("StateDirectoryMode", "0700");
    unit.expect("RuntimeDirectory", "ledgerd");
    unit.expect("RuntimeDirectoryMode", "0750");
    unit.expect("Restart", "on-failure");
    unit.expect("KillSignal", "SIGTERM");
    // Long enough for the final entry and checkpoint, short enough not to hang a shutdown.
    let stop = seconds(unit.one("Service", "TimeoutStopSec"));
    assert!((10..=300).contains(&stop), "TimeoutStopSec={stop}s");
    // Writable: only its own state and runtime directories.
    for paths in unit.all("Service", "ReadWritePaths") {
        for path in paths.split_whitespace() {
            let path = path.trim_start_matches(['-', '+']);
            assert!(
                path.starts_with("/var/lib/ledgerd") || path.starts_with("/run/ledgerd"),
                "ReadWritePaths={path} is more than ledgerd needs"
            );
        }
    }
    assert_eq!(unit.one("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn verify_service_and_timer_run_as_another_user() {
    let unit = Unit::load("ledger-verify.service");
    assert_hardened(&unit);
    let user = unit.one("Service", "User");
    assert!(!user.is_empty() && user != "ledgerd", "the verifier must not be ledgerd's user: {user}");
    unit.expect("Type", "oneshot");
    unit.expect(
        "ExecStart",
        "/usr/local/bin/ledgerctl --socket /run/ledgerd/ledgerd.sock verify --state /var/lib/ledger-verify/state --key /etc/ledgerd/verifier.vkey --full --max-age 1h",
    );
    // It verifies through the socket only: no access to ledgerd's directories.
    assert!(
        unit.all("Service", "ReadWritePaths").is_empty(),
        "the verifier writes nowhere but its own state"
    );
    assert!(unit.all("Service", "StateDirectory").iter().all(|d| *d != "ledgerd"));
    // In the socket's group, which ledgerd.service uses as its group.
    let socket_group = Unit::load("ledgerd.service").one("Service", "Group").to_string();
    assert!(
        unit.all("Service", "SupplementaryGroups")
            .iter()
            .any(|g| g.split_whitespace().any(|g| g == socket_group)),
        "ledger-verify.service needs SupplementaryGroups={socket_group} to open the socket"
    );

    let timer = Unit::load("ledger-verify.timer");
    let when = timer.one("Timer", "OnCalendar");
    assert!(["hourly", "*:0/15", "*:00/15"].contains(&when), "OnCalendar={when}");
    assert_eq!(timer.one("Timer", "Persistent"), "true");
    assert_eq!(timer.one("Timer", "Unit"), "ledger-verify.service");
    assert_eq!(timer.one("Install", "WantedBy"), "timers.target");
}

/// The LLM gateway's unit: its own user, the keys only as credentials, and the hardening of
/// the other services except the network it needs (TCP to agents and the APIs).
#[test]
fn gateway_service_is_hardened_and_holds_the_keys_as_credentials() {
    let unit = Unit::load("ledger-gateway.service");
    let user = unit.one("Service", "User");
    assert!(!["root", "ledgerd", ""].contains(&user), "the gateway needs its own user: {user}");
    unit.expect(
        "ExecStart",
        "/usr/local/bin/ledgerctl --socket /run/ledgerd/ledgerd.sock shim llm --config /etc/ledger-gateway/gateway.toml",
    );
    let socket_group = Unit::load("ledgerd.service").one("Service", "Group").to_string();
    let groups: Vec<&str> =
        unit.all("Service", "SupplementaryGroups").into_iter().flat_map(str::split_whitespace).collect();
    assert!(groups.contains(&socket_group.as_str()) && groups.contains(&"ledger-writers"), "{groups:?}");
    let creds = unit.all("Service", "LoadCredential");
    for name in ["anthropic-key", "openai-key"] {
        assert!(
            creds.iter().any(|c| c.trim_start_matches('-').starts_with(&format!("{name}:"))),
            "{creds:?}"
        );
    }
    assert!(unit.all("Service", "Environment").iter().all(|e| !e.contains("API_KEY")), "no key in the unit");
    assert_sandboxed(&unit);
    unit.expect("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6");
    assert!(unit.all("Service", "ReadWritePaths").is_empty(), "the gateway writes nowhere");
    // The example config parses as the gateway reads it.
    let out = Command::new(bin("ledgerctl"))
        .args(["shim", "llm", "--config"])
        .arg(deploy("ledger-gateway.toml.example"))
        .args(["--listen", "256.0.0.1:1"])
        .output()
        .expect("run ledgerctl");
    let err = stderr(&out);
    assert!(
        err.contains("cannot listen on 256.0.0.1:1"),
        "the config must load before the bind fails: {err}"
    );
}

/// Issue 16: the shipper's unit has the shared hardening except the network (it reaches
/// the object store over IP), runs as its own user in the socket's group, and takes no
/// credentials on its command line.
#[test]
fn ledger_ship_service_is_hardened_but_for_the_network() {
    let unit = Unit::load("ledger-ship.service");
    assert_sandboxed(&unit);
    unit.expect("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6");
    let user = unit.one("Service", "User");
    assert!(!user.is_empty() && user != "ledgerd" && user != "root", "User={user}");
    let socket_group = Unit::load("ledgerd.service").one("Service", "Group").to_string();
    assert!(
        unit.all("Service", "SupplementaryGroups")
            .iter()
            .any(|g| g.split_whitespace().any(|g| g == socket_group))
    );
    let exec = unit.one("Service", "ExecStart");
    assert_eq!(exec, "/usr/local/bin/ledger-ship run --config /etc/ledger-ship.toml");
    assert!(
        !exec.to_lowercase().contains("secret") && !exec.contains("AWS_"),
        "no credentials on the command line"
    );
    if Command::new("systemd-analyze").arg("--version").output().is_err()
        || !Path::new("/usr/lib/systemd/system/sysinit.target").exists()
    {
        println!("skipped systemd-analyze verify: systemd's tools or units are not installed");
        return;
    }
    let (tmp, paths) = scratch_root(&["ledger-ship.service"], str::to_string);
    let out = systemd_analyze_verify(tmp.path(), &paths);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn example_config_passes_check_config_and_matches_the_units() {
    let config = check_config(&deploy("ledgerd.toml.example"));
    let unit = Unit::load("ledgerd.service");
    // The data dir is systemd's StateDirectory, the socket is in its RuntimeDirectory, and
    // the socket's group is the service's group (which owns that directory).
    assert_eq!(config.data_dir, Path::new("/var/lib").join(unit.one("Service", "StateDirectory")));
    let socket = config.socket_path();
    assert_eq!(
        socket.parent(),
        Some(Path::new("/run").join(unit.one("Service", "RuntimeDirectory")).as_path())
    );
    assert!(!socket.starts_with(&config.data_dir), "the socket must be outside the data dir");
    assert_eq!(
        config.socket_group,
        Some(ledgerd::config::GroupSpec::Name(unit.one("Service", "Group").into()))
    );
    assert_eq!(config.socket_mode(), Ok(0o660));
    // The verifier connects to that socket.
    let verify = Unit::load("ledger-verify.service");
    assert!(verify.one("Service", "ExecStart").contains(&format!("--socket {}", socket.display())));
    // One group per role, none of them the socket's group.
    let roles = config.roles.expect("[roles]");
    assert_eq!(roles.writer.groups, ["ledger-writers"]);
    assert_eq!(roles.auditor.groups, ["ledger-auditors"]);
    assert_eq!(roles.admin.groups, ["ledger-admins"]);
}

/// A copy of the units in a scratch root with stand-ins for the binaries, so that
/// `systemd-analyze verify --root` checks them as installed, without a running systemd.
fn scratch_root(units: &[&str], edit: impl Fn(&str) -> String) -> (tempfile::TempDir, Vec<PathBuf>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = tmp.path();
    let system = r.join("etc/systemd/system");
    std::fs::create_dir_all(&system).expect("mkdir");
    std::fs::create_dir_all(r.join("usr/local/bin")).expect("mkdir");
    for exe in ["ledgerd", "ledgerctl", "ledger-ship"] {
        let path = r.join("usr/local/bin").join(exe);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // systemd's own units (sysinit.target, timers.target, ...), which the units depend on.
    let vendor = r.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&vendor).expect("mkdir");
    let out =
        Command::new("cp").arg("-a").arg("/usr/lib/systemd/system/.").arg(&vendor).output().expect("cp");
    assert!(out.status.success(), "copy /usr/lib/systemd/system: {}", stderr(&out));
    let paths = units
        .iter()
        .map(|u| {
            let text = std::fs::read_to_string(deploy(u)).expect("read unit");
            let path = system.join(u);
            std::fs::write(&path, edit(&text)).expect("write unit");
            path
        })
        .collect();
    (tmp, paths)
}

fn systemd_analyze_verify(root: &Path, units: &[PathBuf]) -> Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .expect("run systemd-analyze")
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!(
            "skipped: systemd-analyze is not installed (the other tests still parse and check the unit files)"
        );
        return;
    }
    if !Path::new("/usr/lib/systemd/system/sysinit.target").exists() {
        println!("skipped: /usr/lib/systemd/system/sysinit.target is missing (systemd's units are needed)");
        return;
    }
    let units = ["ledgerd.service", "ledger-verify.service", "ledger-verify.timer", "ledger-gateway.service"];
    let (tmp, paths) = scratch_root(&units, str::to_string);
    let out = systemd_analyze_verify(tmp.path(), &paths);
    // systemd-analyze exits 0 on mere warnings (an unknown key, a bad value): any output fails.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {:?}\n{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    // systemd's own exposure score (0 to 10; it calls up to 1.9 "SAFE"), read from the
    // files, with no running systemd: at most 1.0 for each service, 2.0 for the gateway,
    // which needs the network (to the agents and the model APIs).
    for (limit, services) in [
        ("10", ["ledgerd.service", "ledger-verify.service"].as_slice()),
        ("20", ["ledger-gateway.service"].as_slice()),
    ] {
        let paths: Vec<&PathBuf> = paths
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| services.iter().any(|s| n == *s)))
            .collect();
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", &format!("--threshold={limit}"), "--no-pager"])
            .arg(format!("--root={}", tmp.path().display()))
            .args(&paths)
            .output()
            .expect("run systemd-analyze security");
        let text = stdout(&out);
        if stderr(&out).contains("unrecognized option") {
            println!(
                "skipped the exposure score: this systemd-analyze has no `security --offline` (systemd < 250)"
            );
            return;
        }
        let overall: Vec<&str> = text.lines().filter(|l| l.contains("Overall exposure level")).collect();
        println!("{}", overall.join("\n"));
        assert!(
            out.status.success() && overall.len() == services.len(),
            "systemd-analyze security: {text}{}",
            stderr(&out)
        );
    }
    // The check is live: a misspelt setting and a bad value are reported.
    let (tmp, paths) = scratch_root(&units[..1], |t| {
        t.replace("ProtectHome=yes", "ProtectHome=maybe").replace("PrivateTmp=yes", "PrivateTemp=yes")
    });
    let out = systemd_analyze_verify(tmp.path(), &paths);
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert!(report.contains("maybe") && report.contains("PrivateTemp"), "{report}");
}

// ---- as root: ledgerd as its own user ----

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) {
    std::fs::create_dir_all(path).expect("mkdir");
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// ledgerd started as another user (killed if the test ends before it is stopped).
struct DaemonAs {
    child: Option<Child>,
}

impl DaemonAs {
    /// Starts `ledgerd --config CONFIG` as `user` (with its groups) and waits for `ready`.
    fn start(ledgerd: &Path, user: &User, config: &Path) -> DaemonAs {
        let mut child = Command::new("setpriv")
            .args(["--reuid", &user.uid.to_string(), "--regid", &user.gid.to_string(), "--init-groups", "--"])
            .arg(ledgerd)
            .arg("--config")
            .arg(config)
            .env("LEDGERD_LOG", "warn")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn setpriv ledgerd");
        let line = BufReader::new(child.stdout.take().expect("stdout")).lines().next();
        match line {
            Some(Ok(l)) if l.starts_with("ready ") => DaemonAs { child: Some(child) },
            other => {
                let out = child.wait_with_output().expect("wait");
                panic!("ledgerd as {} did not start ({other:?}): {}", user.name, stderr(&out));
            }
        }
    }

    /// SIGTERM, then waits: true if it stopped cleanly (final entry and checkpoint written).
    fn stop(mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let _ = run("kill", &["-TERM", &child.id().to_string()]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    let mut err = String::new();
                    let _ =
                        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
                    eprintln!("ledgerd stopped with {status}: {err}");
                }
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonAs {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a command as `user` with its groups from /etc/group (`runuser -u`).
fn as_user(user: &User, program: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", &user.name, "--"])
        .arg(program)
        .args(args)
        .current_dir("/")
        .output()
        .expect("runuser")
}

#[test]
fn as_its_own_user_ledgerd_keeps_its_data_private_and_serves_only_mapped_users() {
    if let Some(why) = skip_reason(&["setpriv", "runuser"]) {
        println!("skipped: {why}");
        return;
    }
    let tag = std::process::id();
    let mut accounts = OsAccounts::default();
    // As deploy/ledgerd.service: ledgerd's primary group is the socket's group.
    let socket_group = format!("lds{tag}");
    let writers = format!("ldw{tag}");
    let auditors = format!("lda{tag}");
    let socket_gid = accounts.group(&socket_group);
    accounts.group(&writers);
    accounts.group(&auditors);
    let ledgerd_user = accounts.user(&format!("ldd{tag}"), Some(&socket_group), &[]);
    let writer = accounts.user(&format!("ldwu{tag}"), None, &[&socket_group, &writers]);
    let auditor = accounts.user(&format!("ldau{tag}"), None, &[&socket_group, &auditors]);
    // In the socket's group but in no role; and a user outside the socket's group.
    let stranger = accounts.user(&format!("ldsu{tag}"), None, &[&socket_group]);
    let outsider = accounts.user(&format!("ldou{tag}"), None, &[]);

    // The directories systemd makes for the unit: StateDirectory (0700) and
    // RuntimeDirectory (0750, group = the service's group).
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let owner = Some((ledgerd_user.uid, socket_gid));
    let data_dir = tmp.path().join("lib/ledgerd");
    mkdir(&tmp.path().join("lib"), 0o755, None);
    mkdir(&data_dir, 0o700, owner);
    let run_dir = tmp.path().join("run/ledgerd");
    mkdir(&tmp.path().join("run"), 0o755, None);
    mkdir(&run_dir, 0o750, owner);
    let etc = tmp.path().join("etc");
    mkdir(&etc, 0o755, None);
    let bins = tmp.path().join("bin");
    mkdir(&bins, 0o755, None);
    let ledgerd = for_all("ledgerd", &bins);
    let ledgerctl = for_all("ledgerctl", &bins);

    // deploy/ledgerd.toml.example with this test's paths and groups.
    let example = std::fs::read_to_string(deploy("ledgerd.toml.example")).expect("read example");
    let config = example
        .replace("\"/var/lib/ledgerd\"", &format!("{:?}", data_dir.display().to_string()))
        .replace(
            "\"/run/ledgerd/ledgerd.sock\"",
            &format!("{:?}", run_dir.join("ledgerd.sock").display().to_string()),
        )
        .replace("\"ledger\"", &format!("{socket_group:?}"))
        .replace("\"ledger-writers\"", &format!("{writers:?}"))
        .replace("\"ledger-auditors\"", &format!("{auditors:?}"));
    assert!(
        config.contains(&writers) && config.contains(&auditors) && config.contains(&socket_group),
        "{config}"
    );
    let config_path = etc.join("ledgerd.toml");
    std::fs::write(&config_path, &config).expect("write config");
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let effective = check_config(&config_path);
    let socket = effective.socket_path();

    let daemon = DaemonAs::start(&ledgerd, &ledgerd_user, &config_path);

    // What ledgerd made is its own, and private.
    let meta = std::fs::metadata(&data_dir).expect("stat data dir");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (ledgerd_user.uid, 0o700), "data dir owner and mode");
    let key = data_dir.join("signing.key");
    let meta = std::fs::metadata(&key).expect("stat signing.key");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (ledgerd_user.uid, 0o600), "signing.key owner and mode");
    let meta = std::fs::metadata(&socket).expect("stat socket");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (ledgerd_user.uid, socket_gid, 0o660),
        "socket"
    );

    // No other user can list the data dir or read the key: not even one holding a role.
    let (cat, ls) = (Path::new("/bin/cat"), Path::new("/bin/ls"));
    for user in [&outsider, &stranger, &auditor] {
        let out = as_user(user, cat, &[key.to_str().expect("utf-8")]);
        assert!(!out.status.success() && out.stdout.is_empty(), "{} read signing.key", user.name);
        assert!(stderr(&out).contains("Permission denied"), "{}", stderr(&out));
        let out = as_user(user, ls, &[data_dir.to_str().expect("utf-8")]);
        assert!(!out.status.success() && out.stdout.is_empty(), "{} listed the data dir", user.name);
        let out = as_user(user, cat, &[data_dir.join("verifier.vkey").to_str().expect("utf-8")]);
        assert!(!out.status.success(), "{} read into the data dir", user.name);
    }

    // The verifier key is pinned out of band, where auditors can read it.
    let pinned = etc.join("verifier.vkey");
    std::fs::copy(data_dir.join("verifier.vkey"), &pinned).expect("pin verifier.vkey");
    std::fs::set_permissions(&pinned, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let sock = socket.to_str().expect("utf-8");
    let ctl = |user: &User, args: &[&str]| {
        let mut all = vec!["--socket", sock];
        all.extend_from_slice(args);
        as_user(user, &ledgerctl, &all)
    };
    // Outside the socket's group: cannot even open the socket.
    let out = ctl(&outsider, &["checkpoint"]);
    assert_eq!(out.status.code(), Some(2), "outsider: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("cannot connect to ledgerd"), "{}", stderr(&out));
    // In the group but in no role: connects, and is refused (and the refusal is logged).
    let out = ctl(&stranger, &["checkpoint"]);
    assert_eq!(out.status.code(), Some(2), "stranger: {}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("GetCheckpoint: permission denied"), "{}", stderr(&out));
    // Mapped users get their role's calls.
    let out =
        ctl(&writer, &["append", "--agent", "deploy-test", "--tool", "db.query", "--decision", "allow"]);
    assert!(out.status.success(), "writer append: {}", stderr(&out));
    let out = ctl(&auditor, &["checkpoint", "--new"]);
    assert!(
        out.status.success() && stdout(&out).contains("/ledgerd/"),
        "auditor checkpoint: {}",
        stderr(&out)
    );
    let out = ctl(&auditor, &["verify", "--key", pinned.to_str().expect("utf-8")]);
    assert!(out.status.success(), "auditor verify: {}{}", stdout(&out), stderr(&out));
    // The log says who ran the daemon: its own user, not root.
    let out = ctl(&auditor, &["query", "kind = daemon_started | fields uid, gid", "--format", "json"]);
    assert!(out.status.success(), "auditor query: {}", stderr(&out));
    let row: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().expect("a row")).expect("json");
    assert_eq!(
        (row["uid"].as_u64(), row["gid"].as_u64()),
        (Some(ledgerd_user.uid.into()), Some(socket_gid.into()))
    );
    let out = ctl(&auditor, &["query", "kind = access_refused | fields uid, tool", "--format", "json"]);
    assert!(stdout(&out).contains(&format!("\"uid\":{}", stranger.uid)), "{}", stdout(&out));

    assert!(daemon.stop(), "ledgerd stops cleanly on SIGTERM");
    drop(tmp);
    drop(accounts);
}

// ---- ledgerd's system calls against the unit's filter ----

/// The system calls in a systemd set such as `@system-service`, nested sets expanded.
fn syscall_set(name: &str) -> std::collections::BTreeSet<String> {
    if !name.starts_with('@') {
        return [name.to_string()].into();
    }
    let out = run("systemd-analyze", &["syscall-filter", name]);
    assert!(out.status.success(), "systemd-analyze syscall-filter {name}: {}", stderr(&out));
    let text = stdout(&out);
    let mut set = std::collections::BTreeSet::new();
    for line in text.lines().skip(1).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        set.extend(syscall_set(line));
    }
    assert!(!set.is_empty(), "{name} is empty: {text}");
    set
}

/// What a unit's `SystemCallFilter=` lines allow, applied in order as systemd does for an
/// allow-list (which starts from `@default`).
fn allowed_syscalls(unit: &Unit) -> std::collections::BTreeSet<String> {
    let mut allowed = syscall_set("@default");
    for line in unit.all("Service", "SystemCallFilter") {
        let (deny, items) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        for item in items.split_whitespace() {
            for call in syscall_set(item) {
                if deny {
                    allowed.remove(&call);
                } else {
                    allowed.insert(call);
                }
            }
        }
    }
    allowed
}

/// Every system call named in an `strace -f -o FILE` trace.
fn traced_syscalls(trace: &str) -> std::collections::BTreeSet<String> {
    trace
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(' ')?.1.trim_start();
            let name = &rest[..rest.find('(')?];
            (!name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn every_system_call_ledgerd_makes_is_allowed_by_its_unit() {
    let euid = rustix::process::geteuid().as_raw();
    if Command::new("systemd-analyze").arg("--version").output().is_err()
        || Command::new("strace").arg("-V").output().is_err()
    {
        println!(
            "skipped: needs systemd-analyze and strace (the filter was checked by hand: docs/DEPLOY.md)"
        );
        return;
    }
    let allowed = allowed_syscalls(&Unit::load("ledgerd.service"));
    for call in ["fdatasync", "sync_file_range", "pwrite64", "clone3", "fchownat", "epoll_pwait"] {
        assert!(allowed.contains(call), "the filter refuses {call}");
    }

    // A daemon that gives its socket to a group (its own primary group: always allowed).
    let tmp = tempfile::tempdir().expect("tempdir");
    let egid = rustix::process::getegid().as_raw();
    let config_path = tmp.path().join("ledgerd.toml");
    let socket = tmp.path().join("ledgerd.sock");
    let config = format!(
        "data_dir = {:?}\nsocket = {:?}\nsocket_group = {egid}\nsocket_mode = \"0660\"\n[checkpoint]\ninterval = \"1s\"\n",
        tmp.path().join("data").display().to_string(),
        socket.display().to_string()
    );
    std::fs::write(&config_path, config).expect("write config");
    let trace = tmp.path().join("trace");
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(bin("ledgerd"))
        .arg("--config")
        .arg(&config_path)
        .env("LEDGERD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    let line = BufReader::new(strace.stdout.take().expect("stdout")).lines().next();
    if !matches!(&line, Some(Ok(l)) if l.starts_with("ready ")) {
        let _ = strace.kill();
        let out = strace.wait_with_output().expect("wait");
        if stderr(&out).contains("ptrace") {
            println!("skipped: strace cannot trace here (euid {euid}): {}", stderr(&out));
            return;
        }
        panic!("ledgerd under strace did not start ({line:?}): {}", stderr(&out));
    }
    let ledgerd_pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
        .expect("strace's children")
        .split_whitespace()
        .next()
        .expect("ledgerd's pid")
        .to_string();
    let mut guard = Traced { strace: Some(strace), ledgerd_pid: ledgerd_pid.clone() };
    for i in 0..5 {
        let out = ledger_tests::ctl(
            &socket,
            &[
                "append",
                "--agent",
                "syscalls",
                "--tool",
                "t",
                "--decision",
                "allow",
                "--params",
                &format!("{{\"i\":{i}}}"),
            ],
            None,
        );
        assert!(out.status.success(), "append: {}", stderr(&out));
    }
    std::thread::sleep(std::time::Duration::from_millis(1500)); // a periodic checkpoint
    let vkey = tmp.path().join("data/verifier.vkey").display().to_string();
    let verify = ["verify", "--key", vkey.as_str()];
    for args in [&["checkpoint", "--new"][..], &verify, &["query", "agent = \"syscalls\" | count"], &["tail"]]
    {
        let out = ledger_tests::ctl(&socket, args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // ledger-verify.service's command, traced too, against that unit's filter.
    let verify_trace = tmp.path().join("verify-trace");
    let state = tmp.path().join("verify-state").display().to_string();
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&verify_trace)
        .arg(bin("ledgerctl"))
        .arg("--socket")
        .arg(&socket)
        .args(["verify", "--state", state.as_str(), "--key", vkey.as_str(), "--full", "--max-age", "1h"])
        .output()
        .expect("strace ledgerctl verify");
    assert!(out.status.success(), "ledgerctl verify under strace: {}", stderr(&out));
    let used = traced_syscalls(&std::fs::read_to_string(&verify_trace).expect("read trace"));
    let allowed_for_verify = allowed_syscalls(&Unit::load("ledger-verify.service"));
    let refused: Vec<&String> = used.difference(&allowed_for_verify).collect();
    assert!(
        refused.is_empty(),
        "ledger-verify.service's SystemCallFilter refuses calls ledgerctl verify makes: {refused:?}"
    );

    let _ = run("kill", &["-TERM", &ledgerd_pid]);
    let status = guard.strace.take().expect("strace").wait().expect("wait strace");
    assert!(status.success(), "ledgerd under strace stopped with {status}");

    let used = traced_syscalls(&std::fs::read_to_string(&trace).expect("read trace"));
    for call in ["fdatasync", "fchownat", "execve"] {
        assert!(used.contains(call), "the trace lacks {call}: {used:?}");
    }
    let refused: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "ledgerd.service's SystemCallFilter refuses calls ledgerd makes: {refused:?}"
    );
}

/// ledgerd under strace: both killed if the test ends early (a killed tracer leaves its
/// tracee running).
struct Traced {
    strace: Option<Child>,
    ledgerd_pid: String,
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(mut strace) = self.strace.take() {
            let _ = Command::new("kill").args(["-KILL", &self.ledgerd_pid]).stderr(Stdio::null()).status();
            let _ = strace.kill();
            let _ = strace.wait();
        }
    }
}
