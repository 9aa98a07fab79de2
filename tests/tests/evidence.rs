//! Evidence bundles (issues 7 and 13) against a real daemon: export one, check it offline,
//! then tamper with copies and see each change named; garbled files never panic the
//! verifier. Every verdict of `ledgerctl verify-bundle` is also asked of the independent
//! Python verifier written from docs/FORMAT.md (`tests/interop/verify_bundle.py`), and the
//! two must agree.

use std::path::{Path, PathBuf};
use std::process::Output;

use ledger_client::evidence::{self, CHECKPOINT, EVENTS, LEAVES, MANIFEST, VKEY};
use ledger_proto::note::{Checkpoint, NoteSigner, NoteVerifier};
use ledger_proto::pb;
use ledger_tests::{Daemon, ok, stderr, stdout};

const V1: &str = "rule read-invoices: allow tool = \"db.query\" and params.sql ~ /(?i)^select /\n\
rule no-shell: deny tool ~ \"shell.*\"\n\
default deny\n";

const V2: &str = "rule read-invoices: allow tool = \"db.query\" and params.sql ~ /(?i)^select /\n\
rule invoice-files: allow tool = \"fs.read_file\" and params.path ~ \"/srv/invoices/**\"\n\
rule no-shell: deny tool ~ \"shell.*\"\n\
default deny\n";

fn now() -> String {
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t = jiff::Timestamp::now().to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    t
}

fn decide(daemon: &Daemon, agent: &str, tool: &str, params: &str, decision: &str, reason: &str) {
    ok(&daemon.ctl(&[
        "append",
        "--agent",
        agent,
        "--tool",
        tool,
        "--params",
        params,
        "--decision",
        decision,
        "--rule",
        if decision == "deny" { "no-shell" } else { "read-invoices" },
        &format!("--reason={reason}"),
    ]));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Has the daemon sign the manifest of the (tampered) bundle again: what an insider with
/// the auditor role could do. The checks behind the manifest must still catch the change.
fn resign(daemon: &Daemon, dir: &Path) {
    let files = evidence::manifest_files(dir).expect("files");
    let wire = files.into_iter().map(|f| pb::ManifestFile { path: f.path, blake3: f.blake3 }).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let signed = runtime.block_on(async { daemon.client().await.sign_manifest(wire).await.expect("sign") });
    std::fs::write(dir.join(MANIFEST), signed.note).expect("write manifest");
}

fn verify(daemon: &Daemon, dir: &Path, key: &Path) -> Output {
    daemon.ctl(&["verify-bundle", dir.to_str().expect("utf-8"), "--key", key.to_str().expect("utf-8")])
}

/// The second verifier, written from docs/FORMAT.md alone (`blake3` and `pynacl` from
/// PyPI, installed by `.ci/run`).
fn python_verify(dir: &Path, key: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/verify_bundle.py");
    std::process::Command::new("python3")
        .arg(script)
        .arg(dir)
        .arg("--key")
        .arg(key)
        .output()
        .expect("run python3 tests/interop/verify_bundle.py (pip install -r tests/interop/requirements.txt)")
}

/// Both verifiers accept the bundle.
fn accepted(daemon: &Daemon, dir: &Path, key: &Path) {
    let out = verify(daemon, dir, key);
    assert!(ok(&out).starts_with("ok: "), "{}", stdout(&out));
    let py = python_verify(dir, key);
    assert_eq!(py.status.code(), Some(0), "the Python verifier refused {}: {}", dir.display(), stderr(&py));
}

/// Runs both verifiers on a tampered copy: each must fail it with exit 1, `ledgerctl`
/// naming `what`, the Python one with a named check (never a crash).
fn caught(daemon: &Daemon, dir: &Path, key: &Path, what: &[&str]) -> String {
    let out = verify(daemon, dir, key);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}: stdout {} stderr {err}", dir.display(), stdout(&out));
    assert!(what.iter().all(|w| err.contains(w)), "{}: expected {what:?} in: {err}", dir.display());
    let py = python_verify(dir, key);
    let py_err = stderr(&py);
    assert!(
        py.status.code() == Some(1) && py_err.starts_with("FAILED "),
        "{}: ledgerctl refused it ({}), the Python verifier said {:?}: {py_err}",
        dir.display(),
        err.trim(),
        py.status.code()
    );
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    println!(
        "{name}: {}
{name} (python): {}",
        err.trim(),
        py_err.trim()
    );
    err
}

/// Both verifiers give the same verdict (exit code).
fn agree(daemon: &Daemon, dir: &Path, key: &Path) -> Output {
    let out = verify(daemon, dir, key);
    let py = python_verify(dir, key);
    assert_eq!(
        out.status.code(),
        py.status.code(),
        "{}: ledgerctl {} / python {}",
        dir.display(),
        stderr(&out).trim(),
        stderr(&py).trim()
    );
    out
}

fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let text = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    edit(&mut lines);
    std::fs::write(path, lines.concat()).expect("write");
}

/// Finds a Chromium on PATH (Debian's `chromium`, which `.ci/run` installs).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Renders the summary with headless Chromium to a PNG and checks the page logged nothing
/// to the console (a script, or anything the page's CSP blocked, would). With
/// `LEDGER_EVIDENCE_PNG=FILE` the PNG is also copied there (how docs/evidence-summary.png
/// is made).
fn render_summary(html: &Path, tmp: &Path) {
    let Some(chromium) = chromium() else {
        println!("SKIPPED rendering summary.html: no chromium on PATH (`apt-get install chromium`)");
        return;
    };
    let png = tmp.join("summary.png");
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", tmp.join("chromium-profile").display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1100,1500")
        .arg(format!("file://{}", html.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish rendering within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("chromium output");
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "summary.html logged to the console:\n{}", console.join("\n"));
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}); chromium said:\n{log}"));
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "not a plausible PNG: {} bytes",
        bytes.len()
    );
    if let Some(target) = std::env::var_os("LEDGER_EVIDENCE_PNG") {
        std::fs::copy(&png, target).expect("copy the PNG");
    }
    println!("rendered summary.html to a {} byte PNG, no console messages", bytes.len());
}

/// A named way to damage a copy of the bundle.
type Garble = (&'static str, fn(&Path));

#[test]
fn issue_7_evidence_bundle_verifies_and_every_tampering_is_named() {
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    assert!(key.exists(), "the daemon writes its verifier key to {}", key.display());

    for (name, owner) in [("billing-bot", "finance@example.com"), ("ops-bot", "sre@example.com")] {
        ok(&daemon.ctl(&["agents", "register", name, "--owner", owner, "--purpose", "tests"]));
    }
    let v1 = tmp.path().join("v1.policy");
    std::fs::write(&v1, V1).expect("write");
    ok(&daemon.ctl(&[
        "policy",
        "set",
        "billing-bot",
        "--file",
        v1.to_str().expect("utf-8"),
        "--author",
        "alice",
        "--approver",
        "bob",
        "--reason",
        "CHG-1",
    ]));
    decide(&daemon, "billing-bot", "db.query", r#"{"sql":"select 1"}"#, "allow", "before the period");

    let from = now();
    let v2 = tmp.path().join("v2.policy");
    std::fs::write(&v2, V2).expect("write");
    ok(&daemon.ctl(&[
        "policy",
        "set",
        "billing-bot",
        "--file",
        v2.to_str().expect("utf-8"),
        "--author",
        "carol",
        "--approver",
        "dave",
        "--reason",
        "CHG-2: <invoice files> & more",
    ]));
    decide(&daemon, "billing-bot", "db.query", r#"{"sql":"select * from invoices"}"#, "allow", "read");
    decide(&daemon, "billing-bot", "fs.read_file", r#"{"path":"/srv/invoices/1.pdf"}"#, "allow", "=SUM(A1)");
    decide(&daemon, "ops-bot", "shell.exec", r#"{"cmd":"uptime"}"#, "deny", "-no shell");
    for i in 0..15 {
        let params = format!(r#"{{"cmd":"cat /etc/shadow #{i}"}}"#);
        decide(&daemon, "billing-bot", "shell.exec", &params, "deny", "<script>alert(1)</script> probing");
    }
    // A restart inside the period: a monitoring gap the summary must show.
    let mut daemon = daemon;
    let _keep = daemon.keep_dir();
    let data_dir = daemon.data_dir.clone();
    assert!(daemon.stop(), "ledgerd stops cleanly");
    let daemon = Daemon::start_in(&data_dir).expect("ledgerd restarts");
    decide(&daemon, "ops-bot", "db.query", r#"{"sql":"select 2"}"#, "allow", "@ops");
    let to = now();
    decide(&daemon, "billing-bot", "db.query", r#"{"sql":"select 3"}"#, "allow", "after the period");

    let bundle = tmp.path().join("bundle");
    let out =
        daemon.ctl(&["evidence", "--from", &from, "--to", &to, "--out", bundle.to_str().expect("utf-8")]);
    ok(&out);
    println!("export: {}", stderr(&out).trim());
    for file in [
        "MANIFEST",
        "checkpoint.note",
        "leaves.bin",
        "proof.json",
        "events.csv",
        "agents.csv",
        "policy_changes.csv",
        "access_review.csv",
        "summary.html",
        "verifier.vkey",
        "VERIFY.md",
        "policies/billing-bot/v1.txt",
        "policies/billing-bot/v2.txt",
    ] {
        assert!(bundle.join(file).is_file(), "{file} is missing");
    }
    let events = std::fs::read_to_string(bundle.join(EVENTS)).expect("events");
    // 1 policy change + 19 decisions + stopped and started; header first; formula cells
    // neutralised.
    assert_eq!(events.lines().count(), 23, "{events}");
    assert!(events.contains(",'=SUM(A1),") && events.contains(",'-no shell,"), "{events}");
    assert!(!events.contains("before the period") && !events.contains("after the period"));
    // The same period through `ledgerctl export`: the bundle's rows are the export's rows,
    // column for column, with the leaf hash added.
    let exported = ok(&daemon.ctl(&["export", "--from", &from, "--to", &to]));
    let bundle_lines: Vec<&str> = events.lines().collect();
    let export_lines: Vec<&str> = exported.lines().collect();
    assert_eq!(bundle_lines.len(), export_lines.len(), "{exported}");
    for (b, e) in bundle_lines.iter().zip(&export_lines) {
        let cut = b.rfind(',').expect("a leaf_hash column");
        assert_eq!(&b[..cut], *e, "a bundle row and its export row differ");
    }
    let html = std::fs::read_to_string(bundle.join("summary.html")).expect("html");
    assert!(html.contains("<svg") && !html.contains("<script>") && html.contains("&lt;script&gt;"));
    assert!(html.contains("daemon_stopped") && html.contains("daemon_started"), "monitoring gaps");
    assert!(!html.contains("http://") || !html.contains("src=\"http"), "nothing fetched");

    render_summary(&bundle.join("summary.html"), tmp.path());

    accepted(&daemon, &bundle, &key);
    let own = daemon.ctl(&["verify-bundle", bundle.to_str().expect("utf-8")]);
    assert!(ok(&own).starts_with("ok: ") && stderr(&own).contains("NOT against a key obtained out of band"));

    // --agent narrows the CSV views, never the leaves; the narrowed bundle verifies too.
    let narrowed = tmp.path().join("ops-only");
    let narrowed_str = narrowed.to_str().expect("utf-8");
    ok(&daemon.ctl(&["evidence", "--from", &from, "--to", &to, "--agent", "ops-bot", "--out", narrowed_str]));
    assert_eq!(std::fs::read(narrowed.join(LEAVES)).ok(), std::fs::read(bundle.join(LEAVES)).ok());
    let mut reader = csv::Reader::from_path(narrowed.join(EVENTS)).expect("csv");
    let agents: Vec<String> = reader.records().map(|r| r.expect("row")[3].to_string()).collect();
    assert_eq!(agents, ["ops-bot", "ops-bot"]);
    accepted(&daemon, &narrowed, &key);
    let again = daemon.ctl(&["evidence", "--from", &from, "--to", &to, "--out", narrowed_str]);
    assert_eq!(again.status.code(), Some(2), "a non-empty --out is refused: {}", stderr(&again));
    // A period without entries is refused, and no half-written bundle is left behind.
    let empty = tmp.path().join("empty-period");
    let empty_str = empty.to_str().expect("utf-8");
    let out = daemon.ctl(&["evidence", "--from", "2001-01-01", "--to", "2001-02-01", "--out", empty_str]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no entries"), "{}", stderr(&out));
    assert!(!empty.exists(), "the partial bundle was removed");

    let case = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&bundle, &dir);
        dir
    };

    // One CSV cell: the manifest catches it; re-signed, the row check does.
    let cell = |dir: &PathBuf| {
        let path = dir.join(EVENTS);
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(&path, text.replacen(",fs.read_file,", ",fs.read_fila,", 1)).expect("write");
    };
    let dir = case("csv-cell");
    cell(&dir);
    caught(&daemon, &dir, &key, &["events.csv", "BLAKE3", "changed"]);
    let dir = case("csv-cell-resigned");
    cell(&dir);
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["events.csv", "column tool", "fs.read_fila"]);

    // One byte of leaves.bin.
    let byte = |dir: &PathBuf| {
        let path = dir.join(LEAVES);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes).expect("write");
    };
    let dir = case("leaf-byte");
    byte(&dir);
    caught(&daemon, &dir, &key, &["leaves.bin", "BLAKE3"]);
    let dir = case("leaf-byte-resigned");
    byte(&dir);
    resign(&daemon, &dir);
    let err = caught(&daemon, &dir, &key, &[]);
    assert!(err.contains("leaves.bin") || err.contains("range proof"), "{err}");

    // A dropped row, and two rows swapped.
    let dir = case("row-dropped");
    edit_lines(&dir.join(EVENTS), |lines| {
        lines.remove(5);
    });
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["events.csv", "line 6", "dropped, added or reordered"]);
    let dir = case("rows-swapped");
    edit_lines(&dir.join(EVENTS), |lines| lines.swap(3, 4));
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["events.csv", "line 4", "dropped, added or reordered"]);

    // A checkpoint signed by another key under the same name.
    let note = std::fs::read_to_string(bundle.join(CHECKPOINT)).expect("note");
    let trusted = NoteVerifier::parse(&std::fs::read_to_string(&key).expect("key")).expect("vkey");
    let cp: Checkpoint = trusted.verify_checkpoint(&note).expect("checkpoint");
    let forger = NoteSigner::generate(trusted.name()).expect("signer");
    let forged = forger.sign_checkpoint(&cp).expect("sign");
    let dir = case("checkpoint-other-key");
    std::fs::write(dir.join(CHECKPOINT), &forged).expect("write");
    caught(&daemon, &dir, &key, &["checkpoint.note", "BLAKE3"]);
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["checkpoint.note", "signature"]);

    // A whole bundle re-signed with the forger's key and its verifier.vkey: consistent
    // with itself (so it passes without --key), refused against the out-of-band key.
    let dir = case("all-forged");
    std::fs::write(dir.join(CHECKPOINT), &forged).expect("write");
    std::fs::write(dir.join(VKEY), format!("{}\n", forger.verifier().to_vkey_string())).expect("write");
    let files = evidence::manifest_files(&dir).expect("files");
    let body = ledger_proto::manifest::body(trusted.name(), &files).expect("body");
    std::fs::write(dir.join(MANIFEST), forger.sign(&body).expect("sign")).expect("write");
    let self_consistent = daemon.ctl(&["verify-bundle", dir.to_str().expect("utf-8")]);
    assert!(ok(&self_consistent).starts_with("ok: ") && stderr(&self_consistent).contains("WARNING"));
    let forger_key = tmp.path().join("forger.vkey");
    std::fs::write(&forger_key, forger.verifier().to_vkey_string()).expect("write");
    accepted(&daemon, &dir, &forger_key);
    caught(&daemon, &dir, &key, &["MANIFEST", "signature"]);

    // Truncated, garbled and missing files: a named failure (exit 1), never a panic.
    let garbles: [Garble; 7] = [
        ("truncated-leaves", |d| {
            let bytes = std::fs::read(d.join(LEAVES)).expect("read");
            std::fs::write(d.join(LEAVES), &bytes[..bytes.len() - 3]).expect("write");
        }),
        ("garbled-proof", |d| std::fs::write(d.join("proof.json"), b"{\"format\": 7").expect("write")),
        ("binary-events", |d| std::fs::write(d.join(EVENTS), [0xff, 0xfe, b'"', 0, b'\n']).expect("write")),
        ("empty-manifest", |d| std::fs::write(d.join(MANIFEST), b"").expect("write")),
        ("extra-file", |d| std::fs::write(d.join("notes.txt"), b"hi").expect("write")),
        ("missing-leaves", |d| std::fs::remove_file(d.join(LEAVES)).expect("rm")),
        ("huge-leaf-length", |d| {
            let mut bytes = std::fs::read(d.join(LEAVES)).expect("read");
            bytes[..4].copy_from_slice(&u32::MAX.to_be_bytes());
            std::fs::write(d.join(LEAVES), bytes).expect("write");
        }),
    ];
    for (name, garble) in garbles {
        let dir = case(name);
        garble(&dir);
        caught(&daemon, &dir, &key, &[]);
        // Re-signed, the manifest is whole again; the damaged data must still be refused
        // (an extra file or a fresh manifest is then legitimately fine).
        resign(&daemon, &dir);
        let out = agree(&daemon, &dir, &key);
        let fine_when_resigned = name == "empty-manifest";
        assert!(
            out.status.code() == Some(1) || (fine_when_resigned && out.status.success()),
            "{name} re-signed: {:?} {}",
            out.status.code(),
            stderr(&out)
        );
    }

    // Usage errors: exit 2.
    let missing = verify(&daemon, &tmp.path().join("no-such-bundle"), &key);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let bad_key =
        daemon.ctl(&["verify-bundle", bundle.to_str().expect("utf-8"), "--key", "/nonexistent.vkey"]);
    assert_eq!(bad_key.status.code(), Some(2), "{}", stderr(&bad_key));
}
