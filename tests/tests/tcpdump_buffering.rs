//! tcpdump's `-l` (line-buffered) and `-U` (packet-buffered) on
//! `pcap-agent capture`, against tcpdump with the same flags on the same
//! input, and the long form of `-Q`, `--direction`.
//!
//! A live capture flushes its output at least every 50 ms whatever the
//! flags, so `-l` and `-U` show where the input is a stream: `-r -` fed one
//! packet at a time through a pipe. Each packet's line (`-l`) or record
//! (`-U -w -`) must come out before the next packet goes in, as tcpdump's
//! do; the whole output then equals tcpdump's.
//!
//! The `-l`/`-U` tests run as ordinary processes; the `--direction` test
//! needs root (namespaces, eBPF).

use std::io::{Read as _, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use pcap_tests::{
    TempDir, agent_capture,
    captures::{self, Direction, Packet},
    checks,
    netns::Pair,
    process::binary,
    reference::tcpdump,
};

/// How long one packet may take to come out once it went in.
const PER_PACKET: Duration = Duration::from_secs(10);

/// A little-endian, microsecond pcap header for Ethernet.
fn pcap_header() -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    header.extend_from_slice(&2_u16.to_le_bytes());
    header.extend_from_slice(&4_u16.to_le_bytes());
    header.extend_from_slice(&0_i32.to_le_bytes());
    header.extend_from_slice(&0_u32.to_le_bytes());
    header.extend_from_slice(&262_144_u32.to_le_bytes());
    header.extend_from_slice(&1_u32.to_le_bytes());
    header
}

/// The internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> [u8; 2] {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Ping `seq` between 10.0.0.1 and 10.0.0.2 (a request when `request`,
/// else the reply) as a pcap record stamped `seq` seconds after 2026-01-01.
fn ping_record(seq: u16, request: bool) -> Vec<u8> {
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let (src, dst) = if request { (a, b) } else { (b, a) };
    let mut icmp = vec![if request { 8 } else { 0 }, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"pcap-buffering-test!");
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum);
    let total = u16::try_from(20 + icmp.len()).expect("small");
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&seq.to_be_bytes());
    ip.extend_from_slice(&[0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum);
    let mut frame = Vec::new();
    let (mac_a, mac_b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let (mac_src, mac_dst) = if request {
        (mac_a, mac_b)
    } else {
        (mac_b, mac_a)
    };
    frame.extend_from_slice(&mac_dst);
    frame.extend_from_slice(&mac_src);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&icmp);

    let length = u32::try_from(frame.len()).expect("small");
    let mut record = Vec::new();
    record.extend_from_slice(&(1_767_225_600 + u32::from(seq)).to_le_bytes());
    record.extend_from_slice(&(u32::from(request) * 250_000).to_le_bytes());
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&length.to_le_bytes());
    record.extend_from_slice(&frame);
    record
}

/// Three pings: six records.
fn records() -> Vec<Vec<u8>> {
    (1..=3)
        .flat_map(|seq| [ping_record(seq, true), ping_record(seq, false)])
        .collect()
}

/// A program reading pcap on stdin; what it writes to stdout is collected
/// as it comes. Killed on drop.
struct Streamed {
    child: Child,
    stdin: Option<ChildStdin>,
    chunks: Receiver<Vec<u8>>,
    out: Vec<u8>,
    what: String,
}

impl Streamed {
    fn spawn(what: &str, command: &mut Command) -> anyhow::Result<Self> {
        let mut child = command
            .env("TZ", "UTC")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {what}"))?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                if tx.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            chunks,
            out: Vec::new(),
            what: what.to_owned(),
        })
    }

    /// Writes `bytes` to the program's stdin, which stays open.
    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits, at most [`PER_PACKET`], until `done` holds for what came out.
    fn until(&mut self, step: &str, done: impl Fn(&[u8]) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + PER_PACKET;
        while !done(&self.out) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.out.extend_from_slice(&chunk),
                Err(_) => bail!(
                    "{}: nothing for {step} came out while its input stayed open; so far:\n{}",
                    self.what,
                    String::from_utf8_lossy(&self.out)
                ),
            }
        }
        Ok(())
    }

    /// Closes stdin; the whole output once the program exited 0.
    fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "{} failed: {status}", self.what);
        self.out.extend(self.chunks.iter().flatten());
        Ok(std::mem::take(&mut self.out))
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` on the pcap of [`records`], fed one record at a time: each
/// must make `shows(output, n)` hold for the `n` records fed so far before
/// the next goes in. The whole output.
fn streamed(
    what: &str,
    command: &mut Command,
    shows: impl Fn(&[u8], usize) -> bool,
) -> anyhow::Result<Vec<u8>> {
    let mut program = Streamed::spawn(what, command)?;
    program.feed(&pcap_header())?;
    for (i, record) in records().iter().enumerate() {
        program.feed(record)?;
        program.until(&format!("packet {}", i + 1), |out| shows(out, i + 1))?;
    }
    program.finish()
}

fn agent(args: &[&str]) -> Command {
    let mut command = Command::new(binary("pcap-agent"));
    command.args(["capture", "-r", "-"]).args(args);
    command
}

fn tcpdump_reading(args: &[&str]) -> Command {
    let mut command = Command::new("tcpdump");
    command.args(["-r", "-"]).args(args);
    command
}

/// `-l`: each packet's line comes out as soon as the packet is read, and
/// the lines are tcpdump's.
#[test]
fn line_buffered_prints_each_packet_as_it_is_read_like_tcpdump() -> anyhow::Result<()> {
    let lines = |out: &[u8], n: usize| out.split(|&b| b == b'\n').count() > n;
    let theirs = streamed("tcpdump -l", &mut tcpdump_reading(&["-l", "-nn"]), lines)?;
    let ours = streamed("pcap-agent -l", &mut agent(&["-l", "-nn"]), lines)?;
    let (ours, theirs) = (String::from_utf8(ours)?, String::from_utf8(theirs)?);
    ensure!(
        theirs.lines().count() == 6 && theirs.contains("ICMP echo request, id 4660, seq 1"),
        "tcpdump printed:\n{theirs}"
    );
    ensure!(ours == theirs, "ours:\n{ours}\ntcpdump:\n{theirs}");
    Ok(())
}

/// What `out` holds of a capture file, if it parses: its packets.
fn parsed(out: &[u8]) -> Option<Vec<Packet>> {
    captures::parse(out).ok().map(|c| c.packets)
}

/// `-U -w -`: each packet's record is written as soon as the packet is
/// read, in pcap and pcapng, and the packets are tcpdump's.
#[test]
fn packet_buffered_writes_each_packet_as_it_is_read_like_tcpdump() -> anyhow::Result<()> {
    let records = |out: &[u8], n: usize| parsed(out).is_some_and(|p| p.len() >= n);
    let theirs = streamed(
        "tcpdump -U -w -",
        &mut tcpdump_reading(&["-U", "-w", "-"]),
        records,
    )?;
    let theirs = parsed(&theirs).context("tcpdump's output does not parse")?;
    ensure!(theirs.len() == 6, "tcpdump wrote {} packets", theirs.len());
    for format in ["pcap", "pcapng"] {
        let what = format!("pcap-agent -U -w - --format {format}");
        let ours = streamed(
            &what,
            &mut agent(&["-U", "-w", "-", "--format", format]),
            records,
        )?;
        let ours = parsed(&ours).with_context(|| format!("{what}: the output does not parse"))?;
        checks::same_packets(&what, &ours, &theirs, |p| (p.orig_len, &p.data, p.unix_ns))?;
    }
    Ok(())
}

/// `--direction inout` (`-Q inout` spelled long) attaches both hooks and
/// keeps what `tcpdump --direction=inout` keeps of the same traffic.
#[test]
fn direction_inout_spelled_long_matches_tcpdump() -> anyhow::Result<()> {
    let pair = Pair::new("qlong")?;
    pair.disable_ipv6()?;
    let dir = TempDir::new("direction-long")?;
    let (ours_file, theirs_file) = (dir.join("ours.pcapng"), dir.join("theirs.pcap"));
    let ours = agent_capture::start_writing(
        &pair.b,
        &ours_file,
        &["-i", "veth1", "--direction", "inout"],
    )?;
    let mut attached = pair.b.tcx_programs("veth1")?;
    attached.sort();
    ensure!(
        attached == ["pcap_egress", "pcap_ingress"],
        "--direction inout attached {attached:?}"
    );
    let theirs = tcpdump(&pair.b, "veth1", "inout", &theirs_file)?;
    let (ours, theirs) = agent_capture::stop_both_after_sh(
        &pair.a,
        "ping -c 3 -i 0.2 -W 1 10.0.0.2",
        "10.0.0.2",
        (ours, &ours_file),
        (theirs, &theirs_file),
    )?;
    for direction in [Direction::Inbound, Direction::Outbound] {
        let n = ours
            .iter()
            .filter(|p| p.direction == Some(direction))
            .count();
        ensure!(n >= 3, "{direction:?}: {n} packets");
    }
    checks::same_packets("--direction inout", &ours, &theirs, |p| {
        (p.orig_len, &p.data)
    })
}
