//! One classic program translated instruction by instruction.

use super::{A, CTX, Exits, X, load, skb};
use crate::{
    cbpf::{CbpfInsn, class, misc, mode, op, size, src},
    ebpf::{Alu, Asm, Jmp, Label, Reg, Size},
};

/// Offset from the frame pointer of scratch word M[k] (M[0] at -72).
pub fn mem_offset(k: u32) -> i16 {
    -72 + 4 * k as i16
}

/// Scratch words the program reads; they are zeroed at entry so that every
/// path reads initialised stack.
pub fn scratch_words_read(program: &[CbpfInsn]) -> Vec<u32> {
    let mut words: Vec<u32> = program
        .iter()
        .filter(|i| matches!(i.code, 0x60 | 0x61)) // ld M[k], ldx M[k]
        .map(|i| i.k)
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// Whether the program reads packet bytes or the packet length, the things
/// a VLAN tag changes.
pub fn reads_packet(program: &[CbpfInsn]) -> bool {
    program.iter().any(|i| match i.code & 0x07 {
        class::LD => matches!(i.code & 0xe0, mode::ABS | mode::IND | mode::LEN),
        class::LDX => matches!(i.code & 0xe0, mode::MSH | mode::LEN),
        _ => false,
    })
}

/// Constant-offset packet loads `(k, bytes)`: the window's candidates.
pub fn constant_loads(program: &[CbpfInsn]) -> impl Iterator<Item = (u32, u32)> + '_ {
    program.iter().filter_map(|i| match i.code {
        0x20 | 0x28 | 0x30 => Some((i.k, load_size(i.code))), // ld{,h,b} [k]
        0xb1 => Some((i.k, 1)),                               // ldxb 4*([k]&0xf)
        _ => None,
    })
}

/// Emits a validated program against `frame`. Every path ends in a jump to
/// `exits.accept` (k in r1) or `exits.reject`.
pub fn emit(asm: &mut Asm, exits: Exits, program: &[CbpfInsn], frame: load::Frame) {
    let labels: Vec<Label> = program.iter().map(|_| asm.label()).collect();
    for (pc, insn) in program.iter().enumerate() {
        asm.bind(labels[pc]);
        let target = |skip: u32| labels[pc + 1 + skip as usize];
        let k = insn.k;
        match insn.code & 0x07 {
            class::LD => load_a(asm, exits, frame, *insn),
            class::LDX => load_x(asm, exits, frame, *insn),
            class::ST => asm.stx(Size::W, Reg::FP, mem_offset(k), A),
            class::STX => asm.stx(Size::W, Reg::FP, mem_offset(k), X),
            class::ALU => alu(asm, exits, *insn),
            class::JMP if insn.code & 0xf0 == op::JA => {
                if k != 0 {
                    asm.ja(target(k));
                }
            }
            class::JMP => {
                let (jt, jf) = (u32::from(insn.jt), u32::from(insn.jf));
                let next_is = |skip: u32| skip == 0;
                conditional(asm, *insn, target(jt), target(jf), next_is(jt), next_is(jf));
            }
            class::RET => ret(asm, exits, *insn),
            _ => match insn.code & 0xf8 {
                misc::TAX => asm.mov32_reg(X, A),
                _ => asm.mov32_reg(A, X),
            },
        }
    }
}

fn load_size(code: u16) -> u32 {
    match code & 0x18 {
        size::B => 1,
        size::H => 2,
        _ => 4,
    }
}

fn load_a(asm: &mut Asm, exits: Exits, frame: load::Frame, insn: CbpfInsn) {
    match insn.code & 0xe0 {
        mode::IMM => asm.mov32_imm(A, insn.k),
        mode::MEM => asm.ldx(Size::W, A, Reg::FP, mem_offset(insn.k)),
        mode::LEN => packet_len(asm, A, frame),
        mode::ABS => {
            let offset = load::Offset::Const(insn.k);
            load::emit(asm, exits, frame, A, offset, load_size(insn.code));
        }
        _ => {
            if load::indirect_offset(asm, exits, X, insn.k) {
                load::emit(asm, exits, frame, A, load::Offset::R2, load_size(insn.code));
            }
        }
    }
}

fn load_x(asm: &mut Asm, exits: Exits, frame: load::Frame, insn: CbpfInsn) {
    match insn.code & 0xe0 {
        mode::IMM => asm.mov32_imm(X, insn.k),
        mode::MEM => asm.ldx(Size::W, X, Reg::FP, mem_offset(insn.k)),
        mode::LEN => packet_len(asm, X, frame),
        _ => {
            // MSH: X = 4 * (P[k] & 0xf)
            load::emit(asm, exits, frame, X, load::Offset::Const(insn.k), 1);
            asm.alu32_imm(Alu::And, X, 0xf);
            asm.alu32_imm(Alu::Lsh, X, 2);
        }
    }
}

fn packet_len(asm: &mut Asm, dst: Reg, frame: load::Frame) {
    asm.ldx(Size::W, dst, CTX, skb::LEN);
    if let load::Frame::Vlan = frame {
        asm.alu32_imm(Alu::Add, dst, 4);
    }
}

fn alu_op(code: u16) -> Alu {
    match code & 0xf0 {
        op::ADD => Alu::Add,
        op::SUB => Alu::Sub,
        op::MUL => Alu::Mul,
        op::DIV => Alu::Div,
        op::OR => Alu::Or,
        op::AND => Alu::And,
        op::LSH => Alu::Lsh,
        op::RSH => Alu::Rsh,
        op::MOD => Alu::Mod,
        _ => Alu::Xor,
    }
}

fn alu(asm: &mut Asm, exits: Exits, insn: CbpfInsn) {
    if insn.code & 0xf0 == op::NEG {
        asm.neg32(A);
        return;
    }
    let operation = alu_op(insn.code);
    if insn.code & 0x08 == src::K {
        // Validation rules out division by 0 and shifts by 32 or more.
        asm.alu32_imm(operation, A, insn.k as i32);
        return;
    }
    match operation {
        Alu::Div | Alu::Mod => {
            asm.jmp32_imm(Jmp::Eq, X, 0, exits.reject);
            asm.alu32_reg(operation, A, X);
        }
        Alu::Lsh | Alu::Rsh => {
            // libpcap: a shift by 32 or more gives 0.
            let shift = asm.label();
            let done = asm.label();
            asm.jmp32_imm(Jmp::Lt, X, 32, shift);
            asm.mov32_imm(A, 0);
            asm.ja(done);
            asm.bind(shift);
            asm.alu32_reg(operation, A, X);
            asm.bind(done);
        }
        _ => asm.alu32_reg(operation, A, X),
    }
}

/// A conditional jump; `t_next`/`f_next` say a target is the next instruction.
fn conditional(
    asm: &mut Asm,
    insn: CbpfInsn,
    on_true: Label,
    on_false: Label,
    t_next: bool,
    f_next: bool,
) {
    let condition = match insn.code & 0xf0 {
        op::JEQ => Jmp::Eq,
        op::JGT => Jmp::Gt,
        op::JGE => Jmp::Ge,
        _ => Jmp::Set,
    };
    let jump = |asm: &mut Asm, condition: Jmp, target: Label| {
        if insn.code & 0x08 == src::X {
            asm.jmp32_reg(condition, A, X, target);
        } else {
            asm.jmp32_imm(condition, A, insn.k, target);
        }
    };
    if insn.jt == insn.jf {
        if !t_next {
            asm.ja(on_true);
        }
    } else if f_next {
        jump(asm, condition, on_true);
    } else if let (true, Some(inverse)) = (t_next, condition.inverse()) {
        jump(asm, inverse, on_false);
    } else {
        jump(asm, condition, on_true);
        asm.ja(on_false);
    }
}

fn ret(asm: &mut Asm, exits: Exits, insn: CbpfInsn) {
    if insn.code & 0x18 == src::A {
        asm.jmp32_imm(Jmp::Eq, A, 0, exits.reject);
        asm.mov32_reg(Reg::R1, A);
        asm.ja(exits.accept);
    } else if insn.k == 0 {
        asm.ja(exits.reject);
    } else {
        asm.mov32_imm(Reg::R1, insn.k);
        asm.ja(exits.accept);
    }
}
