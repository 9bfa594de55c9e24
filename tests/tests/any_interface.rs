//! `pcap-agent capture -i any` against `tcpdump -i any` on the same
//! traffic, over loopback, a veth and a veth created while both capture.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{collections::BTreeMap, fs::File, path::Path};

use anyhow::{Context as _, ensure};
use pcap_format::linktype::{LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2};
use pcap_tests::{
    TempDir,
    agent_capture::{self, start_writing, within},
    captures::{self, Direction, Packet},
    checks,
    netns::{Netns, Pair, pin_neighbours},
    now_ns,
    process::Running,
    reference::{sync_references, tcpdump},
};

/// `tcpdump -i any` writes Linux cooked v2: a 20-byte header before the
/// network layer.
const SLL2_HEADER: usize = 20;
const ETHERNET_HEADER: usize = 14;

/// One packet at the network layer: its interface, whether it was sent,
/// and its bytes from the network-layer header on.
type Seen = (String, bool, Vec<u8>);

/// Two namespaces joined by veth0/veth1, without IPv6 and with permanent
/// neighbours (nothing is sent that the test does not send), captured in `a`.
fn quiet_pair(tag: &str) -> anyhow::Result<Pair> {
    let pair = Pair::without_ipv6(tag)?;
    for ns in [&pair.a, &pair.b] {
        ns.sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1")?;
    }
    pin_neighbours(
        (&pair.a, "veth0", "10.0.0.1"),
        (&pair.b, "veth1", "10.0.0.2"),
    )?;
    Ok(pair)
}

/// Traffic over lo and veth0, then a new veth pair (veth2 in `a`, veth3 in
/// `b`) once every capture in `captures` listens on veth2, and traffic over
/// it too.
fn traffic_and_a_new_interface(pair: &Pair, captures: &mut [&mut Running]) -> anyhow::Result<()> {
    pair.a.sh("ping -c 2 -i 0.2 -W 1 127.0.0.1")?;
    pair.a.sh("ping -c 2 -i 0.2 -W 1 10.0.0.2")?;
    pair.add_second_link()?;
    pin_neighbours(
        (&pair.a, "veth2", "10.0.1.1"),
        (&pair.b, "veth3", "10.0.1.2"),
    )?;
    for capture in captures.iter_mut() {
        capture.wait_for("listening on veth2", 1)?;
    }
    pair.a.sh("ping -c 2 -i 0.2 -W 1 10.0.1.2")?;
    for destination in ["10.0.1.2", "10.0.0.2", "127.0.0.1"] {
        pair.a.sh(&format!(
            "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"z\"*300, (\"{destination}\", 9999))'"
        ))?;
    }
    Ok(())
}

/// The interface names of `ns` by index.
fn names(ns: &Netns) -> anyhow::Result<BTreeMap<u32, String>> {
    let mut names = BTreeMap::new();
    for line in ns.sh("ip -o link")?.lines() {
        let (index, rest) = line.split_once(": ").context("ip -o link")?;
        let name = rest.split([':', '@']).next().context("ip -o link")?;
        names.insert(index.parse()?, name.to_owned());
    }
    Ok(names)
}

/// tcpdump's cooked packets at the network layer.
fn cooked(packets: &[Packet], names: &BTreeMap<u32, String>) -> anyhow::Result<Vec<Seen>> {
    let mut seen = packets
        .iter()
        .map(|p| {
            let index = u32::from_be_bytes(p.data[4..8].try_into()?);
            let name = names.get(&index).context("an unknown ifindex")?.clone();
            Ok((name, p.data[10] == 4, p.data[SLL2_HEADER..].to_vec()))
        })
        .collect::<anyhow::Result<Vec<Seen>>>()?;
    seen.sort();
    Ok(seen)
}

/// Our pcapng packets (Ethernet on every interface here) at the network layer.
fn ethernet(packets: &[Packet]) -> anyhow::Result<Vec<Seen>> {
    let mut seen = packets
        .iter()
        .map(|p| {
            Ok((
                p.interface
                    .clone()
                    .context("a packet without an interface")?,
                p.direction == Some(Direction::Outbound),
                p.data[ETHERNET_HEADER..].to_vec(),
            ))
        })
        .collect::<anyhow::Result<Vec<Seen>>>()?;
    seen.sort();
    Ok(seen)
}

#[test]
fn any_matches_tcpdump_any_including_a_new_interface() -> anyhow::Result<()> {
    let pair = quiet_pair("any")?;
    let dir = TempDir::new("any")?;
    let (pcapng, pcap, reference, lines) = (
        dir.join("ours.pcapng"),
        dir.join("ours.pcap"),
        dir.join("ref.pcap"),
        dir.join("ours.txt"),
    );
    let reference_run = tcpdump(&pair.a, "any", "inout", &reference)?;
    let mut ours_pcapng = start_writing(&pair.a, &pcapng, &["-i", "any"])?;
    let mut ours_pcap = start_writing(&pair.a, &pcap, &["-i", "any", "--format", "pcap"])?;
    let mut command = agent_capture::command(&pair.a);
    command
        .args(["-i", "any", "-e", "-t", "-nn"])
        .stdout(File::create(&lines)?);
    let mut ours_lines = Running::spawn(&mut command)?;
    ours_lines.wait_for("listening on", 1)?;
    let from = now_ns();
    traffic_and_a_new_interface(
        &pair,
        &mut [&mut ours_pcapng, &mut ours_pcap, &mut ours_lines],
    )?;
    sync_references(&pair.a, "10.0.0.2", &[&reference])?;
    let to = now_ns();
    let (ours_pcapng, _) = agent_capture::written(ours_pcapng.interrupt()?, &pcapng)?;
    let (ours_pcap, _) = agent_capture::written(ours_pcap.interrupt()?, &pcap)?;
    let (status, stderr) = ours_lines.interrupt()?;
    ensure!(status.success(), "pcap-agent -e failed: {stderr:?}");
    reference_run.interrupt()?;
    let reference_file = captures::read_file(&reference)?;
    ensure!(reference_file.link_types == [LINKTYPE_LINUX_SLL2]);
    let names = names(&pair.a)?;

    // pcapng: one interface block per interface, each keeping Ethernet,
    // veth2 added mid-file; the same packets at the network layer.
    ensure!(
        ours_pcapng.link_types == [LINKTYPE_ETHERNET; 3],
        "link types {:?}: expected lo, veth0 and then veth2, each Ethernet",
        ours_pcapng.link_types
    );
    let expected = cooked(&within(&reference_file.packets, from, to), &names)?;
    ensure!(
        expected.iter().any(|(name, ..)| name == "veth2")
            && expected.iter().any(|(name, ..)| name == "lo")
            && expected.iter().any(|(name, ..)| name == "veth0"),
        "tcpdump saw no traffic on some interface: {expected:?}"
    );
    checks::same_packets(
        "pcapng",
        &ethernet(&within(&ours_pcapng.packets, from, to))?,
        &expected,
        |seen| seen,
    )?;

    // pcap: Linux cooked v2, byte for byte what tcpdump -i any wrote.
    ensure!(ours_pcap.link_types == [LINKTYPE_LINUX_SLL2]);
    checks::same_packets_in_any_order(
        "pcap",
        &within(&ours_pcap.packets, from, to),
        &within(&reference_file.packets, from, to),
    )?;

    // Lines: what tcpdump -r prints of its own file in the same namespace
    // (where the interface indexes have their names).
    let reference_lines = pair
        .a
        .command("tcpdump")
        .args(["-e", "-t", "-nn", "-r"])
        .arg(&reference)
        .output()?;
    ensure!(reference_lines.status.success(), "tcpdump -r failed");
    let sorted_lines = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let ours_text = std::fs::read_to_string(&lines)?;
    let reference_text = String::from_utf8(reference_lines.stdout)?;
    // The marker sync_references sends is in both; packets before `from`
    // are in neither (nothing else is sent), so the sets must be equal.
    let (ours_sorted, reference_sorted) = (sorted_lines(&ours_text), sorted_lines(&reference_text));
    ensure!(!ours_sorted.is_empty(), "pcap-agent printed nothing");
    ensure!(
        ours_sorted == reference_sorted,
        "printed lines differ\nours:\n{}\ntcpdump -r:\n{}",
        ours_sorted.join("\n"),
        reference_sorted.join("\n")
    );
    Ok(())
}

#[test]
fn any_with_a_filter_keeps_what_tcpdump_keeps() -> anyhow::Result<()> {
    let pair = quiet_pair("anyf")?;
    let dir = TempDir::new("anyf")?;
    let (ours_file, reference, filtered) = (
        dir.join("ours.pcapng"),
        dir.join("ref.pcap"),
        dir.join("filtered.pcap"),
    );
    let reference_run = tcpdump(&pair.a, "any", "inout", &reference)?;
    let mut ours = start_writing(&pair.a, &ours_file, &["-i", "any", "udp port 9999"])?;
    let from = now_ns();
    traffic_and_a_new_interface(&pair, &mut [&mut ours])?;
    sync_references(&pair.a, "10.0.0.2", &[&reference])?;
    let to = now_ns();
    let (ours, _) = agent_capture::written(ours.interrupt()?, &ours_file)?;
    reference_run.interrupt()?;
    // tcpdump's own filter over its own file.
    filter_file(&pair.a, &reference, &filtered, "udp port 9999")?;
    let names = names(&pair.a)?;
    let expected = cooked(
        &within(&captures::read_file(&filtered)?.packets, from, to),
        &names,
    )?;
    // The datagrams sent on veth0 and veth2, and received on lo.
    ensure!(
        expected.len() == 3,
        "tcpdump kept {} packets, not 3: {expected:02x?}",
        expected.len()
    );
    checks::same_packets(
        "filtered",
        &ethernet(&within(&ours.packets, from, to))?,
        &expected,
        |seen| seen,
    )?;
    Ok(())
}

/// `tcpdump -r IN -w OUT EXPRESSION` in `ns`.
fn filter_file(ns: &Netns, input: &Path, output: &Path, expression: &str) -> anyhow::Result<()> {
    let status = ns
        .command("tcpdump")
        .arg("-r")
        .arg(input)
        .arg("-w")
        .arg(output)
        .arg(expression)
        .output()?;
    ensure!(
        status.status.success(),
        "tcpdump -r failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    Ok(())
}
