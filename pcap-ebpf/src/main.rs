//! TC classifier that copies packets into a BPF ring buffer.
//!
//! One instance of this program is loaded per capture and its entry points
//! are attached to the ingress and egress hooks of every interface the
//! capture covers. The entry tail-calls the filter program (classic BPF
//! from libpcap, translated to eBPF by user space), which tail-calls
//! `pcap_capture` on a match; without a filter the entry tail-calls
//! `pcap_capture` itself. Nothing here changes a packet or
//! its fate: every program returns `TC_ACT_UNSPEC`, which TCX reads as "next
//! program" and cls_bpf as "no verdict".
#![no_std]
// On the host (clippy, tests) the crate builds as an ordinary binary.
#![cfg_attr(target_arch = "bpf", no_main)]
#![expect(
    clippy::inline_always,
    reason = "BPF-to-BPF calls would hide bounds from the verifier; everything inlines"
)]

mod copy;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_tai_ns,
    macros::{classifier, map},
    maps::{PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
    programs::TcContext,
};
use pcap_common::{
    Counters, Direction, FLAG_PKT_TYPE_MASK, FLAG_PKT_TYPE_SHIFT, FLAG_VLAN_REINSERTED,
    MAX_SNAPLEN, PacketHeader, cb, slot,
};

/// Captured packets. User space sets the size when it loads the program.
#[map]
static PACKETS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Counters per interface index. User space inserts a zeroed entry for every
/// interface before attaching, so the program never inserts.
#[map]
static COUNTERS: PerCpuHashMap<u32, Counters> = PerCpuHashMap::with_max_entries(256, 0);

/// The filter and capture programs; see `pcap_common::slot`.
#[map]
static FILTERS: ProgramArray = ProgramArray::with_max_entries(slot::COUNT, 0);

/// Bytes to copy per packet, 1..=MAX_SNAPLEN. Set by user space at load time.
#[unsafe(no_mangle)]
static SNAPLEN: u32 = MAX_SNAPLEN;

/// Bytes waiting in the ring at which the reader is woken. Set by user space
/// at load time (a fraction of the ring size).
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 19;

/// When this CPU last woke the reader (`CLOCK_TAI` ns).
#[map]
static LAST_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Longest a packet waits in a quiet ring before the reader is woken.
const WAKEUP_INTERVAL_NS: u64 = 10_000_000;

/// `TC_ACT_UNSPEC`: let the packet go on as if we were not there.
const TC_ACT_UNSPEC: i32 = -1;

/// The TC programs, each a `#[classifier]` that runs one step on its
/// context and lets the packet go on (`TC_ACT_UNSPEC`). `#[classifier]`
/// wants the context by value; the steps borrow it (clippy's
/// `needless_pass_by_value` does not look into a macro's functions).
macro_rules! tc_programs {
    ($($name:ident($ctx:ident) => $step:expr;)+) => {$(
        #[classifier]
        pub fn $name($ctx: TcContext) -> i32 {
            $step;
            TC_ACT_UNSPEC
        }
    )+};
}

tc_programs! {
    // The entries, attached to the hooks: count, then run the filter.
    pcap_ingress(ctx) => entry(&ctx, Direction::Ingress);
    pcap_egress(ctx) => entry(&ctx, Direction::Egress);
    // Tail-called by the filter on a match, or by an entry without a
    // filter: the only program that copies, verified once per capture.
    pcap_capture(ctx) => capture(&ctx);
}

/// Why an accepted packet did not reach the ring buffer.
enum Drop {
    /// The ring buffer had no room for the record (counted as
    /// `dropped_ring_full`).
    RingFull,
    /// The packet's bytes could not be copied into a record: no size class
    /// holds them, or the copy failed (counted as `dropped_copy_failed`).
    CopyFailed,
}

/// This CPU's counters for the packet's interface.
#[inline(always)]
fn counters(ctx: &TcContext) -> Option<&'static mut Counters> {
    // SAFETY: the kernel passes a valid `__sk_buff` to the program.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a per-CPU value, and the program does not migrate CPUs while it runs.
    COUNTERS.get_ptr_mut(ifindex).map(|c| unsafe { &mut *c })
}

#[inline(always)]
fn entry(ctx: &TcContext, direction: Direction) {
    if let Some(c) = counters(ctx) {
        c.seen += 1;
    }
    // SAFETY: the kernel passes a valid `__sk_buff`, whose `cb` is scratch
    // space for TC programs (the filter writes only `cb[0]`).
    unsafe {
        let scratch = &mut (*ctx.skb.skb).cb;
        scratch[cb::SNAPLEN] = MAX_SNAPLEN;
        scratch[cb::DIRECTION] = direction as u32;
    }
    // SAFETY: `ctx` is this program's context. A tail call only returns when
    // the slot is empty: the filter's when the capture has none, the capture
    // program's never (user space fills it before attaching anything).
    unsafe {
        FILTERS.tail_call(ctx, slot::FILTER);
        FILTERS.tail_call(ctx, slot::CAPTURE);
    }
    // Not reached; counted rather than lost without a trace.
    if let Some(c) = counters(ctx) {
        c.matched += 1;
        c.dropped_copy_failed += 1;
    }
}

/// Counts and copies a packet the filter accepted, with the snap length and
/// direction the entry and the filter left in `cb`.
#[inline(always)]
fn capture(ctx: &TcContext) {
    let mut counters = counters(ctx);
    if let Some(c) = counters.as_mut() {
        c.matched += 1;
    }
    let scratch = ctx.cb();
    let result = try_capture(ctx, scratch[cb::DIRECTION] as u8, scratch[cb::SNAPLEN]);
    if let Some(c) = counters {
        match result {
            Ok(()) => c.written += 1,
            Err(Drop::RingFull) => c.dropped_ring_full += 1,
            Err(Drop::CopyFailed) => c.dropped_copy_failed += 1,
        }
    }
}

#[inline(always)]
fn try_capture(ctx: &TcContext, direction: u8, filter_snaplen: u32) -> Result<(), Drop> {
    let skb = ctx.skb.skb;
    // SAFETY: the kernel passes a valid `__sk_buff` to the program.
    let (ifindex, mark, vlan_present, vlan_proto, vlan_tci, gso_size, gso_segs, pkt_type) = unsafe {
        (
            (*skb).ifindex,
            (*skb).mark,
            (*skb).vlan_present != 0,
            (*skb).vlan_proto,
            (*skb).vlan_tci,
            (*skb).gso_size,
            (*skb).gso_segs,
            (*skb).pkt_type,
        )
    };
    // libpcap puts an out-of-band VLAN tag back into the frame; so do we.
    let vlan = vlan_present.then_some(copy::VlanTag {
        proto: vlan_proto as u16,
        tci: vlan_tci as u16,
    });
    let orig_len = ctx.len()
        + if vlan.is_some() {
            copy::VLAN_TAG_LEN
        } else {
            0
        };
    // SAFETY: a plain read of a constant that user space may have rewritten.
    let snaplen = unsafe { core::ptr::read_volatile(&raw const SNAPLEN) }.min(filter_snaplen);
    let header = PacketHeader {
        // SAFETY: the helper takes no arguments.
        tai_ns: unsafe { bpf_ktime_get_tai_ns() },
        ifindex,
        orig_len,
        cap_len: if orig_len < snaplen {
            orig_len
        } else {
            snaplen
        },
        mark,
        gso_size,
        gso_segs: gso_segs as u16,
        direction,
        flags: if vlan.is_some() {
            FLAG_VLAN_REINSERTED
        } else {
            0
        } | ((pkt_type as u8 & FLAG_PKT_TYPE_MASK) << FLAG_PKT_TYPE_SHIFT),
    };
    copy::Outgoing {
        ctx,
        header: &header,
        vlan,
    }
    .emit(&PACKETS, wakeup_flags(header.tai_ns))
}

/// Waking the reader for every packet costs it a syscall per packet. Wake it
/// only when enough bytes wait, or when this CPU has not woken it for a
/// while: bursts are read in batches, a lone packet is still seen at once.
#[inline(always)]
fn wakeup_flags(now_ns: u64) -> u64 {
    // SAFETY: a plain read of a constant that user space may have rewritten.
    let threshold = unsafe { core::ptr::read_volatile(&raw const WAKEUP_BYTES) };
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU value, and the program does not migrate CPUs while it runs.
    let last = unsafe { &mut *last };
    if PACKETS.query(u64::from(BPF_RB_AVAIL_DATA)) >= threshold
        || now_ns.wrapping_sub(*last) >= WAKEUP_INTERVAL_NS
    {
        *last = now_ns;
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
