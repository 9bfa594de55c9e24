//! Bounds on the filter expressions a caller sends: a length limit, no name
//! resolution (checked against a DNS server the test owns, which counts the
//! queries it gets and never answers), and compiles that do not wait for
//! each other. The verifier-log bound is tested in pcap-filter's kernel
//! tests.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    net::UdpSocket,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use pcap_proto::{
    COMPATIBILITY_LEVEL,
    v1::{AgentStart, CaptureOptions},
};
use pcap_tests::{
    TempDir,
    agent_call::AgentCall,
    cluster::{ALICE_TOKEN, Cluster},
    netns::Netns,
    process::{Running, agent_run, binary, wait_until},
};
use tonic::{Code, transport::Endpoint};

/// A resolver that takes longer than any of these tests may: 5 s per try.
const RESOLV_CONF: &str = "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n";

/// A network namespace whose `/etc/resolv.conf` (as `ip netns exec` binds
/// it from `/etc/netns/NAME/`) names a DNS server on its loopback that
/// counts queries and never answers.
struct SilentDns {
    ns: Netns,
    socket: UdpSocket,
    _etc: EtcNetns,
}

/// `/etc/netns/NAME`, removed on drop (made before the directory exists, so
/// every failure after it cleans up).
struct EtcNetns(PathBuf);

impl Drop for EtcNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl SilentDns {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let ns = Netns::new(tag)?;
        let etc = EtcNetns(PathBuf::from("/etc/netns").join(&ns.name));
        std::fs::create_dir_all(&etc.0)?;
        let socket = bind_in(&ns, "127.0.0.1:53")?;
        std::fs::write(etc.0.join("resolv.conf"), RESOLV_CONF)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            ns,
            socket,
            _etc: etc,
        })
    }

    /// The queries received since the last call.
    fn queries(&self) -> usize {
        let mut buffer = [0u8; 4096];
        std::iter::from_fn(|| self.socket.recv(&mut buffer).ok()).count()
    }
}

/// A UDP socket bound in `ns` (sockets stay in the namespace they were made in).
fn bind_in(ns: &Netns, address: &str) -> anyhow::Result<UdpSocket> {
    ns.run(|| Ok(UdpSocket::bind(address)?))
}

#[test]
fn the_dns_server_sees_libpcaps_lookups() -> anyhow::Result<()> {
    // The control: tcpdump (libpcap alone) asks the resolver for the name.
    let dns = SilentDns::new("dnsctl")?;
    let _ = dns
        .ns
        .sh("timeout --signal=KILL 1 tcpdump -d -i lo host slow.invalid; true")?;
    ensure!(dns.queries() > 0, "libpcap asked no DNS server");
    Ok(())
}

#[test]
fn capture_refuses_names_without_a_query_and_long_expressions() -> anyhow::Result<()> {
    let dns = SilentDns::new("dnscap")?;
    let started = Instant::now();
    let output = agent_run(&dns.ns, &["capture", "-i", "lo", "host", "slow.invalid"])?;
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{stderr}");
    ensure!(
        stderr
            .contains("host names are not resolved: use an IP address instead of \"slow.invalid\""),
        "{stderr}"
    );
    ensure!(dns.queries() == 0, "the agent asked DNS");
    ensure!(
        elapsed < Duration::from_secs(5),
        "refused at once, not after a resolver timeout: {elapsed:?}"
    );

    // `port http` is a port (from /etc/services), and still works.
    let output = agent_run(
        &dns.ns,
        &[
            "capture",
            "-i",
            "lo",
            "--duration",
            "0.1",
            "tcp",
            "port",
            "http",
        ],
    )?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(dns.queries() == 0, "the agent asked DNS");

    let dir = TempDir::new("dnscap")?;
    let file = dir.join("filter");
    std::fs::write(&file, format!("host 10.0.0.1 or {}", " ".repeat(1 << 20)))?;
    let output = agent_run(
        &dns.ns,
        &["capture", "-i", "lo", "-F", file.to_str().expect("utf-8")],
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{stderr}");
    ensure!(
        stderr.contains("the filter expression is 1048593 bytes; at most 4096 are allowed"),
        "{stderr}"
    );
    Ok(())
}

/// One `Capture` call to a plain-text agent in `ns`, from a thread in `ns`,
/// of `lo` with `filter`; its session thread in the agent is
/// `capture-ORIGIN`.
fn agent_capture(ns: &Netns, filter: &str, origin: u32) -> anyhow::Result<AgentCall> {
    AgentCall::start(
        ns,
        Endpoint::from_static("http://127.0.0.1:9494"),
        AgentStart {
            compatibility_level: COMPATIBILITY_LEVEL,
            origin,
            options: Some(CaptureOptions {
                interfaces: vec!["lo".to_owned()],
                filter: filter.to_owned(),
                ..CaptureOptions::default()
            }),
            container: None,
        },
    )
}

fn serve(ns: &Netns, dir: &TempDir, max_captures: u32) -> anyhow::Result<Running> {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:9494\"\ninsecure_plaintext = true\n\
             [limits]\nmax_captures = {max_captures}\n"
        ),
    )?;
    let mut command = ns.command(binary("pcap-agent").to_str().expect("utf-8 path"));
    command.arg("serve").arg("--config").arg(&config);
    let mut agent = Running::spawn(&mut command)?;
    agent.wait_for("listening", 1)?;
    Ok(agent)
}

#[test]
fn serve_refuses_names_without_a_query_and_frees_the_slot_at_once() -> anyhow::Result<()> {
    let dns = SilentDns::new("dnssrv")?;
    let dir = TempDir::new("dnssrv")?;
    // One capture at a time: the next start succeeds only if the refused
    // one gave its slot back.
    let _agent = serve(&dns.ns, &dir, 1)?;

    let started = Instant::now();
    let refused = agent_capture(&dns.ns, "tcp and host slow.invalid", 1)?;
    let status = refused.started()?.expect_err("refused");
    ensure!(status.code() == Code::InvalidArgument, "{status}");
    ensure!(
        status.message()
            == "host names are not resolved: use an IP address instead of \"slow.invalid\"",
        "{status}"
    );
    ensure!(started.elapsed() < Duration::from_secs(5));
    ensure!(dns.queries() == 0, "the agent asked DNS");

    let long = agent_capture(&dns.ns, &"x".repeat(1 << 20), 1)?;
    let status = long.started()?.expect_err("refused");
    ensure!(status.code() == Code::InvalidArgument, "{status}");
    ensure!(
        status.message() == "the filter expression is 1048576 bytes; at most 4096 are allowed",
        "{status}"
    );

    let next = agent_capture(&dns.ns, "icmp", 1)?;
    next.started()?
        .map_err(|s| anyhow::anyhow!("the next capture did not start: {s}"))?;
    next.stop_and_drain()?;
    ensure!(dns.queries() == 0, "the agent asked DNS");
    Ok(())
}

/// `port 1 or port 2 or ...`, 4 KiB of it: libpcap takes seconds.
fn slow_expression() -> String {
    let mut expression = String::from("port 1");
    for port in 2.. {
        let term = format!(" or port {port}");
        if expression.len() + term.len() > pcap_proto::MAX_FILTER_BYTES {
            break;
        }
        expression.push_str(&term);
    }
    expression
}

/// CPU time (user, in clock ticks) of the agent's thread named `name`.
fn thread_cpu(agent: &Running, name: &str) -> anyhow::Result<Option<u64>> {
    for task in std::fs::read_dir(format!("/proc/{}/task", agent.pid()))?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat"))?;
        let rest = &stat[stat.rfind(')').context("a stat line")? + 1..];
        return Ok(rest.split_whitespace().nth(11).and_then(|t| t.parse().ok()));
    }
    Ok(None)
}

#[test]
fn a_slow_compile_does_not_hold_up_another_capture() -> anyhow::Result<()> {
    let ns = Netns::new("slowc")?;
    let dir = TempDir::new("slowc")?;
    let agent = serve(&ns, &dir, 2)?;
    let begun = Instant::now();
    let slow = agent_capture(&ns, &slow_expression(), 7)?;
    // A fifth of a second of CPU: libpcap is compiling.
    wait_until("the slow capture compiles", Duration::from_secs(30), || {
        Ok(thread_cpu(&agent, "capture-7")?.is_some_and(|ticks| ticks >= 20))
    })?;
    let fast = agent_capture(&ns, "icmp", 1)?;
    fast.started()?
        .map_err(|s| anyhow::anyhow!("the fast capture did not start: {s}"))?;
    let fast_started = begun.elapsed();
    ensure!(
        slow.responses.try_recv().is_err(),
        "the slow capture was still compiling when the fast one started"
    );
    slow.started()?
        .map_err(|s| anyhow::anyhow!("the slow capture did not start: {s}"))?;
    let slow_started = begun.elapsed();
    // Behind a shared compile lock the fast capture would start only when
    // the slow compile is done, just before the slow capture.
    ensure!(
        fast_started < slow_started / 2,
        "the fast capture started after {fast_started:?}, the slow one after {slow_started:?}"
    );
    fast.stop_and_drain()?;
    slow.stop_and_drain()?;
    Ok(())
}

#[test]
fn the_api_refuses_long_expressions_and_passes_on_the_agents_refusal_of_names() -> anyhow::Result<()>
{
    let dir = TempDir::new("apiflt")?;
    let mut cluster = Cluster::new(&dir, 1)?;
    let agent_config = cluster.agent_config("")?;
    cluster.start_agents(&agent_config)?;
    let api_config = cluster.api_config(None, "")?;
    cluster.start_api(&api_config)?;

    let mut long = String::from("host 10.0.0.1");
    while long.len() < 5000 {
        long.push_str(" or host 10.0.0.1");
    }
    let output = cluster
        .cli(ALICE_TOKEN, &["-w", "/dev/null", &long])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.code() == Some(1), "{stderr}");
    ensure!(
        stderr.contains(&format!(
            "the filter expression is {} bytes; at most 4096 are allowed",
            long.len()
        )),
        "{stderr}"
    );
    // Refused by the API itself, before any agent is asked.
    ensure!(
        stderr.contains("the API refused the capture: INVALID_ARGUMENT: the filter expression"),
        "{stderr}"
    );

    let output = cluster
        .cli(ALICE_TOKEN, &["-w", "/dev/null", "host", "slow.invalid"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains("vm-0 refused the capture (INVALID_ARGUMENT)")
            && stderr.contains(
                "host names are not resolved: use an IP address instead of \"slow.invalid\""
            ),
        "{stderr}"
    );
    for vm in &cluster.vms {
        ensure!(vm.ns.tcx_programs("eth0")?.is_empty(), "attached");
    }
    Ok(())
}
