//! HTTPS servers that stand in for a BOSH director, Cloud Controller and
//! a UAA (BOSH's or Cloud Foundry's), speaking their documented formats over real TLS
//! with certificates from [`crate::pki`].
//!
//! Each server runs on a thread of its own with its own tokio runtime, on a
//! listener that may have been bound in another network namespace
//! ([`bind_in`]): a socket stays in the namespace it was created in. A
//! server stops (and its port closes) when it is dropped.

pub mod cloud_controller;
pub mod director;
pub mod uaa;

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::Path,
    sync::Arc,
    thread::JoinHandle,
};

use anyhow::Context as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, ServerConfig},
    server::TlsStream,
};

use crate::{netns::Netns, pki::Leaf};

/// Binds `address` (e.g. `127.0.0.1:0`) inside `ns`.
pub fn bind_in(ns: &Netns, address: &str) -> anyhow::Result<StdListener> {
    ns.run(|| {
        let listener = StdListener::bind(address).with_context(|| format!("bind {address}"))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// A running HTTPS server.
#[derive(Debug)]
pub struct Server {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `router` on `listener` with the certificate `tls`.
    pub fn start(listener: StdListener, tls: &Leaf, router: axum::Router) -> anyhow::Result<Self> {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(tls)?));
        let address = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let tcp = TcpListener::from_std(listener).expect("a non-blocking listener");
                let listener = TlsListener { tcp, acceptor };
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
            // Connections still open are dropped with the runtime.
            runtime.shutdown_background();
        });
        Ok(Self {
            address,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `https://ADDRESS`.
    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn server_config(tls: &Leaf) -> anyhow::Result<ServerConfig> {
    let certificates = CertificateDer::pem_file_iter(&tls.certificate)
        .with_context(|| read_error(&tls.certificate))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| read_error(&tls.certificate))?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key)
        .with_context(|| read_error(&tls.private_key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_error(path: &Path) -> String {
    format!("reading {}", path.display())
}

/// TLS on accepted connections; failed handshakes are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(stream) = self.acceptor.accept(tcp).await {
                return (stream, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The token of an `Authorization: Bearer TOKEN` header, as Cloud
/// Controller and the director read it.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
