//! `pcap-agent capture -r FILE [flags]` prints what `tcpdump -nn -r FILE
//! [flags]` prints, packet for packet, over tcpdump's own test captures
//! (tests/corpus/tcpdump-tests), for every printing flag.
//!
//! A packet is compared when every protocol tcpdump decodes in it is one we
//! print (Ethernet, ARP, IPv4, IPv6, ICMP, ICMPv6, TCP, UDP, VXLAN): the
//! summary printer itself says so (`Printed::supported`), from the headers
//! it walked, with tcpdump's own port tables. Such a packet must print
//! exactly as tcpdump prints it, except for the deliberate differences of
//! [`ALLOWED`] (docs/printing.md). The other packets are counted, not
//! compared.
//!
//! Runs tcpdump and pcap-agent as ordinary processes: no root needed.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, ensure};
use pcap_format::summary::{Dump, Frame, Options, Printer, TimeFormat};
use pcap_tests::{
    captures,
    process::{binary, run_ok},
    reference,
};

/// The flag sets compared, with the options they stand for.
fn flag_sets() -> Vec<(&'static [&'static str], Options)> {
    let base = Options::default();
    let dump = |dump| Options { dump, ..base };
    let time = |time| Options { time, ..base };
    vec![
        (&[], base),
        (
            &["-e"],
            Options {
                link_header: true,
                ..base
            },
        ),
        (&["-v"], Options { verbose: 1, ..base }),
        (&["-vv"], Options { verbose: 2, ..base }),
        (
            &["-S"],
            Options {
                absolute_seq: true,
                ..base
            },
        ),
        (&["-x"], dump(Dump::Hex { link: false })),
        (&["-xx"], dump(Dump::Hex { link: true })),
        (&["-X"], dump(Dump::HexAscii { link: false })),
        (&["-XX"], dump(Dump::HexAscii { link: true })),
        (&["-A"], dump(Dump::Ascii { link: false })),
        (&["-t"], time(TimeFormat::None)),
        (&["-tt"], time(TimeFormat::Unix)),
        (&["-ttt"], time(TimeFormat::SincePrevious)),
        (&["-tttt"], time(TimeFormat::Date)),
        (&["-ttttt"], time(TimeFormat::SinceFirst)),
        (
            &["-e", "-v", "-XX"],
            Options {
                link_header: true,
                verbose: 1,
                dump: Dump::HexAscii { link: true },
                ..base
            },
        ),
    ]
}

/// Deliberate differences: (file, flags, why). See docs/printing.md.
const ALLOWED: &[(&str, &str, &str)] = &[];

/// A program's output for a file, split into packets: each starts with
/// the packet number of `-#`.
fn packets(program: &mut Command, what: &str) -> anyhow::Result<Vec<String>> {
    let output = run_ok(program.env("TZ", "UTC"), what)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut packets: Vec<String> = Vec::new();
    for line in text.lines() {
        let number = line.trim_start();
        let starts = line.len() - number.len() <= 4
            && number
                .split_once("  ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        match packets.last_mut() {
            Some(packet) if !starts => {
                packet.push('\n');
                packet.push_str(line);
            }
            _ => packets.push(line.to_owned()),
        }
    }
    Ok(packets)
}

/// Which packets of `file` the printer covers, with `options`.
fn supported(file: &Path, options: Options) -> anyhow::Result<Vec<bool>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let capture = captures::parse(&little_endian(bytes))
        .with_context(|| format!("parsing {}", file.display()))?;
    let link_type = capture.link_types.first().copied().unwrap_or(1);
    let mut printer = Printer::new(options);
    Ok(capture
        .packets
        .iter()
        .map(|packet| {
            printer
                .print(
                    &Frame {
                        link_type,
                        data: &packet.data,
                        orig_len: packet.orig_len,
                        unix_ns: packet.unix_ns,
                    },
                    None,
                )
                .supported
        })
        .collect())
}

/// A big-endian classic pcap file as little-endian (what
/// `captures::parse` reads); other files unchanged.
fn little_endian(mut bytes: Vec<u8>) -> Vec<u8> {
    let big = matches!(
        bytes.get(..4),
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d])
    );
    if !big || bytes.len() < 24 {
        return bytes;
    }
    let swap = |bytes: &mut [u8], at: usize, len: usize| bytes[at..at + len].reverse();
    for (at, len) in [(0, 4), (4, 2), (6, 2), (8, 4), (12, 4), (16, 4), (20, 4)] {
        swap(&mut bytes, at, len);
    }
    let mut at = 24;
    while at + 16 <= bytes.len() {
        for field in 0..4 {
            swap(&mut bytes, at + field * 4, 4);
        }
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        at += 16 + caplen as usize;
    }
    bytes
}

#[derive(Default)]
struct Tally {
    packets: usize,
    compared: usize,
    identical: usize,
    allowed: usize,
    differing: usize,
}

#[test]
fn prints_the_corpus_as_tcpdump() -> anyhow::Result<()> {
    let files = reference::corpus()?;
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut report = String::new();
    for (flags, options) in flag_sets() {
        let name = if flags.is_empty() {
            "-nn".to_owned()
        } else {
            flags.join(" ")
        };
        // PRINT_CORPUS_FLAGS="-v" runs one flag set only.
        if std::env::var("PRINT_CORPUS_FLAGS").is_ok_and(|only| only != name) {
            continue;
        }
        let tally = tallies.entry(name.clone()).or_default();
        for file in &files {
            let base = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            let theirs = packets(
                Command::new("tcpdump")
                    .args(["-#", "-nn", "-r"])
                    .arg(file)
                    .args(flags),
                &format!("tcpdump -r {base} {name}"),
            )?;
            let ours = packets(
                Command::new(binary("pcap-agent"))
                    .args(["capture", "-#", "-r"])
                    .arg(file)
                    .args(flags),
                &format!("pcap-agent -r {base} {name}"),
            )?;
            let covered = supported(file, options)?;
            for (index, expected) in theirs.iter().enumerate() {
                tally.packets += 1;
                if !covered.get(index).copied().unwrap_or(false) {
                    continue;
                }
                tally.compared += 1;
                let actual = ours.get(index).map_or("(nothing)", String::as_str);
                if actual == expected {
                    tally.identical += 1;
                } else if ALLOWED
                    .iter()
                    .any(|(f, fl, _)| *f == base && (fl.is_empty() || *fl == name))
                {
                    tally.allowed += 1;
                } else {
                    tally.differing += 1;
                    let _ = writeln!(
                        report,
                        "{base} packet {} ({name}):\n  tcpdump: {expected:?}\n  ours:    {actual:?}",
                        index + 1
                    );
                }
            }
        }
    }
    let mut summary = String::new();
    let mut total = Tally::default();
    for (name, tally) in &tallies {
        let _ = writeln!(
            summary,
            "{name:>14}: {} packets, {} compared, {} identical, {} differ on purpose, {} differ",
            tally.packets, tally.compared, tally.identical, tally.allowed, tally.differing
        );
        total.packets += tally.packets;
        total.compared += tally.compared;
        total.identical += tally.identical;
        total.allowed += tally.allowed;
        total.differing += tally.differing;
    }
    let _ = writeln!(
        summary,
        "{:>14}: {} packets, {} compared, {} identical, {} differ on purpose, {} differ",
        "all", total.packets, total.compared, total.identical, total.allowed, total.differing
    );
    eprintln!("{summary}");
    let diffs = std::env::temp_dir().join("print_corpus_differences.txt");
    std::fs::write(&diffs, &report)?;
    ensure!(total.compared > 0, "no packet compared");
    ensure!(
        total.differing == 0,
        "{} packets differ from tcpdump (all in {}):\n{summary}\n{}",
        total.differing,
        diffs.display(),
        report.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    Ok(())
}
