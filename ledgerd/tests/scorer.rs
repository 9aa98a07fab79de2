//! Issue 6, "What it must show" point 1: the scorer as a library, fed entries with
//! synthetic times, and the worked example of `docs/SEVERITY.md` pinned to the code.

use ledger_proto::pb::{self, Decision, Kind};
use ledgerd::scoring::scorer::{Score, Scorer, ScorerConfig};

/// Monday 2026-01-05 00:00:00 UTC.
const MONDAY: i64 = 1_767_571_200;

/// Nanoseconds at `day` days after [`MONDAY`], at hh:mm:ss UTC.
fn at(day: i64, h: i64, m: i64, s: i64) -> i64 {
    (MONDAY + day * 86_400 + h * 3600 + m * 60 + s) * 1_000_000_000
}

fn decision(agent: &str, tool: &str, decision: Decision, time: i64) -> pb::Entry {
    pb::Entry {
        time_unix_nanos: time,
        kind: Kind::Decision as i32,
        agent: agent.into(),
        tool: tool.into(),
        decision: decision as i32,
        policy_check: "match".into(),
        ..Default::default()
    }
}

fn scorer() -> Scorer {
    Scorer::new(ScorerConfig::default()).expect("default config is valid")
}

const READS: [&str; 3] = ["fs.read_file", "fs.list_dir", "kv.get"];

/// Five working days (Mon–Fri, 09:00–17:00 UTC) of routine allowed reads, one every five
/// minutes.
fn working_week(agent: &str) -> Vec<pb::Entry> {
    let mut entries = Vec::new();
    for day in 0..5 {
        for h in 9..17 {
            for i in 0..12 {
                entries.push(decision(agent, READS[i as usize % 3], Decision::Allow, at(day, h, i * 5, 0)));
            }
        }
    }
    entries
}

fn feed(scorer: &mut Scorer, entries: &[pb::Entry]) -> Vec<Score> {
    entries.iter().map(|e| scorer.score(e)).collect()
}

#[test]
fn a_steady_agent_stays_low_after_warm_up() {
    let mut s = scorer();
    let week = working_week("steady");
    let scores = feed(&mut s, &week);
    // From the second hour on every tool has been seen and the rate is the usual one.
    for (e, score) in week.iter().zip(&scores).skip(12) {
        assert!(score.severity <= 3, "{} at {}: {score:?}", e.tool, e.time_unix_nanos);
        assert!(score.flags.is_empty(), "{score:?}");
    }
    // The next Monday looks just the same.
    for h in 9..17 {
        for i in 0..12 {
            let e = decision("steady", READS[i as usize % 3], Decision::Allow, at(7, h, i * 5, 0));
            let score = s.score(&e);
            assert!(score.severity <= 3, "{score:?}");
        }
    }
}

#[test]
fn five_denies_in_thirty_seconds_are_a_burst() {
    let mut s = scorer();
    feed(&mut s, &working_week("prober"));
    let denies: Vec<Score> = (0..5)
        .map(|i| s.score(&decision("prober", "fs.read_file", Decision::Deny, at(7, 10, 0, i * 7))))
        .collect();
    // The first two could be mistakes; from the third on (3 in the 60 s window) it is
    // probing, and each further deny in the window scores one more, up to 10.
    assert!(denies[..2].iter().all(|d| d.severity < 8 && !d.flags.contains(&"deny_burst")), "{denies:?}");
    assert!(denies[2..].iter().all(|d| d.severity >= 8 && d.flags.contains(&"deny_burst")), "{denies:?}");
    let severities: Vec<u32> = denies.iter().map(|d| d.severity).collect();
    assert_eq!(severities, [3, 3, 8, 9, 10], "docs/SEVERITY.md says so");
    let sixth = s.score(&decision("prober", "fs.read_file", Decision::Deny, at(7, 10, 0, 31)));
    assert!(sixth.severity == 10 && sixth.flags.contains(&"deny_burst"), "{sixth:?}");
    // A minute later the window has emptied.
    let later = s.score(&decision("prober", "fs.read_file", Decision::Deny, at(7, 10, 2, 0)));
    assert!(!later.flags.contains(&"deny_burst"), "{later:?}");
    // Another agent's denies are its own.
    let other = s.score(&decision("bystander", "fs.read_file", Decision::Deny, at(7, 10, 0, 32)));
    assert!(!other.flags.contains(&"deny_burst"), "{other:?}");
}

#[test]
fn a_first_delete_at_night_scores_higher_than_by_day() {
    let mut s = scorer();
    feed(&mut s, &working_week("night"));
    feed(&mut s, &working_week("day"));
    let night = s.score(&decision("night", "fs.delete_file", Decision::Allow, at(7, 3, 0, 0)));
    let day = s.score(&decision("day", "fs.delete_file", Decision::Allow, at(7, 11, 0, 0)));
    assert!(night.severity > day.severity, "night {night:?}, day {day:?}");
    assert_eq!(night.flags, ["first_use", "off_hours"]);
    assert_eq!(day.flags, ["first_use"]);
    assert_eq!((night.severity, day.severity), (7, 5), "docs/SEVERITY.md says so");
    // The same tool again, by day, is no longer a first use.
    let again = s.score(&decision("day", "fs.delete_file", Decision::Allow, at(7, 11, 5, 0)));
    assert!(again.severity < day.severity && again.flags.is_empty(), "{again:?}");
}

#[test]
fn a_policy_mismatch_is_ten() {
    let mut s = scorer();
    let mut e = decision("a", "fs.read_file", Decision::Allow, at(0, 10, 0, 0));
    e.policy_check = "mismatch".into();
    e.flags = vec!["policy_mismatch".into()];
    let score = s.score(&e);
    assert_eq!(score.severity, 10);
    assert!(score.flags.contains(&"policy_mismatch"));
    // After a warm-up, for a tool the agent knows, too.
    feed(&mut s, &working_week("b"));
    let mut e = decision("b", "kv.get", Decision::Allow, at(7, 10, 0, 0));
    e.policy_check = "mismatch".into();
    assert_eq!(s.score(&e).severity, 10);
}

#[test]
fn a_shim_seq_gap_is_flagged() {
    let mut s = scorer();
    let mut shim = |id: &str, seq: u64, minute: i64| {
        let mut e = decision("a", "kv.get", Decision::Allow, at(0, 10, minute, 0));
        e.shim_id = id.into();
        e.shim_seq = seq;
        s.score(&e)
    };
    assert!(!shim("s1", 1, 0).flags.contains(&"shim_gap"));
    assert!(!shim("s1", 2, 1).flags.contains(&"shim_gap"));
    assert!(!shim("s2", 7, 2).flags.contains(&"shim_gap"), "a shim first seen has no gap");
    let gap = shim("s1", 5, 3);
    assert!(gap.flags.contains(&"shim_gap"), "{gap:?}");
    assert!(!shim("s1", 6, 4).flags.contains(&"shim_gap"));
    assert!(!shim("s2", 8, 5).flags.contains(&"shim_gap"));
    let plain = shim("s3", 1, 6);
    assert!(plain.severity < gap.severity, "{plain:?} {gap:?}");
}

/// A heartbeat repeats the number of the last decision its shim sent: equal to the last
/// one seen is fine, beyond it means decisions went missing (issue 5's silent shim).
#[test]
fn a_heartbeat_ahead_of_the_decisions_is_a_gap() {
    let mut s = scorer();
    let mut send = |kind: Kind, seq: u64, minute: i64| {
        let mut e = decision("a", "kv.get", Decision::Allow, at(0, 10, minute, 0));
        e.kind = kind as i32;
        if kind == Kind::ShimHeartbeat {
            e.tool.clear();
            e.decision = 0;
        }
        e.shim_id = "mcp-1".into();
        e.shim_seq = seq;
        s.score(&e)
    };
    let no_gap = |score: Score| !score.flags.contains(&"shim_gap");
    assert!(no_gap(send(Kind::Decision, 1, 0)));
    assert!(no_gap(send(Kind::Decision, 2, 1)));
    let beat = send(Kind::ShimHeartbeat, 2, 2);
    assert_eq!((beat.severity, beat.flags.len()), (1, 0), "nothing missing: {beat:?}");
    let beat = send(Kind::ShimHeartbeat, 4, 3);
    assert_eq!(beat.flags, ["shim_gap"], "decisions 3 and 4 never arrived");
    assert_eq!(beat.severity, 1 + 3);
    // The gap is reported once: the decision after it is the next number.
    assert!(no_gap(send(Kind::Decision, 5, 4)));
    assert!(no_gap(send(Kind::ShimHeartbeat, 5, 5)));
}

#[test]
fn a_rate_spike_is_flagged_after_warm_up() {
    let mut s = scorer();
    // No spike during the warm-up, however busy the first hour.
    let first: Vec<Score> =
        (0..100).map(|i| s.score(&decision("busy", "kv.get", Decision::Allow, at(0, 9, 0, i)))).collect();
    assert!(first.iter().all(|f| !f.flags.contains(&"rate_spike")));
    let mut s = scorer();
    feed(&mut s, &working_week("busy"));
    let spike: Vec<Score> =
        (0..60).map(|i| s.score(&decision("busy", "kv.get", Decision::Allow, at(7, 10, 0, i)))).collect();
    // The usual rate is 12 an hour: the 37th call within the hour is over 3 × max(12, 10).
    assert!(spike[..36].iter().all(|f| !f.flags.contains(&"rate_spike")));
    assert!(spike[36..].iter().all(|f| f.flags.contains(&"rate_spike")));
}

/// Traffic after the week: denies, new tools, odd hours, shims, a spike.
fn mixed_traffic() -> Vec<pb::Entry> {
    let mut entries = Vec::new();
    for i in 0..40 {
        let agent = ["x", "y", "z"][i % 3];
        let tool = ["fs.read_file", "fs.delete_file", "Bash", "http.post", "kv.get"][i % 5];
        let d = if i % 4 == 0 { Decision::Deny } else { Decision::Allow };
        let hour = [3, 10, 11, 22][i % 4];
        let mut e = decision(agent, tool, d, at(7, hour, (i / 4) as i64, 0));
        e.shim_id = format!("shim-{agent}");
        e.shim_seq = 1000 + i as u64 + u64::from(i % 7 == 0);
        entries.push(e);
    }
    entries.sort_by_key(|e| e.time_unix_nanos);
    entries
}

#[test]
fn rebuilt_baselines_score_like_live_ones() {
    let mut history = Vec::new();
    for agent in ["x", "y", "z"] {
        history.extend(working_week(agent));
    }
    history.sort_by_key(|e| e.time_unix_nanos);
    for (i, e) in history.iter_mut().enumerate() {
        e.shim_id = format!("shim-{}", e.agent);
        e.shim_seq = i as u64;
    }
    let mut live = scorer();
    feed(&mut live, &history);
    let mut rebuilt = scorer();
    // Scoring something first shows that rebuild starts from nothing.
    rebuilt.score(&decision("x", "stray", Decision::Deny, at(0, 0, 0, 0)));
    rebuilt.rebuild(history.iter().cloned());
    let traffic = mixed_traffic();
    let from_live = feed(&mut live, &traffic);
    let from_rebuilt = feed(&mut rebuilt, &traffic);
    assert_eq!(from_live, from_rebuilt);
    // And the baselines matter: a scorer that forgot them scores the traffic differently.
    let mut fresh = scorer();
    assert_ne!(feed(&mut fresh, &traffic), from_live);
}

#[test]
fn the_worked_example_in_severity_md_holds() {
    let mut s = scorer();
    feed(&mut s, &working_week("deploy-bot"));
    let mut e = decision("deploy-bot", "fs.delete_file", Decision::Allow, at(7, 3, 0, 0));
    let score = s.score(&e);
    score.apply(&mut e);
    assert_eq!(e.severity, 7);
    assert_eq!(e.flags, ["first_use", "off_hours"]);
    let doc = include_str!("../../docs/SEVERITY.md");
    let line = format!("severity = {}, flags = [{}]", score.severity, score.flags.join(", "));
    assert!(doc.contains(&line), "docs/SEVERITY.md should show `{line}`");
}

/// The `[scorer]` block in docs/SEVERITY.md is the whole default section: it must parse,
/// as part of a config file, to exactly the defaults in the code.
#[test]
fn the_documented_scorer_section_is_the_default() {
    let doc = include_str!("../../docs/SEVERITY.md");
    let block = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|b| b.starts_with("[scorer]"))
        .expect("docs/SEVERITY.md has the [scorer] section");
    let config = ledgerd::Config::parse(block, std::path::Path::new("SEVERITY.md")).expect("parses");
    assert_eq!(config.scorer, ScorerConfig::default());
    assert!(config.scorer.enabled);
}

#[test]
fn scorer_and_alerts_settings_are_checked_with_their_line() {
    let parse = |text: &str| ledgerd::Config::parse(text, std::path::Path::new("x.toml"));
    let c = parse("[scorer]\nenabled = false\n[scorer.deny_burst]\ncount = 4\n").expect("parses");
    assert_eq!((c.scorer.enabled, c.scorer.deny_burst.count), (false, 4));
    let err =
        parse("[scorer]\nbase = 1\n\n[scorer.weights]\ndenny = 3\n").expect_err("unknown key").to_string();
    assert!(err.contains("denny") && err.contains("line 5"), "{err}");
    let err = parse("[scorer.rate]\nalpha = 0.0\n").expect_err("bad alpha").to_string();
    assert!(err.contains("[scorer]") && err.contains("rate.alpha"), "{err}");
    let err = parse("[alerts]\nmin_severity = 0\n").expect_err("bad threshold").to_string();
    assert!(err.contains("[alerts]") && err.contains("1 to 10"), "{err}");
    let err = parse("[alerts]\nfile = \"/tmp/a\"\nexec = [\"x\"]\n").expect_err("unknown key").to_string();
    assert!(err.contains("exec") && err.contains("line 3"), "{err}");
}
