//! tcpdump's default time stamp format.

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// Formats `unix_ns` (nanoseconds since the Unix epoch) as tcpdump's
/// default `HH:MM:SS.ffffff`, in UTC; the fraction is cut, not rounded, to
/// microseconds.
pub fn format_time(unix_ns: u64) -> String {
    let seconds = unix_ns / NANOS_PER_SECOND;
    let micros = unix_ns % NANOS_PER_SECOND / 1_000;
    let of_day = seconds % SECONDS_PER_DAY;
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn formats_time_of_day_in_utc_with_microseconds() {
        assert_eq!(format_time(0), "00:00:00.000000");
        // 2023-11-14T22:13:20.123456789Z
        assert_eq!(format_time(1_700_000_000_123_456_789), "22:13:20.123456");
        assert_eq!(format_time(86_399_999_999_999), "23:59:59.999999");
        assert_eq!(format_time(86_400_000_000_000), "00:00:00.000000");
        assert_eq!(format_time(u64::MAX), "23:34:33.709551");
    }
}
