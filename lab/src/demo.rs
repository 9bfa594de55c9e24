//! `cargo xtask demo`: a simulated Diego landscape (two cells with silk's
//! VXLAN overlay and VXLAN-policy-agent rules, appA on one, appB on the
//! other, an agent per cell, pcap-api with test UAA and Cloud Controller
//! servers), c2c traffic allowed and denied by policy, captured with
//! `pcap app appB` (readable lines, and demo.pcapng shown through tshark)
//! while the operator captures `silk-vtep` on the cell (demo-vtep.pcapng),
//! with the kernel's policy verdicts; then three VMs captured at once
//! through agents, the API and the CLI over mutual TLS (demo-merged.pcapng).

use std::{path::Path, process::Command};

use anyhow::Context as _;
use pcap_tests::{
    TempDir,
    cluster::{AGENT_PORT, ALICE_TOKEN},
    cluster_setup,
    landscape::{AppSpec, Landscape, VPA_CHAIN, write_cf_config},
    netns,
    process::{Running, binary},
    servers::uaa::UaaUser,
    stand_ins::{CF_SCOPES, CfServers, space_role},
};

use crate::{cargo, run_command, workspace_root};

/// The demo's Cloud Controller and UAA, and the developer's cf home.
struct DemoCf {
    _servers: CfServers,
    home: std::path::PathBuf,
}

pub(crate) fn run() -> anyhow::Result<()> {
    cargo(&["build", "--bins"])?;
    println!(
        "== 1. a Diego landscape in network namespaces: two cells, silk-vtep, appA -> appB:8080 allowed"
    );
    let dir = TempDir::new("demo-cf")?;
    let mut landscape = Landscape::builder()
        .cells(2)
        .app(AppSpec::new("appA", &[0]))
        .app(AppSpec::new("appB", &[1]))
        .policy("appA", "appB", 8080)
        .build(&dir)?;
    describe(&landscape)?;

    println!("== 2. an agent per cell, pcap-api with Cloud Controller and UAA; user dev logged in");
    let cf = cf_servers(&mut landscape, &dir)?;
    let b = &landscape.app("appB").instances[0];
    let a = &landscape.app("appA").instances[0];
    let cell = &landscape.cells[b.cell];

    let pcapng = workspace_root().join("demo.pcapng");
    let vtep_file = workspace_root().join("demo-vtep.pcapng");
    println!(
        "== 3. pcap app appB (lines), pcap app appB -w {}, and the operator on {}: silk-vtep -> {}",
        pcapng.display(),
        cell.origin(),
        vtep_file.display()
    );
    let app_cli = |args: &[&str]| {
        let mut command = landscape.pcap_app(&cf.home);
        command.env("HOME", &cf.home).arg("appB").args(args);
        command
    };
    let mut lines = Running::spawn(&mut app_cli(&[]))?;
    let mut file = Running::spawn(&mut app_cli(&["-w", utf8(&pcapng)?]))?;
    let store = cell.metadata_store();
    let mut vtep = Running::spawn(
        cell.ns
            .command(&binary_path()?)
            .args(["capture", "--c2c", "-i", "silk-vtep"])
            .args(["--container-metadata-store", utf8(&store)?, "-w"])
            .arg(&vtep_file),
    )?;
    lines.wait_for("capturing on", 1)?;
    file.wait_for("capturing on", 1)?;
    vtep.wait_for("listening on", 1)?;

    let log = netns::KernelLog::mark()?;
    let mut server = Running::spawn(b.ns.command("python3").args(["-c", SERVER]))?;
    server.wait_for("ready", 1)?;
    let client =
        a.ns.sh(&format!("python3 -c '{CLIENT}' {}", b.overlay_ip))?;
    server.wait()?;
    for line in client.lines() {
        println!("   appA: {line}");
    }

    let (_, stats) = lines.interrupt()?;
    let (_, file_stats) = file.interrupt()?;
    let (_, vtep_stats) = vtep.interrupt()?;
    println!("-- pcap app appB reported:");
    print_stats(&stats);
    println!("-- pcap app appB -w reported:");
    print_stats(&file_stats);
    println!("-- the operator's silk-vtep capture reported:");
    print_stats(&vtep_stats);
    println!(
        "-- the kernel's c2c verdicts (iptables LOG on {}):",
        cell.origin()
    );
    for line in log
        .new_lines()?
        .iter()
        .filter(|l| l.contains("OK_") || l.contains("DENY_C2C_"))
    {
        println!("   {line}");
    }

    println!(
        "== 4. {} through tshark: directions are appB's (OUTBOUND = sent by appB)",
        pcapng.display()
    );
    tshark(&pcapng)?;
    run_command(Command::new("capinfos").arg(&pcapng))?;
    println!(
        "== 5. {} (pcap-agent capture --c2c) through tshark: source app and verdict per packet, app names for overlay IPs",
        vtep_file.display()
    );
    tshark_c2c(&vtep_file)?;
    drop(cf);
    drop(landscape);
    distributed()
}

fn describe(landscape: &Landscape) -> anyhow::Result<()> {
    for app in &landscape.apps {
        for instance in &app.instances {
            let cell = &landscape.cells[instance.cell];
            println!(
                "   {}/{} (app {}, instance {}): {} behind {} on {} (underlay {}, silk-vtep {})",
                app.name,
                instance.index,
                app.guid,
                instance.instance_guid,
                instance.overlay_ip,
                instance.host_interface(),
                cell.origin(),
                cell.underlay_ip(),
                cell.overlay_base()
            );
        }
    }
    let cell = &landscape.cells[landscape.app("appB").instances[0].cell];
    println!("-- the VXLAN policy agent's chain on {}:", cell.origin());
    for line in cell.ns.sh(&format!("iptables -S {VPA_CHAIN}"))?.lines() {
        println!("   {line}");
    }
    Ok(())
}

/// UAA and Cloud Controller in the control namespace (dev is a space
/// developer of the apps' space), agents on the cells, pcap-api with its
/// Cloud Foundry resolver, and dev's `~/.cf/config.json`.
fn cf_servers(landscape: &mut Landscape, dir: &Path) -> anyhow::Result<DemoCf> {
    let users = vec![UaaUser::new("dev", "p", &CF_SCOPES)];
    let roles = vec![space_role("space_developer", "dev", "dev")];
    let servers = CfServers::start(
        landscape,
        &CfServers::leaf(landscape)?,
        dir,
        users,
        landscape.cc_apps(),
        roles,
    )?;
    // dev runs two captures of appB at once (lines, and -w), both on its
    // cell's agent: one more than the default per-user, per-agent limit.
    servers.start_agents_and_api(landscape, "\n[limits]\nmax_captures_per_user_per_agent = 2")?;

    let home = dir.join("home-dev");
    write_cf_config(
        &home,
        &servers.cc_url,
        &servers.uaa_url,
        &servers.uaa.access_token("dev", "cf", 3600)?,
        &servers.uaa.refresh_token("dev", "cf")?,
    )?;
    Ok(DemoCf {
        _servers: servers,
        home,
    })
}

fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 path")
}

/// The c2c columns: names from the file's name-resolution blocks, and each
/// packet's comment (tag, source app, verdict).
fn tshark_c2c(file: &Path) -> anyhow::Result<()> {
    let fields = "frame.number ip.src_host ip.dst_host tcp.dstport frame.comment";
    tshark_fields(file, &["-N", "n"], fields)
}

fn tshark(file: &Path) -> anyhow::Result<()> {
    let fields = "frame.number frame.time_epoch frame.interface_name \
                  frame.packet_flags_direction _ws.col.Info";
    tshark_fields(file, &[], fields)
}

/// `tshark -r FILE OPTIONS -T fields -E header=y -e FIELD...` for the
/// space-separated `fields`.
fn tshark_fields(file: &Path, options: &[&str], fields: &str) -> anyhow::Result<()> {
    let mut command = Command::new("tshark");
    command
        .arg("-r")
        .arg(file)
        .args(options)
        .args(["-T", "fields", "-E", "header=y"]);
    for field in fields.split_whitespace() {
        command.args(["-e", field]);
    }
    run_command(&mut command)
}

/// Three VMs, each running `pcap-agent serve`, one `pcap-api serve`, and
/// `pcap capture` writing one merged file.
fn distributed() -> anyhow::Result<()> {
    println!("== 6. three VMs, each with pcap-agent serve; pcap-api; mutual TLS everywhere");
    let dir = TempDir::new("demo")?;
    let cluster = cluster_setup::running(&dir, 3, "", "")?;
    for vm in &cluster.vms {
        println!(
            "   {}: agent on {}:{AGENT_PORT}, capturing eth0 {}",
            vm.origin(),
            vm.address(),
            vm.data_address()
        );
    }

    let merged = workspace_root().join("demo-merged.pcapng");
    println!("== 7. pcap capture --target vms -w {}", merged.display());
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
        "== 8. {} through tshark: one interface per VM",
        merged.display()
    );
    tshark(&merged)?;
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

/// appB's web server: one request on 8080, then exits.
const SERVER: &str = "
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080)); s.listen(1); print('ready', file=sys.stderr, flush=True)
c, _ = s.accept(); c.recv(4096); c.sendall(b'HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nok'); c.close()
";
/// appA: a request to appB on 8080 (allowed), then a connection to 9090 (no
/// policy: rejected on appB's cell).
const CLIENT: &str = "
import socket, sys
c = socket.create_connection((sys.argv[1], 8080)); c.sendall(b\"GET / HTTP/1.1\\r\\nHost: appB\\r\\n\\r\\n\")
print(\"8080:\", c.recv(4096).split(b\"\\r\\n\")[0].decode())
while c.recv(4096): pass
try:
    socket.create_connection((sys.argv[1], 9090), timeout=5); print(\"9090: connected?!\")
except ConnectionRefusedError:
    print(\"9090: refused (no policy)\")
";
