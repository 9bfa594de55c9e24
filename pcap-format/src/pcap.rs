//! Streaming classic pcap writer (little-endian, nanosecond timestamps).
//!
//! A classic pcap file is a 24-byte header naming one link type and
//! snapshot length, then one 16-byte record header plus data per packet.
//! It has no room for interface names, packet direction, comments or
//! statistics; use [`crate::pcapng`] for those.

use std::io::{self, Write};

use crate::block_buffer::BlockBuffer;

use crate::record::captured;
use crate::{CaptureWriter, FormatError, Interface, InterfaceStatistics, Packet};

/// Magic number of a pcap file with nanosecond timestamps.
const MAGIC_NANOSECONDS: u32 = 0xA1B2_3C4D;
const VERSION_MAJOR: u16 = 2;
const VERSION_MINOR: u16 = 4;
/// Snapshot length written for interfaces without a limit (snaplen 0),
/// tcpdump's maximum.
const UNLIMITED_SNAPLEN: u32 = 262_144;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Writes a classic pcap stream to `W` (a file, a pipe: it buffers itself and
/// writes whole records only, so a stream cut off by a crash stays readable).
pub struct PcapWriter<W: Write> {
    writer: BlockBuffer<W>,
    /// `None` until the file header is written.
    header: Option<FileHeader>,
}

/// The link type and snapshot length the file header was written with.
#[derive(Clone, Copy)]
struct FileHeader {
    link_type: u16,
    snaplen: u32,
}

impl<W: Write> PcapWriter<W> {
    /// Starts the stream with a file header for `link_type` (see
    /// [`crate::linktype`]) and `snaplen` (0: no limit).
    pub fn new(writer: W, link_type: u16, snaplen: u32) -> io::Result<Self> {
        let mut this = Self::deferred(writer);
        this.write_header(FileHeader { link_type, snaplen })?;
        Ok(this)
    }

    /// Creates a writer whose file header is written by the first
    /// [`CaptureWriter::add_interface`], with that interface's link type and
    /// snapshot length.
    pub fn deferred(writer: W) -> Self {
        Self {
            writer: BlockBuffer::new(writer),
            header: None,
        }
    }

    /// Writes one packet record. Data longer than the file's snapshot
    /// length is cut to it; `original_len` is raised to the captured length
    /// if smaller.
    pub fn write_packet(
        &mut self,
        timestamp_ns: u64,
        original_len: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let Some(header) = self.header else {
            return Err(invalid_input(
                "pcap file header not written yet: add an interface first",
            ));
        };
        let data = captured(data, header.snaplen);
        let captured_len = u32::try_from(data.len())
            .map_err(|_| invalid_input("pcap packet longer than 4 GiB"))?;

        let mut record = [0; 16];
        record[0..4].copy_from_slice(&((timestamp_ns / NANOS_PER_SECOND) as u32).to_le_bytes());
        record[4..8].copy_from_slice(&((timestamp_ns % NANOS_PER_SECOND) as u32).to_le_bytes());
        record[8..12].copy_from_slice(&captured_len.to_le_bytes());
        record[12..16].copy_from_slice(&original_len.max(captured_len).to_le_bytes());
        self.writer.write_all(&record)?;
        self.writer.write_all(data)?;
        self.writer.end_block()
    }

    crate::block_buffer::underlying_writer_methods!("records");

    fn write_header(&mut self, header: FileHeader) -> io::Result<()> {
        let snaplen = match header.snaplen {
            0 => UNLIMITED_SNAPLEN,
            limit => limit,
        };
        let mut bytes = [0; 24];
        bytes[0..4].copy_from_slice(&MAGIC_NANOSECONDS.to_le_bytes());
        bytes[4..6].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        bytes[6..8].copy_from_slice(&VERSION_MINOR.to_le_bytes());
        // 8..16: time zone offset and timestamp accuracy, both 0.
        bytes[16..20].copy_from_slice(&snaplen.to_le_bytes());
        bytes[20..24].copy_from_slice(&u32::from(header.link_type).to_le_bytes());
        self.writer.write_all(&bytes)?;
        self.writer.end_block()?;
        self.header = Some(header);
        Ok(())
    }
}

impl<W: Write> CaptureWriter for PcapWriter<W> {
    /// Writes the file header for the first interface and returns id 0 for
    /// it and every later interface of the same link type.
    fn add_interface(&mut self, interface: &Interface) -> Result<u32, FormatError> {
        match self.header {
            None => self.write_header(FileHeader {
                link_type: interface.link_type,
                snaplen: interface.snaplen,
            })?,
            Some(header) if header.link_type != interface.link_type => {
                return Err(FormatError::MixedLinkTypes {
                    interface: interface.name.clone(),
                    expected: header.link_type,
                    found: interface.link_type,
                });
            }
            Some(_) => {}
        }
        Ok(0)
    }

    /// Writes the packet without its direction and comment.
    fn write_packet(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        if packet.interface_id != 0 {
            return Err(invalid_input(
                "a pcap file has only interface 0, as returned by add_interface",
            ));
        }
        Self::write_packet(self, packet.timestamp_ns, packet.original_len, packet.data)
    }

    /// Does nothing: classic pcap has no statistics record.
    fn write_interface_statistics(&mut self, _stats: &InterfaceStatistics<'_>) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::flush(self)
    }

    fn position(&self) -> u64 {
        self.writer.position()
    }
}

fn invalid_input(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};

    fn interface(name: &str, link_type: u16) -> Interface {
        Interface {
            name: name.into(),
            description: None,
            link_type,
            snaplen: 0,
        }
    }

    #[test]
    fn file_header_and_record() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW, 65_535).unwrap();
        w.write_packet(1_700_000_000_123_456_789, 60, &[0xAA, 0xBB, 0xCC])
            .unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x4D, 0x3C, 0xB2, 0xA1,     // magic: nanosecond timestamps
            2, 0, 4, 0,                 // version 2.4
            0, 0, 0, 0, 0, 0, 0, 0,     // time zone, accuracy
            0xFF, 0xFF, 0, 0,           // snaplen
            101, 0, 0, 0,               // link type
            0x00, 0xF1, 0x53, 0x65,     // seconds: 1_700_000_000
            0x15, 0xCD, 0x5B, 0x07,     // nanoseconds: 123_456_789
            3, 0, 0, 0,                 // captured length
            60, 0, 0, 0,                // original length
            0xAA, 0xBB, 0xCC,           // data, unpadded
        ];
        assert_eq!(w.into_inner().unwrap(), expected);
    }

    #[test]
    fn unlimited_snaplen_is_written_as_tcpdump_maximum() {
        let bytes = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, 0)
            .unwrap()
            .into_inner()
            .unwrap();
        assert_eq!(bytes[16..20], 262_144u32.to_le_bytes());
    }

    #[test]
    fn data_is_cut_to_snaplen() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, 2).unwrap();
        w.write_packet(0, 0, &[1, 2, 3]).unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(bytes[24 + 8..], [2, 0, 0, 0, 2, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn deferred_header_comes_from_first_interface() {
        let mut w = PcapWriter::deferred(Vec::new());
        assert_eq!(
            w.write_packet(0, 1, &[1]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert!(w.get_mut().unwrap().is_empty());

        let w: &mut dyn CaptureWriter = &mut w;
        assert_eq!(
            w.add_interface(&interface("eth0", LINKTYPE_ETHERNET))
                .unwrap(),
            0
        );
        assert_eq!(
            w.add_interface(&interface("eth1", LINKTYPE_ETHERNET))
                .unwrap(),
            0
        );
        let error = w
            .add_interface(&interface("tun0", LINKTYPE_RAW))
            .unwrap_err();
        assert!(matches!(
            error,
            FormatError::MixedLinkTypes {
                expected: 1,
                found: 101,
                ..
            }
        ));
        assert!(
            error.to_string().contains("use the pcapng format"),
            "{error}"
        );
    }

    #[test]
    fn capture_writer_drops_what_pcap_cannot_hold() {
        let mut w = PcapWriter::deferred(Vec::new());
        let cw: &mut dyn CaptureWriter = &mut w;
        cw.add_interface(&interface("eth0", LINKTYPE_ETHERNET))
            .unwrap();
        cw.write_packet(&Packet {
            interface_id: 0,
            timestamp_ns: 5,
            original_len: 1,
            data: &[7],
            direction: Some(crate::Direction::Inbound),
            comment: Some("dropped"),
        })
        .unwrap();
        cw.write_interface_statistics(&InterfaceStatistics::default())
            .unwrap();
        let error = cw
            .write_packet(&Packet {
                interface_id: 1,
                timestamp_ns: 5,
                original_len: 1,
                data: &[7],
                direction: None,
                comment: None,
            })
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            w.into_inner().unwrap()[24..],
            [0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7]
        );
    }
}
