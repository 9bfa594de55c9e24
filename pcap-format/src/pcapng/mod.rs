//! Streaming pcapng writer.
//!
//! Writes one little-endian section: a Section Header Block, then Interface
//! Description, Enhanced Packet and Interface Statistics Blocks in the order
//! the caller asks for them. Timestamps have nanosecond resolution
//! (`if_tsresol` = 9 on every interface).

mod encode;
pub mod epb;
#[cfg(test)]
mod tests;

use std::{
    io::{self, Write},
    net::Ipv4Addr,
};

use encode::{
    BYTE_ORDER_MAGIC, BlockBuf, IDB, IF_DESCRIPTION, IF_NAME, IF_TSRESOL, ISB, ISB_ENDTIME,
    ISB_FILTERACCEPT, ISB_IFDROP, ISB_IFRECV, ISB_OSDROP, ISB_STARTTIME, ISB_USRDELIV, NRB,
    NRB_RECORD_END, NRB_RECORD_IPV4, OPT_COMMENT, SHB, SHB_HARDWARE, SHB_OS, SHB_USERAPPL,
    TSRESOL_NANOSECONDS, invalid_input, timestamp_bytes,
};

use crate::block_buffer::BlockBuffer;
use crate::{CaptureWriter, FormatError, Interface, InterfaceStatistics, Packet};

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

    /// Writes an Enhanced Packet Block ([`epb::append_epb`]).
    ///
    /// Data longer than the interface's snapshot length is cut to it. The
    /// direction goes into `epb_flags`, the comment into `opt_comment`.
    /// Nothing is allocated: the block is encoded straight into the block
    /// buffer.
    pub fn write_packet(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        let snaplen = self.snaplen(packet.interface_id)?;
        epb::append_epb(self.writer.bytes(), packet, snaplen)?;
        self.writer.end_block()
    }

    /// Writes an Enhanced Packet Block encoded elsewhere
    /// ([`epb::append_epb`], checked with [`epb::read_epb`]) as it is, with
    /// only its interface id set to `interface_id`, one of this writer's.
    /// A block with more data than the interface's snapshot length is
    /// written cut to it, as [`Self::write_packet`] would.
    pub fn write_epb(&mut self, block: &[u8], interface_id: u32) -> io::Result<()> {
        let snaplen = self.snaplen(interface_id)?; // refuses unknown interfaces
        if snaplen != 0 && epb::captured_len_at(block) > snaplen {
            let (packet, _) = epb::read_epb(block)
                .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
            return self.write_packet(&Packet {
                interface_id,
                ..packet
            });
        }
        let bytes = self.writer.bytes();
        let start = bytes.len();
        bytes.extend_from_slice(block);
        epb::set_interface_id(&mut bytes[start..], interface_id);
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

    crate::block_buffer::underlying_writer_methods!("blocks");

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
