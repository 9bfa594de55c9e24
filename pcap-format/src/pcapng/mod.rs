//! Streaming pcapng writer.
//!
//! Writes one little-endian section: a Section Header Block, then Interface
//! Description, Enhanced Packet and Interface Statistics Blocks in the order
//! the caller asks for them. Timestamps have nanosecond resolution
//! (`if_tsresol` = 9 on every interface).

mod encode;
#[cfg(test)]
mod tests;

use std::{
    io::{self, Write},
    net::Ipv4Addr,
};

use encode::{
    BYTE_ORDER_MAGIC, BlockBuf, EPB, EPB_FLAGS, IDB, IF_DESCRIPTION, IF_NAME, IF_TSRESOL, ISB,
    ISB_ENDTIME, ISB_FILTERACCEPT, ISB_IFDROP, ISB_IFRECV, ISB_OSDROP, ISB_STARTTIME, ISB_USRDELIV,
    NRB, NRB_RECORD_END, NRB_RECORD_IPV4, OPT_COMMENT, OPT_ENDOFOPT, SHB, SHB_HARDWARE, SHB_OS,
    SHB_USERAPPL, StackBuf, TSRESOL_NANOSECONDS, ZEROS, block_len, invalid_input, option_len,
    padding, timestamp_bytes,
};

use crate::block_buffer::BlockBuffer;
use crate::record::captured;
use crate::{CaptureWriter, Direction, FormatError, Interface, InterfaceStatistics, Packet};

/// Optional descriptions of the capturing system, written into the Section
/// Header Block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionOptions<'a> {
    /// Hardware of the capturing machine (`shb_hardware`).
    pub hardware: Option<&'a str>,
    /// Operating system of the capturing machine (`shb_os`).
    pub os: Option<&'a str>,
    /// Application that wrote the file (`shb_userappl`), e.g. `pcap 0.1.0`.
    pub user_application: Option<&'a str>,
}

/// Length of the Enhanced Packet Block up to the packet data: block type,
/// total length, interface id, timestamp (2 words), captured and original
/// length.
const EPB_HEADER_LEN: usize = 28;
/// Length of an `epb_flags` option.
const EPB_FLAGS_OPTION_LEN: usize = 8;
/// Length of an option header, and of `opt_endofopt`.
const OPTION_HEADER_LEN: usize = 4;
/// Length of the block trailer (the repeated total length).
const TRAILER_LEN: usize = 4;

/// Writes a pcapng stream to `W` (a file, a pipe: it buffers itself and
/// writes whole blocks only, so a stream cut off by a crash stays readable).
pub struct PcapNgWriter<W: Write> {
    writer: BlockBuffer<W>,
    /// Snapshot length of every interface described, indexed by interface id.
    snaplens: Vec<u32>,
    /// Reused for the blocks outside the per-packet path.
    block: BlockBuf,
}

impl<W: Write> PcapNgWriter<W> {
    /// Starts the stream with a Section Header Block (version 1.0, section
    /// length unknown).
    pub fn new(writer: W, section: &SectionOptions<'_>) -> io::Result<Self> {
        let mut this = Self {
            writer: BlockBuffer::new(writer),
            snaplens: Vec::new(),
            block: BlockBuf::default(),
        };
        let block = &mut this.block;
        block.begin(SHB);
        block.put_u32(BYTE_ORDER_MAGIC);
        block.put_u16(1); // major version
        block.put_u16(0); // minor version
        block.put_u64(u64::MAX); // section length -1: not known in advance
        for (code, value) in [
            (SHB_HARDWARE, section.hardware),
            (SHB_OS, section.os),
            (SHB_USERAPPL, section.user_application),
        ] {
            if let Some(value) = value {
                block.option(code, value.as_bytes())?;
            }
        }
        this.writer.write_all(block.finish()?)?;
        this.writer.end_block()?;
        Ok(this)
    }

    /// Writes an Interface Description Block and returns the interface's id
    /// (0 for the first interface, then 1, 2, ...).
    ///
    /// Interfaces can be added at any point, as long as it is before their
    /// first packet.
    pub fn add_interface(&mut self, interface: &Interface) -> io::Result<u32> {
        let id = u32::try_from(self.snaplens.len())
            .map_err(|_| invalid_input("too many pcapng interfaces".to_owned()))?;
        let block = &mut self.block;
        block.begin(IDB);
        block.put_u16(interface.link_type);
        block.put_u16(0); // reserved
        block.put_u32(interface.snaplen);
        block.option(IF_NAME, interface.name.as_bytes())?;
        if let Some(description) = &interface.description {
            block.option(IF_DESCRIPTION, description.as_bytes())?;
        }
        block.option(IF_TSRESOL, &[TSRESOL_NANOSECONDS])?;
        self.writer.write_all(block.finish()?)?;
        self.writer.end_block()?;
        self.snaplens.push(interface.snaplen);
        Ok(id)
    }

    /// Writes an Enhanced Packet Block.
    ///
    /// Data longer than the interface's snapshot length is cut to it. The
    /// direction goes into `epb_flags`, the comment into `opt_comment`.
    /// Nothing is allocated. Without a comment (every packet of a plain
    /// capture) the block is encoded straight into the block buffer: a
    /// fixed-size header, the data, and a fixed-size tail.
    pub fn write_packet(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        if packet.comment.is_some() {
            return self.write_commented_packet(packet);
        }
        let data = captured(packet.data, self.snaplen(packet.interface_id)?);
        let pad = padding(data.len());
        let options_len = if packet.direction.is_some() {
            EPB_FLAGS_OPTION_LEN + OPTION_HEADER_LEN
        } else {
            0
        };
        let total_len = block_len(EPB_HEADER_LEN + data.len() + pad + options_len + TRAILER_LEN)?;
        let captured_len = data.len() as u32; // fits: total_len does

        let mut header = [0; EPB_HEADER_LEN];
        header[0..4].copy_from_slice(&EPB.to_le_bytes());
        header[4..8].copy_from_slice(&total_len.to_le_bytes());
        header[8..12].copy_from_slice(&packet.interface_id.to_le_bytes());
        header[12..20].copy_from_slice(&timestamp_bytes(packet.timestamp_ns));
        header[20..24].copy_from_slice(&captured_len.to_le_bytes());
        header[24..28].copy_from_slice(&packet.original_len.max(captured_len).to_le_bytes());
        let bytes = self.writer.bytes();
        bytes.reserve(total_len as usize);
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&ZEROS[..pad]);
        if let Some(direction) = packet.direction {
            // epb_flags (code, length 4, value), then opt_endofopt.
            let mut options = [0; EPB_FLAGS_OPTION_LEN + OPTION_HEADER_LEN];
            options[0..2].copy_from_slice(&EPB_FLAGS.to_le_bytes());
            options[2..4].copy_from_slice(&4u16.to_le_bytes());
            options[4..8].copy_from_slice(&epb_flags(direction).to_le_bytes());
            options[8..10].copy_from_slice(&OPT_ENDOFOPT.to_le_bytes());
            bytes.extend_from_slice(&options);
        }
        bytes.extend_from_slice(&total_len.to_le_bytes());
        self.writer.end_block()
    }

    /// [`Self::write_packet`] for a packet with a comment.
    fn write_commented_packet(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        let data = captured(packet.data, self.snaplen(packet.interface_id)?);
        let comment = match packet.comment {
            Some(text) => Some((text.as_bytes(), option_len(text.as_bytes())?)),
            None => None,
        };

        let mut options_len = 0;
        if packet.direction.is_some() {
            options_len += EPB_FLAGS_OPTION_LEN;
        }
        if let Some((text, _)) = comment {
            options_len += OPTION_HEADER_LEN + text.len() + padding(text.len());
        }
        if options_len != 0 {
            options_len += OPTION_HEADER_LEN; // opt_endofopt
        }
        let total_len = block_len(
            EPB_HEADER_LEN + data.len() + padding(data.len()) + options_len + TRAILER_LEN,
        )?;
        let captured_len = data.len() as u32; // fits: total_len does

        let mut header = StackBuf::<EPB_HEADER_LEN>::new();
        header.put_u32(EPB);
        header.put_u32(total_len);
        header.put_u32(packet.interface_id);
        header.put(&timestamp_bytes(packet.timestamp_ns));
        header.put_u32(captured_len);
        header.put_u32(packet.original_len.max(captured_len));
        self.writer.write_all(header.as_slice())?;
        self.writer.write_all(data)?;

        // Data padding, options and trailer; at most 3 + 8 + 4 + 4 bytes.
        let mut tail = StackBuf::<20>::new();
        tail.put(&ZEROS[..padding(data.len())]);
        if let Some(direction) = packet.direction {
            tail.put_option_header(EPB_FLAGS, 4);
            tail.put_u32(epb_flags(direction));
        }
        if let Some((text, text_len)) = comment {
            tail.put_option_header(OPT_COMMENT, text_len);
            self.writer.write_all(tail.as_slice())?;
            self.writer.write_all(text)?;
            tail.clear();
            tail.put(&ZEROS[..padding(text.len())]);
        }
        if options_len != 0 {
            tail.put_option_header(OPT_ENDOFOPT, 0);
        }
        tail.put_u32(total_len);
        self.writer.write_all(tail.as_slice())?;
        self.writer.end_block()
    }

    /// Writes an Interface Statistics Block; counters that are `None` are
    /// left out.
    pub fn write_interface_statistics(
        &mut self,
        stats: &InterfaceStatistics<'_>,
    ) -> io::Result<()> {
        self.snaplen(stats.interface_id)?; // refuses unknown interfaces
        let block = &mut self.block;
        block.begin(ISB);
        block.put_u32(stats.interface_id);
        block.put_timestamp(stats.timestamp_ns);
        for (code, time_ns) in [
            (ISB_STARTTIME, stats.start_time_ns),
            (ISB_ENDTIME, stats.end_time_ns),
        ] {
            if let Some(time_ns) = time_ns {
                block.option(code, &timestamp_bytes(time_ns))?;
            }
        }
        for (code, count) in [
            (ISB_IFRECV, stats.if_received),
            (ISB_IFDROP, stats.if_dropped),
            (ISB_FILTERACCEPT, stats.filter_accepted),
            (ISB_OSDROP, stats.os_dropped),
            (ISB_USRDELIV, stats.user_delivered),
        ] {
            if let Some(count) = count {
                block.option(code, &count.to_le_bytes())?;
            }
        }
        if let Some(comment) = stats.comment {
            block.option(OPT_COMMENT, comment.as_bytes())?;
        }
        self.writer.write_all(block.finish()?)?;
        self.writer.end_block()
    }

    /// Writes a Name Resolution Block: one `nrb_record_ipv4` record per
    /// entry (the address, then the name, NUL-terminated), then
    /// `nrb_record_end`. Readers such as Wireshark show the names for the
    /// addresses of the packets that follow. Nothing is written for no
    /// entries; names with a NUL byte are refused.
    pub fn write_name_resolution(&mut self, entries: &[(Ipv4Addr, &str)]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let block = &mut self.block;
        block.begin(NRB);
        let mut value = Vec::new();
        for (address, name) in entries {
            if name.as_bytes().contains(&0) {
                return Err(invalid_input(format!("name {name:?} holds a NUL byte")));
            }
            value.clear();
            value.extend_from_slice(&address.octets());
            value.extend_from_slice(name.as_bytes());
            value.push(0);
            block.record(NRB_RECORD_IPV4, &value)?;
        }
        block.record(NRB_RECORD_END, &[])?;
        self.writer.write_all(block.finish()?)?;
        self.writer.end_block()
    }

    /// Writes out the buffered blocks and flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    /// The underlying writer, after the buffered blocks are written to it.
    /// Writing to it directly corrupts the stream unless whole, valid blocks
    /// are written.
    pub fn get_mut(&mut self) -> io::Result<&mut W> {
        self.writer.get_mut()
    }

    /// Writes out the buffered blocks and returns the underlying writer.
    pub fn into_inner(self) -> io::Result<W> {
        self.writer.into_inner()
    }

    /// Snapshot length of interface `id`, refused if it was never added.
    fn snaplen(&self, id: u32) -> io::Result<u32> {
        usize::try_from(id)
            .ok()
            .and_then(|index| self.snaplens.get(index))
            .copied()
            .ok_or_else(|| {
                invalid_input(format!(
                    "pcapng interface {id} was not added ({} interfaces so far)",
                    self.snaplens.len()
                ))
            })
    }
}

/// `epb_flags` value for `direction`: bits 0-1 are 01 inbound, 10 outbound.
const fn epb_flags(direction: Direction) -> u32 {
    match direction {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
    }
}

impl<W: Write> CaptureWriter for PcapNgWriter<W> {
    fn add_interface(&mut self, interface: &Interface) -> Result<u32, FormatError> {
        Ok(Self::add_interface(self, interface)?)
    }

    fn write_packet(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        Self::write_packet(self, packet)
    }

    fn write_interface_statistics(&mut self, stats: &InterfaceStatistics<'_>) -> io::Result<()> {
        Self::write_interface_statistics(self, stats)
    }

    fn write_name_resolution(&mut self, entries: &[(Ipv4Addr, &str)]) -> io::Result<()> {
        Self::write_name_resolution(self, entries)
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::flush(self)
    }

    fn position(&self) -> u64 {
        self.writer.position()
    }
}
