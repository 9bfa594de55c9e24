//! ARP packets.

use std::fmt;
use std::net::Ipv4Addr;

use etherparse::{ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType};

/// RARP operations, which etherparse does not name.
const REVERSE_REQUEST: ArpOperation = ArpOperation(3);
const REVERSE_REPLY: ArpOperation = ArpOperation(4);

/// Writes an ARP packet, e.g.
/// `ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 28`.
///
/// `arp_len` is the length of the frame after the link-layer headers,
/// Ethernet padding included, which is what tcpdump shows.
pub(super) fn summarize(
    f: &mut fmt::Formatter<'_>,
    arp: &ArpPacketSlice<'_>,
    arp_len: usize,
) -> fmt::Result {
    f.write_str("ARP, ")?;
    match EthernetIpv4::of(arp) {
        Some(addresses) => addresses.describe(f, arp.operation())?,
        None => write!(
            f,
            "hardware type {}, protocol type {:#06x}, op {}",
            arp.hw_addr_type().0,
            arp.proto_addr_type().0,
            arp.operation().0
        )?,
    }
    write!(f, ", length {arp_len}")
}

/// The addresses of an ARP packet for IPv4 over Ethernet, by far the most
/// common kind.
struct EthernetIpv4<'a> {
    sender_mac: Mac<'a>,
    sender_ip: Ipv4Addr,
    target_mac: Mac<'a>,
    target_ip: Ipv4Addr,
}

impl<'a> EthernetIpv4<'a> {
    fn of(arp: &'a ArpPacketSlice<'a>) -> Option<Self> {
        if arp.hw_addr_type() != ArpHardwareId::ETHERNET
            || arp.proto_addr_type() != EtherType::IPV4
            || arp.hw_addr_size() != 6
        {
            return None;
        }
        let ip = |bytes: &[u8]| <[u8; 4]>::try_from(bytes).ok().map(Ipv4Addr::from);
        Some(Self {
            sender_mac: Mac(arp.sender_hw_addr()),
            sender_ip: ip(arp.sender_protocol_addr())?,
            target_mac: Mac(arp.target_hw_addr()),
            target_ip: ip(arp.target_protocol_addr())?,
        })
    }

    fn describe(&self, f: &mut fmt::Formatter<'_>, operation: ArpOperation) -> fmt::Result {
        let Self {
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        } = self;
        match operation {
            ArpOperation::REQUEST => {
                write!(f, "Request who-has {target_ip}")?;
                if target_mac.0.iter().any(|&byte| byte != 0) {
                    write!(f, " ({target_mac})")?;
                }
                write!(f, " tell {sender_ip}")
            }
            ArpOperation::REPLY => write!(f, "Reply {sender_ip} is-at {sender_mac}"),
            REVERSE_REQUEST => write!(f, "Reverse Request who-is {target_mac} tell {sender_mac}"),
            REVERSE_REPLY => write!(f, "Reverse Reply {target_mac} at {target_ip}"),
            ArpOperation(other) => write!(f, "Unknown (op {other})"),
        }
    }
}

/// A MAC address written as tcpdump does: `aa:bb:cc:dd:ee:ff`.
struct Mac<'a>(&'a [u8]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}
