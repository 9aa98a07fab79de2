//! Roles against real connections from other OS users (issue 4): creates users and groups,
//! maps them in `[roles]`, starts ledgerd with that config and a socket outside its data
//! dir, and runs `ledgerctl` as each user. Needs root (CI runs as root); otherwise each
//! test says it was skipped and why.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

use ledger_tests::accounts::{OsAccounts, User, for_all, skip_reason};
use ledger_tests::{Daemon, stderr, stdout};

/// Runs `ledgerctl --socket SOCKET ARGS` as `user`, with the user's groups from
/// `/etc/group` (needed to open the socket, whose group is a supplementary one).
fn ctl_as(ledgerctl: &Path, user: &User, socket: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid", &user.uid.to_string(), "--regid", &user.gid.to_string(), "--init-groups", "--"])
        .arg(ledgerctl)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .current_dir("/")
        .output()
        .expect("run setpriv")
}

/// Asserts that a call was refused for lack of `role`, naming the RPC and the uid.
fn assert_refused(out: &Output, rpc: &str, needs: &str, user: &User) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{} expected a refusal of {rpc}: {}{err}", user.name, stdout(out));
    assert!(err.contains(&format!("{rpc}: permission denied")), "{err}");
    assert!(err.contains(&format!("needs {needs}")), "{err}");
    assert!(err.contains(&format!("uid {} ({})", user.uid, user.name)), "{err}");
    assert!(err.contains("[roles]") && err.contains("docs/CONFIG.md"), "{err}");
}

#[test]
fn writer_auditor_and_unmapped_users_get_exactly_their_roles_and_refusals_are_logged() {
    if let Some(why) = skip_reason(&["setpriv"]) {
        println!("skipped: {why}");
        return;
    }
    let tag = std::process::id();
    let mut accounts = OsAccounts::default();
    // Everyone who may open the socket is in `lgs`; only the auditor is in `lgg`.
    let socket_group = format!("lgs{tag}");
    let auditors = format!("lgg{tag}");
    let socket_gid = accounts.group(&socket_group);
    accounts.group(&auditors);
    let writer = accounts.user(&format!("lgw{tag}"), None, &[&socket_group]);
    let auditor = accounts.user(&format!("lga{tag}"), None, &[&socket_group, &auditors]);
    let nobody = accounts.user(&format!("lgn{tag}"), None, &[&socket_group]);

    let tmp = tempfile::tempdir().expect("tempdir");
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).expect("mkdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin_copy = tmp.path().join("bin");
    std::fs::create_dir(&bin_copy).expect("mkdir");
    let ledgerctl = for_all("ledgerctl", &bin_copy);
    let socket = run_dir.join("ledgerd.sock");
    // The daemon runs as root and holds every role anyway; root is listed to say so.
    let config = format!(
        r#"socket = "{socket}"
socket_group = "{socket_group}"
socket_mode = "0660"

[roles]
writer  = {{ users = ["root", "{w}"] }}
auditor = {{ users = ["root"], groups = ["{auditors}"] }}
admin   = {{ users = ["root"] }}
"#,
        socket = socket.display(),
        w = writer.name,
    );
    let config_path = tmp.path().join("ledgerd.toml");
    std::fs::write(&config_path, config).expect("write config");
    let daemon =
        Daemon::start_with(&tmp.path().join("data"), &["--config", config_path.to_str().expect("utf-8")])
            .unwrap_or_else(|e| panic!("ledgerd did not start: {e}"));
    assert_eq!(daemon.socket, socket);
    let meta = std::fs::metadata(&socket).expect("stat socket");
    assert_eq!(
        (meta.permissions().mode() & 0o7777, meta.gid()),
        (0o660, socket_gid),
        "socket mode and group"
    );

    let as_user = |user: &User, args: &[&str]| ctl_as(&ledgerctl, user, &socket, args);
    let append = ["append", "--agent", "roles-test", "--tool", "db.query", "--decision", "allow"];
    let query = ["query", "agent = \"roles-test\" | fields seq, agent, uid"];

    // The writer appends, and cannot read the log.
    let out = as_user(&writer, &append);
    assert!(out.status.success(), "writer append: {}", stderr(&out));
    let seq: u64 = stdout(&out).trim().parse().expect("append prints the seq");
    assert_refused(&as_user(&writer, &query), "Query", "the auditor role", &writer);
    assert_refused(&as_user(&writer, &["tail"]), "GetEntries", "the auditor role", &writer);

    // The auditor reads it (and sees who wrote), and cannot append.
    let out = as_user(&auditor, &query);
    assert!(out.status.success(), "auditor query: {}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains(&seq.to_string()) && table.contains(&writer.uid.to_string()), "{table}");
    let out = as_user(&auditor, &["tail", "-n", "3"]);
    assert!(out.status.success() && stdout(&out).contains("roles-test"), "auditor tail: {}", stderr(&out));
    assert_refused(&as_user(&auditor, &append), "Append", "the writer role", &auditor);
    // Watching the log is reading it.
    assert_refused(&as_user(&writer, &["watch"]), "Watch", "the auditor role", &writer);

    // A user with no role is refused whatever it tries, checkpoints and the head included;
    // retries within ten seconds are refused too but recorded once.
    assert_refused(&as_user(&nobody, &append), "Append", "the writer role", &nobody);
    for _ in 0..3 {
        assert_refused(&as_user(&nobody, &query), "Query", "the auditor role", &nobody);
    }
    assert_refused(&as_user(&nobody, &["tail"]), "GetHead", "a role (writer, auditor or admin)", &nobody);
    assert_refused(&as_user(&nobody, &["checkpoint"]), "GetCheckpoint", "a role", &nobody);

    // Root (the daemon's user) lists the refusals, each stamped with the caller's uid/gid.
    let out = daemon.ctl(&[
        "query",
        "kind = access_refused | fields uid, gid, agent, tool, details.needed_role, details.held_roles, reason",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "root query: {}", stderr(&out));
    let rows: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    let got: BTreeSet<(u64, u64, String, String)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r["agent"], "ledgerd", "written by the daemon: {r}");
            assert!(r["reason"].as_str().is_some_and(|s| s.contains("permission denied")), "{r}");
            let text = |k: &str| r[k].as_str().map_or_else(|| r[k].to_string(), str::to_string);
            (
                r["uid"].as_u64().expect("uid"),
                r["gid"].as_u64().expect("gid"),
                text("tool"),
                text("details.needed_role"),
            )
        })
        .collect();
    let expected: BTreeSet<(u64, u64, String, String)> = [
        (&writer, "Query", "auditor"),
        (&writer, "GetEntries", "auditor"),
        (&writer, "Watch", "auditor"),
        (&auditor, "Append", "writer"),
        (&nobody, "Append", "writer"),
        (&nobody, "Query", "auditor"),
        (&nobody, "GetHead", "any"),
        (&nobody, "GetCheckpoint", "any"),
    ]
    .into_iter()
    .map(|(u, tool, role)| (u64::from(u.uid), u64::from(u.gid), tool.to_string(), role.to_string()))
    .collect();
    assert_eq!(got, expected, "{}", stdout(&out));
    assert_eq!(rows.len(), expected.len(), "one entry per uid and RPC within ten seconds: {}", stdout(&out));
    let writer_query = rows
        .iter()
        .find(|r| r["uid"] == u64::from(writer.uid) && r["tool"] == "Query")
        .expect("the writer's refused query");
    assert!(writer_query["details.held_roles"].to_string().contains("writer"), "{writer_query}");
    drop(daemon);
    drop(accounts);
}

/// The other side of `append_each_checks_the_writer_role_when_opened_and_for_every_message`:
/// run by that test as another OS user (through `setpriv`), never on its own. Opens one
/// `AppendEach` stream on `$ROLES_TEST_SOCKET`, appends once and prints `ANSWER 1 ok SEQ` or
/// `ANSWER 1 err MESSAGE`; then waits for the file `$ROLES_TEST_GO`, appends again on the same
/// stream and prints `2 …` the same way.
#[tokio::test]
#[ignore = "run by append_each_checks_the_writer_role_when_opened_and_for_every_message as another user"]
async fn append_each_as_another_user() {
    let (Ok(socket), Ok(go)) = (std::env::var("ROLES_TEST_SOCKET"), std::env::var("ROLES_TEST_GO")) else {
        return;
    };
    let entry = |n: u64| ledger_proto::pb::NewEntry {
        kind: ledger_proto::pb::Kind::Decision as i32,
        agent: "roles-each".into(),
        tool: "db.query".into(),
        decision: ledger_proto::pb::Decision::Allow as i32,
        params: format!(r#"{{"n":{n}}}"#),
        ..Default::default()
    };
    let mut client = ledger_client::Client::connect(&socket).await.expect("connect");
    let say = |n: u64, r: Result<ledger_proto::pb::AppendResponse, ledger_client::ClientError>| match r {
        Ok(ack) => println!("\nANSWER {n} ok {}", ack.seq),
        Err(e) => println!("\nANSWER {n} err {e}"),
    };
    say(1, client.append_each(entry(1)).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !Path::new(&go).exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    say(2, client.append_each(entry(2)).await);
}

#[test]
fn append_each_checks_the_writer_role_when_opened_and_for_every_message() {
    if let Some(why) = skip_reason(&["setpriv", "gpasswd"]) {
        println!("skipped: {why}");
        return;
    }
    let tag = std::process::id();
    let mut accounts = OsAccounts::default();
    let socket_group = format!("lhs{tag}");
    let writers = format!("lhw{tag}");
    accounts.group(&socket_group);
    accounts.group(&writers);
    // The writer holds the role through the group `writers` only, so taking it out of the
    // group takes the role away while its stream is open.
    let writer = accounts.user(&format!("lhw{tag}u"), None, &[&socket_group, &writers]);
    let nobody = accounts.user(&format!("lhn{tag}"), None, &[&socket_group]);

    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).expect("mkdir");
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    // This test binary, where the other users can run it.
    let me = tmp.path().join("roles-test");
    std::fs::copy(std::env::current_exe().expect("current exe"), &me).expect("copy test binary");
    std::fs::set_permissions(&me, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = run_dir.join("ledgerd.sock");
    let config = format!(
        r#"socket = "{socket}"
socket_group = "{socket_group}"
socket_mode = "0660"

[roles]
writer  = {{ users = ["root"], groups = ["{writers}"] }}
auditor = {{ users = ["root"] }}
admin   = {{ users = ["root"] }}
"#,
        socket = socket.display(),
    );
    let config_path = tmp.path().join("ledgerd.toml");
    std::fs::write(&config_path, config).expect("write config");
    let daemon =
        Daemon::start_with(&tmp.path().join("data"), &["--config", config_path.to_str().expect("utf-8")])
            .unwrap_or_else(|e| panic!("ledgerd did not start: {e}"));

    let go = run_dir.join("go");
    let start_as = |user: &User| {
        Command::new("setpriv")
            .args(["--reuid", &user.uid.to_string(), "--regid", &user.gid.to_string(), "--init-groups", "--"])
            .arg(&me)
            .args([
                "--ignored",
                "--exact",
                "append_each_as_another_user",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("ROLES_TEST_SOCKET", &socket)
            .env("ROLES_TEST_GO", &go)
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run setpriv")
    };
    let answers = |out: &Output| -> Vec<String> {
        stdout(out).lines().filter_map(|l| l.split_once("ANSWER ").map(|(_, a)| a.to_string())).collect()
    };

    // A user with no role cannot open the stream.
    std::fs::write(&go, "").expect("go");
    let out = start_as(&nobody).wait_with_output().expect("wait");
    let got = answers(&out);
    assert_eq!(got.len(), 2, "{}{}", stdout(&out), stderr(&out));
    for line in &got {
        assert!(line.contains("err") && line.contains("AppendEach: permission denied"), "{line}");
        assert!(line.contains("needs the writer role"), "{line}");
    }
    std::fs::remove_file(&go).expect("rm go");

    // The writer appends on its stream; taken out of the group, its next message on the
    // same stream is refused and recorded.
    let child = start_as(&writer);
    let first = (0..600).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let out = daemon.ctl(&["query", "agent = \"roles-each\" | fields seq", "--format", "json"]);
        (!stdout(&out).trim().is_empty()).then_some(())
    });
    assert!(first.is_some(), "the writer's first append never arrived");
    let out = ledger_tests::accounts::run("gpasswd", &["-d", &writer.name, &writers]);
    assert!(out.status.success(), "gpasswd: {}", stderr(&out));
    std::fs::write(&go, "").expect("go");
    let out = child.wait_with_output().expect("wait");
    let got = answers(&out);
    assert_eq!(got.len(), 2, "{}{}", stdout(&out), stderr(&out));
    assert!(got[0].starts_with("1 ok "), "{got:?}");
    assert!(got[1].starts_with("2 err") && got[1].contains("AppendEach: permission denied"), "{got:?}");

    let out = daemon.ctl(&["query", "agent = \"roles-each\" | fields params", "--format", "json"]);
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "only the message sent with the role is in the log: {}",
        stdout(&out)
    );
    let out = daemon.ctl(&[
        "query",
        "kind = access_refused and tool = \"AppendEach\" | fields uid",
        "--format",
        "json",
    ]);
    let uids: BTreeSet<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        uids,
        [format!(r#"{{"uid":{}}}"#, nobody.uid), format!(r#"{{"uid":{}}}"#, writer.uid)]
            .into_iter()
            .collect(),
        "both refusals are recorded"
    );
    drop(daemon);
    drop(accounts);
}
