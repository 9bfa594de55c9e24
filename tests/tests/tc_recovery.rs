//! Crash clean-up in the tc attach mode (kernels before 6.6): cls_bpf
//! filters outlive a SIGKILLed agent, and the next agent removes exactly
//! the dead captures' filters, even when every agent is PID 1 of its own
//! PID namespace (as under bpm) and captures run side by side.
//!
//! These tests need root.

use std::collections::BTreeSet;

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;
use pcap_tests::{
    netns::{Netns, Pair},
    process::{Running, binary, stat},
};

/// `pcap-agent capture ARGS` as PID 1 of a new PID namespace in `ns`,
/// once it listens. `unshare` forks the agent and waits for it.
fn agent_in_pid_namespace(ns: &Netns, args: &[&str]) -> anyhow::Result<Running> {
    let mut command = ns.command("unshare");
    command
        .args(["--pid", "--fork", "--kill-child"])
        .arg(binary("pcap-agent"))
        .arg("capture")
        .args(args);
    let mut running = Running::spawn(&mut command)?;
    running.wait_for("listening on", 1)?;
    Ok(running)
}

/// Sends `signal` to the agent (the child of `unshare`) and waits until
/// `unshare` has reaped it: then its files, and the locks on them, are
/// closed. Returns the agent's exit status and stderr.
fn signal_agent(
    unshare: Running,
    signal: Signal,
) -> anyhow::Result<(std::process::ExitStatus, Vec<String>)> {
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid()))?;
    let agent: i32 = children
        .split_whitespace()
        .next()
        .context("unshare has no child")?
        .parse()?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), signal)?;
    unshare.wait()
}

fn kill_agent(unshare: Running) -> anyhow::Result<()> {
    let (status, _) = signal_agent(unshare, Signal::SIGKILL)?;
    ensure!(!status.success(), "the agent was killed: {status}");
    Ok(())
}

/// The ids of the programs our filters run on both hooks of `interface`.
fn filter_programs(ns: &Netns, interface: &str) -> anyhow::Result<BTreeSet<u32>> {
    let mut ids = BTreeSet::new();
    for hook in ["ingress", "egress"] {
        let json = ns.sh(&format!("tc -j filter show dev {interface} {hook}"))?;
        let filters: serde_json::Value = serde_json::from_str(&json)?;
        for filter in filters.as_array().into_iter().flatten() {
            let Some(prog) = filter.get("options").and_then(|o| o.get("prog")) else {
                continue;
            };
            let name = prog.get("name").and_then(|n| n.as_str()).unwrap_or("");
            if name == "pcap_ingress" || name == "pcap_egress" {
                let id = prog.get("id").and_then(serde_json::Value::as_u64);
                ids.insert(u32::try_from(id.context("a program id")?)?);
            }
        }
    }
    Ok(ids)
}

fn has_clsact(ns: &Netns, interface: &str) -> anyhow::Result<bool> {
    Ok(ns
        .sh(&format!("tc qdisc show dev {interface}"))?
        .contains("clsact"))
}

/// The state files that name `ns`'s network namespace.
fn state_files(ns: &Netns) -> anyhow::Result<Vec<String>> {
    let netns = ns.sh("stat -L -c %i /proc/self/ns/net")?;
    let line = format!("netns {}", netns.trim());
    let Ok(entries) = std::fs::read_dir("/run/pcap-agent/tc") else {
        return Ok(Vec::new());
    };
    Ok(entries
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|text| text.lines().any(|l| l == line))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

#[test]
fn the_next_capture_removes_only_a_killed_captures_filters() -> anyhow::Result<()> {
    let pair = Pair::new("tcrec")?;
    pair.disable_ipv6()?;
    let tc = ["-i", "veth0", "--attach", "tc"];
    let dead = agent_in_pid_namespace(&pair.a, &[&tc[..], &["-w", "/dev/null"]].concat())?;
    let dead_programs = filter_programs(&pair.a, "veth0")?;
    ensure!(dead_programs.len() == 2, "{dead_programs:?}");
    let live = agent_in_pid_namespace(
        &pair.a,
        &[&tc[..], &["-w", "/dev/null", "-c", "4", "icmp"]].concat(),
    )?;
    let all = filter_programs(&pair.a, "veth0")?;
    let live_programs: BTreeSet<u32> = all.difference(&dead_programs).copied().collect();
    ensure!(live_programs.len() == 2, "{all:?}");
    ensure!(
        state_files(&pair.a)?.len() == 2,
        "one state file per capture"
    );

    kill_agent(dead)?;
    // Nothing removes cls_bpf filters when their process dies.
    ensure!(filter_programs(&pair.a, "veth0")? == all);

    // Both agents were PID 1; the next start tells the dead one from the live one.
    let next = agent_in_pid_namespace(&pair.a, &[&tc[..], &["-w", "/dev/null"]].concat())?;
    let (_, lines) = signal_agent(next, Signal::SIGINT)?;
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("removed tc filters left by a pcap-agent capture")),
        "{lines:?}"
    );
    ensure!(
        filter_programs(&pair.a, "veth0")? == live_programs,
        "only the live capture's filters are left: {:?}, want {live_programs:?}",
        filter_programs(&pair.a, "veth0")?
    );
    ensure!(
        has_clsact(&pair.a, "veth0")?,
        "the live capture uses clsact"
    );

    // The live capture still captures.
    pair.a.sh("ping -c 2 -i 0.2 -W 1 10.0.0.2")?;
    let (status, lines) = live.wait()?;
    ensure!(status.success(), "{lines:?}");
    ensure!(stat(&lines, "packets captured") == Some(4), "{lines:?}");

    // It ended last, so it removed the clsact qdisc, though another capture added it.
    ensure!(filter_programs(&pair.a, "veth0")?.is_empty());
    ensure!(!has_clsact(&pair.a, "veth0")?, "clsact left behind");
    ensure!(
        state_files(&pair.a)?.is_empty(),
        "{:?}",
        state_files(&pair.a)?
    );
    Ok(())
}

#[test]
fn serve_removes_the_filters_of_killed_captures_when_it_starts() -> anyhow::Result<()> {
    let pair = Pair::new("tcsrv")?;
    pair.a
        .sh("ip link add veth2 type veth peer name veth3 && ip link set veth2 up && ip link set veth3 up")?;
    // An operator's clsact with a filter of its own, which must stay.
    pair.a.sh("tc qdisc add dev veth2 clsact && \
         tc filter add dev veth2 ingress pref 7 protocol all u32 match u32 0 0")?;
    let first = agent_in_pid_namespace(
        &pair.a,
        &[
            "-i",
            "veth0",
            "-i",
            "veth2",
            "--attach",
            "tc",
            "-w",
            "/dev/null",
        ],
    )?;
    let second = agent_in_pid_namespace(
        &pair.a,
        &["-i", "veth0", "--attach", "tc", "-w", "/dev/null"],
    )?;
    ensure!(filter_programs(&pair.a, "veth0")?.len() == 4);
    ensure!(filter_programs(&pair.a, "veth2")?.len() == 2);
    kill_agent(first)?;
    kill_agent(second)?;

    let dir = pcap_tests::TempDir::new("tcsrv")?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ninsecure_plaintext = true\n",
    )?;
    let mut command = pair.a.command("unshare");
    command
        .args(["--pid", "--fork", "--kill-child"])
        .arg(binary("pcap-agent"))
        .args(["serve", "--config"])
        .arg(&config);
    let mut serve = Running::spawn(&mut command)?;
    serve.wait_for("listening", 1)?;
    ensure!(filter_programs(&pair.a, "veth0")?.is_empty());
    ensure!(filter_programs(&pair.a, "veth2")?.is_empty());
    ensure!(!has_clsact(&pair.a, "veth0")?, "our clsact is removed");
    let operator = pair.a.sh("tc filter show dev veth2 ingress")?;
    ensure!(
        has_clsact(&pair.a, "veth2")? && operator.contains("u32"),
        "the operator's qdisc and filter stay: {operator}"
    );
    ensure!(state_files(&pair.a)?.is_empty());
    let (status, lines) = signal_agent(serve, Signal::SIGTERM)?;
    ensure!(status.success(), "{lines:?}");
    Ok(())
}

#[test]
fn state_left_by_an_older_agent_is_recovered() -> anyhow::Result<()> {
    let pair = Pair::new("tcold")?;
    // What an older agent wrote before it died: a filter by priority and
    // handle, and the qdisc it added. No process has a PID above pid_max.
    pair.a.sh("tc qdisc add dev veth0 clsact && \
         tc filter add dev veth0 ingress pref 5 protocol all u32 match u32 0 0")?;
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")?
        .trim()
        .parse()?;
    std::fs::create_dir_all("/run/pcap-agent/tc")?;
    let state = format!("/run/pcap-agent/tc/{}", pid_max + 1);
    std::fs::write(
        &state,
        format!("qdisc veth0\nfilter veth0 ingress 5 {}\n", 0x8000_0800_u32),
    )?;
    let next = agent_in_pid_namespace(&pair.a, &["-i", "lo", "--attach", "tc", "-w", "/dev/null"]);
    let left = std::path::Path::new(&state).exists();
    let _ = std::fs::remove_file(&state);
    let (_, lines) = signal_agent(next?, Signal::SIGINT)?;
    ensure!(!left, "the old state file is removed");
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("removed tc filters left by an older pcap-agent")),
        "{lines:?}"
    );
    let listing = pair.a.sh("tc filter show dev veth0 ingress")?;
    ensure!(listing.is_empty(), "{listing}");
    ensure!(!has_clsact(&pair.a, "veth0")?, "its clsact is removed");
    Ok(())
}
