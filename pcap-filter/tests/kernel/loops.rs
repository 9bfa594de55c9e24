//! Backward jumps (libpcap's `protochain`): the translated loop passes the
//! verifier, costs it a bounded amount, and gives tcpdump's verdict on
//! header chains up to the bound, and the interpreter's beyond it.

use std::os::fd::AsRawFd as _;

use pcap_filter::{
    CbpfInsn, InterfaceFilter, TailCall,
    cbpf::{MAX_BACKWARD_JUMPS, has_backward_jumps},
    compile,
    compile::{LINKTYPE_ETHERNET, LINKTYPE_RAW},
    interp,
    sys::{self, PROG_TYPE_SCHED_CLS},
    translate::{VlanSource, build_filter_program_with},
};

use crate::{
    harness::{Loaded, numbered_pcap, require_root, tcpdump_accepts},
    programs,
    vlan::frame,
};

/// The expressions with loops, as tcpdump users write them.
const PROTOCHAINS: [&str; 7] = [
    "ip6 protochain 6 or ip6 protochain 17 or ip6 protochain 58 or ip6 protochain 44",
    "ip6 protochain 6",
    "protochain 17",
    "ip protochain 6",
    "ip6 protochain 58",
    "ip6 protochain 44",
    "not ip6 protochain 17 and ip6",
];

/// Most instructions the verifier may process per `protochain` of an
/// expression (its limit is 1,000,000 per program). With the bound at 64,
/// one costs it about 32,000 to 50,000 on Ethernet (both paths), 10,000 to
/// 13,000 on raw IP; the cost grows linearly with the bound and with the
/// number of `protochain`s.
const VERIFIER_BUDGET: u32 = 60_000;

/// "processed N insns" from the verifier's statistics.
fn processed(stats: &str) -> u32 {
    stats
        .split_once("processed ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no instruction count in {stats:?}"))
}

/// Every protochain expression, for Ethernet (both VLAN sources) and raw
/// IP, passes the verifier within [`VERIFIER_BUDGET`].
#[test]
fn protochain_loops_pass_the_verifier_within_budget() {
    require_root();
    let prog_array = sys::map_create_prog_array(1).expect("prog array");
    let tail_call = TailCall {
        prog_array_fd: prog_array.as_raw_fd(),
        index: 0,
    };
    for expression in PROTOCHAINS {
        for (link_type, vlan) in [
            (LINKTYPE_ETHERNET, VlanSource::Skb),
            (LINKTYPE_ETHERNET, VlanSource::ControlBlock),
            (LINKTYPE_RAW, VlanSource::Skb),
        ] {
            let program = compile(expression, link_type).expect("compiles");
            assert!(has_backward_jumps(&program), "{expression}: no loop");
            let filter = InterfaceFilter {
                program: &program,
                link_type,
                ifindexes: &[],
            };
            let insns = build_filter_program_with(&[filter], tail_call, vlan).expect("translates");
            let (_fd, stats) =
                sys::prog_load_with_stats(PROG_TYPE_SCHED_CLS, &insns, "GPL", "protochain")
                    .unwrap_or_else(|e| panic!("{expression} (link type {link_type}): {e}"));
            let cost = processed(&stats);
            eprintln!(
                "{expression:?} link type {link_type} {vlan:?}: {} instructions, bound {MAX_BACKWARD_JUMPS}: {}",
                insns.len(),
                stats.trim().replace('\n', "; ")
            );
            let loops = expression.matches("protochain").count() as u32;
            assert!(
                cost <= VERIFIER_BUDGET * loops,
                "{expression:?}: the verifier processed {cost} instructions"
            );
        }
    }
}

const ETH_IPV6: u16 = 0x86dd;
/// IPv6 next-header values.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AH: u8 = 51;
const DEST_OPTS: u8 = 60;
const TCP: u8 = 6;

/// An IPv6 packet whose header chain is `chain` (each an 8-byte
/// extension header, or a 12-byte AH), then a TCP header.
fn ipv6_chain(chain: &[u8]) -> Vec<u8> {
    let mut headers = Vec::new();
    for (i, &kind) in chain.iter().enumerate() {
        let next = chain.get(i + 1).copied().unwrap_or(TCP);
        match kind {
            // next header, payload length 1 (in 4-byte words, less 2):
            // 12 bytes, SPI, sequence number.
            AH => headers.extend_from_slice(&[next, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]),
            FRAGMENT => headers.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 1]),
            // length 0 (8 bytes): PadN of 4 bytes (or routing type 0 with
            // no segments left).
            _ => headers.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]),
        }
    }
    let tcp = [
        0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];
    let payload = (headers.len() + tcp.len()) as u16;
    let first = chain.first().copied().unwrap_or(TCP);
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&payload.to_be_bytes());
    p.extend_from_slice(&[first, 64]);
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend(headers);
    p.extend_from_slice(&tcp);
    p
}

/// Chains of every kind and length around the bound: the kernel gives the
/// interpreter's verdict on every one (plain and VLAN path), and tcpdump's
/// on every chain the bound lets through; a longer chain is rejected, where
/// tcpdump (without a bound) matches it.
#[test]
fn header_chains_match_tcpdump_up_to_the_bound_and_the_interpreter_beyond() {
    require_root();
    let bound = MAX_BACKWARD_JUMPS as usize;
    let mut chains: Vec<Vec<u8>> = vec![
        vec![],
        vec![HOP_BY_HOP],
        vec![HOP_BY_HOP, DEST_OPTS, ROUTING, FRAGMENT],
        vec![HOP_BY_HOP, DEST_OPTS, ROUTING, FRAGMENT, DEST_OPTS],
        vec![AH],
        vec![HOP_BY_HOP, AH],
        vec![FRAGMENT, FRAGMENT, FRAGMENT],
    ];
    for n in [bound - 1, bound, bound + 1, bound + 2, 2 * bound] {
        chains.push(vec![DEST_OPTS; n]);
    }
    let frames: Vec<Vec<u8>> = chains
        .iter()
        .map(|chain| frame(&[], ETH_IPV6, &ipv6_chain(chain)))
        .collect();
    let tagged: Vec<Vec<u8>> = chains
        .iter()
        .map(|chain| frame(&[(0x8100, 7)], ETH_IPV6, &ipv6_chain(chain)))
        .collect();
    let all: Vec<Vec<u8>> = frames.iter().chain(&tagged).cloned().collect();
    let input = numbered_pcap("loops", LINKTYPE_ETHERNET, all.clone());
    let mut beyond_the_bound = 0;
    // The tagged frames go through the VLAN path's loop.
    for expression in [
        "ip6 protochain 6",
        "protochain 6",
        "ip6 protochain 17",
        "vlan and ip6 protochain 6",
    ] {
        let theirs = tcpdump_accepts(&input, expression);
        let program = compile(expression, LINKTYPE_ETHERNET).expect("compiles");
        let plain = Loaded::ethernet(&program, VlanSource::Skb);
        let via_cb = Loaded::ethernet(&program, VlanSource::ControlBlock);
        for (i, data) in all.iter().enumerate() {
            let chain = &chains[i % chains.len()];
            let expected = interp::run(&program, data, data.len() as u32);
            let ours = if i < frames.len() {
                plain.verdict(data, None)
            } else {
                let (skb, tag) = crate::corpus::untag(data);
                via_cb.verdict(&skb, Some(tag))
            };
            let what = format!("{expression:?} on a chain of {} headers", chain.len());
            assert_eq!(
                ours, expected,
                "{what} (packet {i}): kernel and interpreter"
            );
            let tcpdump = theirs.contains(&(i as u32));
            if chain.len() <= bound {
                assert_eq!(ours != 0, tcpdump, "{what} (packet {i}): tcpdump");
            } else {
                assert_eq!(ours, 0, "{what}: beyond the bound");
                // tcpdump, without a bound, matches the TCP ones.
                beyond_the_bound += usize::from(tcpdump);
            }
        }
    }
    // 3 chains beyond the bound, untagged for the first two expressions,
    // tagged for the last.
    assert_eq!(beyond_the_bound, 3 * 3, "TCP chains beyond the bound");
}

/// Loops that are not `protochain`'s: one counted by A up to and past the
/// bound, a jump to itself, and an instruction reached only backward. The
/// kernel gives the interpreter's verdict.
#[test]
fn other_loops_end_as_in_the_interpreter() {
    require_root();
    // ld #n; loop: sub #1; jeq #0, out; ja loop; out: ret #7: n - 1
    // backward jumps.
    let counting = |n: u32| {
        vec![
            CbpfInsn::stmt(0x00, n),
            CbpfInsn::stmt(0x14, 1),
            CbpfInsn::jump(0x15, 0, 1, 0),
            CbpfInsn::stmt(0x05, (-3i32) as u32),
            CbpfInsn::stmt(0x06, 7),
        ]
    };
    let programs = [
        counting(MAX_BACKWARD_JUMPS + 1),
        counting(MAX_BACKWARD_JUMPS + 2),
        // ld #1; ja -1 (itself); ret #1
        vec![
            CbpfInsn::stmt(0x00, 1),
            CbpfInsn::stmt(0x05, u32::MAX),
            CbpfInsn::stmt(0x06, 1),
        ],
        programs::reached_only_backward(),
    ];
    let packet = frame(&[], ETH_IPV6, &ipv6_chain(&[]));
    let verdicts: Vec<u32> = programs
        .iter()
        .map(|program| {
            let loaded = Loaded::ethernet(program, VlanSource::Skb);
            let ours = loaded.verdict(&packet, None);
            let expected = interp::run(program, &packet, packet.len() as u32);
            assert_eq!(ours, expected, "{program:?}");
            ours
        })
        .collect();
    assert_eq!(verdicts, [7, 0, 0, 0]);
}
