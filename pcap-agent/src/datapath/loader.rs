//! aya's loaders, kept for the life of the process.
//!
//! `EbpfLoader::new` reads and parses the kernel's BTF
//! (`/sys/kernel/btf/vmlinux`, 5 to 6 MB) every time, even when
//! `.btf(None)` then throws it away: tens of milliseconds of CPU per
//! capture, and `pcap-agent serve` starts captures on many agents at once.
//! Loaders are made once (one more only while that many captures load at
//! the same time) and reused. Each load sets every global and size it
//! uses, so nothing carries over from one capture to the next.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use aya::EbpfLoader;

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

/// Makes the first loader now, so that the first capture does not pay for
/// it (`pcap-agent serve` calls this at start).
pub fn warm_up() {
    with_loader(|_| ());
}

fn fresh() -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    // No CO-RE relocations to resolve: the parsed BTF is not needed.
    loader.btf(None);
    loader
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

    #[test]
    fn values_are_interned_once() {
        let a = interned(&SNAPLENS, 96);
        let b = interned(&SNAPLENS, 96);
        assert!(std::ptr::eq(a, b));
        assert_eq!(*interned(&SNAPLENS, 97), 97);
    }
}
