//! Buffering that hands bytes to the underlying writer only at block
//! boundaries, so a capture file cut off by a crash (a panic, SIGKILL
//! between writes) ends with a complete block and stays readable.
//!
//! One case no writer can prevent: SIGKILL arriving *during* a `write(2)`
//! of several page-cache folios makes the kernel stop at a folio boundary
//! (`generic_perform_write`), so the last block may be cut short. Readers
//! (tshark, tcpdump -r, `pcap-agent capture -r`) then read every packet
//! before it and report the file as cut short.

use std::io::{self, Write};

/// Bytes buffered before they are written out at the next block boundary.
const FLUSH_AT: usize = 1 << 20;

/// Collects the bytes of whole blocks and writes them out in large chunks.
#[derive(Debug)]
pub(crate) struct BlockBuffer<W: Write> {
    writer: W,
    buf: Vec<u8>,
    /// Bytes handed to `writer` so far.
    written_out: u64,
}

impl<W: Write> BlockBuffer<W> {
    pub(crate) fn new(writer: W) -> Self {
        Self {
            writer,
            buf: Vec::with_capacity(FLUSH_AT + (64 << 10)),
            written_out: 0,
        }
    }

    /// Marks the end of a block: a full buffer is written out now.
    pub(crate) fn end_block(&mut self) -> io::Result<()> {
        if self.buf.len() >= FLUSH_AT {
            self.write_out()?;
        }
        Ok(())
    }

    /// Bytes of the stream so far: written out and still buffered.
    pub(crate) fn position(&self) -> u64 {
        self.written_out + self.buf.len() as u64
    }

    /// The buffer itself, for encoding a block straight into it (then
    /// [`Self::end_block`]).
    pub(crate) fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn write_out(&mut self) -> io::Result<()> {
        self.written_out += self.buf.len() as u64;
        let result = self.writer.write_all(&self.buf);
        self.buf.clear();
        result
    }

    /// The underlying writer, after writing out the buffered blocks.
    pub(crate) fn get_mut(&mut self) -> io::Result<&mut W> {
        self.write_out()?;
        Ok(&mut self.writer)
    }

    /// Writes out the buffered blocks and returns the underlying writer.
    pub(crate) fn into_inner(mut self) -> io::Result<W> {
        self.write_out()?;
        Ok(self.writer)
    }
}

impl<W: Write> Write for BlockBuffer<W> {
    /// Buffers `data`; it is written out at a block boundary.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    /// Writes out everything buffered and flushes the underlying writer.
    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.writer.flush()
    }
}

/// The methods a writer kept in a field `writer: BlockBuffer<W>` gives its
/// callers for the underlying writer: `flush`, `get_mut` and `into_inner`,
/// written once for the pcap and pcapng writers. `$unit` names what the
/// format buffers ("records", "blocks") in their documentation.
macro_rules! underlying_writer_methods {
    ($unit:literal) => {
        #[doc = concat!("Writes out the buffered ", $unit, " and flushes the underlying writer.")]
        pub fn flush(&mut self) -> io::Result<()> {
            self.writer.flush()
        }

        #[doc = concat!(
            "The underlying writer, after the buffered ", $unit, " are written to it. Writing \
             to it directly corrupts the stream unless whole, valid ", $unit, " are written."
        )]
        pub fn get_mut(&mut self) -> io::Result<&mut W> {
            self.writer.get_mut()
        }

        #[doc = concat!("Writes out the buffered ", $unit, " and returns the underlying writer.")]
        pub fn into_inner(self) -> io::Result<W> {
            self.writer.into_inner()
        }
    };
}
pub(crate) use underlying_writer_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_at_block_boundaries() {
        let mut out = BlockBuffer::new(Vec::new());
        out.write_all(&vec![1; FLUSH_AT - 1]).unwrap();
        out.end_block().unwrap();
        assert!(
            out.writer.is_empty(),
            "below the threshold nothing is written"
        );
        out.write_all(&[2; 10]).unwrap();
        assert!(out.writer.is_empty(), "never in the middle of a block");
        out.end_block().unwrap();
        assert_eq!(out.writer.len(), FLUSH_AT + 9);
        out.write_all(&[3]).unwrap();
        assert_eq!(out.position(), FLUSH_AT as u64 + 10);
        assert_eq!(out.into_inner().unwrap().len(), FLUSH_AT + 10);
    }
}
