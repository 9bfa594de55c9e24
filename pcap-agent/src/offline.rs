//! `pcap-agent capture -r FILE`: read a pcap or pcapng file, keep the
//! packets the filter expression accepts, and write or print them, as
//! `tcpdump -r FILE [-w OUT] EXPR` does.
//!
//! The expression is compiled by libpcap for each interface's link type
//! (as for a live capture) and run by [`pcap_filter::interp::run`], which
//! has the semantics of libpcap's `bpf_filter()`, the function
//! `tcpdump -r` applies: the same packets pass, byte for byte.
//!
//! Like libpcap, a packet captured with more bytes than its interface's
//! snapshot length is cut to that length. Unlike libpcap, the interfaces
//! of a pcapng file may have different link types (each gets its own
//! program); every interface must be described before the first packet.
//! A record whose original length is shorter than its captured bytes
//! (malformed) is written with the captured length as its original
//! length, where tcpdump copies the impossible value. Packets printed
//! without -w are printed by `pcap_format::summary::Printer`, whose lines
//! are tcpdump's for the protocols it covers (docs/printing.md).

use std::io::{self, Read, Write};

use anyhow::{Context as _, bail};
use pcap_common::MAX_SNAPLEN;
use pcap_filter::CbpfInsn;
use pcap_format::{CaptureWriter, summary};
use pcap_parser::{Block, PcapBlockOwned, PcapError};
use summary::Printer;

use pcap_agent::{
    filter::{FilterCompileError, accepts_everything},
    output::{self, Format},
};

/// Room for the largest block: a full-size packet and its headers.
const READ_BUFFER: usize = 1 << 20;

/// One interface of the file.
struct FileInterface {
    name: String,
    link_type: u16,
    snaplen: u32,
    /// Timestamp units per second.
    resolution: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_s: i64,
    /// `None` when the expression accepts everything.
    program: Option<Vec<CbpfInsn>>,
    /// The id the output gave it.
    output_id: u32,
}

/// Where accepted packets go.
pub enum Sink {
    /// A capture file (or stdout).
    File {
        format: Format,
        writer: Box<dyn Write + Send>,
        /// Flush after each packet (-U).
        flush_each: bool,
    },
    /// Files rotated by -C, -G, -W (-z run on each): a writer made by
    /// [`output::rotating_writer`].
    Files {
        writer: Box<dyn CaptureWriter + Send>,
        /// Flush after each packet (-U).
        flush_each: bool,
    },
    /// One line per packet, as tcpdump prints them.
    Lines {
        writer: Box<dyn Write + Send>,
        printer: Printer,
        /// Flush after each packet (-l, -U).
        flush_each: bool,
    },
}

/// What happened to the file's packets.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    /// Packets in the file (up to where reading stopped).
    read: u64,
    /// Packets the filter accepted and that were written.
    written: u64,
}

/// Reads `input`, filters it with `expression` and writes what passes to
/// `sink`, stopping after `count` packets if given.
pub fn run(
    input: Box<dyn Read + Send>,
    expression: &str,
    count: Option<u64>,
    sink: Sink,
) -> anyhow::Result<()> {
    let input =
        HeaderFirst::new(input).map_err(|e| anyhow::anyhow!("cannot read the file: {e}"))?;
    let mut reader = pcap_parser::create_reader(READ_BUFFER, input).map_err(|e| match e {
        PcapError::Eof | PcapError::Incomplete(_) | PcapError::UnexpectedEof => {
            anyhow::anyhow!("the file is empty or ends inside its header")
        }
        PcapError::HeaderNotRecognized => {
            anyhow::anyhow!("not a pcap or pcapng file (unknown magic number)")
        }
        other => anyhow::anyhow!("cannot read the file: {other:?}"),
    })?;
    let mut state = State {
        expression,
        interfaces: Vec::new(),
        sink: Some(sink),
        out: None,
        totals: Totals::default(),
    };
    loop {
        if count.is_some_and(|c| state.totals.written >= c) {
            break;
        }
        match reader.next() {
            Ok((consumed, block)) => {
                let result = state.block(block);
                reader.consume(consumed);
                result?;
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => reader
                .refill()
                .map_err(|e| anyhow::anyhow!("reading the file: {e:?}"))?,
            Err(PcapError::UnexpectedEof) => {
                bail!("the file ends in the middle of a block (truncated)")
            }
            Err(e) => bail!(
                "the file is damaged after {} packets: {e:?}",
                state.totals.read
            ),
        }
    }
    state.finish()
}

enum Out {
    File(Box<dyn CaptureWriter + Send>, bool),
    Lines(io::BufWriter<Box<dyn Write + Send>>, Box<Printer>, bool),
}

struct State<'e> {
    expression: &'e str,
    interfaces: Vec<FileInterface>,
    /// Until the first packet.
    sink: Option<Sink>,
    out: Option<Out>,
    totals: Totals,
}

impl State<'_> {
    fn block(&mut self, block: PcapBlockOwned<'_>) -> anyhow::Result<()> {
        match block {
            PcapBlockOwned::LegacyHeader(header) => {
                let resolution = if header.is_nanosecond_precision() {
                    1_000_000_000
                } else {
                    1_000_000
                };
                self.add_interface(
                    String::new(),
                    header.network.0,
                    header.snaplen,
                    resolution,
                    0,
                )
            }
            PcapBlockOwned::Legacy(packet) => {
                let units = u64::from(packet.ts_sec) * self.interfaces[0].resolution
                    + u64::from(packet.ts_usec);
                self.packet(0, units, packet.origlen, packet.data)
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                if self.out.is_some() {
                    bail!(
                        "the file has a second pcapng section after packets, which is not supported: split it (editcap) first"
                    );
                }
                self.interfaces.clear();
                Ok(())
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                // if_name (option 2).
                let name = idb
                    .options
                    .iter()
                    .find(|option| option.code.0 == 2)
                    .and_then(|option| option.as_bytes())
                    .map(|name| {
                        String::from_utf8_lossy(name)
                            .trim_end_matches('\0')
                            .to_owned()
                    })
                    .unwrap_or_default();
                let resolution = idb
                    .ts_resolution()
                    .context("an interface has an invalid timestamp resolution (if_tsresol)")?;
                self.add_interface(
                    name,
                    idb.linktype.0,
                    idb.snaplen,
                    resolution,
                    idb.ts_offset(),
                )
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let caplen = (epb.caplen as usize).min(epb.data.len());
                self.packet(epb.if_id, units, epb.origlen, &epb.data[..caplen])
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                let caplen = (spb.origlen as usize).min(spb.data.len());
                self.packet(0, 0, spb.origlen, &spb.data[..caplen])
            }
            // Statistics, name resolution, comments and the like: not packets.
            PcapBlockOwned::NG(_) => Ok(()),
        }
    }

    fn add_interface(
        &mut self,
        name: String,
        link_type: i32,
        snaplen: u32,
        resolution: u64,
        offset_s: i64,
    ) -> anyhow::Result<()> {
        if self.out.is_some() {
            bail!("the file describes an interface after its first packet, which is not supported");
        }
        // The upper bits hold FCS information (LT_FCS_LENGTH); libpcap
        // looks only at the link type.
        let link_type = u16::try_from(link_type & 0x03ff_ffff)
            .with_context(|| format!("unknown link type {link_type}"))?;
        let snaplen = match snaplen {
            0 => MAX_SNAPLEN,
            n => n.min(MAX_SNAPLEN),
        };
        // One program per link type, as for a live capture; none when it
        // accepts every packet.
        let program = if self.expression.trim().is_empty() {
            None
        } else if let Some(earlier) = self.interfaces.iter().find(|i| i.link_type == link_type) {
            earlier.program.clone()
        } else {
            Some(
                pcap_filter::compile(self.expression, link_type)
                    .map_err(FilterCompileError::from)?,
            )
            .filter(|program| !accepts_everything(program))
        };
        let index = self.interfaces.len();
        self.interfaces.push(FileInterface {
            name: if name.is_empty() {
                format!("if{index}")
            } else {
                name
            },
            link_type,
            snaplen,
            resolution,
            offset_s,
            program,
            output_id: 0,
        });
        Ok(())
    }

    fn packet(&mut self, if_id: u32, units: u64, orig_len: u32, data: &[u8]) -> anyhow::Result<()> {
        let interface = self.interfaces.get(if_id as usize).with_context(|| {
            format!("a packet names interface {if_id}, which the file does not describe")
        })?;
        self.totals.read += 1;
        let data = &data[..data.len().min(interface.snaplen as usize)];
        if let Some(program) = &interface.program
            && pcap_filter::interp::run(program, data, orig_len) == 0
        {
            return Ok(());
        }
        let timestamp_ns = timestamp_ns(units, interface.resolution, interface.offset_s);
        if self.out.is_none() {
            self.begin()?;
        }
        let interface = &self.interfaces[if_id as usize];
        match self.out.as_mut().expect("begun") {
            Out::File(writer, flush_each) => {
                writer.write_packet(&pcap_format::Packet {
                    interface_id: interface.output_id,
                    timestamp_ns,
                    original_len: orig_len.max(data.len() as u32),
                    data,
                    direction: None,
                    comment: None,
                })?;
                if *flush_each {
                    writer.flush()?;
                }
            }
            Out::Lines(out, printer, flush_each) => {
                let printed = printer.print(
                    &summary::Frame {
                        link_type: interface.link_type,
                        data,
                        orig_len,
                        unix_ns: timestamp_ns,
                    },
                    None,
                );
                out.write_all(printed.text.as_bytes())?;
                if *flush_each {
                    out.flush()?;
                }
            }
        }
        self.totals.written += 1;
        Ok(())
    }

    /// Opens the output with the file's interfaces.
    fn begin(&mut self) -> anyhow::Result<()> {
        let out = match self.sink.take().expect("begin once") {
            Sink::Lines {
                writer,
                printer,
                flush_each,
            } => Out::Lines(io::BufWriter::new(writer), Box::new(printer), flush_each),
            sink @ (Sink::File { .. } | Sink::Files { .. }) => {
                let (mut file, flush_each) = match sink {
                    Sink::File {
                        format,
                        writer,
                        flush_each,
                    } => {
                        // No `os`: the packets were captured elsewhere.
                        (output::file_writer(format, writer, None)?, flush_each)
                    }
                    Sink::Files { writer, flush_each } => (writer, flush_each),
                    Sink::Lines { .. } => unreachable!("matched above"),
                };
                for interface in &mut self.interfaces {
                    interface.output_id = file
                        .add_interface(&pcap_format::Interface {
                            name: interface.name.clone(),
                            description: None,
                            link_type: interface.link_type,
                            snaplen: interface.snaplen,
                        })
                        .map_err(|e| match e {
                            pcap_format::FormatError::MixedLinkTypes { .. } => anyhow::anyhow!(
                                "the file's interfaces have different link types, which classic pcap cannot hold: use --format pcapng"
                            ),
                            other @ pcap_format::FormatError::Io(_) => other.into(),
                        })?;
                }
                Out::File(file, flush_each)
            }
        };
        self.out = Some(out);
        Ok(())
    }

    /// Writes the headers even when no packet passed, then flushes.
    fn finish(&mut self) -> anyhow::Result<()> {
        if self.out.is_none() && self.sink.is_some() && !self.interfaces.is_empty() {
            self.begin()?;
        }
        match &mut self.out {
            // Rotated files: the last one is closed and -z run on it.
            Some(Out::File(writer, _)) => writer.close()?,
            Some(Out::Lines(out, ..)) => out.flush()?,
            None => {}
        }
        Ok(())
    }
}

/// Nanoseconds since the Unix epoch of `units` at `resolution` units per
/// second, plus `offset_s` seconds; 0 for a time before the epoch.
fn timestamp_ns(units: u64, resolution: u64, offset_s: i64) -> u64 {
    let ns = u128::from(units) * 1_000_000_000 / u128::from(resolution);
    let ns = i128::try_from(ns).unwrap_or(i128::MAX) + i128::from(offset_s) * 1_000_000_000;
    u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
}

/// The input with its file header read ahead. pcap-parser's readers read
/// twice before they return: `create_reader` to tell pcap from pcapng, and
/// `from_buffer` again. On a pipe that second read waits for more input,
/// holding back a first packet that arrived with the header, where tcpdump
/// prints it at once. So the first read hands over the whole file header
/// (pcap's 24 bytes, or pcapng's section header block), the second returns
/// nothing, and reads go to the input from the third on.
struct HeaderFirst<R> {
    /// The header still to hand over; `None` once the empty read is done.
    header: Option<Vec<u8>>,
    input: R,
}

impl<R: Read> HeaderFirst<R> {
    fn new(mut input: R) -> io::Result<Self> {
        let mut header = Vec::new();
        read_up_to(&mut input, &mut header, 12)?;
        let start = header.get(..12).and_then(|h| <[u8; 12]>::try_from(h).ok());
        let length = match start {
            Some([0x0a, 0x0d, 0x0d, 0x0a, a, b, c, d, 0x1a, 0x2b, 0x3c, 0x4d]) => {
                u32::from_be_bytes([a, b, c, d])
            }
            Some([0x0a, 0x0d, 0x0d, 0x0a, a, b, c, d, 0x4d, 0x3c, 0x2b, 0x1a]) => {
                u32::from_le_bytes([a, b, c, d])
            }
            _ => 24,
        };
        let length = usize::try_from(length).map_or(READ_BUFFER, |l| l.min(READ_BUFFER));
        read_up_to(&mut input, &mut header, length)?;
        Ok(Self {
            header: Some(header),
            input,
        })
    }
}

/// Reads into `buffer` until it holds `length` bytes or the input ends.
fn read_up_to(input: &mut impl Read, buffer: &mut Vec<u8>, length: usize) -> io::Result<()> {
    let missing = u64::try_from(length.saturating_sub(buffer.len())).unwrap_or(u64::MAX);
    input.take(missing).read_to_end(buffer)?;
    Ok(())
}

impl<R: Read> Read for HeaderFirst<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.header {
            Some(header) if !header.is_empty() => {
                let n = header.len().min(buf.len());
                buf[..n].copy_from_slice(&header[..n]);
                header.drain(..n);
                Ok(n)
            }
            Some(_) => {
                self.header = None;
                Ok(0)
            }
            None => self.input.read(buf),
        }
    }
}

/// Opens `-r`'s argument: a path, or `-` for stdin.
pub fn open(path: &std::path::Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdin()));
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Box::new(io::BufReader::new(file)) as Box<dyn Read + Send>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_resolution() {
        assert_eq!(timestamp_ns(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(timestamp_ns(7, 1_000_000_000, 2), 2_000_000_007);
        // 2^-10 s units.
        assert_eq!(timestamp_ns(512, 1024, 0), 500_000_000);
        assert_eq!(timestamp_ns(1, 1, -5), 0);
    }

    /// What `HeaderFirst` hands over, read by read.
    fn reads(file: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = HeaderFirst::new(file).expect("in memory");
        let mut reads = Vec::new();
        loop {
            let mut buf = [0; 64];
            let n = reader.read(&mut buf).expect("in memory");
            reads.push(buf[..n].to_vec());
            if n == 0 && reads.len() > 2 {
                return reads;
            }
        }
    }

    #[test]
    fn the_file_header_comes_first_then_an_empty_read() {
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1];
        pcap.resize(24, 0);
        pcap.extend_from_slice(b"packet");
        let expected: [&[u8]; 4] = [&pcap[..24], &[], b"packet", &[]];
        assert_eq!(reads(&pcap), expected);

        // A little-endian section header block of 28 bytes.
        let mut pcapng = vec![0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a];
        pcapng.resize(28, 0);
        pcapng.extend_from_slice(b"block");
        let expected: [&[u8]; 4] = [&pcapng[..28], &[], b"block", &[]];
        assert_eq!(reads(&pcapng), expected);

        let expected: [&[u8]; 3] = [&[], &[], &[]];
        assert_eq!(reads(b""), expected);
    }
}
