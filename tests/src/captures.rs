//! A small reader for classic pcap and pcapng files, enough to compare
//! captures packet for packet and byte for byte.

use anyhow::{Context as _, bail, ensure};
/// A packet's direction, from pcapng `epb_flags`: the writers' own type.
pub use pcap_format::Direction;

/// One packet as a capture file holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// When it was captured, in nanoseconds since the Unix epoch (classic
    /// pcap's microseconds scaled up).
    pub unix_ns: u64,
    /// Its length on the wire, before any snap length cut it.
    pub orig_len: u32,
    /// The bytes kept: at most `orig_len` of them.
    pub data: Vec<u8>,
    /// Interface name (pcapng `if_name`), if the file has one.
    pub interface: Option<String>,
    /// Inbound or outbound, if the pcapng `epb_flags` say (classic pcap
    /// never does).
    pub direction: Option<Direction>,
}

impl Packet {
    /// The ICMP type of an Ethernet-framed IPv4 ICMP packet (0 an echo
    /// reply, 8 an echo request), or `None` for any other packet.
    pub fn icmp_type(&self) -> Option<u8> {
        let ip = self.data.get(14..)?;
        let is_icmp = self.data[12..14] == [8, 0] && ip.first()? >> 4 == 4 && *ip.get(9)? == 1;
        if !is_icmp {
            return None;
        }
        ip.get(usize::from(ip[0] & 0x0f) * 4).copied()
    }
}

/// pcapng interface statistics: each count is `None` when the Interface
/// Statistics Block has no such option.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// The name of the interface the block counts for, if it has one.
    pub interface: Option<String>,
    /// `isb_ifrecv`: packets the interface received.
    pub received: Option<u64>,
    /// `isb_ifdrop`: dropped by the interface (for us: in the kernel).
    pub if_dropped: Option<u64>,
    /// `isb_filteraccept`: packets the capture filter accepted.
    pub filter_accept: Option<u64>,
    /// `isb_osdrop`: dropped by the operating system.
    pub os_dropped: Option<u64>,
    /// `isb_usrdeliv`: packets delivered to the capture, and so written.
    pub user_delivered: Option<u64>,
}

/// What a capture file holds, in file order.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// The link type of each interface (classic pcap: the file's one).
    pub link_types: Vec<u16>,
    /// Every packet, of whichever interface.
    pub packets: Vec<Packet>,
    /// Every Interface Statistics Block (classic pcap has none).
    pub statistics: Vec<Statistics>,
}

/// Reads and parses the classic pcap or pcapng file at `path`.
pub fn read_file(path: &std::path::Path) -> anyhow::Result<Capture> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse(bytes: &[u8]) -> anyhow::Result<Capture> {
    match bytes.get(..4) {
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => parse_pcapng(bytes),
        Some(_) => parse_pcap(bytes),
        None => bail!("file is shorter than a header"),
    }
}

/// The length of the file's leading whole blocks (pcapng) or records
/// (pcap): where a file cut off in the middle of a block stops being
/// readable. Equals `bytes.len()` for a file that ends on a block boundary.
pub fn whole_blocks_len(bytes: &[u8]) -> usize {
    let pcapng = bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]);
    let mut at = if pcapng { 0 } else { 24 };
    loop {
        let (header, len) = if pcapng {
            (12, bytes.get(at + 4..at + 8).map(|l| u32_at(l, 0) as usize))
        } else {
            (
                16,
                bytes
                    .get(at + 8..at + 12)
                    .map(|l| 16 + u32_at(l, 0) as usize),
            )
        };
        match len {
            Some(len) if len >= header && at + len <= bytes.len() => at += len,
            _ => return at.min(bytes.len()),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn parse_pcap(b: &[u8]) -> anyhow::Result<Capture> {
    ensure!(b.len() >= 24, "short pcap header");
    let scale = match u32_at(b, 0) {
        0xa1b2_c3d4 => 1_000,
        0xa1b2_3c4d => 1,
        magic => bail!("not a little-endian pcap file (magic {magic:#x})"),
    };
    let mut capture = Capture {
        link_types: vec![u32_at(b, 20) as u16],
        ..Capture::default()
    };
    let mut at = 24;
    while at < b.len() {
        ensure!(at + 16 <= b.len(), "truncated record header at {at}");
        let caplen = u32_at(b, at + 8) as usize;
        ensure!(at + 16 + caplen <= b.len(), "truncated record at {at}");
        capture.packets.push(Packet {
            unix_ns: u64::from(u32_at(b, at)) * 1_000_000_000
                + u64::from(u32_at(b, at + 4)) * scale,
            orig_len: u32_at(b, at + 12),
            data: b[at + 16..at + 16 + caplen].to_vec(),
            interface: None,
            direction: None,
        });
        at += 16 + caplen;
    }
    Ok(capture)
}

/// Options of a block body: (code, value) pairs.
fn options(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let (code, len) = (u16_at(b, 0), u16_at(b, 2) as usize);
        if code == 0 || b.len() < 4 + len {
            break;
        }
        out.push((code, &b[4..4 + len]));
        b = &b[4 + len.next_multiple_of(4)..];
    }
    out
}

struct Idb {
    name: Option<String>,
    ns_per_tick: u64,
}

fn parse_pcapng(b: &[u8]) -> anyhow::Result<Capture> {
    let mut capture = Capture::default();
    let mut interfaces: Vec<Idb> = Vec::new();
    let mut at = 0;
    while at < b.len() {
        ensure!(at + 12 <= b.len(), "truncated block at {at}");
        let (kind, len) = (u32_at(b, at), u32_at(b, at + 4) as usize);
        ensure!(
            len >= 12 && len % 4 == 0 && at + len <= b.len(),
            "bad block length {len} at {at}"
        );
        ensure!(
            u32_at(b, at + len - 4) as usize == len,
            "trailing length mismatch at {at}"
        );
        let body = &b[at + 8..at + len - 4];
        match kind {
            0x0A0D_0D0A => {
                ensure!(u32_at(body, 0) == 0x1A2B_3C4D, "not little-endian pcapng");
                interfaces.clear();
            }
            1 => {
                capture.link_types.push(u16_at(body, 0));
                let mut idb = Idb {
                    name: None,
                    ns_per_tick: 1_000,
                };
                for (code, value) in options(&body[8..]) {
                    match code {
                        2 => idb.name = Some(String::from_utf8_lossy(value).into_owned()),
                        9 => {
                            ensure!(value[0] & 0x80 == 0, "binary if_tsresol not supported");
                            idb.ns_per_tick = 10u64.pow(9u32.saturating_sub(u32::from(value[0])));
                        }
                        _ => {}
                    }
                }
                interfaces.push(idb);
            }
            6 => {
                let idb = interfaces
                    .get(u32_at(body, 0) as usize)
                    .context("EPB for unknown interface")?;
                let ticks = (u64::from(u32_at(body, 4)) << 32) | u64::from(u32_at(body, 8));
                let caplen = u32_at(body, 12) as usize;
                let direction = options(&body[20 + caplen.next_multiple_of(4)..])
                    .into_iter()
                    .find(|(code, _)| *code == 2)
                    .and_then(|(_, v)| match u32_at(v, 0) & 3 {
                        1 => Some(Direction::Inbound),
                        2 => Some(Direction::Outbound),
                        _ => None,
                    });
                capture.packets.push(Packet {
                    unix_ns: ticks * idb.ns_per_tick,
                    orig_len: u32_at(body, 16),
                    data: body[20..20 + caplen].to_vec(),
                    interface: idb.name.clone(),
                    direction,
                });
            }
            5 => {
                let mut stats = Statistics {
                    interface: interfaces
                        .get(u32_at(body, 0) as usize)
                        .and_then(|i| i.name.clone()),
                    ..Statistics::default()
                };
                for (code, value) in options(&body[12..]) {
                    let slot = match code {
                        4 => &mut stats.received,
                        5 => &mut stats.if_dropped,
                        6 => &mut stats.filter_accept,
                        7 => &mut stats.os_dropped,
                        8 => &mut stats.user_delivered,
                        _ => continue,
                    };
                    *slot = Some(u64_at(value, 0));
                }
                capture.statistics.push(stats);
            }
            _ => {}
        }
        at += len;
    }
    Ok(capture)
}

#[cfg(test)]
mod tests {
    use super::Packet;

    fn frame(data: Vec<u8>) -> Packet {
        Packet {
            unix_ns: 0,
            orig_len: data.len() as u32,
            data,
            interface: None,
            direction: None,
        }
    }

    #[test]
    fn icmp_type_reads_ipv4_icmp_only() {
        let macs = [[0x02, 0x01, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]].concat();
        // An echo reply with a 24-byte IP header (one option word).
        let mut reply = [macs.clone(), vec![0x08, 0x00, 0x46], vec![0; 8], vec![1]].concat();
        reply.resize(14 + 24, 0);
        reply.extend([0, 0, 0, 0]);
        reply[14 + 20] = 8; // the option word holds an 8 where a 20-byte header's ICMP type would be
        assert_eq!(frame(reply).icmp_type(), Some(0));
        // An ARP request whose bytes 23 and 34 are 1 and 0, as an echo reply's are.
        let arp = [
            macs,
            vec![0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1],
            vec![0x02, 0x01, 0, 0, 0, 1, 10, 0, 0, 1],
            vec![0; 6],
            vec![10, 0, 0, 2],
        ]
        .concat();
        assert_eq!((arp[23], arp[34]), (1, 0));
        assert_eq!(frame(arp).icmp_type(), None);
    }
}
