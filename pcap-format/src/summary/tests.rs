//! Packets printed as tcpdump 4.99.3 prints them (`tcpdump -nn -t -r`,
//! with `TZ=UTC`), for the cases that are easy to get wrong: state kept
//! between packets, truncation, nested frames, address forms, dumps.
//!
//! The expected texts are tcpdump's output for the same bytes.

use super::{Dump, Frame, Options, Printer, TimeFormat, summarize};
use crate::linktype::LINKTYPE_ETHERNET;
use proptest::{
    prelude::Rng as _,
    test_runner::{RngAlgorithm, TestRng},
};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Prints `packets` one after another with `options` and `-t`; returns the
/// text and whether every packet was supported.
fn print_all(packets: &[&str], options: Options) -> (String, Vec<bool>) {
    let mut printer = Printer::new(Options {
        time: TimeFormat::None,
        ..options
    });
    let mut text = String::new();
    let mut supported = Vec::new();
    for (index, packet) in packets.iter().enumerate() {
        let data = hex(packet);
        let printed = printer.print(
            &Frame {
                link_type: LINKTYPE_ETHERNET,
                data: &data,
                orig_len: data.len() as u32,
                unix_ns: 1_700_000_000_000_000_000 + index as u64 * 1_000_123_000,
            },
            None,
        );
        text.push_str(&printed.text);
        supported.push(printed.supported);
    }
    (text, supported)
}

/// Checks the output with each flag set (none, `-e`, `-v`, `-X`, `-A`)
/// against tcpdump's, `expected`, in that order; and that every packet is
/// one we decode.
fn check(packets: &[&str], expected: [&str; 5]) {
    let flag_sets = [
        Options::default(),
        Options {
            link_header: true,
            ..Options::default()
        },
        Options {
            verbose: 1,
            ..Options::default()
        },
        Options {
            dump: Dump::HexAscii { link: false },
            ..Options::default()
        },
        Options {
            dump: Dump::Ascii { link: false },
            ..Options::default()
        },
    ];
    for (options, text) in flag_sets.into_iter().zip(expected) {
        assert_eq!(print_all(packets, options).0, text, "{options:?}");
    }
    assert!(print_all(packets, Options::default()).1.iter().all(|s| *s));
}
/// A handshake and data: relative sequence numbers after the first ACK, SACK blocks relative too, options, the checksums of `-v`, and the dumps of `-X` and `-A` (CR LF inside data).
#[test]
fn tcp_relative() {
    let packets = [
        "aabbccddeeff02000000000108004500003c00014000400626b90a0000010a000002a8ca1f40000003e800000000a00201f666140000020405b40402080a000000010000000001030307",
        "aabbccddeeff02000000000108004500002800014000400626cd0a0000020a0000011f40a8ca00001388000003e9501201f6ba5e0000",
        "aabbccddeeff02000000000108004500003500014000400626c00a0000010a000002a8ca1f40000003e900001389501801f6861d000068656c6c6f0d0a776f726c640a",
        "aabbccddeeff02000000000108004500003400014000400626c10a0000020a0000011f40a8ca00001389000003f6801001f67c5900000101050a000003ed000003f5",
    ];
    check(
        &packets,
        [
            "IP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [S], seq 1000, win 502, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0\nIP 10.0.0.2.8000 > 10.0.0.1.43210: Flags [S.], seq 5000, ack 1001, win 502, length 0\nIP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [P.], seq 1:14, ack 1, win 502, length 13\nIP 10.0.0.2.8000 > 10.0.0.1.43210: Flags [.], ack 14, win 502, options [nop,nop,sack 1 {5:13}], length 0\n",
            "02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 74: 10.0.0.1.43210 > 10.0.0.2.8000: Flags [S], seq 1000, win 502, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 54: 10.0.0.2.8000 > 10.0.0.1.43210: Flags [S.], seq 5000, ack 1001, win 502, length 0\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 67: 10.0.0.1.43210 > 10.0.0.2.8000: Flags [P.], seq 1:14, ack 1, win 502, length 13\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 66: 10.0.0.2.8000 > 10.0.0.1.43210: Flags [.], ack 14, win 502, options [nop,nop,sack 1 {5:13}], length 0\n",
            "IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 60)\n    10.0.0.1.43210 > 10.0.0.2.8000: Flags [S], cksum 0x6614 (correct), seq 1000, win 502, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0\nIP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 40)\n    10.0.0.2.8000 > 10.0.0.1.43210: Flags [S.], cksum 0xba5e (correct), seq 5000, ack 1001, win 502, length 0\nIP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 53)\n    10.0.0.1.43210 > 10.0.0.2.8000: Flags [P.], cksum 0x861d (correct), seq 1:14, ack 1, win 502, length 13\nIP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 52)\n    10.0.0.2.8000 > 10.0.0.1.43210: Flags [.], cksum 0x7c59 (correct), ack 14, win 502, options [nop,nop,sack 1 {5:13}], length 0\n",
            "IP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [S], seq 1000, win 502, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0\n\t0x0000:  4500 003c 0001 4000 4006 26b9 0a00 0001  E..<..@.@.&.....\n\t0x0010:  0a00 0002 a8ca 1f40 0000 03e8 0000 0000  .......@........\n\t0x0020:  a002 01f6 6614 0000 0204 05b4 0402 080a  ....f...........\n\t0x0030:  0000 0001 0000 0000 0103 0307            ............\nIP 10.0.0.2.8000 > 10.0.0.1.43210: Flags [S.], seq 5000, ack 1001, win 502, length 0\n\t0x0000:  4500 0028 0001 4000 4006 26cd 0a00 0002  E..(..@.@.&.....\n\t0x0010:  0a00 0001 1f40 a8ca 0000 1388 0000 03e9  .....@..........\n\t0x0020:  5012 01f6 ba5e 0000                      P....^..\nIP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [P.], seq 1:14, ack 1, win 502, length 13\n\t0x0000:  4500 0035 0001 4000 4006 26c0 0a00 0001  E..5..@.@.&.....\n\t0x0010:  0a00 0002 a8ca 1f40 0000 03e9 0000 1389  .......@........\n\t0x0020:  5018 01f6 861d 0000 6865 6c6c 6f0d 0a77  P.......hello..w\n\t0x0030:  6f72 6c64 0a                             orld.\nIP 10.0.0.2.8000 > 10.0.0.1.43210: Flags [.], ack 14, win 502, options [nop,nop,sack 1 {5:13}], length 0\n\t0x0000:  4500 0034 0001 4000 4006 26c1 0a00 0002  E..4..@.@.&.....\n\t0x0010:  0a00 0001 1f40 a8ca 0000 1389 0000 03f6  .....@..........\n\t0x0020:  8010 01f6 7c59 0000 0101 050a 0000 03ed  ....|Y..........\n\t0x0030:  0000 03f5                                ....\n",
            "IP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [S], seq 1000, win 502, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7], length 0\nE..<..@.@.&.\n...\n......@............f..........\n............\nIP 10.0.0.2.8000 > 10.0.0.1.43210: Flags [S.], seq 5000, ack 1001, win 502, length 0\nE..(..@.@.&.\n...\n....@..........P....^..\nIP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [P.], seq 1:14, ack 1, win 502, length 13\nE..5..@.@.&.\n...\n......@........P.......hello\nworld\n\nIP 10.0.0.2.8000 > 10.0.0.1.43210: Flags [.], ack 14, win 502, options [nop,nop,sack 1 {5:13}], length 0\nE..4..@.@.&.\n...\n....@..............|Y.....\n........\n",
        ],
    );
}

/// A wrong TCP checksum (`-v`), and a segment whose IP length runs past the capture: `truncated-ip`, and options that stop in the middle.
#[test]
fn tcp_bad_checksum_and_truncated_options() {
    let packets = [
        "aabbccddeeff02000000000108004500002800014000400626cd0a0000010a000002000100020000000700000000500201f698e10000",
        "aabbccddeeff02000000000108004500003200014000400626c30a0000010a000002000100020000000700000000700201f66a130000020405b4080a",
    ];
    check(
        &packets,
        [
            "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7, win 502, length 0\nIP truncated-ip - 4 bytes missing! 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7:9, win 502, options [mss 1460,[bad opt]]\n",
            "02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 54: 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7, win 502, length 0\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 60: truncated-ip - 4 bytes missing! 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7:9, win 502, options [mss 1460,[bad opt]]\n",
            "IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 40)\n    10.0.0.1.1 > 10.0.0.2.2: Flags [S], cksum 0x98e1 (incorrect -> 0x99e0), seq 7, win 502, length 0\nIP truncated-ip - 4 bytes missing! (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 50)\n    10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7:9, win 502, options [mss 1460,[bad opt]]\n",
            "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7, win 502, length 0\n\t0x0000:  4500 0028 0001 4000 4006 26cd 0a00 0001  E..(..@.@.&.....\n\t0x0010:  0a00 0002 0001 0002 0000 0007 0000 0000  ................\n\t0x0020:  5002 01f6 98e1 0000                      P.......\nIP truncated-ip - 4 bytes missing! 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7:9, win 502, options [mss 1460,[bad opt]]\n\t0x0000:  4500 0032 0001 4000 4006 26c3 0a00 0001  E..2..@.@.&.....\n\t0x0010:  0a00 0002 0001 0002 0000 0007 0000 0000  ................\n\t0x0020:  7002 01f6 6a13 0000 0204 05b4 080a       p...j.........\n",
            "IP 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7, win 502, length 0\nE..(..@.@.&.\n...\n...............P.......\nIP truncated-ip - 4 bytes missing! 10.0.0.1.1 > 10.0.0.2.2: Flags [S], seq 7:9, win 502, options [mss 1460,[bad opt]]\nE..2..@.@.&.\n...\n...............p...j........\n\n",
        ],
    );
}

/// VXLAN: the inner frame on a line of its own; an 802.1Q-tagged ARP request (`-e` shows the tag) with a non-zero target MAC.
#[test]
fn vxlan_and_vlan() {
    let packets = [
        "aabbccddeeff02000000000108004500005600014000401126940a0000010a000002b05d12b500424bba0800000000006400aabbccddeeff020000000001080045000024000140004001b984c0a80001c0a8000208001616000700017878787878787878",
        "aabbccddeeff02000000000181002064080600010800060400010200000000010a0000010000000000090a000002000000000000000000000000000000000000",
    ];
    check(
        &packets,
        [
            "IP 10.0.0.1.45149 > 10.0.0.2.4789: VXLAN, flags [I] (0x08), vni 100\nIP 192.168.0.1 > 192.168.0.2: ICMP echo request, id 7, seq 1, length 16\nARP, Request who-has 10.0.0.2 (00:00:00:00:00:09) tell 10.0.0.1, length 46\n",
            "02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 100: 10.0.0.1.45149 > 10.0.0.2.4789: VXLAN, flags [I] (0x08), vni 100\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 50: 192.168.0.1 > 192.168.0.2: ICMP echo request, id 7, seq 1, length 16\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype 802.1Q (0x8100), length 64: vlan 100, p 1, ethertype ARP (0x0806), Request who-has 10.0.0.2 (00:00:00:00:00:09) tell 10.0.0.1, length 46\n",
            "IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto UDP (17), length 86)\n    10.0.0.1.45149 > 10.0.0.2.4789: VXLAN, flags [I] (0x08), vni 100\nIP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto ICMP (1), length 36)\n    192.168.0.1 > 192.168.0.2: ICMP echo request, id 7, seq 1, length 16\nARP, Ethernet (len 6), IPv4 (len 4), Request who-has 10.0.0.2 (00:00:00:00:00:09) tell 10.0.0.1, length 46\n",
            "IP 10.0.0.1.45149 > 10.0.0.2.4789: VXLAN, flags [I] (0x08), vni 100\nIP 192.168.0.1 > 192.168.0.2: ICMP echo request, id 7, seq 1, length 16\n\t0x0000:  4500 0056 0001 4000 4011 2694 0a00 0001  E..V..@.@.&.....\n\t0x0010:  0a00 0002 b05d 12b5 0042 4bba 0800 0000  .....]...BK.....\n\t0x0020:  0000 6400 aabb ccdd eeff 0200 0000 0001  ..d.............\n\t0x0030:  0800 4500 0024 0001 4000 4001 b984 c0a8  ..E..$..@.@.....\n\t0x0040:  0001 c0a8 0002 0800 1616 0007 0001 7878  ..............xx\n\t0x0050:  7878 7878 7878                           xxxxxx\nARP, Request who-has 10.0.0.2 (00:00:00:00:00:09) tell 10.0.0.1, length 46\n\t0x0000:  0001 0800 0604 0001 0200 0000 0001 0a00  ................\n\t0x0010:  0001 0000 0000 0009 0a00 0002 0000 0000  ................\n\t0x0020:  0000 0000 0000 0000 0000 0000 0000       ..............\n",
            "IP 10.0.0.1.45149 > 10.0.0.2.4789: VXLAN, flags [I] (0x08), vni 100\nIP 192.168.0.1 > 192.168.0.2: ICMP echo request, id 7, seq 1, length 16\nE..V..@.@.&.\n...\n....]...BK.......d...............E..$..@.@...................xxxxxxxx\nARP, Request who-has 10.0.0.2 (00:00:00:00:00:09) tell 10.0.0.1, length 46\n..............\n........\t\n.....................\n",
        ],
    );
}

/// IPv6 addresses as tcpdump writes them (mapped and compatible IPv4, trailing `::`), a first fragment, a neighbor solicitation with its option (`-v`, with a wrong checksum).
#[test]
fn ipv6_addresses_fragments_and_icmp6() {
    let packets = [
        "aabbccddeeff02000000000186dd60000000000c114000000000000000000000ffff010203040000000000000000000000000102030403e807d0000c274c61626364",
        "aabbccddeeff02000000000186dd6000000000202c40fe80000000000000000000000000000020010db80000000100000000000000001100000112345678cf08270f0018000071717171717171717171717171717171",
        "aabbccddeeff02000000000186dd6000000000203a40fd000000000000000000000000000001fd000000000000000000000000000002870078fa00000000fd0000000000000000000000000000020101020000000001",
    ];
    check(
        &packets,
        [
            "IP6 ::ffff:1.2.3.4.1000 > ::1.2.3.4.2000: UDP, length 4\nIP6 fe80:: > 2001:db8:0:1::: frag (0|24) 53000 > 9999: UDP, length 16\nIP6 fd00::1 > fd00::2: ICMP6, neighbor solicitation, who has fd00::2, length 32\n",
            "02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv6 (0x86dd), length 66: ::ffff:1.2.3.4.1000 > ::1.2.3.4.2000: UDP, length 4\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv6 (0x86dd), length 86: fe80:: > 2001:db8:0:1::: frag (0|24) 53000 > 9999: UDP, length 16\n02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv6 (0x86dd), length 86: fd00::1 > fd00::2: ICMP6, neighbor solicitation, who has fd00::2, length 32\n",
            "IP6 (hlim 64, next-header UDP (17) payload length: 12) ::ffff:1.2.3.4.1000 > ::1.2.3.4.2000: [udp sum ok] UDP, length 4\nIP6 (hlim 64, next-header Fragment (44) payload length: 32) fe80:: > 2001:db8:0:1::: frag (0x12345678:0|24) 53000 > 9999: UDP, length 16\nIP6 (hlim 64, next-header ICMPv6 (58) payload length: 32) fd00::1 > fd00::2: [bad icmp6 cksum 0x78fa -> 0x7e9b!] ICMP6, neighbor solicitation, length 32, who has fd00::2\n\t  source link-address option (1), length 8 (1): 02:00:00:00:00:01\n",
            "IP6 ::ffff:1.2.3.4.1000 > ::1.2.3.4.2000: UDP, length 4\n\t0x0000:  6000 0000 000c 1140 0000 0000 0000 0000  `......@........\n\t0x0010:  0000 ffff 0102 0304 0000 0000 0000 0000  ................\n\t0x0020:  0000 0000 0102 0304 03e8 07d0 000c 274c  ..............'L\n\t0x0030:  6162 6364                                abcd\nIP6 fe80:: > 2001:db8:0:1::: frag (0|24) 53000 > 9999: UDP, length 16\n\t0x0000:  6000 0000 0020 2c40 fe80 0000 0000 0000  `.....,@........\n\t0x0010:  0000 0000 0000 0000 2001 0db8 0000 0001  ................\n\t0x0020:  0000 0000 0000 0000 1100 0001 1234 5678  .............4Vx\n\t0x0030:  cf08 270f 0018 0000 7171 7171 7171 7171  ..'.....qqqqqqqq\n\t0x0040:  7171 7171 7171 7171                      qqqqqqqq\nIP6 fd00::1 > fd00::2: ICMP6, neighbor solicitation, who has fd00::2, length 32\n\t0x0000:  6000 0000 0020 3a40 fd00 0000 0000 0000  `.....:@........\n\t0x0010:  0000 0000 0000 0001 fd00 0000 0000 0000  ................\n\t0x0020:  0000 0000 0000 0002 8700 78fa 0000 0000  ..........x.....\n\t0x0030:  fd00 0000 0000 0000 0000 0000 0000 0002  ................\n\t0x0040:  0101 0200 0000 0001                      ........\n",
            "IP6 ::ffff:1.2.3.4.1000 > ::1.2.3.4.2000: UDP, length 4\n`......@......................................'Labcd\nIP6 fe80:: > 2001:db8:0:1::: frag (0|24) 53000 > 9999: UDP, length 16\n`.... ,@................ ....................4Vx..'.....qqqqqqqqqqqqqqqq\nIP6 fd00::1 > fd00::2: ICMP6, neighbor solicitation, who has fd00::2, length 32\n`.... :@..................................x.............................\n",
        ],
    );
}

/// An ICMP port unreachable with the original datagram (`-v` prints it), and UDP to port 53, which tcpdump decodes as DNS (not ours: said so).
#[test]
fn icmp_unreachable_and_udp_ports() {
    let packets = [
        "aabbccddeeff02000000000108004500003800014000400126c20a0000020a000001030364a3000000004500002000014000401126ca0a0000010a00000215b3829a000c0000",
    ];
    check(
        &packets,
        [
            "IP 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 33434 unreachable, length 36\n",
            "02:00:00:00:00:01 > aa:bb:cc:dd:ee:ff, ethertype IPv4 (0x0800), length 70: 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 33434 unreachable, length 36\n",
            "IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto ICMP (1), length 56)\n    10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 33434 unreachable, length 36\n\tIP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto UDP (17), length 32)\n    10.0.0.1.5555 > 10.0.0.2.33434: UDP, length 4\n",
            "IP 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 33434 unreachable, length 36\n\t0x0000:  4500 0038 0001 4000 4001 26c2 0a00 0002  E..8..@.@.&.....\n\t0x0010:  0a00 0001 0303 64a3 0000 0000 4500 0020  ......d.....E...\n\t0x0020:  0001 4000 4011 26ca 0a00 0001 0a00 0002  ..@.@.&.........\n\t0x0030:  15b3 829a 000c 0000                      ........\n",
            "IP 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 33434 unreachable, length 36\nE..8..@.@.&.\n...\n.....d.....E.. ..@.@.&.\n...\n...........\n",
        ],
    );
    // UDP to port 53: tcpdump decodes DNS, we do not, and say so.
    let dns = [concat!(
        "aabbccddeeff0200000000010800450000280001400040112",
        "6c20a0000010a0000029c40003500144f4e000000000000000000000000"
    )];
    let (text, supported) = print_all(&dns, Options::default());
    assert_eq!(text, "IP 10.0.0.1.40000 > 10.0.0.2.53: UDP, length 12\n");
    assert_eq!(supported, [false]);
}

#[test]
fn summarize_is_one_line_with_absolute_sequence_numbers() {
    let data = hex(concat!(
        "aabbccddeeff020000000001080045000035000140004006",
        "26c00a0000010a000002a8ca1f40000003e9000013895018",
        "01f6861d000068656c6c6f0d0a776f726c640a"
    ));
    assert_eq!(
        summarize(LINKTYPE_ETHERNET, &data),
        "IP 10.0.0.1.43210 > 10.0.0.2.8000: Flags [P.], seq 1001:1014, ack 5001, win 502, length 13"
    );
}

#[test]
fn never_panics_on_any_prefix_of_a_packet() {
    let packets = [
        "aabbccddeeff0200000000010800450000560001400040112694",
        "aabbccddeeff02000000000186dd6000000000203a40fd000000000000000000000000000001fd0000000000000000000000000000028700000000000000fd00000000000000000000000000000201010200000000",
    ];
    for packet in packets {
        let data = hex(packet);
        for end in 0..=data.len() {
            for verbose in 0..3 {
                let options = Options {
                    verbose,
                    link_header: true,
                    dump: Dump::HexAscii { link: true },
                    ..Options::default()
                };
                let mut printer = Printer::new(options);
                let printed = printer.print(
                    &Frame {
                        link_type: LINKTYPE_ETHERNET,
                        data: &data[..end],
                        orig_len: data.len() as u32,
                        unix_ns: 0,
                    },
                    None,
                );
                assert!(printed.text.ends_with('\n'));
            }
        }
    }
}

#[test]
fn invalid_record_lengths_as_tcpdump() {
    let mut printer = Printer::new(Options::default());
    let printed = printer.print(
        &Frame {
            link_type: LINKTYPE_ETHERNET,
            data: &[0; 20],
            orig_len: 10,
            unix_ns: 0,
        },
        None,
    );
    assert_eq!(printed.text, "[Invalid header: len(10) < caplen(20)]\n");
    assert!(!printed.supported);
}

/// Random frames of the types we decode, cut anywhere, through every
/// option: the printer never panics and always ends the packet's text.
#[test]
fn never_panics_on_random_frames() {
    let mut rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    let mut next = move || rng.next_u64();
    let ether_types: [[u8; 2]; 5] = [[8, 0], [0x86, 0xdd], [8, 6], [0x81, 0], [0x88, 0xa8]];
    let option_sets = [
        Options::default(),
        Options {
            verbose: 2,
            link_header: true,
            dump: Dump::Ascii { link: true },
            ..Options::default()
        },
        Options {
            verbose: 1,
            time: TimeFormat::SincePrevious,
            dump: Dump::Hex { link: false },
            ..Options::default()
        },
    ];
    for options in option_sets {
        let mut printer = Printer::new(options);
        for _ in 0..5_000 {
            let len = (next() % 160) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if data.len() >= 20 {
                let kind = ether_types[(next() % 5) as usize];
                data[12..14].copy_from_slice(&kind);
                // Mostly well-formed version and header length.
                data[14] = match kind {
                    [0x86, 0xdd] => 0x60,
                    // IPv4 with options now and then.
                    _ => 0x45 + (next() % 2) as u8 * (next() % 11) as u8,
                };
                if data.len() > 23 && next() % 2 == 0 {
                    data[23] = [1, 6, 17, 58, 0, 44][(next() % 6) as usize];
                }
            }
            let orig_len = data.len() as u32 + (next() % 3) as u32;
            let printed = printer.print(
                &Frame {
                    link_type: LINKTYPE_ETHERNET,
                    data: &data,
                    orig_len,
                    unix_ns: next() % 4_000_000_000_000_000_000,
                },
                None,
            );
            assert!(printed.text.ends_with('\n'));
        }
    }
}
