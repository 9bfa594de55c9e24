//! Ethernet frames and their 802.1Q tags (`print-ether.c`).

use std::fmt::Write as _;

use super::addr::Mac;
use super::{Nd, Result, be16, ethertype_name, ethertype_payload};

const ETHER_HDRLEN: usize = 14;
/// Type values up to this are an IEEE 802.3 length.
const MAX_ETHERNET_LENGTH_VAL: u16 = 1500;

/// `ether_if_print`: a frame of `length` bytes on the wire, `p` the
/// captured part. Returns the link-layer header length (for `-x`).
pub(super) fn ether_if(nd: &mut Nd<'_>, p: &[u8], length: usize) -> Result<usize> {
    nd.protocol = "ether";
    ether(nd, p, length)
}

/// `ether_print` / `ether_common_print`.
pub(super) fn ether(nd: &mut Nd<'_>, p: &[u8], mut length: usize) -> Result<usize> {
    let mut caplen = p.len();
    if length < caplen {
        let _ = write!(nd.out, "[length {length} < caplen {caplen}]");
        nd.invalid();
        nd.unsupported();
        return Ok(length);
    }
    if caplen < ETHER_HDRLEN {
        nd.trunc();
        return Ok(caplen);
    }
    let orig_length = length;
    let dst = &p[0..6];
    let src = &p[6..12];
    length -= 12;
    caplen -= 12;
    let mut at = 12;
    let mut hdrlen = 12;
    if nd.eflag() {
        let _ = write!(nd.out, "{} > {}, ", Mac(src), Mac(dst));
    }
    let mut length_type = be16(p, at)?;
    length -= 2;
    caplen -= 2;
    at += 2;
    hdrlen += 2;
    let mut printed_length = false;
    if length_type == 0x88e5 {
        // MACsec.
        nd.unsupported();
    }
    while matches!(length_type, 0x8100 | 0x9100 | 0x9200 | 0x88a8) {
        if caplen < 4 || length < 4 {
            nd.protocol = "vlan";
            nd.trunc();
            return Ok(hdrlen + caplen.min(length));
        }
        if nd.eflag() {
            let tag = be16(p, at)?;
            ether_type(nd, length_type);
            if printed_length {
                nd.print(", ");
            } else {
                let _ = write!(nd.out, ", length {orig_length}: ");
                printed_length = true;
            }
            let _ = write!(
                nd.out,
                "vlan {}, p {}{}, ",
                tag & 0xfff,
                tag >> 13,
                if tag & 0x1000 != 0 { ", DEI" } else { "" }
            );
        }
        length_type = be16(p, at + 2)?;
        at += 4;
        length -= 4;
        caplen -= 4;
        hdrlen += 4;
    }
    let payload = &p[at..];
    if length_type <= MAX_ETHERNET_LENGTH_VAL {
        // 802.3 and LLC (spanning tree, CDP...): not ours.
        nd.unsupported();
        let len = usize::from(length_type).min(length);
        if nd.eflag() {
            nd.print("802.3");
            if !printed_length {
                let _ = write!(nd.out, ", length {len}: ");
            }
        }
        let _ = write!(nd.out, "LLC, length {len}");
        return Ok(hdrlen);
    }
    if nd.eflag() {
        ether_type(nd, length_type);
        if printed_length {
            nd.print(", ");
        } else {
            let _ = write!(nd.out, ", length {orig_length}: ");
        }
    }
    if !ethertype_payload(nd, length_type, payload, length)? {
        // Other protocols: not ours; their MAC addresses and type.
        nd.unsupported();
        if !nd.eflag() {
            let _ = write!(nd.out, "{} > {}, ", Mac(src), Mac(dst));
            ether_type(nd, length_type);
            let _ = write!(nd.out, ", length {orig_length}");
        }
    }
    Ok(hdrlen)
}

/// `ethertype IPv4 (0x0800)`.
fn ether_type(nd: &mut Nd<'_>, ether_type: u16) {
    let _ = write!(
        nd.out,
        "ethertype {} (0x{ether_type:04x})",
        ethertype_name(ether_type).unwrap_or("Unknown")
    );
}
