//! Filter expressions on live interfaces: concurrent captures with their own
//! filters, out-of-band VLAN tags, and bad expressions.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir, agent_capture,
    captures::{self, Packet},
    checks,
    netns::{Netns, Pair},
    process::{Running, agent_run, wait_until},
    reference::tcpdump_writing,
};

/// Starts a capture of `interface` into `file` with `filter` and waits until it listens.
fn capture(ns: &Netns, interface: &str, file: &Path, filter: &[&str]) -> anyhow::Result<Running> {
    agent_capture::start_writing(ns, file, &[&["-i", interface], filter].concat())
}

/// What `tcpdump -r FILE EXPR` keeps of a capture file.
fn tcpdump_keeps(file: &Path, expression: &str, dir: &Path) -> anyhow::Result<Vec<Packet>> {
    let out = dir.join("tcpdump-filtered.pcap");
    let status = Command::new("tcpdump")
        .args(["-r"])
        .arg(file)
        .arg("-w")
        .arg(&out)
        .arg(expression)
        .stderr(std::process::Stdio::null())
        .status()
        .context("running tcpdump")?;
    ensure!(
        status.success(),
        "tcpdump -r {} {expression} failed",
        file.display()
    );
    Ok(captures::read_file(&out)?.packets)
}

/// Compares in time order: two captures may read packets from different
/// CPUs in a different order.
fn same_packets(ours: &[Packet], reference: &[Packet], what: &str) -> anyhow::Result<()> {
    let sorted = |packets: &[Packet]| {
        let mut packets = packets.to_vec();
        packets.sort_by_key(|p| p.unix_ns);
        packets
    };
    let (ours, reference) = (sorted(ours), sorted(reference));
    checks::same_packets(what, &ours, &reference, |p| (p.orig_len, &p.data))?;
    checks::stamped_alike(what, &ours, &reference)
}

fn send_traffic(pair: &Pair) -> anyhow::Result<()> {
    pair.a.sh("ping -c 3 -i 0.1 10.0.0.2")?;
    pair.a.sh(
        "python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range(5): s.sendto(bytes(100 + i), (\"10.0.0.2\", 9999))'",
    )?;
    pair.a.sh("ping -6 -c 2 -i 0.1 fd00::2")?;
    Ok(())
}

/// Captures of veth0 in `pair.a`, one a `(file name, filter)` of
/// `captures` (the file in `dir`), all running while [`send_traffic`] sends;
/// they stop last first, and must succeed. Each one's file and output lines.
fn while_traffic_is_sent<const N: usize>(
    pair: &Pair,
    dir: &Path,
    captures: [(&str, &[&str]); N],
) -> anyhow::Result<[(PathBuf, Vec<String>); N]> {
    let mut running = Vec::new();
    for (name, filter) in captures {
        let file = dir.join(name);
        running.push((capture(&pair.a, "veth0", &file, filter)?, file));
    }
    send_traffic(pair)?;
    let mut stopped = Vec::new();
    for (capture, file) in running.into_iter().rev() {
        let (status, lines) = capture.interrupt()?;
        ensure!(status.success(), "{}: {lines:?}", file.display());
        stopped.push((file, lines));
    }
    stopped.reverse();
    Ok(stopped.try_into().expect("one result per capture"))
}

#[test]
fn concurrent_captures_each_get_exactly_their_own_packets() -> anyhow::Result<()> {
    let pair = Pair::new("conc")?;
    let dir = TempDir::new("conc")?;
    // The filtered captures stop first, so the unfiltered one saw everything they did.
    let [(all_file, _), (icmp_file, _), (udp_file, _)] = while_traffic_is_sent(
        &pair,
        &dir,
        [
            ("all.pcapng", &[]),
            ("icmp.pcapng", &["icmp"]),
            ("udp.pcapng", &["udp", "and", "dst", "port", "9999"]),
        ],
    )?;

    let everything = captures::read_file(&all_file)?.packets;
    let icmp = captures::read_file(&icmp_file)?.packets;
    let udp = captures::read_file(&udp_file)?.packets;
    ensure!(
        icmp.len() >= 6 && udp.len() == 5,
        "icmp {} packets, udp {} packets",
        icmp.len(),
        udp.len()
    );
    // Each filtered capture holds what tcpdump's filter keeps of the
    // unfiltered one (only our test traffic matches these filters, and it
    // runs while all three capture).
    for (ours, expression) in [(&icmp, "icmp"), (&udp, "udp and dst port 9999")] {
        same_packets(
            ours,
            &tcpdump_keeps(&all_file, expression, &dir)?,
            expression,
        )?;
    }
    ensure!(
        everything.len() > icmp.len() + udp.len(),
        "the unfiltered capture has more than both"
    );
    Ok(())
}

#[test]
fn filters_see_out_of_band_vlan_tags_as_tcpdump_does() -> anyhow::Result<()> {
    // Nothing but the test's own frames and their ARP.
    let pair = Pair::without_ipv6("vlan")?;
    let dir = TempDir::new("vlan")?;
    // On veth1's ingress the kernel moves the 802.1Q tag out of band; the
    // filter must see it where the capture (and libpcap) puts it back.
    let expressions = [
        "vlan 100 and ip",
        "not vlan",
        "vlan and udp",
        "vlan 200",
        "ip",
    ];
    let all_file = dir.join("all.pcapng");
    let all = capture(&pair.b, "veth1", &all_file, &[])?;
    let mut filtered = Vec::new();
    for (i, expression) in expressions.iter().enumerate() {
        let file = dir.join(format!("f{i}.pcapng"));
        let words: Vec<&str> = expression.split(' ').collect();
        filtered.push((capture(&pair.b, "veth1", &file, &words)?, file, *expression));
    }
    let udp_header_and_payload =
        "4500 0014 0000 0000 4011 0000 0a000001 0a000002".to_owned() + &"00".repeat(26);
    for tci in ["0064", "00c8", "2064"] {
        pair.send_frame(&format!("8100 {tci} 0800 {udp_header_and_payload}"))?;
    }
    pair.a.sh("ping -c 1 10.0.0.2")?;
    let mut stopped = Vec::new();
    for (running, file, expression) in filtered {
        running.interrupt()?;
        stopped.push((file, expression));
    }
    // The unfiltered capture stops last, and only then is its file read:
    // a file still being written may lack what the others already wrote.
    all.interrupt()?;
    for (file, expression) in stopped {
        let ours = captures::read_file(&file)?.packets;
        all_matches_reference(&ours, &all_file, expression, &dir)?;
    }
    let everything = captures::read_file(&all_file)?.packets;
    let tagged = everything
        .iter()
        .filter(|p| p.data[12..14] == [0x81, 0x00])
        .count();
    ensure!(
        tagged == 3,
        "{tagged} tagged frames captured (the tag was put back?)"
    );
    Ok(())
}

/// Our filtered capture holds what tcpdump's filter keeps of our unfiltered
/// capture, which ran longer. The packets are matched by content, because
/// the unfiltered capture also holds noise from before and after.
fn all_matches_reference(
    ours: &[Packet],
    all_file: &Path,
    expression: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let reference = tcpdump_keeps(all_file, expression, dir)?;
    let first = ours.first().map_or(u64::MAX, |p| p.unix_ns);
    let last = ours.last().map_or(0, |p| p.unix_ns);
    let expected: Vec<Packet> = reference
        .into_iter()
        .filter(|p| p.unix_ns + 1_000_000 >= first && p.unix_ns <= last + 1_000_000)
        .collect();
    same_packets(ours, &expected, expression)
}

#[test]
fn a_bad_expression_is_rejected_like_tcpdump_and_attaches_nothing() -> anyhow::Result<()> {
    let pair = Pair::new("badf")?;
    for expression in [
        ["tcp", "port"].as_slice(),
        ["port", "99999"].as_slice(),
        ["ip", "and", "("].as_slice(),
        ["ip", "and", "not", "ip"].as_slice(),
    ] {
        let ours = agent_run(
            &pair.a,
            &[&["capture", "-i", "veth0", "-w", "/dev/null"], expression].concat(),
        )?;
        let theirs = Command::new("tcpdump")
            .args(["-d", "-y", "EN10MB"])
            .args(expression)
            .output()?;
        let ours_err = String::from_utf8_lossy(&ours.stderr);
        let theirs_err = String::from_utf8_lossy(&theirs.stderr);
        ensure!(
            ours.status.code() == Some(1),
            "{expression:?}: exit {:?}",
            ours.status.code()
        );
        let their_message = theirs_err.trim().trim_start_matches("tcpdump: ");
        ensure!(
            ours_err.trim() == format!("pcap-agent: {their_message}"),
            "{expression:?}: we say {ours_err:?}, tcpdump says {theirs_err:?}"
        );
        let tcx = pair.a.tcx_programs("veth0")?;
        ensure!(tcx.is_empty(), "attached after a bad filter: {tcx:?}");
    }
    for (what, args, says) in [
        // -F reads the expression from a file, and names a missing one.
        (
            "-F with a missing file",
            ["-F", "/nonexistent/filter"],
            "/nonexistent/filter",
        ),
        // tcpdump would resolve the name; we refuse it (tests/filter_bounds.rs).
        (
            "a host name",
            ["host", "nosuchhost.invalid"],
            "host names are not resolved",
        ),
    ] {
        let output = agent_run(&pair.a, &[&["capture", "-i", "veth0"], &args[..]].concat())?;
        ensure!(
            output.status.code() == Some(1)
                && String::from_utf8_lossy(&output.stderr).contains(says),
            "{what}: {output:?}"
        );
    }
    Ok(())
}

#[test]
fn filter_from_a_file_and_reject_all_and_accept_all() -> anyhow::Result<()> {
    let pair = Pair::new("ff")?;
    let dir = TempDir::new("ff")?;
    let expression = dir.join("filter.txt");
    std::fs::write(&expression, "icmp and\n  dst host 10.0.0.2\n")?;
    let expression = expression.to_str().expect("utf-8 path");
    // tcpdump refuses `ip and not ip` ("expression rejects all packets");
    // `len < 0` is rejected only when it runs.
    let [(every, _), (from_file, _), (none, reject_lines)] = while_traffic_is_sent(
        &pair,
        &dir,
        [
            ("every.pcapng", &["ip", "or", "not", "ip"]),
            ("from-file.pcapng", &["-F", expression]),
            ("none.pcapng", &["len", "<", "0"]),
        ],
    )?;
    let requests = captures::read_file(&from_file)?.packets;
    ensure!(
        requests.len() == 3,
        "icmp to 10.0.0.2: {} packets",
        requests.len()
    );
    ensure!(
        captures::read_file(&none)?.packets.is_empty(),
        "reject-all kept packets"
    );
    ensure!(
        pcap_tests::process::stat(&reject_lines, "packets received by filter") == Some(0),
        "reject-all: {reject_lines:?}"
    );
    ensure!(
        captures::read_file(&every)?.packets.len() >= 3 + 3 + 5 + 4,
        "accept-all missed packets"
    );
    Ok(())
}

/// A raw-IP (TUN) device: the TC hook sees packets from the IP header on,
/// the capture says LINKTYPE_RAW, and the filter is compiled for it.
#[test]
fn raw_ip_devices_filter_and_capture_like_tcpdump() -> anyhow::Result<()> {
    let ns = Netns::new("tun")?;
    let dir = TempDir::new("tun")?;
    let go = dir.join("go");
    ns.sh(&format!("mkfifo {}", go.display()))?;
    let mut peer = Running::spawn(ns.command("python3").args(["-c", TUN_PEER]).arg(&go))?;
    peer.wait_for("ready", 1)?;
    ns.sh("ip addr add 10.8.0.1/24 dev tun0 && ip link set tun0 up")?;
    let ours_file = dir.join("ours.pcapng");
    let ref_file = dir.join("ref.pcap");
    let filter = ["icmp", "and", "src", "10.8.0.2"];
    let ours = capture(&ns, "tun0", &ours_file, &filter)?;
    let reference = tcpdump_writing(
        &ns,
        &ref_file,
        &[&["-i", "tun0", "--immediate-mode"], &filter[..]].concat(),
    )?;
    // The FIFO opens for writing once the peer has it open for reading.
    wait_until(
        "the TUN peer opens its FIFO",
        std::time::Duration::from_secs(30),
        || {
            use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&go)
            {
                Ok(mut fifo) => fifo.write_all(b"go").map(|()| true).map_err(Into::into),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => Ok(false),
                Err(e) => Err(e.into()),
            }
        },
    )?;
    peer.wait_for("done", 1)?;
    ours.interrupt()?;
    reference.interrupt()?;
    let capture = captures::read_file(&ours_file)?;
    ensure!(
        capture.link_types == [101],
        "link types {:?}, expected LINKTYPE_RAW",
        capture.link_types
    );
    let reference = captures::read_file(&ref_file)?.packets;
    ensure!(
        reference.len() == 3,
        "tcpdump saw {} requests",
        reference.len()
    );
    same_packets(&capture.packets, &reference, "tun0")?;
    ensure!(
        capture.packets.iter().all(|p| p.data[0] >> 4 == 4),
        "packets must start at the IP header"
    );
    Ok(())
}

/// Creates tun0, waits for "go" on the FIFO named in argv[1], then sends three ICMP
/// echo requests from 10.8.0.2 into it and reads the three replies.
const TUN_PEER: &str = r#"
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"tun0", 0x0001 | 0x1000))
print("ready", file=sys.stderr, flush=True)
open(sys.argv[1]).read()  # a FIFO: blocks until the test says go
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
for seq in range(3):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 7, seq) + bytes(range(56))
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, bytes([10, 8, 0, 2]), bytes([10, 8, 0, 1]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    os.write(fd, ip + icmp)
    while True:
        reply = os.read(fd, 2048)
        if reply[9] == 1 and reply[20] == 0:
            break
print("done", file=sys.stderr, flush=True)
"#;
