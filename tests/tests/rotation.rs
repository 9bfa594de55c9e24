//! tcpdump's rotation flags (`-C`, `-G`, `-W`, `-z`) on `pcap-agent
//! capture -w` and on a remote capture written by `pcap capture -w`: every
//! file is valid on its own, and together they hold what tcpdump captured
//! of the same traffic, packet for packet and byte for byte.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir,
    agent_capture::{self, within},
    captures::{self, Capture, Direction, Packet},
    checks,
    cluster::ALICE_TOKEN,
    cluster_setup,
    netns::Pair,
    now_ns,
    process::{Running, binary},
    reference::{assert_readable, sync_references, tcpdump},
};

/// -C's unit: a million bytes.
const MB: u64 = 1_000_000;
/// What a file may hold past -C: the packet that crossed it (an Ethernet
/// frame of at most 1514 bytes in its block) and the statistics blocks.
const PAST_LIMIT: u64 = 2_048;

/// A `-z` script that appends its argument to `log`.
fn post_rotate_script(dir: &Path, log: &Path) -> anyhow::Result<PathBuf> {
    let script = dir.join("post-rotate.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" >> '{}'\n", log.display()),
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(script)
}

/// The files -z ran on, sorted.
fn post_rotated(log: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut ran: Vec<PathBuf> = std::fs::read_to_string(log)
        .with_context(|| format!("-z never ran ({})", log.display()))?
        .lines()
        .map(PathBuf::from)
        .collect();
    ran.sort();
    Ok(ran)
}

/// The capture files in `dir` whose names start with `prefix`, sorted.
fn files(dir: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix))
    });
    files.sort();
    Ok(files)
}

/// Every file read back, after tshark and capinfos accepted it; each has
/// its interface and statistics blocks, the statistics counting its own
/// packets.
fn read_all(files: &[PathBuf]) -> anyhow::Result<Vec<Capture>> {
    files
        .iter()
        .map(|file| {
            assert_readable(file)?;
            let capture = captures::read_file(file)?;
            ensure!(
                !capture.link_types.is_empty(),
                "{}: no interface block",
                file.display()
            );
            let delivered: u64 = capture
                .statistics
                .iter()
                .map(|s| s.user_delivered.unwrap_or(0))
                .sum();
            ensure!(
                !capture.statistics.is_empty() && delivered == capture.packets.len() as u64,
                "{}: {} packets, statistics {:?}",
                file.display(),
                capture.packets.len(),
                capture.statistics
            );
            Ok(capture)
        })
        .collect()
}

/// `-C`'s bound: each file is at most one packet (and its statistics) past
/// `limit`, and each but the last was closed only past it.
fn check_sizes(files: &[PathBuf], limit: u64) -> anyhow::Result<()> {
    for (i, file) in files.iter().enumerate() {
        let size = std::fs::metadata(file)?.len();
        ensure!(
            size <= limit + PAST_LIMIT,
            "{}: {size} bytes",
            file.display()
        );
        if i + 1 < files.len() {
            ensure!(size > limit, "{}: closed at {size} bytes", file.display());
        }
    }
    Ok(())
}

/// `ours` (in order) holds, per direction, exactly the packets tcpdump wrote
/// to `reference_in` and `reference_out` within `from..=to`.
fn same_as_tcpdump(
    ours: &[Packet],
    references: [&Path; 2],
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let ours = within(ours, from, to);
    for (direction, reference) in [Direction::Inbound, Direction::Outbound]
        .into_iter()
        .zip(references)
    {
        let reference = within(&captures::read_file(reference)?.packets, from, to);
        let mine: Vec<Packet> = ours
            .iter()
            .filter(|p| p.direction == Some(direction))
            .cloned()
            .collect();
        let what = format!("{direction:?}");
        checks::same_packets(&what, &mine, &reference, |p| (p.orig_len, &p.data))?;
        checks::stamped_alike(&what, &mine, &reference)?;
    }
    Ok(())
}

/// Pings from a to b with 8000-byte payloads (fragmented): about 16 kB on
/// veth1 per ping.
fn big_pings(pair: &Pair, count: u32) -> anyhow::Result<()> {
    pair.a.sh(&format!(
        "ping -q -c {count} -i 0.002 -s 8000 -W 1 10.0.0.2"
    ))?;
    Ok(())
}

/// `pcap-agent capture -i veth1 -w FILE ARGS` in b, and tcpdump beside it
/// per direction.
struct Captured {
    ours: Running,
    tcpdump: [Running; 2],
    references: [PathBuf; 2],
}

impl Captured {
    fn start(pair: &Pair, dir: &Path, file: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let ours = agent_capture::start_writing(&pair.b, file, &[&["-i", "veth1"], args].concat())?;
        let references = [dir.join("in.pcap"), dir.join("out.pcap")];
        let tcpdump = [
            tcpdump(&pair.b, "veth1", "in", &references[0])?,
            tcpdump(&pair.b, "veth1", "out", &references[1])?,
        ];
        Ok(Self {
            ours,
            tcpdump,
            references,
        })
    }

    /// Waits until the references hold everything so far, then stops ours
    /// with SIGINT (Ctrl-C) and tcpdump.
    fn stop(self, pair: &Pair) -> anyhow::Result<[PathBuf; 2]> {
        sync_references(&pair.a, "10.0.0.2", &[&self.references[0]])?;
        sync_references(&pair.b, "10.0.0.1", &[&self.references[1]])?;
        let (status, lines) = self.ours.interrupt()?;
        ensure!(status.success(), "pcap-agent failed: {lines:?}");
        for tcpdump in self.tcpdump {
            tcpdump.interrupt()?;
        }
        Ok(self.references)
    }
}

#[test]
fn size_rotation_splits_tcpdumps_capture_and_runs_z_on_every_file() -> anyhow::Result<()> {
    let pair = Pair::new("rotc")?;
    // No router solicitations or listener reports among the pings.
    pair.disable_ipv6()?;
    let dir = TempDir::new("rotc")?;
    let log = dir.join("z.log");
    let script = post_rotate_script(&dir, &log)?;
    let base = dir.join("cap.pcapng");
    let captured = Captured::start(
        &pair,
        &dir,
        &base,
        &["-C", "1", "-z", script.to_str().expect("utf-8")],
    )?;
    let from = now_ns();
    big_pings(&pair, 250)?;
    let to = now_ns();
    let references = captured.stop(&pair)?;

    // tcpdump's names: cap.pcapng, then cap.pcapng1, cap.pcapng2...
    let files = files(&dir, "cap.pcapng")?;
    ensure!(files.len() >= 3, "only {files:?}");
    let mut expected = vec![base.clone()];
    expected.extend((1..files.len()).map(|n| PathBuf::from(format!("{}{n}", base.display()))));
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    ensure!(files == expected_sorted, "files {files:?}");
    check_sizes(&expected, MB)?;
    let ours: Vec<Packet> = read_all(&expected)?
        .into_iter()
        .flat_map(|c| c.packets)
        .collect();
    same_as_tcpdump(&ours, [&references[0], &references[1]], from, to)?;
    // -z ran on every file, the last one (closed by SIGINT) too.
    ensure!(
        post_rotated(&log)? == files,
        "-z ran on {:?}",
        post_rotated(&log)?
    );
    Ok(())
}

#[test]
fn a_ring_keeps_the_newest_files() -> anyhow::Result<()> {
    let pair = Pair::new("rotw")?;
    // No router solicitations or listener reports among the pings.
    pair.disable_ipv6()?;
    let dir = TempDir::new("rotw")?;
    let base = dir.join("ring");
    let captured = Captured::start(&pair, &dir, &base, &["-C", "1", "-W", "3"])?;
    big_pings(&pair, 350)?;
    let to = now_ns();
    let references = captured.stop(&pair)?;

    // Names padded to COUNT-1's width: ring0, ring1, ring2, and no other.
    let files = files(&dir, "ring")?;
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    ensure!(names == ["ring0", "ring1", "ring2"], "files {names:?}");
    let mut captures = read_all(&files)?;
    // Oldest first: the file whose first packet is the oldest.
    captures.sort_by_key(|c| c.packets.first().map_or(u64::MAX, |p| p.unix_ns));
    let ours: Vec<Packet> = captures.into_iter().flat_map(|c| c.packets).collect();
    let first = ours.first().context("the ring is empty")?.unix_ns;
    // More than three files' worth went by: the ring dropped the oldest.
    let all_in = captures::read_file(&references[0])?.packets.len()
        + captures::read_file(&references[1])?.packets.len();
    ensure!(
        ours.len() < all_in,
        "the ring holds {} of {all_in} packets",
        ours.len()
    );
    // What it kept is everything tcpdump saw from its first packet on.
    same_as_tcpdump(&ours, [&references[0], &references[1]], first, to)?;
    Ok(())
}

#[test]
fn time_rotation_is_aligned_to_the_wall_clock() -> anyhow::Result<()> {
    let pair = Pair::new("rotg")?;
    // No router solicitations or listener reports among the pings.
    pair.disable_ipv6()?;
    let dir = TempDir::new("rotg")?;
    let log = dir.join("z.log");
    let script = post_rotate_script(&dir, &log)?;
    let template = dir.join("t-%H%M%S.pcapng");
    let captured = Captured::start(
        &pair,
        &dir,
        &template,
        &["-G", "1", "-z", script.to_str().expect("utf-8")],
    )?;
    let from = now_ns();
    pair.a.sh("ping -q -c 60 -i 0.05 -W 1 10.0.0.2")?;
    let to = now_ns();
    let references = captured.stop(&pair)?;

    let files = files(&dir, "t-")?;
    ensure!(files.len() >= 3, "only {files:?}");
    let captures = read_all(&files)?;
    for (file, capture) in files.iter().zip(&captures) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for packet in &capture.packets {
            // Each packet lies in the second the file is named after (UTC).
            let second = packet.unix_ns / 1_000_000_000;
            let expected = format!(
                "t-{:02}{:02}{:02}.pcapng",
                second / 3600 % 24,
                second / 60 % 60,
                second % 60
            );
            ensure!(name == expected, "{name} holds a packet of {expected}");
        }
    }
    let ours: Vec<Packet> = captures.into_iter().flat_map(|c| c.packets).collect();
    same_as_tcpdump(&ours, [&references[0], &references[1]], from, to)?;
    ensure!(
        post_rotated(&log)? == files,
        "-z ran on {:?}",
        post_rotated(&log)?
    );
    Ok(())
}

#[test]
fn a_remote_capture_rotates_where_the_cli_writes() -> anyhow::Result<()> {
    let dir = TempDir::new("rotr")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let vm = &cluster.vms[0];
    let reference = dir.join("ref.pcap");
    let tcpdump = tcpdump(&vm.ns, "eth0", "inout", &reference)?;
    let base = dir.join("remote.pcapng");
    let log = dir.join("z.log");
    let script = post_rotate_script(&dir, &log)?;
    let mut cli = Running::spawn(&mut cluster.cli(
        ALICE_TOKEN,
        &[
            "-w",
            base.to_str().expect("utf-8"),
            "-C",
            "1",
            "-z",
            script.to_str().expect("utf-8"),
        ],
    ))?;
    cli.wait_for("capturing on", 1)?;
    vm.peer.sh(&format!(
        "ping -q -c 200 -i 0.002 -s 8000 {}",
        vm.data_address()
    ))?;
    sync_references(&vm.peer, &vm.data_address(), &[&reference])?;
    let (status, lines) = cli.interrupt()?;
    ensure!(status.success(), "pcap failed: {lines:#?}");
    tcpdump.interrupt()?;

    let files = files(&dir, "remote.pcapng")?;
    ensure!(files.len() >= 3, "only {files:?}");
    let mut ordered = vec![base.clone()];
    ordered.extend((1..files.len()).map(|n| PathBuf::from(format!("{}{n}", base.display()))));
    check_sizes(&ordered, MB)?;
    let ours: Vec<Packet> = read_all(&ordered)?
        .into_iter()
        .flat_map(|c| c.packets)
        .collect();
    // Both ran longer than the traffic: compare the packets as multisets
    // of bytes, as the distributed tests do.
    let key = |packets: &[Packet]| {
        let mut keys: Vec<(u32, Vec<u8>)> = packets
            .iter()
            .map(|p| (p.orig_len, p.data.clone()))
            .collect();
        keys.sort();
        keys
    };
    let reference = captures::read_file(&reference)?.packets;
    ensure!(
        key(&ours) == key(&reference),
        "{} packets in the files, tcpdump {}",
        ours.len(),
        reference.len()
    );
    // The CLI ran -z on every file, the last one (after Ctrl-C) too.
    ensure!(
        post_rotated(&log)? == files,
        "-z ran on {:?}",
        post_rotated(&log)?
    );
    Ok(())
}

#[test]
fn count_duration_and_sigterm_end_rotated_captures_validly() -> anyhow::Result<()> {
    let pair = Pair::new("rote")?;
    // No router solicitations or listener reports among the pings.
    pair.disable_ipv6()?;
    let dir = TempDir::new("rote")?;
    let log = dir.join("z.log");
    let script = post_rotate_script(&dir, &log)?;
    let script = script.to_str().expect("utf-8");
    // -c: the capture ends by itself after 1500 packets (about 2 MB).
    let counted = dir.join("count");
    let capture = agent_capture::start_writing(
        &pair.b,
        &counted,
        &["-i", "veth1", "-C", "1", "-c", "1500", "-z", script],
    )?;
    big_pings(&pair, 250)?;
    let (status, lines) = capture.wait()?;
    ensure!(status.success(), "-c: {lines:?}");
    let counted_files = files(&dir, "count")?;
    ensure!(counted_files.len() >= 2, "-c: {counted_files:?}");
    let packets: usize = read_all(&counted_files)?
        .iter()
        .map(|c| c.packets.len())
        .sum();
    ensure!(packets == 1500, "-c 1500 wrote {packets} packets");
    // --duration: ends by itself; SIGTERM: ends as Ctrl-C does.
    let timed = dir.join("timed-%H%M%S");
    let capture = agent_capture::start_writing(
        &pair.b,
        &timed,
        &["-i", "veth1", "-G", "1", "--duration", "2.5", "-z", script],
    )?;
    pair.a.sh("ping -q -c 20 -i 0.05 -W 1 10.0.0.2")?;
    let (status, lines) = capture.wait()?;
    ensure!(status.success(), "--duration: {lines:?}");
    let termed = dir.join("termed");
    let capture =
        agent_capture::start_writing(&pair.b, &termed, &["-i", "veth1", "-C", "1", "-z", script])?;
    big_pings(&pair, 100)?;
    capture.signal(nix::sys::signal::Signal::SIGTERM)?;
    let (status, lines) = capture.wait()?;
    ensure!(status.success(), "SIGTERM: {lines:?}");

    let timed_files = files(&dir, "timed-")?;
    ensure!(timed_files.len() >= 2, "--duration: {timed_files:?}");
    let termed_files = files(&dir, "termed")?;
    ensure!(termed_files.len() >= 2, "SIGTERM: {termed_files:?}");
    read_all(&timed_files)?;
    read_all(&termed_files)?;
    let mut every = [counted_files, timed_files, termed_files].concat();
    every.sort();
    ensure!(
        post_rotated(&log)? == every,
        "-z ran on {:?}",
        post_rotated(&log)?
    );
    Ok(())
}

#[test]
fn rotation_flags_are_checked_and_named() -> anyhow::Result<()> {
    let agent = binary("pcap-agent");
    for (args, expected) in [
        (&["-i", "lo", "-C", "1"][..], "give -w FILE"),
        (&["-i", "lo", "-w", "-", "-G", "1"], "not stdout"),
        (
            &["-i", "lo", "-w", "f", "-W", "2"],
            "-W limits the files -C or -G make",
        ),
        (&["-i", "lo", "-w", "f", "-C", "0"], "-C <SIZE>"),
        (&["-i", "lo", "-w", "f", "-G", "99999999"], "-G <SECONDS>"),
        (&["-i", "lo", "-w", "f", "-W", "0", "-C", "1"], "-W <COUNT>"),
    ] {
        let output = Command::new(&agent).arg("capture").args(args).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            !output.status.success() && stderr.contains(expected),
            "pcap-agent capture {args:?}: {stderr}"
        );
    }
    let output = Command::new(binary("pcap"))
        .args([
            "capture",
            "--api",
            "https://127.0.0.1:1",
            "--target",
            "t",
            "-C",
            "1",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("give -w FILE"),
        "pcap capture -C 1: {stderr}"
    );
    Ok(())
}

/// A classic pcap (microseconds, Ethernet) of `count` 1000-byte frames,
/// one every millisecond from 2023-11-14T22:13:20Z, each numbered in its
/// first bytes.
fn write_pcap(file: &Path, count: u32) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    for value in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 262_144, 1] {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    for n in 0..count {
        let (seconds, micros) = (1_700_000_000 + n / 1000, (n % 1000) * 1000);
        for value in [seconds, micros, 1000, 1000] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let mut frame = vec![0; 1000];
        frame[..4].copy_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(&frame);
    }
    std::fs::write(file, bytes)?;
    Ok(())
}

#[test]
fn reading_a_file_splits_it_as_tcpdump_does() -> anyhow::Result<()> {
    let dir = TempDir::new("rotf")?;
    let input = dir.join("in.pcap");
    write_pcap(&input, 3000)?;
    let log = dir.join("z.log");
    let script = post_rotate_script(&dir, &log)?;
    let ours = dir.join("ours");
    let output = Command::new(binary("pcap-agent"))
        .args(["capture", "-r"])
        .arg(&input)
        .arg("-w")
        .arg(&ours)
        .args(["--format", "pcap", "-C", "1", "-z"])
        .arg(&script)
        .output()?;
    ensure!(
        output.status.success(),
        "pcap-agent -r: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = Command::new("tcpdump")
        .args(["-Z", "root", "-r"])
        .arg(&input)
        .arg("-w")
        .arg(dir.join("theirs"))
        .args(["-C", "1"])
        .output()?;
    ensure!(
        output.status.success(),
        "tcpdump -r: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The same files, cut at the same packets (a pcap record is as long in
    // both), with the same packets.
    let (ours, theirs) = (files(&dir, "ours")?, files(&dir, "theirs")?);
    ensure!(ours.len() == 4 && theirs.len() == 4, "{ours:?} {theirs:?}");
    for (mine, reference) in ours.iter().zip(&theirs) {
        assert_readable(mine)?;
        let (mine, reference) = (captures::read_file(mine)?, captures::read_file(reference)?);
        checks::same_packets("-r -C 1", &mine.packets, &reference.packets, |p| {
            (p.unix_ns, p.orig_len, &p.data)
        })?;
    }
    ensure!(
        post_rotated(&log)? == ours,
        "-z ran on {:?}",
        post_rotated(&log)?
    );

    // -G splits by the packets' own times.
    let timed = dir.join("g-%H%M%S.pcapng");
    let output = Command::new(binary("pcap-agent"))
        .args(["capture", "-r"])
        .arg(&input)
        .arg("-w")
        .arg(&timed)
        .args(["-G", "1"])
        .output()?;
    ensure!(output.status.success(), "-r -G 1: {output:?}");
    let names: Vec<String> = files(&dir, "g-")?
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    ensure!(
        names == ["g-221320.pcapng", "g-221321.pcapng", "g-221322.pcapng"],
        "{names:?}"
    );
    let counts: Vec<usize> = read_all(&files(&dir, "g-")?)?
        .iter()
        .map(|c| c.packets.len())
        .collect();
    ensure!(counts == [1000, 1000, 1000], "{counts:?}");
    Ok(())
}
