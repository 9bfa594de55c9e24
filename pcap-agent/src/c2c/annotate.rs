//! c2c insight as a layer over any [`PacketSink`]: annotates each packet
//! with its policy tag, source app and LOG verdict, in its comment, and
//! names overlay IPs through the sink's [`PacketSink::names`]. The same
//! layer serves `pcap-agent capture --c2c` (over a file or the terminal)
//! and a served capture whose options ask for c2c (over the response
//! stream).
//!
//! The kernel logs a verdict after the TC hook saw the packet, so packets
//! are held for [`C2cOptions::hold`] (200 ms by default) before they are
//! written, in the order they arrived; when the held packets exceed
//! [`C2cOptions::max_held_bytes`] the oldest go out early. A packet is
//! joined to a LOG line of the same 5-tuple logged within [`JOIN_WINDOW`]
//! of it. Packets the inner sink drops (a full send queue) are moved from
//! delivered to dropped in the report it finishes with.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use pcap_common::Direction;

use super::{
    kmsg::{Kmsg, LogLine},
    packet::{self, Flow},
    policy::Tags,
};
use crate::{
    capture::{Delivery, Packet, PacketSink, Removed, Report},
    iface::Interface,
};

/// How far apart in time a packet and its LOG line may be.
pub const JOIN_WINDOW: Duration = Duration::from_secs(1);

/// How long LOG lines are kept for joining.
const KEEP_LINES: Duration = Duration::from_secs(5);

/// Settings of the annotation.
#[derive(Clone, Debug)]
pub struct C2cOptions {
    /// How long a packet is held for its verdict.
    pub hold: Duration,
    /// silk's container metadata store, for names of local overlay IPs.
    pub metadata_store: Option<PathBuf>,
    /// The command that prints the filter table's rules.
    pub iptables_save: Vec<String>,
    /// App names by GUID, where known ([`super::apps`], or the API's
    /// from Cloud Controller).
    pub app_names: HashMap<String, String>,
    /// Packet data held at most; beyond it the oldest packets are written
    /// before their hold is over.
    pub max_held_bytes: usize,
}

impl Default for C2cOptions {
    fn default() -> Self {
        Self {
            hold: Duration::from_millis(200),
            metadata_store: None,
            iptables_save: vec!["iptables-save".into(), "-t".into(), "filter".into()],
            app_names: HashMap::new(),
            max_held_bytes: 64 << 20,
        }
    }
}

struct Held {
    arrived: Instant,
    interface: u32,
    unix_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
    direction: Option<Direction>,
    packet_type: u8,
    mark: u32,
    tag: Option<u16>,
    flow: Option<Flow>,
}

/// Wraps the capture's sink.
pub struct C2cSink<S> {
    inner: S,
    options: C2cOptions,
    interfaces: Vec<Interface>,
    held: VecDeque<Held>,
    /// Packet data in `held`.
    held_bytes: usize,
    /// Packets the inner sink dropped, per interface.
    dropped: Vec<u64>,
    lines: VecDeque<(u64, LogLine)>,
    tags: Tags,
    kmsg: Option<Kmsg>,
    named: HashSet<Ipv4Addr>,
}

impl<S: PacketSink> C2cSink<S> {
    pub fn new(inner: S, options: C2cOptions) -> Self {
        let kmsg = match Kmsg::open() {
            Ok(kmsg) => Some(kmsg),
            Err(e) => {
                tracing::warn!("cannot read /dev/kmsg ({e}): packets get no LOG verdicts");
                None
            }
        };
        Self::with_parts(
            inner,
            options.clone(),
            Tags::new(options.iptables_save),
            kmsg,
        )
    }

    fn with_parts(inner: S, options: C2cOptions, tags: Tags, kmsg: Option<Kmsg>) -> Self {
        Self {
            inner,
            options,
            interfaces: Vec::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            dropped: Vec::new(),
            lines: VecDeque::new(),
            tags,
            kmsg,
            named: HashSet::new(),
        }
    }

    fn read_log(&mut self) {
        if let Some(kmsg) = &mut self.kmsg {
            self.lines.extend(kmsg.read_new());
        }
        // Keep lines that a held packet may still be joined to.
        let oldest = self.held.front().map_or(u64::MAX, |h| h.unix_ns);
        let keep_from = oldest.saturating_sub(KEEP_LINES.as_nanos() as u64);
        while self.lines.front().is_some_and(|(t, _)| *t < keep_from) {
            self.lines.pop_front();
        }
    }

    /// The sink it wraps.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Writes the held packets that waited long enough (all with `all`),
    /// and the oldest beyond [`C2cOptions::max_held_bytes`].
    fn release(&mut self, all: bool) -> io::Result<()> {
        self.read_log();
        while let Some(front) = self.held.front() {
            if !all
                && front.arrived.elapsed() < self.options.hold
                && self.held_bytes <= self.options.max_held_bytes
            {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
            self.held_bytes -= held.data.len();
            self.write(&held)?;
        }
        Ok(())
    }

    fn write(&mut self, held: &Held) -> io::Result<()> {
        let source = held
            .tag
            .and_then(|tag| self.tags.source(tag).map(str::to_owned));
        let verdict = held.flow.and_then(|flow| {
            self.lines
                .iter()
                .filter(|(t, line)| {
                    line.flow == flow && t.abs_diff(held.unix_ns) <= JOIN_WINDOW.as_nanos() as u64
                })
                .min_by_key(|(t, _)| t.abs_diff(held.unix_ns))
                .map(|(_, line)| line.verdict.describe())
        });
        // Name the source's overlay IP once its app is known.
        if let (Some(guid), Some(flow)) = (&source, held.flow)
            && self.named.insert(flow.src)
        {
            let name = self.options.app_names.get(guid).unwrap_or(guid);
            self.inner.names(&[(flow.src, name)])?;
        }
        let source = source.map(|guid| match self.options.app_names.get(&guid) {
            Some(name) => format!("{name} ({guid})"),
            None => guid,
        });
        let comment = comment(held.tag, source.as_deref(), verdict.as_deref());
        let interface = &self.interfaces[held.interface as usize];
        let delivery = self.inner.packet(
            interface,
            &Packet {
                interface: held.interface,
                unix_ns: held.unix_ns,
                orig_len: held.orig_len,
                data: &held.data,
                direction: held.direction,
                packet_type: held.packet_type,
                mark: held.mark,
                comment: comment.as_deref(),
            },
        )?;
        if delivery == Delivery::Dropped {
            self.dropped[held.interface as usize] += 1;
        }
        Ok(())
    }

    /// Names from silk's metadata store: overlay IP → app GUID.
    fn store_names(&self) -> Vec<(Ipv4Addr, String)> {
        let Some(path) = &self.options.metadata_store else {
            return Vec::new();
        };
        match crate::silk::read_store(path) {
            Ok(store) => store
                .values()
                .filter_map(|entry| {
                    let ip = entry.ip.parse().ok()?;
                    let guid = entry
                        .metadata
                        .as_ref()
                        .map_or_else(|| entry.handle.clone(), |m| m.app_id.clone());
                    let name = self.options.app_names.get(&guid).cloned().unwrap_or(guid);
                    Some((ip, name))
                })
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read {}: {e}", path.display());
                Vec::new()
            }
        }
    }
}

/// The packet comment: tag, source app, verdict; `None` when there is
/// nothing to say.
fn comment(tag: Option<u16>, source: Option<&str>, verdict: Option<&str>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(tag) = tag {
        parts.push(format!(
            "tag {tag:#06x} src app {}",
            source.unwrap_or("unknown")
        ));
    }
    if let Some(verdict) = verdict {
        parts.push(verdict.to_owned());
    }
    (!parts.is_empty()).then(|| format!("c2c: {}", parts.join("; ")))
}

/// `report` with the packets the inner sink dropped moved from delivered
/// to dropped.
fn with_inner_drops(report: &Report, dropped: &[u64]) -> Report {
    let mut report = report.clone();
    for ((_, r), &d) in report.interfaces.iter_mut().zip(dropped) {
        let d = d.min(r.delivered);
        r.delivered -= d;
        r.dropped += d;
    }
    report
}

impl<S: PacketSink> PacketSink for C2cSink<S> {
    fn begin(&mut self, interfaces: &[Interface], snaplen: u32) -> io::Result<()> {
        self.interfaces = interfaces.to_vec();
        self.dropped = vec![0; interfaces.len()];
        self.inner.begin(interfaces, snaplen)?;
        self.tags.refresh();
        let names = self.store_names();
        let entries: Vec<(Ipv4Addr, &str)> =
            names.iter().map(|(ip, n)| (*ip, n.as_str())).collect();
        self.named.extend(names.iter().map(|(ip, _)| *ip));
        self.inner.names(&entries)
    }

    fn packet(&mut self, interface: &Interface, packet: &Packet<'_>) -> io::Result<Delivery> {
        let parsed = packet::parse(interface.link_type, packet.data);
        let tag = parsed
            .gbp_tag
            .or(Some((packet.mark & 0xffff) as u16))
            .filter(|t| *t != 0);
        self.held.push_back(Held {
            arrived: Instant::now(),
            interface: packet.interface,
            unix_ns: packet.unix_ns,
            orig_len: packet.orig_len,
            data: packet.data.to_vec(),
            direction: packet.direction,
            packet_type: packet.packet_type,
            mark: packet.mark,
            tag,
            flow: parsed.flow,
        });
        self.held_bytes += packet.data.len();
        if self.held_bytes > self.options.max_held_bytes {
            self.release(false)?;
        }
        Ok(Delivery::Delivered)
    }

    fn end_batch(&mut self) -> io::Result<()> {
        self.release(false)?;
        self.inner.end_batch()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.release(false)?;
        self.inner.flush()
    }

    fn interface_removed(&mut self, removed: &Removed<'_>) -> io::Result<()> {
        self.inner.interface_removed(removed)
    }

    fn interface_added(&mut self, interface: &Interface, snaplen: u32) -> io::Result<()> {
        self.interfaces.push(interface.clone());
        self.dropped.push(0);
        self.inner.interface_added(interface, snaplen)
    }

    /// Gives the youngest held packet its full window for a verdict, then
    /// writes everything.
    fn finish(&mut self, report: &Report, unix_ns: u64) -> io::Result<()> {
        if let Some(last) = self.held.back() {
            let wait = self.options.hold.saturating_sub(last.arrived.elapsed());
            std::thread::sleep(wait);
        }
        self.release(true)?;
        self.inner
            .finish(&with_inner_drops(report, &self.dropped), unix_ns)
    }

    fn names(&mut self, entries: &[(Ipv4Addr, &str)]) -> io::Result<()> {
        self.inner.names(entries)
    }
}

#[cfg(test)]
mod tests {
    use pcap_common::Counters;

    use super::*;
    use crate::{
        capture::{InterfaceReport, StopReason},
        iface::LinkLayerType,
    };

    /// What a sink under the layer saw; it drops every packet after `keep`.
    #[derive(Default)]
    struct Recorder {
        keep: usize,
        packets: Vec<(u64, Option<String>)>,
        names: Vec<(Ipv4Addr, String)>,
        finished: Option<Report>,
    }

    impl PacketSink for Recorder {
        fn begin(&mut self, _: &[Interface], _: u32) -> io::Result<()> {
            Ok(())
        }
        fn packet(&mut self, _: &Interface, packet: &Packet<'_>) -> io::Result<Delivery> {
            if self.packets.len() == self.keep {
                return Ok(Delivery::Dropped);
            }
            self.packets
                .push((packet.unix_ns, packet.comment.map(str::to_owned)));
            Ok(Delivery::Delivered)
        }
        fn end_batch(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn finish(&mut self, report: &Report, _: u64) -> io::Result<()> {
            self.finished = Some(report.clone());
            Ok(())
        }
        fn names(&mut self, entries: &[(Ipv4Addr, &str)]) -> io::Result<()> {
            self.names
                .extend(entries.iter().map(|(ip, n)| (*ip, (*n).to_owned())));
            Ok(())
        }
    }

    /// Raw IPv4 + TCP 10.255.77.3:40001 → 10.255.78.3:8080.
    fn syn() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 63, 6, 0, 0, 10, 255, 77, 3, 10, 255, 78, 3,
        ];
        p.extend_from_slice(&40001u16.to_be_bytes());
        p.extend_from_slice(&8080u16.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    #[test]
    fn any_sink_gets_comments_names_and_its_own_drops_counted() {
        let interface = Interface {
            name: "silk-vtep".to_owned(),
            index: 5,
            link_type: 101,
            hardware_type: LinkLayerType::None,
        };
        let mut sink = C2cSink::with_parts(
            Recorder {
                keep: 2,
                ..Recorder::default()
            },
            C2cOptions {
                hold: Duration::ZERO,
                app_names: HashMap::from([("guid-a".to_owned(), "appA".to_owned())]),
                ..C2cOptions::default()
            },
            Tags::fixed(HashMap::from([(1, "guid-a".to_owned())])),
            None,
        );
        sink.begin(std::slice::from_ref(&interface), 262_144)
            .unwrap();
        let data = syn();
        for (unix_ns, mark) in [(1, 1), (2, 0), (3, 1)] {
            let packet = Packet {
                interface: 0,
                unix_ns,
                orig_len: 40,
                data: &data,
                direction: None,
                packet_type: 0,
                mark,
                comment: None,
            };
            assert_eq!(
                sink.packet(&interface, &packet).unwrap(),
                Delivery::Delivered
            );
        }
        let report = Report {
            interfaces: vec![(
                interface.clone(),
                InterfaceReport {
                    kernel: Counters::default(),
                    delivered: 3,
                    dropped: 0,
                    after_limit: 0,
                    removed_ns: None,
                },
            )],
            stop: StopReason::Signal,
        };
        sink.finish(&report, 9).unwrap();
        let inner = sink.into_inner();
        assert_eq!(
            inner.packets,
            [
                (1, Some("c2c: tag 0x0001 src app appA (guid-a)".to_owned())),
                (2, None),
            ]
        );
        assert_eq!(
            inner.names,
            [(Ipv4Addr::new(10, 255, 77, 3), "appA".to_owned())]
        );
        let finished = &inner.finished.unwrap().interfaces[0].1;
        assert_eq!((finished.delivered, finished.dropped), (2, 1));
    }

    #[test]
    fn comments_name_tag_source_and_verdict() {
        assert_eq!(
            comment(
                Some(1),
                Some("guid-a"),
                Some("verdict OK_0001 (allowed by policy)")
            ),
            Some("c2c: tag 0x0001 src app guid-a; verdict OK_0001 (allowed by policy)".into())
        );
        assert_eq!(
            comment(Some(0xabc), None, None),
            Some("c2c: tag 0x0abc src app unknown".into())
        );
        assert_eq!(
            comment(None, None, Some("verdict DENY_C2C (denied: no policy)")),
            Some("c2c: verdict DENY_C2C (denied: no policy)".into())
        );
        assert_eq!(comment(None, None, None), None);
    }
}
