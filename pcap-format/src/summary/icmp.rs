//! ICMP (IPv4) and ICMPv6 messages.
//!
//! Error messages carry the start of the packet that caused them; the
//! summary names that packet's destination (and port), as tcpdump does.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::icmpv4::{
    DestUnreachableHeader, ParameterProblemHeader, RedirectCode, TimeExceededCode,
};
use etherparse::icmpv6::{self, DestUnreachableCode};
use etherparse::{
    Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpNumber, Ipv4HeaderSlice, Ipv6Header,
    Ipv6HeaderSlice,
};

/// Writes an ICMP message, e.g. `ICMP echo request, id 1, seq 2, length 64`.
///
/// `icmp_len` is the message length the IP header declares.
pub(super) fn v4(
    f: &mut fmt::Formatter<'_>,
    message: &Icmpv4Slice<'_>,
    icmp_len: usize,
) -> fmt::Result {
    f.write_str("ICMP ")?;
    match message.icmp_type() {
        Icmpv4Type::EchoRequest(echo) => {
            write!(f, "echo request, id {}, seq {}", echo.id, echo.seq)?;
        }
        Icmpv4Type::EchoReply(echo) => write!(f, "echo reply, id {}, seq {}", echo.id, echo.seq)?,
        Icmpv4Type::DestinationUnreachable(reason) => {
            unreachable_v4(f, &reason, message.payload())?;
        }
        Icmpv4Type::Redirect(redirect) => {
            let (verb, to) = match redirect.code {
                RedirectCode::RedirectForNetwork => ("redirect", "net"),
                RedirectCode::RedirectForHost => ("redirect", "host"),
                RedirectCode::RedirectForTypeOfServiceAndNetwork => ("redirect-tos", "net"),
                RedirectCode::RedirectForTypeOfServiceAndHost => ("redirect-tos", "host"),
            };
            f.write_str(verb)?;
            if let Ok(original) = Ipv4HeaderSlice::from_slice(message.payload()) {
                write!(f, " {}", original.destination_addr())?;
            }
            let gateway = Ipv4Addr::from(redirect.gateway_internet_address);
            write!(f, " to {to} {gateway}")?;
        }
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit) => {
            f.write_str("time exceeded in-transit")?;
        }
        Icmpv4Type::TimeExceeded(TimeExceededCode::FragmentReassemblyTimeExceeded) => {
            f.write_str("ip reassembly time exceeded")?;
        }
        Icmpv4Type::ParameterProblem(ParameterProblemHeader::PointerIndicatesError(octet)) => {
            write!(f, "parameter problem - octet {octet}")?;
        }
        Icmpv4Type::ParameterProblem(ParameterProblemHeader::MissingRequiredOption) => {
            f.write_str("parameter problem - option missing")?;
        }
        Icmpv4Type::ParameterProblem(ParameterProblemHeader::BadLength) => {
            f.write_str("parameter problem - bad length")?;
        }
        Icmpv4Type::TimestampRequest(stamp) => {
            write!(f, "time stamp query id {} seq {}", stamp.id, stamp.seq)?;
        }
        Icmpv4Type::TimestampReply(stamp) => {
            write!(f, "time stamp reply id {} seq {}", stamp.id, stamp.seq)?;
        }
        Icmpv4Type::Unknown { type_u8, .. } => match icmpv4_type_name(type_u8) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "type-#{type_u8}")?,
        },
    }
    write!(f, ", length {icmp_len}")
}

/// Writes why and for whom a destination was unreachable, e.g.
/// `10.0.0.2 udp port 53 unreachable`.
fn unreachable_v4(
    f: &mut fmt::Formatter<'_>,
    reason: &DestUnreachableHeader,
    original: &[u8],
) -> fmt::Result {
    let Ok(header) = Ipv4HeaderSlice::from_slice(original) else {
        return write!(f, "destination unreachable, code {}", reason.code_u8());
    };
    let to = header.destination_addr();
    let protocol = header.protocol();
    match reason {
        DestUnreachableHeader::Network => write!(f, "net {to} unreachable"),
        DestUnreachableHeader::Host => write!(f, "host {to} unreachable"),
        DestUnreachableHeader::Protocol => write!(f, "{to} protocol {} unreachable", protocol.0),
        DestUnreachableHeader::Port => {
            let port = destination_port(&original[header.slice().len()..]);
            match (transport_name(protocol), port) {
                (Some(name), Some(port)) => write!(f, "{to} {name} port {port} unreachable"),
                _ => write!(f, "{to} protocol {} port unreachable", protocol.0),
            }
        }
        DestUnreachableHeader::FragmentationNeeded { next_hop_mtu } => {
            write!(f, "{to} unreachable - need to frag (mtu {next_hop_mtu})")
        }
        DestUnreachableHeader::SourceRouteFailed => {
            write!(f, "{to} unreachable - source route failed")
        }
        DestUnreachableHeader::NetworkUnknown => write!(f, "net {to} unreachable - unknown"),
        DestUnreachableHeader::HostUnknown => write!(f, "host {to} unreachable - unknown"),
        DestUnreachableHeader::Isolated => write!(f, "{to} unreachable - source host isolated"),
        DestUnreachableHeader::NetworkProhibited => {
            write!(f, "net {to} unreachable - admin prohibited")
        }
        DestUnreachableHeader::HostProhibited => {
            write!(f, "host {to} unreachable - admin prohibited")
        }
        DestUnreachableHeader::TosNetwork => write!(f, "net {to} unreachable - tos prohibited"),
        DestUnreachableHeader::TosHost => write!(f, "host {to} unreachable - tos prohibited"),
        DestUnreachableHeader::FilterProhibited => {
            write!(f, "host {to} unreachable - admin prohibited filter")
        }
        DestUnreachableHeader::HostPrecedenceViolation => {
            write!(f, "host {to} unreachable - host precedence violation")
        }
        DestUnreachableHeader::PrecedenceCutoff => {
            write!(f, "host {to} unreachable - precedence cutoff")
        }
    }
}

/// Names of the ICMP types etherparse leaves unknown.
fn icmpv4_type_name(type_u8: u8) -> Option<&'static str> {
    Some(match type_u8 {
        3 => "destination unreachable",
        4 => "source quench",
        5 => "redirect",
        9 => "router advertisement",
        10 => "router solicitation",
        11 => "time exceeded",
        12 => "parameter problem",
        15 => "information request",
        16 => "information reply",
        17 => "address mask request",
        18 => "address mask reply",
        _ => return None,
    })
}

/// Writes an ICMPv6 message, e.g.
/// `ICMP6, echo request, id 7, seq 1, length 64`.
///
/// `icmp_len` is the message length the IP header declares.
pub(super) fn v6(
    f: &mut fmt::Formatter<'_>,
    message: &Icmpv6Slice<'_>,
    icmp_len: usize,
) -> fmt::Result {
    f.write_str("ICMP6, ")?;
    let body = message.payload();
    match message.icmp_type() {
        Icmpv6Type::EchoRequest(echo) => {
            write!(f, "echo request, id {}, seq {}", echo.id, echo.seq)?;
        }
        Icmpv6Type::EchoReply(echo) => write!(f, "echo reply, id {}, seq {}", echo.id, echo.seq)?,
        Icmpv6Type::DestinationUnreachable(code) => unreachable_v6(f, code, body)?,
        Icmpv6Type::PacketTooBig { mtu } => write!(f, "packet too big, mtu {mtu}")?,
        Icmpv6Type::TimeExceeded(code) => {
            f.write_str(match code {
                icmpv6::TimeExceededCode::HopLimitExceeded => "time exceeded in-transit",
                icmpv6::TimeExceededCode::FragmentReassemblyTimeExceeded => {
                    "ip6 reassembly time exceeded"
                }
            })?;
            if let Ok(original) = Ipv6HeaderSlice::from_slice(body) {
                write!(f, " for {}", original.destination_addr())?;
            }
        }
        Icmpv6Type::ParameterProblem(problem) => write!(
            f,
            "parameter problem, code {} - octet {}",
            problem.code.code_u8(),
            problem.pointer
        )?,
        Icmpv6Type::RouterSolicitation => f.write_str("router solicitation")?,
        Icmpv6Type::RouterAdvertisement(_) => f.write_str("router advertisement")?,
        Icmpv6Type::NeighborSolicitation => {
            f.write_str("neighbor solicitation")?;
            if let Some(target) = ipv6_addr_at(body, 0) {
                write!(f, ", who has {target}")?;
            }
        }
        Icmpv6Type::NeighborAdvertisement(_) => {
            f.write_str("neighbor advertisement")?;
            if let Some(target) = ipv6_addr_at(body, 0) {
                write!(f, ", tgt is {target}")?;
            }
        }
        Icmpv6Type::Redirect => f.write_str("redirect")?,
        Icmpv6Type::Unknown { type_u8, .. } => match icmpv6_type_name(type_u8) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "type-#{type_u8}")?,
        },
    }
    write!(f, ", length {icmp_len}")
}

/// Names of the ICMPv6 types etherparse leaves unknown: router discovery,
/// redirect, multicast listener messages, and known types with an unknown
/// code.
fn icmpv6_type_name(type_u8: u8) -> Option<&'static str> {
    Some(match type_u8 {
        1 => "destination unreachable",
        2 => "packet too big",
        3 => "time exceeded",
        4 => "parameter problem",
        128 => "echo request",
        129 => "echo reply",
        130 => "multicast listener query",
        131 => "multicast listener report",
        132 => "multicast listener done",
        133 => "router solicitation",
        134 => "router advertisement",
        135 => "neighbor solicitation",
        136 => "neighbor advertisement",
        137 => "redirect",
        143 => "multicast listener report v2",
        _ => return None,
    })
}

/// Writes why and for whom a destination was unreachable, e.g.
/// `destination unreachable, unreachable port, fd00::2 udp port 53`.
fn unreachable_v6(
    f: &mut fmt::Formatter<'_>,
    code: DestUnreachableCode,
    original: &[u8],
) -> fmt::Result {
    f.write_str("destination unreachable, ")?;
    f.write_str(match code {
        DestUnreachableCode::NoRoute => "unreachable route",
        DestUnreachableCode::Prohibited => "unreachable prohibited",
        DestUnreachableCode::BeyondScope => "beyond scope",
        DestUnreachableCode::Address => "unreachable address",
        DestUnreachableCode::Port => "unreachable port",
        DestUnreachableCode::SourceAddressFailedPolicy => "source address failed policy",
        DestUnreachableCode::RejectRoute => "reject route",
    })?;
    let Ok(header) = Ipv6HeaderSlice::from_slice(original) else {
        return Ok(());
    };
    let to = header.destination_addr();
    let protocol = header.next_header();
    match code {
        DestUnreachableCode::Port => {
            let port = destination_port(&original[Ipv6Header::LEN..]);
            match (transport_name(protocol), port) {
                (Some(name), Some(port)) => write!(f, ", {to} {name} port {port}"),
                _ => write!(f, ", {to} protocol {}", protocol.0),
            }
        }
        DestUnreachableCode::BeyondScope => {
            write!(f, " {to}, source address {}", header.source_addr())
        }
        _ => write!(f, " {to}"),
    }
}

/// `tcp` or `udp`, the protocols whose ports error messages show.
fn transport_name(protocol: IpNumber) -> Option<&'static str> {
    match protocol {
        IpNumber::TCP => Some("tcp"),
        IpNumber::UDP => Some("udp"),
        _ => None,
    }
}

/// Destination port of a TCP or UDP header: both keep it in bytes 2-3.
fn destination_port(transport_header: &[u8]) -> Option<u16> {
    let bytes = transport_header.get(2..4)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// The IPv6 address at `offset` in `bytes`, if they hold one there.
fn ipv6_addr_at(bytes: &[u8], offset: usize) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.get(offset..offset + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}
