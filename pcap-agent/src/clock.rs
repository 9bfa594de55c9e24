//! Converting the program's `CLOCK_TAI` timestamps to wall-clock time.
//!
//! The program stamps packets with `bpf_ktime_get_tai_ns`. `CLOCK_TAI` is
//! `CLOCK_REALTIME` plus the kernel's TAI offset, a whole number of seconds
//! that changes only at leap seconds, so the two clocks are slewed together
//! by NTP and never drift apart during a capture.

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// How often to re-read the offset, to follow a leap second.
const REFRESH: Duration = Duration::from_secs(1);

/// Converts TAI nanoseconds to Unix nanoseconds.
#[derive(Debug)]
pub struct WallClock {
    offset_ns: i64,
    read_at: Instant,
}

impl WallClock {
    pub fn new() -> nix::Result<Self> {
        Ok(Self {
            offset_ns: tai_offset_ns()?,
            read_at: Instant::now(),
        })
    }

    /// Unix time in nanoseconds of a `CLOCK_TAI` reading.
    pub fn unix_ns(&self, tai_ns: u64) -> u64 {
        (tai_ns as i64 - self.offset_ns) as u64
    }

    /// Re-reads the TAI offset if a second has passed since the last read.
    pub fn refresh(&mut self) {
        if self.read_at.elapsed() >= REFRESH
            && let Ok(offset) = tai_offset_ns()
        {
            self.offset_ns = offset;
            self.read_at = Instant::now();
        }
    }
}

/// `CLOCK_TAI - CLOCK_REALTIME`, rounded to the whole seconds it is made of.
fn tai_offset_ns() -> nix::Result<i64> {
    let tai = clock_gettime(ClockId::CLOCK_TAI)?;
    let real = clock_gettime(ClockId::CLOCK_REALTIME)?;
    let diff = (tai.tv_sec() - real.tv_sec()) * NANOS_PER_SEC + (tai.tv_nsec() - real.tv_nsec());
    Ok((diff as f64 / NANOS_PER_SEC as f64).round() as i64 * NANOS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_tai_to_realtime_within_a_millisecond() {
        let clock = WallClock::new().unwrap();
        let tai = clock_gettime(ClockId::CLOCK_TAI).unwrap();
        let real = clock_gettime(ClockId::CLOCK_REALTIME).unwrap();
        let tai_ns = tai.tv_sec() as u64 * 1_000_000_000 + tai.tv_nsec() as u64;
        let real_ns = real.tv_sec() as u64 * 1_000_000_000 + real.tv_nsec() as u64;
        assert!(clock.unix_ns(tai_ns).abs_diff(real_ns) < 1_000_000);
    }
}
