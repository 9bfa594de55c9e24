//! The in-kernel filter against the kernel's own classic BPF, nanoseconds
//! per packet with `BPF_PROG_TEST_RUN`.
//!
//! Ours is the SCHED_CLS filter program the agent loads (translated from
//! libpcap's classic BPF, reading bytes with `bpf_skb_load_bytes`, with the
//! tail call to the capture program left empty). The baseline is the same
//! classic program converted one to one the way the kernel converts a
//! classic socket filter (`bpf_convert_filter`: legacy `LD_ABS`/`LD_IND`),
//! loaded as a socket filter and JIT-compiled, run the same way.

use std::{fmt::Write as _, os::fd::AsFd as _, os::fd::AsRawFd as _};

use anyhow::Context as _;
use etherparse::PacketBuilder;
use pcap_filter::{
    InterfaceFilter, TailCall, build_filter_program,
    classic_like::{socket_filter_input, translate_classic_like},
    compile,
    sys::{self, PROG_TYPE_SCHED_CLS, PROG_TYPE_SOCKET_FILTER},
};

/// Repetitions per measurement; the kernel reports the mean.
const REPEAT: u32 = 2_000_000;
/// Measurements per cell; the median is reported.
const ROUNDS: usize = 5;

/// Expressions, a packet each matches and a packet each does not.
fn cases() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let http_syn = tcp([10, 255, 77, 3], [10, 255, 77, 4], 41330, 8080, true);
    let https_ack = tcp([10, 255, 77, 3], [10, 0, 0, 9], 41330, 443, false);
    let dns = udp([10, 255, 77, 3], [10, 0, 0, 53], 5353, 53, &[0; 32]);
    let vxlan_inner = vxlan([10, 255, 77, 3], [10, 255, 82, 67]);
    let vxlan_other = vxlan([10, 255, 77, 3], [10, 255, 82, 68]);
    vec![
        ("tcp port 8080", http_syn.clone(), dns.clone()),
        ("host 10.255.77.4", http_syn.clone(), https_ack.clone()),
        (
            "tcp[tcpflags] & tcp-syn != 0",
            http_syn.clone(),
            https_ack.clone(),
        ),
        ("udp and dst port 53", dns.clone(), http_syn.clone()),
        (
            "net 10.255.0.0/16 and (tcp port 8080 or tcp port 61001) and not port 22",
            http_syn.clone(),
            https_ack.clone(),
        ),
        (
            "udp port 4789 and udp[46:4] == 0x0aff5243",
            vxlan_inner,
            vxlan_other,
        ),
        ("ip6 or arp", arp(), http_syn),
    ]
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64240);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    let mut frame = Vec::new();
    builder.write(&mut frame, &[]).expect("in-memory write");
    frame
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).expect("in-memory write");
    frame
}

/// A silk-style VXLAN frame (GBP flags, group 0x0003, VNI 1) carrying an
/// inner IPv4 packet from `src` to `dst`.
fn vxlan(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let inner = tcp(src, dst, 41330, 8080, true);
    let mut payload = vec![0x88, 0, 0, 3, 0, 0, 1, 0];
    payload.extend_from_slice(&inner);
    udp([10, 0, 0, 101], [10, 0, 0, 102], 40000, 4789, &payload)
}

fn arp() -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    frame
}

fn median_ns(fd: std::os::fd::BorrowedFd<'_>, data: &[u8]) -> anyhow::Result<u32> {
    let mut runs = (0..ROUNDS)
        .map(|_| sys::prog_test_run(fd, data, None, REPEAT).map(|o| o.duration_ns))
        .collect::<Result<Vec<_>, _>>()
        .context("BPF_PROG_TEST_RUN")?;
    runs.sort_unstable();
    Ok(runs[ROUNDS / 2])
}

pub fn run(report: &mut String) -> anyhow::Result<()> {
    writeln!(report, "## In-kernel filter vs the kernel's classic BPF\n")?;
    writeln!(
        report,
        "Nanoseconds per packet from `BPF_PROG_TEST_RUN` (mean of {REPEAT} repetitions, median of \
         {ROUNDS} measurements), JIT on. *pcap* is the filter program the agent tail-calls from its \
         TC entry point (libpcap's classic BPF translated to eBPF, packet bytes read with \
         `bpf_skb_load_bytes`, the verdict left in `cb[0]`). *classic* is the same classic program \
         converted the way the kernel converts a classic socket filter (`LD_ABS`/`LD_IND`) and run \
         as a socket filter.\n"
    )?;
    writeln!(
        report,
        "| expression | packet | pcap ns | classic ns | ratio pcap/classic |"
    )?;
    writeln!(report, "|---|---|---|---|---|")?;
    let prog_array = sys::map_create_prog_array(4).context("creating a program array")?;
    for (expression, matching, other) in cases() {
        let program = compile(expression, 1).with_context(|| format!("compiling {expression}"))?;
        let ours = build_filter_program(
            &[InterfaceFilter {
                program: &program,
                link_type: 1,
                ifindexes: &[],
            }],
            TailCall {
                prog_array_fd: prog_array.as_raw_fd(),
                index: 2,
            },
        )?;
        let ours = sys::prog_load(PROG_TYPE_SCHED_CLS, &ours, "GPL", "bench_pcap")?;
        let classic = translate_classic_like(&program)?;
        let classic = sys::prog_load(PROG_TYPE_SOCKET_FILTER, &classic, "GPL", "bench_classic")?;
        for (label, frame) in [("match", &matching), ("no match", &other)] {
            let ours_ns = median_ns(ours.as_fd(), frame)?;
            let classic_ns = median_ns(classic.as_fd(), &socket_filter_input(frame))?;
            let verdict =
                sys::prog_test_run(classic.as_fd(), &socket_filter_input(frame), None, 1)?.retval;
            anyhow::ensure!(
                (verdict != 0) == (label == "match"),
                "{expression}: the {label} packet got verdict {verdict}"
            );
            writeln!(
                report,
                "| `{expression}` | {label} | {ours_ns} | {classic_ns} | {:.2} |",
                f64::from(ours_ns) / f64::from(classic_ns.max(1))
            )?;
            eprintln!(
                "bench: filter {expression:?} {label}: pcap {ours_ns} ns, classic {classic_ns} ns"
            );
        }
    }
    writeln!(report)?;
    Ok(())
}
