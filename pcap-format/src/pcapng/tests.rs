//! Block layouts checked byte for byte.

use super::*;
use crate::Direction;
use crate::linktype::{LINKTYPE_ETHERNET, LINKTYPE_RAW};

fn writer() -> PcapNgWriter<Vec<u8>> {
    PcapNgWriter::new(Vec::new(), &SectionOptions::default()).unwrap()
}

/// Writer with one Ethernet interface and no bytes written so far.
fn writer_with_interface(snaplen: u32) -> PcapNgWriter<Vec<u8>> {
    let mut w = writer();
    w.add_interface(&Interface {
        name: "eth0".into(),
        description: None,
        link_type: LINKTYPE_ETHERNET,
        snaplen,
    })
    .unwrap();
    w.get_mut().unwrap().clear();
    w
}

fn packet(data: &[u8]) -> Packet<'_> {
    Packet {
        interface_id: 0,
        timestamp_ns: 0x0000_0001_0000_0002,
        original_len: 100,
        data,
        direction: None,
        comment: None,
    }
}

#[test]
fn section_header_block() {
    let section = SectionOptions {
        hardware: None,
        os: Some("Linux"),
        user_application: Some("pcap 0.1.0"),
    };
    let bytes = PcapNgWriter::new(Vec::new(), &section)
        .unwrap()
        .into_inner()
        .unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x0A, 0x0D, 0x0D, 0x0A,         // block type
        60, 0, 0, 0,                    // total length
        0x4D, 0x3C, 0x2B, 0x1A,         // byte-order magic
        1, 0, 0, 0,                     // version 1.0
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // section length -1
        3, 0, 5, 0, b'L', b'i', b'n', b'u', b'x', 0, 0, 0, // shb_os
        4, 0, 10, 0, b'p', b'c', b'a', b'p', b' ', b'0', b'.', b'1', b'.', b'0', 0, 0, // shb_userappl
        0, 0, 0, 0,                     // opt_endofopt
        60, 0, 0, 0,                    // total length
    ];
    assert_eq!(bytes, expected);
}

#[test]
fn section_header_block_without_options() {
    let bytes = writer().into_inner().unwrap();
    assert_eq!(bytes.len(), 28);
    assert_eq!(bytes[4..8], [28, 0, 0, 0]);
    assert_eq!(bytes[24..28], [28, 0, 0, 0]);
}

#[test]
fn interface_description_block() {
    let mut w = writer();
    w.get_mut().unwrap().clear();
    let first = w
        .add_interface(&Interface {
            name: "eth0".into(),
            description: Some("web".into()),
            link_type: LINKTYPE_ETHERNET,
            snaplen: 65_535,
        })
        .unwrap();
    let second = w
        .add_interface(&Interface {
            name: "tun0".into(),
            description: None,
            link_type: LINKTYPE_RAW,
            snaplen: 0,
        })
        .unwrap();
    assert_eq!((first, second), (0, 1));
    let bytes = w.into_inner().unwrap();
    #[rustfmt::skip]
    let expected_first: &[u8] = &[
        1, 0, 0, 0,                     // block type
        48, 0, 0, 0,                    // total length
        1, 0, 0, 0,                     // link type, reserved
        0xFF, 0xFF, 0, 0,               // snaplen
        2, 0, 4, 0, b'e', b't', b'h', b'0', // if_name
        3, 0, 3, 0, b'w', b'e', b'b', 0, // if_description
        9, 0, 1, 0, 9, 0, 0, 0,         // if_tsresol: nanoseconds
        0, 0, 0, 0,                     // opt_endofopt
        48, 0, 0, 0,                    // total length
    ];
    assert_eq!(&bytes[..48], expected_first);
    let second = &bytes[48..];
    assert_eq!(second.len(), 40);
    assert_eq!(
        second[8..16],
        [101, 0, 0, 0, 0, 0, 0, 0],
        "raw IP, snaplen 0"
    );
}

#[test]
fn enhanced_packet_block_without_options() {
    let mut w = writer_with_interface(0);
    w.write_packet(&packet(&[0xAA, 0xBB, 0xCC])).unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        6, 0, 0, 0,                     // block type
        36, 0, 0, 0,                    // total length
        0, 0, 0, 0,                     // interface id
        1, 0, 0, 0,                     // timestamp, high word
        2, 0, 0, 0,                     // timestamp, low word
        3, 0, 0, 0,                     // captured length
        100, 0, 0, 0,                   // original length
        0xAA, 0xBB, 0xCC, 0,            // data, padded
        36, 0, 0, 0,                    // total length
    ];
    assert_eq!(w.into_inner().unwrap(), expected);
}

#[test]
fn enhanced_packet_block_with_direction_and_comment() {
    let mut w = writer_with_interface(0);
    w.write_packet(&Packet {
        direction: Some(Direction::Outbound),
        comment: Some("hello"),
        ..packet(&[0xAA])
    })
    .unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        6, 0, 0, 0,
        60, 0, 0, 0,                    // total length
        0, 0, 0, 0,
        1, 0, 0, 0,
        2, 0, 0, 0,
        1, 0, 0, 0,                     // captured length
        100, 0, 0, 0,
        0xAA, 0, 0, 0,                  // data, padded
        2, 0, 4, 0, 2, 0, 0, 0,         // epb_flags: outbound
        1, 0, 5, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0, // opt_comment
        0, 0, 0, 0,                     // opt_endofopt
        60, 0, 0, 0,                    // total length
    ];
    assert_eq!(w.into_inner().unwrap(), expected);
}

#[test]
fn enhanced_packet_block_direction_flags() {
    for (direction, flags) in [(Direction::Inbound, 1u8), (Direction::Outbound, 2)] {
        let mut w = writer_with_interface(0);
        w.write_packet(&Packet {
            direction: Some(direction),
            ..packet(&[1, 2, 3, 4])
        })
        .unwrap();
        let bytes = w.into_inner().unwrap();
        assert_eq!(bytes.len(), 28 + 4 + 8 + 4 + 4);
        assert_eq!(bytes[32..40], [2, 0, 4, 0, flags, 0, 0, 0]);
        assert_eq!(bytes[40..44], [0, 0, 0, 0]);
    }
}

#[test]
fn enhanced_packet_block_cuts_data_to_snaplen() {
    let mut w = writer_with_interface(2);
    w.write_packet(&Packet {
        original_len: 0, // raised to the captured length
        ..packet(&[1, 2, 3, 4, 5])
    })
    .unwrap();
    let bytes = w.into_inner().unwrap();
    assert_eq!(bytes.len(), 28 + 4 + 4);
    assert_eq!(bytes[20..28], [2, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(bytes[28..32], [1, 2, 0, 0]);
}

/// `packet` is refused as invalid input, and nothing of it is written.
fn assert_refused_before_writing(packet: &Packet<'_>) {
    let mut w = writer_with_interface(0);
    let error = w.write_packet(packet).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(w.into_inner().unwrap().is_empty());
}

#[test]
fn packet_of_unknown_interface_is_refused_before_writing() {
    assert_refused_before_writing(&Packet {
        interface_id: 1,
        ..packet(&[1])
    });
}

#[test]
fn oversized_comment_is_refused_before_writing() {
    let comment = "x".repeat(70_000);
    assert_refused_before_writing(&Packet {
        comment: Some(&comment),
        ..packet(&[1])
    });
}

#[test]
fn block_lengths_are_multiples_of_four_for_every_data_and_comment_length() {
    for data_len in 0..9 {
        for comment in [
            None,
            Some(""),
            Some("a"),
            Some("ab"),
            Some("abc"),
            Some("abcd"),
        ] {
            let data = vec![0xEE; data_len];
            let mut w = writer_with_interface(0);
            w.write_packet(&Packet {
                comment,
                direction: Some(Direction::Inbound),
                ..packet(&data)
            })
            .unwrap();
            let bytes = w.into_inner().unwrap();
            let total = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            assert_eq!(total, bytes.len(), "data {data_len}, comment {comment:?}");
            assert_eq!(total % 4, 0);
            assert_eq!(bytes[total - 4..], bytes[4..8]);
            assert_eq!(bytes[total - 8..total - 4], [0, 0, 0, 0], "opt_endofopt");
        }
    }
}

#[test]
fn interface_statistics_block() {
    let mut w = writer_with_interface(0);
    w.write_interface_statistics(&InterfaceStatistics {
        interface_id: 0,
        timestamp_ns: 0x0000_0003_0000_0004,
        start_time_ns: Some(0x0000_0001_0000_0002),
        if_received: Some(10),
        os_dropped: Some(0x0102_0304_0506_0708),
        comment: Some("end"),
        ..InterfaceStatistics::default()
    })
    .unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        5, 0, 0, 0,                     // block type
        72, 0, 0, 0,                    // total length
        0, 0, 0, 0,                     // interface id
        3, 0, 0, 0, 4, 0, 0, 0,         // timestamp, high then low word
        2, 0, 8, 0, 1, 0, 0, 0, 2, 0, 0, 0, // isb_starttime
        4, 0, 8, 0, 10, 0, 0, 0, 0, 0, 0, 0, // isb_ifrecv
        7, 0, 8, 0, 8, 7, 6, 5, 4, 3, 2, 1, // isb_osdrop
        1, 0, 3, 0, b'e', b'n', b'd', 0, // opt_comment
        0, 0, 0, 0,                     // opt_endofopt
        72, 0, 0, 0,                    // total length
    ];
    assert_eq!(w.into_inner().unwrap(), expected);
}

#[test]
fn interface_statistics_of_unknown_interface_is_refused() {
    let mut w = writer();
    let error = w
        .write_interface_statistics(&InterfaceStatistics::default())
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn usable_as_capture_writer_object() {
    let mut w: Box<dyn CaptureWriter> = Box::new(writer());
    let id = w
        .add_interface(&Interface {
            name: "eth0".into(),
            description: None,
            link_type: LINKTYPE_ETHERNET,
            snaplen: 0,
        })
        .unwrap();
    w.write_packet(&Packet {
        interface_id: id,
        ..packet(&[1])
    })
    .unwrap();
    w.write_interface_statistics(&InterfaceStatistics::default())
        .unwrap();
    w.flush().unwrap();
}

#[test]
fn name_resolution_block() {
    let mut w = writer();
    w.get_mut().unwrap().clear();
    w.write_name_resolution(&[(Ipv4Addr::new(10, 255, 77, 3), "appA")])
        .unwrap();
    let bytes = w.into_inner().unwrap();
    let expected: Vec<u8> = [
        &4u32.to_le_bytes()[..],
        &32u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &9u16.to_le_bytes(),
        &[10, 255, 77, 3],
        b"appA\0",
        &[0, 0, 0],
        &[0, 0, 0, 0], // nrb_record_end
        &32u32.to_le_bytes(),
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[test]
fn name_resolution_block_refuses_nul_and_skips_empty() {
    let mut w = writer();
    w.get_mut().unwrap().clear();
    w.write_name_resolution(&[]).unwrap();
    assert!(
        w.write_name_resolution(&[(Ipv4Addr::LOCALHOST, "a\0b")])
            .is_err()
    );
    assert!(w.into_inner().unwrap().is_empty());
}
