//! `pcap app` captures of a [`CfLandscape`] as the system tests run them,
//! the traffic they make in its app instances, and the packets per origin.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::ensure;

use crate::{
    captures::Capture,
    landscape::{AppSpec, Landscape},
    process::Running,
    servers::uaa::UaaUser,
    stand_ins::{CF_SCOPES, CfLandscape, space_role},
};

/// Two cells, `app` with instance 0 on cell 0 and 1 on cell 1, Cloud
/// Foundry with `cf_extra` in the API's `[cf]` table, and cf user `dev` (a
/// space developer of space `dev`) logged in with a token valid for
/// `seconds`; the landscape and dev's home.
pub fn two_instances_for_dev(
    tag: &str,
    app: &str,
    cf_extra: &str,
    seconds: i64,
) -> anyhow::Result<(CfLandscape, PathBuf)> {
    let cf = CfLandscape::start(
        tag,
        Landscape::builder()
            .cells(2)
            .app(AppSpec::new(app, &[0, 1])),
        vec![UaaUser::new("dev", "p", &CF_SCOPES)],
        vec![space_role("space_developer", "dev", "dev")],
        Landscape::cc_apps,
        cf_extra,
    )?;
    let home = cf.log_in("dev", seconds)?;
    Ok((cf, home))
}

/// Starts `pcap app APP ARGS -w FILE icmp` as the cf user logged in at
/// `home` (see [`CfLandscape::log_in`]), with `HOME` the landscape's
/// directory.
pub fn start(
    cf: &CfLandscape,
    home: &Path,
    app: &str,
    args: &[&str],
    file: &Path,
) -> anyhow::Result<Running> {
    let mut command = cf.landscape.pcap_app(home);
    command
        .env("HOME", &*cf.dir)
        .arg(app)
        .args(args)
        .arg("-w")
        .arg(file)
        .arg("icmp");
    Running::spawn(&mut command)
}

/// Pings the cell's gateway from instance `index` of `app`: 5 requests
/// and 5 replies with 100 + 100 × index bytes of payload (142 + 100 ×
/// index on the wire), so that each instance's packets have their own
/// size.
pub fn ping_gateway_from(landscape: &Landscape, app: &str, index: usize) -> anyhow::Result<()> {
    landscape.app(app).instances[index].ns.sh(&format!(
        "ping -q -c 5 -i 0.002 -s {} 169.254.0.1",
        100 + 100 * index
    ))?;
    Ok(())
}

/// Packet sizes per origin (the interface name before its last `/`).
pub fn packets_by_origin(capture: &Capture) -> HashMap<String, Vec<usize>> {
    let mut by_origin: HashMap<String, Vec<usize>> = HashMap::new();
    for packet in &capture.packets {
        let interface = packet.interface.clone().unwrap_or_default();
        let origin = interface
            .rsplit_once('/')
            .map_or(interface.as_str(), |(origin, _)| origin)
            .to_owned();
        by_origin.entry(origin).or_default().push(packet.data.len());
    }
    by_origin
}

/// `origin` has at least 10 packets, every one of instance `index`'s own
/// pings (14 + 20 + 8 + payload bytes).
pub fn own_pings<S: std::hash::BuildHasher>(
    by_origin: &HashMap<String, Vec<usize>, S>,
    origin: &str,
    index: usize,
) -> anyhow::Result<()> {
    let sizes = by_origin.get(origin).cloned().unwrap_or_default();
    ensure!(
        sizes.len() >= 10,
        "too few packets of {origin}: {by_origin:?}"
    );
    let own = 42 + 100 + 100 * index;
    ensure!(
        sizes.iter().all(|s| *s == own),
        "{origin} holds packets of other instances ({own} bytes expected): {sizes:?}"
    );
    Ok(())
}
