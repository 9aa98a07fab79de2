//! The bundle's human-readable parts: `summary.html` (one self-contained page: inline CSS
//! and SVG, no scripts, nothing fetched) and `VERIFY.md`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write;

use ledger_proto::pb;

use super::time_text;

/// Rows in the table of notable entries.
const NOTABLE_ROWS: usize = 50;

/// A scored entry's place among the notable ones (severity, then the earlier seq), and its
/// table row.
type Notable = (u32, Reverse<u64>, Vec<String>);

/// What the summary shows of the period's entries, gathered one entry at a time (the
/// export streams the period; memory stays bounded by agents, days and the tables).
#[derive(Default)]
pub(super) struct Period {
    entries: u64,
    by_agent: BTreeMap<String, [u64; 3]>,
    denies_per_day: BTreeMap<String, u64>,
    /// The highest-severity scored entries (severity, earliest seq first), and how many
    /// entries were scored at all.
    scored: BinaryHeap<Reverse<Notable>>,
    scored_count: usize,
    /// Without any score: the first denied or flagged entries, and how many there were.
    flagged: Vec<Vec<String>>,
    flagged_count: usize,
    gaps: Vec<Vec<String>>,
}

impl Period {
    /// Takes in one entry of the period (narrowed by agent), in seq order.
    pub(super) fn add(&mut self, e: &pb::Entry) {
        self.entries += 1;
        if e.kind == pb::Kind::Decision as i32 {
            let counts = self.by_agent.entry(e.agent.clone()).or_default();
            counts[if is_deny(e) {
                1
            } else if e.decision == 0 {
                2
            } else {
                0
            }] += 1;
        }
        if is_deny(e) {
            let day: String = time_text(e.time_unix_nanos).chars().take(10).collect();
            *self.denies_per_day.entry(day).or_default() += 1;
        }
        if e.severity > 0 {
            self.scored_count += 1;
            self.scored.push(Reverse((e.severity, Reverse(e.seq), notable_row(e))));
            if self.scored.len() > NOTABLE_ROWS {
                self.scored.pop();
            }
        }
        if is_deny(e) || !e.flags.is_empty() {
            self.flagged_count += 1;
            if self.flagged.len() < NOTABLE_ROWS {
                self.flagged.push(notable_row(e));
            }
        }
        if e.kind == pb::Kind::DaemonStarted as i32 || e.kind == pb::Kind::DaemonStopped as i32 {
            self.gaps.push(vec![
                e.seq.to_string(),
                time_text(e.time_unix_nanos),
                pb::Kind::name_of(e.kind).to_string(),
                e.host.clone(),
                e.details.clone(),
            ]);
        }
    }

    /// How many entries were taken in.
    pub(super) fn len(&self) -> u64 {
        self.entries
    }
}

fn notable_row(e: &pb::Entry) -> Vec<String> {
    vec![
        e.seq.to_string(),
        time_text(e.time_unix_nanos),
        e.severity.to_string(),
        e.agent.clone(),
        e.tool.clone(),
        pb::Decision::name_of(e.decision).to_string(),
        e.rule.clone(),
        e.reason.clone(),
        e.flags.join(", "),
    ]
}

/// What the summary is made from.
pub(super) struct Inputs<'a> {
    /// The entries of the period (narrowed by agent).
    pub period: &'a Period,
    pub from: i64,
    pub to: i64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Policy versions set during the period.
    pub policy_changes: &'a [pb::PolicyVersion],
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:70em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
td{white-space:nowrap;max-width:30em;overflow:hidden;text-overflow:ellipsis}\
th{background:#f3f3f3}td.n{text-align:right}.deny{color:#a00}.muted{color:#777}code{font-size:.9em}";

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    out.push_str("<table><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn is_deny(e: &pb::Entry) -> bool {
    e.decision == pb::Decision::Deny as i32
}

/// Denies per UTC day as an inline SVG bar chart.
fn denies_chart(out: &mut String, per_day: &BTreeMap<String, u64>) {
    if per_day.is_empty() {
        out.push_str("<p class=\"muted\">No denies in the period.</p>\n");
        return;
    }
    let max = per_day.values().copied().max().unwrap_or(1).max(1);
    let (bar, gap, height) = (28u64, 8u64, 160u64);
    // Room on the right for the last day's slanted label.
    let width = per_day.len() as u64 * (bar + gap) + gap + 70;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"Denies per day\">",
        height + 90
    );
    for (i, (day, n)) in per_day.iter().enumerate() {
        let h = n * height / max;
        let x = gap + i as u64 * (bar + gap);
        let y = 20 + height - h;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{bar}\" height=\"{h}\" fill=\"#c0392b\"><title>{} {n}</title></rect>\
<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{n}</text>\
<text x=\"{}\" y=\"{}\" font-size=\"10\" transform=\"rotate(45 {} {})\">{}</text>",
            escape(day),
            x + bar / 2,
            y.saturating_sub(4),
            x + 4,
            height + 34,
            x + 4,
            height + 34,
            escape(day)
        );
    }
    out.push_str("</svg>\n");
}

/// The summary page.
pub(super) fn summary(input: &Inputs<'_>) -> String {
    let period = input.period;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>ledgerd evidence {} – {}</title><style>{STYLE}</style></head><body>\n\
<h1>ledgerd evidence bundle</h1>\n<p>Period {} to {} (UTC): entries {} to {}, {} shown. \
Every number here is derived from <code>events.csv</code>; check the bundle with \
<code>ledgerctl verify-bundle</code> (see VERIFY.md) before relying on it.</p>\n",
        escape(&time_text(input.from)),
        escape(&time_text(input.to)),
        escape(&time_text(input.from)),
        escape(&time_text(input.to)),
        input.first_seq,
        input.last_seq,
        period.len()
    );

    out.push_str("<h2>Decisions by agent</h2>\n");
    let rows: Vec<Vec<String>> = period
        .by_agent
        .iter()
        .map(|(a, c)| vec![a.clone(), c[0].to_string(), c[1].to_string(), c[2].to_string()])
        .collect();
    table(&mut out, &["agent", "allow", "deny", "no decision"], &rows);

    out.push_str("<h2>Denies per day</h2>\n");
    denies_chart(&mut out, &period.denies_per_day);

    let scored = period.scored_count > 0;
    let (rows, total): (Vec<Vec<String>>, usize) = if scored {
        // Highest severity first, the earliest entry first among equals.
        let mut top: Vec<_> = period.scored.iter().map(|Reverse(item)| item).collect();
        top.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        (top.into_iter().map(|(_, _, row)| row.clone()).collect(), period.scored_count)
    } else {
        (period.flagged.clone(), period.flagged_count)
    };
    let shown = rows.len();
    if scored {
        let _ = writeln!(out, "<h2>Highest-severity entries ({shown} of {total})</h2>");
    } else {
        let _ = writeln!(
            out,
            "<h2>Denies and flagged entries ({shown} of {total})</h2>\n<p class=\"muted\">No entry of the period has been scored yet (severity 0).</p>"
        );
    }
    table(
        &mut out,
        &["seq", "time", "severity", "agent", "tool", "decision", "rule", "reason", "flags"],
        &rows,
    );

    out.push_str("<h2>Policy changes</h2>\n");
    let rows: Vec<Vec<String>> = input
        .policy_changes
        .iter()
        .map(|v| {
            vec![
                v.agent.clone(),
                format!("v{}", v.version),
                time_text(v.time_unix_nanos),
                v.author.clone(),
                v.approver.clone(),
                v.reason.clone(),
                v.hash.chars().take(16).collect(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("<p class=\"muted\">No policy changed in the period.</p>\n");
    } else {
        table(&mut out, &["agent", "version", "time", "author", "approver", "reason", "hash"], &rows);
    }

    out.push_str("<h2>Monitoring gaps</h2>\n");
    let gaps = &period.gaps;
    if gaps.is_empty() {
        out.push_str("<p class=\"muted\">The daemon neither stopped nor started in the period.</p>\n");
    } else {
        out.push_str("<p>Between a <code>daemon_stopped</code> and the next <code>daemon_started</code> nothing was recorded.</p>\n");
        table(&mut out, &["seq", "time", "kind", "host", "details"], gaps);
    }
    out.push_str("</body></html>\n");
    out
}

/// VERIFY.md: how to check the bundle, with the tool and by hand.
pub(super) fn verify_md(vkey: &str) -> String {
    format!(
        "# Verifying this evidence bundle

This bundle was exported from a ledgerd audit ledger. Do not trust it because of where
you got it: check it. The checks need no network and no access to the ledger.

## The key: compare it out of band

`verifier.vkey` holds the key the bundle says it was signed with:

    {vkey}

Anyone who can edit the bundle can also replace that file with their own key and re-sign
everything. So **obtain the ledger's verifier key separately** (from its operator, from
your own earlier records, from a checkpoint you pinned) and pass it with `--key`. Without
`--key` the tool only shows that the bundle is consistent with itself, and says so.

## With the tool

    ledgerctl verify-bundle THIS_DIR --key /path/to/trusted/verifier.vkey

Exit 0: every check held. Exit 1: the named check failed. Exit 2: it could not run.

## By hand (docs/FORMAT.md, \"Evidence bundle\", has every byte)

1. `MANIFEST` is a signed note (C2SP signed-note, Ed25519) over the lines
   `ledgerd evidence manifest v1`, the origin, then `<BLAKE3 hex>  <path>` for every other
   file. Check its signature with the key, and every file's BLAKE3 (`b3sum`); no file may
   be missing or extra. `verifier.vkey` must be the key you obtained.
2. `checkpoint.note` is a signed C2SP checkpoint: origin, tree size, base64 root.
3. `leaves.bin` is a sequence of (4-byte big-endian length, leaf bytes); each leaf is the
   canonical protobuf `ledger.v1.Entry`, entries `start..end` of `proof.json`, in order.
4. Rebuild the root: walk the RFC 9162 tree of `tree_size` leaves (BLAKE3, leaf hash
   `BLAKE3(0x00 ‖ leaf)`, node hash `BLAKE3(0x01 ‖ left ‖ right)`); a subtree wholly outside
   `start..end` takes the next hash of `proof.json`'s `hashes`, a leaf inside takes its
   hash. The result must equal the checkpoint's root. Each of `proof.json`'s `entries` has
   an inclusion proof to the same root.
5. The entries with `from_unix_nanos <= time < to_unix_nanos` are `first_seq..=last_seq`;
   the leaf just before them (unless the log starts with them) and the leaf just after
   them lie outside the period, which proves no entry at either end was left out.
6. Entry `export_seq` is the `evidence_exported` entry this export wrote: it names the
   period, who asked, and lies after the period.
7. Every raw cell of `events.csv` equals the field of its leaf with one `'` put before it
   when it starts with `= + - @`, tab or CR (possibly after other `'`).
8. Every row of `policy_changes.csv` and every file under `policies/` equals what its
   `policy_changed` entry records.

`agents.csv`, `access_review.csv` and `summary.html` are covered by the signed manifest
only.
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, severity: u32, decision: pb::Decision) -> pb::Entry {
        pb::Entry {
            seq,
            time_unix_nanos: 1_767_225_600_000_000_000 + seq as i64 * 3_600_000_000_000,
            kind: pb::Kind::Decision as i32,
            agent: format!("agent-{}", seq % 2),
            decision: decision as i32,
            severity,
            ..Default::default()
        }
    }

    fn summary_of(period: &Period) -> String {
        summary(&Inputs { period, from: 0, to: 1, first_seq: 0, last_seq: 0, policy_changes: &[] })
    }

    #[test]
    fn the_streamed_summary_keeps_the_highest_severities_earliest_first() {
        let mut period = Period::default();
        for seq in 0..120 {
            let decision = if seq % 3 == 0 { pb::Decision::Deny } else { pb::Decision::Allow };
            period.add(&entry(seq, (seq % 10) as u32 + 1, decision));
        }
        let html = summary_of(&period);
        assert!(html.contains("Highest-severity entries (50 of 120)"), "{html}");
        // Severity 10 is seq 9, 19, …, 119 (12 entries), then 9s: seq 8, 18, …
        let first_rows: Vec<&str> = html.split("<tr><td>").skip(3).take(13).collect();
        let seqs: Vec<u64> =
            first_rows.iter().filter_map(|r| r.split("</td>").next()?.parse().ok()).collect();
        assert_eq!(seqs, [9, 19, 29, 39, 49, 59, 69, 79, 89, 99, 109, 119, 8], "{html}");
        assert!(html.contains("<td>agent-0</td><td>40</td><td>20</td><td>0</td>"), "{html}");
    }

    #[test]
    fn without_scores_the_summary_lists_the_first_denied_or_flagged() {
        let mut period = Period::default();
        for seq in 0..80 {
            period.add(&entry(seq, 0, pb::Decision::Deny));
        }
        let html = summary_of(&period);
        assert!(html.contains("Denies and flagged entries (50 of 80)"), "{html}");
        assert_eq!(period.len(), 80);
    }

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            super::escape(r#"<script>alert("x&y")</script> 'q'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; &#39;q&#39;"
        );
    }
}
