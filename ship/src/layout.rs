//! Where shipped objects live in the bucket, and the names parsed back (docs/FLEET.md,
//! "Layout"). Every name says which entries or tree sizes it holds, so a listing is the
//! index: no object is ever rewritten to keep track of the others.
//!
//! ```text
//! PREFIX/entries/hostname=H/date=YYYY-MM-DD/LOG-FIRST-LAST.parquet   rows FIRST..=LAST
//! PREFIX/logs/LOG/leaves/START-END.bin.zst                            leaves START..END
//! PREFIX/logs/LOG/checkpoints/SIZE.note                               signed checkpoint
//! PREFIX/logs/LOG/consistency/OLD-NEW.bin                             proof OLD → NEW
//! ```
//!
//! LOG is the checkpoint origin (`host/ledgerd/id`) with `/` as `.`; H is its host part.
//! Numbers in `logs/` are zero-padded to 20 digits so listings come back in order.

use object_store::path::Path;

/// A log's name as it appears in object names: the origin with `/` as `.` and anything
/// outside `[A-Za-z0-9._-]` as `_`.
pub fn log_id(origin: &str) -> String {
    let id: String = origin
        .chars()
        .map(|c| match c {
            '/' => '.',
            c if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' => c,
            _ => '_',
        })
        .collect();
    // `.` and `..` are not object name segments: a leading dot becomes `_`.
    match id.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None => id,
    }
}

/// The host part of an origin (before the first `/`), as a partition value.
pub fn host_of(origin: &str) -> String {
    let host = origin.split('/').next().unwrap_or_default();
    let id = log_id(host);
    if id.is_empty() { "unknown".into() } else { id }
}

/// The object names of one log under one prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
    /// The checkpoint origin.
    pub origin: String,
    pub log: String,
    pub host: String,
}

fn join(prefix: &str, rest: &str) -> Path {
    if prefix.is_empty() { Path::from(rest) } else { Path::from(format!("{prefix}/{rest}")) }
}

impl Layout {
    /// `prefix` without leading or trailing `/`.
    pub fn new(prefix: &str, origin: &str) -> Layout {
        Layout {
            prefix: prefix.trim_matches('/').to_string(),
            origin: origin.to_string(),
            log: log_id(origin),
            host: host_of(origin),
        }
    }

    pub fn leaves_dir(&self) -> Path {
        join(&self.prefix, &format!("logs/{}/leaves", self.log))
    }
    pub fn checkpoints_dir(&self) -> Path {
        join(&self.prefix, &format!("logs/{}/checkpoints", self.log))
    }
    pub fn consistency_dir(&self) -> Path {
        join(&self.prefix, &format!("logs/{}/consistency", self.log))
    }
    /// Where this log's Parquet files are (with other logs of the same host).
    pub fn entries_dir(&self) -> Path {
        join(&self.prefix, &format!("entries/hostname={}", self.host))
    }

    pub fn leaves(&self, start: u64, end: u64) -> Path {
        join(&self.prefix, &format!("logs/{}/leaves/{start:020}-{end:020}.bin.zst", self.log))
    }
    pub fn checkpoint(&self, size: u64) -> Path {
        join(&self.prefix, &format!("logs/{}/checkpoints/{size:020}.note", self.log))
    }
    pub fn consistency(&self, old: u64, new: u64) -> Path {
        join(&self.prefix, &format!("logs/{}/consistency/{old:020}-{new:020}.bin", self.log))
    }
    /// The Parquet file of rows `first..=last`, all of UTC day `date` (`YYYY-MM-DD`).
    pub fn parquet(&self, date: &str, first: u64, last: u64) -> Path {
        join(
            &self.prefix,
            &format!("entries/hostname={}/date={date}/{}-{first}-{last}.parquet", self.host, self.log),
        )
    }

    /// `(start, end)` of a leaves object's name.
    pub fn parse_leaves(&self, path: &Path) -> Option<(u64, u64)> {
        let name = path.filename()?.strip_suffix(".bin.zst")?;
        pair(name)
    }
    /// The size of a checkpoint object's name.
    pub fn parse_checkpoint(&self, path: &Path) -> Option<u64> {
        path.filename()?.strip_suffix(".note")?.parse().ok()
    }
    /// `(old, new)` of a consistency proof's name.
    pub fn parse_consistency(&self, path: &Path) -> Option<(u64, u64)> {
        pair(path.filename()?.strip_suffix(".bin")?)
    }
    /// `(date, first, last)` of one of this log's Parquet files; `None` for other logs'.
    pub fn parse_parquet(&self, path: &Path) -> Option<(String, u64, u64)> {
        let mut parts = path.parts();
        let date_part = {
            // .../date=D/NAME: the second-to-last part.
            let all: Vec<_> = parts.by_ref().collect();
            let n = all.len();
            if n < 2 {
                return None;
            }
            all[n - 2].as_ref().strip_prefix("date=")?.to_string()
        };
        let name = path.filename()?.strip_suffix(".parquet")?;
        let rest = name.strip_prefix(&self.log)?.strip_prefix('-')?;
        let (first, last) = pair(rest)?;
        Some((date_part, first, last))
    }
}

fn pair(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The UTC day of a time in ns (days since 1970-01-01).
pub fn day_of(ns: i64) -> i64 {
    ns.div_euclid(86_400_000_000_000)
}

/// The `YYYY-MM-DD` text of a day from [`day_of`].
pub fn day_text(day: i64) -> String {
    jiff::Timestamp::from_second(day.saturating_mul(86_400))
        .map(|t| jiff::tz::TimeZone::UTC.to_datetime(t).date().to_string())
        .unwrap_or_else(|_| "invalid".into())
}

/// The UTC date (`YYYY-MM-DD`) of a time in ns.
pub fn date_of(ns: i64) -> String {
    day_text(day_of(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let l = Layout::new("/fleet/", "web-1/ledgerd/0a1b2c3d");
        assert_eq!(l.log, "web-1.ledgerd.0a1b2c3d");
        assert_eq!(l.host, "web-1");
        assert_eq!(l.parse_leaves(&l.leaves(5, 17)), Some((5, 17)));
        assert_eq!(l.parse_checkpoint(&l.checkpoint(17)), Some(17));
        assert_eq!(l.parse_consistency(&l.consistency(5, 17)), Some((5, 17)));
        let p = l.parquet("2026-12-03", 5, 16);
        assert_eq!(
            p.as_ref(),
            "fleet/entries/hostname=web-1/date=2026-12-03/web-1.ledgerd.0a1b2c3d-5-16.parquet"
        );
        assert_eq!(l.parse_parquet(&p), Some(("2026-12-03".into(), 5, 16)));
        // Another log of the same host is not this log's.
        let other = Layout::new("fleet", "web-1/ledgerd/ffffffff");
        assert_eq!(l.parse_parquet(&other.parquet("2026-12-03", 0, 1)), None);
    }

    #[test]
    fn hostile_origins_stay_one_path_segment() {
        let l = Layout::new("", "../../etc/passwd/x y");
        assert!(!l.log.contains('/'));
        assert_eq!(l.host, "_.");
        assert!(l.leaves(0, 1).as_ref().starts_with("logs/_"));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(1_764_806_399_999_999_999), "2025-12-03");
    }
}
