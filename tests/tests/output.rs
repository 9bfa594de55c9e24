//! Output modes: `-w -` into tshark, and readable lines without `-w`.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::process::{Command, Stdio};

use anyhow::ensure;
use pcap_tests::{agent_capture, netns::Pair, process::Running};

#[test]
fn writes_pcapng_to_stdout_for_tshark() -> anyhow::Result<()> {
    let pair = Pair::new("stdout")?;
    let (capture, stdout) =
        agent_capture::start_piped(&pair.a, &["-i", "veth0", "-c", "4", "-w", "-", "icmp"])?;
    let tshark = Command::new("tshark")
        .args([
            "-r",
            "-",
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "icmp.type",
        ])
        .stdin(stdout)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    pair.a.sh("ping -c 2 -i 0.2 10.0.0.2")?;
    let (status, lines) = capture.wait()?;
    ensure!(status.success(), "{lines:?}");
    let output = tshark.wait_with_output()?;
    ensure!(output.status.success(), "tshark failed on our stdout");
    let text = String::from_utf8(output.stdout)?;
    let rows: Vec<Option<(&str, &str)>> = text.lines().map(|l| l.split_once('\t')).collect();
    let (request, reply) = (Some(("veth0", "8")), Some(("veth0", "0")));
    ensure!(
        rows == [request, reply, request, reply],
        "tshark read (interface, ICMP type) {rows:?}"
    );
    Ok(())
}

#[test]
fn prints_one_readable_line_per_packet() -> anyhow::Result<()> {
    let pair = Pair::new("lines")?;
    let (capture, stdout) =
        agent_capture::start_piped(&pair.a, &["-i", "veth0", "-c", "2", "icmp"])?;
    pair.a.sh("ping -c 1 10.0.0.2")?;
    let (status, _) = capture.wait()?;
    ensure!(status.success());
    let text = std::io::read_to_string(stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    ensure!(lines.len() == 2, "{text}");
    ensure!(
        lines[0].contains(" veth0 Out IP 10.0.0.1 > 10.0.0.2: ICMP echo request"),
        "{}",
        lines[0]
    );
    ensure!(
        lines[1].contains(" veth0 In  IP 10.0.0.2 > 10.0.0.1: ICMP echo reply"),
        "{}",
        lines[1]
    );
    Ok(())
}

/// tcpdump's printing flags on a live capture: the same ping, printed by
/// pcap-agent and by tcpdump on the same interface, reads the same, once
/// our `veth0 Out`/`veth0 In ` (tcpdump's `-i any` habit) is set aside.
#[test]
fn prints_live_packets_with_tcpdump_flags_as_tcpdump() -> anyhow::Result<()> {
    let pair = Pair::without_ipv6("lflags")?;
    let flags = ["-c", "4", "-t", "-e", "-v", "-x", "-l", "icmp"];
    let (ours, our_stdout) =
        agent_capture::start_piped(&pair.a, &[&["-i", "veth0"], &flags[..]].concat())?;
    let mut theirs = Running::spawn(
        pair.a
            .command("tcpdump")
            .args(["-i", "veth0", "-nn"])
            .args(flags)
            .stdout(Stdio::piped()),
    )?;
    theirs.wait_for("listening on", 1)?;
    let their_stdout = theirs.take_stdout().expect("piped stdout");
    pair.a.sh("ping -c 2 -i 0.2 10.0.0.2")?;
    let (status, lines) = ours.wait()?;
    ensure!(status.success(), "{lines:?}");
    let (status, lines) = theirs.wait()?;
    ensure!(status.success(), "{lines:?}");
    let ours = std::io::read_to_string(our_stdout)?;
    let theirs = std::io::read_to_string(their_stdout)?;
    let mut directions = Vec::new();
    let ours: String = ours
        .lines()
        .map(|line| match line.split_once(' ') {
            Some(("veth0", rest)) => {
                let (direction, rest) = rest.split_at(4);
                directions.push(direction.trim_end().to_owned());
                rest.to_owned()
            }
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect();
    ensure!(directions == ["Out", "In", "Out", "In"], "{directions:?}");
    ensure!(
        theirs.contains("ICMP echo request") && theirs.contains("\t0x0000:  4500"),
        "tcpdump printed:\n{theirs}"
    );
    ensure!(ours == theirs, "ours:\n{ours}\ntcpdump:\n{theirs}");
    Ok(())
}
