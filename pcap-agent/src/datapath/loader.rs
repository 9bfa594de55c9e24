//! aya's loaders, made without the kernel's BTF and kept for the life of
//! the process.
//!
//! aya 0.14's `EbpfLoader::new` reads and parses the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`, 5 to 6 MB) every time, even when
//! `.btf(None)` then throws it away: about half of what a `pcap-agent
//! capture` spends to start. Our programs need no CO-RE relocations, so
//! [`fresh`] makes each loader on a short-lived thread that Landlock forbids
//! to open files: the read fails at once and aya goes on without BTF. The
//! restriction is the thread's own (`landlock_restrict_self` and
//! `no_new_privs` apply to the calling thread) and ends with it. A kernel
//! without Landlock, or a sandbox that refuses its system calls, gets the
//! parse as before.
//!
//! Loaders are also made once (one more only while that many captures load
//! at the same time) and reused. Each load sets every global and size it
//! uses, so nothing carries over from one capture to the next.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use aya::{Ebpf, EbpfLoader};
use landlock::RulesetStatus;
use tracing::debug;

use super::Shape;

/// Loaders not in use, BTF dropped.
static IDLE: Mutex<Vec<EbpfLoader<'static>>> = Mutex::new(Vec::new());

/// Runs `load` with a loader of the pool (made when none is idle), then
/// gives the loader back.
pub(super) fn with_loader<R>(load: impl FnOnce(&mut EbpfLoader<'static>) -> R) -> R {
    let idle = IDLE.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut loader = idle.unwrap_or_else(fresh);
    let result = load(&mut loader);
    IDLE.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(loader);
    result
}

/// A loader that holds no BTF, made without reading it where Landlock
/// allows (the module's doc).
fn fresh() -> EbpfLoader<'static> {
    let made = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let forbidden = forbid_files();
                if matches!(forbidden, Ok(RulesetStatus::NotEnforced) | Err(_)) {
                    debug!(outcome = ?forbidden, "no Landlock: the loader reads the kernel's BTF");
                }
                EbpfLoader::new()
            })
            .join()
    });
    let mut loader = made.unwrap_or_else(|_| EbpfLoader::new());
    // No CO-RE relocations to resolve: BTF is not needed.
    loader.btf(None);
    loader
}

/// Forbids the calling thread, and only it, to open any file from now on
/// (Landlock, best effort: `NotEnforced` where the kernel has none).
fn forbid_files() -> Result<RulesetStatus, landlock::RulesetError> {
    use landlock::{ABI, Access as _, AccessFs, Ruleset, RulesetAttr as _};
    Ok(Ruleset::default()
        .handle_access(AccessFs::from_all(ABI::V1))?
        .create()?
        .restrict_self()?
        .ruleset)
}

/// Room for interfaces in a spare's counters: a served capture has one
/// interface or a few (a `-i any` capture, with 4096, loads its own).
const SPARE_COUNTERS: u32 = 64;

/// The shape `pcap-agent serve` keeps a spare for, once it asked.
static WANTED: Mutex<Option<Shape>> = Mutex::new(None);
/// Programs loaded and verified ahead of the next capture, nothing
/// attached (the ring and counters are new and empty).
static SPARE: Mutex<Option<(Shape, Ebpf)>> = Mutex::new(None);

/// Keeps one instance of the programs loaded and verified for the next
/// capture of this snap length and ring size, so that starting a capture
/// only fills in counters and attaches: the verifier's work (most of a
/// start's CPU) is done while the agent is idle. Made now (blocking), and
/// again after each capture ends. Costs the ring's memory while idle.
pub fn keep_spare(snaplen: u32, ring_bytes: u32) {
    let shape = Shape::of(snaplen, ring_bytes);
    *WANTED.lock().unwrap_or_else(PoisonError::into_inner) = Some(shape);
    fill(shape);
}

/// The spare, when it fits a capture of `shape` with `counters` interfaces.
pub(super) fn take_spare(shape: Shape, counters: u32) -> Option<Ebpf> {
    if counters > SPARE_COUNTERS {
        return None;
    }
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    match spare.take() {
        Some((made_for, ebpf)) if made_for == shape => Some(ebpf),
        other => {
            *spare = other;
            None
        }
    }
}

/// After a capture ends: when a spare is wanted and none is ready, makes
/// one on a thread of its own.
pub(super) fn refill_spare() {
    let Some(shape) = *WANTED.lock().unwrap_or_else(PoisonError::into_inner) else {
        return;
    };
    if SPARE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_some()
    {
        return;
    }
    if let Err(e) = std::thread::Builder::new()
        .name("spare-datapath".to_owned())
        .spawn(move || fill(shape))
    {
        debug!(error = %e, "cannot start the spare datapath's thread");
    }
}

fn fill(shape: Shape) {
    match super::load(shape, SPARE_COUNTERS) {
        Ok(ebpf) => {
            let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
            if spare.is_none() {
                *spare = Some((shape, ebpf));
            }
        }
        // The next capture loads its own and reports what fails.
        Err(e) => debug!(error = %e, "cannot make a spare datapath"),
    }
}

/// A `'static` copy of `value` for a loader's globals, which it borrows.
/// Each distinct value is stored once: snap lengths and wakeup thresholds
/// take few values (the latter a fraction of a power of two).
pub(super) fn interned<T: Copy + Ord + Send + 'static>(
    table: &'static Mutex<BTreeMap<T, &'static T>>,
    value: T,
) -> &'static T {
    table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(value)
        .or_insert_with(|| Box::leak(Box::new(value)))
}

pub(super) static SNAPLENS: Mutex<BTreeMap<u32, &'static u32>> = Mutex::new(BTreeMap::new());
pub(super) static WAKEUPS: Mutex<BTreeMap<u64, &'static u64>> = Mutex::new(BTreeMap::new());

#[cfg(test)]
mod tests {
    use super::*;

    /// The restriction [`fresh`] relies on holds on its thread and nowhere
    /// else: the thread cannot read the kernel's BTF, the process still can.
    #[test]
    fn files_are_forbidden_to_the_loaders_thread_only() {
        const BTF: &str = "/sys/kernel/btf/vmlinux";
        if std::fs::metadata(BTF).is_err() {
            eprintln!("skipped: this kernel has no {BTF}");
            return;
        }
        let on_the_thread = std::thread::spawn(|| {
            let status = forbid_files().expect("a Landlock ruleset");
            (status, std::fs::File::open(BTF).map(drop))
        })
        .join()
        .expect("the thread ends");
        match on_the_thread {
            (RulesetStatus::NotEnforced, _) => eprintln!("skipped: this kernel has no Landlock"),
            (_, opened) => {
                let error = opened.expect_err("the restricted thread opened the BTF");
                assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
            }
        }
        std::fs::File::open(BTF).expect("the rest of the process still reads files");
    }

    #[test]
    fn values_are_interned_once() {
        let a = interned(&SNAPLENS, 96);
        let b = interned(&SNAPLENS, 96);
        assert!(std::ptr::eq(a, b));
        assert_eq!(*interned(&SNAPLENS, 97), 97);
    }
}
