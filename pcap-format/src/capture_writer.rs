//! The format-independent writer interface.

use std::{io, net::Ipv4Addr};

use crate::{Interface, InterfaceStatistics, Packet};

/// A capture file writer whose format is chosen at run time.
///
/// Implemented by [`crate::pcapng::PcapNgWriter`] and
/// [`crate::pcap::PcapWriter`]; object safe, so `Box<dyn CaptureWriter>`
/// works. What a format cannot hold is dropped: classic pcap keeps neither
/// direction, comments nor statistics.
pub trait CaptureWriter {
    /// Describes an interface and returns the id its packets must carry.
    ///
    /// Classic pcap holds one link type per file: every interface gets id 0,
    /// and an interface with a different link type is refused with
    /// [`FormatError::MixedLinkTypes`].
    fn add_interface(&mut self, interface: &Interface) -> Result<u32, FormatError>;

    /// Writes one packet of an interface added before.
    fn write_packet(&mut self, packet: &Packet<'_>) -> io::Result<()>;

    /// Writes the counters of an interface added before (a no-op for
    /// classic pcap).
    fn write_interface_statistics(&mut self, stats: &InterfaceStatistics<'_>) -> io::Result<()>;

    /// Writes names for IPv4 addresses (a pcapng Name Resolution Block; a
    /// no-op for classic pcap).
    fn write_name_resolution(&mut self, entries: &[(Ipv4Addr, &str)]) -> io::Result<()> {
        let _ = entries;
        Ok(())
    }

    /// Flushes the underlying writer.
    fn flush(&mut self) -> io::Result<()>;

    /// Bytes of the file so far, buffered ones included.
    fn position(&self) -> u64;

    /// Ends the file: flushes it, and does what a writer of several files
    /// does when the last one is complete. Called once, after the last
    /// block.
    fn close(&mut self) -> io::Result<()> {
        self.flush()
    }
}

/// Why a [`CaptureWriter`] refused an interface.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A classic pcap file was asked to hold a second link type.
    #[error(
        "interface {interface:?} has link type {found}, but this pcap file holds link type \
         {expected}; a classic pcap file holds one link type, use the pcapng format to capture \
         interfaces with different link types"
    )]
    MixedLinkTypes {
        /// Name of the refused interface.
        interface: String,
        /// Link type of the file.
        expected: u16,
        /// Link type of the refused interface.
        found: u16,
    },
    /// Writing the interface failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}
