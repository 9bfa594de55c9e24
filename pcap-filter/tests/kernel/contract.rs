//! The filter program's contract: -1 always, k in cb[0], a tail call on
//! accept, dispatch by ifindex; compile errors as tcpdump prints them;
//! raw-IP filters; large filters.

use std::{
    os::fd::{AsFd, AsRawFd},
    process::Command,
};

use pcap_filter::{
    CbpfInsn, CompileError, InterfaceFilter, TailCall, build_filter_program, compile,
    compile::{LINKTYPE_ETHERNET, LINKTYPE_RAW, SNAPLEN},
    ebpf::{Alu, Asm, Reg, Size},
    sys::{self, PROG_TYPE_SCHED_CLS},
    translate::{CB0_OFFSET, VlanSource},
};

use crate::{
    harness::{Loaded, ctx, numbered_pcap, require_root, tcpdump_accepts, temp_dir, verdict_of},
    pcapfile::{self, Record},
    vlan::{TPID_8021Q, frame, ipv4},
};

const UDP: [u8; 4] = [10, 0, 0, 1];

fn udp_frame() -> Vec<u8> {
    frame(&[], 0x0800, &ipv4(UDP, [10, 0, 0, 2], 17, 1234, 53))
}

fn tcp_frame() -> Vec<u8> {
    frame(&[], 0x0800, &ipv4(UDP, [10, 0, 0, 2], 6, 1234, 80))
}

fn cb(ctx_out: &[u8], word: usize) -> u32 {
    let at = CB0_OFFSET as usize + 4 * word;
    u32::from_ne_bytes(ctx_out[at..at + 4].try_into().expect("4 bytes"))
}

/// A program for the tail-call slot: cb[1] = cb[0] ^ 0x5a5a, return -1.
fn marker_program() -> std::os::fd::OwnedFd {
    let mut asm = Asm::new();
    asm.ldx(Size::W, Reg::R2, Reg::R1, CB0_OFFSET);
    asm.alu32_imm(Alu::Xor, Reg::R2, 0x5a5a);
    asm.stx(Size::W, Reg::R1, CB0_OFFSET + 4, Reg::R2);
    asm.mov64_imm(Reg::R0, -1);
    asm.exit();
    let insns = asm.finish().expect("assembles");
    sys::prog_load(PROG_TYPE_SCHED_CLS, &insns, "GPL", "marker").unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn accepted_packets_are_tail_called_with_k_in_cb0() {
    require_root();
    let prog_array = sys::map_create_prog_array(4).expect("prog array");
    let marker = marker_program();
    sys::map_update(prog_array.as_fd(), 2, marker.as_fd()).expect("slot 2");
    let program = compile("udp", LINKTYPE_ETHERNET).expect("compiles");
    let filter = InterfaceFilter {
        program: &program,
        link_type: LINKTYPE_ETHERNET,
        ifindexes: &[],
    };
    let tail_call = TailCall {
        prog_array_fd: prog_array.as_raw_fd(),
        index: 2,
    };
    let insns = build_filter_program(&[filter], tail_call).expect("translates");
    let prog = sys::prog_load(PROG_TYPE_SCHED_CLS, &insns, "GPL", "pcap_filter")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ctx_in = ctx(None, 0);
    // Stale values in cb must not leak through.
    ctx_in[48..52].copy_from_slice(&7u32.to_ne_bytes());
    let accepted = sys::prog_test_run(prog.as_fd(), &udp_frame(), Some(&ctx_in), 1).unwrap();
    assert_eq!(accepted.retval, u32::MAX);
    assert_eq!(cb(&accepted.ctx_out, 0), SNAPLEN);
    assert_eq!(
        cb(&accepted.ctx_out, 1),
        SNAPLEN ^ 0x5a5a,
        "the tail call ran"
    );
    let rejected = sys::prog_test_run(prog.as_fd(), &tcp_frame(), Some(&ctx_in), 1).unwrap();
    assert_eq!(rejected.retval, u32::MAX);
    assert_eq!(cb(&rejected.ctx_out, 0), 0);
    assert_eq!(cb(&rejected.ctx_out, 1), 0, "no tail call");
    assert_eq!(rejected.data_out, tcp_frame(), "the packet is untouched");
}

#[test]
fn ret_a_and_empty_slots() {
    require_root();
    // ld #7; ret a: accept with k = 7 and no program in the slot.
    let program = [CbpfInsn::stmt(0x00, 7), CbpfInsn::stmt(0x16, 0)];
    let loaded = Loaded::ethernet(&program, VlanSource::Skb);
    assert_eq!(loaded.verdict(&udp_frame(), None), 7);
    // ld #0; ret a: reject.
    let program = [CbpfInsn::stmt(0x00, 0), CbpfInsn::stmt(0x16, 0)];
    let loaded = Loaded::ethernet(&program, VlanSource::Skb);
    assert_eq!(loaded.verdict(&udp_frame(), None), 0);
}

#[test]
fn filters_are_picked_by_ifindex() {
    require_root();
    // BPF_PROG_TEST_RUN runs packets on the loopback device, ifindex 1.
    let accept = compile("", LINKTYPE_ETHERNET).expect("compiles");
    let reject = compile("ether[0] == 0xee", LINKTYPE_ETHERNET).expect("compiles");
    let run = |filters: &[InterfaceFilter<'_>]| {
        let loaded = Loaded::load(filters, VlanSource::Skb);
        verdict_of(loaded.fd(), &udp_frame(), ctx(None, 1))
    };
    let filter = |program: &'static [CbpfInsn], ifindexes: &'static [u32]| InterfaceFilter {
        program,
        link_type: LINKTYPE_ETHERNET,
        ifindexes,
    };
    let (accept, reject): (&'static [CbpfInsn], &'static [CbpfInsn]) =
        (accept.leak(), reject.leak());
    assert_eq!(
        run(&[filter(reject, &[7777]), filter(accept, &[5, 1])]),
        SNAPLEN
    );
    assert_eq!(run(&[filter(accept, &[7777]), filter(reject, &[1])]), 0);
    assert_eq!(
        run(&[filter(accept, &[7777]), filter(accept, &[8888])]),
        0,
        "no filter for the interface"
    );
    assert_eq!(
        run(&[filter(accept, &[7777])]),
        SNAPLEN,
        "a single filter applies to all"
    );
}

/// tcpdump's complaint about `expression`, without the `tcpdump: ` prefix.
fn tcpdump_error(expression: &str) -> String {
    let dir = temp_dir("errors");
    let file = dir.join("one.pcap");
    std::fs::write(
        &file,
        pcapfile::write(
            1,
            &[Record {
                ts_sec: 0,
                ts_frac: 0,
                orig_len: 60,
                data: udp_frame(),
            }],
        ),
    )
    .expect("write");
    let out = Command::new("tcpdump")
        .args(["-d", "-r"])
        .arg(&file)
        .arg("--")
        .arg(expression)
        .output()
        .expect("tcpdump runs");
    assert!(!out.status.success(), "tcpdump compiled {expression:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("tcpdump: "))
        .unwrap_or_else(|| panic!("no error from tcpdump: {stderr}"));
    line.to_owned()
}

#[test]
fn compile_errors_read_like_tcpdumps() {
    for expression in [
        "tcp port",
        "port 99999",
        "ip and not ip",
        "vlan 5000",
        "ether[0:3] == 1",
        "(tcp",
    ] {
        let ours = compile(expression, LINKTYPE_ETHERNET).expect_err(expression);
        assert!(matches!(ours, CompileError::Expression(_)));
        assert_eq!(
            ours.to_string(),
            tcpdump_error(expression),
            "{expression:?}"
        );
    }
    assert_eq!(
        compile("tcp port", LINKTYPE_ETHERNET)
            .unwrap_err()
            .to_string(),
        "can't parse filter expression: syntax error"
    );
    // tcpdump would ask DNS and say "unknown host"; we ask no one.
    assert!(matches!(
        compile("host nosuchhost.invalid", LINKTYPE_ETHERNET),
        Err(CompileError::Name(_))
    ));
}

#[test]
fn raw_ip_filters_match_tcpdump() {
    require_root();
    let packets = [
        ipv4(UDP, [10, 0, 0, 2], 17, 1234, 53),
        ipv4(UDP, [10, 0, 0, 2], 6, 1234, 80),
        ipv4([192, 168, 0, 1], [10, 0, 0, 2], 6, 22, 1234),
    ];
    let file = numbered_pcap("raw", LINKTYPE_RAW, packets.iter().cloned());
    for expression in [
        "udp port 53",
        "tcp",
        "host 192.168.0.1",
        "ip[9] == 6",
        "len > 40",
        "ip",
    ] {
        let theirs = tcpdump_accepts(&file, expression);
        let program = compile(expression, LINKTYPE_RAW).expect("compiles");
        let loaded = Loaded::raw(&program);
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(
                loaded.verdict(p, None) != 0,
                theirs.contains(&(i as u32)),
                "{expression:?} packet {i}"
            );
        }
    }
}

#[test]
fn large_filters_load_and_run() {
    require_root();
    let hosts: Vec<String> = (1..=64)
        .map(|i| format!("host 10.0.{}.{i}", i / 8))
        .collect();
    let ports: Vec<String> = (1..=64).map(|i| format!("port {}", i * 7)).collect();
    // `vlan` last: libpcap moves later offsets past the tag.
    let expression = format!(
        "(({}) and ({})) or vlan",
        hosts.join(" or "),
        ports.join(" or ")
    );
    let program = compile(&expression, LINKTYPE_ETHERNET).expect("compiles");
    assert!(program.len() > 250, "{} instructions", program.len());
    let loaded = Loaded::ethernet(&program, VlanSource::Skb);
    let hit = frame(&[], 0x0800, &ipv4([10, 0, 0, 7], [1, 1, 1, 1], 6, 9, 448));
    let miss = frame(&[], 0x0800, &ipv4([10, 0, 0, 7], [1, 1, 1, 1], 6, 9, 449));
    assert_eq!(loaded.verdict(&hit, None), SNAPLEN);
    assert_eq!(loaded.verdict(&miss, None), 0);
    let tagged = frame(&[(TPID_8021Q, 1)], 0x0806, &[0; 28]);
    assert_eq!(loaded.verdict(&tagged, None), SNAPLEN);
}

#[test]
fn repeated_runs_measure_time() {
    require_root();
    let program = compile("tcp port 80", LINKTYPE_ETHERNET).expect("compiles");
    let loaded = Loaded::ethernet(&program, VlanSource::Skb);
    let out = sys::prog_test_run(loaded.fd(), &tcp_frame(), None, 10_000).expect("runs");
    assert_eq!(out.retval, u32::MAX);
    assert!(
        out.duration_ns > 0 && out.duration_ns < 100_000,
        "{} ns",
        out.duration_ns
    );
}
