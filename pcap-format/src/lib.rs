//! Capture file writers and tcpdump-style packet summaries.
//!
//! * [`pcapng::PcapNgWriter`] streams a pcapng file: several interfaces with
//!   different link types, packet direction and comments, interface
//!   statistics.
//! * [`pcap::PcapWriter`] streams a classic pcap file (nanosecond
//!   timestamps, one link type).
//! * [`CaptureWriter`] lets the caller pick one of the two at run time,
//!   behind a `Box<dyn CaptureWriter>`.
//! * [`summary::Printer`] prints packets as `tcpdump -nn` does (with its
//!   `-e`, `-v`, `-x`, `-X`, `-A`, `-t` options) for Ethernet, ARP, IPv4/IPv6,
//!   ICMP/ICMPv6, TCP, UDP and VXLAN; [`summary::summarize`] is one packet's
//!   line.
//!
//! The writers do no I/O of their own beyond [`std::io::Write`]; wrap files
//! and sockets in a [`std::io::BufWriter`], as every block is written with a
//! few small `write_all` calls.
#![forbid(unsafe_code)]

mod block_buffer;
mod capture_writer;
pub mod linktype;
pub mod pcap;
pub mod pcapng;
mod record;
pub mod sll2;
pub mod summary;

pub use capture_writer::{CaptureWriter, FormatError};
pub use record::{Direction, Interface, InterfaceStatistics, Packet};
