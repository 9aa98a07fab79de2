//! Policies as the daemon, the shims and `ledgerctl` use them: first-match evaluation, the
//! default, conditions over tool calls, `may_allow_tool`, `explain`, hashes, limits, the
//! JSON form of errors, and robustness against any document.

use std::time::{Duration, Instant};

use ledger_query::policy::{
    Call, Effect, MAX_BYTES, MAX_ERRORS, MAX_RULES, POLICY_FIELDS, Policy, PolicyCode, PolicyErrors,
};

fn policy(text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| panic!("{}", e.render(text)))
}

fn errors(text: &str) -> PolicyErrors {
    match Policy::parse(text) {
        Ok(_) => panic!("parses: {text}"),
        Err(e) => e,
    }
}

/// The rule id that decides a call, and the effect.
fn decide(p: &Policy, tool: &str, params: &str) -> (Effect, String) {
    let d = p.evaluate(&Call::new(tool, params));
    (d.effect, d.rule_id.to_string())
}

const BILLING: &str = r#"# policy for billing-bot
rule read-invoices: allow tool = "db.query" and params.sql ~ /(?i)^select /
rule invoice-files: allow tool in ["fs.read_file", "fs.list"] and params.path ~ "/srv/invoices/**"
rule no-shell:      deny  tool ~ "shell.*"
default deny
"#;

#[test]
fn the_design_example_decides_as_described() {
    let p = policy(BILLING);
    let allow = |rule: &str| (Effect::Allow, rule.to_string());
    let deny = |rule: &str| (Effect::Deny, rule.to_string());
    assert_eq!(decide(&p, "db.query", r#"{"sql": "SELECT * FROM invoices"}"#), allow("read-invoices"));
    assert_eq!(decide(&p, "db.query", r#"{"sql": "select 1"}"#), allow("read-invoices"));
    assert_eq!(decide(&p, "db.query", r#"{"sql": "DELETE FROM invoices"}"#), deny("default"));
    assert_eq!(decide(&p, "db.query", r#"{"sql": " select 1"}"#), deny("default"));
    assert_eq!(
        decide(&p, "fs.read_file", r#"{"path": "/srv/invoices/2026/03.pdf"}"#),
        allow("invoice-files")
    );
    assert_eq!(decide(&p, "fs.list", r#"{"path": "/srv/invoices/"}"#), allow("invoice-files"));
    assert_eq!(decide(&p, "fs.read_file", r#"{"path": "/srv/payroll/x.pdf"}"#), deny("default"));
    assert_eq!(decide(&p, "fs.write_file", r#"{"path": "/srv/invoices/x"}"#), deny("default"));
    assert_eq!(decide(&p, "shell.exec", r#"{"cmd": "ls"}"#), deny("no-shell"));
    assert_eq!(decide(&p, "shellexec", "{}"), deny("default"));
    assert_eq!(p.rules().len(), 3);
    assert_eq!(p.default_effect(), Effect::Deny);
    assert_eq!(p.text(), BILLING);
}

#[test]
fn first_match_wins() {
    let text = "rule a: allow tool = \"x\"\nrule b: deny tool ~ \"*\"\ndefault allow\n";
    let p = policy(text);
    assert_eq!(decide(&p, "x", ""), (Effect::Allow, "a".to_string()));
    assert_eq!(decide(&p, "y", ""), (Effect::Deny, "b".to_string()));
    let p = policy("rule b: deny tool ~ \"*\"\nrule a: allow tool = \"x\"\ndefault allow\n");
    assert_eq!(decide(&p, "x", ""), (Effect::Deny, "b".to_string()));
}

#[test]
fn decisions_say_which_rule_and_why() {
    let p = policy(BILLING).with_version(7);
    let d = p.evaluate(&Call::new("shell.exec", "{}"));
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.rule.map(|r| r.id.as_str()), Some("no-shell"));
    assert_eq!(d.rule_id, "no-shell");
    assert_eq!(d.reason, r#"rule no-shell (line 4): deny tool ~ "shell.*""#);
    assert_eq!(d.version, Some(7));
    assert_eq!(d.hash, p.hash());
    let d = p.evaluate(&Call::new("fs.delete", "{}"));
    assert!(d.rule.is_none());
    assert_eq!(d.rule_id, "default");
    assert_eq!(d.reason, "default deny (line 5): no rule matched");
    assert_eq!(Effect::Allow.as_str(), "allow");
    assert_eq!(Effect::Deny.to_string(), "deny");
    assert_eq!(policy(BILLING).version(), None);
}

#[test]
fn params_globs_regexes_and_lists() {
    let p = policy(
        r#"rule tmp: allow tool = "fs.write_file" and params.path ~ "/tmp/*"
rule big: deny params.size > 1000
rule mail: allow tool = "mail.send" and params.to ~ /@example\.com$/ and not params.cc ~ "**"
rule nested: allow params.opts.mode in ["ro", "read-only"] and params.opts.depth <= 2
rule first: allow params.files.0 ~ "*.md"
rule raw: allow params ~ "**dry-run**"
default deny
"#,
    );
    let allowed = |tool: &str, params: &str| p.evaluate(&Call::new(tool, params)).effect == Effect::Allow;
    assert!(allowed("fs.write_file", r#"{"path": "/tmp/a"}"#));
    assert!(!allowed("fs.write_file", r#"{"path": "/tmp/a/b"}"#), "* stays within a segment");
    assert!(!allowed("fs.write_file", r#"{"path": "/etc/passwd"}"#));
    assert_eq!(decide(&p, "x", r#"{"size": 1001, "opts": {"mode": "ro"}}"#).1, "big");
    assert!(allowed("mail.send", r#"{"to": "ann@example.com", "cc": ""}"#));
    assert!(allowed("mail.send", r#"{"to": "ann@example.com"}"#));
    assert!(!allowed("mail.send", r#"{"to": "ann@example.com", "cc": "x@evil.test"}"#));
    assert!(!allowed("mail.send", r#"{"to": "ann@example.com.evil.test"}"#));
    assert!(allowed("x", r#"{"opts": {"mode": "read-only", "depth": 2}}"#));
    assert!(!allowed("x", r#"{"opts": {"mode": "read-only", "depth": 3}}"#));
    assert!(!allowed("x", r#"{"opts": {"mode": "rw", "depth": 1}}"#));
    assert!(allowed("x", r#"{"files": ["README.md", "x.rs"]}"#));
    assert!(!allowed("x", r#"{"files": ["x.rs", "README.md"]}"#));
    assert!(allowed("x", r#"{"args": ["--dry-run"]}"#));
    assert!(allowed("x", "not json, but --dry-run"), "params ~ matches the text itself");
}

#[test]
fn a_missing_params_field_is_false_whatever_the_operator() {
    let p = policy(
        r#"rule outside: deny tool = "fs.read_file" and params.path !~ "/work/**"
rule not-ro: deny params.mode != "ro"
rule absent: deny not params.path ~ "**"
default allow
"#,
    );
    // With a path outside /work, the first rule denies.
    assert_eq!(decide(&p, "fs.read_file", r#"{"path": "/etc/passwd"}"#).1, "outside");
    // Without a path, `!~` and `!=` are false, but `not … ~ "**"` catches it.
    assert_eq!(decide(&p, "fs.read_file", "{}").1, "absent");
    assert_eq!(decide(&p, "fs.read_file", r#"{"path": null}"#).1, "absent");
    assert_eq!(decide(&p, "fs.read_file", "not json").1, "absent");
    assert_eq!(decide(&p, "fs.read_file", r#"{"path": "/work/a", "mode": "rw"}"#).1, "not-ro");
    assert_eq!(decide(&p, "fs.read_file", r#"{"path": "/work/a"}"#), (Effect::Allow, "default".to_string()));
}

#[test]
fn agent_session_and_action_are_known() {
    let p = policy(
        r#"rule ci: deny agent ~ "ci-*" and tool ~ "shell.*"
rule s: deny session = "s-bad"
rule a: allow action = "read"
default deny
"#,
    );
    let call = |agent, session, action| Call { tool: "shell.exec", params: "{}", agent, session, action };
    assert_eq!(p.evaluate(&call("ci-7", "", "read")).rule_id, "ci");
    assert_eq!(p.evaluate(&call("dev", "s-bad", "read")).rule_id, "s");
    assert_eq!(p.evaluate(&call("dev", "s-1", "read")).rule_id, "a");
    assert_eq!(p.evaluate(&call("dev", "s-1", "")).rule_id, "default");
    assert_eq!(POLICY_FIELDS, ["tool", "params", "agent", "session", "action"]);
}

#[test]
fn explain_lists_every_rule_with_whether_it_matched() {
    let p = policy(BILLING);
    let call = Call::new("fs.read_file", r#"{"path": "/srv/invoices/a"}"#);
    let explained: Vec<(&str, bool)> =
        p.explain(&call).into_iter().map(|(r, m)| (r.id.as_str(), m)).collect();
    assert_eq!(explained, [("read-invoices", false), ("invoice-files", true), ("no-shell", false)]);
    let rule = &p.rules()[1];
    assert!(rule.matches(&call));
    assert_eq!(rule.line, 3);
    assert_eq!(rule.effect, Effect::Allow);
    assert_eq!(
        rule.condition_text,
        r#"tool in ["fs.read_file", "fs.list"] and params.path ~ "/srv/invoices/**""#
    );
}

#[test]
fn continuation_lines_and_comments() {
    let text = "rule sql: allow tool = \"db.query\"   # reads only\n    # SELECT, or EXPLAIN of one\n    and (params.sql ~ /(?i)^select / or params.sql ~ /(?i)^explain select /)\n\tand agnet = 1\ndefault deny\n";
    // The tab-indented line continues the rule, so its unknown field is reported there.
    let e = errors(text);
    assert_eq!(e.errors().len(), 1);
    assert_eq!((e.errors()[0].code.as_str(), e.errors()[0].line), ("Q101", 4));

    let text = text.replace("\tand agnet = 1\n", "");
    let p = policy(&text);
    assert_eq!(
        p.rules()[0].condition_text,
        "tool = \"db.query\" and (params.sql ~ /(?i)^select / or params.sql ~ /(?i)^explain select /)"
    );
    assert_eq!(decide(&p, "db.query", r#"{"sql": "Explain SELECT 1"}"#).1, "sql");
    assert_eq!(decide(&p, "db.query", r##"{"sql": "drop table x # select "}"##).1, "default");
}

#[test]
fn the_hash_is_blake3_of_the_exact_bytes() {
    let p = policy(BILLING);
    assert_eq!(p.hash(), *blake3::hash(BILLING.as_bytes()).as_bytes());
    assert_eq!(p.hash_hex(), blake3::hash(BILLING.as_bytes()).to_hex().to_string());
    let spaced = format!("{BILLING}\n");
    assert_ne!(policy(&spaced).hash(), p.hash(), "a blank line is a new version");
}

#[test]
fn policies_are_send_and_sync_and_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Policy>();
    shareable::<PolicyErrors>();
    let p = std::sync::Arc::new(policy(BILLING));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = std::sync::Arc::clone(&p);
            std::thread::spawn(move || {
                let tool = if i % 2 == 0 { "shell.exec" } else { "db.query" };
                p.evaluate(&Call::new(tool, r#"{"sql": "select 1"}"#)).rule_id.to_string()
            })
        })
        .collect();
    let ids: Vec<String> =
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("thread"))).collect();
    assert_eq!(ids, ["no-shell", "read-invoices", "no-shell", "read-invoices"]);
}

// ---- may_allow_tool ----

#[test]
fn may_allow_tool_by_name() {
    let p = policy("rule r: allow tool = \"read_file\" and params.path ~ \"/srv/**\"\ndefault deny\n");
    assert!(p.may_allow_tool("read_file"));
    assert!(!p.may_allow_tool("write_file"));

    let p = policy("rule r: allow tool ~ \"read_*\"\ndefault deny\n");
    assert!(p.may_allow_tool("read_file"));
    assert!(p.may_allow_tool("read_dir"));
    assert!(!p.may_allow_tool("write_file"));

    // A deny that matches by name alone, before the allows, makes them unreachable.
    let p = policy("rule none: deny tool ~ \"*\"\nrule r: allow tool ~ \"read_*\"\ndefault allow\n");
    assert!(!p.may_allow_tool("read_file"));
    assert!(!p.may_allow_tool("anything"));

    // A deny that depends on the parameters does not.
    let p = policy(
        "rule etc: deny tool ~ \"*\" and params.path ~ \"/etc/**\"\nrule r: allow tool ~ \"read_*\"\ndefault deny\n",
    );
    assert!(p.may_allow_tool("read_file"));
    assert!(!p.may_allow_tool("write_file"));

    // A deny by name for one tool leaves the default to the others.
    let p = policy("rule no-shell: deny tool ~ \"shell.*\"\ndefault allow\n");
    assert!(!p.may_allow_tool("shell.exec"));
    assert!(p.may_allow_tool("fs.read_file"));
    let p = policy("default allow\n");
    assert!(p.may_allow_tool("x"));
    let p = policy("default deny\n");
    assert!(!p.may_allow_tool("x"));
}

#[test]
fn may_allow_tool_with_unknown_parts() {
    // An allow that may hold through its parameters keeps every tool.
    let p = policy("rule r: allow params.a = 1 or tool = \"x\"\ndefault deny\n");
    assert!(p.may_allow_tool("x"));
    assert!(p.may_allow_tool("y"));
    // `not` of an unknown is unknown; `not` of a known name is known.
    let p = policy("rule r: allow not tool = \"x\"\ndefault deny\n");
    assert!(!p.may_allow_tool("x"));
    assert!(p.may_allow_tool("y"));
    let p = policy("rule r: allow tool = \"x\" and not params.a = 1\ndefault deny\n");
    assert!(p.may_allow_tool("x"));
    assert!(!p.may_allow_tool("y"));
    // A deny that holds by name whatever the parameters: `or` with a true side.
    let p = policy("rule d: deny tool = \"x\" or params.a = 1\ndefault allow\n");
    assert!(!p.may_allow_tool("x"));
    assert!(p.may_allow_tool("y"));
    // Conditions on the agent are unknown too: the tool stays.
    let p = policy("rule d: deny agent = \"ci\"\nrule a: allow tool = \"x\"\ndefault deny\n");
    assert!(p.may_allow_tool("x"));
    assert!(!p.may_allow_tool("y"));
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const ATOMS: &[&str] = &[
    "tool = \"a\"",
    "tool != \"b\"",
    "tool ~ \"a*\"",
    "tool ~ /b$/",
    "tool in [\"a\", \"c\"]",
    "tool not in [\"ab\"]",
    "params.p = 1",
    "params.p != 1",
    "params.q ~ \"x*\"",
    "params.q !~ \"x*\"",
    "agent = \"ci\"",
];

fn random_condition(rng: &mut Rng, depth: u32) -> String {
    match if depth == 0 { 0 } else { rng.next() % 4 } {
        0 => rng.pick(ATOMS).to_string(),
        1 => format!("not ({})", random_condition(rng, depth - 1)),
        2 => format!("({} and {})", random_condition(rng, depth - 1), random_condition(rng, depth - 1)),
        _ => format!("({} or {})", random_condition(rng, depth - 1), random_condition(rng, depth - 1)),
    }
}

/// Whatever the policy, a call that is allowed has a tool that `may_allow_tool` keeps.
#[test]
fn may_allow_tool_never_hides_an_allowed_call() {
    let mut rng = Rng(0x5eed);
    let tools = ["a", "b", "c", "ab", ""];
    let params = ["{}", r#"{"p": 1}"#, r#"{"p": 2, "q": "xy"}"#, r#"{"q": "y"}"#, "nope"];
    let agents = ["ci", "dev"];
    let mut hidden = 0;
    for _ in 0..1_000 {
        let n = 1 + rng.next() % 4;
        let mut text = String::new();
        for i in 0..n {
            let effect = if rng.next() % 2 == 0 { "allow" } else { "deny" };
            text.push_str(&format!("rule r{i}: {effect} {}\n", random_condition(&mut rng, 3)));
        }
        text.push_str(if rng.next() % 2 == 0 { "default allow\n" } else { "default deny\n" });
        let p = policy(&text);
        for tool in tools {
            let may = p.may_allow_tool(tool);
            hidden += usize::from(!may);
            for params in params {
                for agent in agents {
                    let call = Call { tool, params, agent, ..Call::default() };
                    let d = p.evaluate(&call);
                    assert!(
                        may || d.effect == Effect::Deny,
                        "{tool} is hidden, but {params} by {agent} is allowed by {}:\n{text}",
                        d.rule_id
                    );
                    let explained = p.explain(&call);
                    let first = explained.iter().find(|(_, m)| *m).map_or("default", |(r, _)| r.id.as_str());
                    assert_eq!(first, d.rule_id);
                }
            }
        }
    }
    assert!(hidden > 500, "the generator should hide tools often ({hidden})");
}

// ---- limits and errors ----

#[test]
fn a_ten_megabyte_document_is_refused_quickly() {
    let big = "rule a: allow tool = \"x\"\n".repeat(10 * 1024 * 1024 / 25) + "default deny\n";
    assert!(big.len() > 10_000_000);
    let start = Instant::now();
    let e = errors(&big);
    assert!(start.elapsed() < Duration::from_millis(100), "took {:?}", start.elapsed());
    assert_eq!(e.errors().len(), 1);
    assert_eq!(e.errors()[0].code, PolicyCode::P112);
    assert_eq!(
        e.render(&big),
        format!(
            "error[P112]: policy too large: {} bytes, the limit is 262144 bytes (256 KiB)\n --> policy\n  |\n  \
             = help: a policy holds rules, not data: match many values with patterns and `in [...]`",
            big.len()
        )
    );
}

#[test]
fn the_size_limit_is_exact() {
    let fill = |total: usize| {
        let tail = "default deny\n";
        format!("#{}\n{tail}", "x".repeat(total - tail.len() - 2))
    };
    assert_eq!(fill(MAX_BYTES).len(), MAX_BYTES);
    assert!(Policy::parse(&fill(MAX_BYTES)).is_ok());
    assert_eq!(errors(&fill(MAX_BYTES + 1)).errors()[0].code, PolicyCode::P112);
}

#[test]
fn the_rule_limit_is_exact() {
    let rules = |n: usize| {
        let mut text: String = (0..n).map(|i| format!("rule {i}:deny tool=\"\"\n")).collect();
        text.push_str("default allow\n");
        text
    };
    assert_eq!(policy(&rules(MAX_RULES)).rules().len(), MAX_RULES);
    let e = errors(&rules(MAX_RULES + 1));
    assert_eq!(e.errors().len(), 1);
    assert_eq!((e.errors()[0].code, e.errors()[0].line), (PolicyCode::P113, MAX_RULES + 1));
}

#[test]
fn errors_stop_after_the_limit_with_a_note() {
    let mut text: String = (1..=150).map(|i| format!("rule r{i}: permit tool = \"x\"\n")).collect();
    text.push_str("default deny\n");
    let e = errors(&text);
    assert_eq!(e.errors().len(), MAX_ERRORS + 1);
    assert!(e.errors()[..MAX_ERRORS].iter().all(|e| e.code == PolicyCode::P104));
    let last = e.errors().last().unwrap_or_else(|| panic!("no errors"));
    assert_eq!(
        last.render(&text),
        "error[P116]: too many errors: 150 found, the first 100 are shown
   --> policy:101:12
    |
101 | rule r101: permit tool = \"x\"
    |            ^ the errors from here on are left out
    |
    = help: fix these and check the policy again"
    );
}

#[test]
fn error_json_round_trips_and_matches_the_query_form() {
    let text = "rule a: allow agnet = \"x\"\nrule a: deny tool = \"y\"\ndefault deny\n";
    let e = errors(text);
    let json = e.to_json_string();
    assert_eq!(
        json,
        r#"[{"code":"Q101","col":15,"end":19,"help":"did you mean `agent`?","label":"not a known field","line":1,"message":"unknown field `agnet`","start":14},{"code":"P103","col":6,"end":32,"help":null,"label":"already used on line 1","line":2,"message":"duplicate rule id `a`","start":31}]"#
    );
    let back = PolicyErrors::from_json_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, e);
    assert_eq!(back.render(text), e.render(text));
    assert_eq!(e.errors()[0].code, PolicyCode::Query(ledger_query::Code::Q101));
    assert_eq!(PolicyCode::parse("P103"), Some(PolicyCode::P103));
    assert_eq!(PolicyCode::parse("Q305"), Some(PolicyCode::Query(ledger_query::Code::Q305)));
    assert_eq!(PolicyCode::parse("P999"), None);
    assert!(PolicyErrors::from_json_str("[]").is_err());
    assert!(PolicyErrors::from_json_str("{").is_err());
    let unknown = r#"{"code":"P999","message":"","label":"","help":null,"line":1,"col":1,"start":0,"end":0}"#;
    assert!(PolicyErrors::from_json_str(unknown).is_err());
    // The whole-document error (line 0) survives the trip too.
    let big = "#".repeat(MAX_BYTES + 1);
    let e = errors(&big);
    assert_eq!(PolicyErrors::from_json_str(&e.to_json_string()).ok(), Some(e));
    // Display gives the first error in one line, for logs.
    assert_eq!(errors(text).to_string(), "error[Q101]: unknown field `agnet` (at 1:15)");
}

// ---- robustness ----

const TOKENS: &[&str] = &[
    "rule",
    "default",
    "allow",
    "deny",
    "a",
    "b.c-d",
    ":",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "#",
    "# c",
    "\"",
    "\"x#\"",
    "/",
    "/re#/",
    "\\",
    "tool",
    "params.p",
    "time",
    "hour(time)",
    "=",
    "~",
    "!~",
    "in",
    "[",
    "]",
    ",",
    "(",
    ")",
    "and",
    "or",
    "not",
    "\"*\"",
    "1",
    "now",
    "é",
    "😀",
    "default deny",
    "rule a:",
    "rule a: allow",
    "rule b: deny tool = \"x\"",
    "\n  and",
    "\n\n",
    "agnet",
    "params.",
    ".",
];

/// Parses `text`; checks error positions and JSON, or evaluates a few calls.
fn exercise(text: &str) {
    match Policy::parse(text) {
        Ok(p) => {
            for tool in ["x", "", "shell.exec"] {
                let _ = p.evaluate(&Call::new(tool, r#"{"p": 1}"#));
                let _ = p.may_allow_tool(tool);
                let _ = p.explain(&Call::new(tool, "nope"));
            }
        }
        Err(errors) => {
            assert!(!errors.errors().is_empty());
            assert!(errors.errors().len() <= MAX_ERRORS + 1);
            for e in errors.errors() {
                assert!(e.start <= e.end && e.end <= text.len(), "span out of range for {text:?}: {e:?}");
                assert!(text.is_char_boundary(e.start) && text.is_char_boundary(e.end), "{text:?}: {e:?}");
                assert!(e.code == PolicyCode::P112 || (e.line >= 1 && e.col >= 1), "{text:?}: {e:?}");
            }
            let _ = errors.render(text);
            let back =
                PolicyErrors::from_json_str(&errors.to_json_string()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, errors);
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for condition in
        ["(".repeat(100_000), "not ".repeat(50_000), format!("{}tool = \"x\"", "(".repeat(5_000))]
    {
        let text = format!("rule a: allow {condition}\ndefault deny\n");
        let e = errors(&text);
        assert_eq!(e.errors()[0].code, PolicyCode::Query(ledger_query::Code::Q110), "{}", e.render(&text));
    }
    let long = format!("rule a: allow {}tool = \"x\"\ndefault deny\n", "tool = \"x\" or ".repeat(10_000));
    assert_eq!(decide(&policy(&long), "x", ""), (Effect::Allow, "a".to_string()));
}

#[test]
fn random_documents_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        let n = (rng.next() % 16) as usize;
        let text: String = (0..n).map(|_| rng.pick(TOKENS)).collect();
        exercise(&text);
    }
    for _ in 0..5_000 {
        let n = (rng.next() % 40) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| (rng.next() % 256) as u8).collect();
        exercise(&String::from_utf8_lossy(&bytes));
    }
}

/// The documents of the case files (lines between `==` and `--`) and the policies of
/// `docs/POLICY.md` (lines between ```policy and ```).
fn known_documents() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let mut docs = vec![BILLING.to_string()];
    let mut current: Option<String> = None;
    let cases = read("tests/policy_cases/errors.txt");
    let page = read("../docs/POLICY.md");
    for line in cases.lines().chain(page.lines()) {
        let trimmed = line.trim();
        match &mut current {
            None if line.starts_with("== ") || trimmed.starts_with("```policy") => {
                current = Some(String::new())
            }
            None => {}
            Some(_) if line == "--" || trimmed == "```" || trimmed == "---" => {
                docs.extend(current.take());
            }
            Some(doc) => {
                doc.push_str(line);
                doc.push('\n');
            }
        }
    }
    assert!(docs.len() > 50, "{} documents", docs.len());
    docs
}

#[test]
fn every_prefix_of_known_documents_never_panics() {
    for doc in known_documents() {
        for (i, _) in doc.char_indices().chain([(doc.len(), ' ')]) {
            exercise(&doc[..i]);
        }
    }
}

/// Issue 12: a 35 KB policy of 1,000 `\w{1,12}` rules took 11–14 s to compile and kept
/// 1.35 GB. Its compiled patterns are bounded: it is refused with P117 naming the rule that
/// crossed the limit, without compiling the rest; a policy of the same shape with ASCII
/// classes is accepted.
#[test]
fn regex_heavy_policies_are_refused_naming_the_rule() {
    let heavy: String = (0..1000).map(|i| format!("rule r{i}: deny params.x ~ /\\w{{1,12}}{i}/\n")).collect();
    let heavy = format!("{heavy}default allow\n");
    assert!(heavy.len() > 30_000);
    let started = std::time::Instant::now();
    let found = errors(&heavy);
    let took = started.elapsed();
    let over: Vec<_> = found.errors().iter().filter(|e| e.code == PolicyCode::P117).collect();
    assert_eq!(over.len(), 1, "{}", found.render(&heavy));
    let message = &over[0].message;
    assert!(message.starts_with("rule r") && message.contains("over the limit of 16 MiB"), "{message}");
    let rule: usize = message["rule r".len()..].split(':').next().and_then(|n| n.parse().ok()).expect("rule");
    assert!((1..1000).contains(&rule), "{message}");
    assert_eq!(over[0].line, rule + 1, "the error points at the rule's line");
    eprintln!("refused at rule r{rule} after {took:?}");

    let light: String =
        (0..1000).map(|i| format!("rule r{i}: deny params.x ~ /[A-Za-z0-9_]{{1,12}}{i}/\n")).collect();
    let light = format!("{light}default allow\n");
    let p = policy(&light);
    assert_eq!(p.rules().len(), 1000);
}
