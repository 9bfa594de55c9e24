//! Reference tools: tcpdump capturing beside us, and tshark/capinfos
//! checking that our files are readable.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, ensure};

use crate::{
    bosh::workspace_root,
    netns::Netns,
    now_ns,
    process::{Running, wait_until},
};

/// Starts tcpdump in `ns` writing nanosecond pcap, and waits until it listens.
/// Its 32 MiB buffer (`-B`) holds a test's bursts of large pings even while
/// tcpdump waits for a CPU: libpcap's default 2 MiB holds four blocks.
pub fn tcpdump(
    ns: &Netns,
    interface: &str,
    direction: &str,
    file: &Path,
) -> anyhow::Result<Running> {
    let args = [
        "-i", interface, "-Q", direction, "-s", "262144", "-B", "32768", "-U",
    ];
    tcpdump_writing(ns, file, &args)
}

/// Starts `tcpdump ARGS` in `ns` writing nanosecond pcap to `file` (as root,
/// which owns the test's directories), and waits until it listens.
pub fn tcpdump_writing(ns: &Netns, file: &Path, args: &[&str]) -> anyhow::Result<Running> {
    let mut command = ns.command("tcpdump");
    command
        .args(["-Z", "root", "--time-stamp-precision=nano", "-w"])
        .arg(file)
        .args(args);
    let mut running = Running::spawn(&mut command)?;
    running.wait_for("listening on", 1)?;
    Ok(running)
}

/// tcpdump (TPACKET_V3) hands packets to user space a block at a time, and
/// loses the unfinished block on SIGINT. Send a marker from `ns` and wait
/// until it is in every reference file: then everything before it is too.
pub fn sync_references(ns: &Netns, destination: &str, files: &[&Path]) -> anyhow::Result<()> {
    mark_references(ns, destination, files).map(drop)
}

/// [`sync_references`], returning the marker: the payload of the UDP
/// datagram sent to `destination`'s port 9, which every capture of its path
/// holds at the point where it was sent (see
/// [`crate::agent_capture::between_markers`]).
pub fn mark_references(ns: &Netns, destination: &str, files: &[&Path]) -> anyhow::Result<Vec<u8>> {
    // Short enough to survive a 60-byte snaplen after the UDP header.
    let marker = format!("mk{:012x}", now_ns() & 0xffff_ffff_ffff);
    ns.sh(&format!(
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"{marker}\", (\"{destination}\", 9))'"
    ))?;
    for file in files {
        wait_until_written(file, marker.as_bytes())?;
    }
    Ok(marker.into_bytes())
}

/// Waits (at most 10 s) until tcpdump has written a packet holding `marker`
/// to `file`.
pub fn wait_until_written(file: &Path, marker: &[u8]) -> anyhow::Result<()> {
    wait_until(
        &format!("tcpdump writes the marker to {}", file.display()),
        Duration::from_secs(10),
        || {
            Ok(std::fs::read(file)?
                .windows(marker.len())
                .any(|w| w == marker))
        },
    )
}

/// Checks that `tshark` and `capinfos` accept a file.
pub fn assert_readable(file: &Path) -> anyhow::Result<()> {
    for (tool, args) in [("tshark", vec!["-r"]), ("capinfos", vec![])] {
        let output = Command::new(tool)
            .args(&args)
            .arg(file)
            .output()
            .with_context(|| format!("running {tool}"))?;
        ensure!(
            output.status.success(),
            "{tool} rejects {}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// tcpdump's own test captures (`tests/corpus/tcpdump-tests/*.pcap`), in
/// name order.
pub fn corpus() -> anyhow::Result<Vec<PathBuf>> {
    let dir = workspace_root().join("tests/corpus/tcpdump-tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|e| e == "pcap"));
    files.sort();
    ensure!(files.len() > 400, "the corpus has {} files", files.len());
    Ok(files)
}
