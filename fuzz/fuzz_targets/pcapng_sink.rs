//! pcap-sink, fed arbitrary sequences of the API's capture messages
//! (origins, interfaces, packet batches, statistics) as the CLI and the
//! API's store feed it: it never panics, and what it wrote always parses
//! as pcapng (with pcap-parser, an independent reader), with one Enhanced
//! Packet Block per packet it counts as written, even when it stopped at
//! an error. The line output gets the same messages and must not panic
//! either.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pcap_parser::{Block, PcapBlockOwned, PcapError, PcapNGReader, traits::PcapReaderIterator};
use pcap_proto::packets::Packet;
use pcap_proto::v1::{InterfaceDescription, OriginDescription, Packets, Statistics};
use pcap_sink::{Origins, Sink};

#[derive(Arbitrary, Debug)]
enum Message {
    Origin {
        id: u8,
        name: String,
        address: String,
    },
    Interface {
        origin: u8,
        id: u8,
        name: String,
        link_type: u32,
        snaplen: u32,
    },
    Packets(Vec<ArbitraryPacket>),
    Statistics {
        origin: u8,
        interface: u8,
        counts: [u64; 7],
        start_ns: u64,
        end_ns: u64,
    },
}

#[derive(Arbitrary, Debug)]
struct ArbitraryPacket {
    timestamp_ns: u64,
    original_length: u32,
    direction: i32,
    origin: u8,
    interface: u8,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    messages: Vec<Message>,
    now_ns: u64,
}

/// Feeds `messages` to `sink` as the CLI's session does; stops at the
/// first error, as the CLI does.
fn feed<W: std::io::Write>(sink: &mut Sink<W>, messages: &[Message]) -> std::io::Result<()> {
    let mut origins = Origins::default();
    for message in messages {
        match message {
            Message::Origin { id, name, address } => origins.add(OriginDescription {
                id: u32::from(*id),
                name: name.clone(),
                address: address.clone(),
            }),
            Message::Interface {
                origin,
                id,
                name,
                link_type,
                snaplen,
            } => sink.add_interface(
                &InterfaceDescription {
                    origin: u32::from(*origin),
                    id: u32::from(*id),
                    name: name.clone(),
                    link_type: *link_type,
                    snaplen: *snaplen,
                },
                &origins,
            )?,
            Message::Packets(packets) => {
                let packets: Vec<Packet> = packets
                    .iter()
                    .map(|p| Packet {
                        timestamp_ns: p.timestamp_ns,
                        original_length: p.original_length,
                        direction: p.direction,
                        origin: u32::from(p.origin),
                        interface: u32::from(p.interface),
                        data: p.data.clone(),
                        comment: None,
                    })
                    .collect();
                for batch in Packets::runs(&packets) {
                    sink.write_packets(&batch)?;
                }
            }
            Message::Statistics {
                origin,
                interface,
                counts,
                start_ns,
                end_ns,
            } => sink.add_statistics(Statistics {
                origin: u32::from(*origin),
                interface: u32::from(*interface),
                seen: counts[0],
                matched: counts[1],
                sent: counts[2],
                dropped_kernel_ring: counts[3],
                dropped_kernel_copy: counts[4],
                dropped_agent_queue: counts[5],
                out_of_order: counts[6],
                start_ns: *start_ns,
                end_ns: *end_ns,
                ..Statistics::default()
            }),
        }
        sink.end_of_message()?;
    }
    Ok(())
}

fuzz_target!(|input: Input| {
    let mut sink = Sink::pcapng(Vec::new(), false, "pcap-fuzz").expect("writes to memory");
    let fed = feed(&mut sink, &input.messages);
    if fed.is_ok() {
        sink.finish(input.now_ns).expect("finish writes to memory");
    }
    let written = sink.written();
    let bytes = sink.into_inner().expect("flushes to memory");
    let packet_blocks = count_packet_blocks(&bytes);
    assert_eq!(packet_blocks, written, "after {fed:?}");

    let mut lines = Sink::lines(Vec::new());
    let _ = feed(&mut lines, &input.messages);
});

/// Reads the whole stream with pcap-parser; panics if it is not pcapng.
fn count_packet_blocks(bytes: &[u8]) -> u64 {
    let mut reader =
        PcapNGReader::new(1 << 16, bytes).unwrap_or_else(|e| panic!("not pcapng: {e:?}"));
    let mut packets = 0;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                if let PcapBlockOwned::NG(Block::EnhancedPacket(_)) = block {
                    packets += 1;
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => return packets,
            Err(PcapError::Incomplete(_)) => {
                reader
                    .refill()
                    .unwrap_or_else(|e| panic!("cannot read on: {e:?}"));
            }
            Err(e) => panic!("not pcapng at block {packets}: {e:?}"),
        }
    }
}
