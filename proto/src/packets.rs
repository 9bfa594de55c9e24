//! `Packets` batches: pcapng Enhanced Packet Blocks laid end to end
//! (`pcap_format::pcapng::epb`), and an owned [`Packet`] for the few places
//! that want one packet at a time (tests, tools).

pub use pcap_format::pcapng::epb::{self, RecordError, Records};
pub use prost::bytes::{Bytes, BytesMut};

use crate::v1::{Direction, Packets};

/// One packet of a batch, owned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Length on the wire; `data` may be shorter (snaplen).
    pub original_length: u32,
    /// A [`Direction`].
    pub direction: i32,
    /// The API's number for the instance it came from (`OriginDescription`).
    pub origin: u32,
    /// The id from this origin's `InterfaceDescription`.
    pub interface: u32,
    /// The captured bytes, from the link-layer header.
    pub data: Vec<u8>,
    /// pcapng `opt_comment`, e.g. c2c insight.
    pub comment: Option<String>,
}

impl Packet {
    pub fn direction(&self) -> Direction {
        Direction::try_from(self.direction).unwrap_or(Direction::Unspecified)
    }

    /// As `pcap-format` borrows it.
    pub fn as_format(&self) -> pcap_format::Packet<'_> {
        pcap_format::Packet {
            interface_id: self.interface,
            timestamp_ns: self.timestamp_ns,
            original_len: self.original_length,
            data: &self.data,
            direction: format_direction(self.direction()),
            comment: self.comment.as_deref(),
        }
    }
}

/// A wire direction as pcapng's `epb_flags` hold it.
pub fn format_direction(direction: Direction) -> Option<pcap_format::Direction> {
    match direction {
        Direction::Inbound => Some(pcap_format::Direction::Inbound),
        Direction::Outbound => Some(pcap_format::Direction::Outbound),
        Direction::Unspecified => None,
    }
}

/// A pcapng direction as the wire holds it.
pub fn wire_direction(direction: Option<pcap_format::Direction>) -> Direction {
    match direction {
        Some(pcap_format::Direction::Inbound) => Direction::Inbound,
        Some(pcap_format::Direction::Outbound) => Direction::Outbound,
        None => Direction::Unspecified,
    }
}

impl Packets {
    /// A batch of `origin` holding `packets` (their own origins ignored).
    ///
    /// # Panics
    /// When a comment is longer than 65535 bytes.
    pub fn from_packets<'a>(origin: u32, packets: impl IntoIterator<Item = &'a Packet>) -> Self {
        let mut records = Vec::new();
        for packet in packets {
            epb::append_epb(&mut records, &packet.as_format(), 0)
                .expect("a comment short enough for pcapng");
        }
        Self {
            origin,
            records: Bytes::from(records),
        }
    }

    /// `packets` as batches, one per run of packets of one origin.
    pub fn runs<'a>(packets: impl IntoIterator<Item = &'a Packet>) -> Vec<Self> {
        let mut batches: Vec<Self> = Vec::new();
        let mut run: Vec<&Packet> = Vec::new();
        for packet in packets {
            if run.last().is_some_and(|last| last.origin != packet.origin) {
                batches.push(Self::from_packets(run[0].origin, run.drain(..)));
            }
            run.push(packet);
        }
        if let Some(first) = run.first() {
            batches.push(Self::from_packets(first.origin, run.iter().copied()));
        }
        batches
    }

    /// The batch's blocks, each checked.
    pub fn records(&self) -> Records<'_> {
        Records::new(&self.records)
    }

    /// Checks every block of the batch.
    pub fn check(&self) -> Result<(), RecordError> {
        self.records().try_for_each(|record| record.map(|_| ()))
    }

    /// The batch's packets, owned, stamped with the batch's origin.
    pub fn packets(&self) -> Result<Vec<Packet>, RecordError> {
        self.records()
            .map(|record| {
                let p = record?.packet;
                Ok(Packet {
                    timestamp_ns: p.timestamp_ns,
                    original_length: p.original_len,
                    direction: wire_direction(p.direction).into(),
                    origin: self.origin,
                    interface: p.interface_id,
                    data: p.data.to_vec(),
                    comment: p.comment.map(str::to_owned),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let packets = vec![
            Packet {
                timestamp_ns: 5,
                original_length: 100,
                direction: Direction::Inbound.into(),
                origin: 3,
                interface: 1,
                data: vec![1, 2, 3],
                comment: Some("c2c".into()),
            },
            Packet {
                timestamp_ns: 6,
                original_length: 2,
                origin: 3,
                data: vec![4, 5],
                ..Packet::default()
            },
        ];
        let batch = Packets::from_packets(3, &packets);
        assert_eq!(batch.packets().unwrap(), packets);
        batch.check().unwrap();
        let cut = Packets {
            origin: 3,
            records: batch.records.slice(..batch.records.len() - 1),
        };
        assert!(cut.check().is_err());
        assert!(cut.packets().is_err());
    }
}
