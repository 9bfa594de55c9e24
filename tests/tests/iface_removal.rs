//! A captured interface that disappears mid-capture: the capture of that
//! interface ends with a message naming it and when, its statistics are
//! written, the others go on, and when none is left the capture exits
//! non-zero, as tcpdump does ("pcap_loop: The interface disappeared").
//! Nothing stays attached, and the clsact fallback leaves no state.
//! Through the API, the removal of a container's veth is an event of that
//! origin, and the capture goes on for the other instances.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    path::{Path, PathBuf},
    process::ExitStatus,
};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir, agent_capture,
    app_capture::{self, ping_gateway_from},
    captures::{self, Capture},
    checks,
    netns::{Netns, Pair},
    now_ns,
    process::Running,
    reference::assert_readable,
};

/// Where the clsact fallback keeps its state files and qdisc marks.
const TC_STATE: &str = "/run/pcap-agent/tc";

/// `veth0` (a) – `veth1` (b) from [`Pair`], and a second pair `veth2`
/// (a, 10.0.1.1) – `veth3` (b, 10.0.1.2), all four without IPv6: a peer
/// with IPv6 sends MLD reports and router solicitations of its own
/// accord, and one of them can reach veth2 while it is being deleted.
fn two_links(tag: &str) -> anyhow::Result<Pair> {
    let pair = Pair::new(tag)?;
    pair.add_second_link()?;
    pair.disable_ipv6()?;
    pair.a.sh("sysctl -qw net.ipv6.conf.veth2.disable_ipv6=1")?;
    pair.b.sh("sysctl -qw net.ipv6.conf.veth3.disable_ipv6=1")?;
    Ok(pair)
}

/// The inode of `ns`, as the clsact fallback names its qdisc marks.
fn netns_inode(ns: &Netns) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(format!("/run/netns/{}", ns.name))?.ino())
}

fn ifindex(ns: &Netns, interface: &str) -> anyhow::Result<u32> {
    ns.sh(&format!("cat /sys/class/net/{interface}/ifindex"))?
        .trim()
        .parse()
        .context("ifindex")
}

/// The clsact fallback's files that belong to the capture `pid`, or mark a
/// qdisc on one of `indexes` in the namespace `netns`.
fn tc_state_of(pid: i32, netns: u64, indexes: &[u32]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(TC_STATE) else {
        return Vec::new();
    };
    let marks: Vec<String> = indexes
        .iter()
        .map(|index| format!("qdisc-{netns}-{index}"))
        .collect();
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.contains(&format!("-{pid}-")) || marks.contains(name))
        .collect()
}

/// The statistics block of `interface`, and the packets of it.
fn of_interface<'a>(
    capture: &'a Capture,
    interface: &str,
) -> anyhow::Result<(&'a captures::Statistics, Vec<&'a captures::Packet>)> {
    let statistics = capture
        .statistics
        .iter()
        .find(|s| s.interface.as_deref() == Some(interface))
        .with_context(|| format!("no statistics block for {interface}: {capture:?}"))?;
    let packets = capture
        .packets
        .iter()
        .filter(|p| p.interface.as_deref() == Some(interface))
        .collect();
    Ok((statistics, packets))
}

fn ping(ns: &Netns, address: &str) -> anyhow::Result<()> {
    ns.sh(&format!("ping -q -c 3 -i 0.01 -W 1 {address}"))?;
    Ok(())
}

/// Deletes `interface` in `ns` and waits for the capture to say so; the
/// time just before.
fn delete(ours: &mut Running, ns: &Netns, interface: &str) -> anyhow::Result<u64> {
    let before = now_ns();
    ns.sh(&format!("ip link del {interface}"))?;
    ours.wait_for(&format!("{interface}: the interface disappeared at "), 1)?;
    Ok(before)
}

/// The file is valid; `gone_first` has its packets from before `gone_at`
/// and a statistics block that counts them; veth0 went on after it.
fn check_file(file: &Path, gone_first: &str, gone_at: u64) -> anyhow::Result<Capture> {
    assert_readable(file)?;
    let capture = captures::read_file(file)?;
    let (statistics, packets) = of_interface(&capture, gone_first)?;
    ensure!(
        packets.len() >= 6,
        "{gone_first}: {} packets before it went",
        packets.len()
    );
    ensure!(
        statistics.user_delivered == Some(packets.len() as u64),
        "{gone_first}: {statistics:?} for {} packets",
        packets.len()
    );
    let late: Vec<_> = packets.iter().filter(|p| p.unix_ns >= gone_at).collect();
    ensure!(
        late.is_empty(),
        "{gone_first} has packets from after it was deleted at {gone_at} ns: {late:?}"
    );
    let (_, others) = of_interface(&capture, "veth0")?;
    ensure!(
        others.iter().filter(|p| p.unix_ns > gone_at).count() >= 6,
        "veth0 was not captured after {gone_first} went: {} packets",
        others.len()
    );
    Ok(capture)
}

/// A capture with `attach` of two links ([`two_links`], tag `tag`), in the
/// order `interfaces`, writing `ATTACH.pcapng` in `dir`.
struct TwoLinkCapture {
    ours: Running,
    pair: Pair,
    file: PathBuf,
    netns: u64,
    indexes: [u32; 2],
}

/// A [`TwoLinkCapture`] that ended: its exit status and stderr, and the
/// clsact fallback's state it left ([`tc_state_of`]).
struct Ended {
    status: ExitStatus,
    stderr: String,
    pair: Pair,
    file: PathBuf,
    tc_left: Vec<String>,
}

impl TwoLinkCapture {
    /// Started, and veth2's peer pinged.
    fn start(dir: &Path, tag: &str, attach: &str, interfaces: [&str; 2]) -> anyhow::Result<Self> {
        let pair = two_links(&format!("{tag}{attach}"))?;
        let netns = netns_inode(&pair.a)?;
        let indexes = [ifindex(&pair.a, "veth0")?, ifindex(&pair.a, "veth2")?];
        let file = dir.join(format!("{attach}.pcapng"));
        let path = file.to_str().expect("utf-8");
        let [first, second] = interfaces;
        let ours = agent_capture::start(
            &pair.a,
            &["-i", first, "-i", second, "--attach", attach, "-w", path],
        )?;
        ping(&pair.a, "10.0.1.2")?;
        Ok(Self {
            ours,
            pair,
            file,
            netns,
            indexes,
        })
    }

    /// Pings veth0's peer.
    fn ping_veth0(&self) -> anyhow::Result<()> {
        ping(&self.pair.a, "10.0.0.2")
    }

    /// Deletes `interface` (see [`delete`]); the time just before.
    fn delete(&mut self, interface: &str) -> anyhow::Result<u64> {
        delete(&mut self.ours, &self.pair.a, interface)
    }

    /// Ends the capture with `end` ([`Running::wait`] or
    /// [`Running::interrupt`]).
    fn end(
        self,
        end: impl FnOnce(Running) -> anyhow::Result<(ExitStatus, Vec<String>)>,
    ) -> anyhow::Result<Ended> {
        let pid = self.ours.pid().as_raw();
        let (status, lines) = end(self.ours)?;
        Ok(Ended {
            status,
            stderr: lines.join("\n"),
            tc_left: tc_state_of(pid, self.netns, &self.indexes),
            pair: self.pair,
            file: self.file,
        })
    }
}

#[test]
fn a_deleted_interface_ends_its_capture_and_the_last_one_ends_all() -> anyhow::Result<()> {
    let dir = TempDir::new("iface-removal")?;
    for attach in ["tcx", "tc"] {
        let mut capture = TwoLinkCapture::start(&dir, "gone", attach, ["veth0", "veth2"])?;
        capture.ping_veth0()?;
        let gone_at = capture.delete("veth2")?;
        capture.ping_veth0()?;
        capture.delete("veth0")?;
        let Ended {
            status,
            stderr,
            file,
            tc_left,
            pair: _pair,
        } = capture.end(Running::wait)?;
        ensure!(
            status.code() == Some(1),
            "{attach}: exited with {status}:\n{stderr}"
        );
        ensure!(
            stderr.contains("pcap-agent: every interface disappeared"),
            "{attach}:\n{stderr}"
        );
        let capture = check_file(&file, "veth2", gone_at)?;
        let (statistics, packets) = of_interface(&capture, "veth0")?;
        ensure!(
            statistics.user_delivered == Some(packets.len() as u64),
            "{attach}: veth0 {statistics:?} for {} packets",
            packets.len()
        );
        ensure!(tc_left.is_empty(), "{attach}: tc state left: {tc_left:?}");
    }
    Ok(())
}

#[test]
fn the_others_go_on_and_are_detached_when_the_capture_ends() -> anyhow::Result<()> {
    let dir = TempDir::new("iface-removal-rest")?;
    for attach in ["tcx", "tc"] {
        let mut capture = TwoLinkCapture::start(&dir, "rest", attach, ["veth2", "veth0"])?;
        let gone_at = capture.delete("veth2")?;
        capture.ping_veth0()?;
        let ended = capture.end(Running::interrupt)?;
        let (status, stderr) = (ended.status, &ended.stderr);
        ensure!(
            status.success(),
            "{attach}: exited with {status}:\n{stderr}"
        );
        check_file(&ended.file, "veth2", gone_at)?;
        checks::nothing_attached(&ended.pair.a, "veth0")?;
        let left = &ended.tc_left;
        ensure!(left.is_empty(), "{attach}: tc state left: {left:?}");
    }
    Ok(())
}

#[test]
fn a_removed_container_veth_is_its_origins_event_and_the_others_go_on() -> anyhow::Result<()> {
    const APP: &str = "my-app";
    let (cf, home) = app_capture::two_instances_for_dev("iface-removal-cf", APP, "", 600)?;
    let landscape = &cf.landscape;
    let file = cf.dir.join("app.pcapng");
    let mut cli = app_capture::start(&cf, &home, APP, &[], &file)?;
    cli.wait_for("capturing on", 2)?;
    ping_gateway_from(landscape, APP, 0)?;
    ping_gateway_from(landscape, APP, 1)?;

    let kept = &landscape.app(APP).instances[0];
    let gone = &landscape.app(APP).instances[1];
    let veth = gone.host_interface();
    let gone_at = now_ns();
    landscape.cells[gone.cell]
        .ns
        .sh(&format!("ip link del {veth}"))?;
    let event = format!(
        "{APP}/1: the container's interface {veth} was removed: the instance stopped or moved"
    );
    cli.wait_for(&event, 1)?;
    let after = now_ns();
    ping_gateway_from(landscape, APP, 0)?;
    let (status, lines) = cli.interrupt()?;
    let stderr = lines.join("\n");
    ensure!(status.success(), "pcap app failed:\n{stderr}");
    ensure!(
        !stderr.contains(&format!("{APP}/0: the container's interface")),
        "the other origin was told of a removal:\n{stderr}"
    );

    assert_readable(&file)?;
    let capture = captures::read_file(&file)?;
    let of = |origin: &str| -> Vec<&captures::Packet> {
        capture
            .packets
            .iter()
            .filter(|p| {
                p.interface
                    .as_deref()
                    .is_some_and(|i| i.starts_with(&format!("{origin}/")))
            })
            .collect()
    };
    let removed = of(&format!("{APP}/1"));
    ensure!(
        removed.len() >= 10 && removed.iter().all(|p| p.unix_ns < gone_at),
        "{APP}/1: {} packets, some after its veth went",
        removed.len()
    );
    let others = of(&format!("{APP}/0"));
    ensure!(
        others.iter().filter(|p| p.unix_ns > after).count() >= 10,
        "{APP}/0 was not captured after {APP}/1's veth went: {} packets",
        others.len()
    );
    ensure!(
        others.iter().all(|p| p.data.len() == 142),
        "{APP}/0 holds packets of another instance"
    );
    let programs = landscape.cells[kept.cell]
        .ns
        .tcx_programs(&kept.host_interface())?;
    ensure!(programs.is_empty(), "{APP}/0 has {programs:?} attached");
    Ok(())
}
