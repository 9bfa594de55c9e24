//! `pcap-agent serve`: the `pcap.v1.Agent` gRPC service, over mutual TLS,
//! for pcap-api (see `docs/configuration.md`).
//!
//! Each `Capture` call runs a [`session`] on its own thread, which writes
//! into a byte-budgeted [`queue`] that the call's response stream reads.

pub mod config;
pub mod container;
pub mod metrics;
pub mod queue;
pub mod service;
pub mod session;
pub mod sink;
pub mod slots;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use pcap_proto::v1::agent_server::AgentServer;
use thiserror::Error;
use tokio::sync::watch;
use tonic::transport::{Server, server::TcpIncoming};
use tracing::{info, warn};

pub use self::config::{Config, ConfigError};
use self::service::AgentService;

/// After SIGTERM, how long clients get to read the end of their streams.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// HTTP/2 pings: an API that vanished (its VM lost, its network cut) is
/// noticed within interval + timeout, and its captures stop then.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive probes on idle connections (before any stream).
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Concurrent calls on one connection. The API opens a connection per
/// capture; a client cannot start more calls than this on one.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 16;

type Serving<'a> = Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + 'a>>;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] pcap_proto::metrics::MetricsError),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves until `stop` completes (SIGTERM), then stops every capture, lets
/// them drain and send their statistics, and returns.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<(), ServeError> {
    let address = config.listen_addr()?;
    // tc filters of captures that died with an earlier agent (kernels before 6.6).
    crate::tc_fallback::recover_stale();
    // The first capture should not pay for aya's loader (it parses the
    // kernel's BTF) nor for the verifier: a spare datapath for the default
    // snap length and ring size is made while the server starts.
    let (snaplen, ring_bytes) = (
        config.limits.max_snaplen,
        config.capture.ring_buffer_kib * 1024,
    );
    tokio::task::spawn_blocking(move || crate::datapath::keep_spare(snaplen, ring_bytes));
    // The handshakes are `TlsServer`'s, which bounds and logs them.
    let tls = config.tls_server()?;
    if tls.is_none() {
        warn!(
            "insecure_plaintext = true: serving plain-text gRPC WITHOUT TLS OR CLIENT \
             AUTHENTICATION; anyone who can reach {address} can capture this host's traffic"
        );
    }
    let mut server = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let incoming = TcpIncoming::bind(address)
        .map_err(|source| ServeError::Listen { address, source })?
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let local = incoming.local_addr().unwrap_or(address);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let config = Arc::new(config);
    let service = AgentService::new(Arc::clone(&config), shutdown_rx.clone());
    let mut active = service.active_captures();
    if let Some(listener) =
        pcap_proto::metrics::MetricsListener::bind(&config.metrics, metrics::DEFAULT_LISTEN).await?
    {
        info!(address = %listener.local_addr().unwrap_or(address), tls = listener.is_tls(), "serving metrics");
        let running = service.active_captures();
        listener.serve(move || metrics::metrics().render(*running.borrow()));
    }
    info!(
        address = %local,
        max_captures = config.limits.max_captures,
        "listening"
    );
    let mut stopping = shutdown_rx;
    let stopping = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    let router = server.add_service(AgentServer::new(service));
    let mut serving: Serving<'_> = match tls {
        Some(tls) => {
            Box::pin(router.serve_with_incoming_shutdown(tls.incoming(incoming), stopping))
        }
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, stopping)),
    };
    tokio::select! {
        result = &mut serving => return Ok(result?),
        () = stop => {}
    }

    info!(
        active_captures = *active.borrow(),
        "shutting down: stopping every capture"
    );
    shutdown.send_replace(true);
    // The server stops accepting and waits for the calls in flight, whose
    // captures now drain and send their statistics.
    if let Ok(result) = tokio::time::timeout(SHUTDOWN_GRACE, &mut serving).await {
        result?;
    } else {
        warn!(
            "clients did not read the end of their streams within {SHUTDOWN_GRACE:?}; exiting anyway"
        );
    }
    // Captures have detached before their streams end; wait for the last
    // threads to let go of their slots.
    if tokio::time::timeout(SHUTDOWN_GRACE, active.wait_for(|n| *n == 0))
        .await
        .is_err()
    {
        warn!(
            active_captures = *active.borrow(),
            "captures still running at exit"
        );
    }
    info!("stopped");
    Ok(())
}
