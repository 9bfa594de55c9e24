//! Records shared by the pcap eBPF program and user space.
//!
//! Both sides compile this crate: the eBPF program without features, user
//! space with the `user` feature, which makes the records [`aya::Pod`].
#![no_std]

/// Largest snapshot length, as in tcpdump.
pub const MAX_SNAPLEN: u32 = 262_144;

/// Data capacities of the ring-buffer record classes, smallest first: the
/// eBPF program (pcap-ebpf/src/copy.rs) reserves its records by these.
///
/// The verifier needs a constant size for every `bpf_ringbuf_reserve`, so the
/// program picks the smallest class that holds the captured bytes. 1536 holds
/// a full 1500-byte Ethernet frame; the rest are powers of two.
pub const SIZE_CLASSES: [usize; 13] = [
    128, 256, 512, 1024, 1536, 2048, 4096, 8192, 16_384, 32_768, 65_536, 131_072, 262_144,
];

/// Slots of the `FILTERS` program array. An entry program (one per hook
/// direction) writes [`cb`] and tail-calls the filter; on a match the
/// filter writes its snap length to `cb[0]` and tail-calls the capture
/// program, which copies the packet. One capture program serves both
/// directions, so the kernel verifies its copying code once per capture.
pub mod slot {
    /// The filter both entry programs tail-call. Empty when the capture has
    /// no filter: the entry then tail-calls [`CAPTURE`] itself.
    pub const FILTER: u32 = 0;
    /// `pcap_capture`, which the filter tail-calls on a match. Filled when
    /// the programs are loaded, before anything is attached.
    pub const CAPTURE: u32 = 1;
    /// Number of slots.
    pub const COUNT: u32 = 2;
}

/// What the entry programs leave in `__sk_buff.cb` for the programs they
/// tail-call.
pub mod cb {
    /// The snap length the packet is accepted with: the entry's
    /// [`MAX_SNAPLEN`](crate::MAX_SNAPLEN), which a filter overwrites with
    /// its verdict (libpcap's `ret #k`).
    pub const SNAPLEN: usize = 0;
    /// The hook's [`Direction`](crate::Direction), as `u32`.
    pub const DIRECTION: usize = 1;
}

/// Direction of a packet relative to the interface it was captured on.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the interface (TC ingress).
    Ingress = 1,
    /// Sent by the interface (TC egress).
    Egress = 2,
}

impl Direction {
    /// Decodes the `direction` byte of a [`PacketHeader`].
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Ingress),
            2 => Some(Self::Egress),
            _ => None,
        }
    }
}

/// `PacketHeader::flags`: a VLAN tag the NIC or driver carried out of band
/// was put back into the captured bytes, as libpcap does.
pub const FLAG_VLAN_REINSERTED: u8 = 1;

/// `PacketHeader::flags`: on ingress, bits 1 to 3 hold `skb->pkt_type`
/// (`PACKET_HOST` 0, `PACKET_BROADCAST` 1, `PACKET_MULTICAST` 2,
/// `PACKET_OTHERHOST` 3), what a packet socket reports as `sll_pkttype`.
pub const FLAG_PKT_TYPE_SHIFT: u8 = 1;
/// The mask of the packet type bits, after shifting.
pub const FLAG_PKT_TYPE_MASK: u8 = 0x7;

/// Metadata written before the packet bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    /// `CLOCK_TAI` in nanoseconds when the program saw the packet. User space
    /// subtracts the TAI offset to get wall-clock time.
    pub tai_ns: u64,
    /// Index of the interface the packet was seen on.
    pub ifindex: u32,
    /// Length of the packet on the wire (plus a reinserted VLAN tag).
    pub orig_len: u32,
    /// Number of packet bytes that follow this header.
    pub cap_len: u32,
    /// `skb->mark`.
    pub mark: u32,
    /// `skb_shinfo(skb)->gso_size`, 0 when the packet is not GSO.
    pub gso_size: u32,
    /// `skb_shinfo(skb)->gso_segs`, 0 when the packet is not GSO.
    pub gso_segs: u16,
    /// A [`Direction`] as `u8`.
    pub direction: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
}

impl PacketHeader {
    /// Reads a header from the start of a ring-buffer record, or `None` if
    /// the record is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Self {
            tai_ns: u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            ifindex: u32_at(8),
            orig_len: u32_at(12),
            cap_len: u32_at(16),
            mark: u32_at(20),
            gso_size: u32_at(24),
            gso_segs: u16::from_ne_bytes([b[28], b[29]]),
            direction: b[30],
            flags: b[31],
        })
    }
}

/// Size of [`PacketHeader`] in bytes.
pub const HEADER_LEN: usize = size_of::<PacketHeader>();

/// A ring-buffer record of size class `N`: the header, then `N` data bytes of
/// which `header.cap_len` are valid.
#[repr(C)]
pub struct Record<const N: usize> {
    pub header: PacketHeader,
    pub data: [u8; N],
}

/// Per-interface, per-CPU counters kept by the program. User space sums
/// them over CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets the program ran on.
    pub seen: u64,
    /// Packets the filter accepted.
    pub matched: u64,
    /// Packets written to the ring buffer.
    pub written: u64,
    /// Accepted packets lost because the ring buffer was full.
    pub dropped_ring_full: u64,
    /// Accepted packets lost because their bytes could not be copied.
    pub dropped_copy_failed: u64,
}

impl Counters {
    /// Adds `other` to `self`, field by field.
    #[must_use]
    pub const fn add(self, other: Self) -> Self {
        Self {
            seen: self.seen + other.seen,
            matched: self.matched + other.matched,
            written: self.written + other.written,
            dropped_ring_full: self.dropped_ring_full + other.dropped_ring_full,
            dropped_copy_failed: self.dropped_copy_failed + other.dropped_copy_failed,
        }
    }

    /// All accepted packets lost in the kernel.
    pub const fn dropped(&self) -> u64 {
        self.dropped_ring_full + self.dropped_copy_failed
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers; every bit pattern is valid and the
    // field order leaves no padding (asserted below).
    unsafe impl aya::Pod for super::PacketHeader {}
    // SAFETY: as above, five `u64` fields and no padding.
    unsafe impl aya::Pod for super::Counters {}
}

const _: () = assert!(HEADER_LEN == 32, "PacketHeader must have no padding");
const _: () = assert!(size_of::<Counters>() == 40);
