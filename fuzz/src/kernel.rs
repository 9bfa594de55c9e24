//! The kernel as the judge: translated programs are loaded (the verifier
//! must accept them) and run with `BPF_PROG_TEST_RUN`, as
//! `pcap-filter/tests/kernel` does.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;

use pcap_filter::{
    InterfaceFilter, TailCall,
    ebpf::Insn,
    sys::{self, PROG_TYPE_SCHED_CLS, SK_BUFF_SIZE},
    translate::{CB0_OFFSET, TranslateError, VlanSource, build_filter_program_with},
};

/// The (empty) program array every program tail-calls into, for the whole
/// fuzzing process: the tail call fails and the program returns -1 with
/// its verdict in `cb[0]`.
fn prog_array() -> &'static OwnedFd {
    static ARRAY: OnceLock<OwnedFd> = OnceLock::new();
    ARRAY.get_or_init(|| {
        sys::map_create_prog_array(1)
            .expect("cannot create a BPF program array: the translator fuzz targets need root")
    })
}

/// Translates `filters`, reading the VLAN tag from `cb[1..4]`.
pub fn translate(filters: &[InterfaceFilter<'_>]) -> Result<Vec<Insn>, TranslateError> {
    let tail_call = TailCall {
        prog_array_fd: prog_array().as_raw_fd(),
        index: 0,
    };
    build_filter_program_with(filters, tail_call, VlanSource::ControlBlock)
}

/// Loads a translated program. The verifier refusing a program the
/// translator accepted is a bug: a capture with that filter would fail.
pub fn load(insns: &[Insn], what: &dyn std::fmt::Debug) -> OwnedFd {
    sys::prog_load(PROG_TYPE_SCHED_CLS, insns, "GPL", "pcap_fuzz")
        .unwrap_or_else(|e| panic!("the verifier refused the translation of {what:?}: {e}"))
}

/// An out-of-band VLAN tag.
#[derive(Clone, Copy, Debug)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

/// Runs `prog` on `data` arriving on `ifindex`; `cb[0]`, the verdict, or
/// `None` when `BPF_PROG_TEST_RUN` refuses the packet (shorter than an
/// Ethernet header, or an IPv4/IPv6 EtherType without a whole header).
pub fn verdict(prog: &OwnedFd, data: &[u8], tag: Option<Tag>, ifindex: u32) -> Option<u32> {
    let mut ctx = [0u8; SK_BUFF_SIZE];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    if let Some(tag) = tag {
        ctx[52..56].copy_from_slice(&1u32.to_ne_bytes());
        ctx[56..58].copy_from_slice(&tag.tpid.to_be_bytes());
        ctx[60..64].copy_from_slice(&u32::from(tag.tci).to_ne_bytes());
    }
    let out = sys::prog_test_run(prog.as_fd(), data, Some(&ctx), 1).ok()?;
    assert_eq!(out.retval, u32::MAX, "the filter program must return -1");
    let at = CB0_OFFSET as usize;
    Some(u32::from_ne_bytes(
        out.ctx_out[at..at + 4].try_into().expect("4 bytes"),
    ))
}
