//! The API's scheduling policy: `SCHED_BATCH`.
//!
//! The API relays bulk data between sockets: a woken task has nothing to
//! answer in a hurry, and a capture moves megabytes at a time. Under the
//! default policy every arrival of a few tens of kilobytes preempts
//! whatever runs (another worker of its own, or an agent or CLI sharing the
//! CPU) to read them; `SCHED_BATCH` never preempts on wakeup, so a woken
//! worker waits for the running task's slice and reads more per wakeup.
//! Its nice value and fair share of CPU are unchanged. In `cargo xtask
//! bench` (agent, API and CLI on one CPU) this takes about a quarter off
//! the API's CPU per packet (docs/bench.md).
#![expect(
    unsafe_code,
    reason = "sched_setscheduler(2) has no safe wrapper in nix or rustix"
)]

use std::io;

/// Puts the calling thread under `SCHED_BATCH`; threads it starts after
/// this inherit the policy. Call it before the runtime starts its workers.
pub fn batch() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread, and `param` is a valid
    // `sched_param` (priority 0, as SCHED_BATCH requires) that outlives
    // the call, which only reads it.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
