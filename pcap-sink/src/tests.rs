//! Captures written by the sink, read back by tshark and capinfos.

use etherparse::PacketBuilder;
use pcap_format::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};
use pcap_proto::packets::Packet as WirePacket;
use pcap_proto::v1::{self as proto, OriginDescription};

use super::*;

#[path = "../../pcap-cli/tests/support/wireshark.rs"]
pub(crate) mod wireshark;

use wireshark::{ScratchFile, capinfos_value, tshark_block_fields, tshark_rows};

/// 2023-11-14T22:13:20Z, in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;

fn origins() -> Origins {
    let mut origins = Origins::default();
    for (id, address) in [(0, "10.0.0.2:9494"), (1, "10.0.1.2:9494")] {
        origins.add(OriginDescription {
            id,
            name: format!("vm-{id}"),
            address: address.to_owned(),
        });
    }
    origins
}

fn interface(
    origin: u32,
    id: u32,
    name: &str,
    link_type: u16,
    snaplen: u32,
) -> InterfaceDescription {
    InterfaceDescription {
        origin,
        id,
        name: name.to_owned(),
        link_type: link_type.into(),
        snaplen,
    }
}

/// A UDP datagram from 10.0.0.`from`, as an Ethernet frame or raw IP.
fn udp(from: u8, link_type: u16) -> Vec<u8> {
    let ip = if link_type == LINKTYPE_ETHERNET {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(
            [10, 0, 0, from],
            [10, 0, 0, 9],
            64,
        )
    } else {
        PacketBuilder::ipv4([10, 0, 0, from], [10, 0, 0, 9], 64)
    };
    let builder = ip.udp(5000, 53);
    let payload = [0xAB; 10];
    let mut bytes = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut bytes, &payload).unwrap();
    bytes
}

/// Describes interface 0 of `origin`: Ethernet, named `name`, 256 KiB
/// snap length.
fn add_ethernet<W: Write>(sink: &mut Sink<W>, origins: &Origins, origin: u32, name: &str) {
    sink.add_interface(
        &interface(origin, 0, name, LINKTYPE_ETHERNET, 262_144),
        origins,
    )
    .unwrap();
}

/// The file a pcapng sink wrote, as `name` in a scratch directory.
fn scratch_file(sink: Sink<Vec<u8>>, name: &str) -> ScratchFile {
    let file = ScratchFile::new(name);
    std::fs::write(&file.0, sink.into_inner().unwrap()).unwrap();
    file
}

/// What a lines sink wrote.
fn text(sink: Sink<Vec<u8>>) -> String {
    String::from_utf8(sink.into_inner().unwrap()).unwrap()
}

fn write_packets<W: Write>(sink: &mut Sink<W>, packets: &[WirePacket]) -> io::Result<()> {
    for batch in Packets::runs(packets) {
        sink.write_packets(&batch)?;
    }
    Ok(())
}

fn packet(
    origin: u32,
    interface: u32,
    offset_ns: u64,
    direction: proto::Direction,
    data: Vec<u8>,
) -> WirePacket {
    WirePacket {
        timestamp_ns: T0 + offset_ns,
        original_length: data.len() as u32,
        direction: direction.into(),
        origin,
        interface,
        data,
        comment: None,
    }
}

/// [`packet`] of [`udp`] from 10.0.0.`from`, in an Ethernet frame.
fn ethernet_udp(
    origin: u32,
    interface: u32,
    offset_ns: u64,
    direction: proto::Direction,
    from: u8,
) -> WirePacket {
    packet(
        origin,
        interface,
        offset_ns,
        direction,
        udp(from, LINKTYPE_ETHERNET),
    )
}

fn statistics(origin: u32, interface: u32, base: u64) -> Statistics {
    Statistics {
        origin,
        interface,
        seen: base + 100,
        matched: base + 50,
        sent: base + 40,
        dropped_kernel_ring: 3,
        dropped_kernel_copy: 2,
        dropped_agent_queue: 5,
        out_of_order: 1,
        after_limit: 0,
        start_ns: T0,
        end_ns: T0 + 5_000_000_000,
    }
}

/// Two origins; vm-1 has an Ethernet and a raw IP interface, and sends no
/// statistics for the second.
fn write_two_origins<W: Write>(sink: &mut Sink<W>) {
    let origins = origins();
    add_ethernet(sink, &origins, 0, "eth0");
    add_ethernet(sink, &origins, 1, "eth0");
    sink.add_interface(&interface(1, 1, "tun0", LINKTYPE_RAW, 64), &origins)
        .unwrap();
    write_packets(
        sink,
        &[
            ethernet_udp(0, 0, 1, proto::Direction::Inbound, 1),
            packet(1, 1, 2, proto::Direction::Outbound, udp(2, LINKTYPE_RAW)),
            ethernet_udp(1, 0, 3, proto::Direction::Unspecified, 3),
        ],
    )
    .unwrap();
    sink.end_of_message().unwrap();
    write_packets(
        sink,
        &[ethernet_udp(0, 0, 4, proto::Direction::Outbound, 4)],
    )
    .unwrap();
    sink.add_statistics(statistics(0, 0, 1000));
    sink.add_statistics(statistics(1, 0, 2000));
    sink.finish(T0 + 6_000_000_000).unwrap();
}

fn pcapng_file() -> ScratchFile {
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap test").unwrap();
    write_two_origins(&mut sink);
    assert_eq!(sink.written(), 4);
    scratch_file(sink, "sink.pcapng")
}

#[test]
fn packets_carry_their_origin_interface_and_direction() {
    let file = pcapng_file();
    let fields = "frame.interface_name frame.interface_description \
                  frame.packet_flags_direction frame.time_epoch ip.src";
    let rows = tshark_rows(&file.0, &fields.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        rows,
        [
            "vm-0/eth0|eth0 on vm-0 (10.0.0.2:9494)|1|1700000000.000000001|10.0.0.1",
            "vm-1/tun0|tun0 on vm-1 (10.0.1.2:9494)|2|1700000000.000000002|10.0.0.2",
            "vm-1/eth0|eth0 on vm-1 (10.0.1.2:9494)||1700000000.000000003|10.0.0.3",
            "vm-0/eth0|eth0 on vm-0 (10.0.0.2:9494)|2|1700000000.000000004|10.0.0.4",
        ]
    );
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "4");
    assert_eq!(capinfos_value(&file.0, "Number of interfaces in file"), "3");
}

#[test]
fn every_interface_ends_with_its_statistics() {
    let file = pcapng_file();
    let fields = tshark_block_fields(
        &file.0,
        &[
            "pcapng.block.type",
            "pcapng.options.option.data.interface.received",
            "pcapng.options.option.data.interface.dropped",
            "pcapng.options.option.data.interface.accepted_by_filter",
            "pcapng.options.option.data.interface.dropped_by_os",
            "pcapng.options.option.data.interface.delivered_to_user",
            "pcapng.options.option.data.comment",
        ],
    );
    let [
        types,
        received,
        dropped,
        accepted,
        os_dropped,
        delivered,
        comments,
    ] = &fields[..]
    else {
        panic!("unexpected fields {fields:?}");
    };
    // SHB, 3 IDBs, 4 EPBs, 3 ISBs.
    assert_eq!(
        types,
        "0x0a0d0d0a,0x00000001,0x00000001,0x00000001,0x00000006,0x00000006,0x00000006,\
         0x00000006,0x00000005,0x00000005,0x00000005"
    );
    // vm-1/tun0 sent no statistics: only what was written is known.
    assert_eq!(received, "1100,2100");
    assert_eq!(dropped, "5,5");
    assert_eq!(accepted, "1050,2050");
    assert_eq!(os_dropped, "5,5");
    assert_eq!(delivered, "2,1,1");
    assert_eq!(
        comments.split(",vm-").collect::<Vec<_>>(),
        [
            "vm-0/eth0: seen 1100, matched 1050, sent by the agent 1040, written 2; \
             dropped: kernel ring 3, kernel copy 2, agent queue 5; \
             not sent after the limit 0; out of order 1",
            "1/eth0: seen 2100, matched 2050, sent by the agent 2040, written 1; \
             dropped: kernel ring 3, kernel copy 2, agent queue 5; \
             not sent after the limit 0; out of order 1",
            "1/tun0: written 1; no statistics arrived, so drops are unknown \
             (the origin went away or the capture was cut short)",
        ]
    );
}

/// Found by the `pcapng_sink` fuzz target: drop counts whose sum does not
/// fit in 64 bits made `finish` panic (debug) or wrap (release).
#[test]
fn kernel_drops_too_large_to_add_saturate() {
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap test").unwrap();
    sink.add_interface(
        &interface(0, 0, "eth0", LINKTYPE_ETHERNET, 65_535),
        &origins(),
    )
    .unwrap();
    sink.add_statistics(Statistics {
        dropped_kernel_ring: u64::MAX,
        dropped_kernel_copy: 2,
        ..statistics(0, 0, 0)
    });
    sink.finish(T0).unwrap();
    let file = scratch_file(sink, "drops.pcapng");
    let fields = tshark_block_fields(&file.0, &["pcapng.options.option.data.interface.dropped"]);
    assert_eq!(fields, [u64::MAX.to_string()]);
}

#[test]
fn lines_name_origin_interface_time_and_direction() {
    let mut sink = Sink::lines(Vec::new());
    write_two_origins(&mut sink);
    let text = text(sink);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "22:13:20.000000 vm-0/eth0 In  IP 10.0.0.1.5000 > 10.0.0.9.53: UDP, length 10",
            "22:13:20.000000 vm-1/tun0 Out IP 10.0.0.2.5000 > 10.0.0.9.53: UDP, length 10",
            "22:13:20.000000 vm-1/eth0 ?   IP 10.0.0.3.5000 > 10.0.0.9.53: UDP, length 10",
            "22:13:20.000000 vm-0/eth0 Out IP 10.0.0.4.5000 > 10.0.0.9.53: UDP, length 10",
        ]
    );
}

#[test]
fn packets_of_undescribed_interfaces_are_counted_not_written() {
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap test").unwrap();
    write_packets(
        &mut sink,
        &[packet(0, 7, 0, proto::Direction::Inbound, vec![1, 2, 3])],
    )
    .unwrap();
    assert_eq!((sink.written(), sink.skipped()), (0, 1));
}

#[test]
fn a_batch_tells_what_it_held_written_or_not() {
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap test").unwrap();
    add_ethernet(&mut sink, &origins(), 0, "eth0");
    let batch = Packets::from_packets(
        0,
        &[
            ethernet_udp(0, 0, 1, proto::Direction::Inbound, 1),
            packet(0, 7, 2, proto::Direction::Inbound, vec![1, 2, 3]),
        ],
    );
    let ethernet_len = batch.packets().unwrap()[0].data.len() as u64;
    assert_eq!(
        sink.write_packets(&batch).unwrap(),
        Received {
            packets: 2,
            bytes: ethernet_len + 3
        }
    );
    assert_eq!((sink.written(), sink.skipped()), (1, 1));
}

#[test]
fn interfaces_are_described_once_and_listed_per_origin() {
    let origins = origins();
    let mut sink = Sink::lines(Vec::new());
    for description in [
        interface(1, 0, "eth0", LINKTYPE_ETHERNET, 0),
        interface(1, 1, "eth1", LINKTYPE_ETHERNET, 0),
        interface(1, 0, "eth0", LINKTYPE_ETHERNET, 0),
        interface(0, 0, "lo", LINKTYPE_ETHERNET, 0),
    ] {
        sink.add_interface(&description, &origins).unwrap();
    }
    assert_eq!(sink.interface_names(1), ["eth0", "eth1"]);
    assert_eq!(sink.interface_names(0), ["lo"]);
    assert!(sink.interface_names(5).is_empty());
}

#[test]
fn an_origin_never_announced_gets_a_numbered_name() {
    let mut sink = Sink::lines(Vec::new());
    sink.add_interface(
        &interface(4, 0, "eth0", LINKTYPE_ETHERNET, 0),
        &Origins::default(),
    )
    .unwrap();
    write_packets(
        &mut sink,
        &[packet(4, 0, 0, proto::Direction::Inbound, vec![1])],
    )
    .unwrap();
    let text = text(sink);
    assert!(
        text.starts_with("22:13:20.000000 origin 4/eth0 In  "),
        "{text}"
    );
}

#[test]
fn lines_take_tcpdump_printing_flags() {
    let options = summary::Options {
        link_header: true,
        time: summary::TimeFormat::from_count(2),
        ..summary::Options::default()
    };
    let mut sink = Sink::lines_with(Vec::new(), options);
    write_two_origins(&mut sink);
    let text = text(sink);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("1700000000.000000 vm-0/eth0 In  ")
            && first.contains("ethertype IPv4 (0x0800), length"),
        "{first}"
    );
}

#[test]
fn comments_and_name_records_reach_the_file() {
    let origins = origins();
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap test").unwrap();
    add_ethernet(&mut sink, &origins, 0, "silk-vtep");
    sink.write_names(&NameRecords {
        origin: 0,
        records: vec![
            proto::NameRecord {
                address: vec![10, 0, 0, 1],
                names: vec!["app-a".to_owned()],
            },
            // Not IPv4: not written.
            proto::NameRecord {
                address: vec![0xfe; 16],
                names: vec!["v6".to_owned()],
            },
        ],
    })
    .unwrap();
    let mut commented = ethernet_udp(0, 0, 1, proto::Direction::Inbound, 1);
    commented.comment = Some("c2c: tag 0x0001 src app app-a".to_owned());
    let plain = ethernet_udp(0, 0, 2, proto::Direction::Inbound, 2);
    write_packets(&mut sink, &[commented, plain]).unwrap();
    sink.finish(T0 + 3).unwrap();
    let file = scratch_file(sink, "names.pcapng");

    let out = std::process::Command::new("tshark")
        .args([
            "-N",
            "n",
            "-T",
            "fields",
            "-e",
            "ip.src_host",
            "-e",
            "frame.comment",
            "-r",
        ])
        .arg(&file.0)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "app-a\tc2c: tag 0x0001 src app app-a\n10.0.0.2\t\n"
    );
}

/// An origin announced mid-stream (`pcap app --follow`): its interface
/// block comes after packets of others, and Wireshark reads both.
#[test]
fn an_interface_described_after_packets_is_read_back() {
    let mut origins = origins();
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap test").unwrap();
    add_ethernet(&mut sink, &origins, 0, "eth0");
    let first = ethernet_udp(0, 0, 1, proto::Direction::Inbound, 1);
    write_packets(&mut sink, &[first]).unwrap();
    origins.add(OriginDescription {
        id: 2,
        name: "my-app/2#1".to_owned(),
        address: "10.0.0.101:9494".to_owned(),
    });
    add_ethernet(&mut sink, &origins, 2, "s-010255077005");
    let later = ethernet_udp(2, 0, 2, proto::Direction::Outbound, 5);
    write_packets(&mut sink, &[later]).unwrap();
    sink.finish(T0 + 3).unwrap();
    let file = scratch_file(sink, "mid-stream.pcapng");
    let rows = tshark_rows(&file.0, &["frame.interface_name", "ip.src"]);
    assert_eq!(
        rows,
        ["vm-0/eth0|10.0.0.1", "my-app/2#1/s-010255077005|10.0.0.5"]
    );
    assert_eq!(capinfos_value(&file.0, "Number of interfaces in file"), "2");
}
