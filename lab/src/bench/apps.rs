//! An app's own throughput while a capture runs on its veth (issue 16,
//! goal 5): a TCP bulk transfer (iperf3) from an "app" namespace to the
//! "cell" namespace, with no capture, with pcap-agent capturing the cell
//! side of the veth (as a served container capture does: the host-side
//! `s-…` veth) with a filter that matches none of it and one that matches
//! all of it, and tcpdump with the same filters as the reference. All in
//! one run, rotating the order; reported as throughput ratios to no capture,
//! with what each tool captured and what its kernel buffer dropped (a tool
//! that drops part of a matching load also does less work for it).
//!
//! The sender, the receiver and the capturing tool share CPU 1, as apps and
//! the agent share a busy cell's CPUs: the capture's in-kernel cost and its
//! reader's both come out of the app's share.

use std::{fmt::Write as _, path::Path, process::Stdio};

use anyhow::{Context as _, ensure};
use pcap_tests::{netns::Pair, process::Running};

use super::Options;
use crate::workspace_root;

/// Seconds of bulk transfer per measurement.
const SECONDS: u32 = 3;
/// A filter no iperf3 packet matches, and one every iperf3 packet matches.
const NO_MATCH: &str = "tcp port 9";
const MATCH: &str = "tcp port 5201";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    None,
    Agent(&'static str),
    Tcpdump(&'static str),
}

impl Case {
    const ALL: [Self; 5] = [
        Self::None,
        Self::Agent(NO_MATCH),
        Self::Tcpdump(NO_MATCH),
        Self::Agent(MATCH),
        Self::Tcpdump(MATCH),
    ];

    fn name(self) -> String {
        match self {
            Self::None => "no capture".to_owned(),
            Self::Agent(f) => format!("pcap-agent `{f}`"),
            Self::Tcpdump(f) => format!("tcpdump `{f}`"),
        }
    }
}

pub fn run(options: &Options, report: &mut String) -> anyhow::Result<()> {
    let agent = workspace_root().join("target/release/pcap-agent");
    let pair = Pair::new("apps")?;
    pair.disable_ipv6()?;
    let dir = Path::new("/dev/shm").join(format!("pcap-bench-apps-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure_all(options, &pair, &agent, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    write_report(report, &result?)
}

/// One transfer with one case capturing.
#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    /// The receiver's throughput.
    gbits: f64,
    /// From the tool's closing report (`N packets captured`, `N packets
    /// dropped by kernel`); 0 without a capture.
    captured: u64,
    dropped: u64,
}

fn measure_all(
    options: &Options,
    pair: &Pair,
    agent: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<(Case, Outcome)>> {
    let mut results = Vec::new();
    for round in 0..options.runs {
        let mut order = Case::ALL;
        order.rotate_left(round as usize % Case::ALL.len());
        for case in order {
            let outcome = measure(pair, case, agent, dir)?;
            eprintln!(
                "bench: apps {} round {round}: {:.2} Gbit/s, {} captured, {} dropped",
                case.name(),
                outcome.gbits,
                outcome.captured,
                outcome.dropped
            );
            results.push((case, outcome));
        }
    }
    Ok(results)
}

/// One transfer with `case` capturing.
fn measure(pair: &Pair, case: Case, agent: &Path, dir: &Path) -> anyhow::Result<Outcome> {
    let file = dir.join("apps.pcap");
    let capture = match case {
        Case::None => None,
        Case::Agent(filter) => {
            let mut command = pair.b.command("taskset");
            command
                .args(["-c", "1"])
                .arg(agent)
                .args(["capture", "-i", "veth1", "-w"])
                .arg(&file)
                .arg(filter)
                .stdout(Stdio::null());
            Some(command)
        }
        Case::Tcpdump(filter) => {
            let mut command = pair.b.command("taskset");
            command
                .args(["-c", "1", "tcpdump", "-i", "veth1", "-n", "-s", "262144"])
                // The kernel buffer pcap-agent's ring has by default.
                .args(["-B", "8192"])
                .args(["-Z", "root", "-w"])
                .arg(&file)
                .arg(filter)
                .stdout(Stdio::null());
            Some(command)
        }
    };
    let capture = match capture {
        Some(mut command) => {
            let mut running = Running::spawn(&mut command)?;
            running.wait_for("listening on", 1)?;
            Some(running)
        }
        None => None,
    };
    // iperf3 writes its readiness to stdout: send it to the stderr we read.
    let mut server = Running::spawn(pair.b.command("taskset").args([
        "-c",
        "1",
        "sh",
        "-c",
        "exec iperf3 --server --one-off --forceflush --bind 10.0.0.2 1>&2",
    ]))?;
    server.wait_for("Server listening", 1)?;
    let client = pair
        .a
        .command("taskset")
        .args(["-c", "1", "iperf3", "--client", "10.0.0.2", "--format", "m"])
        .args(["--time", &SECONDS.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running iperf3")?;
    ensure!(client.status.success(), "iperf3 failed: {}", client.status);
    let (status, lines) = server.wait()?;
    ensure!(status.success(), "iperf3 server failed: {lines:?}");
    let mut outcome = Outcome {
        gbits: receiver_gbits(&String::from_utf8_lossy(&client.stdout))?,
        ..Outcome::default()
    };
    if let Some(capture) = capture {
        let (status, lines) = capture.interrupt()?;
        ensure!(status.success(), "{} failed: {lines:?}", case.name());
        outcome.captured = reported(&lines, "packets captured")?;
        outcome.dropped = reported(&lines, "packets dropped by kernel")?;
    }
    let _ = std::fs::remove_file(&file);
    Ok(outcome)
}

/// The count of a closing report's line `N {what}`, which tcpdump and
/// pcap-agent both print.
fn reported(lines: &[String], what: &str) -> anyhow::Result<u64> {
    lines
        .iter()
        .find_map(|line| line.trim().strip_suffix(what)?.trim().parse().ok())
        .with_context(|| format!("no \"N {what}\" in {lines:?}"))
}

/// The receiver's rate from iperf3's summary line
/// (`[  5]   0.00-3.00   sec  ... MBytes  12345 Mbits/sec   receiver`).
fn receiver_gbits(output: &str) -> anyhow::Result<f64> {
    let line = output
        .lines()
        .rfind(|l| l.trim_end().ends_with("receiver"))
        .with_context(|| format!("no receiver line in iperf3's output:\n{output}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "Mbits/sec")
        .context("no Mbits/sec")?;
    let mbits: f64 = words[at - 1].parse().context("bad rate")?;
    Ok(mbits / 1000.0)
}

fn write_report(out: &mut String, results: &[(Case, Outcome)]) -> anyhow::Result<()> {
    let mean = |case: Case, of: fn(&Outcome) -> f64| {
        let runs: Vec<f64> = results
            .iter()
            .filter(|(c, _)| *c == case)
            .map(|(_, outcome)| of(outcome))
            .collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    let base = mean(Case::None, |o| o.gbits);
    writeln!(out, "## App throughput while a capture runs\n")?;
    writeln!(
        out,
        "iperf3 sends TCP for {SECONDS} s from an app namespace to the cell namespace over a veth \
         pair; the capturing tool captures the cell side of the veth (as a container capture \
         does on a cell's `s-…` veth), full snaplen, writing to tmpfs. Sender, receiver and \
         capturing tool are all pinned to CPU 1. Filters: `{NO_MATCH}` matches no iperf3 packet, \
         `{MATCH}` every one (GSO super-packets, up to 64 KiB each, copied whole). Both tools \
         have an 8 MiB kernel buffer. Packets captured and dropped are each tool's own closing \
         report, per run. Means over the runs, rotating the order. Goal: ≥ 0.97 with the \
         non-matching filter.\n"
    )?;
    writeln!(
        out,
        "| capture | Gbit/s | ratio to no capture | packets captured | dropped by kernel |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for case in Case::ALL {
        let gbits = mean(case, |o| o.gbits);
        let (captured, dropped) = match case {
            Case::None => ("–".to_owned(), "–".to_owned()),
            _ => (
                format!("{:.0}", mean(case, |o| o.captured as f64)),
                format!("{:.0}", mean(case, |o| o.dropped as f64)),
            ),
        };
        writeln!(
            out,
            "| {} | {gbits:.2} | {:.3} | {captured} | {dropped} |",
            case.name(),
            gbits / base
        )?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_reports_are_read_as_both_tools_print_them() {
        let lines: Vec<String> = [
            "listening on veth1, link-type EN10MB (Ethernet), snapshot length 262144 bytes",
            "55361 packets captured",
            "63179 packets received by filter",
            "7818 packets dropped by kernel",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(reported(&lines, "packets captured").unwrap(), 55361);
        assert_eq!(reported(&lines, "packets dropped by kernel").unwrap(), 7818);
        let error = reported(&lines[..1], "packets captured").unwrap_err();
        assert!(error.to_string().contains("no \"N packets captured\""));
    }
}
