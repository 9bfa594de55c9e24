//! A TCP connection with a read and a write buffer under TLS, and the
//! HTTP/2 frame size of a client that receives packets.
//!
//! rustls reads at most 4 KiB from its socket per call and writes each
//! TLS record (at most 16 KiB) as soon as it is sealed, so a connection
//! that carries packets would make one system call per 4 KiB received and
//! one per record sent, and hand the kernel one small TCP segment after
//! another. [`Buffered`] gathers both: the socket is read [`BUFFER_BYTES`]
//! at a time, and records are written out when that much has gathered or
//! when the layer above flushes. HTTP/2 flushes whenever it has nothing more
//! to write, so nothing waits in the buffer for more to come.
//!
//! HTTP/2 also flushes after each DATA frame, and a peer that says nothing
//! gets frames of 16 KiB, so a client that receives packets (the API from
//! its agents, the CLI from the API) allows frames of [`MAX_FRAME_BYTES`].

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, BufStream, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The largest HTTP/2 frame a client that receives packets accepts. h2
/// holds a frame whole before handing it on, so this bounds that memory.
pub const MAX_FRAME_BYTES: u32 = 256 << 10;

/// Each direction's buffer: four full TLS records, one TSO segment.
pub const BUFFER_BYTES: usize = 64 << 10;

/// A TCP connection read and written through buffers of [`BUFFER_BYTES`].
#[derive(Debug)]
pub struct Buffered(BufStream<TcpStream>);

impl Buffered {
    #[must_use]
    pub fn new(tcp: TcpStream) -> Self {
        Self(BufStream::with_capacity(BUFFER_BYTES, BUFFER_BYTES, tcp))
    }
}

impl Connected for Buffered {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().connect_info()
    }
}

impl AsyncRead for Buffered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
