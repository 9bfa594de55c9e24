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
    process::{Running, binary, run_ok},
    reference::{assert_readable, sync_references, tcpdump},
};

/// -C's unit: a million bytes.
const MB: u64 = 1_000_000;
/// What a file may hold past -C: the packet that crossed it (an Ethernet
/// frame of at most 1514 bytes in its block) and the statistics blocks.
const PAST_LIMIT: u64 = 2_048;

/// A `-z` script that appends its argument to a log, and what it logged.
struct PostRotate {
    script: PathBuf,
    log: PathBuf,
}

impl PostRotate {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let (script, log) = (dir.join("post-rotate.sh"), dir.join("z.log"));
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$1\" >> '{}'\n", log.display()),
        )?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(Self { script, log })
    }

    /// The script, as `-z`'s argument.
    fn arg(&self) -> &str {
        self.script.to_str().expect("utf-8")
    }

    /// -z ran on exactly `files` (sorted), each once.
    fn ran_on(&self, files: &[PathBuf]) -> anyhow::Result<()> {
        let mut ran: Vec<PathBuf> = std::fs::read_to_string(&self.log)
            .with_context(|| format!("-z never ran ({})", self.log.display()))?
            .lines()
            .map(PathBuf::from)
            .collect();
        ran.sort();
        ensure!(ran == files, "-z ran on {ran:?}, not on {files:?}");
        Ok(())
    }
}

/// tcpdump's names for `count` files of `-C` from `base`: `base`, then
/// `base1`, `base2`...
fn numbered(base: &Path, count: usize) -> Vec<PathBuf> {
    let mut names = vec![base.to_path_buf()];
    names.extend((1..count).map(|n| PathBuf::from(format!("{}{n}", base.display()))));
    names
}

/// The capture files in `dir` whose names start with `prefix`, sorted; at
/// least `at_least` of them.
fn at_least(dir: &Path, prefix: &str, at_least: usize) -> anyhow::Result<Vec<PathBuf>> {
    let files = files(dir, prefix)?;
    ensure!(files.len() >= at_least, "{prefix}: only {files:?}");
    Ok(files)
}

/// The files' names.
fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The packets of every capture, file after file.
fn all_packets(captures: Vec<Capture>) -> Vec<Packet> {
    captures.into_iter().flat_map(|c| c.packets).collect()
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
/// to its files between `from` and the end of the traffic.
fn same_as_tcpdump(ours: &[Packet], stopped: &Stopped, from: u64) -> anyhow::Result<()> {
    let to = stopped.to;
    let ours = within(ours, from, to);
    for (direction, reference) in [Direction::Inbound, Direction::Outbound]
        .into_iter()
        .zip(&stopped.references)
    {
        let reference = within(&captures::read_file(reference)?.packets, from, to);
        checks::same_in_direction(&ours, &reference, direction)?;
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

/// A veth pair with IPv6 off (no router solicitations or listener reports
/// among the pings), a directory for the files, and a `-z` script in it.
struct Rig {
    pair: Pair,
    dir: TempDir,
    z: PostRotate,
}

impl Rig {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let pair = Pair::without_ipv6(tag)?;
        let dir = TempDir::new(tag)?;
        let z = PostRotate::new(&dir)?;
        Ok(Self { pair, dir, z })
    }
}

/// `pcap-agent capture -i veth1 -w FILE ARGS` in b, and tcpdump beside it
/// per direction, since `from`.
struct Captured {
    ours: Running,
    tcpdump: [Running; 2],
    references: [PathBuf; 2],
    from: u64,
}

/// tcpdump's files (inbound, outbound) of a stopped capture, and the time
/// from its start to the end of its traffic.
struct Stopped {
    references: [PathBuf; 2],
    from: u64,
    to: u64,
}

impl Captured {
    /// Starts both, ours writing to `name` in the rig's directory.
    fn start(rig: &Rig, name: &str, args: &[&str]) -> anyhow::Result<Self> {
        let (pair, file) = (&rig.pair, rig.dir.join(name));
        let ours =
            agent_capture::start_writing(&pair.b, &file, &[&["-i", "veth1"], args].concat())?;
        let references = [rig.dir.join("in.pcap"), rig.dir.join("out.pcap")];
        let tcpdump = [
            tcpdump(&pair.b, "veth1", "in", &references[0])?,
            tcpdump(&pair.b, "veth1", "out", &references[1])?,
        ];
        Ok(Self {
            ours,
            tcpdump,
            references,
            from: now_ns(),
        })
    }

    /// Ends the traffic's time; waits until the references hold everything
    /// so far, then stops ours with SIGINT (Ctrl-C) and tcpdump.
    fn stop(self, pair: &Pair) -> anyhow::Result<Stopped> {
        let to = now_ns();
        sync_references(&pair.a, "10.0.0.2", &[&self.references[0]])?;
        sync_references(&pair.b, "10.0.0.1", &[&self.references[1]])?;
        let (status, lines) = self.ours.interrupt()?;
        ensure!(status.success(), "pcap-agent failed: {lines:?}");
        for tcpdump in self.tcpdump {
            tcpdump.interrupt()?;
        }
        Ok(Stopped {
            references: self.references,
            from: self.from,
            to,
        })
    }
}

#[test]
fn size_rotation_splits_tcpdumps_capture_and_runs_z_on_every_file() -> anyhow::Result<()> {
    let rig = Rig::new("rotc")?;
    let captured = Captured::start(&rig, "cap.pcapng", &["-C", "1", "-z", rig.z.arg()])?;
    big_pings(&rig.pair, 250)?;
    let stopped = captured.stop(&rig.pair)?;

    // tcpdump's names: cap.pcapng, then cap.pcapng1, cap.pcapng2...
    let files = at_least(&rig.dir, "cap.pcapng", 3)?;
    let expected = numbered(&rig.dir.join("cap.pcapng"), files.len());
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    ensure!(files == expected_sorted, "files {files:?}");
    check_sizes(&expected, MB)?;
    let ours = all_packets(read_all(&expected)?);
    same_as_tcpdump(&ours, &stopped, stopped.from)?;
    // -z ran on every file, the last one (closed by SIGINT) too.
    rig.z.ran_on(&files)
}

#[test]
fn a_ring_keeps_the_newest_files() -> anyhow::Result<()> {
    let rig = Rig::new("rotw")?;
    let captured = Captured::start(&rig, "ring", &["-C", "1", "-W", "3"])?;
    big_pings(&rig.pair, 350)?;
    let stopped = captured.stop(&rig.pair)?;

    // Names padded to COUNT-1's width: ring0, ring1, ring2, and no other.
    let files = files(&rig.dir, "ring")?;
    ensure!(
        names(&files) == ["ring0", "ring1", "ring2"],
        "files {files:?}"
    );
    let mut captures = read_all(&files)?;
    // Oldest first: the file whose first packet is the oldest.
    captures.sort_by_key(|c| c.packets.first().map_or(u64::MAX, |p| p.unix_ns));
    let ours = all_packets(captures);
    let first = ours.first().context("the ring is empty")?.unix_ns;
    // More than three files' worth went by: the ring dropped the oldest.
    let all_in = captures::read_file(&stopped.references[0])?.packets.len()
        + captures::read_file(&stopped.references[1])?.packets.len();
    ensure!(
        ours.len() < all_in,
        "the ring holds {} of {all_in} packets",
        ours.len()
    );
    // What it kept is everything tcpdump saw from its first packet on.
    same_as_tcpdump(&ours, &stopped, first)
}

#[test]
fn time_rotation_is_aligned_to_the_wall_clock() -> anyhow::Result<()> {
    let rig = Rig::new("rotg")?;
    let captured = Captured::start(&rig, "t-%H%M%S.pcapng", &["-G", "1", "-z", rig.z.arg()])?;
    rig.pair.a.sh("ping -q -c 60 -i 0.05 -W 1 10.0.0.2")?;
    let stopped = captured.stop(&rig.pair)?;

    let files = at_least(&rig.dir, "t-", 3)?;
    let captures = read_all(&files)?;
    for (name, capture) in names(&files).iter().zip(&captures) {
        for packet in &capture.packets {
            // Each packet lies in the second the file is named after (UTC).
            let second = packet.unix_ns / 1_000_000_000;
            let expected = format!(
                "t-{:02}{:02}{:02}.pcapng",
                second / 3600 % 24,
                second / 60 % 60,
                second % 60
            );
            ensure!(*name == expected, "{name} holds a packet of {expected}");
        }
    }
    same_as_tcpdump(&all_packets(captures), &stopped, stopped.from)?;
    rig.z.ran_on(&files)
}

#[test]
fn a_remote_capture_rotates_where_the_cli_writes() -> anyhow::Result<()> {
    let dir = TempDir::new("rotr")?;
    let cluster = cluster_setup::running(&dir, 1, "", "")?;
    let vm = &cluster.vms[0];
    let reference = dir.join("ref.pcap");
    let base = dir.join("remote.pcapng");
    let z = PostRotate::new(&dir)?;
    let base_arg = base.to_str().expect("utf-8");
    let mut cli = cluster.cli(ALICE_TOKEN, &["-w", base_arg, "-C", "1", "-z", z.arg()]);
    cluster_setup::beside_tcpdump(&cluster, "inout", &reference, &mut cli, || {
        vm.peer.sh(&format!(
            "ping -q -c 200 -i 0.002 -s 8000 {}",
            vm.data_address()
        ))?;
        Ok(())
    })?;

    let files = at_least(&dir, "remote.pcapng", 3)?;
    let ordered = numbered(&base, files.len());
    check_sizes(&ordered, MB)?;
    let ours = all_packets(read_all(&ordered)?);
    // Both ran longer than the traffic: compare the packets as multisets
    // of bytes, as the distributed tests do.
    let reference = captures::read_file(&reference)?.packets;
    checks::same_packets_in_any_order("-C 1", &ours, &reference)?;
    // The CLI ran -z on every file, the last one (after Ctrl-C) too.
    z.ran_on(&files)
}

#[test]
fn count_duration_and_sigterm_end_rotated_captures_validly() -> anyhow::Result<()> {
    let Rig { pair, dir, z } = Rig::new("rote")?;
    let capture = |file: &str, args: &[&str]| {
        let args = [&["-i", "veth1"], args, &["-z", z.arg()]].concat();
        agent_capture::start_writing(&pair.b, &dir.join(file), &args)
    };
    // -c: the capture ends by itself after 1500 packets (about 2 MB).
    let counted = capture("count", &["-C", "1", "-c", "1500"])?;
    big_pings(&pair, 250)?;
    let (status, lines) = counted.wait()?;
    ensure!(status.success(), "-c: {lines:?}");
    let counted_files = at_least(&dir, "count", 2)?;
    let packets: usize = read_all(&counted_files)?
        .iter()
        .map(|c| c.packets.len())
        .sum();
    ensure!(packets == 1500, "-c 1500 wrote {packets} packets");
    // --duration: ends by itself; SIGTERM: ends as Ctrl-C does.
    let timed = capture("timed-%H%M%S", &["-G", "1", "--duration", "2.5"])?;
    // -G starts a file on a packet of a later second, as tcpdump does: the
    // pings last 1.45 s, so they always span two seconds.
    pair.a.sh("ping -q -c 30 -i 0.05 -W 1 10.0.0.2")?;
    let (status, lines) = timed.wait()?;
    ensure!(status.success(), "--duration: {lines:?}");
    let termed = capture("termed", &["-C", "1"])?;
    big_pings(&pair, 100)?;
    termed.signal(nix::sys::signal::Signal::SIGTERM)?;
    let (status, lines) = termed.wait()?;
    ensure!(status.success(), "SIGTERM: {lines:?}");

    let timed_files = at_least(&dir, "timed-", 2)?;
    let termed_files = at_least(&dir, "termed", 2)?;
    read_all(&timed_files)?;
    read_all(&termed_files)?;
    let mut every = [counted_files, timed_files, termed_files].concat();
    every.sort();
    z.ran_on(&every)
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
        checks::fails_with(&format!("pcap-agent capture {args:?}"), &output, expected)?;
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
    checks::fails_with("pcap capture -C 1", &output, "give -w FILE")
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
    let z = PostRotate::new(&dir)?;
    // `PROGRAM -r in.pcap -w FILE ARGS`, which must succeed.
    let read = |program: &mut Command, file: &str, args: &[&str]| {
        program.arg("-r").arg(&input).arg("-w").arg(dir.join(file));
        run_ok(program.args(args), &format!("{file}: -r {args:?}"))
    };
    let agent = || {
        let mut command = Command::new(binary("pcap-agent"));
        command.arg("capture");
        command
    };
    read(
        &mut agent(),
        "ours",
        &["--format", "pcap", "-C", "1", "-z", z.arg()],
    )?;
    read(
        Command::new("tcpdump").args(["-Z", "root"]),
        "theirs",
        &["-C", "1"],
    )?;
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
    z.ran_on(&ours)?;

    // -G splits by the packets' own times.
    read(&mut agent(), "g-%H%M%S.pcapng", &["-G", "1"])?;
    let names = names(&files(&dir, "g-")?);
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
