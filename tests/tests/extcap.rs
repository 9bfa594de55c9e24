//! `pcap` as a Wireshark extcap program, through the real tshark: `pcap
//! extcap install` links it into Wireshark's personal extcap folder (for
//! Wireshark 4.0, `~/.config/wireshark/extcap`, which its extcap code
//! searches although `tshark -G folders` does not show it), `tshark -D`
//! lists its interfaces, and `tshark -i pcap_app` / `-i pcap_bosh` / `-i
//! pcap_local` capture the same packets as `pcap app`, `pcap bosh` and
//! tcpdump on the same traffic.
//!
//! These tests need root (namespaces, eBPF) and tshark (`cargo xtask
//! setup`). Each installs into a home directory of its own (`HOME`, which
//! its tshark runs with too), never into Wireshark's global folder; one
//! installs as user nobody.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir, app_capture,
    captures::{self, Packet},
    cluster::{API_ADDRESS, Cluster},
    cluster_setup::{assert_agents_detach, ping_every_vm},
    landscape::{AppSpec, Landscape},
    netns::{Netns, Pair},
    pki::Validity,
    process::{Running, binary, wait_until},
    reference,
    servers::{
        Server,
        director::Instance,
        uaa::{Uaa, UaaUser},
    },
    stand_ins::{CF_SCOPES, CfLandscape, space_role, start_bosh_uaa, start_director},
};

const APP: &str = "my-app";
/// How long a capture may take to attach, or to end once it has its packets.
const TIMEOUT: Duration = Duration::from_mins(1);

/// `command` with the home directory `home`, where Wireshark's personal
/// configuration is `.config/wireshark`.
fn with_home<'a>(command: &'a mut Command, home: &Path) -> &'a mut Command {
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("WIRESHARK_CONFIG_DIR")
        .env_remove("WIRESHARK_EXTCAP_DIR")
}

/// The link `pcap extcap install` made in the personal extcap folder of
/// the home directory `home`, removed on drop.
struct Installed {
    link: PathBuf,
    home: PathBuf,
}

impl Installed {
    fn new(home: &Path) -> anyhow::Result<Self> {
        let output = with_home(&mut Command::new(binary("pcap")), home)
            .args(["extcap", "install"])
            .output()
            .context("running pcap extcap install")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success(),
            "pcap extcap install failed: {stderr}"
        );
        let link = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let installed = Self {
            link,
            home: home.to_owned(),
        };
        // The extcap folder of the personal configuration tshark shows,
        // and a link to our pcap.
        let folders = installed.tshark(None).args(["-G", "folders"]).output()?;
        let folders = String::from_utf8_lossy(&folders.stdout);
        let personal = home.join(".config/wireshark");
        ensure!(
            folders
                .lines()
                .any(|l| l.starts_with("Personal configuration:")
                    && l.trim_end().ends_with(&*personal.to_string_lossy())),
            "tshark -G folders shows another personal configuration:\n{folders}"
        );
        ensure!(
            installed.link == personal.join("extcap/pcap"),
            "pcap extcap install linked {}",
            installed.link.display()
        );
        ensure!(
            std::fs::canonicalize(&installed.link)? == std::fs::canonicalize(binary("pcap"))?,
            "{} does not point at pcap",
            installed.link.display()
        );
        ensure!(stderr.contains("linked"), "{stderr}");
        Ok(installed)
    }
}

impl Installed {
    /// `tshark`, in `ns` if given, with the home the link is in.
    fn tshark(&self, ns: Option<&Netns>) -> Command {
        let mut command = ns.map_or_else(|| Command::new("tshark"), |ns| ns.command("tshark"));
        with_home(&mut command, &self.home);
        command
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let removed = with_home(&mut Command::new(binary("pcap")), &self.home)
            .args(["extcap", "uninstall"])
            .output();
        if !removed.is_ok_and(|o| o.status.success()) || self.link.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// Runs tshark to its end, which must come within [`TIMEOUT`]: an extcap
/// capture that fails must not leave dumpcap waiting for the fifo. Its exit
/// status and stderr. On a timeout, dumpcap is killed too.
fn tshark_to_its_end(command: &mut Command) -> anyhow::Result<(ExitStatus, String)> {
    let mut tshark = Running::spawn(command.stdout(Stdio::null()))?;
    let ended = wait_until("tshark ends by itself", TIMEOUT, || tshark.has_exited());
    if ended.is_err() {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &tshark.pid().to_string()])
            .status();
    }
    ended?;
    let (status, lines) = tshark.wait()?;
    Ok((status, lines.join("\n")))
}

/// tshark in `ns` on our extcap interface `interface` with the options
/// `prefs` (`-o extcap.INTERFACE.NAME:VALUE`), capture filter `icmp`,
/// stopping after `count` packets, writing `file`.
fn tshark(
    installed: &Installed,
    ns: &Netns,
    interface: &str,
    prefs: &[(&str, &str)],
    count: usize,
    file: &Path,
) -> Command {
    let mut command = installed.tshark(Some(ns));
    command.args([
        "-i",
        interface,
        "-f",
        "icmp",
        "-c",
        &count.to_string(),
        "-q",
        "-w",
    ]);
    command.arg(file);
    for (name, value) in prefs {
        command.args(["-o", &format!("extcap.{interface}.{name}:{value}")]);
    }
    command
}

/// Waits for tshark to end, at most [`TIMEOUT`]; its stderr.
fn finish(tshark: Running) -> anyhow::Result<Vec<String>> {
    let pid = tshark.pid();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + TIMEOUT;
            while std::time::Instant::now() < deadline {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return false;
                }
                std::thread::park_timeout(Duration::from_millis(50));
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            true
        })
    };
    let (status, stderr) = tshark.wait()?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watchdog.thread().unpark();
    ensure!(
        !watchdog.join().unwrap_or(false),
        "tshark did not end: {stderr:#?}"
    );
    ensure!(status.success(), "tshark failed ({status}): {stderr:#?}");
    Ok(stderr)
}

/// [`finish`], saying on failure how many packets tshark wrote to `file`
/// and what the extcap logged to `log`.
fn finish_with_log(tshark: Running, file: &Path, log: &Path) -> anyhow::Result<Vec<String>> {
    finish(tshark).with_context(|| {
        let got = captures::read_file(file).map(|c| c.packets.len());
        let log = std::fs::read_to_string(log).unwrap_or_default();
        format!("tshark wrote {got:?} packets; the extcap's log:\n{log}")
    })
}

/// Reads `ours`, written by the `pcap` command `tool`, and tshark's
/// `theirs`: both hold `count` packets, with the same bytes whatever their
/// order. tshark's capture.
fn same_as_ours(
    tool: &str,
    ours: &Path,
    theirs: &Path,
    count: usize,
) -> anyhow::Result<captures::Capture> {
    let ours = captures::read_file(ours)?;
    let theirs = captures::read_file(theirs)?;
    ensure!(
        ours.packets.len() == count,
        "{tool}: {} packets",
        ours.packets.len()
    );
    ensure!(
        theirs.packets.len() == count,
        "tshark: {} packets",
        theirs.packets.len()
    );
    ensure!(
        sorted(&ours.packets) == sorted(&theirs.packets),
        "the bytes differ"
    );
    Ok(theirs)
}

/// Packet bytes, sorted: the same multiset whatever the order in which
/// origins were merged.
fn sorted(packets: &[Packet]) -> Vec<Vec<u8>> {
    let mut data: Vec<Vec<u8>> = packets.iter().map(|p| p.data.clone()).collect();
    data.sort();
    data
}

#[test]
fn tshark_lists_our_interfaces() -> anyhow::Result<()> {
    let home = TempDir::new("extcap-list")?;
    let installed = Installed::new(&home)?;
    let output = installed.tshark(None).arg("-D").output()?;
    let listed = String::from_utf8_lossy(&output.stdout);
    for line in [
        "pcap_app (Cloud Foundry app (pcap))",
        "pcap_bosh (BOSH VMs (pcap))",
        "pcap_local (Local interface on a cell (pcap-agent))",
    ] {
        ensure!(listed.contains(line), "tshark -D lacks {line:?}:\n{listed}");
    }
    // The options are Wireshark preferences of each interface.
    let prefs = installed
        .tshark(None)
        .args(["-G", "currentprefs"])
        .output()?;
    let prefs = String::from_utf8_lossy(&prefs.stdout);
    for pref in [
        "extcap.pcap_app.app:",
        "extcap.pcap_app.instances:",
        "extcap.pcap_app.api:",
        "extcap.pcap_app.ca:",
        "extcap.pcap_app.snaplen: 0",
        "extcap.pcap_bosh.deployment:",
        "extcap.pcap_bosh.groups:",
        "extcap.pcap_local.interface:",
    ] {
        ensure!(
            prefs.contains(pref),
            "tshark -G currentprefs lacks {pref:?}"
        );
    }
    // The link type (`--extcap-dlts`) of each.
    for interface in ["pcap_app", "pcap_bosh", "pcap_local"] {
        let output = installed
            .tshark(None)
            .args(["-i", interface, "-L"])
            .output()?;
        let listed = String::from_utf8_lossy(&output.stdout);
        ensure!(
            output.status.success()
                && listed.contains(&format!("Data link types of interface {interface}"))
                && listed.contains("EN10MB (Ethernet)"),
            "tshark -i {interface} -L: {listed}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[test]
fn uninstall_removes_the_link() -> anyhow::Result<()> {
    let home = TempDir::new("extcap-uninstall")?;
    let installed = Installed::new(&home)?;
    let output = with_home(&mut Command::new(binary("pcap")), &home)
        .args(["extcap", "uninstall"])
        .output()?;
    ensure!(output.status.success(), "{output:?}");
    ensure!(
        installed.link.symlink_metadata().is_err(),
        "{} is still there",
        installed.link.display()
    );
    let listed = installed.tshark(None).arg("-D").output()?;
    ensure!(!String::from_utf8_lossy(&listed.stdout).contains("pcap_app"));
    Ok(())
}

/// A capture without an app name: tshark shows our error and ends by
/// itself (the extcap fails before anything opened the fifo, and dumpcap
/// must not be left waiting for a writer).
#[test]
fn a_capture_without_an_app_name_is_an_error_wireshark_shows() -> anyhow::Result<()> {
    let dir = TempDir::new("extcap-noapp")?;
    let installed = Installed::new(&dir)?;
    let (status, stderr) = tshark_to_its_end(
        installed
            .tshark(None)
            .args(["-i", "pcap_app", "-c", "1", "-w"])
            .arg(dir.join("out.pcapng")),
    )?;
    ensure!(
        !status.success() && stderr.contains("give the app's name"),
        "tshark did not show our error: {status} {stderr}"
    );
    Ok(())
}

/// The capture of an app through tshark equals `pcap app`'s of the same
/// traffic, packet for packet; closing tshark stops the app's capture.
#[test]
fn tshark_captures_an_app_like_pcap_app() -> anyhow::Result<()> {
    // Two developers of the app's space: one capture per user and agent.
    let cf = CfLandscape::start(
        "extcap",
        Landscape::builder()
            .cells(2)
            .app(AppSpec::new(APP, &[0, 1])),
        vec![
            UaaUser::new("dev", "p", &CF_SCOPES),
            UaaUser::new("shark", "p", &CF_SCOPES),
        ],
        vec![
            space_role("space_developer", "dev", "dev"),
            space_role("space_developer", "shark", "dev"),
        ],
        Landscape::cc_apps,
        "",
    )?;
    let home = cf.log_in("dev", 3600)?;
    let shark_home = cf.log_in("shark", 3600)?;
    let installed = Installed::new(&cf.dir)?;
    let ours = cf.dir.join("pcap-app.pcapng");
    let theirs = cf.dir.join("tshark.pcapng");
    let log = cf.dir.join("extcap.log");
    // 5 requests and 5 replies from each of the two instances.
    let count = 20;

    let mut pcap_app = app_capture::start(&cf, &home, APP, &["-c", &count.to_string()], &ours)?;
    pcap_app.wait_for("capturing on", 2)?;
    // What one capture attaches to each instance's interface.
    let one = programs(&cf)?;
    ensure!(
        one.iter().all(|&n| n > 0),
        "pcap app attached nothing: {one:?}"
    );
    let ca = cf.landscape.pki.ca.certificate.to_string_lossy();
    let api = cf.landscape.api_url();
    let log_path = log.to_string_lossy();
    let prefs = [
        ("app", APP),
        ("api", api.as_str()),
        ("ca", &*ca),
        ("debugfile", &*log_path),
    ];
    let shark_of = |home: &Path, file: &Path| {
        let mut command = tshark(
            &installed,
            &cf.landscape.control,
            "pcap_app",
            &prefs,
            count,
            file,
        );
        command.env("CF_HOME", home).env_remove("PCAP_API");
        command
    };

    // A capture the API refuses once the fifo is open (dev already
    // captures): tshark ends and shows why.
    let (_, stderr) = tshark_to_its_end(&mut shark_of(&home, &cf.dir.join("refused.pcapng")))?;
    ensure!(
        stderr.contains("RESOURCE_EXHAUSTED") && stderr.contains("started on no origin"),
        "tshark did not show the refusal: {stderr}"
    );

    let tshark = Running::spawn(&mut shark_of(&shark_home, &theirs))?;
    wait_for_programs(&cf, &one.iter().map(|n| 2 * n).collect::<Vec<_>>()).with_context(|| {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("the extcap's log:\n{log}")
    })?;

    for index in [0, 1] {
        app_capture::ping_gateway_from(&cf.landscape, APP, index)?;
    }
    let (status, stderr) = pcap_app.wait()?;
    ensure!(status.success(), "pcap app failed: {stderr:#?}");
    finish_with_log(tshark, &theirs, &log)?;
    // tshark closed the fifo: the extcap's capture stopped at the agents.
    wait_for_programs(&cf, &[0, 0])?;

    let theirs = same_as_ours("pcap app", &ours, &theirs, count)?;
    let by_origin = app_capture::packets_by_origin(&theirs);
    ensure!(
        by_origin.len() == 2,
        "one interface per instance: {by_origin:?}"
    );
    Ok(())
}

/// The capture programs attached to each instance's interface.
fn programs(cf: &CfLandscape) -> anyhow::Result<Vec<usize>> {
    cf.landscape
        .app(APP)
        .instances
        .iter()
        .map(|instance| {
            let cell = &cf.landscape.cells[instance.cell];
            Ok(cell.ns.tcx_programs(&instance.host_interface())?.len())
        })
        .collect()
}

/// Waits until each instance of the app has `n[index]` capture programs
/// attached.
fn wait_for_programs(cf: &CfLandscape, n: &[usize]) -> anyhow::Result<()> {
    wait_for_counts("the instances", n, || programs(cf))
}

/// Waits until `count` (capture programs attached, one entry per
/// instance or VM) is `n`.
fn wait_for_counts(
    what: &str,
    n: &[usize],
    mut count: impl FnMut() -> anyhow::Result<Vec<usize>>,
) -> anyhow::Result<()> {
    let mut last = Vec::new();
    wait_until(
        &format!("{what} have {n:?} capture programs attached"),
        TIMEOUT,
        || {
            last = count()?;
            Ok(last == n)
        },
    )
    .with_context(|| format!("they have {last:?}"))
}

/// The local interface through tshark equals tcpdump's capture of it.
#[test]
fn tshark_captures_a_local_interface_like_tcpdump() -> anyhow::Result<()> {
    let pair = Pair::new("extl")?;
    pair.disable_ipv6()?;
    let dir = TempDir::new("extcap-local")?;
    let installed = Installed::new(&dir)?;
    let reference_file = dir.join("tcpdump.pcap");
    let ours = dir.join("tshark.pcapng");
    let tcpdump = reference::tcpdump(&pair.a, "veth0", "inout", &reference_file)?;
    // 3 requests out, 3 replies in.
    let count = 6;
    let tshark = Running::spawn(&mut tshark(
        &installed,
        &pair.a,
        "pcap_local",
        &[("interface", "veth0")],
        count,
        &ours,
    ))?;
    // Both directions: the first request leaves before its reply comes in,
    // and an egress attached a grace period after ingress would miss it.
    wait_until(
        "pcap-agent attaches to both sides of veth0",
        TIMEOUT,
        || Ok(pair.a.tcx_programs("veth0")?.len() == 2),
    )?;
    pair.a.sh("ping -c 3 -i 0.05 -W 1 10.0.0.2")?;
    finish(tshark)?;
    wait_until("pcap-agent detaches from veth0", TIMEOUT, || {
        Ok(pair.a.tcx_programs("veth0")?.is_empty())
    })?;
    reference::sync_references(&pair.a, "10.0.0.2", &[&reference_file])?;
    drop(tcpdump);

    // ICMP echo requests and replies (the marker's port unreachable is not ours).
    let is_icmp = |p: &&Packet| matches!(p.icmp_type(), Some(0 | 8));
    let reference = captures::read_file(&reference_file)?;
    let reference: Vec<&Packet> = reference.packets.iter().filter(is_icmp).collect();
    let ours = captures::read_file(&ours)?;
    ensure!(
        ours.packets.len() == count,
        "tshark: {} packets",
        ours.packets.len()
    );
    ensure!(
        reference.len() == count,
        "tcpdump: {} ICMP packets",
        reference.len()
    );
    for (i, (a, b)) in ours.packets.iter().zip(&reference).enumerate() {
        ensure!(a.data == b.data, "packet {i}: bytes differ");
        ensure!(a.orig_len == b.orig_len, "packet {i}: lengths differ");
    }
    Ok(())
}

/// `program` as user nobody, with the home directory `home`.
fn as_nobody(program: &Path, home: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(program);
    with_home(&mut command, home);
    command
}

/// A user without root installs into their own personal extcap folder
/// (created), and their tshark lists our interfaces; uninstall removes the
/// link.
#[test]
fn a_user_installs_into_their_personal_folder() -> anyhow::Result<()> {
    let home = TempDir::new("extcap-user")?;
    std::fs::set_permissions(&*home, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let pcap = binary("pcap");
    let installed = as_nobody(&pcap, &home)
        .args(["extcap", "install"])
        .output()?;
    ensure!(installed.status.success(), "{installed:?}");
    let link = home.join(".config/wireshark/extcap/pcap");
    ensure!(
        String::from_utf8_lossy(&installed.stdout).trim() == link.to_string_lossy(),
        "pcap extcap install printed {:?}",
        String::from_utf8_lossy(&installed.stdout)
    );
    ensure!(std::fs::canonicalize(&link)? == std::fs::canonicalize(&pcap)?);

    let listed = as_nobody(Path::new("tshark"), &home).arg("-D").output()?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    ensure!(
        listed.contains("pcap_app (Cloud Foundry app (pcap))"),
        "tshark -D as nobody:\n{listed}"
    );

    let removed = as_nobody(&pcap, &home)
        .args(["extcap", "uninstall"])
        .output()?;
    ensure!(removed.status.success(), "{removed:?}");
    ensure!(link.symlink_metadata().is_err(), "the link is still there");
    Ok(())
}

/// BOSH instance IDs of the director stand-in: router 0 and 1 on vm0 and
/// vm1, diego-cell 0 on vm2.
const BOSH_IDS: [&str; 3] = [
    "7d1c2e3f-4a5b-4c6d-8e7f-901a2b3c4d50",
    "7d1c2e3f-4a5b-4c6d-8e7f-901a2b3c4d51",
    "7d1c2e3f-4a5b-4c6d-8e7f-901a2b3c4d52",
];

/// The capture programs attached to each VM's `eth0`.
fn vm_programs(cluster: &Cluster) -> anyhow::Result<Vec<usize>> {
    cluster
        .vms
        .iter()
        .map(|vm| Ok(vm.ns.tcx_programs("eth0")?.len()))
        .collect()
}

/// Waits until the VMs' `eth0` have `n[index]` capture programs attached.
fn wait_for_vm_programs(cluster: &Cluster, n: &[usize]) -> anyhow::Result<()> {
    wait_for_counts("the VMs' eth0", n, || vm_programs(cluster))
}

/// A cluster of 3 VMs behind the API with the BOSH resolver, the director
/// stand-in (deployment `cf`: router 0 and 1 on vm0 and vm1, diego-cell 0
/// on vm2) and its UAA, and a BOSH CLI configuration (alias `lab`, user
/// `admin`, as `bosh log-in` leaves it) whose access token expired.
struct BoshLab {
    // Dropped first: the servers go before the namespaces.
    _director: Server,
    _uaa_server: Server,
    uaa: Arc<Uaa>,
    cluster: Cluster,
    bosh_config: PathBuf,
    dir: TempDir,
}

impl BoshLab {
    fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("extcap-bosh")?;
        let mut cluster = Cluster::new(&dir, 3)?;
        let tls = cluster
            .pki
            .ca
            .leaf("bosh", &["127.0.0.1"], Validity::Current)?;
        let (uaa, uaa_server) = start_bosh_uaa(&cluster.control, &tls, &dir, "uaa-signing")?;
        let instance = |job: &str, vm: usize, index: u32| Instance {
            job: job.to_owned(),
            id: BOSH_IDS[vm].to_owned(),
            index,
            az: "z1".to_owned(),
            ips: vec![cluster.vms[vm].address()],
        };
        let instances = vec![
            instance("router", 0, 0),
            instance("router", 1, 1),
            instance("diego-cell", 2, 0),
        ];
        let director = start_director(&cluster.control, &tls, &uaa, ("cf", instances))?;
        let agent_config = cluster.agent_config("")?;
        cluster.start_agents(&agent_config)?;
        // The same BOSH user captures twice (pcap bosh and tshark) at once.
        let api_extra = format!(
            "[bosh]\ndirector_url = \"{}\"\ndirector_ca = {:?}\n\n\
             [limits]\nmax_captures_per_user_per_agent = 2\n",
            director.url(),
            cluster.pki.ca.certificate.display().to_string()
        );
        let api_config = cluster.api_config(None, &api_extra)?;
        cluster.start_api(&api_config)?;

        let config = serde_json::json!({
            "environments": [{
                "url": director.url(),
                "ca_cert": std::fs::read_to_string(&cluster.pki.ca.certificate)?,
                "alias": "lab",
                "username": "admin",
                "access_token_type": "bearer",
                "access_token": uaa.access_token("admin", "bosh_cli", -120)?,
                "refresh_token": uaa.refresh_token("admin", "bosh_cli")?,
            }],
        });
        let bosh_config = dir.join("bosh-config");
        std::fs::write(&bosh_config, yaml_serde::to_string(&config)?)?;
        Ok(Self {
            _director: director,
            _uaa_server: uaa_server,
            uaa,
            cluster,
            bosh_config,
            dir,
        })
    }
}

/// `capture` holds 5 pings each way of each router (ping_every_vm: 64 +
/// 100 × the VM's index bytes of data), whole, each on the interface named
/// by its group and instance, and nothing of the cell.
fn routers_pings(capture: &captures::Capture) -> anyhow::Result<()> {
    let size = |vm: usize| 14 + 20 + 8 + 64 + 100 * vm;
    for packet in &capture.packets {
        let vm = (0..2)
            .find(|&vm| packet.data.len() == size(vm))
            .with_context(|| format!("a packet of {} bytes", packet.data.len()))?;
        let interface = format!("router/{}/eth0", BOSH_IDS[vm]);
        ensure!(
            packet.interface.as_deref() == Some(&*interface),
            "a packet of vm{vm} on {:?}",
            packet.interface
        );
        ensure!(
            usize::try_from(packet.orig_len)? == packet.data.len(),
            "a packet was cut"
        );
    }
    for vm in 0..2 {
        let n = capture
            .packets
            .iter()
            .filter(|p| p.data.len() == size(vm))
            .count();
        ensure!(n == 10, "vm{vm}: {n} packets");
    }
    Ok(())
}

/// The BOSH VMs interface through tshark, with the BOSH CLI's login (an
/// expired access token, refreshed as `pcap bosh` refreshes it): the
/// instance group's VMs, packet for packet and byte for byte as `pcap bosh`
/// captures the same traffic beside it; closing tshark stops its capture at
/// the agents while `pcap bosh` goes on, and nothing stays attached.
#[test]
fn tshark_captures_bosh_vms_like_pcap_bosh() -> anyhow::Result<()> {
    let lab = BoshLab::start()?;
    let (dir, cluster, uaa) = (&lab.dir, &lab.cluster, &lab.uaa);
    let login = |command: &mut Command| {
        with_home(command, dir)
            .env("BOSH_CONFIG", &lab.bosh_config)
            .env_remove("PCAP_API")
            .env_remove("BOSH_ENVIRONMENT")
            .env_remove("BOSH_DEPLOYMENT");
    };

    let installed = Installed::new(dir)?;
    let ours = dir.join("pcap-bosh.pcapng");
    let theirs = dir.join("tshark.pcapng");
    let log = dir.join("extcap.log");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    // 5 requests and 5 replies on each of the two routers.
    let count = 20;
    let api = format!("https://{API_ADDRESS}");
    let ca = cluster.pki.ca.certificate.to_string_lossy();
    let log_path = log.to_string_lossy();
    let prefs = [
        ("environment", "lab"),
        ("deployment", "cf"),
        ("groups", "router"),
        ("api", api.as_str()),
        ("ca", &*ca),
        ("debugfile", &*log_path),
    ];
    let mut command = tshark(
        &installed,
        &cluster.control,
        "pcap_bosh",
        &prefs,
        count,
        &theirs,
    );
    login(&mut command);
    let tshark = Running::spawn(&mut command)?;
    // The extcap's `pcap bosh` says so in its log once each router's agent
    // attached: one capture's programs on each router, none on the cell.
    wait_until("the extcap's capture attaches", TIMEOUT, || {
        Ok(log_text().matches("capturing on").count() >= 2)
    })
    .with_context(|| format!("the extcap's log:\n{}", log_text()))?;
    let one = vm_programs(cluster)?;
    ensure!(
        one[0] > 0 && one[1] > 0 && one[2] == 0,
        "the extcap's capture attached {one:?}"
    );

    let mut command = cluster
        .control
        .command(binary("pcap").to_str().context("utf-8")?);
    command
        .args(["bosh", "--api", &api, "--ca"])
        .arg(&cluster.pki.ca.certificate)
        .args(["-e", "lab", "-d", "cf", "-n", "-g", "router", "-w"])
        .arg(&ours)
        .arg("icmp");
    login(&mut command);
    let mut pcap_bosh = Running::spawn(&mut command)?;
    pcap_bosh.wait_for("capturing on", 2)?;
    wait_for_vm_programs(cluster, &[2 * one[0], 2 * one[1], 0])?;

    ping_every_vm(cluster, 5)?;
    finish_with_log(tshark, &theirs, &log)?;
    // tshark closed the fifo: the extcap's capture stopped at the agents,
    // pcap bosh's goes on.
    wait_for_vm_programs(cluster, &one)?;
    let (status, stderr) = pcap_bosh.interrupt()?;
    ensure!(status.success(), "pcap bosh failed: {stderr:#?}");
    assert_agents_detach(cluster, TIMEOUT)?;
    // The extcap refreshed the expired login, and pcap bosh found the
    // token it wrote.
    let log_text = log_text();
    ensure!(
        log_text.contains("refreshed the access token"),
        "the extcap did not refresh the BOSH login:\n{log_text}"
    );
    ensure!(
        uaa.refreshes.load(std::sync::atomic::Ordering::Relaxed) == 1,
        "the login was refreshed more than once"
    );

    let theirs = same_as_ours("pcap bosh", &ours, &theirs, count)?;
    routers_pings(&theirs)
}
