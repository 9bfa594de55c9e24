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
    cluster_setup::{self, ping_every_vm},
    process::Running,
    reference::{sync_references, tcpdump},
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";

/// Starts alice's `pcap capture ARGS` and waits until the VM attached.
fn start_cli(command: &mut std::process::Command) -> anyhow::Result<Running> {
    let mut cli = Running::spawn(command)?;
    cli.wait_for(STARTED, 1)?;
    Ok(cli)
}

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
    let vm = &cluster.vms[0];
    let (ours_file, reference) = (dir.join("ours.pcapng"), dir.join("ref.pcap"));
    let reference_run = tcpdump(&vm.ns, "eth0", "in", &reference)?;
    let cli = start_cli(&mut cluster.cli(
        ALICE_TOKEN,
        &["-Q", "in", "-w", ours_file.to_str().expect("utf-8")],
    ))?;
    ping_every_vm(&cluster, 10)?;
    sync_references(&vm.peer, &vm.data_address(), &[&reference])?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    reference_run.interrupt()?;

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
        ours.packets
            .iter()
            .all(|p| !(p.data.len() > 34 && p.data[23] == 1 && p.data[34] == 0)),
        "an ICMP echo reply was captured"
    );
    Ok(())
}

#[test]
fn printed_lines_with_e_and_v_are_tcpdumps() -> anyhow::Result<()> {
    let dir = TempDir::new("rl")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let vm = &cluster.vms[0];
    let (printed, reference) = (dir.join("ours.txt"), dir.join("ref.pcap"));
    let reference_run = tcpdump(&vm.ns, "eth0", "inout", &reference)?;
    let mut command = cluster.cli(ALICE_TOKEN, &["-e", "-v", "-t", "icmp"]);
    command.stdout(File::create(&printed)?);
    let cli = start_cli(&mut command)?;
    ping_every_vm(&cluster, 5)?;
    sync_references(&vm.peer, &vm.data_address(), &[&reference])?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    reference_run.interrupt()?;

    let output = std::process::Command::new("tcpdump")
        .args(["-e", "-v", "-t", "-nn", "-r"])
        .arg(&reference)
        .arg("icmp")
        .output()?;
    ensure!(output.status.success(), "tcpdump -r failed");
    let expected = packets(&String::from_utf8(output.stdout)?);
    // Ours name the origin's interface and direction first.
    let origin = format!("{}/eth0 ", vm.origin());
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
