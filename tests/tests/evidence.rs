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

// ---------------------------------------------------------------- issue 13

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn read_proof(dir: &Path) -> evidence::ProofFile {
    serde_json::from_slice(&std::fs::read(dir.join(evidence::PROOF)).expect("proof.json")).expect("proof")
}

fn write_proof(dir: &Path, proof: &evidence::ProofFile) {
    let text = serde_json::to_string_pretty(proof).expect("json");
    std::fs::write(dir.join(evidence::PROOF), format!("{text}\n")).expect("write proof.json");
}

fn export(daemon: &Daemon, from: &str, to: &str, out: &Path) {
    ok(&daemon.ctl(&["evidence", "--from", from, "--to", to, "--out", out.to_str().expect("utf-8")]));
}

fn set_policy(daemon: &Daemon, tmp: &Path, agent: &str, text: &str, reason: &str) {
    let file = tmp.join("policy.txt");
    std::fs::write(&file, text).expect("write");
    let path = file.to_str().expect("utf-8");
    let reason = format!("--reason={reason}");
    ok(&daemon.ctl(&["policy", "set", agent, "--file", path, "--author", "alice", &reason]));
}

/// Makes `proof` a correct proof of its range for the tree of `size` leaves, with
/// `extra` entries proven on their own (and those of `proof.entries` still in the tree).
fn reprove(daemon: &Daemon, proof: &mut evidence::ProofFile, size: u64, extra: &[u64]) {
    let (start, end) = (proof.start, proof.end);
    let mut known = std::collections::HashMap::new();
    proof.entries.retain(|e| e.seq < size);
    runtime().block_on(async {
        let mut client = daemon.client().await;
        for m in [start, end - 1] {
            let path = client.prove(m, size).await.expect("prove").path;
            known.extend(evidence::inclusion_ranges(m, size).into_iter().zip(path));
        }
        for &seq in extra {
            let p = client.prove(seq, size).await.expect("prove");
            let leaf = ledger_proto::leaf::leaf_bytes(&p.entry.expect("entry"));
            let path = p.path.iter().map(|h| ledger_proto::hex(h)).collect();
            proof.entries.push(evidence::ProvenEntry { seq, leaf: ledger_proto::hex(&leaf), path });
        }
    });
    proof.entries.sort_by_key(|e| e.seq);
    proof.entries.dedup_by_key(|e| e.seq);
    proof.hashes =
        evidence::outside_subtrees(size, start, end).iter().map(|r| ledger_proto::hex(&known[r])).collect();
    proof.tree_size = size;
}

/// Rebuilds a bundle's range as an insider would: only the leaves up to `cut`, under an
/// older real checkpoint `old` (fetched from the daemon when it was signed), with a correct
/// range proof for that tree, `events.csv` cut to match, and the manifest signed again.
fn cut_under_old_checkpoint(daemon: &Daemon, dir: &Path, old: &pb::Checkpoint, cut: u64) {
    let mut proof = read_proof(dir);
    let mut reader = evidence::LeafReader::new(std::fs::File::open(dir.join(LEAVES)).expect("leaves"));
    let mut kept = Vec::new();
    let mut seq = proof.start;
    while let Some(leaf) = reader.next_leaf().expect("leaf") {
        if seq <= cut {
            evidence::frame_leaf(&mut kept, leaf).expect("frame");
        }
        seq += 1;
    }
    std::fs::write(dir.join(LEAVES), kept).expect("write leaves");
    proof.end = cut + 1;
    proof.last_seq = cut;
    reprove(daemon, &mut proof, old.size, &[]);
    write_proof(dir, &proof);
    edit_lines(&dir.join(EVENTS), |lines| {
        lines.retain(|l| l.split(',').next().and_then(|c| c.parse::<u64>().ok()).is_none_or(|seq| seq <= cut))
    });
    std::fs::write(dir.join(CHECKPOINT), &old.note).expect("write checkpoint");
    resign(daemon, dir);
}

#[test]
fn issue_13_end_of_period_cannot_be_hidden() {
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    decide(&daemon, "bot", "db.query", r#"{"sql":"select 0"}"#, "allow", "before");
    let from = now();
    let mut seqs = Vec::new();
    let mut older = None;
    for i in 0..6 {
        let out = ok(&daemon.ctl(&[
            "append",
            "--agent",
            "bot",
            "--tool",
            "db.query",
            "--decision",
            "allow",
            "--reason",
            "in",
        ]));
        seqs.push(out.split_whitespace().find_map(|w| w.parse::<u64>().ok()).expect("a seq"));
        if i == 2 {
            // A real checkpoint signed inside the period: what an insider would reuse.
            older =
                Some(runtime().block_on(async { daemon.client().await.checkpoint(true).await.expect("cp") }));
        }
    }
    let to = now();
    // Nothing follows the period: the export entry is the only entry after it.
    let bundle = tmp.path().join("bundle");
    export(&daemon, &from, &to, &bundle);
    accepted(&daemon, &bundle, &key);

    let proof = read_proof(&bundle);
    assert_eq!((proof.first_seq, proof.last_seq), (seqs[0], seqs[5]));
    assert_eq!(proof.export_seq, seqs[5] + 1, "the export entry follows the period");
    assert_eq!(proof.end, proof.export_seq + 1, "and it is the proven entry after the period");
    // proof.json writes integers as strings (nanoseconds exceed 2^53).
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join(evidence::PROOF)).expect("read")).expect("json");
    for member in ["tree_size", "start", "end", "from_unix_nanos", "to_unix_nanos", "export_seq"] {
        assert!(raw[member].is_string(), "{member} is {}", raw[member]);
    }
    // The checkpoint's time is exact and not before the period's end.
    let note = std::fs::read_to_string(bundle.join(CHECKPOINT)).expect("note");
    let cp = NoteVerifier::parse(&std::fs::read_to_string(&key).expect("key"))
        .expect("vkey")
        .verify_checkpoint(&note)
        .expect("checkpoint");
    let signed = ledger_client::state::checkpoint_time(&cp).expect("a time line");
    assert!(signed.as_nanosecond() >= i128::from(proof.to_unix_nanos), "{signed} is before the period ends");

    // The log shows who exported which period (CC7): uid, user, period, agents.
    let rows = ok(&daemon.ctl(&[
        "query",
        "kind = evidence_exported | fields seq, uid, details",
        "--format",
        "json",
    ]));
    let row: serde_json::Value = serde_json::from_str(rows.lines().next().expect("one row")).expect("json");
    assert_eq!(row["seq"], proof.export_seq);
    assert_eq!(row["uid"], rustix::process::getuid().as_raw());
    let details: serde_json::Value =
        serde_json::from_str(row["details"].as_str().expect("details as JSON text")).expect("json");
    assert!(details["user"].is_string(), "the caller's user name: {details}");
    assert_eq!((details["from"].as_str(), details["to"].as_str()), (Some(from.as_str()), Some(to.as_str())));
    assert_eq!(details["agents"], serde_json::json!([]));

    // A writer cannot forge an export entry: only ledgerd writes that kind.
    let forged = runtime().block_on(async {
        let entry = pb::NewEntry {
            kind: pb::Kind::EvidenceExported as i32,
            agent: "bot".into(),
            details: details.to_string(),
            ..Default::default()
        };
        daemon.client().await.append(entry).await
    });
    assert!(
        forged.is_err_and(|e| e.to_string().contains("kind")),
        "a writer's evidence_exported entry is refused"
    );

    // The insider's cut: the last three entries of the period dropped, everything rebuilt
    // against the older real checkpoint, the manifest signed again. Before issue 13 this
    // verified as complete.
    let older = older.expect("checkpoint");
    let dir = tmp.path().join("cut-end");
    copy_dir(&bundle, &dir);
    cut_under_old_checkpoint(&daemon, &dir, &older, seqs[2]);
    caught(&daemon, &dir, &key, &["completeness", "entry after"]);

    // Another export entry (of another period) cannot stand in for this one.
    let dir = tmp.path().join("other-export-entry");
    copy_dir(&bundle, &dir);
    let mut forged = read_proof(&dir);
    forged.export_seq = forged.first_seq;
    write_proof(&dir, &forged);
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["export entry", "not evidence_exported"]);
    let dir = tmp.path().join("export-entry-other-period");
    export(&daemon, &from, &now(), &tmp.path().join("second"));
    copy_dir(&bundle, &dir);
    let second = read_proof(&tmp.path().join("second"));
    let mut forged = read_proof(&dir);
    forged.export_seq = second.export_seq;
    reprove(&daemon, &mut forged, second.tree_size, &[second.export_seq]);
    write_proof(&dir, &forged);
    std::fs::copy(tmp.path().join("second").join(CHECKPOINT), dir.join(CHECKPOINT)).expect("copy");
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["export entry", "recorded an export of"]);

    // RecordExport itself refuses what makes no period, and records nothing for it.
    let refused = runtime().block_on(async {
        let mut client = daemon.client().await;
        let backwards = client.record_export(proof.to_unix_nanos, proof.from_unix_nanos, Vec::new()).await;
        let future = client.record_export(i64::MAX - 1, i64::MAX, Vec::new()).await;
        let agents = client.record_export(0, 1, vec!["a\nb".into()]).await;
        [backwards, future, agents].map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
    });
    for r in &refused {
        assert!(r.as_ref().is_err_and(|e| e.contains("--from") || e.contains("--agent")), "{r:?}");
    }

    // An empty period records nothing and writes nothing.
    let size = daemon.ready_size();
    let empty = tmp.path().join("empty");
    let out = daemon.ctl(&[
        "evidence",
        "--from",
        "2001-01-01",
        "--to",
        "2001-02-01",
        "--out",
        empty.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!empty.exists());
    let exports = ok(&daemon.ctl(&["query", "kind = evidence_exported | count"]));
    assert!(exports.contains('2'), "two exports recorded, not three: {exports} (log size was {size})");
}

#[test]
fn issue_13_formula_protection_cannot_be_removed_unseen() {
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    ok(&daemon.ctl(&["agents", "register", "bot", "--owner", "o@example.com", "--purpose", "tests"]));
    let from = now();
    set_policy(&daemon, tmp.path(), "bot", V1, "=HYPERLINK(\"http://evil\",\"CHG-9\")");
    decide(&daemon, "bot", "db.query", r#"{"sql":"select 1"}"#, "allow", "=cmd|' /C calc'!A0");
    let to = now();
    let bundle = tmp.path().join("bundle");
    export(&daemon, &from, &to, &bundle);
    accepted(&daemon, &bundle, &key);

    let events = std::fs::read_to_string(bundle.join(EVENTS)).expect("events");
    assert!(events.contains("'=cmd|"), "{events}");
    let dir = tmp.path().join("events-formula-live");
    copy_dir(&bundle, &dir);
    std::fs::write(dir.join(EVENTS), events.replace("'=cmd|", "=cmd|")).expect("write");
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["events.csv", "column reason"]);

    let changes = std::fs::read_to_string(bundle.join("policy_changes.csv")).expect("policy_changes");
    assert!(changes.contains("'=HYPERLINK("), "{changes}");
    let dir = tmp.path().join("policy-formula-live");
    copy_dir(&bundle, &dir);
    std::fs::write(dir.join("policy_changes.csv"), changes.replace("'=HYPERLINK(", "=HYPERLINK("))
        .expect("write");
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["policy_changes.csv", "column reason"]);

    // A quote added where there was none is caught too.
    let dir = tmp.path().join("events-extra-quote");
    copy_dir(&bundle, &dir);
    std::fs::write(dir.join(EVENTS), events.replacen(",db.query,", ",'db.query,", 1)).expect("write");
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["events.csv", "column tool"]);
}

/// Agent names that the old mapping sent to one folder (or to the bundle's root).
const CLASHING: [&str; 6] = ["_default", "x@y", "x_y", "..", "Bot", "bot"];

#[test]
fn issue_13_policy_files_never_overwrite_each_other() {
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    let text = |i: usize| format!("rule r{i}: allow tool = \"tool-{i}\"\ndefault deny\n");
    set_policy(&daemon, tmp.path(), "*", &text(0), "default");
    for (i, name) in CLASHING.iter().enumerate() {
        ok(&daemon.ctl(&["agents", "register", name, "--owner", "o@example.com", "--purpose", "tests"]));
        set_policy(&daemon, tmp.path(), name, &text(i + 1), "first");
    }
    decide(&daemon, "bot", "db.query", "{}", "allow", "before");
    let from = now();
    set_policy(&daemon, tmp.path(), "x@y", &text(99), "second");
    decide(&daemon, "x@y", "db.query", "{}", "allow", "in");
    let to = now();
    let bundle = tmp.path().join("bundle");
    export(&daemon, &from, &to, &bundle);
    accepted(&daemon, &bundle, &key);

    let mut reader = csv::Reader::from_path(bundle.join("policy_changes.csv")).expect("csv");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 1 + CLASHING.len() + 1, "every version of every agent, and x@y v2");
    let files: std::collections::BTreeSet<&str> = rows.iter().map(|r| &r[11]).collect();
    assert_eq!(files.len(), rows.len(), "one file per version: {files:?}");
    for row in &rows {
        let file = bundle.join(&row[11]);
        assert!(file.starts_with(bundle.join("policies")) && file.is_file(), "{}", &row[11]);
        let want = match (&row[0], &row[1]) {
            ("*", _) => text(0),
            ("x@y", "2") => text(99),
            (name, _) => text(CLASHING.iter().position(|n| *n == name).expect("known") + 1),
        };
        assert_eq!(std::fs::read_to_string(&file).expect("read"), want, "{}", &row[11]);
    }
    for expected in [
        "policies/_2a/v1.txt",
        "policies/_5fdefault/v1.txt",
        "policies/x_40y/v1.txt",
        "policies/x_40y/v2.txt",
        "policies/x_5fy/v1.txt",
        "policies/_2e_2e/v1.txt",
        "policies/_42ot/v1.txt",
        "policies/bot/v1.txt",
    ] {
        assert!(files.contains(expected), "{expected} in {files:?}");
    }
    // The versions set before the period are proven on their own in proof.json.
    assert!(read_proof(&bundle).entries.len() > CLASHING.len(), "the default and six agents");
}

#[test]
fn issue_13_manifest_covers_every_file_and_policies_match_the_log() {
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    ok(&daemon.ctl(&["agents", "register", "billing-bot", "--owner", "o@example.com", "--purpose", "tests"]));
    set_policy(&daemon, tmp.path(), "billing-bot", V1, "CHG-1");
    let from = now();
    set_policy(&daemon, tmp.path(), "billing-bot", V2, "CHG-2");
    decide(&daemon, "billing-bot", "db.query", r#"{"sql":"select 1"}"#, "allow", "in");
    let to = now();
    let bundle = tmp.path().join("bundle");
    export(&daemon, &from, &to, &bundle);
    accepted(&daemon, &bundle, &key);
    let v1 = "policies/billing-bot/v1.txt";
    let v2 = "policies/billing-bot/v2.txt";

    type Tamper = (&'static str, bool, fn(&Path), &'static [&'static str]);
    let cases: [Tamper; 10] = [
        (
            "summary-dropped",
            true,
            |d| std::fs::remove_file(d.join("summary.html")).expect("rm"),
            &["summary.html", "missing"],
        ),
        (
            "agents-dropped",
            true,
            |d| std::fs::remove_file(d.join("agents.csv")).expect("rm"),
            &["agents.csv", "missing"],
        ),
        (
            "agents-edited",
            false,
            |d| {
                let text = std::fs::read_to_string(d.join("agents.csv")).expect("read");
                std::fs::write(d.join("agents.csv"), text.replace("o@example.com", "x@example.com"))
                    .expect("write")
            },
            &["agents.csv", "BLAKE3"],
        ),
        (
            "summary-edited",
            false,
            |d| std::fs::write(d.join("summary.html"), "<p>all fine</p>").expect("write"),
            &["summary.html", "BLAKE3"],
        ),
        (
            "extra-file",
            true,
            |d| std::fs::write(d.join("notes.txt"), "hi").expect("write"),
            &["notes.txt", "not a file of an evidence bundle"],
        ),
        (
            "extra-policy-file",
            true,
            |d| {
                std::fs::create_dir_all(d.join("policies/ghost")).expect("mkdir");
                std::fs::write(d.join("policies/ghost/v1.txt"), "default allow\n").expect("write")
            },
            &["policy_changes.csv", "policies/ghost/v1.txt", "no row"],
        ),
        (
            "policy-text-edited",
            true,
            |d| std::fs::write(d.join("policies/billing-bot/v2.txt"), "default allow\n").expect("write"),
            &["policy_changes.csv", "v2.txt", "not the text"],
        ),
        (
            "policy-author-edited",
            true,
            |d| {
                let text = std::fs::read_to_string(d.join("policy_changes.csv")).expect("read");
                std::fs::write(d.join("policy_changes.csv"), text.replace(",alice,", ",mallory,"))
                    .expect("write")
            },
            &["policy_changes.csv", "column author"],
        ),
        (
            "policy-change-hidden",
            true,
            |d| {
                edit_lines(&d.join("policy_changes.csv"), |lines| lines.retain(|l| !l.contains("CHG-2")));
                std::fs::remove_file(d.join("policies/billing-bot/v2.txt")).expect("rm")
            },
            &["policy_changes.csv", "not listed"],
        ),
        (
            "policy-before-hidden",
            true,
            |d| {
                edit_lines(&d.join("policy_changes.csv"), |lines| lines.retain(|l| !l.contains("CHG-1")));
                std::fs::remove_file(d.join("policies/billing-bot/v1.txt")).expect("rm")
            },
            &["policy_changes.csv", "version 1", "not listed"],
        ),
    ];
    assert!(bundle.join(v1).is_file() && bundle.join(v2).is_file());
    for (name, resigned, tamper, what) in cases {
        let dir = tmp.path().join(name);
        copy_dir(&bundle, &dir);
        tamper(&dir);
        if resigned {
            resign(&daemon, &dir);
        }
        caught(&daemon, &dir, &key, what);
    }

    // verifier.vkey must be the --key: a bundle naming another key is refused even when
    // everything else was signed by the right one.
    let dir = tmp.path().join("vkey-replaced");
    copy_dir(&bundle, &dir);
    let other = NoteSigner::generate("someone-else").expect("signer");
    std::fs::write(dir.join(VKEY), format!("{}\n", other.verifier().to_vkey_string())).expect("write");
    resign(&daemon, &dir);
    caught(&daemon, &dir, &key, &["verifier.vkey", "not the --key"]);
}

/// Writes a `verify --state` file that trusts `note` under `key`.
fn trust(state: &Path, key: &NoteVerifier, note: &str) {
    let cp = key.verify_checkpoint(note).expect("checkpoint");
    let text = serde_json::json!({
        "format": ledger_client::state::FORMAT,
        "key": key.to_vkey_string(),
        "note": note,
        "size": cp.size,
        "root": ledger_proto::hex(&cp.root),
        "trusted_at": "2026-01-01T00:00:00Z",
    });
    std::fs::write(state, text.to_string()).expect("write state");
}

#[test]
fn issue_13_checkpoint_times_have_nanoseconds_and_whole_seconds_still_verify() {
    let mut daemon = Daemon::start();
    let _keep = daemon.keep_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    decide(&daemon, "bot", "db.query", "{}", "allow", "before");
    let from = now();
    decide(&daemon, "bot", "db.query", "{}", "allow", "in");
    let to = now();
    let bundle = tmp.path().join("bundle");
    export(&daemon, &from, &to, &bundle);

    // The new time line: RFC 3339 UTC to the nanosecond (no trailing zeros).
    let note = std::fs::read_to_string(bundle.join(CHECKPOINT)).expect("note");
    let time = note.lines().find_map(|l| l.strip_prefix("time ")).expect("a time line");
    let parsed: jiff::Timestamp = time.parse().expect("RFC 3339");
    assert_eq!(parsed.to_string(), time, "one spelling");
    assert!(time.ends_with('Z') && time.len() <= "2026-01-01T00:00:00.123456789Z".len());

    // The same checkpoint as a daemon before issue 13 wrote it: whole seconds, signed by
    // the ledger's key. It verifies in a bundle (both verifiers) ...
    let signer = NoteSigner::from_private_key_string(
        &std::fs::read_to_string(daemon.data_dir.join("signing.key")).expect("signing key"),
    )
    .expect("signer");
    let trusted = NoteVerifier::parse(&std::fs::read_to_string(&key).expect("key")).expect("vkey");
    let mut cp = trusted.verify_checkpoint(&note).expect("checkpoint");
    let whole = jiff::Timestamp::from_second(parsed.as_second()).expect("time");
    cp.extensions = vec![format!("time {}", whole.strftime("%Y-%m-%dT%H:%M:%SZ"))];
    let old_note = signer.sign_checkpoint(&cp).expect("sign");
    let dir = tmp.path().join("whole-seconds");
    copy_dir(&bundle, &dir);
    std::fs::write(dir.join(CHECKPOINT), &old_note).expect("write");
    resign(&daemon, &dir);
    accepted(&daemon, &dir, &key);

    // ... and as the trusted checkpoint of `verify --state`, which then moves on to the
    // daemon's newer checkpoints.
    let state = tmp.path().join("state.json");
    trust(&state, &trusted, &old_note);
    decide(&daemon, "bot", "db.query", "{}", "allow", "after");
    ok(&daemon.ctl(&["checkpoint", "--new"]));
    let out = daemon.ctl(&["verify", "--state", state.to_str().expect("utf-8"), "--full"]);
    assert_eq!(out.status.code(), Some(0), "{} {}", stdout(&out), stderr(&out));
    let now_trusted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert!(now_trusted["size"].as_u64() > Some(cp.size), "{now_trusted}");

    // `ledgerctl verify --checkpoint` with the whole-second note: the log still holds it.
    let old_file = tmp.path().join("old.note");
    std::fs::write(&old_file, &old_note).expect("write");
    let out = daemon.ctl(&[
        "verify",
        "--checkpoint",
        old_file.to_str().expect("utf-8"),
        "--key",
        key.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{} {}", stdout(&out), stderr(&out));

    // A daemon whose last stored checkpoint has whole seconds (as one before issue 13
    // left it) starts, rotates its key, and verify --state from that checkpoint follows.
    let data = daemon.data_dir.clone();
    assert!(daemon.stop(), "ledgerd stops cleanly");
    let last_note = {
        let store = ledgerd::storage::store::Store::open(&data.join("store"), 8 << 20).expect("open store");
        let (stored_key, note) = store.checkpoints.last().expect("read").expect("a checkpoint");
        let note = String::from_utf8(note.to_vec()).expect("utf-8");
        let mut last = trusted.verify_checkpoint(&note).expect("checkpoint");
        let t: jiff::Timestamp = ledger_client::state::checkpoint_time(&last).expect("time");
        last.extensions = vec![format!("time {}", t.strftime("%Y-%m-%dT%H:%M:%SZ"))];
        let whole_note = signer.sign_checkpoint(&last).expect("sign");
        let mut newer = stored_key.to_vec();
        let ns = u64::from_be_bytes(newer[8..16].try_into().expect("16-byte key")) + 1;
        newer[8..].copy_from_slice(&ns.to_be_bytes());
        store.checkpoints.insert(newer, whole_note.as_bytes()).expect("insert");
        store.checkpoints.flush().expect("flush");
        whole_note
    };
    trust(&state, &trusted, &last_note);
    let out = ledger_tests::rotate_key(&data);
    assert!(out.status.success(), "rotate: {}", stderr(&out));
    let daemon = Daemon::start_in(&data).expect("ledgerd starts after the rotation");
    decide(&daemon, "bot", "db.query", "{}", "allow", "after the rotation");
    let out = daemon.ctl(&["verify", "--state", state.to_str().expect("utf-8"), "--full"]);
    assert_eq!(out.status.code(), Some(0), "{} {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("followed a key rotation"), "{}", stdout(&out));
}

/// Damage the tests did not think of: random byte flips, cuts and insertions in every file
/// of a bundle, re-signed or not. Whatever each does, the two verifiers give the same
/// verdict, and only the files covered by the manifest alone may change and still pass.
#[test]
fn issue_13_both_verifiers_agree_on_random_damage() {
    let daemon = Daemon::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = daemon.data_dir.join("verifier.vkey");
    ok(&daemon.ctl(&["agents", "register", "bot", "--owner", "o@example.com", "--purpose", "tests"]));
    set_policy(&daemon, tmp.path(), "bot", V1, "CHG-1");
    decide(&daemon, "bot", "db.query", r#"{"sql":"select 0"}"#, "allow", "before");
    let from = now();
    set_policy(&daemon, tmp.path(), "bot", V2, "-CHG-2");
    for i in 0..5 {
        decide(&daemon, "bot", "shell.exec", &format!(r#"{{"cmd":"ls {i}"}}"#), "deny", "=no");
    }
    let to = now();
    let bundle = tmp.path().join("bundle");
    export(&daemon, &from, &to, &bundle);
    accepted(&daemon, &bundle, &key);
    let files: Vec<String> =
        evidence::manifest_files(&bundle).expect("files").into_iter().map(|f| f.path).collect();

    // Seeded: the same cases on every run.
    let mut rng = ledger_tests::fuzz::Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move |n: usize| rng.below(n);
    let view_only = ["agents.csv", "access_review.csv", "summary.html", "VERIFY.md"];
    let mut refused = 0;
    for case in 0..60 {
        let file = &files[next(files.len())];
        let dir = tmp.path().join(format!("random-{case}"));
        copy_dir(&bundle, &dir);
        let path = dir.join(file);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = next(bytes.len());
        let how = match next(4) {
            0 if !bytes.is_empty() => {
                bytes[at] ^= 1 << next(8);
                "flip"
            }
            1 => {
                bytes.truncate(at);
                "cut"
            }
            2 => {
                bytes.insert(at, b"',\"\r\n0aZ-="[next(10)]);
                "insert"
            }
            _ => {
                bytes.remove(at.min(bytes.len().saturating_sub(1)).min(bytes.len()));
                "delete"
            }
        };
        std::fs::write(&path, &bytes).expect("write");
        let resigned = next(3) != 0;
        if resigned {
            resign(&daemon, &dir);
        }
        let out = agree(&daemon, &dir, &key);
        let code = out.status.code();
        println!(
            "case {case}: {how} at {at} of {file}, resigned {resigned}: exit {code:?} {}",
            stderr(&out).trim()
        );
        // verifier.vkey may change spelling (hex case) and still name the same key.
        let same_key = file == VKEY
            && std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| NoteVerifier::parse(t).ok())
                .map(|k| k.to_vkey_string())
                == Some(std::fs::read_to_string(&key).expect("key").trim().to_string());
        assert!(
            code == Some(1)
                || (code == Some(0) && resigned && (view_only.contains(&file.as_str()) || same_key)),
            "case {case}: {how} of {file} gave exit {code:?}: {}",
            stderr(&out)
        );
        refused += usize::from(code == Some(1));
    }
    assert!(refused > 30, "most damage is refused");
}
