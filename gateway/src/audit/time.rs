//! Wall-clock timestamps for audit records: RFC 3339, UTC, millisecond precision
//! (`2026-11-22T10:15:30.123Z`), without a date crate.
//!
//! The calendar conversion is Howard Hinnant's `civil_from_days` / `days_from_civil`
//! (proleptic Gregorian calendar, valid for every `i64` day count that fits a year in `i64`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MS_PER_DAY: i64 = 86_400_000;

/// A point in time as milliseconds since the Unix epoch (negative before 1970).
///
/// Serializes as an RFC 3339 string in UTC with exactly three fractional digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    unix_millis: i64,
}

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }

    pub const fn from_unix_millis(unix_millis: i64) -> Timestamp {
        Timestamp { unix_millis }
    }

    pub const fn unix_millis(self) -> i64 {
        self.unix_millis
    }

    /// Truncates to whole milliseconds (towards the past, also before 1970).
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let unix_millis = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => {
                let d = e.duration();
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                // -1.5 ms is in millisecond -2, not -1.
                if d.subsec_nanos() % 1_000_000 != 0 {
                    -ms.saturating_add(1)
                } else {
                    -ms
                }
            }
        };
        Timestamp { unix_millis }
    }

    pub fn to_system_time(self) -> SystemTime {
        let ms = self.unix_millis;
        if ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(ms as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
        }
    }
}

/// `(year, month 1..=12, day 1..=31)` of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe as i64 + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u64; // [0, 399]
    let mp = u64::from(if month > 2 { month - 3 } else { month + 9 }); // [0, 11]
    let doy = (153 * mp + 2) / 5 + u64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe as i64 - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.unix_millis.div_euclid(MS_PER_DAY);
        let ms_of_day = self.unix_millis.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = ms_of_day / 1000;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            ms_of_day % 1000
        )
    }
}

/// The error of parsing a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseTimestampError;

impl fmt::Display for ParseTimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected an RFC 3339 UTC time like 2026-11-22T10:15:30.123Z")
    }
}

impl std::error::Error for ParseTimestampError {}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fff…]Z` (UTC only; fractions beyond milliseconds are
    /// truncated), the format [`Display`](fmt::Display) writes.
    fn from_str(s: &str) -> Result<Timestamp, ParseTimestampError> {
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<u32, ParseTimestampError> {
            let part = b.get(range).ok_or(ParseTimestampError)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(ParseTimestampError);
            }
            Ok(part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
        };
        let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
        if b.len() < 20
            || !sep(4, b"-")
            || !sep(7, b"-")
            || !sep(10, b"Tt")
            || !sep(13, b":")
            || !sep(16, b":")
        {
            return Err(ParseTimestampError);
        }
        let (year, month, day) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(ParseTimestampError);
        }
        let rest = &b[19..];
        let (millis, zone) = match rest.first() {
            Some(b'.') => {
                let digits = rest[1..].iter().take_while(|d| d.is_ascii_digit()).count();
                if digits == 0 {
                    return Err(ParseTimestampError);
                }
                let ms = rest[1..1 + digits.min(3)]
                    .iter()
                    .fold(0, |n, d| n * 10 + i64::from(d - b'0'));
                (
                    ms * 10i64.pow(3 - digits.min(3) as u32),
                    &rest[1 + digits..],
                )
            }
            _ => (0, rest),
        };
        if zone != b"Z" && zone != b"z" {
            return Err(ParseTimestampError);
        }
        let secs = i64::from(hour * 3600 + minute * 60 + second);
        Ok(Timestamp::from_unix_millis(
            days_from_civil(year, month, day) * MS_PER_DAY + secs * 1000 + millis,
        ))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Checked with `date -u -d @SECONDS +%Y-%m-%dT%H:%M:%S`.
    const KNOWN: &[(i64, &str)] = &[
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_234_567_890_000, "2009-02-13T23:31:30.000Z"),
        (1_700_000_000_123, "2023-11-14T22:13:20.123Z"),
        (1_709_251_199_999, "2024-02-29T23:59:59.999Z"),
        (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
    ];

    #[test]
    fn formats_known_timestamps() {
        for &(ms, text) in KNOWN {
            assert_eq!(Timestamp::from_unix_millis(ms).to_string(), text, "{ms}");
        }
    }

    #[test]
    fn parses_what_it_formats() {
        for &(ms, text) in KNOWN {
            assert_eq!(
                text.parse::<Timestamp>(),
                Ok(Timestamp::from_unix_millis(ms)),
                "{text}"
            );
        }
        assert_eq!(
            "2023-11-14T22:13:20Z"
                .parse::<Timestamp>()
                .unwrap()
                .unix_millis(),
            1_700_000_000_000
        );
        assert_eq!(
            "2023-11-14T22:13:20.5Z"
                .parse::<Timestamp>()
                .unwrap()
                .unix_millis(),
            1_700_000_000_500
        );
        assert_eq!(
            "2023-11-14T22:13:20.123456Z"
                .parse::<Timestamp>()
                .unwrap()
                .unix_millis(),
            1_700_000_000_123
        );
        for bad in [
            "",
            "2023-11-14 22:13:20.123Z",
            "2023-11-14T22:13:20.123",
            "2023-11-14T22:13:20.123+01:00",
            "2023-13-14T22:13:20.123Z",
            "2023-02-29T22:13:20.123Z",
            "2023-11-14T24:00:00.000Z",
            "2023-11-14T22:13:20.Z",
            "+023-11-14T22:13:20.000Z",
        ] {
            assert_eq!(bad.parse::<Timestamp>(), Err(ParseTimestampError), "{bad}");
        }
    }

    #[test]
    fn calendar_round_trips_day_by_day() {
        // Every day from 1600-01-01 to 2400-12-31 (leap-year rules of all three kinds).
        let (start, end) = (days_from_civil(1600, 1, 1), days_from_civil(2400, 12, 31));
        let mut expected = (1600, 1, 1);
        for day in start..=end {
            let civil = civil_from_days(day);
            assert_eq!(civil, expected, "day {day}");
            assert_eq!(days_from_civil(civil.0, civil.1, civil.2), day);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn system_time_conversion_truncates_towards_the_past() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_999);
        assert_eq!(
            Timestamp::from_system_time(t).unix_millis(),
            1_700_000_000_123
        );
        let t = UNIX_EPOCH - Duration::from_micros(1_500);
        assert_eq!(Timestamp::from_system_time(t).unix_millis(), -2);
        let t = UNIX_EPOCH - Duration::from_millis(2);
        assert_eq!(Timestamp::from_system_time(t).unix_millis(), -2);
        assert_eq!(Timestamp::from_unix_millis(-2).to_system_time(), t);
        let now = Timestamp::now();
        assert!(now.to_string().ends_with('Z') && now.unix_millis() > 1_600_000_000_000);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#""2023-11-14T22:13:20.123Z""#);
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
