//! ICMPv6 messages (`print-icmp6.c`): errors, echo, neighbor discovery
//! and multicast listener messages.

use std::fmt::Write as _;

use super::{
    Nd, Result,
    addr::{Addr, Payload},
    be16, be32, bytes_at, hex, in_cksum, print_sum_check, u8_at,
};

/// `icmp6_print`: a message of `length` bytes.
#[expect(
    clippy::too_many_lines,
    reason = "one function per tcpdump printer, in its order, to compare them line by line"
)]
pub(super) fn icmp6_print(nd: &mut Nd<'_>, payload: Payload<'_>) -> Result {
    let dp = payload.bytes;
    let length = payload.length;
    nd.protocol = "icmp6";
    if length == 0 {
        nd.print("ICMP6, length 0");
        nd.invalid();
        return Ok(());
    }
    let verbose = nd.verbose();
    if verbose > 0 && !payload.fragmented && dp.len() >= length {
        let field = be16(dp, 2)?;
        let pseudo = payload.ip.pseudo_header(58, length);
        let sum = in_cksum(&[&pseudo, &dp[..length]]);
        print_sum_check(nd, "icmp6", field, sum);
    }
    let icmp6_type = u8_at(dp, 0)?;
    match type_name(icmp6_type) {
        Some(name) => {
            let _ = write!(nd.out, "ICMP6, {name}");
        }
        None => {
            let _ = write!(nd.out, "ICMP6, unknown icmp6 type ({icmp6_type})");
        }
    }
    if verbose > 0 && matches!(icmp6_type, 133..=137 | 145 | 147) {
        let _ = write!(nd.out, ", length {length}");
    }
    let code = u8_at(dp, 1)?;
    let addr = |at: usize| -> Result<Addr<'_>> { Ok(Addr(bytes_at(dp, at, 16)?)) };
    // The original packet's header starts at byte 8.
    match icmp6_type {
        1 => {
            nd.print(", ");
            match code {
                0 => nd.print("unreachable route"),
                1 => nd.print(" unreachable prohibited"),
                2 => nd.print("beyond scope"),
                3 => nd.print("unreachable address"),
                4 => nd.print("unreachable port"),
                other => {
                    let _ = write!(nd.out, "unknown unreach code ({other})");
                }
            }
            match code {
                0 | 1 | 3 => {
                    let _ = write!(nd.out, " {}", addr(32)?);
                }
                2 => {
                    let _ = write!(nd.out, " {}, source address {}", addr(32)?, addr(16)?);
                }
                4 => {
                    let next = u8_at(dp, 8 + 6)?;
                    if next != 6 && next != 17 {
                        // tcpdump walks the original's extension headers.
                        nd.unsupported();
                    }
                    bytes_at(dp, 48, 4)?;
                    let dport = be16(dp, 50)?;
                    let to = addr(32)?;
                    match next {
                        6 => {
                            let _ = write!(nd.out, ", {to} tcp port {dport}");
                        }
                        17 => {
                            let _ = write!(nd.out, ", {to} udp port {dport}");
                        }
                        _ => {
                            let _ =
                                write!(nd.out, ", {to} protocol {next} port {dport} unreachable");
                        }
                    }
                }
                _ => {
                    if verbose <= 1 {
                        unknown_data(nd, dp, "\n\t", length);
                        return Ok(());
                    }
                }
            }
        }
        2 => {
            let _ = write!(nd.out, ", mtu {}", be32(dp, 4)?);
        }
        3 => match code {
            0 => {
                let _ = write!(nd.out, " for {}", addr(32)?);
            }
            1 => nd.print(" (reassembly)"),
            other => {
                let _ = write!(nd.out, ", unknown code ({other})");
            }
        },
        4 => {
            if dp.len() < 48 {
                nd.trunc();
                return Ok(());
            }
            let pointer = be32(dp, 4)?;
            match code {
                0 => {
                    let _ = write!(nd.out, ", erroneous - octet {pointer}");
                }
                1 => {
                    let _ = write!(nd.out, ", next header - octet {pointer}");
                }
                2 => {
                    let _ = write!(nd.out, ", option - octet {pointer}");
                }
                3 => {
                    let _ = write!(nd.out, ", incomplete header chain - octet {pointer}");
                }
                other => {
                    let _ = write!(nd.out, ", code-#{other}");
                }
            }
        }
        128 | 129 => {
            let _ = write!(nd.out, ", id {}, seq {}", be16(dp, 4)?, be16(dp, 6)?);
        }
        130 => {
            if length == 24 {
                mld6(nd, dp)?;
            } else if length >= 28 {
                // MLDv2 queries: not ours.
                nd.unsupported();
                nd.print(" v2");
            } else {
                let _ = write!(nd.out, " unknown-version (len {length}) ");
            }
        }
        131 | 132 => mld6(nd, dp)?,
        133 => {
            if verbose > 0 && options(nd, dp, 8, length)?.is_err() {
                nd.trunc();
                return Ok(());
            }
        }
        134 => {
            if verbose > 0 {
                let flags = u8_at(dp, 5)?;
                let _ = write!(
                    nd.out,
                    "\n\thop limit {}, Flags [{}], pref {}, router lifetime {}s, reachable time {}ms, retrans timer {}ms",
                    u8_at(dp, 4)?,
                    bits(
                        u32::from(flags),
                        &[
                            (0x80, "managed"),
                            (0x40, "other stateful"),
                            (0x20, "home agent"),
                            (0x02, "ipv6 only")
                        ]
                    ),
                    rtpref(flags),
                    be16(dp, 6)?,
                    be32(dp, 8)?,
                    be32(dp, 12)?
                );
                if options(nd, dp, 16, length)?.is_err() {
                    nd.trunc();
                    return Ok(());
                }
            }
        }
        135 => {
            let _ = write!(nd.out, ", who has {}", addr(8)?);
            if verbose > 0 && options(nd, dp, 24, length)?.is_err() {
                nd.trunc();
                return Ok(());
            }
        }
        136 => {
            let _ = write!(nd.out, ", tgt is {}", addr(8)?);
            if verbose > 0 {
                let _ = write!(
                    nd.out,
                    ", Flags [{}]",
                    bits(
                        be32(dp, 4)?,
                        &[
                            (0x8000_0000, "router"),
                            (0x4000_0000, "solicited"),
                            (0x2000_0000, "override")
                        ]
                    )
                );
                if options(nd, dp, 24, length)?.is_err() {
                    nd.trunc();
                    return Ok(());
                }
            }
        }
        137 => {
            let _ = write!(nd.out, ", {}", addr(8)?);
            let _ = write!(nd.out, " to {}", addr(24)?);
            if verbose > 0 && options(nd, dp, 40, length)?.is_err() {
                nd.trunc();
                return Ok(());
            }
        }
        143 => {
            if length < 8 {
                let _ = write!(nd.out, " [invalid len {length}]");
            } else {
                let groups = be16(dp, 6)?;
                let _ = write!(nd.out, ", {groups} group record(s)");
                if verbose > 0 {
                    mldv2_records(nd, dp, length, groups)?;
                }
            }
        }
        141 | 142 => {}
        _ if type_name(icmp6_type).is_some() => {
            // Router renumbering, node information, mobility, RPL: not ours.
            nd.unsupported();
            return Ok(());
        }
        _ => {
            let _ = write!(nd.out, ", length {length}");
            if verbose <= 1 {
                unknown_data(nd, dp, "\n\t", length);
            }
            return Ok(());
        }
    }
    if verbose == 0 {
        let _ = write!(nd.out, ", length {length}");
    }
    Ok(())
}

/// tcpdump's `icmp6_type_values`.
fn type_name(icmp6_type: u8) -> Option<&'static str> {
    Some(match icmp6_type {
        1 => "destination unreachable",
        2 => "packet too big",
        3 => "time exceeded in-transit",
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
        138 => "router renumbering",
        141 => "inverse neighbor solicitation",
        142 => "inverse neighbor advertisement",
        143 => "multicast listener report v2",
        144 => "ha discovery request",
        145 => "ha discovery reply",
        146 => "mobile router solicitation",
        147 => "mobile router advertisement",
        139 => "node information query",
        140 => "node information reply",
        200 => "mtrace response",
        201 => "mtrace message",
        155 => "RPL",
        _ => return None,
    })
}

/// tcpdump's `bittok2str`: the names of the bits set, `, `-separated, or
/// `none`.
fn bits(value: u32, names: &[(u32, &str)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| value & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if set.is_empty() {
        "none".to_owned()
    } else {
        set.join(", ")
    }
}

fn rtpref(flags: u8) -> &'static str {
    ["medium", "high", "rsv", "low"][usize::from((flags & 0x18) >> 3)]
}

fn lifetime(value: u32) -> String {
    if value == u32::MAX {
        "infinity".to_owned()
    } else {
        format!("{value}s")
    }
}

/// tcpdump's `print_unknown_data`: hex of what was captured of `len`
/// bytes.
fn unknown_data(nd: &mut Nd<'_>, bytes: &[u8], indent: &str, len: usize) {
    hex::hex(&mut nd.out, indent, &bytes[..len.min(bytes.len())], 0);
}

/// `mld6_print`: `max resp delay: 0 addr: ff02::1`.
fn mld6(nd: &mut Nd<'_>, dp: &[u8]) -> Result {
    if dp.len() < 24 {
        return Ok(());
    }
    let _ = write!(
        nd.out,
        "max resp delay: {} addr: {}",
        be16(dp, 4)?,
        Addr(&dp[8..24])
    );
    Ok(())
}

/// `mldv2_report_print`'s group records (`-v`).
fn mldv2_records(nd: &mut Nd<'_>, dp: &[u8], len: usize, groups: u16) -> Result {
    let mut group = 8;
    for _ in 0..groups {
        if len < group + 20 {
            nd.print(" [invalid number of groups]");
            return Ok(());
        }
        let _ = write!(nd.out, " [gaddr {}", Addr(bytes_at(dp, group + 4, 16)?));
        let kind = u8_at(dp, group)?;
        let name = match kind {
            1 => "is_in",
            2 => "is_ex",
            3 => "to_in",
            4 => "to_ex",
            5 => "allow",
            6 => "block",
            _ => "",
        };
        if name.is_empty() {
            let _ = write!(nd.out, "  [v2-report-#{kind}]");
        } else {
            let _ = write!(nd.out, " {name}");
        }
        let sources = usize::from(be16(dp, group + 2)?);
        if len < group + 20 + sources * 16 {
            let _ = write!(nd.out, " [invalid number of sources {sources}]");
            return Ok(());
        }
        if nd.verbose() == 1 {
            let _ = write!(nd.out, ", {sources} source(s)");
        } else {
            nd.print(" {");
            for index in 0..sources {
                let at = group + 20 + index * 16;
                let _ = write!(nd.out, " {}", Addr(bytes_at(dp, at, 16)?));
            }
            nd.print(" }");
        }
        group += 20 + sources * 16;
        nd.print("]");
    }
    Ok(())
}

/// `icmp6_opt_print`: the neighbor discovery options from byte `from`
/// of a `length`-byte message. The inner result is tcpdump's `trunc`
/// label (`Err(())`).
#[expect(
    clippy::too_many_lines,
    reason = "one function per tcpdump printer, in its order, to compare them line by line"
)]
fn options(
    nd: &mut Nd<'_>,
    dp: &[u8],
    from: usize,
    length: usize,
) -> Result<std::result::Result<(), ()>> {
    let mut at = from;
    let mut resid = length as isize - from as isize;
    while at < dp.len() {
        u8_at(dp, at + 1)?;
        if resid <= 0 {
            return Ok(Ok(()));
        }
        let opt_type = u8_at(dp, at)?;
        let opt_len = usize::from(u8_at(dp, at + 1)?);
        if opt_len == 0 || at + (opt_len << 3) > dp.len() {
            return Ok(Err(()));
        }
        let name = match opt_type {
            1 => "source link-address",
            2 => "destination link-address",
            3 => "prefix info",
            4 => "redirected header",
            5 => "mtu",
            25 => "rdnss",
            31 => "dnssl",
            7 => "advertisement interval",
            8 => "homeagent information",
            24 => "route info",
            _ => "unknown",
        };
        let _ = write!(
            nd.out,
            "\n\t  {name} option ({opt_type}), length {} ({opt_len}): ",
            opt_len << 3
        );
        let op = &dp[at..at + (opt_len << 3)];
        match opt_type {
            1 | 2 => {
                let mut first = true;
                for byte in &op[2..] {
                    if !first {
                        nd.print(":");
                    }
                    first = false;
                    let _ = write!(nd.out, "{byte:02x}");
                }
            }
            3 => {
                let _ = write!(
                    nd.out,
                    "{}/{}{}, Flags [{}], valid time {}",
                    Addr(bytes_at(op, 16, 16)?),
                    u8_at(op, 2)?,
                    if opt_len == 4 { "" } else { "badlen" },
                    bits(
                        u32::from(u8_at(op, 3)?),
                        &[(0x80, "onlink"), (0x40, "auto"), (0x20, "router")]
                    ),
                    lifetime(be32(op, 4)?)
                );
                let _ = write!(nd.out, ", pref. time {}", lifetime(be32(op, 8)?));
            }
            5 => {
                let _ = write!(
                    nd.out,
                    " {}{}",
                    be32(op, 4)?,
                    if opt_len == 1 {
                        ""
                    } else {
                        "bad option length"
                    }
                );
            }
            25 => {
                let _ = write!(nd.out, " lifetime {}s,", be32(op, 4)?);
                for index in 0..(opt_len - 1) / 2 {
                    let _ = write!(nd.out, " addr: {}", Addr(bytes_at(op, 8 + index * 16, 16)?));
                }
            }
            7 => {
                let _ = write!(nd.out, " {}ms", be32(op, 4)?);
            }
            8 => {
                let _ = write!(
                    nd.out,
                    " preference {}, lifetime {}",
                    be16(op, 4)?,
                    be16(op, 6)?
                );
            }
            4 | 24 | 31 => {
                // Redirected headers, route information, DNS search lists.
                nd.unsupported();
                return Ok(Ok(()));
            }
            _ => {
                if nd.verbose() <= 1 {
                    hex::hex(&mut nd.out, "\n\t  ", &op[2..], 0);
                    return Ok(Ok(()));
                }
            }
        }
        if nd.verbose() > 1 {
            hex::hex(&mut nd.out, "\n\t    ", &op[2..], 0);
        }
        at += opt_len << 3;
        resid -= (opt_len << 3) as isize;
    }
    Ok(Ok(()))
}
