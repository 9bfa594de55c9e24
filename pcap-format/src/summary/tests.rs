//! Summaries checked against the lines `tcpdump -nS` prints for the same
//! packets (minus what tcpdump decodes above TCP and UDP).

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv4Type, Icmpv6Type, IpFragOffset,
    IpNumber, Ipv4Header, PacketBuilder, PacketBuilderStep, TcpOptionElement, VlanId, icmpv4,
    icmpv6,
};

use super::summarize;
use crate::linktype::{LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff];
const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];
const IP6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const IP6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn ethernet() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(MAC_A, MAC_B)
}

fn ipv4(from: [u8; 4], to: [u8; 4]) -> PacketBuilderStep<etherparse::IpHeaders> {
    ethernet().ipv4(from, to, 64)
}

fn ipv6(from: [u8; 16], to: [u8; 16]) -> PacketBuilderStep<etherparse::IpHeaders> {
    ethernet().ipv6(from, to, 64)
}

/// Serializes a final packet builder step with `payload`.
macro_rules! build {
    ($builder:expr, $payload:expr $(,)?) => {{
        let mut bytes = Vec::new();
        $builder.write(&mut bytes, $payload).unwrap();
        bytes
    }};
}

fn ethernet_summary(frame: &[u8]) -> String {
    summarize(LINKTYPE_ETHERNET, frame)
}

fn arp_frame(
    operation: ArpOperation,
    sender: ([u8; 6], [u8; 4]),
    target: ([u8; 6], [u8; 4]),
) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        operation,
        &sender.0,
        &sender.1,
        &target.0,
        &target.1,
    )
    .unwrap();
    let mut bytes = Vec::new();
    ethernet().arp(arp).write(&mut bytes).unwrap();
    bytes
}

#[test]
fn tcp_syn() {
    assert_eq!(
        ethernet_summary(&build!(
            ipv4(IP_A, IP_B).tcp(43210, 80, 123, 64240).syn(),
            &[]
        )),
        "IP 10.0.0.1.43210 > 10.0.0.2.80: Flags [S], seq 123, win 64240, length 0"
    );
}

#[test]
fn tcp_syn_ack_with_options() {
    let options = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(11, 22),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ];
    let builder = ipv4(IP_B, IP_A)
        .tcp(80, 43210, 999, 65160)
        .syn()
        .ack(124)
        .options(&options)
        .unwrap();
    assert_eq!(
        ethernet_summary(&build!(builder, &[])),
        "IP 10.0.0.2.80 > 10.0.0.1.43210: Flags [S.], seq 999, ack 124, win 65160, \
         options [mss 1460,sackOK,TS val 11 ecr 22,nop,wscale 7], length 0"
    );
}

#[test]
fn tcp_data_shows_sequence_range() {
    let builder = ipv4(IP_A, IP_B).tcp(43210, 80, 124, 502).psh().ack(1000);
    assert_eq!(
        ethernet_summary(&build!(builder, &[0; 100])),
        "IP 10.0.0.1.43210 > 10.0.0.2.80: Flags [P.], seq 124:224, ack 1000, win 502, length 100"
    );
}

#[test]
fn tcp_flag_letters_in_tcpdump_order() {
    let fin = ipv4(IP_A, IP_B).tcp(1, 2, 224, 502).fin().psh().ack(1000);
    assert_eq!(
        ethernet_summary(&build!(fin, &[])),
        "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [FP.], seq 224, ack 1000, win 502, length 0"
    );
    let fin_ack = ipv4(IP_A, IP_B).tcp(1, 2, 224, 502).fin().ack(1000);
    assert!(ethernet_summary(&build!(fin_ack, &[])).contains("Flags [F.], seq 224, ack 1000"));
    let rst = ipv4(IP_A, IP_B).tcp(1, 2, 224, 0).rst();
    assert_eq!(
        ethernet_summary(&build!(rst, &[])),
        "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [R], seq 224, win 0, length 0"
    );
    let urgent = ipv4(IP_A, IP_B).tcp(1, 2, 224, 0).ack(5).urg(3).ece().cwr();
    assert_eq!(
        ethernet_summary(&build!(urgent, &[1, 2, 3])),
        "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [.UEW], seq 224:227, ack 5, win 0, urg 3, length 3"
    );
    let none = ipv4(IP_A, IP_B).tcp(1, 2, 224, 0);
    assert_eq!(
        ethernet_summary(&build!(none, &[])),
        "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [none], win 0, length 0"
    );
}

#[test]
fn tcp_selective_acknowledgements() {
    let options = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::SelectiveAcknowledgement((100, 200), [Some((300, 400)), None, None]),
    ];
    let builder = ipv4(IP_A, IP_B)
        .tcp(1, 2, 5, 0)
        .ack(1)
        .options(&options)
        .unwrap();
    assert_eq!(
        ethernet_summary(&build!(builder, &[])),
        "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [.], ack 1, win 0, \
         options [nop,nop,sack 2 {100:200}{300:400}], length 0"
    );
}

#[test]
fn tcp_over_ipv6() {
    let builder = ipv6(IP6_A, IP6_B).tcp(443, 51000, 5, 100).ack(9);
    assert_eq!(
        ethernet_summary(&build!(builder, &[0; 10])),
        "IP6 fd00::1.443 > fd00::2.51000: Flags [.], seq 5:15, ack 9, win 100, length 10"
    );
}

#[test]
fn tcp_length_comes_from_the_ip_header_when_the_capture_is_cut() {
    let mut bytes = build!(
        ipv4(IP_A, IP_B).tcp(1, 2, 123, 64240).psh().ack(5),
        &[0; 500]
    );
    bytes.truncate(80);
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &bytes),
        "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [P.], seq 123:623, ack 5, win 64240, length 500"
    );
}

#[test]
fn udp() {
    assert_eq!(
        ethernet_summary(&build!(ipv4(IP_A, IP_B).udp(5353, 53), &[0; 12])),
        "IP 10.0.0.1.5353 > 10.0.0.2.53: UDP, length 12"
    );
    assert_eq!(
        ethernet_summary(&build!(ipv6(IP6_A, IP6_B).udp(5000, 6000), &[0; 3])),
        "IP6 fd00::1.5000 > fd00::2.6000: UDP, length 3"
    );
}

#[test]
fn icmp_echo() {
    assert_eq!(
        ethernet_summary(&build!(
            ipv4(IP_A, IP_B).icmpv4_echo_request(1, 2),
            &[0; 56]
        )),
        "IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 1, seq 2, length 64"
    );
    assert_eq!(
        ethernet_summary(&build!(ipv4(IP_B, IP_A).icmpv4_echo_reply(1, 2), &[0; 56])),
        "IP 10.0.0.2 > 10.0.0.1: ICMP echo reply, id 1, seq 2, length 64"
    );
}

#[test]
fn icmp_errors_name_the_original_destination() {
    let mut original = Vec::new();
    PacketBuilder::ipv4(IP_A, IP_B, 64)
        .udp(5000, 6000)
        .write(&mut original, &[0; 4])
        .unwrap();
    original.truncate(28); // IP header and 8 bytes, as routers send back

    let error =
        |kind: Icmpv4Type| ethernet_summary(&build!(ipv4(IP_B, IP_A).icmpv4(kind), &original));
    assert_eq!(
        error(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port
        )),
        "IP 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 6000 unreachable, length 36"
    );
    assert_eq!(
        error(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Host
        )),
        "IP 10.0.0.2 > 10.0.0.1: ICMP host 10.0.0.2 unreachable, length 36"
    );
    assert_eq!(
        error(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }
        )),
        "IP 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 unreachable - need to frag (mtu 1400), length 36"
    );
    assert_eq!(
        error(Icmpv4Type::TimeExceeded(
            icmpv4::TimeExceededCode::TtlExceededInTransit
        )),
        "IP 10.0.0.2 > 10.0.0.1: ICMP time exceeded in-transit, length 36"
    );
    assert_eq!(
        error(Icmpv4Type::Redirect(icmpv4::RedirectHeader {
            code: icmpv4::RedirectCode::RedirectForHost,
            gateway_internet_address: [10, 0, 0, 254],
        })),
        "IP 10.0.0.2 > 10.0.0.1: ICMP redirect 10.0.0.2 to host 10.0.0.254, length 36"
    );
}

#[test]
fn icmpv6() {
    assert_eq!(
        ethernet_summary(&build!(
            ipv6(IP6_A, IP6_B).icmpv6_echo_request(7, 1),
            &[0; 56]
        )),
        "IP6 fd00::1 > fd00::2: ICMP6, echo request, id 7, seq 1, length 64"
    );

    let mut original = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 64)
        .udp(5000, 6000)
        .write(&mut original, &[0; 4])
        .unwrap();
    let error =
        |kind: Icmpv6Type| ethernet_summary(&build!(ipv6(IP6_B, IP6_A).icmpv6(kind), &original));
    assert_eq!(
        error(Icmpv6Type::DestinationUnreachable(
            icmpv6::DestUnreachableCode::Port
        )),
        "IP6 fd00::2 > fd00::1: ICMP6, destination unreachable, unreachable port, \
         fd00::2 udp port 6000, length 60"
    );
    assert_eq!(
        error(Icmpv6Type::PacketTooBig { mtu: 1280 }),
        "IP6 fd00::2 > fd00::1: ICMP6, packet too big, mtu 1280, length 60"
    );
    assert_eq!(
        error(Icmpv6Type::TimeExceeded(
            icmpv6::TimeExceededCode::HopLimitExceeded
        )),
        "IP6 fd00::2 > fd00::1: ICMP6, time exceeded in-transit for fd00::2, length 60"
    );

    let solicited_node = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
    let solicitation = ethernet().ipv6(IP6_A, solicited_node, 255);
    assert_eq!(
        ethernet_summary(&build!(
            solicitation.icmpv6(Icmpv6Type::NeighborSolicitation),
            &IP6_B
        )),
        "IP6 fd00::1 > ff02::1:ff00:2: ICMP6, neighbor solicitation, who has fd00::2, length 24"
    );
    let advertisement = Icmpv6Type::NeighborAdvertisement(icmpv6::NeighborAdvertisementHeader {
        router: false,
        solicited: true,
        r#override: true,
    });
    assert_eq!(
        ethernet_summary(&build!(ipv6(IP6_B, IP6_A).icmpv6(advertisement), &IP6_B)),
        "IP6 fd00::2 > fd00::1: ICMP6, neighbor advertisement, tgt is fd00::2, length 24"
    );
    let all_routers = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    assert_eq!(
        ethernet_summary(&build!(
            ipv6(IP6_A, all_routers).icmpv6(Icmpv6Type::RouterSolicitation),
            &[]
        )),
        "IP6 fd00::1 > ff02::2: ICMP6, router solicitation, length 8"
    );
}

#[test]
fn arp() {
    let request = arp_frame(ArpOperation::REQUEST, (MAC_A, IP_A), ([0; 6], IP_B));
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &request),
        "ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 28"
    );
    let reply = arp_frame(ArpOperation::REPLY, (MAC_B, IP_B), (MAC_A, IP_A));
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &reply),
        "ARP, Reply 10.0.0.2 is-at aa:bb:cc:dd:ee:ff, length 28"
    );
    let unicast_request = arp_frame(ArpOperation::REQUEST, (MAC_A, IP_A), (MAC_B, IP_B));
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &unicast_request),
        "ARP, Request who-has 10.0.0.2 (aa:bb:cc:dd:ee:ff) tell 10.0.0.1, length 28"
    );
}

#[test]
fn arp_length_includes_ethernet_padding() {
    let mut padded = arp_frame(ArpOperation::REQUEST, (MAC_A, IP_A), ([0; 6], IP_B));
    padded.resize(60, 0);
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &padded),
        "ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 46"
    );
}

#[test]
fn vlan_tag_comes_first() {
    let tagged = ethernet()
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv4(IP_A, IP_B, 64)
        .udp(5000, 6000);
    assert_eq!(
        ethernet_summary(&build!(tagged, &[0; 12])),
        "802.1Q vlan 100, p 0, ethertype IPv4, IP 10.0.0.1.5000 > 10.0.0.2.6000: UDP, length 12"
    );
}

#[test]
fn unknown_ether_type() {
    let mut bytes = [MAC_B, MAC_A].concat();
    bytes.extend([0x12, 0x34]);
    bytes.resize(60, 0);
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &bytes),
        "ethertype 0x1234, length 60"
    );
}

#[test]
fn unknown_ip_protocol_and_fragments() {
    let mut gre = Vec::new();
    Ipv4Header::new(4, 64, IpNumber(47), [1, 2, 3, 4], [5, 6, 7, 8])
        .unwrap()
        .write(&mut gre)
        .unwrap();
    gre.extend([0; 4]);
    assert_eq!(
        summarize(LINKTYPE_RAW, &gre),
        "IP 1.2.3.4 > 5.6.7.8: ip-proto-47, length 4"
    );

    let mut header = Ipv4Header::new(100, 64, IpNumber::UDP, [1, 2, 3, 4], [5, 6, 7, 8]).unwrap();
    header.identification = 4321;
    header.fragment_offset = IpFragOffset::try_new(185).unwrap();
    header.more_fragments = true;
    let mut fragment = Vec::new();
    header.write(&mut fragment).unwrap();
    fragment.extend([0; 100]);
    assert_eq!(
        summarize(LINKTYPE_RAW, &fragment),
        "IP 1.2.3.4 > 5.6.7.8: ip-proto-17, length 100 (frag 4321:100@1480+)"
    );
}

#[test]
fn raw_ip() {
    let mut v4 = Vec::new();
    PacketBuilder::ipv4(IP_A, IP_B, 64)
        .udp(5000, 6000)
        .write(&mut v4, &[0; 12])
        .unwrap();
    assert_eq!(
        summarize(LINKTYPE_RAW, &v4),
        "IP 10.0.0.1.5000 > 10.0.0.2.6000: UDP, length 12"
    );
    let mut v6 = Vec::new();
    PacketBuilder::ipv6(IP6_A, IP6_B, 64)
        .icmpv6_echo_reply(7, 1)
        .write(&mut v6, &[0; 56])
        .unwrap();
    assert_eq!(
        summarize(LINKTYPE_RAW, &v6),
        "IP6 fd00::1 > fd00::2: ICMP6, echo reply, id 7, seq 1, length 64"
    );
}

#[test]
fn truncated_and_malformed_data() {
    let syn = build!(ipv4(IP_A, IP_B).tcp(1, 2, 3, 4).syn(), &[]);
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &syn[..14 + 20 + 10]),
        "IP 10.0.0.1 > 10.0.0.2: [|tcp]"
    );
    assert_eq!(summarize(LINKTYPE_ETHERNET, &syn[..14 + 10]), "[|ip]");
    assert_eq!(summarize(LINKTYPE_ETHERNET, &syn[..10]), "[|ether]");
    assert_eq!(summarize(LINKTYPE_RAW, &syn[14..20]), "[|ip]");
    assert_eq!(summarize(LINKTYPE_RAW, &[0x50; 40]), "[bad ip header]");
    assert_eq!(summarize(LINKTYPE_RAW, &[]), "[|ip]");
    let arp = arp_frame(ArpOperation::REQUEST, (MAC_A, IP_A), ([0; 6], IP_B));
    assert_eq!(summarize(LINKTYPE_ETHERNET, &arp[..20]), "[|arp]");
}

#[test]
fn other_link_types_show_type_and_length() {
    assert_eq!(
        summarize(LINKTYPE_LINUX_SLL, &[0; 20]),
        "link type 113, length 20"
    );
}

/// Every prefix and every one-byte corruption of valid packets, and random
/// bytes, are summarized without panicking.
#[test]
fn never_panics() {
    let mut samples: Vec<Vec<u8>> = vec![
        build!(ipv4(IP_A, IP_B).tcp(1, 2, 3, 4).syn(), &[1, 2, 3]),
        build!(
            ipv6(IP6_A, IP6_B)
                .tcp(1, 2, 3, 4)
                .options(&[TcpOptionElement::MaximumSegmentSize(1460)])
                .unwrap(),
            &[],
        ),
        build!(ipv4(IP_A, IP_B).udp(1, 2), &[0; 8]),
        build!(ipv4(IP_A, IP_B).icmpv4_echo_request(1, 2), &[0; 8]),
        build!(ipv6(IP6_A, IP6_B).icmpv6_echo_request(1, 2), &[0; 8]),
        arp_frame(ArpOperation::REQUEST, (MAC_A, IP_A), ([0; 6], IP_B)),
        build!(
            ethernet()
                .single_vlan(VlanId::try_new(7).unwrap())
                .ipv4(IP_A, IP_B, 1)
                .udp(1, 2),
            &[],
        ),
    ];
    let mut random = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..2_000 {
        let len = (random.next() % 128) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| random.next() as u8).collect();
        // Steer some of them into the IP and ARP decoders.
        if bytes.len() > 14 {
            let ether_type: [u8; 2] = match random.next() % 5 {
                0 => [0x08, 0x00],
                1 => [0x86, 0xdd],
                2 => [0x08, 0x06],
                3 => [0x81, 0x00],
                _ => [bytes[12], bytes[13]],
            };
            bytes[12..14].copy_from_slice(&ether_type);
        }
        samples.push(bytes);
    }

    for sample in &samples {
        for link_type in [LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL] {
            for end in 0..=sample.len() {
                summarize(link_type, &sample[..end]);
                summarize(link_type, &sample[14.min(end)..end]);
            }
            for index in 0..sample.len() {
                let mut corrupt = sample.clone();
                corrupt[index] ^= random.next() as u8 | 1;
                summarize(link_type, &corrupt);
            }
        }
    }
}

/// A small deterministic pseudo-random generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
