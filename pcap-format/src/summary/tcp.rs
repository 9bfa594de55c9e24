//! TCP segments (`print-tcp.c`).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{Nd, Result, addr::Payload, be16, be32, bytes_at, in_cksum, in_cksum_shouldbe, u8_at};

/// The flag bits the printer tests.
const TH_FIN: u8 = 0x01;
const TH_SYN: u8 = 0x02;
const TH_RST: u8 = 0x04;
const TH_ACK: u8 = 0x10;
const TH_URG: u8 = 0x20;

/// Ports whose payload tcpdump decodes (telnet, SMTP, whois, BGP, PPTP,
/// Redis, SSH, BEEP, OpenFlow, FTP, HTTP, RTSP, DNS, MSDP, RPKI-RTR, LDP,
/// NFS): a segment with data on them is not ours.
const DECODED_PORTS: [u16; 21] = [
    23, 25, 43, 179, 1723, 6379, 22, 10288, 6633, 6653, 21, 80, 8080, 554, 8554, 53, 639, 323, 646,
    2049, 139,
];

const TCP_HDRLEN: usize = 20;

/// The initial sequence numbers of each connection seen, for relative
/// numbers (tcpdump's `tcp_seq_hash`).
#[derive(Debug, Default)]
pub(super) struct Connections {
    /// (addresses in a fixed order, ports) to (seq, ack) bases.
    bases: HashMap<(Vec<u8>, u32), (u32, u32)>,
}

/// `tcp_print`: a segment of `length` bytes (header included).
#[expect(
    clippy::too_many_lines,
    reason = "one function per tcpdump printer, in its order, to compare them line by line"
)]
pub(super) fn tcp_print(nd: &mut Nd<'_>, payload: Payload<'_>) -> Result {
    let tp = payload.bytes;
    let mut length = payload.length;
    nd.protocol = "tcp";
    if tp.len() < 4 {
        let _ = write!(
            nd.out,
            "{} > {}:",
            payload.ip.source(),
            payload.ip.destination()
        );
        nd.trunc();
        return Ok(());
    }
    let sport = be16(tp, 0)?;
    let dport = be16(tp, 2)?;
    if payload.ip.protocol() == 6 {
        let _ = write!(
            nd.out,
            "{}.{sport} > {}.{dport}: ",
            payload.ip.source(),
            payload.ip.destination()
        );
    } else {
        let _ = write!(nd.out, "{sport} > {dport}: ");
    }
    if tp.len() < TCP_HDRLEN {
        nd.trunc();
        return Ok(());
    }
    let mut hlen = usize::from(tp[12] >> 4) * 4;
    if hlen < TCP_HDRLEN {
        let _ = write!(
            nd.out,
            " tcp {} [bad hdr length {hlen} - too short, < {TCP_HDRLEN}]",
            length.wrapping_sub(hlen) as u32
        );
        return Ok(());
    }
    let mut seq = be32(tp, 4)?;
    let mut ack = be32(tp, 8)?;
    let win = be16(tp, 14)?;
    let urp = be16(tp, 18)?;
    let flags = tp[13];
    let _ = write!(nd.out, "Flags [{}]", Flags(flags));
    let (mut rev, mut thseq, mut thack) = (false, 0u32, 0u32);
    if !nd.options.absolute_seq && flags & TH_ACK != 0 {
        let (src, dst) = (payload.ip.source().0, payload.ip.destination().0);
        rev = sport > dport || (sport == dport && src > dst);
        let (key, port) = if rev {
            (
                [dst, src].concat(),
                (u32::from(dport) << 16) | u32::from(sport),
            )
        } else {
            (
                [src, dst].concat(),
                (u32::from(sport) << 16) | u32::from(dport),
            )
        };
        let entry = nd.tcp.bases.get(&(key.clone(), port)).copied();
        let base = match entry {
            Some(base) if flags & TH_SYN == 0 => {
                if rev {
                    seq = seq.wrapping_sub(base.1);
                    ack = ack.wrapping_sub(base.0);
                } else {
                    seq = seq.wrapping_sub(base.0);
                    ack = ack.wrapping_sub(base.1);
                }
                base
            }
            _ => {
                let base = if rev {
                    (ack.wrapping_sub(1), seq)
                } else {
                    (seq, ack.wrapping_sub(1))
                };
                nd.tcp.bases.insert((key, port), base);
                base
            }
        };
        (thseq, thack) = base;
    }
    if hlen > length {
        let _ = write!(nd.out, " [bad hdr length {hlen} - too long, > {length}]");
        return Ok(());
    }
    if nd.verbose() > 0 && !payload.fragmented && tp.len() >= length {
        let pseudo = payload.ip.pseudo_header(6, length);
        let sum = in_cksum(&[&pseudo, &tp[..length]]);
        let field = be16(tp, 16)?;
        let _ = write!(nd.out, ", cksum 0x{field:04x}");
        if sum == 0 {
            nd.print(" (correct)");
        } else {
            let _ = write!(
                nd.out,
                " (incorrect -> 0x{:04x})",
                in_cksum_shouldbe(field, sum)
            );
        }
    }
    length -= hlen;
    if nd.verbose() > 1 || length > 0 || flags & (TH_SYN | TH_FIN | TH_RST) != 0 {
        let _ = write!(nd.out, ", seq {seq}");
        if length > 0 {
            let _ = write!(nd.out, ":{}", seq.wrapping_add(length as u32));
        }
    }
    if flags & TH_ACK != 0 {
        let _ = write!(nd.out, ", ack {ack}");
    }
    let _ = write!(nd.out, ", win {win}");
    if flags & TH_URG != 0 {
        let _ = write!(nd.out, ", urg {urp}");
    }
    if hlen > TCP_HDRLEN {
        hlen -= TCP_HDRLEN;
        nd.print(", options [");
        let mut printed_one = false;
        let payload_captured = tp.len() >= usize::from(tp[12] >> 4) * 4 + length;
        match options(
            nd,
            &tp[TCP_HDRLEN..],
            hlen,
            (rev, thseq, thack),
            payload_captured,
            &mut printed_one,
        )? {
            OptionsEnd::Done => nd.print("]"),
            OptionsEnd::Bad => {
                nd.print("[bad opt]");
                if printed_one {
                    nd.print("]");
                }
                return Ok(());
            }
            OptionsEnd::Truncated => {
                nd.trunc();
                if printed_one {
                    nd.print(">");
                }
                return Ok(());
            }
        }
    }
    let _ = write!(nd.out, ", length {length}");
    if length == 0 {
        return Ok(());
    }
    let header_len = usize::from(tp[12] >> 4) * 4;
    nd.header_captured(tp, header_len)?;
    if flags & TH_RST != 0 && nd.verbose() > 0 {
        // tcpdump shows the reset's data: not ours.
        nd.unsupported();
        return Ok(());
    }
    if DECODED_PORTS.contains(&sport) || DECODED_PORTS.contains(&dport) {
        nd.unsupported();
    }
    Ok(())
}

/// The length of the data of option `opt`, for the options whose length
/// is fixed (tcpdump's `LENCHECK` of each).
fn fixed_data_len(opt: u8) -> Option<usize> {
    match opt {
        3 => Some(1),
        2 | 20 | 28 => Some(2),
        6 | 7 | 11..=13 => Some(4),
        8 => Some(8),
        19 => Some(16),
        _ => None,
    }
}

/// The flags as tcpdump writes them: `S`, `F`, `P`, `R`, `U`, `E`, `W`,
/// `.` for ACK, or `none`.
struct Flags(u8);

impl std::fmt::Display for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (0x01, 'F'),
            (0x02, 'S'),
            (0x04, 'R'),
            (0x08, 'P'),
            (0x10, '.'),
            (0x20, 'U'),
            (0x40, 'E'),
            (0x80, 'W'),
        ];
        if self.0 == 0 {
            return f.write_str("none");
        }
        for (bit, letter) in names {
            if self.0 & bit != 0 {
                f.write_char(letter)?;
            }
        }
        Ok(())
    }
}

/// How the options ended: tcpdump's `bad` and `trunc` labels.
enum OptionsEnd {
    Done,
    Bad,
    Truncated,
}

/// The options of `hlen` bytes at `cp`; SACK blocks are relative to the
/// connection's bases (`rev`, `thseq`, `thack` of `tcp_print`).
#[expect(
    clippy::too_many_lines,
    reason = "one function per tcpdump printer, in its order, to compare them line by line"
)]
fn options(
    nd: &mut Nd<'_>,
    cp: &[u8],
    mut hlen: usize,
    (rev, thseq, thack): (bool, u32, u32),
    payload_captured: bool,
    printed_one: &mut bool,
) -> Result<OptionsEnd> {
    let mut at = 0;
    while hlen > 0 {
        if *printed_one {
            nd.print(",");
        }
        let opt = u8_at(cp, at)?;
        at += 1;
        let len = if opt == 0 || opt == 1 {
            1
        } else {
            let len = usize::from(u8_at(cp, at)?);
            at += 1;
            if len < 2 || len > hlen {
                return Ok(OptionsEnd::Bad);
            }
            hlen -= 1;
            len
        };
        hlen -= 1;
        let mut datalen = 0;
        macro_rules! lencheck {
            ($l:expr) => {{
                let l = $l;
                if l > hlen {
                    return Ok(OptionsEnd::Bad);
                }
                if bytes_at(cp, at, l).is_err() {
                    return Ok(OptionsEnd::Truncated);
                }
            }};
        }
        match option_name(opt) {
            Some(name) => nd.print(name),
            None => {
                let _ = write!(nd.out, "unknown-{opt}");
            }
        }
        // The options of a fixed length: all of their data must be there.
        if let Some(fixed) = fixed_data_len(opt) {
            datalen = fixed;
            lencheck!(datalen);
        }
        match opt {
            2 => {
                let _ = write!(nd.out, " {}", be16(cp, at)?);
            }
            3 => {
                let _ = write!(nd.out, " {}", u8_at(cp, at)?);
            }
            5 => {
                datalen = len - 2;
                if datalen % 8 != 0 {
                    nd.print(" invalid sack");
                } else {
                    let _ = write!(nd.out, " {} ", datalen / 8);
                    let mut i = 0;
                    while i < datalen {
                        lencheck!(i + 4);
                        let mut s = be32(cp, at + i)?;
                        lencheck!(i + 8);
                        let mut e = be32(cp, at + i + 4)?;
                        if rev {
                            s = s.wrapping_sub(thseq);
                            e = e.wrapping_sub(thseq);
                        } else {
                            s = s.wrapping_sub(thack);
                            e = e.wrapping_sub(thack);
                        }
                        let _ = write!(nd.out, "{{{s}:{e}}}");
                        i += 8;
                    }
                }
            }
            11..=13 | 6 | 7 => {
                let _ = write!(nd.out, " {}", be32(cp, at)?);
            }
            8 => {
                let _ = write!(nd.out, " val {} ecr {}", be32(cp, at)?, be32(cp, at + 4)?);
            }
            20 => {
                let _ = write!(
                    nd.out,
                    " cap {:02x} id {}",
                    u8_at(cp, at)?,
                    u8_at(cp, at + 1)?
                );
            }
            0 | 1 | 4 => {}
            28 => {
                let mut uto = u32::from(be16(cp, at)?);
                let _ = write!(nd.out, " 0x{uto:x}");
                if uto & 1 != 0 {
                    uto = (uto >> 1) * 60;
                } else {
                    uto >>= 1;
                }
                let _ = write!(nd.out, " {uto}");
            }
            254 => {
                datalen = len - 2;
                lencheck!(datalen);
                if datalen < 2 {
                    return Ok(OptionsEnd::Bad);
                }
                let magic = be16(cp, at)?;
                nd.print("-");
                if magic == 0xf989 {
                    fast_open(nd, &cp[at + 2..at + datalen], true);
                } else {
                    let _ = write!(nd.out, "{magic:04x}");
                }
            }
            19 => {
                // tcpdump checks the signature with -M's secret: without
                // one it says so.
                nd.print(" ");
                if payload_captured {
                    nd.print("shared secret not supplied with -M, ");
                } else {
                    nd.print("snaplen too short, ");
                }
                nd.print("can't check - ");
                for byte in &cp[at..at + 16] {
                    let _ = write!(nd.out, "{byte:02x}");
                }
            }
            34 => {
                datalen = len - 2;
                lencheck!(datalen);
                nd.print(" ");
                fast_open(nd, &cp[at..at + datalen], false);
            }
            // TCP-AO and MPTCP: not ours.
            29 | 30 => {
                nd.unsupported();
                datalen = len - 2;
                lencheck!(datalen);
            }
            _ => {
                datalen = len - 2;
                if datalen > 0 {
                    nd.print(" 0x");
                }
                for i in 0..datalen {
                    lencheck!(i + 1);
                    let _ = write!(nd.out, "{:02x}", u8_at(cp, at + i)?);
                }
            }
        }
        at += datalen;
        hlen -= datalen;
        let mut spec = datalen + 1;
        if opt != 0 && opt != 1 {
            spec += 1;
        }
        if spec != len {
            let _ = write!(nd.out, "[len {len}]");
        }
        *printed_one = true;
        if opt == 0 {
            break;
        }
    }
    Ok(OptionsEnd::Done)
}

/// `print_tcp_fastopen_option`: a cookie request, or the cookie.
fn fast_open(nd: &mut Nd<'_>, cookie: &[u8], experimental: bool) {
    if experimental {
        nd.print("tfo");
    }
    if cookie.is_empty() {
        nd.print(" cookiereq");
    } else if !cookie.len().is_multiple_of(2) || cookie.len() < 4 || cookie.len() > 16 {
        nd.invalid();
    } else {
        nd.print(" cookie ");
        for byte in cookie {
            let _ = write!(nd.out, "{byte:02x}");
        }
    }
}

/// tcpdump's `tcp_option_values`.
fn option_name(opt: u8) -> Option<&'static str> {
    Some(match opt {
        0 => "eol",
        1 => "nop",
        2 => "mss",
        3 => "wscale",
        4 => "sackOK",
        5 => "sack",
        6 => "echo",
        7 => "echoreply",
        8 => "TS",
        11 => "cc",
        12 => "ccnew",
        13 => "",
        19 => "md5",
        20 => "scps",
        28 => "uto",
        29 => "tcp-ao",
        30 => "mptcp",
        34 => "tfo",
        254 => "exp",
        _ => return None,
    })
}
