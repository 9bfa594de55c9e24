//! Link-layer header types, as registered at <https://www.tcpdump.org/linktypes.html>.
//!
//! The same numbers go into the pcap file header and the pcapng Interface
//! Description Block.

/// IEEE 802.3 Ethernet frames, starting at the destination MAC address.
pub const LINKTYPE_ETHERNET: u16 = 1;

/// Raw IP: the packet starts at the IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u16 = 101;

/// Linux "cooked" capture, version 1 (`any` device in tcpdump).
pub const LINKTYPE_LINUX_SLL: u16 = 113;

/// Linux "cooked" capture, version 2 (carries the interface index).
pub const LINKTYPE_LINUX_SLL2: u16 = 276;
