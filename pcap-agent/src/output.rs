//! Where captured packets go: a pcapng or pcap file (or stdout), or
//! readable lines like tcpdump prints them.

use std::io::{self, BufWriter, Write};
use std::path::Path;

use pcap_common::Direction;
use pcap_format::{
    CaptureWriter, InterfaceStatistics, linktype::LINKTYPE_LINUX_SLL2, sll2, summary,
};
use pcap_proto::flags::RotationFlags;
use pcap_sink::rotate::{MakeWriter, Policy, RotateError, RotatingWriter};

use crate::{
    capture::{Delivery, InterfaceReport, Packet, PacketSink, Removed, Report},
    iface::{ANY, Interface, link_type_name},
};

/// File formats for `-w`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// pcapng: interface names, directions, nanoseconds and drop statistics.
    #[default]
    Pcapng,
    /// Classic pcap with nanosecond timestamps.
    Pcap,
}

pub enum Output {
    /// A capture file.
    File {
        format: Format,
        /// Someone reads it as it is written (a pipe to Wireshark): flush
        /// after every batch rather than when the buffer fills.
        live: bool,
        /// -U: flush after every packet.
        packet_buffered: bool,
        sink: Option<Box<dyn Write + Send>>,
        writer: Option<Box<dyn CaptureWriter + Send>>,
        /// `-i any`: see [`Output::any`].
        any: Any,
    },
    /// One line per packet, printed as tcpdump does; flushed after each
    /// batch, or each packet when the bool is set (-l, -U).
    Lines(
        BufWriter<Box<dyn Write + Send>>,
        Box<summary::Printer>,
        bool,
        Any,
    ),
}

/// How an `-i any` capture writes its packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Any {
    /// Not `-i any`: each packet as its interface's link type.
    #[default]
    Off,
    /// `-i any`, in pcapng: one interface block per interface, each with
    /// its own link type, and a new block for an interface that appears.
    PerInterface,
    /// `-i any` in classic pcap or as lines: `LINKTYPE_LINUX_SLL2`, as
    /// `tcpdump -i any` (one link type for every interface), cut to the
    /// snap length.
    Cooked { snaplen: u32 },
}

impl Output {
    pub fn file(format: Format, sink: Box<dyn Write + Send>, live: bool) -> Self {
        Self::File {
            format,
            live,
            packet_buffered: false,
            sink: Some(sink),
            writer: None,
            any: Any::Off,
        }
    }

    /// `-i any`: in pcapng, one interface block per interface, as always
    /// (and one more for each interface that appears); in classic pcap
    /// and lines, Linux cooked v2 as `tcpdump -i any` writes it.
    #[must_use]
    pub fn any(mut self, on: bool) -> Self {
        let cooked = Any::Cooked { snaplen: 0 };
        match &mut self {
            Self::File { format, any, .. } => {
                *any = match (on, *format) {
                    (false, _) => Any::Off,
                    (true, Format::Pcapng) => Any::PerInterface,
                    (true, Format::Pcap) => cooked,
                };
            }
            Self::Lines(.., any) => *any = if on { cooked } else { Any::Off },
        }
        self
    }

    /// `-w PATH` rotated as `flags` say (`-C`, `-G`, `-W`, `-z`), or
    /// `None` when they say nothing; the first file is created now.
    pub fn rotating(
        format: Format,
        path: &Path,
        flags: &RotationFlags,
    ) -> Result<Option<Self>, RotateError> {
        let Some(rotating) = rotating_writer(format, path, flags, Some(&os_name()))? else {
            return Ok(None);
        };
        let mut output = Self::file(format, Box::new(io::sink()), false);
        if let Self::File { sink, writer, .. } = &mut output {
            *sink = None;
            *writer = Some(rotating);
        }
        Ok(Some(output))
    }

    /// -U: a file flushed after every packet (lines are flushed by
    /// [`Output::lines`]' `flush_each`).
    #[must_use]
    pub fn packet_buffered(mut self, on: bool) -> Self {
        if let Self::File {
            packet_buffered, ..
        } = &mut self
        {
            *packet_buffered = on;
        }
        self
    }

    pub fn lines(sink: Box<dyn Write + Send>, options: summary::Options, flush_each: bool) -> Self {
        Self::Lines(
            BufWriter::new(sink),
            Box::new(summary::Printer::new(options)),
            flush_each,
            Any::Off,
        )
    }
}

impl PacketSink for Output {
    /// Writes the file's headers for the capture's interfaces.
    fn begin(&mut self, interfaces: &[Interface], snaplen: u32) -> io::Result<()> {
        let (Self::File { any, .. } | Self::Lines(.., any)) = self;
        if let Any::Cooked { snaplen: cooked } = any {
            *cooked = snaplen;
        }
        let Self::File {
            format,
            sink,
            writer,
            any,
            ..
        } = self
        else {
            return Ok(());
        };
        let mut new_writer = match (writer.take(), sink.take()) {
            // Rotated files: their writer was made before the capture.
            (Some(writer), _) => writer,
            (None, Some(sink)) => file_writer(*format, sink, Some(&os_name()))?,
            (None, None) => unreachable!("begin is called once"),
        };
        if let Any::Cooked { .. } = any {
            add_interface(new_writer.as_mut(), ANY, LINKTYPE_LINUX_SLL2, snaplen)?;
            *writer = Some(new_writer);
            return Ok(());
        }
        for interface in interfaces {
            add_interface(
                new_writer.as_mut(),
                &interface.name,
                interface.link_type,
                snaplen,
            )?;
        }
        *writer = Some(new_writer);
        Ok(())
    }

    fn packet(&mut self, interface: &Interface, packet: &Packet<'_>) -> io::Result<Delivery> {
        let (Self::File { any, .. } | Self::Lines(.., any)) = self;
        let cooked = match *any {
            Any::Cooked { snaplen } => sll2::from_frame(
                interface.link_type,
                packet.data,
                packet.orig_len,
                sll2::Meta {
                    ifindex: interface.index,
                    hardware_type: u16::from(interface.hardware_type),
                    packet_type: packet.packet_type,
                },
                snaplen,
            ),
            _ => None,
        };
        let (link_type, data, orig_len, interface_id) = match &cooked {
            Some((data, orig_len)) => (LINKTYPE_LINUX_SLL2, &data[..], *orig_len, 0),
            None => (
                interface.link_type,
                packet.data,
                packet.orig_len,
                packet.interface,
            ),
        };
        match self {
            Self::File {
                writer,
                packet_buffered,
                ..
            } => {
                let writer = writer.as_mut().expect("begin was called");
                writer.write_packet(&pcap_format::Packet {
                    interface_id,
                    timestamp_ns: packet.unix_ns,
                    original_len: orig_len,
                    data,
                    direction: packet.direction.map(|d| match d {
                        Direction::Ingress => pcap_format::Direction::Inbound,
                        Direction::Egress => pcap_format::Direction::Outbound,
                    }),
                    comment: packet.comment,
                })?;
                if *packet_buffered {
                    writer.flush()?;
                }
            }
            Self::Lines(out, printer, flush_each, any) => {
                let prefix = if let Any::Cooked { .. } = any {
                    // The printer puts the packet type after the name.
                    interface.name.clone()
                } else {
                    let direction = match packet.direction {
                        Some(Direction::Ingress) => "In ",
                        Some(Direction::Egress) => "Out",
                        None => "?  ",
                    };
                    format!("{} {direction}", interface.name)
                };
                let frame = summary::Frame {
                    link_type,
                    data,
                    orig_len,
                    unix_ns: packet.unix_ns,
                };
                let text = printer.print(&frame, Some(&prefix)).text;
                // A comment goes at the end of the packet's first line.
                let first_line = text.find('\n').unwrap_or(text.len());
                out.write_all(&text.as_bytes()[..first_line])?;
                if let Some(comment) = packet.comment {
                    write!(out, " [{comment}]")?;
                }
                out.write_all(&text.as_bytes()[first_line..])?;
                if *flush_each {
                    out.flush()?;
                }
            }
        }
        Ok(Delivery::Delivered)
    }

    /// After a batch of packets: flush what someone is watching live.
    fn end_batch(&mut self) -> io::Result<()> {
        match self {
            Self::File { live: false, .. } => Ok(()),
            _ => self.flush(),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::File { writer, .. } => writer.as_mut().map_or(Ok(()), |w| w.flush()),
            Self::Lines(out, ..) => out.flush(),
        }
    }

    /// Writes an interface statistics block per interface, then closes the
    /// file (flushes it; rotated files also run -z on the last one).
    fn finish(&mut self, report: &Report, unix_ns: u64) -> io::Result<()> {
        if let Self::File {
            writer: Some(writer),
            ..
        } = self
        {
            for (id, (_, r)) in report.interfaces.iter().enumerate() {
                // A removed interface's statistics were written then.
                if r.removed_ns.is_none() {
                    write_statistics(writer.as_mut(), id as u32, r, unix_ns)?;
                }
            }
            // Rotated files: the last one is closed and -z run on it.
            return writer.close();
        }
        self.flush()
    }

    /// Says so on stderr, as tcpdump does, and writes the interface's
    /// statistics block now.
    fn interface_removed(&mut self, removed: &Removed<'_>) -> io::Result<()> {
        let Removed {
            id,
            interface,
            report,
        } = *removed;
        let at = report.removed_ns.unwrap_or_default();
        eprintln!(
            "pcap-agent: {}: the interface disappeared at {} UTC; its capture ended \
             ({} packets written)",
            interface.name,
            summary::format_time(at),
            report.delivered
        );
        if let Self::File {
            writer: Some(writer),
            ..
        } = self
        {
            write_statistics(writer.as_mut(), id, report, at)?;
        }
        self.flush()
    }

    /// `-i any`: a new interface block in pcapng (nothing for the one
    /// interface of a cooked capture), and a line on stderr.
    fn interface_added(&mut self, interface: &Interface, snaplen: u32) -> io::Result<()> {
        eprintln!(
            "pcap-agent: listening on {} (index {}, new), link-type {}",
            interface.name,
            interface.index,
            link_type_name(interface.link_type)
        );
        if let Self::File {
            writer: Some(writer),
            any: Any::PerInterface,
            ..
        } = self
        {
            add_interface(
                writer.as_mut(),
                &interface.name,
                interface.link_type,
                snaplen,
            )?;
        }
        Ok(())
    }

    /// A pcapng Name Resolution Block (nothing for pcap files or lines).
    fn names(&mut self, entries: &[(std::net::Ipv4Addr, &str)]) -> io::Result<()> {
        match self {
            Self::File {
                writer: Some(writer),
                ..
            } => writer.write_name_resolution(entries),
            _ => Ok(()),
        }
    }
}

/// One interface's description block: `name`, without a description,
/// its packets of `link_type` cut to `snaplen`.
fn add_interface(
    writer: &mut (dyn CaptureWriter + Send),
    name: &str,
    link_type: u16,
    snaplen: u32,
) -> io::Result<()> {
    writer
        .add_interface(&pcap_format::Interface {
            name: name.to_owned(),
            description: None,
            link_type,
            snaplen,
        })
        .map_err(io::Error::other)?;
    Ok(())
}

/// One interface's statistics block, ending at `unix_ns`.
fn write_statistics(
    writer: &mut (dyn CaptureWriter + Send),
    id: u32,
    r: &InterfaceReport,
    unix_ns: u64,
) -> io::Result<()> {
    writer.write_interface_statistics(&InterfaceStatistics {
        interface_id: id,
        timestamp_ns: unix_ns,
        start_time_ns: None,
        end_time_ns: Some(unix_ns),
        if_received: Some(r.kernel.seen),
        if_dropped: None,
        filter_accepted: Some(r.kernel.matched),
        os_dropped: Some(r.kernel.dropped()),
        user_delivered: Some(r.delivered),
        comment: Some(&format!(
            "dropped: ring full {}, copy failed {}; not written after the packet limit {}",
            r.kernel.dropped_ring_full, r.kernel.dropped_copy_failed, r.after_limit
        )),
    })
}

/// The writer of `-w path` rotated as `flags` say, files of `format`
/// naming `os` (see [`file_writer`]), or `None` when they say nothing; the
/// first file is created now.
pub fn rotating_writer(
    format: Format,
    path: &Path,
    flags: &RotationFlags,
    os: Option<&str>,
) -> Result<Option<Box<dyn CaptureWriter + Send>>, RotateError> {
    let Some(policy) = Policy::new(path, flags)? else {
        return Ok(None);
    };
    let os = os.map(str::to_owned);
    let make: MakeWriter = Box::new(move |file| file_writer(format, file, os.as_deref()));
    Ok(Some(Box::new(RotatingWriter::new(policy, make)?)))
}

/// A writer of `format` to `sink` with no interfaces yet: a pcapng file
/// names pcap-agent as its application and `os` as its operating system;
/// a classic pcap file writes its header with its first interface.
pub fn file_writer(
    format: Format,
    sink: Box<dyn Write + Send>,
    os: Option<&str>,
) -> io::Result<Box<dyn CaptureWriter + Send>> {
    Ok(match format {
        Format::Pcapng => Box::new(pcap_format::pcapng::PcapNgWriter::new(
            sink,
            &pcap_format::pcapng::SectionOptions {
                os,
                user_application: Some(concat!("pcap-agent ", env!("CARGO_PKG_VERSION"))),
                hardware: None,
            },
        )?),
        Format::Pcap => Box::new(pcap_format::pcap::PcapWriter::deferred(sink)),
    })
}

fn os_name() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {}", release.trim())
}
