//! The local capture, `pcap-agent capture`, started in a namespace as its
//! tests start it, and the packets they compare with tcpdump's.

use std::{
    path::Path,
    process::{ChildStdout, Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, ensure};

use crate::{
    captures::{self, Capture, Packet},
    netns::Netns,
    now_ns,
    process::{Running, binary},
    reference::{assert_readable, sync_references},
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
    listening(command(ns).args(args), args)
}

/// Starts `command`, a capture with `args`, and waits until it listens on
/// every interface `args` names.
fn listening(command: &mut Command, args: &[&str]) -> anyhow::Result<Running> {
    let mut running = Running::spawn(command)?;
    let interfaces = args.iter().filter(|a| **a == "-i").count();
    running.wait_for("listening on", interfaces)?;
    Ok(running)
}

/// Starts `pcap-agent capture ARGS` in `ns` with its stdout piped, as
/// [`start`] does; returns it and its stdout.
pub fn start_piped(ns: &Netns, args: &[&str]) -> anyhow::Result<(Running, ChildStdout)> {
    let mut running = listening(command(ns).args(args).stdout(Stdio::piped()), args)?;
    let stdout = running.take_stdout().expect("piped stdout");
    Ok((running, stdout))
}

/// Starts `pcap-agent capture -w FILE ARGS` in `ns`, as [`start`] does.
pub fn start_writing(ns: &Netns, file: &Path, args: &[&str]) -> anyhow::Result<Running> {
    let file = file.to_str().expect("utf-8 path");
    start(ns, &[&["-w", file], args].concat())
}

/// Checks that a capture into `file` that ended as `ended` (the exit status
/// and stderr lines of [`Running::wait`] or [`Running::interrupt`])
/// succeeded and left a file that tshark and capinfos read; returns what the
/// file holds, and the stderr lines.
pub fn written(
    ended: (ExitStatus, Vec<String>),
    file: &Path,
) -> anyhow::Result<(Capture, Vec<String>)> {
    let (status, lines) = ended;
    ensure!(status.success(), "pcap-agent failed: {lines:?}");
    assert_readable(file)?;
    Ok((captures::read_file(file)?, lines))
}

/// Runs `traffic` (which ends once the reference tool wrote it all, as
/// [`sync_references`](crate::reference::sync_references) makes sure), then
/// stops our capture `ours` into `ours_file` (checked as [`written`] checks
/// it) and the reference tool's `reference` into `reference_file`; the
/// packets each kept that are stamped while `traffic` ran (see [`within`]).
pub fn stop_both_after(
    traffic: impl FnOnce() -> anyhow::Result<()>,
    (ours, ours_file): (Running, &Path),
    (reference, reference_file): (Running, &Path),
) -> anyhow::Result<(Vec<Packet>, Vec<Packet>)> {
    let from = now_ns();
    traffic()?;
    let to = now_ns();
    let (ours, _) = written(ours.interrupt()?, ours_file)?;
    reference.interrupt()?;
    let reference = captures::read_file(reference_file)?;
    Ok((
        within(&ours.packets, from, to),
        within(&reference.packets, from, to),
    ))
}

/// [`stop_both_after`] with `ns` running the shell `command` (pings, say)
/// as the traffic, which ends once the reference tool wrote a marker sent
/// from `ns` to `destination`.
pub fn stop_both_after_sh(
    ns: &Netns,
    command: &str,
    destination: &str,
    ours: (Running, &Path),
    reference: (Running, &Path),
) -> anyhow::Result<(Vec<Packet>, Vec<Packet>)> {
    let reference_file = reference.1;
    let traffic = || {
        ns.sh(command)?;
        sync_references(ns, destination, &[reference_file])
    };
    stop_both_after(traffic, ours, reference)
}

/// The packets after the first that holds `start` and before the first
/// after it that holds `end` (markers of [`crate::reference::mark_references`]),
/// in time order. Cut by packets of the capture itself, the window holds the
/// same packets in every capture of one place, even a packet of the
/// kernel's own that arrives as the window opens, which two tools stamp a
/// few microseconds apart and a window of time could give to one and not
/// the other.
pub fn between_markers(
    packets: &[Packet],
    start: &[u8],
    end: &[u8],
) -> anyhow::Result<Vec<Packet>> {
    let holds = |p: &Packet, marker: &[u8]| p.data.windows(marker.len()).any(|w| w == marker);
    let mut packets = packets.to_vec();
    packets.sort_by_key(|p| p.unix_ns);
    let first = packets
        .iter()
        .position(|p| holds(p, start))
        .with_context(|| {
            format!(
                "no packet holds the start marker {}",
                String::from_utf8_lossy(start)
            )
        })?;
    let last = first
        + 1
        + packets[first + 1..]
            .iter()
            .position(|p| holds(p, end))
            .with_context(|| {
                format!(
                    "no packet after the start marker holds the end marker {}",
                    String::from_utf8_lossy(end)
                )
            })?;
    Ok(packets[first + 1..last].to_vec())
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
