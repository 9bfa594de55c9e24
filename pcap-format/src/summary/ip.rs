//! IPv4 and IPv6 (`print-ip.c`, `print-ip6.c`, `print-ip6opts.c`,
//! `print-frag6.c`, `print-ip-demux.c`).

use std::fmt::Write as _;

use super::addr::{Addr, IpHeader, Payload};
use super::{Nd, Result, Trunc, be16, be32, bytes_at, icmp, icmp6, tcp, u8_at, udp};

const IP_HDRLEN: usize = 20;
const IP6_HDRLEN: usize = 40;
const IP_MF: u16 = 0x2000;
const IP_OFFMASK: u16 = 0x1fff;
/// The flag bits of the fragment offset field as `-v` names them, in its
/// order: more fragments, don't fragment, reserved.
const IP_FLAG_NAMES: [(u16, &str); 3] = [(IP_MF, "+"), (0x4000, "DF"), (0x8000, "rsvd")];

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_DCCP: u8 = 33;
const IPPROTO_SCTP: u8 = 132;

/// A raw IP packet (`LINKTYPE_RAW`): IPv4 or IPv6 by its version.
pub(super) fn raw(nd: &mut Nd<'_>, data: &[u8], length: usize) -> Result {
    match u8_at(data, 0)? >> 4 {
        6 => ip6_print(nd, data, length),
        _ => ip_print(nd, data, length),
    }
}

/// `ip_print`: an IPv4 packet of `length` bytes from the link layer.
#[expect(
    clippy::too_many_lines,
    reason = "one function per tcpdump printer, in its order, to compare them line by line"
)]
pub(super) fn ip_print(nd: &mut Nd<'_>, bp: &[u8], length: usize) -> Result {
    nd.protocol = "ip";
    let version = u8_at(bp, 0)? >> 4;
    if version != 4 {
        nd.unsupported();
        if version == 6 {
            nd.print("IP6, wrong link-layer encapsulation");
        } else {
            let _ = write!(nd.out, "IP{version}");
        }
        nd.invalid();
        return Ok(());
    }
    if !nd.eflag() {
        nd.print("IP ");
    }
    if !whole_header(nd, bp, length, IP_HDRLEN, "ip") {
        return Ok(());
    }
    let hlen = usize::from(bp[0] & 0x0f) * 4;
    if hlen < IP_HDRLEN {
        let _ = write!(nd.out, "bad-hlen {hlen}");
        return Ok(());
    }
    let mut len = usize::from(be16(bp, 2)?);
    if length < len {
        let _ = write!(nd.out, "truncated-ip - {} bytes missing! ", len - length);
    }
    if len < hlen {
        let _ = write!(nd.out, "bad-len {len}");
        return Ok(());
    }
    // The snapshot ends with the IP packet.
    let bp = &bp[..bp.len().min(len)];
    len -= hlen;
    let off = be16(bp, 6)?;
    let proto = u8_at(bp, 9)?;
    let source = Addr(&bp[12..16]);
    let destination = Addr(&bp[16..20]);
    if nd.verbose() > 0 {
        let tos = bp[1];
        let _ = write!(nd.out, "(tos 0x{tos:x}");
        match tos & 0x03 {
            1 => nd.print(",ECT(1)"),
            2 => nd.print(",ECT(0)"),
            3 => nd.print(",CE"),
            _ => {}
        }
        let ttl = bp[8];
        if ttl >= 1 {
            let _ = write!(nd.out, ", ttl {ttl}");
        }
        let mut flags = String::new();
        for (bit, name) in IP_FLAG_NAMES {
            if off & bit != 0 {
                if !flags.is_empty() {
                    flags.push_str(", ");
                }
                flags.push_str(name);
            }
        }
        if flags.is_empty() {
            flags.push_str("none");
        }
        let _ = write!(
            nd.out,
            ", id {}, offset {}, flags [{flags}], proto {} ({proto})",
            be16(bp, 4)?,
            (off & IP_OFFMASK) * 8,
            protocol_name(proto).unwrap_or("unknown"),
        );
        let _ = write!(nd.out, ", length {}", be16(bp, 2)?);
        let mut truncated = false;
        if hlen > IP_HDRLEN {
            nd.print(", options (");
            if options(nd, &bp[IP_HDRLEN..], hlen - IP_HDRLEN)?.is_err() {
                nd.print(" [truncated-option]");
                truncated = true;
            }
            nd.print(")");
        }
        if bp.len() >= hlen
            && let Some((field, shouldbe)) = super::wrong_cksum(bp, hlen, 10)?
        {
            let _ = write!(nd.out, ", bad cksum {field:x} (->{shouldbe:x})!");
        }
        nd.print(")\n    ");
        if truncated {
            let _ = write!(nd.out, "{source} > {destination}: ");
            nd.trunc();
            return Ok(());
        }
    }
    let header = IpHeader {
        bytes: bp,
        version: 4,
    };
    if off & IP_OFFMASK == 0 {
        if !matches!(
            proto,
            IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_DCCP
        ) {
            let _ = write!(nd.out, "{source} > {destination}: ");
        }
        nd.header_captured(bp, hlen)?;
        demux(nd, &bp[hlen..], len, 4, off & IP_MF != 0, proto, header)
    } else {
        let _ = write!(nd.out, "{source} > {destination}: ip-proto-{proto}");
        Ok(())
    }
}

/// tcpdump's `ipproto_values`.
pub(super) fn protocol_name(proto: u8) -> Option<&'static str> {
    Some(match proto {
        0 => "Options",
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPIP",
        6 => "TCP",
        8 => "EGP",
        9 => "IGRP",
        17 => "UDP",
        33 => "DCCP",
        41 => "IPv6",
        43 => "Routing",
        44 => "Fragment",
        46 => "RSVP",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        55 => "Mobile IP",
        58 => "ICMPv6",
        62 => "Mobile IP (old)",
        88 => "EIGRP",
        89 => "OSPF",
        103 => "PIM",
        108 => "Compressed IP",
        112 => "VRRP",
        113 => "PGM",
        132 => "SCTP",
        135 => "Mobility",
        143 => "Ethernet",
        _ => return None,
    })
}

/// `ip_optprint`: `Err` for tcpdump's longjmp, `Ok(Err(()))` for its
/// `[truncated-option]`.
fn options(
    nd: &mut Nd<'_>,
    mut cp: &[u8],
    mut length: usize,
) -> Result<std::result::Result<(), ()>> {
    let mut sep = "";
    while length > 0 {
        nd.print(sep);
        sep = ",";
        let code = u8_at(cp, 0)?;
        match code {
            0 => nd.print("EOL"),
            1 => nd.print("NOP"),
            68 => nd.print("timestamp"),
            130 => nd.print("security"),
            7 => nd.print("RR"),
            137 => nd.print("SSRR"),
            131 => nd.print("LSRR"),
            148 => nd.print("RA"),
            82 => nd.print("traceroute"),
            other => {
                let _ = write!(nd.out, "unknown {other}");
            }
        }
        let option_len = if code == 0 || code == 1 {
            1
        } else {
            let option_len = usize::from(u8_at(cp, 1)?);
            if option_len < 2 {
                let _ = write!(nd.out, " [bad length {option_len}]");
                return Ok(Ok(()));
            }
            option_len
        };
        if option_len > length {
            let _ = write!(nd.out, " [bad length {option_len}]");
            return Ok(Ok(()));
        }
        if cp.len() < option_len {
            return Ok(Err(()));
        }
        let done = match code {
            0 => return Ok(Ok(())),
            68 => timestamps(nd, cp, option_len),
            7 | 137 | 131 => route(nd, cp, option_len),
            148 => {
                if option_len < 4 {
                    let _ = write!(nd.out, " [bad length {option_len}]");
                } else {
                    let value = be16(cp, 2)?;
                    if value != 0 {
                        let _ = write!(nd.out, " value {value}");
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if done.is_err() {
            return Ok(Err(()));
        }
        cp = &cp[option_len..];
        length -= option_len;
    }
    Ok(Ok(()))
}

/// `ip_printroute`: `Err` where tcpdump's check fails (its `trunc`).
fn route(nd: &mut Nd<'_>, cp: &[u8], length: usize) -> Result {
    if length < 3 {
        let _ = write!(nd.out, " [bad length {length}]");
        return Ok(());
    }
    if (length + 1) & 3 != 0 {
        let _ = write!(nd.out, " [bad length {length}]");
    }
    let raw_ptr = u8_at(cp, 2)?;
    let ptr = usize::from(raw_ptr).wrapping_sub(1);
    if ptr < 3 || ptr.wrapping_add(1) & 3 != 0 || ptr > length + 1 {
        let _ = write!(nd.out, " [bad ptr {raw_ptr}]");
    }
    let mut len = 3;
    while len < length {
        let a = bytes_at(cp, len, 4)?;
        let _ = write!(nd.out, " {}", Addr(a));
        if ptr > len {
            nd.print(",");
        }
        len += 4;
    }
    Ok(())
}

/// `ip_printts`.
fn timestamps(nd: &mut Nd<'_>, cp: &[u8], length: usize) -> Result {
    if length < 4 {
        let _ = write!(nd.out, "[bad length {length}]");
        return Ok(());
    }
    nd.print(" TS{");
    let flags = u8_at(cp, 3)?;
    let hoplen = if flags.trailing_zeros() >= 4 { 4 } else { 8 };
    if (length - 4) & (hoplen - 1) != 0 {
        let _ = write!(nd.out, "[bad length {length}]");
    }
    let raw_ptr = u8_at(cp, 2)?;
    let ptr = usize::from(raw_ptr).wrapping_sub(1);
    let mut len = 0;
    if ptr < 4 || (ptr.wrapping_sub(4)) & (hoplen - 1) != 0 || ptr > length + 1 {
        let _ = write!(nd.out, "[bad ptr {raw_ptr}]");
    }
    let kind = match flags & 0xf {
        0 => Some("TSONLY"),
        1 => Some("TS+ADDR"),
        3 => Some("PRESPEC"),
        other => {
            let _ = write!(nd.out, "[bad ts type {other}]");
            None
        }
    };
    if let Some(kind) = kind {
        nd.print(kind);
        let mut sep = " ";
        len = 4;
        while len < length {
            if ptr == len {
                sep = " ^ ";
            }
            bytes_at(cp, len, hoplen)?;
            let stamp = be32(cp, len + hoplen - 4)?;
            let address = if hoplen == 8 {
                Addr(&cp[len..len + 4]).to_string()
            } else {
                String::new()
            };
            let _ = write!(nd.out, "{sep}{stamp}@{address}");
            sep = " ";
            len += hoplen;
        }
    }
    nd.print(if ptr == len { " ^ " } else { "" });
    if flags >> 4 != 0 {
        let _ = write!(nd.out, " [{} hops not recorded]}} ", flags >> 4);
    } else {
        nd.print("}");
    }
    Ok(())
}

/// `ip_demux_print`: the payload `bp` (`length` bytes on the wire) of
/// protocol `nh`.
fn demux(
    nd: &mut Nd<'_>,
    bp: &[u8],
    length: usize,
    version: u8,
    fragmented: bool,
    nh: u8,
    header: IpHeader<'_>,
) -> Result {
    let payload = Payload {
        bytes: bp,
        length,
        ip: header,
        fragmented,
    };
    match nh {
        IPPROTO_TCP => tcp::tcp_print(nd, payload),
        IPPROTO_UDP => udp::udp_print(nd, payload),
        1 if version == 4 => icmp::icmp_print(nd, payload),
        58 if version == 6 => icmp6::icmp6_print(nd, payload),
        59 => {
            nd.print("no next header");
            Ok(())
        }
        // Protocols tcpdump has printers for, which we do not.
        1 | 2 | 4 | 8 | 9 | 33 | 41 | 46 | 47 | 50 | 51 | 55 | 58 | 77 | 88 | 89 | 103 | 108
        | 112 | 113 | 132 | 143 => {
            nd.unsupported();
            let name = protocol_name(nh).unwrap_or("ND");
            let _ = write!(nd.out, "{name}, length {length}");
            Ok(())
        }
        _ => {
            let _ = write!(nd.out, " ip-proto-{nh} {length}");
            Ok(())
        }
    }
}

/// `ip6_print`: an IPv6 packet of `length` bytes from the link layer.
#[expect(
    clippy::too_many_lines,
    reason = "one function per tcpdump printer, in its order, to compare them line by line"
)]
pub(super) fn ip6_print(nd: &mut Nd<'_>, bp: &[u8], length: usize) -> Result {
    nd.protocol = "ip6";
    if !whole_header(nd, bp, length, IP6_HDRLEN, "ip6") {
        return Ok(());
    }
    if !nd.eflag() {
        nd.print("IP6 ");
    }
    let version = bp[0] >> 4;
    if version != 6 {
        let _ = write!(nd.out, "version error: {version} != 6");
        return Ok(());
    }
    let mut payload_len = usize::from(be16(bp, 4)?);
    let mut len = if payload_len == 0 {
        length + IP6_HDRLEN
    } else {
        let len = payload_len + IP6_HDRLEN;
        if length < len {
            let _ = write!(nd.out, "truncated-ip6 - {} bytes missing!", len - length);
        }
        len
    };
    let mut nh = bp[6];
    if nd.verbose() > 0 {
        let flow = be32(bp, 0)?;
        nd.print("(");
        if flow & 0x0ff0_0000 != 0 {
            let _ = write!(nd.out, "class 0x{:02x}, ", (flow & 0x0ff0_0000) >> 20);
        }
        if flow & 0x000f_ffff != 0 {
            let _ = write!(nd.out, "flowlabel 0x{:05x}, ", flow & 0x000f_ffff);
        }
        let _ = write!(
            nd.out,
            "hlim {}, next-header {} ({nh}) payload length: {payload_len}) ",
            bp[7],
            protocol_name(nh).unwrap_or("unknown"),
        );
    }
    let whole = bp;
    let bp = &bp[..bp.len().min(len)];
    let header = IpHeader {
        bytes: bp,
        version: 6,
    };
    let source = Addr(&bp[8..24]);
    let destination = Addr(&bp[24..40]);
    let mut at = 0;
    let mut advance = IP6_HDRLEN;
    let mut total_advance = 0;
    let mut found_extension_header = false;
    let mut found_jumbo = false;
    let mut found_hbh = false;
    let mut fragmented = false;
    let mut ph: u16 = 255;
    while at < bp.len() && advance > 0 {
        if len < advance {
            return Err(Trunc);
        }
        at += advance;
        len -= advance;
        total_advance += advance;
        if at == IP6_HDRLEN
            && !matches!(nh, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_DCCP | IPPROTO_SCTP)
        {
            let _ = write!(nd.out, "{source} > {destination}: ");
        }
        let cp = &bp[at.min(bp.len())..];
        match nh {
            0 => {
                if found_hbh {
                    nd.print("[The Hop-by-Hop Options header was already found]");
                    nd.invalid();
                    return Ok(());
                }
                if ph != 255 {
                    nd.print("[The Hop-by-Hop Options header don't follow the IPv6 header]");
                    nd.invalid();
                    return Ok(());
                }
                nd.protocol = "hbhopt";
                let hbhlen = (usize::from(u8_at(cp, 1)?) + 1) << 3;
                let ok = match bytes_at(cp, 0, hbhlen) {
                    Ok(_) => {
                        nd.print("HBH ");
                        options6(
                            nd,
                            &cp[2..hbhlen],
                            Some((&mut found_jumbo, &mut payload_len)),
                        )
                        .is_ok()
                    }
                    Err(Trunc) => false,
                };
                if payload_len == 0 && !found_jumbo {
                    if !ok {
                        nd.trunc();
                    }
                    nd.print("[No valid Jumbo Payload Hop-by-Hop option found]");
                    nd.invalid();
                    return Ok(());
                }
                if !ok {
                    nd.trunc();
                    return Ok(());
                }
                advance = hbhlen;
                found_extension_header = true;
                found_hbh = true;
                nh = cp[0];
            }
            60 => {
                nd.protocol = "dstopt";
                let optlen = (usize::from(u8_at(cp, 1)?) + 1) << 3;
                if bytes_at(cp, 0, optlen).is_err() {
                    nd.trunc();
                    return Ok(());
                }
                nd.print("DSTOPT ");
                if nd.verbose() > 0 && options6(nd, &cp[2..optlen], None).is_err() {
                    nd.trunc();
                    return Ok(());
                }
                advance = optlen;
                found_extension_header = true;
                nh = cp[0];
            }
            44 => {
                nd.protocol = "frag6";
                let offset = be16(cp, 2)? & 0xfff8;
                let rest = (IP6_HDRLEN + usize::from(be16(whole, 4)?))
                    .wrapping_sub(at)
                    .wrapping_sub(8);
                if nd.verbose() > 0 {
                    let _ = write!(nd.out, "frag (0x{:08x}:{offset}|{rest})", be32(cp, 4)?);
                } else {
                    let _ = write!(nd.out, "frag ({offset}|{rest})");
                }
                if offset != 0 {
                    return Ok(());
                }
                nd.print(" ");
                advance = 8;
                if bp.len() <= at + advance {
                    return Ok(());
                }
                found_extension_header = true;
                nh = cp[0];
                fragmented = true;
            }
            43 | 62 | 135 => {
                // Routing and mobility headers: not ours.
                nd.unsupported();
                return Ok(());
            }
            _ => {
                if found_jumbo {
                    len = payload_len + IP6_HDRLEN;
                    if len < total_advance {
                        return Err(Trunc);
                    }
                    if length < len {
                        let _ = write!(nd.out, "truncated-ip6 - {} bytes missing!", len - length);
                    }
                    len -= total_advance;
                } else if payload_len == 0 {
                    if found_extension_header {
                        return Err(Trunc);
                    }
                    len = IP6_HDRLEN - total_advance;
                }
                let snap_end = if found_jumbo {
                    whole.len().min(payload_len + IP6_HDRLEN)
                } else if payload_len == 0 {
                    IP6_HDRLEN
                } else {
                    bp.len()
                };
                let payload = whole.get(at..snap_end.max(at)).unwrap_or(&[]);
                let header = IpHeader {
                    bytes: &whole[..IP6_HDRLEN],
                    ..header
                };
                return demux(nd, payload, len, 6, fragmented, nh, header);
            }
        }
        ph = u16::from(nh);
        nd.protocol = "ip6";
    }
    Ok(())
}

/// `ip6_opt_process`: hop-by-hop or destination options, shown with
/// `-v`. `jumbo` is where a hop-by-hop Jumbo Payload option reports.
fn options6(nd: &mut Nd<'_>, bp: &[u8], mut jumbo: Option<(&mut bool, &mut usize)>) -> Result {
    let len = bp.len();
    if len == 0 {
        return Ok(());
    }
    let verbose = nd.verbose() > 0;
    let mut found_jumbo = false;
    let mut i = 0;
    while i < len {
        let kind = u8_at(bp, i)?;
        let optlen = if kind == 0 {
            1
        } else if i + 1 < len {
            usize::from(u8_at(bp, i + 1)?) + 2
        } else {
            return Err(Trunc);
        };
        if i + optlen > len {
            return Err(Trunc);
        }
        match kind {
            0 => {
                if verbose {
                    nd.print("(pad1)");
                }
            }
            1 => {
                option_room(nd, len - i, 2, "padn")?;
                if verbose {
                    nd.print("(padn)");
                }
            }
            5 => {
                option_room(nd, len - i, 4, "rtalert")?;
                option_len(nd, u8_at(bp, i + 1)?, 2, "rtalert")?;
                if verbose {
                    let _ = write!(nd.out, "(rtalert: 0x{:04x}) ", be16(bp, i + 2)?);
                }
            }
            0xc2 => {
                option_room(nd, len - i, 6, "jumbo")?;
                option_len(nd, u8_at(bp, i + 1)?, 4, "jumbo")?;
                let jumbolen = be32(bp, i + 2)?;
                if found_jumbo {
                    if verbose {
                        let _ = write!(nd.out, "(jumbo: {jumbolen} - already seen) ");
                    }
                } else {
                    found_jumbo = true;
                    match jumbo.as_mut() {
                        None => {
                            if verbose {
                                let _ = write!(
                                    nd.out,
                                    "(jumbo: {jumbolen} - not a hop-by-hop option) "
                                );
                            }
                        }
                        Some((_, payload_len)) if **payload_len != 0 => {
                            if verbose {
                                let _ = write!(nd.out, "(jumbo: {jumbolen} - payload len != 0) ");
                            }
                        }
                        Some((found, payload_len)) => {
                            if jumbolen < 65536 {
                                if verbose {
                                    let _ = write!(nd.out, "(jumbo: {jumbolen} - < 65536) ");
                                }
                            } else {
                                **found = true;
                                **payload_len = jumbolen as usize;
                                if verbose {
                                    let _ = write!(nd.out, "(jumbo: {jumbolen}) ");
                                }
                            }
                        }
                    }
                }
            }
            0xc9 => {
                // Home address: not ours.
                nd.unsupported();
            }
            other => {
                option_room(nd, len - i, 2, format_args!("type {other}"))?;
                if verbose {
                    let _ = write!(
                        nd.out,
                        "(opt_type 0x{other:02x}: len={})",
                        u8_at(bp, i + 1)?
                    );
                }
            }
        }
        i += optlen;
    }
    if verbose {
        nd.print(" ");
    }
    Ok(())
}

/// The captured bytes `bp` and the packet's `length` both hold a whole
/// `header`; else prints tcpdump's ` [|PROTOCOL]`, or `truncated-NAME
/// LENGTH`.
fn whole_header(nd: &mut Nd<'_>, bp: &[u8], length: usize, header: usize, name: &str) -> bool {
    if bp.len() < header {
        nd.trunc();
        return false;
    }
    if length < header {
        let _ = write!(nd.out, "truncated-{name} {length}");
        return false;
    }
    true
}

/// At least `need` bytes of an option are `left`; else prints tcpdump's
/// `(NAME: trunc)` and stops.
fn option_room(nd: &mut Nd<'_>, left: usize, need: usize, name: impl std::fmt::Display) -> Result {
    if left < need {
        let _ = write!(nd.out, "({name}: trunc)");
        return Err(Trunc);
    }
    Ok(())
}

/// An option's length byte `found` is the `expected` one; else prints
/// tcpdump's `(NAME: invalid len N)` and stops.
fn option_len(nd: &mut Nd<'_>, found: u8, expected: u8, name: &str) -> Result {
    if found != expected {
        let _ = write!(nd.out, "({name}: invalid len {found})");
        return Err(Trunc);
    }
    Ok(())
}
