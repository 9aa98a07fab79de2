//! Time in queries: the evaluation context, time literals, periods and calendar functions.
//!
//! Instants are nanoseconds since the Unix epoch (UTC) in an `i64`; arithmetic saturates
//! rather than overflows, so a literal far in the past or future simply means "always".

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

const NS_PER_SEC: i64 = 1_000_000_000;
const NS_PER_DAY: i64 = 86_400 * NS_PER_SEC;

/// What a query is evaluated against: the current time, captured once, and the time zone
/// that `hour()`, `weekday()`, `date()`, `bin()`, date literals and `during` use.
///
/// Tests pass a fixed `now`; the daemon captures it when a query starts, so `last 24h` and
/// `7d ago` mean the same instant for the whole scan.
///
/// A named zone comes from the caller, who looks it up in the system database
/// (`/usr/share/zoneinfo`) with `jiff::tz::TimeZone::get("Europe/Berlin")`: this crate
/// does no I/O of its own.
#[derive(Debug, Clone)]
pub struct Context {
    now: i64,
    tz: TimeZone,
}

impl Context {
    /// A context with `now` and time zone `tz`.
    pub fn new(now: Timestamp, tz: TimeZone) -> Context {
        Context { now: timestamp_ns(now), tz }
    }

    /// A context in UTC.
    pub fn utc(now: Timestamp) -> Context {
        Context::new(now, TimeZone::UTC)
    }

    /// `now` in nanoseconds since the Unix epoch.
    pub fn now_ns(&self) -> i64 {
        self.now
    }

    /// The time zone.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }
}

/// A duration written in a query: a number and one unit of `s m h d w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Duration {
    pub(crate) ns: i64,
}

/// Why a token is not a duration.
pub(crate) enum DurationError {
    Malformed,
    TooLarge,
}

impl Duration {
    /// Reads `24h`, `7d`, `90s`; the whole token must be a duration.
    pub(crate) fn parse(token: &str) -> Result<Duration, DurationError> {
        let digits = token.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = token.split_at(digits);
        let unit_ns = match unit {
            "s" => NS_PER_SEC,
            "m" => 60 * NS_PER_SEC,
            "h" => 3600 * NS_PER_SEC,
            "d" => NS_PER_DAY,
            "w" => 7 * NS_PER_DAY,
            _ => return Err(DurationError::Malformed),
        };
        if number.is_empty() {
            return Err(DurationError::Malformed);
        }
        let n: i64 = number.parse().map_err(|_| DurationError::TooLarge)?;
        // `0s` is a duration, as the grammar says (`last 0s` is the instant `now`); `bin`
        // refuses a width of 0 where it is parsed.
        let ns = n.checked_mul(unit_ns).ok_or(DurationError::TooLarge)?;
        Ok(Duration { ns })
    }
}

/// A time literal, resolved against a [`Context`] when a query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeLit {
    /// An RFC 3339 instant with an offset.
    Abs(i64),
    /// A date or a date-time without an offset: local time in the context's zone.
    Civil(DateTime),
    Now,
    /// `7d ago`.
    Ago(Duration),
}

impl TimeLit {
    pub(crate) fn resolve(self, ctx: &Context) -> i64 {
        match self {
            TimeLit::Abs(ns) => ns,
            TimeLit::Civil(dt) => civil_ns(dt, &ctx.tz),
            TimeLit::Now => ctx.now,
            TimeLit::Ago(d) => ctx.now.saturating_sub(d.ns),
        }
    }

    /// Reads a whole token as an instant: `now`, `2026-03-15`, `2026-03-15T09:30:00`,
    /// `2026-03-15T09:30:00Z`, `2026-03-15T09:30:00.5+02:00`. (`7d ago` is two tokens and
    /// is handled by the parser.)
    pub(crate) fn parse(token: &str) -> Option<TimeLit> {
        if token == "now" {
            return Some(TimeLit::Now);
        }
        if !looks_like_date(token) {
            return None;
        }
        if token.len() == 10 {
            return token
                .parse::<Date>()
                .ok()
                .map(|d| TimeLit::Civil(d.to_datetime(jiff::civil::Time::midnight())));
        }
        let has_offset = {
            let time_part = token.get(10..).unwrap_or("");
            time_part.ends_with(['Z', 'z']) || time_part.contains(['+', '-'])
        };
        if has_offset {
            token.parse::<Timestamp>().ok().map(|ts| TimeLit::Abs(timestamp_ns(ts)))
        } else {
            token.parse::<DateTime>().ok().map(TimeLit::Civil)
        }
    }

    /// Reads a string literal's content as an instant, also accepting `7d ago`.
    pub(crate) fn parse_text(text: &str) -> Option<TimeLit> {
        let text = text.trim();
        if let Some(d) = text.strip_suffix("ago") {
            return Duration::parse(d.trim_end()).ok().map(TimeLit::Ago);
        }
        TimeLit::parse(text)
    }
}

/// Whether a token starts like a date (`dddd-dd`), so a bad one is reported as a bad time.
pub(crate) fn looks_like_date(token: &str) -> bool {
    let b = token.as_bytes();
    b.len() >= 7 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5].is_ascii_digit()
}

/// A calendar period after `during`, in the context's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Year(i16),
    Quarter(i16, i8),
    Month(i16, i8),
    Day(Date),
}

impl Period {
    /// Reads `2026`, `2026-Q1`, `2026-03` or `2026-03-15`.
    pub(crate) fn parse(token: &str) -> Option<Period> {
        let b = token.as_bytes();
        if b.len() < 4 || !b[..4].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let year: i16 = token.get(..4)?.parse().ok()?;
        let rest = token.get(4..)?;
        if rest.is_empty() {
            return Some(Period::Year(year));
        }
        let rest = rest.strip_prefix('-')?;
        if let Some(q) = rest.strip_prefix(['Q', 'q']) {
            return match q {
                "1" | "2" | "3" | "4" => Some(Period::Quarter(year, q.parse().ok()?)),
                _ => None,
            };
        }
        if rest.len() == 2 && rest.bytes().all(|c| c.is_ascii_digit()) {
            let month: i8 = rest.parse().ok()?;
            return (1..=12).contains(&month).then_some(Period::Month(year, month));
        }
        if rest.len() == 5 {
            return token.parse::<Date>().ok().map(Period::Day);
        }
        None
    }

    /// The half-open range `[start, end)` of the period in `tz`, in nanoseconds.
    pub(crate) fn range(self, tz: &TimeZone) -> (i64, i64) {
        let (start, end) = match self {
            Period::Year(y) => (ymd(y, 1, 1), ymd(y.saturating_add(1), 1, 1)),
            Period::Quarter(y, q) => {
                let m = (q - 1) * 3 + 1;
                let end = if q == 4 { ymd(y.saturating_add(1), 1, 1) } else { ymd(y, m + 3, 1) };
                (ymd(y, m, 1), end)
            }
            Period::Month(y, m) => {
                let end = if m == 12 { ymd(y.saturating_add(1), 1, 1) } else { ymd(y, m + 1, 1) };
                (ymd(y, m, 1), end)
            }
            Period::Day(d) => (Some(d), d.tomorrow().ok()),
        };
        let at = |d: Option<Date>, fallback: i64| {
            d.map_or(fallback, |d| civil_ns(d.to_datetime(jiff::civil::Time::midnight()), tz))
        };
        (at(start, i64::MIN), at(end, i64::MAX))
    }
}

fn ymd(y: i16, m: i8, d: i8) -> Option<Date> {
    Date::new(y, m, d).ok()
}

/// Nanoseconds of a timestamp, saturating outside the `i64` range (years 1678..2262).
pub(crate) fn timestamp_ns(ts: Timestamp) -> i64 {
    let ns = ts.as_nanosecond();
    i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
}

/// The timestamp of nanoseconds since the epoch (every `i64` is in jiff's range).
pub(crate) fn ns_timestamp(ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A local date-time in `tz` as nanoseconds; a time skipped or repeated by a DST change
/// resolves as RFC 5545 says ("compatible": later for a gap, earlier for a fold).
pub(crate) fn civil_ns(dt: DateTime, tz: &TimeZone) -> i64 {
    match tz.to_ambiguous_timestamp(dt).compatible() {
        Ok(ts) => timestamp_ns(ts),
        Err(_) => {
            if dt.year() < 1970 {
                i64::MIN
            } else {
                i64::MAX
            }
        }
    }
}

/// `hour(time)`: the hour of the day, 0..=23, in `tz`.
pub(crate) fn hour(ns: i64, tz: &TimeZone) -> i64 {
    i64::from(tz.to_datetime(ns_timestamp(ns)).hour())
}

/// `weekday(time)`: 0 (Monday) ..= 6 (Sunday), in `tz`.
pub(crate) fn weekday(ns: i64, tz: &TimeZone) -> u8 {
    let d = tz.to_datetime(ns_timestamp(ns)).weekday().to_monday_zero_offset();
    u8::try_from(d).unwrap_or(0)
}

/// `date(time)`: the local calendar date as `YYYY-MM-DD`, in `tz`.
pub(crate) fn date(ns: i64, tz: &TimeZone) -> String {
    tz.to_datetime(ns_timestamp(ns)).date().to_string()
}

/// `bin(time, width)`: the start of the bucket holding `ns`.
///
/// Buckets are laid out on local wall-clock time in `tz`, counted from Monday 1970-01-05
/// 00:00, so `1d` buckets start at local midnight and `1w` buckets on Monday, also across
/// daylight-saving changes.
pub(crate) fn bin(ns: i64, width: Duration, tz: &TimeZone) -> i64 {
    const ANCHOR_DAYS: i64 = 4; // 1970-01-05 is four days after the epoch.
    let w = i128::from(width.ns.max(1));
    if tz == &TimeZone::UTC {
        let anchored = i128::from(ns) - i128::from(ANCHOR_DAYS * NS_PER_DAY);
        let floored = anchored.div_euclid(w) * w + i128::from(ANCHOR_DAYS * NS_PER_DAY);
        return i64::try_from(floored).unwrap_or(ns);
    }
    let dt = tz.to_datetime(ns_timestamp(ns));
    let days = days_from_civil(i64::from(dt.year()), i64::from(dt.month()), i64::from(dt.day()));
    let in_day = ((i64::from(dt.hour()) * 60 + i64::from(dt.minute())) * 60 + i64::from(dt.second()))
        * NS_PER_SEC
        + i64::from(dt.subsec_nanosecond());
    let wall = i128::from(days - ANCHOR_DAYS) * i128::from(NS_PER_DAY) + i128::from(in_day);
    let floored = wall.div_euclid(w) * w;
    let day = i64::try_from(floored.div_euclid(i128::from(NS_PER_DAY))).unwrap_or(0) + ANCHOR_DAYS;
    let rem = i64::try_from(floored.rem_euclid(i128::from(NS_PER_DAY))).unwrap_or(0);
    let (y, m, d) = civil_from_days(day);
    let (Ok(y), Ok(m), Ok(d)) = (i16::try_from(y), i8::try_from(m), i8::try_from(d)) else {
        return ns;
    };
    let secs = rem / NS_PER_SEC;
    let Ok(local) = DateTime::new(
        y,
        m,
        d,
        i8::try_from(secs / 3600).unwrap_or(0),
        i8::try_from(secs / 60 % 60).unwrap_or(0),
        i8::try_from(secs % 60).unwrap_or(0),
        i32::try_from(rem % NS_PER_SEC).unwrap_or(0),
    ) else {
        return ns;
    };
    civil_ns(local, tz)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An instant as RFC 3339 in `tz`: `Z` in UTC, the local offset elsewhere; fractional
/// seconds only when there are any.
pub(crate) fn write_time(out: &mut String, ns: i64, tz: &TimeZone) -> std::fmt::Result {
    use std::fmt::Write as _;
    let ts = ns_timestamp(ns);
    if tz == &TimeZone::UTC {
        write!(out, "{ts}")
    } else {
        write!(out, "{}", ts.display_with_offset(tz.to_offset(ts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        for z in [-800_000, -1, 0, 1, 4, 20_000, 800_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 5), 4);
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("24h").ok(), Some(Duration { ns: 24 * 3600 * NS_PER_SEC }));
        assert!(Duration::parse("24hours").is_err());
        assert!(Duration::parse("h").is_err());
        assert_eq!(Duration::parse("0s").ok(), Some(Duration { ns: 0 }));
        assert!(matches!(Duration::parse("99999999999w"), Err(DurationError::TooLarge)));
    }
}
