//! The shape of generated programs. The differential tests in `tests/` run
//! them in the kernel.

use super::*;
use crate::{
    cbpf::CbpfInsn,
    compile::{LINKTYPE_RAW, compile},
    ebpf::{HELPER_SKB_LOAD_BYTES, class},
};

/// Shared with the kernel tests.
#[path = "../../tests/kernel/programs.rs"]
mod programs;

const TAIL: TailCall = TailCall {
    prog_array_fd: 42,
    index: 3,
};

fn build(expression: &str, link_type: u16) -> Vec<Insn> {
    let program = compile(expression, link_type).expect("compiles");
    let filter = InterfaceFilter {
        program: &program,
        link_type,
        ifindexes: &[],
    };
    build_filter_program(&[filter], TAIL).expect("translates")
}

/// Offsets of `ldx` loads from the context register.
fn ctx_reads(insns: &[Insn]) -> Vec<i16> {
    insns
        .iter()
        .filter(|i| i.code == 0x61 && i.src == CTX.0)
        .map(|i| i.off)
        .collect()
}

/// The packet offsets handed to the load helper (`mov32 r2, OFFSET`).
fn helper_offsets(insns: &[Insn]) -> Vec<i32> {
    insns
        .iter()
        .filter(|i| i.code == 0xb4 && i.dst == 2)
        .map(|i| i.imm)
        .collect()
}

fn helper_calls(insns: &[Insn], id: i32) -> usize {
    insns
        .iter()
        .filter(|i| i.code == 0x85 && i.imm == id)
        .count()
}

#[test]
fn never_uses_legacy_packet_loads() {
    for expression in ["tcp port 80", "vlan and udp", "len > 100", "ip[2:2] > 576"] {
        for insn in build(expression, LINKTYPE_ETHERNET) {
            let legacy = insn.code & 0x07 == class::LD && matches!(insn.code & 0xe0, 0x20 | 0x40);
            assert!(!legacy, "{expression}: {insn:?}");
        }
    }
}

#[test]
fn returns_only_unspec_and_leaves_the_verdict_in_cb0() {
    let insns = build("tcp", LINKTYPE_ETHERNET);
    let exits: Vec<usize> = (0..insns.len())
        .filter(|&i| insns[i].code == 0x95)
        .collect();
    assert_eq!(exits.len(), 1);
    let before = insns[exits[0] - 1];
    assert_eq!((before.code, before.dst, before.imm), (0xb7, 0, -1));
    let cb0_stores = insns
        .iter()
        .filter(|i| i.code == 0x63 && i.dst == CTX.0 && i.off == CB0_OFFSET)
        .count();
    assert_eq!(cb0_stores, 2, "accept and reject");
}

#[test]
fn tail_calls_the_given_slot() {
    let insns = build("", LINKTYPE_ETHERNET);
    assert_eq!(helper_calls(&insns, HELPER_TAIL_CALL), 1);
    let map = insns.iter().position(|i| i.code == 0x18).expect("ld_imm64");
    assert_eq!((insns[map].src, insns[map].imm), (1, 42));
    assert_eq!((insns[map + 2].code, insns[map + 2].imm), (0xb4, 3));
}

#[test]
fn accept_all_reads_nothing() {
    let insns = build("", LINKTYPE_ETHERNET);
    assert!(ctx_reads(&insns).is_empty());
    assert_eq!(helper_calls(&insns, HELPER_SKB_LOAD_BYTES), 0);
}

#[test]
fn ethernet_programs_have_a_vlan_path() {
    // ldh [12]; jeq #0x800. The plain path copies 14 bytes into the window
    // (reading the length first); in the VLAN path offset 12 is the tag's
    // TPID: no packet access at all.
    let insns = build("ip", LINKTYPE_ETHERNET);
    assert_eq!(
        ctx_reads(&insns),
        [skb::VLAN_PRESENT, skb::LEN, skb::VLAN_PROTO, skb::VLAN_TCI]
    );
    assert_eq!(helper_calls(&insns, HELPER_SKB_LOAD_BYTES), 1);
    // ether[23] is read from the window (fp - 202 + 23) in the plain path,
    // with the helper at 19 in the VLAN path.
    let insns = build("ether[23] == 6", LINKTYPE_ETHERNET);
    let window_reads: Vec<i16> = insns
        .iter()
        .filter(|i| i.code == 0x71 && i.src == 10)
        .map(|i| i.off)
        .collect();
    assert_eq!(window_reads, [-179, -8]);
    assert_eq!(helper_offsets(&insns), [19]);
}

#[test]
fn the_window_covers_constant_loads_up_to_128_bytes() {
    // ldb [1000] is too far: the helper reads it.
    let insns = build("ether[0] == 1 and ether[1000] == 2", LINKTYPE_RAW);
    let window = insns
        .iter()
        .position(|i| i.code == 0xb5 && i.imm == 1)
        .expect("clamp to 1 byte");
    assert_eq!((insns[window + 1].code, insns[window + 1].imm), (0xb7, 1));
    assert_eq!(helper_offsets(&insns), [1000]);
}

#[test]
fn raw_ip_programs_have_no_vlan_path() {
    let insns = build("tcp port 80", LINKTYPE_RAW);
    assert_eq!(ctx_reads(&insns), [skb::LEN]);
}

#[test]
fn vlan_length_counts_the_tag() {
    let insns = build("len > 100", LINKTYPE_ETHERNET);
    let len_reads: Vec<usize> = (0..insns.len())
        .filter(|&i| insns[i].code == 0x61 && insns[i].src == CTX.0 && insns[i].off == skb::LEN)
        .collect();
    assert_eq!(len_reads.len(), 2);
    assert_ne!(
        insns[len_reads[0] + 1].code,
        0x04,
        "plain path adds nothing"
    );
    assert_eq!(
        (insns[len_reads[1] + 1].code, insns[len_reads[1] + 1].imm),
        (0x04, 4)
    );
}

#[test]
fn control_block_source_reads_cb() {
    let program = compile("ip", LINKTYPE_ETHERNET).unwrap();
    let filter = InterfaceFilter {
        program: &program,
        link_type: LINKTYPE_ETHERNET,
        ifindexes: &[],
    };
    let insns = build_filter_program_with(&[filter], TAIL, VlanSource::ControlBlock).unwrap();
    assert_eq!(ctx_reads(&insns), [skb::CB1, skb::LEN, skb::CB2, skb::CB3]);
}

#[test]
fn several_filters_dispatch_on_ifindex() {
    let accept = [CbpfInsn::stmt(0x06, 1)];
    let reject = [CbpfInsn::stmt(0x06, 0)];
    let filters = [
        InterfaceFilter {
            program: &accept,
            link_type: LINKTYPE_ETHERNET,
            ifindexes: &[4, 5],
        },
        InterfaceFilter {
            program: &reject,
            link_type: LINKTYPE_RAW,
            ifindexes: &[9],
        },
    ];
    let insns = build_filter_program(&filters, TAIL).unwrap();
    assert_eq!(ctx_reads(&insns), [skb::IFINDEX]);
    let compared: Vec<i32> = insns
        .iter()
        .filter(|i| i.code == 0x16)
        .map(|i| i.imm)
        .collect();
    assert_eq!(compared, [4, 5, 9]);
}

#[test]
fn rejects_what_cannot_run() {
    assert_eq!(
        build_filter_program(&[], TAIL),
        Err(TranslateError::NoFilters)
    );
    // ja -3 from 1: before the program's start.
    let program = [
        CbpfInsn::stmt(0x00, 1),
        CbpfInsn::stmt(0x05, (-3i32) as u32),
        CbpfInsn::stmt(0x06, 0),
    ];
    let filter = InterfaceFilter {
        program: &program,
        link_type: LINKTYPE_ETHERNET,
        ifindexes: &[],
    };
    assert_eq!(
        build_filter_program(&[filter], TAIL),
        Err(TranslateError::Program {
            filter: 0,
            source: ProgramError::JumpOutOfRange { pc: 1 }
        })
    );
}

/// `protochain`'s loop: the counter is set once at entry, and every
/// backward jump (two per path: extension headers and AH, in the plain and
/// the VLAN path) checks it, counts it down and jumps back.
#[test]
fn backward_jumps_count_down_a_bounded_counter() {
    let insns = build("ip6 protochain 6", LINKTYPE_ETHERNET);
    let loops_offset = body::LOOPS;
    let counter_stores: Vec<usize> = (0..insns.len())
        .filter(|&i| insns[i].code == 0x7b && insns[i].dst == 10 && insns[i].off == loops_offset)
        .collect();
    assert_eq!(
        counter_stores.len(),
        5,
        "one at entry, one per backward jump"
    );
    let init = counter_stores[0];
    assert_eq!(
        (insns[init - 1].code, insns[init - 1].imm),
        (0xb7, cbpf::MAX_BACKWARD_JUMPS as i32),
        "r1 = MAX_BACKWARD_JUMPS"
    );
    for &store in &counter_stores[1..] {
        // r1 = counter; if r1 == 0 reject; r1 -= 1; counter = r1
        assert_eq!(insns[store - 3].code, 0x79, "load the counter");
        assert_eq!((insns[store - 2].code, insns[store - 2].imm), (0x15, 0));
        assert_eq!((insns[store - 1].code, insns[store - 1].imm), (0x17, 1));
        // then A and X are hidden from the verifier and the jump goes back.
        let ja = insns[store + 1..]
            .iter()
            .position(|i| i.code == 0x05)
            .map(|at| store + 1 + at)
            .expect("the backward jump");
        assert!(insns[ja].off < 0, "jumps backward: {:?}", insns[ja]);
    }
    // Without a loop there is no counter.
    let insns = build("ip6 and tcp", LINKTYPE_ETHERNET);
    assert!(!insns.iter().any(|i| i.off == loops_offset && i.dst == 10));
}

#[test]
fn division_by_x_checks_for_zero() {
    let insns = build("ip[0] / ip[1] == 1", LINKTYPE_RAW);
    let div = insns.iter().position(|i| i.code == 0x3c).expect("div32 x");
    assert_eq!((insns[div - 1].code, insns[div - 1].imm), (0x16, 0));
}

#[test]
fn only_what_may_be_read_unwritten_starts_at_zero() {
    use body::{Unwritten, unwritten};
    let program = compile(
        "tcp port 80 and ip[2:2] - ((ip[0] & 0xf) << 2) > 40",
        LINKTYPE_ETHERNET,
    )
    .unwrap();
    assert_eq!(unwritten(&program), Unwritten::default());
    // ret a
    let ret_a = [CbpfInsn::stmt(0x16, 0)];
    assert!(unwritten(&ret_a).a);
    // ldx M[3]; ld [x + 1]; ret a
    let program = [
        CbpfInsn::stmt(0x61, 3),
        CbpfInsn::stmt(0x40, 1),
        CbpfInsn::stmt(0x16, 0),
    ];
    assert_eq!(
        unwritten(&program),
        Unwritten {
            a: false,
            x: false,
            words: vec![3]
        }
    );
    // ld #1; jeq #1, 0, 1; st M[2]; ld M[2]; tax; ld [x + 0]; ret a:
    // M[2] is unwritten on the path around the store.
    let program = [
        CbpfInsn::stmt(0x00, 1),
        CbpfInsn::jump(0x15, 1, 0, 1),
        CbpfInsn::stmt(0x02, 2),
        CbpfInsn::stmt(0x60, 2),
        CbpfInsn::stmt(0x07, 0),
        CbpfInsn::stmt(0x40, 0),
        CbpfInsn::stmt(0x16, 0),
    ];
    assert_eq!(unwritten(&program).words, [2]);
    assert!(!unwritten(&program).x);
    // txa; ret a
    let program = [CbpfInsn::stmt(0x87, 0), CbpfInsn::stmt(0x16, 0)];
    assert_eq!(
        unwritten(&program),
        Unwritten {
            a: false,
            x: true,
            words: vec![]
        }
    );
}

#[test]
fn window_loads_check_the_length_once_per_path() {
    // ldb [0] (IP version), ld [12], ld [16]: checks of 1, 16 and 20
    // bytes; ldb [9] after them, on both paths, needs none.
    let insns = build("net 10.255.0.0/16 and tcp", LINKTYPE_RAW);
    let checks: Vec<i32> = insns
        .iter()
        .filter(|i| i.code == 0xa5 && i.dst == WINDOW_LEN.0)
        .map(|i| i.imm)
        .collect();
    assert_eq!(checks, [1, 16, 20]);
}

#[test]
fn dataflow_follows_loops() {
    use body::unwritten;
    // ldx #0; loop: ld M[3]; add #1; st M[3]; jeq #5, out, next;
    // next: ja loop; out: ret a. M[3] is read at the loop's head before
    // the body writes it; X is written before the loop.
    let program = [
        CbpfInsn::stmt(0x01, 0),
        CbpfInsn::stmt(0x60, 3),
        CbpfInsn::stmt(0x04, 1),
        CbpfInsn::stmt(0x02, 3),
        CbpfInsn::jump(0x15, 5, 1, 0),
        CbpfInsn::stmt(0x05, (-5i32) as u32),
        CbpfInsn::stmt(0x16, 0),
    ];
    let found = unwritten(&program);
    assert_eq!((found.a, found.x, found.words), (false, false, vec![3]));
    // An instruction reached only through a backward jump is analysed too.
    let program = programs::reached_only_backward();
    let found = unwritten(&program);
    assert_eq!((found.a, found.x), (false, true));
    let filter = InterfaceFilter {
        program: &program,
        link_type: LINKTYPE_RAW,
        ifindexes: &[],
    };
    assert!(build_filter_program(&[filter], TAIL).is_ok());
}
