//! The units values are written in: durations ("250ms", "5s", "7d"),
//! sizes in bytes ("64kB", "16MiB", "10GB") and rates in bytes per second
//! ("20Mbit", "2MB").

use std::time::Duration;

/// A duration as humantime writes it: "5s", "10m", "24h", "7d", "250ms",
/// also combined ("1h 30m"). A bare number has no unit and is refused.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

/// A size in bytes: "10GB", "512MiB", "64kB", "100" (decimal SI or binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "k" | "kB" | "KB" => 1000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// A rate in bytes per second: "20Mbit", "500kbit", "2MB" (per second).
pub fn parse_rate(s: &str) -> Option<u64> {
    let s = s.trim().trim_end_matches("/s").trim_end_matches("ps");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let bits = |mul: u64| n.checked_mul(mul).map(|b| b / 8);
    match unit.trim() {
        "bit" => bits(1),
        "kbit" | "Kbit" => bits(1000),
        "Mbit" => bits(1_000_000),
        "Gbit" => bits(1_000_000_000),
        _ => parse_size(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("7"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_rate("20Mbit"), Some(2_500_000));
        assert_eq!(parse_rate("500kbit"), Some(62_500));
        assert_eq!(parse_rate("2MB"), Some(2_000_000));
        assert_eq!(parse_size("10GB"), Some(10_000_000_000));
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("10XB"), None);
    }
}
