//! CPU time from `getrusage(2)`.

use std::time::Duration;

use nix::sys::{
    resource::{Usage, UsageWho, getrusage},
    time::TimeVal,
};

/// User + system time of `usage`.
pub fn cpu(usage: &Usage) -> Duration {
    let micros = |t: TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(micros(usage.user_time()) + micros(usage.system_time()))
}

/// User + system time of `who` so far.
pub fn cpu_of(who: UsageWho) -> anyhow::Result<Duration> {
    Ok(cpu(&getrusage(who)?))
}
