//! One capture: attach, move packets from the ring buffer to a
//! [`PacketSink`], stop, drain, and account for every packet.
//!
//! The sink is a file or the terminal for `pcap-agent capture`, and the
//! response stream of a gRPC call for `pcap-agent serve`.

use std::{future::Future, io, time::Duration};

use aya::maps::{MapData, RingBuf};
use pcap_common::{
    Counters, Direction, FLAG_PKT_TYPE_MASK, FLAG_PKT_TYPE_SHIFT, HEADER_LEN, PacketHeader,
};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::{
    clock::WallClock,
    datapath::{self, Datapath, DatapathError},
    iface::Interface,
    rtnl::{Link, LinkChanges, LinkWatch},
};

/// `sll_pkttype` of a packet the interface sent (`PACKET_OUTGOING`); the
/// others are the kernel's `skb->pkt_type` on ingress.
pub const PACKET_OUTGOING: u8 = 4;

/// How long to wait, after detaching, for packets that programs still
/// running on other CPUs were writing. An RCU grace period is far shorter.
const FINAL_DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// How often to read the ring even when the program has not woken us.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum CaptureError {
    /// Loading, attaching or reading the eBPF programs and maps failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The [`PacketSink`] refused a packet or a block.
    #[error("writing the capture: {0}")]
    Output(#[source] io::Error),
    /// The clock that turns the kernel's TAI time stamps into Unix time
    /// could not be read.
    #[error("reading the clock: {0}")]
    Clock(#[from] nix::Error),
    /// Waiting on the ring or on the link watch (netlink) failed.
    #[error("waiting for packets: {0}")]
    Poll(#[source] io::Error),
}

/// One packet on its way out.
#[derive(Debug)]
pub struct Packet<'a> {
    /// Position of its interface in the capture's interface list.
    pub interface: u32,
    /// When the kernel saw it, nanoseconds since the Unix epoch (from the
    /// ring record's TAI time stamp).
    pub unix_ns: u64,
    /// Its length on the wire, in bytes; `data` may be shorter (snaplen).
    pub orig_len: u32,
    /// The captured bytes, from the link-layer header, borrowed from the
    /// ring record.
    pub data: &'a [u8],
    /// The hook that saw it (ingress or egress), when the record says.
    pub direction: Option<Direction>,
    /// What a packet socket calls `sll_pkttype`: [`PACKET_OUTGOING`] on
    /// egress, else the kernel's `PACKET_HOST`, `PACKET_BROADCAST`,
    /// `PACKET_MULTICAST` or `PACKET_OTHERHOST` (0 to 3).
    pub packet_type: u8,
    /// `skb->mark` when the packet was seen.
    pub mark: u32,
    /// A comment for the pcapng file (`opt_comment`), e.g. the c2c annotation.
    pub comment: Option<&'a str>,
}

/// Where the packets of a capture go.
///
/// Calls come in this order: `begin` once, then `packet` for every packet
/// read from the ring with `end_batch` after each drain of the ring and
/// `flush` now and then, and `finish` once unless the sink reported
/// [`io::ErrorKind::BrokenPipe`] (its reader went away).
/// An interface that went away during the capture.
pub struct Removed<'a> {
    /// Its position among the capture's interfaces.
    pub id: u32,
    /// The interface as the capture listed it (name, index, link type).
    pub interface: &'a Interface,
    /// Final for it.
    pub report: &'a InterfaceReport,
}

pub trait PacketSink {
    /// Everything is attached; packets of these interfaces follow.
    fn begin(&mut self, interfaces: &[Interface], snaplen: u32) -> io::Result<()>;
    /// One packet of `interface`.
    fn packet(&mut self, interface: &Interface, packet: &Packet<'_>) -> io::Result<Delivery>;
    /// The ring is empty for now.
    fn end_batch(&mut self) -> io::Result<()>;
    /// Called every [`DRAIN_INTERVAL`], packets or not.
    fn flush(&mut self) -> io::Result<()>;
    /// The capture is over and `report` accounts for every packet.
    fn finish(&mut self, report: &Report, unix_ns: u64) -> io::Result<()>;
    /// An interface was removed at `report.removed_ns`; its report is
    /// final and the capture goes on without it.
    fn interface_removed(&mut self, removed: &Removed<'_>) -> io::Result<()> {
        let _ = removed;
        Ok(())
    }
    /// `-i any`: a new interface is captured; packets of it follow, with
    /// the next position among the capture's interfaces.
    fn interface_added(&mut self, interface: &Interface, snaplen: u32) -> io::Result<()> {
        let _ = (interface, snaplen);
        Ok(())
    }
    /// Names for addresses (a pcapng Name Resolution Block), written
    /// before the packets that need them. Sinks without names ignore them.
    fn names(&mut self, entries: &[(std::net::Ipv4Addr, &str)]) -> io::Result<()> {
        let _ = entries;
        Ok(())
    }
}

/// What a sink did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written out or queued to be sent.
    Delivered,
    /// Dropped because the sink could not keep up (a full send queue).
    Dropped,
}

/// What to capture and when to stop.
#[derive(Clone, Debug)]
pub struct Spec {
    pub interfaces: Vec<Interface>,
    pub datapath: datapath::Options,
    /// Stop after this many packets are delivered (tcpdump's `-c`).
    pub count: Option<u64>,
    /// Deliver at most this many bytes of packet data (captured bytes, not
    /// wire lengths): the first packet that does not fit ends the capture.
    pub bytes: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Why the capture ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The packet limit (`-c`) was reached.
    Count,
    /// The byte limit was reached.
    Bytes,
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
    /// The client asked to stop, or closed its request stream.
    Requested,
    /// The reader of the output went away (for example `| head`).
    OutputClosed,
    /// Every interface of the capture was removed (deleted, or moved to
    /// another network namespace).
    InterfacesGone,
}

impl StopReason {
    /// Whether one of the capture's own limits ended it.
    pub fn is_limit(self) -> bool {
        matches!(self, Self::Count | Self::Bytes | Self::Duration)
    }
}

/// Every packet's fate, per interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceReport {
    /// What the kernel program counted.
    pub kernel: Counters,
    /// Written to the output.
    pub delivered: u64,
    /// Read from the ring, and dropped by the sink (a full send queue).
    pub dropped: u64,
    /// Read from the ring after a packet or byte limit was reached, and not written.
    pub after_limit: u64,
    /// When the interface was removed, if it was during the capture.
    pub removed_ns: Option<u64>,
}

impl InterfaceReport {
    /// Packets read from the ring, whatever became of them.
    pub fn read(&self) -> u64 {
        self.delivered + self.dropped + self.after_limit
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub interfaces: Vec<(Interface, InterfaceReport)>,
    pub stop: StopReason,
}

impl Report {
    pub fn total(&self) -> InterfaceReport {
        self.interfaces
            .iter()
            .fold(InterfaceReport::default(), |sum, (_, r)| InterfaceReport {
                kernel: sum.kernel.add(r.kernel),
                delivered: sum.delivered + r.delivered,
                dropped: sum.dropped + r.dropped,
                after_limit: sum.after_limit + r.after_limit,
                removed_ns: None,
            })
    }
}

/// Runs a capture until a limit of `spec`, until `stop` completes (with the
/// reason it gives) or until the output is closed.
///
/// `on_attached` runs once everything is attached and `output` has begun,
/// before any packet is read. Nothing is attached when this fails before it.
pub async fn run(
    spec: &Spec,
    output: &mut dyn PacketSink,
    stop: impl Future<Output = StopReason>,
    on_attached: impl FnOnce(),
) -> Result<Report, CaptureError> {
    // Listening before anything is attached: no removal goes unnoticed.
    let links = LinkWatch::open().map_err(CaptureError::Poll)?;
    let mut datapath = Datapath::attach(&spec.interfaces, &spec.datapath)?;
    let ring = datapath.take_ring().expect("a fresh datapath has its ring");
    #[expect(
        deprecated,
        reason = "`register` is unsafe; the ring buffer owns its fd for as long as the AsyncFd lives"
    )]
    let mut ring = AsyncFd::new(ring).map_err(CaptureError::Poll)?;
    #[expect(
        deprecated,
        reason = "`register` is unsafe; the watch owns its socket for as long as the AsyncFd lives"
    )]
    let mut links = AsyncFd::new(links).map_err(CaptureError::Poll)?;
    let mut reader = Reader {
        interfaces: spec.interfaces.clone(),
        delivered: vec![0; spec.interfaces.len()],
        dropped: vec![0; spec.interfaces.len()],
        after_limit: vec![0; spec.interfaces.len()],
        removed: vec![None; spec.interfaces.len()],
        remaining: spec.count,
        remaining_bytes: spec.bytes,
        limit_reached: None,
        clock: WallClock::new()?,
        output,
    };
    reader
        .output
        .begin(&spec.interfaces, spec.datapath.snaplen)
        .map_err(CaptureError::Output)?;
    on_attached();

    let deadline = async {
        match spec.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop, deadline);
    // The program wakes us for a lone packet or a full batch; this tick
    // collects the tail of a burst that woke no one.
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_reason = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(CaptureError::Poll)?;
                let drained = reader.drain(guard.get_inner_mut());
                guard.clear_ready();
                if let Some(reason) = reader.stop_after(drained)? {
                    break reason;
                }
            }
            _ = tick.tick() => {
                let drained = reader.drain(ring.get_mut()).and_then(|()| reader.output.flush());
                if let Some(reason) = reader.stop_after(drained)? {
                    break reason;
                }
            }
            guard = links.readable_mut() => {
                let mut guard = guard.map_err(CaptureError::Poll)?;
                let changes = guard.get_inner_mut().changes(&reader.watched());
                guard.clear_ready();
                let changes = changes.map_err(CaptureError::Poll)?;
                if let Some(reason) = reader.links_changed(&changes, ring.get_mut(), &mut datapath, spec)? {
                    break reason;
                }
            }
            reason = &mut stop => break reason,
            () = &mut deadline => break StopReason::Duration,
        }
    };

    // Detach first, so that the counters stop moving, then read what the
    // programs had already written until the ring holds everything they
    // counted as written.
    datapath.detach();
    let ring = ring.get_mut();
    let started = std::time::Instant::now();
    let mut report = loop {
        if let Err(e) = reader.drain(ring) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(CaptureError::Output(e));
            }
            stop_reason = StopReason::OutputClosed;
        }
        let report = reader.report(&datapath, stop_reason)?;
        let total = report.total();
        if total.read() >= total.kernel.written || started.elapsed() > FINAL_DRAIN_DEADLINE {
            break report;
        }
        tokio::task::yield_now().await;
    };
    if stop_reason != StopReason::OutputClosed {
        match reader
            .output
            .finish(&report, reader.clock.unix_ns(tai_now()))
        {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                report.stop = StopReason::OutputClosed;
            }
            finished => finished.map_err(CaptureError::Output)?,
        }
    }
    Ok(report)
}

struct Reader<'a> {
    interfaces: Vec<Interface>,
    delivered: Vec<u64>,
    dropped: Vec<u64>,
    after_limit: Vec<u64>,
    /// Packets still to deliver under the packet limit.
    remaining: Option<u64>,
    /// Bytes still to deliver under the byte limit.
    remaining_bytes: Option<u64>,
    /// When each interface was removed, if it was.
    removed: Vec<Option<u64>>,
    /// Set once a packet or byte limit is reached; later packets are not delivered.
    limit_reached: Option<StopReason>,
    clock: WallClock,
    output: &'a mut dyn PacketSink,
}

impl Reader<'_> {
    /// Moves every record now in the ring to the output.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> io::Result<()> {
        self.clock.refresh();
        while let Some(record) = ring.next() {
            let Some(header) = PacketHeader::from_bytes(&record) else {
                continue;
            };
            let Some(slot) = self
                .interfaces
                .iter()
                .position(|i| i.index == header.ifindex)
            else {
                continue;
            };
            let end = HEADER_LEN + header.cap_len as usize;
            let data = record.get(HEADER_LEN..end).unwrap_or(&record[HEADER_LEN..]);
            if self
                .remaining_bytes
                .is_some_and(|left| data.len() as u64 > left)
            {
                self.limit_reached.get_or_insert(StopReason::Bytes);
            }
            if self.limit_reached.is_some() {
                self.after_limit[slot] += 1;
                continue;
            }
            let direction = Direction::from_u8(header.direction);
            let packet = Packet {
                interface: slot as u32,
                unix_ns: self.clock.unix_ns(header.tai_ns),
                orig_len: header.orig_len,
                data,
                direction,
                packet_type: match direction {
                    Some(Direction::Egress) => PACKET_OUTGOING,
                    _ => (header.flags >> FLAG_PKT_TYPE_SHIFT) & FLAG_PKT_TYPE_MASK,
                },
                mark: header.mark,
                comment: None,
            };
            match self.output.packet(&self.interfaces[slot], &packet)? {
                Delivery::Dropped => self.dropped[slot] += 1,
                Delivery::Delivered => {
                    self.delivered[slot] += 1;
                    if let Some(left) = self.remaining_bytes.as_mut() {
                        *left -= data.len() as u64;
                    }
                    if let Some(left) = self.remaining.as_mut() {
                        *left -= 1;
                        if *left == 0 {
                            self.limit_reached = Some(StopReason::Count);
                        }
                    }
                }
            }
        }
        self.output.end_batch()
    }

    /// Whether a drain with this outcome ends the capture, and why.
    fn stop_after(&self, drained: io::Result<()>) -> Result<Option<StopReason>, CaptureError> {
        match drained {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Some(StopReason::OutputClosed)),
            Err(e) => Err(CaptureError::Output(e)),
            Ok(()) => Ok(self.limit_reached),
        }
    }

    fn report(&self, datapath: &Datapath, stop: StopReason) -> Result<Report, DatapathError> {
        let interfaces = (0..self.interfaces.len())
            .map(|slot| {
                Ok((
                    self.interfaces[slot].clone(),
                    self.report_of(datapath, slot)?,
                ))
            })
            .collect::<Result<_, DatapathError>>()?;
        Ok(Report { interfaces, stop })
    }

    fn report_of(
        &self,
        datapath: &Datapath,
        slot: usize,
    ) -> Result<InterfaceReport, DatapathError> {
        Ok(InterfaceReport {
            kernel: datapath.counters(self.interfaces[slot].index)?,
            delivered: self.delivered[slot],
            dropped: self.dropped[slot],
            after_limit: self.after_limit[slot],
            removed_ns: self.removed[slot],
        })
    }

    /// The indexes of the interfaces still captured.
    fn watched(&self) -> Vec<u32> {
        (self.interfaces.iter().zip(&self.removed))
            .filter(|(_, removed)| removed.is_none())
            .map(|(interface, _)| interface.index)
            .collect()
    }

    /// Ends the capture of the interfaces with these indexes, which are
    /// gone: what the ring holds of them is written first, then their final
    /// statistics. Returns [`StopReason::InterfacesGone`] once none is left.
    fn remove(
        &mut self,
        indexes: &[u32],
        ring: &mut RingBuf<MapData>,
        datapath: &mut Datapath,
    ) -> Result<Option<StopReason>, CaptureError> {
        if indexes.is_empty() {
            return Ok(None);
        }
        let drained = self.drain(ring);
        if let Some(reason) = self.stop_after(drained)? {
            return Ok(Some(reason));
        }
        let now = self.clock.unix_ns(tai_now());
        let interfaces = self.interfaces.clone();
        for (slot, interface) in interfaces.iter().enumerate() {
            if !indexes.contains(&interface.index) || self.removed[slot].is_some() {
                continue;
            }
            datapath.forget(interface.index);
            self.removed[slot] = Some(now);
            let report = self.report_of(datapath, slot)?;
            let told = self.output.interface_removed(&Removed {
                id: slot as u32,
                interface,
                report: &report,
            });
            if let Some(reason) = self.stop_after(told)? {
                return Ok(Some(reason));
            }
        }
        Ok(self
            .removed
            .iter()
            .all(Option::is_some)
            .then_some(StopReason::InterfacesGone))
    }

    /// Ends the capture of the interfaces that went away and, with
    /// `-i any`, starts it on those that appeared.
    fn links_changed(
        &mut self,
        changes: &LinkChanges,
        ring: &mut RingBuf<MapData>,
        datapath: &mut Datapath,
        spec: &Spec,
    ) -> Result<Option<StopReason>, CaptureError> {
        if let Some(reason) = self.remove(&changes.removed, ring, datapath)? {
            return Ok(Some(reason));
        }
        if !spec.datapath.any {
            return Ok(None);
        }
        let added = self.add(&changes.added, datapath, spec);
        self.stop_after(added)
    }

    /// `-i any`: captures the interfaces that appeared. One that cannot be
    /// captured (a hardware type pcap does not know, or gone again before
    /// it was attached) is left out, and said so in the log.
    fn add(&mut self, links: &[Link], datapath: &mut Datapath, spec: &Spec) -> io::Result<()> {
        for link in links {
            let interface = match Interface::new(&link.name, link.index, link.hardware_type) {
                Ok(interface) => interface,
                Err(e) => {
                    tracing::debug!(interface = link.name, error = %e, "not captured");
                    continue;
                }
            };
            self.interfaces.push(interface.clone());
            if let Err(e) = datapath.add(&interface, &self.interfaces, &spec.datapath) {
                tracing::warn!(interface = link.name, error = %e, "cannot capture a new interface");
                self.interfaces.pop();
                continue;
            }
            self.delivered.push(0);
            self.dropped.push(0);
            self.after_limit.push(0);
            self.removed.push(None);
            self.output
                .interface_added(&interface, spec.datapath.snaplen)?;
        }
        Ok(())
    }
}

fn tai_now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_TAI)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or_default()
}
