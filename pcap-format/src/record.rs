//! What the writers record: interfaces, packets and interface statistics.

/// A capture interface, described once before the packets that use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Free-form description, e.g. the container or VM the interface belongs to.
    pub description: Option<String>,
    /// Link-layer header type of the packets, see [`crate::linktype`].
    pub link_type: u16,
    /// Largest number of bytes captured per packet; longer data is cut to
    /// this length when written. 0 means no limit.
    pub snaplen: u32,
}

/// Direction of a packet relative to the interface that captured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the interface.
    Inbound,
    /// Sent by the interface.
    Outbound,
}

/// One captured packet, borrowed from the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Id returned by `add_interface` for the capturing interface.
    pub interface_id: u32,
    /// Capture time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Length of the packet on the wire; at least `data.len()`.
    pub original_len: u32,
    /// Captured bytes, starting at the interface's link-layer header.
    pub data: &'a [u8],
    /// Direction, when known.
    pub direction: Option<Direction>,
    /// Comment attached to the packet (pcapng only).
    pub comment: Option<&'a str>,
}

/// Counters of one interface at one point in time (pcapng only).
///
/// Counters that are `None` are left out of the block. Build it with
/// `..Default::default()` to set only the counters you have.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStatistics<'a> {
    /// Id returned by `add_interface` for the interface counted.
    pub interface_id: u32,
    /// When the counters were read, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// When counting started (`isb_starttime`), nanoseconds since the Unix epoch.
    pub start_time_ns: Option<u64>,
    /// When counting ended (`isb_endtime`), nanoseconds since the Unix epoch.
    pub end_time_ns: Option<u64>,
    /// Packets received by the interface (`isb_ifrecv`).
    pub if_received: Option<u64>,
    /// Packets dropped by the interface for lack of resources (`isb_ifdrop`).
    pub if_dropped: Option<u64>,
    /// Packets accepted by the capture filter (`isb_filteraccept`).
    pub filter_accepted: Option<u64>,
    /// Packets dropped by the operating system, e.g. a full ring buffer (`isb_osdrop`).
    pub os_dropped: Option<u64>,
    /// Packets delivered to the capturing application (`isb_usrdeliv`).
    pub user_delivered: Option<u64>,
    /// Comment attached to the block.
    pub comment: Option<&'a str>,
}

/// The bytes of `data` kept by an interface with snapshot length `snaplen`
/// (0: no limit).
pub(crate) fn captured(data: &[u8], snaplen: u32) -> &[u8] {
    match usize::try_from(snaplen) {
        Ok(limit) if limit != 0 && limit < data.len() => &data[..limit],
        _ => data,
    }
}

#[cfg(test)]
mod tests {
    use super::captured;

    #[test]
    fn captured_cuts_to_snaplen_and_zero_means_no_limit() {
        let data = [1, 2, 3, 4, 5];
        assert_eq!(captured(&data, 3), &[1, 2, 3]);
        assert_eq!(captured(&data, 5), &data);
        assert_eq!(captured(&data, 9), &data);
        assert_eq!(captured(&data, 0), &data);
    }
}
