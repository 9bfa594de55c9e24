//! Linux cooked capture v2 (`LINKTYPE_LINUX_SLL2`), what `tcpdump -i any`
//! writes: a 20-byte header, then the packet from its network-layer header
//! on (<https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html>).

use crate::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};

/// The header's length.
pub const HEADER_LEN: usize = 20;

/// `sll2_protocol` of 802.3 frames whose payload starts with `0xffff`
/// (Novell's raw IPX), as the kernel's `ETH_P_802_3`.
const ETH_P_802_3: u16 = 0x0001;
/// `sll2_protocol` of other 802.3 frames (an LLC header follows), as the
/// kernel's `ETH_P_802_2`.
const ETH_P_802_2: u16 = 0x0004;

/// What the header says of a packet besides its protocol and address,
/// which come from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The interface index.
    pub ifindex: u32,
    /// Its `ARPHRD_*` type.
    pub hardware_type: u16,
    /// `PACKET_HOST` 0, `PACKET_BROADCAST` 1, `PACKET_MULTICAST` 2,
    /// `PACKET_OTHERHOST` 3, `PACKET_OUTGOING` 4.
    pub packet_type: u8,
}

/// A frame of `link_type` (Ethernet or raw IP) as a packet socket in
/// cooked mode hands it to libpcap, with the header libpcap puts in front:
/// the Ethernet header is replaced by the cooked one (its type becomes the
/// protocol, its source address the address). Returns the bytes, cut to
/// `snaplen` as libpcap cuts them, and the length on the wire, or `None`
/// for another link type.
pub fn from_frame(
    link_type: u16,
    frame: &[u8],
    orig_len: u32,
    meta: Meta,
    snaplen: u32,
) -> Option<(Vec<u8>, u32)> {
    let (protocol, address, payload, stripped): (u16, &[u8], &[u8], u32) = match link_type {
        LINKTYPE_ETHERNET => {
            let length_type = frame
                .get(12..14)
                .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
            let payload = frame.get(14..).unwrap_or_default();
            let protocol = if length_type >= 0x0600 {
                length_type
            } else if payload.starts_with(&[0xff, 0xff]) {
                ETH_P_802_3
            } else {
                ETH_P_802_2
            };
            (protocol, frame.get(6..12).unwrap_or_default(), payload, 14)
        }
        LINKTYPE_RAW => {
            let protocol = match frame.first().map(|b| b >> 4) {
                Some(4) => 0x0800,
                Some(6) => 0x86dd,
                _ => 0,
            };
            (protocol, &[][..], frame, 0)
        }
        _ => return None,
    };
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(&protocol.to_be_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&meta.ifindex.to_be_bytes());
    bytes.extend_from_slice(&meta.hardware_type.to_be_bytes());
    bytes.push(meta.packet_type);
    bytes.push(address.len() as u8);
    let mut padded = [0u8; 8];
    padded[..address.len().min(8)].copy_from_slice(&address[..address.len().min(8)]);
    bytes.extend_from_slice(&padded);
    bytes.extend_from_slice(payload);
    bytes.truncate((snaplen as usize).max(HEADER_LEN));
    let orig_len = orig_len.saturating_sub(stripped) + HEADER_LEN as u32;
    Some((bytes, orig_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ethernet_frame_becomes_what_tcpdump_any_writes() {
        // An IPv6 neighbor solicitation sent by a6:80:0e:52:11:40 on ifindex 2,
        // and the first 24 bytes tcpdump -i any wrote of it.
        let mut frame = hex("333300000001a6800e52114086dd");
        frame.extend(hex("6000000000203aff"));
        let meta = Meta {
            ifindex: 2,
            hardware_type: 1,
            packet_type: 4,
        };
        let (bytes, len) =
            from_frame(LINKTYPE_ETHERNET, &frame, 92 - 20 + 14, meta, 262_144).expect("Ethernet");
        assert_eq!(
            bytes,
            hex("86dd000000000002000104 06a6800e521140 0000 6000000000203aff")
        );
        assert_eq!(len, 92);
        let (cut, _) = from_frame(LINKTYPE_ETHERNET, &frame, 86, meta, 22).expect("Ethernet");
        assert_eq!(cut.len(), 22);
    }

    #[test]
    fn raw_ip_has_no_address_and_802_3_is_told_apart() {
        let meta = Meta {
            ifindex: 7,
            hardware_type: 0xfffe,
            packet_type: 0,
        };
        let (bytes, len) = from_frame(LINKTYPE_RAW, &hex("4500"), 40, meta, 100).expect("raw");
        assert_eq!(&bytes[..2], &[0x08, 0x00]);
        assert_eq!(bytes[11], 0, "no address");
        assert_eq!(len, 60);
        let llc = hex("0180c200000002000000000100260042420300");
        let (bytes, _) = from_frame(LINKTYPE_ETHERNET, &llc, 60, meta, 100).expect("802.3");
        assert_eq!(&bytes[..2], &[0x00, 0x04]);
        assert_eq!(from_frame(105, &llc, 60, meta, 100), None);
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }
}
