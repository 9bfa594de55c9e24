//! The same trafgen load captured locally (`pcap-agent capture`) and through
//! agent → API → CLI over mutual TLS; and how long a capture takes to start
//! across ten agents.
//!
//! The landscape is `pcap_tests::cluster`: trafgen runs in a VM's peer
//! namespace on CPU 0 and sends to the VM's `eth0`; every capturing process
//! (the local capture, or agent, API and CLI together) is pinned to CPU 1.
//! CPU time is the capturing processes' user + system time, start-up
//! included for the processes a capture starts (the local capture, the
//! CLI). The agent and the API are daemons that outlive a capture: a
//! capture is charged what they spend from the moment they are idle and
//! ready until they are idle again (the agent's next spare datapath
//! included), and their own start-up and shutdown are reported apart.

use std::{
    fmt::Write as _,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use nix::sys::resource::{UsageWho, getrusage};
use pcap_tests::{
    captures,
    cluster::{ALICE_TOKEN, Cluster},
    netns::Netns,
    process::{self, Running},
};

use super::{
    Options, Run,
    capture::{START_PACKETS, trafgen_config},
    floor, remove_last, steady,
};
use crate::{rusage, workspace_root};

/// The local capture's file, which the bare-TLS floor then moves.
const LOCAL_FILE: &str = "local.pcapng";

/// What the CLI prints once an origin has attached.
pub(super) const STARTED: &str = "capturing on";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Local,
    Distributed,
}

pub fn run(options: &Options, report: &mut String) -> anyhow::Result<()> {
    let dir = Path::new("/dev/shm").join(format!("pcap-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = measure_all(options, &dir, report);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure_all(options: &Options, dir: &Path, report: &mut String) -> anyhow::Result<()> {
    let release = workspace_root().join("target/release");
    let mut cluster = Cluster::new(dir, 1)?;
    cluster.bin_dir.clone_from(&release);
    let mac = cluster.vms[0].ns.sh("cat /sys/class/net/eth0/address")?;
    let conf = dir.join("udp-60.cfg");
    std::fs::write(&conf, trafgen_config(mac.trim(), 60)?)?;
    let agent_config = cluster.agent_config("")?;
    let api_config = cluster.api_config(None, "")?;

    let mut results = Vec::new();
    let mut floors = Vec::new();
    for round in 0..options.runs {
        let mut order = [Route::Local, Route::Distributed];
        order.rotate_left(round as usize % 2);
        for path in order {
            let (run, parts) = match path {
                Route::Local => (
                    local(&cluster, &conf, options.packets, &dir.join(LOCAL_FILE))?,
                    None,
                ),
                Route::Distributed => distributed(
                    &mut cluster,
                    &agent_config,
                    &api_config,
                    &conf,
                    options.packets,
                    dir,
                )?,
            };
            eprintln!(
                "bench: {path:?} round {round}: {}/{} captured, {} dropped, {:.3}s CPU",
                run.captured,
                run.offered,
                run.dropped,
                run.cpu.as_secs_f64()
            );
            results.push((path, run, parts));
        }
        let local_run = results
            .iter()
            .rev()
            .find_map(|(path, run, _)| (*path == Route::Local).then_some(*run))
            .context("a local run")?;
        // Local capture's start and stop, which a serving agent pays while
        // idle: the floor leaves it out.
        let start = local(&cluster, &conf, START_PACKETS, &dir.join("start.pcapng"))?.cpu;
        let floor = floor::measure(&cluster, &dir.join(LOCAL_FILE), dir, start)?;
        eprintln!("bench: bare TLS round {round}: {floor:?}");
        floors.push((local_run, floor));
    }
    drop(cluster);
    write_report(report, &results, &floors)
}

/// The start-time part: its own directory and cluster of ten.
pub fn run_start(options: &Options, report: &mut String) -> anyhow::Result<()> {
    let dir = Path::new("/dev/shm").join(format!("pcap-bench-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let release = workspace_root().join("target/release");
    let result = start_times(options, &dir, &release, 10)
        .and_then(|ten| Ok((ten, start_times(options, &dir, &release, 1)?)));
    let _ = std::fs::remove_dir_all(&dir);
    let (ten, one) = result?;
    write_start_report(report, &ten, &one)
}

/// `pcap-agent capture` of `packets` frames into `file`.
fn local(cluster: &Cluster, conf: &Path, packets: u64, file: &Path) -> anyhow::Result<Run> {
    remove_last(file)?;
    let vm = &cluster.vms[0];
    let mut command = vm.ns.command("taskset");
    command
        .args(["-c", "1"])
        .arg(cluster.bin_dir.join("pcap-agent"))
        .args(["capture", "-i", "eth0", "-w"])
        .arg(file)
        .stdout(Stdio::null());
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let mut capture = Running::spawn(&mut command)?;
    capture.wait_for("listening on", 1)?;
    let trafgen = send(cluster, conf, packets, file)?;
    let (status, lines) = capture.interrupt()?;
    ensure!(status.success(), "local capture failed: {lines:?}");
    let cpu = cpu_since(&before)?.saturating_sub(trafgen);
    count(file, packets, cpu)
}

fn distributed(
    cluster: &mut Cluster,
    agent_config: &Path,
    api_config: &Path,
    conf: &Path,
    packets: u64,
    dir: &Path,
) -> anyhow::Result<(Run, Option<Parts>)> {
    let file = dir.join("distributed.pcapng");
    remove_last(&file)?;
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    cluster.start_agents(agent_config)?;
    cluster.start_api(api_config)?;
    let agent = cluster.vms[0]
        .agent
        .as_ref()
        .context("agent")?
        .pid()
        .as_raw();
    let api = cluster.api.as_ref().context("api")?.pid().as_raw();
    pin_to_cpu1(agent)?;
    pin_to_cpu1(api)?;
    // Ready and idle: the agent has made its spare datapath.
    let idle = [idle_cpu(agent)?, idle_cpu(api)?];
    let mut cli = Running::spawn(
        cluster
            .cli(ALICE_TOKEN, &["-w", file.to_str().expect("utf-8")])
            .stdout(Stdio::null()),
    )?;
    pin_to_cpu1(cli.pid().as_raw())?;
    cli.wait_for(STARTED, 1)?;
    let trafgen = send(cluster, conf, packets, &file)?;
    let before_cli = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:?}");
    let cli_cpu = cpu_since(&before_cli)?;
    // Idle again: the agent has made the spare for the next capture.
    let done = [idle_cpu(agent)?, idle_cpu(api)?];
    for running in [cluster.api.take(), cluster.vms[0].agent.take()]
        .into_iter()
        .flatten()
    {
        running.signal(nix::sys::signal::Signal::SIGTERM)?;
        running.wait()?;
    }
    let everything = cpu_since(&before)?.saturating_sub(trafgen);
    let agent_cpu = done[0].saturating_sub(idle[0]);
    let api_cpu = done[1].saturating_sub(idle[1]);
    let capture = agent_cpu + api_cpu + cli_cpu;
    let parts = Parts {
        agent: agent_cpu,
        api: api_cpu,
        cli: cli_cpu,
        daemons: everything.saturating_sub(capture),
    };
    Ok((count(&file, packets, capture)?, Some(parts)))
}

/// `pid`'s CPU time once it has stopped growing: the process is idle.
fn idle_cpu(pid: i32) -> anyhow::Result<Duration> {
    steady(
        &format!("process {pid} goes idle"),
        Duration::from_millis(300),
        || process_cpu(pid),
    )
}

/// Where a distributed run's CPU went.
#[derive(Clone, Copy)]
struct Parts {
    /// `pcap-agent serve`, from idle to idle: the capture and the spare
    /// datapath made after it.
    agent: Duration,
    /// `pcap-api serve`, from idle to idle.
    api: Duration,
    /// The CLI, start-up included.
    cli: Duration,
    /// The agent's and the API's own start-up and shutdown, which a
    /// capture does not cause.
    daemons: Duration,
}

impl Parts {
    const NAMES: [&str; 4] = [
        "the agent alone",
        "the API alone",
        "the CLI",
        "not counted: the agent's and the API's start-up and shutdown",
    ];

    /// The parts in the order of [`Self::NAMES`].
    fn each(self) -> [Duration; 4] {
        [self.agent, self.api, self.cli, self.daemons]
    }
}

/// Sends `packets` frames with trafgen, then waits until `file` stops
/// growing. Returns trafgen's own CPU time, which the callers' rusage of
/// reaped children includes and must not count.
fn send(cluster: &Cluster, conf: &Path, packets: u64, file: &Path) -> anyhow::Result<Duration> {
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let status = trafgen(&cluster.vms[0].peer, conf, packets, None)
        .status()
        .context("running trafgen")?;
    ensure!(status.success(), "trafgen failed: {status}");
    let trafgen = cpu_since(&before)?;
    settle(&[file])?;
    Ok(trafgen)
}

/// trafgen in `ns` on CPU 0, sending `packets` frames of `conf` out of
/// `eth0`, at `rate` packets per second or else as fast as it can.
pub(super) fn trafgen(
    ns: &Netns,
    conf: &Path,
    packets: u64,
    rate: Option<u64>,
) -> std::process::Command {
    let mut command = ns.command("taskset");
    command
        .args(["-c", "0", "trafgen", "--dev", "eth0", "--conf"])
        .arg(conf)
        .args(["--num", &packets.to_string(), "--cpus", "1", "--qdisc-path"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(rate) = rate {
        command.args(["--rate", &format!("{rate}pps")]);
    }
    command
}

/// Waits until none of `files` has grown for half a second: the capturing
/// side has caught up.
pub(super) fn settle(files: &[&Path]) -> anyhow::Result<()> {
    steady(
        "the capture files stop growing",
        Duration::from_millis(500),
        || {
            Ok(files
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .sum::<u64>())
        },
    )?;
    Ok(())
}

pub(super) fn pin_to_cpu1(pid: i32) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &pid.to_string()])
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "taskset -p {pid} failed");
    Ok(())
}

/// Reaped children's CPU since `before`.
pub(super) fn cpu_since(before: &nix::sys::resource::Usage) -> anyhow::Result<Duration> {
    Ok(rusage::cpu_of(UsageWho::RUSAGE_CHILDREN)?.saturating_sub(rusage::cpu(before)))
}

/// Counts trafgen's frames (UDP to port 9) in `file`, and the drops its
/// statistics blocks report.
fn count(file: &Path, offered: u64, cpu: Duration) -> anyhow::Result<Run> {
    let capture = captures::read_file(file)?;
    let dropped = capture
        .statistics
        .iter()
        .map(|s| s.if_dropped.unwrap_or(0) + s.os_dropped.unwrap_or(0))
        .sum();
    Ok(Run {
        offered,
        captured: trafgen_frames(&capture),
        dropped,
        cpu,
    })
}

/// trafgen's frames (60 bytes, UDP to port 9) in `capture`.
pub(super) fn trafgen_frames(capture: &captures::Capture) -> u64 {
    capture
        .packets
        .iter()
        .filter(|p| p.data.len() == 60 && p.data.get(36..38) == Some(&[0, 9]))
        .count() as u64
}

/// What starting captures across a cluster's agents took.
struct StartTimes {
    /// Milliseconds from starting the CLI until every agent attached,
    /// sorted.
    ms: Vec<f64>,
    /// CPU milliseconds per capture (start to stop) of the agents
    /// together, of the API, and of the CLI.
    agents_cpu_ms: f64,
    api_cpu_ms: f64,
    cli_cpu_ms: f64,
}

/// Milliseconds from starting the CLI until all of `vms` agents have
/// attached, over `options.runs` captures (at least 5).
fn start_times(
    options: &Options,
    dir: &Path,
    release: &Path,
    vms: usize,
) -> anyhow::Result<StartTimes> {
    let dir = dir.join(format!("vms-{vms}"));
    std::fs::create_dir_all(&dir)?;
    let mut cluster = Cluster::new(&dir, vms)?;
    release.clone_into(&mut cluster.bin_dir);
    let agent_config = cluster.agent_config("")?;
    cluster.start_agents(&agent_config)?;
    let api_config =
        cluster.api_config(None, &format!("[limits]\nmax_captures_per_user = {vms}\n"))?;
    cluster.start_api(&api_config)?;
    let agents: Vec<i32> = cluster
        .vms
        .iter()
        .filter_map(|vm| vm.agent.as_ref().map(|a| a.pid().as_raw()))
        .collect();
    let api = cluster.api.as_ref().context("api")?.pid().as_raw();
    let mut times = Vec::new();
    let (mut agents_cpu, mut api_cpu, mut cli_cpu) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let captures = options.runs.max(5);
    for _ in 0..captures {
        let agents_before = agents
            .iter()
            .map(|&p| process_cpu(p))
            .sum::<anyhow::Result<Duration>>()?;
        let api_before = process_cpu(api)?;
        let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
        let started = Instant::now();
        let mut cli = Running::spawn(
            cluster
                .cli(ALICE_TOKEN, &["-w", "/dev/null"])
                .stdout(Stdio::null()),
        )?;
        cli.wait_for(STARTED, vms)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        let (status, lines) = cli.interrupt()?;
        ensure!(status.success(), "pcap failed: {lines:?}");
        cli_cpu += cpu_since(&before)?;
        api_cpu += process_cpu(api)?.saturating_sub(api_before);
        let agents_after = agents
            .iter()
            .map(|&p| process_cpu(p))
            .sum::<anyhow::Result<Duration>>()?;
        agents_cpu += agents_after.saturating_sub(agents_before);
    }
    times.sort_by(f64::total_cmp);
    let per_capture = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(captures);
    Ok(StartTimes {
        ms: times,
        agents_cpu_ms: per_capture(agents_cpu),
        api_cpu_ms: per_capture(api_cpu),
        cli_cpu_ms: per_capture(cli_cpu),
    })
}

/// A live process's user + system time so far (`/proc/PID/stat`, its
/// threads' included, ended ones too).
pub(super) fn process_cpu(pid: i32) -> anyhow::Result<Duration> {
    // utime and stime.
    let [user, system] = process::proc_stat(Path::new(&format!("/proc/{pid}/stat")), [14, 15])?;
    let ticks = user + system;
    // In USER_HZ, which Linux fixes at 100 on x86 and arm64.
    Ok(Duration::from_millis(ticks * 10))
}

fn write_report(
    out: &mut String,
    results: &[(Route, Run, Option<Parts>)],
    floors: &[(Run, floor::Floor)],
) -> anyhow::Result<()> {
    let mean = |path: Route, f: &dyn Fn(&Run) -> f64| {
        let runs: Vec<f64> = results
            .iter()
            .filter(|(p, _, _)| *p == path)
            .map(|(_, r, _)| f(r))
            .collect();
        runs.iter().sum::<f64>() / runs.len() as f64
    };
    let ratio = |r: &Run| r.captured as f64 / r.offered as f64;
    let cpu = |r: &Run| r.cpu.as_secs_f64() / (r.captured.max(1) as f64 / 1e6);
    let dropped = |path: Route| -> u64 {
        results
            .iter()
            .filter(|(p, _, _)| *p == path)
            .map(|(_, r, _)| r.dropped)
            .sum()
    };
    writeln!(out, "## End to end: agent → API → CLI over mTLS vs local\n")?;
    writeln!(
        out,
        "trafgen (CPU 0) sends 64-byte UDP frames at its maximum rate to a VM's `eth0` \
         (`pcap_tests::cluster`). *local* is `pcap-agent capture -i eth0 -w FILE` in the VM; \
         *distributed* is `pcap-agent serve` in the VM, `pcap-api serve` and `pcap capture -w FILE` \
         in the control namespace, joined by veths and speaking mutual TLS. Every capturing process \
         is pinned to CPU 1; CPU is the sum of their user + system time. The local capture and the \
         CLI are counted whole, start-up included. The agent and the API are daemons that outlive \
         a capture, so a capture is charged what they spend from idle (ready, the agent's spare \
         datapath made) to idle again (the next spare made); their own start-up and shutdown are \
         shown apart and not counted. Both write pcapng to tmpfs. Means over the runs; drops \
         summed.\n"
    )?;
    writeln!(
        out,
        "| path | captured / offered | dropped | CPU s per M captured | throughput ratio to local | CPU ratio to local |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let local_ratio = mean(Route::Local, &ratio);
    let local_cpu = mean(Route::Local, &cpu);
    for (path, name) in [(Route::Local, "local"), (Route::Distributed, "distributed")] {
        writeln!(
            out,
            "| {name} | {:.4} | {} | {:.3} | {:.2} | {:.2} |",
            mean(path, &ratio),
            dropped(path),
            mean(path, &cpu),
            mean(path, &ratio) / local_ratio,
            mean(path, &cpu) / local_cpu,
        )?;
    }
    // Goal 1 is the serving agent alone against `pcap-agent capture -w`;
    // the API's and the CLI's shares show where the rest goes.
    for (index, name) in Parts::NAMES.iter().enumerate() {
        let per_million: Vec<f64> = results
            .iter()
            .filter_map(|(_, r, parts)| {
                parts.map(|p| p.each()[index].as_secs_f64() / (r.captured.max(1) as f64 / 1e6))
            })
            .collect();
        if !per_million.is_empty() {
            let cpu = per_million.iter().sum::<f64>() / per_million.len() as f64;
            writeln!(
                out,
                "| distributed: {name} | | | {cpu:.3} | | {:.2} |",
                cpu / local_cpu
            )?;
        }
    }
    floor::write_rows(out, floors, local_cpu)
}

impl StartTimes {
    /// "median M ms, min A ms, max B ms over N captures".
    fn spread(&self) -> String {
        let at = |i: Option<&f64>| i.copied().unwrap_or(f64::NAN);
        format!(
            "median {:.0} ms, min {:.0} ms, max {:.0} ms over {} captures",
            super::median(self.ms.clone()),
            at(self.ms.first()),
            at(self.ms.last()),
            self.ms.len()
        )
    }
}

fn write_start_report(out: &mut String, ten: &StartTimes, one: &StartTimes) -> anyhow::Result<()> {
    writeln!(out, "## Capture start across 10 agents\n")?;
    writeln!(
        out,
        "Ten VMs of `pcap_tests::cluster`, each with `pcap-agent serve`, one `pcap-api serve`; \
         each capture is a new `pcap capture -w /dev/null` of all ten, stopped once every agent \
         has attached. CLI started → all ten report `capture_started`: {}. Goal: under 300 ms.\n",
        ten.spread()
    )?;
    writeln!(
        out,
        "CPU per capture (start to stop): the ten agents together {:.0} ms, the API {:.0} ms, \
         the CLI {:.0} ms.\n",
        ten.agents_cpu_ms, ten.api_cpu_ms, ten.cli_cpu_ms
    )?;
    writeln!(
        out,
        "The same with one VM: {}. The ten simulated VMs share one kernel, so their twenty TCX \
         attaches take turns: each holds the RTNL lock through an RCU grace period \
         (`tcx_entry_sync`), which ten real VMs would wait for side by side.\n",
        one.spread()
    )?;
    Ok(())
}
