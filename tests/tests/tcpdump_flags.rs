//! tcpdump's flags on `pcap-agent capture`, checked against tcpdump itself:
//! `-r` over the packet corpus, `-Q` on the same traffic in network
//! namespaces, `-D` in a namespace of our own.
//!
//! The `-Q` and `-D` tests need root (namespaces, eBPF).

use std::{path::Path, process::Command};

use anyhow::ensure;
use pcap_tests::{
    TempDir, agent_capture,
    bosh::workspace_root,
    captures::{self, Direction, Packet},
    checks,
    netns::{Netns, Pair},
    process::{agent_run, binary, run_ok},
    reference::{assert_readable, corpus, sync_references, tcpdump},
};

/// Expressions for `-r`: protocols, VLANs, byte offsets, lengths, and
/// protochain, libpcap's loop over IPv6 extension headers (the corpus has
/// hop-by-hop, routing, fragment and AH headers), bounded as in the kernel.
const EXPRESSIONS: [&str; 9] = [
    "",
    "tcp",
    "udp port 53 or icmp6",
    "vlan and ip",
    "ip6 protochain 17",
    "ip6 protochain 58",
    "protochain 6",
    "greater 300 and not arp",
    "ip[6:2] & 0x3fff != 0",
];

fn agent() -> Command {
    let mut command = Command::new(binary("pcap-agent"));
    command.arg("capture");
    command
}

/// `tcpdump -r FILE -w OUT [-c N] EXPR`.
fn reference(
    file: &Path,
    out: &Path,
    count: Option<&str>,
    expression: &str,
) -> anyhow::Result<Vec<Packet>> {
    let mut command = Command::new("tcpdump");
    command.arg("-r").arg(file).arg("-w").arg(out);
    if let Some(count) = count {
        command.args(["-c", count]);
    }
    if !expression.is_empty() {
        command.arg(expression);
    }
    run_ok(
        &mut command,
        &format!("tcpdump -r {} {expression}", file.display()),
    )?;
    Ok(captures::read_file(out)?.packets)
}

/// Same packets, same bytes, same lengths, same timestamps.
///
/// One difference on purpose: a record whose original length is shorter
/// than its captured bytes (malformed, as in `pim_header_asan-2.pcap`) is
/// written with the captured length as its original length, where tcpdump
/// copies the impossible value.
fn assert_equal(ours: &[Packet], theirs: &[Packet], what: &str) -> anyhow::Result<()> {
    for (i, a) in ours.iter().enumerate() {
        ensure!(
            a.orig_len as usize >= a.data.len(),
            "{what}: packet {i}: original length {} below the {} bytes kept",
            a.orig_len,
            a.data.len()
        );
    }
    checks::same_packets(what, ours, theirs, |p| {
        let len = p
            .orig_len
            .max(u32::try_from(p.data.len()).expect("a packet under 4 GiB"));
        (p.unix_ns, len, &p.data)
    })
}

#[test]
fn read_filters_the_corpus_exactly_as_tcpdump() -> anyhow::Result<()> {
    let dir = TempDir::new("rcorpus")?;
    let (ours_file, theirs_file) = (dir.join("ours.pcap"), dir.join("theirs.pcap"));
    let ours_ng = dir.join("ours.pcapng");
    let mut kept = [0usize; EXPRESSIONS.len()];
    for file in corpus()? {
        for (e, expression) in EXPRESSIONS.iter().enumerate() {
            let what = format!("{} `{expression}`", file.display());
            let theirs = reference(&file, &theirs_file, None, expression)?;
            let mut command = agent();
            command
                .arg("-r")
                .arg(&file)
                .args(["--format", "pcap", "-w"])
                .arg(&ours_file)
                .args(["-nn", "--"]);
            if !expression.is_empty() {
                command.arg(expression);
            }
            run_ok(&mut command, &what)?;
            assert_equal(&captures::read_file(&ours_file)?.packets, &theirs, &what)?;
            kept[e] += theirs.len();
            // pcapng output holds the same packets.
            if *expression == "tcp" {
                run_ok(
                    agent()
                        .arg("-r")
                        .arg(&file)
                        .arg("-w")
                        .arg(&ours_ng)
                        .arg("tcp"),
                    &what,
                )?;
                assert_equal(&captures::read_file(&ours_ng)?.packets, &theirs, &what)?;
            }
        }
    }
    // Every expression selected something, and not everything.
    for (expression, kept) in EXPRESSIONS.iter().zip(kept) {
        ensure!(kept > 0, "`{expression}` kept nothing in the whole corpus");
        if !expression.is_empty() {
            ensure!(kept < 8956, "`{expression}` kept every packet");
        }
    }
    Ok(())
}

#[test]
fn read_from_stdin_with_a_count() -> anyhow::Result<()> {
    let dir = TempDir::new("rstdin")?;
    let file = workspace_root().join("tests/corpus/tcpdump-tests/vxlan.pcap");
    let theirs = reference(&file, &dir.join("theirs.pcap"), Some("5"), "udp")?;
    ensure!(theirs.len() == 5, "tcpdump kept {} packets", theirs.len());
    let ours_file = dir.join("ours.pcapng");
    let output = agent()
        .args(["-r", "-", "-c", "5", "-w"])
        .arg(&ours_file)
        .arg("udp")
        .stdin(std::fs::File::open(&file)?)
        .output()?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_readable(&ours_file)?;
    assert_equal(
        &captures::read_file(&ours_file)?.packets,
        &theirs,
        "-r - -c 5 udp",
    )?;
    // Printed as tcpdump prints them (VXLAN: two lines a packet).
    let printed = |program: &mut Command| -> anyhow::Result<String> {
        let output = program
            .arg("-r")
            .arg(&file)
            .args(["-c", "3", "-n", "udp"])
            .env("TZ", "UTC")
            .output()?;
        Ok(String::from_utf8(output.stdout)?)
    };
    let ours = printed(&mut agent())?;
    let theirs = printed(&mut Command::new("tcpdump"))?;
    ensure!(ours.lines().count() == 6, "printed: {ours}");
    ensure!(ours == theirs, "printed:\n{ours}tcpdump:\n{theirs}");
    Ok(())
}

#[test]
fn read_refuses_what_does_not_apply() -> anyhow::Result<()> {
    let file = workspace_root().join("tests/corpus/tcpdump-tests/vxlan.pcap");
    let file = file.to_str().expect("utf-8");
    for (args, needle) in [
        (
            vec!["-r", file, "-i", "lo"],
            "-r reads packets from a file and -i captures them live",
        ),
        (
            vec!["-r", file, "-Q", "in"],
            "-Q chooses the directions of a live capture",
        ),
        (vec!["-r", file, "--duration", "1"], "with -r use -c"),
        (vec!["-r", "/etc/passwd"], "not a pcap or pcapng file"),
        (
            vec!["-r", "/nonexistent.pcap"],
            "cannot read /nonexistent.pcap",
        ),
        (vec!["-r", file, "tcp and"], "syntax error"),
    ] {
        let output = agent().args(&args).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "{args:?} succeeded");
        ensure!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    Ok(())
}

/// `-Q DIRECTION` on veth1 against `tcpdump -Q DIRECTION` on the same traffic.
fn direction_matches_tcpdump(direction: &str) -> anyhow::Result<()> {
    let pair = Pair::new(&format!("q{direction}"))?;
    pair.disable_ipv6()?;
    let dir = TempDir::new("direction")?;
    let (ours_file, theirs_file) = (dir.join("ours.pcapng"), dir.join("theirs.pcap"));
    let ours =
        agent_capture::start_writing(&pair.b, &ours_file, &["-i", "veth1", "-Q", direction])?;
    // Only the hook of that direction is attached.
    let expected = if direction == "in" {
        "pcap_ingress"
    } else {
        "pcap_egress"
    };
    let attached = pair.b.tcx_programs("veth1")?;
    ensure!(
        attached == [expected],
        "-Q {direction} attached {attached:?}"
    );
    let theirs = tcpdump(&pair.b, "veth1", direction, &theirs_file)?;
    let traffic = || {
        pair.a
            .sh("ip neigh flush dev veth0 && ping -c 3 -i 0.2 -W 1 10.0.0.2")?;
        pair.a.sh("python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b\"x\"*1400, (\"10.0.0.2\", 9999))'")?;
        pair.b.sh("python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b\"y\"*700, (\"10.0.0.1\", 9999))'")?;
        if direction == "in" {
            sync_references(&pair.a, "10.0.0.2", &[&theirs_file])
        } else {
            sync_references(&pair.b, "10.0.0.1", &[&theirs_file])
        }
    };
    let (ours, theirs) =
        agent_capture::stop_both_after(traffic, (ours, &ours_file), (theirs, &theirs_file))?;
    let wanted = if direction == "in" {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    ensure!(
        ours.iter().all(|p| p.direction == Some(wanted)),
        "-Q {direction} captured the other direction"
    );
    // ping, UDP both ways and the marker: at least 4 each way.
    ensure!(
        ours.len() >= 4,
        "-Q {direction}: only {} packets",
        ours.len()
    );
    checks::same_packets(&format!("-Q {direction}"), &ours, &theirs, |p| {
        (p.orig_len, &p.data)
    })
}

#[test]
fn direction_in_matches_tcpdump() -> anyhow::Result<()> {
    direction_matches_tcpdump("in")
}

#[test]
fn direction_out_matches_tcpdump() -> anyhow::Result<()> {
    direction_matches_tcpdump("out")
}

#[test]
fn list_interfaces_as_tcpdump() -> anyhow::Result<()> {
    let ns = Netns::new("list")?;
    // Up and connected, up without a peer that is up, down; index order
    // against instance numbers (v1 before v0), and lo.
    ns.sh(
        "ip link add v0 type veth peer name v1 && ip link add eth7 type veth peer name b && \
         ip link add x9 type veth peer name eth2 && \
         ip link set v0 up && ip link set v1 up && ip link set eth7 up && ip link set x9 up",
    )?;
    let names: Vec<String> = ns
        .sh("ls /sys/class/net")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    // tcpdump's lines for real interfaces, renumbered: we leave out the
    // pseudo-devices (any, nflog, nfqueue, dbus-*, bluetooth-monitor).
    let theirs: Vec<String> = ns
        .sh("tcpdump -D")?
        .lines()
        .filter_map(|line| line.split_once('.').map(|(_, rest)| rest.to_owned()))
        .filter(|rest| {
            names
                .iter()
                .any(|name| rest.split_once(' ').is_some_and(|(n, _)| n == name))
        })
        .enumerate()
        .map(|(i, rest)| format!("{}.{rest}", i + 1))
        .collect();
    let output = agent_run(&ns, &["capture", "-D"])?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ours: Vec<String> = String::from_utf8(output.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    ensure!(theirs.len() == 7, "tcpdump listed {theirs:?}");
    ensure!(ours == theirs, "ours:\n{ours:#?}\ntcpdump:\n{theirs:#?}");
    Ok(())
}
