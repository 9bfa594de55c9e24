//! Byte-level pcapng encoding (little-endian): block types, option codes,
//! padding, and the two buffers blocks are assembled in.
//!
//! Layout reference: <https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html>.

use std::io;

/// Section Header Block.
pub(super) const SHB: u32 = 0x0A0D_0D0A;
/// Interface Description Block.
pub(super) const IDB: u32 = 1;
/// Name Resolution Block.
pub(super) const NRB: u32 = 4;
/// Interface Statistics Block.
pub(super) const ISB: u32 = 5;
/// Enhanced Packet Block.
pub(super) const EPB: u32 = 6;

/// Written in native byte order after the SHB type; tells readers the
/// section is little-endian.
pub(super) const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Options valid in every block.
pub(super) const OPT_ENDOFOPT: u16 = 0;
pub(super) const OPT_COMMENT: u16 = 1;

/// Section Header Block options.
pub(super) const SHB_HARDWARE: u16 = 2;
pub(super) const SHB_OS: u16 = 3;
pub(super) const SHB_USERAPPL: u16 = 4;

/// Interface Description Block options.
pub(super) const IF_NAME: u16 = 2;
pub(super) const IF_DESCRIPTION: u16 = 3;
pub(super) const IF_TSRESOL: u16 = 9;
/// `if_tsresol` value: timestamps count units of 10^-9 s.
pub(super) const TSRESOL_NANOSECONDS: u8 = 9;

/// Name Resolution Block record types.
pub(super) const NRB_RECORD_END: u16 = 0;
pub(super) const NRB_RECORD_IPV4: u16 = 1;

/// Enhanced Packet Block options.
pub(super) const EPB_FLAGS: u16 = 2;

/// Interface Statistics Block options.
pub(super) const ISB_STARTTIME: u16 = 2;
pub(super) const ISB_ENDTIME: u16 = 3;
pub(super) const ISB_IFRECV: u16 = 4;
pub(super) const ISB_IFDROP: u16 = 5;
pub(super) const ISB_FILTERACCEPT: u16 = 6;
pub(super) const ISB_OSDROP: u16 = 7;
pub(super) const ISB_USRDELIV: u16 = 8;

/// Source of padding bytes.
pub(super) const ZEROS: [u8; 3] = [0; 3];

/// Bytes needed after `len` bytes to reach a multiple of 4.
pub(super) const fn padding(len: usize) -> usize {
    len.wrapping_neg() % 4
}

/// A 64-bit timestamp as pcapng stores it: the high 32-bit word first, then
/// the low one, each little-endian.
pub(super) fn timestamp_bytes(ns: u64) -> [u8; 8] {
    let mut bytes = [0; 8];
    bytes[..4].copy_from_slice(&((ns >> 32) as u32).to_le_bytes());
    bytes[4..].copy_from_slice(&(ns as u32).to_le_bytes());
    bytes
}

/// Length of an option value, refused if it does not fit the 16-bit field.
pub(super) fn option_len(value: &[u8]) -> io::Result<u16> {
    u16::try_from(value.len()).map_err(|_| {
        invalid_input(format!(
            "pcapng option value of {} bytes exceeds the limit of {} bytes",
            value.len(),
            u16::MAX
        ))
    })
}

/// A block's total length, refused if it does not fit the 32-bit field.
pub(super) fn block_len(len: usize) -> io::Result<u32> {
    u32::try_from(len)
        .map_err(|_| invalid_input(format!("pcapng block of {len} bytes exceeds 4 GiB")))
}

pub(super) fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// A whole block assembled in memory, for the blocks outside the per-packet
/// path (section header, interface description, statistics).
///
/// Reused between blocks, so it allocates only when a block is larger than
/// every block before it.
#[derive(Default)]
pub(super) struct BlockBuf {
    bytes: Vec<u8>,
    has_options: bool,
}

impl BlockBuf {
    /// Starts a block of `block_type`, dropping the previous one.
    pub(super) fn begin(&mut self, block_type: u32) {
        self.bytes.clear();
        self.has_options = false;
        self.put_u32(block_type);
        self.put_u32(0); // total length, set by `finish`
    }

    pub(super) fn put_u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn put_u32(&mut self, value: u32) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn put_u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_le_bytes());
    }

    pub(super) fn put_timestamp(&mut self, ns: u64) {
        self.bytes.extend_from_slice(&timestamp_bytes(ns));
    }

    /// Appends option `code` with `value`, padded to 4 bytes. Must follow
    /// the block's fixed fields.
    pub(super) fn option(&mut self, code: u16, value: &[u8]) -> io::Result<()> {
        self.type_length_value(code, value)?;
        self.has_options = true;
        Ok(())
    }

    /// Appends a Name Resolution Block record: type, length, `value`
    /// padded to 4 bytes. Records are not options: no `opt_endofopt` follows
    /// them unless an option is added after.
    pub(super) fn record(&mut self, record_type: u16, value: &[u8]) -> io::Result<()> {
        self.type_length_value(record_type, value)
    }

    /// `kind`, the length of `value`, `value` padded to 4 bytes: the shape
    /// of options and of name records alike.
    fn type_length_value(&mut self, kind: u16, value: &[u8]) -> io::Result<()> {
        let len = option_len(value)?;
        self.put_u16(kind);
        self.put_u16(len);
        self.bytes.extend_from_slice(value);
        self.bytes.extend_from_slice(&ZEROS[..padding(value.len())]);
        Ok(())
    }

    /// Ends the options (if any) and the block, and returns its bytes.
    pub(super) fn finish(&mut self) -> io::Result<&[u8]> {
        if self.has_options {
            self.put_u16(OPT_ENDOFOPT);
            self.put_u16(0);
        }
        let total_len = block_len(self.bytes.len() + 4)?;
        self.put_u32(total_len);
        self.bytes[4..8].copy_from_slice(&total_len.to_le_bytes());
        Ok(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_reaches_the_next_multiple_of_four() {
        let padded: Vec<usize> = (0..9).map(padding).collect();
        assert_eq!(padded, [0, 3, 2, 1, 0, 3, 2, 1, 0]);
    }

    #[test]
    fn timestamp_is_high_word_then_low_word() {
        assert_eq!(
            timestamp_bytes(0x0102_0304_0506_0708),
            [0x04, 0x03, 0x02, 0x01, 0x08, 0x07, 0x06, 0x05]
        );
    }

    #[test]
    fn block_buf_pads_options_and_repeats_the_total_length() {
        let mut block = BlockBuf::default();
        block.begin(0x0000_0BAD);
        block.put_u32(7);
        block.option(OPT_COMMENT, b"abcde").unwrap();
        let bytes = block.finish().unwrap();
        #[rustfmt::skip]
        let expected = [
            0xAD, 0x0B, 0, 0,       // block type
            32, 0, 0, 0,            // total length
            7, 0, 0, 0,             // body
            1, 0, 5, 0,             // opt_comment, 5 bytes
            b'a', b'b', b'c', b'd',
            b'e', 0, 0, 0,          // padded to 4
            0, 0, 0, 0,             // opt_endofopt
            32, 0, 0, 0,            // total length again
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn block_buf_without_options_has_no_end_of_options() {
        let mut block = BlockBuf::default();
        block.begin(9);
        let bytes = block.finish().unwrap();
        assert_eq!(bytes, [9, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0]);
    }

    #[test]
    fn option_longer_than_u16_is_refused() {
        let mut block = BlockBuf::default();
        block.begin(9);
        let error = block.option(OPT_COMMENT, &vec![b'x'; 70_000]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
