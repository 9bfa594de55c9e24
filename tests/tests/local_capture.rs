//! `pcap-agent capture` against tcpdump on real veths in network namespaces.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;
use pcap_tests::{
    TempDir,
    agent_capture::{self, between_markers, start as agent},
    captures::{self, Capture, Direction, Packet},
    checks,
    netns::Pair,
    process::{Running, agent_run, binary, stat, wait_until},
    reference::{assert_readable, mark_references, tcpdump, tcpdump_writing},
};

/// Sends ICMP, UDP, a TCP conversation, IPv6, ARP and a VLAN-tagged frame
/// from `a` to `b`.
fn send_mixed_traffic(pair: &Pair) -> anyhow::Result<()> {
    pair.a
        .sh("ip neigh flush dev veth0 && ping -c 2 -i 0.2 -W 1 10.0.0.2")?;
    pair.a.sh("ping -6 -c 2 -i 0.2 -W 1 fd00::2")?;
    let server = pair
        .b
        .command("python3")
        .args(["-c", TCP_SERVER])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut server = scopeguard(server);
    // The server prints once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.take().expect("stdout")),
        &mut line,
    )?;
    pair.a.sh(&format!("python3 -c '{TCP_CLIENT}'"))?;
    server.0.wait()?;
    pair.a.sh("python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b\"x\"*100, (\"10.0.0.2\", 9999))'")?;
    pair.a.sh("python3 -c 'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.sendto(b\"y\"*2000, (\"fd00::2\", 9999))'")?;
    let payload = (0..60u8).fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    pair.send_frame(&format!("81002064 0800 {payload}"))?;
    Ok(())
}

struct ScopeGuard(std::process::Child);
fn scopeguard(child: std::process::Child) -> ScopeGuard {
    ScopeGuard(child)
}
impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const TCP_SERVER: &str = "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('10.0.0.2', 8080)); s.listen(1); print('ready', flush=True)
c, _ = s.accept(); data = c.recv(65536); c.sendall(b'pong ' * 1000); c.close()
";
const TCP_CLIENT: &str = "
import socket
c = socket.create_connection((\"10.0.0.2\", 8080)); c.sendall(b\"ping \" * 400)
while c.recv(65536): pass
c.close()
";

#[test]
fn matches_tcpdump_byte_for_byte() -> anyhow::Result<()> {
    let pair = Pair::new("cmp")?;
    // Captured on veth1 (in b): traffic from a arrives on ingress, replies
    // leave on egress. An 802.1Q frame arriving there has its tag moved out
    // of band by the kernel, which both tools must put back.
    let dir = TempDir::new("cmp")?;
    let ours_file = dir.join("ours.pcapng");
    let (in_file, out_file) = (dir.join("in.pcap"), dir.join("out.pcap"));

    let ours = agent_capture::start_writing(&pair.b, &ours_file, &["-i", "veth1"])?;
    let tcpdump_in = tcpdump(&pair.b, "veth1", "in", &in_file)?;
    let tcpdump_out = tcpdump(&pair.b, "veth1", "out", &out_file)?;
    // Each direction's window opens and closes with a marker sent that way,
    // so every tool's window holds the same packets (`between_markers`).
    let inbound = || mark_references(&pair.a, "10.0.0.2", &[&in_file]);
    let outbound = || mark_references(&pair.b, "10.0.0.1", &[&out_file]);
    let (start_in, start_out) = (inbound()?, outbound()?);
    send_mixed_traffic(&pair)?;
    let (end_in, end_out) = (inbound()?, outbound()?);
    let (ours, lines) = agent_capture::written(ours.interrupt()?, &ours_file)?;
    tcpdump_in.interrupt()?;
    tcpdump_out.interrupt()?;

    let ours_going = |direction| -> Vec<Packet> {
        ours.packets
            .iter()
            .filter(|p| p.direction == Some(direction))
            .cloned()
            .collect()
    };
    let ours_in = between_markers(&ours_going(Direction::Inbound), &start_in, &end_in)?;
    let ours_out = between_markers(&ours_going(Direction::Outbound), &start_out, &end_out)?;
    let reference_in =
        between_markers(&captures::read_file(&in_file)?.packets, &start_in, &end_in)?;
    let reference_out = between_markers(
        &captures::read_file(&out_file)?.packets,
        &start_out,
        &end_out,
    )?;
    checks::same_in_direction(&ours_in, &reference_in, Direction::Inbound)?;
    checks::same_in_direction(&ours_out, &reference_out, Direction::Outbound)?;
    let ours_packets = [ours_in, ours_out].concat();

    // The traffic we promised is in there: ARP, IPv4, IPv6 and 802.1Q.
    let ethertype = |p: &Packet| u16::from_be_bytes([p.data[12], p.data[13]]);
    for (name, value) in [
        ("ARP", 0x0806),
        ("IPv4", 0x0800),
        ("IPv6", 0x86dd),
        ("802.1Q", 0x8100),
    ] {
        ensure!(
            ours_packets.iter().any(|p| ethertype(p) == value),
            "no {name} packet captured"
        );
    }
    ensure!(
        ours_packets.iter().any(|p| p.orig_len > 1500),
        "no packet larger than the smallest size classes"
    );
    check_accounting(&ours, &lines)?;
    Ok(())
}

/// The statistics block and the stderr lines agree with the packets in the file.
fn check_accounting(capture: &Capture, lines: &[String]) -> anyhow::Result<()> {
    let captured = stat(lines, "packets captured").context("no 'packets captured' line")?;
    let received =
        stat(lines, "packets received by filter").context("no 'received by filter' line")?;
    let dropped =
        stat(lines, "packets dropped by kernel").context("no 'dropped by kernel' line")?;
    ensure!(
        captured == capture.packets.len() as u64,
        "stderr says {captured} captured, file has {}",
        capture.packets.len()
    );
    let stats = capture
        .statistics
        .first()
        .context("no interface statistics block")?;
    ensure!(
        stats.user_delivered == Some(captured),
        "isb_usrdeliv {:?} != {captured}",
        stats.user_delivered
    );
    ensure!(
        stats.os_dropped == Some(dropped),
        "isb_osdrop {:?} != {dropped}",
        stats.os_dropped
    );
    ensure!(
        stats.filter_accept == Some(received),
        "isb_filteraccept {:?} != {received}",
        stats.filter_accept
    );
    ensure!(
        received == captured + dropped,
        "received {received} != captured {captured} + dropped {dropped}"
    );
    Ok(())
}

#[test]
fn snaplen_truncates_like_tcpdump() -> anyhow::Result<()> {
    let pair = Pair::without_ipv6("snap")?;
    let dir = TempDir::new("snap")?;
    let ours_file = dir.join("ours.pcap");
    let ref_file = dir.join("ref.pcap");
    let ours = agent_capture::start_writing(
        &pair.a,
        &ours_file,
        &["-i", "veth0", "-s", "60", "--format", "pcap"],
    )?;
    let reference = tcpdump_writing(&pair.a, &ref_file, &["-i", "veth0", "-s", "60", "-U"])?;
    let (ours, reference) = agent_capture::stop_both_after_sh(
        &pair.a,
        "ping -c 3 -i 0.2 -s 1000 10.0.0.2",
        "10.0.0.2",
        (ours, &ours_file),
        (reference, &ref_file),
    )?;
    ensure!(
        reference.len() >= 3,
        "tcpdump saw {} packets",
        reference.len()
    );
    // Classic pcap has no direction, so compare with tcpdump on both directions.
    checks::same_packets("-s 60", &ours, &reference, |p| (p.orig_len, &p.data))?;
    for a in &ours {
        ensure!(
            a.data.len() == (a.orig_len as usize).min(60),
            "{} bytes kept of {}",
            a.data.len(),
            a.orig_len
        );
    }
    Ok(())
}

/// Starts a capture on veth0 of a new pair named `name`, with `args`, into
/// `{name}.pcapng` of a directory of its own, and hands the three to `then`.
fn writing<T>(
    name: &str,
    args: &[&str],
    then: impl FnOnce(&Pair, &Path, Running) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let pair = Pair::new(name)?;
    let dir = TempDir::new(name)?;
    let file = dir.join(format!("{name}.pcapng"));
    let ours = agent_capture::start_writing(&pair.a, &file, &[&["-i", "veth0"], args].concat())?;
    then(&pair, &file, ours)
}

/// Captures on veth0 of a new pair named `name`, with `args`, while `a`
/// runs `traffic`, until the capture ends by itself; what it wrote.
fn until_it_stops(
    name: &str,
    args: &[&str],
    traffic: Option<&str>,
) -> anyhow::Result<(Capture, Vec<String>)> {
    writing(name, args, |pair, file, ours| {
        if let Some(traffic) = traffic {
            pair.a.sh(traffic)?;
        }
        agent_capture::written(ours.wait()?, file)
    })
}

#[test]
fn count_stops_after_n_packets() -> anyhow::Result<()> {
    let (capture, lines) =
        until_it_stops("count", &["-c", "3"], Some("ping -c 5 -i 0.1 10.0.0.2"))?;
    ensure!(
        capture.packets.len() == 3,
        "-c 3 wrote {} packets",
        capture.packets.len()
    );
    ensure!(stat(&lines, "packets captured") == Some(3));
    Ok(())
}

#[test]
fn duration_stops_the_capture() -> anyhow::Result<()> {
    until_it_stops("dur", &["--duration", "0.5"], None)?;
    Ok(())
}

#[test]
fn sigint_during_a_flood_leaves_a_valid_file_and_counts_add_up() -> anyhow::Result<()> {
    // A small ring, so that the flood overruns it and drops are counted.
    writing("flood", &["-B", "64"], |pair, file, ours| {
        // Interrupt it mid-flood, once the file holds data.
        let flood = flood_until(pair, file, 1 << 20)?;
        let ended = ours.interrupt()?;
        flood.signal(Signal::SIGINT)?;
        let _ = flood.wait();
        let (capture, lines) = agent_capture::written(ended, file)?;
        check_accounting(&capture, &lines)
    })
}

/// Floods 10.0.0.2 with pings from `a` until `file` holds `bytes`; the flood
/// goes on until the returned process is stopped.
fn flood_until(pair: &Pair, file: &Path, bytes: u64) -> anyhow::Result<Running> {
    let flood = Running::spawn(
        pair.a
            .command("ping")
            .args(["-f", "-s", "1400", "10.0.0.2"])
            .stdout(std::process::Stdio::null()),
    )?;
    wait_until(
        &format!("the flood fills {bytes} bytes of the file"),
        Duration::from_secs(20),
        || Ok(std::fs::metadata(file).map_or(0, |m| m.len()) >= bytes),
    )?;
    Ok(flood)
}

#[test]
fn a_killed_capture_leaves_a_readable_file() -> anyhow::Result<()> {
    let pair = Pair::new("kill")?;
    let dir = TempDir::new("kill")?;
    for format in ["pcapng", "pcap"] {
        let file = dir.join(format!("k.{format}"));
        let ours =
            agent_capture::start_writing(&pair.a, &file, &["-i", "veth0", "--format", format])?;
        // Kill it once it has written a few MiB, in the middle of the flood.
        let flood = flood_until(&pair, &file, 3 << 20)?;
        ours.signal(Signal::SIGKILL)?;
        ours.wait()?;
        flood.signal(Signal::SIGINT)?;
        let _ = flood.wait();
        // No statistics block. Every block is whole except, at most, the
        // last: the kernel may cut a write(2) that SIGKILL interrupts at a
        // page-cache folio boundary (generic_perform_write), which no writer
        // can prevent. Readers then read every packet before the cut.
        let bytes = std::fs::read(&file)?;
        let whole = captures::whole_blocks_len(&bytes);
        ensure!(
            bytes.len() - whole < 64 << 10,
            "{format}: {} bytes after the last whole block at {whole}",
            bytes.len() - whole
        );
        let readable = dir.join(format!("whole.{format}"));
        std::fs::write(&readable, &bytes[..whole])?;
        assert_readable(&readable)?;
        let capture = captures::parse(&bytes[..whole])?;
        ensure!(
            capture.packets.len() > 1000,
            "{format}: {} packets",
            capture.packets.len()
        );
    }
    checks::nothing_attached(&pair.a, "veth0")
}

#[test]
fn nothing_is_left_attached_after_sigterm_or_sigkill() -> anyhow::Result<()> {
    let pair = Pair::new("left")?;
    for attach in ["tcx", "tc"] {
        let ours = agent(
            &pair.a,
            &["-i", "veth0", "--attach", attach, "-w", "/dev/null"],
        )?;
        let listing = pair
            .a
            .sh("bpftool prog show; tc filter show dev veth0 ingress")?;
        ensure!(
            listing.contains("pcap_ingress"),
            "{attach}: not attached:\n{listing}"
        );
        let (status, _) = {
            ours.signal(Signal::SIGTERM)?;
            ours.wait()?
        };
        ensure!(status.success());
        checks::nothing_attached(&pair.a, "veth0").with_context(|| format!("{attach}: SIGTERM"))?;

        // SIGKILL: TCX links die with the process; tc filters are removed by the next start.
        let ours = agent(
            &pair.a,
            &["-i", "veth0", "--attach", attach, "-w", "/dev/null"],
        )?;
        ours.signal(Signal::SIGKILL)?;
        ours.wait()?;
        // The next start cleans up, whichever way it attaches itself.
        let next = agent(&pair.a, &["-i", "lo", "-w", "/dev/null"])?;
        next.interrupt()?;
        checks::nothing_attached(&pair.a, "veth0").with_context(|| format!("{attach}: SIGKILL"))?;
    }
    Ok(())
}

#[test]
fn works_beside_an_ingress_qdisc_with_a_redirect() -> anyhow::Result<()> {
    // Silk's bandwidth limiting: an ingress qdisc on s-<ip> redirecting to an IFB device.
    let pair = Pair::new("ifb")?;
    pair.a.sh(
        "ip link add i-010000000001 type ifb && ip link set i-010000000001 up && \
         tc qdisc add dev veth0 ingress && \
         tc filter add dev veth0 parent ffff: protocol all u32 match u32 0 0 \
            action mirred egress redirect dev i-010000000001",
    )?;
    let dir = TempDir::new("ifb")?;
    let file = dir.join("i.pcapng");
    let ours = agent_capture::start_writing(&pair.a, &file, &["-i", "veth0"])?;
    pair.a.sh("ping -c 3 -i 0.2 10.0.0.2")?;
    let (capture, _) = agent_capture::written(ours.interrupt()?, &file)?;
    let is_echo_reply = |p: &Packet| p.icmp_type() == Some(0);
    let replies = capture
        .packets
        .iter()
        .filter(|p| p.direction == Some(Direction::Inbound) && is_echo_reply(p))
        .count();
    ensure!(
        replies == 3,
        "expected 3 echo replies on ingress, got {replies}"
    );
    // The redirect still works: the IFB device saw the replies too.
    let ifb_packets: u64 = pair
        .a
        .sh("cat /sys/class/net/i-010000000001/statistics/tx_packets")?
        .trim()
        .parse()?;
    ensure!(
        ifb_packets >= 3,
        "the redirect stopped working ({ifb_packets} packets on the IFB)"
    );
    // On kernels without TCX the clsact fallback refuses egress here, with a clear error.
    let fallback = Running::spawn(agent_capture::command(&pair.a).args([
        "-i",
        "veth0",
        "--attach",
        "tc",
        "-w",
        "/dev/null",
    ]))?;
    let (status, lines) = fallback.wait()?;
    ensure!(
        !status.success() && lines.iter().any(|l| l.contains("`ingress` qdisc")),
        "{lines:?}"
    );
    checks::nothing_attached(&pair.a, "veth0")?;
    Ok(())
}

#[test]
fn captures_a_vxlan_device() -> anyhow::Result<()> {
    let pair = Pair::new("vx")?;
    for (ns, local, remote, overlay) in [
        (&pair.a, "10.0.0.1", "10.0.0.2", "10.255.1.0"),
        (&pair.b, "10.0.0.2", "10.0.0.1", "10.255.2.0"),
    ] {
        ns.sh(&format!(
            "ip link add silk-vtep type vxlan id 1 dstport 4789 local {local} remote {remote} gbp nolearning && \
             ip addr add {overlay}/16 dev silk-vtep && ip link set silk-vtep up"
        ))?;
    }
    let dir = TempDir::new("vx")?;
    let file = dir.join("v.pcapng");
    let ours = agent_capture::start_writing(&pair.a, &file, &["-i", "silk-vtep", "-i", "veth0"])?;
    pair.a.sh("ping -c 2 -i 0.2 10.255.2.0")?;
    let (capture, _) = agent_capture::written(ours.interrupt()?, &file)?;
    let count = |name: &str, what: &dyn Fn(&Packet) -> bool| {
        capture
            .packets
            .iter()
            .filter(|p| p.interface.as_deref() == Some(name) && what(p))
            .count()
    };
    let ipv4 = |p: &Packet, protocol: u8| {
        p.data.len() > 38 && p.data[12..14] == [8, 0] && p.data[23] == protocol
    };
    let echo = |p: &Packet| matches!(p.icmp_type(), Some(0 | 8));
    let vxlan = |p: &Packet| ipv4(p, 17) && p.data[36..38] == 4789u16.to_be_bytes();
    let echoes = count("silk-vtep", &echo);
    ensure!(
        echoes == 4,
        "silk-vtep: {echoes} ICMP echo packets, expected 2 requests and 2 replies"
    );
    let tunnelled = count("veth0", &vxlan);
    ensure!(
        tunnelled >= echoes,
        "veth0: {tunnelled} VXLAN packets for {echoes} overlay echoes"
    );
    Ok(())
}

#[test]
fn bad_input_gets_a_clear_error_and_attaches_nothing() -> anyhow::Result<()> {
    let pair = Pair::new("bad")?;
    let cases: &[(&[&str], &str)] = &[
        (&["-i", "nope0"], "does not exist"),
        (&["-i", "veth0", "-s", "300000"], "snaplen"),
        (&["-i", "veth0", "--duration=-1"], "--duration"),
        (&["-i", "veth0", "-c", "0"], "-c 0"),
    ];
    for (args, needle) in cases {
        let output = agent_run(&pair.a, &[&["capture"], *args].concat())?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "{args:?} succeeded");
        ensure!(
            stderr.contains(needle) && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
        checks::nothing_attached(&pair.a, "veth0")?;
    }
    // Unprivileged: a clear message, not an errno.
    let output = pair
        .a
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(binary("pcap-agent"))
        .args(["capture", "-i", "veth0", "-w", "/dev/null"])
        .output()?;
    checks::fails_with("unprivileged", &output, "root")
}
