//! Where the packets of a merged capture stream go: a pcapng stream with
//! one interface per (origin, interface), packet comments (`opt_comment`)
//! and Name Resolution Blocks, or one readable line per packet.
//!
//! One writer for both ends of the system, so that what they write is the
//! same: the CLI's `-w FILE` and `-w -`, and the object pcap-api stores for
//! `pcap capture --store`. [`Origins`] names the origins the stream
//! announced.
#![forbid(unsafe_code)]

mod origins;
pub mod rotate;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Ipv4Addr;

use pcap_format::pcapng::{PcapNgWriter, SectionOptions};
use pcap_format::summary::{self, Frame, Printer};
use pcap_format::{CaptureWriter, Direction, FormatError, Interface, InterfaceStatistics, Packet};
use pcap_proto::v1::{InterfaceDescription, NameRecords, Packets, Statistics};

pub use crate::origins::Origins;
use crate::rotate::{Policy, RotateError, RotatingWriter};

/// What a batch held: its packets and their captured bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub packets: u64,
    pub bytes: u64,
}

/// An (origin, interface id on that origin) pair, as packets name them.
type Key = (u32, u32);

pub struct Sink<W: Write> {
    output: Output<W>,
    /// Looked up for every packet: a B-tree of a few entries is a short
    /// scan, where a hash map hashed every key with SipHash.
    interfaces: BTreeMap<Key, Described>,
    /// Final counts, written as statistics blocks by [`Sink::finish`].
    statistics: BTreeMap<Key, Statistics>,
    written: u64,
    /// Packets of interfaces never described, so not written.
    skipped: u64,
    /// Prints lines as tcpdump does, with its printing flags.
    printer: Box<Printer>,
}

enum Output<W: Write> {
    PcapNg {
        writer: PcapNgWriter<W>,
        /// For `-w -`: the reader sees every message as soon as it arrives.
        flush_every_message: bool,
    },
    /// pcapng files rotated by `-C`, `-G`, `-W` (and `-z` run on them).
    Files(Box<RotatingWriter>),
    Lines(W),
}

impl<W: Write> Output<W> {
    /// The capture file writer, unless lines are printed.
    fn capture_writer(&mut self) -> Option<&mut dyn CaptureWriter> {
        match self {
            Output::PcapNg { writer, .. } => Some(writer),
            Output::Files(writer) => Some(writer.as_mut()),
            Output::Lines(_) => None,
        }
    }
}

/// An interface described by the API.
struct Described {
    /// The pcapng interface id (the order of description).
    pcapng_id: u32,
    /// The interface's name on its origin, e.g. `eth0`.
    name: String,
    /// `ORIGIN/IFACE`, e.g. `vm-0/eth0`.
    label: String,
    link_type: u16,
    written: u64,
}

impl<W: Write> Sink<W> {
    /// pcapng to `writer`; `flush_every_message` for pipes.
    pub fn pcapng(writer: W, flush_every_message: bool, application: &str) -> io::Result<Self> {
        let section = SectionOptions {
            user_application: Some(application),
            ..SectionOptions::default()
        };
        let mut writer = PcapNgWriter::new(writer, &section)?;
        // A valid, empty capture from the start, whatever happens next.
        writer.flush()?;
        Ok(Self::new(Output::PcapNg {
            writer,
            flush_every_message,
        }))
    }

    /// pcapng files named and rotated as `policy` says (`-C`, `-G`, `-W`,
    /// `-z`); the first is created now.
    pub fn rotating(policy: Policy, application: &str) -> Result<Self, RotateError> {
        let application = application.to_owned();
        let make: rotate::MakeWriter = Box::new(move |file| {
            let section = SectionOptions {
                user_application: Some(&application),
                ..SectionOptions::default()
            };
            Ok(Box::new(PcapNgWriter::new(file, &section)?))
        });
        Ok(Self::new(Output::Files(Box::new(RotatingWriter::new(
            policy, make,
        )?))))
    }

    /// One line per packet to `writer`, as `pcap-agent capture` prints
    /// them: `TIME ORIGIN/IFACE In|Out PROTOCOLS`.
    pub fn lines(writer: W) -> Self {
        Self::lines_with(writer, summary::Options::default())
    }

    /// [`Sink::lines`], printed with tcpdump's printing flags (`-e`, `-v`,
    /// `-x`, `-t`...).
    pub fn lines_with(writer: W, options: summary::Options) -> Self {
        let mut sink = Self::new(Output::Lines(writer));
        sink.printer = Box::new(Printer::new(options));
        sink
    }

    fn new(output: Output<W>) -> Self {
        Self {
            output,
            interfaces: BTreeMap::new(),
            statistics: BTreeMap::new(),
            written: 0,
            skipped: 0,
            printer: Box::default(),
        }
    }

    /// Packets written (or printed) so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Packets not written because their interface was never described.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The names of `origin`'s interfaces, in the order described.
    pub fn interface_names(&self, origin: u32) -> Vec<&str> {
        let mut described: Vec<(&Key, &Described)> = self
            .interfaces
            .iter()
            .filter(|((o, _), _)| *o == origin)
            .collect();
        described.sort_by_key(|(_, d)| d.pcapng_id);
        described.iter().map(|(_, d)| d.name.as_str()).collect()
    }

    /// Describes an interface (once; a repeated description is ignored).
    pub fn add_interface(
        &mut self,
        description: &InterfaceDescription,
        origins: &Origins,
    ) -> io::Result<()> {
        let key = (description.origin, description.id);
        if self.interfaces.contains_key(&key) {
            return Ok(());
        }
        let link_type = u16::try_from(description.link_type).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "link type {} is not a pcap link type",
                    description.link_type
                ),
            )
        })?;
        let origin = origins.name(description.origin);
        let label = format!("{origin}/{}", description.name);
        let pcapng_id = match self.output.capture_writer() {
            Some(writer) => writer
                .add_interface(&Interface {
                    name: label.clone(),
                    description: Some(match origins.address(description.origin) {
                        Some(address) => format!("{} on {origin} ({address})", description.name),
                        None => format!("{} on {origin}", description.name),
                    }),
                    link_type,
                    snaplen: description.snaplen,
                })
                .map_err(|e| match e {
                    FormatError::Io(e) => e,
                    other @ FormatError::MixedLinkTypes { .. } => io::Error::other(other),
                })?,
            None => self.interfaces.len() as u32,
        };
        self.interfaces.insert(
            key,
            Described {
                pcapng_id,
                name: description.name.clone(),
                label,
                link_type,
                written: 0,
            },
        );
        Ok(())
    }

    /// Writes a batch's packets: each Enhanced Packet Block as it came, with
    /// only its interface id rewritten to this file's, into a pcapng
    /// stream; parsed from the block for rotated files and lines. A
    /// malformed batch is refused (`InvalidData`) where its first bad block
    /// starts; the blocks before it are written. Returns what the batch
    /// held, written or not, read in the same pass.
    pub fn write_packets(&mut self, batch: &Packets) -> io::Result<Received> {
        let mut received = Received::default();
        for record in batch.records() {
            let record =
                record.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let packet = record.packet;
            received.packets += 1;
            received.bytes += packet.data.len() as u64;
            let Some(interface) = self
                .interfaces
                .get_mut(&(batch.origin, packet.interface_id))
            else {
                self.skipped += 1;
                continue;
            };
            match &mut self.output {
                Output::PcapNg { writer, .. } => writer.write_epb(
                    &batch.records[record.offset..record.offset + record.len],
                    interface.pcapng_id,
                )?,
                Output::Files(writer) => writer.write_packet(&Packet {
                    interface_id: interface.pcapng_id,
                    ..packet
                })?,
                Output::Lines(out) => {
                    let direction = match packet.direction {
                        Some(Direction::Inbound) => "In ",
                        Some(Direction::Outbound) => "Out",
                        None => "?  ",
                    };
                    let prefix = format!("{} {direction}", interface.label);
                    let frame = Frame {
                        link_type: interface.link_type,
                        data: packet.data,
                        orig_len: packet.original_len,
                        unix_ns: packet.timestamp_ns,
                    };
                    let text = self.printer.print(&frame, Some(&prefix)).text;
                    // A comment goes at the end of the packet's first line.
                    let first_line = text.find('\n').unwrap_or(text.len());
                    out.write_all(&text.as_bytes()[..first_line])?;
                    if let Some(comment) = packet.comment {
                        write!(out, " [{comment}]")?;
                    }
                    out.write_all(&text.as_bytes()[first_line..])?;
                }
            }
            interface.written += 1;
            self.written += 1;
        }
        Ok(received)
    }

    /// Writes names for addresses as a Name Resolution Block (pcapng;
    /// lines show none). IPv4 records only: pcap-format writes no IPv6
    /// records yet, and agents send none.
    pub fn write_names(&mut self, names: &NameRecords) -> io::Result<()> {
        let Some(writer) = self.output.capture_writer() else {
            return Ok(());
        };
        let entries: Vec<(Ipv4Addr, &str)> = names
            .records
            .iter()
            .filter_map(|record| {
                let octets: [u8; 4] = record.address.as_slice().try_into().ok()?;
                Some(
                    record
                        .names
                        .iter()
                        .map(move |name| (Ipv4Addr::from(octets), name.as_str())),
                )
            })
            .flatten()
            .collect();
        writer.write_name_resolution(&entries)
    }

    /// Keeps an interface's final counts for [`Sink::finish`].
    pub fn add_statistics(&mut self, statistics: Statistics) {
        self.statistics
            .insert((statistics.origin, statistics.interface), statistics);
    }

    /// Called after each message from the API.
    pub fn end_of_message(&mut self) -> io::Result<()> {
        match &mut self.output {
            Output::PcapNg {
                writer,
                flush_every_message: true,
            } => writer.flush(),
            Output::PcapNg { .. } | Output::Files(_) => Ok(()),
            Output::Lines(out) => out.flush(),
        }
    }

    /// Writes out what is buffered, so that a killed process loses little.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.output {
            Output::PcapNg { writer, .. } => writer.flush(),
            Output::Files(writer) => writer.flush(),
            Output::Lines(out) => out.flush(),
        }
    }

    /// Writes one statistics block per interface (pcapng) and flushes;
    /// rotated files: closes the last and waits for `-z`. `now_ns` stamps
    /// the blocks.
    pub fn finish(&mut self, now_ns: u64) -> io::Result<()> {
        if let Some(writer) = self.output.capture_writer() {
            let mut described: Vec<(&Key, &Described)> = self.interfaces.iter().collect();
            described.sort_by_key(|(_, d)| d.pcapng_id);
            for (key, interface) in described {
                let statistics = self.statistics.get(key);
                let comment = statistics_comment(interface, statistics);
                writer.write_interface_statistics(&interface_statistics(
                    interface, statistics, now_ns, &comment,
                ))?;
            }
            return writer.close();
        }
        self.flush()
    }

    /// The writer back, with everything written so far flushed to it.
    pub fn into_inner(self) -> io::Result<W> {
        match self.output {
            Output::PcapNg { writer, .. } => writer.into_inner(),
            Output::Files(_) => Err(io::Error::other(
                "rotated capture files have no single writer",
            )),
            Output::Lines(out) => Ok(out),
        }
    }
}

/// The statistics block: `isb_ifrecv` = seen, `isb_filteraccept` = matched,
/// `isb_ifdrop` = kernel drops, `isb_osdrop` = agent drops, `isb_usrdeliv` =
/// packets written to this file.
fn interface_statistics<'a>(
    interface: &Described,
    statistics: Option<&Statistics>,
    now_ns: u64,
    comment: &'a str,
) -> InterfaceStatistics<'a> {
    let nonzero = |ns: u64| (ns != 0).then_some(ns);
    InterfaceStatistics {
        interface_id: interface.pcapng_id,
        timestamp_ns: now_ns,
        start_time_ns: statistics.and_then(|s| nonzero(s.start_ns)),
        end_time_ns: statistics.and_then(|s| nonzero(s.end_ns)),
        if_received: statistics.map(|s| s.seen),
        // An agent's counts are not trusted to leave room for the sum.
        if_dropped: statistics.map(|s| s.dropped_kernel_ring.saturating_add(s.dropped_kernel_copy)),
        filter_accepted: statistics.map(|s| s.matched),
        os_dropped: statistics.map(|s| s.dropped_agent_queue),
        user_delivered: Some(interface.written),
        comment: Some(comment),
    }
}

/// Where every packet went, in words.
fn statistics_comment(interface: &Described, statistics: Option<&Statistics>) -> String {
    match statistics {
        Some(s) => format!(
            "{}: seen {}, matched {}, sent by the agent {}, written {}; \
             dropped: kernel ring {}, kernel copy {}, agent queue {}; \
             not sent after the limit {}; out of order {}",
            interface.label,
            s.seen,
            s.matched,
            s.sent,
            interface.written,
            s.dropped_kernel_ring,
            s.dropped_kernel_copy,
            s.dropped_agent_queue,
            s.after_limit,
            s.out_of_order,
        ),
        None => format!(
            "{}: written {}; no statistics arrived, so drops are unknown \
             (the origin went away or the capture was cut short)",
            interface.label, interface.written
        ),
    }
}

#[cfg(test)]
mod tests;
