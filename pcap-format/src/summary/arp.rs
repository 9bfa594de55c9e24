//! ARP and RARP (`print-arp.c`).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::addr::Mac;
use super::{Nd, Result, be16, bytes_at, ethertype_name, u8_at};

const ETHERTYPE_IP: u16 = 0x0800;
const ETHERTYPE_TRAIL: u16 = 0x1000;

/// `arp_print`: `length` bytes on the wire after the link-layer header.
pub(super) fn arp_print(nd: &mut Nd<'_>, ap: &[u8], length: usize) -> Result {
    nd.protocol = "arp";
    bytes_at(ap, 0, 8)?;
    let hrd = be16(ap, 0)?;
    let pro = be16(ap, 2)?;
    let hln = usize::from(u8_at(ap, 4)?);
    let pln = usize::from(u8_at(ap, 5)?);
    let op = be16(ap, 6)?;
    match hrd {
        // ATM and Frame Relay addresses: not ours.
        19 | 15 => {
            nd.unsupported();
            return Ok(());
        }
        _ => {}
    }
    let sha = 8;
    let spa = sha + hln;
    let tha = spa + pln;
    let tpa = tha + hln;
    bytes_at(ap, tpa, pln)?;
    if !nd.eflag() {
        nd.print("ARP, ");
    }
    let verbose = nd.verbose() > 0;
    if (pro != ETHERTYPE_IP && pro != ETHERTYPE_TRAIL) || pln != 4 || hln == 0 || verbose {
        match hardware_name(hrd) {
            Some(name) => nd.print(name),
            None => {
                let _ = write!(nd.out, "Unknown Hardware ({hrd})");
            }
        }
        let _ = write!(nd.out, " (len {hln}), ");
        match ethertype_name(pro) {
            Some(name) => nd.print(name),
            None => {
                let _ = write!(nd.out, "Unknown Protocol (0x{pro:04x})");
            }
        }
        let _ = write!(nd.out, " (len {pln})");
        if !verbose {
            let _ = write!(nd.out, ", length {length}");
            return Ok(());
        }
    }
    let operation = match op {
        1 => "Request".to_owned(),
        2 => "Reply".to_owned(),
        3 => "Reverse Request".to_owned(),
        4 => "Reverse Reply".to_owned(),
        8 => "Inverse Request".to_owned(),
        9 => "Inverse Reply".to_owned(),
        10 => "NACK Reply".to_owned(),
        other => format!("Unknown ({other})"),
    };
    let _ = write!(nd.out, "{}{operation} ", if verbose { ", " } else { "" });
    let ip = |nd: &mut Nd<'_>, at: usize| -> Result {
        if pro != ETHERTYPE_IP && pro != ETHERTYPE_TRAIL {
            nd.print("<wrong proto type>");
        } else if pln != 4 {
            nd.print("<wrong len>");
        } else {
            let b = bytes_at(ap, at, 4)?;
            let _ = write!(nd.out, "{}", Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        }
        Ok(())
    };
    let link = |at: usize| -> Result<String> { Ok(linkaddr(bytes_at(ap, at, hln)?)) };
    match op {
        1 => {
            nd.print("who-has ");
            ip(nd, tpa)?;
            let target = bytes_at(ap, tha, hln)?;
            if target.iter().any(|&b| b != 0) {
                let _ = write!(nd.out, " ({})", link(tha)?);
            }
            nd.print(" tell ");
            ip(nd, spa)?;
        }
        2 => {
            ip(nd, spa)?;
            let _ = write!(nd.out, " is-at {}", link(sha)?);
        }
        3 | 8 => {
            let _ = write!(nd.out, "who-is {}", link(tha)?);
            let _ = write!(nd.out, " tell {}", link(sha)?);
        }
        4 => {
            let _ = write!(nd.out, "{} at ", link(tha)?);
            ip(nd, tpa)?;
        }
        9 => {
            let _ = write!(nd.out, "{} at ", link(sha)?);
            ip(nd, spa)?;
        }
        _ => {
            nd.default_print(ap);
            return Ok(());
        }
    }
    let _ = write!(nd.out, ", length {length}");
    Ok(())
}

/// tcpdump's `arphrd_values`.
fn hardware_name(hrd: u16) -> Option<&'static str> {
    Some(match hrd {
        1 => "Ethernet",
        6 => "TokenRing",
        7 => "ArcNet",
        15 => "FrameRelay",
        23 => "Strip",
        24 => "IEEE 1394",
        19 => "ATM",
        32 => "InfiniBand",
        _ => return None,
    })
}

/// tcpdump's `linkaddr_string` for Ethernet-like addresses: a MAC address
/// for six bytes, else colon-separated hex.
fn linkaddr(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "<empty>".to_owned();
    }
    Mac(bytes).to_string()
}
