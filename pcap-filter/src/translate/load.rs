//! Packet loads: `bpf_skb_load_bytes` into a stack buffer, then big-endian
//! to host order; and the same loads against the frame with the
//! out-of-band VLAN tag put back after the MAC addresses.
//!
//! Without a tag, one call at entry copies the first bytes of the packet
//! (up to [`MAX_WINDOW`], as many as the program's loads reach) into a
//! stack window, and loads that fall inside it read the window after
//! checking the copied length: no helper call per load.
//!
//! The window starts 2 bytes past a 4-byte boundary so that the fields of
//! Ethernet and IPv4 headers (EtherType at 12, addresses at 26 and 30,
//! ports at 34 and 36) are naturally aligned: the verifier wants every
//! stack access aligned, and an aligned field is one `ldx` and one byte
//! swap instead of pieces put together.

use super::{CTX, Exits, TAG, WINDOW_LEN, X};
use crate::ebpf::{Alu, Asm, HELPER_SKB_LOAD_BYTES, Jmp, Reg, Size};

/// Offset from the frame pointer of the 8-byte buffer loads go through.
const BUF: i16 = -8;
/// Bytes of the two MAC addresses, after which the VLAN tag goes.
const MACS: u32 = 12;
/// Bytes of the VLAN tag.
const TAG_LEN: u32 = 4;
/// Largest offset `bpf_skb_load_bytes` accepts.
const MAX_OFFSET: u32 = i32::MAX as u32;
/// Most bytes the window holds.
pub const MAX_WINDOW: u32 = 128;
/// Offset from the frame pointer of the window: below M[] (at -72), with
/// packet offset 2 on an 8-byte boundary.
const WINDOW: i16 = -72 - MAX_WINDOW as i16 - 2;
/// How far past `k` the window reaches for loads at `X + k`: X is most
/// often a header length from `ldxb 4*([k]&0xf)`, at most 60.
const INDIRECT_REACH: u32 = 60;

/// Which frame the classic program sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The skb's bytes as they are; the first `window` bytes (0 for none)
    /// were copied by [`prefetch`].
    Plain {
        /// Bytes the window was asked for.
        window: u32,
        /// Whether loads at `X + k` read the window too (else always the
        /// helper). Not in loops: the window's bounds checks split the
        /// verifier's paths by the range of X in every iteration.
        indirect: bool,
    },
    /// The skb's bytes with the tag in [`TAG`] inserted at offset 12.
    Vlan,
}

/// Where a load starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// A constant (BPF_ABS, MSH).
    Const(u32),
    /// `X + k` (BPF_IND).
    Indirect(u32),
}

/// Bytes of window a program needs for its loads `(offset, bytes)`: the
/// end of its farthest constant-offset load, or for loads at `X + k`,
/// [`INDIRECT_REACH`] bytes farther; at most [`MAX_WINDOW`].
pub fn window_for(loads: impl IntoIterator<Item = (Offset, u32)>) -> u32 {
    loads
        .into_iter()
        .filter_map(|(offset, n)| match offset {
            Offset::Const(k) => {
                Some(u64::from(k) + u64::from(n)).filter(|&end| end <= u64::from(MAX_WINDOW))
            }
            Offset::Indirect(k) => {
                let end = u64::from(k) + u64::from(n);
                (end <= u64::from(MAX_WINDOW))
                    .then(|| (end + u64::from(INDIRECT_REACH)).min(u64::from(MAX_WINDOW)))
            }
        })
        .max()
        .unwrap_or(0) as u32
}

/// Copies `min(skb->len, window)` bytes into the window and leaves that
/// count in [`WINDOW_LEN`] (0 if the copy fails, which it cannot).
pub fn prefetch(asm: &mut Asm, window: u32) {
    let clamped = asm.label();
    let done = asm.label();
    asm.ldx(Size::W, Reg::R4, CTX, super::skb::LEN);
    asm.jmp_imm(Jmp::Le, Reg::R4, window as i32, clamped);
    asm.mov64_imm(Reg::R4, window as i32);
    asm.bind(clamped);
    asm.mov64_reg(WINDOW_LEN, Reg::R4);
    asm.jmp_imm(Jmp::Eq, Reg::R4, 0, done);
    asm.mov64_reg(Reg::R1, CTX);
    asm.mov64_imm(Reg::R2, 0);
    asm.mov64_reg(Reg::R3, Reg::FP);
    asm.alu64_imm(Alu::Add, Reg::R3, i32::from(WINDOW));
    asm.call(HELPER_SKB_LOAD_BYTES);
    asm.jmp_imm(Jmp::Eq, Reg::R0, 0, done);
    asm.mov64_imm(WINDOW_LEN, 0);
    asm.bind(done);
}

/// `dst = frame[offset .. offset + n]` as a big-endian number, n in 1, 2, 4;
/// rejects the packet when any byte is past the end. Clobbers r0-r5.
///
/// `checked`: in the plain frame, the window length is known to be at
/// least this much (an earlier load checked it on every path here).
pub fn emit(
    asm: &mut Asm,
    exits: Exits,
    frame: Frame,
    dst: Reg,
    offset: Offset,
    n: u32,
    checked: u32,
) {
    match (frame, offset) {
        (Frame::Plain { window, .. }, Offset::Const(k)) if fits(k, n, window) => {
            window_load(asm, exits, dst, k, n, checked);
        }
        (Frame::Plain { .. }, Offset::Const(k)) => skb_load(asm, exits, dst, Site::Const(k), n),
        (
            Frame::Plain {
                window,
                indirect: true,
            },
            Offset::Indirect(k),
        ) if fits(k, n, window) => {
            window_load_indirect(asm, exits, dst, k, n, window);
        }
        (Frame::Plain { .. }, Offset::Indirect(k)) => {
            if indirect_offset(asm, exits, k) {
                skb_load(asm, exits, dst, Site::R2, n);
            }
        }
        (Frame::Vlan, Offset::Const(v)) => vlan_const(asm, exits, dst, v, n),
        (Frame::Vlan, Offset::Indirect(k)) => {
            if indirect_offset(asm, exits, k) {
                vlan_r2(asm, exits, dst, n);
            }
        }
    }
}

/// Whether bytes `k .. k + n` lie inside a window of `window` bytes.
fn fits(k: u32, n: u32, window: u32) -> bool {
    u64::from(k) + u64::from(n) <= u64::from(window)
}

/// Where a helper load starts.
#[derive(Clone, Copy, Debug)]
enum Site {
    /// A constant.
    Const(u32),
    /// The 64-bit offset in r2, at most [`MAX_OFFSET`] or a u32.
    R2,
}

/// r2 = X + k as a 64-bit sum, rejecting offsets the helper cannot take.
/// Returns false when no load can succeed, after jumping to reject.
fn indirect_offset(asm: &mut Asm, exits: Exits, k: u32) -> bool {
    if k > MAX_OFFSET {
        asm.ja(exits.reject);
        return false;
    }
    asm.mov64_reg(Reg::R2, X);
    if k != 0 {
        // Up to 2^32 + 2^31: check before the helper truncates it to u32.
        asm.alu64_imm(Alu::Add, Reg::R2, k as i32);
        asm.jmp_imm(Jmp::Gt, Reg::R2, MAX_OFFSET as i32, exits.reject);
    }
    true
}

/// `bpf_skb_load_bytes(ctx, offset, fp + BUF, n)`, reject on error.
fn call_load_bytes(asm: &mut Asm, exits: Exits, offset: Site, n: u32) -> bool {
    match offset {
        Site::Const(k) if k > MAX_OFFSET => {
            asm.ja(exits.reject);
            return false;
        }
        Site::Const(k) => asm.mov32_imm(Reg::R2, k),
        Site::R2 => {}
    }
    asm.mov64_reg(Reg::R1, CTX);
    asm.mov64_reg(Reg::R3, Reg::FP);
    asm.alu64_imm(Alu::Add, Reg::R3, i32::from(BUF));
    asm.mov64_imm(Reg::R4, n as i32);
    asm.call(HELPER_SKB_LOAD_BYTES);
    asm.jmp_imm(Jmp::Ne, Reg::R0, 0, exits.reject);
    true
}

/// A load from the window at constant `k`: rejects if the packet is
/// shorter than `k + n` (unless `checked` already covers it).
///
/// A field the window's alignment leaves misaligned is put together from
/// aligned pieces, e.g. a word at 28 from the halfwords at 28 and 30.
fn window_load(asm: &mut Asm, exits: Exits, dst: Reg, k: u32, n: u32, checked: u32) {
    if k + n > checked {
        asm.jmp_imm(Jmp::Lt, WINDOW_LEN, (k + n) as i32, exits.reject);
    }
    let at = WINDOW + k as i16;
    read_pieces(asm, dst, Reg::FP, at, n, Some(at.rem_euclid(4) as u32));
}

/// A load at `X + k` from the window when it lies inside, else with the
/// helper; `k + n` is at most `window`.
///
/// Stack reads at a variable offset must be aligned as far as the verifier
/// can tell from the offset's known bits: a test of the low bits picks the
/// widest reads the offset allows.
fn window_load_indirect(asm: &mut Asm, exits: Exits, dst: Reg, k: u32, n: u32, window: u32) {
    let outside = asm.label();
    let done = asm.label();
    asm.mov64_reg(Reg::R2, X);
    if k != 0 {
        asm.alu64_imm(Alu::Add, Reg::R2, k as i32);
    }
    asm.jmp_imm(Jmp::Gt, Reg::R2, (window - n) as i32, outside);
    // Inside the window but past the bytes copied: past the packet's end.
    asm.mov64_reg(Reg::R3, Reg::R2);
    asm.alu64_imm(Alu::Add, Reg::R3, n as i32);
    asm.jmp_reg(Jmp::Gt, Reg::R3, WINDOW_LEN, exits.reject);
    match n {
        1 => {
            asm.mov64_reg(Reg::R3, Reg::FP);
            asm.alu64_reg(Alu::Add, Reg::R3, Reg::R2);
            read(asm, dst, Reg::R3, WINDOW, 1);
        }
        2 => {
            // WINDOW is even: r2 even makes the halfword aligned.
            let odd = asm.label();
            asm.jmp_imm(Jmp::Set, Reg::R2, 1, odd);
            asm.mov64_reg(Reg::R3, Reg::FP);
            asm.alu64_reg(Alu::Add, Reg::R3, Reg::R2);
            read(asm, dst, Reg::R3, WINDOW, 2);
            asm.ja(done);
            asm.bind(odd);
            asm.mov64_reg(Reg::R3, Reg::FP);
            asm.alu64_reg(Alu::Add, Reg::R3, Reg::R2);
            read_pieces(asm, dst, Reg::R3, WINDOW, 2, None);
        }
        _ => {
            // r3 = r2 + 2 (it holds r2 + 4): fp + WINDOW + r2 is fp + r3 +
            // (WINDOW - 2), and WINDOW - 2 is a multiple of 4, so r3 a
            // multiple of 4 makes the word aligned, r3 even its halves.
            let unaligned = asm.label();
            let odd = asm.label();
            let at = WINDOW - 2;
            asm.alu64_imm(Alu::Add, Reg::R3, -2);
            asm.jmp_imm(Jmp::Set, Reg::R3, 3, unaligned);
            asm.alu64_reg(Alu::Add, Reg::R3, Reg::FP);
            read(asm, dst, Reg::R3, at, 4);
            asm.ja(done);
            asm.bind(unaligned);
            asm.jmp_imm(Jmp::Set, Reg::R3, 1, odd);
            asm.alu64_reg(Alu::Add, Reg::R3, Reg::FP);
            read_pieces(asm, dst, Reg::R3, at, 4, Some(2));
            asm.ja(done);
            asm.bind(odd);
            asm.alu64_reg(Alu::Add, Reg::R3, Reg::FP);
            read_pieces(asm, dst, Reg::R3, at, 4, None);
        }
    }
    asm.ja(done);
    asm.bind(outside);
    if k != 0 {
        // Up to 2^32 + 2^31: check before the helper truncates it to u32.
        asm.jmp_imm(Jmp::Gt, Reg::R2, MAX_OFFSET as i32, exits.reject);
    }
    skb_load(asm, exits, dst, Site::R2, n);
    asm.bind(done);
}

/// `dst = ntoh(*(n bytes *)(base + at))`, from the widest naturally
/// aligned pieces, given `base + at` modulo 4 (`None`: unknown, bytes
/// only). Clobbers r1 when there is more than one piece.
fn read_pieces(asm: &mut Asm, dst: Reg, base: Reg, at: i16, n: u32, address_mod4: Option<u32>) {
    let mut first = true;
    let mut done = 0;
    while done < n {
        let piece = match address_mod4 {
            Some(address) => [4, 2, 1]
                .into_iter()
                .find(|&size| (address + done) % size == 0 && done + size <= n)
                .unwrap_or(1),
            None => 1,
        };
        let offset = at + done as i16;
        if first && piece == n {
            read(asm, dst, base, offset, n);
            return;
        }
        read(asm, Reg::R1, base, offset, piece);
        append(asm, dst, Reg::R1, piece, &mut first);
        done += piece;
    }
}

/// `dst = ntoh(*(n bytes *)(base + at))`.
fn read(asm: &mut Asm, dst: Reg, base: Reg, at: i16, n: u32) {
    match n {
        1 => asm.ldx(Size::B, dst, base, at),
        2 => {
            asm.ldx(Size::H, dst, base, at);
            asm.be(dst, 16);
        }
        _ => {
            asm.ldx(Size::W, dst, base, at);
            asm.be(dst, 32);
        }
    }
}

/// A load from the skb's own bytes.
fn skb_load(asm: &mut Asm, exits: Exits, dst: Reg, offset: Site, n: u32) {
    if call_load_bytes(asm, exits, offset, n) {
        read(asm, dst, Reg::FP, BUF, n);
    }
}

/// A load at constant offset `v` of the frame with the tag put back.
fn vlan_const(asm: &mut Asm, exits: Exits, dst: Reg, v: u32, n: u32) {
    let end = u64::from(v) + u64::from(n);
    if end <= u64::from(MACS) {
        return skb_load(asm, exits, dst, Site::Const(v), n);
    }
    if v >= MACS + TAG_LEN {
        return skb_load(asm, exits, dst, Site::Const(v - TAG_LEN), n);
    }
    // The load touches the tag: up to three pieces, most significant first.
    let end = end as u32;
    let mut first = true;
    if v < MACS {
        if !call_load_bytes(asm, exits, Site::Const(v), MACS - v) {
            return;
        }
        append_buffer(asm, dst, MACS - v, &mut first);
    }
    let (tag_start, tag_end) = (v.max(MACS), end.min(MACS + TAG_LEN));
    let tag_bytes = tag_end - tag_start;
    asm.mov32_reg(Reg::R1, TAG);
    let below = 8 * (MACS + TAG_LEN - tag_end);
    if below > 0 {
        asm.alu32_imm(Alu::Rsh, Reg::R1, below as i32);
    }
    if tag_bytes < 4 {
        asm.alu32_imm(Alu::And, Reg::R1, ((1u32 << (8 * tag_bytes)) - 1) as i32);
    }
    append(asm, dst, Reg::R1, tag_bytes, &mut first);
    if end > MACS + TAG_LEN {
        let after = end - (MACS + TAG_LEN);
        if !call_load_bytes(asm, exits, Site::Const(MACS), after) {
            return;
        }
        append_buffer(asm, dst, after, &mut first);
    }
}

/// A load at r2 (runtime offset, at most [`MAX_OFFSET`] or a u32) of the
/// frame with the tag put back.
fn vlan_r2(asm: &mut Asm, exits: Exits, dst: Reg, n: u32) {
    let done = asm.label();
    let after_tag = asm.label();
    let before_tag = asm.label();
    asm.jmp_imm(Jmp::Ge, Reg::R2, (MACS + TAG_LEN) as i32, after_tag);
    // Offsets below `first_straddle` end at or before the MACs' end.
    let first_straddle = MACS + 1 - n;
    asm.jmp_imm(Jmp::Lt, Reg::R2, first_straddle as i32, before_tag);
    // A few offsets touch the tag: one constant-offset load each.
    // The last offset falls through the comparisons into its own case.
    let last = MACS + TAG_LEN - 1;
    let cases: Vec<_> = (first_straddle..last).map(|v| (v, asm.label())).collect();
    for &(v, label) in &cases {
        asm.jmp_imm(Jmp::Eq, Reg::R2, v as i32, label);
    }
    vlan_const(asm, exits, dst, last, n);
    asm.ja(done);
    for (v, label) in cases {
        asm.bind(label);
        vlan_const(asm, exits, dst, v, n);
        asm.ja(done);
    }
    asm.bind(after_tag);
    asm.alu64_imm(Alu::Sub, Reg::R2, TAG_LEN as i32);
    skb_load(asm, exits, dst, Site::R2, n);
    asm.ja(done);
    asm.bind(before_tag);
    skb_load(asm, exits, dst, Site::R2, n);
    asm.bind(done);
}

/// Appends the first `n` buffer bytes to `dst`, most significant first.
fn append_buffer(asm: &mut Asm, dst: Reg, n: u32, first: &mut bool) {
    for i in 0..n {
        asm.ldx(Size::B, Reg::R1, Reg::FP, BUF + i as i16);
        append(asm, dst, Reg::R1, 1, first);
    }
}

/// `dst = dst << 8 * bytes | src`, or `dst = src` for the first piece.
fn append(asm: &mut Asm, dst: Reg, src: Reg, bytes: u32, first: &mut bool) {
    if *first {
        asm.mov32_reg(dst, src);
        *first = false;
    } else {
        asm.alu32_imm(Alu::Lsh, dst, (8 * bytes) as i32);
        asm.alu32_reg(Alu::Or, dst, src);
    }
}
