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
//! own timestamps. A packet older than one already sent cannot be put in
//! order any more: it goes out at once and is counted as out of order for
//! its (origin, interface). When the held packets exceed the byte budget,
//! the oldest go out early.
//!
//! Packets are never decoded, nor handled one by one past the check. As a
//! batch an agent sent is checked ([`Run::split`]), it is cut into runs:
//! blocks laid end to end in timestamp order, each run a reference to the
//! batch's buffer (tonic's receive buffer, no copy) with an index of its
//! blocks' timestamps, offsets and captured lengths. An agent sends its
//! packets in the order it read them, so a batch is one run unless its CPUs'
//! packets interleaved. A heap holds the runs by their oldest unsent block.
//! Sending takes the front of the oldest run, up to the next run's head or
//! the release bound, in one step: a [`Piece`], one slice of the batch,
//! whatever the number of packets in it.
//!
//! The budget counts what a held packet really costs: its block, its index
//! entry (twice: a vector may be twice as large as what it holds), and each
//! run's share (its heap slot, twice over, its index's allocation and a
//! reference count of the batch), so a flood of one-byte packets is held to
//! the budget as surely as a flood of large ones. A timestamp further in the
//! future than [`MAX_FUTURE`] (an agent whose clock is ahead) is clamped to
//! the API's clock plus that, and counted: otherwise such packets would wait
//! for hours. Clamping rewrites the timestamps in a copy of those blocks.
//!
//! A pure data structure: the caller passes the time and sends what comes
//! out.

use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap},
    mem::size_of,
    time::Duration,
};

use pcap_proto::packets::{Bytes, BytesMut, RecordError, Records, epb};
use pcap_proto::v1::Packets;

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

/// (timestamp, the run's arrival number): equal timestamps keep their
/// arrival order.
type Key = (u64, u64);

/// What the merge needs of one block, read from its header.
#[derive(Clone, Copy, Debug)]
struct Block {
    timestamp_ns: u64,
    /// Where the block starts in its batch (a batch is at most tonic's
    /// message limit, a few MiB).
    start: u32,
    captured_len: u32,
}

/// What holding one packet costs besides its block: its index entry, twice
/// over (an index may be twice as large as what it holds).
pub const BLOCK_OVERHEAD: usize = 2 * size_of::<Block>();

/// What holding a run costs besides its packets: its slot in the heap twice
/// over (the heap doubles when full and halves when a quarter full), its
/// index's allocation (as the allocator hands it out: 32 bytes at least)
/// and its reference to the batch (`bytes`' shared header, 32 bytes).
pub const RUN_OVERHEAD: usize = 2 * size_of::<Run>() + 32 + 32;

/// Blocks of one origin's batch, laid end to end, in timestamp order.
#[derive(Debug)]
pub struct Run {
    origin: u32,
    batch: Bytes,
    blocks: Vec<Block>,
    /// The first block not sent yet.
    next: usize,
    /// Where the last block ends in the batch.
    end: u32,
    /// Arrival number, given when the run is held.
    seq: u64,
}

impl Run {
    /// The runs of `batch`, every block checked as it is indexed: one pass
    /// over the bytes. A malformed block fails the whole batch.
    pub fn split(batch: &Packets) -> Result<Vec<Self>, RecordError> {
        let bytes = &batch.records;
        let fit = |n: usize| {
            u32::try_from(n).map_err(|_| RecordError {
                offset: n,
                reason: "a batch longer than 4 GiB",
            })
        };
        let end = fit(bytes.len())?;
        let mut runs = Vec::new();
        // Sized for blocks of 64 bytes (a small frame's is about 100), so
        // that a batch of small packets does not grow the index step by
        // step.
        let mut blocks: Vec<Block> = Vec::with_capacity(bytes.len() / 64);
        for record in batch.records() {
            let record = record?;
            let block = Block {
                timestamp_ns: record.packet.timestamp_ns,
                start: fit(record.offset)?,
                captured_len: fit(record.packet.data.len())?,
            };
            if let Some(last) = blocks.last()
                && block.timestamp_ns < last.timestamp_ns
            {
                let done = std::mem::replace(&mut blocks, Vec::with_capacity(4));
                runs.push(Self::new(batch.origin, bytes.clone(), done, block.start));
            }
            blocks.push(block);
        }
        if !blocks.is_empty() {
            runs.push(Self::new(batch.origin, bytes.clone(), blocks, end));
        }
        Ok(runs)
    }

    /// A run of one packet (tests, tools).
    pub fn from_wire(packet: &pcap_proto::packets::Packet) -> Self {
        let batch = Packets::from_packets(packet.origin, [packet]);
        let mut runs = Self::split(&batch).expect("blocks this crate encoded");
        runs.pop().expect("one packet, one run")
    }

    fn new(origin: u32, batch: Bytes, mut blocks: Vec<Block>, end: u32) -> Self {
        if blocks.capacity() > 2 * blocks.len() {
            blocks.shrink_to_fit();
        }
        Self {
            origin,
            batch,
            blocks,
            next: 0,
            end,
            seq: 0,
        }
    }

    /// The blocks not sent yet.
    fn pending(&self) -> &[Block] {
        &self.blocks[self.next..]
    }

    /// The key of the first block not sent yet.
    fn head_key(&self) -> Key {
        (self.blocks[self.next].timestamp_ns, self.seq)
    }

    /// Where block `index` starts in the batch (the run's end after its
    /// last).
    fn offset(&self, index: usize) -> usize {
        self.blocks.get(index).map_or(self.end, |block| block.start) as usize
    }

    /// What holding the blocks `from..to` costs, the run's own share aside.
    fn charge(&self, from: usize, to: usize) -> usize {
        self.offset(to) - self.offset(from) + (to - from) * BLOCK_OVERHEAD
    }

    /// What holding the whole run costs, as the budget counts it.
    pub fn held_size(&self) -> usize {
        RUN_OVERHEAD + self.charge(self.next, self.blocks.len())
    }

    /// How many of the first pending blocks must go to free `excess` bytes
    /// of the budget (all of them, at most).
    fn blocks_to_free(&self, excess: usize) -> usize {
        let pending = self.blocks.len() - self.next;
        (1..pending)
            .find(|&count| self.charge(self.next, self.next + count) >= excess)
            .unwrap_or(pending)
    }

    /// Takes the first `count` pending blocks as a piece.
    fn take_front(&mut self, count: usize) -> Piece {
        let (from, to) = (self.next, self.next + count);
        self.next = to;
        Piece {
            origin: self.origin,
            records: self.batch.slice(self.offset(from)..self.offset(to)),
            packets: count as u64,
            captured_bytes: self.blocks[from..to]
                .iter()
                .map(|block| u64::from(block.captured_len))
                .sum(),
        }
    }

    /// Cuts off the blocks stamped after `latest` and returns them as a run
    /// of their own, stamped `latest`, in a copy; `None` when there are
    /// none.
    fn clamp_after(&mut self, latest: u64) -> Option<Self> {
        let keep = self.next + self.pending().partition_point(|b| b.timestamp_ns <= latest);
        if keep == self.blocks.len() {
            return None;
        }
        let mut copy = BytesMut::from(&self.batch[self.offset(keep)..self.end as usize]);
        let base = self.blocks[keep].start;
        let mut blocks = self.blocks.split_off(keep);
        for block in &mut blocks {
            block.start -= base;
            block.timestamp_ns = latest;
            epb::set_timestamp(&mut copy[block.start as usize..], latest);
        }
        let end = self.end - base;
        self.end = base;
        Some(Self::new(self.origin, copy.freeze(), blocks, end))
    }
}

/// A run in the heap: the run whose first pending block is oldest is the
/// greatest.
struct Held(Run);

impl Held {
    fn key(&self) -> Key {
        self.0.head_key()
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

/// Packets the merge sends: consecutive blocks of one origin's batch, in
/// timestamp order.
#[derive(Clone, Debug)]
pub struct Piece {
    pub origin: u32,
    /// The Enhanced Packet Blocks, laid end to end.
    pub records: Bytes,
    pub packets: u64,
    /// Bytes of packet data: the sum of the blocks' captured lengths.
    pub captured_bytes: u64,
}

impl Piece {
    /// Each block, read again (they were checked when their batch came).
    pub fn blocks(&self) -> impl Iterator<Item = &[u8]> {
        Records::new(&self.records)
            .map_while(Result::ok)
            .map(|record| &self.records[record.offset..record.offset + record.len])
    }

    /// Splits off the first `count` packets: they are returned, the rest
    /// stays.
    #[must_use]
    pub fn split_to(&mut self, count: u64) -> Self {
        if count >= self.packets {
            let rest = Self {
                origin: self.origin,
                records: Bytes::new(),
                packets: 0,
                captured_bytes: 0,
            };
            return std::mem::replace(self, rest);
        }
        let (mut len, mut captured) = (0, 0);
        for block in self
            .blocks()
            .take(usize::try_from(count).unwrap_or(usize::MAX))
        {
            len += block.len();
            captured += u64::from(epb::captured_len_at(block));
        }
        self.cut(count, len, captured)
    }

    /// The piece cut at block boundaries into pieces of at most `max_bytes`
    /// each (a block larger than that alone).
    pub fn into_chunks(mut self, max_bytes: usize) -> Vec<Self> {
        let mut chunks = Vec::new();
        while self.records.len() > max_bytes {
            let (mut count, mut len, mut captured) = (0, 0, 0);
            for block in self.blocks() {
                if count > 0 && len + block.len() > max_bytes {
                    break;
                }
                len += block.len();
                captured += u64::from(epb::captured_len_at(block));
                count += 1;
            }
            if count == 0 {
                break; // never: its blocks were checked
            }
            chunks.push(self.cut(count, len, captured));
        }
        if self.packets > 0 {
            chunks.push(self);
        }
        chunks
    }

    /// Splits off the first `count` packets, which take `len` bytes and
    /// hold `captured` bytes of packet data.
    fn cut(&mut self, count: u64, len: usize, captured: u64) -> Self {
        self.packets -= count;
        self.captured_bytes -= captured;
        Self {
            origin: self.origin,
            records: self.records.split_to(len),
            packets: count,
            captured_bytes: captured,
        }
    }
}

/// One origin's state in the merge.
#[derive(Default)]
struct Origin {
    /// The newest timestamp the origin has sent, held or not.
    newest_ns: Option<u64>,
    /// The origin will send nothing more.
    ended: bool,
    /// How many of its packets are held.
    held: usize,
}

pub struct Merger {
    window_ns: u64,
    /// [`ORIGIN_DISORDER`], or the window when that is shorter.
    disorder_ns: u64,
    max_held_bytes: usize,
    /// Indexed by origin.
    origins: Vec<Origin>,
    /// Whether the capture's origins are known ([`Self::expect_origins`]):
    /// only then can their progress release a packet before the window.
    origins_known: bool,
    /// Every run holding unsent blocks.
    runs: BinaryHeap<Held>,
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
            origins: Vec::new(),
            origins_known: false,
            runs: BinaryHeap::new(),
            arrivals: 0,
            held_packets: 0,
            held_bytes: 0,
            reported_bytes: 0,
            sent_up_to: None,
            out_of_order: HashMap::new(),
            clamped: HashMap::new(),
        }
    }

    /// Takes a run that arrived at `now_ns` (the API's clock). Appends to
    /// `out` what must be sent now: its packets that are late, or the
    /// oldest held packets when the byte budget is exceeded.
    pub fn push(&mut self, run: Run, now_ns: u64, out: &mut Vec<Piece>) {
        self.take(run, now_ns, out);
        self.report_held();
    }

    /// [`Self::push`] for each of `runs` in turn (a batch).
    pub fn push_all(
        &mut self,
        runs: impl IntoIterator<Item = Run>,
        now_ns: u64,
        out: &mut Vec<Piece>,
    ) {
        for run in runs {
            self.take(run, now_ns, out);
        }
        self.report_held();
    }

    /// The capture's origins are `0..count`: each must send a packet newer
    /// than a held one, or end, before that one may go ahead of the window.
    /// Called again when origins join (`follow`).
    pub fn expect_origins(&mut self, count: usize) {
        self.origins_known = true;
        if self.origins.len() < count {
            self.origins.resize_with(count, Origin::default);
        }
    }

    /// `origin` will send nothing more: it holds no packet back any more.
    pub fn end(&mut self, origin: u32) {
        if let Some(origin) = self.origins.get_mut(origin as usize) {
            origin.ended = true;
        }
    }

    /// Appends to `out`, oldest first, every packet that is at least
    /// `window` old at `now_ns`, or that every origin still sending has
    /// passed by [`ORIGIN_DISORDER`].
    pub fn pop_ready(&mut self, now_ns: u64, out: &mut Vec<Piece>) {
        let waited = now_ns.checked_sub(self.window_ns);
        let passed = self
            .progress_ns()
            .and_then(|progress| progress.checked_sub(self.disorder_ns));
        if let Some(bound) = waited.max(passed) {
            while self.send_oldest(bound, None, out) {}
        }
        self.report_held();
    }

    /// The newest timestamp every origin still sending has reached, when
    /// the origins are known and each has sent something.
    fn progress_ns(&self) -> Option<u64> {
        if !self.origins_known {
            return None;
        }
        self.origins
            .iter()
            .filter(|origin| !origin.ended)
            .try_fold(u64::MAX, |slowest, origin| {
                Some(slowest.min(origin.newest_ns?))
            })
    }

    /// When the oldest held packet becomes ready (nanoseconds since the
    /// epoch), if any is held.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.runs
            .peek()
            .map(|held| held.key().0.saturating_add(self.window_ns))
    }

    /// Appends every held packet to `out`, oldest first.
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        while self.send_oldest(u64::MAX, None, out) {}
        self.report_held();
    }

    /// How many packets from `origin` are held.
    pub fn held_from(&self, origin: u32) -> usize {
        self.origins
            .get(origin as usize)
            .map_or(0, |origin| origin.held)
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
    fn take(&mut self, mut run: Run, now_ns: u64, out: &mut Vec<Piece>) {
        let clamped = run.clamp_after(now_ns.saturating_add(MAX_FUTURE_NS));
        if let Some(clamped) = &clamped {
            *self.clamped.entry(run.origin).or_default() += clamped.blocks.len() as u64;
        }
        let index = run.origin as usize;
        if self.origins.len() <= index {
            self.origins.resize_with(index + 1, Origin::default);
        }
        let origin = &mut self.origins[index];
        let newest = clamped.as_ref().unwrap_or(&run).blocks.last();
        if let Some(newest) = newest {
            origin.newest_ns = Some(origin.newest_ns.unwrap_or(0).max(newest.timestamp_ns));
        }
        // A packet after the end (a reconnection) holds others back again.
        origin.ended = false;
        self.hold(run, out);
        if let Some(clamped) = clamped {
            self.hold(clamped, out);
        }
        while self.held_bytes > self.max_held_bytes
            && self.send_oldest(u64::MAX, Some(self.held_bytes - self.max_held_bytes), out)
        {
        }
    }

    /// Holds `run`, but for its packets older than one already sent: they
    /// go out at once, counted.
    fn hold(&mut self, mut run: Run, out: &mut Vec<Piece>) {
        if let Some(sent) = self.sent_up_to {
            let late = run.pending().partition_point(|b| b.timestamp_ns < sent);
            if late > 0 {
                let piece = run.take_front(late);
                for block in piece.blocks() {
                    *self
                        .out_of_order
                        .entry((piece.origin, epb::interface_id_at(block)))
                        .or_default() += 1;
                    crate::metrics::metrics().out_of_order();
                }
                out.push(piece);
            }
        }
        let count = run.pending().len();
        if count == 0 {
            return;
        }
        self.held_bytes += run.held_size();
        self.held_packets += count;
        self.origins[run.origin as usize].held += count;
        run.seq = self.arrivals;
        self.arrivals += 1;
        self.runs.push(Held(run));
    }

    /// Sends the oldest held packets that are not newer than `bound`, as
    /// one piece of one run, and with `excess` no more than it takes to
    /// free that many bytes. False when none is.
    fn send_oldest(&mut self, bound: u64, excess: Option<usize>, out: &mut Vec<Piece>) -> bool {
        let Some(Held(mut run)) = self.runs.pop() else {
            return false;
        };
        let next = self.runs.peek().map(Held::key);
        let seq = run.seq;
        let mut count = run.pending().partition_point(|block| {
            block.timestamp_ns <= bound && next.is_none_or(|next| (block.timestamp_ns, seq) < next)
        });
        if let Some(excess) = excess {
            count = count.min(run.blocks_to_free(excess));
        }
        if count == 0 {
            self.runs.push(Held(run));
            return false;
        }
        let newest = run.pending()[count - 1].timestamp_ns;
        self.held_bytes -= run.charge(run.next, run.next + count);
        self.held_packets -= count;
        self.origins[run.origin as usize].held -= count;
        self.sent_up_to = Some(self.sent_up_to.unwrap_or(0).max(newest));
        out.push(run.take_front(count));
        if run.pending().is_empty() {
            self.held_bytes -= RUN_OVERHEAD;
            self.shrink();
        } else {
            self.runs.push(Held(run));
        }
        true
    }

    /// Gives back the heap's room once it holds less than a quarter of it.
    fn shrink(&mut self) {
        let capacity = self.runs.capacity();
        if capacity > 8 && self.runs.len() < capacity / 4 {
            self.runs.shrink_to(self.runs.len() * 2);
        }
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

    fn packet(origin: u32, timestamp_ns: u64, len: usize) -> Run {
        Run::from_wire(&pcap_proto::packets::Packet {
            timestamp_ns,
            origin,
            interface: 0,
            original_length: len as u32,
            data: vec![0; len],
            ..pcap_proto::packets::Packet::default()
        })
    }

    /// (origin, timestamp) of each packet sent.
    fn order(out: &[Piece]) -> Vec<(u32, u64)> {
        out.iter()
            .flat_map(|piece| piece.blocks().map(|b| (piece.origin, epb::timestamp_at(b))))
            .collect()
    }

    fn times(out: &[Piece]) -> Vec<u64> {
        order(out).into_iter().map(|(_, ts)| ts).collect()
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
        let origins: Vec<_> = order(&out).into_iter().map(|(origin, _)| origin).collect();
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
        let order: Vec<_> = order(&out)
            .into_iter()
            .map(|(origin, ts)| (origin, ts / SECOND))
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
        let cost = packet(0, 0, 100).held_size();
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
            merger.held_packets() * (size_of::<Run>() + size_of::<Block>()) <= BUDGET,
            "{} packets held",
            merger.held_packets()
        );
        assert_eq!(merger.held_packets() + order(&out).len(), 1_000_000);
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

    fn batch(origin: u32, stamps: &[(u32, u64)]) -> Packets {
        let packets: Vec<_> = stamps
            .iter()
            .map(|&(interface, timestamp_ns)| pcap_proto::packets::Packet {
                timestamp_ns,
                interface,
                data: vec![0; 10],
                ..pcap_proto::packets::Packet::default()
            })
            .collect();
        Packets::from_packets(origin, &packets)
    }

    #[test]
    fn a_batch_in_order_leaves_as_one_slice_of_it() {
        let batch = batch(
            0,
            &[
                (0, SECOND),
                (0, 2 * SECOND),
                (1, 2 * SECOND),
                (0, 3 * SECOND),
            ],
        );
        let runs = Run::split(&batch).unwrap();
        assert_eq!(runs.len(), 1);
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push_all(runs, NOW, &mut out);
        assert_eq!(merger.held_packets(), 4);
        merger.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].packets, out[0].captured_bytes), (4, 40));
        assert_eq!(out[0].records, batch.records);
        assert_eq!(
            out[0].records.as_ptr(),
            batch.records.as_ptr(),
            "not a copy"
        );
    }

    #[test]
    fn interleaved_cpus_make_runs_that_still_merge_in_order() {
        let stamps = [1, 3, 5, 2, 4, 6, 6].map(|ts| (0, ts * SECOND));
        let runs = Run::split(&batch(0, &stamps)).unwrap();
        assert_eq!(runs.len(), 2);
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push_all(runs, NOW, &mut out);
        merger.pop_ready(3 * SECOND + WINDOW.as_nanos() as u64, &mut out);
        assert_eq!(times(&out), [1, 2, 3].map(|ts| ts * SECOND));
        assert_eq!(merger.held_packets(), 4);
        merger.flush(&mut out);
        assert_eq!(times(&out), [1, 2, 3, 4, 5, 6, 6].map(|ts| ts * SECOND));
        assert_eq!(merger.out_of_order_total(), 0);
        assert_eq!((merger.held_packets(), merger.held_bytes()), (0, 0));
    }

    #[test]
    fn only_the_future_part_of_a_batch_is_clamped() {
        let stamps = [
            NOW - SECOND,
            NOW + SECOND / 2,
            NOW + 3600 * SECOND,
            NOW + 7200 * SECOND,
        ];
        let runs = Run::split(&batch(0, &stamps.map(|ts| (0, ts)))).unwrap();
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push_all(runs, NOW, &mut out);
        assert_eq!(merger.clamped(0), 2);
        merger.flush(&mut out);
        let latest = NOW + MAX_FUTURE_NS;
        assert_eq!(
            times(&out),
            [NOW - SECOND, NOW + SECOND / 2, latest, latest]
        );
        assert_eq!(merger.held_bytes(), 0);
    }

    #[test]
    fn the_late_part_of_a_batch_goes_at_once_counted_per_interface() {
        let mut merger = Merger::new(WINDOW, 1 << 20);
        let mut out = Vec::new();
        merger.push(packet(0, 10 * SECOND, 1), NOW, &mut out);
        merger.flush(&mut out);
        let stamps = [
            (1, 8 * SECOND),
            (0, 9 * SECOND),
            (0, 10 * SECOND),
            (0, 11 * SECOND),
        ];
        let runs = Run::split(&batch(1, &stamps)).unwrap();
        merger.push_all(runs, NOW, &mut out);
        assert_eq!(times(&out), [10 * SECOND, 8 * SECOND, 9 * SECOND]);
        assert_eq!(
            (merger.out_of_order(1, 1), merger.out_of_order(1, 0)),
            (1, 1)
        );
        assert_eq!(merger.held_from(1), 2);
        assert_eq!(
            merger.held_bytes(),
            Run::split(&batch(1, &stamps[2..])).unwrap()[0].held_size()
        );
    }
}
