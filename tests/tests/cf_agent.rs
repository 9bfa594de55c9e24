//! The simulated Diego landscape, and the agent's container captures on it:
//! c2c traffic across `silk-vtep` allowed and denied by VXLAN-policy-agent
//! rules, and captures pinned to one container's host-side veth, driven
//! through a direct gRPC client with the API's client certificate and
//! compared with tcpdump on the same veth.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::net::Ipv4Addr;

use anyhow::{Context as _, ensure};
use pcap_proto::{
    COMPATIBILITY_LEVEL,
    tls::{KeyPair, client_config},
    v1::{
        AgentStart, CaptureOptions, CaptureResponse, ContainerScope, Direction,
        capture_response::Payload,
    },
};
use pcap_tests::{
    TempDir,
    agent_call::AgentCall,
    c2c_traffic::{allowed_and_denied, connect, serve},
    captures::{self, Packet},
    landscape::{AppSpec, Landscape},
    netns::KernelLog,
    reference::{sync_references, tcpdump},
};
use tonic::{Code, transport::Endpoint};

/// appA on cell 0, appB and appC on cell 1; appA may reach appB on 8080.
fn landscape(dir: &TempDir) -> anyhow::Result<Landscape> {
    Landscape::builder()
        .cells(2)
        .app(AppSpec::new("appA", &[0]))
        .app(AppSpec::new("appB", &[1]))
        .app(AppSpec::new("appC", &[1]))
        .policy("appA", "appB", 8080)
        .build(dir)
}

#[test]
fn c2c_policy_allows_marks_and_denies_across_cells() -> anyhow::Result<()> {
    let dir = TempDir::new("cf-c2c")?;
    let landscape = landscape(&dir)?;
    let a = &landscape.app("appA").instances[0];
    let b = &landscape.app("appB").instances[0];
    let c = &landscape.app("appC").instances[0];
    let _b_server = serve(&b.ns)?;
    let _c_server = serve(&c.ns)?;
    let log = KernelLog::mark()?;

    allowed_and_denied(&a.ns, b.overlay_ip, [0, 0])?;
    ensure!(
        !connect(&a.ns, c.overlay_ip, 8080, 0)?,
        "no policy for appA → appC"
    );

    let new = log.new_lines()?;
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let ok_prefix = format!("OK_{tag:04X}_{}", &landscape.app("appB").guid[..20]);
    let ok = new
        .iter()
        .find(|l| l.contains(&ok_prefix) && l.contains("DPT=8080"))
        .with_context(|| format!("no {ok_prefix} line in {new:#?}"))?;
    // The mark crossed silk-vtep in the GBP header.
    ensure!(ok.contains(&format!("MARK={tag:#x}")), "{ok}");
    ensure!(ok.contains("IN=silk-vtep") && ok.contains(&format!("OUT={}", b.host_interface())));
    ensure!(ok.contains(&format!("SRC={} DST={}", a.overlay_ip, b.overlay_ip)));
    for (instance, port) in [(b, 9090), (c, 8080)] {
        let prefix = format!("DENY_C2C_{}", &instance.instance_guid[..19]);
        ensure!(
            new.iter()
                .any(|l| l.contains(&prefix) && l.contains(&format!("DPT={port} "))),
            "no {prefix} line for port {port} in {new:#?}"
        );
    }

    // The metadata store is silk's.
    let store: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        landscape.cells[1].metadata_store(),
    )?)?;
    let entry = &store[&b.instance_guid];
    ensure!(entry["ip"] == b.overlay_ip.to_string());
    ensure!(entry["metadata"]["app_id"] == landscape.app("appB").guid);
    ensure!(entry["metadata"]["container_workload"] == "app");
    Ok(())
}

/// [`landscape`], with an agent on every cell.
fn with_agents(dir: &TempDir) -> anyhow::Result<Landscape> {
    let mut landscape = landscape(dir)?;
    landscape.start_agents("")?;
    Ok(landscape)
}

/// A capture through a direct gRPC client, as pcap-api would run it (with
/// the API's client certificate), from the control namespace.
fn agent_capture(
    landscape: &Landscape,
    cell: usize,
    start: AgentStart,
) -> anyhow::Result<AgentCall> {
    let client = &landscape.pki.api_client;
    let tls = client_config(
        Some(&landscape.pki.ca.certificate),
        Some(&KeyPair {
            certificate: &client.certificate,
            private_key: &client.private_key,
        }),
        Some("pcap-agent"),
    )?;
    let endpoint = Endpoint::from_shared(format!("https://{}", landscape.agent_address(cell)))?
        .tls_config(tls)?;
    AgentCall::start(&landscape.control, endpoint, start)
}

/// Every packet is the app's (at `app`, never `other`), labelled from the
/// app's point of view: what it sent OUTBOUND, what it received INBOUND.
fn check_app_directions(
    packets: &[pcap_proto::packets::Packet],
    app: Ipv4Addr,
    other: Ipv4Addr,
) -> anyhow::Result<()> {
    let mut outbound = 0;
    for packet in packets {
        let (src, dst) = addresses(&packet.data).context("an IPv4 frame")?;
        ensure!(src != other && dst != other, "another container's packet");
        let expected = if src == app {
            outbound += 1;
            Direction::Outbound
        } else {
            ensure!(dst == app, "{src} → {dst} is not the app's");
            Direction::Inbound
        };
        ensure!(
            packet.direction() == expected,
            "{src} → {dst} labelled {:?}",
            packet.direction()
        );
    }
    ensure!(outbound > 0, "the app sent nothing");
    ensure!(packets.len() > outbound, "the app received nothing");
    Ok(())
}

fn container_start(
    instance_guid: &str,
    app_guid: &str,
    overlay_ip: &str,
    options: CaptureOptions,
) -> AgentStart {
    AgentStart {
        compatibility_level: COMPATIBILITY_LEVEL,
        origin: 7,
        options: Some(options),
        container: Some(ContainerScope {
            instance_guid: instance_guid.to_owned(),
            app_guid: app_guid.to_owned(),
            overlay_ip: overlay_ip.to_owned(),
        }),
    }
}

fn packets(responses: &[CaptureResponse]) -> Vec<pcap_proto::packets::Packet> {
    responses
        .iter()
        .filter_map(|r| match &r.payload {
            Some(Payload::Packets(batch)) => Some(batch.packets().unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// IPv4 source and destination of a raw Ethernet frame.
fn addresses(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let src: [u8; 4] = frame[26..30].try_into().ok()?;
    let dst: [u8; 4] = frame[30..34].try_into().ok()?;
    Some((src.into(), dst.into()))
}

#[test]
fn container_capture_sees_only_its_veth_from_the_apps_side() -> anyhow::Result<()> {
    let dir = TempDir::new("cf-agent")?;
    let landscape = with_agents(&dir)?;
    let app_b = landscape.app("appB");
    let a = &landscape.app("appA").instances[0];
    let b = &app_b.instances[0];
    let c = &landscape.app("appC").instances[0];
    let cell = &landscape.cells[1];
    let veth = b.host_interface();
    let _b_server = serve(&b.ns)?;
    let _c_server = serve(&c.ns)?;

    let reference_file = dir.join("reference.pcap");
    let reference = tcpdump(&cell.ns, &veth, "inout", &reference_file)?;
    let capture = agent_capture(
        &landscape,
        1,
        container_start(
            &b.instance_guid,
            &app_b.guid,
            &b.overlay_ip.to_string(),
            CaptureOptions::default(),
        ),
    )?;
    let head = capture
        .started()?
        .map_err(|s| anyhow::anyhow!("refused: {s}"))?;
    let description = head
        .iter()
        .find_map(|r| match &r.payload {
            Some(Payload::Interface(i)) => Some(i.clone()),
            _ => None,
        })
        .context("no interface description")?;
    ensure!(description.name == veth, "{description:?}");
    // A second capture of the same container whose filter names another
    // container: the scope holds, so it must see nothing of appC.
    let narrowed = agent_capture(
        &landscape,
        1,
        container_start(
            &b.instance_guid,
            &app_b.guid,
            "",
            CaptureOptions {
                filter: format!("host {}", c.overlay_ip),
                ..CaptureOptions::default()
            },
        ),
    )?;
    narrowed
        .started()?
        .map_err(|s| anyhow::anyhow!("refused: {s}"))?;

    // Traffic of appB (allowed in, denied in, sent out), and of appC next to it.
    allowed_and_denied(&a.ns, b.overlay_ip, [0, 0])?;
    ensure!(!connect(&a.ns, c.overlay_ip, 8080, 0)?);
    ensure!(connect(&cell.ns, c.overlay_ip, 9090, 0)?);
    b.ns.sh(&format!("ping -q -c 3 -i 0.01 {}", a.overlay_ip))
        .ok();
    // The marker goes from the cell to appB's UDP sink: no answer follows.
    sync_references(
        &cell.ns,
        &b.overlay_ip.to_string(),
        &[reference_file.as_path()],
    )?;
    let marker_file = std::fs::read(&reference_file)?;
    let marker = find_marker(&marker_file).context("no marker in the reference")?;
    let ours = packets(&capture.until_marker_then_stop(&marker)?);
    reference.interrupt()?;
    let narrowed_packets = packets(&narrowed.stop_and_drain()?);

    let theirs: Vec<Packet> = captures::read_file(&reference_file)?.packets;
    let ours_bytes: Vec<&[u8]> = ours.iter().map(|p| p.data.as_slice()).collect();
    let theirs_bytes: Vec<&[u8]> = theirs.iter().map(|p| p.data.as_slice()).collect();
    ensure!(
        ours_bytes == theirs_bytes,
        "{} packets captured, tcpdump saw {} on {veth}",
        ours.len(),
        theirs.len()
    );
    ensure!(ours.len() > 10, "too little traffic: {}", ours.len());
    check_app_directions(&ours, b.overlay_ip, c.overlay_ip)?;
    ensure!(
        narrowed_packets.is_empty(),
        "a filter widened the scope: {} packets",
        narrowed_packets.len()
    );
    Ok(())
}

/// The reference file's marker (`mk` and 12 hex digits).
fn find_marker(bytes: &[u8]) -> Option<Vec<u8>> {
    bytes
        .windows(14)
        .find(|w| w.starts_with(b"mk") && w[2..].iter().all(u8::is_ascii_hexdigit))
        .map(<[u8]>::to_vec)
}

#[test]
fn container_captures_are_refused_when_not_the_apps() -> anyhow::Result<()> {
    let dir = TempDir::new("cf-refuse")?;
    let landscape = with_agents(&dir)?;
    let app_a = landscape.app("appA");
    let app_b = landscape.app("appB");
    let b = &app_b.instances[0];
    let veth = b.host_interface();
    let cases = [
        (
            container_start(&b.instance_guid, &app_a.guid, "", CaptureOptions::default()),
            Code::PermissionDenied,
            format!(
                "instance {} does not belong to app {}",
                b.instance_guid, app_a.guid
            ),
        ),
        (
            container_start("0000-unknown", &app_b.guid, "", CaptureOptions::default()),
            Code::NotFound,
            "instance 0000-unknown is not on this cell".to_owned(),
        ),
        (
            container_start(
                &b.instance_guid,
                &app_b.guid,
                "10.255.78.99",
                CaptureOptions::default(),
            ),
            Code::PermissionDenied,
            "not 10.255.78.99".to_owned(),
        ),
        (
            container_start(
                &b.instance_guid,
                &app_b.guid,
                "",
                CaptureOptions {
                    interfaces: vec!["eth0".to_owned()],
                    ..CaptureOptions::default()
                },
            ),
            Code::InvalidArgument,
            format!("pinned to {veth}"),
        ),
    ];
    for (start, code, message) in cases {
        let capture = agent_capture(&landscape, 1, start)?;
        let status = capture
            .started()?
            .err()
            .with_context(|| format!("expected {code:?} ({message})"))?;
        ensure!(status.code() == code, "{status:?}, expected {code:?}");
        ensure!(
            status.message().contains(&message),
            "{:?} lacks {message:?}",
            status.message()
        );
        for interface in [veth.as_str(), "eth0"] {
            let attached = landscape.cells[1].ns.tcx_programs(interface)?;
            ensure!(attached.is_empty(), "{attached:?} attached to {interface}");
        }
    }
    // The instance is on cell 1, not on cell 0.
    let capture = agent_capture(
        &landscape,
        0,
        container_start(&b.instance_guid, &app_b.guid, "", CaptureOptions::default()),
    )?;
    let status = capture.started()?.err().context("cell 0 has no appB")?;
    ensure!(status.code() == Code::NotFound, "{status:?}");
    Ok(())
}
