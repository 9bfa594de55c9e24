//! A program the verifier refuses, with a log of megabytes: the error's
//! message shows only the end of the log, which says why.

use pcap_filter::{
    ebpf::{Asm, Reg, Size},
    sys::{self, PROG_TYPE_SCHED_CLS, SHOWN_LOG_BYTES},
};

use crate::harness::require_root;

#[test]
fn a_refused_program_gets_a_short_message_that_names_the_reason() {
    require_root();
    // 200,000 moves (a line of log each), then a read far past the end of
    // `struct __sk_buff`.
    let mut asm = Asm::new();
    for _ in 0..200_000 {
        asm.mov64_imm(Reg::R0, 0);
    }
    asm.ldx(Size::DW, Reg::R0, Reg::R1, 9992);
    asm.exit();
    let insns = asm.finish().expect("assembles");
    let error = sys::prog_load(PROG_TYPE_SCHED_CLS, &insns, "GPL", "refused")
        .expect_err("the verifier refuses an out-of-bounds context read");
    assert!(
        error.log.len() > 1 << 20,
        "the whole log is kept: {} bytes",
        error.log.len()
    );
    let message = error.to_string();
    assert!(
        message.len() <= SHOWN_LOG_BYTES + 200,
        "{} bytes: {}",
        message.len(),
        &message[..500]
    );
    assert!(
        message.contains("invalid bpf_context access off=9992 size=8"),
        "{message}"
    );
    assert!(
        message.starts_with("the kernel rejected the BPF program: Permission denied"),
        "{message}"
    );
}
