//! The classic-like baseline agrees with the filter program.

use std::os::fd::AsFd;

use pcap_filter::{
    cbpf::{ProgramError, has_backward_jumps},
    classic_like::{socket_filter_input, translate_classic_like},
    compile,
    compile::LINKTYPE_ETHERNET,
    sys::{self, PROG_TYPE_SOCKET_FILTER},
    translate::VlanSource,
};

use crate::{
    corpus::{corpus, expressions},
    harness::{Loaded, max_test_run_len, require_root},
};

/// A few corpus files with varied traffic: VLANs, tunnels, TCP, UDP,
/// IPv4 and IPv6 multicast.
const FILES: &[&str] = &[
    "pim-packet-assortment.pcap",
    "mptcp-v0.pcap",
    "802.1ad_QinQ.pcap",
    "vxlan.pcap",
    "geneve.pcap",
];

/// Whether a classic program shifts by X, where the kernel (shift modulo
/// 32) and libpcap (0 for 32 or more) differ.
fn shifts_by_x(program: &[pcap_filter::CbpfInsn]) -> bool {
    program.iter().any(|i| matches!(i.code, 0x6c | 0x7c))
}

#[test]
fn classic_like_agrees_with_the_filter_program() {
    require_root();
    let corpus = corpus();
    let packets: Vec<_> = corpus
        .packets
        .iter()
        .filter(|p| FILES.contains(&corpus.files[p.file].as_str()) && p.runs_plain)
        .filter(|p| p.data.len() + 14 <= max_test_run_len())
        .collect();
    assert!(packets.len() > 500, "{} packets", packets.len());
    let inputs: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| socket_filter_input(&p.data))
        .collect();
    let mut skipped = Vec::new();
    let mut loops = 0;
    for expression in expressions() {
        let program = compile(&expression, LINKTYPE_ETHERNET).expect("compiles");
        if shifts_by_x(&program) {
            skipped.push(expression);
            continue;
        }
        if has_backward_jumps(&program) {
            // protochain: the kernel's classic BPF refuses loops.
            assert!(
                matches!(
                    translate_classic_like(&program),
                    Err(ProgramError::BackwardJump { .. })
                ),
                "{expression:?}"
            );
            loops += 1;
            continue;
        }
        let ours = Loaded::ethernet(&program, VlanSource::Skb);
        let classic = translate_classic_like(&program).expect("translates");
        let classic = sys::prog_load(PROG_TYPE_SOCKET_FILTER, &classic, "GPL", "classic")
            .unwrap_or_else(|e| panic!("{expression:?}: {e}"));
        for (packet, input) in packets.iter().zip(&inputs) {
            let kernel = sys::prog_test_run(classic.as_fd(), input, None, 1).expect("runs");
            assert_eq!(
                ours.verdict(&packet.data, None),
                kernel.retval,
                "{expression:?} {}#{}",
                corpus.files[packet.file],
                packet.index
            );
        }
    }
    assert!(skipped.len() < 10, "skipped {skipped:?}");
    assert!(loops > 0, "no protochain among the expressions");
}
