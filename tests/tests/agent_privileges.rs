//! The pcap-agent BOSH job's default, run the way monit runs it: the job is
//! rendered (tests/bosh/render.rb) into a `/var/vcap` that a private mount
//! namespace puts in place, `bin/pcap-agent_ctl start` execs the real agent
//! binary as root in a "VM" network namespace, and `bin/drain` stops it.
//!
//! The agent must hold exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN in its
//! effective, permitted and bounding sets, nothing inheritable or ambient,
//! and no_new_privs, and open files as vcap (/proc/PID/status) — and still
//! capture through pcap-api. Started without one of them it must refuse,
//! naming it.
//!
//! Needs root (namespaces, eBPF) and ruby; `cargo build --bins` first.

use std::{
    path::Path,
    process::{Command, ExitStatus, Output, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use pcap_tests::{
    TempDir,
    bosh::{Json, VCAP_ID, VarVcap},
    captures,
    cluster::{ALICE_TOKEN, Cluster},
    netns::Netns,
    process::{Running, binary, wait_until},
};

/// CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39): the documented set.
const KEPT: u64 = (1 << 12) | (1 << 38) | (1 << 39);

/// How long the agent may take to start or to stop.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A process started by the job's ctl script, reaped as soon as it exits
/// (as init reaps monit's children), and killed on drop if still running.
struct Started {
    pid: Pid,
    exited: Receiver<std::io::Result<ExitStatus>>,
    status: Option<ExitStatus>,
}

impl Started {
    fn spawn(mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        Ok(Self {
            pid,
            exited,
            status: None,
        })
    }

    /// The exit status, once the process has exited.
    fn poll(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none()
            && let Ok(status) = self.exited.try_recv()
        {
            self.status = Some(status?);
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the exit.
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self
            .exited
            .recv_timeout(timeout)
            .context("the process did not exit")??;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if matches!(self.poll(), Ok(None)) {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.exited.recv_timeout(TIMEOUT);
        }
    }
}

/// The agent job's properties with the cluster's certificates.
fn agent_properties(cluster: &Cluster) -> anyhow::Result<Json> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| p.display().to_string());
    Ok(Json::map(&[
        (
            "tls",
            Json::map(&[
                (
                    "certificate",
                    Json::str(read(&cluster.pki.agent.certificate)?),
                ),
                (
                    "private_key",
                    Json::str(read(&cluster.pki.agent.private_key)?),
                ),
                ("ca", Json::str(read(&cluster.pki.ca.certificate)?)),
            ]),
        ),
        (
            "capture",
            Json::map(&[("default_interfaces", Json::strings(&["eth0"]))]),
        ),
    ]))
}

/// The `Name:\tvalue` fields of /proc/PID[/task/TID]/status.
fn status_field(status: &str, name: &str) -> anyhow::Result<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(":\t"))
        .map(str::to_owned)
        .with_context(|| format!("no {name} in\n{status}"))
}

/// Every thread of `pid` has exactly the documented capability sets.
fn assert_documented_capabilities(pid: Pid) -> anyhow::Result<usize> {
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for (name, expected) in [
            ("CapEff", KEPT),
            ("CapPrm", KEPT),
            ("CapBnd", KEPT),
            ("CapInh", 0),
            ("CapAmb", 0),
        ] {
            let value = u64::from_str_radix(&status_field(&status, name)?, 16)?;
            ensure!(
                value == expected,
                "{name} is {value:016x}, not {expected:016x}:\n{status}"
            );
        }
        ensure!(status_field(&status, "NoNewPrivs")? == "1", "{status}");
        // Root without the capabilities root usually has, opening files as
        // vcap (privileges.file_user): real, effective, saved, file system.
        for name in ["Uid", "Gid"] {
            ensure!(
                status_field(&status, name)? == format!("0\t0\t0\t{VCAP_ID}"),
                "{name}:\n{status}"
            );
        }
        ensure!(
            status_field(&status, "Groups")?.trim_end() == VCAP_ID.to_string(),
            "{status}"
        );
        threads += 1;
    }
    Ok(threads)
}

fn log(var_vcap: &VarVcap) -> String {
    std::fs::read_to_string(var_vcap.path("sys/log/pcap-agent/pcap-agent.stderr.log"))
        .unwrap_or_default()
}

/// Waits until the agent's log says it listens, failing early if it exited.
fn wait_listening(agent: &mut Started, var_vcap: &VarVcap) -> anyhow::Result<()> {
    wait_until("the agent listens", TIMEOUT, || {
        if let Some(status) = agent.poll()? {
            bail!("the agent exited ({status}):\n{}", log(var_vcap));
        }
        Ok(log(var_vcap).contains("listening"))
    })
}

/// What of ours is attached to `eth0` of `ns`: TCX programs, or (the clsact
/// fallback) tc filters and the clsact qdisc.
fn attached(ns: &Netns, attach: &str) -> anyhow::Result<Vec<String>> {
    if attach == "tcx" {
        return ns.tcx_programs("eth0");
    }
    let mut found: Vec<String> = ns
        .sh("tc filter show dev eth0 ingress; tc filter show dev eth0 egress")?
        .lines()
        .map(str::to_owned)
        .collect();
    if ns.sh("tc qdisc show dev eth0")?.contains("clsact") {
        found.push("clsact qdisc".to_owned());
    }
    Ok(found)
}

/// A one-VM cluster (no agent running) and a `/var/vcap` in `dir` with the
/// pcap-agent job rendered from [`agent_properties`] as `edit` changes them.
fn rendered_agent_job(
    dir: &Path,
    edit: impl FnOnce(Json) -> Json,
) -> anyhow::Result<(Cluster, VarVcap)> {
    let cluster = Cluster::new(dir, 1)?;
    let var_vcap = VarVcap::new(dir, &cluster.bin_dir)?;
    var_vcap
        .render("pcap-agent", &edit(agent_properties(&cluster)?))?
        .map_err(anyhow::Error::msg)?;
    Ok((cluster, var_vcap))
}

/// The job's ctl script starts the agent through `launcher`, and the agent
/// exits 1 (refusing to run) within [`TIMEOUT`]: its log.
fn refused_start(var_vcap: &VarVcap, launcher: Command) -> anyhow::Result<String> {
    let mut agent = Started::spawn(var_vcap.command(
        launcher,
        &["/var/vcap/jobs/pcap-agent/bin/pcap-agent_ctl", "start"],
    ))?;
    let status = agent.wait(TIMEOUT)?;
    let log = log(var_vcap);
    ensure!(status.code() == Some(1), "exited {status}:\n{log}");
    Ok(log)
}

/// Runs `script`, a job script that stops the agent, whose output must
/// pass `ok`; it must return within `limit.0` (else it waited for
/// `limit.1`), with the agent exited cleanly. The script's output.
fn stop_agent(
    agent: &mut Started,
    var_vcap: &VarVcap,
    mut script: Command,
    ok: impl Fn(&Output) -> bool,
    limit: (Duration, &str),
) -> anyhow::Result<Output> {
    let started = Instant::now();
    let output = script.output()?;
    let took = started.elapsed();
    ensure!(ok(&output), "{output:?}");
    ensure!(
        took < limit.0,
        "{script:?} took {took:?}: it waited for {}",
        limit.1
    );
    let status = agent.wait(Duration::from_secs(5))?;
    ensure!(
        status.success(),
        "the agent exited {status}:\n{}",
        log(var_vcap)
    );
    Ok(output)
}

#[test]
fn the_default_job_runs_the_agent_with_exactly_its_capabilities_and_it_captures()
-> anyhow::Result<()> {
    default_job_captures("tcx")
}

/// The clsact fallback (the default below Linux 6.6) also runs `tc`, which
/// inherits the agent's capabilities and no more, to remove its qdisc.
#[test]
fn the_default_job_captures_with_the_clsact_fallback_under_the_same_capabilities()
-> anyhow::Result<()> {
    default_job_captures("tc")
}

fn default_job_captures(attach: &str) -> anyhow::Result<()> {
    let dir = TempDir::new(&format!("privileges-job-{attach}"))?;
    let (mut cluster, var_vcap) = rendered_agent_job(&dir, |properties| {
        properties.with("capture.attach", Json::str(attach))
    })?;

    // As monit does: the ctl script's start, which execs the agent.
    let vm = &cluster.vms[0];
    let mut agent = Started::spawn(var_vcap.command(
        vm.ns.exec(),
        &["/var/vcap/jobs/pcap-agent/bin/pcap-agent_ctl", "start"],
    ))?;
    wait_listening(&mut agent, &var_vcap)?;
    let pidfile = std::fs::read_to_string(var_vcap.path("sys/run/pcap-agent/pcap-agent.pid"))?;
    ensure!(
        pidfile.trim() == agent.pid.to_string(),
        "the pid file holds {pidfile:?}, the agent is {}",
        agent.pid
    );
    assert_documented_capabilities(agent.pid)?;
    ensure!(
        log(&var_vcap).contains("dropped every other capability; no_new_privs is set"),
        "{}",
        log(&var_vcap)
    );

    // A capture through pcap-api still works under those capabilities.
    let api_config = cluster.api_config(None, "")?;
    cluster.start_api(&api_config)?;
    let file = dir.join("capture.pcapng");
    let mut cli = Running::spawn(
        &mut cluster.cli(ALICE_TOKEN, &["-w", file.to_str().expect("utf-8"), "icmp"]),
    )?;
    cli.wait_for("capturing on", 1)?;
    let vm = &cluster.vms[0];
    ensure!(
        !attached(&vm.ns, attach)?.is_empty(),
        "nothing attached to eth0"
    );
    // The capture's own thread was made after the drop, and inherits it.
    let threads = assert_documented_capabilities(agent.pid)?;
    ensure!(threads >= 2, "{threads} threads");
    vm.peer
        .sh(&format!("ping -q -c 5 -i 0.01 {}", vm.data_address()))?;

    // As BOSH does on stop: the drain script's SIGTERM drains the capture,
    // sends its statistics and detaches; the script returns once the agent
    // has exited.
    let drain = stop_agent(
        &mut agent,
        &var_vcap,
        var_vcap.command(vm.ns.exec(), &["/var/vcap/jobs/pcap-agent/bin/drain"]),
        |drain| drain.status.success() && String::from_utf8_lossy(&drain.stdout) == "0\n",
        (Duration::from_secs(30), "its timeout"),
    )?;
    ensure!(
        String::from_utf8_lossy(&drain.stderr).contains("pcap-agent has stopped"),
        "{}",
        String::from_utf8_lossy(&drain.stderr)
    );
    ensure!(
        !var_vcap.path("sys/run/pcap-agent/pcap-agent.pid").exists(),
        "the pid file stayed"
    );
    let left = attached(&vm.ns, attach)?;
    ensure!(left.is_empty(), "still attached after the drain: {left:?}");
    let (cli_status, cli_lines) = cli.wait()?;
    ensure!(cli_status.success(), "pcap: {cli_lines:#?}");
    let capture = captures::read_file(&file)?;
    ensure!(
        capture.packets.len() == 10,
        "{} packets, not the 5 echo requests and 5 replies",
        capture.packets.len()
    );
    ensure!(
        capture.statistics.len() == 1 && capture.statistics[0].user_delivered == Some(10),
        "the final statistics: {:?}",
        capture.statistics
    );
    Ok(())
}

#[test]
fn the_agent_refuses_to_start_without_a_capability_naming_it() -> anyhow::Result<()> {
    let dir = TempDir::new("privileges-missing")?;
    let (cluster, var_vcap) = rendered_agent_job(&dir, |properties| properties)?;
    let vm = &cluster.vms[0];

    // The ctl script started by something that dropped CAP_BPF from the
    // bounding set, so that root no longer gets it.
    let mut launcher = vm.ns.exec();
    launcher.args(["setpriv", "--bounding-set", "-bpf", "--"]);
    let log = refused_start(&var_vcap, launcher)?;
    ensure!(
        log.contains(
            "pcap-agent needs CAP_BPF to load its eBPF program and create its maps; it has: "
        ),
        "{log}"
    );
    let has = log.split("it has: ").nth(1).unwrap_or_default();
    ensure!(
        has.contains("CAP_NET_ADMIN") && has.contains("CAP_PERFMON") && !has.contains("CAP_BPF"),
        "{log}"
    );
    ensure!(!log.contains("listening"), "{log}");

    // `pcap-agent capture` checks before it attaches anything.
    let output = vm
        .ns
        .exec()
        .args(["setpriv", "--bounding-set", "-net_admin,-perfmon", "--"])
        .args(["timeout", "--signal=KILL", "30"])
        .arg(binary("pcap-agent"))
        .args(["capture", "-i", "eth0", "-c", "1", "-w", "/dev/null"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1),
        "{:?}: {stderr}",
        output.status
    );
    ensure!(
        stderr.starts_with(
            "pcap-agent: pcap-agent needs CAP_PERFMON to have its filter programs verified \
             (variable-offset stack reads), and CAP_NET_ADMIN to attach to the traffic-control \
             hooks of interfaces; it has: "
        ) && stderr.lines().count() == 1,
        "{stderr}"
    );
    ensure!(vm.ns.tcx_programs("eth0")?.is_empty(), "it attached");
    Ok(())
}

#[test]
fn bad_privileges_are_refused_naming_the_key() -> anyhow::Result<()> {
    let dir = TempDir::new("privileges-config")?;
    let config = dir.join("agent.toml");
    let run = |privileges: &str, check: bool| -> anyhow::Result<(Option<i32>, String)> {
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ninsecure_plaintext = true\n\n[privileges]\n{privileges}\n"
            ),
        )?;
        // Killed after 30 s, so that a regression that serves fails instead
        // of hanging.
        let output = Command::new("timeout")
            .args(["--signal=KILL", "30"])
            .arg(binary("pcap-agent"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(check.then_some("--check-config"))
            .output()?;
        Ok((
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    for (privileges, message) in [
        (
            r#"keep = ["BPF", "NET_ADMIN"]"#,
            "privileges.keep: lacks PERFMON, which pcap-agent needs",
        ),
        (
            r#"keep = ["BPF", "PERFMON", "NET_ADMIN", "SYS_FLY"]"#,
            "privileges.keep: \"SYS_FLY\" is not a capability name",
        ),
        (
            r#"file_user = "vcap""#,
            "privileges.file_user: takes effect only with privileges.keep",
        ),
    ] {
        let (code, stderr) = run(privileges, true)?;
        ensure!(
            code == Some(1) && stderr.contains(message),
            "{privileges}: {code:?} {stderr}"
        );
    }
    // A user the machine does not know is found out at start, before the
    // agent listens.
    let (code, stderr) = run(
        "keep = [\"BPF\", \"PERFMON\", \"NET_ADMIN\"]\nfile_user = \"no-such-pcap-user\"",
        false,
    )?;
    ensure!(
        code == Some(1)
            && stderr.contains(
                "privileges.file_user: there is no user \"no-such-pcap-user\" on this machine"
            )
            && !stderr.contains("listening"),
        "{code:?} {stderr}"
    );
    Ok(())
}

#[test]
fn the_ctl_script_starts_one_agent_and_stops_it_with_sigterm() -> anyhow::Result<()> {
    let dir = TempDir::new("privileges-ctl")?;
    let ns = Netns::new("ctl")?;
    let agent_binary = binary("pcap-agent");
    let var_vcap = VarVcap::new(&dir, agent_binary.parent().expect("a directory"))?;
    var_vcap
        .render(
            "pcap-agent",
            &Json::map(&[("insecure_plaintext_development_only", Json::Bool(true))]),
        )?
        .map_err(anyhow::Error::msg)?;
    let ctl = |action: &str| {
        var_vcap.command(
            ns.exec(),
            &["/var/vcap/jobs/pcap-agent/bin/pcap-agent_ctl", action],
        )
    };
    let mut agent = Started::spawn(ctl("start"))?;
    wait_listening(&mut agent, &var_vcap)?;
    assert_documented_capabilities(agent.pid)?;

    // monit may run start again: it leaves the running agent alone.
    let again = ctl("start").output()?;
    ensure!(
        again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains(&format!(
                "pcap-agent is already running (pid {})",
                agent.pid
            )),
        "{again:?}"
    );
    ensure!(agent.poll()?.is_none(), "the first agent stopped");

    // monit's stop: SIGTERM, and the script returns once the agent is gone.
    stop_agent(
        &mut agent,
        &var_vcap,
        ctl("stop"),
        |stop| stop.status.success(),
        (Duration::from_secs(25), "SIGKILL"),
    )?;
    ensure!(
        // `serve` logs `info!("stopped")` as its last line on a clean exit.
        log(&var_vcap)
            .lines()
            .any(|line| line.ends_with(" pcap_agent::serve: stopped")),
        "no clean stop in the log:\n{}",
        log(&var_vcap)
    );
    ensure!(
        !var_vcap.path("sys/run/pcap-agent/pcap-agent.pid").exists(),
        "the pid file stayed"
    );
    // Stopping what is not running is fine.
    let stop = ctl("stop").output()?;
    ensure!(stop.status.success(), "{stop:?}");
    Ok(())
}

#[test]
fn the_agent_opens_files_as_vcap_and_cannot_read_what_only_root_may() -> anyhow::Result<()> {
    let dir = TempDir::new("privileges-files")?;
    let (cluster, var_vcap) = rendered_agent_job(&dir, |properties| properties)?;
    // The key readable by root alone: the configuration check (as root, with
    // every capability) passes, but the agent reads it again to serve.
    let key = var_vcap.path("jobs/pcap-agent/config/certs/agent.key");
    pcap_tests::netns::sh(&format!("chown 0:0 {0} && chmod 0600 {0}", key.display()))?;
    let log = refused_start(&var_vcap, cluster.vms[0].ns.exec())?;
    ensure!(
        log.contains("dropped every other capability")
            && log.contains("/var/vcap/jobs/pcap-agent/config/certs/agent.key")
            && log.contains("Permission denied")
            && !log.contains("listening"),
        "{log}"
    );
    Ok(())
}
