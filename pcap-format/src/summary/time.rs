//! tcpdump's time stamps: its default `HH:MM:SS.ffffff` and `-t`…`-ttttt`.
//!
//! tcpdump prints local time; we print UTC (docs/printing.md), which is
//! what tcpdump prints with `TZ=UTC`. Like tcpdump without
//! `--time-stamp-precision=nano`, fractions are cut to microseconds.

use std::fmt::Write as _;

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// tcpdump's `-t` count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// No `-t`: `HH:MM:SS.ffffff`.
    #[default]
    Default,
    /// `-t`: no time stamp.
    None,
    /// `-tt`: seconds since the epoch, `1700000000.123456`.
    Unix,
    /// `-ttt`: time since the previous packet, ` 00:00:00.000123`.
    SincePrevious,
    /// `-tttt`: date and time, `2023-11-14 22:13:20.123456`.
    Date,
    /// `-ttttt`: time since the first packet.
    SinceFirst,
}

impl TimeFormat {
    /// The format for `count` `-t` flags (more than five act as five).
    pub fn from_count(count: u8) -> Self {
        match count {
            0 => Self::Default,
            1 => Self::None,
            2 => Self::Unix,
            3 => Self::SincePrevious,
            4 => Self::Date,
            _ => Self::SinceFirst,
        }
    }
}

/// The reference time of `-ttt` and `-ttttt`.
#[derive(Debug, Default)]
pub(super) struct Clock {
    /// Microseconds since the epoch.
    reference_us: Option<u64>,
}

impl Clock {
    /// Writes the time stamp of a packet at `unix_ns` and the space after
    /// it (nothing with `-t`).
    pub(super) fn print(&mut self, out: &mut String, format: TimeFormat, unix_ns: u64) {
        let us = unix_ns / 1_000;
        let seconds = us / 1_000_000;
        let micros = us % 1_000_000;
        // tcpdump gives up on times past 2038 (a 32-bit time_t check).
        let representable = seconds & 0x8000_0000 == 0;
        match format {
            TimeFormat::Default | TimeFormat::Date => {
                if representable {
                    if format == TimeFormat::Date {
                        let (year, month, day) = civil_from_days(seconds / SECONDS_PER_DAY);
                        let _ = write!(out, "{year:04}-{month:02}-{day:02} ");
                    }
                    hms(out, seconds, micros);
                } else {
                    out.push_str("[Error converting time]");
                }
                out.push(' ');
            }
            TimeFormat::None => {}
            TimeFormat::Unix => {
                if representable {
                    let _ = write!(out, "{seconds}.{micros:06}");
                } else {
                    out.push_str("[Error converting time]");
                }
                out.push(' ');
            }
            TimeFormat::SincePrevious | TimeFormat::SinceFirst => {
                // tcpdump takes a reference of 0.000000 for none.
                let reference = match self.reference_us {
                    Some(reference) if reference != 0 => reference,
                    _ => us,
                };
                self.reference_us = Some(reference);
                let (sign, delta) = if us < reference {
                    ('-', reference - us)
                } else {
                    (' ', us - reference)
                };
                out.push(sign);
                hms(out, delta / 1_000_000, delta % 1_000_000);
                out.push(' ');
                if format == TimeFormat::SincePrevious {
                    self.reference_us = Some(us);
                }
            }
        }
    }
}

/// `HH:MM:SS.ffffff` of the time of day of `seconds`.
fn hms(out: &mut String, seconds: u64, micros: u64) {
    let of_day = seconds % SECONDS_PER_DAY;
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}.{micros:06}",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    );
}

/// Year, month and day of the `days`th day after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Formats `unix_ns` (nanoseconds since the Unix epoch) as tcpdump's
/// default `HH:MM:SS.ffffff`, in UTC; the fraction is cut, not rounded, to
/// microseconds.
pub fn format_time(unix_ns: u64) -> String {
    let seconds = unix_ns / NANOS_PER_SECOND;
    let micros = unix_ns % NANOS_PER_SECOND / 1_000;
    let mut out = String::new();
    hms(&mut out, seconds, micros);
    out
}

#[cfg(test)]
mod tests {
    use super::{Clock, TimeFormat, civil_from_days, format_time};

    #[test]
    fn formats_time_of_day_in_utc_with_microseconds() {
        for (ns, expected) in [
            (0, "00:00:00.000000"),
            // 2023-11-14T22:13:20.123456789Z
            (1_700_000_000_123_456_789, "22:13:20.123456"),
            (86_399_999_999_999, "23:59:59.999999"),
            (86_400_000_000_000, "00:00:00.000000"),
            (u64::MAX, "23:34:33.709551"),
        ] {
            assert_eq!(format_time(ns), expected, "{ns}");
        }
    }

    #[test]
    fn every_t_format() {
        let stamps = [
            1_700_000_000_123_456_789,
            1_700_000_001_000_000_000,
            1_699_999_999_000_000_000,
        ];
        let run = |format| {
            let mut clock = Clock::default();
            stamps
                .iter()
                .map(|&ns| {
                    let mut out = String::new();
                    clock.print(&mut out, format, ns);
                    out
                })
                .collect::<Vec<_>>()
        };
        // Each format's three stamps, joined by `|`.
        for (format, expected) in [
            (TimeFormat::None, "||"),
            (
                TimeFormat::Unix,
                "1700000000.123456 |1700000001.000000 |1699999999.000000 ",
            ),
            (
                TimeFormat::Date,
                "2023-11-14 22:13:20.123456 |2023-11-14 22:13:21.000000 |2023-11-14 22:13:19.000000 ",
            ),
            (
                TimeFormat::SincePrevious,
                " 00:00:00.000000 | 00:00:00.876544 |-00:00:02.000000 ",
            ),
            (
                TimeFormat::SinceFirst,
                " 00:00:00.000000 | 00:00:00.876544 |-00:00:01.123456 ",
            ),
            (
                TimeFormat::Default,
                "22:13:20.123456 |22:13:21.000000 |22:13:19.000000 ",
            ),
        ] {
            assert_eq!(run(format).join("|"), expected, "{format:?}");
        }
    }

    #[test]
    fn dates_across_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_675), (2023, 11, 14));
    }
}
