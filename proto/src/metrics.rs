//! The metrics `pcap-agent serve` and `pcap-api serve` share: the
//! `[metrics]` section of their configuration, a small HTTP/1.1 server
//! (hyper, optionally behind TLS) that answers `GET /metrics` with the text
//! a daemon renders, and 404 to anything else, and the registry each
//! daemon declares its metrics in ([`MetricsRegistry`]).
//!
//! It is bounded: at most [`MAX_CONNECTIONS`] connections at once (more are
//! closed at once), one request per connection, a request head of at most
//! [`MAX_REQUEST_BYTES`] read within [`REQUEST_TIMEOUT`], and a whole
//! connection (TLS handshake included) within [`CONNECTION_TIMEOUT`].

use std::{
    convert::Infallible,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family},
    registry::{Metric, Registry},
};
use serde::Deserialize;
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
    task::JoinHandle,
};

use crate::tls::{KeyPair, TlsServer};

/// OpenMetrics text, which Prometheus reads (prometheus-client writes it).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections served at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 4;
/// The largest request head read (hyper's smallest buffer).
pub const MAX_REQUEST_BYTES: usize = 8192;
/// How long a client gets to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may last, TLS handshake included.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The one path served.
pub const PATH: &str = "/metrics";

/// `127.0.0.1:PORT`: where a daemon serves metrics when `[metrics] listen`
/// is absent.
pub const fn localhost(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// The labels of a metric family with one label, e.g. `[("code", "ok")]`.
pub type Labels = [(&'static str, &'static str); 1];

/// A daemon's metrics, each declared once with its name and help, and the
/// text a scrape gets.
#[derive(Debug)]
pub struct MetricsRegistry(Registry);

impl MetricsRegistry {
    /// Metrics named `PREFIX_NAME` (counters get `_total` after that).
    pub fn new(prefix: &str) -> Self {
        Self(Registry::with_prefix(prefix))
    }

    /// A new metric at its default (0), registered as `name` with `help`;
    /// the registry renders what the returned handle records.
    pub fn add<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        let metric = M::default();
        self.0.register(name, help, metric.clone());
        metric
    }

    /// The OpenMetrics text of every metric, in the order they were added.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.0);
        text
    }
}

/// The value of `series` (a name with its labels, as rendered) in the text
/// a scrape gets; `None` when the text has no such series.
pub fn sample<T: std::str::FromStr>(text: &str, series: &str) -> Option<T> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))?
        .parse()
        .ok()
}

/// [`sample`] for tests: the value of `series`, which must be there.
///
/// # Panics
///
/// When `text` has no such series (or its value is not a `T`); the
/// message shows the whole text.
pub fn expect_sample<T: std::str::FromStr>(text: &str, series: &str) -> T {
    sample(text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"))
}

/// Counts one call refused with `code` in a family labelled `code`.
pub fn count_refusal(family: &Family<Labels, Counter>, code: tonic::Code) {
    family.get_or_create(&[("code", code_label(code))]).inc();
}

/// The `[metrics]` section of either daemon's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `false` serves no metrics.
    pub enabled: bool,
    /// `IP:PORT`; absent: the daemon's default (plain HTTP on 127.0.0.1).
    pub listen: Option<String>,
    /// Serve HTTPS instead of plain HTTP.
    pub tls: Option<MetricsTls>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            tls: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// When given, scrapers must present a certificate that chains to it.
    pub client_ca: Option<PathBuf>,
}

/// A `[metrics]` value that is wrong: `key` is its dotted name.
#[derive(Debug, Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error(transparent)]
    Config(#[from] Invalid),
    #[error("cannot listen on {address} (metrics.listen): {source}")]
    Listen {
        address: SocketAddr,
        source: io::Error,
    },
}

impl MetricsConfig {
    /// Where to listen, `default` when `listen` is absent; `None` when
    /// metrics are disabled.
    pub fn address(&self, default: SocketAddr) -> Result<Option<SocketAddr>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        let Some(listen) = &self.listen else {
            return Ok(Some(default));
        };
        listen.parse().map(Some).map_err(|_| Invalid {
            key: "metrics.listen",
            message: format!(
                "{listen:?} is not an address: give IP:PORT, e.g. \"{default}\", \
                 or enabled = false to serve no metrics"
            ),
        })
    }

    /// The TLS server of `[metrics.tls]`, with its files read; `None` for
    /// plain HTTP.
    pub fn tls_server(&self) -> Result<Option<TlsServer>, Invalid> {
        let Some(tls) = self.tls.as_ref().filter(|_| self.enabled) else {
            return Ok(None);
        };
        let identity = KeyPair {
            certificate: &tls.certificate,
            private_key: &tls.private_key,
        };
        let server = TlsServer::new(&identity, tls.client_ca.as_deref()).map_err(|e| Invalid {
            key: "metrics.tls",
            message: e.to_string(),
        })?;
        Ok(Some(
            server
                .with_alpn(&[b"http/1.1"])
                .with_handshake_timeout(CONNECTION_TIMEOUT),
        ))
    }

    /// Checks everything, the files included, without listening.
    pub fn check(&self, default: SocketAddr) -> Result<(), Invalid> {
        self.address(default)?;
        self.tls_server()?;
        Ok(())
    }
}

/// A bound metrics listener, not serving yet.
pub struct MetricsListener {
    listener: TcpListener,
    tls: Option<TlsServer>,
}

impl MetricsListener {
    /// Listens as `config` says (`default` when it names no address);
    /// `None` when metrics are disabled.
    pub async fn bind(
        config: &MetricsConfig,
        default: SocketAddr,
    ) -> Result<Option<Self>, MetricsError> {
        let Some(address) = config.address(default)? else {
            return Ok(None);
        };
        let tls = config.tls_server()?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MetricsError::Listen { address, source })?;
        Ok(Some(Self { listener, tls }))
    }

    /// The address bound (its port when 0 was asked for).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether scrapes come over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `GET /metrics` with what `render` returns, in a task of its
    /// own, until the task is aborted or the runtime ends.
    pub fn serve(self, render: impl Fn() -> String + Send + Sync + 'static) -> JoinHandle<()> {
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(render);
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tls = self.tls.map(Arc::new);
        let listener = self.listener;
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: accepting a connection failed");
                        // EMFILE and the like: give connections time to close.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::debug!(%peer, "metrics: {MAX_CONNECTIONS} connections already; closing");
                    continue;
                };
                let render = Arc::clone(&render);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let served = async {
                        match tls {
                            Some(tls) => {
                                if let Some(stream) = tls.accept(tcp).await {
                                    serve_connection(stream, render).await;
                                }
                            }
                            None => serve_connection(tcp, render).await,
                        }
                    };
                    if tokio::time::timeout(CONNECTION_TIMEOUT, served)
                        .await
                        .is_err()
                    {
                        tracing::debug!(%peer, "metrics: connection timed out");
                    }
                    drop(permit);
                });
            }
        })
    }
}

async fn serve_connection<IO>(io: IO, render: Arc<dyn Fn() -> String + Send + Sync>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<Incoming>| {
        let response = respond(&request, &*render);
        async move { Ok::<_, Infallible>(response) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "metrics: connection failed");
    }
}

/// A gRPC status code as a metric label: `resource_exhausted`, ... (a
/// bounded set of 17).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `GET /metrics` gets the metrics; anything else 404.
fn respond<B>(request: &Request<B>, render: &dyn Fn() -> String) -> Response<String> {
    if request.method() == Method::GET && request.uri().path() == PATH {
        let mut response = Response::new(render());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
        );
        return response;
    }
    let mut response = Response::new(format!("not found: metrics are at GET {PATH}\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    use super::*;

    fn config(text: &str) -> MetricsConfig {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            metrics: MetricsConfig,
        }
        toml::from_str::<File>(text).unwrap().metrics
    }

    const DEFAULT: SocketAddr = localhost(9495);

    #[test]
    fn the_registry_renders_what_its_metrics_record_in_their_order() {
        let mut registry = MetricsRegistry::new("pcap_test");
        let running: prometheus_client::metrics::gauge::Gauge = registry.add("running", "Now");
        let refused: Family<Labels, Counter> = registry.add("refused", "By code");
        running.set(2);
        count_refusal(&refused, tonic::Code::NotFound);
        let text = registry.render();
        assert_eq!(sample(&text, "pcap_test_running"), Some(2));
        assert_eq!(sample::<u64>(&text, "pcap_test_refused_total"), None);
        assert_eq!(
            registry.render(),
            "# HELP pcap_test_running Now.\n# TYPE pcap_test_running gauge\npcap_test_running 2\n\
             # HELP pcap_test_refused By code.\n# TYPE pcap_test_refused counter\n\
             pcap_test_refused_total{code=\"not_found\"} 1\n# EOF\n"
        );
    }

    #[test]
    fn the_default_is_plain_on_localhost_and_can_be_turned_off() {
        assert_eq!(config("").address(DEFAULT).unwrap(), Some(DEFAULT));
        assert_eq!(
            config("[metrics]\nlisten = \"0.0.0.0:9100\"")
                .address(DEFAULT)
                .unwrap(),
            Some("0.0.0.0:9100".parse().unwrap())
        );
        assert_eq!(
            config("[metrics]\nenabled = false")
                .address(DEFAULT)
                .unwrap(),
            None
        );
        let error = config("[metrics]\nlisten = \"localhost\"")
            .address(DEFAULT)
            .unwrap_err();
        assert_eq!(error.key, "metrics.listen");
        assert!(
            error.message.contains("\"localhost\" is not an address"),
            "{error}"
        );
        let error = config("[metrics.tls]\ncertificate = \"/nonexistent/c\"\nprivate_key = \"/k\"")
            .check(DEFAULT)
            .unwrap_err();
        assert_eq!(error.key, "metrics.tls");
        assert!(error.message.contains("/nonexistent/c"), "{error}");
    }

    async fn get(address: SocketAddr, request: &str) -> String {
        let mut tcp = TcpStream::connect(address).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        // A server that closes with our request unread resets the
        // connection: what was read before counts.
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        String::from_utf8(answer).unwrap()
    }

    #[tokio::test]
    async fn serves_get_metrics_only_and_bounds_connections() {
        let config = config("[metrics]\nlisten = \"127.0.0.1:0\"");
        let listener = MetricsListener::bind(&config, DEFAULT)
            .await
            .unwrap()
            .unwrap();
        let address = listener.local_addr().unwrap();
        let served = listener.serve(|| "up 1\n# EOF\n".to_owned());

        let answer = get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("application/openmetrics-text"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nup 1\n# EOF\n"), "{answer}");
        for request in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        ] {
            let answer = get(address, request).await;
            assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        }
        // A head larger than the buffer is refused.
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        let answer = get(address, &huge).await;
        assert!(!answer.contains("200 OK"), "{answer}");

        // MAX_CONNECTIONS idle clients hold every slot: the next is closed
        // unanswered, and once they go, scrapes are answered again.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut tcp = TcpStream::connect(address).await.unwrap();
            tcp.write_all(b"GET /met").await.unwrap();
            idle.push(tcp);
        }
        // The server has accepted them all once our probe is refused.
        let mut refused = false;
        for _ in 0..100 {
            let answer = get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if answer.is_empty() {
                refused = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(refused, "a connection past MAX_CONNECTIONS is closed");
        drop(idle);
        let mut answered = false;
        for _ in 0..100 {
            let answer = get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if answer.starts_with("HTTP/1.1 200 OK") {
                answered = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(answered, "slots come back when clients leave");
        served.abort();
    }
}
