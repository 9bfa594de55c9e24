//! Assertions the system tests share.

use anyhow::ensure;

use crate::{
    captures::{Direction, Packet},
    netns::Netns,
};

/// `text` (e.g. a command's stderr) contains every one of `needles`; else
/// fails naming the first one missing, with the whole text.
pub fn contains_all(text: &str, needles: &[&str]) -> anyhow::Result<()> {
    for needle in needles {
        ensure!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    Ok(())
}

/// `output` is of a command that failed saying `needle` on stderr; else
/// fails with `what` and the stderr.
pub fn fails_with(what: &str, output: &std::process::Output, needle: &str) -> anyhow::Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains(needle),
        "{what}: {} without {needle:?}: {stderr}",
        output.status
    );
    Ok(())
}

/// Nothing of ours is attached to `interface` in `ns`: no TCX program, no tc
/// filter running `pcap_ingress` or `pcap_egress`, and no clsact qdisc.
pub fn nothing_attached(ns: &Netns, interface: &str) -> anyhow::Result<()> {
    let tcx = ns.tcx_programs(interface)?;
    ensure!(
        tcx.is_empty(),
        "TCX programs left attached to {interface}: {tcx:?}"
    );
    let listing = ns.sh(&format!(
        "tc filter show dev {interface} ingress; tc filter show dev {interface} egress; \
         tc qdisc show dev {interface}"
    ))?;
    ensure!(
        !listing.contains("pcap_ingress")
            && !listing.contains("pcap_egress")
            && !listing.contains("clsact"),
        "left attached to {interface}:\n{listing}"
    );
    Ok(())
}

/// `ours` and `reference` (what a reference tool such as tcpdump kept) hold
/// as many packets (a [`Packet`], or what a test keeps of one), and each of
/// ours is like the reference's at the same place in what `key` picks of
/// them (for example the bytes and the original length). `what` names the
/// comparison in a failure.
pub fn same_packets<'a, T, K: PartialEq + std::fmt::Debug>(
    what: &str,
    ours: &'a [T],
    reference: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> anyhow::Result<()> {
    ensure!(
        ours.len() == reference.len(),
        "{what}: we have {} packets, the reference {}",
        ours.len(),
        reference.len()
    );
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let (a, b) = (key(a), key(b));
        ensure!(
            a == b,
            "{what}: packet {i} differs\nours:      {a:02x?}\nreference: {b:02x?}"
        );
    }
    Ok(())
}

/// `ours` and `reference` hold the same packets (original length and
/// bytes) as multisets: [`same_packets`] once both are sorted.
pub fn same_packets_in_any_order(
    what: &str,
    ours: &[Packet],
    reference: &[Packet],
) -> anyhow::Result<()> {
    fn sorted(packets: &[Packet]) -> Vec<(u32, &[u8])> {
        let mut keys: Vec<(u32, &[u8])> = packets
            .iter()
            .map(|p| (p.orig_len, p.data.as_slice()))
            .collect();
        keys.sort_unstable();
        keys
    }
    same_packets(what, &sorted(ours), &sorted(reference), |key| *key)
}

/// Those of `ours` that went in `direction` are the packets of `reference`
/// (tcpdump's of that direction), byte for byte, each stamped alike.
pub fn same_in_direction(
    ours: &[Packet],
    reference: &[Packet],
    direction: Direction,
) -> anyhow::Result<()> {
    let ours: Vec<Packet> = ours
        .iter()
        .filter(|p| p.direction == Some(direction))
        .cloned()
        .collect();
    let what = format!("{direction:?}");
    same_packets(&what, &ours, reference, |p| (p.orig_len, &p.data))?;
    stamped_alike(&what, &ours, reference)
}

/// Each of `ours` was stamped within a millisecond of the reference's packet
/// at the same place.
pub fn stamped_alike(what: &str, ours: &[Packet], reference: &[Packet]) -> anyhow::Result<()> {
    for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
        let skew = a.unix_ns.abs_diff(b.unix_ns);
        ensure!(
            skew < 1_000_000,
            "{what}: packet {i}: timestamps {skew} ns apart"
        );
    }
    Ok(())
}
