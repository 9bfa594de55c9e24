//! Properties of the reorder window over random interleavings of batches
//! (any origins, one to eight packets in any timestamp order, timestamps
//! from the past to far in the future, sizes from empty up) and clock
//! advances, with random windows and byte budgets:
//! - every packet comes out exactly once;
//! - the output's timestamps never go back, except for packets counted
//!   `out_of_order`, and exactly those;
//! - what is held stays within the budget, charged at its real cost;
//! - a timestamp comes out as it went in, or clamped to the API's clock
//!   plus `MAX_FUTURE` (and counted).

use std::{collections::BTreeMap, time::Duration};

use pcap_api::merge::{MAX_FUTURE, Merger, Piece, Run};
use pcap_proto::packets::{Packet as WirePacket, epb};
use pcap_proto::v1::Packets;
use proptest::prelude::*;

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_000_000 * SECOND;

#[derive(Clone, Debug)]
struct Sent {
    interface: u32,
    /// From the API's clock.
    offset_ms: i64,
    len: usize,
}

#[derive(Clone, Debug)]
enum Op {
    /// A batch of one origin.
    Push { origin: u32, packets: Vec<Sent> },
    /// The API's clock moves on; ready packets are taken.
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..4u32,
            proptest::collection::vec(
                (0..2u32, -5_000i64..5_000, 0..300usize)
                    .prop_map(|(interface, offset_ms, len)| Sent { interface, offset_ms, len }),
                1..8,
            ),
        )
            .prop_map(|(origin, packets)| Op::Push { origin, packets }),
        // Some agents' clocks are hours ahead.
        1 => (0..4u32, 3_600_000i64..7_200_000).prop_map(|(origin, offset_ms)| Op::Push {
            origin,
            packets: vec![Sent { interface: 0, offset_ms, len: 1 }],
        }),
        2 => (0..3_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn offset(now: u64, ms: i64) -> u64 {
    let delta = ms.unsigned_abs() * 1_000_000;
    if ms < 0 { now - delta } else { now + delta }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_packet_once_in_order_within_the_budget(
        ops in proptest::collection::vec(op(), 1..400),
        window_ms in 0..3_000u64,
        budget in 0usize..40_000,
    ) {
        let mut merger = Merger::new(Duration::from_millis(window_ms), budget);
        let max_future = MAX_FUTURE.as_nanos() as u64;
        let mut now = START;
        let mut out = Vec::new();
        // Packet id (kept in `original_length`) -> the timestamp it must
        // come out with, and its charge while held.
        let mut expected = BTreeMap::new();
        let mut clamped = 0;
        // Held packet id -> its least real cost; output counted so far.
        let mut cost = BTreeMap::new();
        let mut counted = 0;
        for (id, op) in ops.into_iter().enumerate() {
            match op {
                Op::Push { origin, packets } => {
                    let mut batch = Vec::new();
                    for (at, sent) in packets.into_iter().enumerate() {
                        let timestamp_ns = offset(now, sent.offset_ms);
                        // Above any captured length, which the block's
                        // original length is raised to.
                        let id = (1 << 20) + id * 8 + at;
                        if timestamp_ns > now + max_future {
                            clamped += 1;
                        }
                        expected.insert(id as u32, timestamp_ns.min(now + max_future));
                        cost.insert(id as u32, 16 + sent.len);
                        batch.push(WirePacket {
                            timestamp_ns,
                            origin,
                            interface: sent.interface,
                            original_length: id as u32,
                            data: vec![0xab; sent.len],
                            ..WirePacket::default()
                        });
                    }
                    let runs = Run::split(&Packets::from_packets(origin, &batch)).unwrap();
                    merger.push_all(runs, now, &mut out);
                }
                Op::Advance { ms } => {
                    now += ms * 1_000_000;
                    merger.pop_ready(now, &mut out);
                }
            }
            prop_assert!(
                merger.held_bytes() <= budget,
                "{} bytes held, budget {budget}", merger.held_bytes()
            );
            // Nothing is lost or made up meanwhile, and what is held costs
            // at least its `Packet` and data each: that stays in the budget.
            let sent = packets(&out);
            let held = expected.len() - sent.len();
            prop_assert_eq!(held, merger.held_packets());
            for packet in &sent[counted..] {
                cost.remove(&packet.original_length);
            }
            counted = sent.len();
            let held_cost: usize = cost.values().sum();
            prop_assert!(held_cost <= budget, "{held} packets cost {held_cost}, budget {budget}");
        }
        merger.flush(&mut out);
        prop_assert_eq!(merger.held_bytes(), 0);
        let out = packets(&out);

        // Exactly once, with the expected timestamps.
        let mut seen = BTreeMap::new();
        for packet in &out {
            prop_assert!(
                seen.insert(packet.original_length, packet.timestamp_ns).is_none(),
                "packet {} came out twice", packet.original_length
            );
        }
        prop_assert_eq!(&seen, &expected);
        prop_assert_eq!(merger.clamped_total(), clamped);

        // Non-decreasing but for the packets counted out of order.
        let mut newest = 0;
        let mut late = BTreeMap::<(u32, u32), u64>::new();
        for packet in &out {
            if packet.timestamp_ns < newest {
                *late.entry((packet.origin, packet.interface)).or_default() += 1;
            }
            newest = newest.max(packet.timestamp_ns);
        }
        prop_assert_eq!(late.values().sum::<u64>(), merger.out_of_order_total());
        for ((origin, interface), count) in late {
            prop_assert_eq!(count, merger.out_of_order(origin, interface));
        }
    }

    #[test]
    fn the_charge_covers_the_packets_and_their_buffer(lens in proptest::collection::vec(0..2_000usize, 1..20)) {
        let batch: Vec<_> = lens
            .iter()
            .map(|&len| WirePacket { data: vec![0; len], ..WirePacket::default() })
            .collect();
        let batch = Packets::from_packets(0, &batch);
        let runs = Run::split(&batch).unwrap();
        prop_assert_eq!(runs.len(), 1);
        prop_assert!(
            runs[0].held_size() >= size_of::<Run>() + batch.records.len() + lens.len() * 16
        );
    }
}

/// Every packet of `pieces`, in order, with the origin of its piece.
fn packets(pieces: &[Piece]) -> Vec<WirePacket> {
    pieces
        .iter()
        .flat_map(|piece| {
            piece.blocks().map(|block| {
                let (packet, _) = epb::read_epb(block).unwrap();
                WirePacket {
                    timestamp_ns: packet.timestamp_ns,
                    origin: piece.origin,
                    interface: packet.interface_id,
                    original_length: packet.original_len,
                    ..WirePacket::default()
                }
            })
        })
        .collect()
}
