//! `pcap app` end to end: a simulated Diego landscape (cells with agents,
//! app containers behind `s-<ip>` veths), pcap-api with the Cloud
//! Controller resolver, and test servers for Cloud Controller (v3) and its
//! UAA, all over TLS in the control namespace where the API and the CLI
//! run. Tokens are real RS256 JWTs; Cloud Controller checks them itself and
//! shows each user only the apps of spaces where they hold a role.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    app_capture::{own_pings, packets_by_origin, ping_gateway_from},
    captures,
    checks::contains_all,
    landscape::{AppSpec, Landscape, space_guid},
    process::Running,
    servers::{
        cloud_controller::CcInstance,
        uaa::{SigningKey, Uaa, UaaUser},
    },
    stand_ins::{CF_SCOPES, CfLandscape, space_role},
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";
const APP: &str = "my-app";
const OTHER: &str = "other-app";

/// The landscape, Cloud Controller and its UAA, and cf CLI homes per user.
struct Cf(CfLandscape);

impl std::ops::Deref for Cf {
    type Target = CfLandscape;

    fn deref(&self) -> &CfLandscape {
        &self.0
    }
}

fn user_id(name: &str) -> String {
    format!("user-{name}")
}

impl Cf {
    /// `my-app` with instances 0 (cell 0) and 1 (cell 1) running, 2
    /// crashed and 3 down at Cloud Controller; `other-app` in another
    /// space. `cf_extra` is appended to the API's `[cf]` table;
    /// `ssh_enabled` is my-app's SSH setting.
    fn new(tag: &str, cf_extra: &str, ssh_enabled: bool) -> anyhow::Result<Self> {
        let landscape = Landscape::builder()
            .cells(2)
            .app(AppSpec::new(APP, &[0, 1]))
            .app(AppSpec::new(OTHER, &[0]).in_space("other"));
        let users = vec![
            UaaUser::new("dev", "p", &CF_SCOPES),
            UaaUser::new("auditor", "p", &CF_SCOPES),
            UaaUser::new("stranger", "p", &CF_SCOPES),
            UaaUser::new("admin", "p", &["cloud_controller.admin", "openid"]),
        ];
        let roles = vec![
            space_role("space_developer", "dev", "dev"),
            space_role("space_auditor", "auditor", "dev"),
            space_role("space_developer", "stranger", "other"),
        ];
        let apps = |landscape: &Landscape| {
            let mut apps = landscape.cc_apps();
            for cc_app in &mut apps {
                if cc_app.name == APP {
                    let cell = landscape.cells[0].underlay_ip().to_string();
                    let instances = cc_app.processes.get_mut("web").expect("a web process");
                    instances.push(CcInstance::crashed(
                        2,
                        &cell,
                        "10.255.77.99",
                        "crashed-guid",
                    ));
                    instances.push(CcInstance::down(3));
                }
                cc_app.ssh_enabled = ssh_enabled;
            }
            apps
        };
        CfLandscape::start(tag, landscape, users, roles, apps, cf_extra).map(Self)
    }

    /// `pcap app ARGS` as the user whose cf home is `home`.
    fn cli(&self, home: &Path, args: &[&str]) -> std::process::Command {
        let mut command = self.landscape.pcap_app(home);
        command.env("HOME", &*self.dir).args(args);
        command
    }

    /// Runs `pcap app ARGS` as the user whose cf home is `home` until
    /// `started` origins have attached, pings the cell's gateway from
    /// my-app's instances `indices` (see [`ping_gateway_from`]), and stops
    /// it; its stderr, once it has succeeded.
    fn capture(
        &self,
        home: &Path,
        args: &[&str],
        started: usize,
        indices: &[usize],
    ) -> anyhow::Result<String> {
        let mut cli = Running::spawn(&mut self.cli(home, args))?;
        cli.wait_for(STARTED, started)?;
        for index in indices {
            ping_gateway_from(&self.landscape, APP, *index)?;
        }
        let (status, lines) = cli.interrupt()?;
        let stderr = lines.join("\n");
        ensure!(status.success(), "pcap app failed:\n{stderr}");
        Ok(stderr)
    }

    /// [`Cf::refused`] as `user`, logged in for an hour.
    fn refused_as(&self, user: &str, args: &[&str]) -> anyhow::Result<String> {
        self.refused(&self.log_in(user, 3600)?, args)
    }

    /// Runs a capture that must be refused; its stderr.
    fn refused(&self, home: &Path, args: &[&str]) -> anyhow::Result<String> {
        let output = self.cli(home, args).output().context("running pcap app")?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        ensure!(!output.status.success(), "pcap app succeeded: {stderr}");
        ensure!(!stderr.contains(STARTED), "something started: {stderr}");
        self.landscape.assert_no_app_attached()?;
        Ok(stderr)
    }
}

#[test]
fn a_developer_captures_every_instance_and_hears_of_the_broken_ones() -> anyhow::Result<()> {
    let cf = Cf::new("cf-all", "", true)?;
    // An expired access token: refreshed first, the file rewritten.
    let home = cf.log_in("dev", -120)?;
    let file = cf.dir.join("all.pcapng");
    let file_arg = file.to_str().expect("utf-8");
    let stderr = cf.capture(&home, &[APP, "-w", file_arg, "icmp"], 2, &[0, 1])?;

    for (index, state) in [(2, "CRASHED"), (3, "DOWN")] {
        let origin = format!("{APP}/{index}");
        ensure!(
            stderr
                .lines()
                .any(|l| l.contains(&origin) && l.contains("unavailable") && l.contains(state)),
            "{origin} is not reported unavailable ({state}):\n{stderr}"
        );
    }
    let capture = captures::read_file(&file)?;
    let by_origin = packets_by_origin(&capture);
    for index in [0usize, 1] {
        own_pings(&by_origin, &format!("{APP}/{index}"), index)?;
    }
    ensure!(
        by_origin.len() == 2,
        "unexpected origins: {:?}",
        by_origin.keys()
    );

    // The refresh: one grant, the file rewritten with everything kept.
    ensure!(stderr.contains("refreshed the access token"), "{stderr}");
    ensure!(
        cf.servers
            .uaa
            .refreshes
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    );
    let path = home.join(".cf/config.json");
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "config.json has mode {mode:o}");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let access = config["AccessToken"].as_str().context("AccessToken")?;
    ensure!(access.starts_with("bearer ") && access.len() > 100);
    ensure!(
        cf.servers.uaa.verify(&access["bearer ".len()..]).is_ok(),
        "the new token is not valid"
    );
    ensure!(
        !config["RefreshToken"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    ensure!(
        config["PluginRepos"][0]["Name"] == "CF-Community",
        "{config}"
    );
    ensure!(config["SpaceFields"]["AllowSSH"] == true, "{config}");
    ensure!(
        !stderr.contains(&access["bearer ".len()..]),
        "the token was printed"
    );
    cf.landscape.assert_no_app_attached()
}

#[test]
fn instances_are_picked_and_the_filter_cannot_widen_the_scope() -> anyhow::Result<()> {
    let cf = Cf::new("cf-pick", "", true)?;
    let home = cf.log_in("dev", 3600)?;

    // --instance 1: only instance 1's packets.
    let file = cf.dir.join("one.pcapng");
    let file_arg = file.to_str().expect("utf-8");
    let args = [APP, "--instance", "1", "-w", file_arg, "icmp"];
    cf.capture(&home, &args, 1, &[0, 1])?;
    let by_origin = packets_by_origin(&captures::read_file(&file)?);
    ensure!(
        by_origin.len() == 1
            && by_origin
                .get(&format!("{APP}/1"))
                .is_some_and(|s| s.len() >= 10),
        "{by_origin:?}"
    );

    // Instance 0 with a filter naming instance 1's address: nothing of
    // instance 1's traffic, which happens on the other container.
    let other_ip = cf.landscape.app(APP).instances[1].overlay_ip.to_string();
    let file = cf.dir.join("scoped.pcapng");
    let file_arg = file.to_str().expect("utf-8");
    let args = [APP, "--instance", "0", "-w", file_arg, "host", &other_ip];
    cf.capture(&home, &args, 1, &[1])?;
    let capture = captures::read_file(&file)?;
    ensure!(
        capture.packets.is_empty(),
        "instance 0's capture holds packets: {:?}",
        packets_by_origin(&capture)
    );

    // An index out of range: refused, naming the range.
    let stderr = cf.refused(&home, &[APP, "--instance", "7"])?;
    contains_all(&stderr, &["NOT_FOUND", "out of range", "4 instances"])?;
    cf.landscape.assert_no_app_attached()
}

#[test]
fn who_may_capture_what() -> anyhow::Result<()> {
    let cf = Cf::new("cf-authz", "", true)?;

    // A space auditor sees the app but may not capture it by default.
    let stderr = cf.refused_as("auditor", &[APP])?;
    contains_all(
        &stderr,
        &["PERMISSION_DENIED", "space_developer", "space_auditor"],
    )?;

    // A developer of another space: the app does not exist for them.
    let stderr = cf.refused_as("stranger", &[APP])?;
    ensure!(stderr.contains("not found in org"), "{stderr}");

    // An admin (no role in the space) may capture any app.
    let admin = cf.log_in("admin", 3600)?;
    let mut cli = Running::spawn(&mut cf.cli(&admin, &[APP, "--instance", "0", "-c", "1"]))?;
    cli.wait_for(STARTED, 1)?;
    ping_gateway_from(&cf.landscape, APP, 0)?;
    let (status, lines) = cli.wait()?;
    ensure!(
        status.success(),
        "the admin's capture failed:\n{}",
        lines.join("\n")
    );

    // A developer whose role is removed is refused at the next capture.
    let dev = cf.log_in("dev", 3600)?;
    cf.servers
        .cc
        .remove_roles(&user_id("dev"), &space_guid("dev"));
    let stderr = cf.refused(&dev, &[APP])?;
    ensure!(stderr.contains("not found in org"), "{stderr}");

    // Tokens the API does not accept, straight at the API.
    let forged = {
        let other_uaa = Uaa::new(
            cf.servers.uaa.url(),
            SigningKey::generate(&cf.dir, "forger")?,
            vec![UaaUser::new("dev", "p", &["cloud_controller.admin"])],
            &[],
        );
        other_uaa.access_token("dev", "cf", 3600)?
    };
    let expired = cf.servers.uaa.access_token("admin", "cf", -600)?;
    for (token, reason) in [(forged, "signature"), (expired, "expired")] {
        let output = cf
            .landscape
            .pcap()
            .args([
                "capture",
                "--api",
                &cf.landscape.api_url(),
                "--target",
                "cells",
            ])
            .arg("--ca")
            .arg(&cf.landscape.pki.ca.certificate)
            .env("PCAP_TOKEN", &token)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(!output.status.success(), "{stderr}");
        ensure!(
            stderr.contains("UNAUTHENTICATED") && stderr.contains(reason),
            "{reason}: {stderr}"
        );
        ensure!(!stderr.contains(&token), "the token was echoed");
    }
    cf.landscape.assert_no_app_attached()
}

#[test]
fn the_ssh_setting_is_respected_when_the_operator_asks() -> anyhow::Result<()> {
    let cf = Cf::new("cf-ssh", "respect_ssh_setting = true", false)?;
    let stderr = cf.refused_as("dev", &[APP])?;
    contains_all(&stderr, &["PERMISSION_DENIED", "ssh is disabled"])?;
    Ok(())
}

#[test]
fn the_user_is_told_what_to_do() -> anyhow::Result<()> {
    let cf = Cf::new("cf-messages", "", true)?;
    let home = cf.dir.join("home-nobody");
    std::fs::create_dir_all(home.join(".cf"))?;
    // Not logged in.
    let stderr = cf.refused(&home, &[APP])?;
    ensure!(stderr.contains("cf login"), "{stderr}");
    // Logged in, no space targeted.
    let dev = cf.log_in("dev", 3600)?;
    let path = dev.join(".cf/config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    config["SpaceFields"] = serde_json::json!({"GUID": "", "Name": ""});
    std::fs::write(&path, config.to_string())?;
    let stderr = cf.refused(&dev, &[APP])?;
    ensure!(stderr.contains("cf target"), "{stderr}");
    // The pcap API cannot be reached.
    let dev = cf.log_in("dev", 3600)?;
    let output = cf
        .landscape
        .pcap()
        .args(["app", "--api", "https://127.0.0.1:1", APP])
        .arg("--ca")
        .arg(&cf.landscape.pki.ca.certificate)
        .env("CF_HOME", &dev)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success());
    contains_all(&stderr, &["https://127.0.0.1:1", "PCAP_API"])?;
    Ok(())
}
