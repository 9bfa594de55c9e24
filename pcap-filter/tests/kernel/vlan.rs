//! VLAN-tagged frames: in band (as the wire and the capture file have
//! them) and with the outer tag held out of band (as the kernel often
//! holds it), against tcpdump reading the in-band frames.

use pcap_filter::{compile, compile::LINKTYPE_ETHERNET, translate::VlanSource};

use crate::{
    corpus::untag,
    harness::{Loaded, numbered_pcap, require_root, tcpdump_accepts},
};

pub const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;

/// An Ethernet frame with `tags` (TPID, TCI), outermost first, padded to 60 bytes.
pub fn frame(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for &(tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// An IPv4 packet from `src` to `dst` carrying `protocol` with ports.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, sport: u16, dport: u16) -> Vec<u8> {
    let transport_len: u16 = if protocol == 6 { 20 } else { 8 };
    let total = 20 + transport_len;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    if protocol == 6 {
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        p.extend_from_slice(&8u16.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    p
}

fn ipv6_udp(dport: u16) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&1234u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

fn arp() -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1];
    p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    p
}

/// The test frames; which tcpdump expressions match which is checked below.
fn frames() -> Vec<Vec<u8>> {
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    vec![
        frame(&[], ETH_IPV4, &ipv4(a, b, 17, 1234, 53)),
        frame(&[(TPID_8021Q, 100)], ETH_IPV4, &ipv4(a, b, 17, 1234, 53)),
        // priority 5, VLAN 200
        frame(&[(TPID_8021Q, 0xa0c8)], ETH_IPV4, &ipv4(b, a, 6, 40000, 80)),
        frame(&[(TPID_8021Q, 100)], ETH_ARP, &arp()),
        frame(&[(TPID_8021Q, 100)], ETH_IPV6, &ipv6_udp(53)),
        frame(
            &[(TPID_8021AD, 300), (TPID_8021Q, 100)],
            ETH_IPV4,
            &ipv4(a, b, 17, 1234, 53),
        ),
        frame(&[(TPID_8021Q, 4095)], ETH_IPV4, &ipv4(a, b, 6, 1, 2)),
        frame(&[(TPID_8021Q, 0)], ETH_IPV4, &ipv4(b, a, 17, 53, 1234)),
    ]
}

const EXPRESSIONS: &[(&str, &[usize])] = &[
    ("vlan", &[1, 2, 3, 4, 5, 6, 7]),
    ("vlan 100", &[1, 3, 4]),
    ("vlan 100 and ip", &[1]),
    ("vlan 200 and tcp port 80", &[2]),
    ("vlan and udp port 53", &[1, 4, 7]),
    ("vlan 100 and host 10.0.0.1", &[1, 3]),
    ("ip", &[0]),
    ("not vlan", &[0]),
    ("vlan 300 and vlan 100 and udp", &[5]),
    ("vlan and vlan", &[5]),
    ("vlan and arp", &[3]),
    ("vlan and ip6", &[4]),
    ("vlan 4095", &[6]),
    ("vlan 0 and udp", &[7]),
    ("ether[14:2] & 0xfff == 100", &[1, 3, 4]),
    ("ether[12:4] == 0x81000064", &[1, 3, 4]),
    ("ether[13:2] == 0x0000", &[1, 3, 4, 7]),
    ("ether[10:4] == 0x00018100", &[1, 2, 3, 4, 6, 7]),
    ("ether[15:4] == 0x64080045", &[1]),
    ("len > 60", &[4]),
    ("len == 60", &[0, 1, 2, 3, 5, 6, 7]),
];

#[test]
fn tagged_frames_match_tcpdump_in_band_and_out_of_band() {
    require_root();
    let frames = frames();
    let file = numbered_pcap("vlan", LINKTYPE_ETHERNET, frames.clone());
    for &(expression, expected) in EXPRESSIONS {
        let theirs: Vec<usize> = tcpdump_accepts(&file, expression)
            .into_iter()
            .map(|i| i as usize)
            .collect();
        assert_eq!(theirs, expected, "tcpdump's verdicts for {expression:?}");
        let program = compile(expression, LINKTYPE_ETHERNET).expect("compiles");
        let in_band = Loaded::ethernet(&program, VlanSource::Skb);
        let out_of_band = Loaded::ethernet(&program, VlanSource::ControlBlock);
        for (i, f) in frames.iter().enumerate() {
            let expected = theirs.contains(&i);
            assert_eq!(
                in_band.verdict(f, None) != 0,
                expected,
                "{expression:?} frame {i} in band"
            );
            if u16::from_be_bytes([f[12], f[13]]) != ETH_IPV4 {
                let (skb, tag) = untag(f);
                assert_eq!(
                    out_of_band.verdict(&skb, Some(tag)) != 0,
                    expected,
                    "{expression:?} frame {i} with its outer tag out of band"
                );
            }
        }
    }
}
