//! c2c insight through the API: `pcap capture --c2c` of `silk-vtep` on
//! two cells gives every packet the same comment (policy tag, source app,
//! LOG verdict) as `pcap-agent capture --c2c` on each cell at the same
//! time, and the merged file carries name records for the overlay IPs.
//! For a Cloud Foundry user, app names come from Cloud Controller.
//!
//! Needs root (namespaces, eBPF).

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir,
    c2c_traffic::{allowed_and_denied, connect, local_vtep_capture, serve, tshark_fields},
    landscape::{ALICE_TOKEN, AppSpec, Landscape},
    process::Running,
    reference::assert_readable,
    servers::uaa::UaaUser,
    stand_ins::CfServers,
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";
/// A static target of every cell's `silk-vtep`, for alice.
const TARGET: &str = "vteps";
/// Client ports of the allowed (to 8080) and denied (to 9090) connections.
const ALLOWED_PORT: u16 = 40001;
const DENIED_PORT: u16 = 40002;

/// One TCP packet of the test's connections: interface, then what
/// identifies it (addresses, ports, flags, sequence and acknowledgement
/// numbers), then its comment.
#[derive(Clone, Debug)]
struct Row {
    interface: String,
    packet: String,
    comment: String,
}

/// The packets of the allowed and denied connections in `file`.
fn rows(file: &Path) -> anyhow::Result<Vec<Row>> {
    let filter = format!("tcp.port == {ALLOWED_PORT} || tcp.port == {DENIED_PORT}");
    let fields = [
        "frame.interface_name",
        "ip.src",
        "ip.dst",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.flags",
        "tcp.seq_raw",
        "tcp.ack_raw",
        "frame.comment",
    ];
    Ok(tshark_fields(file, &["-Y", &filter], &fields)?
        .into_iter()
        .map(|r| Row {
            interface: r[0].clone(),
            packet: r[1..8].join(" "),
            comment: r[8].clone(),
        })
        .collect())
}

/// appA on cell-0 may reach appB on cell-1 on 8080.
fn landscape(dir: &Path) -> anyhow::Result<Landscape> {
    Landscape::builder()
        .cells(2)
        .app(AppSpec::new("appA", &[0]))
        .app(AppSpec::new("appB", &[1]))
        .policy("appA", "appB", 8080)
        .build(dir)
}

/// The API's static target of every cell's `silk-vtep`, for `allow`.
fn vteps_target(landscape: &Landscape, allow: &str) -> String {
    format!(
        "[[targets]]\nname = \"{TARGET}\"\ninterfaces = [\"silk-vtep\"]\n\
         allow = {{ {allow} }}\nagents = [\n{}]\n\n",
        landscape.agents_toml()
    )
}

/// Starts `pcap capture --c2c` of the vteps as the bearer of `token`,
/// writing `file`; returns once both cells attached.
fn remote_capture(landscape: &Landscape, token: &str, file: &Path) -> anyhow::Result<Running> {
    let mut cli = Running::spawn(
        landscape
            .pcap()
            .args(["capture", "--api", &landscape.api_url(), "--target", TARGET])
            .arg("--ca")
            .arg(&landscape.pki.ca.certificate)
            .args(["--token", token, "-i", "silk-vtep", "--c2c", "-w"])
            .arg(file)
            .arg("tcp"),
    )?;
    cli.wait_for(STARTED, 2)?;
    Ok(cli)
}

#[test]
fn c2c_through_the_api_matches_local_c2c_on_each_cell() -> anyhow::Result<()> {
    let dir = TempDir::new("c2c-remote")?;
    let mut landscape = landscape(&dir)?;
    landscape.start_agents("")?;
    let config = landscape.api_config(&vteps_target(&landscape, "users = [\"alice\"]"))?;
    landscape.start_api(&config)?;

    let a = &landscape.app("appA").instances[0];
    let b = &landscape.app("appB").instances[0];
    let _server = serve(&b.ns)?;

    // The reference: the local command on each cell.
    let mut locals = Vec::new();
    for cell in &landscape.cells {
        let file = dir.join(format!("local-{}.pcapng", cell.index));
        let running = local_vtep_capture(cell, &file)?;
        locals.push((cell.origin(), file, running));
    }

    // alice is a static user: apps stay GUIDs, as locally without
    // --cf-apps.
    let remote = dir.join("remote.pcapng");
    let cli = remote_capture(&landscape, ALICE_TOKEN, &remote)?;

    allowed_and_denied(&a.ns, b.overlay_ip, [ALLOWED_PORT, DENIED_PORT])?;

    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap capture failed: {lines:#?}");
    let mut local_files = Vec::new();
    for (origin, file, running) in locals {
        let (status, lines) = running.interrupt()?;
        ensure!(status.success(), "local capture failed: {lines:#?}");
        local_files.push((origin, file));
    }
    assert_readable(&remote)?;
    compare(&landscape, &remote, &local_files)?;
    let a_guid = &landscape.app("appA").guid;
    let b_guid = &landscape.app("appB").guid;
    check_names(&remote, a_guid, b_guid)
}

/// A Cloud Foundry admin's capture names apps as Cloud Controller does:
/// `src app appA (GUID)` in comments, `appA` and `appB` in name records.
#[test]
fn app_names_come_from_cloud_controller_for_a_cf_user() -> anyhow::Result<()> {
    let dir = TempDir::new("c2c-names")?;
    let mut landscape = landscape(&dir)?;
    let cf = CfServers::start(
        &landscape,
        &CfServers::leaf(&landscape)?,
        &dir,
        vec![UaaUser::new("ops", "secret", &["cloud_controller.admin"])],
        landscape.cc_apps(),
        Vec::new(),
    )?;
    let allow = "scopes = [{ uaa = \"cf\", scope = \"cloud_controller.admin\" }]";
    let target = vteps_target(&landscape, allow);
    cf.start_agents_and_api(&mut landscape, &target)?;

    let a = &landscape.app("appA").instances[0];
    let b = &landscape.app("appB").instances[0];
    let _server = serve(&b.ns)?;
    let remote = dir.join("remote.pcapng");
    let token = cf.uaa.access_token("ops", "cf", 600)?;
    let cli = remote_capture(&landscape, &token, &remote)?;
    ensure!(
        connect(&a.ns, b.overlay_ip, 8080, ALLOWED_PORT)?,
        "policy allows 8080"
    );
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap capture failed: {lines:#?}");
    assert_readable(&remote)?;

    let a_guid = &landscape.app("appA").guid;
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let named = format!("c2c: tag {tag:#06x} src app appA ({a_guid})");
    let rows = rows(&remote)?;
    for origin in landscape
        .cells
        .iter()
        .map(pcap_tests::landscape::Cell::origin)
    {
        ensure!(
            rows.iter()
                .any(|r| r.interface.starts_with(&format!("{origin}/"))
                    && r.comment.contains(&named)),
            "{origin}: no packet says {named}: {rows:#?}"
        );
    }
    check_names(&remote, "appA", "appB")
}

/// Per cell, the API's packets of both connections, with their comments,
/// are exactly the local capture's; and the comments say what c2c insight
/// must say (so that equal is not equally empty).
fn compare(
    landscape: &Landscape,
    remote: &Path,
    locals: &[(String, std::path::PathBuf)],
) -> anyhow::Result<()> {
    let mut by_origin: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for row in rows(remote)? {
        let (origin, interface) = row
            .interface
            .split_once('/')
            .with_context(|| format!("interface {:?} is not ORIGIN/IFACE", row.interface))?;
        ensure!(interface == "silk-vtep", "{row:?}");
        by_origin.entry(origin.to_owned()).or_default().push(row);
    }
    let a_guid = &landscape.app("appA").guid;
    let tag = landscape.tag("appA").context("appA has a tag")?;
    let source = format!("c2c: tag {tag:#06x} src app {a_guid}");
    let ok = format!("verdict OK_{tag:04X} (allowed by policy)");
    let denied = "verdict DENY_C2C (denied: no policy)";
    for (origin, file) in locals {
        // The local file is in ring order, the merged one in timestamp
        // order: compared as sets.
        let mut local: Vec<(String, String)> = rows(file)?
            .into_iter()
            .map(|r| (r.packet, r.comment))
            .collect();
        local.sort();
        let mut through_api: Vec<(String, String)> = by_origin
            .remove(origin)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.packet, r.comment))
            .collect();
        through_api.sort();
        ensure!(
            !local.is_empty(),
            "{origin}: the local capture has none of the connections' packets"
        );
        ensure!(
            through_api == local,
            "{origin}: through the API\n{through_api:#?}\nlocally\n{local:#?}"
        );
        ensure!(
            local.iter().any(|(_, c)| c.contains(&source)),
            "{origin}: no packet names appA's tag and GUID ({source}): {local:#?}"
        );
        // The verdicts are logged on appB's cell.
        if origin == &landscape.cells[1].origin() {
            ensure!(
                local.iter().any(|(_, c)| c.contains(&ok)),
                "{origin}: no allowed verdict: {local:#?}"
            );
            ensure!(
                local.iter().any(|(_, c)| c.contains(denied)),
                "{origin}: no denied verdict: {local:#?}"
            );
        }
    }
    ensure!(
        by_origin.is_empty(),
        "packets of unknown origins: {by_origin:#?}"
    );
    Ok(())
}

/// Wireshark names both overlay IPs from the merged file's name records
/// (`a`, `b`): appA's from its tag's source on either cell, appB's from
/// cell-1's store.
fn check_names(remote: &Path, a: &str, b: &str) -> anyhow::Result<()> {
    let filter = format!("tcp.port == {ALLOWED_PORT}");
    let names = tshark_fields(
        remote,
        &["-N", "n", "-Y", &filter],
        &["ip.src_host", "ip.dst_host"],
    )?;
    ensure!(
        names
            .iter()
            .any(|r| r.first().map(String::as_str) == Some(a)
                && r.get(1).map(String::as_str) == Some(b)),
        "names {names:#?}"
    );
    Ok(())
}
