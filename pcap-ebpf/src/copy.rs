//! Copying packet bytes into a ring-buffer record of the right size class.

use aya_ebpf::{helpers::bpf_skb_load_bytes, maps::RingBuf, programs::TcContext};
use pcap_common::{PacketHeader, Record, SIZE_CLASSES};

use crate::Drop;

/// Bytes of an 802.1Q tag.
pub const VLAN_TAG_LEN: u32 = 4;
/// Bytes of the two MAC addresses that precede a VLAN tag.
const MACS_LEN: u32 = 12;

/// A VLAN tag carried outside the packet bytes (`skb->vlan_*`).
#[derive(Clone, Copy)]
pub struct VlanTag {
    /// TPID in network byte order, as `skb->vlan_proto` holds it.
    pub proto: u16,
    pub tci: u16,
}

/// A packet on its way into the ring: the context its bytes are read from,
/// its record header, and the VLAN tag the kernel holds outside its bytes.
pub struct Outgoing<'a> {
    pub ctx: &'a TcContext,
    pub header: &'a PacketHeader,
    pub vlan: Option<VlanTag>,
}

impl Outgoing<'_> {
    /// Reserves the smallest record that holds `header.cap_len` bytes in
    /// `ring`, fills it and submits it with `submit_flags`.
    #[inline(always)]
    pub fn emit(&self, ring: &RingBuf, submit_flags: u64) -> Result<(), Drop> {
        // One arm per entry of `SIZE_CLASSES`, unrolled: each reserve needs
        // its size as a constant. The assertion below fails the build if a
        // class is added there and not here.
        macro_rules! classes {
            ($($i:literal),+) => {
                $(if self.header.cap_len as usize <= SIZE_CLASSES[$i] {
                    return self.emit_class::<{ SIZE_CLASSES[$i] }>(ring, submit_flags);
                })+
            };
        }
        const _: () = assert!(
            SIZE_CLASSES.len() == 13,
            "one classes! index per size class"
        );
        classes!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12);
        Err(Drop::CopyFailed)
    }

    #[inline(always)]
    fn emit_class<const N: usize>(&self, ring: &RingBuf, submit_flags: u64) -> Result<(), Drop> {
        let Some(mut entry) = ring.reserve::<Record<N>>(0) else {
            return Err(Drop::RingFull);
        };
        let record = entry.as_mut_ptr();
        // SAFETY: `record` points at a reserved, writable `Record<N>`.
        let (record_header, data) = unsafe { (&raw mut (*record).header, &raw mut (*record).data) };
        // SAFETY: as above.
        unsafe { record_header.write(*self.header) };
        let data = data.cast::<u8>();
        let cap_len = self.header.cap_len;
        let copied = match self.vlan {
            None => load::<N>(self.ctx, 0, data, cap_len),
            Some(tag) => copy_with_vlan::<N>(self.ctx, data, cap_len, tag),
        };
        if copied {
            entry.submit(submit_flags);
            Ok(())
        } else {
            entry.discard(0);
            Err(Drop::CopyFailed)
        }
    }
}

/// Copies the frame with its out-of-band VLAN tag put back after the MACs.
#[inline(always)]
fn copy_with_vlan<const N: usize>(
    ctx: &TcContext,
    data: *mut u8,
    cap_len: u32,
    tag: VlanTag,
) -> bool {
    if cap_len <= MACS_LEN {
        return load::<N>(ctx, 0, data, cap_len);
    }
    if !load::<N>(ctx, 0, data, MACS_LEN) {
        return false;
    }
    let [p0, p1] = tag.proto.to_ne_bytes();
    let [t0, t1] = tag.tci.to_be_bytes();
    // SAFETY: N >= 128, so bytes 12..16 lie inside the record.
    unsafe {
        data.add(12).write(p0);
        data.add(13).write(p1);
        data.add(14).write(t0);
        data.add(15).write(t1);
    }
    let after_tag = MACS_LEN + VLAN_TAG_LEN;
    if cap_len <= after_tag {
        return true;
    }
    // SAFETY: 16 < N, and `load` bounds the length by N - 16.
    let rest = unsafe { data.add(after_tag as usize) };
    load_bounded(
        ctx,
        MACS_LEN,
        rest,
        cap_len - after_tag,
        N as u32 - after_tag,
    )
}

#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: u32, to: *mut u8, len: u32) -> bool {
    load_bounded(ctx, offset, to, len, N as u32)
}

/// `bpf_skb_load_bytes` with a length the verifier can see is 1..=`max`.
///
/// LLVM knows the callers' bounds and would drop a plain check as redundant,
/// leaving the verifier with a length it cannot bound ("invalid zero-sized
/// read", "min value is outside of the allowed memory range"). `black_box`
/// hides the value from LLVM, so the checks stay, right before the call and
/// on the register that is passed.
#[inline(always)]
fn load_bounded(ctx: &TcContext, offset: u32, to: *mut u8, len: u32, max: u32) -> bool {
    let len = core::hint::black_box(len);
    if len > max {
        return false;
    }
    if len < 1 {
        return false;
    }
    // SAFETY: `to` has room for `max` bytes and `len` is 1..=max.
    unsafe { bpf_skb_load_bytes(ctx.skb.skb.cast(), offset, to.cast(), len) == 0 }
}
