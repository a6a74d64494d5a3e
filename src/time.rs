//! Packet time. The core never reads a clock: every timestamp is the capture
//! time of the packet that caused it, so a replayed capture is deterministic.

use std::fmt;

/// Microseconds since the Unix epoch, as read from the capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_secs_micros(secs: i64, micros: i64) -> Self {
        Timestamp(secs * 1_000_000 + micros)
    }
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms * 1000)
    }
    pub fn micros(self) -> i64 {
        self.0
    }
    pub fn millis(self) -> i64 {
        self.0.div_euclid(1000)
    }
    pub fn add_micros(self, us: i64) -> Self {
        Timestamp(self.0 + us)
    }
    /// This time plus `d` (microsecond precision).
    #[allow(clippy::should_implement_trait)] // by value, with a Duration: no Add impl wanted
    pub fn add(self, d: std::time::Duration) -> Self {
        Timestamp(self.0 + d.as_micros() as i64)
    }
    /// Microseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// RFC 3339 with millisecond precision at a fixed UTC offset, e.g.
    /// `2026-11-21T09:30:00.000+09:00`. Written by hand because it is all
    /// the calendar arithmetic the product needs (fixed offsets, no zones).
    pub fn rfc3339(self, offset_secs: i32) -> String {
        let local = self.0 + offset_secs as i64 * 1_000_000;
        let (date, secs_of_day, millis) = split(local);
        let (y, m, d) = civil_from_days(date);
        let sign = if offset_secs < 0 { '-' } else { '+' };
        let off = offset_secs.unsigned_abs();
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}{sign}{:02}:{:02}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60,
            off / 3600,
            off / 60 % 60
        )
    }

    /// Compact local date and time for file names: (`20261121`, `20261121T093000`).
    pub fn stem_parts(self, offset_secs: i32) -> (String, String) {
        let local = self.0 + offset_secs as i64 * 1_000_000;
        let (date, sod, _) = split(local);
        let (y, m, d) = civil_from_days(date);
        let day = format!("{y:04}{m:02}{d:02}");
        let full = format!("{day}T{:02}{:02}{:02}", sod / 3600, sod / 60 % 60, sod % 60);
        (day, full)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339(0))
    }
}

fn split(us: i64) -> (i64, i64, i64) {
    let secs = us.div_euclid(1_000_000);
    let millis = us.rem_euclid(1_000_000) / 1000;
    (secs.div_euclid(86_400), secs.rem_euclid(86_400), millis)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses `+09:00`, `-05:30`, `Z` or `UTC` into seconds east of UTC.
pub fn parse_offset(s: &str) -> Option<i32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 || h < 0 || m < 0 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_offset() {
        // 2026-11-21T00:30:00Z
        let t = Timestamp::from_secs_micros(1_795_221_000, 123_456);
        assert_eq!(t.rfc3339(9 * 3600), "2026-11-21T09:30:00.123+09:00");
        assert_eq!(t.rfc3339(0), "2026-11-21T00:30:00.123+00:00");
        assert_eq!(t.rfc3339(-5 * 3600), "2026-11-20T19:30:00.123-05:00");
        assert_eq!(t.stem_parts(9 * 3600).1, "20261121T093000");
    }

    #[test]
    fn parses_offsets() {
        assert_eq!(parse_offset("+09:00"), Some(32400));
        assert_eq!(parse_offset("-05:30"), Some(-19800));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("9"), None);
        assert_eq!(parse_offset("+25:00"), None);
    }
}
