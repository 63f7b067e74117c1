//! RFC 3339 timestamps as Hatchet writes them, and Go's zero time.
//!
//! Hatchet (Go) writes `time.Time` with 0 to 9 fractional digits and any UTC offset, and writes
//! `0001-01-01T00:00:00Z` for "no value". The parser here is strict about the RFC 3339 grammar and
//! fast: it runs several times per message on the hot path, so it does no allocation and no
//! format-string interpretation.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeZone};
use serde::{de, Deserializer, Serializer};
use std::fmt;

/// A point in time with the offset it was written in (kept so that a run serializes back unchanged).
pub type Timestamp = DateTime<FixedOffset>;

/// Parses one RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|+HH:MM|-HH:MM)`.
///
/// `t`/`z` are accepted in lower case, as RFC 3339 allows; leap seconds (`:60`) are not, since
/// Go never writes them.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    match parse_rfc3339_prefix_with(text.as_bytes(), &mut MinuteCache::default())? {
        (ts, len) if len == text.len() => Some(ts),
        _ => None,
    }
}

/// The date, hour and minute last read, by their sixteen bytes (`YYYY-MM-DDTHH:MM`): the
/// timestamps of one document mostly share them, so they are checked and built once.
#[derive(Debug, Default, Clone, Copy)]
pub struct MinuteCache {
    last: Option<([u8; 16], NaiveDate, u32, u32)>,
}

/// The date, hour and minute of `head` (`YYYY-MM-DDTHH:MM`), checked: digits where they belong
/// (all twelve together), a real day, an hour and a minute in range.
fn minute_of(head: &[u8; 16]) -> Option<(NaiveDate, u32, u32)> {
    if head[4] != b'-' || head[7] != b'-' || !matches!(head[10], b'T' | b't') || head[13] != b':' {
        return None;
    }
    let d = |at: usize| u32::from(head[at].wrapping_sub(b'0'));
    let all = [
        d(0),
        d(1),
        d(2),
        d(3),
        d(5),
        d(6),
        d(8),
        d(9),
        d(11),
        d(12),
        d(14),
        d(15),
    ];
    if all.iter().fold(0, |worst, &digit| worst.max(digit)) > 9 {
        return None;
    }
    let pair = |at: usize| all[at] * 10 + all[at + 1];
    let year = pair(0) * 100 + pair(2);
    let (month, day, hour, minute) = (pair(4), pair(6), pair(8), pair(10));
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 {
        return None;
    }
    // From the calendar fields (table lookups), not from a count of days (divisions).
    Some((NaiveDate::from_ymd_opt(year as i32, month, day)?, hour, minute))
}

/// The date-time [`parse_rfc3339`] reads, at the start of `b`, and its length in bytes (what
/// follows it is the caller's to check). The date, hour and minute come from `cache` when they
/// are the last ones read; those it reads are left there.
pub fn parse_rfc3339_prefix_with(b: &[u8], cache: &mut MinuteCache) -> Option<(Timestamp, usize)> {
    let head: &[u8; 16] = b.get(..16)?.try_into().ok()?;
    let (date, hour, minute) = match cache.last {
        Some((key, date, hour, minute)) if key == *head => (date, hour, minute),
        _ => {
            let (date, hour, minute) = minute_of(head)?;
            cache.last = Some((*head, date, hour, minute));
            (date, hour, minute)
        }
    };
    let second = match b.get(16..19)? {
        [b':', tens @ b'0'..=b'5', units @ b'0'..=b'9'] => u32::from(tens - b'0') * 10 + u32::from(units - b'0'),
        _ => return None,
    };
    let mut pos = 19;
    let mut nanos = 0u32;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while let Some(&digit @ b'0'..=b'9') = b.get(pos) {
            nanos = nanos * 10 + u32::from(digit - b'0');
            pos += 1;
            if pos - start > 9 {
                return None;
            }
        }
        let count = pos - start;
        if count == 0 {
            return None;
        }
        nanos *= 10u32.pow(9 - count as u32);
    }
    let (offset_seconds, len) = match b.get(pos)? {
        b'Z' | b'z' => (0, pos + 1),
        sign @ (b'+' | b'-') if pos + 6 <= b.len() && b[pos + 3] == b':' => {
            let hours = digits(&b[pos + 1..pos + 3])?;
            let minutes = digits(&b[pos + 4..pos + 6])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = (hours * 3600 + minutes * 60) as i32;
            let signed = if *sign == b'-' { -magnitude } else { magnitude };
            (signed, pos + 6)
        }
        _ => return None,
    };
    let offset = FixedOffset::east_opt(offset_seconds)?;
    let local = NaiveDateTime::new(date, NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?);
    if offset_seconds == 0 {
        return Some((DateTime::from_naive_utc_and_offset(local, offset), len));
    }
    Some((offset.from_local_datetime(&local).single()?, len))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// How Go writes its zero time.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Go's zero time (and anything else in year 1) stands for "no value": Hatchet's own UI shows it as
/// empty, and so do we.
pub fn is_go_zero_time(ts: &Timestamp) -> bool {
    ts.year() == 1
}

/// Writes a timestamp back in RFC 3339, in the offset it was read with (`Z` for UTC).
pub fn format_rfc3339(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

struct TimestampVisitor;

impl<'de> de::Visitor<'de> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an RFC 3339 date-time")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        parse_rfc3339(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Serde adapter for a required timestamp (`metadata.createdAt`, `metadata.updatedAt`).
pub mod required {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_str(TimestampVisitor)
    }

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(ts))
    }
}

/// Serde adapter for an optional timestamp: `null`, absent and Go's zero time are all `None`.
pub mod optional {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        struct OptionalVisitor;
        impl<'de> de::Visitor<'de> for OptionalVisitor {
            type Value = Option<Timestamp>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 date-time or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(self)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                // Go's zero time is in most QUEUED and RUNNING updates: skip the date arithmetic.
                if v == GO_ZERO_TIME {
                    return Ok(None);
                }
                let ts = TimestampVisitor.visit_str(v)?;
                Ok((!is_go_zero_time(&ts)).then_some(ts))
            }
        }
        d.deserialize_option(OptionalVisitor)
    }

    pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match ts {
            Some(ts) => s.serialize_str(&format_rfc3339(ts)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike, Utc};

    /// Read one after another with one cache, timestamps read as each alone: those that share the
    /// cached date and minute but differ after it (or are invalid after it) too.
    #[test]
    fn the_minute_cache_reads_as_a_fresh_parse() {
        let texts = [
            "2026-08-22T14:03:11Z",
            "2026-08-22T14:03:59.999999999+05:30",
            "2026-08-22T14:03:60Z",
            "2026-08-22T14:03:1Z",
            "2026-08-22T14:03",
            "2026-08-22T14:03:11.Z",
            "2026-08-22t14:03:11z",
            "2026-08-22T14:04:00-23:59",
            "2026-02-29T14:04:00Z",
            "2026-02-29T14:04:01Z",
            "2028-02-29T00:00:00Z",
            "2026-08-22T14:03:11+24:00",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
        ];
        let mut cache = MinuteCache::default();
        for text in texts.iter().chain(texts.iter().rev()) {
            let cached = parse_rfc3339_prefix_with(text.as_bytes(), &mut cache).filter(|(_, len)| *len == text.len());
            assert_eq!(cached.map(|(ts, _)| ts), parse_rfc3339(text), "{text}");
            assert_eq!(
                parse_rfc3339(text),
                DateTime::parse_from_rfc3339(text)
                    .ok()
                    .filter(|ts| ts.second() < 60 && ts.nanosecond() < 1_000_000_000),
                "{text}"
            );
        }
    }

    #[test]
    fn parses_every_fraction_length_and_offset() {
        let base = Utc.with_ymd_and_hms(2026, 8, 22, 14, 3, 11).unwrap();
        for (text, nanos) in [
            ("2026-08-22T14:03:11Z", 0),
            ("2026-08-22T14:03:11.5Z", 500_000_000),
            ("2026-08-22T14:03:11.501377Z", 501_377_000),
            ("2026-08-22T14:03:11.123456789Z", 123_456_789),
            ("2026-08-22t14:03:11.1z", 100_000_000),
        ] {
            let ts = parse_rfc3339(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(ts.timestamp(), base.timestamp(), "{text}");
            assert_eq!(ts.nanosecond(), nanos, "{text}");
        }
        let offset = parse_rfc3339("2026-08-22T09:03:11.25-05:00").unwrap();
        assert_eq!(offset.timestamp(), base.timestamp());
        assert_eq!(offset.offset().local_minus_utc(), -5 * 3600);
        let east = parse_rfc3339("2026-08-22T19:33:11+05:30").unwrap();
        assert_eq!(east.timestamp(), base.timestamp());
    }

    #[test]
    fn rejects_what_rfc3339_does_not_allow() {
        for text in [
            "",
            "2026-08-22",
            "2026-08-22 14:03:11Z",
            "2026-08-22T14:03:11",
            "2026-08-22T14:03:11.Z",
            "2026-08-22T14:03:11.1234567890Z",
            "2026-13-22T14:03:11Z",
            "2026-02-30T14:03:11Z",
            "2026-08-22T24:03:11Z",
            "2026-08-22T14:03:60Z",
            "2026-08-22T14:03:11+0500",
            "2026-08-22T14:03:11+24:00",
            "2026-08-22T14:03:11Zjunk",
            "２026-08-22T14:03:11Z",
            "1787407391482",
        ] {
            assert!(parse_rfc3339(text).is_none(), "{text:?} should be refused");
        }
    }

    #[test]
    fn agrees_with_chrono_on_many_dates() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let text = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}{}",
                next(10_000),
                1 + next(12),
                1 + next(31),
                next(24),
                next(60),
                next(60),
                next(1_000_000),
                ["Z", "+05:30", "-05:00", "+14:00", "-23:59"][next(5) as usize]
            );
            let ours = parse_rfc3339(&text);
            let theirs = DateTime::parse_from_rfc3339(&text).ok();
            assert_eq!(ours, theirs, "{text}");
            if let (Some(a), Some(b)) = (ours, theirs) {
                assert_eq!(a.offset(), b.offset(), "{text}");
            }
        }
    }

    #[test]
    fn go_zero_time_is_absent() {
        let zero = parse_rfc3339("0001-01-01T00:00:00Z").unwrap();
        assert!(is_go_zero_time(&zero));
        assert!(!is_go_zero_time(&parse_rfc3339("1970-01-01T00:00:00Z").unwrap()));
    }

    #[test]
    fn formats_back_in_the_original_offset() {
        for text in [
            "2026-08-22T14:03:11.501377Z",
            "2026-08-22T14:19:00.010-05:00",
            "2026-08-22T14:03:11Z",
        ] {
            assert_eq!(format_rfc3339(&parse_rfc3339(text).unwrap()), text);
        }
    }
}
