//! UTC wall-clock time as unix seconds, and the two text forms the wire and the state files use.
//!
//! Owns: `now()`, ISO-8601 (`2026-03-09T14:30:00Z`, used for `paired`, `received`, hook
//! `timestamp`) and OpenSSL `notAfter` text (`Jun  7 16:28:00 2028 GMT`, used for the ping
//! `expiry` and the registry `expiry`).
//!
//! Civil-date arithmetic is the `time` crate's (already in the tree through x509-parser);
//! no time zones, no leap seconds. Invariant: every formatter is the exact inverse of its parser for any second
//! in years 0000..=9999 (`parse(format(t)) == Some(t)`); parsers refuse anything else.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// English month abbreviations as OpenSSL prints them (`%b` in the C locale).
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Current time as unix seconds (UTC). A clock before 1970 reads as a negative value.
pub fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), e.g. `2026-03-09T14:30:00Z`.
pub fn iso8601(secs: i64) -> String {
    let c = Civil::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (20 bytes, UTC) into unix seconds.
///
/// Refuses other lengths, other separators, fractional seconds, offsets and out-of-range
/// fields (month 13, February 30, hour 24, second 60).
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let c = Civil {
        year: digits(&b[0..4])?,
        month: digits(&b[5..7])?,
        day: digits(&b[8..10])?,
        hour: digits(&b[11..13])?,
        minute: digits(&b[14..16])?,
        second: digits(&b[17..19])?,
    };
    c.to_unix()
}

/// Formats unix seconds as OpenSSL prints `notAfter`: `Jun  7 16:28:00 2028 GMT`
/// (`%b %e %H:%M:%S %Y GMT`: the day is space-padded to width 2).
pub fn openssl_date(secs: i64) -> String {
    let c = Civil::from_unix(secs);
    // month is 1..=12 by construction of Civil::from_unix.
    let mon = MONTHS[(c.month - 1) as usize];
    format!(
        "{} {:>2} {:02}:{:02}:{:02} {} GMT",
        mon, c.day, c.hour, c.minute, c.second, c.year
    )
}

/// Parses OpenSSL date text `Mon DD HH:MM:SS YYYY GMT` into unix seconds.
///
/// Tolerates one or more spaces between fields (so both `Jun  7` and `Jun 7`), a 1- or
/// 2-digit day and surrounding whitespace; the month is case-sensitive as OpenSSL writes it,
/// and the zone must be `GMT`.
pub fn parse_openssl_date(s: &str) -> Option<i64> {
    let mut it = s.split_ascii_whitespace();
    let (mon, day, hms, year, zone) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || zone != "GMT" {
        return None;
    }
    let month = MONTHS.iter().position(|m| *m == mon)? as i64 + 1;
    if day.is_empty() || day.len() > 2 || year.len() != 4 {
        return None;
    }
    let t = hms.as_bytes();
    if t.len() != 8 || t[2] != b':' || t[5] != b':' {
        return None;
    }
    let c = Civil {
        year: digits(year.as_bytes())?,
        month,
        day: digits(day.as_bytes())?,
        hour: digits(&t[0..2])?,
        minute: digits(&t[3..5])?,
        second: digits(&t[6..8])?,
    };
    c.to_unix()
}

/// A broken-down UTC time. Fields are unchecked until `to_unix`.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

impl Civil {
    /// A time outside the years -9999..=9999 is clamped to the nearest end.
    fn from_unix(secs: i64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(if secs < 0 {
            PrimitiveDateTime::MIN.assume_utc()
        } else {
            PrimitiveDateTime::MAX.assume_utc()
        });
        Civil {
            year: i64::from(t.year()),
            month: i64::from(u8::from(t.month())),
            day: i64::from(t.day()),
            hour: i64::from(t.hour()),
            minute: i64::from(t.minute()),
            second: i64::from(t.second()),
        }
    }

    /// Unix seconds, or `None` when a field is out of range.
    fn to_unix(&self) -> Option<i64> {
        let narrow = |v: i64| u8::try_from(v).ok();
        let month = Month::try_from(narrow(self.month)?).ok()?;
        let date =
            Date::from_calendar_date(i32::try_from(self.year).ok()?, month, narrow(self.day)?)
                .ok()?;
        let time = Time::from_hms(
            narrow(self.hour)?,
            narrow(self.minute)?,
            narrow(self.second)?,
        )
        .ok()?;
        Some(
            PrimitiveDateTime::new(date, time)
                .assume_utc()
                .unix_timestamp(),
        )
    }
}

/// Parses 1+ ASCII digits (at most 4 here, so no overflow) as a non-negative integer.
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_SECS: i64 = 86_400;

    #[test]
    fn iso8601_known_values() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_773_066_600, "2026-03-09T14:30:00Z"),
            (2_147_483_647, "2038-01-19T03:14:07Z"),
            (2_147_483_648, "2038-01-19T03:14:08Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for &(secs, text) in cases {
            assert_eq!(iso8601(secs), text, "format {secs}");
            assert_eq!(parse_iso8601(text), Some(secs), "parse {text}");
        }
    }

    #[test]
    fn iso8601_refuses_malformed_and_out_of_range() {
        for bad in [
            "",
            "2026-03-09 14:30:00Z",
            "2026-03-09T14:30:00",
            "2026-03-09T14:30:00+00:00",
            "2026-03-09T14:30:00.5Z",
            "2026-13-09T14:30:00Z",
            "2026-00-09T14:30:00Z",
            "2026-02-29T00:00:00Z", // not a leap year
            "1900-02-29T00:00:00Z", // century, not leap
            "2026-04-31T00:00:00Z",
            "2026-03-09T24:00:00Z",
            "2026-03-09T14:60:00Z",
            "2026-03-09T14:30:60Z",
            "2026-3-09T14:30:00Z",
            "+026-03-09T14:30:00Z",
            "2026-03-09T1a:30:00Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
        assert!(parse_iso8601("2000-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn openssl_date_pads_day_and_round_trips() {
        let cases: &[(i64, &str)] = &[
            (0, "Jan  1 00:00:00 1970 GMT"),
            (1_844_008_080, "Jun  7 16:28:00 2028 GMT"),
            (1_709_164_800, "Feb 29 00:00:00 2024 GMT"),
            (2_147_483_647, "Jan 19 03:14:07 2038 GMT"),
            (4_133_980_799, "Dec 31 23:59:59 2100 GMT"),
        ];
        for &(secs, text) in cases {
            assert_eq!(openssl_date(secs), text, "format {secs}");
            assert_eq!(parse_openssl_date(text), Some(secs), "parse {text}");
        }
    }

    #[test]
    fn openssl_date_parse_tolerates_spacing() {
        let want = Some(1_844_008_080);
        assert_eq!(parse_openssl_date("Jun 7 16:28:00 2028 GMT"), want);
        assert_eq!(parse_openssl_date("Jun 07 16:28:00 2028 GMT"), want);
        assert_eq!(parse_openssl_date(" Jun  7 16:28:00 2028 GMT\n"), want);
        for bad in [
            "",
            "Jun  7 16:28:00 2028",
            "Jun  7 16:28:00 2028 UTC",
            "jun  7 16:28:00 2028 GMT",
            "Jun 31 16:28:00 2028 GMT",
            "Jun 123 16:28:00 2028 GMT",
            "Jun  7 16:28 2028 GMT",
            "Jun  7 16:28:00 28 GMT",
            "Jun  7 16:28:00 2028 GMT extra",
        ] {
            assert_eq!(parse_openssl_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_day_round_trips_through_both_forms() {
        // Four centuries around the epoch cover every leap-year rule.
        let mut t = -(200 * 366 * DAY_SECS);
        while t < 200 * 366 * DAY_SECS {
            let s = t + 3723; // 01:02:03 into the day
            assert_eq!(parse_iso8601(&iso8601(s)), Some(s));
            if s >= 0 {
                assert_eq!(parse_openssl_date(&openssl_date(s)), Some(s));
            }
            t += DAY_SECS;
        }
    }

    #[test]
    fn now_is_after_2025() {
        assert!(now() > 1_735_689_600);
    }
}
