//! The floor of the distributed path: what TLS and TCP cost on their own
//! when they move the local capture's file, byte for byte, over the same
//! veths, between processes in the agent's, the API's and the CLI's
//! places, pinned to the same CPU (`pcap-lab bare-tls`). Local capture less
//! its start and stop and its writing of the file, plus the three, is what
//! a path of these three hops costs with no gRPC, HTTP/2 or pcap work past
//! the agent's ring.

use std::{fmt::Write as _, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    cluster::Cluster,
    process::{Running, stat},
};

use super::{Run, capture::START_PACKETS, remove_last};
use crate::workspace_root;

/// Where the sender listens on the VM's management address (the agent's
/// port is 9494).
const SEND_PORT: u16 = 9600;
/// Where the relay listens in the control namespace (the API's is 8443).
const RELAY_ADDRESS: &str = "127.0.0.1:9601";

/// CPU of each bare-TLS process for one copy of the file.
#[derive(Clone, Copy, Debug)]
pub(super) struct Floor {
    /// Like the agent: encrypts and sends.
    pub send: Duration,
    /// Like the API: receives, decrypts, encrypts, sends.
    pub relay: Duration,
    /// Like the CLI: receives, decrypts, writes the file.
    pub receive: Duration,
    /// Writes the file from memory, no network.
    pub write: Duration,
    /// Local capture's start and stop (a capture of a few packets), which
    /// a serving agent pays while idle, before the capture.
    pub start: Duration,
}

impl Floor {
    pub const NAMES: [&str; 4] = [
        "bare TLS: the sender (the agent's hop)",
        "bare TLS: the relay (the API's hops)",
        "bare TLS: the receiver writing the file (the CLI's hop)",
        "writing the file alone",
    ];

    /// The parts in the order of [`Self::NAMES`].
    pub fn each(self) -> [Duration; 4] {
        [self.send, self.relay, self.receive, self.write]
    }

    /// A path of three bare-TLS hops: `local` (the local capture's CPU)
    /// less its start and stop and its writing of the file (what is left
    /// is reading the ring and encoding the blocks), plus the three
    /// processes.
    pub fn path(self, local: Duration) -> Duration {
        local.saturating_sub(self.start + self.write) + self.send + self.relay + self.receive
    }
}

/// Moves `file` (the local capture's) through the three bare-TLS processes
/// in `cluster`'s first VM and control namespace, then writes it alone;
/// `start` is local capture's start and stop.
pub(super) fn measure(
    cluster: &Cluster,
    file: &Path,
    dir: &Path,
    start: Duration,
) -> anyhow::Result<Floor> {
    let out = dir.join("bare-tls.pcapng");
    remove_last(&out)?;
    // The binary the bench's build left, which may be newer than this one.
    let lab = workspace_root().join("target/release/pcap-lab");
    let vm = &cluster.vms[0];
    let pki = &cluster.pki;
    let ca = &pki.ca.certificate;
    let send_address = format!("{}:{SEND_PORT}", vm.address());
    let role = |ns: &pcap_tests::netns::Netns, role: &str| {
        let mut command = ns.command("taskset");
        command
            .args(["-c", "1"])
            .arg(&lab)
            .args(["bare-tls", role])
            .stdout(Stdio::null());
        command
    };
    let mut sender = Running::spawn(
        role(&vm.ns, "send")
            .args(["--listen", &send_address])
            .args(tls(&pki.agent, ca))
            .arg("--file")
            .arg(file),
    )?;
    sender.wait_for("listening", 1)?;
    let mut relay = Running::spawn(
        role(&cluster.control, "relay")
            .args(["--listen", RELAY_ADDRESS])
            .args(tls(&pki.api_server, ca))
            .args(["--upstream", &send_address, "--upstream-name", "pcap-agent"]),
    )?;
    relay.wait_for("listening", 1)?;
    // pcap-proto's client configuration presents a certificate; the
    // relay, like the API towards the CLI, asks for none.
    let receiver = Running::spawn(
        role(&cluster.control, "receive")
            .args(["--connect", RELAY_ADDRESS, "--server-name", "pcap-api"])
            .args(tls(&pki.api_client, ca))
            .arg("--out")
            .arg(&out),
    )?;
    let size = std::fs::metadata(file)?.len();
    let receive = finished(receiver, "receiver", size)?;
    let relay = finished(relay, "relay", size)?;
    let send = finished(sender, "sender", size)?;
    remove_last(&out)?;
    let writer = Running::spawn(
        role(&cluster.control, "write")
            .arg("--file")
            .arg(file)
            .arg("--out")
            .arg(&out),
    )?;
    let write = finished(writer, "writer", size)?;
    Ok(Floor {
        send,
        relay,
        receive,
        write,
        start,
    })
}

/// `--certificate C --private-key K --ca CA` of `leaf` and `ca`.
fn tls<'a>(leaf: &'a pcap_tests::pki::Leaf, ca: &'a Path) -> [&'a std::ffi::OsStr; 6] {
    [
        "--certificate".as_ref(),
        leaf.certificate.as_os_str(),
        "--private-key".as_ref(),
        leaf.private_key.as_os_str(),
        "--ca".as_ref(),
        ca.as_os_str(),
    ]
}

/// Waits for a bare-TLS process; its CPU, once it says it moved `size` bytes.
fn finished(process: Running, what: &str, size: u64) -> anyhow::Result<Duration> {
    let (status, lines) = process.wait()?;
    ensure!(status.success(), "the bare-TLS {what} failed: {lines:?}");
    let moved = stat(&lines, "bytes moved").context("no 'bytes moved'")?;
    ensure!(
        moved == size,
        "the bare-TLS {what} moved {moved} bytes of {size}"
    );
    let cpu = stat(&lines, "cpu ns").context("no 'cpu ns'")?;
    Ok(Duration::from_nanos(cpu))
}

/// The floor's rows of the end-to-end table, and what they mean. `floors`
/// holds each round's local run with its floor; `local_cpu` is local
/// capture's mean CPU s per M, the table's denominator.
pub(super) fn write_rows(
    out: &mut String,
    floors: &[(Run, Floor)],
    local_cpu: f64,
) -> anyhow::Result<()> {
    // Each part per million of the round's local packets, averaged.
    let per_million = |part: &dyn Fn(&Run, &Floor) -> Duration| {
        floors
            .iter()
            .map(|(local, floor)| {
                part(local, floor).as_secs_f64() / (local.captured.max(1) as f64 / 1e6)
            })
            .sum::<f64>()
            / floors.len().max(1) as f64
    };
    for (index, name) in Floor::NAMES.iter().enumerate() {
        let cpu = per_million(&|_, floor| floor.each()[index]);
        writeln!(
            out,
            "| floor: {name} | | | {cpu:.3} | | {:.2} |",
            cpu / local_cpu
        )?;
    }
    let path = per_million(&|local, floor| floor.path(local.cpu));
    writeln!(
        out,
        "| floor: local less its start and stop and its writing of the file, plus the three \
         bare-TLS processes | | | {path:.3} | | {:.2} |",
        path / local_cpu
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "*floor* is what TLS and TCP cost on their own on this path: the local run's file, byte \
         for byte, moved from a process in the agent's place through one in the API's to one in \
         the CLI's, over the same veths and pinned to the same CPU, by nothing but pcap-proto's \
         TLS set-up (rustls with ring, mutual TLS to the sender, the same buffered sockets; \
         `pcap-lab bare-tls`), one current-thread runtime each; the receiver writes the file to \
         tmpfs in 1 MiB writes as the CLI does. Each is counted from its connections' set-up to \
         its end. The last row is a path of those three hops with no gRPC, HTTP/2 or pcap work \
         past the agent's ring: local capture less its start and stop (a capture of \
         {START_PACKETS} frames, which a serving agent pays while idle) and less its writing of \
         the file, which leaves reading the ring and encoding the blocks, plus the three.\n"
    )?;
    Ok(())
}
