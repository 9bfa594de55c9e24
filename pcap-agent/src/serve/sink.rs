//! Turns a capture into `CaptureResponse` messages on a [`QueueSender`]:
//! interface descriptions, packet batches (with their comments), name
//! records, congestion events, and the final statistics.

use std::{
    io,
    time::{Duration, Instant},
};

use pcap_common::Direction as KernelDirection;
use pcap_format::pcapng::epb;
use pcap_proto::v1::{
    CaptureResponse, CaptureStarted, CaptureStopped, Congested, Direction, Event,
    InterfaceDescription, InterfaceRemoved, Limit, LimitReached, NameRecord, NameRecords, Packets,
    Stage, Statistics, capture_response::Payload, event::Kind,
};
use prost::bytes::Bytes;

use super::queue::{Closed, QueueSender};
use crate::{
    capture::{self, Delivery, PacketSink, Removed, Report, StopReason},
    iface::Interface,
};

/// A `Packets` message is sent when it would grow past this.
const MAX_BATCH_BYTES: u64 = 1 << 20;

/// What a packet's Enhanced Packet Block adds to its data and comment, at
/// most (padding aside). Packets are charged their whole block against
/// the send budget and the batch size.
#[cfg(test)]
const PACKET_OVERHEAD: u64 = epb::EPB_OVERHEAD as u64;

/// A new batch's buffer starts at least this large, and as large as the
/// last batch was (to the next power of two, up to [`MAX_BATCH_BYTES`]), so
/// that a steady stream fills each buffer without growing it step by step.
const BATCH_CAPACITY: usize = 64 << 10;

/// `Event{congested}` is sent at most this often.
const CONGESTION_REPORT_INTERVAL: Duration = Duration::from_secs(1);

pub struct StreamSink {
    queue: QueueSender,
    /// Stamped on every message.
    origin: u32,
    /// The Enhanced Packet Blocks of the batch being filled, encoded
    /// straight into the buffer that becomes `Packets.records`.
    batch: Vec<u8>,
    /// Bytes `batch` holds of the send budget.
    batch_bytes: u64,
    /// Packets dropped since the last `Event{congested}`.
    unreported_drops: u64,
    last_congestion_report: Option<Instant>,
    start_ns: u64,
    /// Label directions from the app's point of view (a container capture
    /// on its host-side veth); see [`direction`].
    app_perspective: bool,
}

/// The direction a packet is labelled with.
///
/// Normally from the host's point of view: TC ingress is `INBOUND`, egress
/// `OUTBOUND`. On a container's host-side veth (`app_perspective`) that
/// would be backwards for the user: a packet the app sends leaves the
/// container's `eth0` and *enters* the host side (TC ingress), so it is
/// `OUTBOUND`; one delivered to the app leaves the host side (TC egress),
/// so it is `INBOUND`. pcapng's `epb_flags` follow this label.
pub fn direction(kernel: Option<KernelDirection>, app_perspective: bool) -> Direction {
    match (kernel, app_perspective) {
        (Some(KernelDirection::Ingress), false) | (Some(KernelDirection::Egress), true) => {
            Direction::Inbound
        }
        (Some(KernelDirection::Egress), false) | (Some(KernelDirection::Ingress), true) => {
            Direction::Outbound
        }
        (None, _) => Direction::Unspecified,
    }
}

impl StreamSink {
    pub fn new(queue: QueueSender, origin: u32) -> Self {
        Self {
            queue,
            origin,
            batch: Vec::with_capacity(BATCH_CAPACITY),
            batch_bytes: 0,
            unreported_drops: 0,
            last_congestion_report: None,
            start_ns: 0,
            app_perspective: false,
        }
    }

    /// Labels directions from the app's point of view ([`direction`]).
    pub fn set_app_perspective(&mut self, on: bool) {
        self.app_perspective = on;
    }

    pub fn queue(&self) -> &QueueSender {
        &self.queue
    }

    fn send(&self, payload: Payload) -> io::Result<()> {
        self.queue
            .send(
                CaptureResponse {
                    payload: Some(payload),
                },
                0,
            )
            .map_err(closed)
    }

    fn send_event(&self, message: String, kind: Kind) -> io::Result<()> {
        self.send(Payload::Event(Event {
            origin: Some(self.origin),
            message,
            kind: Some(kind),
        }))
    }

    fn send_batch(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        // The budget charges a batch its length, and a queued batch keeps
        // its whole buffer: one that fills less than half of it is copied
        // out (it is small) and the buffer kept for the next, so that what
        // waits for a slow client holds at most twice what it is charged.
        let records = if self.batch.len() < self.batch.capacity() / 2 {
            let records = Bytes::copy_from_slice(&self.batch);
            self.batch.clear();
            records
        } else {
            let capacity = self
                .batch
                .len()
                .next_power_of_two()
                .clamp(BATCH_CAPACITY, MAX_BATCH_BYTES as usize);
            Bytes::from(std::mem::replace(
                &mut self.batch,
                Vec::with_capacity(capacity),
            ))
        };
        let reserved = std::mem::take(&mut self.batch_bytes);
        self.queue
            .send(
                CaptureResponse {
                    payload: Some(Payload::Packets(Packets {
                        origin: self.origin,
                        records,
                    })),
                },
                reserved,
            )
            .map_err(closed)
    }

    /// Sends `Event{congested}` for the drops not yet reported, when there
    /// are some and the last report is old enough (or `now_or_never`).
    fn report_congestion(&mut self, now_or_never: bool) -> io::Result<()> {
        if self.unreported_drops == 0 {
            return Ok(());
        }
        let due = now_or_never
            || self
                .last_congestion_report
                .is_none_or(|at| at.elapsed() >= CONGESTION_REPORT_INTERVAL);
        if !due {
            return Ok(());
        }
        let dropped = std::mem::take(&mut self.unreported_drops);
        self.last_congestion_report = Some(Instant::now());
        self.send_event(
            format!(
                "the agent's send queue was full: dropped {dropped} packets \
                 (the network, the API or the client is slower than the capture)"
            ),
            Kind::Congested(Congested {
                stage: Stage::AgentQueue.into(),
                dropped,
            }),
        )
    }
}

impl PacketSink for StreamSink {
    fn begin(&mut self, interfaces: &[Interface], snaplen: u32) -> io::Result<()> {
        self.start_ns = unix_now_ns();
        for (id, interface) in interfaces.iter().enumerate() {
            self.send(Payload::Interface(InterfaceDescription {
                origin: self.origin,
                id: id as u32,
                name: interface.name.clone(),
                link_type: interface.link_type.into(),
                snaplen,
            }))?;
        }
        self.send_event(
            "capture started".to_owned(),
            Kind::CaptureStarted(CaptureStarted {}),
        )
    }

    /// Encodes the packet's Enhanced Packet Block straight into the batch,
    /// when the block fits the send budget; otherwise drops it (counted).
    fn packet(&mut self, _: &Interface, packet: &capture::Packet<'_>) -> io::Result<Delivery> {
        let direction = pcap_proto::packets::format_direction(direction(
            packet.direction,
            self.app_perspective,
        ));
        let charge = epb::epb_len(
            packet.data.len(),
            direction.is_some(),
            packet.comment.map(str::len),
        ) as u64;
        if self.batch_bytes + charge > MAX_BATCH_BYTES {
            self.send_batch()?;
        }
        if !self.queue.try_reserve(charge) {
            self.unreported_drops += 1;
            return Ok(Delivery::Dropped);
        }
        let block = pcap_format::Packet {
            interface_id: packet.interface,
            timestamp_ns: packet.unix_ns,
            original_len: packet.orig_len,
            data: packet.data,
            direction,
            comment: packet.comment,
        };
        if let Err(error) = epb::append_epb(&mut self.batch, &block, 0) {
            // A comment longer than pcapng allows: never from c2c insight.
            self.queue.release(charge);
            return Err(error);
        }
        self.batch_bytes += charge;
        Ok(Delivery::Delivered)
    }

    fn end_batch(&mut self) -> io::Result<()> {
        self.send_batch()?;
        self.report_congestion(false)
    }

    /// One `NameRecords` message, ahead of the packets that need it (it
    /// may overtake the batch being filled, which does not need it). Names
    /// are few, one per address: they are not charged to the budget.
    fn names(&mut self, entries: &[(std::net::Ipv4Addr, &str)]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.send(Payload::Names(NameRecords {
            origin: self.origin,
            records: entries
                .iter()
                .map(|(address, name)| NameRecord {
                    address: address.octets().to_vec(),
                    names: vec![(*name).to_owned()],
                })
                .collect(),
        }))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.end_batch()
    }

    fn finish(&mut self, report: &Report, unix_ns: u64) -> io::Result<()> {
        self.send_batch()?;
        self.report_congestion(true)?;
        for (id, (_, r)) in report.interfaces.iter().enumerate() {
            self.send(Payload::Statistics(Statistics {
                origin: self.origin,
                interface: id as u32,
                seen: r.kernel.seen,
                matched: r.kernel.matched,
                sent: r.delivered,
                dropped_kernel_ring: r.kernel.dropped_ring_full,
                dropped_kernel_copy: r.kernel.dropped_copy_failed,
                dropped_agent_queue: r.dropped,
                out_of_order: 0,
                after_limit: r.after_limit,
                start_ns: self.start_ns,
                end_ns: r.removed_ns.unwrap_or(unix_ns),
            }))?;
        }
        let limit = match report.stop {
            StopReason::Count => Some((Limit::Packets, "packet")),
            StopReason::Bytes => Some((Limit::Bytes, "byte")),
            StopReason::Duration => Some((Limit::Duration, "duration")),
            StopReason::Signal
            | StopReason::Requested
            | StopReason::OutputClosed
            | StopReason::InterfacesGone => None,
        };
        if let Some((limit, name)) = limit {
            self.send_event(
                format!("the {name} limit was reached"),
                Kind::LimitReached(LimitReached {
                    limit: limit.into(),
                }),
            )?;
        }
        let why = match report.stop {
            StopReason::Signal => "the agent is shutting down",
            StopReason::Requested => "stop requested",
            StopReason::InterfacesGone => "every interface was removed",
            _ => "limit reached",
        };
        self.send_event(
            format!("capture stopped: {why}"),
            Kind::CaptureStopped(CaptureStopped {}),
        )
    }

    /// `Event{interface_removed}`: the capture goes on with the origin's
    /// other interfaces, if any. Its statistics come with the others'.
    fn interface_removed(&mut self, removed: &Removed<'_>) -> io::Result<()> {
        self.send_batch()?;
        let name = &removed.interface.name;
        let message = if self.app_perspective {
            format!("the container's interface {name} was removed: the instance stopped or moved")
        } else {
            format!("interface {name} was removed")
        };
        self.send_event(
            message,
            Kind::InterfaceRemoved(InterfaceRemoved {
                interface: removed.id,
                removed_ns: removed.report.removed_ns.unwrap_or_default(),
            }),
        )
    }
}

fn closed(Closed: Closed) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the response stream was closed")
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use pcap_common::Counters;
    use tokio_stream::StreamExt as _;

    use super::*;
    use crate::{capture::InterfaceReport, iface::LinkLayerType, serve::queue::send_queue};

    fn interface() -> Interface {
        Interface {
            name: "eth0".to_owned(),
            index: 2,
            link_type: 1,
            hardware_type: LinkLayerType::Ether,
        }
    }

    fn packet(data: &[u8]) -> capture::Packet<'_> {
        capture::Packet {
            interface: 0,
            unix_ns: 7,
            orig_len: 1500,
            data,
            direction: Some(KernelDirection::Egress),
            packet_type: capture::PACKET_OUTGOING,
            mark: 0,
            comment: None,
        }
    }

    async fn payloads(stream: super::super::queue::QueueStream) -> Vec<Payload> {
        stream
            .map(|item| item.unwrap().payload.unwrap())
            .collect()
            .await
    }

    #[test]
    fn container_directions_are_the_apps() {
        use KernelDirection::{Egress, Ingress};
        // The host's view everywhere else.
        assert_eq!(direction(Some(Ingress), false), Direction::Inbound);
        assert_eq!(direction(Some(Egress), false), Direction::Outbound);
        // On s-<ip>, TC ingress is the app sending.
        assert_eq!(direction(Some(Ingress), true), Direction::Outbound);
        assert_eq!(direction(Some(Egress), true), Direction::Inbound);
        assert_eq!(direction(None, true), Direction::Unspecified);
    }

    #[tokio::test]
    async fn app_perspective_reaches_the_stream() {
        let (tx, rx) = send_queue(1 << 20);
        let mut sink = StreamSink::new(tx, 1);
        sink.set_app_perspective(true);
        sink.begin(&[interface()], 262_144).unwrap();
        sink.packet(&interface(), &packet(&[1, 2, 3])).unwrap();
        sink.end_batch().unwrap();
        drop(sink);
        let batch = payloads(rx)
            .await
            .into_iter()
            .find_map(|p| match p {
                Payload::Packets(batch) => Some(batch),
                _ => None,
            })
            .unwrap();
        // `packet` is TC egress: towards the app.
        assert_eq!(batch.packets().unwrap()[0].direction(), Direction::Inbound);
    }

    #[tokio::test]
    async fn drops_what_exceeds_the_budget_and_reports_it() {
        let (tx, rx) = send_queue(2 * (100 + PACKET_OVERHEAD));
        let mut sink = StreamSink::new(tx, 9);
        sink.begin(&[interface()], 262_144).unwrap();
        let data = [0u8; 100];
        let deliveries: Vec<Delivery> = (0..3)
            .map(|_| sink.packet(&interface(), &packet(&data)).unwrap())
            .collect();
        assert_eq!(
            deliveries,
            [Delivery::Delivered, Delivery::Delivered, Delivery::Dropped]
        );
        sink.end_batch().unwrap();
        let report = Report {
            interfaces: vec![(
                interface(),
                InterfaceReport {
                    kernel: Counters {
                        seen: 3,
                        matched: 3,
                        written: 3,
                        ..Counters::default()
                    },
                    delivered: 2,
                    dropped: 1,
                    after_limit: 0,
                    removed_ns: None,
                },
            )],
            stop: StopReason::Count,
        };
        sink.finish(&report, 8).unwrap();
        drop(sink);

        let payloads = payloads(rx).await;
        let kinds: Vec<&str> = payloads
            .iter()
            .map(|p| match p {
                Payload::Interface(_) => "interface",
                Payload::Packets(_) => "packets",
                Payload::Event(Event {
                    kind: Some(Kind::CaptureStarted(_)),
                    ..
                }) => "started",
                Payload::Event(Event {
                    kind: Some(Kind::Congested(c)),
                    origin: Some(9),
                    ..
                }) if c.dropped == 1 && c.stage() == Stage::AgentQueue => "congested",
                Payload::Statistics(s) if s.dropped_agent_queue == 1 && s.sent == 2 => "statistics",
                Payload::Event(Event {
                    kind: Some(Kind::LimitReached(l)),
                    ..
                }) if l.limit() == Limit::Packets => "limit",
                Payload::Event(Event {
                    kind: Some(Kind::CaptureStopped(_)),
                    ..
                }) => "stopped",
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "interface",
                "started",
                "packets",
                "congested",
                "statistics",
                "limit",
                "stopped"
            ]
        );
        let Payload::Packets(batch) = &payloads[2] else {
            unreachable!()
        };
        let packets = batch.packets().unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].origin, 9);
        assert_eq!(packets[0].direction(), Direction::Outbound);
    }

    #[tokio::test]
    async fn batches_hold_at_most_a_mebibyte() {
        let (tx, rx) = send_queue(u64::MAX);
        let mut sink = StreamSink::new(tx, 0);
        let data = vec![0u8; 100_000];
        for _ in 0..25 {
            sink.packet(&interface(), &packet(&data)).unwrap();
        }
        sink.end_batch().unwrap();
        drop(sink);
        let sizes: Vec<usize> = payloads(rx)
            .await
            .iter()
            .map(|p| match p {
                Payload::Packets(p) => p.packets().unwrap().len(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
    }
}
