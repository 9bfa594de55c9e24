//! `pcap bosh` end to end: agents on "VMs" (namespaces), pcap-api with the
//! BOSH resolver, and test servers standing in for the BOSH director and its
//! UAA, all reached over TLS from the control namespace, where the API and
//! the CLI run. Tokens are real RS256 JWTs; the director checks them itself.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{collections::HashMap, os::unix::fs::PermissionsExt as _, path::PathBuf, sync::Arc};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir,
    captures::{self, Capture},
    cluster::{API_ADDRESS, Cluster},
    cluster_setup::{assert_nothing_attached, ping_every_vm},
    process::Running,
    servers::{Server, director::Instance, uaa::Uaa},
    stand_ins::{start_bosh_uaa, start_director},
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";
const DEPLOYMENT: &str = "cf";
/// Instance IDs: router 0 and 1 on vm0 and vm1, diego-cell 0 on vm2, and
/// diego-cell 1 without a VM (no IP).
const IDS: [&str; 4] = [
    "0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e60",
    "0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e61",
    "0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e62",
    "0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e63",
];

/// The cluster, the director and its UAA, and a BOSH CLI configuration.
struct Landscape {
    // Dropped first: the CLI's servers go before the namespaces.
    director: Option<Server>,
    _uaa_server: Server,
    uaa: Arc<Uaa>,
    cluster: Cluster,
    bosh_config: PathBuf,
    dir: TempDir,
}

impl Landscape {
    /// `access_lifetime`: seconds the BOSH CLI's stored access token is
    /// still valid (negative: expired); `user` is whose login it is.
    fn new(tag: &str, user: &str, access_lifetime: i64) -> anyhow::Result<Self> {
        let dir = TempDir::new(tag)?;
        let mut cluster = Cluster::new(&dir, 3)?;
        let tls =
            cluster
                .pki
                .ca
                .leaf("bosh", &["127.0.0.1"], pcap_tests::pki::Validity::Current)?;

        let (uaa, uaa_server) = start_bosh_uaa(&cluster.control, &tls, &dir, "uaa-signing")?;

        let vm_ip = |i: usize| vec![cluster.vms[i].address()];
        let instance = |job: &str, id: usize, index: u32, ips: Vec<String>| Instance {
            job: job.to_owned(),
            id: IDS[id].to_owned(),
            index,
            az: format!("z{}", index + 1),
            ips,
        };
        let instances = vec![
            instance("router", 0, 0, vm_ip(0)),
            instance("router", 1, 1, vm_ip(1)),
            instance("diego-cell", 2, 0, vm_ip(2)),
            instance("diego-cell", 3, 1, Vec::new()),
        ];
        let director_server =
            start_director(&cluster.control, &tls, &uaa, (DEPLOYMENT, instances))?;

        let agent_config = cluster.agent_config("")?;
        cluster.start_agents(&agent_config)?;
        let bosh = format!(
            "[bosh]\ndirector_url = \"{}\"\ndirector_ca = {:?}\n",
            director_server.url(),
            cluster.pki.ca.certificate.display().to_string()
        );
        let api_config = cluster.api_config(None, &bosh)?;
        cluster.start_api(&api_config)?;

        let ca_pem = std::fs::read_to_string(&cluster.pki.ca.certificate)?;
        let config = serde_json::json!({
            "environments": [
                {"url": "https://10.9.9.9:25555", "alias": "other", "access_token": "x"},
                {
                    "url": director_server.url(),
                    "ca_cert": ca_pem,
                    "alias": "lab",
                    "username": user,
                    "access_token_type": "bearer",
                    "access_token": uaa.access_token(user, "bosh_cli", access_lifetime)?,
                    "refresh_token": uaa.refresh_token(user, "bosh_cli")?,
                    "future_field": {"kept": [1, 2, 3]},
                },
            ],
            "top_level_unknown": "kept too",
        });
        let bosh_config = dir.join("bosh-config");
        std::fs::write(&bosh_config, yaml_serde::to_string(&config)?)?;
        std::fs::set_permissions(&bosh_config, std::fs::Permissions::from_mode(0o644))?;
        Ok(Self {
            director: Some(director_server),
            _uaa_server: uaa_server,
            uaa,
            cluster,
            bosh_config,
            dir,
        })
    }

    /// `pcap bosh -e lab -d cf ARGS` in the control namespace.
    fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut command = self
            .cluster
            .control
            .command(pcap_tests::process::binary("pcap").to_str().expect("utf-8"));
        command
            .args(["bosh", "--api", &format!("https://{API_ADDRESS}")])
            .arg("--ca")
            .arg(&self.cluster.pki.ca.certificate)
            .args(["-e", "lab", "-d", DEPLOYMENT, "-n"])
            .env("BOSH_CONFIG", &self.bosh_config)
            .env("HOME", &*self.dir)
            .env_remove("PCAP_API")
            .env_remove("BOSH_ENVIRONMENT")
            .env_remove("BOSH_DEPLOYMENT")
            .args(args);
        command
    }

    /// `pcap bosh ARGS -w NAME icmp` (NAME in the test's directory), once
    /// `origins` attached, while every VM is pinged; the file and the
    /// CLI's stderr, once it succeeded.
    fn capture_pings(
        &self,
        args: &[&str],
        name: &str,
        origins: usize,
    ) -> anyhow::Result<(PathBuf, String)> {
        let file = self.dir.join(name);
        let mut command = self.cli(args);
        command.arg("-w").arg(&file).arg("icmp");
        let mut cli = Running::spawn(&mut command)?;
        cli.wait_for(STARTED, origins)?;
        ping_every_vm(&self.cluster, 5)?;
        let (status, lines) = cli.interrupt()?;
        let stderr = lines.join("\n");
        ensure!(status.success(), "pcap bosh failed:\n{stderr}");
        Ok((file, stderr))
    }

    /// Runs a capture that must be refused; its stderr.
    fn refused(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.cli(args).output().context("running pcap bosh")?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        ensure!(!output.status.success(), "pcap bosh succeeded: {stderr}");
        ensure!(!stderr.contains(STARTED), "something started: {stderr}");
        assert_nothing_attached(&self.cluster)?;
        Ok(stderr)
    }
}

/// Interface names of the packets in `capture`, counted.
fn packets_by_interface(capture: &Capture) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for packet in &capture.packets {
        *counts
            .entry(packet.interface.clone().unwrap_or_default())
            .or_default() += 1;
    }
    counts
}

#[test]
fn an_admin_captures_two_groups_after_refreshing_an_expired_token() -> anyhow::Result<()> {
    let landscape = Landscape::new("bosh-groups", "admin", -120)?;
    let (file, stderr) =
        landscape.capture_pings(&["-g", "router", "-g", "diego-cell"], "groups.pcapng", 3)?;

    // The instances were shown first, the one without an IP reported.
    for id in IDS {
        ensure!(stderr.contains(id), "{id} is not mentioned:\n{stderr}");
    }
    let no_ip = format!("diego-cell/{}", IDS[3]);
    ensure!(
        stderr.lines().any(|l| l.contains(&no_ip)
            && l.contains("unavailable")
            && l.contains("no IP address")),
        "the instance without an IP is not reported unavailable:\n{stderr}"
    );

    // Packets from both groups, on interfaces named by group/id.
    let capture = captures::read_file(&file)?;
    let counts = packets_by_interface(&capture);
    for (group, id) in [("router", 0), ("router", 1), ("diego-cell", 2)] {
        let name = format!("{group}/{}/eth0", IDS[id]);
        ensure!(
            counts.get(&name).copied().unwrap_or(0) >= 10,
            "too few packets on {name}: {counts:?}"
        );
    }
    ensure!(counts.len() == 3, "unexpected interfaces: {counts:?}");

    // The expired token was refreshed and the file rewritten in place.
    ensure!(stderr.contains("refreshed the access token"), "{stderr}");
    ensure!(
        landscape
            .uaa
            .refreshes
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    );
    let mode = std::fs::metadata(&landscape.bosh_config)?
        .permissions()
        .mode()
        & 0o777;
    ensure!(mode == 0o600, "the BOSH config has mode {mode:o}");
    let config: yaml_serde::Value =
        yaml_serde::from_str(&std::fs::read_to_string(&landscape.bosh_config)?)?;
    let lab = &config["environments"][1];
    let access = lab["access_token"].as_str().context("access_token")?;
    ensure!(
        landscape.uaa.verify(access).is_ok(),
        "the new access token is not valid"
    );
    ensure!(!lab["refresh_token"].as_str().unwrap_or("").is_empty());
    ensure!(
        lab["future_field"]["kept"][2].as_u64() == Some(3),
        "{lab:?}"
    );
    ensure!(lab["username"].as_str() == Some("admin"));
    ensure!(config["top_level_unknown"].as_str() == Some("kept too"));
    ensure!(config["environments"][0]["alias"].as_str() == Some("other"));
    Ok(())
}

#[test]
fn explicit_ids_capture_only_those_instances() -> anyhow::Result<()> {
    let landscape = Landscape::new("bosh-ids", "admin", 3600)?;
    let (file, stderr) = landscape.capture_pings(&["-g", "router", IDS[1]], "ids.pcapng", 1)?;
    ensure!(
        !stderr.contains(IDS[0]) && !stderr.contains(IDS[2]),
        "other instances were involved:\n{stderr}"
    );
    let capture = captures::read_file(&file)?;
    let counts = packets_by_interface(&capture);
    let name = format!("router/{}/eth0", IDS[1]);
    ensure!(
        counts.len() == 1 && counts.get(&name).copied().unwrap_or(0) >= 10,
        "expected packets from {name} only: {counts:?}"
    );
    Ok(())
}

#[test]
fn a_non_admin_is_denied_and_nothing_attaches() -> anyhow::Result<()> {
    let stderr = Landscape::new("bosh-viewer", "viewer", 3600)?.refused(&["-g", "router"])?;
    ensure!(
        stderr.contains("PermissionDenied") || stderr.contains("PERMISSION_DENIED"),
        "{stderr}"
    );
    ensure!(stderr.contains("lacks the scope bosh.admin"), "{stderr}");
    ensure!(!stderr.contains("eyJ"), "a token was printed:\n{stderr}");
    Ok(())
}

#[test]
fn an_unknown_group_is_named_with_the_existing_ones() -> anyhow::Result<()> {
    let stderr = Landscape::new("bosh-group", "admin", 3600)?.refused(&["-g", "routr"])?;
    ensure!(
        stderr.contains(
            "instance group \"routr\" not found in deployment \"cf\"; it has: diego-cell, router"
        ),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_director_that_is_down_stops_the_capture_before_it_starts() -> anyhow::Result<()> {
    let mut landscape = Landscape::new("bosh-down", "admin", 3600)?;
    let url = landscape.director.as_ref().expect("running").url();
    drop(landscape.director.take());
    let stderr = landscape.refused(&["-g", "router"])?;
    ensure!(
        stderr.contains(&format!("cannot reach the BOSH director at {url}")),
        "{stderr}"
    );
    ensure!(stderr.contains("the capture was not started"), "{stderr}");
    Ok(())
}
