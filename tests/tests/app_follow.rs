//! App captures while the app changes: instances that start, crash or
//! vanish at Cloud Controller during a capture, and an agent that is
//! killed and restarted. The landscape, Cloud Controller and UAA are those
//! of `cf_app`; Cloud Controller's process stats change during the test
//! ([`CloudController::update_instances`]) and the API looks at them every
//! 2 s (`[cf] follow_interval`, its floor).
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    app_capture::{self, own_pings, packets_by_origin, ping_gateway_from},
    captures,
    process::Running,
    reference,
    servers::cloud_controller::CcInstance,
    stand_ins::CfLandscape,
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";
const APP: &str = "my-app";

/// The landscape (two cells, `my-app` with instance 0 on cell 0 and 1 on
/// cell 1), Cloud Controller and its UAA, and user `dev` (a space
/// developer) logged in at `home`.
struct Cf {
    cf: CfLandscape,
    home: PathBuf,
}

impl Deref for Cf {
    type Target = CfLandscape;

    fn deref(&self) -> &CfLandscape {
        &self.cf
    }
}

impl DerefMut for Cf {
    fn deref_mut(&mut self) -> &mut CfLandscape {
        &mut self.cf
    }
}

impl Cf {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let (cf, home) =
            app_capture::two_instances_for_dev(tag, APP, "follow_interval = 2.0", 3600)?;
        Ok(Self { cf, home })
    }

    /// `pcap app my-app ARGS -w FILE icmp`, started and attached to both
    /// instances; the file.
    fn capture(&self, name: &str, args: &[&str]) -> anyhow::Result<(Running, PathBuf)> {
        let file = self.dir.join(name);
        let mut cli = app_capture::start(&self.cf, &self.home, APP, args, &file)?;
        cli.wait_for(STARTED, 2)?;
        Ok((cli, file))
    }

    /// Pings the cell's gateway from instance `index` of the app (see
    /// [`ping_gateway_from`]).
    fn ping_from(&self, index: usize) -> anyhow::Result<()> {
        ping_gateway_from(&self.landscape, APP, index)
    }

    /// Changes my-app's web instances at Cloud Controller.
    fn update(&self, change: impl FnOnce(&mut Vec<CcInstance>)) {
        let guid = &self.landscape.app(APP).guid;
        self.servers.cc.update_instances(guid, "web", change);
    }

    /// The capture `file` is readable, and nothing stays attached to any
    /// instance.
    fn check_end(&self, file: &Path) -> anyhow::Result<()> {
        reference::assert_readable(file)?;
        self.landscape.assert_no_app_attached()
    }
}

/// The line of `stderr` that mentions all of `words`.
fn line_with<'a>(stderr: &'a str, words: &[&str]) -> anyhow::Result<&'a str> {
    stderr
        .lines()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .with_context(|| format!("no line with {words:?}:\n{stderr}"))
}

#[test]
fn a_followed_capture_adds_an_instance_that_starts_later() -> anyhow::Result<()> {
    let mut cf = Cf::new("follow-add")?;
    let (mut cli, file) = cf.capture("follow.pcapng", &["--follow"])?;

    // A scale-up: a third container on cell 0, then Cloud Controller
    // reports it running.
    let index = cf.landscape.add_instance(APP, 0)?;
    ensure!(index == 2, "the new instance has index {index}");
    let instance = &cf.landscape.app(APP).instances[index];
    let (guid, ip) = (
        instance.instance_guid.clone(),
        instance.overlay_ip.to_string(),
    );
    let cell = cf.landscape.cells[0].underlay_ip().to_string();
    cf.update(|instances| instances.push(CcInstance::running(2, &cell, &ip, &guid)));
    cli.wait_for(STARTED, 3)?;
    for index in 0..3 {
        cf.ping_from(index)?;
    }
    let (status, lines) = cli.interrupt()?;
    let stderr = lines.join("\n");
    ensure!(status.success(), "pcap app failed:\n{stderr}");

    let added = line_with(&stderr, &["my-app/2#1", "new instance", &guid])?;
    ensure!(added.starts_with("pcap: my-app/2#1: "), "{added}");
    line_with(&stderr, &["my-app/2#1", STARTED])?;

    let capture = captures::read_file(&file)?;
    let by_origin = packets_by_origin(&capture);
    own_pings(&by_origin, "my-app/0", 0)?;
    own_pings(&by_origin, "my-app/1", 1)?;
    // The new instance is an interface of its own, on its own veth.
    own_pings(&by_origin, "my-app/2#1", 2)?;
    let veth = cf.landscape.app(APP).instances[2].host_interface();
    ensure!(
        capture
            .packets
            .iter()
            .filter_map(|p| p.interface.as_deref())
            .any(|i| i == format!("my-app/2#1/{veth}")),
        "no packet on my-app/2#1/{veth}"
    );
    ensure!(by_origin.len() == 3, "origins: {:?}", by_origin.keys());
    ensure!(
        capture
            .statistics
            .iter()
            .any(|s| s.interface.as_deref() == Some(&format!("my-app/2#1/{veth}"))),
        "no statistics for the new interface: {:?}",
        capture.statistics
    );
    cf.check_end(&file)
}

#[test]
fn a_moved_instance_is_followed_to_its_new_cell() -> anyhow::Result<()> {
    let mut cf = Cf::new("follow-move")?;
    let (mut cli, file) = cf.capture("move.pcapng", &["--follow"])?;
    let old_guid = cf.landscape.app(APP).instances[1].instance_guid.clone();

    // Cell 1 is evacuated: instance 1 runs again on cell 0.
    cf.landscape.move_instance(APP, 1, 0)?;
    let moved = &cf.landscape.app(APP).instances[1];
    let (guid, ip) = (moved.instance_guid.clone(), moved.overlay_ip.to_string());
    let cell = cf.landscape.cells[0].underlay_ip().to_string();
    cf.update(|instances| {
        instances.retain(|i| i.index != 1);
        instances.push(CcInstance::running(1, &cell, &ip, &guid));
    });
    cli.wait_for(STARTED, 3)?;
    cli.wait_for("instance moved", 1)?;
    cf.ping_from(0)?;
    cf.ping_from(1)?;
    let (status, lines) = cli.interrupt()?;
    let stderr = lines.join("\n");
    ensure!(status.success(), "pcap app failed:\n{stderr}");

    let moved_line = line_with(&stderr, &["instance moved to another cell", &old_guid])?;
    ensure!(
        moved_line.starts_with("pcap: my-app/1: ")
            && moved_line.contains("now captured as my-app/1#1")
            && moved_line.contains(&guid),
        "{moved_line}"
    );
    line_with(&stderr, &["my-app/1#1", STARTED])?;
    let capture = captures::read_file(&file)?;
    let by_origin = packets_by_origin(&capture);
    own_pings(&by_origin, "my-app/0", 0)?;
    // Instance 1's pings after the move, on its new interface.
    own_pings(&by_origin, "my-app/1#1", 1)?;
    cf.check_end(&file)
}

#[test]
fn instances_that_crash_or_vanish_are_reported_and_the_rest_goes_on() -> anyhow::Result<()> {
    let cf = Cf::new("follow-crash")?;
    // Without --follow: changes are told all the same.
    let (mut cli, file) = cf.capture("crash.pcapng", &[])?;

    cf.update(|instances| {
        let one = instances
            .iter_mut()
            .find(|i| i.index == 1)
            .expect("index 1");
        one.state = "CRASHED".to_owned();
    });
    cli.wait_for("instance crashed", 1)?;
    cf.ping_from(0)?;
    cf.update(|instances| instances.retain(|i| i.index != 0));
    cli.wait_for("instance stopped", 1)?;
    let (status, lines) = cli.interrupt()?;
    let stderr = lines.join("\n");
    ensure!(status.success(), "pcap app failed:\n{stderr}");

    let guids: Vec<String> = cf
        .landscape
        .app(APP)
        .instances
        .iter()
        .map(|i| i.instance_guid.clone())
        .collect();
    let crashed = line_with(&stderr, &["instance crashed", "CRASHED", &guids[1]])?;
    ensure!(crashed.starts_with("pcap: my-app/1: "), "{crashed}");
    let stopped = line_with(&stderr, &["instance stopped", &guids[0]])?;
    ensure!(
        stopped.starts_with("pcap: my-app/0: ") && stopped.contains("gone from Cloud Controller"),
        "{stopped}"
    );
    // Each told once, though Cloud Controller said the same at every look.
    ensure!(
        stderr.matches("instance crashed").count() == 1,
        "told more than once:\n{stderr}"
    );

    // Instance 0 went on after instance 1 crashed.
    let capture = captures::read_file(&file)?;
    own_pings(&packets_by_origin(&capture), "my-app/0", 0)?;
    cf.check_end(&file)
}

#[test]
fn a_killed_agent_is_reconnected_and_the_gap_reported() -> anyhow::Result<()> {
    let mut cf = Cf::new("follow-agent")?;
    let (mut cli, file) = cf.capture("agent.pcapng", &["--follow"])?;

    // Cell 1's agent (instance 1) dies: its TCX links go with it.
    let before_kill = Instant::now();
    cf.landscape.kill_agent(1)?;
    let killed = Instant::now();
    cli.wait_for("connection lost", 1)?;
    let veth = cf.landscape.app(APP).instances[1].host_interface();
    let programs = cf.landscape.cells[1].ns.tcx_programs(&veth)?;
    ensure!(programs.is_empty(), "{veth} has {programs:?} attached");
    let restarting = Instant::now();
    cf.landscape.restart_agent(1)?;
    cli.wait_for("capturing again after", 1)?;
    let back = Instant::now();
    cf.ping_from(0)?;
    cf.ping_from(1)?;
    let (status, lines) = cli.interrupt()?;
    let stderr = lines.join("\n");
    ensure!(status.success(), "pcap app failed:\n{stderr}");

    let lost = line_with(&stderr, &["connection lost"])?;
    ensure!(lost.starts_with("pcap: my-app/1 ("), "{lost}");
    let gap_line = line_with(&stderr, &["capturing again after a gap of"])?;
    ensure!(gap_line.starts_with("pcap: my-app/1: "), "{gap_line}");
    let gap: f64 = gap_line
        .split("gap of ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .context("no gap figure")?
        .parse()?;
    // The gap spans at least the time the agent was down, and no more than
    // the time from the kill until the CLI heard it was back.
    let down = (restarting - killed).as_secs_f64();
    let most = (back - before_kill).as_secs_f64();
    ensure!(
        gap + 0.2 >= down && gap <= most + 0.1,
        "gap {gap}s, agent down {down:.3}s, at most {most:.3}s:\n{stderr}"
    );
    ensure!(
        !stderr.contains("my-app/1#"),
        "the reconnected instance became a new origin:\n{stderr}"
    );

    // Packets of instance 1 after its agent came back, on the same origin.
    let capture = captures::read_file(&file)?;
    let by_origin = packets_by_origin(&capture);
    own_pings(&by_origin, "my-app/0", 0)?;
    own_pings(&by_origin, "my-app/1", 1)?;
    cf.check_end(&file)
}
