//! One capture's response stream: what the agent tasks pass on goes to the
//! client, packets through the reorder window, and the capture's global
//! packet and byte limits are enforced over the merged stream.
//!
//! Everything an origin sends from its first `Statistics` (or final event)
//! on is its tail. A tail waits until the merger holds no packet of that
//! origin, so the client sees an origin's packets before its statistics,
//! and the statistics carry the final out-of-order and after-limit counts.

use std::{collections::HashMap, mem, time::Duration};

use pcap_proto::options::START_REQUEST_TIMEOUT;
use pcap_proto::packets::{BytesMut, epb};
use pcap_proto::unix_now_ns;
use pcap_proto::v1::{
    CaptureResponse, CaptureStopped, Event, Limit, LimitReached, Packets, Statistics,
    capture_response::Payload, event,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;

use crate::{
    fanout::{AgentMessage, FromAgent},
    merge::{Merger, Piece},
    stop::{Stop, StopLevel},
};

/// Bytes of blocks per `Packets` message sent to the client, as agents do.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// A piece of the merge this large goes to the client as a message of its
/// own, a slice of the agent's batch (no copy). Smaller pieces of one origin
/// are copied together, so that packets interleaved from many agents do not
/// each become a message.
const OWN_MESSAGE_BYTES: usize = 16 << 10;

/// The first message of a call's request stream, within
/// [`START_REQUEST_TIMEOUT`]: a client that opens a call and sends nothing
/// holds no task for longer.
pub async fn first_request<T>(requests: &mut tonic::Streaming<T>) -> Result<Option<T>, Status> {
    tokio::time::timeout(START_REQUEST_TIMEOUT, requests.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no start request within {}s",
                START_REQUEST_TIMEOUT.as_secs()
            ))
        })?
}

pub type ClientSink = mpsc::Sender<Result<CaptureResponse, Status>>;

/// The client went away: its response stream was dropped.
#[derive(Debug)]
pub struct ClientGone;

/// Limits over the merged stream; 0 means none.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalLimits {
    pub packets: u64,
    pub bytes: u64,
}

/// What a session did, for the capture's log line.
#[derive(Debug, Default)]
pub struct Summary {
    pub packets: u64,
    pub bytes: u64,
    pub after_limit: u64,
    pub out_of_order: u64,
    /// Packets whose timestamp was ahead of the API's clock and clamped.
    pub future_clamped: u64,
    pub any_started: bool,
    pub limit_reached: Option<Limit>,
    pub client_gone: bool,
}

#[derive(Default)]
struct Origin {
    /// The tail has begun: what comes now waits in `tail`.
    finishing: bool,
    tail: Vec<Payload>,
}

pub struct Session {
    sink: ClientSink,
    stop: Stop,
    merger: Merger,
    limits: GlobalLimits,
    origins: Vec<Origin>,
    /// Packets not sent because a limit was reached, per (origin, interface).
    withheld: HashMap<(u32, u32), u64>,
    summary: Summary,
}

impl Session {
    pub fn new(
        sink: ClientSink,
        stop: Stop,
        mut merger: Merger,
        limits: GlobalLimits,
        origins: usize,
    ) -> Self {
        merger.expect_origins(origins);
        Self {
            sink,
            stop,
            merger,
            limits,
            origins: (0..origins).map(|_| Origin::default()).collect(),
            withheld: HashMap::new(),
            summary: Summary::default(),
        }
    }

    /// Forwards until every agent task has ended (its sender dropped), then
    /// flushes and, when some agent started, ends with `capture_stopped`.
    /// When none started, the stream ends after their failure events.
    pub async fn run(mut self, from_agents: mpsc::Receiver<AgentMessage>) -> Summary {
        if self.forward(from_agents).await.is_err() {
            self.summary.client_gone = true;
            self.stop.request(StopLevel::Abort, "the client went away");
        }
        self.summary.out_of_order = self.merger.out_of_order_total();
        self.summary.future_clamped = self.merger.clamped_total();
        self.summary
    }

    async fn forward(
        &mut self,
        mut from_agents: mpsc::Receiver<AgentMessage>,
    ) -> Result<(), ClientGone> {
        let sink = self.sink.clone();
        loop {
            let deadline = self.merger.next_deadline_ns().map(instant_at);
            tokio::select! {
                message = from_agents.recv() => match message {
                    Some(message) => self.on_agent(message).await?,
                    None => break,
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.send_ready().await?;
                    self.release_tails().await?;
                }
                () = sink.closed() => return Err(ClientGone),
            }
        }
        let mut rest = Vec::new();
        self.merger.flush(&mut rest);
        self.send_packets(rest).await?;
        for origin in &mut self.origins {
            origin.finishing = true;
        }
        self.release_tails().await?;
        if self.summary.any_started {
            self.send(Payload::Event(Event {
                origin: None,
                message: "the capture stopped on every origin".to_owned(),
                kind: Some(event::Kind::CaptureStopped(CaptureStopped {})),
            }))
            .await?;
        }
        Ok(())
    }

    async fn on_agent(&mut self, message: AgentMessage) -> Result<(), ClientGone> {
        // An origin announced mid-stream (`follow`): known from now on.
        if let FromAgent::Payload(Payload::Origin(origin)) = &message.body
            && origin.id as usize >= self.origins.len()
        {
            self.origins
                .resize_with(origin.id as usize + 1, Origin::default);
            self.merger.expect_origins(self.origins.len());
        }
        let Some(origin) = self.origins.get_mut(message.origin as usize) else {
            return Ok(());
        };
        match message.body {
            FromAgent::Packets(runs) => {
                let clamped_before = self.merger.clamped(message.origin);
                let now = unix_now_ns();
                let mut ready = Vec::new();
                self.merger.push_all(runs, now, &mut ready);
                self.merger.pop_ready(now, &mut ready);
                self.send_packets(ready).await?;
                if clamped_before == 0 && self.merger.clamped(message.origin) > 0 {
                    self.clock_ahead(message.origin).await?;
                }
            }
            FromAgent::Payload(payload) => {
                if is_event(&payload, |k| matches!(k, event::Kind::CaptureStarted(_))) {
                    self.summary.any_started = true;
                }
                origin.finishing |= begins_tail(&payload);
                if origin.finishing {
                    origin.tail.push(payload);
                } else {
                    self.send(payload).await?;
                }
            }
            FromAgent::Ended => {
                origin.finishing = true;
                self.merger.end(message.origin);
                // What waited for this origin alone may go now.
                self.send_ready().await?;
            }
        }
        self.release_tails().await
    }

    /// Sends what the merger may release now.
    async fn send_ready(&mut self) -> Result<(), ClientGone> {
        let mut ready = Vec::new();
        self.merger.pop_ready(unix_now_ns(), &mut ready);
        self.send_packets(ready).await
    }

    /// Says once per origin that its clock runs ahead of the API's, so that
    /// its timestamps were clamped.
    async fn clock_ahead(&self, origin: u32) -> Result<(), ClientGone> {
        let ahead = crate::merge::MAX_FUTURE.as_secs_f64();
        tracing::warn!(
            origin,
            "packet timestamps more than {ahead}s ahead of the API's clock: clamped"
        );
        self.send(Payload::Event(Event {
            origin: Some(origin),
            message: format!(
                "packet timestamps more than {ahead}s ahead of the API's clock were set to \
                 the API's time + {ahead}s: this host's clock runs ahead"
            ),
            kind: None,
        }))
        .await
    }

    /// Sends the tail of every finishing origin the merger holds nothing of.
    async fn release_tails(&mut self) -> Result<(), ClientGone> {
        for id in 0..self.origins.len() {
            let origin = &mut self.origins[id];
            if !origin.finishing || origin.tail.is_empty() || self.merger.held_from(id as u32) > 0 {
                continue;
            }
            for payload in mem::take(&mut origin.tail) {
                let payload = match payload {
                    Payload::Statistics(statistics) => {
                        Payload::Statistics(self.add_own_counts(statistics))
                    }
                    other => other,
                };
                self.send(payload).await?;
            }
        }
        Ok(())
    }

    /// The API's counts: packets it sent out of order, and packets the
    /// agent sent that the API withheld after a limit (moved from `sent` to
    /// `after_limit`, so that `matched` still adds up).
    fn add_own_counts(&self, mut statistics: Statistics) -> Statistics {
        let key = (statistics.origin, statistics.interface);
        let withheld = self.withheld.get(&key).copied().unwrap_or(0);
        statistics.sent = statistics.sent.saturating_sub(withheld);
        statistics.after_limit += withheld;
        statistics.out_of_order += self.merger.out_of_order(key.0, key.1);
        statistics
    }

    /// Sends the merge's pieces, up to the global limits. The packet that
    /// reaches a limit stops the agents and announces `limit_reached`.
    async fn send_packets(&mut self, pieces: Vec<Piece>) -> Result<(), ClientGone> {
        let mut sendable = Vec::with_capacity(pieces.len());
        let mut newly_reached = None;
        for mut piece in pieces {
            if self.summary.limit_reached.is_none() {
                let (fits, limit) = self.within_limits(&piece);
                let sent = piece.split_to(fits);
                self.summary.packets += sent.packets;
                self.summary.bytes += sent.captured_bytes;
                if sent.packets > 0 {
                    sendable.push(sent);
                }
                if limit.is_some() {
                    self.summary.limit_reached = limit;
                    newly_reached = limit;
                }
            }
            if piece.packets > 0 {
                self.withhold(&piece);
            }
        }
        for packets in messages(sendable) {
            self.send(Payload::Packets(packets)).await?;
        }
        if let Some(limit) = newly_reached {
            self.stop.request(StopLevel::Drain, limit_reason(limit));
            let message = match limit {
                Limit::Bytes => format!("the byte limit of {} was reached", self.limits.bytes),
                _ => format!("the packet limit of {} was reached", self.limits.packets),
            };
            self.send(Payload::Event(Event {
                origin: None,
                message,
                kind: Some(event::Kind::LimitReached(LimitReached {
                    limit: limit as i32,
                })),
            }))
            .await?;
        }
        Ok(())
    }

    /// How many of `piece`'s packets the global limits still let through,
    /// and the limit that stops the rest (or that the last one reaches).
    fn within_limits(&self, piece: &Piece) -> (u64, Option<Limit>) {
        let (packets, bytes) = (self.summary.packets, self.summary.bytes);
        let bytes_fit = |more: u64| self.limits.bytes == 0 || bytes + more <= self.limits.bytes;
        if bytes_fit(piece.captured_bytes)
            && (self.limits.packets == 0 || packets + piece.packets < self.limits.packets)
        {
            return (piece.packets, None);
        }
        let (mut sent, mut captured) = (0, 0);
        for block in piece.blocks() {
            let len = u64::from(epb::captured_len_at(block));
            if !bytes_fit(captured + len) {
                return (sent, Some(Limit::Bytes));
            }
            sent += 1;
            captured += len;
            if self.limits.packets > 0 && packets + sent == self.limits.packets {
                return (sent, Some(Limit::Packets));
            }
        }
        (sent, None)
    }

    /// Counts `piece`'s packets as withheld after a limit.
    fn withhold(&mut self, piece: &Piece) {
        for block in piece.blocks() {
            *self
                .withheld
                .entry((piece.origin, epb::interface_id_at(block)))
                .or_default() += 1;
        }
        self.summary.after_limit += piece.packets;
    }

    /// Waits while the client is behind: this is the back-pressure.
    async fn send(&self, payload: Payload) -> Result<(), ClientGone> {
        let response = CaptureResponse {
            payload: Some(payload),
        };
        self.sink.send(Ok(response)).await.map_err(|_| ClientGone)
    }
}

/// The `Packets` messages of `pieces`, in order, none over
/// [`MAX_BATCH_BYTES`] (the client's message limit is 4 MiB, and an agent
/// may send batches that large): a piece of [`OWN_MESSAGE_BYTES`] or more as
/// it is, smaller ones of one origin copied together.
fn messages(pieces: Vec<Piece>) -> Vec<Packets> {
    let mut messages = Vec::new();
    let mut small: Option<(u32, BytesMut)> = None;
    for piece in pieces
        .into_iter()
        .flat_map(|piece| piece.into_chunks(MAX_BATCH_BYTES))
    {
        let own = piece.records.len() >= OWN_MESSAGE_BYTES;
        if let Some((origin, copied)) = small.take_if(|(origin, copied)| {
            own || *origin != piece.origin || copied.len() + piece.records.len() > MAX_BATCH_BYTES
        }) {
            messages.push(Packets {
                origin,
                records: copied.freeze(),
            });
        }
        if own {
            messages.push(Packets {
                origin: piece.origin,
                records: piece.records,
            });
        } else {
            small
                .get_or_insert_with(|| (piece.origin, BytesMut::new()))
                .1
                .extend_from_slice(&piece.records);
        }
    }
    if let Some((origin, copied)) = small {
        messages.push(Packets {
            origin,
            records: copied.freeze(),
        });
    }
    messages
}

fn limit_reason(limit: Limit) -> &'static str {
    match limit {
        Limit::Bytes => "the byte limit was reached",
        _ => "the packet limit was reached",
    }
}

fn is_event(payload: &Payload, kind: impl Fn(&event::Kind) -> bool) -> bool {
    matches!(payload, Payload::Event(Event { kind: Some(k), .. }) if kind(k))
}

/// Statistics and final events: after them an origin sends no packets.
fn begins_tail(payload: &Payload) -> bool {
    matches!(payload, Payload::Statistics(_))
        || is_event(payload, |k| {
            matches!(
                k,
                event::Kind::CaptureStopped(_)
                    | event::Kind::LimitReached(_)
                    | event::Kind::ConnectionError(_)
                    | event::Kind::StartFailed(_)
                    | event::Kind::InstanceUnavailable(_)
            )
        })
}

/// The monotonic instant of a wall-clock time.
fn instant_at(wall_ns: u64) -> Instant {
    Instant::now() + Duration::from_nanos(wall_ns.saturating_sub(unix_now_ns()))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use pcap_proto::packets::Bytes;

    use super::*;

    fn piece(origin: u32, len: usize) -> Piece {
        Piece {
            origin,
            records: Bytes::from(vec![u8::try_from(len % 251).unwrap(); len]),
            packets: 1,
            captured_bytes: 0,
        }
    }

    #[test]
    fn large_pieces_go_as_they_are_small_ones_of_one_origin_together() {
        let pieces = [
            piece(0, 100),
            piece(0, 200),
            piece(0, OWN_MESSAGE_BYTES),
            piece(0, 300),
            piece(1, 400),
            piece(1, 500),
        ];
        let large = pieces[2].records.clone();
        let messages = messages(pieces.to_vec());
        let shape: Vec<_> = messages
            .iter()
            .map(|m| (m.origin, m.records.len()))
            .collect();
        assert_eq!(
            shape,
            [(0, 300), (0, OWN_MESSAGE_BYTES), (0, 300), (1, 900)]
        );
        assert_eq!(messages[1].records.as_ptr(), large.as_ptr(), "not a copy");
        let sent: Vec<u8> = messages.iter().flat_map(|m| m.records.to_vec()).collect();
        let given: Vec<u8> = pieces.iter().flat_map(|p| p.records.to_vec()).collect();
        assert_eq!(sent, given, "the same bytes in the same order");
    }

    #[test]
    fn a_piece_larger_than_a_batch_is_cut_at_its_blocks() {
        let packets: Vec<_> = (0..30)
            .map(|i| pcap_proto::packets::Packet {
                timestamp_ns: i,
                data: vec![0; 100 << 10],
                ..pcap_proto::packets::Packet::default()
            })
            .collect();
        let batch = Packets::from_packets(0, &packets);
        let piece = Piece {
            origin: 0,
            records: batch.records.clone(),
            packets: 30,
            captured_bytes: 30 * (100 << 10),
        };
        let messages = messages(vec![piece]);
        assert!(messages.len() >= 3, "{} messages", messages.len());
        assert!(messages.iter().all(|m| m.records.len() <= MAX_BATCH_BYTES));
        let sent: usize = messages
            .iter()
            .map(|m| m.check().map(|()| m.records().count()).unwrap())
            .sum();
        assert_eq!(sent, 30);
        let joined: Vec<u8> = messages.iter().flat_map(|m| m.records.to_vec()).collect();
        assert_eq!(joined, batch.records.to_vec());
    }

    #[test]
    fn small_pieces_stop_at_the_batch_size() {
        let pieces = vec![piece(0, OWN_MESSAGE_BYTES - 1); MAX_BATCH_BYTES / OWN_MESSAGE_BYTES + 2];
        let messages = messages(pieces);
        assert_eq!(messages.len(), 2);
        assert!(messages.iter().all(|m| m.records.len() <= MAX_BATCH_BYTES));
    }
}
