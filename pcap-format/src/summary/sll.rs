//! Linux cooked captures v2, what `tcpdump -i any` reads (`print-sll.c`).

use std::fmt::Write as _;

use super::addr::Mac;
use super::{Nd, Result, be16, be32, ethertype_name, ethertype_payload, u8_at};

const SLL2_HDR_LEN: usize = 20;
const MAX_ETHERNET_LENGTH_VAL: u16 = 1500;

/// `sll2_if_print`: `ifname` is the interface's name, which tcpdump looks
/// up by index on the host that prints (`None`: not known here). Returns
/// the link-layer header length (for `-x`).
pub(super) fn sll2_if(
    nd: &mut Nd<'_>,
    p: &[u8],
    length: usize,
    ifname: Option<&str>,
) -> Result<usize> {
    nd.protocol = "sll2";
    if p.len() < SLL2_HDR_LEN {
        return Err(super::Trunc);
    }
    // tcpdump names the index on the host that prints: only the capturing
    // host knows which interface it was.
    let ifname = ifname.unwrap_or_else(|| {
        nd.unsupported();
        "?"
    });
    let _ = write!(nd.out, "{ifname:<5} ");
    let packet_type = match u8_at(p, 10)? {
        0 => "In",
        1 => "B",
        2 => "M",
        3 => "P",
        4 => "Out",
        _ => "?",
    };
    let _ = write!(nd.out, "{packet_type:<3} ");
    if nd.eflag() {
        sll2_print(nd, p, length)?;
    }
    let ether_type = be16(p, 0)?;
    let payload = &p[SLL2_HDR_LEN..];
    let length = length.saturating_sub(SLL2_HDR_LEN);
    if !ethertype_payload(nd, ether_type, payload, length)? {
        // 802.3, LLC, VLAN tags and other protocols: not ours.
        nd.unsupported();
        if !nd.eflag() {
            sll2_print(nd, p, length + SLL2_HDR_LEN)?;
        }
    }
    Ok(SLL2_HDR_LEN)
}

/// `sll2_print`: the header, with `-e`.
fn sll2_print(nd: &mut Nd<'_>, p: &[u8], length: usize) -> Result {
    let _ = write!(nd.out, "ifindex {} ", be32(p, 4)?);
    if u8_at(p, 11)? == 6 {
        let _ = write!(nd.out, "{} ", Mac(&p[12..18]));
    }
    let ether_type = be16(p, 0)?;
    if ether_type <= MAX_ETHERNET_LENGTH_VAL {
        match ether_type {
            0x0001 => nd.print("802.3"),
            0x0004 => nd.print("802.2"),
            _ => {
                let _ = write!(nd.out, "ethertype Unknown (0x{ether_type:04x})");
            }
        }
    } else {
        let _ = write!(
            nd.out,
            "ethertype {} (0x{ether_type:04x})",
            ethertype_name(ether_type).unwrap_or("Unknown")
        );
    }
    let _ = write!(nd.out, ", length {length}: ");
    Ok(())
}
