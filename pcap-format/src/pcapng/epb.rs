//! Enhanced Packet Blocks on their own: appended to any buffer, and read
//! back from one.
//!
//! [`super::PcapNgWriter::write_packet`] encodes with [`append_epb`] straight
//! into its block buffer; `pcap-agent serve` encodes the same blocks into the
//! batches it sends (`pcap.v1.Packets.records`), which the API merges and the
//! CLI writes into its file with only the interface id rewritten. Readers of
//! such batches check every block with [`Records`] (or [`read_epb`]) before
//! they trust the fixed offsets ([`INTERFACE_ID_OFFSET`],
//! [`TIMESTAMP_OFFSET`]).

use std::io;

use super::encode::{
    EPB, EPB_FLAGS, OPT_COMMENT, OPT_ENDOFOPT, ZEROS, block_len, option_len, padding,
    timestamp_bytes,
};
use crate::record::captured;
use crate::{Direction, Packet};

/// Length of the Enhanced Packet Block up to the packet data: block type,
/// total length, interface id, timestamp (2 words), captured and original
/// length.
pub const EPB_HEADER_LEN: usize = 28;
/// Where the interface id is in an Enhanced Packet Block (little-endian u32).
pub const INTERFACE_ID_OFFSET: usize = 8;
/// Where the timestamp is in an Enhanced Packet Block: high word, low word,
/// each little-endian u32, in units of the interface's `if_tsresol`
/// (nanoseconds for every interface this crate writes).
pub const TIMESTAMP_OFFSET: usize = 12;
/// Length of an `epb_flags` option.
const EPB_FLAGS_OPTION_LEN: usize = 8;
/// Length of an option header, and of `opt_endofopt`.
const OPTION_HEADER_LEN: usize = 4;
/// Length of the block trailer (the repeated total length).
const TRAILER_LEN: usize = 4;
/// The smallest block: header and trailer, no data, no options.
const MIN_EPB_LEN: usize = EPB_HEADER_LEN + TRAILER_LEN;

/// What an Enhanced Packet Block adds to its data and comment at most:
/// header, `epb_flags`, `opt_endofopt`, trailer (padding aside).
pub const EPB_OVERHEAD: usize =
    EPB_HEADER_LEN + EPB_FLAGS_OPTION_LEN + OPTION_HEADER_LEN + TRAILER_LEN;

/// The length of the block [`append_epb`] writes for `captured_len` bytes of
/// data, with or without a direction and a comment.
pub const fn epb_len(captured_len: usize, direction: bool, comment_len: Option<usize>) -> usize {
    let mut options_len = 0;
    if direction {
        options_len += EPB_FLAGS_OPTION_LEN;
    }
    if let Some(len) = comment_len {
        options_len += OPTION_HEADER_LEN + len + padding(len);
    }
    if options_len != 0 {
        options_len += OPTION_HEADER_LEN; // opt_endofopt
    }
    EPB_HEADER_LEN + captured_len + padding(captured_len) + options_len + TRAILER_LEN
}

/// Appends `packet` to `out` as one Enhanced Packet Block, its data cut to
/// `snaplen` (0: no limit), its direction in `epb_flags` and its comment in
/// `opt_comment`. Returns the block's length. On an error (a comment or
/// block too long for its length field) nothing is appended.
pub fn append_epb(out: &mut Vec<u8>, packet: &Packet<'_>, snaplen: u32) -> io::Result<usize> {
    let data = captured(packet.data, snaplen);
    let comment = match packet.comment {
        Some(text) => {
            option_len(text.as_bytes())?;
            Some(text.as_bytes())
        }
        None => None,
    };
    let len = epb_len(
        data.len(),
        packet.direction.is_some(),
        comment.map(<[u8]>::len),
    );
    let total_len = block_len(len)?;
    let captured_len = data.len() as u32; // fits: total_len does

    let mut header = [0; EPB_HEADER_LEN];
    header[0..4].copy_from_slice(&EPB.to_le_bytes());
    header[4..8].copy_from_slice(&total_len.to_le_bytes());
    header[8..12].copy_from_slice(&packet.interface_id.to_le_bytes());
    header[12..20].copy_from_slice(&timestamp_bytes(packet.timestamp_ns));
    header[20..24].copy_from_slice(&captured_len.to_le_bytes());
    header[24..28].copy_from_slice(&packet.original_len.max(captured_len).to_le_bytes());
    out.reserve(len);
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out.extend_from_slice(&ZEROS[..padding(data.len())]);
    if let Some(direction) = packet.direction {
        out.extend_from_slice(&EPB_FLAGS.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&epb_flags(direction).to_le_bytes());
    }
    if let Some(text) = comment {
        out.extend_from_slice(&OPT_COMMENT.to_le_bytes());
        out.extend_from_slice(&(text.len() as u16).to_le_bytes()); // checked above
        out.extend_from_slice(text);
        out.extend_from_slice(&ZEROS[..padding(text.len())]);
    }
    if packet.direction.is_some() || comment.is_some() {
        out.extend_from_slice(&OPT_ENDOFOPT.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    out.extend_from_slice(&total_len.to_le_bytes());
    Ok(len)
}

/// `epb_flags` value for `direction`: bits 0-1 are 01 inbound, 10 outbound.
pub(super) const fn epb_flags(direction: Direction) -> u32 {
    match direction {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
    }
}

/// A malformed Enhanced Packet Block: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed enhanced packet block at byte {offset}: {reason}")]
pub struct RecordError {
    /// Where the block starts in the buffer read.
    pub offset: usize,
    pub reason: &'static str,
}

/// Reads the Enhanced Packet Block at the start of `bytes`: the packet (its
/// data and comment borrowed from `bytes`; timestamps taken as nanoseconds)
/// and the block's length. Every length is checked against the buffer and
/// against each other; options other than `epb_flags` and `opt_comment` are
/// skipped. Never reads outside `bytes`.
pub fn read_epb(bytes: &[u8]) -> Result<(Packet<'_>, usize), &'static str> {
    if bytes.len() < MIN_EPB_LEN {
        return Err("truncated block header");
    }
    if u32_at(bytes, 0) != EPB {
        return Err("not an enhanced packet block");
    }
    let total_len = u32_at(bytes, 4) as usize;
    if total_len < MIN_EPB_LEN || !total_len.is_multiple_of(4) {
        return Err("bad block total length");
    }
    if total_len > bytes.len() {
        return Err("block longer than the bytes left");
    }
    if u32_at(bytes, total_len - TRAILER_LEN) as usize != total_len {
        return Err("trailing block length differs");
    }
    let captured_len = u32_at(bytes, 20) as usize;
    let data_end = EPB_HEADER_LEN
        .checked_add(captured_len)
        .filter(|&end| end <= total_len - TRAILER_LEN)
        .ok_or("captured length beyond the block")?;
    let options_start = data_end + padding(captured_len);
    if options_start > total_len - TRAILER_LEN {
        return Err("captured length beyond the block");
    }
    let mut direction = None;
    let mut comment = None;
    let options = &bytes[options_start..total_len - TRAILER_LEN];
    let mut at = 0;
    while at + OPTION_HEADER_LEN <= options.len() {
        let code = u16::from_le_bytes([options[at], options[at + 1]]);
        let len = usize::from(u16::from_le_bytes([options[at + 2], options[at + 3]]));
        at += OPTION_HEADER_LEN;
        if code == OPT_ENDOFOPT {
            break;
        }
        let value = options
            .get(at..at + len)
            .ok_or("option longer than the block")?;
        match code {
            EPB_FLAGS if len == 4 => {
                direction = match u32::from_le_bytes([value[0], value[1], value[2], value[3]]) & 3 {
                    1 => Some(Direction::Inbound),
                    2 => Some(Direction::Outbound),
                    _ => None,
                };
            }
            OPT_COMMENT => {
                comment = Some(std::str::from_utf8(value).map_err(|_| "comment is not UTF-8")?);
            }
            _ => {}
        }
        at += len + padding(len);
    }
    let packet = Packet {
        interface_id: u32_at(bytes, INTERFACE_ID_OFFSET),
        timestamp_ns: timestamp_at(bytes),
        original_len: u32_at(bytes, 24),
        data: &bytes[EPB_HEADER_LEN..data_end],
        direction,
        comment,
    };
    Ok((packet, total_len))
}

/// The timestamp of a block [`read_epb`] accepted (nanoseconds).
///
/// # Panics
/// When `block` is shorter than an EPB header.
pub fn timestamp_at(block: &[u8]) -> u64 {
    (u64::from(u32_at(block, TIMESTAMP_OFFSET)) << 32)
        | u64::from(u32_at(block, TIMESTAMP_OFFSET + 4))
}

/// The interface id of a block [`read_epb`] accepted.
///
/// # Panics
/// When `block` is shorter than an EPB header.
pub fn interface_id_at(block: &[u8]) -> u32 {
    u32_at(block, INTERFACE_ID_OFFSET)
}

/// The captured length of a block [`read_epb`] accepted.
///
/// # Panics
/// When `block` is shorter than an EPB header.
pub fn captured_len_at(block: &[u8]) -> u32 {
    u32_at(block, 20)
}

/// Rewrites the interface id of a block [`read_epb`] accepted.
///
/// # Panics
/// When `block` is shorter than an EPB header.
pub fn set_interface_id(block: &mut [u8], id: u32) {
    block[INTERFACE_ID_OFFSET..INTERFACE_ID_OFFSET + 4].copy_from_slice(&id.to_le_bytes());
}

/// Rewrites the timestamp of a block [`read_epb`] accepted.
///
/// # Panics
/// When `block` is shorter than an EPB header.
pub fn set_timestamp(block: &mut [u8], ns: u64) {
    block[TIMESTAMP_OFFSET..TIMESTAMP_OFFSET + 8].copy_from_slice(&timestamp_bytes(ns));
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The Enhanced Packet Blocks laid end to end in a buffer, each checked by
/// [`read_epb`]: yields each block's offset, length and packet, or the
/// first error (then nothing more).
pub struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Records<'a> {
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            at: 0,
            failed: false,
        }
    }
}

/// One block of [`Records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where the block starts.
    pub offset: usize,
    /// The block's total length.
    pub len: usize,
    pub packet: Packet<'a>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let offset = self.at;
        match read_epb(&self.bytes[offset..]) {
            Ok((packet, len)) => {
                self.at += len;
                Some(Ok(Record {
                    offset,
                    len,
                    packet,
                }))
            }
            Err(reason) => {
                self.failed = true;
                Some(Err(RecordError { offset, reason }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet<'a>(data: &'a [u8], comment: Option<&'a str>) -> Packet<'a> {
        Packet {
            interface_id: 3,
            timestamp_ns: 0x0000_0001_0000_0002,
            original_len: 1500,
            data,
            direction: Some(Direction::Outbound),
            comment,
        }
    }

    #[test]
    fn what_is_appended_reads_back() {
        let mut out = Vec::new();
        let a = packet(&[1, 2, 3, 4, 5], None);
        let b = packet(&[9; 64], Some("c2c: tag 0x0001"));
        let c = Packet {
            direction: None,
            ..packet(&[], None)
        };
        let mut lens = Vec::new();
        for p in [&a, &b, &c] {
            lens.push(append_epb(&mut out, p, 0).unwrap());
        }
        assert_eq!(lens[0], epb_len(5, true, None));
        assert_eq!(lens[1], epb_len(64, true, Some(15)));
        assert_eq!(lens[2], MIN_EPB_LEN);
        assert_eq!(out.len(), lens.iter().sum::<usize>());
        let read: Vec<Packet<'_>> = Records::new(&out).map(|r| r.unwrap().packet).collect();
        assert_eq!(read, [a, b, c]);
        assert_eq!(timestamp_at(&out), 0x0000_0001_0000_0002);
        assert_eq!(interface_id_at(&out), 3);
    }

    #[test]
    fn snaplen_cuts_and_setters_rewrite() {
        let mut out = Vec::new();
        append_epb(&mut out, &packet(&[7; 10], None), 4).unwrap();
        set_interface_id(&mut out, 9);
        set_timestamp(&mut out, 42);
        let (p, len) = read_epb(&out).unwrap();
        assert_eq!(len, out.len());
        assert_eq!(p.data, [7; 4]);
        assert_eq!(
            (p.interface_id, p.timestamp_ns, p.original_len),
            (9, 42, 1500)
        );
    }

    fn one_block() -> Vec<u8> {
        let mut out = Vec::new();
        append_epb(&mut out, &packet(&[1; 8], Some("hi")), 0).unwrap();
        out
    }

    fn error(bytes: &[u8]) -> &'static str {
        let errors: Vec<_> = Records::new(bytes).filter_map(Result::err).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].reason
    }

    #[test]
    fn hostile_blocks_are_refused_without_reading_out_of_bounds() {
        let good = one_block();
        // Truncated anywhere.
        for cut in 1..good.len() {
            assert!(Records::new(&good[..cut]).any(|r| r.is_err()), "cut {cut}");
        }
        // A total length that lies: longer, shorter, unaligned, tiny.
        for lie in [
            good.len() + 4,
            good.len() - 4,
            good.len() + 1,
            8,
            u32::MAX as usize,
        ] {
            let mut bad = good.clone();
            bad[4..8].copy_from_slice(&(lie as u32).to_le_bytes());
            error(&bad);
        }
        // A captured length beyond the block.
        for caplen in [good.len() as u32, 1 << 20, u32::MAX] {
            let mut bad = good.clone();
            bad[20..24].copy_from_slice(&caplen.to_le_bytes());
            assert_eq!(error(&bad), "captured length beyond the block");
        }
        // An option longer than the block.
        let mut bad = good.clone();
        let comment_at = EPB_HEADER_LEN + 8 + EPB_FLAGS_OPTION_LEN;
        bad[comment_at + 2..comment_at + 4].copy_from_slice(&200u16.to_le_bytes());
        assert_eq!(error(&bad), "option longer than the block");
        // Another block type.
        let mut bad = good.clone();
        bad[0] = 5;
        assert_eq!(error(&bad), "not an enhanced packet block");
        // A good block, then garbage: the good one, then the error.
        let mut two = good.clone();
        two.extend_from_slice(&[6, 0, 0, 0, 0xff]);
        let results: Vec<_> = Records::new(&two).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert_eq!(results[1].as_ref().unwrap_err().offset, good.len());
    }
}
