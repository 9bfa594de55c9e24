//! One classic program translated instruction by instruction.

use super::{A, CTX, Exits, X, load, skb};
use crate::{
    cbpf::{CbpfInsn, MAX_BACKWARD_JUMPS, class, jump_target, misc, mode, op, size, src},
    ebpf::{Alu, Asm, Jmp, Label, Reg, Size},
};

/// Offset from the frame pointer of scratch word M[k] (M[0] at -72).
pub fn mem_offset(k: u32) -> i16 {
    -72 + 4 * k as i16
}

/// Offset from the frame pointer of the loop counter (8 bytes, below the
/// window): how many more backward jumps the run may take.
pub const LOOPS: i16 = -216;

/// Sets the loop counter to [`MAX_BACKWARD_JUMPS`]; for programs with
/// backward jumps, before either path runs. Clobbers r1.
pub fn start_loop_counter(asm: &mut Asm) {
    asm.mov64_imm(Reg::R1, MAX_BACKWARD_JUMPS as i32);
    asm.stx(Size::DW, Reg::FP, LOOPS, Reg::R1);
}

/// A backward jump to `target`: rejects the packet when the counter is
/// spent, else counts it down and jumps. The verifier follows the counter
/// exactly, so it sees the loop end. Clobbers r1 and r2.
///
/// A and X keep their values but lose, for the verifier, what it knew of
/// their ranges (`A ^= len; A ^= len` leaves A as it is, and makes it a
/// number the verifier knows nothing of). Otherwise each iteration would
/// reach the loop's head with other ranges of X (one per path taken so
/// far, since `protochain` steps by a header length), and the verifier,
/// unable to prune one by another, would walk the square of the bound's
/// paths; with them hidden, every path into the head with the same
/// counter is the same state to it, and the cost grows with the bound.
fn loop_back(asm: &mut Asm, exits: Exits, target: Label) {
    asm.ldx(Size::DW, Reg::R1, Reg::FP, LOOPS);
    asm.jmp_imm(Jmp::Eq, Reg::R1, 0, exits.reject);
    asm.alu64_imm(Alu::Sub, Reg::R1, 1);
    asm.stx(Size::DW, Reg::FP, LOOPS, Reg::R1);
    asm.ldx(Size::W, Reg::R2, CTX, skb::LEN);
    for register in [A, X] {
        asm.alu32_reg(Alu::Xor, register, Reg::R2);
        asm.alu32_reg(Alu::Xor, register, Reg::R2);
    }
    asm.ja(target);
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

/// Packet loads `(offset, bytes)`: what the window should cover.
pub fn packet_loads(program: &[CbpfInsn]) -> impl Iterator<Item = (load::Offset, u32)> + '_ {
    program.iter().filter_map(|&i| packet_load(i))
}

/// The packet bytes `insn` reads, if it is a packet load.
fn packet_load(insn: CbpfInsn) -> Option<(load::Offset, u32)> {
    let n = load_size(insn.code);
    match (insn.code & 0x07, insn.code & 0xe0) {
        (class::LD, mode::ABS) => Some((load::Offset::Const(insn.k), n)),
        (class::LD, mode::IND) => Some((load::Offset::Indirect(insn.k), n)),
        // ldxb 4*([k]&0xf)
        (class::LDX, mode::MSH) => Some((load::Offset::Const(insn.k), 1)),
        _ => None,
    }
}

/// For each instruction, how many bytes of window every path to it has
/// already checked the packet for: the constant-offset loads inside
/// `window` on every path reaching it.
fn checked_lengths(program: &[CbpfInsn], frame: load::Frame) -> Vec<u32> {
    let load::Frame::Plain { window, .. } = frame else {
        return vec![0; program.len()];
    };
    forward(program, 0, u32::min, |before, insn| {
        match packet_load(insn) {
            Some((load::Offset::Const(k), n))
                if u64::from(k) + u64::from(n) <= u64::from(window) =>
            {
                before.max(k + n)
            }
            _ => before,
        }
    })
    .into_iter()
    .map(|known| known.unwrap_or(0))
    .collect()
}

/// What the program may read before writing it; it must start as 0, since
/// the verifier rejects reads of registers and stack never written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unwritten {
    /// A.
    pub a: bool,
    /// X.
    pub x: bool,
    /// Scratch words, ascending.
    pub words: Vec<u32>,
}

/// Bits of the state [`unwritten`] tracks: M[0..16], then A and X.
const BIT_A: u32 = 1 << 16;
const BIT_X: u32 = 1 << 17;

/// What some path through the program reads before writing it.
pub fn unwritten(program: &[CbpfInsn]) -> Unwritten {
    let written = forward(
        program,
        0,
        |a, b| a & b,
        |written, insn| written | accesses(insn).1,
    );
    let unset = program
        .iter()
        .zip(written)
        .filter_map(|(&insn, written)| Some(accesses(insn).0 & !written?))
        .fold(0, |all, unset| all | unset);
    Unwritten {
        a: unset & BIT_A != 0,
        x: unset & BIT_X != 0,
        words: (0..16).filter(|k| unset & (1 << k) != 0).collect(),
    }
}

/// What an instruction reads and what it writes, as bits of A, X and
/// M[] (see [`BIT_A`]).
fn accesses(insn: CbpfInsn) -> (u32, u32) {
    let by_x = if insn.code & 0x08 == src::X { BIT_X } else { 0 };
    let word = 1u32.checked_shl(insn.k).unwrap_or(0);
    match insn.code & 0x07 {
        class::LD => match insn.code & 0xe0 {
            mode::IND => (BIT_X, BIT_A),
            mode::MEM => (word, BIT_A),
            _ => (0, BIT_A),
        },
        class::LDX if insn.code & 0xe0 == mode::MEM => (word, BIT_X),
        class::LDX => (0, BIT_X),
        class::ST => (BIT_A, word),
        class::STX => (BIT_X, word),
        class::ALU if insn.code & 0xf0 == op::NEG => (BIT_A, BIT_A),
        class::ALU => (BIT_A | by_x, BIT_A),
        class::JMP if insn.code & 0xf0 == op::JA => (0, 0),
        class::JMP => (BIT_A | by_x, 0),
        class::RET if insn.code & 0x18 == src::A => (BIT_A, 0),
        class::RET => (0, 0),
        _ if insn.code & 0xf8 == misc::TAX => (BIT_A, BIT_X),
        _ => (BIT_X, BIT_A), // TXA
    }
}

/// A forward dataflow over a validated program: the state before each
/// instruction, the `meet` of what its predecessors pass on (`step` of
/// their own state), `None` where no path leads. Without backward jumps
/// one pass settles every state; with them, passes repeat until nothing
/// changes (`meet` only ever lowers a state, and the states are finite).
fn forward<T: Copy + PartialEq>(
    program: &[CbpfInsn],
    entry: T,
    meet: impl Fn(T, T) -> T,
    step: impl Fn(T, CbpfInsn) -> T,
) -> Vec<Option<T>> {
    let mut states: Vec<Option<T>> = vec![None; program.len()];
    if let Some(first) = states.first_mut() {
        *first = Some(entry);
    }
    let mut changed = true;
    while changed {
        changed = false;
        for (pc, &insn) in program.iter().enumerate() {
            let Some(before) = states[pc] else {
                continue;
            };
            let after = step(before, insn);
            let next = |skip: u8| pc + 1 + usize::from(skip);
            let successors: &[Option<usize>] = match insn.code & 0x07 {
                class::RET => &[],
                class::JMP if insn.code & 0xf0 == op::JA => &[jump_target(pc, insn.k)],
                class::JMP => &[Some(next(insn.jt)), Some(next(insn.jf))],
                _ => &[Some(pc + 1)],
            };
            for &successor in successors {
                if let Some(slot) = successor.and_then(|to| states.get_mut(to)) {
                    let state = Some(slot.map_or(after, |known| meet(known, after)));
                    changed |= *slot != state;
                    *slot = state;
                }
            }
        }
    }
    states
}

/// Emits a validated program against `frame`. Every path ends in a jump to
/// `exits.accept` (k in r1) or `exits.reject`.
pub fn emit(asm: &mut Asm, exits: Exits, program: &[CbpfInsn], frame: load::Frame) {
    let labels: Vec<Label> = program.iter().map(|_| asm.label()).collect();
    let checked = checked_lengths(program, frame);
    for (pc, insn) in program.iter().enumerate() {
        asm.bind(labels[pc]);
        let target = |skip: u32| labels[pc + 1 + skip as usize];
        let k = insn.k;
        let reader = Reader {
            frame,
            checked: checked[pc],
        };
        match insn.code & 0x07 {
            class::LD => load_a(asm, exits, reader, *insn),
            class::LDX => load_x(asm, exits, reader, *insn),
            class::ST => asm.stx(Size::W, Reg::FP, mem_offset(k), A),
            class::STX => asm.stx(Size::W, Reg::FP, mem_offset(k), X),
            class::ALU => alu(asm, exits, *insn),
            class::JMP if insn.code & 0xf0 == op::JA => {
                match jump_target(pc, k).expect("validated") {
                    to if to <= pc => loop_back(asm, exits, labels[to]),
                    to if to > pc + 1 => asm.ja(labels[to]),
                    _ => {}
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

/// Packet loads of one frame.
#[derive(Clone, Copy)]
struct Reader {
    frame: load::Frame,
    /// See [`load::emit`].
    checked: u32,
}

impl Reader {
    /// `dst` = the bytes `insn` reads.
    fn emit(self, asm: &mut Asm, exits: Exits, dst: Reg, insn: CbpfInsn) {
        let (offset, n) = packet_load(insn).expect("a packet load");
        load::emit(asm, exits, self.frame, dst, offset, n, self.checked);
    }
}

fn load_a(asm: &mut Asm, exits: Exits, reader: Reader, insn: CbpfInsn) {
    match insn.code & 0xe0 {
        mode::IMM => asm.mov32_imm(A, insn.k),
        mode::MEM => asm.ldx(Size::W, A, Reg::FP, mem_offset(insn.k)),
        mode::LEN => packet_len(asm, A, reader.frame),
        _ => reader.emit(asm, exits, A, insn), // ABS, IND
    }
}

fn load_x(asm: &mut Asm, exits: Exits, reader: Reader, insn: CbpfInsn) {
    match insn.code & 0xe0 {
        mode::IMM => asm.mov32_imm(X, insn.k),
        mode::MEM => asm.ldx(Size::W, X, Reg::FP, mem_offset(insn.k)),
        mode::LEN => packet_len(asm, X, reader.frame),
        _ => {
            // MSH: X = 4 * (P[k] & 0xf)
            reader.emit(asm, exits, X, insn);
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

/// The eBPF operation of a classic ALU instruction (other than NEG).
pub(crate) fn alu_op(code: u16) -> Alu {
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
