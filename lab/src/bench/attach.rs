//! How long `-i any` takes to start and to stop on a cell with many
//! interfaces: one network namespace with `lo` and 50 veth pairs (101
//! interfaces, about what a Diego cell with 50 containers has), captured
//! with `-i any` by pcap-agent attaching through TCX (the default), by
//! pcap-agent attaching through the clsact fallback (`--attach tc`), and by
//! tcpdump as the reference. Start: from spawning the tool until its stderr
//! says `listening on`. Stop: from SIGINT until it has exited. Medians over
//! the runs, rotating the order.

use std::{fmt::Write as _, path::Path, process::Stdio, time::Instant};

use anyhow::ensure;
use pcap_tests::{netns::Netns, process::Running};

use super::{Options, median};
use crate::workspace_root;

/// veth pairs in the namespace: twice as many interfaces, and `lo`.
const PAIRS: u32 = 50;

/// A compared tool: its name in the report, whether it is pcap-agent
/// (else tcpdump), and its arguments. tcpdump, the reference, is last.
struct Tool {
    name: &'static str,
    agent: bool,
    args: &'static [&'static str],
}

const TOOLS: [Tool; 3] = [
    Tool {
        name: "pcap-agent (TCX, the default)",
        agent: true,
        args: &["capture", "-i", "any", "-w", "/dev/null"],
    },
    Tool {
        name: "pcap-agent --attach tc",
        agent: true,
        args: &["capture", "-i", "any", "--attach", "tc", "-w", "/dev/null"],
    },
    Tool {
        name: "tcpdump",
        agent: false,
        args: &["-i", "any", "-n", "-Z", "root", "-w", "/dev/null"],
    },
];

/// Start and stop of one run, in milliseconds.
type Times = (f64, f64);

pub fn run(options: &Options, report: &mut String) -> anyhow::Result<()> {
    let ns = Netns::new("attach")?;
    let mut setup = String::from("ip link set lo up");
    for i in 0..PAIRS {
        write!(
            setup,
            " && ip link add va{i} type veth peer name vb{i} \
             && ip link set va{i} up && ip link set vb{i} up"
        )?;
    }
    ns.sh(&setup)?;
    let agent = workspace_root().join("target/release/pcap-agent");
    let mut results: Vec<Vec<Times>> = TOOLS.iter().map(|_| Vec::new()).collect();
    for run in 0..options.runs.max(1) as usize {
        for k in 0..TOOLS.len() {
            let i = (run + k) % TOOLS.len();
            results[i].push(measure(&ns, &TOOLS[i], &agent)?);
        }
    }
    write_report(report, &results)
}

fn measure(ns: &Netns, tool: &Tool, agent: &Path) -> anyhow::Result<Times> {
    let program = if tool.agent {
        agent.to_string_lossy()
    } else {
        "tcpdump".into()
    };
    let mut command = ns.command(&program);
    command.args(tool.args).stdout(Stdio::null());
    let started = Instant::now();
    let mut running = Running::spawn(&mut command)?;
    running.wait_for("listening on", 1)?;
    let start = started.elapsed();
    let stopping = Instant::now();
    let (status, lines) = running.interrupt()?;
    let stop = stopping.elapsed();
    ensure!(status.success(), "{} failed: {lines:?}", tool.name);
    Ok((start.as_secs_f64() * 1e3, stop.as_secs_f64() * 1e3))
}

fn write_report(out: &mut String, results: &[Vec<Times>]) -> anyhow::Result<()> {
    writeln!(
        out,
        "## `-i any` start and stop with {} interfaces\n",
        2 * PAIRS + 1
    )?;
    writeln!(
        out,
        "One network namespace with `lo` and {PAIRS} veth pairs; each tool captures `-i any` \
         to /dev/null. Start: spawn → `listening on` on stderr; stop: SIGINT → exited. Medians \
         over {} runs, rotating the order.\n",
        results.first().map_or(0, Vec::len)
    )?;
    writeln!(
        out,
        "| tool | start | stop | start ratio to tcpdump | stop ratio to tcpdump |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|times| {
            let start = median(times.iter().map(|t| t.0).collect());
            let stop = median(times.iter().map(|t| t.1).collect());
            (start, stop)
        })
        .collect();
    let (ref_start, ref_stop) = medians.last().copied().unwrap_or((f64::NAN, f64::NAN));
    for (tool, (start, stop)) in TOOLS.iter().zip(medians) {
        writeln!(
            out,
            "| {} | {start:.0} ms | {stop:.0} ms | {:.2} | {:.2} |",
            tool.name,
            start / ref_start,
            stop / ref_stop
        )?;
    }
    writeln!(
        out,
        "\nEach TCX attach and detach holds the RTNL lock through an RCU grace period \
         (`tcx_entry_sync`), one interface and direction after another; by these figures the \
         clsact fallback's filters do not wait for one.\n"
    )?;
    Ok(())
}
