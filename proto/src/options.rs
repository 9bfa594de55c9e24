//! The one capture model: what a capture asks for, checked, and every limit
//! and default that applies to it, stated once.
//!
//! The CLI builds a [`CaptureOptions`] from its flags (through the parsers
//! here, which its clap group in [`crate::flags`] uses), sends it as the
//! wire's [`v1::CaptureOptions`], and the API and the agents turn what
//! arrives back into a [`CaptureOptions`] with [`CaptureOptions::from_wire`]:
//! a caller controls the request, so each checks it again, with the same
//! function. Operators' and agents' configured maxima cap the request with
//! [`Limits::capped_by`] and [`CaptureOptions::snaplen_within`].
//!
//! On the wire, a limit or snaplen that is absent means "none" (the
//! maximum, for snaplen); the fields are `optional`, so that the intent is
//! stated rather than hidden in a zero. A snaplen of 0 still means the
//! maximum, as in tcpdump; a limit of 0 is refused.

use std::num::{IntErrorKind, NonZeroU32, NonZeroU64, ParseIntError};
use std::time::Duration;

use thiserror::Error;

use crate::v1;

/// The largest snapshot length, as in tcpdump (the eBPF program's copy
/// classes end there).
pub use pcap_common::MAX_SNAPLEN;

/// The longest filter expression, in bytes, that the API and the agents
/// accept. Hand-written tcpdump expressions are far shorter; this leaves
/// room for generated ones (about 200 `host A.B.C.D or ...` terms) while
/// bounding libpcap's compile, which grows faster than the length: the
/// slowest 4 KiB expression we found (`port 1 or port 2 or ...`) compiles
/// in about 5 s, on the capture's own thread.
pub const MAX_FILTER_BYTES: usize = 4096;

/// The longest duration anything takes: a user's `--duration` and the
/// `limits.max_duration` an operator configures (API and agents). A year,
/// in seconds: beyond that is a typo, and `Duration::from_secs_f64` must
/// not panic.
pub const MAX_CONFIGURED_DURATION_SECS: f64 = 366.0 * 86400.0;

/// How long the API and the agents wait for a `Capture` call's first
/// request (`start`) before they answer DEADLINE_EXCEEDED: a caller that
/// opens a call and sends nothing holds no slot for long.
pub const START_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The message for a filter expression longer than [`MAX_FILTER_BYTES`].
pub fn filter_too_long(len: usize) -> String {
    format!("the filter expression is {len} bytes; at most {MAX_FILTER_BYTES} are allowed")
}

/// What is wrong with capture options; each message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionsError {
    #[error("invalid snaplen {0}: use 1 to {MAX_SNAPLEN} (or 0 for {MAX_SNAPLEN})")]
    Snaplen(u64),
    #[error("{}", filter_too_long(*.0))]
    FilterTooLong(usize),
    /// A limit of 0 that arrived on the wire (`limits.packets` and so on).
    #[error("limits.{0} is 0: leave it out for no limit")]
    ZeroLimit(&'static str),
    /// `-c 0`.
    #[error("invalid -c 0: must be at least 1 (leave -c out for no limit)")]
    ZeroCount,
    #[error("invalid --duration {0}: must be more than 0 seconds")]
    Duration(String),
    /// More than [`MAX_CONFIGURED_DURATION_SECS`]; the value is not echoed
    /// (`1e300` would print 301 digits).
    #[error(
        "invalid --duration: more than a year; give at most {MAX_CONFIGURED_DURATION_SECS} seconds"
    )]
    DurationTooLong,
    /// A `direction` that is none of the wire's `CaptureDirection`s.
    #[error("direction {0} is not in (1), out (2) or inout (0)")]
    Direction(i32),
}

/// Which packets of each interface to capture, as tcpdump's `-Q`: only the
/// TC hooks of those directions are attached, so the kernel never runs the
/// capture program (or copies anything) for the other one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Directions {
    /// Packets the interface received (TC ingress).
    In,
    /// Packets the interface sent (TC egress).
    Out,
    /// Both.
    #[default]
    Inout,
}

impl Directions {
    /// The other side's view: what one end of a veth sent, the other end
    /// received.
    #[must_use]
    pub fn reversed(self) -> Self {
        match self {
            Self::In => Self::Out,
            Self::Out => Self::In,
            Self::Inout => Self::Inout,
        }
    }

    fn to_wire(self) -> i32 {
        match self {
            Self::Inout => v1::CaptureDirection::Inout,
            Self::In => v1::CaptureDirection::In,
            Self::Out => v1::CaptureDirection::Out,
        }
        .into()
    }

    fn from_wire(value: i32) -> Result<Self, OptionsError> {
        match v1::CaptureDirection::try_from(value) {
            Ok(v1::CaptureDirection::Inout) => Ok(Self::Inout),
            Ok(v1::CaptureDirection::In) => Ok(Self::In),
            Ok(v1::CaptureDirection::Out) => Ok(Self::Out),
            Err(_) => Err(OptionsError::Direction(value)),
        }
    }
}

/// Stop conditions; `None` is no limit (an operator's or agent's maximum
/// may still apply, see [`Limits::capped_by`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// How long the capture runs (`duration_ms` on the wire, rounded up
    /// to whole milliseconds).
    pub duration: Option<Duration>,
    /// Packets written before the capture stops (tcpdump's `-c`).
    pub packets: Option<NonZeroU64>,
    /// Bytes of captured packet data written before the capture stops.
    pub bytes: Option<NonZeroU64>,
}

impl Limits {
    /// Each limit, or `max`'s where that is smaller or this has none.
    #[must_use]
    pub fn capped_by(self, max: Self) -> Self {
        fn smaller<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Self {
            duration: smaller(self.duration, max.duration),
            packets: smaller(self.packets, max.packets),
            bytes: smaller(self.bytes, max.bytes),
        }
    }

    fn to_wire(self) -> v1::Limits {
        v1::Limits {
            // Rounded up, so that a tiny duration is not "no limit".
            duration_ms: self
                .duration
                .map(|d| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)),
            packets: self.packets.map(NonZeroU64::get),
            bytes: self.bytes.map(NonZeroU64::get),
        }
    }

    fn from_wire(wire: v1::Limits) -> Result<Self, OptionsError> {
        let nonzero = |value: Option<u64>, name| match value {
            None => Ok(None),
            Some(n) => NonZeroU64::new(n)
                .map(Some)
                .ok_or(OptionsError::ZeroLimit(name)),
        };
        Ok(Self {
            duration: nonzero(wire.duration_ms, "duration_ms")?
                .map(|ms| Duration::from_millis(ms.get())),
            packets: nonzero(wire.packets, "packets")?,
            bytes: nonzero(wire.bytes, "bytes")?,
        })
    }
}

/// A capture request's options, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    /// A libpcap (tcpdump) filter expression; empty captures everything.
    /// At most [`MAX_FILTER_BYTES`] where it arrives (API, agent); the CLI
    /// sends what it is given, so that the API's refusal names its limit.
    pub filter: String,
    /// Bytes kept of each packet, at most [`MAX_SNAPLEN`]; `None` is the
    /// maximum. Build it with [`snaplen`].
    pub snaplen: Option<NonZeroU32>,
    /// Interfaces to capture on; empty means the target's default.
    pub interfaces: Vec<String>,
    /// When the capture stops on its own.
    pub limits: Limits,
    /// tcpdump's `-Q`.
    pub direction: Directions,
}

impl CaptureOptions {
    /// Checks what arrived on the wire: the filter's length, the snaplen,
    /// and that no limit is 0.
    pub fn from_wire(wire: &v1::CaptureOptions) -> Result<Self, OptionsError> {
        if wire.filter.len() > MAX_FILTER_BYTES {
            return Err(OptionsError::FilterTooLong(wire.filter.len()));
        }
        Ok(Self {
            filter: wire.filter.clone(),
            snaplen: snaplen(wire.snaplen.unwrap_or(0).into())?,
            interfaces: wire.interfaces.clone(),
            limits: Limits::from_wire(wire.limits.unwrap_or_default())?,
            direction: Directions::from_wire(wire.direction)?,
        })
    }

    /// The wire's options (fields this model does not hold, such as c2c
    /// insight, are left empty).
    pub fn to_wire(&self) -> v1::CaptureOptions {
        // Field by field: the wire message has more (c2c insight) than this.
        let mut wire = v1::CaptureOptions::default();
        wire.filter.clone_from(&self.filter);
        wire.snaplen = self.snaplen.map(NonZeroU32::get);
        wire.interfaces.clone_from(&self.interfaces);
        wire.limits = Some(self.limits.to_wire());
        wire.direction = self.direction.to_wire();
        wire
    }

    /// `wire` with this model's limits: what the API forwards to agents
    /// after capping the request (other fields pass through).
    pub fn with_limits(wire: &v1::CaptureOptions, limits: Limits) -> v1::CaptureOptions {
        v1::CaptureOptions {
            limits: Some(limits.to_wire()),
            ..wire.clone()
        }
    }

    /// The snaplen to capture with when `max` (at most [`MAX_SNAPLEN`]) is
    /// the largest allowed: the request's, or `max` when it is larger or
    /// none was asked for.
    pub fn snaplen_within(&self, max: u32) -> u32 {
        self.snaplen.map_or(max, |n| n.get().min(max))
    }
}

/// A snaplen as given by a user or the wire: 0 means the maximum (`None`),
/// as in tcpdump; above [`MAX_SNAPLEN`] is refused.
pub fn snaplen(value: u64) -> Result<Option<NonZeroU32>, OptionsError> {
    match u32::try_from(value) {
        Ok(n) if n <= MAX_SNAPLEN => Ok(NonZeroU32::new(n)),
        _ => Err(OptionsError::Snaplen(value)),
    }
}

/// A flag's whole number (`-s`, `-c`); its range is checked where the
/// flags become [`CaptureOptions`] (`crate::flags`), so that the message
/// can name the flag.
pub fn parse_whole(text: &str) -> Result<u64, String> {
    text.parse().map_err(|e: ParseIntError| match e.kind() {
        IntErrorKind::PosOverflow => {
            format!("{text} is more than {}, the most it can be", u64::MAX)
        }
        _ => format!("{text:?} is not a whole number"),
    })
}

/// `--max-bytes`: a whole number, at least 1.
pub fn parse_positive(text: &str) -> Result<NonZeroU64, String> {
    NonZeroU64::new(parse_whole(text)?)
        .ok_or_else(|| "must be at least 1 (leave it out for no limit)".to_owned())
}

/// `--duration`'s number of seconds (fractions allowed); more than 0 is
/// checked with the other flags, by [`duration`].
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))
}

/// A duration asked for in seconds: more than 0, at most
/// [`MAX_CONFIGURED_DURATION_SECS`].
pub fn duration(seconds: f64) -> Result<Duration, OptionsError> {
    if seconds.is_nan() || seconds <= 0.0 {
        return Err(OptionsError::Duration(seconds.to_string()));
    }
    if seconds > MAX_CONFIGURED_DURATION_SECS {
        return Err(OptionsError::DurationTooLong);
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A configured maximum duration (`limits.max_duration` of the API and the
/// agents), in seconds: more than zero (or zero where `zero_allowed`), at
/// most [`MAX_CONFIGURED_DURATION_SECS`]. The message says what is allowed.
pub fn check_configured_seconds(value: f64, zero_allowed: bool) -> Result<Duration, String> {
    let ok = value.is_finite() && (value > 0.0 || (zero_allowed && value == 0.0));
    if !ok || value > MAX_CONFIGURED_DURATION_SECS {
        let expected = if zero_allowed {
            "zero or more"
        } else {
            "more than zero"
        };
        return Err(format!(
            "{value} is not a duration in seconds ({expected}, at most a year)"
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(duration_ms: Option<u64>, packets: Option<u64>, bytes: Option<u64>) -> Limits {
        Limits::from_wire(v1::Limits {
            duration_ms,
            packets,
            bytes,
        })
        .unwrap()
    }

    #[test]
    fn maxima_cap_requests() {
        let cap = |requested, max| {
            limits(None, None, requested)
                .capped_by(limits(None, None, max))
                .to_wire()
                .bytes
        };
        assert_eq!(cap(None, None), None);
        assert_eq!(cap(None, Some(10)), Some(10));
        assert_eq!(cap(Some(5), None), Some(5));
        assert_eq!(cap(Some(5), Some(10)), Some(5));
        assert_eq!(cap(Some(50), Some(10)), Some(10));
    }

    #[test]
    fn the_wire_round_trips_and_zero_limits_are_refused() {
        let options = CaptureOptions {
            filter: "tcp".to_owned(),
            snaplen: NonZeroU32::new(96),
            interfaces: vec!["eth0".to_owned()],
            limits: limits(Some(1500), Some(10), None),
            direction: Directions::In,
        };
        assert_eq!(CaptureOptions::from_wire(&options.to_wire()), Ok(options));
        let zero = v1::CaptureOptions {
            limits: Some(v1::Limits {
                packets: Some(0),
                ..v1::Limits::default()
            }),
            ..v1::CaptureOptions::default()
        };
        let error = CaptureOptions::from_wire(&zero).unwrap_err().to_string();
        assert_eq!(error, "limits.packets is 0: leave it out for no limit");
    }

    #[test]
    fn snaplen_zero_is_the_maximum_and_above_is_refused() {
        let wire = |snaplen| v1::CaptureOptions {
            snaplen,
            ..v1::CaptureOptions::default()
        };
        let within =
            |snaplen| CaptureOptions::from_wire(&wire(snaplen)).map(|o| o.snaplen_within(100));
        assert_eq!(within(None), Ok(100));
        assert_eq!(within(Some(0)), Ok(100));
        assert_eq!(within(Some(64)), Ok(64));
        assert_eq!(within(Some(200)), Ok(100));
        assert_eq!(
            within(Some(MAX_SNAPLEN + 1)).unwrap_err().to_string(),
            "invalid snaplen 262145: use 1 to 262144 (or 0 for 262144)"
        );
        assert_eq!(snaplen(0), Ok(None));
        assert!(
            parse_whole("lots")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert_eq!(
            parse_whole("99999999999999999999").unwrap_err(),
            "99999999999999999999 is more than 18446744073709551615, the most it can be"
        );
    }

    #[test]
    fn directions_cross_the_wire_and_unknown_ones_are_refused() {
        let wire = |direction| v1::CaptureOptions {
            direction,
            ..v1::CaptureOptions::default()
        };
        let read = |direction| CaptureOptions::from_wire(&wire(direction)).map(|o| o.direction);
        assert_eq!(read(0), Ok(Directions::Inout));
        assert_eq!(read(1), Ok(Directions::In));
        assert_eq!(read(2), Ok(Directions::Out));
        assert_eq!(
            read(7).unwrap_err().to_string(),
            "direction 7 is not in (1), out (2) or inout (0)"
        );
        for direction in [Directions::In, Directions::Out, Directions::Inout] {
            let options = CaptureOptions {
                direction,
                ..CaptureOptions::default()
            };
            assert_eq!(
                CaptureOptions::from_wire(&options.to_wire()).map(|o| o.direction),
                Ok(direction)
            );
        }
        assert_eq!(Directions::In.reversed(), Directions::Out);
        assert_eq!(Directions::Inout.reversed(), Directions::Inout);
    }

    #[test]
    fn long_filters_are_refused() {
        let wire = v1::CaptureOptions {
            filter: "x".repeat(MAX_FILTER_BYTES + 1),
            ..v1::CaptureOptions::default()
        };
        assert_eq!(
            CaptureOptions::from_wire(&wire).unwrap_err().to_string(),
            "the filter expression is 4097 bytes; at most 4096 are allowed"
        );
    }

    #[test]
    fn tiny_durations_round_up_to_a_millisecond() {
        let options = CaptureOptions {
            limits: Limits {
                duration: Some(Duration::from_micros(100)),
                ..Limits::default()
            },
            ..CaptureOptions::default()
        };
        assert_eq!(options.to_wire().limits.unwrap().duration_ms, Some(1));
    }

    #[test]
    fn parsers_say_what_is_wrong() {
        assert!(
            parse_positive("0")
                .unwrap_err()
                .contains("must be at least 1")
        );
        assert!(
            parse_positive("ten")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(parse_seconds("soon").unwrap_err().contains("not a number"));
        assert_eq!(
            duration(-1.0).unwrap_err().to_string(),
            "invalid --duration -1: must be more than 0 seconds"
        );
        assert!(duration(f64::NAN).is_err());
        assert_eq!(
            duration(1e300).unwrap_err().to_string(),
            "invalid --duration: more than a year; give at most 31622400 seconds"
        );
        assert!(duration(f64::INFINITY).is_err());
        assert!(duration(MAX_CONFIGURED_DURATION_SECS + 1.0).is_err());
        assert!(duration(MAX_CONFIGURED_DURATION_SECS).is_ok());
        assert_eq!(duration(1.5), Ok(Duration::from_millis(1500)));
        assert!(check_configured_seconds(f64::NAN, false).is_err());
        assert_eq!(
            check_configured_seconds(-1.0, false).unwrap_err(),
            "-1 is not a duration in seconds (more than zero, at most a year)"
        );
        assert!(check_configured_seconds(0.0, true).is_ok());
        assert!(check_configured_seconds(MAX_CONFIGURED_DURATION_SECS + 1.0, true).is_err());
    }
}
