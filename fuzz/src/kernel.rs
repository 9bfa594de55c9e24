//! The kernel as the judge: translated programs are loaded (the verifier
//! must accept them) and run with `BPF_PROG_TEST_RUN`, as
//! `pcap-filter/tests/kernel` does.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;

pub use pcap_filter::translate::VlanTag as Tag;
use pcap_filter::{
    InterfaceFilter, TailCall,
    ebpf::Insn,
    sys::{self, PROG_TYPE_SCHED_CLS},
    translate::{
        TranslateError, VlanSource, build_filter_program_with, test_context, test_run_verdict,
    },
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

/// Runs `prog` on `data` arriving on `ifindex`; `cb[0]`, the verdict, or
/// `None` when `BPF_PROG_TEST_RUN` refuses the packet (shorter than an
/// Ethernet header, or an IPv4/IPv6 EtherType without a whole header).
pub fn verdict(prog: &OwnedFd, data: &[u8], tag: Option<Tag>, ifindex: u32) -> Option<u32> {
    test_run_verdict(prog.as_fd(), data, &test_context(tag, ifindex)).ok()
}
