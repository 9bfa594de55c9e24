//! A user-space classic BPF interpreter with the semantics of libpcap's
//! `bpf_filter()` (`bpf_filter.c`), the function `tcpdump -r FILE EXPR`
//! applies to every packet of a file.
//!
//! [`run`] gives what libpcap gives for every program
//! [`cbpf::validate`](crate::cbpf::validate) accepts:
//!
//! - A, X and the scratch words `M[0..16]` start as 0 (libpcap before 1.11
//!   leaves `M[]` uninitialised; programs from `pcap_compile` never read a
//!   word before writing it);
//! - a load that does not fit in the captured bytes makes the filter
//!   return 0, as does division or modulo by a zero X (the validator
//!   refuses a zero constant divisor);
//! - shifts by X of 32 or more give 0;
//! - `len` is the wire length, loads read the captured bytes.
//!
//! Backward `ja` jumps are followed as libpcap follows them, so
//! `protochain` programs run too, but at most
//! [`MAX_BACKWARD_JUMPS`] of them per run: the next one returns 0, as the
//! kernel's filter does (libpcap has no bound).
//!
//! Unlike libpcap it never aborts or loops forever on a program the
//! validator refuses: an unknown instruction (or a code above 0xff), a
//! jump out of the program or a scratch word of 16 or more return 0; and
//! since only backward jumps go back, a run executes at most
//! `(MAX_BACKWARD_JUMPS + 1) * program.len()` instructions.
//!
//! It is the reference the translator is fuzzed against (`fuzz/`), and
//! what applies a filter to packets read from a file.

use crate::cbpf::{
    CbpfInsn, MAX_BACKWARD_JUMPS, MEMWORDS, class, jump_target, misc, mode, op, size, src,
};

/// Runs `program` on a packet of which `packet` was captured and
/// `wirelen` bytes were on the wire, returning the filter's result: 0 to
/// reject, otherwise the number of bytes to keep.
pub fn run(program: &[CbpfInsn], packet: &[u8], wirelen: u32) -> u32 {
    Machine {
        packet,
        wirelen,
        a: 0,
        x: 0,
        mem: [0; MEMWORDS as usize],
    }
    .run(program)
    .unwrap_or(0)
}

/// The registers and scratch memory of one run.
struct Machine<'p> {
    packet: &'p [u8],
    wirelen: u32,
    a: u32,
    x: u32,
    mem: [u32; MEMWORDS as usize],
}

impl Machine<'_> {
    /// The filter's result; `None` for every way of returning 0 early.
    fn run(&mut self, program: &[CbpfInsn]) -> Option<u32> {
        let mut pc = 0usize;
        let mut backward_jumps = 0;
        loop {
            let insn = *program.get(pc)?;
            if insn.code > 0xff {
                // Not an opcode: libpcap aborts.
                return None;
            }
            let k = insn.k;
            pc += 1;
            match insn.code & 0x07 {
                class::RET => {
                    return match insn.code {
                        0x06 => Some(k),
                        0x16 => Some(self.a),
                        _ => None,
                    };
                }
                class::LD => self.a = self.ld(insn)?,
                class::LDX => self.x = self.ldx(insn)?,
                class::ST if insn.code == class::ST => *self.mem.get_mut(k as usize)? = self.a,
                class::STX if insn.code == class::STX => *self.mem.get_mut(k as usize)? = self.x,
                class::ALU => self.a = self.alu(insn)?,
                class::JMP => {
                    let next = self.jump(insn, pc)?;
                    if next < pc {
                        if backward_jumps == MAX_BACKWARD_JUMPS {
                            return None;
                        }
                        backward_jumps += 1;
                    }
                    pc = next;
                }
                class::MISC => match insn.code & 0xf8 {
                    misc::TAX => self.x = self.a,
                    misc::TXA => self.a = self.x,
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// `size` bytes at `offset`, big-endian; `None` past the captured bytes.
    fn bytes(&self, offset: u32, size: usize) -> Option<u32> {
        let start = usize::try_from(offset).ok()?;
        let bytes = self.packet.get(start..start.checked_add(size)?)?;
        Some(bytes.iter().fold(0, |v, &b| v << 8 | u32::from(b)))
    }

    fn ld(&self, insn: CbpfInsn) -> Option<u32> {
        let width = match insn.code & 0x18 {
            size::W => 4,
            size::H => 2,
            size::B => 1,
            _ => return None,
        };
        match insn.code & 0xe0 {
            mode::ABS => self.bytes(insn.k, width),
            // libpcap fails when X + k overflows rather than wrapping.
            mode::IND => self.bytes(self.x.checked_add(insn.k)?, width),
            mode::IMM if width == 4 => Some(insn.k),
            mode::LEN if width == 4 => Some(self.wirelen),
            mode::MEM if width == 4 => self.mem.get(insn.k as usize).copied(),
            _ => None,
        }
    }

    fn ldx(&self, insn: CbpfInsn) -> Option<u32> {
        match insn.code {
            0x01 => Some(insn.k),
            0x81 => Some(self.wirelen),
            0x61 => self.mem.get(insn.k as usize).copied(),
            0xb1 => Some((self.bytes(insn.k, 1)? & 0xf) << 2),
            _ => None,
        }
    }

    fn alu(&self, insn: CbpfInsn) -> Option<u32> {
        let a = self.a;
        let operand = if insn.code & 0x08 == src::X {
            self.x
        } else {
            insn.k
        };
        Some(match insn.code & 0xf0 {
            op::ADD => a.wrapping_add(operand),
            op::SUB => a.wrapping_sub(operand),
            op::MUL => a.wrapping_mul(operand),
            op::DIV => a.checked_div(operand)?,
            op::MOD => a.checked_rem(operand)?,
            op::OR => a | operand,
            op::AND => a & operand,
            op::XOR => a ^ operand,
            op::LSH => a.checked_shl(operand).unwrap_or(0),
            op::RSH => a.checked_shr(operand).unwrap_or(0),
            op::NEG if insn.code == class::ALU | op::NEG => a.wrapping_neg(),
            _ => return None,
        })
    }

    /// The index of the next instruction after the jump at `next - 1`.
    fn jump(&self, insn: CbpfInsn, next: usize) -> Option<usize> {
        let operand = if insn.code & 0x08 == src::X {
            self.x
        } else {
            insn.k
        };
        let taken = match insn.code & 0xf0 {
            // libpcap sign-extends k, for protochain's backward jumps.
            op::JA if insn.code == class::JMP => return jump_target(next - 1, insn.k),
            op::JEQ => self.a == operand,
            op::JGT => self.a > operand,
            op::JGE => self.a >= operand,
            op::JSET => self.a & operand != 0,
            _ => return None,
        };
        Some(next + usize::from(if taken { insn.jt } else { insn.jf }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::{LINKTYPE_ETHERNET, LINKTYPE_RAW, compile},
        libpcap,
    };

    const RET_A: CbpfInsn = CbpfInsn::stmt(0x16, 0);

    fn insn(code: u16, k: u32) -> CbpfInsn {
        CbpfInsn::stmt(code, k)
    }

    #[test]
    fn loads_are_big_endian_and_bounded_by_the_captured_bytes() {
        let packet = [1, 2, 3, 4, 5];
        let ld_w = |k| run(&[insn(0x20, k), RET_A], &packet, 100);
        assert_eq!(ld_w(0), 0x0102_0304);
        assert_eq!(ld_w(1), 0x0203_0405);
        assert_eq!(ld_w(2), 0, "past the captured bytes");
        assert_eq!(ld_w(u32::MAX), 0);
        assert_eq!(run(&[insn(0x28, 3), RET_A], &packet, 100), 0x0405);
        assert_eq!(run(&[insn(0x30, 4), RET_A], &packet, 100), 5);
        assert_eq!(run(&[insn(0x30, 5), RET_A], &packet, 100), 0);
        // len is the wire length, not the captured one.
        assert_eq!(run(&[insn(0x80, 0), RET_A], &packet, 100), 100);
        // ldxb 4*([0]&0xf); txa
        assert_eq!(run(&[insn(0xb1, 0), insn(0x87, 0), RET_A], &[0x45], 1), 20);
        // ldx #u32::MAX; ld [x + 2]: X + k overflows, so the load fails.
        let ind = [insn(0x01, u32::MAX), insn(0x30 | 0x40, 2), RET_A];
        assert_eq!(run(&ind, &packet, 5), 0);
    }

    #[test]
    fn division_by_zero_returns_0_and_wide_shifts_give_0() {
        // ld #7; ldx #0; div x; ret #1
        let div = [insn(0x00, 7), insn(0x01, 0), insn(0x3c, 0), insn(0x06, 1)];
        assert_eq!(run(&div, &[], 0), 0);
        let modulo = [insn(0x00, 7), insn(0x01, 0), insn(0x9c, 0), insn(0x06, 1)];
        assert_eq!(run(&modulo, &[], 0), 0);
        // ld #1; ldx #32; lsh x; ret a (0), and rsh.
        for shift in [0x6c, 0x7c] {
            let program = [insn(0x00, 1), insn(0x01, 32), insn(shift, 0), RET_A];
            assert_eq!(run(&program, &[], 0), 0);
        }
        // ld #1; neg: 0xffffffff
        assert_eq!(
            run(&[insn(0x00, 1), insn(0x84, 0), RET_A], &[], 0),
            u32::MAX
        );
    }

    #[test]
    fn scratch_memory_starts_as_0_and_holds_words() {
        // ld M[3]; ret a
        assert_eq!(run(&[insn(0x60, 3), RET_A], &[], 0), 0);
        // ld #9; st M[15]; ld #0; ldx M[15]; txa; ret a
        let program = [
            insn(0x00, 9),
            insn(0x02, 15),
            insn(0x00, 0),
            insn(0x61, 15),
            insn(0x87, 0),
            RET_A,
        ];
        assert_eq!(run(&program, &[], 0), 9);
    }

    #[test]
    fn invalid_programs_return_0_without_panicking() {
        assert_eq!(run(&[], &[], 0), 0);
        assert_eq!(run(&[insn(0x00, 1)], &[], 0), 0, "falls off the end");
        assert_eq!(run(&[insn(0x02, 16), RET_A], &[], 0), 0, "st M[16]");
        assert_eq!(run(&[insn(0xff, 0), RET_A], &[], 0), 0, "unknown opcode");
        // ld #1 with high bits set: not an opcode.
        assert_eq!(run(&[insn(0xff00, 1), RET_A], &[], 0), 0, "16-bit code");
        // ja -1: an endless loop.
        assert_eq!(run(&[insn(0x05, u32::MAX)], &[], 0), 0);
        // ja +5 past the end.
        assert_eq!(run(&[insn(0x05, 5), RET_A], &[], 0), 0);
    }

    #[test]
    fn backward_jumps_run_as_in_libpcap() {
        // ld #3; loop: sub #1; jeq #0, out; ja loop; out: ret #7
        let program = [
            insn(0x00, 3),
            insn(0x14, 1),
            CbpfInsn::jump(0x15, 0, 1, 0),
            insn(0x05, (-3i32) as u32),
            insn(0x06, 7),
        ];
        assert_eq!(run(&program, &[], 0), 7);
        assert_eq!(run(&program, &[], 0), libpcap::filter(&program, &[], 0));
    }

    #[test]
    fn backward_jumps_beyond_the_bound_return_0() {
        // ld #n; loop: sub #1; jeq #0, out; ja loop; out: ret #7: n - 1
        // backward jumps.
        let looping = |n: u32| {
            [
                insn(0x00, n),
                insn(0x14, 1),
                CbpfInsn::jump(0x15, 0, 1, 0),
                insn(0x05, (-3i32) as u32),
                insn(0x06, 7),
            ]
        };
        let at_bound = looping(MAX_BACKWARD_JUMPS + 1);
        assert_eq!(run(&at_bound, &[], 0), 7);
        assert_eq!(libpcap::filter(&at_bound, &[], 0), 7);
        let beyond = looping(MAX_BACKWARD_JUMPS + 2);
        assert_eq!(run(&beyond, &[], 0), 0);
        assert_eq!(libpcap::filter(&beyond, &[], 0), 7, "libpcap has no bound");
    }

    /// Packets for the comparison with libpcap: every corpus packet, cut
    /// to a few lengths so that loads fall off the end too.
    fn packets() -> Vec<Vec<u8>> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/tcpdump-tests");
        let mut packets = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).expect("corpus file");
            packets.extend(pcap_records(&bytes));
        }
        let cuts: Vec<Vec<u8>> = packets
            .iter()
            .step_by(7)
            .flat_map(|p| [13, 34, 54].map(|n| p[..p.len().min(n)].to_vec()))
            .collect();
        packets.extend(cuts);
        packets
    }

    /// The records of a little-endian classic pcap file.
    fn pcap_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4")))
        };
        let mut records = Vec::new();
        if !matches!(u32_at(0), Some(0xa1b2_c3d4 | 0xa1b2_3c4d)) {
            return records;
        }
        let mut at = 24;
        while let Some(caplen) = u32_at(at + 8) {
            let start = at + 16;
            let Some(data) = bytes.get(start..start + caplen as usize) else {
                break;
            };
            records.push(data.to_vec());
            at = start + caplen as usize;
        }
        records
    }

    /// Every expression of the kernel tests' corpus, compiled by libpcap,
    /// run on every packet of the tcpdump test captures (and cut copies of
    /// some): the same result as libpcap's `bpf_filter`, with the wire
    /// length both equal to and longer than the captured length.
    #[test]
    fn agrees_with_libpcap_on_the_corpus() {
        let expressions = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expressions.txt"),
        )
        .expect("expressions.txt");
        let expressions: Vec<&str> = expressions
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(
            expressions.len() >= 300,
            "{} expressions",
            expressions.len()
        );
        let packets = packets();
        assert!(packets.len() > 1000, "{} packets", packets.len());
        let (mut runs, mut accepted) = (0u64, 0u64);
        for expression in &expressions {
            for link_type in [LINKTYPE_ETHERNET, LINKTYPE_RAW] {
                let Ok(program) = compile(expression, link_type) else {
                    assert_eq!(
                        link_type, LINKTYPE_RAW,
                        "{expression:?} compiles for Ethernet"
                    );
                    continue;
                };
                for packet in &packets {
                    for wirelen in [packet.len() as u32, packet.len() as u32 + 100] {
                        let ours = run(&program, packet, wirelen);
                        let theirs = libpcap::filter(&program, packet, wirelen);
                        assert_eq!(
                            ours, theirs,
                            "{expression:?} (link type {link_type}) on {packet:02x?} (wire length {wirelen})"
                        );
                        runs += 1;
                        accepted += u64::from(ours != 0);
                    }
                }
            }
        }
        eprintln!(
            "{} expressions x {} packets: {runs} runs, {accepted} accepted",
            expressions.len(),
            packets.len()
        );
        // Not vacuous: a fair share of runs accept.
        assert!(accepted * 50 > runs, "{accepted} of {runs} runs accepted");
    }
}
