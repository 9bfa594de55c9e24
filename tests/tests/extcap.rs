//! `pcap` as a Wireshark extcap program, through the real tshark: `pcap
//! extcap install` links it into Wireshark's extcap folder (the global one
//! for root: Wireshark 4.0 has no personal extcap folder, and ignores
//! WIRESHARK_EXTCAP_DIR when run as root), `tshark -D` lists its
//! interfaces, and `tshark -i pcap_app` / `-i pcap_local` capture the same
//! packets as `pcap app` and tcpdump on the same traffic.
//!
//! These tests need root (namespaces, eBPF) and tshark (`cargo xtask
//! setup`). They install into the global folder one at a time and remove
//! the link when they end, even on failure; one installs as user nobody
//! into a private folder (WIRESHARK_EXTCAP_DIR) instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir, app_capture,
    captures::{self, Packet},
    landscape::{AppSpec, Landscape},
    netns::{Netns, Pair},
    process::{Running, binary, wait_until},
    reference,
    servers::uaa::UaaUser,
    stand_ins::{CF_SCOPES, CfLandscape, space_role},
};

const APP: &str = "my-app";
/// How long a capture may take to attach, or to end once it has its packets.
const TIMEOUT: Duration = Duration::from_mins(1);

/// The link `pcap extcap install` made, removed on drop. One at a time:
/// they share Wireshark's folder.
struct Installed {
    link: PathBuf,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Installed {
    fn new() -> anyhow::Result<Self> {
        static ONE: Mutex<()> = Mutex::new(());
        let guard = ONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let output = Command::new(binary("pcap"))
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
            _one_at_a_time: guard,
        };
        // The folder tshark shows, and a link to our pcap.
        let folders = Command::new("tshark").args(["-G", "folders"]).output()?;
        let folders = String::from_utf8_lossy(&folders.stdout);
        let dir = installed.link.parent().context("the link has a folder")?;
        ensure!(
            folders
                .lines()
                .any(|l| l.contains("Extcap path")
                    && l.trim_end().ends_with(&*dir.to_string_lossy())),
            "{} is not an extcap folder of tshark -G folders:\n{folders}",
            dir.display()
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

impl Drop for Installed {
    fn drop(&mut self) {
        let removed = Command::new(binary("pcap"))
            .args(["extcap", "uninstall"])
            .output();
        if !removed.is_ok_and(|o| o.status.success()) || self.link.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// tshark in `ns` on our extcap interface `interface` with the options
/// `prefs` (`-o extcap.INTERFACE.NAME:VALUE`), capture filter `icmp`,
/// stopping after `count` packets, writing `file`.
fn tshark(
    ns: &Netns,
    interface: &str,
    prefs: &[(&str, &str)],
    count: usize,
    file: &Path,
) -> Command {
    let mut command = ns.command("tshark");
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
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
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

/// Packet bytes, sorted: the same multiset whatever the order in which
/// origins were merged.
fn sorted(packets: &[Packet]) -> Vec<Vec<u8>> {
    let mut data: Vec<Vec<u8>> = packets.iter().map(|p| p.data.clone()).collect();
    data.sort();
    data
}

#[test]
fn tshark_lists_our_interfaces() -> anyhow::Result<()> {
    let _installed = Installed::new()?;
    let output = Command::new("tshark").arg("-D").output()?;
    let listed = String::from_utf8_lossy(&output.stdout);
    for line in [
        "pcap_app (Cloud Foundry app (pcap))",
        "pcap_bosh (BOSH VMs (pcap))",
        "pcap_local (Local interface on a cell (pcap-agent))",
    ] {
        ensure!(listed.contains(line), "tshark -D lacks {line:?}:\n{listed}");
    }
    // The options are Wireshark preferences of each interface.
    let prefs = Command::new("tshark")
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
    Ok(())
}

#[test]
fn uninstall_removes_the_link() -> anyhow::Result<()> {
    let installed = Installed::new()?;
    let output = Command::new(binary("pcap"))
        .args(["extcap", "uninstall"])
        .output()?;
    ensure!(output.status.success(), "{output:?}");
    ensure!(
        installed.link.symlink_metadata().is_err(),
        "{} is still there",
        installed.link.display()
    );
    let listed = Command::new("tshark").arg("-D").output()?;
    ensure!(!String::from_utf8_lossy(&listed.stdout).contains("pcap_app"));
    Ok(())
}

#[test]
fn a_capture_without_an_app_name_is_an_error_wireshark_shows() -> anyhow::Result<()> {
    let _installed = Installed::new()?;
    let dir = TempDir::new("extcap-noapp")?;
    let output = Command::new("tshark")
        .args(["-i", "pcap_app", "-c", "1", "-a", "duration:20", "-w"])
        .arg(dir.join("out.pcapng"))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains("give the app's name"),
        "tshark did not show our error: {stderr}"
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
    let _installed = Installed::new()?;
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
        let mut command = tshark(&cf.landscape.control, "pcap_app", &prefs, count, file);
        command
            .env("CF_HOME", home)
            .env("HOME", &*cf.dir)
            .env_remove("PCAP_API");
        command
    };

    // A capture the API refuses once the fifo is open (dev already
    // captures): tshark ends and shows why.
    let refused = shark_of(&home, &cf.dir.join("refused.pcapng"))
        .args(["-a", "duration:60"])
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
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
    finish(tshark).with_context(|| {
        let got = captures::read_file(&theirs).map(|c| c.packets.len());
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        format!("tshark wrote {got:?} packets; the extcap's log:\n{log}")
    })?;
    // tshark closed the fifo: the extcap's capture stopped at the agents.
    wait_for_programs(&cf, &[0, 0])?;

    let ours = captures::read_file(&ours)?;
    let theirs = captures::read_file(&theirs)?;
    ensure!(
        ours.packets.len() == count,
        "pcap app: {} packets",
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
    let mut last = Vec::new();
    wait_until(
        &format!("the instances have {n:?} capture programs attached"),
        TIMEOUT,
        || {
            last = programs(cf)?;
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
    let _installed = Installed::new()?;
    let dir = TempDir::new("extcap-local")?;
    let reference_file = dir.join("tcpdump.pcap");
    let ours = dir.join("tshark.pcapng");
    let tcpdump = reference::tcpdump(&pair.a, "veth0", "inout", &reference_file)?;
    // 3 requests out, 3 replies in.
    let count = 6;
    let tshark = Running::spawn(&mut tshark(
        &pair.a,
        "pcap_local",
        &[("interface", "veth0")],
        count,
        &ours,
    ))?;
    wait_until("pcap-agent attaches to veth0", TIMEOUT, || {
        Ok(!pair.a.tcx_programs("veth0")?.is_empty())
    })?;
    pair.a.sh("ping -c 3 -i 0.05 -W 1 10.0.0.2")?;
    finish(tshark)?;
    wait_until("pcap-agent detaches from veth0", TIMEOUT, || {
        Ok(pair.a.tcx_programs("veth0")?.is_empty())
    })?;
    reference::sync_references(&pair.a, "10.0.0.2", &[&reference_file])?;
    drop(tcpdump);

    // ICMP echo requests and replies (the marker's port unreachable is not ours).
    let is_icmp = |p: &&Packet| {
        p.data.get(12..14) == Some(&[0x08, 0x00][..])
            && p.data.get(23) == Some(&1)
            && matches!(p.data.get(34), Some(0 | 8))
    };
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

/// `program` as user nobody, with Wireshark's extcap folder `dir`
/// (Wireshark honours WIRESHARK_EXTCAP_DIR only for users without special
/// privileges).
fn as_nobody(program: &Path, dir: &Path) -> Command {
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
        .arg(program)
        .env("HOME", dir)
        .env("WIRESHARK_EXTCAP_DIR", dir);
    command
}

/// A user without root installs into the folder `tshark -G folders` shows
/// them, and their tshark lists our interfaces; uninstall removes the link.
#[test]
fn a_user_installs_into_the_folder_tshark_shows() -> anyhow::Result<()> {
    let dir = TempDir::new("extcap-user")?;
    let folder = dir.join("extcap");
    std::fs::create_dir(&folder)?;
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let pcap = binary("pcap");
    let installed = as_nobody(&pcap, &folder)
        .args(["extcap", "install"])
        .output()?;
    ensure!(installed.status.success(), "{installed:?}");
    let link = folder.join("pcap");
    ensure!(
        String::from_utf8_lossy(&installed.stdout).trim() == link.to_string_lossy(),
        "pcap extcap install printed {:?}",
        String::from_utf8_lossy(&installed.stdout)
    );
    ensure!(std::fs::canonicalize(&link)? == std::fs::canonicalize(&pcap)?);

    let listed = as_nobody(Path::new("tshark"), &folder).arg("-D").output()?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    ensure!(
        listed.contains("pcap_app (Cloud Foundry app (pcap))"),
        "tshark -D as nobody:\n{listed}"
    );

    let removed = as_nobody(&pcap, &folder)
        .args(["extcap", "uninstall"])
        .output()?;
    ensure!(removed.status.success(), "{removed:?}");
    ensure!(link.symlink_metadata().is_err(), "the link is still there");
    Ok(())
}
