//! Packet loads: `bpf_skb_load_bytes` into a stack buffer, then big-endian
//! to host order; and the same loads against the frame with the
//! out-of-band VLAN tag put back after the MAC addresses.

use super::{CTX, Exits, TAG};
use crate::ebpf::{Alu, Asm, HELPER_SKB_LOAD_BYTES, Jmp, Reg, Size};

/// Offset from the frame pointer of the 8-byte buffer loads go through.
const BUF: i16 = -8;
/// Bytes of the two MAC addresses, after which the VLAN tag goes.
const MACS: u32 = 12;
/// Bytes of the VLAN tag.
const TAG_LEN: u32 = 4;
/// Largest offset `bpf_skb_load_bytes` accepts.
const MAX_OFFSET: u32 = i32::MAX as u32;

/// Which frame the classic program sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The skb's bytes as they are.
    Plain,
    /// The skb's bytes with the tag in [`TAG`] inserted at offset 12.
    Vlan,
}

/// Where a load starts.
#[derive(Clone, Copy, Debug)]
pub enum Offset {
    /// A constant (BPF_ABS, MSH).
    Const(u32),
    /// `X + k`, computed into r2 by [`indirect_offset`].
    R2,
}

/// `dst = frame[offset .. offset + n]` as a big-endian number, n in 1, 2, 4;
/// rejects the packet when any byte is past the end. Clobbers r0-r5.
pub fn emit(asm: &mut Asm, exits: Exits, frame: Frame, dst: Reg, offset: Offset, n: u32) {
    match (frame, offset) {
        (Frame::Plain, offset) => skb_load(asm, exits, dst, offset, n),
        (Frame::Vlan, Offset::Const(v)) => vlan_const(asm, exits, dst, v, n),
        (Frame::Vlan, Offset::R2) => vlan_r2(asm, exits, dst, n),
    }
}

/// r2 = X + k as a 64-bit sum, rejecting offsets the helper cannot take.
/// Returns false when no load can succeed, after jumping to reject.
pub fn indirect_offset(asm: &mut Asm, exits: Exits, x: Reg, k: u32) -> bool {
    if k > MAX_OFFSET {
        asm.ja(exits.reject);
        return false;
    }
    asm.mov64_reg(Reg::R2, x);
    if k != 0 {
        // Up to 2^32 + 2^31: check before the helper truncates it to u32.
        asm.alu64_imm(Alu::Add, Reg::R2, k as i32);
        asm.jmp_imm(Jmp::Gt, Reg::R2, MAX_OFFSET as i32, exits.reject);
    }
    true
}

/// `bpf_skb_load_bytes(ctx, offset, fp + BUF, n)`, reject on error.
fn call_load_bytes(asm: &mut Asm, exits: Exits, offset: Offset, n: u32) -> bool {
    match offset {
        Offset::Const(k) if k > MAX_OFFSET => {
            asm.ja(exits.reject);
            return false;
        }
        Offset::Const(k) => asm.mov32_imm(Reg::R2, k),
        Offset::R2 => {}
    }
    asm.mov64_reg(Reg::R1, CTX);
    asm.mov64_reg(Reg::R3, Reg::FP);
    asm.alu64_imm(Alu::Add, Reg::R3, i32::from(BUF));
    asm.mov64_imm(Reg::R4, n as i32);
    asm.call(HELPER_SKB_LOAD_BYTES);
    asm.jmp_imm(Jmp::Ne, Reg::R0, 0, exits.reject);
    true
}

/// A load from the skb's own bytes.
fn skb_load(asm: &mut Asm, exits: Exits, dst: Reg, offset: Offset, n: u32) {
    if !call_load_bytes(asm, exits, offset, n) {
        return;
    }
    match n {
        1 => asm.ldx(Size::B, dst, Reg::FP, BUF),
        2 => {
            asm.ldx(Size::H, dst, Reg::FP, BUF);
            asm.be(dst, 16);
        }
        _ => {
            asm.ldx(Size::W, dst, Reg::FP, BUF);
            asm.be(dst, 32);
        }
    }
}

/// A load at constant offset `v` of the frame with the tag put back.
fn vlan_const(asm: &mut Asm, exits: Exits, dst: Reg, v: u32, n: u32) {
    let end = u64::from(v) + u64::from(n);
    if end <= u64::from(MACS) {
        return skb_load(asm, exits, dst, Offset::Const(v), n);
    }
    if v >= MACS + TAG_LEN {
        return skb_load(asm, exits, dst, Offset::Const(v - TAG_LEN), n);
    }
    // The load touches the tag: up to three pieces, most significant first.
    let end = end as u32;
    let mut first = true;
    if v < MACS {
        if !call_load_bytes(asm, exits, Offset::Const(v), MACS - v) {
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
        if !call_load_bytes(asm, exits, Offset::Const(MACS), after) {
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
    let cases: Vec<_> = (first_straddle..MACS + TAG_LEN)
        .map(|v| (v, asm.label()))
        .collect();
    for &(v, label) in &cases[..cases.len() - 1] {
        asm.jmp_imm(Jmp::Eq, Reg::R2, v as i32, label);
    }
    for (v, label) in cases {
        asm.bind(label);
        vlan_const(asm, exits, dst, v, n);
        asm.ja(done);
    }
    asm.bind(after_tag);
    asm.alu64_imm(Alu::Sub, Reg::R2, TAG_LEN as i32);
    skb_load(asm, exits, dst, Offset::R2, n);
    asm.ja(done);
    asm.bind(before_tag);
    skb_load(asm, exits, dst, Offset::R2, n);
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
