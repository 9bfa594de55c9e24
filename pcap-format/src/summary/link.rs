//! Ethernet frames: VLAN and MACsec tags, then the network layer.

use std::fmt;

use etherparse::{EtherType, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket};

use super::{arp, ip, stopped};

/// Summarizes an Ethernet frame, starting at the destination MAC address.
pub(super) fn ethernet(f: &mut fmt::Formatter<'_>, frame: &[u8]) -> fmt::Result {
    let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) else {
        return f.write_str("[|ether]");
    };
    for tag in &packet.link_exts {
        match tag {
            LaxLinkExtSlice::Vlan(vlan) => {
                write!(
                    f,
                    "802.1Q vlan {}, p {}",
                    vlan.vlan_identifier().value(),
                    vlan.priority_code_point().value()
                )?;
                if vlan.drop_eligible_indicator() {
                    f.write_str(", DEI")?;
                }
                write!(f, ", ethertype {}, ", EtherTypeName(vlan.ether_type()))?;
            }
            LaxLinkExtSlice::Macsec(_) => f.write_str("MACsec, ")?,
        }
    }

    match &packet.net {
        Some(LaxNetSlice::Arp(arp)) => {
            let arp_len = packet.ether_payload().map_or(0, |p| p.payload.len());
            arp::summarize(f, arp, arp_len)
        }
        Some(_) => ip::summarize(f, &packet),
        None => match (&packet.stop_err, packet.ether_payload()) {
            (Some((error, layer)), _) => stopped(f, error, *layer),
            (None, Some(payload)) => {
                // Decoding stopped at an ether type etherparse does not know.
                let tag_named_it =
                    matches!(packet.link_exts.last(), Some(LaxLinkExtSlice::Vlan(_)));
                if payload.ether_type.0 <= MAX_802_3_LENGTH {
                    f.write_str("802.3, ")?;
                } else if !tag_named_it {
                    write!(f, "ethertype {}, ", EtherTypeName(payload.ether_type))?;
                }
                write!(f, "length {}", frame.len())
            }
            (None, None) => write!(f, "encrypted, length {}", frame.len()),
        },
    }
}

/// Ether type values up to this are an IEEE 802.3 length, not a type.
const MAX_802_3_LENGTH: u16 = 1500;

/// An ether type as tcpdump names it, or in hex.
struct EtherTypeName(EtherType);

impl fmt::Display for EtherTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            EtherType::IPV4 => "IPv4",
            EtherType::IPV6 => "IPv6",
            EtherType::ARP => "ARP",
            EtherType::VLAN_TAGGED_FRAME => "802.1Q",
            EtherType::PROVIDER_BRIDGING => "802.1Q-QinQ",
            EtherType::VLAN_DOUBLE_TAGGED_FRAME => "802.1Q-9100",
            EtherType::MACSEC => "MACsec",
            EtherType(value) => return write!(f, "{value:#06x}"),
        };
        f.write_str(name)
    }
}
