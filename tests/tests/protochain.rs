//! `protochain` on a live interface: `pcap-agent capture` runs libpcap's
//! loop over IPv6 extension headers in the kernel and keeps exactly what
//! tcpdump keeps of the same traffic.
//!
//! Needs root (namespaces, eBPF).

use std::path::Path;

use anyhow::ensure;
use pcap_tests::{
    TempDir,
    agent_capture::{self, between_markers},
    captures::{self, Packet},
    checks,
    netns::Pair,
    now_ns,
    reference::{tcpdump_writing, wait_until_written},
};

/// EtherType of IPv6, and IPv6 next-header values, at their offsets in an
/// Ethernet frame.
const ETH_IPV6: [u8; 2] = [0x86, 0xdd];
const NEXT_HEADER: usize = 14 + 6;
const FRAGMENT: u8 = 44;
const ICMPV6: u8 = 58;

fn next_header(packet: &Packet) -> Option<u8> {
    (packet.data.get(12..14) == Some(&ETH_IPV6[..]))
        .then(|| packet.data.get(NEXT_HEADER).copied())
        .flatten()
}

/// `ip6 protochain 58` on veth1 against tcpdump with the same expression,
/// on pings that fit the MTU, pings that do not (each fragment carries a
/// fragment header before ICMPv6: the loop runs), and IPv4 and IPv6 UDP
/// that must not match.
#[test]
fn ip6_protochain_live_matches_tcpdump() -> anyhow::Result<()> {
    let pair = Pair::new("pchain")?;
    let dir = TempDir::new("protochain")?;
    let (ours_file, theirs_file) = (dir.join("ours.pcapng"), dir.join("theirs.pcap"));
    let expression = "ip6 protochain 58";
    let words: Vec<&str> = expression.split(' ').collect();
    let ours = agent_capture::start_writing(
        &pair.b,
        &ours_file,
        &[&["-i", "veth1"], &words[..]].concat(),
    )?;
    let theirs = tcpdump_writing(
        &pair.b,
        &theirs_file,
        &["-i", "veth1", "-s", "262144", "-U", expression],
    )?;
    // The window opens and closes with a ping of a pattern of its own,
    // which the filter keeps: cut at those packets, both tools' windows hold
    // the same packets (`between_markers`), and once the closing one is in
    // tcpdump's file, so is everything before it.
    let start = marker_ping(&pair, &theirs_file)?;
    pair.a.sh("ping -6 -c 2 -i 0.2 -W 2 fd00::2")?;
    pair.a.sh("ping -6 -c 2 -i 0.2 -W 2 -s 3000 fd00::2")?;
    pair.a.sh("ping -c 2 -i 0.2 -W 2 10.0.0.2")?;
    pair.a.sh(
        "python3 -c 'import socket\n\
         socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b\"v6\" * 100, (\"fd00::2\", 9999))\n\
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"v4\" * 100, (\"10.0.0.2\", 9999))'",
    )?;
    let end = marker_ping(&pair, &theirs_file)?;
    let (ours, _) = agent_capture::written(ours.interrupt()?, &ours_file)?;
    theirs.interrupt()?;
    let ours = between_markers(&ours.packets, &start, &end)?;
    let theirs = between_markers(&captures::read_file(&theirs_file)?.packets, &start, &end)?;
    // 2 small echo requests and replies and the opening marker's reply; the big ones in at
    // least 2 fragments each way.
    let fragments = ours
        .iter()
        .filter(|p| next_header(p) == Some(FRAGMENT))
        .count();
    let plain = ours
        .iter()
        .filter(|p| next_header(p) == Some(ICMPV6))
        .count();
    ensure!(
        fragments >= 8 && plain >= 5,
        "{fragments} fragments and {plain} unfragmented ICMPv6 packets captured"
    );
    ensure!(
        ours.iter().all(|p| next_header(p).is_some()),
        "captured something other than IPv6"
    );
    // The same packets; compared in content order, since packets queued
    // together (echo requests waiting for neighbour discovery) get
    // timestamps apart by less than the two clocks' difference.
    let by_content = |packets: &[Packet]| {
        let mut packets = packets.to_vec();
        packets.sort_by(|a, b| (a.orig_len, &a.data).cmp(&(b.orig_len, &b.data)));
        packets
    };
    let (ours, theirs) = (by_content(&ours), by_content(&theirs));
    checks::same_packets(expression, &ours, &theirs, |p| (p.orig_len, &p.data))
}

/// Sends one echo request from `a` to `veth1` whose payload repeats a
/// pattern of its own, waits until tcpdump has written it to `file`, and
/// returns the pattern's 8 bytes.
fn marker_ping(pair: &Pair, file: &Path) -> anyhow::Result<Vec<u8>> {
    let marker = format!("{:016x}", now_ns());
    pair.a
        .sh(&format!("ping -6 -c 1 -W 2 -p {marker} fd00::2"))?;
    let bytes: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&marker[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    wait_until_written(file, &bytes)?;
    Ok(bytes)
}
