//! eBPF instructions and a small assembler with labels.
//!
//! [`Asm`] appends instructions; jumps name a [`Label`] that may be bound
//! later, and [`Asm::finish`] resolves every jump offset.

use thiserror::Error;

/// One eBPF instruction (`struct bpf_insn` in `<linux/bpf.h>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    /// Class, size/source and operation bits.
    pub code: u8,
    /// Destination register, 0..=10.
    pub dst: u8,
    /// Source register, 0..=10, or a pseudo source (e.g. [`PSEUDO_MAP_FD`]).
    pub src: u8,
    /// Memory offset, or jump offset in instructions after the next one.
    pub off: i16,
    /// The constant operand.
    pub imm: i32,
}

impl Insn {
    /// The 8 bytes the kernel reads, for this (little-endian) host.
    pub fn to_bytes(&self) -> [u8; 8] {
        let [o0, o1] = self.off.to_le_bytes();
        let [i0, i1, i2, i3] = self.imm.to_le_bytes();
        [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            o0,
            o1,
            i0,
            i1,
            i2,
            i3,
        ]
    }
}

/// Encodes a program as the kernel reads it.
pub fn program_bytes(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(Insn::to_bytes).collect()
}

/// A register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg(pub u8);

impl Reg {
    /// Return value; helper results.
    pub const R0: Self = Self(0);
    /// First argument; the context at entry.
    pub const R1: Self = Self(1);
    /// Second argument.
    pub const R2: Self = Self(2);
    /// Third argument.
    pub const R3: Self = Self(3);
    /// Fourth argument.
    pub const R4: Self = Self(4);
    /// Fifth argument.
    pub const R5: Self = Self(5);
    /// Callee-saved.
    pub const R6: Self = Self(6);
    /// Callee-saved.
    pub const R7: Self = Self(7);
    /// Callee-saved.
    pub const R8: Self = Self(8);
    /// Callee-saved.
    pub const R9: Self = Self(9);
    /// Frame pointer, read-only.
    pub const FP: Self = Self(10);
}

/// Instruction classes.
pub mod class {
    /// Loads of 64-bit immediates; legacy packet loads.
    pub const LD: u8 = 0x00;
    /// Loads from memory.
    pub const LDX: u8 = 0x01;
    /// Stores of immediates.
    pub const ST: u8 = 0x02;
    /// Stores of registers.
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic (zero-extends the result).
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls, exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Legacy packet-load modes of class [`class::LD`].
pub mod mode {
    /// 64-bit immediate (two instruction slots).
    pub const IMM: u8 = 0x00;
    /// Packet bytes at a constant offset; exits with 0 when out of bounds.
    pub const ABS: u8 = 0x20;
    /// Packet bytes at src + imm; exits with 0 when out of bounds.
    pub const IND: u8 = 0x40;
    /// Memory at src + off.
    pub const MEM: u8 = 0x60;
}

/// The `src` of `ld_imm64` that makes `imm` a map file descriptor.
pub const PSEUDO_MAP_FD: u8 = 1;

/// Helper `bpf_tail_call(ctx, prog_array, index)`.
pub const HELPER_TAIL_CALL: i32 = 12;
/// Helper `bpf_skb_load_bytes(skb, offset, to, len)`.
pub const HELPER_SKB_LOAD_BYTES: i32 = 26;

/// Memory access sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Size {
    /// 32 bits.
    W = 0x00,
    /// 16 bits.
    H = 0x08,
    /// 8 bits.
    B = 0x10,
    /// 64 bits.
    DW = 0x18,
}

impl Size {
    /// Bytes of this size.
    pub const fn bytes(self) -> u32 {
        match self {
            Self::B => 1,
            Self::H => 2,
            Self::W => 4,
            Self::DW => 8,
        }
    }
}

/// Arithmetic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Alu {
    /// dst += src
    Add = 0x00,
    /// dst -= src
    Sub = 0x10,
    /// dst *= src
    Mul = 0x20,
    /// dst /= src, unsigned; 0 when src is 0
    Div = 0x30,
    /// dst |= src
    Or = 0x40,
    /// dst &= src
    And = 0x50,
    /// dst <<= src
    Lsh = 0x60,
    /// dst >>= src, logical
    Rsh = 0x70,
    /// dst = -dst
    Neg = 0x80,
    /// dst %= src, unsigned; unchanged when src is 0
    Mod = 0x90,
    /// dst ^= src
    Xor = 0xa0,
    /// dst = src
    Mov = 0xb0,
    /// dst >>= src, arithmetic
    Arsh = 0xc0,
}

/// Byte-swap operation (`BPF_END`), with `BPF_TO_BE`.
const END_TO_BE: u8 = 0xd0 | 0x08;

/// Jump conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Jmp {
    /// ==
    Eq = 0x10,
    /// > unsigned
    Gt = 0x20,
    /// >= unsigned
    Ge = 0x30,
    /// & != 0
    Set = 0x40,
    /// !=
    Ne = 0x50,
    /// > signed
    Sgt = 0x60,
    /// >= signed
    Sge = 0x70,
    /// < unsigned
    Lt = 0xa0,
    /// <= unsigned
    Le = 0xb0,
    /// < signed
    Slt = 0xc0,
    /// <= signed
    Sle = 0xd0,
}

impl Jmp {
    /// The condition that holds exactly when this one does not, if eBPF has one.
    pub const fn inverse(self) -> Option<Self> {
        Some(match self {
            Self::Eq => Self::Ne,
            Self::Ne => Self::Eq,
            Self::Gt => Self::Le,
            Self::Le => Self::Gt,
            Self::Ge => Self::Lt,
            Self::Lt => Self::Ge,
            Self::Sgt => Self::Sle,
            Self::Sle => Self::Sgt,
            Self::Sge => Self::Slt,
            Self::Slt => Self::Sge,
            Self::Set => return None,
        })
    }
}

/// Operation code bits of `BPF_JA`, `BPF_CALL` and `BPF_EXIT`.
const JA: u8 = 0x00;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// Source bit: the operand is a register.
const SRC_X: u8 = 0x08;

/// A jump target, created by [`Asm::label`] and placed by [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(usize);

/// Why [`Asm::finish`] failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AsmError {
    /// A jump names a label that was never bound.
    #[error("label {0} is used but never bound")]
    Unbound(usize),
    /// A jump is farther than an `i16` offset reaches.
    #[error("jump at {at} is too far for a 16-bit offset")]
    TooFar {
        /// Index of the jump instruction.
        at: usize,
    },
}

/// Appends instructions; resolves label jumps in [`Asm::finish`].
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Instructions so far (jumps to labels not yet resolved).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether nothing has been emitted.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// A new label, not yet bound.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction emitted.
    ///
    /// # Panics
    /// If the label is already bound.
    pub fn bind(&mut self, label: Label) {
        let slot = &mut self.labels[label.0];
        assert!(slot.is_none(), "label {} bound twice", label.0);
        *slot = Some(self.insns.len());
    }

    /// Appends a raw instruction.
    pub fn emit(&mut self, insn: Insn) {
        self.insns.push(insn);
    }

    fn raw(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) {
        self.emit(Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        });
    }

    fn jump_to(&mut self, code: u8, dst: Reg, src: Reg, imm: i32, target: Label) {
        self.fixups.push((self.insns.len(), target));
        self.raw(code, dst, src, 0, imm);
    }

    /// 64-bit `dst op= imm` (imm sign-extended).
    pub fn alu64_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.raw(class::ALU64 | op as u8, dst, Reg(0), 0, imm);
    }

    /// 64-bit `dst op= src`.
    pub fn alu64_reg(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.raw(class::ALU64 | op as u8 | SRC_X, dst, src, 0, 0);
    }

    /// 32-bit `dst op= imm`; the result is zero-extended.
    pub fn alu32_imm(&mut self, op: Alu, dst: Reg, imm: i32) {
        self.raw(class::ALU | op as u8, dst, Reg(0), 0, imm);
    }

    /// 32-bit `dst op= src`; the result is zero-extended.
    pub fn alu32_reg(&mut self, op: Alu, dst: Reg, src: Reg) {
        self.raw(class::ALU | op as u8 | SRC_X, dst, src, 0, 0);
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov64_imm(&mut self, dst: Reg, imm: i32) {
        self.alu64_imm(Alu::Mov, dst, imm);
    }

    /// `dst = src` (64-bit).
    pub fn mov64_reg(&mut self, dst: Reg, src: Reg) {
        self.alu64_reg(Alu::Mov, dst, src);
    }

    /// `dst = imm as u32` (zero-extended).
    pub fn mov32_imm(&mut self, dst: Reg, imm: u32) {
        self.alu32_imm(Alu::Mov, dst, imm as i32);
    }

    /// `dst = src as u32` (zero-extended).
    pub fn mov32_reg(&mut self, dst: Reg, src: Reg) {
        self.alu32_reg(Alu::Mov, dst, src);
    }

    /// `dst = -dst` (32-bit).
    pub fn neg32(&mut self, dst: Reg) {
        self.raw(class::ALU | Alu::Neg as u8, dst, Reg(0), 0, 0);
    }

    /// Converts the low `bits` (16, 32 or 64) of `dst` from big-endian to
    /// host order, zero-extending.
    pub fn be(&mut self, dst: Reg, bits: i32) {
        self.raw(class::ALU | END_TO_BE, dst, Reg(0), 0, bits);
    }

    /// `dst = *(size *)(src + off)`.
    pub fn ldx(&mut self, size: Size, dst: Reg, src: Reg, off: i16) {
        self.raw(class::LDX | mode::MEM | size as u8, dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(&mut self, size: Size, dst: Reg, off: i16, src: Reg) {
        self.raw(class::STX | mode::MEM | size as u8, dst, src, off, 0);
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) {
        self.raw(class::ST | mode::MEM | size as u8, dst, Reg(0), off, imm);
    }

    /// `if (dst op imm) goto target`, comparing 64 bits (imm sign-extended).
    pub fn jmp_imm(&mut self, op: Jmp, dst: Reg, imm: i32, target: Label) {
        self.jump_to(class::JMP | op as u8, dst, Reg(0), imm, target);
    }

    /// `if (dst op src) goto target`, comparing 64 bits.
    pub fn jmp_reg(&mut self, op: Jmp, dst: Reg, src: Reg, target: Label) {
        self.jump_to(class::JMP | op as u8 | SRC_X, dst, src, 0, target);
    }

    /// `if ((u32)dst op (u32)imm) goto target`.
    pub fn jmp32_imm(&mut self, op: Jmp, dst: Reg, imm: u32, target: Label) {
        self.jump_to(class::JMP32 | op as u8, dst, Reg(0), imm as i32, target);
    }

    /// `if ((u32)dst op (u32)src) goto target`.
    pub fn jmp32_reg(&mut self, op: Jmp, dst: Reg, src: Reg, target: Label) {
        self.jump_to(class::JMP32 | op as u8 | SRC_X, dst, src, 0, target);
    }

    /// `goto target`.
    pub fn ja(&mut self, target: Label) {
        self.jump_to(class::JMP | JA, Reg(0), Reg(0), 0, target);
    }

    /// Calls helper `id`; clobbers r1-r5, result in r0.
    pub fn call(&mut self, id: i32) {
        self.raw(class::JMP | CALL, Reg(0), Reg(0), 0, id);
    }

    /// Returns r0.
    pub fn exit(&mut self) {
        self.raw(class::JMP | EXIT, Reg(0), Reg(0), 0, 0);
    }

    /// `dst = imm` with a full 64-bit constant (two instruction slots).
    pub fn ld_imm64(&mut self, dst: Reg, imm: u64) {
        self.ld_imm64_raw(dst, Reg(0), imm);
    }

    /// `dst = map` for the map whose file descriptor is `fd`.
    pub fn ld_map_fd(&mut self, dst: Reg, fd: i32) {
        self.ld_imm64_raw(dst, Reg(PSEUDO_MAP_FD), u64::from(fd as u32));
    }

    fn ld_imm64_raw(&mut self, dst: Reg, src: Reg, imm: u64) {
        let code = class::LD | mode::IMM | Size::DW as u8;
        self.raw(code, dst, src, 0, imm as u32 as i32);
        self.raw(0, Reg(0), Reg(0), 0, (imm >> 32) as u32 as i32);
    }

    /// Legacy `r0 = ntoh(*(size *)(skb->data + imm))`; needs the context in
    /// r6, clobbers r1-r5, and exits with 0 when out of bounds.
    pub fn ld_abs(&mut self, size: Size, imm: u32) {
        self.raw(
            class::LD | mode::ABS | size as u8,
            Reg(0),
            Reg(0),
            0,
            imm as i32,
        );
    }

    /// Legacy `r0 = ntoh(*(size *)(skb->data + src + imm))`; as [`Asm::ld_abs`].
    pub fn ld_ind(&mut self, size: Size, src: Reg, imm: u32) {
        self.raw(
            class::LD | mode::IND | size as u8,
            Reg(0),
            src,
            0,
            imm as i32,
        );
    }

    /// Resolves all jumps, drops the instructions no path reaches (the
    /// verifier rejects a program that has any) and returns the program.
    pub fn finish(self) -> Result<Vec<Insn>, AsmError> {
        let mut targets = vec![None; self.insns.len()];
        for &(at, label) in &self.fixups {
            targets[at] = Some(self.labels[label.0].ok_or(AsmError::Unbound(label.0))?);
        }
        let reachable = reachable(&self.insns, &targets);
        // New index of every kept instruction.
        let mut new_index = vec![0usize; self.insns.len() + 1];
        let mut kept = 0;
        for (i, &keep) in reachable.iter().enumerate() {
            new_index[i] = kept;
            kept += usize::from(keep);
        }
        new_index[self.insns.len()] = kept;
        let mut out = Vec::with_capacity(kept);
        for (i, insn) in self.insns.iter().enumerate() {
            if !reachable[i] {
                continue;
            }
            let mut insn = *insn;
            if let Some(target) = targets[i] {
                let off = new_index[target] as i64 - new_index[i] as i64 - 1;
                insn.off = i16::try_from(off).map_err(|_| AsmError::TooFar { at: out.len() })?;
            }
            out.push(insn);
        }
        Ok(out)
    }
}

/// Which instructions some path from the first one reaches.
fn reachable(insns: &[Insn], targets: &[Option<usize>]) -> Vec<bool> {
    let mut seen = vec![false; insns.len()];
    let mut work = vec![0];
    while let Some(i) = work.pop() {
        if i >= insns.len() || seen[i] {
            continue;
        }
        seen[i] = true;
        let insn = insns[i];
        let class = insn.code & 0x07;
        let op = insn.code & 0xf0;
        if insn.code == class::LD | mode::IMM | Size::DW as u8 {
            // ld_imm64 takes two slots.
            if i + 1 < insns.len() {
                seen[i + 1] = true;
            }
            work.push(i + 2);
            continue;
        }
        let is_jump = class == class::JMP || class == class::JMP32;
        if is_jump && op == EXIT {
            continue;
        }
        if let Some(target) = targets[i] {
            work.push(target);
        }
        if !(is_jump && op == JA && class == class::JMP) {
            work.push(i + 1);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registers_in_nibbles() {
        let mut asm = Asm::new();
        asm.mov64_reg(Reg::R6, Reg::R1);
        asm.ldx(Size::W, Reg::R7, Reg::R6, 48);
        asm.exit();
        let bytes = program_bytes(&asm.finish().unwrap());
        assert_eq!(
            bytes,
            [
                0xbf, 0x16, 0, 0, 0, 0, 0, 0, // r6 = r1
                0x61, 0x67, 48, 0, 0, 0, 0, 0, // r7 = *(u32 *)(r6 + 48)
                0x95, 0, 0, 0, 0, 0, 0, 0, // exit
            ]
        );
    }

    #[test]
    fn resolves_forward_and_backward_labels() {
        let mut asm = Asm::new();
        let top = asm.label();
        let end = asm.label();
        asm.bind(top);
        asm.jmp32_imm(Jmp::Eq, Reg::R7, 0x800, end);
        asm.mov32_imm(Reg::R0, 1);
        asm.ja(top);
        asm.bind(end);
        asm.exit();
        let insns = asm.finish().unwrap();
        assert_eq!(insns[0].code, 0x16); // jmp32 jeq k
        assert_eq!(insns[0].off, 2);
        assert_eq!(insns[0].imm, 0x800);
        assert_eq!(insns[2].code, 0x05);
        assert_eq!(insns[2].off, -3);
    }

    #[test]
    fn drops_unreachable_instructions() {
        let mut asm = Asm::new();
        let end = asm.label();
        asm.ld_imm64(Reg::R1, 1 << 40);
        asm.ja(end);
        asm.mov32_imm(Reg::R0, 1); // dead
        asm.bind(end);
        asm.mov64_imm(Reg::R0, -1);
        asm.exit();
        asm.mov32_imm(Reg::R0, 2); // dead
        let insns = asm.finish().unwrap();
        assert_eq!(insns.len(), 5);
        assert_eq!((insns[2].code, insns[2].off), (0x05, 0));
        assert_eq!(insns[3].imm, -1);
    }

    #[test]
    fn unbound_labels_are_errors() {
        let mut asm = Asm::new();
        let nowhere = asm.label();
        asm.ja(nowhere);
        assert_eq!(asm.finish(), Err(AsmError::Unbound(0)));
    }

    #[test]
    fn encodes_map_loads_and_byte_swaps() {
        let mut asm = Asm::new();
        asm.ld_map_fd(Reg::R2, 7);
        asm.be(Reg::R7, 16);
        asm.mov32_imm(Reg::R1, 0x8000_0000);
        let insns = asm.finish().unwrap();
        assert_eq!(
            insns[0],
            Insn {
                code: 0x18,
                dst: 2,
                src: PSEUDO_MAP_FD,
                off: 0,
                imm: 7
            }
        );
        assert_eq!(
            insns[1],
            Insn {
                code: 0,
                dst: 0,
                src: 0,
                off: 0,
                imm: 0
            }
        );
        assert_eq!((insns[2].code, insns[2].imm), (0xdc, 16));
        assert_eq!((insns[3].code, insns[3].imm), (0xb4, i32::MIN));
    }

    #[test]
    fn inverts_conditions() {
        assert_eq!(Jmp::Gt.inverse(), Some(Jmp::Le));
        assert_eq!(Jmp::Set.inverse(), None);
    }
}
