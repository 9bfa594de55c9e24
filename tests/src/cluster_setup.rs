//! Clusters (see [`crate::cluster`]) started the ways the system tests
//! start them, traffic on their VMs, and checks of what stays attached.

use std::{path::Path, process::Command, time::Duration};

use anyhow::ensure;

use crate::{
    cluster::{ALICE_TOKEN, Cluster},
    pki::Leaf,
    process::{Running, wait_until},
    reference::{sync_references, tcpdump},
};

/// A cluster of `vms` VMs, each running an agent configured with
/// `agent_extra`.
pub fn with_agents(dir: &Path, vms: usize, agent_extra: &str) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::new(dir, vms)?;
    let agent_config = cluster.agent_config(agent_extra)?;
    cluster.start_agents(&agent_config)?;
    Ok(cluster)
}

/// [`with_agents`], and the API in front of them, configured with
/// `api_extra` (no TLS of its own for the agents).
pub fn running(
    dir: &Path,
    vms: usize,
    agent_extra: &str,
    api_extra: &str,
) -> anyhow::Result<Cluster> {
    let mut cluster = with_agents(dir, vms, agent_extra)?;
    let api_config = cluster.api_config(None, api_extra)?;
    cluster.start_api(&api_config)?;
    Ok(cluster)
}

/// Starts the API with `leaf` as its client certificate towards the
/// agents, and runs alice's five-second `pcap capture -w /dev/null`
/// through it; the CLI's output.
pub fn capture_with_api_certificate(
    cluster: &mut Cluster,
    leaf: &Leaf,
) -> anyhow::Result<std::process::Output> {
    let api_config = cluster.api_config(Some(leaf), "")?;
    cluster.start_api(&api_config)?;
    Ok(cluster
        .cli(ALICE_TOKEN, &["-w", "/dev/null", "--duration", "5"])
        .output()?)
}

/// Runs `cli` (a `pcap capture` of [`Cluster::cli`]) beside tcpdump on the
/// first VM's `eth0` (`-Q direction`, written to `reference`): starts
/// tcpdump, then the CLI until the VM attached, runs `traffic`, waits until
/// tcpdump holds everything so far, and stops both; the CLI must succeed.
pub fn beside_tcpdump(
    cluster: &Cluster,
    direction: &str,
    reference: &Path,
    cli: &mut Command,
    traffic: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let vm = &cluster.vms[0];
    let tcpdump = tcpdump(&vm.ns, "eth0", direction, reference)?;
    let mut cli = Running::spawn(cli)?;
    cli.wait_for("capturing on", 1)?;
    traffic()?;
    sync_references(&vm.peer, &vm.data_address(), &[reference])?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    tcpdump.interrupt()?;
    Ok(())
}

/// Pings each VM `count` times from its peer with a size of its own
/// (64 + 100 × its index), so that every VM's traffic is distinct.
pub fn ping_every_vm(cluster: &Cluster, count: u32) -> anyhow::Result<()> {
    for vm in &cluster.vms {
        vm.peer.sh(&format!(
            "ping -q -c {count} -i 0.002 -s {} {}",
            64 + 100 * vm.index,
            vm.data_address()
        ))?;
    }
    Ok(())
}

/// No VM has anything of ours attached to `eth0`.
pub fn assert_nothing_attached(cluster: &Cluster) -> anyhow::Result<()> {
    for vm in &cluster.vms {
        let programs = vm.ns.tcx_programs("eth0")?;
        ensure!(
            programs.is_empty(),
            "{} has {programs:?} attached",
            vm.origin()
        );
    }
    Ok(())
}

/// Nothing of ours stays attached to any VM's `eth0`, within `timeout`.
pub fn assert_agents_detach(cluster: &Cluster, timeout: Duration) -> anyhow::Result<()> {
    for vm in &cluster.vms {
        wait_until(
            &format!("{} detaches from eth0", vm.origin()),
            timeout,
            || Ok(vm.ns.tcx_programs("eth0")?.is_empty()),
        )?;
    }
    Ok(())
}
