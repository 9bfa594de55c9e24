//! Packet lines as `tcpdump -nn` prints them.
//!
//! [`Printer`] renders each packet of a capture the way tcpdump 4.99 does
//! for the protocols it covers: Ethernet (with 802.1Q tags), ARP, IPv4,
//! IPv6 (with hop-by-hop, destination options and fragment headers), ICMP,
//! ICMPv6, TCP, UDP and VXLAN, with tcpdump's `-e`, `-v`, `-x`/`-xx`,
//! `-X`/`-XX`, `-A`/`-AA` and `-t`…`-ttttt` options. The code follows
//! tcpdump's printers (`print-ether.c`, `print-ip.c`, `print-tcp.c`…) step by
//! step, truncation marks (`[|tcp]`) included; no input makes it panic.
//!
//! A packet that reaches a protocol tcpdump decodes and we do not (DNS on
//! port 53, OSPF, LLC…) still gets a line, but [`Printed::supported`] is
//! false: its line may differ from tcpdump's from that protocol on.
//! docs/printing.md lists where supported lines differ on purpose.
//!
//! Unlike tcpdump, the relative TCP sequence numbers (tcpdump without `-S`)
//! are kept per [`Printer`], and times are shown in UTC.

mod addr;
mod arp;
mod hex;
mod icmp;
mod icmp6;
mod ip;
mod link;
mod sll;
mod tcp;
#[cfg(test)]
mod tests;
mod time;
mod udp;

use std::fmt::Write as _;

use crate::linktype::{LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW};

pub use time::{TimeFormat, format_time};

/// What tcpdump shows besides the protocol lines: its printing flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `-v` count: 0, 1, 2… (tcpdump's `-v`, `-vv`).
    pub verbose: u8,
    /// `-e`: the link-level header.
    pub link_header: bool,
    /// `-x`, `-X`, `-A` and their doubled forms.
    pub dump: Dump,
    /// `-t` count.
    pub time: TimeFormat,
    /// `-S`: absolute TCP sequence numbers.
    pub absolute_seq: bool,
    /// `-#`: a packet number before each packet.
    pub number: bool,
}

/// The raw bytes tcpdump appends to each packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dump {
    #[default]
    None,
    /// `-x` (without the link-level header) or `-xx` (with it).
    Hex { link: bool },
    /// `-X` or `-XX`: hex and ASCII.
    HexAscii { link: bool },
    /// `-A` or `-AA`: ASCII only.
    Ascii { link: bool },
}

impl Dump {
    /// The dump tcpdump picks from its flag counts: `-X` wins over `-x`,
    /// which wins over `-A`.
    pub fn from_counts(x: u8, big_x: u8, a: u8) -> Self {
        if big_x > 0 {
            Self::HexAscii { link: big_x > 1 }
        } else if x > 0 {
            Self::Hex { link: x > 1 }
        } else if a > 0 {
            Self::Ascii { link: a > 1 }
        } else {
            Self::None
        }
    }
}

/// One packet to print.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// See [`crate::linktype`].
    pub link_type: u16,
    /// The captured bytes.
    pub data: &'a [u8],
    /// Length on the wire.
    pub orig_len: u32,
    /// Nanoseconds since the Unix epoch.
    pub unix_ns: u64,
}

/// A printed packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Printed {
    /// The text, with its final newline; continuation lines (`-v`, dumps)
    /// start with a tab or spaces, as in tcpdump.
    pub text: String,
    /// Every protocol of the packet that tcpdump decodes is one this module
    /// prints: the text is tcpdump's.
    pub supported: bool,
}

/// Prints packets one after another, keeping what tcpdump keeps between
/// packets: the previous time stamp (`-ttt`), the first (`-ttttt`) and
/// every TCP connection's initial sequence numbers.
#[derive(Debug, Default)]
pub struct Printer {
    options: Options,
    time: time::Clock,
    tcp: tcp::Connections,
    /// Packets printed so far.
    count: u64,
}

impl Printer {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The packet's text, as tcpdump prints it; `prefix` goes between the
    /// time stamp and the protocols (an interface name and direction). For
    /// `LINKTYPE_LINUX_SLL2` it is the interface's name, which tcpdump
    /// prints before the packet type (`eth0  In  IP ...`).
    pub fn print(&mut self, frame: &Frame<'_>, prefix: Option<&str>) -> Printed {
        let mut out = String::new();
        self.count += 1;
        if self.options.number {
            let _ = write!(out, "{:5}  ", self.count);
        }
        let data = frame.data;
        let orig_len = frame.orig_len as usize;
        if let Some(invalid) = invalid_header(data.len(), orig_len) {
            out.push_str(&invalid);
            out.push('\n');
            return Printed {
                text: out,
                supported: false,
            };
        }
        self.time.print(&mut out, self.options.time, frame.unix_ns);
        if let Some(prefix) = prefix.filter(|_| frame.link_type != LINKTYPE_LINUX_SLL2) {
            out.push_str(prefix);
            out.push(' ');
        }
        let mut nd = Nd {
            out,
            options: self.options,
            tcp: &mut self.tcp,
            protocol: "",
            supported: true,
        };
        let header_len = match frame.link_type {
            LINKTYPE_ETHERNET => link::ether_if(&mut nd, data, orig_len),
            LINKTYPE_LINUX_SLL2 => sll::sll2_if(&mut nd, data, orig_len, prefix),
            LINKTYPE_RAW => {
                nd.supported = false;
                match ip::raw(&mut nd, data, orig_len) {
                    Ok(()) => Ok(0),
                    Err(Trunc) => Err(Trunc),
                }
            }
            other => {
                nd.supported = false;
                let _ = write!(nd.out, "link type {other}, length {orig_len}");
                Ok(0)
            }
        };
        let header_len = header_len.unwrap_or_else(|Trunc| {
            nd.trunc();
            0
        });
        let dump = self.options.dump;
        match dump {
            Dump::None => {}
            Dump::Hex { link } | Dump::HexAscii { link } | Dump::Ascii { link } => {
                let from = if link { 0 } else { header_len };
                if link || data.len() > header_len {
                    let bytes = &data[from.min(data.len())..];
                    match dump {
                        Dump::Hex { .. } => hex::hex(&mut nd.out, "\n\t", bytes, 0),
                        Dump::HexAscii { .. } => {
                            hex::hex_and_ascii(&mut nd.out, "\n\t", bytes, 0);
                        }
                        _ => hex::ascii(&mut nd.out, bytes),
                    }
                }
            }
        }
        nd.out.push('\n');
        Printed {
            text: nd.out,
            supported: nd.supported,
        }
    }
}

/// tcpdump's `[Invalid header: ...]` for impossible record lengths.
fn invalid_header(caplen: usize, len: usize) -> Option<String> {
    const MAXIMUM_SNAPLEN: usize = 262_144;
    let mut problems = Vec::new();
    if caplen == 0 {
        problems.push("caplen==0".to_owned());
    }
    if len == 0 {
        problems.push("len==0".to_owned());
    } else if len < caplen {
        problems.push(format!("len({len}) < caplen({caplen})"));
    }
    if caplen > MAXIMUM_SNAPLEN {
        problems.push(format!("caplen({caplen}) > {MAXIMUM_SNAPLEN}"));
    }
    if len > MAXIMUM_SNAPLEN {
        problems.push(format!("len({len}) > {MAXIMUM_SNAPLEN}"));
    }
    (!problems.is_empty()).then(|| format!("[Invalid header: {}]", problems.join(", ")))
}

/// Summarizes one packet of `link_type` (see [`crate::linktype`]) as
/// `tcpdump -nnS` would, without the time stamp or the final newline: a
/// stateless line for single packets.
pub fn summarize(link_type: u16, data: &[u8]) -> String {
    let mut printer = Printer::new(Options {
        time: TimeFormat::None,
        absolute_seq: true,
        ..Options::default()
    });
    let printed = printer.print(
        &Frame {
            link_type,
            data,
            orig_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            unix_ns: 0,
        },
        None,
    );
    let mut text = printed.text;
    text.pop();
    text
}

/// The printer reached the end of the captured bytes (tcpdump's longjmp to
/// `[|proto]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trunc;

type Result<T = ()> = std::result::Result<T, Trunc>;

/// The state of one packet's printing, as tcpdump's `netdissect_options`.
struct Nd<'a> {
    out: String,
    options: Options,
    tcp: &'a mut tcp::Connections,
    /// For the truncation mark.
    protocol: &'static str,
    supported: bool,
}

impl Nd<'_> {
    fn print(&mut self, text: &str) {
        self.out.push_str(text);
    }

    fn trunc(&mut self) {
        let _ = write!(self.out, " [|{}]", self.protocol);
    }

    /// The captured `bytes` hold a header of `header_len` bytes; else
    /// prints tcpdump's ` [remaining caplen(N) < header length(H)]` and
    /// stops.
    fn header_captured(&mut self, bytes: &[u8], header_len: usize) -> Result {
        if bytes.len() < header_len {
            let _ = write!(
                self.out,
                " [remaining caplen({}) < header length({header_len})]",
                bytes.len()
            );
            return Err(Trunc);
        }
        Ok(())
    }

    fn invalid(&mut self) {
        self.out.push_str(" (invalid)");
    }

    fn verbose(&self) -> u8 {
        self.options.verbose
    }

    fn eflag(&self) -> bool {
        self.options.link_header
    }

    /// tcpdump prints unknown payloads in hex and ASCII (even when a
    /// dump follows).
    fn default_print(&mut self, bytes: &[u8]) {
        hex::hex_and_ascii(&mut self.out, "\n\t", bytes, 0);
    }

    /// From here on, tcpdump decodes what we do not.
    fn unsupported(&mut self) {
        self.supported = false;
    }
}

/// Byte `at`, or [`Trunc`].
fn u8_at(bytes: &[u8], at: usize) -> Result<u8> {
    bytes.get(at).copied().ok_or(Trunc)
}

fn be16(bytes: &[u8], at: usize) -> Result<u16> {
    let b = bytes.get(at..at + 2).ok_or(Trunc)?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

fn be24(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 3).ok_or(Trunc)?;
    Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
}

fn be32(bytes: &[u8], at: usize) -> Result<u32> {
    let b = bytes.get(at..at + 4).ok_or(Trunc)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `len` bytes from `at`, or [`Trunc`].
fn bytes_at(bytes: &[u8], at: usize, len: usize) -> Result<&[u8]> {
    bytes
        .get(at..at.checked_add(len).ok_or(Trunc)?)
        .ok_or(Trunc)
}

/// The one's complement sum of `parts` (RFC 1071), folded, not inverted.
fn ones_sum(parts: &[&[u8]]) -> u32 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match odd.take() {
                Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
                None => odd = Some(byte),
            }
            if sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// tcpdump's `in_cksum`: 0 when the data (checksum field included) is
/// correct.
fn in_cksum(parts: &[&[u8]]) -> u16 {
    !(ones_sum(parts) as u16)
}

/// tcpdump's `in_cksum_shouldbe`: the checksum field that would have made
/// `sum` (the result of [`in_cksum`]) zero.
fn in_cksum_shouldbe(field: u16, sum: u16) -> u16 {
    let mut shouldbe = u32::from(!field);
    shouldbe += u32::from(!sum);
    shouldbe = (shouldbe & 0xffff) + (shouldbe >> 16);
    shouldbe = (shouldbe & 0xffff) + (shouldbe >> 16);
    !(shouldbe as u16)
}

/// For a checksum without a pseudo-header (IPv4's, ICMP's), over the first
/// `len` bytes of `bytes`: `None` when it verifies, else the checksum field
/// at byte `at` and what it should have been, for tcpdump's `(->SHOULDBE)`.
fn wrong_cksum(bytes: &[u8], len: usize, at: usize) -> Result<Option<(u16, u16)>> {
    let sum = in_cksum(&[&bytes[..len]]);
    if sum == 0 {
        return Ok(None);
    }
    let field = be16(bytes, at)?;
    Ok(Some((field, in_cksum_shouldbe(field, sum))))
}

/// `[PROTO sum ok] ` or `[bad PROTO cksum 0xFIELD -> 0xSHOULDBE!] `, as
/// tcpdump's UDP and ICMPv6 printers say how a checksum `field` came out
/// (`sum` is [`in_cksum`]'s result over the pseudo-header and the data).
fn print_sum_check(nd: &mut Nd<'_>, proto: &str, field: u16, sum: u16) {
    if sum == 0 {
        let _ = write!(nd.out, "[{proto} sum ok] ");
    } else {
        let _ = write!(
            nd.out,
            "[bad {proto} cksum 0x{field:04x} -> 0x{:04x}!] ",
            in_cksum_shouldbe(field, sum)
        );
    }
}

// The layers hand their payloads to the next layer through the three
// functions below, so that each layer's file depends only on this one and on
// `addr` (the files form a hierarchy even though packets nest: VXLAN carries
// Ethernet, ICMP errors quote IP).

/// The protocol after a link-layer header (Ethernet's or Linux cooked's),
/// by ether type. `Ok(false)` for a protocol we do not print.
fn ethertype_payload(
    nd: &mut Nd<'_>,
    ether_type: u16,
    payload: &[u8],
    length: usize,
) -> Result<bool> {
    match ether_type {
        0x0800 => ip::ip_print(nd, payload, length)?,
        0x86dd => ip::ip6_print(nd, payload, length)?,
        0x0806 | 0x8035 => arp::arp_print(nd, payload, length)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// An Ethernet frame inside another packet (VXLAN's).
fn inner_ether(nd: &mut Nd<'_>, frame: &[u8], length: usize) -> Result<usize> {
    link::ether(nd, frame, length)
}

/// An IPv4 packet inside another (quoted by an ICMP error).
fn inner_ip(nd: &mut Nd<'_>, packet: &[u8], length: usize) -> Result {
    ip::ip_print(nd, packet, length)
}

/// tcpdump's table of ether types (`ethertype_values`, in its order:
/// 0x9100 is `802.1Q-9100`, not `VMAN`).
fn ethertype_name(ether_type: u16) -> Option<&'static str> {
    Some(match ether_type {
        0x0800 => "IPv4",
        0x8847 => "MPLS unicast",
        0x8848 => "MPLS multicast",
        0x86dd => "IPv6",
        0x8100 => "802.1Q",
        0x9100 => "802.1Q-9100",
        0x88a8 => "802.1Q-QinQ",
        0x9200 => "802.1Q-9200",
        0x88e5 => "802.1AE MACsec",
        0x0200 => "PUP",
        0x0806 => "ARP",
        0x8035 => "Reverse ARP",
        0x0600 => "NS",
        0x0500 => "Sprite",
        0x1000 => "Trail",
        0x6001 => "MOP DL",
        0x6002 => "MOP RC",
        0x6003 => "DN",
        0x6004 => "LAT",
        0x6007 => "SCA",
        0x6558 => "TEB",
        0x8038 => "Lanbridge",
        0x803c => "DEC DNS",
        0x803e => "DEC DTS",
        0x805b => "VEXP",
        0x805c => "VPROD",
        0x809b => "Appletalk",
        0x80f3 => "Appletalk ARP",
        0x8137 => "IPX",
        0x880b => "PPP",
        0x8808 => "MPCP",
        0x8809 => "Slow Protocols",
        0x8863 => "PPPoE D",
        0x8864 => "PPPoE S",
        0x888e => "EAPOL",
        0x8899 => "Realtek protocols",
        0x886f => "MS NLB heartbeat",
        0x8870 => "Jumbo",
        0x894f => "NSH",
        0x9000 => "Loopback",
        0xfefe => "OSI",
        0x00fe => "GRE-OSI",
        0xabcd => "CFM (old)",
        0x8902 => "CFM",
        0x893a => "IEEE1905.1",
        0x88cc => "LLDP",
        0x88ca => "TIPC",
        0x0707 => "GeoNet (old)",
        0x8947 => "GeoNet",
        0x1111 => "CALM FAST",
        0x88a2 => "AoE",
        0x88f7 => "PTP",
        0xd28b => "Arista Vendor Specific Protocol",
        _ => return None,
    })
}
