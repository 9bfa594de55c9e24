//! `pcap-lab bare-tls`: the bytes of a capture file moved agent → API →
//! CLI by nothing but TLS over TCP, for the bench's floor of the
//! distributed path (`bench::floor`).
//!
//! Each role is the product's TLS stack without gRPC, HTTP/2 or pcap's own
//! work: pcap-proto's server configuration ([`TlsServer`]) and client
//! configuration ([`rustls_client_config`]), tokio-rustls over
//! [`Buffered`] sockets, one current-thread runtime. The sender holds the
//! file in memory and writes it in [`CHUNK`] pieces, the relay copies what
//! it reads to its downstream, the receiver writes what it reads to a file
//! in [`FILE_WRITE`] pieces (as pcap's writers do). A role that listens
//! prints `listening on ADDRESS` on stderr once it does; every role prints
//! at the end the CPU it spent from the moment its connections were up
//! (`N cpu ns`) and the bytes it moved (`N bytes moved`).

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
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
        Role::Send { listen, tls, file } => send(listener(*listen).await?, tls, &read(file)?).await,
        Role::Relay {
            listen,
            tls,
            upstream,
            upstream_name,
        } => relay(listener(*listen).await?, tls, *upstream, upstream_name).await,
        Role::Receive {
            connect: address,
            server_name,
            tls,
            out,
        } => receive(*address, server_name, tls, out).await,
        Role::Write { file, out } => {
            let bytes = read(file)?;
            let start = cpu()?;
            let mut out = create(out)?;
            for chunk in bytes.chunks(FILE_WRITE) {
                out.write_all(chunk)?;
            }
            Ok((since(start)?, bytes.len() as u64))
        }
    }
}

/// Accepts one client on `listener` that presents a certificate of
/// `tls.ca`, writes it `bytes` and closes.
async fn send(listener: TcpListener, tls: &Tls, bytes: &[u8]) -> anyhow::Result<(Duration, u64)> {
    let server = TlsServer::new(&tls.key_pair(), Some(&tls.ca))?;
    let mut client = accept(&server, &listener).await?;
    let start = cpu()?;
    for chunk in bytes.chunks(CHUNK) {
        client.write_all(chunk).await?;
    }
    client.shutdown().await?;
    Ok((since(start)?, bytes.len() as u64))
}

/// Accepts one client on `listener` (no client certificate), connects to
/// `upstream` as `tls` and copies what it sends to the client.
async fn relay(
    listener: TcpListener,
    tls: &Tls,
    upstream: SocketAddr,
    upstream_name: &str,
) -> anyhow::Result<(Duration, u64)> {
    let server = TlsServer::new(&tls.key_pair(), None)?;
    let mut client = accept(&server, &listener).await?;
    let mut upstream = connect(upstream, upstream_name, tls).await?;
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

/// Connects to `address` and writes what arrives to `out`.
async fn receive(
    address: SocketAddr,
    server_name: &str,
    tls: &Tls,
    out: &Path,
) -> anyhow::Result<(Duration, u64)> {
    let mut server = connect(address, server_name, tls).await?;
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

/// A listener on `address`, said on stderr.
async fn listener(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("listening on {address}"))?;
    eprintln!("listening on {address}");
    Ok(listener)
}

/// Accepts one TLS client on `listener`.
async fn accept(
    server: &TlsServer,
    listener: &TcpListener,
) -> anyhow::Result<impl AsyncRead + AsyncWrite + Unpin> {
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
    Ok(TlsConnector::from(config)
        .connect(name, Buffered::new(tcp))
        .await?)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
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

#[cfg(test)]
mod tests {
    use pcap_tests::{
        TempDir,
        pki::{Ca, Leaf, Validity},
    };

    use super::*;

    fn tls(leaf: Leaf, ca: &Ca) -> Tls {
        Tls {
            certificate: leaf.certificate,
            private_key: leaf.private_key,
            ca: ca.certificate.clone(),
        }
    }

    /// The floor is only a floor if the bytes really went through: the
    /// receiver's file is the sender's, byte for byte, and each role counts
    /// every byte.
    #[test]
    fn the_three_roles_move_a_file_byte_for_byte() -> anyhow::Result<()> {
        let dir = TempDir::new("bare-tls")?;
        let ca = Ca::new(&dir, "ca")?;
        let agent = tls(
            ca.leaf("agent", &["pcap-agent", "127.0.0.1"], Validity::Current)?,
            &ca,
        );
        let api = tls(
            ca.leaf("api", &["pcap-api", "127.0.0.1"], Validity::Current)?,
            &ca,
        );
        // Not a whole number of chunks, records or file writes.
        let bytes: Vec<u8> = (0..(3 << 20) + 12_345_u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let out = dir.join("out");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let moved = runtime.block_on(async {
            let sender = TcpListener::bind("127.0.0.1:0").await?;
            let relayer = TcpListener::bind("127.0.0.1:0").await?;
            let (sender_address, relay_address) = (sender.local_addr()?, relayer.local_addr()?);
            let (sent, relayed, received) = tokio::join!(
                send(sender, &agent, &bytes),
                relay(relayer, &api, sender_address, "pcap-agent"),
                receive(relay_address, "pcap-api", &api, &out),
            );
            anyhow::Ok([sent?.1, relayed?.1, received?.1])
        })?;
        let size = bytes.len() as u64;
        assert_eq!(moved, [size, size, size]);
        assert!(std::fs::read(&out)? == bytes, "the file differs");
        Ok(())
    }
}
