//! Route netlink, spoken by the agent itself (the `netlink-packet-route`
//! and `netlink-sys` crates): the clsact qdiscs and cls_bpf filters of the
//! fallback attach mode ([`crate::tc_fallback`]), and the removal of
//! captured interfaces ([`LinkWatch`]). The agent runs no `tc` or `ip`.
//!
//! aya adds the clsact qdisc and attaches and detaches filters itself; what
//! it cannot do (list filters with their program ids, read an interface's
//! qdisc, delete a qdisc) is here.

use std::{
    io,
    num::NonZeroI32,
    os::fd::{AsRawFd, RawFd},
};

use aya::programs::TcAttachType;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkLayerType, LinkMessage},
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Room for one datagram of a dump (the kernel fills at most 32 KiB).
const RECEIVE_BUFFER: usize = 64 * 1024;

/// The handle of the ingress or clsact qdisc, `ffff:`.
const INGRESS_QDISC: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};

/// A filter on one hook of an interface, as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Its priority on the hook (`tc filter ... pref`); lower runs first.
    pub priority: u16,
    /// Its handle within the priority (`tc filter ... handle`).
    pub handle: u32,
    /// `bpf`, `u32`, ...; `None` for the entry that heads a priority.
    pub kind: Option<String>,
    /// The program a `bpf` filter runs.
    pub program: Option<u32>,
}

/// A route netlink socket for requests.
pub struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Sends one request and collects the replies: every message of a
    /// dump, or nothing for an acknowledged change. A reply the crate
    /// cannot parse is `None`.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<Option<RouteNetlinkMessage>>> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;

        let mut replies = Vec::new();
        loop {
            let size = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            for (frame_sequence, bytes) in frames(&self.buffer[..size]) {
                if frame_sequence != sequence {
                    continue;
                }
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                    Ok(message) => match message.payload {
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::Error(error) => {
                            return match error.code {
                                None => Ok(replies),
                                Some(code) => Err(os_error(code)),
                            };
                        }
                        NetlinkPayload::InnerMessage(inner) => replies.push(Some(inner)),
                        _ => {}
                    },
                    Err(_) => replies.push(None),
                }
            }
        }
    }

    /// The kind of the qdisc at `ffff:` of an interface (`clsact` or
    /// `ingress`), if it has one.
    pub fn ingress_qdisc_kind(&mut self, ifindex: u32) -> io::Result<Option<String>> {
        let replies = self.request(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies.into_iter().flatten().find_map(|reply| {
            let RouteNetlinkMessage::NewQueueDiscipline(qdisc) = reply else {
                return None;
            };
            (qdisc.header.index == ifindex as i32 && qdisc.header.handle == INGRESS_QDISC)
                .then(|| kind(&qdisc.attributes))
                .flatten()
        }))
    }

    /// The filters on one hook of an interface's clsact qdisc, of every
    /// kind: `None` for one the crate cannot parse. Empty when the
    /// interface or its qdisc is gone.
    pub fn filters(&mut self, ifindex: u32, hook: TcAttachType) -> io::Result<Vec<Option<Filter>>> {
        let message = TcMessage::from_parts(
            TcHeader {
                index: ifindex as i32,
                parent: hook_parent(hook),
                ..TcHeader::default()
            },
            Vec::new(),
        );
        let replies = self.request(RouteNetlinkMessage::GetTrafficFilter(message), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply? {
                RouteNetlinkMessage::NewTrafficFilter(filter) => Some(Filter {
                    priority: (filter.header.info >> 16) as u16,
                    handle: filter.header.handle.into(),
                    kind: kind(&filter.attributes),
                    program: program_id(&filter.attributes),
                }),
                _ => None,
            })
            .collect())
    }

    /// Deletes the clsact qdisc of an interface (never an `ingress` one),
    /// and with it every filter on it.
    pub fn delete_clsact(&mut self, ifindex: u32) -> io::Result<()> {
        let message = TcMessage::from_parts(
            TcHeader {
                index: ifindex as i32,
                parent: TcHandle::CLSACT,
                handle: INGRESS_QDISC,
                ..TcHeader::default()
            },
            vec![TcAttribute::Kind("clsact".to_owned())],
        );
        self.request(RouteNetlinkMessage::DelQueueDiscipline(message), NLM_F_ACK)
            .map(drop)
    }
}

/// An interface as route netlink tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Its `ARPHRD_*` type.
    pub hardware_type: LinkLayerType,
}

impl Link {
    /// The interface a `RTM_NEWLINK` describes (not a bridge port's
    /// `AF_BRIDGE` variant), if it has a name.
    fn of(message: &LinkMessage) -> Option<Self> {
        if message.header.interface_family != AddressFamily::Unspec {
            return None;
        }
        let name = message.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })?;
        Some(Self {
            index: message.header.index,
            name,
            hardware_type: message.header.link_layer_type,
        })
    }
}

impl Rtnl {
    /// Every interface of this network namespace, in index order.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        let mut links: Vec<Link> = replies
            .into_iter()
            .flatten()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Link::of(&link),
                _ => None,
            })
            .collect();
        links.sort_by_key(|link| link.index);
        Ok(links)
    }
}

/// What a [`LinkWatch`] read since it was last asked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkChanges {
    /// Indexes of watched interfaces that were removed.
    pub removed: Vec<u32>,
    /// Interfaces that were not watched and are here now (created, or
    /// moved into this network namespace).
    pub added: Vec<Link>,
}

/// Tells which interfaces are removed (deleted, or moved to another
/// network namespace) and which appear: a non-blocking route netlink
/// socket in the link group of the network namespace it was opened in.
pub struct LinkWatch {
    socket: Socket,
    buffer: Vec<u8>,
}

impl LinkWatch {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.add_membership(nix::libc::RTNLGRP_LINK)?;
        socket.set_non_blocking(true)?;
        Ok(Self {
            socket,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Reads every notification waiting, until the socket would block:
    /// the removed interfaces among `watched`, and the interfaces that
    /// appeared and are not among them. When the kernel dropped
    /// notifications (the socket's buffer was full), the interfaces are
    /// listed instead.
    pub fn changes(&mut self, watched: &[u32]) -> io::Result<LinkChanges> {
        let mut changes = LinkChanges::default();
        let mut lost = false;
        loop {
            let size = match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Ok(size) => size,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (_, bytes) in frames(&self.buffer[..size]) {
                let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) else {
                    continue;
                };
                match message.payload {
                    // A bridge port's removal from its bridge is an
                    // RTM_DELLINK of family AF_BRIDGE: the interface stays.
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                        if link.header.interface_family == AddressFamily::Unspec =>
                    {
                        let index = link.header.index;
                        changes.added.retain(|added| added.index != index);
                        if watched.contains(&index) && !changes.removed.contains(&index) {
                            changes.removed.push(index);
                        }
                    }
                    // Every change of an interface (up, down, renamed...)
                    // is an RTM_NEWLINK: only unknown indexes are new.
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        if let Some(link) = Link::of(&link)
                            && !watched.contains(&link.index)
                            && changes.added.iter().all(|added| added.index != link.index)
                        {
                            changes.added.push(link);
                        }
                    }
                    _ => {}
                }
            }
        }
        if lost {
            let links = Rtnl::open()?.links()?;
            for &index in watched {
                if !changes.removed.contains(&index) && links.iter().all(|l| l.index != index) {
                    changes.removed.push(index);
                }
            }
            changes.added = links
                .into_iter()
                .filter(|link| !watched.contains(&link.index))
                .collect();
        }
        Ok(changes)
    }
}

/// The netlink messages in what one `recv` returned, in order: each one's
/// sequence number and bytes. Ends at the first that is cut short.
fn frames(received: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let bytes = received.get(offset..).filter(|b| !b.is_empty())?;
        let frame = NetlinkBuffer::new_checked(bytes).ok()?;
        let length = frame.length() as usize;
        offset += length.next_multiple_of(4).max(4);
        Some((frame.sequence_number(), &bytes[..length]))
    })
}

impl AsRawFd for LinkWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The parent a hook's filters hang from: `ffff:fff2` or `ffff:fff3`.
fn hook_parent(hook: TcAttachType) -> TcHandle {
    TcHandle {
        major: 0xffff,
        minor: match hook {
            TcAttachType::Egress => TcHandle::MIN_EGRESS,
            _ => TcHandle::MIN_INGRESS,
        },
    }
}

fn kind(attributes: &[TcAttribute]) -> Option<String> {
    attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(kind) => Some(kind.clone()),
        _ => None,
    })
}

fn program_id(attributes: &[TcAttribute]) -> Option<u32> {
    attributes.iter().find_map(|a| match a {
        TcAttribute::Options(options) => options.iter().find_map(|o| match o {
            TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => Some(*id),
            _ => None,
        }),
        _ => None,
    })
}

/// A netlink error code (a negative errno) as an I/O error.
fn os_error(code: NonZeroI32) -> io::Error {
    io::Error::from_raw_os_error(code.get().saturating_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_bpf_filter() {
        let attributes = vec![
            TcAttribute::Kind("bpf".to_owned()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgName("pcap_ingress".to_owned())),
                TcOption::Bpf(TcFilterBpfOption::ProgId(356_265)),
            ]),
        ];
        assert_eq!(kind(&attributes).as_deref(), Some("bpf"));
        assert_eq!(program_id(&attributes), Some(356_265));
        assert_eq!(program_id(&attributes[..1]), None);
        assert_eq!(
            u32::from(hook_parent(TcAttachType::Egress)),
            0xffff_fff3,
            "TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)"
        );
    }

    #[test]
    fn an_error_code_is_an_errno() {
        let error = os_error(NonZeroI32::new(-19).unwrap());
        assert_eq!(error.raw_os_error(), Some(19));
    }
}
