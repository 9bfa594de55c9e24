//! UDP datagrams (`print-udp.c`) and VXLAN (`print-vxlan.c`).

use std::fmt::Write as _;

use super::{
    Nd, Result,
    addr::{IpHeader, Payload},
    be16, be24, bytes_at, in_cksum, inner_ether, print_sum_check, u8_at,
};

const UDP_HDRLEN: usize = 8;
const VXLAN_PORT: u16 = 4789;
const VXLAN_HDRLEN: usize = 8;

/// What tcpdump's `udp_print` hands a datagram's payload to.
#[derive(Debug, PartialEq, Eq)]
enum Decoder {
    Vxlan,
    /// One of the many protocols tcpdump decodes on its port, not ours.
    Other,
}

/// tcpdump's chain of port tests, in its order.
fn decoder(sport: u16, dport: u16, payload: &[u8]) -> Option<Decoder> {
    let either = |ports: &[u16]| ports.contains(&sport) || ports.contains(&dport);
    // NAMESERVER, MULTICASTDNS, TIMED, TFTP, BOOTP, RIP, AODV, ISAKMP (and
    // NAT-T and two nonstandard ports), SNMP, NTP, KERBEROS, L2TP, NETBIOS.
    let before_vat = [
        53, 5353, 525, 69, 68, 67, 520, 654, 500, 4500, 7500, 8500, 161, 162, 123, 88, 750, 1701,
        137, 138,
    ];
    if either(&before_vat) || dport == 3456 {
        return Some(Decoder::Other);
    }
    // ZEPHYR, RX, RIPNG, DHCP6, AHCP, BABEL, HNCP.
    if either(&[2103, 2104, 521, 546, 547, 5359, 6696, 6697, 8231])
        || (7000..=7009).contains(&sport)
        || (7000..=7009).contains(&dport)
        || dport == 4567
    {
        return Some(Decoder::Other);
    }
    // CISCO_AUTORP, RADIUS, LWRES, LDP, OLSR, MPLS_LSP_PING.
    if either(&[496, 1645, 1812, 1646, 1813, 1700, 3799, 921, 646, 698, 3503])
        || dport == 1985
        || sport == 49152
        || matches!(dport, 3784 | 4784 | 6784 | 3785)
    {
        return Some(Decoder::Other);
    }
    // LMP, VQP, SFLOW, LWAPP, SIP, SYSLOG, OTV.
    if either(&[701, 1589, 6343, 12222, 5060, 514, 8472]) || dport == 12223 || sport == 12223 {
        return Some(Decoder::Other);
    }
    if either(&[VXLAN_PORT]) {
        return Some(Decoder::Vxlan);
    }
    // GENEVE, LISP, VXLAN-GPE, ZEP, MPLS over UDP.
    if either(&[6081, 4342, 4790, 17754, 6635]) {
        return Some(Decoder::Other);
    }
    let atalk = |p: u16| {
        p.wrapping_sub(16512) < 128 || p.wrapping_sub(200) < 128 || p.wrapping_sub(768) < 128
    };
    if payload.get(2) == Some(&2) && (atalk(sport) || atalk(dport)) {
        return Some(Decoder::Other);
    }
    // PTP, SOME/IP.
    if either(&[319, 320, 30490]) {
        return Some(Decoder::Other);
    }
    None
}

/// Writes `src.sport > dst.dport: ` (tcpdump's `udpipaddr_print`).
fn addresses(nd: &mut Nd<'_>, ip: IpHeader<'_>, ports: Option<(u16, u16)>) {
    if ip.protocol() == 17 {
        match ports {
            Some((sport, dport)) => {
                let _ = write!(
                    nd.out,
                    "{}.{sport} > {}.{dport}: ",
                    ip.source(),
                    ip.destination()
                );
            }
            None => {
                let _ = write!(nd.out, "{} > {}: ", ip.source(), ip.destination());
            }
        }
    } else if let Some((sport, dport)) = ports {
        let _ = write!(nd.out, "{sport} > {dport}: ");
    }
}

/// `udp_print`: a datagram of `length` bytes (header included).
pub(super) fn udp_print(nd: &mut Nd<'_>, payload: Payload<'_>) -> Result {
    let up = payload.bytes;
    let mut length = payload.length;
    let ip = payload.ip;
    nd.protocol = "udp";
    if up.len() < 4 {
        addresses(nd, ip, None);
        nd.trunc();
        return Ok(());
    }
    let sport = be16(up, 0)?;
    let dport = be16(up, 2)?;
    if length < UDP_HDRLEN {
        addresses(nd, ip, Some((sport, dport)));
        let _ = write!(nd.out, "truncated-udp {length}");
        return Ok(());
    }
    if up.len() < 6 {
        addresses(nd, ip, Some((sport, dport)));
        nd.trunc();
        return Ok(());
    }
    let mut ulen = usize::from(be16(up, 4)?);
    if ulen == 0 && length > 65535 {
        ulen = length;
    }
    if ulen < UDP_HDRLEN {
        addresses(nd, ip, Some((sport, dport)));
        let _ = write!(nd.out, "truncated-udplength {ulen}");
        return Ok(());
    }
    ulen -= UDP_HDRLEN;
    length -= UDP_HDRLEN;
    if ulen < length {
        length = ulen;
    }
    if up.len() < UDP_HDRLEN {
        addresses(nd, ip, Some((sport, dport)));
        nd.trunc();
        return Ok(());
    }
    let cp = &up[UDP_HDRLEN..];
    addresses(nd, ip, Some((sport, dport)));
    // tcpdump shows NFS calls and replies: not ours.
    if let Ok(direction) = super::be32(cp, 4)
        && ((dport == 2049 && direction == 0) || (sport == 2049 && direction == 1))
    {
        nd.unsupported();
        return Ok(());
    }
    if nd.verbose() > 0 && !payload.fragmented {
        let check = (ip.version == 4 && nd.verbose() > 1) || ip.version == 6;
        let field = be16(up, 6)?;
        if ip.version == 4 && check && field == 0 {
            nd.print("[no cksum] ");
        } else if check && cp.len() >= length {
            let pseudo = ip.pseudo_header(17, length + UDP_HDRLEN);
            let sum = in_cksum(&[&pseudo, &up[..length + UDP_HDRLEN]]);
            print_sum_check(nd, "udp", field, sum);
        }
    }
    match decoder(sport, dport, cp) {
        Some(Decoder::Vxlan) => return vxlan(nd, cp, length),
        Some(Decoder::Other) => nd.unsupported(),
        None => {}
    }
    if ulen > length && !payload.fragmented {
        let _ = write!(nd.out, "UDP, bad length {ulen} > {length}");
    } else {
        let _ = write!(nd.out, "UDP, length {ulen}");
    }
    Ok(())
}

/// `vxlan_print`: the VXLAN header, then the Ethernet frame it carries
/// on a line of its own.
fn vxlan(nd: &mut Nd<'_>, bp: &[u8], len: usize) -> Result {
    nd.protocol = "vxlan";
    nd.print("VXLAN");
    if len < VXLAN_HDRLEN {
        nd.invalid();
        return Ok(());
    }
    let flags = u8_at(bp, 0)?;
    let _ = write!(
        nd.out,
        ", flags [{}] (0x{flags:02x}), ",
        if flags & 0x08 != 0 { "I" } else { "invalid" }
    );
    let vni = be24(bp, 4)?;
    let _ = writeln!(nd.out, "vni {vni}");
    bytes_at(bp, 7, 1)?;
    nd.protocol = "ether";
    inner_ether(nd, &bp[VXLAN_HDRLEN..], len - VXLAN_HDRLEN).map(|_| ())
}
