//! Serving the API over TLS, and shutting down. On the signal, new captures
//! are refused (UNAVAILABLE) and running ones are asked to stop; once they
//! have ended the server stops accepting connections and finishes the
//! responses in flight (tonic's graceful shutdown). All of that gets
//! `limits.drain_grace`; then the server returns regardless.

use std::{future::Future, time::Duration};

use pcap_proto::{
    tls::{KeyPair, TlsError, TlsServer},
    v1::api_server::ApiServer,
};
use thiserror::Error;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::{Server, server::TcpIncoming};

use crate::{
    config::Config,
    service::ApiService,
    stop::{Stop, StopLevel},
};

/// HTTP/2 pings detect clients that vanished without closing their
/// connection within interval + timeout; their captures then stop.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// TCP keepalive probes on idle connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Concurrent calls on one client connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Setup(#[from] crate::service::SetupError),
    #[error("cannot serve: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Metrics(#[from] pcap_proto::metrics::MetricsError),
}

/// Serves on `listener` until `signal` completes, then drains.
pub async fn serve(
    config: &Config,
    listener: TcpListener,
    signal: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let shutdown = Stop::default();
    let service = ApiService::new(config, shutdown.clone())?;
    let service = match &config.store {
        Some(store) => service.with_store(crate::store::CaptureStore::new(store, &config.users)?),
        None => service,
    };
    if let Some(store) = &config.store {
        abort_stale_uploads(crate::store::stale::StaleUploads::new(store)?);
    }
    let captures = service.concurrency();
    let metrics =
        pcap_proto::metrics::MetricsListener::bind(&config.metrics, crate::metrics::DEFAULT_LISTEN)
            .await?;
    if let Some(listener) = metrics {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, tls = listener.is_tls(), "serving metrics");
        }
        listener.serve(|| crate::metrics::metrics().render());
    }
    let identity = KeyPair {
        certificate: &config.tls.certificate,
        private_key: &config.tls.private_key,
    };
    // Every handshake in its own task, within a deadline, refusals logged.
    let tls = TlsServer::new(&identity, None)?;
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE));
    let (close, closed) = oneshot::channel::<()>();
    let server = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(ApiServer::new(service))
        .serve_with_incoming_shutdown(tls.incoming(incoming), async {
            let _ = closed.await;
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        () = signal => {}
    }
    let grace = config.limits.drain_grace();
    tracing::info!(
        drain_grace_s = grace.as_secs_f64(),
        active_captures = captures.active_captures(),
        "shutting down: refusing new captures, stopping running ones"
    );
    shutdown.request(StopLevel::Drain, "the API is shutting down");
    let drain = async {
        // The server keeps serving meanwhile, so that the responses flow.
        tokio::select! {
            result = &mut server => return result,
            () = captures.until_idle() => {}
        }
        let _ = close.send(());
        server.await
    };
    if let Ok(result) = tokio::time::timeout(grace, drain).await {
        result?;
    } else {
        tracing::warn!(
            active_captures = captures.active_captures(),
            "captures still running after drain_grace; cutting them"
        );
    }
    Ok(())
}

/// Aborts, in the background, the multipart uploads under the store's
/// prefix that began before now: an earlier run of the API, killed
/// mid-capture, left them open.
fn abort_stale_uploads(stale: crate::store::stale::StaleUploads) {
    let started = std::time::SystemTime::now();
    tokio::spawn(async move {
        match stale.abort_begun_before(started).await {
            Ok(aborted) => tracing::info!(
                aborted,
                "store: multipart uploads left open by an earlier run aborted"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "store: cannot abort multipart uploads left open by an earlier run; \
                 an S3 lifecycle rule (AbortIncompleteMultipartUpload) can"
            ),
        }
    });
}
