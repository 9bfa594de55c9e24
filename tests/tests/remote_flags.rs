//! tcpdump's `-Q` and printing flags on a remote capture (`pcap capture`
//! through the API and an agent), against tcpdump on the VM.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{collections::BTreeMap, fs::File};

use anyhow::ensure;
use pcap_tests::{
    TempDir,
    captures::{self, Direction, Packet},
    cluster::ALICE_TOKEN,
    cluster_setup::{self, beside_tcpdump, ping_every_vm},
};

/// Packets as a multiset of (bytes, length on the wire).
fn counted<'a>(packets: impl Iterator<Item = &'a Packet>) -> BTreeMap<(Vec<u8>, u32), usize> {
    let mut counts = BTreeMap::new();
    for p in packets {
        *counts.entry((p.data.clone(), p.orig_len)).or_default() += 1;
    }
    counts
}

#[test]
fn direction_in_keeps_what_tcpdump_q_in_keeps() -> anyhow::Result<()> {
    let dir = TempDir::new("rq")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let (ours_file, reference) = (dir.join("ours.pcapng"), dir.join("ref.pcap"));
    let mut cli = cluster.cli(
        ALICE_TOKEN,
        &["-Q", "in", "-w", ours_file.to_str().expect("utf-8")],
    );
    beside_tcpdump(&cluster, "in", &reference, &mut cli, || {
        ping_every_vm(&cluster, 10)
    })?;

    let ours = captures::read_file(&ours_file)?;
    ensure!(
        ours.packets.len() >= 11,
        "only {} packets: ten echo requests and the marker at least",
        ours.packets.len()
    );
    ensure!(
        ours.packets
            .iter()
            .all(|p| p.direction == Some(Direction::Inbound)),
        "-Q in let an outbound packet through"
    );
    let reference = captures::read_file(&reference)?;
    let (ours_counts, reference_counts) = (
        counted(ours.packets.iter()),
        counted(reference.packets.iter()),
    );
    ensure!(
        ours_counts == reference_counts,
        "{} packets, tcpdump -Q in {}",
        ours.packets.len(),
        reference.packets.len()
    );
    // The echo replies went out: -Q in kept none of them.
    ensure!(
        ours.packets.iter().all(|p| p.icmp_type() != Some(0)),
        "an ICMP echo reply was captured"
    );
    Ok(())
}

#[test]
fn printed_lines_with_e_and_v_are_tcpdumps() -> anyhow::Result<()> {
    let dir = TempDir::new("rl")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let (printed, reference) = (dir.join("ours.txt"), dir.join("ref.pcap"));
    let mut cli = cluster.cli(ALICE_TOKEN, &["-e", "-v", "-t", "icmp"]);
    cli.stdout(File::create(&printed)?);
    beside_tcpdump(&cluster, "inout", &reference, &mut cli, || {
        ping_every_vm(&cluster, 5)
    })?;

    let output = std::process::Command::new("tcpdump")
        .args(["-e", "-v", "-t", "-nn", "-r"])
        .arg(&reference)
        .arg("icmp")
        .output()?;
    ensure!(output.status.success(), "tcpdump -r failed");
    let expected = packets(&String::from_utf8(output.stdout)?);
    // Ours name the origin's interface and direction first.
    let origin = format!("{}/eth0 ", cluster.vms[0].origin());
    let mut ours: Vec<String> = packets(&std::fs::read_to_string(&printed)?)
        .into_iter()
        .map(|text| {
            let rest = text.strip_prefix(&origin).unwrap_or(&text);
            rest.strip_prefix("In  ")
                .or_else(|| rest.strip_prefix("Out "))
                .unwrap_or(rest)
                .to_owned()
        })
        .collect();
    // Sorted again without the prefix, as tcpdump's lines are.
    ours.sort();
    ensure!(
        expected.len() >= 10,
        "tcpdump printed {} ICMP packets",
        expected.len()
    );
    ensure!(
        ours == expected,
        "printed packets differ\nours:\n{}\ntcpdump -r:\n{}",
        ours.join("\n"),
        expected.join("\n")
    );
    Ok(())
}

/// The packets of printed text (a packet's continuation lines start with
/// white space), sorted.
fn packets(text: &str) -> Vec<String> {
    let mut packets: Vec<String> = Vec::new();
    for line in text.lines() {
        match packets.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => packets.push(line.to_owned()),
        }
    }
    packets.sort();
    packets
}
