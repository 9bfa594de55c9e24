//! `pcap-agent capture --c2c` on the destination cell's `silk-vtep`: each
//! packet's pcapng comment carries the policy tag, the source app GUID and
//! the kernel's LOG verdict, and name resolution blocks name overlay IPs.

use std::{net::Ipv4Addr, process::Command};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir,
    landscape::{AppSpec, Landscape},
    netns::Netns,
    process::{Running, binary},
};

/// A TCP server on 8080 that greets and closes; ready once it says so.
fn serve(ns: &Netns) -> anyhow::Result<Running> {
    let script = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen()
print("ready", file=sys.stderr, flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hello\n"); c.close()
"#;
    let mut server = Running::spawn(ns.command("python3").args(["-c", script]))?;
    server.wait_for("ready", 1)?;
    Ok(server)
}

/// Connects from `ns` to `ip:port` with source port `sport`: `Ok(true)`
/// when the greeting arrived, `Ok(false)` when refused.
fn connect(ns: &Netns, ip: Ipv4Addr, port: u16, sport: u16) -> anyhow::Result<bool> {
    let out = ns.sh(&format!(
        "python3 -c '
import socket
s = socket.socket(); s.settimeout(5); s.bind((\"0.0.0.0\", {sport}))
try:
    s.connect((\"{ip}\", {port})); print(s.recv(100).decode().strip())
except ConnectionRefusedError:
    print(\"refused\")
s.close()'"
    ))?;
    match out.trim() {
        "hello" => Ok(true),
        "refused" => Ok(false),
        other => anyhow::bail!("unexpected client output {other:?}"),
    }
}

fn tshark(args: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .context("running tshark")?;
    ensure!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect())
}

#[test]
fn c2c_capture_on_silk_vtep_shows_tag_source_verdict_and_names() -> anyhow::Result<()> {
    let dir = TempDir::new("c2c-insight")?;
    let landscape = Landscape::builder()
        .cells(2)
        .app(AppSpec::new("appA", &[0]))
        .app(AppSpec::new("appB", &[1]))
        .policy("appA", "appB", 8080)
        .build(&dir)?;
    let a = &landscape.app("appA").instances[0];
    let b = &landscape.app("appB").instances[0];
    let _server = serve(&b.ns)?;

    let file = dir.join("c2c.pcapng");
    let underlay_file = dir.join("underlay.pcapng");
    let store = landscape.cells[1].metadata_store();
    let agent = |args: &[&str]| -> anyhow::Result<Running> {
        let mut command = landscape.cells[1]
            .ns
            .command(binary("pcap-agent").to_str().context("utf-8 path")?);
        command.arg("capture").arg("--c2c").args(args);
        let mut running = Running::spawn(&mut command)?;
        running.wait_for("listening on", 1)?;
        Ok(running)
    };
    let vtep = agent(&[
        "-i",
        "silk-vtep",
        "--container-metadata-store",
        store.to_str().context("utf-8 path")?,
        "-w",
        file.to_str().context("utf-8 path")?,
        "tcp",
    ])?;
    // The underlay capture also knows app names, as an operator's saved
    // `cf curl /v3/apps` gives them.
    let apps = dir.join("apps.json");
    std::fs::write(
        &apps,
        format!(
            r#"{{"pagination":{{"total_results":2}},"resources":[{{"guid":"{}","name":"appA"}},{{"guid":"{}","name":"appB"}}]}}"#,
            landscape.app("appA").guid,
            landscape.app("appB").guid
        ),
    )?;
    let underlay = agent(&[
        "-i",
        "eth0",
        "--cf-apps",
        apps.to_str().context("utf-8 path")?,
        "-w",
        underlay_file.to_str().context("utf-8 path")?,
        "udp port 4789",
    ])?;

    ensure!(
        connect(&a.ns, b.overlay_ip, 8080, 40001)?,
        "policy allows 8080"
    );
    ensure!(
        !connect(&a.ns, b.overlay_ip, 9090, 40002)?,
        "no policy for 9090"
    );
    for agent in [vtep, underlay] {
        let (status, stderr) = agent.interrupt()?;
        ensure!(status.success(), "agent failed: {stderr:#?}");
    }
    check_file(&landscape, file.to_str().context("utf-8 path")?)?;
    check_underlay(&landscape, underlay_file.to_str().context("utf-8 path")?)
}

/// On the underlay the tag comes from the VXLAN GBP header, and the inner
/// 5-tuple joins the verdict; the source app is named from `--cf-apps`.
fn check_underlay(landscape: &Landscape, file: &str) -> anyhow::Result<()> {
    let a_ip = landscape.app("appA").instances[0].overlay_ip.to_string();
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let expected = format!(
        "c2c: tag {tag:#06x} src app appA ({})",
        landscape.app("appA").guid
    );
    // ip.src lists the outer, then the inner source.
    let rows = tshark(&[
        "-r",
        file,
        "-Y",
        "vxlan && tcp",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.flags.syn",
        "-e",
        "frame.comment",
    ])?;
    let from_a = |dport: &str| {
        rows.iter()
            .filter(|r| r.len() >= 4 && r[0].ends_with(&a_ip) && r[1] == dport)
            .collect::<Vec<_>>()
    };
    let allowed = from_a("8080");
    ensure!(
        !allowed.is_empty(),
        "no appA → appB:8080 packets in {rows:#?}"
    );
    for row in &allowed {
        ensure!(row[3].contains(&expected), "{row:?} lacks {expected}");
    }
    let ok = format!("verdict OK_{tag:04X} (allowed by policy)");
    ensure!(
        allowed.iter().any(|r| r[2] == "1" && r[3].contains(&ok)),
        "no allowed SYN with {ok} in {allowed:#?}"
    );
    ensure!(
        from_a("9090")
            .iter()
            .any(|r| r[2] == "1" && r[3].contains("verdict DENY_C2C (denied: no policy)")),
        "no denied SYN in {rows:#?}"
    );
    Ok(())
}

/// The comments and names in the capture of appA → appB:8080 (allowed) and
/// appA → appB:9090 (denied).
fn check_file(landscape: &Landscape, file: &str) -> anyhow::Result<()> {
    let a = &landscape.app("appA").instances[0];
    let b = &landscape.app("appB").instances[0];
    let a_guid = &landscape.app("appA").guid;
    let b_guid = &landscape.app("appB").guid;
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let rows = tshark(&[
        "-r",
        file,
        "-Y",
        "tcp",
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "tcp.srcport",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.flags.syn",
        "-e",
        "frame.comment",
    ])?;
    let (a_ip, b_ip) = (a.overlay_ip.to_string(), b.overlay_ip.to_string());
    let from_a = |dport: &str| {
        rows.iter()
            .filter(|r| r.len() >= 6 && r[0] == a_ip && r[1] == b_ip && r[3] == dport)
            .collect::<Vec<_>>()
    };
    let allowed = from_a("8080");
    ensure!(
        !allowed.is_empty(),
        "no appA → appB:8080 packets in {rows:#?}"
    );
    let expected = format!("c2c: tag {tag:#06x} src app {a_guid}");
    for row in &allowed {
        ensure!(row[5].contains(&expected), "{row:?} lacks {expected}");
    }
    let ok = format!("verdict OK_{tag:04X} (allowed by policy)");
    let syn = allowed
        .iter()
        .find(|r| r[4] == "1")
        .context("the allowed SYN")?;
    ensure!(syn[5].contains(&ok), "{syn:?} lacks {ok}");

    let denied = from_a("9090");
    let syn = denied
        .iter()
        .find(|r| r[4] == "1")
        .with_context(|| format!("no denied SYN in {rows:#?}"))?;
    ensure!(
        syn[5].contains(&expected) && syn[5].contains("verdict DENY_C2C (denied: no policy)"),
        "{syn:?}"
    );

    // Wireshark names the overlay IPs from the name resolution blocks.
    let names = tshark(&[
        "-r",
        file,
        "-N",
        "n",
        "-T",
        "fields",
        "-e",
        "ip.src_host",
        "-e",
        "ip.dst_host",
    ])?;
    ensure!(
        names
            .iter()
            .any(|r| r.first() == Some(a_guid) && r.get(1) == Some(b_guid)),
        "names {names:#?}"
    );
    Ok(())
}
