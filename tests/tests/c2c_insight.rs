//! `pcap-agent capture --c2c` on the destination cell's `silk-vtep`: each
//! packet's pcapng comment carries the policy tag, the source app GUID and
//! the kernel's LOG verdict, and name resolution blocks name overlay IPs.

use std::path::Path;

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir, agent_capture,
    c2c_traffic::{allowed_and_denied, local_vtep_capture, serve, tshark_fields},
    landscape::{AppSpec, Landscape},
};

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
    let vtep = local_vtep_capture(&landscape.cells[1], &file)?;
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
    let apps = apps.to_str().context("utf-8 path")?;
    let underlay = agent_capture::start_writing(
        &landscape.cells[1].ns,
        &underlay_file,
        &["--c2c", "-i", "eth0", "--cf-apps", apps, "udp port 4789"],
    )?;

    allowed_and_denied(&a.ns, b.overlay_ip, [40001, 40002])?;
    for agent in [vtep, underlay] {
        let (status, stderr) = agent.interrupt()?;
        ensure!(status.success(), "agent failed: {stderr:#?}");
    }
    check_file(&landscape, &file)?;
    check_underlay(&landscape, &underlay_file)
}

/// On the underlay the tag comes from the VXLAN GBP header, and the inner
/// 5-tuple joins the verdict; the source app is named from `--cf-apps`.
fn check_underlay(landscape: &Landscape, file: &Path) -> anyhow::Result<()> {
    let a_ip = landscape.app("appA").instances[0].overlay_ip.to_string();
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let expected = format!(
        "c2c: tag {tag:#06x} src app appA ({})",
        landscape.app("appA").guid
    );
    // ip.src lists the outer, then the inner source.
    let rows = tshark_fields(
        file,
        &["-Y", "vxlan && tcp"],
        &["ip.src", "tcp.dstport", "tcp.flags.syn", "frame.comment"],
    )?;
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
fn check_file(landscape: &Landscape, file: &Path) -> anyhow::Result<()> {
    let a = &landscape.app("appA").instances[0];
    let b = &landscape.app("appB").instances[0];
    let a_guid = &landscape.app("appA").guid;
    let b_guid = &landscape.app("appB").guid;
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let rows = tshark_fields(
        file,
        &["-Y", "tcp"],
        &[
            "ip.src",
            "ip.dst",
            "tcp.srcport",
            "tcp.dstport",
            "tcp.flags.syn",
            "frame.comment",
        ],
    )?;
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
    let names = tshark_fields(file, &["-N", "n"], &["ip.src_host", "ip.dst_host"])?;
    ensure!(
        names
            .iter()
            .any(|r| r.first() == Some(a_guid) && r.get(1) == Some(b_guid)),
        "names {names:#?}"
    );
    Ok(())
}
