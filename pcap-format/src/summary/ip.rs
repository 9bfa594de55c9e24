//! IPv4 and IPv6 packets and their UDP, TCP and ICMP payloads.

use std::fmt;
use std::net::IpAddr;

use etherparse::err::ip::LaxHeaderSliceError;
use etherparse::{
    LaxIpPayloadSlice, LaxIpv4Slice, LaxIpv6Slice, LaxNetSlice, LaxSlicedPacket, TransportSlice,
};

use super::{icmp, stopped, tcp};

/// UDP header length, which the UDP length field counts.
const UDP_HEADER_LEN: usize = 8;

/// Summarizes a raw IP packet, starting at the IPv4 or IPv6 header.
pub(super) fn raw(f: &mut fmt::Formatter<'_>, data: &[u8]) -> fmt::Result {
    match LaxSlicedPacket::from_ip(data) {
        Ok(packet) => summarize(f, &packet),
        Err(LaxHeaderSliceError::Len(_)) => f.write_str("[|ip]"),
        Err(LaxHeaderSliceError::Content(_)) => f.write_str("[bad ip header]"),
    }
}

/// Summarizes the IP layer of `packet` and what it carries.
pub(super) fn summarize(f: &mut fmt::Formatter<'_>, packet: &LaxSlicedPacket<'_>) -> fmt::Result {
    let ip = match &packet.net {
        Some(LaxNetSlice::Ipv4(ipv4)) => IpSummary::v4(ipv4),
        Some(LaxNetSlice::Ipv6(ipv6)) => IpSummary::v6(ipv6),
        _ => return f.write_str("[|ip]"),
    };
    let ports = match &packet.transport {
        Some(TransportSlice::Tcp(segment)) => {
            Some((segment.source_port(), segment.destination_port()))
        }
        Some(TransportSlice::Udp(datagram)) => {
            Some((datagram.source_port(), datagram.destination_port()))
        }
        _ => None,
    };
    ip.endpoints(f, ports)?;

    match &packet.transport {
        Some(TransportSlice::Tcp(segment)) => tcp::summarize(f, segment, ip.payload_len),
        Some(TransportSlice::Udp(datagram)) => {
            let data_len = usize::from(datagram.length()).saturating_sub(UDP_HEADER_LEN);
            write!(f, "UDP, length {data_len}")
        }
        Some(TransportSlice::Icmpv4(message)) => icmp::v4(f, message, ip.payload_len),
        Some(TransportSlice::Icmpv6(message)) => icmp::v6(f, message, ip.payload_len),
        None => match (&ip.fragment, &packet.stop_err) {
            (Some(fragment), _) => write!(
                f,
                "ip-proto-{}, length {len} (frag {}:{len}@{}{})",
                ip.payload.ip_number.0,
                fragment.id,
                fragment.offset,
                if fragment.more { "+" } else { "" },
                len = ip.payload_len,
            ),
            (None, Some((error, layer))) => stopped(f, error, *layer),
            (None, None) => write!(
                f,
                "ip-proto-{}, length {}",
                ip.payload.ip_number.0, ip.payload_len
            ),
        },
    }
}

/// What a summary shows of an IPv4 or IPv6 header.
struct IpSummary<'a> {
    /// `IP` or `IP6`, as tcpdump starts the line.
    label: &'static str,
    source: IpAddr,
    destination: IpAddr,
    payload: &'a LaxIpPayloadSlice<'a>,
    /// Payload length the header declares; more than the payload bytes at
    /// hand when the capture was cut short.
    payload_len: usize,
    /// Set when the payload is a fragment of a larger one.
    fragment: Option<Fragment>,
}

/// Where a fragment belongs in the original payload.
struct Fragment {
    id: u32,
    /// Offset in bytes.
    offset: u16,
    /// More fragments follow.
    more: bool,
}

impl<'a> IpSummary<'a> {
    /// Writes `IP 10.0.0.1 > 10.0.0.2: `, with `.port` after each address
    /// when there are `ports` (source, destination).
    fn endpoints(&self, f: &mut fmt::Formatter<'_>, ports: Option<(u16, u16)>) -> fmt::Result {
        let Self {
            label,
            source,
            destination,
            ..
        } = self;
        match ports {
            Some((from, to)) => write!(f, "{label} {source}.{from} > {destination}.{to}: "),
            None => write!(f, "{label} {source} > {destination}: "),
        }
    }

    fn v4(ipv4: &'a LaxIpv4Slice<'a>) -> Self {
        let header = ipv4.header();
        let payload = ipv4.payload();
        let payload_len = if payload.incomplete {
            let headers_len =
                header.slice().len() + ipv4.extensions().auth.map_or(0, |auth| auth.slice().len());
            usize::from(header.total_len()).saturating_sub(headers_len)
        } else {
            payload.payload.len()
        };
        Self {
            label: "IP",
            source: header.source_addr().into(),
            destination: header.destination_addr().into(),
            payload,
            payload_len,
            fragment: payload.fragmented.then(|| Fragment {
                id: header.identification().into(),
                offset: header.fragments_offset().byte_offset(),
                more: header.more_fragments(),
            }),
        }
    }

    fn v6(ipv6: &'a LaxIpv6Slice<'a>) -> Self {
        let header = ipv6.header();
        let payload = ipv6.payload();
        let payload_len = if payload.incomplete {
            usize::from(header.payload_length()).saturating_sub(ipv6.extensions().slice().len())
        } else {
            payload.payload.len()
        };
        let fragment = payload
            .fragmented
            .then(|| fragment_header(header.next_header().0, ipv6.extensions().slice()))
            .flatten();
        Self {
            label: "IP6",
            source: header.source_addr().into(),
            destination: header.destination_addr().into(),
            payload,
            payload_len,
            fragment,
        }
    }
}

/// The fragment header among IPv6 extension headers, walked by hand with
/// checked reads: etherparse 0.19's extension iterator panics on some
/// malformed headers (tcpdump's ipv6_missing_jumbo_payload_option.pcap).
fn fragment_header(mut next: u8, mut bytes: &[u8]) -> Option<Fragment> {
    loop {
        let length = match next {
            // Fragment: fixed 8 bytes.
            44 => {
                let header = bytes.get(..8)?;
                let offset_flags = u16::from_be_bytes([header[2], header[3]]);
                return Some(Fragment {
                    id: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                    offset: offset_flags & 0xfff8,
                    more: offset_flags & 1 == 1,
                });
            }
            // Hop-by-hop, routing, destination options: (len + 1) * 8.
            0 | 43 | 60 => (usize::from(*bytes.get(1)?) + 1) * 8,
            // Authentication header: (len + 2) * 4.
            51 => (usize::from(*bytes.get(1)?) + 2) * 4,
            _ => return None,
        };
        next = *bytes.first()?;
        bytes = bytes.get(length..)?;
    }
}

#[cfg(test)]
mod fragment_tests {
    use super::fragment_header;

    #[test]
    fn finds_the_fragment_header_after_options_and_stops_at_truncation() {
        // Hop-by-hop (next: fragment, 8 bytes), then fragment: offset 1480, more, id 0x01020304.
        let mut bytes = vec![44, 0, 1, 4, 0, 0, 0, 0];
        bytes.extend([17, 0, 0x05, 0xc9, 1, 2, 3, 4]);
        let fragment = fragment_header(0, &bytes).unwrap();
        assert_eq!(
            (fragment.id, fragment.offset, fragment.more),
            (0x0102_0304, 1480, true)
        );
        assert!(fragment_header(0, &bytes[..12]).is_none());
        assert!(fragment_header(0, &[44, 255]).is_none());
        assert!(fragment_header(17, &bytes).is_none());
    }
}
