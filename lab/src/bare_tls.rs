//! `pcap-lab bare-tls`: the bytes of a capture file moved agent → API →
//! CLI by nothing but TLS over TCP, for the bench's floor of the
//! distributed path (`bench::distributed`).
//!
//! Each role is the product's TLS stack without gRPC, HTTP/2 or pcap's own
//! work: pcap-proto's server configuration ([`TlsServer`]) and client
//! configuration ([`rustls_client_config`]), tokio-rustls over
//! [`Buffered`] sockets, one current-thread runtime. The sender holds the
//! file in memory and writes it in [`CHUNK`] pieces, the relay copies what
//! it reads to its downstream, the receiver writes what it reads to a file
//! in [`FILE_WRITE`] pieces (as pcap's writers do). Each prints on stderr
//! `listening` once it accepts, and at the end the CPU it spent from the
//! moment its connections were up (`N cpu ns`) and the bytes it moved
//! (`N bytes moved`).

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use nix::sys::resource::UsageWho;
use pcap_proto::{
    buffered::Buffered,
    tls::{KeyPair, TlsServer, rustls_client_config},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};

use crate::rusage;

/// What the sender writes at a time: one batch of a busy agent.
const CHUNK: usize = 256 << 10;
/// What the receiver writes to its file at a time, as pcap's writers do.
const FILE_WRITE: usize = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Like the agent: accept one client that presents a certificate of
    /// `--ca`, write it `--file`, close.
    Send {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        tls: Tls,
        #[arg(long)]
        file: PathBuf,
    },
    /// Like the API: accept one client (no client certificate), connect to
    /// `--upstream` presenting the same certificate, copy upstream to the
    /// client.
    Relay {
        #[arg(long)]
        listen: SocketAddr,
        #[command(flatten)]
        tls: Tls,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long)]
        upstream_name: String,
    },
    /// Like the CLI: connect to `--connect`, write what arrives to `--out`.
    Receive {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        server_name: String,
        #[command(flatten)]
        tls: Tls,
        #[arg(long)]
        out: PathBuf,
    },
    /// No network: write `--file` to `--out` from memory, as the receiver
    /// writes it.
    Write {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// A certificate and its key, and the CA that verifies the peer.
#[derive(Debug, Args)]
pub struct Tls {
    #[arg(long)]
    certificate: PathBuf,
    #[arg(long)]
    private_key: PathBuf,
    #[arg(long)]
    ca: PathBuf,
}

impl Tls {
    fn key_pair(&self) -> KeyPair<'_> {
        KeyPair {
            certificate: &self.certificate,
            private_key: &self.private_key,
        }
    }
}

pub fn run(role: &Role) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (cpu, bytes) = runtime.block_on(play(role))?;
    eprintln!("{} cpu ns", cpu.as_nanos());
    eprintln!("{bytes} bytes moved");
    Ok(())
}

/// Plays `role`; returns the CPU spent once connected and the bytes moved.
async fn play(role: &Role) -> anyhow::Result<(Duration, u64)> {
    match role {
        Role::Send { listen, tls, file } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let server = TlsServer::new(&tls.key_pair(), Some(&tls.ca))?;
            let mut client = accept(&server, *listen).await?;
            let start = cpu()?;
            for chunk in bytes.chunks(CHUNK) {
                client.write_all(chunk).await?;
            }
            client.shutdown().await?;
            Ok((since(start)?, bytes.len() as u64))
        }
        Role::Relay {
            listen,
            tls,
            upstream,
            upstream_name,
        } => {
            let server = TlsServer::new(&tls.key_pair(), None)?;
            let mut client = accept(&server, *listen).await?;
            let mut upstream = connect(*upstream, upstream_name, tls).await?;
            let start = cpu()?;
            let mut buf = vec![0; CHUNK];
            let mut moved = 0;
            loop {
                let n = upstream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                client.write_all(&buf[..n]).await?;
                moved += n as u64;
            }
            client.shutdown().await?;
            Ok((since(start)?, moved))
        }
        Role::Receive {
            connect: address,
            server_name,
            tls,
            out,
        } => {
            let mut server = connect(*address, server_name, tls).await?;
            let start = cpu()?;
            let mut file = create(out)?;
            let mut buf = vec![0; FILE_WRITE];
            let (mut filled, mut moved) = (0, 0);
            loop {
                let n = server.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
                moved += n as u64;
                if filled == buf.len() {
                    file.write_all(&buf)?;
                    filled = 0;
                }
            }
            file.write_all(&buf[..filled])?;
            Ok((since(start)?, moved))
        }
        Role::Write { file, out } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let start = cpu()?;
            let mut out = create(out)?;
            for chunk in bytes.chunks(FILE_WRITE) {
                out.write_all(chunk)?;
            }
            Ok((since(start)?, bytes.len() as u64))
        }
    }
}

/// Accepts one TLS client on `address`.
async fn accept(
    server: &TlsServer,
    address: SocketAddr,
) -> anyhow::Result<impl AsyncRead + AsyncWrite + Unpin> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    eprintln!("listening on {address}");
    let (tcp, _) = listener.accept().await?;
    server
        .accept(tcp)
        .await
        .context("the TLS handshake with the client failed")
}

/// A TLS connection to `address`, verified against `tls.ca` as `name`.
async fn connect(
    address: SocketAddr,
    name: &str,
    tls: &Tls,
) -> anyhow::Result<impl AsyncRead + AsyncWrite + Unpin> {
    let config = rustls_client_config(&tls.ca, &tls.key_pair())?;
    let tcp = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let name = ServerName::try_from(name.to_owned())?;
    Ok(TlsConnector::from(Arc::clone(&config))
        .connect(name, Buffered::new(tcp))
        .await?)
}

fn create(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
}

/// This process's user + system time so far.
fn cpu() -> anyhow::Result<Duration> {
    rusage::cpu_of(UsageWho::RUSAGE_SELF)
}

/// This process's user + system time since [`cpu`] said `start`.
fn since(start: Duration) -> anyhow::Result<Duration> {
    Ok(cpu()?.saturating_sub(start))
}
