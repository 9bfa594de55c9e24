//! A [`PacketSink`] for `pcap-agent capture --c2c`: annotates each packet
//! with its policy tag, source app and LOG verdict, in its pcapng comment.
//!
//! The kernel logs a verdict after the TC hook saw the packet, so packets
//! are held for [`C2cOptions::hold`] (200 ms by default) before they are
//! written, in the order they arrived. A packet is joined to a LOG line of
//! the same 5-tuple logged within [`JOIN_WINDOW`] of it.

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
    capture::{Delivery, Packet, PacketSink, Report},
    iface::Interface,
    output::Output,
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
    /// App names by GUID, where known ([`super::apps`]).
    pub app_names: HashMap<String, String>,
}

impl Default for C2cOptions {
    fn default() -> Self {
        Self {
            hold: Duration::from_millis(200),
            metadata_store: None,
            iptables_save: vec!["iptables-save".into(), "-t".into(), "filter".into()],
            app_names: HashMap::new(),
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
    mark: u32,
    tag: Option<u16>,
    flow: Option<Flow>,
}

/// Wraps the capture's [`Output`].
pub struct C2cSink {
    inner: Output,
    options: C2cOptions,
    interfaces: Vec<Interface>,
    held: VecDeque<Held>,
    lines: VecDeque<(u64, LogLine)>,
    tags: Tags,
    kmsg: Option<Kmsg>,
    named: HashSet<Ipv4Addr>,
}

impl C2cSink {
    pub fn new(inner: Output, options: C2cOptions) -> Self {
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

    fn with_parts(inner: Output, options: C2cOptions, tags: Tags, kmsg: Option<Kmsg>) -> Self {
        Self {
            inner,
            options,
            interfaces: Vec::new(),
            held: VecDeque::new(),
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

    /// Writes the held packets that waited long enough (all with `all`).
    fn release(&mut self, all: bool) -> io::Result<()> {
        self.read_log();
        while let Some(front) = self.held.front() {
            if !all && front.arrived.elapsed() < self.options.hold {
                break;
            }
            let held = self.held.pop_front().expect("front exists");
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
            self.inner.write_names(&[(flow.src, name)])?;
        }
        let source = source.map(|guid| match self.options.app_names.get(&guid) {
            Some(name) => format!("{name} ({guid})"),
            None => guid,
        });
        let comment = comment(held.tag, source.as_deref(), verdict.as_deref());
        let interface = &self.interfaces[held.interface as usize];
        self.inner.packet(
            interface,
            &Packet {
                interface: held.interface,
                unix_ns: held.unix_ns,
                orig_len: held.orig_len,
                data: &held.data,
                direction: held.direction,
                mark: held.mark,
                comment: comment.as_deref(),
            },
        )?;
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

impl PacketSink for C2cSink {
    fn begin(&mut self, interfaces: &[Interface], snaplen: u32) -> io::Result<()> {
        self.interfaces = interfaces.to_vec();
        self.inner.begin(interfaces, snaplen)?;
        self.tags.refresh();
        let names = self.store_names();
        let entries: Vec<(Ipv4Addr, &str)> =
            names.iter().map(|(ip, n)| (*ip, n.as_str())).collect();
        self.named.extend(names.iter().map(|(ip, _)| *ip));
        self.inner.write_names(&entries)
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
            mark: packet.mark,
            tag,
            flow: parsed.flow,
        });
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

    /// Gives the youngest held packet its full window for a verdict, then
    /// writes everything.
    fn finish(&mut self, report: &Report, unix_ns: u64) -> io::Result<()> {
        if let Some(last) = self.held.back() {
            let wait = self.options.hold.saturating_sub(last.arrived.elapsed());
            std::thread::sleep(wait);
        }
        self.release(true)?;
        self.inner.finish(report, unix_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
