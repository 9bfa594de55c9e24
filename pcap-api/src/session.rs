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
use pcap_proto::packets::BytesMut;
use pcap_proto::unix_now_ns;
use pcap_proto::v1::{
    CaptureResponse, CaptureStopped, Event, Limit, LimitReached, Packets, Statistics,
    capture_response::Payload, event,
};
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;

use crate::{
    fanout::{AgentMessage, FromAgent},
    merge::{Merger, Packet},
    stop::{Stop, StopLevel},
};

/// Bytes of blocks per `Packets` message sent to the client, as agents do.
const MAX_BATCH_BYTES: usize = 1 << 20;

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
            FromAgent::Packets(packets) => {
                let clamped_before = self.merger.clamped(message.origin);
                let now = unix_now_ns();
                // About as many leave the window as arrive.
                let mut ready = Vec::with_capacity(packets.len());
                self.merger.push_all(packets, now, &mut ready);
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

    /// Sends packets in batches, up to the global limits. The packet that
    /// reaches a limit stops the agents and announces `limit_reached`.
    ///
    /// A batch holds one origin's packets; consecutive blocks of one
    /// agent's batch go out as one slice of it (no copy), blocks from
    /// different places are copied together.
    async fn send_packets(&mut self, packets: Vec<Packet>) -> Result<(), ClientGone> {
        let mut batch = Batch::default();
        let mut newly_reached = None;
        for packet in packets {
            if self.summary.limit_reached.is_some() {
                self.withhold(&packet);
                continue;
            }
            let len = u64::from(packet.captured_len());
            if self.limits.bytes > 0 && self.summary.bytes + len > self.limits.bytes {
                self.withhold(&packet);
                self.summary.limit_reached = Some(Limit::Bytes);
                newly_reached = Some(Limit::Bytes);
                continue;
            }
            self.summary.packets += 1;
            self.summary.bytes += len;
            if (batch.origin.is_some_and(|origin| origin != packet.origin)
                || batch.bytes >= MAX_BATCH_BYTES)
                && let Some(full) = batch.take()
            {
                self.send(Payload::Packets(full)).await?;
            }
            batch.push(packet);
            if self.limits.packets > 0 && self.summary.packets == self.limits.packets {
                self.summary.limit_reached = Some(Limit::Packets);
                newly_reached = Some(Limit::Packets);
            }
        }
        if let Some(last) = batch.take() {
            self.send(Payload::Packets(last)).await?;
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

    fn withhold(&mut self, packet: &Packet) {
        *self
            .withheld
            .entry((packet.origin, packet.interface))
            .or_default() += 1;
        self.summary.after_limit += 1;
    }

    /// Waits while the client is behind: this is the back-pressure.
    async fn send(&self, payload: Payload) -> Result<(), ClientGone> {
        let response = CaptureResponse {
            payload: Some(payload),
        };
        self.sink.send(Ok(response)).await.map_err(|_| ClientGone)
    }
}

/// One origin's `Packets` message being assembled: the run of blocks
/// that follow each other in one agent batch (`first..=last`), and what
/// came before it, copied.
#[derive(Default)]
struct Batch {
    origin: Option<u32>,
    run: Option<(Packet, Packet)>,
    copied: BytesMut,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, packet: Packet) {
        self.origin = Some(packet.origin);
        self.bytes += packet.block().len();
        match &mut self.run {
            Some((_, last)) if last.followed_by(&packet) => *last = packet,
            run => {
                if let Some((first, last)) = run.take() {
                    self.copied.extend_from_slice(&first.run_to(&last));
                }
                *run = Some((packet.clone(), packet));
            }
        }
    }

    /// The message, if any packet was pushed; the batch is empty again.
    fn take(&mut self) -> Option<Packets> {
        let origin = self.origin.take()?;
        self.bytes = 0;
        let run = self.run.take().map(|(first, last)| first.run_to(&last));
        let records = match run {
            Some(run) if self.copied.is_empty() => run,
            run => {
                if let Some(run) = run {
                    self.copied.extend_from_slice(&run);
                }
                self.copied.split().freeze()
            }
        };
        Some(Packets { origin, records })
    }
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
