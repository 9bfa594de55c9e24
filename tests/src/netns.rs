//! Network namespaces and veth pairs that are deleted on drop, even when a
//! test fails.

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};
use aya::programs::{SchedClassifier, TcAttachType};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace named `pcapt-<tag>-<pid>-<n>`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let name = format!(
            "pcapt-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&format!("ip netns add {name}"))?;
        let ns = Self { name };
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    /// `ip netns exec NAME`, to which the caller adds the program to run
    /// inside this namespace.
    pub fn exec(&self) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]);
        command
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = self.exec();
        command.arg(program);
        command
    }

    /// Runs `f` on a thread of its own that has entered this namespace
    /// (setns changes only the calling thread; sockets keep the namespace
    /// they were made in), and returns what it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let netns = std::fs::File::open(&path).with_context(|| path.clone())?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> anyhow::Result<T> {
                    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .context("setns")?;
                    f()
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in {} panicked", self.name))?
        })
    }

    /// Runs `work` to completion on a thread of its own in this namespace,
    /// with a single-threaded runtime of its own.
    pub fn block_on<T: Send>(
        &self,
        work: impl AsyncFnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(work())
        })
    }

    /// Names of the programs attached to `interface` with TCX, both directions.
    pub fn tcx_programs(&self, interface: &str) -> anyhow::Result<Vec<String>> {
        self.run(|| {
            let mut names = Vec::new();
            for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, programs) = SchedClassifier::query_tcx(interface, attach_type)?;
                names.extend(
                    programs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_owned()),
                );
            }
            Ok(names)
        })
    }

    /// Runs a shell command line inside this namespace.
    pub fn sh(&self, line: &str) -> anyhow::Result<String> {
        checked(self.command("sh").args(["-c", line]).output(), line)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces, and with them any
        // TC programs attached to them.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a shell command line in the current namespace.
pub fn sh(line: &str) -> anyhow::Result<String> {
    checked(Command::new("sh").args(["-c", line]).output(), line)
}

fn checked(output: std::io::Result<Output>, line: &str) -> anyhow::Result<String> {
    let output = output.with_context(|| format!("cannot run `{line}`"))?;
    if !output.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Two namespaces joined by a veth pair `veth0` (in `a`, 10.0.0.1/24,
/// fd00::1/64) and `veth1` (in `b`, 10.0.0.2/24, fd00::2/64).
///
/// IPv6 settles before [`Pair::new`] returns, so the kernel's own packets
/// do not mix with a test's: no router solicitations (`accept_ra=0`), no
/// duplicate address detection (`accept_dad=0`), and the listener reports
/// for each address sent within milliseconds (`mldv2_unsolicited_report_interval=1`)
/// of its link-local address, which `new` waits for on both veths. Without
/// this, reports and solicitations trickled in for about 2.5 s and one
/// could land at the edge of a test's time window in one tool's capture
/// and not the other's.
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
}

impl Pair {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let a = Netns::new(&format!("{tag}a"))?;
        let b = Netns::new(&format!("{tag}b"))?;
        a.sh(&format!(
            "ip link add veth0 type veth peer name veth1 netns {}",
            b.name
        ))?;
        for (ns, dev, v4, v6) in [
            (&a, "veth0", "10.0.0.1", "fd00::1"),
            (&b, "veth1", "10.0.0.2", "fd00::2"),
        ] {
            ns.sh(&format!(
                "sysctl -qw net.ipv6.conf.{dev}.accept_ra=0 net.ipv6.conf.{dev}.accept_dad=0 \
                 net.ipv6.conf.{dev}.mldv2_unsolicited_report_interval=1 && \
                 ip addr add {v4}/24 dev {dev} && ip -6 addr add {v6}/64 dev {dev} nodad && \
                 ip link set {dev} up"
            ))?;
        }
        // The link-local address comes with the carrier, which the kernel
        // may report up to a second after both ends are up. Polled every
        // 5 ms for at most 10 s, in the shell: `process::wait_until` is out
        // of reach, since `process` depends on this module.
        for (ns, dev) in [(&a, "veth0"), (&b, "veth1")] {
            ns.sh(&format!(
                "i=0; until ip -6 -o addr show dev {dev} scope link | grep -q inet6; do \
                 i=$((i + 1)); [ $i -le 2000 ] || {{ echo 'no link-local address on {dev}' >&2; exit 1; }}; \
                 sleep 0.005; done"
            ))?;
        }
        Ok(Self { a, b })
    }
}

impl Pair {
    /// Turns IPv6 off on both veths, so that no router solicitations or
    /// listener reports mix with a test's own packets.
    pub fn disable_ipv6(&self) -> anyhow::Result<()> {
        self.a.sh("sysctl -qw net.ipv6.conf.veth0.disable_ipv6=1")?;
        self.b.sh("sysctl -qw net.ipv6.conf.veth1.disable_ipv6=1")?;
        Ok(())
    }

    /// A new pair ([`Pair::new`]) with IPv6 off on both veths
    /// ([`Pair::disable_ipv6`]).
    pub fn without_ipv6(tag: &str) -> anyhow::Result<Self> {
        let pair = Self::new(tag)?;
        pair.disable_ipv6()?;
        Ok(pair)
    }

    /// Adds a second veth pair: `veth2` in `a` (10.0.1.1/24) and `veth3` in
    /// `b` (10.0.1.2/24), both up.
    pub fn add_second_link(&self) -> anyhow::Result<()> {
        self.a.sh(&format!(
            "ip link add veth2 type veth peer name veth3 netns {} && \
             ip addr add 10.0.1.1/24 dev veth2 && ip link set veth2 up",
            self.b.name
        ))?;
        self.b
            .sh("ip addr add 10.0.1.2/24 dev veth3 && ip link set veth3 up")?;
        Ok(())
    }

    /// veth1's MAC address as 12 hex digits.
    pub fn veth1_mac_hex(&self) -> anyhow::Result<String> {
        Ok(self
            .b
            .sh("cat /sys/class/net/veth1/address")?
            .trim()
            .replace(':', ""))
    }

    /// Sends one Ethernet frame, given in hex after the two MAC addresses,
    /// out of veth0 with a packet socket, addressed to veth1. Frames sent
    /// this way keep an 802.1Q tag in their bytes; veth1's receive path moves
    /// it out of band.
    pub fn send_frame(&self, after_macs_hex: &str) -> anyhow::Result<()> {
        let mac = self.veth1_mac_hex()?;
        self.a.sh(&format!(
            "python3 -c 'import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); \
             s.bind((\"veth0\", 0)); s.send(bytes.fromhex(\"{mac}020000000001{after_macs_hex}\"))'"
        ))?;
        Ok(())
    }
}

/// One end of a link: its namespace, interface and IPv4 address.
pub type LinkEnd<'a> = (&'a Netns, &'a str, &'a str);

/// Makes the two ends of a link permanent neighbours of each other. Then
/// neither sends ARP: no request before the first packet, and no probe 5 s
/// after a reply to a neighbour that only asked (`delay_first_probe_time`),
/// which could land at the end of one tool's capture and not the other's.
pub fn pin_neighbours(one: LinkEnd<'_>, other: LinkEnd<'_>) -> anyhow::Result<()> {
    for ((ns, dev, _), (peer, peer_dev, peer_ip)) in [(one, other), (other, one)] {
        let peer_mac = peer.sh(&format!("cat /sys/class/net/{peer_dev}/address"))?;
        ns.sh(&format!(
            "ip neigh replace {peer_ip} lladdr {} dev {dev} nud permanent",
            peer_mac.trim()
        ))?;
    }
    Ok(())
}

/// The kernel log from a point on. The ring buffer drops its oldest lines
/// when full, so lines are told apart by their timestamps, not counted.
#[derive(Debug)]
pub struct KernelLog {
    after: f64,
}

impl KernelLog {
    /// Marks the log's current end.
    pub fn mark() -> anyhow::Result<Self> {
        let after = sh("dmesg")?
            .lines()
            .filter_map(kernel_time)
            .fold(0.0, f64::max);
        Ok(Self { after })
    }

    /// The lines logged since the mark.
    pub fn new_lines(&self) -> anyhow::Result<Vec<String>> {
        Ok(sh("dmesg")?
            .lines()
            .filter(|line| kernel_time(line).is_some_and(|t| t > self.after))
            .map(str::to_owned)
            .collect())
    }
}

/// The seconds in a dmesg line's `[ 16498.968723]` prefix.
fn kernel_time(line: &str) -> Option<f64> {
    let inside = line.strip_prefix('[')?.split_once(']')?.0;
    inside.trim().parse().ok()
}
