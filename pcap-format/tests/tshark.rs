//! Files written by the crate, read back by Wireshark's `tshark` and
//! `capinfos`.
//!
//! These tests need both tools on `PATH` (Debian: `apt-get install tshark`)
//! and fail, rather than skip, without them.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::Command;

use etherparse::PacketBuilder;
use pcap_format::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use pcap_format::pcap::PcapWriter;
use pcap_format::pcapng::{PcapNgWriter, SectionOptions};
use pcap_format::{CaptureWriter, Direction, FormatError, Interface, InterfaceStatistics, Packet};

#[path = "../../pcap-cli/tests/support/wireshark.rs"]
mod wireshark;

use wireshark::{ScratchFile, capinfos_value, tshark_block_fields, tshark_rows};

/// 2023-11-14T22:13:20Z, in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;

#[test]
fn pcapng_packets_read_back_in_tshark() {
    let file = pcapng_capture("packets.pcapng");

    let rows = tshark_rows(
        &file.0,
        &fields(
            "frame.interface_name frame.len frame.cap_len frame.time_epoch frame.comment \
             frame.packet_flags_direction ip.src",
        ),
    );
    assert_eq!(
        rows,
        [
            "eth0|54|54|1700000000.123456789|hello, world|1|10.0.0.1",
            "tun0|40|40|1700000001.000000001||2|10.0.0.1",
            "tun0|1500|1|1700000002.000000000|odd||",
            "eth1|3|3|1700000003.000000999||1|",
            "eth1|61|61|1700000004.000000000|sixty-one|2|",
        ]
    );
}

#[test]
fn pcapng_section_and_interfaces_read_back_in_capinfos() {
    let file = pcapng_capture("interfaces.pcapng");

    let info = capinfos(&file.0);
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "5");
    assert_eq!(capinfos_value(&file.0, "File type"), "pcapng");
    assert_eq!(
        capinfos_value(&file.0, "File timestamp precision"),
        "nanoseconds (9)"
    );
    assert_eq!(
        capinfos_value(&file.0, "Capture application"),
        "pcap-format test"
    );
    assert_eq!(capinfos_value(&file.0, "Capture oper-sys"), "Linux");
    assert_eq!(capinfos_value(&file.0, "Capture hardware"), "x86_64");
    assert_eq!(capinfos_value(&file.0, "Number of interfaces in file"), "3");
    let interface_lines = |prefix: &str| -> Vec<String> {
        info.lines()
            .filter_map(|line| line.trim().strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(interface_lines("Name = "), ["eth0", "tun0", "eth1"]);
    assert_eq!(interface_lines("Description = "), ["web/0"]);
    assert_eq!(
        interface_lines("Capture length = "),
        ["65535", "0", "262144"]
    );
    assert_eq!(
        interface_lines("Number of stat entries = "),
        ["1", "1", "0"]
    );
    assert_eq!(interface_lines("Number of packets = "), ["1", "2", "2"]);
}

/// tshark's dissector for the pcapng format itself shows every block, and
/// the statistics options no other tool prints.
#[test]
fn pcapng_blocks_read_back_in_tshark_file_dissector() {
    let file = pcapng_capture("blocks.pcapng");

    let fields = tshark_block_fields(
        &file.0,
        &fields(
            "pcapng.block.type pcapng.block.length pcapng.block.length_trailer \
             pcapng.options.option.data.interface.received \
             pcapng.options.option.data.interface.dropped \
             pcapng.options.option.data.interface.accepted_by_filter \
             pcapng.options.option.data.interface.dropped_by_os \
             pcapng.options.option.data.interface.delivered_to_user \
             pcapng.options.option.data.comment",
        ),
    );
    let [types, lengths, trailers, statistics @ .., comments] = &fields[..] else {
        panic!("unexpected fields {fields:?}");
    };
    assert_eq!(
        types,
        "0x0a0d0d0a,0x00000001,0x00000001,0x00000006,0x00000006,0x00000006,0x00000001,\
         0x00000006,0x00000006,0x00000005,0x00000005"
    );
    assert_eq!(lengths, trailers);
    assert!(
        lengths
            .split(',')
            .all(|length| length.parse::<u32>().unwrap() % 4 == 0),
        "{lengths}"
    );
    assert_eq!(statistics, ["10", "1", "9", "2,0", "3"]);
    assert_eq!(comments, "hello, world,odd,sixty-one,final");
}

#[test]
fn pcap_file_reads_back_in_tshark() {
    let file = ScratchFile::new("single.pcap");
    let syn = tcp_syn_frame();
    let odd_61: Vec<u8> = (0..61).collect();

    let mut pcap = PcapWriter::deferred(BufWriter::new(File::create(&file.0).unwrap()));
    let w: &mut dyn CaptureWriter = &mut pcap;
    let ethernet = |name: &str| Interface {
        name: name.into(),
        description: None,
        link_type: LINKTYPE_ETHERNET,
        snaplen: 60,
    };
    assert_eq!(w.add_interface(&ethernet("eth0")).unwrap(), 0);
    assert_eq!(w.add_interface(&ethernet("eth1")).unwrap(), 0);
    let raw = Interface {
        link_type: LINKTYPE_RAW,
        ..ethernet("tun0")
    };
    assert!(matches!(
        w.add_interface(&raw),
        Err(FormatError::MixedLinkTypes { .. })
    ));

    // Direction and comment have no place in pcap and are dropped.
    w.write_packet(&with_extras(Packet {
        original_len: 54,
        ..packet(0, T0 + 123_456_789, &syn)
    }))
    .unwrap();
    w.write_packet(&with_extras(packet(0, T0 + 1_000_000_001, &[0xff])))
        .unwrap();
    w.write_packet(&with_extras(packet(0, T0 + 2_000_000_000, &[1, 2, 3])))
        .unwrap();
    w.write_packet(&with_extras(Packet {
        original_len: 1514,
        ..packet(0, T0 + 3_000_000_000, &odd_61)
    }))
    .unwrap();
    w.write_interface_statistics(&InterfaceStatistics::default())
        .unwrap();
    w.flush().unwrap();
    drop(pcap);

    let rows = tshark_rows(
        &file.0,
        &fields(
            "frame.len frame.cap_len frame.time_epoch frame.comment frame.packet_flags_direction \
             ip.src",
        ),
    );
    assert_eq!(
        rows,
        [
            "54|54|1700000000.123456789|||10.0.0.1",
            "1|1|1700000001.000000001|||",
            "3|3|1700000002.000000000|||",
            "1514|60|1700000003.000000000|||",
        ]
    );

    let info = capinfos(&file.0);
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "4");
    assert!(
        capinfos_value(&file.0, "File type").contains("pcap"),
        "{info}"
    );
    assert_eq!(
        capinfos_value(&file.0, "File timestamp precision"),
        "nanoseconds (9)"
    );
    assert_eq!(
        capinfos_value(&file.0, "Packet size limit"),
        "file hdr: 60 bytes"
    );
}

/// Writes the pcapng capture the tests read back: Ethernet and raw IP
/// interfaces (one added between packets), packets with and without
/// direction and comment, odd lengths (1, 3, 61 bytes), and statistics.
fn pcapng_capture(name: &str) -> ScratchFile {
    let file = ScratchFile::new(name);
    let path = &file.0;
    let syn = tcp_syn_frame();
    let udp = udp_datagram();
    let odd_61: Vec<u8> = (0..61).collect();

    let section = SectionOptions {
        hardware: Some("x86_64"),
        os: Some("Linux"),
        user_application: Some("pcap-format test"),
    };
    let mut w = PcapNgWriter::new(BufWriter::new(File::create(path).unwrap()), &section).unwrap();
    let interface = |name: &str, link_type, snaplen| Interface {
        name: name.into(),
        description: None,
        link_type,
        snaplen,
    };
    let eth0 = w
        .add_interface(&Interface {
            description: Some("web/0".into()),
            ..interface("eth0", LINKTYPE_ETHERNET, 65_535)
        })
        .unwrap();
    let tun0 = w
        .add_interface(&interface("tun0", LINKTYPE_RAW, 0))
        .unwrap();
    w.write_packet(&Packet {
        direction: Some(Direction::Inbound),
        comment: Some("hello, world"),
        ..packet(eth0, T0 + 123_456_789, &syn)
    })
    .unwrap();
    w.write_packet(&Packet {
        direction: Some(Direction::Outbound),
        ..packet(tun0, T0 + 1_000_000_001, &udp)
    })
    .unwrap();
    w.write_packet(&Packet {
        original_len: 1500,
        comment: Some("odd"),
        ..packet(tun0, T0 + 2_000_000_000, &[0x45])
    })
    .unwrap();
    let eth1 = w
        .add_interface(&interface("eth1", LINKTYPE_ETHERNET, 262_144))
        .unwrap();
    w.write_packet(&Packet {
        direction: Some(Direction::Inbound),
        ..packet(eth1, T0 + 3_000_000_999, &[1, 2, 3])
    })
    .unwrap();
    w.write_packet(&Packet {
        direction: Some(Direction::Outbound),
        comment: Some("sixty-one"),
        ..packet(eth1, T0 + 4_000_000_000, &odd_61)
    })
    .unwrap();
    w.write_interface_statistics(&InterfaceStatistics {
        interface_id: eth0,
        timestamp_ns: T0 + 5_000_000_000,
        start_time_ns: Some(T0),
        end_time_ns: Some(T0 + 5_000_000_000),
        if_received: Some(10),
        if_dropped: Some(1),
        filter_accepted: Some(9),
        os_dropped: Some(2),
        user_delivered: Some(3),
        comment: Some("final"),
    })
    .unwrap();
    w.write_interface_statistics(&InterfaceStatistics {
        interface_id: tun0,
        timestamp_ns: T0 + 5_000_000_000,
        os_dropped: Some(0),
        ..InterfaceStatistics::default()
    })
    .unwrap();
    w.into_inner().unwrap().into_inner().unwrap();
    file
}

/// A packet without direction and comment, whose original length is its
/// captured length.
fn packet(interface_id: u32, timestamp_ns: u64, data: &[u8]) -> Packet<'_> {
    Packet {
        interface_id,
        timestamp_ns,
        original_len: data.len() as u32,
        data,
        direction: None,
        comment: None,
    }
}

/// `packet` with the extras only pcapng keeps: a direction and a comment.
fn with_extras(packet: Packet<'_>) -> Packet<'_> {
    Packet {
        direction: Some(Direction::Outbound),
        comment: Some("not kept"),
        ..packet
    }
}

/// An Ethernet frame with a TCP SYN from 10.0.0.1 (54 bytes).
fn tcp_syn_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(43210, 80, 123, 64240)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

/// A raw IPv4 UDP datagram from 10.0.0.1 (40 bytes).
fn udp_datagram() -> Vec<u8> {
    let mut datagram = Vec::new();
    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5000, 6000)
        .write(&mut datagram, &[0; 12])
        .unwrap();
    datagram
}

/// `capinfos -M` output: exact counts, one `name: value` per line.
fn capinfos(file: &Path) -> String {
    let output = Command::new("capinfos")
        .arg("-M")
        .arg(file)
        .output()
        .expect("capinfos runs (apt-get install tshark)");
    assert!(
        output.status.success(),
        "capinfos: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The space-separated `list` of tshark fields.
fn fields(list: &str) -> Vec<&str> {
    list.split_whitespace().collect()
}
