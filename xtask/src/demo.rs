//! `cargo xtask demo`: a container veth on a simulated cell, captured twice
//! at once (readable lines, and demo.pcapng shown through tshark); then three
//! VMs captured at once through agents, the API and the CLI over mutual TLS
//! (demo-merged.pcapng).

use std::process::Command;

use anyhow::Context as _;
use pcap_tests::{
    TempDir,
    cluster::{AGENT_PORT, ALICE_TOKEN, Cluster},
    netns::Netns,
    process::{Running, binary},
};

use crate::{cargo, run_command, workspace_root};

/// Silk names the host side of a container's veth after its overlay IP.
const HOST_VETH: &str = "s-010255077003";
const CONTAINER_IP: &str = "10.255.77.3";

pub fn run() -> anyhow::Result<()> {
    cargo(&["build", "--bins"])?;
    println!("== 1. a Diego cell and an app container in network namespaces");
    let cell = Netns::new("cell")?;
    let container = Netns::new("app")?;
    cell.sh(&format!(
        // Silk's MACs: aa:aa: (host side) and ee:ee: (container side) + the IP's bytes.
        "ip link add {HOST_VETH} address aa:aa:0a:ff:4d:03 type veth \
         peer name eth0 address ee:ee:0a:ff:4d:03 netns {}",
        container.name
    ))?;
    cell.sh(&format!(
        "ip addr add 169.254.0.1 peer {CONTAINER_IP}/32 dev {HOST_VETH} && ip link set {HOST_VETH} up"
    ))?;
    container.sh(&format!(
        "ip addr add {CONTAINER_IP} peer 169.254.0.1/32 dev eth0 && ip link set eth0 up && \
         ip route add default via 169.254.0.1"
    ))?;
    println!("   cell veth {HOST_VETH} <-> container eth0 {CONTAINER_IP}");

    println!("== 2. two captures on {HOST_VETH} at once: lines, and demo.pcapng");
    let agent = binary_path()?;
    let pcapng = workspace_root().join("demo.pcapng");
    let mut lines = Running::spawn(cell.command(&agent).args(["capture", "-i", HOST_VETH]))?;
    let mut file = Running::spawn(
        cell.command(&agent)
            .args(["capture", "-i", HOST_VETH, "-w"])
            .arg(&pcapng),
    )?;
    lines.wait_for("listening on", 1)?;
    file.wait_for("listening on", 1)?;

    container.sh("ping -c 3 -i 0.2 169.254.0.1")?;
    let mut server = Running::spawn(cell.command("python3").args(["-c", SERVER]))?;
    server.wait_for("ready", 1)?;
    container.sh(&format!("python3 -c '{CLIENT}'"))?;
    server.wait()?;

    let (_, stats) = lines.interrupt()?;
    let (_, file_stats) = file.interrupt()?;
    println!("-- the line capture reported:");
    print_stats(&stats);
    println!("-- the file capture reported:");
    print_stats(&file_stats);

    println!("== 3. {} through tshark", pcapng.display());
    run_command(Command::new("tshark").arg("-r").arg(&pcapng).args([
        "-T",
        "fields",
        "-E",
        "header=y",
        "-e",
        "frame.number",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "_ws.col.Info",
    ]))?;
    run_command(Command::new("capinfos").arg(&pcapng))?;
    distributed()
}

/// Three VMs, each running `pcap-agent serve`, one `pcap-api serve`, and
/// `pcap capture` writing one merged file.
fn distributed() -> anyhow::Result<()> {
    println!("== 4. three VMs, each with pcap-agent serve; pcap-api; mutual TLS everywhere");
    let dir = TempDir::new("demo")?;
    let mut cluster = Cluster::new(&dir, 3)?;
    let agent_config = cluster.agent_config("")?;
    cluster.start_agents(&agent_config)?;
    let api_config = cluster.api_config(None, "")?;
    cluster.start_api(&api_config)?;
    for vm in &cluster.vms {
        println!(
            "   {}: agent on {}:{AGENT_PORT}, capturing eth0 {}",
            vm.origin(),
            vm.address(),
            vm.data_address()
        );
    }

    let merged = workspace_root().join("demo-merged.pcapng");
    println!("== 5. pcap capture --target vms -w {}", merged.display());
    let mut cli = Running::spawn(&mut cluster.cli(
        ALICE_TOKEN,
        &["-w", merged.to_str().context("non-UTF-8 path")?, "icmp"],
    ))?;
    cli.wait_for("capturing on", cluster.vms.len())?;
    for vm in &cluster.vms {
        vm.peer
            .sh(&format!("ping -q -c 2 -i 0.2 {}", vm.data_address()))?;
    }
    let (_, lines) = cli.interrupt()?;
    for line in &lines {
        println!("   {line}");
    }

    println!(
        "== 6. {} through tshark: one interface per VM",
        merged.display()
    );
    run_command(Command::new("tshark").arg("-r").arg(&merged).args([
        "-T",
        "fields",
        "-E",
        "header=y",
        "-e",
        "frame.number",
        "-e",
        "frame.time_epoch",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.packet_flags_direction",
        "-e",
        "_ws.col.Info",
    ]))?;
    run_command(Command::new("capinfos").arg(&merged))?;
    Ok(())
}

fn binary_path() -> anyhow::Result<String> {
    binary("pcap-agent")
        .to_str()
        .map(str::to_owned)
        .context("non-UTF-8 target path")
}

fn print_stats(lines: &[String]) {
    for line in lines.iter().filter(|l| !l.contains("listening on")) {
        println!("   {line}");
    }
}

const SERVER: &str = "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('169.254.0.1', 8080)); s.listen(1); print('ready', file=sys.stderr, flush=True)
c, _ = s.accept(); c.recv(4096); c.sendall(b'HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok'); c.close()
";
const CLIENT: &str = "
import socket
c = socket.create_connection((\"169.254.0.1\", 8080)); c.sendall(b\"GET / HTTP/1.1\\r\\nHost: demo\\r\\n\\r\\n\")
while c.recv(4096): pass
";
