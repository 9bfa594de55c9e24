//! The local capture, `pcap-agent capture`, started in a namespace as its
//! tests start it, and the packets they compare with tcpdump's.

use std::process::Command;

use crate::{
    captures::Packet,
    netns::Netns,
    process::{Running, binary},
};

/// `pcap-agent capture` in `ns`, with no arguments yet.
pub fn command(ns: &Netns) -> Command {
    let mut command = ns.command(binary("pcap-agent").to_str().expect("utf-8 path"));
    command.arg("capture");
    command
}

/// Starts `pcap-agent capture ARGS` in `ns` and waits until it listens on
/// every interface it names (`-i`).
pub fn start(ns: &Netns, args: &[&str]) -> anyhow::Result<Running> {
    let mut command = command(ns);
    command.args(args);
    let mut running = Running::spawn(&mut command)?;
    let interfaces = args.iter().filter(|a| **a == "-i").count();
    running.wait_for("listening on", interfaces)?;
    Ok(running)
}

/// The packets stamped within `from..=to`, in time order: packets handled on
/// two CPUs can reach a capture (ours or tcpdump's) out of order.
pub fn within(packets: &[Packet], from: u64, to: u64) -> Vec<Packet> {
    let mut packets: Vec<Packet> = packets
        .iter()
        .filter(|p| (from..=to).contains(&p.unix_ns))
        .cloned()
        .collect();
    packets.sort_by_key(|p| p.unix_ns);
    packets
}
