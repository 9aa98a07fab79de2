//! Issue 13: a differential test of the query language against an independent engine.
//!
//! A real `ledgerd` gets entries with nested JSON params (numbers written as integers, as
//! decimals and in exponent form, strings where numbers usually are, `null`, `""`, `[]`,
//! `{}`), multi-line and unicode reasons, formula-looking text and missing fields; two
//! agents are registered. `ledgerctl export` writes the whole ledger as CSV. Every case
//! below is a query run through `ledgerctl query` (or `ledgerctl export --query`) and the
//! same question asked in SQL, written by hand; `tests/interop/query_duckdb.py` runs the SQL
//! with DuckDB on the export and checks ledgerd's output against it cell by cell (CSV), byte
//! by byte (JSON lines, tables), with the documented rendering rules. Any disagreement fails
//! the test and is printed with both sides.
//!
//! The cases cover every operator, every stage, every aggregate and every writer. DuckDB is
//! installed by `.ci/run` (PyPI `duckdb`, pinned).

use std::path::Path;
use std::process::Command;

use ledger_proto::pb;
use ledger_tests::fuzz::Rng;
use ledger_tests::{Daemon, ok, stderr, stdout};

const ENTRIES: usize = 500;
const AGENTS: &[&str] = &["build-bot", "billing-bot", "ci-prod-7", "ops", "Zeta"];
const TOOLS: &[&str] = &["db.query", "fs.read_file", "fs.write_file", "shell.exec", "http.get"];
const RULES: &[&str] = &["", "no-shell", "read-only", "r1"];
const SESSIONS: &[&str] = &["", "s-1", "s-2", "s-3"];
const ACTIONS: &[&str] = &["", "call", "read"];
const REASONS: &[&str] = &[
    "",
    "",
    "routine",
    "multi\nline reason",
    "first line\r\nzweite Zeile – «ü»",
    "Löschen verweigert",
    "=HYPERLINK(\"http://x\")",
    "-5 retries",
    "tab\there",
    "日本語のテキスト",
    "'quoted",
];
const PATHS: &[&str] = &[
    "/etc/passwd",
    "/etc/ssh/sshd_config",
    "/srv/a.txt",
    "/srv/x/y/z",
    "relative/path",
    "/tmp/new\nline",
    "C:\\data\\x",
];
/// Values of `params.n`, as JSON text: one number in several spellings, others, and the
/// things that count as missing.
const NS: &[&str] = &[
    "30", "30.0", "3e1", "7", "-3", "0", "12", "2.5", "100.25", "-0.5", "\"7\"", "\"30\"", "null", "\"\"",
    "40",
];
const LIMITS: &[&str] = &["100", "100.0", "1e2", "5", "5.5"];
const DEEP: &[&str] = &["v1", "v2", "ü", ""];
const TAGS: &[&str] = &["[]", "[\"a\"]", "[\"a\",\"b\"]", "[\"b\",1]", "[\"c\"]", "[null]"];
const TEXTS: &[&str] = &["", "line1\nline2 ünï", "zwei\r\nZeilen", "plain"];
const VS: &[&str] =
    &["1", "2.5", "\"s\"", "\"t\"", "true", "false", "[1,2]", "{\"a\":1}", "{\"a\":2.0}", "null", "{}"];

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn params(rng: &mut Rng) -> String {
    if rng.chance(8) {
        return String::new();
    }
    let mut parts = Vec::new();
    if rng.chance(85) {
        parts.push(format!(r#""path":{}"#, json_str(rng.pick(PATHS))));
    }
    if rng.chance(80) {
        parts.push(format!(r#""n":{}"#, rng.pick(NS)));
    }
    if rng.chance(70) {
        let mut opts = Vec::new();
        if rng.chance(70) {
            opts.push(format!(r#""deep":{{"k":{}}}"#, json_str(rng.pick(DEEP))));
        }
        if rng.chance(60) {
            opts.push(format!(r#""flag":{}"#, rng.pick(&["true", "false"])));
        }
        if rng.chance(70) {
            opts.push(format!(r#""limit":{}"#, rng.pick(LIMITS)));
        }
        parts.push(format!(r#""opts":{{{}}}"#, opts.join(",")));
    }
    if rng.chance(60) {
        parts.push(format!(r#""tags":{}"#, rng.pick(TAGS)));
    }
    if rng.chance(50) {
        parts.push(format!(r#""text":{}"#, json_str(rng.pick(TEXTS))));
    }
    if rng.chance(60) {
        parts.push(format!(r#""v":{}"#, rng.pick(VS)));
    }
    format!("{{{}}}", parts.join(","))
}

fn entries() -> Vec<pb::NewEntry> {
    let mut rng = Rng::new(0x0013_5eed);
    (0..ENTRIES)
        .map(|_| {
            let outcome = rng.chance(15);
            let decision = if outcome && rng.chance(50) {
                pb::Decision::Unspecified
            } else if rng.chance(35) {
                pb::Decision::Deny
            } else {
                pb::Decision::Allow
            };
            pb::NewEntry {
                kind: if outcome { pb::Kind::Outcome } else { pb::Kind::Decision } as i32,
                agent: rng.pick(AGENTS).into(),
                session: rng.pick(SESSIONS).into(),
                action: rng.pick(ACTIONS).into(),
                tool: rng.pick(TOOLS).into(),
                params: params(&mut rng),
                decision: decision as i32,
                rule: rng.pick(RULES).into(),
                reason: rng.pick(REASONS).into(),
                ..Default::default()
            }
        })
        .collect()
}

/// `F(cond)`: the entries a filter selects, as their seqs.
macro_rules! seqs_where {
    ($cond:expr) => {
        concat!("SELECT seq FROM e WHERE ", $cond, " ORDER BY seq")
    };
}

/// `(query, SQL, formats)`. Filters are checked through `| fields seq`; `{T:n}` in a query
/// stands for the time of entry `n` (and `(SELECT ts FROM e WHERE seq = n)` in SQL), `{D:n}`
/// for its date. A
/// query starting with `export:` runs `ledgerctl export --query` with the rest.
const CASES: &[(&str, &str, &str)] = &[
    // ---- operators on strings and enums
    ("decision = deny", seqs_where!("decision = 'deny'"), "csv"),
    ("decision != deny", seqs_where!("decision <> 'deny'"), "csv"),
    ("not decision = deny", seqs_where!("decision IS NULL OR decision <> 'deny'"), "csv"),
    ("kind = outcome", seqs_where!("kind = 'outcome'"), "csv"),
    (
        "kind in [agent_registered, daemon_started]",
        seqs_where!("kind IN ('agent_registered', 'daemon_started')"),
        "csv",
    ),
    ("agent = \"ops\"", seqs_where!("agent = 'ops'"), "csv"),
    ("agent in [\"ops\", \"build-bot\"]", seqs_where!("agent IN ('ops', 'build-bot')"), "csv"),
    ("agent not in [\"ops\", \"build-bot\"]", seqs_where!("agent NOT IN ('ops', 'build-bot')"), "csv"),
    ("rule != \"no-shell\"", seqs_where!("rule <> 'no-shell'"), "csv"),
    ("not rule = \"no-shell\"", seqs_where!("rule IS NULL OR rule <> 'no-shell'"), "csv"),
    ("not rule ~ \"**\"", seqs_where!("rule IS NULL"), "csv"),
    ("severity >= 5", seqs_where!("severity >= 5"), "csv"),
    ("severity < 3 or severity > 7", seqs_where!("severity < 3 OR severity > 7"), "csv"),
    ("tool ~ \"fs.*\"", seqs_where!("regexp_full_match(tool, 'fs\\.[^/]*')"), "csv"),
    (
        "tool !~ \"*.*_file\"",
        seqs_where!("tool IS NOT NULL AND NOT regexp_full_match(tool, '[^/]*\\.[^/]*_file')"),
        "csv",
    ),
    ("tool ~ /^(db|http)\\./", seqs_where!("regexp_matches(tool, '^(db|http)\\.')"), "csv"),
    ("reason ~ \"**\"", seqs_where!("reason IS NOT NULL"), "csv"),
    ("not reason ~ \"**\"", seqs_where!("reason IS NULL"), "csv"),
    ("reason ~ \"*line*\"", seqs_where!("regexp_full_match(reason, '[^/]*line[^/]*')"), "csv"),
    ("reason ~ \"**Zeile**\"", seqs_where!("contains(reason, 'Zeile')"), "csv"),
    ("reason ~ /(?i)^multi/", seqs_where!("regexp_matches(reason, '(?i)^multi')"), "csv"),
    ("reason !~ /line/", seqs_where!("reason IS NOT NULL AND NOT regexp_matches(reason, 'line')"), "csv"),
    ("reason = \"Löschen verweigert\"", seqs_where!("reason = 'Löschen verweigert'"), "csv"),
    ("reason > \"m\"", seqs_where!("reason > 'm'"), "csv"),
    ("session <= \"s-2\"", seqs_where!("session <= 's-2'"), "csv"),
    ("agent_id ~ \"**\"", seqs_where!("agent_id IS NOT NULL"), "csv"),
    ("flags has deny_burst", seqs_where!("list_contains(flag_list, 'deny_burst')"), "csv"),
    (
        "flags ~ \"un*\"",
        seqs_where!("len(list_filter(flag_list, lambda x: regexp_full_match(x, 'un[^/]*'))) > 0"),
        "csv",
    ),
    (
        "flags !~ \"deny*\"",
        seqs_where!(
            "flag_list IS NOT NULL AND len(list_filter(flag_list, lambda x: starts_with(x, 'deny'))) = 0"
        ),
        "csv",
    ),
    (
        "(decision = deny or severity > 6) and not agent = \"ops\"",
        seqs_where!("(decision = 'deny' OR severity > 6) AND agent <> 'ops'"),
        "csv",
    ),
    // ---- JSON paths
    ("params.path ~ \"/etc/**\"", seqs_where!("starts_with(jstr(params, '$.path'), '/etc/')"), "csv"),
    (
        "params.path ~ \"/srv/*\"",
        seqs_where!("regexp_full_match(jstr(params, '$.path'), '/srv/[^/]*')"),
        "csv",
    ),
    ("params.path ~ \"**line\"", seqs_where!("ends_with(jstr(params, '$.path'), 'line')"), "csv"),
    ("params.path = \"C:\\\\data\\\\x\"", seqs_where!("jstr(params, '$.path') = 'C:\\data\\x'"), "csv"),
    ("params.n = 30", seqs_where!("jnum(params, '$.n') = 30"), "csv"),
    ("params.n = 30.0", seqs_where!("jnum(params, '$.n') = 30"), "csv"),
    (
        "params.n != 30",
        seqs_where!(
            "NOT jmiss(params, '$.n') AND (jnum(params, '$.n') IS NULL OR jnum(params, '$.n') <> 30)"
        ),
        "csv",
    ),
    ("params.n > 2.5", seqs_where!("jnum(params, '$.n') > 2.5"), "csv"),
    ("params.n <= 0", seqs_where!("jnum(params, '$.n') <= 0"), "csv"),
    ("params.n = \"7\"", seqs_where!("jstr(params, '$.n') = '7'"), "csv"),
    (
        "params.n in [7, \"30\", 2.5]",
        seqs_where!("jnum(params, '$.n') IN (7, 2.5) OR jstr(params, '$.n') = '30'"),
        "csv",
    ),
    (
        "params.n not in [7, 30]",
        seqs_where!(
            "NOT jmiss(params, '$.n') AND (jnum(params, '$.n') IS NULL OR jnum(params, '$.n') NOT IN (7, 30))"
        ),
        "csv",
    ),
    ("not params.n ~ \"**\"", seqs_where!("jmiss(params, '$.n')"), "csv"),
    ("params.n ~ \"3*\"", seqs_where!("regexp_full_match(jtext(params, '$.n'), '3[^/]*')"), "csv"),
    ("params.opts.limit = 100", seqs_where!("jnum(params, '$.opts.limit') = 100"), "csv"),
    ("params.opts.limit < 6", seqs_where!("jnum(params, '$.opts.limit') < 6"), "csv"),
    ("params.opts.flag = true", seqs_where!("jbool(params, '$.opts.flag')"), "csv"),
    ("params.opts.flag != true", seqs_where!("NOT jbool(params, '$.opts.flag')"), "csv"),
    ("params.opts.deep.k = \"ü\"", seqs_where!("jstr(params, '$.opts.deep.k') = 'ü'"), "csv"),
    ("not params.opts.deep.k ~ \"**\"", seqs_where!("jmiss(params, '$.opts.deep.k')"), "csv"),
    ("not params.opts ~ \"**\"", seqs_where!("jmiss(params, '$.opts')"), "csv"),
    (
        "params.tags has \"a\"",
        seqs_where!(
            "jt(params, '$.tags') = 'ARRAY' AND list_contains(from_json(json_extract(params, '$.tags'), '[\"JSON\"]'), '\"a\"'::JSON)"
        ),
        "csv",
    ),
    (
        "params.tags has 1",
        seqs_where!(
            "jt(params, '$.tags') = 'ARRAY' AND list_contains(from_json(json_extract(params, '$.tags'), '[\"JSON\"]'), '1'::JSON)"
        ),
        "csv",
    ),
    (
        "params.tags ~ \"b*\"",
        seqs_where!(
            "len(list_filter(from_json(json_extract(params, '$.tags'), '[\"VARCHAR\"]'), lambda x: regexp_full_match(x, 'b[^/]*'))) > 0"
        ),
        "csv",
    ),
    (
        "params.tags !~ \"a\"",
        seqs_where!(
            "NOT jmiss(params, '$.tags') AND len(list_filter(from_json(json_extract(params, '$.tags'), '[\"VARCHAR\"]'), lambda x: x = 'a')) = 0"
        ),
        "csv",
    ),
    ("not params.tags ~ \"**\"", seqs_where!("jmiss(params, '$.tags')"), "csv"),
    ("params.v > 1", seqs_where!("jnum(params, '$.v') > 1"), "csv"),
    ("params.v = \"s\"", seqs_where!("jstr(params, '$.v') = 's'"), "csv"),
    (
        "params.v != 1",
        seqs_where!("NOT jmiss(params, '$.v') AND (jnum(params, '$.v') IS NULL OR jnum(params, '$.v') <> 1)"),
        "csv",
    ),
    ("params.v = false", seqs_where!("jbool(params, '$.v') = false"), "csv"),
    ("not params.v ~ \"**\"", seqs_where!("jmiss(params, '$.v')"), "csv"),
    ("params.text ~ \"**ünï**\"", seqs_where!("contains(jstr(params, '$.text'), 'ünï')"), "csv"),
    ("params ~ \"**\\\"n\\\":30**\"", seqs_where!("contains(params, '\"n\":30')"), "csv"),
    // ---- time
    ("time >= {T:200}", seqs_where!("ts >= (SELECT ts FROM e WHERE seq = 200)"), "csv"),
    ("until {T:40}", seqs_where!("ts < (SELECT ts FROM e WHERE seq = 40)"), "csv"),
    (
        "during {D:3} kind = decision",
        seqs_where!(
            "strftime(ts, '%Y-%m-%d') = (SELECT strftime(ts, '%Y-%m-%d') FROM e WHERE seq = 3) AND kind = 'decision'"
        ),
        "csv",
    ),
    (
        "date(time) = {D:3} and weekday(time) in [mon, tue, wed, thu, fri, sat, sun] and hour(time) <= 23",
        seqs_where!("strftime(ts, '%Y-%m-%d') = (SELECT strftime(ts, '%Y-%m-%d') FROM e WHERE seq = 3)"),
        "csv",
    ),
    (
        "policy_check in [no_policy, mismatch]",
        seqs_where!("policy_check IN ('no_policy', 'mismatch')"),
        "csv",
    ),
    ("policy_check = match", seqs_where!("policy_check = 'match'"), "csv"),
    (
        "since {T:100} until {T:150}",
        seqs_where!("ts >= (SELECT ts FROM e WHERE seq = 100) AND ts < (SELECT ts FROM e WHERE seq = 150)"),
        "csv",
    ),
    ("last 1d decision = allow", seqs_where!("decision = 'allow'"), "csv"),
    (
        "time < {T:50} and agent = \"ops\"",
        seqs_where!("ts < (SELECT ts FROM e WHERE seq = 50) AND agent = 'ops'"),
        "csv",
    ),
    // ---- export --query: whole rows, raw cells
    (
        "export:not reason ~ \"**\"",
        "SELECT * FROM raw WHERE CAST(seq AS BIGINT) IN (SELECT seq FROM e WHERE reason IS NULL) ORDER BY CAST(seq AS BIGINT)",
        "export",
    ),
    (
        "export:params.n = 30",
        "SELECT * FROM raw WHERE CAST(seq AS BIGINT) IN (SELECT seq FROM e WHERE jnum(params, '$.n') = 30) ORDER BY CAST(seq AS BIGINT)",
        "export",
    ),
    (
        "export:reason ~ \"*line*\" or tool ~ \"shell.*\"",
        "SELECT * FROM raw WHERE CAST(seq AS BIGINT) IN (SELECT seq FROM e WHERE regexp_full_match(reason, '[^/]*line[^/]*') OR tool = 'shell.exec') ORDER BY CAST(seq AS BIGINT)",
        "export",
    ),
    // ---- sort, limit, fields, where
    (
        "| sort severity desc | limit 12 | fields seq, severity",
        "SELECT seq, severity FROM e ORDER BY severity DESC NULLS LAST, seq LIMIT 12",
        "csv json table",
    ),
    (
        "| sort severity, agent desc | fields seq, severity, agent",
        "SELECT seq, severity, agent FROM e ORDER BY severity ASC NULLS FIRST, agent DESC NULLS LAST, seq",
        "csv",
    ),
    (
        "| sort params.n | fields seq, params.n",
        "SELECT seq, jval(params, '$.n') AS \"params.n\" FROM e ORDER BY jrank(params, '$.n'), jnum(params, '$.n'), jstr(params, '$.n'), seq",
        "csv json table",
    ),
    (
        "| sort params.n desc | limit 25 | fields seq, params.n",
        "SELECT seq, jval(params, '$.n') AS \"params.n\" FROM e ORDER BY jrank(params, '$.n') DESC, jnum(params, '$.n') DESC, jstr(params, '$.n') DESC, seq LIMIT 25",
        "csv json",
    ),
    (
        "| sort params.v | fields seq, params.v",
        "SELECT seq, jval(params, '$.v') AS \"params.v\" FROM e ORDER BY jrank(params, '$.v'), jbool(params, '$.v'), jnum(params, '$.v'), jstr(params, '$.v'), CAST(jval(params, '$.v') AS VARCHAR), seq",
        "csv json",
    ),
    (
        "| sort reason desc | limit 30 | fields seq, reason",
        "SELECT seq, reason FROM e ORDER BY reason DESC NULLS LAST, seq LIMIT 30",
        "csv json table",
    ),
    (
        "| sort time desc | limit 5 | fields seq, time",
        "SELECT seq, time FROM e ORDER BY ts DESC, seq LIMIT 5",
        "csv json table",
    ),
    (
        "| fields seq, agent as who, params.opts.deep.k as k, params.opts | limit 40",
        "SELECT seq, agent AS who, jval(params, '$.opts.deep.k') AS k, jval(params, '$.opts') AS \"params.opts\" FROM e ORDER BY seq LIMIT 40",
        "csv json table",
    ),
    (
        "| fields seq, params.tags, params.text, flags | limit 60",
        "SELECT seq, jval(params, '$.tags') AS \"params.tags\", jval(params, '$.text') AS \"params.text\", CASE WHEN flags IS NOT NULL THEN CAST(flags AS JSON) END AS flags FROM e ORDER BY seq LIMIT 60",
        "csv json table",
    ),
    (
        "| fields seq, severity | where severity > 6 | sort severity desc",
        "SELECT seq, severity FROM e WHERE severity > 6 ORDER BY severity DESC, seq",
        "csv",
    ),
    (
        "| fields seq, tool | where tool ~ \"shell.*\" | limit 5",
        "SELECT seq, tool FROM e WHERE tool = 'shell.exec' ORDER BY seq LIMIT 5",
        "csv",
    ),
    ("| limit 0", "SELECT * FROM raw LIMIT 0", "json"),
    // ---- count, stats, top
    ("| count", "SELECT count(*) AS count FROM e", "csv json table"),
    ("agent = \"nobody\" | count", "SELECT count(*) AS count FROM e WHERE agent = 'nobody'", "csv"),
    (
        "decision = deny | count by agent",
        "SELECT agent, count(*) AS count FROM e WHERE decision = 'deny' GROUP BY agent ORDER BY agent",
        "csv table",
    ),
    (
        "| count by agent, decision | where count > 20 | sort count desc",
        "SELECT agent, decision, count(*) AS count FROM e GROUP BY agent, decision HAVING count(*) > 20 ORDER BY count DESC, agent NULLS FIRST, decision NULLS FIRST",
        "csv table",
    ),
    ("| count by kind", "SELECT kind, count(*) AS count FROM e GROUP BY kind ORDER BY kind", "csv"),
    (
        "| count by params.n",
        "SELECT any_value(jval(params, '$.n')) AS \"params.n\", count(*) AS count FROM e GROUP BY jkey(params, '$.n') ORDER BY min(jrank(params, '$.n')), min(jnum(params, '$.n')), min(jstr(params, '$.n'))",
        "csv json table",
    ),
    (
        "| count by params.opts.limit, decision",
        "SELECT any_value(jval(params, '$.opts.limit')) AS \"params.opts.limit\", decision, count(*) AS count FROM e GROUP BY jkey(params, '$.opts.limit'), decision ORDER BY min(jrank(params, '$.opts.limit')), min(jnum(params, '$.opts.limit')), decision NULLS FIRST",
        "csv json",
    ),
    (
        "| count by params.tags",
        "SELECT any_value(jval(params, '$.tags')) AS \"params.tags\", count(*) AS count FROM e GROUP BY CASE WHEN NOT jmiss(params, '$.tags') THEN CAST(json_extract(params, '$.tags') AS VARCHAR) END ORDER BY min(jrank(params, '$.tags')), min(CAST(json_extract(params, '$.tags') AS VARCHAR) = '[null]'), min(from_json(json_extract(params, '$.tags'), '[\"VARCHAR\"]'))",
        "csv json",
    ),
    (
        "| count by params.v",
        "SELECT any_value(jval(params, '$.v')) AS \"params.v\", count(*) AS count FROM e GROUP BY jkey(params, '$.v') ORDER BY min(jrank(params, '$.v')), min(jbool(params, '$.v')), min(jnum(params, '$.v')), min(jstr(params, '$.v')), min(CAST(jval(params, '$.v') AS VARCHAR))",
        "csv json",
    ),
    (
        "| count by flags",
        "SELECT any_value(CAST(flags AS JSON)) AS flags, count(*) AS count FROM e GROUP BY flags ORDER BY min(flags IS NOT NULL), min(flag_list)",
        "csv json",
    ),
    (
        "| stats count(), count(params.n) as cn, dcount(params.n) as dn, min(severity), max(severity) by decision",
        "SELECT decision, count(*) AS count, count(*) FILTER (WHERE NOT jmiss(params, '$.n')) AS cn, count(DISTINCT jkey(params, '$.n')) AS dn, min(severity) AS min_severity, max(severity) AS max_severity FROM e GROUP BY decision ORDER BY decision NULLS FIRST",
        "csv json table",
    ),
    (
        "| stats first(rule) as fr, last(rule) as lr, first(params.n) as fnum, last(params.n) as lnum by agent",
        "SELECT agent, arg_min(rule, seq) FILTER (WHERE rule IS NOT NULL) AS fr, arg_max(rule, seq) FILTER (WHERE rule IS NOT NULL) AS lr, arg_min(jval(params, '$.n'), seq) FILTER (WHERE NOT jmiss(params, '$.n')) AS fnum, arg_max(jval(params, '$.n'), seq) FILTER (WHERE NOT jmiss(params, '$.n')) AS lnum FROM e GROUP BY agent ORDER BY agent",
        "csv json",
    ),
    (
        "| stats min(params.n) as lo, max(params.n) as hi",
        "SELECT (SELECT jval(params, '$.n') FROM e WHERE NOT jmiss(params, '$.n') ORDER BY jrank(params, '$.n'), jnum(params, '$.n'), jstr(params, '$.n') LIMIT 1) AS lo, (SELECT jval(params, '$.n') FROM e WHERE NOT jmiss(params, '$.n') ORDER BY jrank(params, '$.n') DESC, jnum(params, '$.n') DESC, jstr(params, '$.n') DESC LIMIT 1) AS hi",
        "csv json",
    ),
    (
        "| stats min(params.v) as lo, max(params.v) as hi, dcount(params.v) as d, count(params.v) as c",
        "SELECT (SELECT jval(params, '$.v') FROM e WHERE NOT jmiss(params, '$.v') ORDER BY jrank(params, '$.v'), jbool(params, '$.v'), jnum(params, '$.v') LIMIT 1) AS lo, (SELECT jval(params, '$.v') FROM e WHERE NOT jmiss(params, '$.v') ORDER BY jrank(params, '$.v') DESC, CAST(jval(params, '$.v') AS VARCHAR) DESC LIMIT 1) AS hi, (SELECT count(DISTINCT jkey(params, '$.v')) FROM e) AS d, (SELECT count(*) FROM e WHERE NOT jmiss(params, '$.v')) AS c",
        "csv json",
    ),
    (
        "| stats min(time) as first_seen, max(time) as last_seen, dcount(tool) by agent",
        "SELECT agent, arg_min(time, ts) AS first_seen, arg_max(time, ts) AS last_seen, count(DISTINCT tool) AS dcount_tool FROM e GROUP BY agent ORDER BY agent NULLS FIRST",
        "csv json table",
    ),
    (
        "| top 3 tool by agent",
        "WITH c AS (SELECT agent, tool, count(*) AS n FROM e WHERE tool IS NOT NULL GROUP BY agent, tool), r AS (SELECT *, row_number() OVER (PARTITION BY agent ORDER BY n DESC, tool) AS rn FROM c) SELECT agent, tool, n AS count FROM r WHERE rn <= 3 ORDER BY agent NULLS FIRST, rn",
        "csv json table",
    ),
    (
        "| top 2 params.opts.limit",
        "SELECT any_value(jval(params, '$.opts.limit')) AS \"params.opts.limit\", count(*) AS count FROM e WHERE NOT jmiss(params, '$.opts.limit') GROUP BY jkey(params, '$.opts.limit') ORDER BY count DESC, min(jnum(params, '$.opts.limit')) LIMIT 2",
        "csv json table",
    ),
    (
        "| top 4 params.n by decision",
        "WITH c AS (SELECT decision, jkey(params, '$.n') AS k, any_value(jval(params, '$.n')) AS v, min(jrank(params, '$.n')) AS rk, min(jnum(params, '$.n')) AS num, min(jstr(params, '$.n')) AS str, count(*) AS n FROM e WHERE NOT jmiss(params, '$.n') GROUP BY decision, k), r AS (SELECT *, row_number() OVER (PARTITION BY decision ORDER BY n DESC, rk, num, str) AS rn FROM c) SELECT decision, v AS \"params.n\", n AS count FROM r WHERE rn <= 4 ORDER BY decision NULLS FIRST, rn",
        "csv json",
    ),
    (
        "| count by bin(time, 1s)",
        "SELECT strftime(time_bucket(INTERVAL 1 second, ts), '%Y-%m-%dT%H:%M:%SZ') AS time, count(*) AS count FROM e GROUP BY 1 ORDER BY 1",
        "csv",
    ),
    (
        "| count by hour(time), weekday(time), date(time)",
        "SELECT hour(ts) AS hour, lower(strftime(ts, '%a')) AS weekday, strftime(ts, '%Y-%m-%d') AS date, count(*) AS count FROM e GROUP BY ALL ORDER BY hour, isodow(any_value(ts)), date",
        "csv json",
    ),
    (
        "kind = agent_registered | fields agent, agent_id, owner, purpose",
        "SELECT agent, jstr(details, '$.id') AS agent_id, jval(details, '$.owner') AS owner, jval(details, '$.purpose') AS purpose FROM e WHERE kind = 'agent_registered' ORDER BY seq",
        "csv json",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_language_agrees_with_duckdb_on_the_export() {
    let daemon = Daemon::start();
    for agent in ["build-bot", "ops"] {
        ok(&daemon.ctl(&[
            "agents",
            "register",
            agent,
            "--owner",
            "Ünïcode Owner",
            "--purpose",
            "multi\nline",
        ]));
    }
    let mut client = daemon.client().await;
    client.append_stream(tokio_stream::iter(entries())).await.expect("append the generated entries");

    let tmp = tempfile::tempdir().expect("tempdir");
    let export = tmp.path().join("export.csv");
    let export_arg = export.to_str().expect("utf-8 temp path");
    ok(&daemon.ctl(&["export", "--out", export_arg]));

    let time_of = |seq: usize| -> String {
        let out = ok(&daemon.ctl(&["query", &format!("seq = {seq} | fields time"), "--format", "json"]));
        let row: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON row");
        row["time"].as_str().expect("a time").to_string()
    };
    let mut checks = Vec::new();
    for (query, sql, formats) in CASES {
        let mut query = query.to_string();
        while let Some(start) = query.find("{T:").or_else(|| query.find("{D:")) {
            let end = start + query[start..].find('}').expect("closed placeholder");
            let seq: usize = query[start + 3..end].parse().expect("a seq in the placeholder");
            let time = time_of(seq);
            // `{D:n}`: the (UTC) date of entry n.
            let value = if &query[start..start + 3] == "{D:" { time[..10].to_string() } else { time };
            query.replace_range(start..=end, &value);
        }
        for format in formats.split(' ') {
            let out = match query.strip_prefix("export:") {
                Some(filter) => daemon.ctl(&["export", "--query", filter]),
                None if format == "csv" || format == "json" || format == "table" => {
                    let pipeline = query.starts_with('|') || query.contains(" | ");
                    let q = if pipeline { query.clone() } else { format!("{query} | fields seq") };
                    daemon.ctl(&["query", &q, "--format", format])
                }
                None => panic!("unknown format {format}"),
            };
            let code = out.status.code().expect("an exit code");
            assert!(code == 0 || code == 1, "{query} ({format}) failed: exit {code}\n{}", stderr(&out));
            checks.push(serde_json::json!({
                "name": query, "query": query, "sql": sql, "format": format,
                "exit": code, "stdout": stdout(&out),
            }));
        }
    }
    let cases = tmp.path().join("cases.json");
    std::fs::write(&cases, serde_json::to_vec(&checks).expect("json")).expect("write cases");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/query_duckdb.py");
    let out = Command::new("python3").arg(&script).arg(&export).arg(&cases).output().unwrap_or_else(|e| {
        panic!("cannot run python3 ({e}): install Python 3 and `pip install duckdb` (see .ci/run)")
    });
    let report = format!("{}{}", stdout(&out), stderr(&out));
    assert_ne!(
        out.status.code(),
        Some(3),
        "DuckDB is not installed: run .ci/run or `pip install duckdb`\n{report}"
    );
    assert!(out.status.success(), "ledgerd and DuckDB disagree:\n{report}");
    // The comparison ran every check (a script that checked nothing would also exit 0).
    assert!(report.contains(&format!("{n} of {n} checks agree", n = checks.len())), "{report}");
    eprintln!("{report}");
}
