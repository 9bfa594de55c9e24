//! Scaling (issue 16, goal 6): CPU per packet and drops as the number of
//! concurrent captures of one interface on one agent grows (1, 2, 4, 8),
//! and as the number of agents one API merges into one CLI grows (1 to 10).
//!
//! Both series drive the release binaries from outside, as the
//! distributed part does (`pcap_tests::cluster`, mutual TLS, `pcap
//! capture -w FILE` per capture), so they measure whatever the packet path
//! is. trafgen sends 64-byte frames at a fixed rate per VM from each VM's
//! peer (CPU 0); agents, API and CLIs are pinned to CPU 1. CPU is read from
//! `/proc/PID/stat` from the moment every capture has started until the
//! files stop growing, so start and stop are left out; trafgen's own CPU
//! (rusage) includes the in-kernel capture programs, which run in its
//! softirq on the sending CPU. Drops per stage come from the statistics
//! blocks the CLIs write. Writes a table into the report and the plot
//! `docs/bench-scaling.svg`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, ensure};
use nix::sys::resource::{UsageWho, getrusage};
use pcap_tests::{
    captures,
    cluster::{AGENT_PORT, ALICE_TOKEN, Cluster},
    process::Running,
};

use super::{
    Options,
    capture::trafgen_config,
    distributed::{STARTED, cpu_since, pin_to_cpu1, process_cpu, settle, trafgen, trafgen_frames},
};
use crate::workspace_root;

/// Packets per second each VM's peer sends.
const RATE: u64 = 40_000;
/// Concurrent captures of one interface on one agent (series 1); 0 is
/// the load alone, whose trafgen CPU is what the captures add to.
const CAPTURES: [usize; 5] = [0, 1, 2, 4, 8];
/// Agents merged by one API into one CLI (series 2).
const AGENTS: [usize; 6] = [1, 2, 4, 6, 8, 10];
/// Where the plot goes, from the workspace root.
const PLOT: &str = "docs/bench-scaling.svg";

/// What one point of a series measured, summed over its runs.
#[derive(Clone, Copy, Debug, Default)]
struct Point {
    /// Captures (series 1) or agents (series 2).
    n: usize,
    /// Captures per measurement (series 1: `n`, series 2: 1).
    captures: usize,
    /// Frames trafgen sent, all VMs together.
    offered: u64,
    /// trafgen's frames written, all captures together.
    captured: u64,
    /// Drops by stage: in the kernel (ring full, copy failed), in the
    /// agent's send queue, and after the agent (sent but not written).
    dropped_kernel: u64,
    dropped_agent: u64,
    dropped_after: u64,
    /// CPU of the agents (together), the API, the CLIs (together), and
    /// trafgen with the kernel's work in its softirqs.
    agents: Duration,
    api: Duration,
    clis: Duration,
    trafgen: Duration,
}

impl Point {
    fn add(&mut self, other: &Self) {
        self.n = other.n;
        self.captures = other.captures;
        self.offered += other.offered;
        self.captured += other.captured;
        self.dropped_kernel += other.dropped_kernel;
        self.dropped_agent += other.dropped_agent;
        self.dropped_after += other.dropped_after;
        self.agents += other.agents;
        self.api += other.api;
        self.clis += other.clis;
        self.trafgen += other.trafgen;
    }

    /// CPU seconds per million packets offered.
    fn per_m(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() / (self.offered.max(1) as f64 / 1e6)
    }

    fn dropped(&self) -> u64 {
        self.dropped_kernel + self.dropped_agent + self.dropped_after
    }

    /// The columns both tables of the report share, from *dropped: kernel*
    /// to *trafgen + kernel*: drops by stage, then CPU per million packets
    /// offered.
    fn drops_and_cpu(&self) -> String {
        format!(
            "{} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3}",
            self.dropped_kernel,
            self.dropped_agent,
            self.dropped_after,
            self.per_m(self.agents),
            self.per_m(self.api),
            self.per_m(self.clis),
            self.per_m(self.trafgen),
        )
    }
}

pub fn run(options: &Options, report: &mut String) -> anyhow::Result<()> {
    let dir = Path::new("/dev/shm").join(format!("pcap-bench-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let load_before = load_average()?;
    let result = measure_all(options, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let (captures, agents) = result?;
    let load = (load_before, load_average()?);
    std::fs::write(
        workspace_root().join(PLOT),
        plot(&captures, &agents).context("drawing the plot")?,
    )
    .with_context(|| format!("writing {PLOT}"))?;
    write_report(report, options, &captures, &agents, load)
}

fn measure_all(options: &Options, dir: &Path) -> anyhow::Result<(Vec<Point>, Vec<Point>)> {
    let captures = {
        let dir = dir.join("captures");
        std::fs::create_dir_all(&dir)?;
        captures_on_one_agent(options, &dir)?
    };
    let agents = {
        let dir = dir.join("agents");
        std::fs::create_dir_all(&dir)?;
        agents_into_one_api(options, &dir)?
    };
    Ok((captures, agents))
}

/// A cluster of `vms` VMs in `dir` that runs the release binaries.
fn release_cluster(dir: &Path, vms: usize) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::new(dir, vms)?;
    cluster.bin_dir = workspace_root().join("target/release");
    Ok(cluster)
}

/// Series 1: one VM, its agent and the API started once; `n` CLIs capture
/// its `eth0` at once.
fn captures_on_one_agent(options: &Options, dir: &Path) -> anyhow::Result<Vec<Point>> {
    let most = CAPTURES.iter().max().copied().unwrap_or(1);
    let mut cluster = release_cluster(dir, 1)?;
    let agent_config = cluster.agent_config(&format!("[limits]\nmax_captures = {most}\n"))?;
    let api_config = cluster.api_config(
        None,
        &format!(
            "[limits]\nmax_captures_per_user = {most}\nmax_captures_per_agent = {most}\n\
             max_captures_per_user_per_agent = {most}\n"
        ),
    )?;
    cluster.start_agents(&agent_config)?;
    cluster.start_api(&api_config)?;
    pin_to_cpu1(agent_pids(&cluster)[0])?;
    pin_to_cpu1(cluster.api.as_ref().context("api")?.pid().as_raw())?;
    let confs = trafgen_configs(&cluster, dir)?;
    let mut points = vec![Point::default(); CAPTURES.len()];
    for round in 0..options.runs {
        for (&n, point) in CAPTURES.iter().zip(&mut points) {
            let measured = measure(&cluster, n, &confs, options.packets, dir)?;
            log(&format!("{n} captures round {round}"), &measured);
            point.add(&measured);
        }
    }
    Ok(points)
}

/// Series 2: ten VMs with their agents started once; for each `n` an API
/// whose target holds the first `n`, and one CLI capturing all of them
/// while each of their peers sends.
fn agents_into_one_api(options: &Options, dir: &Path) -> anyhow::Result<Vec<Point>> {
    let most = AGENTS.iter().max().copied().unwrap_or(1);
    let mut cluster = release_cluster(dir, most)?;
    let agent_config = cluster.agent_config("")?;
    cluster.start_agents(&agent_config)?;
    for pid in agent_pids(&cluster) {
        pin_to_cpu1(pid)?;
    }
    let confs = trafgen_configs(&cluster, dir)?;
    let mut points = vec![Point::default(); AGENTS.len()];
    for round in 0..options.runs {
        for (&n, point) in AGENTS.iter().zip(&mut points) {
            let config = api_config(&cluster, n, dir)?;
            cluster.start_api(&config)?;
            pin_to_cpu1(cluster.api.as_ref().context("api")?.pid().as_raw())?;
            let measured = measure(&cluster, 1, &confs[..n], options.packets, dir);
            if let Some(api) = cluster.api.take() {
                api.signal(nix::sys::signal::Signal::SIGTERM)?;
                api.wait()?;
            }
            let measured = measured?;
            log(&format!("{n} agents round {round}"), &measured);
            point.add(&Point { n, ..measured });
        }
    }
    Ok(points)
}

/// An API configuration whose target `vms` holds the first `n` VMs.
fn api_config(cluster: &Cluster, n: usize, dir: &Path) -> anyhow::Result<PathBuf> {
    let agents = cluster.vms[..n].iter().fold(String::new(), |mut toml, vm| {
        let _ = writeln!(
            toml,
            "  {{ origin = \"{}\", address = \"{}:{AGENT_PORT}\" }},",
            vm.origin(),
            vm.address()
        );
        toml
    });
    let pki = &cluster.pki;
    let text = pki.api_config(
        &pki.api_client,
        &[("alice", ALICE_TOKEN)],
        "vms",
        &agents,
        "",
    );
    let config = dir.join(format!("api-{n}.toml"));
    std::fs::write(&config, text)?;
    Ok(config)
}

/// One trafgen configuration per VM: 60-byte UDP frames to its `eth0`.
fn trafgen_configs(cluster: &Cluster, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    cluster
        .vms
        .iter()
        .map(|vm| {
            let mac = vm.ns.sh("cat /sys/class/net/eth0/address")?;
            let conf = dir.join(format!("udp-60-vm{}.cfg", vm.index));
            std::fs::write(&conf, trafgen_config(mac.trim(), 60)?)?;
            Ok(conf)
        })
        .collect()
}

fn agent_pids(cluster: &Cluster) -> Vec<i32> {
    cluster
        .vms
        .iter()
        .filter_map(|vm| vm.agent.as_ref().map(|a| a.pid().as_raw()))
        .collect()
}

/// `captures` CLIs capture the API's target while the peers of the first
/// `confs.len()` VMs each send `packets` frames at [`RATE`].
fn measure(
    cluster: &Cluster,
    captures: usize,
    confs: &[PathBuf],
    packets: u64,
    dir: &Path,
) -> anyhow::Result<Point> {
    let files: Vec<PathBuf> = (0..captures)
        .map(|i| dir.join(format!("capture-{i}.pcapng")))
        .collect();
    let mut clis = Vec::new();
    for file in &files {
        let cli = Running::spawn(
            cluster
                .cli(ALICE_TOKEN, &["-w", file.to_str().expect("utf-8")])
                .stdout(Stdio::null()),
        )?;
        pin_to_cpu1(cli.pid().as_raw())?;
        clis.push(cli);
    }
    for cli in &mut clis {
        cli.wait_for(STARTED, confs.len())?;
    }
    let agents = agent_pids(cluster);
    let api = cluster.api.as_ref().context("api")?.pid().as_raw();
    let cli_pids: Vec<i32> = clis.iter().map(|c| c.pid().as_raw()).collect();
    let cpu =
        |pids: &[i32]| -> anyhow::Result<Duration> { pids.iter().map(|&p| process_cpu(p)).sum() };
    let before = (cpu(&agents)?, process_cpu(api)?, cpu(&cli_pids)?);

    let rusage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let senders = cluster.vms[..confs.len()]
        .iter()
        .zip(confs)
        .map(|(vm, conf)| {
            trafgen(&vm.peer, conf, packets, Some(RATE))
                .spawn()
                .context("starting trafgen")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for mut sender in senders {
        let status = sender.wait()?;
        ensure!(status.success(), "trafgen failed: {status}");
    }
    let trafgen_cpu = cpu_since(&rusage)?;
    settle(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let after = (cpu(&agents)?, process_cpu(api)?, cpu(&cli_pids)?);

    for cli in &clis {
        cli.signal(nix::sys::signal::Signal::SIGINT)?;
    }
    for cli in clis {
        let (status, lines) = cli.wait()?;
        ensure!(status.success(), "pcap failed: {lines:?}");
    }
    let mut point = Point {
        n: captures,
        captures,
        offered: packets * confs.len() as u64,
        agents: after.0.saturating_sub(before.0),
        api: after.1.saturating_sub(before.1),
        clis: after.2.saturating_sub(before.2),
        trafgen: trafgen_cpu,
        ..Point::default()
    };
    for file in &files {
        let capture = captures::read_file(file)?;
        point.captured += trafgen_frames(&capture);
        for s in &capture.statistics {
            let kernel = s.if_dropped.unwrap_or(0);
            let agent = s.os_dropped.unwrap_or(0);
            let written = s.user_delivered.unwrap_or(0);
            point.dropped_kernel += kernel;
            point.dropped_agent += agent;
            // Matched, less what the agent could not send, less what was
            // written: lost between the agent and the file.
            point.dropped_after += s
                .filter_accept
                .unwrap_or(written)
                .saturating_sub(kernel + agent + written);
        }
        std::fs::remove_file(file)?;
    }
    // The agent makes its next spare datapath after a capture ends (in
    // another thread): let that finish outside the next measurement.
    std::thread::sleep(Duration::from_secs(1));
    Ok(point)
}

fn log(what: &str, p: &Point) {
    eprintln!(
        "bench: scaling {what}: {}/{} captured, dropped {}/{}/{} (kernel/agent/after), \
         CPU s: agents {:.2}, API {:.2}, CLIs {:.2}, trafgen {:.2}",
        p.captured,
        p.offered * p.captures as u64,
        p.dropped_kernel,
        p.dropped_agent,
        p.dropped_after,
        p.agents.as_secs_f64(),
        p.api.as_secs_f64(),
        p.clis.as_secs_f64(),
        p.trafgen.as_secs_f64()
    );
}

/// The 1-minute load average.
fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    text.split_whitespace()
        .next()
        .context("empty /proc/loadavg")?
        .parse()
        .context("bad /proc/loadavg")
}

fn write_report(
    out: &mut String,
    options: &Options,
    captures: &[Point],
    agents: &[Point],
    load: (f64, f64),
) -> anyhow::Result<()> {
    writeln!(out, "## Scaling: captures per agent, agents per API\n")?;
    writeln!(
        out,
        "Each VM's peer sends {} 64-byte UDP frames at {RATE} packets/s (trafgen, CPU 0) to the \
         VM's `eth0`; `pcap-agent serve`, `pcap-api serve` and every `pcap capture -w FILE` \
         (pcapng on tmpfs) are pinned to CPU 1, over mutual TLS as in the distributed part. CPU \
         is each process's user + system time (`/proc/PID/stat`, 10 ms ticks) from the moment \
         every capture has started until the files stop growing: start and stop are left out. \
         *trafgen + kernel* is trafgen's rusage, which includes the softirqs its frames raise on \
         CPU 0, where the capture's TC programs run. CPU is in seconds per million packets \
         offered (all VMs); drops are summed over {} run(s) and all captures, by stage: the \
         kernel (ring full or copy failed), the agent's send queue, and after the agent \
         (matched and sent, but not in the file). Load average {:.1} before, {:.1} after.\n",
        options.packets, options.runs, load.0, load.1
    )?;
    writeln!(
        out,
        "**Captures of one interface on one agent**, each its own CLI through the API:\n"
    )?;
    writeln!(
        out,
        "| captures | offered | captured / offered, each | dropped: kernel | agent queue | after the agent | agent | API | CLIs | trafgen + kernel | agent + API + CLI per capture |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for p in captures {
        // No capture: the load alone (and the idle agent and API).
        let (n, captured, per_capture) = if p.n == 0 {
            ("0 (load alone)".to_owned(), "–".to_owned(), "–".to_owned())
        } else {
            (
                p.n.to_string(),
                format!(
                    "{:.4}",
                    p.captured as f64 / (p.offered * p.captures as u64) as f64
                ),
                format!("{:.3}", p.per_m(p.agents + p.api + p.clis) / p.n as f64),
            )
        };
        writeln!(
            out,
            "| {n} | {} | {captured} | {} | {per_capture} |",
            p.offered / u64::from(options.runs.max(1)),
            p.drops_and_cpu(),
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "**Agents merged by one API** into one CLI, each VM sending the same load:\n"
    )?;
    writeln!(
        out,
        "| agents | offered (all) | captured / offered | dropped: kernel | agent queue | after the agents | agents | API | CLI | trafgen + kernel | agents + API + CLI |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for p in agents {
        writeln!(
            out,
            "| {} | {} | {:.4} | {} | {:.3} |",
            p.n,
            p.offered / u64::from(options.runs.max(1)),
            p.captured as f64 / p.offered.max(1) as f64,
            p.drops_and_cpu(),
            p.per_m(p.agents + p.api + p.clis),
        )?;
    }
    writeln!(out)?;
    let dropped: u64 = captures.iter().chain(agents).map(Point::dropped).sum();
    writeln!(
        out,
        "{dropped} packets dropped in all. Plot: [bench-scaling.svg](bench-scaling.svg).\n"
    )?;
    Ok(())
}

/// One panel of the plot: a line per process kind over N.
struct Panel {
    title: &'static str,
    x_label: &'static str,
    xs: Vec<f64>,
    lines: Vec<(&'static str, Vec<f64>)>,
}

/// Both series as an SVG line chart, CPU s per million packets offered
/// against N.
fn plot(captures: &[Point], agents: &[Point]) -> anyhow::Result<String> {
    let series = |points: &[Point], names: [&'static str; 3]| -> Vec<(&'static str, Vec<f64>)> {
        let column =
            |f: &dyn Fn(&Point) -> Duration| points.iter().map(|p| p.per_m(f(p))).collect();
        vec![
            (names[0], column(&|p| p.agents)),
            (names[1], column(&|p| p.api)),
            (names[2], column(&|p| p.clis)),
            ("trafgen + kernel", column(&|p| p.trafgen)),
            ("total", column(&|p| p.agents + p.api + p.clis + p.trafgen)),
        ]
    };
    let xs = |points: &[Point]| points.iter().map(|p| p.n as f64).collect();
    let panels = [
        Panel {
            title: "Captures of one interface on one agent",
            x_label: "concurrent captures",
            xs: xs(captures),
            lines: series(captures, ["agent", "API", "CLIs (together)"]),
        },
        Panel {
            title: "Agents merged by one API into one CLI",
            x_label: "agents (same load each)",
            xs: xs(agents),
            lines: series(agents, ["agents (together)", "API", "CLI"]),
        },
    ];
    let (width, height) = (600.0, 360.0);
    let mut svg = String::new();
    writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         viewBox=\"0 0 {} {height}\" font-family=\"sans-serif\" font-size=\"12\">",
        width * panels.len() as f64,
        width * panels.len() as f64
    )?;
    writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>")?;
    for (i, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, panel, i as f64 * width, width, height)?;
    }
    writeln!(svg, "</svg>")?;
    Ok(svg)
}

const COLORS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#555555"];

fn draw_panel(
    svg: &mut String,
    panel: &Panel,
    left: f64,
    width: f64,
    height: f64,
) -> anyhow::Result<()> {
    // The plot, and the legend to its right.
    let (x0, x1) = (left + 60.0, left + width - 160.0);
    let (y0, y1) = (height - 50.0, 40.0);
    let max_y = panel
        .lines
        .iter()
        .flat_map(|(_, ys)| ys.iter().copied())
        .filter(|y| y.is_finite())
        .fold(0.0_f64, f64::max);
    let step = nice_step(max_y / 5.0);
    let top = (max_y / step).ceil().max(1.0) * step;
    let (min_x, max_x) = panel
        .xs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    let span_x = if max_x > min_x { max_x - min_x } else { 1.0 };
    let px = |x: f64| x0 + (x - min_x) / span_x * (x1 - x0);
    let py = |y: f64| y0 - y / top * (y0 - y1);

    writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        f64::midpoint(x0, x1),
        panel.title
    )?;
    // Grid and y ticks.
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let y = py(tick);
        writeln!(
            svg,
            "<line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\" stroke=\"#dddddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 6.0,
            y + 4.0,
            trim_number(tick)
        )?;
        tick += step;
    }
    // x ticks at the measured N.
    for &x in &panel.xs {
        writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{y0:.1}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"black\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            px(x),
            y0 + 5.0,
            y0 + 19.0,
            trim_number(x)
        )?;
    }
    writeln!(
        svg,
        "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y0:.1}\" stroke=\"black\"/>\
         <line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x0:.1}\" y2=\"{y1:.1}\" stroke=\"black\"/>"
    )?;
    writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        f64::midpoint(x0, x1),
        height - 14.0,
        panel.x_label
    )?;
    writeln!(
        svg,
        "<text transform=\"translate({:.1} {:.1}) rotate(-90)\" text-anchor=\"middle\">CPU s per million packets offered</text>",
        left + 16.0,
        f64::midpoint(y0, y1)
    )?;
    for (i, (name, ys)) in panel.lines.iter().enumerate() {
        let points: Vec<(f64, f64)> = panel
            .xs
            .iter()
            .zip(ys)
            .map(|(&x, &y)| (px(x), py(y)))
            .collect();
        draw_line(
            svg,
            i,
            name,
            &points,
            (x1 + 12.0, y1 + 8.0 + i as f64 * 18.0),
        )?;
    }
    Ok(())
}

/// The `i`th line of a panel through `points`, with its legend entry at
/// `legend`; the total dashed.
fn draw_line(
    svg: &mut String,
    i: usize,
    name: &str,
    points: &[(f64, f64)],
    legend: (f64, f64),
) -> anyhow::Result<()> {
    let color = COLORS[i % COLORS.len()];
    let dash = if name == "total" {
        " stroke-dasharray=\"5 3\""
    } else {
        ""
    };
    let coordinates: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
        coordinates.join(" ")
    )?;
    for (x, y) in points {
        writeln!(
            svg,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{color}\"/>"
        )?;
    }
    let (lx, ly) = legend;
    writeln!(
        svg,
        "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
         <text x=\"{:.1}\" y=\"{:.1}\">{name}</text>",
        lx + 20.0,
        lx + 26.0,
        ly + 4.0
    )?;
    Ok(())
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// A tick label: no trailing zeros.
fn trim_number(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}
