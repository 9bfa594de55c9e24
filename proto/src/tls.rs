//! Loading certificates for mutual TLS, reading the names a peer's
//! certificate carries, serving TLS with bounded handshakes, and telling
//! why a handshake failed.
//!
//! [`TlsServer`] stands in front of tonic's server: it completes every
//! handshake in its own task within [`HANDSHAKE_TIMEOUT`], so clients that
//! connect and send nothing (or half a ClientHello) hold a socket for that
//! long and delay no one, and it logs every refused handshake with the
//! peer's address and the reason (no client certificate, unknown CA,
//! expired, plain text, timeout).

use std::{
    error::Error as StdError,
    fmt, fs, io,
    net::SocketAddr,
    path::Path,
    pin::{Pin, pin},
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
    sync::mpsc,
    task::JoinSet,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, CertificateError, RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
        server::WebPkiClientVerifier,
    },
    server::TlsStream,
};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::buffered::Buffered;

/// How long a client gets to complete the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After refusing a handshake, how long the server reads (and discards)
/// what the client still sends before closing, so that the client reads the
/// TLS alert that says why instead of a connection reset.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// How rustls words a received alert, before the alert's name.
const RECEIVED_ALERT: &str = "received fatal alert: ";
/// At most this much is read while lingering.
const REFUSAL_LINGER_BYTES: usize = 64 << 10;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{what} {path} holds no PEM block; expected \"-----BEGIN {label}-----\"")]
    NotPem {
        what: &'static str,
        path: String,
        label: &'static str,
    },
    #[error("the peer's certificate cannot be parsed: {0}")]
    BadPeerCertificate(String),
    #[error("{what} {path}: {message}")]
    BadPem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// Paths to a PEM certificate chain and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair<'a> {
    pub certificate: &'a Path,
    pub private_key: &'a Path,
}

impl KeyPair<'_> {
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let cert = read_pem("certificate", self.certificate, "CERTIFICATE")?;
        let key = read_pem("private key", self.private_key, "PRIVATE KEY")?;
        Ok(Identity::from_pem(cert, key))
    }
}

/// A server that presents `identity` and, when `client_ca` is given,
/// requires clients to present a certificate that chains to it (and is
/// within its validity period).
pub fn server_config(
    identity: &KeyPair<'_>,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TlsError> {
    let mut config = ServerTlsConfig::new().identity(identity.identity()?);
    if let Some(ca) = client_ca {
        config = config
            .client_ca_root(ca_certificate(ca)?)
            .client_auth_optional(false);
    }
    Ok(config)
}

/// A client that verifies the server against `ca` (or the system's roots
/// when `None`), expects the server to be called `server_name` when given,
/// and presents `identity` when given.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<&KeyPair<'_>>,
    server_name: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new();
    config = match ca {
        Some(ca) => config.ca_certificate(ca_certificate(ca)?),
        None => config.with_native_roots(),
    };
    if let Some(identity) = identity {
        config = config.identity(identity.identity()?);
    }
    if let Some(name) = server_name {
        config = config.domain_name(name);
    }
    Ok(config)
}

pub fn ca_certificate(path: &Path) -> Result<Certificate, TlsError> {
    Ok(Certificate::from_pem(read_pem(
        "CA certificate",
        path,
        "CERTIFICATE",
    )?))
}

/// The names a DER certificate is issued to: its DNS subject alternative
/// names when it has a subject alternative name extension, and only
/// otherwise its common names (as RFC 6125 and browsers do: a CA that
/// vouches for SANs may not have checked the CN).
pub fn certificate_names(der: &[u8]) -> Result<Vec<String>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    let mut names = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    if let Some(san) = san {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
        return Ok(names);
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(cn.to_owned());
        }
    }
    Ok(names)
}

fn read_pem(what: &'static str, path: &Path, label: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.display().to_string(),
            label,
        });
    }
    Ok(pem)
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, path, "CERTIFICATE")?;
    let bad = |message: String| TlsError::BadPem {
        what,
        path: path.display().to_string(),
        message,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certificates.is_empty() {
        return Err(bad("holds no certificate".to_owned()));
    }
    Ok(certificates)
}

/// The certificates of the CA file at `ca`, as roots to verify peers by.
fn ca_roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in pem_certificates("CA certificate", ca)? {
        roots.add(certificate).map_err(|e| TlsError::BadPem {
            what: "CA certificate",
            path: ca.display().to_string(),
            message: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The certificate chain and private key of `identity`, as rustls takes
/// them.
fn chain_and_key(
    identity: &KeyPair<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = pem_certificates("certificate", identity.certificate)?;
    let key_pem = read_pem("private key", identity.private_key, "PRIVATE KEY")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
        what: "private key",
        path: identity.private_key.display().to_string(),
        message: e.to_string(),
    })?;
    Ok((chain, key))
}

/// A TLS server's handshakes: the rustls configuration (HTTP/2 only) and
/// the handshake deadline.
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// A server that presents `identity` and, when `client_ca` is given,
    /// requires clients to present a certificate that chains to it (and is
    /// within its validity period), like [`server_config`].
    pub fn new(identity: &KeyPair<'_>, client_ca: Option<&Path>) -> Result<Self, TlsError> {
        let (chain, key) = chain_and_key(identity)?;
        let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = ca_roots(ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                        .build()
                        .map_err(|e| TlsError::Setup(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Setup(format!("the certificate and private key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Offers `protocols` in ALPN instead of `h2` (the metrics listener
    /// speaks HTTP/1.1).
    #[must_use]
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        self.config = Arc::new(config);
        self
    }

    /// One handshake on `tcp` within the deadline: the TLS connection, or
    /// `None` after logging why not (as [`Self::incoming`] does).
    pub async fn accept(&self, tcp: TcpStream) -> Option<TlsStream<Buffered>> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        handshake(acceptor, tcp, self.handshake_timeout).await
    }

    /// The TLS connections made over the TCP connections `tcp` yields, for
    /// tonic's `serve_with_incoming`. Each handshake runs in its own task
    /// and gets `handshake_timeout`; a refused one is logged (peer and
    /// reason) and never reaches the server. Dropping the returned stream
    /// stops accepting and ends the pending handshakes.
    pub fn incoming<S>(&self, tcp: S) -> ReceiverStream<io::Result<TlsStream<Buffered>>>
    where
        S: Stream<Item = io::Result<TcpStream>> + Send + 'static,
    {
        let (established, stream) = mpsc::channel(16);
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let timeout = self.handshake_timeout;
        tokio::spawn(async move {
            let mut tcp = pin!(tcp);
            let mut handshakes = JoinSet::new();
            loop {
                tokio::select! {
                    () = established.closed() => break,
                    next = tcp.next() => match next {
                        Some(Ok(connection)) => {
                            handshakes.spawn(handshake(acceptor.clone(), connection, timeout));
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "accepting a TCP connection failed");
                            // EMFILE and the like: give connections time to close.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        None => break,
                    },
                    Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                        if let Ok(Some(connection)) = done
                            && established.send(Ok(connection)).await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        ReceiverStream::new(stream)
    }
}

/// One handshake: the connection, or `None` after logging why not.
async fn handshake(
    acceptor: TlsAcceptor,
    connection: TcpStream,
    timeout: Duration,
) -> Option<TlsStream<Buffered>> {
    let peer = connection.peer_addr().ok();
    let accept = acceptor.accept(Buffered::new(connection)).into_fallible();
    let refusal = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(stream)) => return Some(stream),
        Ok(Err((error, connection))) => {
            let refusal = HandshakeRefusal::from_io(&error);
            log_refusal(peer, &refusal);
            linger(connection).await;
            return None;
        }
        Err(_) => HandshakeRefusal::Timeout(timeout),
    };
    log_refusal(peer, &refusal);
    None
}

fn log_refusal(peer: Option<SocketAddr>, refusal: &HandshakeRefusal) {
    let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    if matches!(refusal, HandshakeRefusal::Closed) {
        // Port probes and TCP health checks look like this.
        tracing::info!(%peer, reason = %refusal, "refused a TLS handshake");
    } else {
        tracing::warn!(%peer, reason = %refusal, "refused a TLS handshake");
    }
}

/// Flushes the alert and half-closes, then reads what the client still
/// sends for a moment, so that the alert reaches it before the socket
/// closes (a close with unread data would send a reset that can overtake
/// it).
async fn linger(mut connection: Buffered) {
    let _ = connection.shutdown().await;
    let drain = async {
        let mut buffer = [0; 4096];
        let mut read = 0;
        while read < REFUSAL_LINGER_BYTES {
            match connection.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

/// Why a TLS server refused a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// The client sent no complete handshake in time.
    Timeout(Duration),
    /// The client closed the connection during the handshake.
    Closed,
    NoClientCertificate,
    /// The client's certificate does not chain to the configured CA.
    UnknownCa,
    Expired,
    NotYetValid,
    BadCertificate(String),
    /// The client did not speak TLS (plain-text gRPC or HTTP, say).
    NotTls(String),
    /// The client gave up with this alert; it may not trust our certificate.
    ClientAlert(String),
    Other(String),
}

impl HandshakeRefusal {
    fn from_io(error: &io::Error) -> Self {
        if let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Self::from_rustls(tls);
        }
        match error.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Other(error.to_string()),
        }
    }

    fn from_rustls(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::NoCertificatesPresented => Self::NoClientCertificate,
            rustls::Error::InvalidCertificate(certificate) => match certificate {
                CertificateError::UnknownIssuer => Self::UnknownCa,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Self::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotYetValid
                }
                other => Self::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Self::NotTls(error.to_string())
            }
            rustls::Error::AlertReceived(alert) => Self::ClientAlert(format!("{alert:?}")),
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for HandshakeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(after) => write!(
                f,
                "timeout: no complete TLS handshake within {:.0}s",
                after.as_secs_f64()
            ),
            Self::Closed => f.write_str("the client closed the connection during the handshake"),
            Self::NoClientCertificate => f.write_str("no client certificate was presented"),
            Self::UnknownCa => f.write_str(
                "unknown CA: the client certificate does not chain to the configured client CA",
            ),
            Self::Expired => f.write_str("the client certificate has expired"),
            Self::NotYetValid => f.write_str("the client certificate is not valid yet"),
            Self::BadCertificate(why) => write!(f, "bad client certificate: {why}"),
            Self::NotTls(why) => write!(f, "plain text or not TLS: {why}"),
            Self::ClientAlert(alert) => write!(
                f,
                "the client aborted the handshake with alert {alert} \
                 (it may not trust this server's certificate)"
            ),
            Self::Other(why) => f.write_str(why),
        }
    }
}

/// A client that verifies the server against `ca`, presents `identity`,
/// and speaks HTTP/2, for connections made by hand (see [`Watched`]).
pub fn rustls_client_config(
    ca: &Path,
    identity: &KeyPair<'_>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = ca_roots(ca)?;
    let (chain, key) = chain_and_key(identity)?;
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Setup(format!("the certificate and private key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Where a [`Watched`] stream keeps the first TLS failure it met.
#[derive(Clone, Debug, Default)]
pub struct FailureSlot(Arc<Mutex<Option<ClientTlsFailure>>>);

impl FailureSlot {
    /// The first TLS failure seen, if any.
    pub fn get(&self) -> Option<ClientTlsFailure> {
        self.0.lock().expect("failure slot").clone()
    }

    /// Keeps the TLS failure in `error`, unless one is kept already.
    pub fn note(&self, error: &io::Error) {
        if let Some(failure) = ClientTlsFailure::find(error) {
            self.0.lock().expect("failure slot").get_or_insert(failure);
        }
    }
}

/// A stream that remembers the TLS failure its reads and writes meet.
/// HTTP/2 reports a connection that failed as "connection closed" or
/// "operation was canceled", without the alert that said why; this keeps
/// it for the message.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    failure: FailureSlot,
}

impl<S> Watched<S> {
    pub fn new(inner: S, failure: FailureSlot) -> Self {
        Self { inner, failure }
    }

    fn noted<T>(&self, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &poll {
            self.failure.note(e);
        }
        poll
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.noted(poll)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.noted(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.noted(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.noted(poll)
    }
}

/// Why a TLS connection to a server failed, as its client saw it: the
/// server refused our certificate, or we refused the server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientTlsFailure {
    /// The server refused the certificate we presented; why, where its
    /// alert says.
    CertificateRefused(&'static str),
    /// The server aborted the handshake with another alert.
    ServerAlert(String),
    /// We refused the server's certificate.
    ServerCertificateInvalid(String),
    /// Another TLS error.
    Other(String),
}

impl ClientTlsFailure {
    /// The TLS failure somewhere in `error`'s chain of causes, if any.
    /// HTTP/2 keeps only the text of an I/O error, so a received alert is
    /// also recognised by rustls's wording ("received fatal alert: NAME").
    pub fn find(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
                error
                    .downcast_ref::<io::Error>()
                    .and_then(io::Error::get_ref)
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                return Some(Self::from_rustls(tls));
            }
            next = error.source();
        }
        let mut next = Some(error);
        while let Some(error) = next {
            let text = error.to_string();
            if let Some((_, rest)) = text.split_once(RECEIVED_ALERT) {
                let name: String = rest
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
                return Some(Self::from_alert_name(&name));
            }
            next = error.source();
        }
        None
    }

    fn from_alert_name(name: &str) -> Self {
        match name {
            "CertificateRequired" => {
                Self::CertificateRefused("no client certificate was presented")
            }
            "UnknownCA" => {
                Self::CertificateRefused("unknown CA: it does not chain to the server's client CA")
            }
            "CertificateExpired" => Self::CertificateRefused("the certificate has expired"),
            "CertificateRevoked" => Self::CertificateRefused("the certificate is revoked"),
            "BadCertificate" | "UnsupportedCertificate" | "CertificateUnknown" | "AccessDenied" => {
                Self::CertificateRefused("the certificate is not acceptable")
            }
            other => Self::ServerAlert(other.to_owned()),
        }
    }

    fn from_rustls(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::AlertReceived(alert) => Self::from_alert_name(&format!("{alert:?}")),
            rustls::Error::InvalidCertificate(why) => {
                Self::ServerCertificateInvalid(format!("{why:?}"))
            }
            other => Self::Other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rcgen::{CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair as RcgenKey};
    use tokio::net::TcpListener;
    use tokio_rustls::{TlsConnector, rustls::pki_types::ServerName};

    use super::*;

    fn leaf_der(common_name: &str, sans: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .self_signed(&RcgenKey::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn the_common_name_counts_only_without_subject_alternative_names() {
        assert_eq!(
            certificate_names(&leaf_der("pcap-api", &["agent.example"])).unwrap(),
            ["agent.example"]
        );
        assert_eq!(
            certificate_names(&leaf_der("pcap-api", &[])).unwrap(),
            ["pcap-api"]
        );
    }

    /// A CA and the PEM files of certificates it signs, in a temporary
    /// directory.
    struct Pki {
        dir: PathBuf,
        ca: CertifiedIssuer<'static, RcgenKey>,
    }

    impl Pki {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "pcap-proto-tls-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            fs::create_dir_all(&dir).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = CertifiedIssuer::self_signed(params, RcgenKey::generate().unwrap()).unwrap();
            fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
            Self { dir, ca }
        }

        /// Writes `stem.crt` and `stem.key` for `name`.
        fn leaf(&self, stem: &str, name: &str) -> (PathBuf, PathBuf) {
            let key = RcgenKey::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &self.ca)
                .unwrap();
            let (crt, pem) = (
                self.dir.join(format!("{stem}.crt")),
                self.dir.join(format!("{stem}.key")),
            );
            fs::write(&crt, cert.pem()).unwrap();
            fs::write(&pem, key.serialize_pem()).unwrap();
            (crt, pem)
        }

        fn path(&self, file: &str) -> PathBuf {
            self.dir.join(file)
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// A server on loopback requiring client certificates from `pki`'s CA.
    async fn server(
        pki: &Pki,
        timeout: Duration,
    ) -> (SocketAddr, ReceiverStream<io::Result<TlsStream<Buffered>>>) {
        let (crt, key) = pki.leaf("server", "agent");
        let tls = TlsServer::new(
            &KeyPair {
                certificate: &crt,
                private_key: &key,
            },
            Some(&pki.path("ca.crt")),
        )
        .unwrap()
        .with_handshake_timeout(timeout);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let tcp = tokio_stream::wrappers::TcpListenerStream::new(listener);
        (address, tls.incoming(tcp))
    }

    fn client(trust: &Pki, identity: Option<(&Path, &Path)>) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        for c in pem_certificates("CA", &trust.path("ca.crt")).unwrap() {
            roots.add(c).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some((crt, key)) => builder
                .with_client_auth_cert(
                    pem_certificates("c", crt).unwrap(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        TlsConnector::from(Arc::new(config))
    }

    /// What a client sees after the handshake: the failure the server's
    /// alert reports, if any.
    async fn client_failure(
        connector: TlsConnector,
        address: SocketAddr,
    ) -> Option<ClientTlsFailure> {
        let tcp = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from("agent").unwrap();
        let mut stream = match connector.connect(name, tcp).await {
            Ok(stream) => stream,
            Err(e) => return ClientTlsFailure::find(&e),
        };
        // TLS 1.3: the server judges our certificate after our Finished,
        // and says so with an alert we read next.
        let _ = stream.write_all(b"hello").await;
        let mut buffer = Vec::new();
        match stream.read_to_end(&mut buffer).await {
            Ok(_) => None,
            Err(e) => ClientTlsFailure::find(&e),
        }
    }

    #[test]
    fn an_alert_known_only_by_its_text_is_recognised() {
        // What reaches the API through HTTP/2: the I/O error's text.
        let error = io::Error::other("connection error: received fatal alert: UnknownCA");
        assert_eq!(
            ClientTlsFailure::find(&error),
            Some(ClientTlsFailure::CertificateRefused(
                "unknown CA: it does not chain to the server's client CA"
            ))
        );
        let error = io::Error::other("received fatal alert: HandshakeFailure");
        assert_eq!(
            ClientTlsFailure::find(&error),
            Some(ClientTlsFailure::ServerAlert("HandshakeFailure".to_owned()))
        );
        assert_eq!(
            ClientTlsFailure::find(&io::Error::other("broken pipe")),
            None
        );
    }

    #[tokio::test]
    async fn refused_client_certificates_are_named_on_both_sides() {
        let pki = Pki::new("ca");
        let other = Pki::new("other-ca");
        let (address, mut incoming) = server(&pki, HANDSHAKE_TIMEOUT).await;

        assert_eq!(
            client_failure(client(&pki, None), address).await,
            Some(ClientTlsFailure::CertificateRefused(
                "no client certificate was presented"
            ))
        );
        let (crt, key) = other.leaf("client", "pcap-api");
        assert_eq!(
            client_failure(client(&pki, Some((&crt, &key))), address).await,
            Some(ClientTlsFailure::CertificateRefused(
                "unknown CA: it does not chain to the server's client CA"
            ))
        );
        // A client that does not trust the server: we name its alert.
        let (crt, key) = pki.leaf("client", "pcap-api");
        assert!(matches!(
            client_failure(client(&other, Some((&crt, &key))), address).await,
            Some(ClientTlsFailure::ServerCertificateInvalid(why)) if why.contains("UnknownIssuer")
        ));

        // None of these reached the server; a good client does.
        let good = client(&pki, Some((&crt, &key)));
        let tcp = TcpStream::connect(address).await.unwrap();
        let _client = good
            .connect(ServerName::try_from("agent").unwrap(), tcp)
            .await
            .unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.get_ref().1.peer_certificates().is_some());
    }

    #[tokio::test]
    async fn idle_and_half_handshakes_delay_no_one_and_time_out() {
        let pki = Pki::new("slow");
        let (address, mut incoming) = server(&pki, Duration::from_millis(500)).await;
        let mut idle = Vec::new();
        for i in 0..100 {
            let mut tcp = TcpStream::connect(address).await.unwrap();
            if i % 2 == 0 {
                // The start of a ClientHello record, and then nothing.
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                    .await
                    .unwrap();
            }
            idle.push(tcp);
        }
        let (crt, key) = pki.leaf("client", "pcap-api");
        let tcp = TcpStream::connect(address).await.unwrap();
        let _client = client(&pki, Some((&crt, &key)))
            .connect(ServerName::try_from("agent").unwrap(), tcp)
            .await
            .unwrap();
        let accepted = tokio::time::timeout(Duration::from_millis(400), incoming.next())
            .await
            .expect("a real client completes its handshake while 100 others stall");
        assert!(accepted.unwrap().is_ok());
        // The stalled ones are closed by the server once their time is up.
        for mut tcp in idle {
            let mut buffer = [0; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buffer))
                .await
                .expect("the server closes a stalled handshake after its timeout");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }
}
