//! What the reorder window really holds, measured with a counting
//! allocator: one-byte packets (snaplen 1) stamped an hour ahead, from an
//! agent whose clock runs fast, against a 1 MiB budget. The bytes the
//! allocator has handed out and not taken back stay within the budget.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use pcap_api::merge::{Merger, Run};
use pcap_proto::packets::Packet as WirePacket;

/// The system allocator, counting the bytes it has out.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only
// a counter is kept besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SECOND: u64 = 1_000_000_000;

#[test]
fn a_snaplen_1_flood_from_a_fast_clock_stays_within_the_budget() {
    const BUDGET: usize = 1 << 20;
    let now = 1_000_000 * SECOND;
    let mut merger = Merger::new(Duration::from_millis(500), BUDGET);
    let mut out = Vec::with_capacity(1_000_000);
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..1_000_000u64 {
        let packet = Run::from_wire(&WirePacket {
            timestamp_ns: now + 3600 * SECOND + i,
            original_length: 1500,
            data: vec![0x45],
            ..WirePacket::default()
        });
        merger.push(packet, now, &mut out);
        // What left the window is the caller's to send and drop.
        out.clear();
    }
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "{} packets held, {held} bytes allocated for them, charged {} of a {BUDGET}-byte budget",
        merger.held_packets(),
        merger.held_bytes()
    );
    assert!(merger.held_bytes() <= BUDGET);
    assert!(
        held <= BUDGET,
        "{held} bytes held for {} packets: over the budget of {BUDGET}",
        merger.held_packets()
    );
    assert!(
        merger.held_packets() > 1_000,
        "the budget holds a fair number"
    );
}
