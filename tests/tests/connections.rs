//! Connection bounds on the real binaries: handshakes that never finish
//! delay no capture and are cut after the handshake timeout, every refused
//! handshake is logged by the agent with the peer and the reason and shown
//! to the user per origin, and an agent whose API vanished stops capturing
//! once HTTP/2 keepalive notices.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use pcap_proto::{
    tls::{KeyPair, client_config},
    v1::{AgentRequest, agent_client::AgentClient},
};
use pcap_tests::{
    TempDir,
    cluster::{AGENT_PORT, ALICE_TOKEN, API_ADDRESS, Cluster},
    cluster_setup,
    netns::Netns,
    pki::{Ca, Validity},
    process::{Running, wait_until},
};

/// The servers' TLS handshake timeout (`pcap_proto::tls::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `Capture` call may take to send `start`.
const START_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The agent's HTTP/2 keepalive interval plus its timeout.
const KEEPALIVE_DETECTION: Duration = Duration::from_secs(20);

/// `count` TCP connections from inside `ns` to `address`; every other one
/// sends the first bytes of a ClientHello record and then nothing.
fn stalled_connections(
    ns: &Netns,
    address: SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    ns.run(|| {
        let mut connections = Vec::new();
        for i in 0..count {
            let mut tcp = TcpStream::connect(address)
                .with_context(|| format!("connection {i} to {address}"))?;
            if i % 2 == 1 {
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])?;
            }
            connections.push(tcp);
        }
        Ok(connections)
    })
}

/// Every connection is closed by the server within `within` of `since`.
fn assert_closed_by_server(
    connections: Vec<TcpStream>,
    since: Instant,
    within: Duration,
    what: &str,
) -> anyhow::Result<()> {
    for (i, mut tcp) in connections.into_iter().enumerate() {
        let left = (since + within).saturating_duration_since(Instant::now());
        tcp.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut buffer = [0; 64];
        // Closed (maybe after a TLS alert), or reset: all but a timeout.
        if let Err(e) = tcp.read(&mut buffer)
            && matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            anyhow::bail!("{what}: stalled connection {i} still open after {within:?}");
        }
    }
    Ok(())
}

fn agent_address(cluster: &Cluster) -> anyhow::Result<SocketAddr> {
    Ok(format!("{}:{AGENT_PORT}", cluster.vms[0].address()).parse()?)
}

/// Starts `pcap capture` and waits until vm-0 attached.
fn start_capture(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Running> {
    let mut cli = Running::spawn(&mut cluster.cli(ALICE_TOKEN, args))?;
    cli.wait_for("capturing on", 1)?;
    Ok(cli)
}

#[test]
fn stalled_handshakes_delay_no_capture_and_are_cut() -> anyhow::Result<()> {
    let dir = TempDir::new("slowloris")?;
    let mut cluster = cluster_setup::running(&dir, 1, "", "")?;
    let began = Instant::now();
    let at_agent = stalled_connections(&cluster.control, agent_address(&cluster)?, 200)?;
    let at_api = stalled_connections(&cluster.control, API_ADDRESS.parse()?, 200)?;

    // 400 handshakes hang; a real capture starts regardless, well within
    // the handshake timeout.
    let file = dir.join("s.pcapng");
    let cli = start_capture(&cluster, &["-w", file.to_str().expect("utf-8")])?;
    eprintln!(
        "a capture started {:?} after 400 stalled handshakes were opened",
        began.elapsed()
    );
    ensure!(
        began.elapsed() < HANDSHAKE_TIMEOUT,
        "the capture started only after {:?}, when stalled handshakes had been cut",
        began.elapsed()
    );
    let vm = &cluster.vms[0];
    vm.peer
        .sh(&format!("ping -q -c 5 -i 0.01 {}", vm.data_address()))?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    let capture = pcap_tests::captures::read_file(&file)?;
    ensure!(
        capture.packets.len() >= 10,
        "{} packets",
        capture.packets.len()
    );

    // Both servers cut the stalled connections after the handshake timeout.
    let margin = Duration::from_secs(5);
    assert_closed_by_server(at_agent, began, HANDSHAKE_TIMEOUT + margin, "agent")?;
    assert_closed_by_server(at_api, began, HANDSHAKE_TIMEOUT + margin, "API")?;
    // And the agent said so, naming the peer.
    let agent = cluster.vms[0].agent.as_mut().expect("running");
    agent.wait_for("refused a TLS handshake peer=10.200.0.1", 200)?;
    agent.wait_for("reason=timeout", 200)?;
    Ok(())
}

#[test]
fn refused_handshakes_are_logged_by_the_agent_and_shown_per_origin() -> anyhow::Result<()> {
    let dir = TempDir::new("refusals")?;
    let mut cluster = cluster_setup::with_agents(&dir, 1, "")?;
    let vm_address = agent_address(&cluster)?;

    // Plain-text HTTP/2 and a TLS client without a certificate.
    let curl = |args: &[&str]| -> anyhow::Result<()> {
        let output = cluster
            .control
            .command("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "5"])
            .args(args)
            .output()?;
        ensure!(!output.status.success(), "curl {args:?} got an answer");
        Ok(())
    };
    curl(&[
        "--http2-prior-knowledge",
        &format!("http://{vm_address}/pcap.v1.Agent/Status"),
    ])?;
    let ca = cluster
        .pki
        .ca
        .certificate
        .to_str()
        .expect("utf-8")
        .to_owned();
    curl(&[
        "--http2",
        "--cacert",
        &ca,
        "--resolve",
        &format!("pcap-agent:{AGENT_PORT}:{}", cluster.vms[0].address()),
        &format!("https://pcap-agent:{AGENT_PORT}/pcap.v1.Agent/Status"),
    ])?;
    {
        let agent = cluster.vms[0].agent.as_mut().expect("running");
        agent.wait_for("reason=plain text or not TLS", 1)?;
        agent.wait_for("reason=no client certificate was presented", 1)?;
    }

    // Through the API: the user sees, for vm-0, that its certificate was
    // refused and why; the agent's log says the same with the API's address.
    let other_ca = Ca::new(&dir, "other-ca")?;
    let cases = [
        (
            other_ca.leaf("other", &["pcap-api"], Validity::Current)?,
            "unknown CA",
            "reason=unknown CA",
        ),
        (
            cluster
                .pki
                .ca
                .leaf("expired", &["pcap-api"], Validity::Expired)?,
            "the certificate has expired",
            "reason=the client certificate has expired",
        ),
    ];
    for (leaf, shown, logged) in cases {
        let output = cluster_setup::capture_with_api_certificate(&mut cluster, &leaf)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!(
            "the agent at {vm_address} (vm-0) refused the API's client certificate: {shown}"
        );
        ensure!(
            stderr
                .lines()
                .any(|l| l.contains("vm-0") && l.contains(&expected)),
            "the CLI does not say {expected:?}:\n{stderr}"
        );
        ensure!(!output.status.success(), "exit 0:\n{stderr}");
        let agent = cluster.vms[0].agent.as_mut().expect("running");
        agent.wait_for(logged, 1)?;
        agent.wait_for("refused a TLS handshake peer=10.200.0.1:", 3)?;
        if let Some(api) = cluster.api.take() {
            api.signal(nix::sys::signal::Signal::SIGTERM)?;
            api.wait()?;
        }
    }
    Ok(())
}

#[test]
fn an_agent_whose_api_vanished_detaches_after_keepalive() -> anyhow::Result<()> {
    let dir = TempDir::new("vanish")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let cli = start_capture(&cluster, &["-w", "/dev/null"])?;
    let vm = &cluster.vms[0];
    ensure!(!vm.ns.tcx_programs("eth0")?.is_empty(), "not attached");

    // The API's VM is gone: nothing from it reaches the agent any more, and
    // nothing the agent sends is answered.
    vm.ns.sh("iptables -w -A INPUT -s 10.200.0.1 -j DROP && \
         iptables -w -A OUTPUT -d 10.200.0.1 -j DROP")?;
    let cut = Instant::now();
    wait_until(
        "the agent detaches from eth0",
        KEEPALIVE_DETECTION + Duration::from_secs(10),
        || Ok(vm.ns.tcx_programs("eth0")?.is_empty()),
    )?;
    let detached_after = cut.elapsed();
    eprintln!("the agent detached {detached_after:?} after the API was cut off");
    drop(cli);
    ensure!(
        detached_after >= Duration::from_secs(5),
        "detached after {detached_after:?}: before keepalive could have noticed"
    );
    Ok(())
}

#[test]
fn a_call_that_never_sends_start_ends_after_the_deadline() -> anyhow::Result<()> {
    let dir = TempDir::new("nostart")?;
    let cluster = cluster_setup::with_agents(&dir, 1, "")?;
    let address = format!("https://{}", agent_address(&cluster)?);
    let ca = cluster.pki.ca.certificate.clone();
    let client = cluster.pki.api_client.clone();
    // The API's own certificate, a call opened, and no request ever sent.
    let (code, after) = cluster.control.block_on(async || {
        let tls = client_config(
            Some(&ca),
            Some(&KeyPair {
                certificate: &client.certificate,
                private_key: &client.private_key,
            }),
            Some("pcap-agent"),
        )?;
        let channel = tonic::transport::Endpoint::from_shared(address)?
            .tls_config(tls)?
            .connect()
            .await?;
        let began = Instant::now();
        let mut agent = AgentClient::new(channel);
        let call = agent.capture(tokio_stream::pending::<AgentRequest>());
        let answer = tokio::time::timeout(START_REQUEST_TIMEOUT * 3, call)
            .await
            .context("the agent still waits for start")?;
        let code = answer.err().context("the call was accepted")?.code();
        Ok((code, began.elapsed()))
    })?;
    eprintln!("the agent ended the call with {code:?} after {after:?}");
    ensure!(code == tonic::Code::DeadlineExceeded, "{code:?}");
    ensure!(
        after >= START_REQUEST_TIMEOUT && after < START_REQUEST_TIMEOUT * 2,
        "ended after {after:?}"
    );
    Ok(())
}
