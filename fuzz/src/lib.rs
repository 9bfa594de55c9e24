//! What the fuzz targets share: classic programs and packets built from
//! fuzz input, the kernel as the judge of translated programs, and
//! libpcap's own interpreter.
#![deny(unsafe_code)]

pub mod kernel;
#[expect(unsafe_code, reason = "the resolver functions libpcap calls")]
pub mod libpcap;

use arbitrary::{Arbitrary, Result, Unstructured};
use pcap_filter::{
    CbpfInsn,
    cbpf::{MEMWORDS, class, op},
};

/// Every opcode libpcap's interpreter knows (what `cbpf::validate` accepts).
pub const OPCODES: &[u16] = &[
    // ret #k, ret a
    0x06, 0x16, //
    // ld [k], ldh [k], ldb [k], ld [x+k], ldh [x+k], ldb [x+k]
    0x20, 0x28, 0x30, 0x40, 0x48, 0x50, //
    // ld #k, ld len, ld M[k]
    0x00, 0x80, 0x60, //
    // ldx #k, ldx len, ldxb 4*([k]&0xf), ldx M[k]
    0x01, 0x81, 0xb1, 0x61, //
    // st M[k], stx M[k]
    0x02, 0x03, //
    // add sub mul div or and lsh rsh mod xor, #k then x; neg
    0x04, 0x14, 0x24, 0x34, 0x44, 0x54, 0x64, 0x74, 0x94, 0xa4, //
    0x0c, 0x1c, 0x2c, 0x3c, 0x4c, 0x5c, 0x6c, 0x7c, 0x9c, 0xac, 0x84, //
    // ja, jeq jgt jge jset #k, then x
    0x05, 0x15, 0x25, 0x35, 0x45, 0x1d, 0x2d, 0x3d, 0x4d, //
    // tax, txa
    0x07, 0x87,
];

/// A classic program built from fuzz input.
///
/// Mostly programs `cbpf::validate` accepts (known opcodes, constants in
/// range, forward jumps inside the program, a final return), so that the
/// fuzzer spends its time on what the translator emits; one input in 16
/// takes raw opcodes, constants and jump offsets, to exercise the refusals.
#[derive(Clone, Debug)]
pub struct Program(pub Vec<CbpfInsn>);

/// The longest program built. libpcap's programs for long expressions
/// have a few hundred instructions.
pub const MAX_PROGRAM_LEN: usize = 200;

impl<'a> Arbitrary<'a> for Program {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let raw = u.ratio(1u8, 16u8)?;
        let len = u.int_in_range(1..=MAX_PROGRAM_LEN)?;
        let mut program = Vec::with_capacity(len);
        for pc in 0..len {
            let insn = if raw {
                CbpfInsn::jump(
                    u.arbitrary()?,
                    u.arbitrary()?,
                    u.arbitrary()?,
                    u.arbitrary()?,
                )
            } else {
                valid_insn(u, len - pc - 1)?
            };
            program.push(insn);
            if u.is_empty() {
                break;
            }
        }
        if !raw {
            // End with a return, as every valid program does; jumps that now
            // reach past it are clamped to it.
            let last = program.len() - 1;
            if program[last].code & 0x07 != class::RET {
                program.push(CbpfInsn::stmt(*u.choose(&[0x06, 0x16])?, k(u)?));
            }
            let end = program.len() - 1;
            for (pc, insn) in program.iter_mut().enumerate().take(end) {
                let room = (end - pc - 1).min(255) as u8;
                if insn.code & 0x07 == class::JMP {
                    if insn.code == class::JMP {
                        insn.k = insn.k.min(u32::from(room));
                    } else {
                        insn.jt = insn.jt.min(room);
                        insn.jf = insn.jf.min(room);
                    }
                }
            }
        }
        Ok(Self(program))
    }
}

/// A valid instruction with `room` instructions after it.
fn valid_insn(u: &mut Unstructured<'_>, room: usize) -> Result<CbpfInsn> {
    let code = *u.choose(OPCODES)?;
    let mut k = k(u)?;
    let (mut jt, mut jf) = (0, 0);
    match code & 0x07 {
        class::LD | class::LDX if code & 0xe0 == 0x60 => k %= MEMWORDS,
        class::ST | class::STX => k %= MEMWORDS,
        class::ALU if code & 0x08 == 0 => match code & 0xf0 {
            op::DIV | op::MOD => k = k.max(1),
            op::LSH | op::RSH => k %= 32,
            _ => {}
        },
        class::JMP => {
            let room = room.min(255) as u8;
            if code == class::JMP {
                k %= u32::from(room) + 1;
            } else {
                jt = u.int_in_range(0..=room)?;
                jf = u.int_in_range(0..=room)?;
            }
        }
        _ => {}
    }
    Ok(CbpfInsn::jump(code, k, jt, jf))
}

/// A constant: small, near a packet offset, a common protocol value, or
/// any 32 bits.
fn k(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0u8..=3)? {
        0 => u.int_in_range(0..=64)?,
        1 => u.int_in_range(0..=1600)?,
        2 => *u.choose(&[
            0x0800,
            0x86dd,
            0x0806,
            0x8100,
            0x88a8,
            6,
            17,
            1,
            58,
            0x1fff,
            0xffff,
            0x45,
            262_144,
            u32::MAX,
        ])?,
        _ => u.arbitrary()?,
    })
}

/// A packet built from fuzz input: its first bytes from the input, the
/// rest (up to its length) a pattern, so that long packets are cheap.
#[derive(Clone, Debug)]
pub struct Packet(pub Vec<u8>);

/// The longest packet built (more than one page of a TC test run would
/// be refused).
pub const MAX_PACKET_LEN: usize = 1600;

impl<'a> Arbitrary<'a> for Packet {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let len = u.int_in_range(0..=MAX_PACKET_LEN)?;
        let given = u.int_in_range(0..=len.min(96))?;
        let mut data = u.bytes(given.min(u.len()))?.to_vec();
        // Often an Ethernet header the kernel takes for what it is.
        if data.len() >= 14 && u.ratio(1u8, 2u8)? {
            let ethertype: u16 = *u.choose(&[0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8])?;
            data[12..14].copy_from_slice(&ethertype.to_be_bytes());
        }
        let seed = data.len();
        data.extend((seed..len).map(|i| (i as u8).wrapping_mul(31)));
        Ok(Self(data))
    }
}

/// `frame` with a VLAN tag (TPID, TCI) inserted after the MAC addresses:
/// what a capture of a packet whose tag the skb holds out of band shows.
pub fn with_tag(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let cut = frame.len().min(12);
    let mut tagged = frame[..cut].to_vec();
    tagged.extend_from_slice(&tpid.to_be_bytes());
    tagged.extend_from_slice(&tci.to_be_bytes());
    tagged.extend_from_slice(&frame[cut..]);
    tagged
}
