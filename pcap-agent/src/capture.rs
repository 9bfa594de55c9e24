//! One local capture: attach, move packets from the ring buffer to the
//! output, stop, drain, and account for every packet.

use std::{future::Future, io, time::Duration};

use aya::maps::{MapData, RingBuf};
use pcap_common::{Counters, Direction, HEADER_LEN, PacketHeader};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

use crate::{
    clock::WallClock,
    datapath::{self, Datapath, DatapathError},
    iface::Interface,
    output::Output,
};

/// How long to wait, after detaching, for packets that programs still
/// running on other CPUs were writing. An RCU grace period is far shorter.
const FINAL_DRAIN_DEADLINE: Duration = Duration::from_secs(1);

/// How often to read the ring even when the program has not woken us.
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("writing the capture: {0}")]
    Output(#[source] io::Error),
    #[error("reading the clock: {0}")]
    Clock(#[from] nix::Error),
    #[error("waiting for packets: {0}")]
    Poll(#[source] io::Error),
}

/// What to capture and when to stop.
#[derive(Clone, Debug)]
pub struct Spec {
    pub interfaces: Vec<Interface>,
    pub datapath: datapath::Options,
    /// Stop after this many packets are written (tcpdump's `-c`).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Why the capture ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Count,
    Duration,
    Signal,
    /// The reader of the output went away (for example `| head`).
    OutputClosed,
}

/// Every packet's fate, per interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceReport {
    /// What the kernel program counted.
    pub kernel: Counters,
    /// Written to the output.
    pub delivered: u64,
    /// Read from the ring after `-c` was reached, and not written.
    pub after_limit: u64,
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
                after_limit: sum.after_limit + r.after_limit,
            })
    }
}

/// Runs a capture until `-c`, `--duration`, `stop` or a closed output.
///
/// `on_attached` runs once everything is attached, before any packet is read.
pub async fn run(
    spec: &Spec,
    output: &mut Output,
    stop: impl Future<Output = ()>,
    on_attached: impl FnOnce(),
) -> Result<Report, CaptureError> {
    let mut datapath = Datapath::attach(&spec.interfaces, &spec.datapath)?;
    let ring = datapath.take_ring().expect("a fresh datapath has its ring");
    #[expect(
        deprecated,
        reason = "`register` is unsafe; the ring buffer owns its fd for as long as the AsyncFd lives"
    )]
    let mut ring = AsyncFd::new(ring).map_err(CaptureError::Poll)?;
    let mut reader = Reader {
        interfaces: &spec.interfaces,
        delivered: vec![0; spec.interfaces.len()],
        after_limit: vec![0; spec.interfaces.len()],
        remaining: spec.count,
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
            () = &mut stop => break StopReason::Signal,
            () = &mut deadline => break StopReason::Duration,
        }
    };

    // Detach first, so that the counters stop moving, then read what the
    // programs had already written until the ring holds everything they
    // counted as written.
    datapath.detach();
    let ring = ring.get_mut();
    let started = std::time::Instant::now();
    let report = loop {
        if let Err(e) = reader.drain(ring) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(CaptureError::Output(e));
            }
            stop_reason = StopReason::OutputClosed;
        }
        let report = reader.report(&datapath, stop_reason)?;
        let total = report.total();
        let read = total.delivered + total.after_limit;
        if read >= total.kernel.written || started.elapsed() > FINAL_DRAIN_DEADLINE {
            break report;
        }
        tokio::task::yield_now().await;
    };
    if stop_reason != StopReason::OutputClosed {
        reader
            .output
            .finish(&report, reader.clock.unix_ns(tai_now()))
            .map_err(CaptureError::Output)?;
    }
    Ok(report)
}

struct Reader<'a> {
    interfaces: &'a [Interface],
    delivered: Vec<u64>,
    after_limit: Vec<u64>,
    remaining: Option<u64>,
    clock: WallClock,
    output: &'a mut Output,
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
            if self.remaining == Some(0) {
                self.after_limit[slot] += 1;
                continue;
            }
            let end = HEADER_LEN + header.cap_len as usize;
            let data = record.get(HEADER_LEN..end).unwrap_or(&record[HEADER_LEN..]);
            let packet = crate::output::Packet {
                interface: slot as u32,
                unix_ns: self.clock.unix_ns(header.tai_ns),
                orig_len: header.orig_len,
                data,
                direction: Direction::from_u8(header.direction),
            };
            self.output.packet(&self.interfaces[slot], &packet)?;
            self.delivered[slot] += 1;
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= 1;
            }
        }
        self.output.end_batch()
    }

    /// Whether a drain with this outcome ends the capture, and why.
    fn stop_after(&self, drained: io::Result<()>) -> Result<Option<StopReason>, CaptureError> {
        match drained {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Some(StopReason::OutputClosed)),
            Err(e) => Err(CaptureError::Output(e)),
            Ok(()) if self.remaining == Some(0) => Ok(Some(StopReason::Count)),
            Ok(()) => Ok(None),
        }
    }

    fn report(&self, datapath: &Datapath, stop: StopReason) -> Result<Report, DatapathError> {
        let interfaces = self
            .interfaces
            .iter()
            .enumerate()
            .map(|(slot, interface)| {
                Ok((
                    interface.clone(),
                    InterfaceReport {
                        kernel: datapath.counters(interface.index)?,
                        delivered: self.delivered[slot],
                        after_limit: self.after_limit[slot],
                    },
                ))
            })
            .collect::<Result<_, DatapathError>>()?;
        Ok(Report { interfaces, stop })
    }
}

fn tai_now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_TAI)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or_default()
}
