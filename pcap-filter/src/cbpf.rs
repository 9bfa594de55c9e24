//! Classic BPF: the instruction libpcap emits, its opcodes, and the checks a
//! program must pass before it is translated.

use std::fmt;

use thiserror::Error;

/// One classic BPF instruction, laid out as `struct bpf_insn` in
/// `<pcap/bpf.h>`, so that libpcap's programs are read and passed as they
/// are.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CbpfInsn {
    /// Class, size, mode and operation bits.
    pub code: u16,
    /// Instructions to skip when a conditional jump is taken.
    pub jt: u8,
    /// Instructions to skip when a conditional jump is not taken.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

impl CbpfInsn {
    /// An instruction without jump offsets.
    pub const fn stmt(code: u16, k: u32) -> Self {
        Self {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A conditional jump.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        Self { code, jt, jf, k }
    }
}

impl fmt::Display for CbpfInsn {
    /// The form of `tcpdump -ddd`: `code jt jf k` in decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} {}", self.code, self.jt, self.jf, self.k)
    }
}

/// Instruction classes (`code & 0x07`).
pub mod class {
    /// Load into A.
    pub const LD: u16 = 0x00;
    /// Load into X.
    pub const LDX: u16 = 0x01;
    /// Store A into scratch memory.
    pub const ST: u16 = 0x02;
    /// Store X into scratch memory.
    pub const STX: u16 = 0x03;
    /// Arithmetic on A.
    pub const ALU: u16 = 0x04;
    /// Jumps.
    pub const JMP: u16 = 0x05;
    /// Return.
    pub const RET: u16 = 0x06;
    /// Register transfers.
    pub const MISC: u16 = 0x07;
}

/// Load sizes (`code & 0x18`).
pub mod size {
    /// 32 bits.
    pub const W: u16 = 0x00;
    /// 16 bits.
    pub const H: u16 = 0x08;
    /// 8 bits.
    pub const B: u16 = 0x10;
}

/// Load modes (`code & 0xe0`).
pub mod mode {
    /// The constant k.
    pub const IMM: u16 = 0x00;
    /// Packet bytes at offset k.
    pub const ABS: u16 = 0x20;
    /// Packet bytes at offset X + k.
    pub const IND: u16 = 0x40;
    /// Scratch memory word k.
    pub const MEM: u16 = 0x60;
    /// The packet's length.
    pub const LEN: u16 = 0x80;
    /// `4 * (P[k] & 0xf)`, the IPv4 header length.
    pub const MSH: u16 = 0xa0;
}

/// ALU and jump operations (`code & 0xf0`).
pub mod op {
    /// A + operand.
    pub const ADD: u16 = 0x00;
    /// A - operand.
    pub const SUB: u16 = 0x10;
    /// A * operand.
    pub const MUL: u16 = 0x20;
    /// A / operand, unsigned; division by zero returns 0 from the filter.
    pub const DIV: u16 = 0x30;
    /// A | operand.
    pub const OR: u16 = 0x40;
    /// A & operand.
    pub const AND: u16 = 0x50;
    /// A << operand; 0 when the operand is 32 or more.
    pub const LSH: u16 = 0x60;
    /// A >> operand; 0 when the operand is 32 or more.
    pub const RSH: u16 = 0x70;
    /// -A.
    pub const NEG: u16 = 0x80;
    /// A % operand, unsigned; modulo by zero returns 0 from the filter.
    pub const MOD: u16 = 0x90;
    /// A ^ operand.
    pub const XOR: u16 = 0xa0;

    /// Unconditional jump by k.
    pub const JA: u16 = 0x00;
    /// A == operand.
    pub const JEQ: u16 = 0x10;
    /// A > operand, unsigned.
    pub const JGT: u16 = 0x20;
    /// A >= operand, unsigned.
    pub const JGE: u16 = 0x30;
    /// A & operand != 0.
    pub const JSET: u16 = 0x40;
}

/// Operand sources (`code & 0x08`) for ALU and jumps; return values
/// (`code & 0x18`) for RET.
pub mod src {
    /// The constant k.
    pub const K: u16 = 0x00;
    /// The X register.
    pub const X: u16 = 0x08;
    /// RET returns A.
    pub const A: u16 = 0x10;
}

/// MISC operations (`code & 0xf8`).
pub mod misc {
    /// X = A.
    pub const TAX: u16 = 0x00;
    /// A = X.
    pub const TXA: u16 = 0x80;
}

/// Words of scratch memory, `M[0]` to `M[15]`.
pub const MEMWORDS: u32 = 16;

/// The most backward jumps one run of a filter takes; the next one ends
/// the run with 0 (no match).
///
/// libpcap emits backward jumps only for `protochain`, whose loop takes
/// one per IPv6 extension header or authentication header it steps over.
/// Real chains are short: RFC 8200 (section 4.1) lists six extension
/// header types and asks for each at most once (destination options
/// twice); tunnels start a new chain. libpcap has no bound: a packet with
/// a longer chain (only a crafted one: each header takes at least 8 bytes)
/// is rejected here where tcpdump could match it.
///
/// The kernel's verifier walks the translated loop once per iteration, so
/// this bound is also what the filter program costs to verify (see the
/// [`translate`](crate::translate) module). The kernel's filter and the
/// user-space interpreter ([`crate::interp`], for `-r`) share it, so they
/// agree on every packet.
pub const MAX_BACKWARD_JUMPS: u32 = 64;

/// Why a classic program cannot be translated.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProgramError {
    /// A program needs at least one instruction.
    #[error("the classic BPF program is empty")]
    Empty,
    /// An opcode libpcap's interpreter does not know, or an invalid constant
    /// (division by 0, shift by 32 or more, scratch word 16 or more).
    #[error("invalid classic BPF instruction {code:#06x} k={k} at {pc}")]
    InvalidInstruction {
        /// Index of the instruction.
        pc: usize,
        /// Its opcode.
        code: u16,
        /// Its constant.
        k: u32,
    },
    /// A jump past either end of the program.
    #[error("classic BPF jump out of range at {pc}")]
    JumpOutOfRange {
        /// Index of the jump.
        pc: usize,
    },
    /// A backward jump, which the kernel's classic BPF refuses (only
    /// [`crate::classic_like`] refuses it here).
    #[error("classic BPF backward jump at {pc}: the kernel's classic BPF runs no loops")]
    BackwardJump {
        /// Index of the jump.
        pc: usize,
    },
    /// The last instruction is not a return.
    #[error("the classic BPF program does not end with a return")]
    NoFinalReturn,
}

/// Checks what libpcap's `bpf_validate` checks, except that `ja` may jump
/// backward (k is signed, as libpcap's `bpf_filter` reads it), as
/// `protochain` does; such loops run at most [`MAX_BACKWARD_JUMPS`] times.
pub fn validate(program: &[CbpfInsn]) -> Result<(), ProgramError> {
    let last = program.last().ok_or(ProgramError::Empty)?;
    for (pc, insn) in program.iter().enumerate() {
        if !valid_insn(*insn) {
            return Err(ProgramError::InvalidInstruction {
                pc,
                code: insn.code,
                k: insn.k,
            });
        }
        if insn.code & 0x07 != class::JMP {
            continue;
        }
        let from = pc as u64 + 1;
        let len = program.len() as u64;
        if insn.code & 0xf0 == op::JA {
            if jump_target(pc, insn.k).is_none_or(|to| to as u64 >= len) {
                return Err(ProgramError::JumpOutOfRange { pc });
            }
        } else if from + u64::from(insn.jt.max(insn.jf)) >= len {
            return Err(ProgramError::JumpOutOfRange { pc });
        }
    }
    if last.code & 0x07 != class::RET {
        return Err(ProgramError::NoFinalReturn);
    }
    Ok(())
}

/// Where `ja k` at `pc` goes: `pc + 1 + k`, k signed; `None` before the
/// start.
pub fn jump_target(pc: usize, k: u32) -> Option<usize> {
    (pc + 1).checked_add_signed(k as i32 as isize)
}

/// Whether `program` has a backward jump (a loop).
pub fn has_backward_jumps(program: &[CbpfInsn]) -> bool {
    program.iter().enumerate().any(|(pc, insn)| {
        insn.code == class::JMP | op::JA && jump_target(pc, insn.k).is_some_and(|to| to <= pc)
    })
}

/// The instructions libpcap's interpreter runs, with their constraints on k.
fn valid_insn(insn: CbpfInsn) -> bool {
    use class::{ALU, JMP, LD, LDX, MISC, RET, ST, STX};
    let code = insn.code;
    let k = insn.k;
    // Opcodes are 8 bits; libpcap's interpreter aborts on any other, even
    // though its validator, like the masks below, ignores the high bits.
    if code > 0xff {
        return false;
    }
    match code & 0x07 {
        RET => matches!(code, 0x06 | 0x16),
        LD => match code & 0xe0 {
            mode::ABS | mode::IND => matches!(code & 0x18, size::W | size::H | size::B),
            mode::IMM | mode::LEN => code & 0x18 == size::W,
            mode::MEM => code & 0x18 == size::W && k < MEMWORDS,
            _ => false,
        },
        LDX => match code {
            // ldx #k, ldx len, ldxb 4*([k]&0xf)
            0x01 | 0x81 | 0xb1 => true,
            0x61 => k < MEMWORDS, // ldx M[k]
            _ => false,
        },
        ST | STX => code & 0xf8 == 0 && k < MEMWORDS,
        ALU => {
            let op = code & 0xf0;
            let x = code & 0x08 != 0;
            match op {
                op::NEG => code == (ALU | op::NEG),
                op::DIV | op::MOD => x || k != 0,
                op::LSH | op::RSH => x || k < 32,
                op::ADD | op::SUB | op::MUL | op::OR | op::AND | op::XOR => true,
                _ => false,
            }
        }
        JMP => match code & 0xf0 {
            op::JA => code == JMP,
            op::JEQ | op::JGT | op::JGE | op::JSET => true,
            _ => false,
        },
        MISC => matches!(code, 0x07 | 0x87),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RET_K: u16 = class::RET | src::K;

    #[test]
    fn accepts_a_return() {
        assert_eq!(validate(&[CbpfInsn::stmt(RET_K, 1)]), Ok(()));
    }

    #[test]
    fn rejects_bad_programs() {
        assert_eq!(validate(&[]), Err(ProgramError::Empty));
        let ld = CbpfInsn::stmt(class::LD | size::H | mode::ABS, 12);
        assert_eq!(validate(&[ld]), Err(ProgramError::NoFinalReturn));
        // ja -3 from 1: before the first instruction.
        let ja_before = CbpfInsn::stmt(class::JMP | op::JA, (-3i32) as u32);
        assert_eq!(
            validate(&[ld, ja_before, CbpfInsn::stmt(RET_K, 0)]),
            Err(ProgramError::JumpOutOfRange { pc: 1 })
        );
        let jeq = CbpfInsn::jump(class::JMP | op::JEQ, 1, 1, 0);
        assert_eq!(
            validate(&[jeq, CbpfInsn::stmt(RET_K, 0)]),
            Err(ProgramError::JumpOutOfRange { pc: 0 })
        );
        let div0 = CbpfInsn::stmt(class::ALU | op::DIV, 0);
        assert!(matches!(
            validate(&[div0, CbpfInsn::stmt(RET_K, 0)]),
            Err(ProgramError::InvalidInstruction { pc: 0, .. })
        ));
        let mem16 = CbpfInsn::stmt(class::ST, 16);
        assert!(validate(&[mem16, CbpfInsn::stmt(RET_K, 0)]).is_err());
        let shift32 = CbpfInsn::stmt(class::ALU | op::LSH, 32);
        assert!(validate(&[shift32, CbpfInsn::stmt(RET_K, 0)]).is_err());
        // ld #k with bits above the 8 of an opcode (found by fuzzing:
        // libpcap's bpf_filter aborts on it).
        let wide = CbpfInsn::stmt(0xff00, 1);
        assert!(validate(&[wide, CbpfInsn::stmt(RET_K, 0)]).is_err());
    }

    #[test]
    fn accepts_backward_jumps_within_the_program() {
        let ld = CbpfInsn::stmt(class::LD | size::H | mode::ABS, 12);
        let ret = CbpfInsn::stmt(RET_K, 0);
        // ja -2 from 1: back to 0. ja -1: to itself.
        for k in [-2i32, -1] {
            let program = [ld, CbpfInsn::stmt(class::JMP | op::JA, k as u32), ret];
            assert_eq!(validate(&program), Ok(()));
            assert!(has_backward_jumps(&program));
        }
        let forward = [ld, CbpfInsn::stmt(class::JMP | op::JA, 0), ret];
        assert!(!has_backward_jumps(&forward));
        assert_eq!(jump_target(1, (-2i32) as u32), Some(0));
        assert_eq!(jump_target(1, (-3i32) as u32), None);
    }

    #[test]
    fn displays_like_tcpdump_ddd() {
        assert_eq!(CbpfInsn::jump(0x15, 0x800, 0, 3).to_string(), "21 0 3 2048");
    }
}
