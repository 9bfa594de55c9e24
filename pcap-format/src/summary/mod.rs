//! One-line, tcpdump-style packet summaries.
//!
//! [`summarize`] decodes a packet with [`etherparse`] and renders the
//! protocol part of the line `tcpdump -n` would print, e.g.
//!
//! ```text
//! IP 10.0.0.1.43210 > 10.0.0.2.80: Flags [S], seq 123, win 64240, length 0
//! ```
//!
//! Addresses and ports stay numeric, sequence numbers absolute (as with
//! `tcpdump -nS`), and nothing above TCP and UDP is decoded. Data that ends
//! early is shown with tcpdump's truncation mark, e.g. `[|tcp]`; no input
//! makes it panic.

mod arp;
mod icmp;
mod ip;
mod link;
mod tcp;
#[cfg(test)]
mod tests;
mod time;

use std::fmt;

use etherparse::err::{Layer, packet::SliceError};

use crate::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};

pub use time::format_time;

/// Summarizes one packet of `link_type` (see [`crate::linktype`]) in
/// tcpdump's style.
///
/// Ethernet ([`LINKTYPE_ETHERNET`]) and raw IP ([`LINKTYPE_RAW`]) packets
/// are decoded; others are shown as their link type and length.
pub fn summarize(link_type: u16, data: &[u8]) -> String {
    Summary { link_type, data }.to_string()
}

/// The summary of one packet, rendered on demand.
struct Summary<'a> {
    link_type: u16,
    data: &'a [u8],
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.link_type {
            LINKTYPE_ETHERNET => link::ethernet(f, self.data),
            LINKTYPE_RAW => ip::raw(f, self.data),
            other => write!(f, "link type {other}, length {}", self.data.len()),
        }
    }
}

/// Writes why decoding stopped at `layer`: tcpdump's `[|proto]` when the
/// data ends early, `[bad proto header]` when a header is malformed.
fn stopped(f: &mut fmt::Formatter<'_>, error: &SliceError, layer: Layer) -> fmt::Result {
    let protocol = match layer {
        Layer::Ethernet2Header => "ether",
        Layer::VlanHeader => "vlan",
        Layer::MacsecHeader | Layer::MacsecPacket => "macsec",
        Layer::IpHeader | Layer::Ipv4Header | Layer::Ipv4Packet => "ip",
        Layer::IpAuthHeader => "ah",
        Layer::Ipv6Header
        | Layer::Ipv6Packet
        | Layer::Ipv6ExtHeader
        | Layer::Ipv6HopByHopHeader
        | Layer::Ipv6DestOptionsHeader
        | Layer::Ipv6RouteHeader
        | Layer::Ipv6FragHeader => "ip6",
        Layer::UdpHeader | Layer::UdpPayload => "udp",
        Layer::TcpHeader => "tcp",
        Layer::Icmpv4 | Layer::Icmpv4Timestamp | Layer::Icmpv4TimestampReply => "icmp",
        Layer::Icmpv6 => "icmp6",
        Layer::Arp => "arp",
        _ => "truncated",
    };
    match error {
        SliceError::Len(_) => write!(f, "[|{protocol}]"),
        _ => write!(f, "[bad {protocol} header]"),
    }
}
