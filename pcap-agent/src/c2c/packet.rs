//! What a c2c annotation needs from a packet's bytes: the 5-tuple of its
//! IPv4 packet and, for VXLAN on the underlay, the group-policy tag and the
//! 5-tuple of the encapsulated packet.

use std::net::Ipv4Addr;

use pcap_format::linktype::LINKTYPE_ETHERNET;

/// The VXLAN port silk uses.
pub const VXLAN_PORT: u16 = 4789;

/// Source and destination of an IPv4 packet; ports are 0 for protocols
/// without them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A packet as the annotation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The group-policy id of a VXLAN header with the G flag, when the
    /// packet is VXLAN (UDP/4789).
    pub gbp_tag: Option<u16>,
    /// The inner packet's flow for VXLAN, else the packet's own.
    pub flow: Option<Flow>,
}

/// Parses a frame of link type `link_type` (Ethernet or raw IPv4).
pub fn parse(link_type: u16, data: &[u8]) -> Parsed {
    let ip = match link_type {
        LINKTYPE_ETHERNET => ethernet_payload(data),
        // LINKTYPE_RAW, LINKTYPE_IPV4
        101 | 228 => Some(data),
        _ => None,
    };
    let Some((flow, payload)) = ip.and_then(ipv4) else {
        return Parsed {
            gbp_tag: None,
            flow: None,
        };
    };
    if flow.proto == 17 && flow.dport == VXLAN_PORT {
        // flags (G 0x80, I 0x08), group policy id, VNI, reserved
        if let Some(header) = payload.get(8..16) {
            let flags = header[0];
            if flags & 0x88 == 0x88 {
                let tag = u16::from_be_bytes([header[2], header[3]]);
                let inner = ethernet_payload(&payload[16..])
                    .and_then(ipv4)
                    .map(|(f, _)| f);
                return Parsed {
                    gbp_tag: Some(tag),
                    flow: inner,
                };
            }
        }
    }
    Parsed {
        gbp_tag: None,
        flow: Some(flow),
    }
}

/// The IPv4 payload of an Ethernet frame (one 802.1Q tag allowed).
fn ethernet_payload(frame: &[u8]) -> Option<&[u8]> {
    let mut offset = 12;
    let mut ether_type = u16::from_be_bytes([*frame.get(offset)?, *frame.get(offset + 1)?]);
    if ether_type == 0x8100 {
        offset += 4;
        ether_type = u16::from_be_bytes([*frame.get(offset)?, *frame.get(offset + 1)?]);
    }
    (ether_type == 0x0800)
        .then(|| frame.get(offset + 2..))
        .flatten()
}

/// The flow of an IPv4 packet and its transport payload (from the UDP or
/// TCP header on).
fn ipv4(packet: &[u8]) -> Option<(Flow, &[u8])> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    let header = packet.get(..20)?;
    let proto = header[9];
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
    let transport = packet.get(header_len..)?;
    let (sport, dport) = match (proto, transport.get(..4)) {
        (6 | 17, Some(ports)) if fragment_offset == 0 => (
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        ),
        _ => (0, 0),
    };
    Some((
        Flow {
            src,
            dst,
            proto,
            sport,
            dport,
        },
        transport,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP SYN 10.255.77.3:39304 → 10.255.78.3:8080.
    fn inner_frame() -> Vec<u8> {
        let mut f = vec![0xee; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 63, 6, 0, 0, 10, 255, 77, 3, 10, 255, 78, 3,
        ]);
        f.extend_from_slice(&39304u16.to_be_bytes());
        f.extend_from_slice(&8080u16.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    fn syn_flow() -> Flow {
        Flow {
            src: Ipv4Addr::new(10, 255, 77, 3),
            dst: Ipv4Addr::new(10, 255, 78, 3),
            proto: 6,
            sport: 39304,
            dport: 8080,
        }
    }

    #[test]
    fn a_decapsulated_frame_has_its_own_flow_and_no_header_tag() {
        let parsed = parse(LINKTYPE_ETHERNET, &inner_frame());
        assert_eq!(parsed.gbp_tag, None);
        assert_eq!(parsed.flow, Some(syn_flow()));
    }

    #[test]
    fn vxlan_gbp_on_the_underlay_gives_the_tag_and_the_inner_flow() {
        let inner = inner_frame();
        let mut f = vec![0xaa; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + 8 + inner.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 101, 10, 0, 0, 102]);
        f.extend_from_slice(&51000u16.to_be_bytes());
        f.extend_from_slice(&VXLAN_PORT.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        // The header from cf-facts: G+I, group policy 0x0003, VNI 1.
        f.extend_from_slice(&[0x88, 0x00, 0x00, 0x03, 0x00, 0x00, 0x01, 0x00]);
        f.extend_from_slice(&inner);
        let parsed = parse(LINKTYPE_ETHERNET, &f);
        assert_eq!(parsed.gbp_tag, Some(3));
        assert_eq!(parsed.flow, Some(syn_flow()));

        // Without the G flag it is plain UDP.
        let at = 14 + 20 + 8;
        f[at] = 0x08;
        let parsed = parse(LINKTYPE_ETHERNET, &f);
        assert_eq!(parsed.gbp_tag, None);
        assert_eq!(parsed.flow.unwrap().dport, VXLAN_PORT);
    }

    #[test]
    fn short_or_foreign_frames_parse_to_nothing() {
        assert_eq!(parse(LINKTYPE_ETHERNET, &[0; 10]).flow, None);
        let mut arp = inner_frame();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(LINKTYPE_ETHERNET, &arp).flow, None);
    }
}
