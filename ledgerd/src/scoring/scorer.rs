//! Severity scoring: gives every entry a severity from 1 to 10 and the flags that explain
//! it, from the entry itself (decision, action class, what intake found) and from what is
//! normal for its agent (baselines learned from the entries scored before it).
//!
//! The formula, each factor's default weight and a worked example are in
//! `docs/SEVERITY.md`. Scoring is deterministic: the same entries with the same times give
//! the same scores and the same state, so [`Scorer::rebuild`] from the log restores what
//! a restart would otherwise forget.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use ledger_proto::pb::{self, Decision, Kind};
use ledger_query::glob_to_regex;
use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_HOUR: i64 = 3600;

/// Compiled class patterns may not grow past this (as for the query language's globs).
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The highest severity; a policy mismatch always gets it.
pub const MAX_SEVERITY: u32 = 10;

/// Why a `[scorer]` section cannot be used; the text says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scorer: {0}")]
pub struct InvalidConfig(pub String);

/// The `[scorer]` configuration: weights, baseline parameters, deny-burst window,
/// action-class patterns and state limits. Every key has a default (`docs/SEVERITY.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScorerConfig {
    /// Score entries at all. Off: every entry is stored with severity 0 ("not scored")
    /// and no scorer flags (intake's flags stay), and no baselines are kept.
    pub enabled: bool,
    /// Where every score starts (clamped to at least 1).
    pub base: u32,
    pub weights: Weights,
    pub classes: ClassPatterns,
    pub rate: RateConfig,
    pub hours: HoursConfig,
    pub deny_burst: DenyBurstConfig,
    pub limits: Limits,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        ScorerConfig {
            enabled: true,
            base: 1,
            weights: Weights::default(),
            classes: ClassPatterns::default(),
            rate: RateConfig::default(),
            hours: HoursConfig::default(),
            deny_burst: DenyBurstConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// What each factor adds to the score when it applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// A denied decision.
    pub deny: u32,
    /// Action class of the tool: read, write, high (delete, exec, network egress), and
    /// other (no pattern matched).
    pub read: u32,
    pub write: u32,
    pub high: u32,
    pub other: u32,
    /// Registry state, from intake's flags.
    pub unknown_agent: u32,
    pub retired_agent: u32,
    pub bad_token: u32,
    pub missing_token: u32,
    /// The decision cites an older policy version than the one in force (which agrees).
    pub stale_policy: u32,
    /// The agent has never used this tool before.
    pub first_use: u32,
    /// The agent's calls this hour are well above its usual hourly rate.
    pub rate_spike: u32,
    /// The agent rarely works at this hour of day.
    pub off_hours: u32,
    /// A deny that makes `deny_burst.count` denies within the window…
    pub deny_burst: u32,
    /// …plus this much for each further deny in the window.
    pub deny_burst_step: u32,
    /// The shim skipped sequence numbers: decisions are missing.
    pub shim_gap: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            deny: 2,
            read: 0,
            write: 1,
            high: 2,
            other: 1,
            unknown_agent: 3,
            retired_agent: 3,
            bad_token: 4,
            missing_token: 1,
            stale_policy: 1,
            first_use: 2,
            rate_spike: 2,
            off_hours: 2,
            deny_burst: 5,
            deny_burst_step: 1,
            shim_gap: 3,
        }
    }
}

/// Tool-name globs for each action class. `*` matches within a segment (not `/`), `**`
/// across segments, `?` one character other than `/`, `\` makes the next character
/// literal; matching is anchored and case-sensitive. The highest class that matches wins;
/// a tool no pattern matches is of class `other`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassPatterns {
    pub read: Vec<String>,
    pub write: Vec<String>,
    pub high: Vec<String>,
}

impl Default for ClassPatterns {
    fn default() -> Self {
        let v = |globs: &[&str]| globs.iter().map(|g| g.to_string()).collect();
        ClassPatterns {
            read: v(&["*read*", "*list*", "*get*", "*search*", "Read", "Grep", "Glob", "LS"]),
            write: v(&[
                "*write*",
                "*edit*",
                "*create*",
                "*update*",
                "Write",
                "Edit",
                "MultiEdit",
                "NotebookEdit",
            ]),
            high: v(&[
                "*delete*", "*remove*", "rm", "shell.*", "Bash", "*exec*", "http.*", "*fetch*", "WebFetch",
            ]),
        }
    }
}

/// The hourly-rate baseline: an exponentially weighted moving average of the agent's
/// entry counts over the hours in which it was active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Weight of the newest hour in the average (0 < alpha <= 1).
    pub alpha: f64,
    /// Active hours the average must have seen before a spike is flagged.
    pub warmup_hours: u32,
    /// A spike is a count this hour above `spike_factor × max(average, min_rate)`.
    pub spike_factor: f64,
    /// Floor under the average, so a quiet agent's few calls are not a spike.
    pub min_rate: f64,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig { alpha: 0.2, warmup_hours: 8, spike_factor: 3.0, min_rate: 10.0 }
    }
}

/// The usual-hours baseline: a histogram of the agent's entries by hour of day (UTC).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoursConfig {
    /// Entries the histogram must hold before `off_hours` is flagged.
    pub min_history: u64,
    /// An hour of day holding less than this share of the agent's entries is off hours.
    pub max_share: f64,
    /// When the histogram holds more entries than this, every counter is halved, so old
    /// habits fade and the counters stay bounded.
    pub history_cap: u64,
}

impl Default for HoursConfig {
    fn default() -> Self {
        HoursConfig { min_history: 100, max_share: 0.02, history_cap: 10_000 }
    }
}

/// Probing: this many denies by one agent within the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenyBurstConfig {
    pub count: u32,
    /// A duration such as "60s" or "5m".
    pub window: String,
}

impl Default for DenyBurstConfig {
    fn default() -> Self {
        DenyBurstConfig { count: 3, window: "60s".into() }
    }
}

/// Bounds on the scorer's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Agents with a baseline of their own; agents beyond share one overflow baseline.
    pub max_agents: usize,
    /// Tools remembered per agent; once full, new tools stay `first_use` unremembered.
    pub max_tools_per_agent: usize,
    /// Shims whose last sequence number is kept; when full the table is cleared.
    pub max_shims: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_agents: 10_000, max_tools_per_agent: 1_024, max_shims: 4_096 }
    }
}

/// A severity and the reasons that contributed to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Score {
    /// 1..=10.
    pub severity: u32,
    /// Every reason that added weight (intake's flags among them), sorted and unique.
    pub flags: Vec<&'static str>,
}

impl Score {
    /// Stores the score in `entry`: its severity, and its flags merged with the ones the
    /// entry already has (sorted, unique).
    pub fn apply(&self, entry: &mut pb::Entry) {
        entry.severity = self.severity;
        entry.flags.extend(self.flags.iter().map(|f| f.to_string()));
        entry.flags.sort_unstable();
        entry.flags.dedup();
    }
}

/// Action class of a tool, from [`ClassPatterns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    High,
    Other,
}

/// Scores entries and keeps the per-agent baselines they are scored against.
pub struct Scorer {
    config: ScorerConfig,
    read: RegexSet,
    write: RegexSet,
    high: RegexSet,
    window_nanos: i64,
    agents: HashMap<String, Baseline>,
    /// Shared by every agent beyond `limits.max_agents`.
    overflow: Baseline,
    /// Last `shim_seq` seen per `shim_id`.
    shims: HashMap<String, u64>,
}

/// What is normal for one agent. Bounded: a capped tool set, 24 counters, an average,
/// and a ring of at most `deny_burst.count + 16` deny times.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Baseline {
    tools: HashSet<String>,
    hours: [u64; 24],
    hours_total: u64,
    /// The hour (since the epoch) being counted, and its count so far.
    current_hour: i64,
    current_count: u64,
    /// Kept by its bits in snapshots: a decimal round trip may change the last digit.
    #[serde(with = "f64_bits")]
    ewma: f64,
    active_hours: u32,
    denies: VecDeque<i64>,
}

/// Everything the scorer has learned, as [`Scorer::snapshot`] writes it.
type Learned = (HashMap<String, Baseline>, Baseline, HashMap<String, u64>);

mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

impl Scorer {
    /// A scorer with empty baselines.
    pub fn new(config: ScorerConfig) -> Result<Scorer, InvalidConfig> {
        let r = &config.rate;
        if !(r.alpha > 0.0 && r.alpha <= 1.0) {
            return Err(InvalidConfig(format!(
                "rate.alpha is {}; use a number above 0 and at most 1",
                r.alpha
            )));
        }
        if !(r.spike_factor.is_finite()
            && r.spike_factor > 0.0
            && r.min_rate.is_finite()
            && r.min_rate >= 0.0)
        {
            return Err(InvalidConfig(
                "rate.spike_factor must be above 0 and rate.min_rate at least 0".into(),
            ));
        }
        let h = &config.hours;
        if !(h.max_share.is_finite() && (0.0..=1.0).contains(&h.max_share)) || h.history_cap < h.min_history {
            return Err(InvalidConfig(
                "hours.max_share must be between 0 and 1, and hours.history_cap at least hours.min_history"
                    .into(),
            ));
        }
        if config.deny_burst.count == 0 {
            return Err(InvalidConfig("deny_burst.count is 0; use at least 1".into()));
        }
        let window = parse_duration(&config.deny_burst.window)
            .map_err(|e| InvalidConfig(format!("deny_burst.window: {e}")))?;
        let window_nanos = i64::try_from(window.as_nanos())
            .map_err(|_| InvalidConfig("deny_burst.window is too long; use minutes or hours".into()))?;
        let set = |name: &str, globs: &[String]| {
            RegexSetBuilder::new(globs.iter().map(|g| glob_to_regex(g)))
                .size_limit(PATTERN_SIZE_LIMIT)
                .dfa_size_limit(PATTERN_SIZE_LIMIT)
                .build()
                .map_err(|e| InvalidConfig(format!("classes.{name}: {e}")))
        };
        Ok(Scorer {
            read: set("read", &config.classes.read)?,
            write: set("write", &config.classes.write)?,
            high: set("high", &config.classes.high)?,
            window_nanos,
            agents: HashMap::new(),
            overflow: Baseline::default(),
            shims: HashMap::new(),
            config,
        })
    }

    /// Forgets every baseline and learns them again from `entries` (the log, in seq
    /// order), leaving the same state as scoring those entries one by one.
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = pb::Entry>) {
        self.reset();
        for entry in entries {
            self.score(&entry);
        }
    }

    /// What the scorer has learned, as JSON: restored by [`Scorer::restore`], it gives
    /// exactly this state again (floats are kept by their bits).
    pub fn snapshot(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&(&self.agents, &self.overflow, &self.shims))
    }

    /// Replaces the baselines with a [`Scorer::snapshot`]. On error nothing changes.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), serde_json::Error> {
        let (agents, overflow, shims): Learned = serde_json::from_slice(snapshot)?;
        (self.agents, self.overflow, self.shims) = (agents, overflow, shims);
        Ok(())
    }

    /// Whether two scorers have learned the same (for tests of replays and snapshots).
    pub fn same_baselines(&self, other: &Scorer) -> bool {
        self.agents == other.agents && self.overflow == other.overflow && self.shims == other.shims
    }

    /// Forgets every baseline (before a replay of the log).
    pub fn reset(&mut self) {
        self.agents.clear();
        self.overflow = Baseline::default();
        self.shims.clear();
    }

    /// The action class of a tool name.
    pub fn class(&self, tool: &str) -> Class {
        if self.high.is_match(tool) {
            Class::High
        } else if self.write.is_match(tool) {
            Class::Write
        } else if self.read.is_match(tool) {
            Class::Read
        } else {
            Class::Other
        }
    }

    /// Scores `entry` against the baselines as they stand, then learns from it. Its time
    /// is `entry.time_unix_nanos` (the daemon stamps it; times never decrease along the
    /// log, and an earlier time is counted in the hour being counted).
    pub fn score(&mut self, entry: &pb::Entry) -> Score {
        let w = self.config.weights;
        let mut total = u64::from(self.config.base);
        let mut flags = Vec::new();
        let mut add = |weight: u32, flag: Option<&'static str>| {
            total += u64::from(weight);
            flags.extend(flag);
        };

        let has = |flag: &str| entry.flags.iter().any(|f| f == flag);
        let mismatch = entry.policy_check == "mismatch" || has("policy_mismatch");
        for (flag, weight) in [
            ("unknown_agent", w.unknown_agent),
            ("retired_agent", w.retired_agent),
            ("bad_token", w.bad_token),
            ("missing_token", w.missing_token),
        ] {
            if has(flag) {
                add(weight, Some(flag));
            }
        }
        if entry.policy_check == "stale_version" || has("stale_policy") {
            add(w.stale_policy, Some("stale_policy"));
        }

        let kind = Kind::try_from(entry.kind).unwrap_or(Kind::Unspecified);
        if matches!(kind, Kind::Decision | Kind::Outcome) {
            if entry.decision == Decision::Deny as i32 {
                add(w.deny, None);
            }
            let weight = match self.class(&entry.tool) {
                Class::Read => w.read,
                Class::Write => w.write,
                Class::High => w.high,
                Class::Other => w.other,
            };
            add(weight, None);
        }

        if !entry.shim_id.is_empty() {
            if let Some(last) = self.shims.get_mut(&entry.shim_id) {
                // A decision carries the next number; a heartbeat repeats the number of
                // the last decision its shim sent. Either way, a number beyond the next
                // expected one means decisions that never arrived.
                let expected = if kind == Kind::ShimHeartbeat { *last } else { last.saturating_add(1) };
                if entry.shim_seq > expected {
                    add(w.shim_gap, Some("shim_gap"));
                }
                *last = entry.shim_seq;
            } else {
                if self.shims.len() >= self.config.limits.max_shims {
                    self.shims.clear();
                }
                self.shims.insert(entry.shim_id.clone(), entry.shim_seq);
            }
        }

        if kind == Kind::Decision {
            let window = self.window_nanos;
            let config = &self.config;
            let baseline = if self.agents.contains_key(&entry.agent) {
                self.agents.get_mut(&entry.agent)
            } else if self.agents.len() < config.limits.max_agents {
                Some(self.agents.entry(entry.agent.clone()).or_default())
            } else {
                None
            };
            let baseline = baseline.unwrap_or(&mut self.overflow);
            let seen = baseline.observe(entry, config);
            if seen.first_use {
                add(w.first_use, Some("first_use"));
            }
            if seen.rate_spike {
                add(w.rate_spike, Some("rate_spike"));
            }
            if seen.off_hours {
                add(w.off_hours, Some("off_hours"));
            }
            if let Some(n) = baseline.deny_count(entry, config, window) {
                let extra = n - config.deny_burst.count;
                add(w.deny_burst.saturating_add(w.deny_burst_step.saturating_mul(extra)), Some("deny_burst"));
            }
        }

        if mismatch {
            total = u64::from(MAX_SEVERITY);
            flags.push("policy_mismatch");
        }
        flags.sort_unstable();
        flags.dedup();
        Score { severity: total.clamp(1, u64::from(MAX_SEVERITY)) as u32, flags }
    }
}

/// What a decision looked like against its agent's baseline.
#[derive(Default)]
struct Observed {
    first_use: bool,
    rate_spike: bool,
    off_hours: bool,
}

impl Baseline {
    /// Checks a decision against first use, rate and usual hours, then learns it.
    fn observe(&mut self, entry: &pb::Entry, config: &ScorerConfig) -> Observed {
        let mut seen = Observed::default();
        let secs = entry.time_unix_nanos.div_euclid(NANOS_PER_SEC);
        let hour = secs.div_euclid(SECS_PER_HOUR);
        let hour_of_day = hour.rem_euclid(24) as usize;

        if !self.tools.contains(&entry.tool) {
            seen.first_use = true;
            if self.tools.len() < config.limits.max_tools_per_agent {
                self.tools.insert(entry.tool.clone());
            }
        }

        // Rate: an hour that ended is folded into the average; idle hours are not.
        if hour > self.current_hour {
            if self.current_count > 0 {
                let count = self.current_count as f64;
                self.ewma = if self.active_hours == 0 {
                    count
                } else {
                    config.rate.alpha * count + (1.0 - config.rate.alpha) * self.ewma
                };
                self.active_hours = self.active_hours.saturating_add(1);
            }
            self.current_hour = hour;
            self.current_count = 0;
        }
        self.current_count += 1;
        let r = &config.rate;
        if self.active_hours >= r.warmup_hours
            && self.current_count as f64 > r.spike_factor * self.ewma.max(r.min_rate)
        {
            seen.rate_spike = true;
        }

        let h = &config.hours;
        if self.hours_total >= h.min_history.max(1)
            && (self.hours[hour_of_day] as f64) < h.max_share * self.hours_total as f64
        {
            seen.off_hours = true;
        }
        self.hours[hour_of_day] += 1;
        self.hours_total += 1;
        if self.hours_total > h.history_cap {
            for c in &mut self.hours {
                *c /= 2;
            }
            self.hours_total = self.hours.iter().sum();
        }
        seen
    }

    /// Records a deny and returns how many denies the window now holds, when that is a
    /// burst (at least `deny_burst.count`).
    fn deny_count(&mut self, entry: &pb::Entry, config: &ScorerConfig, window: i64) -> Option<u32> {
        if entry.decision != Decision::Deny as i32 {
            return None;
        }
        let t = entry.time_unix_nanos;
        while self.denies.front().is_some_and(|&d| t.saturating_sub(d) > window) {
            self.denies.pop_front();
        }
        let cap = config.deny_burst.count as usize + 16;
        if self.denies.len() >= cap {
            self.denies.pop_front();
        }
        self.denies.push_back(t);
        let n = self.denies.len() as u32;
        (n >= config.deny_burst.count).then_some(n)
    }
}

/// Parses durations like "10s", "5m", "1h 30m" (at least one second).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration =
        text.parse().map_err(|e| format!("{e}; write a duration such as \"10s\", \"5m\" or \"1h\""))?;
    let d = Duration::try_from(d).map_err(|_| "a negative duration makes no sense here".to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(agent: &str, tool: &str, decision: Decision, secs: i64) -> pb::Entry {
        pb::Entry {
            time_unix_nanos: secs * NANOS_PER_SEC,
            kind: Kind::Decision as i32,
            agent: agent.into(),
            tool: tool.into(),
            decision: decision as i32,
            ..Default::default()
        }
    }

    /// xorshift64: deterministic pseudo-random numbers for the bounds test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    #[test]
    fn severity_is_always_between_1_and_10() {
        let mut rng = Rng(0x5eed);
        let flags = ["unknown_agent", "retired_agent", "bad_token", "missing_token", "stale_policy", "x"];
        for round in 0..50 {
            let mut config = ScorerConfig::default();
            // Zero weights everywhere (and a zero base) in the first round, large ones later.
            let big = if round == 0 { 1 } else { 40 };
            let mut w = || rng.next(big) as u32;
            config.base = w();
            config.weights = Weights {
                deny: w(),
                read: w(),
                write: w(),
                high: w(),
                other: w(),
                unknown_agent: w(),
                retired_agent: w(),
                bad_token: w(),
                missing_token: w(),
                stale_policy: w(),
                first_use: w(),
                rate_spike: w(),
                off_hours: w(),
                deny_burst: u32::MAX,
                deny_burst_step: u32::MAX,
                shim_gap: w(),
            };
            config.deny_burst.count = 1 + rng.next(5) as u32;
            let mut scorer = Scorer::new(config).expect("valid");
            let mut secs = 0;
            for _ in 0..300 {
                secs += rng.next(4000) as i64;
                let tool = ["fs.read", "Write", "rm", "odd"][rng.next(4) as usize];
                let decision = if rng.next(2) == 0 { Decision::Allow } else { Decision::Deny };
                let mut e = entry(["a", "b"][rng.next(2) as usize], tool, decision, secs);
                e.kind = [Kind::Decision, Kind::Outcome, Kind::DaemonStarted][rng.next(3) as usize] as i32;
                e.flags = (0..rng.next(3)).map(|_| flags[rng.next(6) as usize].to_string()).collect();
                e.policy_check = ["match", "mismatch", "stale_version", ""][rng.next(4) as usize].into();
                e.shim_id = "s".into();
                e.shim_seq = rng.next(10);
                let score = scorer.score(&e);
                assert!((1..=MAX_SEVERITY).contains(&score.severity), "{score:?}");
                if e.policy_check == "mismatch" {
                    assert_eq!(score.severity, MAX_SEVERITY);
                }
                let mut sorted = score.flags.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted, score.flags);
            }
        }
    }

    #[test]
    fn the_formula_adds_weights_from_the_base() {
        let mut s = Scorer::new(ScorerConfig::default()).expect("valid");
        // First use of a high tool, denied: 1 + 2 (deny) + 2 (high) + 2 (first_use).
        let score = s.score(&entry("a", "shell.exec", Decision::Deny, 0));
        assert_eq!(score, Score { severity: 7, flags: vec!["first_use"] });
        // Known now: 1 + 2 + 2.
        assert_eq!(s.score(&entry("a", "shell.exec", Decision::Deny, 1)).severity, 5);
        // Intake's flags add their weights and are kept: 1 + 0 (read) + 2 + 3 + 4, clamped.
        let mut e = entry("a", "fs.read_file", Decision::Allow, 2);
        e.flags = vec!["unknown_agent".into(), "bad_token".into(), "params_redacted".into()];
        let score = s.score(&e);
        assert_eq!(score, Score { severity: 10, flags: vec!["bad_token", "first_use", "unknown_agent"] });
        score.apply(&mut e);
        assert_eq!(e.flags, ["bad_token", "first_use", "params_redacted", "unknown_agent"]);
        // Entries ledgerd writes itself score the base.
        let mut e = entry("", "", Decision::Unspecified, 3);
        e.kind = Kind::DaemonStarted as i32;
        assert_eq!(s.score(&e), Score { severity: 1, flags: vec![] });
    }

    #[test]
    fn classes_follow_the_patterns_highest_first() {
        let s = Scorer::new(ScorerConfig::default()).expect("valid");
        assert_eq!(s.class("fs.read_file"), Class::Read);
        assert_eq!(s.class("Read"), Class::Read);
        assert_eq!(s.class("fs.write_file"), Class::Write);
        assert_eq!(s.class("Edit"), Class::Write);
        assert_eq!(s.class("rm"), Class::High);
        assert_eq!(s.class("Bash"), Class::High);
        assert_eq!(s.class("WebFetch"), Class::High);
        assert_eq!(s.class("http.get"), Class::High, "network egress outranks read");
        assert_eq!(s.class("fs.read_then_delete"), Class::High);
        assert_eq!(s.class("calculator"), Class::Other);
        assert_eq!(s.class("fs/read"), Class::Other, "`*` stays within a segment");
    }

    #[test]
    fn globs_have_the_query_rules() {
        let m =
            |glob: &str, text: &str| regex::Regex::new(&glob_to_regex(glob)).expect("regex").is_match(text);
        assert!(m("shell.*", "shell.exec"));
        assert!(!m("shell.*", "shellxexec"));
        assert!(!m("/etc/*", "/etc/ssh/sshd_config"));
        assert!(m("/etc/**", "/etc/ssh/sshd_config"));
        assert!(m("/srv/**/x", "/srv/x"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(m(r"a\*", "a*"));
        assert!(!m(r"a\*", "ab"));
    }

    #[test]
    fn config_reads_as_a_toml_section_with_defaults() {
        let config: ScorerConfig = toml::from_str("").expect("empty section");
        assert_eq!(config, ScorerConfig::default());
        let config: ScorerConfig =
            toml::from_str("base = 2\n[weights]\ndeny = 4\n[deny_burst]\nwindow = \"2m\"\n").expect("parses");
        assert_eq!((config.base, config.weights.deny, config.weights.write), (2, 4, 1));
        assert_eq!(config.deny_burst.window, "2m");
        assert!(toml::from_str::<ScorerConfig>("[weights]\ndenny = 4\n").is_err());
        let text = toml::to_string(&ScorerConfig::default()).expect("serializes");
        assert_eq!(toml::from_str::<ScorerConfig>(&text).expect("round trip"), ScorerConfig::default());
    }

    #[test]
    fn bad_configs_are_refused() {
        let with = |f: fn(&mut ScorerConfig)| {
            let mut c = ScorerConfig::default();
            f(&mut c);
            Scorer::new(c).err()
        };
        assert!(with(|c| c.rate.alpha = 0.0).is_some());
        assert!(with(|c| c.hours.max_share = 1.5).is_some());
        assert!(with(|c| c.deny_burst.count = 0).is_some());
        assert!(with(|c| c.deny_burst.window = "soon".into()).is_some());
        assert!(with(|c| c.classes.read = vec!["x".repeat(1 << 20)]).is_some());
        assert!(with(|_| ()).is_none());
    }

    #[test]
    fn state_stays_bounded() {
        let config = ScorerConfig {
            limits: Limits { max_agents: 3, max_tools_per_agent: 5, max_shims: 4 },
            hours: HoursConfig { history_cap: 200, ..HoursConfig::default() },
            ..ScorerConfig::default()
        };
        let mut s = Scorer::new(config).expect("valid");
        for i in 0..1000 {
            let mut e = entry(&format!("agent-{i}"), &format!("tool-{i}"), Decision::Deny, i);
            e.shim_id = format!("shim-{i}");
            s.score(&e);
            let e = entry("agent-0", &format!("tool-{i}"), Decision::Deny, i);
            s.score(&e);
        }
        assert_eq!(s.agents.len(), 3);
        assert!(s.shims.len() <= 4);
        let a = &s.agents["agent-0"];
        assert_eq!(a.tools.len(), 5);
        assert!(a.hours_total <= 200 && a.hours.iter().sum::<u64>() == a.hours_total);
        assert!(a.denies.len() <= 5 + 16);
        assert!(s.overflow.denies.len() <= 5 + 16);
        // A tool the full set could not remember is still a first use.
        assert!(s.score(&entry("agent-0", "tool-999", Decision::Allow, 2000)).flags.contains(&"first_use"));
    }
}
