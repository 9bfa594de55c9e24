//! Classic BPF filters translated into one `BPF_PROG_TYPE_SCHED_CLS`
//! program that runs in front of the capture program.
//!
//! # The program's contract
//!
//! [`build_filter_program`] generates a complete program F:
//!
//! - It picks the filter whose [`InterfaceFilter::ifindexes`] lists
//!   `__sk_buff.ifindex`. With a single filter there is no choice: it
//!   applies to every packet. With several, a packet from an interface none
//!   of them lists is rejected.
//! - It runs the filter with the semantics of libpcap's interpreter (as
//!   `tcpdump -r` applies it to a capture of the packet): 32-bit A and X,
//!   scratch M[0..16], loads past the end of the packet and division or
//!   modulo by zero make the filter return 0, shifts by 32 or more give 0.
//!   Packet bytes are read only with `bpf_skb_load_bytes`, so bytes outside
//!   the linear area are seen too: one call at entry copies the first bytes
//!   (as far as the program's constant offsets reach, and 60 bytes past the
//!   `k` of its loads at `X + k`, at most 128; fewer if the packet is
//!   shorter) into a stack window that most loads then read; loads beyond
//!   it call the helper themselves.
//! - On Ethernet ([`LINKTYPE_ETHERNET`]) interfaces, when the skb holds a
//!   VLAN tag out of band (`vlan_present`), the filter sees the frame the
//!   capture writes: the tag (TPID from `vlan_proto`, then `vlan_tci`, both
//!   big-endian) after the 12 bytes of MAC addresses, the rest of the frame
//!   4 bytes later, and a length 4 bytes longer.
//! - The result k (the classic program's return value; [`SNAPLEN`] for
//!   programs from [`compile`](fn@crate::compile)) is written to `__sk_buff.cb[0]`
//!   ([`CB0_OFFSET`]). When k is 0 the program returns `TC_ACT_UNSPEC`
//!   (-1). Otherwise it tail-calls index [`TailCall::index`] of the program
//!   array [`TailCall::prog_array_fd`], and returns -1 if the tail call
//!   fails (empty slot).
//! - Backward jumps (libpcap's `protochain` loop) run as in libpcap, at
//!   most [`MAX_BACKWARD_JUMPS`] times per packet: a counter on the stack,
//!   set at entry, is counted down at each one, and a backward jump with
//!   the counter at 0 rejects the packet, as [`interp`](crate::interp)
//!   does. The verifier (which accepts such bounded loops from programs
//!   loaded with `CAP_BPF`) walks the loop once per iteration, so the
//!   bound sets the cost: on Linux 6.18 it processes about 32,000
//!   instructions for `ip6 protochain 6` on Ethernet (both paths, 0.1 to
//!   0.2 s) and 49,000 for `protochain 17`, linear in the bound (256 costs
//!   four times as much) and in the number of `protochain`s, against its
//!   limit of a million. To keep it linear, each backward jump hides A's
//!   and X's ranges from the verifier, and loads at `X + k` in programs
//!   with loops always use the helper, not the window (see `body` and
//!   `load`).
//! - It never returns anything but -1, and writes nothing but `cb[0]`.
//! - Loading it needs `CAP_BPF` and `CAP_PERFMON`: loads at `X + k` read
//!   the window at a variable stack offset, which the verifier allows only
//!   with `CAP_PERFMON`.
//!
//! Registers: r6 holds the context, r7 is A, r8 is X, r9 the VLAN tag in
//! the VLAN path and the window's length otherwise (A, X and M[] words
//! start as 0 where the program could read them before writing them). M[],
//! the load buffer and the window of the packet's first bytes live on the
//! stack (202 bytes), and the loop counter below them (216 bytes in all).
//!
//! [`SNAPLEN`]: crate::compile::SNAPLEN
//! [`MAX_BACKWARD_JUMPS`]: crate::cbpf::MAX_BACKWARD_JUMPS

mod body;
mod load;

pub(crate) use body::alu_op;

use std::{
    io,
    os::fd::{BorrowedFd, RawFd},
};

use thiserror::Error;

use crate::{
    cbpf::{self, CbpfInsn, ProgramError},
    compile::LINKTYPE_ETHERNET,
    ebpf::{Alu, Asm, AsmError, HELPER_TAIL_CALL, Insn, Jmp, Label, Reg, Size},
    sys::{self, SK_BUFF_SIZE},
};

/// Offset of `cb[0]` in `struct __sk_buff`, where the program leaves k.
pub const CB0_OFFSET: i16 = 48;

/// What the program always returns: `TC_ACT_UNSPEC`.
pub const TC_ACT_UNSPEC: i32 = -1;

/// Offsets in `struct __sk_buff` (`<linux/bpf.h>`).
mod skb {
    pub const LEN: i16 = 0;
    pub const VLAN_PRESENT: i16 = 20;
    pub const VLAN_TCI: i16 = 24;
    pub const VLAN_PROTO: i16 = 28;
    pub const IFINDEX: i16 = 40;
    pub const CB1: i16 = 52;
    pub const CB2: i16 = 56;
    pub const CB3: i16 = 60;
}

/// The context, saved from r1 at entry.
const CTX: Reg = Reg::R6;
/// Classic BPF's accumulator.
const A: Reg = Reg::R7;
/// Classic BPF's index register.
const X: Reg = Reg::R8;
/// In the VLAN path: `TPID << 16 | TCI`, the 4 tag bytes as a big-endian word.
const TAG: Reg = Reg::R9;
/// In the plain path: how many bytes the window holds.
const WINDOW_LEN: Reg = Reg::R9;

/// One classic filter and the interfaces it applies to.
#[derive(Clone, Copy, Debug)]
pub struct InterfaceFilter<'a> {
    /// The classic program, e.g. from [`compile`](fn@crate::compile).
    pub program: &'a [CbpfInsn],
    /// The `LINKTYPE_` value it was compiled for; VLAN tags are put back
    /// only for [`LINKTYPE_ETHERNET`].
    pub link_type: u16,
    /// `ifindex` values of the interfaces it applies to. Ignored when it is
    /// the only filter.
    pub ifindexes: &'a [u32],
}

/// Where an accepted packet goes: `bpf_tail_call(ctx, prog_array, index)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailCall {
    /// File descriptor of a `BPF_MAP_TYPE_PROG_ARRAY`, embedded in the
    /// program (it must stay open until the program is loaded).
    pub prog_array_fd: RawFd,
    /// The slot to call.
    pub index: u32,
}

/// Where the program reads the out-of-band VLAN tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VlanSource {
    /// `__sk_buff.vlan_present`, `vlan_proto` and `vlan_tci`: for real use.
    #[default]
    Skb,
    /// `cb[1]` (nonzero when present), `cb[2]` (TPID, network byte order in
    /// the low 16 bits, as `vlan_proto`) and `cb[3]` (TCI): for tests, since
    /// `BPF_PROG_TEST_RUN` cannot set the skb's tag but can set `cb`.
    ControlBlock,
}

/// An out-of-band VLAN tag: TPID and TCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// The tag protocol identifier: 0x8100, 0x88a8, ...
    pub tpid: u16,
    /// Priority, drop eligibility and VLAN id.
    pub tci: u16,
}

/// A `struct __sk_buff` for `BPF_PROG_TEST_RUN`'s `ctx_in`, to run a program
/// built with [`VlanSource::ControlBlock`] on a packet that arrived on
/// `ifindex` (0: none) with `tag`.
pub fn test_context(tag: Option<VlanTag>, ifindex: u32) -> [u8; SK_BUFF_SIZE] {
    let mut ctx = [0u8; SK_BUFF_SIZE];
    let mut put = |offset: i16, bytes: &[u8]| {
        let at = offset as usize;
        ctx[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(skb::IFINDEX, &ifindex.to_ne_bytes());
    if let Some(tag) = tag {
        put(skb::CB1, &1u32.to_ne_bytes());
        put(skb::CB2, &tag.tpid.to_be_bytes());
        put(skb::CB3, &u32::from(tag.tci).to_ne_bytes());
    }
    ctx
}

/// Runs `prog`, a loaded filter program, once on `data` with `ctx` (see
/// [`test_context`]): its verdict, `cb[0]`, or why `BPF_PROG_TEST_RUN`
/// refused the packet.
///
/// # Panics
///
/// When the program did not return [`TC_ACT_UNSPEC`], as it always must.
pub fn test_run_verdict(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ctx: &[u8; SK_BUFF_SIZE],
) -> io::Result<u32> {
    let out = sys::prog_test_run(prog, data, Some(ctx), 1)?;
    assert_eq!(
        out.retval,
        TC_ACT_UNSPEC.cast_unsigned(),
        "the filter program must return -1"
    );
    let at = CB0_OFFSET as usize;
    Ok(u32::from_ne_bytes(
        out.ctx_out[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// Why no program was built.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TranslateError {
    /// There is nothing to run.
    #[error("no filter to translate")]
    NoFilters,
    /// A classic program cannot be translated.
    #[error("cannot translate the filter to eBPF")]
    Program {
        /// Index of the filter.
        filter: usize,
        /// What is wrong with it.
        #[source]
        source: ProgramError,
    },
    /// The generated program is too large for 16-bit jump offsets.
    #[error(transparent)]
    Asm(#[from] AsmError),
}

/// Builds the filter program F; see the [module documentation](self) for
/// its contract.
pub fn build_filter_program(
    filters: &[InterfaceFilter<'_>],
    tail_call: TailCall,
) -> Result<Vec<Insn>, TranslateError> {
    build_filter_program_with(filters, tail_call, VlanSource::Skb)
}

/// [`build_filter_program`], reading the VLAN tag from `vlan_source`.
pub fn build_filter_program_with(
    filters: &[InterfaceFilter<'_>],
    tail_call: TailCall,
    vlan_source: VlanSource,
) -> Result<Vec<Insn>, TranslateError> {
    if filters.is_empty() {
        return Err(TranslateError::NoFilters);
    }
    for (filter, f) in filters.iter().enumerate() {
        cbpf::validate(f.program).map_err(|source| TranslateError::Program { filter, source })?;
    }
    let mut asm = Asm::new();
    let exits = Exits {
        accept: asm.label(),
        reject: asm.label(),
    };
    asm.mov64_reg(CTX, Reg::R1);
    let entries: Vec<_> = filters.iter().map(|_| asm.label()).collect();
    if filters.len() > 1 {
        asm.ldx(Size::W, Reg::R2, CTX, skb::IFINDEX);
        for (filter, &entry) in filters.iter().zip(&entries) {
            for &ifindex in filter.ifindexes {
                asm.jmp32_imm(Jmp::Eq, Reg::R2, ifindex, entry);
            }
        }
        asm.ja(exits.reject);
    }
    for (filter, entry) in filters.iter().zip(entries) {
        asm.bind(entry);
        emit_filter(&mut asm, exits, filter, vlan_source);
    }
    emit_exits(&mut asm, exits, tail_call);
    Ok(asm.finish()?)
}

/// The shared ends of every filter.
#[derive(Clone, Copy)]
struct Exits {
    /// Accept with k (nonzero) in r1.
    accept: Label,
    /// Reject.
    reject: Label,
}

/// One filter: registers and scratch memory zeroed (where the program
/// could read them before writing them), then the classic program, twice
/// for Ethernet (without and with an out-of-band VLAN tag).
fn emit_filter(asm: &mut Asm, exits: Exits, filter: &InterfaceFilter<'_>, vlan: VlanSource) {
    let unwritten = body::unwritten(filter.program);
    // Backward jumps read A and X (to hide their ranges): with loops both
    // start as 0.
    let loops = cbpf::has_backward_jumps(filter.program);
    if unwritten.a || loops {
        asm.mov32_imm(A, 0);
    }
    if unwritten.x || loops {
        asm.mov32_imm(X, 0);
    }
    for k in unwritten.words {
        asm.st_imm(Size::W, Reg::FP, body::mem_offset(k), 0);
    }
    if loops {
        body::start_loop_counter(asm);
    }
    // In loops, loads at X + k use the helper (see `load::Frame::Plain`).
    let window = load::window_for(
        body::packet_loads(filter.program)
            .filter(|(offset, _)| !loops || matches!(offset, load::Offset::Const(_))),
    );
    let vlan_path = filter.link_type == LINKTYPE_ETHERNET && body::reads_packet(filter.program);
    if !vlan_path {
        emit_plain(asm, exits, filter.program, window);
        return;
    }
    let tagged = asm.label();
    let (present, proto, tci) = match vlan {
        VlanSource::Skb => (skb::VLAN_PRESENT, skb::VLAN_PROTO, skb::VLAN_TCI),
        VlanSource::ControlBlock => (skb::CB1, skb::CB2, skb::CB3),
    };
    asm.ldx(Size::W, Reg::R1, CTX, present);
    asm.jmp32_imm(Jmp::Ne, Reg::R1, 0, tagged);
    emit_plain(asm, exits, filter.program, window);
    asm.bind(tagged);
    // TAG = be16(vlan_proto) << 16 | vlan_tci
    asm.ldx(Size::W, TAG, CTX, proto);
    asm.be(TAG, 16);
    asm.alu32_imm(Alu::Lsh, TAG, 16);
    asm.ldx(Size::W, Reg::R1, CTX, tci);
    asm.alu32_imm(Alu::And, Reg::R1, 0xffff);
    asm.alu32_reg(Alu::Or, TAG, Reg::R1);
    body::emit(asm, exits, filter.program, load::Frame::Vlan);
}

/// The program against the skb's bytes, after filling the window.
fn emit_plain(asm: &mut Asm, exits: Exits, program: &[CbpfInsn], window: u32) {
    if window > 0 {
        load::prefetch(asm, window);
    }
    let indirect = !cbpf::has_backward_jumps(program);
    body::emit(asm, exits, program, load::Frame::Plain { window, indirect });
}

/// Accept: cb[0] = k, tail call; reject: cb[0] = 0; both return -1.
fn emit_exits(asm: &mut Asm, exits: Exits, tail_call: TailCall) {
    let out = asm.label();
    asm.bind(exits.accept);
    asm.stx(Size::W, CTX, CB0_OFFSET, Reg::R1);
    asm.mov64_reg(Reg::R1, CTX);
    asm.ld_map_fd(Reg::R2, tail_call.prog_array_fd);
    asm.mov32_imm(Reg::R3, tail_call.index);
    asm.call(HELPER_TAIL_CALL);
    asm.ja(out);
    asm.bind(exits.reject);
    asm.mov64_imm(Reg::R1, 0);
    asm.stx(Size::W, CTX, CB0_OFFSET, Reg::R1);
    asm.bind(out);
    asm.mov64_imm(Reg::R0, TC_ACT_UNSPEC);
    asm.exit();
}

#[cfg(test)]
mod tests;
