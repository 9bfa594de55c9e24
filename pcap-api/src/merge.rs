//! The reorder window: packets from many agents in one timestamp order.
//!
//! A packet is held until it is `window` old (its capture timestamp against
//! the API's clock), then sent with everything older, or sooner: once every
//! origin of the capture has sent a packet [`ORIGIN_DISORDER`] newer than it
//! (or has ended), no origin can still send an older one, so it goes. With
//! one origin, or with every origin busy, a packet waits [`ORIGIN_DISORDER`]
//! behind the slowest origin instead of the whole window, which is what the
//! API holds in memory; an idle origin leaves the window in charge. This
//! needs no clock agreement between agents: each origin is judged by its
//! own timestamps. A packet older than
//! one already sent cannot be put in order any more: it goes out at once
//! and is counted as out of order for its (origin, interface). When the held
//! packets exceed the byte budget, the oldest go out early.
//!
//! Packets are never decoded: a [`Packet`] is the place of one Enhanced
//! Packet Block in a batch an agent sent (a reference to tonic's receive
//! buffer, no copy), and its timestamp read from the block's header. The
//! batch's buffer lives until its last packet is sent.
//!
//! The merge is k-way: each origin's packets wait in a queue of their own
//! in arrival order, which is their timestamp order (an agent sends its
//! packets in the order it read them), and a heap holds the first packet of
//! each queue. Taking the oldest packet is a heap step, not a search, and
//! holding one is a slot at the end of a queue. A packet older than the
//! newest one held of its origin (an agent's per-CPU rings interleave) waits
//! apart, in timestamp order, and the oldest of the heap's and the
//! stragglers' leaves first.
//!
//! The budget counts what a held packet really costs: its block (as a heap
//! buffer of its own would take) plus a fixed overhead (its slot in a queue,
//! with the queue's spare room, and its share of the batch's reference
//! count), so a flood of one-byte packets is held to the budget as surely as
//! a flood of large ones. A timestamp further in the future than
//! [`MAX_FUTURE`] (an agent whose clock is ahead) is clamped to the API's
//! clock plus that, and counted: otherwise such packets would wait for
//! hours. Clamping rewrites the timestamp in a copy of that one block.
//!
//! A pure data structure: the caller passes the time and sends what comes
//! out.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, VecDeque, binary_heap::PeekMut},
    mem::size_of,
    time::Duration,
};

use pcap_proto::packets::{Bytes, BytesMut, RecordError, epb};
use pcap_proto::v1::Packets;

/// One packet of a batch: where its Enhanced Packet Block is, and what the
/// merge needs of its header.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Nanoseconds since the Unix epoch, from the block's header.
    pub timestamp_ns: u64,
    /// The capture's index of the agent it came from.
    pub origin: u32,
    /// The origin's interface id, from the block's header.
    pub interface: u32,
    /// The batch the block is in, and where.
    batch: Bytes,
    start: usize,
    len: usize,
}

impl Packet {
    /// The packets of `batch`, every block checked as it is split off: one
    /// pass over the bytes. A malformed block fails the whole batch.
    pub fn check_batch(batch: &Packets) -> Result<Vec<Self>, RecordError> {
        // Sized for blocks of 64 bytes (a small frame's is about 100), so
        // that a batch of small packets does not grow the vector step by
        // step.
        let mut packets = Vec::with_capacity(batch.records.len() / 64);
        for record in batch.records() {
            let record = record?;
            packets.push(Self {
                timestamp_ns: record.packet.timestamp_ns,
                origin: batch.origin,
                interface: record.packet.interface_id,
                batch: batch.records.clone(),
                start: record.offset,
                len: record.len,
            });
        }
        Ok(packets)
    }

    /// A packet of its own batch (tests, tools).
    pub fn from_wire(packet: &pcap_proto::packets::Packet) -> Self {
        let batch = Packets::from_packets(packet.origin, [packet]);
        let len = batch.records.len();
        Self {
            timestamp_ns: packet.timestamp_ns,
            origin: packet.origin,
            interface: packet.interface,
            batch: batch.records,
            start: 0,
            len,
        }
    }

    /// The Enhanced Packet Block.
    pub fn block(&self) -> &[u8] {
        &self.batch[self.start..self.start + self.len]
    }

    /// Bytes of packet data (the block's captured length).
    pub fn captured_len(&self) -> u32 {
        epb::captured_len_at(self.block())
    }

    /// The block's original length.
    pub fn original_length(&self) -> u32 {
        epb::read_epb(self.block()).map_or(0, |(packet, _)| packet.original_len)
    }

    /// Whether `next` is the block right after this one in the same batch.
    pub fn followed_by(&self, next: &Self) -> bool {
        self.batch.as_ptr() == next.batch.as_ptr()
            && self.batch.len() == next.batch.len()
            && self.start + self.len == next.start
    }

    /// The bytes from this packet's block to the end of `last`'s, which
    /// must follow it in the same batch ([`Self::followed_by`]).
    pub fn run_to(&self, last: &Self) -> Bytes {
        self.batch.slice(self.start..last.start + last.len)
    }

    /// Sets the timestamp, in a copy of the block.
    fn set_timestamp(&mut self, ns: u64) {
        let mut block = BytesMut::from(self.block());
        epb::set_timestamp(&mut block, ns);
        self.batch = block.freeze();
        self.start = 0;
        self.timestamp_ns = ns;
    }
}

/// How far out of timestamp order one origin may send its packets (an
/// agent's CPUs share its ring, each stamping its packets before reserving
/// their place) and still have them put in order when the merge does not
/// wait for the window: a packet waits until every origin has sent one this
/// much newer.
pub const ORIGIN_DISORDER: Duration = Duration::from_millis(50);

/// How far ahead of the API's clock a packet's timestamp may be.
pub const MAX_FUTURE: Duration = Duration::from_secs(1);
#[expect(
    clippy::cast_possible_truncation,
    reason = "one second in nanoseconds fits a u64"
)]
const MAX_FUTURE_NS: u64 = MAX_FUTURE.as_nanos() as u64;
#[expect(
    clippy::cast_possible_truncation,
    reason = "50 ms in nanoseconds fits a u64"
)]
const ORIGIN_DISORDER_NS: u64 = ORIGIN_DISORDER.as_nanos() as u64;

/// (timestamp, arrival number): equal timestamps keep their arrival order.
type Key = (u64, u64);

/// A held packet's slot in its origin's queue.
const SLOT: usize = size_of::<(Key, Packet)>();

/// What holding one packet costs besides its block: its queue slot four
/// times over (a queue doubles when full and halves when a quarter full, so
/// it may be four times as large as what it holds; a straggler's B-tree
/// entry, with nodes at least 5 of 11 slots full, costs less), plus a
/// reference count of its own (`bytes`' shared header, 32 bytes as the
/// allocator hands it out).
pub const PACKET_OVERHEAD: usize = 4 * SLOT + 32;

/// The bytes holding `packet` costs: the overhead, and its block as the
/// allocator would hand it out on its own (glibc: 8 bytes of header,
/// 16-byte steps, 32 at least).
pub fn held_size(packet: &Packet) -> usize {
    PACKET_OVERHEAD + heap_size(packet.len)
}

fn heap_size(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        capacity.saturating_add(8).next_multiple_of(16).max(32)
    }
}

/// The held packets of one origin.
#[derive(Default)]
struct Queue {
    /// In arrival order, which is timestamp order: a packet older than the
    /// last one here is a straggler instead.
    packets: VecDeque<(Key, Packet)>,
    /// How many of the origin's packets wait among the stragglers.
    stragglers: usize,
    /// The newest timestamp the origin has sent, held or not.
    newest_ns: Option<u64>,
    /// The origin will send nothing more.
    ended: bool,
}

impl Queue {
    /// Gives back room once the queue holds less than a quarter of it.
    fn shrink(&mut self) {
        let capacity = self.packets.capacity();
        if capacity > 8 && self.packets.len() < capacity / 4 {
            self.packets.shrink_to(self.packets.len() * 2);
        }
    }
}

pub struct Merger {
    window_ns: u64,
    /// [`ORIGIN_DISORDER`], or the window when that is shorter.
    disorder_ns: u64,
    max_held_bytes: usize,
    /// Indexed by origin.
    queues: Vec<Queue>,
    /// Whether the capture's origins are known ([`Self::expect_origins`]):
    /// only then can their progress release a packet before the window.
    origins_known: bool,
    /// The key of each non-empty queue's first packet, with its origin.
    heads: BinaryHeap<Reverse<(Key, u32)>>,
    /// Packets older than the newest held packet of their origin.
    stragglers: BTreeMap<Key, Packet>,
    arrivals: u64,
    held_packets: usize,
    held_bytes: usize,
    /// What the metrics were last told is held (they are told once a call,
    /// not once a packet).
    reported_bytes: usize,
    /// The timestamp of the newest packet sent so far.
    sent_up_to: Option<u64>,
    out_of_order: HashMap<(u32, u32), u64>,
    /// Packets whose timestamp was clamped, per origin.
    clamped: HashMap<u32, u64>,
}

impl Merger {
    pub fn new(window: Duration, max_held_bytes: usize) -> Self {
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            window_ns,
            disorder_ns: window_ns.min(ORIGIN_DISORDER_NS),
            max_held_bytes,
            queues: Vec::new(),
            origins_known: false,
            heads: BinaryHeap::new(),
            stragglers: BTreeMap::new(),
            arrivals: 0,
            held_packets: 0,
            held_bytes: 0,
            reported_bytes: 0,
            sent_up_to: None,
            out_of_order: HashMap::new(),
            clamped: HashMap::new(),
        }
    }

    /// Takes a packet that arrived at `now_ns` (the API's clock). Appends to
    /// `out` what must be sent now: the packet itself when it is late, or
    /// the oldest held packets when the byte budget is exceeded.
    pub fn push(&mut self, packet: Packet, now_ns: u64, out: &mut Vec<Packet>) {
        self.take(packet, now_ns, out);
        self.report_held();
    }

    /// [`Self::push`] for each of `packets` in turn (a batch).
    pub fn push_all(
        &mut self,
        packets: impl IntoIterator<Item = Packet>,
        now_ns: u64,
        out: &mut Vec<Packet>,
    ) {
        for packet in packets {
            self.take(packet, now_ns, out);
        }
        self.report_held();
    }

    /// The capture's origins are `0..count`: each must send a packet newer
    /// than a held one, or end, before that one may go ahead of the window.
    /// Called again when origins join (`follow`).
    pub fn expect_origins(&mut self, count: usize) {
        self.origins_known = true;
        if self.queues.len() < count {
            self.queues.resize_with(count, Queue::default);
        }
    }

    /// `origin` will send nothing more: it holds no packet back any more.
    pub fn end(&mut self, origin: u32) {
        if let Some(queue) = self.queues.get_mut(origin as usize) {
            queue.ended = true;
        }
    }

    /// Appends to `out`, oldest first, every packet that is at least
    /// `window` old at `now_ns`, or that every origin still sending has
    /// passed by [`ORIGIN_DISORDER`].
    pub fn pop_ready(&mut self, now_ns: u64, out: &mut Vec<Packet>) {
        let progress = self.progress_ns();
        while let Some(((ts, _), _)) = self.oldest() {
            let waited = ts.saturating_add(self.window_ns) <= now_ns;
            let passed = progress.is_some_and(|p| ts.saturating_add(self.disorder_ns) <= p);
            if !(waited || passed) {
                break;
            }
            self.pop_oldest(out);
        }
        self.report_held();
    }

    /// The newest timestamp every origin still sending has reached, when
    /// the origins are known and each has sent something.
    fn progress_ns(&self) -> Option<u64> {
        if !self.origins_known {
            return None;
        }
        self.queues
            .iter()
            .filter(|queue| !queue.ended)
            .try_fold(u64::MAX, |slowest, queue| {
                Some(slowest.min(queue.newest_ns?))
            })
    }

    /// When the oldest held packet becomes ready (nanoseconds since the
    /// epoch), if any is held.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.oldest()
            .map(|((ts, _), _)| ts.saturating_add(self.window_ns))
    }

    /// Appends every held packet to `out`, oldest first.
    pub fn flush(&mut self, out: &mut Vec<Packet>) {
        while self.pop_oldest(out) {}
        self.report_held();
    }

    /// How many packets from `origin` are held.
    pub fn held_from(&self, origin: u32) -> usize {
        self.queues
            .get(origin as usize)
            .map_or(0, |queue| queue.packets.len() + queue.stragglers)
    }

    /// What the held packets cost, as the budget counts it.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// How many packets are held.
    pub fn held_packets(&self) -> usize {
        self.held_packets
    }

    /// Packets of (origin, interface) sent out of order so far.
    pub fn out_of_order(&self, origin: u32, interface: u32) -> u64 {
        self.out_of_order
            .get(&(origin, interface))
            .copied()
            .unwrap_or(0)
    }

    /// Packets sent out of order so far, over all origins.
    pub fn out_of_order_total(&self) -> u64 {
        self.out_of_order.values().sum()
    }

    /// Packets of `origin` whose future timestamp was clamped so far.
    pub fn clamped(&self, origin: u32) -> u64 {
        self.clamped.get(&origin).copied().unwrap_or(0)
    }

    /// Packets whose future timestamp was clamped so far, over all origins.
    pub fn clamped_total(&self) -> u64 {
        self.clamped.values().sum()
    }

    /// [`Self::push`] without telling the metrics.
    fn take(&mut self, mut packet: Packet, now_ns: u64, out: &mut Vec<Packet>) {
        let latest = now_ns.saturating_add(MAX_FUTURE_NS);
        if packet.timestamp_ns > latest {
            packet.set_timestamp(latest);
            *self.clamped.entry(packet.origin).or_default() += 1;
        }
        let origin = packet.origin;
        if self.queues.len() <= origin as usize {
            self.queues.resize_with(origin as usize + 1, Queue::default);
        }
        let queue = &mut self.queues[origin as usize];
        queue.newest_ns = Some(queue.newest_ns.unwrap_or(0).max(packet.timestamp_ns));
        // A packet after the end (a reconnection) holds others back again.
        queue.ended = false;
        if self
            .sent_up_to
            .is_some_and(|sent| packet.timestamp_ns < sent)
        {
            *self
                .out_of_order
                .entry((packet.origin, packet.interface))
                .or_default() += 1;
            crate::metrics::metrics().out_of_order();
            out.push(packet);
            return;
        }
        self.held_bytes += held_size(&packet);
        self.held_packets += 1;
        let key = (packet.timestamp_ns, self.arrivals);
        self.arrivals += 1;
        match queue.packets.back() {
            None => {
                queue.packets.push_back((key, packet));
                self.heads.push(Reverse((key, origin)));
            }
            Some(&((newest, _), _)) if key.0 < newest => {
                queue.stragglers += 1;
                self.stragglers.insert(key, packet);
            }
            Some(_) => queue.packets.push_back((key, packet)),
        }
        while self.held_bytes > self.max_held_bytes {
            self.pop_oldest(out);
        }
    }

    /// The oldest held packet's key, and whether it heads a queue (rather
    /// than being a straggler).
    fn oldest(&self) -> Option<(Key, bool)> {
        let head = self.heads.peek().map(|Reverse((key, _))| *key);
        let straggler = self.stragglers.first_key_value().map(|(key, _)| *key);
        match (head, straggler) {
            (Some(head), Some(straggler)) if straggler < head => Some((straggler, false)),
            (Some(head), _) => Some((head, true)),
            (None, straggler) => straggler.map(|key| (key, false)),
        }
    }

    /// Sends the oldest held packet; false when none is held.
    fn pop_oldest(&mut self, out: &mut Vec<Packet>) -> bool {
        let Some((_, heads_a_queue)) = self.oldest() else {
            return false;
        };
        let packet = if heads_a_queue {
            let mut head = self.heads.peek_mut().expect("the oldest heads a queue");
            let queue = &mut self.queues[head.0.1 as usize];
            let (_, packet) = queue
                .packets
                .pop_front()
                .expect("a queue in the heap holds packets");
            match queue.packets.front() {
                Some(&(next, _)) => head.0.0 = next,
                None => {
                    PeekMut::pop(head);
                }
            }
            queue.shrink();
            packet
        } else {
            let (_, packet) = self
                .stragglers
                .pop_first()
                .expect("the oldest is a straggler");
            self.queues[packet.origin as usize].stragglers -= 1;
            packet
        };
        self.held_bytes -= held_size(&packet);
        self.held_packets -= 1;
        self.sent_up_to = Some(self.sent_up_to.unwrap_or(0).max(packet.timestamp_ns));
        out.push(packet);
        true
    }

    /// Tells the metrics how the held bytes changed since last told.
    fn report_held(&mut self) {
        let change = self.held_bytes as i64 - self.reported_bytes as i64;
        if change != 0 {
            crate::metrics::metrics().held_bytes(change);
            self.reported_bytes = self.held_bytes;
        }
    }
}

impl Drop for Merger {
    /// What an aborted capture still held leaves the metrics' count.
    fn drop(&mut self) {
        crate::metrics::metrics().held_bytes(-(self.reported_bytes as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(1);
    const SECOND: u64 = 1_000_000_000;
    /// The API's clock in these tests: later than every timestamp.
    const NOW: u64 = 1000 * SECOND;

    fn packet(origin: u32, timestamp_ns: u64, len: usize) -> Packet {
        Packet::from_wire(&pcap_proto::packets::Packet {
            timestamp_ns,
            origin,
            interface: 0,
            original_length: len as u32,
            data: vec![0; len],
            ..pcap_proto::packets::Packet::default()
        })
    }

    fn times(packets: &[Packet]) -> Vec<u64> {
        packets.iter().map(|p| p.timestamp_ns).collect()
    }

    #[test]
    fn packets_wait_for_the_window_and_leave_in_timestamp_order() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push(packet(0, 10 * SECOND, 1), NOW, &mut out);
        merger.push(packet(1, 9 * SECOND, 1), NOW, &mut out);
        merger.push(packet(0, 12 * SECOND, 1), NOW, &mut out);
        merger.push(packet(1, 11 * SECOND, 1), NOW, &mut out);
        assert!(out.is_empty());
        assert_eq!(merger.next_deadline_ns(), Some(10 * SECOND));

        merger.pop_ready(10 * SECOND, &mut out);
        assert_eq!(times(&out), [9 * SECOND]);
        merger.pop_ready(12 * SECOND, &mut out);
        assert_eq!(times(&out), [9 * SECOND, 10 * SECOND, 11 * SECOND]);
        assert_eq!(merger.held_from(0), 1);
        assert_eq!(merger.held_from(1), 0);
        assert_eq!(merger.next_deadline_ns(), Some(13 * SECOND));
    }

    #[test]
    fn equal_timestamps_keep_their_arrival_order() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        for origin in [2, 0, 1] {
            merger.push(packet(origin, SECOND, 1), NOW, &mut out);
        }
        merger.flush(&mut out);
        let origins: Vec<_> = out.iter().map(|p| p.origin).collect();
        assert_eq!(origins, [2, 0, 1]);
    }

    #[test]
    fn an_origin_out_of_its_own_order_still_leaves_in_timestamp_order() {
        // Origin 0's packets from two CPUs interleave: 5 and 3 come after 6.
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        let arrivals = [
            (0, 4),
            (0, 6),
            (1, 1),
            (0, 5),
            (1, 7),
            (0, 3),
            (1, 8),
            (0, 6),
        ];
        merger.push_all(
            arrivals
                .iter()
                .map(|&(origin, ts)| packet(origin, ts * SECOND, 1)),
            NOW,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(merger.held_from(0), 5);
        assert_eq!(merger.held_from(1), 3);
        assert_eq!(merger.next_deadline_ns(), Some(2 * SECOND));

        merger.pop_ready(6 * SECOND, &mut out);
        assert_eq!(times(&out), [SECOND, 3 * SECOND, 4 * SECOND, 5 * SECOND]);
        assert_eq!(merger.held_from(0), 2);
        merger.flush(&mut out);
        let order: Vec<_> = out
            .iter()
            .map(|p| (p.origin, p.timestamp_ns / SECOND))
            .collect();
        // The two packets at 6 keep their arrival order.
        assert_eq!(
            order,
            [
                (1, 1),
                (0, 3),
                (0, 4),
                (0, 5),
                (0, 6),
                (0, 6),
                (1, 7),
                (1, 8)
            ]
        );
        assert_eq!((merger.held_packets(), merger.held_bytes()), (0, 0));
        assert_eq!(merger.out_of_order_total(), 0);
    }

    #[test]
    fn late_packets_go_out_at_once_and_are_counted() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push(packet(0, 10 * SECOND, 1), NOW, &mut out);
        merger.pop_ready(11 * SECOND, &mut out);
        assert_eq!(times(&out), [10 * SECOND]);

        // Older than what was sent: out of order.
        merger.push(packet(1, 9 * SECOND, 1), NOW, &mut out);
        // As old as what was sent: still in order, so held.
        merger.push(packet(1, 10 * SECOND, 1), NOW, &mut out);
        assert_eq!(times(&out), [10 * SECOND, 9 * SECOND]);
        assert_eq!(merger.out_of_order(1, 0), 1);
        assert_eq!(merger.out_of_order(0, 0), 0);
        assert_eq!(merger.held_from(1), 1);
    }

    #[test]
    fn the_byte_budget_sends_the_oldest_early() {
        let cost = held_size(&packet(0, 0, 100));
        let mut merger = Merger::new(WINDOW, 2 * cost + cost / 2);
        let mut out = Vec::new();
        merger.push(packet(0, 3 * SECOND, 100), NOW, &mut out);
        merger.push(packet(0, SECOND, 100), NOW, &mut out);
        assert!(out.is_empty());
        merger.push(packet(1, 2 * SECOND, 100), NOW, &mut out);
        assert_eq!(times(&out), [SECOND]);
        assert_eq!(merger.held_bytes(), 2 * cost);

        // Now older than what left early: out of order.
        merger.push(packet(1, SECOND / 2, 10), NOW, &mut out);
        assert_eq!(times(&out), [SECOND, SECOND / 2]);
        assert_eq!(merger.out_of_order(1, 0), 1);
    }

    #[test]
    fn tiny_packets_are_charged_what_holding_them_costs() {
        // snaplen 1 from an agent whose clock is an hour ahead: before the
        // budget counted overhead, a 1 MiB budget held a million packets
        // (some 100 MiB).
        const BUDGET: usize = 1 << 20;
        let mut merger = Merger::new(WINDOW, BUDGET);
        let mut out = Vec::new();
        for i in 0..1_000_000 {
            merger.push(packet(0, NOW + 3600 * SECOND + i, 1), NOW, &mut out);
        }
        assert!(merger.held_bytes() <= BUDGET);
        assert!(
            merger.held_packets() * (size_of::<Packet>() + size_of::<Key>()) <= BUDGET,
            "{} packets held",
            merger.held_packets()
        );
        assert_eq!(merger.held_packets() + out.len(), 1_000_000);
    }

    #[test]
    fn future_timestamps_are_clamped_and_counted() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push(packet(0, NOW + 3600 * SECOND, 1), NOW, &mut out);
        merger.push(packet(1, NOW + SECOND / 2, 1), NOW, &mut out);
        assert_eq!(merger.clamped(0), 1);
        assert_eq!(merger.clamped(1), 0);
        // Ready one window after the allowed future, not in an hour.
        assert_eq!(
            merger.next_deadline_ns(),
            Some(NOW + SECOND / 2 + WINDOW.as_nanos() as u64)
        );
        merger.pop_ready(NOW + 2 * SECOND + WINDOW.as_nanos() as u64, &mut out);
        assert_eq!(times(&out), [NOW + SECOND / 2, NOW + SECOND]);
        assert_eq!(merger.clamped_total(), 1);
    }

    #[test]
    fn flush_sends_everything_in_order() {
        let mut merger = Merger::new(Duration::from_hours(1), 1 << 20);
        let mut out = Vec::new();
        for ts in [5, 1, 4, 2, 3] {
            merger.push(packet(ts as u32 % 2, ts * SECOND, 10), NOW, &mut out);
        }
        merger.pop_ready(100 * SECOND, &mut out);
        assert!(out.is_empty());
        merger.flush(&mut out);
        assert_eq!(
            times(&out),
            [SECOND, 2 * SECOND, 3 * SECOND, 4 * SECOND, 5 * SECOND]
        );
        assert_eq!(merger.held_bytes(), 0);
        assert_eq!(merger.next_deadline_ns(), None);
        assert_eq!(merger.held_from(0) + merger.held_from(1), 0);
    }

    #[test]
    fn a_zero_window_sends_as_soon_as_asked() {
        let mut merger = Merger::new(Duration::ZERO, 1 << 20);
        let mut out = Vec::new();
        merger.push(packet(0, 7, 1), NOW, &mut out);
        merger.pop_ready(7, &mut out);
        assert_eq!(times(&out), [7]);
    }

    const MS: u64 = SECOND / 1000;

    #[test]
    fn one_origin_s_packets_go_once_it_has_sent_newer_ones() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        merger.expect_origins(1);
        let mut out = Vec::new();
        let start = 10 * SECOND;
        for ts in [start, start + 10 * MS, start + 100 * MS] {
            merger.push(packet(0, ts, 1), start + 100 * MS, &mut out);
        }
        // Long before the window: what is 50 ms behind the newest goes.
        merger.pop_ready(start + 100 * MS, &mut out);
        assert_eq!(times(&out), [start, start + 10 * MS]);
        assert_eq!(merger.held_packets(), 1);
    }

    #[test]
    fn an_origin_that_sent_nothing_leaves_the_window_in_charge_until_it_ends() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        merger.expect_origins(2);
        let mut out = Vec::new();
        let start = 10 * SECOND;
        merger.push(packet(0, start, 1), start, &mut out);
        merger.push(packet(0, start + SECOND / 2, 1), start, &mut out);
        merger.pop_ready(start + SECOND / 2, &mut out);
        assert!(out.is_empty(), "origin 1 could still send older packets");
        merger.end(1);
        merger.pop_ready(start + SECOND / 2, &mut out);
        assert_eq!(times(&out), [start]);
    }

    #[test]
    fn the_slowest_origin_sets_the_pace_whatever_the_clocks_say() {
        // An hour's window: only the origins' progress releases anything.
        let mut merger = Merger::new(Duration::from_hours(1), 1 << 20);
        merger.expect_origins(2);
        let mut out = Vec::new();
        // Origin 1's clock is a minute behind the API's and origin 0's.
        let now = 100 * SECOND;
        let behind = now - 60 * SECOND;
        merger.push(packet(0, now, 1), now, &mut out);
        merger.push(packet(1, behind, 1), now, &mut out);
        merger.pop_ready(now, &mut out);
        assert!(out.is_empty(), "origin 1 has sent nothing 50 ms past {now}");
        merger.push(packet(1, behind + 100 * MS, 1), now, &mut out);
        merger.pop_ready(now, &mut out);
        // Origin 1 is the slowest, at behind + 100 ms.
        assert_eq!(times(&out), [behind]);
        merger.push(packet(1, now + 100 * MS, 1), now, &mut out);
        merger.pop_ready(now, &mut out);
        assert_eq!(times(&out), [behind, behind + 100 * MS]);
        merger.push(packet(0, now + 200 * MS, 1), now, &mut out);
        merger.pop_ready(now, &mut out);
        assert_eq!(times(&out), [behind, behind + 100 * MS, now]);
        assert_eq!(merger.out_of_order_total(), 0);
    }

    #[test]
    fn an_origin_s_own_disorder_within_50_ms_is_still_put_in_order() {
        let mut merger = Merger::new(Duration::from_hours(1), 1 << 20);
        merger.expect_origins(1);
        let mut out = Vec::new();
        let start = 10 * SECOND;
        for ts in [start, start + 30 * MS, start + 20 * MS, start + 100 * MS] {
            merger.push(packet(0, ts, 1), start, &mut out);
        }
        merger.pop_ready(start, &mut out);
        assert_eq!(times(&out), [start, start + 20 * MS, start + 30 * MS]);
        assert_eq!(merger.out_of_order_total(), 0);
    }
}
