//! Calendar dates as plain day numbers.
//!
//! The generator formats and compares millions of dates per second, so a date is just the number
//! of days since 1970-01-01 (proleptic Gregorian), converted with Howard Hinnant's well-known
//! `days_from_civil` / `civil_from_days` algorithms. No time zones: every date in the emulator is
//! an account-local calendar date, exactly as the platforms report them.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A calendar date, as days since 1970-01-01.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

impl Day {
    /// The date for a year, month (1–12) and day of month, if it exists.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Day> {
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || !(1..=9999).contains(&y) {
            return None;
        }
        let y = i64::from(y) - i64::from(m <= 2);
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let mp = i64::from((m + 9) % 12);
        let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        i32::try_from(era * 146_097 + doe - 719_468).ok().map(Day)
    }

    /// Year, month (1–12) and day of month.
    pub fn ymd(self) -> (i32, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        // The ranges above are guaranteed by the algorithm; the casts cannot truncate.
        (y as i32, m as u32, d as u32)
    }

    /// Parses `YYYY-MM-DD` strictly (the format every platform uses in requests).
    pub fn parse(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let y = digits(&b[0..4])?;
        let m = digits(&b[5..7])?;
        let d = digits(&b[8..10])?;
        Day::from_ymd(i32::try_from(y).ok()?, m, d)
    }

    /// Parses GA4's compact `YYYYMMDD`.
    pub fn parse_compact(s: &str) -> Option<Day> {
        let b = s.as_bytes();
        if b.len() != 8 {
            return None;
        }
        Day::from_ymd(
            i32::try_from(digits(&b[0..4])?).ok()?,
            digits(&b[4..6])?,
            digits(&b[6..8])?,
        )
    }

    /// The current UTC date of the machine.
    pub fn today_utc() -> Day {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Day(i32::try_from(secs / 86_400).unwrap_or(0))
    }

    /// Day of week, 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
    pub fn weekday(self) -> u32 {
        (self.0 + 3).rem_euclid(7).unsigned_abs()
    }

    /// The date `n` days later (earlier when negative).
    pub fn plus(self, n: i32) -> Day {
        Day(self.0.saturating_add(n))
    }

    /// Whole days from `earlier` to `self`.
    pub fn since(self, earlier: Day) -> i32 {
        self.0 - earlier.0
    }

    /// First day of this date's month.
    pub fn month_start(self) -> Day {
        let (y, m, _) = self.ymd();
        Day::from_ymd(y, m, 1).unwrap_or(self)
    }

    /// Appends `YYYY-MM-DD` to a buffer without allocating.
    pub fn write_iso(self, out: &mut Vec<u8>) {
        let (y, m, d) = self.ymd();
        push_padded(out, y.unsigned_abs(), 4);
        out.push(b'-');
        push_padded(out, m, 2);
        out.push(b'-');
        push_padded(out, d, 2);
    }

    /// Appends GA4's `YYYYMMDD`.
    pub fn write_compact(self, out: &mut Vec<u8>) {
        let (y, m, d) = self.ymd();
        push_padded(out, y.unsigned_abs(), 4);
        push_padded(out, m, 2);
        push_padded(out, d, 2);
    }

    /// `YYYY-MM-DD`.
    pub fn iso(self) -> String {
        let mut v = Vec::with_capacity(10);
        self.write_iso(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    /// `YYYYMMDD`.
    pub fn compact(self) -> String {
        let mut v = Vec::with_capacity(8);
        self.write_compact(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    /// Inclusive iteration from `self` to `last`.
    pub fn through(self, last: Day) -> impl Iterator<Item = Day> {
        (self.0..=last.0).map(Day)
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn push_padded(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut tmp = [b'0'; 10];
    let mut n = v;
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    for _ in len..width {
        out.push(b'0');
    }
    out.extend_from_slice(&tmp[i..]);
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso())
    }
}

impl Serialize for Day {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.iso())
    }
}

impl<'de> Deserialize<'de> for Day {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Day::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid date `{s}`, expected YYYY-MM-DD"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        assert_eq!(Day::from_ymd(1970, 1, 1), Some(Day(0)));
        assert_eq!(Day::from_ymd(2000, 3, 1), Some(Day(11_017)));
        assert_eq!(
            Day::parse("2024-02-29").map(|d| d.iso()),
            Some("2024-02-29".to_string())
        );
        assert_eq!(Day::parse("2023-02-29"), None);
        assert_eq!(Day::parse("2024-13-01"), None);
        assert_eq!(Day::parse("2024-1-01"), None);
        // 2024-06-03 was a Monday.
        assert_eq!(Day::parse("2024-06-03").map(Day::weekday), Some(0));
        assert_eq!(Day::parse_compact("20240603"), Day::parse("2024-06-03"));
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let start = Day::from_ymd(1900, 1, 1).map(|d| d.0).unwrap_or(0);
        let end = Day::from_ymd(2300, 1, 1).map(|d| d.0).unwrap_or(0);
        let mut prev = None;
        for n in start..end {
            let day = Day(n);
            let (y, m, d) = day.ymd();
            assert_eq!(Day::from_ymd(y, m, d), Some(day));
            assert_eq!(Day::parse(&day.iso()), Some(day));
            if let Some(p) = prev {
                assert!(day > p);
            }
            prev = Some(day);
        }
    }
}
