//! The metrics listeners of both daemons (docs/configuration.md,
//! "Metrics"): scraped during and after a capture through the API, on a
//! cluster of agents (each in its own VM namespace) with real mutual TLS.
//! The agents' packet counters must equal the pcapng statistics blocks of
//! the capture, and the API's capture counters must move as the captures
//! start, are refused and end.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use pcap_tests::{
    TempDir,
    captures::{self, Statistics},
    cluster::{ALICE_TOKEN, BOB_TOKEN, Cluster},
    cluster_setup::{self, ping_every_vm},
    netns::Netns,
    process::{Running, binary, wait_until},
};

/// Where each daemon serves metrics when `[metrics]` names no address.
const AGENT_METRICS: &str = "127.0.0.1:9495";
const API_METRICS: &str = "127.0.0.1:9496";

/// How long counters get to settle after a capture ends.
const SETTLE: Duration = Duration::from_secs(15);

/// A scrape: every sample by its series (`name{labels}`).
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> anyhow::Result<Self> {
        ensure!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("not a sample: {line:?}"))?;
            samples.insert(series.to_owned(), value.parse()?);
        }
        Ok(Self(samples))
    }

    /// The value of `series`, which must be there.
    fn get(&self, series: &str) -> anyhow::Result<u64> {
        let value = self
            .0
            .get(series)
            .with_context(|| format!("{series} is not in {:#?}", self.0))?;
        Ok(*value as u64)
    }

    /// The value of `series`, 0 when absent (a label value not seen yet).
    fn get_or_zero(&self, series: &str) -> u64 {
        self.0.get(series).map_or(0, |v| *v as u64)
    }
}

/// `GET path` over plain HTTP from inside `ns`; the status line and body.
fn http_get(ns: &Netns, address: &str, path: &str) -> anyhow::Result<(String, String)> {
    let address = address.to_owned();
    let path = path.to_owned();
    ns.run(move || {
        let mut tcp =
            TcpStream::connect(&address).with_context(|| format!("connecting {address}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(tcp, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n")?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer)?;
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP answer: {answer:?}"))?;
        let status = head.lines().next().unwrap_or_default().to_owned();
        Ok((status, body.to_owned()))
    })
}

/// Scrapes `/metrics` at `address` in `ns`.
fn scrape(ns: &Netns, address: &str) -> anyhow::Result<Scrape> {
    let (status, body) = http_get(ns, address, "/metrics")?;
    ensure!(status == "HTTP/1.1 200 OK", "{address}: {status}\n{body}");
    Scrape::parse(&body)
}

fn agent_scrape(cluster: &Cluster, vm: usize) -> anyhow::Result<Scrape> {
    scrape(&cluster.vms[vm].ns, AGENT_METRICS)
}

fn api_scrape(cluster: &Cluster) -> anyhow::Result<Scrape> {
    scrape(&cluster.control, API_METRICS)
}

/// The API logs "serving the pcap API" before its metrics listener is up,
/// and "serving metrics" once it is.
fn wait_for_api_metrics(cluster: &mut Cluster) -> anyhow::Result<()> {
    cluster
        .api
        .as_mut()
        .context("the API runs")?
        .wait_for("serving metrics", 1)
}

/// The statistics block of interface `name`.
fn statistics<'a>(blocks: &'a [Statistics], name: &str) -> anyhow::Result<&'a Statistics> {
    blocks
        .iter()
        .find(|s| s.interface.as_deref() == Some(name))
        .with_context(|| format!("no statistics block for {name}: {blocks:#?}"))
}

/// After the capture: each agent's packet counters equal the statistics
/// block of its interface in `file`, and it sent more bytes than the
/// packets hold.
fn assert_agents_count_as_the_file_says(
    cluster: &Cluster,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let capture = captures::read_file(file)?;
    for (index, vm) in cluster.vms.iter().enumerate() {
        wait_until(&format!("{} ends its capture", vm.origin()), SETTLE, || {
            Ok(agent_scrape(cluster, index)?.get("pcap_agent_captures_running")? == 0)
        })?;
        let agent = agent_scrape(cluster, index)?;
        let block = statistics(&capture.statistics, &format!("{}/eth0", vm.origin()))?;
        let dropped = |stage: &str| {
            agent.get(&format!(
                "pcap_agent_packets_dropped_total{{stage=\"{stage}\"}}"
            ))
        };
        let ours = Statistics {
            interface: block.interface.clone(),
            received: Some(agent.get("pcap_agent_packets_seen_total")?),
            if_dropped: Some(dropped("kernel_ring")? + dropped("kernel_copy")?),
            filter_accept: Some(agent.get("pcap_agent_packets_matched_total")?),
            os_dropped: Some(dropped("send_queue")?),
            user_delivered: Some(agent.get("pcap_agent_packets_sent_total")?),
        };
        ensure!(
            &ours == block,
            "{}: metrics {ours:?}, file {block:?}",
            vm.origin()
        );
        // 30 pings and their replies at least.
        ensure!(ours.user_delivered >= Some(60), "{}: {ours:?}", vm.origin());
        let sent_bytes = agent.get("pcap_agent_sent_bytes_total")?;
        let packet_bytes: usize = capture
            .packets
            .iter()
            .filter(|p| p.interface == block.interface)
            .map(|p| p.data.len())
            .sum();
        ensure!(
            sent_bytes as usize > packet_bytes,
            "{}: {sent_bytes} bytes sent for {packet_bytes} bytes of packets",
            vm.origin()
        );
    }
    Ok(())
}

#[test]
fn both_daemons_count_captures_as_their_statistics_blocks_say() -> anyhow::Result<()> {
    let dir = TempDir::new("metrics")?;
    // One capture per agent: a second one is refused by the agents.
    let mut cluster = cluster_setup::running(&dir, 2, "[limits]\nmax_captures = 1\n", "")?;
    wait_for_api_metrics(&mut cluster)?;

    let before = api_scrape(&cluster)?;
    for kind in ["static", "bosh", "cf"] {
        ensure!(before.get(&format!("pcap_api_captures_running{{kind=\"{kind}\"}}"))? == 0);
        ensure!(
            before.get(&format!(
                "pcap_api_captures_started_total{{kind=\"{kind}\"}}"
            ))? == 0
        );
    }
    for vm in 0..cluster.vms.len() {
        let agent = agent_scrape(&cluster, vm)?;
        ensure!(agent.get("pcap_agent_captures_running")? == 0);
        ensure!(agent.get("pcap_agent_packets_seen_total")? == 0);
    }

    // During the capture.
    let file = dir.join("alice.pcapng");
    let mut cli =
        Running::spawn(&mut cluster.cli(ALICE_TOKEN, &["-w", file.to_str().expect("utf-8")]))?;
    cli.wait_for("capturing on", cluster.vms.len())?;
    let during = api_scrape(&cluster)?;
    ensure!(
        during.get("pcap_api_captures_running{kind=\"static\"}")? == 1,
        "{during:#?}"
    );
    ensure!(during.get("pcap_api_captures_started_total{kind=\"static\"}")? == 1);
    for vm in 0..cluster.vms.len() {
        ensure!(agent_scrape(&cluster, vm)?.get("pcap_agent_captures_running")? == 1);
    }

    // Bob's capture passes the API's limits, and every agent refuses it.
    let bob = cluster
        .cli(
            BOB_TOKEN,
            &["-w", dir.join("bob.pcapng").to_str().expect("utf-8")],
        )
        .output()?;
    ensure!(
        !bob.status.success(),
        "bob's capture should fail: {}",
        String::from_utf8_lossy(&bob.stderr)
    );
    for vm in 0..cluster.vms.len() {
        let agent = agent_scrape(&cluster, vm)?;
        ensure!(
            agent.get("pcap_agent_captures_refused_total{code=\"resource_exhausted\"}")? == 1,
            "vm-{vm}: {agent:#?}"
        );
        ensure!(agent.get("pcap_agent_captures_running")? == 1);
    }
    // A request with a token nobody issued: refused by the API itself.
    let stranger = cluster.cli("not-a-token-of-anyone", &[]).output()?;
    ensure!(!stranger.status.success());
    wait_until("the API counts bob's capture as ended", SETTLE, || {
        Ok(api_scrape(&cluster)?
            .get_or_zero("pcap_api_captures_ended_total{reason=\"no_agent_started\"}")
            == 1)
    })?;
    let refused = api_scrape(&cluster)?;
    ensure!(
        refused.get("pcap_api_captures_refused_total{code=\"unauthenticated\"}")? == 1,
        "{refused:#?}"
    );
    ensure!(refused.get("pcap_api_captures_started_total{kind=\"static\"}")? == 2);
    ensure!(refused.get("pcap_api_captures_running{kind=\"static\"}")? == 1);

    ping_every_vm(&cluster, 30)?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");

    // After the capture: nothing runs, and the counters are the file's.
    wait_until("the API counts alice's capture as ended", SETTLE, || {
        Ok(api_scrape(&cluster)?.get("pcap_api_captures_running{kind=\"static\"}")? == 0)
    })?;
    let api = api_scrape(&cluster)?;
    ensure!(
        api.get("pcap_api_captures_ended_total{reason=\"client_stopped\"}")? == 1,
        "{api:#?}"
    );
    ensure!(api.get("pcap_api_merge_held_bytes")? == 0, "{api:#?}");
    ensure!(api.get("pcap_api_agent_connection_failures_total")? == 0);

    assert_agents_count_as_the_file_says(&cluster, &file)
}

#[test]
fn the_metrics_listener_serves_get_metrics_only_and_speaks_tls_with_client_certificates()
-> anyhow::Result<()> {
    let dir = TempDir::new("metrics-tls")?;
    let mut cluster = Cluster::new(&dir, 1)?;
    let quoted = |path: &std::path::Path| format!("{:?}", path.display().to_string());
    let api_config = cluster.api_config(
        None,
        &format!(
            "[metrics]\nlisten = \"{API_METRICS}\"\n\n[metrics.tls]\ncertificate = {}\n\
             private_key = {}\nclient_ca = {}\n",
            quoted(&cluster.pki.api_server.certificate),
            quoted(&cluster.pki.api_server.private_key),
            quoted(&cluster.pki.ca.certificate),
        ),
    )?;
    cluster.start_api(&api_config)?;
    wait_for_api_metrics(&mut cluster)?;
    let curl = |client_certificate: bool, path: &str| -> anyhow::Result<(bool, String)> {
        let output = cluster
            .curl(client_certificate)
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(["--write-out", "\n%{http_code}"])
            .arg(format!("https://{API_METRICS}{path}"))
            .output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        ))
    };
    let (ok, answer) = curl(true, "/metrics")?;
    ensure!(ok && answer.ends_with("# EOF\n\n200"), "{answer}");
    ensure!(
        answer.contains("pcap_api_captures_running{kind=\"static\"} 0"),
        "{answer}"
    );
    let (ok, answer) = curl(true, "/")?;
    ensure!(ok && answer.ends_with("\n404"), "{answer}");
    let (ok, answer) = curl(false, "/metrics")?;
    ensure!(
        !ok && !answer.contains("# EOF"),
        "without a client certificate: {answer}"
    );
    // Plain HTTP on the TLS listener gets no metrics.
    let (status, body) = http_get(&cluster.control, API_METRICS, "/metrics").unwrap_or_default();
    ensure!(!body.contains("# EOF"), "plain HTTP was answered: {status}");
    Ok(())
}

#[test]
fn check_config_refuses_a_bad_metrics_address() -> anyhow::Result<()> {
    let dir = TempDir::new("metrics-config")?;
    let agent_config = dir.join("agent.toml");
    let check = |program: &str, config: &std::path::Path| -> anyhow::Result<(bool, String)> {
        let output = Command::new("timeout")
            .args(["--signal=KILL", "30"])
            .arg(binary(program))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--check-config")
            .output()?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        ))
    };
    let agent = |metrics: &str| -> anyhow::Result<(bool, String)> {
        std::fs::write(
            &agent_config,
            format!("listen = \"127.0.0.1:0\"\ninsecure_plaintext = true\n\n{metrics}"),
        )?;
        check("pcap-agent", &agent_config)
    };
    let (ok, output) = agent("[metrics]\nlisten = \"nonsense:95\"\n")?;
    ensure!(!ok, "{output}");
    ensure!(
        output.contains("metrics.listen: \"nonsense:95\" is not an address: give IP:PORT"),
        "{output}"
    );
    for good in [
        "",
        "[metrics]\nlisten = \"0.0.0.0:9100\"\n",
        "[metrics]\nenabled = false\n",
    ] {
        let (ok, output) = agent(good)?;
        ensure!(ok && output.contains("config OK"), "{good:?}: {output}");
    }
    let (ok, output) =
        agent("[metrics.tls]\ncertificate = \"/nonexistent.crt\"\nprivate_key = \"/k\"\n")?;
    ensure!(
        !ok && output.contains("metrics.tls: ") && output.contains("/nonexistent.crt"),
        "{output}"
    );

    // The API's, with an otherwise valid configuration.
    let cluster = Cluster::new(&dir, 1)?;
    let api_config = cluster.api_config(None, "[metrics]\nlisten = \"127.0.0.1\"\n")?;
    let (ok, output) = check("pcap-api", &api_config)?;
    ensure!(!ok, "{output}");
    ensure!(
        output.contains("metrics.listen: \"127.0.0.1\" is not an address: give IP:PORT"),
        "{output}"
    );
    let api_config = cluster.api_config(None, "")?;
    let (ok, output) = check("pcap-api", &api_config)?;
    if !ok {
        bail!("the default metrics section is refused: {output}");
    }
    Ok(())
}
