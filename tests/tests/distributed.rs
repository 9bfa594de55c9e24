//! Agents, the API and the CLI together: each agent in its own "VM"
//! namespace, real mutual TLS with certificates made for the test, tcpdump on
//! every VM as the reference.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{collections::BTreeMap, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, ensure};
use nix::{libc::SCHED_BATCH, sys::signal::Signal};
use pcap_tests::{
    TempDir,
    captures::{self, Capture, Packet},
    checks::contains_all,
    cluster::{AGENT_PORT, ALICE_TOKEN, BOB_TOKEN, Cluster},
    cluster_setup::{self, assert_agents_detach, ping_every_vm},
    pki::{Ca, Validity},
    process::{self, Running},
    reference::{assert_readable, sync_references, tcpdump},
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";

/// Starts `pcap capture` and waits until every one of `origins` attached.
fn start_cli(
    cluster: &Cluster,
    token: &str,
    args: &[&str],
    origins: usize,
) -> anyhow::Result<Running> {
    let mut cli = Running::spawn(&mut cluster.cli(token, args))?;
    cli.wait_for(STARTED, origins)?;
    Ok(cli)
}

/// A cluster of `vms` VMs with its API in a new directory `tag`, and
/// alice's `pcap capture -w FILE` (a file in that directory), attached on
/// every VM with five pings to each VM captured.
fn capturing_cluster(
    tag: &str,
    vms: usize,
) -> anyhow::Result<(TempDir, Cluster, PathBuf, Running)> {
    let dir = TempDir::new(tag)?;
    let cluster = cluster_setup::running(&dir, vms, "", "")?;
    let file = dir.join("capture.pcapng");
    let cli = start_cli(
        &cluster,
        ALICE_TOKEN,
        &["-w", file.to_str().expect("utf-8")],
        vms,
    )?;
    ping_every_vm(&cluster, 5)?;
    Ok((dir, cluster, file, cli))
}

/// Kills `process` (SIGKILL) and reaps it.
fn kill(process: Running) -> anyhow::Result<()> {
    process.signal(Signal::SIGKILL)?;
    process.wait()?;
    Ok(())
}

/// The packets of `capture` that came from interface `name`, by bytes.
fn packets_of<'a>(capture: &'a Capture, name: &str) -> Vec<&'a Packet> {
    capture
        .packets
        .iter()
        .filter(|p| p.interface.as_deref() == Some(name))
        .collect()
}

#[test]
fn merged_capture_is_the_union_of_the_references() -> anyhow::Result<()> {
    let dir = TempDir::new("merge")?;
    let cluster = cluster_setup::running(&dir, 3, "", "")?;
    // The API relays bulk data: no thread of it preempts on wakeup.
    let api = cluster.api.as_ref().context("the API")?.pid();
    let policies = process::scheduling_policies(api)?;
    ensure!(
        policies.iter().all(|p| *p == SCHED_BATCH as u64),
        "the API's threads run under policies {policies:?}, not SCHED_BATCH ({SCHED_BATCH})"
    );
    let merged = dir.join("merged.pcapng");
    let references: Vec<_> = cluster
        .vms
        .iter()
        .map(|vm| dir.join(format!("ref-{}.pcap", vm.index)))
        .collect();
    let mut tcpdumps = Vec::new();
    for (vm, file) in cluster.vms.iter().zip(&references) {
        tcpdumps.push(tcpdump(&vm.ns, "eth0", "inout", file)?);
    }
    let cli = start_cli(
        &cluster,
        ALICE_TOKEN,
        &["-w", merged.to_str().expect("utf-8")],
        3,
    )?;
    ping_every_vm(&cluster, 20)?;
    for (vm, file) in cluster.vms.iter().zip(&references) {
        sync_references(&vm.peer, &vm.data_address(), &[file.as_path()])?;
    }
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    for tcpdump in tcpdumps {
        tcpdump.interrupt()?;
    }

    assert_readable(&merged)?;
    let ours = captures::read_file(&merged)?;
    ensure!(
        ours.packets
            .windows(2)
            .all(|w| w[0].unix_ns <= w[1].unix_ns),
        "the merged file is not in time order"
    );
    let mut total = 0;
    for (vm, file) in cluster.vms.iter().zip(&references) {
        let reference = captures::read_file(file)?;
        let name = format!("{}/eth0", vm.origin());
        let mine = packets_of(&ours, &name);
        // Both captures run longer than the traffic; compare the packets as
        // multisets of bytes (tcpdump and TC see a packet's two directions
        // in slightly different orders).
        let count = |packets: &mut dyn Iterator<Item = &Packet>| {
            let mut counts = BTreeMap::<(Vec<u8>, u32), usize>::new();
            for p in packets {
                *counts.entry((p.data.clone(), p.orig_len)).or_default() += 1;
            }
            counts
        };
        let mine_counts = count(&mut mine.iter().copied());
        let reference_counts = count(&mut reference.packets.iter());
        ensure!(
            mine_counts == reference_counts,
            "{name}: {} packets, tcpdump {}; differing: {:?}",
            mine.len(),
            reference.packets.len(),
            mine_counts
                .iter()
                .filter(|(k, v)| reference_counts.get(*k) != Some(v))
                .map(|((data, _), v)| (data.len(), *v))
                .collect::<Vec<_>>()
        );
        ensure!(mine.len() >= 40, "{name}: only {} packets", mine.len());
        total += mine.len();
    }
    ensure!(
        total == ours.packets.len(),
        "packets from unknown interfaces: {} in the file, {total} from the VMs",
        ours.packets.len()
    );
    // One statistics block per origin interface, accounting for every packet.
    ensure!(
        ours.statistics.len() == 3,
        "statistics: {:?}",
        ours.statistics
    );
    for stats in &ours.statistics {
        let name = stats.interface.clone().unwrap_or_default();
        ensure!(
            stats.user_delivered == Some(packets_of(&ours, &name).len() as u64),
            "{name}: {stats:?}"
        );
    }
    Ok(())
}

#[test]
fn agents_reject_bad_client_certificates_and_the_api_reports_it() -> anyhow::Result<()> {
    let dir = TempDir::new("mtls")?;
    let mut cluster = cluster_setup::with_agents(&dir, 1, "")?;
    let vm_address = format!("{}:{AGENT_PORT}", cluster.vms[0].address());

    // No client certificate: the handshake fails. The same request with the
    // API's certificate gets through TLS, so the certificate is the reason.
    let curl = |with_cert: bool| -> anyhow::Result<std::process::Output> {
        let mut command = cluster.curl(with_cert);
        command
            .args(["-sS", "--http2", "-o", "/dev/null"])
            .args([
                "--resolve",
                &format!("pcap-agent:{AGENT_PORT}:{}", cluster.vms[0].address()),
            ])
            .args(["-X", "POST", "-H", "content-type: application/grpc"])
            .arg(format!(
                "https://pcap-agent:{AGENT_PORT}/pcap.v1.Agent/Status"
            ));
        Ok(command.output()?)
    };
    let without = curl(false)?;
    ensure!(
        !without.status.success(),
        "an agent answered a client without a certificate"
    );
    let with = curl(true)?;
    ensure!(
        with.status.success(),
        "the API's own certificate was refused: {}",
        String::from_utf8_lossy(&with.stderr)
    );

    // Through the API: another CA, the wrong name, an expired certificate.
    let other_ca = Ca::new(&dir, "other-ca")?;
    let cases = [
        (
            "another CA",
            other_ca.leaf("other", &["pcap-api"], Validity::Current)?,
        ),
        (
            "the wrong name",
            cluster
                .pki
                .ca
                .leaf("wrong-name", &["not-the-api"], Validity::Current)?,
        ),
        (
            "an expired certificate",
            cluster
                .pki
                .ca
                .leaf("expired", &["pcap-api"], Validity::Expired)?,
        ),
    ];
    for (case, leaf) in cases {
        let output = cluster_setup::capture_with_api_certificate(&mut cluster, &leaf)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            stderr.contains("vm-0") && stderr.contains(&vm_address),
            "{case}: the CLI does not name the refusing agent:\n{stderr}"
        );
        ensure!(
            !output.status.success(),
            "{case}: a capture where every agent refused exits 0:\n{stderr}"
        );
        ensure!(
            cluster.vms[0].ns.tcx_programs("eth0")?.is_empty(),
            "{case}: the agent attached"
        );
        if let Some(api) = cluster.api.take() {
            api.signal(Signal::SIGTERM)?;
            api.wait()?;
        }
    }
    Ok(())
}

/// The CLI makes its own TLS connection to the API (over a buffered
/// socket): it must trust `--ca` alone and say what is wrong with it.
#[test]
fn the_cli_trusts_only_its_ca_says_what_is_wrong_and_leaves_the_file_alone() -> anyhow::Result<()> {
    let dir = TempDir::new("cli-ca")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let other_ca = Ca::new(&dir, "other-ca")?;
    let not_pem = dir.join("not-a-certificate.txt");
    std::fs::write(&not_pem, "hello\n")?;
    let cases = [
        (
            &other_ca.certificate,
            "invalid peer certificate: UnknownIssuer",
        ),
        (&not_pem, "holds no PEM certificate"),
    ];
    // Like tcpdump with a device it cannot open, a capture that cannot
    // start leaves the file of the last one as it was.
    let file = dir.join("last.pcapng");
    std::fs::write(&file, "the last capture")?;
    for (ca, reason) in cases {
        let output = cluster
            .cli_trusting(ca, ALICE_TOKEN, &["-w", file.to_str().context("utf-8")?])
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "{}: {stderr}", ca.display());
        contains_all(
            &stderr,
            &[
                "cannot reach the API",
                reason,
                "check --ca, or use --insecure",
            ],
        )?;
        ensure!(
            std::fs::read(&file)? == b"the last capture",
            "{} was overwritten",
            file.display()
        );
    }
    // A path it cannot create: the error names it, and nothing starts.
    let output = cluster
        .cli(ALICE_TOKEN, &["-w", "/no-such-directory/capture.pcapng"])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "{stderr}");
    contains_all(
        &stderr,
        &["cannot create /no-such-directory/capture.pcapng"],
    )?;
    ensure!(!stderr.contains("capturing on"), "{stderr}");
    Ok(())
}

#[test]
fn a_killed_agent_is_reported_and_the_others_go_on() -> anyhow::Result<()> {
    let (_dir, mut cluster, file, cli) = capturing_cluster("kagent", 3)?;
    kill(cluster.vms[1].agent.take().expect("running"))?;
    // The survivors keep capturing. (Each ping has had its reply before
    // `ping` exits, so both have passed the TC hooks.)
    ping_every_vm(&cluster, 5)?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("vm-1") && (l.contains("unavailable") || l.contains("lost"))),
        "vm-1's loss is not reported: {lines:#?}"
    );
    assert_readable(&file)?;
    let capture = captures::read_file(&file)?;
    for name in ["vm-0/eth0", "vm-2/eth0"] {
        ensure!(
            packets_of(&capture, name).len() >= 20,
            "{name}: {} packets",
            packets_of(&capture, name).len()
        );
    }
    ensure!(!packets_of(&capture, "vm-1/eth0").is_empty());
    Ok(())
}

#[test]
fn restarting_the_api_ends_the_cli_with_a_clear_error_and_a_valid_file() -> anyhow::Result<()> {
    let (_dir, mut cluster, file, cli) = capturing_cluster("rapi", 2)?;
    kill(cluster.api.take().expect("running"))?;
    let (status, lines) = cli.wait()?;
    ensure!(!status.success(), "pcap exits 0 after losing the API");
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("connection to the API lost")),
        "no clear error: {lines:#?}"
    );
    assert_readable(&file)?;
    // The agents notice the broken stream and detach.
    assert_agents_detach(&cluster, Duration::from_secs(5))?;
    // The API starts again and serves.
    let config = cluster.api_config(None, "")?;
    cluster.start_api(&config)?;
    let again = start_cli(&cluster, ALICE_TOKEN, &["-w", "/dev/null"], 2)?;
    let (status, lines) = again.interrupt()?;
    ensure!(status.success(), "{lines:#?}");
    Ok(())
}

#[test]
fn a_disconnected_client_stops_every_agent_within_a_second() -> anyhow::Result<()> {
    let dir = TempDir::new("disc")?;
    let cluster = cluster_setup::running(&dir, 3, "", "")?;
    let cli = start_cli(&cluster, ALICE_TOKEN, &["-w", "/dev/null"], 3)?;
    for vm in &cluster.vms {
        ensure!(
            !vm.ns.tcx_programs("eth0")?.is_empty(),
            "{} not attached",
            vm.origin()
        );
    }
    kill(cli)?;
    assert_agents_detach(&cluster, Duration::from_secs(1))
}

#[test]
fn duration_bytes_and_concurrency_limits_are_hit_and_reported() -> anyhow::Result<()> {
    let dir = TempDir::new("lim")?;
    let cluster = cluster_setup::running(
        &dir,
        2,
        "",
        "[limits]\nmax_captures_per_user = 1\nmax_duration = 1.0\n",
    )?;
    // Duration: the operator's 1 s cap ends a capture that asked for none.
    let output = cluster.cli(ALICE_TOKEN, &["-w", "/dev/null"]).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "{stderr}");
    ensure!(stderr.contains("limit reached"), "duration: {stderr}");

    // Bytes: the capture stops once 20000 bytes of packets have arrived.
    let file = dir.join("bytes.pcapng");
    let cli = start_cli(
        &cluster,
        ALICE_TOKEN,
        &["--max-bytes", "20000", "-w", file.to_str().expect("utf-8")],
        2,
    )?;
    ping_every_vm(&cluster, 100)?;
    let (status, lines) = cli.wait()?;
    ensure!(status.success(), "{lines:#?}");
    ensure!(
        lines.iter().any(|l| l.contains("limit reached")),
        "bytes: {lines:#?}"
    );
    let capture = captures::read_file(&file)?;
    let bytes: usize = capture.packets.iter().map(|p| p.data.len()).sum();
    ensure!(
        (20000 - 1500..20000 + 1500).contains(&bytes),
        "{bytes} bytes captured for a 20000-byte limit"
    );

    // Concurrency: alice may run one capture at a time; bob is not affected.
    let first = start_cli(
        &cluster,
        ALICE_TOKEN,
        &["-w", "/dev/null", "--duration", "30"],
        2,
    )?;
    let second = cluster.cli(ALICE_TOKEN, &["-w", "/dev/null"]).output()?;
    let stderr = String::from_utf8_lossy(&second.stderr);
    ensure!(
        !second.status.success(),
        "a second capture started: {stderr}"
    );
    ensure!(
        stderr.contains("RESOURCE_EXHAUSTED") || stderr.contains("limit"),
        "{stderr}"
    );
    let bob = start_cli(&cluster, BOB_TOKEN, &["-w", "/dev/null"], 2)?;
    bob.interrupt()?;
    first.interrupt()?;
    Ok(())
}

#[test]
fn a_throttled_client_makes_agents_count_drops() -> anyhow::Result<()> {
    const OFFERED: u64 = 20_000;
    let dir = TempDir::new("slow")?;
    let cluster = cluster_setup::running(&dir, 1, "[limits]\nsend_buffer_bytes = 65536\n", "")?;
    let vm = &cluster.vms[0];
    // The CLI writes into a pipe that nobody reads until the flood is over.
    let mut cli = Running::spawn(
        cluster
            .cli(ALICE_TOKEN, &["-w", "-", "udp port 9999"])
            .stdout(Stdio::piped()),
    )?;
    cli.wait_for(STARTED, 1)?;
    let stdout = cli.take_stdout().context("stdout")?;
    vm.peer.sh(&format!(
        "python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range({OFFERED}): s.sendto(b\"z\" * 400, (\"{}\", 9999))'",
        vm.data_address()
    ))?;
    // Now read everything, and stop.
    let reader = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut { stdout }, &mut bytes)?;
        Ok(bytes)
    });
    let file = dir.join("slow.pcapng");
    let (status, lines) = cli.interrupt()?;
    let bytes = reader.join().expect("reader")?;
    std::fs::write(&file, &bytes)?;
    ensure!(status.success(), "{lines:#?}");
    assert_readable(&file)?;
    let capture = captures::read_file(&file)?;
    let stats = capture.statistics.first().context("no statistics block")?;
    let captured = capture.packets.len() as u64;
    let dropped = stats.os_dropped.unwrap_or(0) + stats.if_dropped.unwrap_or(0);
    ensure!(dropped > 0, "no drops reported: {stats:?}, {lines:#?}");
    // Offered to the capture: what matched the filter in the kernel.
    ensure!(
        stats.filter_accept == Some(OFFERED),
        "the kernel matched {:?} of {OFFERED} datagrams",
        stats.filter_accept
    );
    ensure!(
        captured + dropped == OFFERED,
        "captured {captured} + dropped {dropped} != offered {OFFERED}: {stats:?}"
    );
    ensure!(
        lines.iter().any(|l| l.contains("dropped")),
        "the user is not told: {lines:#?}"
    );
    Ok(())
}

/// Commands used above that a missing tool would otherwise fail obscurely.
#[test]
fn reference_tools_are_installed() -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["curl", "tcpdump", "tshark", "capinfos"] {
        ensure!(
            std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()),
            "{tool} is missing: run `cargo xtask setup`"
        );
    }
    Ok(())
}
