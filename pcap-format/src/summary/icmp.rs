//! ICMP messages (`print-icmp.c`).

use std::fmt::Write as _;

use super::{
    Nd, Result, Trunc,
    addr::{Addr, Payload},
    be16, be32, bytes_at, inner_ip, u8_at, wrong_cksum,
};

/// Message length above which tcpdump looks for RFC 4884 extensions.
const ICMP_EXTD_MINLEN: usize = 156 - 20;

/// How building the text stopped: at a `GET_` read (tcpdump longjmps to
/// the packet's end) or at an `ND_TCHECK` (its `trunc` label: `[|icmp]`,
/// and the rest of the packet printing goes on).
enum Stop {
    Long,
    Local,
}

impl From<Trunc> for Stop {
    fn from(Trunc: Trunc) -> Self {
        Self::Long
    }
}

/// `ND_TCHECK_LEN`: `len` bytes at `at`, or [`Stop::Local`].
fn tcheck(dp: &[u8], at: usize, len: usize) -> std::result::Result<(), Stop> {
    bytes_at(dp, at, len)
        .map(|_| ())
        .map_err(|Trunc| Stop::Local)
}

/// `icmp_print`: a message of `plen` bytes.
pub(super) fn icmp_print(nd: &mut Nd<'_>, payload: Payload<'_>) -> Result {
    let dp = payload.bytes;
    let plen = payload.length;
    nd.protocol = "icmp";
    let icmp_type = u8_at(dp, 0)?;
    let code = u8_at(dp, 1)?;
    let text = match describe(dp, icmp_type, code) {
        Ok(text) => text,
        Err(Stop::Long) => return Err(Trunc),
        Err(Stop::Local) => {
            nd.trunc();
            return Ok(());
        }
    };
    let _ = write!(nd.out, "ICMP {text}, length {plen}");
    if nd.verbose() > 0
        && !payload.fragmented
        && dp.len() >= plen
        && let Some((field, shouldbe)) = wrong_cksum(dp, plen, 2)?
    {
        let _ = write!(nd.out, " (wrong icmp cksum {field:x} (->{shouldbe:x})!)");
    }
    if nd.verbose() > 0 && matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
        nd.print("\n\t");
        let inner_len = usize::from(be16(dp, 8 + 2)?);
        let end = dp.len().min(8 + inner_len);
        inner_ip(nd, &dp[8..end.max(8)], inner_len)?;
    }
    nd.protocol = "icmp";
    if nd.verbose() > 0 && plen > ICMP_EXTD_MINLEN && matches!(icmp_type, 3 | 11 | 12) {
        // RFC 4884 extensions, which tcpdump decodes: not ours.
        nd.unsupported();
    }
    Ok(())
}

/// The text after `ICMP `, built before printing, as tcpdump's `buf`.
fn describe(dp: &[u8], icmp_type: u8, code: u8) -> std::result::Result<String, Stop> {
    let addr = |at: usize| -> Result<Addr<'_>> { Ok(Addr(bytes_at(dp, at, 4)?)) };
    // The original datagram's destination.
    let odst = || addr(24);
    Ok(match icmp_type {
        0 | 8 => format!(
            "echo {}, id {}, seq {}",
            if icmp_type == 8 { "request" } else { "reply" },
            be16(dp, 4)?,
            be16(dp, 6)?
        ),
        3 => match code {
            0 => format!("net {} unreachable", odst()?),
            1 => format!("host {} unreachable", odst()?),
            2 => format!("{} protocol {} unreachable", odst()?, u8_at(dp, 17)?),
            3 => {
                tcheck(dp, 17, 1)?;
                let hlen = usize::from(dp[8] & 0x0f) * 4;
                let dport = be16(dp, 8 + hlen + 2)?;
                let proto = u8_at(dp, 17)?;
                match proto {
                    6 => format!("{} tcp port {dport} unreachable", odst()?),
                    17 => format!("{} udp port {dport} unreachable", odst()?),
                    _ => format!("{} protocol {proto} port {dport} unreachable", odst()?),
                }
            }
            4 => {
                let mtu = be16(dp, 6)?;
                if mtu == 0 {
                    format!("{} unreachable - need to frag", odst()?)
                } else {
                    format!("{} unreachable - need to frag (mtu {mtu})", odst()?)
                }
            }
            5 => format!("{} unreachable - source route failed", odst()?),
            6 => format!("net {} unreachable - unknown", odst()?),
            7 => format!("host {} unreachable - unknown", odst()?),
            8 => format!("{} unreachable - source host isolated", odst()?),
            9 => format!("net {} unreachable - admin prohibited", odst()?),
            10 => format!("host {} unreachable - admin prohibited", odst()?),
            11 => format!("net {} unreachable - tos prohibited", odst()?),
            12 => format!("host {} unreachable - tos prohibited", odst()?),
            13 => format!("host {} unreachable - admin prohibited filter", odst()?),
            14 => format!("host {} unreachable - host precedence violation", odst()?),
            15 => format!("host {} unreachable - precedence cutoff", odst()?),
            _ => format!("{} unreachable - #{code}", odst()?),
        },
        5 => {
            let (verb, to) = match code {
                0 => ("redirect", "net "),
                1 => ("redirect", "host "),
                2 => ("redirect-tos", "net "),
                3 => ("redirect-tos", "host "),
                _ => ("", ""),
            };
            if verb.is_empty() {
                format!("redirect-#{code} {} to {}", odst()?, addr(4)?)
            } else {
                format!("{verb} {} to {to}{}", odst()?, addr(4)?)
            }
        }
        9 => router_advertisement(dp)?,
        11 => {
            tcheck(dp, 24, 4)?;
            match code {
                0 => "time exceeded in-transit".to_owned(),
                1 => "ip reassembly time exceeded".to_owned(),
                _ => format!("time exceeded-#{code}"),
            }
        }
        12 => {
            if code == 0 {
                format!("parameter problem - octet {}", u8_at(dp, 4)?)
            } else {
                format!("parameter problem - code {code}")
            }
        }
        18 => format!("address mask is 0x{:08x}", be32(dp, 8)?),
        13 => format!("time stamp query id {} seq {}", be16(dp, 4)?, be16(dp, 6)?),
        14 => {
            tcheck(dp, 16, 4)?;
            format!(
                "time stamp reply id {} seq {}: org {}, recv {}, xmit {}",
                be16(dp, 4)?,
                be16(dp, 6)?,
                stamp(be32(dp, 8)?),
                stamp(be32(dp, 12)?),
                stamp(be32(dp, 16)?)
            )
        }
        4 => "source quench".to_owned(),
        10 => "router solicitation".to_owned(),
        15 => "information request".to_owned(),
        16 => "information reply".to_owned(),
        17 => "address mask request".to_owned(),
        other => format!("type-#{other}"),
    })
}

/// `router advertisement lifetime 30:00 1: {10.0.0.1 0}`.
fn router_advertisement(dp: &[u8]) -> std::result::Result<String, Stop> {
    let mut text = "router advertisement lifetime ".to_owned();
    tcheck(dp, 4, 4)?;
    let lifetime = be16(dp, 6)?;
    if lifetime < 60 {
        let _ = write!(text, "{lifetime}");
    } else if lifetime < 3600 {
        let _ = write!(text, "{}:{:02}", lifetime / 60, lifetime % 60);
    } else {
        let _ = write!(
            text,
            "{}:{:02}:{:02}",
            lifetime / 3600,
            (lifetime % 3600) / 60,
            lifetime % 60
        );
    }
    let num = u8_at(dp, 4)?;
    let _ = write!(text, " {num}:");
    let size = u8_at(dp, 5)?;
    if size != 2 {
        let _ = write!(text, " [size {size}]");
        return Ok(text);
    }
    for index in 0..usize::from(num) {
        let at = 8 + index * 8;
        tcheck(dp, at, 8)?;
        let _ = write!(text, " {{{} {}}}", Addr(&dp[at..at + 4]), be32(dp, at + 4)?);
    }
    Ok(text)
}

/// Milliseconds since midnight as `HH:MM:SS.mmm`.
fn stamp(ms: u32) -> String {
    let msec = ms % 1000;
    let mut sec = ms / 1000;
    let mut min = sec / 60;
    sec -= min * 60;
    let hrs = min / 60;
    min -= hrs * 60;
    format!("{hrs:02}:{min:02}:{sec:02}.{msec:03}")
}
