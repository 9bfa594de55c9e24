//! pcap-agent against tcpdump on the same veth under the same trafgen load,
//! alternating A/B.
//!
//! trafgen sends from namespace `a` out of veth0 on CPU 0; the capturing
//! tool listens on veth1 in namespace `b`, pinned to CPU 1, writing to tmpfs.
//! CPU time is the capturing process's own (user + system) rusage.
//!
//! Each tool's start and stop (a capture of [`START_PACKETS`]) is measured
//! on its own too, so that the cost per packet is reported with and without
//! it: pcap-agent loads and the kernel verifies its programs, where tcpdump
//! attaches a classic filter.

use std::{fmt::Write as _, path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, ensure};
use nix::sys::resource::UsageWho;
use pcap_tests::{
    netns::Pair,
    process::{Running, stat},
};

use super::{Options, Run, remove_last, steady};
use crate::{rusage, workspace_root};

/// Packets offered to the captures that measure start and stop.
pub(super) const START_PACKETS: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    /// pcap-agent writing pcapng (the default: directions, statistics).
    Pcapng,
    /// pcap-agent writing classic pcap: the same bytes tcpdump writes.
    Pcap,
    Tcpdump,
}

impl Tool {
    const ALL: [Self; 3] = [Self::Pcapng, Self::Pcap, Self::Tcpdump];

    fn name(self) -> &'static str {
        match self {
            Self::Pcapng => "pcap-agent (pcapng)",
            Self::Pcap => "pcap-agent --format pcap",
            Self::Tcpdump => "tcpdump",
        }
    }
}

pub fn run(options: &Options, report: &mut String) -> anyhow::Result<()> {
    let agent = workspace_root().join("target/release/pcap-agent");
    let pair = Pair::new("bench")?;
    pair.disable_ipv6()?;
    let mac = pair.b.sh("cat /sys/class/net/veth1/address")?;
    let dir = Path::new("/dev/shm").join(format!("pcap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let mut rows = Vec::new();
    let mut starts: Vec<(Tool, Run)> = Vec::new();
    for (frame_len, packets) in [(60usize, options.packets), (1514, options.packets / 2)] {
        let conf = dir.join(format!("udp-{frame_len}.cfg"));
        std::fs::write(&conf, trafgen_config(mac.trim(), frame_len)?)?;
        let mut results: Vec<(Tool, Run)> = Vec::new();
        for round in 0..options.runs {
            // Rotate which tool goes first.
            let mut order = Tool::ALL;
            order.rotate_left(round as usize % Tool::ALL.len());
            if frame_len == 60 {
                for tool in order {
                    let run = measure(&pair, tool, &agent, &conf, START_PACKETS, &dir)?;
                    eprintln!(
                        "bench: {} start and stop round {round}: {:.1} ms CPU",
                        tool.name(),
                        run.cpu.as_secs_f64() * 1e3
                    );
                    starts.push((tool, run));
                }
            }
            for tool in order {
                let run = measure(&pair, tool, &agent, &conf, packets, &dir)?;
                eprintln!(
                    "bench: {} {}B round {round}: {}/{} captured, {} dropped, {:.3}s CPU",
                    tool.name(),
                    frame_len + 4,
                    run.captured,
                    run.offered,
                    run.dropped,
                    run.cpu.as_secs_f64()
                );
                results.push((tool, run));
            }
        }
        rows.push((
            frame_len + 4,
            Tool::ALL.map(|tool| (tool, summarize(&results, tool, mean_cpu(&starts, tool)))),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);

    write_report(report, &rows)
}

/// Mean captured/offered, CPU seconds per million captured packets (with
/// and without the start and stop), drops.
#[derive(Clone, Copy, Debug)]
struct Summary {
    captured_ratio: f64,
    cpu_per_mpkt: f64,
    /// The tool's start and stop: its mean CPU for [`START_PACKETS`].
    start: Duration,
    /// As `cpu_per_mpkt`, less `start`.
    cpu_per_mpkt_started: f64,
    dropped: u64,
}

/// Mean CPU of `tool`'s runs.
fn mean_cpu(runs: &[(Tool, Run)], tool: Tool) -> Duration {
    let cpus: Vec<Duration> = runs
        .iter()
        .filter(|(t, _)| *t == tool)
        .map(|(_, r)| r.cpu)
        .collect();
    cpus.iter().sum::<Duration>() / cpus.len().max(1) as u32
}

fn summarize(results: &[(Tool, Run)], tool: Tool, start: Duration) -> Summary {
    let runs: Vec<&Run> = results
        .iter()
        .filter(|(t, _)| *t == tool)
        .map(|(_, r)| r)
        .collect();
    let n = runs.len() as f64;
    Summary {
        captured_ratio: runs
            .iter()
            .map(|r| r.captured as f64 / r.offered as f64)
            .sum::<f64>()
            / n,
        cpu_per_mpkt: runs
            .iter()
            .map(|r| r.cpu.as_secs_f64() / (r.captured.max(1) as f64 / 1e6))
            .sum::<f64>()
            / n,
        start,
        cpu_per_mpkt_started: runs
            .iter()
            .map(|r| {
                r.cpu.saturating_sub(start).as_secs_f64()
                    / (r.captured.saturating_sub(START_PACKETS).max(1) as f64 / 1e6)
            })
            .sum::<f64>()
            / n,
        dropped: runs.iter().map(|r| r.dropped).sum(),
    }
}

fn measure(
    pair: &Pair,
    tool: Tool,
    agent: &Path,
    conf: &Path,
    packets: u64,
    dir: &Path,
) -> anyhow::Result<Run> {
    let file = dir.join(match tool {
        Tool::Pcapng => "capture.pcapng",
        Tool::Pcap | Tool::Tcpdump => "capture.pcap",
    });
    remove_last(&file)?;
    let mut command = pair.b.command("taskset");
    command.args(["-c", "1"]).stdout(Stdio::null());
    match tool {
        Tool::Pcapng => command
            .arg(agent)
            .args(["capture", "-i", "veth1", "-B", "8192", "-w"]),
        Tool::Pcap => command.arg(agent).args([
            "capture", "-i", "veth1", "-B", "8192", "--format", "pcap", "-w",
        ]),
        Tool::Tcpdump => command.args([
            "tcpdump", "-i", "veth1", "-n", "-s", "262144", "-B", "8192", "-Z", "root", "-w",
        ]),
    };
    command.arg(&file);
    let mut capture = Running::spawn(&mut command)?;
    capture.wait_for("listening on", 1)?;

    let status = pair
        .a
        .command("taskset")
        .args(["-c", "0", "trafgen", "--dev", "veth0", "--conf"])
        .arg(conf)
        .args(["--num", &packets.to_string(), "--cpus", "1", "--qdisc-path"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running trafgen")?;
    ensure!(status.success(), "trafgen failed: {status}");

    // Let the capturing tool catch up: its file stops growing.
    steady(
        "the capture file stops growing",
        Duration::from_millis(300),
        || Ok(std::fs::metadata(&file).map_or(0, |m| m.len())),
    )?;

    let before = rusage::cpu_of(UsageWho::RUSAGE_CHILDREN)?;
    let (status, lines) = capture.interrupt()?;
    let after = rusage::cpu_of(UsageWho::RUSAGE_CHILDREN)?;
    ensure!(status.success(), "{} failed: {lines:?}", tool.name());
    Ok(Run {
        offered: packets,
        captured: stat(&lines, "packets captured").context("no 'packets captured'")?,
        dropped: stat(&lines, "packets dropped by kernel").context("no 'dropped by kernel'")?,
        cpu: after.saturating_sub(before),
    })
}

/// A trafgen configuration for one UDP/IPv4 frame of `frame_len` bytes
/// (without FCS) to `mac`.
pub(super) fn trafgen_config(mac: &str, frame_len: usize) -> anyhow::Result<String> {
    let mut frame: Vec<u8> = Vec::with_capacity(frame_len);
    for part in mac.split(':') {
        frame.push(u8::from_str_radix(part, 16).context("bad MAC")?);
    }
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let ip_len = (frame_len - 14) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&[0, 9, 0, 9]);
    frame.extend_from_slice(&(ip_len - 20).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.resize(frame_len, 0x41);
    let bytes: Vec<String> = frame.iter().map(|b| format!("{b:#04x}")).collect();
    Ok(format!("{{ {} }}\n", bytes.join(", ")))
}

/// Summaries of every tool for one frame size.
type Row = (usize, [(Tool, Summary); 3]);

fn write_report(out: &mut String, rows: &[Row]) -> anyhow::Result<()> {
    writeln!(out, "## Local capture: pcap-agent vs tcpdump\n")?;
    writeln!(
        out,
        "trafgen (one process, CPU 0, `--qdisc-path`) sends UDP frames at its maximum rate out of \
         veth0; each tool captures veth1 (the peer, in another namespace) pinned to CPU 1 and writes \
         to tmpfs with an 8 MiB kernel buffer (`-B 8192`), full snaplen. Runs rotate which tool \
         goes first. CPU is the capturing process's user + system time (rusage), start-up \
         included; figures are means over the runs, drops are summed. *Start and stop* is each \
         tool's mean CPU for the same capture of {START_PACKETS} 64-byte frames, measured in the \
         same rounds; *start apart* takes it off each run (CPU and packets) before dividing. pcapng writes 28 bytes more \
         per packet than pcap, and pads the data to 4 bytes (104 against 76 for a 60-byte frame: \
         the block's header and trailer, the direction flags, the end of options). On this VM single runs vary \
         by up to 2x at 1518 B (tmpfs page allocation), so compare the means of one invocation.\n"
    )?;
    writeln!(
        out,
        "| frame (with FCS) | tool | captured / offered | dropped | CPU s per M captured | CPU ratio to tcpdump | start and stop, ms CPU | CPU s per M, start apart | ratio to tcpdump, start apart |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for (len, summaries) in rows {
        let tcpdump = summaries
            .iter()
            .find(|(t, _)| *t == Tool::Tcpdump)
            .map(|(_, s)| *s);
        let (tcpdump, tcpdump_started) = tcpdump.map_or((f64::NAN, f64::NAN), |s| {
            (s.cpu_per_mpkt, s.cpu_per_mpkt_started)
        });
        for (tool, s) in summaries {
            writeln!(
                out,
                "| {len} B | {} | {:.4} | {} | {:.3} | {:.2} | {:.1} | {:.3} | {:.2} |",
                tool.name(),
                s.captured_ratio,
                s.dropped,
                s.cpu_per_mpkt,
                s.cpu_per_mpkt / tcpdump,
                s.start.as_secs_f64() * 1e3,
                s.cpu_per_mpkt_started,
                s.cpu_per_mpkt_started / tcpdump_started
            )?;
        }
    }
    writeln!(out)?;
    Ok(())
}
