//! Classic BPF translated one to one the way the kernel's
//! `bpf_convert_filter` runs a classic socket filter: the baseline "kernel
//! classic BPF" in benchmarks.
//!
//! The result is a `BPF_PROG_TYPE_SOCKET_FILTER` program: A in r0, X in r7,
//! the context in r6, M[] on the stack, packet bytes through the legacy
//! `BPF_LD | BPF_ABS` / `BPF_LD | BPF_IND` instructions (which end the
//! program with 0 when a load is out of bounds), and the classic return
//! value as the program's. Like the kernel, and unlike libpcap, a shift by
//! X of 32 or more shifts by X modulo 32. Packets are not VLAN-aware.
//!
//! `BPF_PROG_TEST_RUN` hands a socket filter the packet after its first 14
//! bytes; [`socket_filter_input`] prepends 14 bytes so the filter sees the
//! whole frame from offset 0.

use crate::{
    cbpf::{self, CbpfInsn, ProgramError, class, misc, mode, op, size, src},
    ebpf::{Alu, Asm, Insn, Jmp, Label, Reg, Size},
};

const A: Reg = Reg::R0;
const X: Reg = Reg::R7;
const CTX: Reg = Reg::R6;
const TMP: Reg = Reg::R2;

/// Translates a classic program as the kernel does for a socket filter;
/// like the kernel, refuses backward jumps (`protochain`).
pub fn translate_classic_like(program: &[CbpfInsn]) -> Result<Vec<Insn>, ProgramError> {
    cbpf::validate(program)?;
    let backward = |i: &CbpfInsn| i.code == class::JMP | op::JA && (i.k as i32) < 0;
    if let Some(pc) = program.iter().position(backward) {
        return Err(ProgramError::BackwardJump { pc });
    }
    let mut asm = Asm::new();
    // The kernel clears A and X with XOR; the verifier wants them written
    // before they are read, so we move 0 into them.
    asm.mov32_imm(A, 0);
    asm.mov32_imm(X, 0);
    asm.mov64_reg(CTX, Reg::R1);
    let labels: Vec<Label> = program.iter().map(|_| asm.label()).collect();
    for (pc, insn) in program.iter().enumerate() {
        asm.bind(labels[pc]);
        let target = |skip: u8| labels[pc + 1 + usize::from(skip)];
        let k = insn.k;
        // M[k] at fp - 4 * (16 - k), only for k < 16 (validated).
        let mem = || -4 * (cbpf::MEMWORDS as i16 - k as i16);
        match insn.code & 0x07 {
            class::LD => match insn.code & 0xe0 {
                mode::IMM => asm.mov32_imm(A, k),
                mode::MEM => asm.ldx(Size::W, A, Reg::FP, mem()),
                mode::LEN => asm.ldx(Size::W, A, CTX, 0),
                mode::ABS => asm.ld_abs(load_size(insn.code), k),
                _ => asm.ld_ind(load_size(insn.code), X, k),
            },
            class::LDX => match insn.code & 0xe0 {
                mode::IMM => asm.mov32_imm(X, k),
                mode::MEM => asm.ldx(Size::W, X, Reg::FP, mem()),
                mode::LEN => asm.ldx(Size::W, X, CTX, 0),
                _ => {
                    // The kernel's six-instruction MSH.
                    asm.mov64_reg(X, A);
                    asm.ld_abs(Size::B, k);
                    asm.alu32_imm(Alu::And, A, 0xf);
                    asm.alu32_imm(Alu::Lsh, A, 2);
                    asm.mov64_reg(TMP, X);
                    asm.mov64_reg(X, A);
                    asm.mov64_reg(A, TMP);
                }
            },
            class::ST => asm.stx(Size::W, Reg::FP, mem(), A),
            class::STX => asm.stx(Size::W, Reg::FP, mem(), X),
            class::ALU => alu(&mut asm, *insn),
            class::JMP if insn.code & 0xf0 == op::JA => {
                asm.ja(labels[pc + 1 + k as usize]);
            }
            class::JMP => jump(&mut asm, *insn, target(insn.jt), target(insn.jf)),
            class::RET => {
                if insn.code & 0x18 == src::K {
                    asm.mov32_imm(A, k);
                }
                asm.exit();
            }
            _ => match insn.code & 0xf8 {
                misc::TAX => asm.mov32_reg(X, A),
                _ => asm.mov32_reg(A, X),
            },
        }
    }
    // Labels are all bound and jumps are short for any classic program
    // libpcap can produce (at most 4096 instructions in the kernel).
    Ok(asm.finish().expect("classic jumps resolve"))
}

/// The input `BPF_PROG_TEST_RUN` needs for a socket filter to see `frame`
/// from offset 0: the kernel strips a 14-byte Ethernet header first.
pub fn socket_filter_input(frame: &[u8]) -> Vec<u8> {
    // Locally administered MACs and the local experimental EtherType.
    let mut data = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
    data.extend_from_slice(frame);
    data
}

fn load_size(code: u16) -> Size {
    match code & 0x18 {
        size::B => Size::B,
        size::H => Size::H,
        _ => Size::W,
    }
}

fn alu(asm: &mut Asm, insn: CbpfInsn) {
    if insn.code & 0xf0 == op::NEG {
        asm.neg32(A);
        return;
    }
    let operation = crate::translate::alu_op(insn.code);
    if insn.code & 0x08 == src::K {
        asm.alu32_imm(operation, A, insn.k as i32);
        return;
    }
    if matches!(operation, Alu::Div | Alu::Mod) {
        // Division by zero returns 0, as in the kernel's conversion.
        let nonzero = asm.label();
        asm.mov32_reg(X, X);
        asm.jmp_imm(Jmp::Ne, X, 0, nonzero);
        asm.alu32_reg(Alu::Xor, A, A);
        asm.exit();
        asm.bind(nonzero);
    }
    asm.alu32_reg(operation, A, X);
}

/// The kernel's jump conversion: one jump when either target is the next
/// instruction (inverting JEQ, JGT, JGE), else a jump and a JA; constants
/// that are negative as `i32` go through a register.
fn jump(asm: &mut Asm, insn: CbpfInsn, on_true: Label, on_false: Label) {
    let condition = match insn.code & 0xf0 {
        op::JEQ => Jmp::Eq,
        op::JGT => Jmp::Gt,
        op::JGE => Jmp::Ge,
        _ => Jmp::Set,
    };
    let by_register = insn.code & 0x08 == src::X || (insn.k as i32) < 0;
    let operand = if insn.code & 0x08 == src::X {
        X
    } else {
        if by_register {
            asm.mov32_imm(TMP, insn.k);
        }
        TMP
    };
    let emit = |asm: &mut Asm, condition: Jmp, target: Label| {
        if by_register {
            asm.jmp_reg(condition, A, operand, target);
        } else {
            asm.jmp_imm(condition, A, insn.k as i32, target);
        }
    };
    if insn.jf == 0 {
        emit(asm, condition, on_true);
    } else if let (0, Some(inverse)) = (insn.jt, condition.inverse()) {
        emit(asm, inverse, on_false);
    } else {
        emit(asm, condition, on_true);
        asm.ja(on_false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{LINKTYPE_ETHERNET, compile};

    #[test]
    fn uses_legacy_loads_one_to_one() {
        let program = compile("tcp port 80", LINKTYPE_ETHERNET).unwrap();
        let insns = translate_classic_like(&program).unwrap();
        // `BPF_LD | BPF_ABS` or `BPF_LD | BPF_IND`, of any size: the same
        // encoding in classic BPF and eBPF.
        let is_packet_load = |code: u16| matches!(code & 0xe7, 0x20 | 0x40);
        let classic_loads = program.iter().filter(|i| is_packet_load(i.code)).count();
        let ebpf_loads = insns
            .iter()
            .filter(|i| is_packet_load(i.code.into()))
            .count();
        let msh = program.iter().filter(|i| i.code == 0xb1).count();
        assert_eq!(ebpf_loads, classic_loads + msh);
        assert_eq!(
            insns[..3].iter().map(|i| i.code).collect::<Vec<_>>(),
            [0xb4, 0xb4, 0xbf]
        );
    }

    #[test]
    fn large_constants_compare_through_a_register() {
        let program = compile("ether[0:4] == 0xffffffff", LINKTYPE_ETHERNET).unwrap();
        let insns = translate_classic_like(&program).unwrap();
        let mov = insns
            .iter()
            .position(|i| i.code == 0xb4 && i.dst == 2)
            .unwrap();
        assert_eq!(
            insns[mov + 1].code & 0x0f,
            0x0d,
            "jmp with register operand"
        );
    }

    #[test]
    fn prepends_an_ethernet_header() {
        assert_eq!(socket_filter_input(&[7]).len(), 15);
    }
}
