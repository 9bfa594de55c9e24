//! The channel to pcap-api.
//!
//! `https://` is verified against `--ca` alone when given, else against the
//! system's roots; `--insecure` skips verification. Either way the TLS is
//! ours, over a [`Buffered`] socket with large HTTP/2 frames, because the
//! packets come this way; tonic's own TLS reads 4 KiB per system call.
//! `--insecure` also allows plain `http://`.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use pcap_proto::buffered::{Buffered, MAX_FRAME_BYTES};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tonic::transport::{Channel, Endpoint, Uri};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HTTPS_PORT: u16 = 443;

/// Connects to `api` (an `https://` URL, or `http://` with `insecure`).
pub async fn connect(api: &Uri, ca: Option<&Path>, insecure: bool) -> anyhow::Result<Channel> {
    if api.scheme_str() != Some("https") {
        return Ok(endpoint(api.clone()).connect().await?);
    }
    let mut tls = if insecure {
        unverified_client_config()?
    } else {
        verified_client_config(roots(ca, ca.is_none())?)?
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let host = api.host().context("the URL has no host")?;
    let port = api.port_u16().unwrap_or(HTTPS_PORT);
    let server_name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
        .with_context(|| format!("{host} is not a valid server name"))?
        .to_owned();
    // tonic insists on its own TLS for https:// endpoints, so the endpoint
    // says http:// to tonic while requests still carry the https:// origin.
    let plain = Uri::builder()
        .scheme("http")
        .authority(format!("{host}:{port}"))
        .path_and_query("/")
        .build()?;
    let tls = TlsConnector::from(Arc::new(tls));
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        async move {
            let address = uri
                .authority()
                .ok_or_else(|| io::Error::other("no address to connect to"))?
                .to_string();
            let tcp = TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, Buffered::new(tcp)).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint(plain)
        .origin(api.clone())
        .connect_with_connector(connector)
        .await?)
}

/// The channel's settings, TLS or not: the connect timeout, and frames
/// large enough for the packets that come this way.
fn endpoint(uri: Uri) -> Endpoint {
    Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .max_frame_size(MAX_FRAME_BYTES)
}

/// The certificates in `ca`, and the system's roots when `native`.
fn roots(ca: Option<&Path>, native: bool) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if native {
        for certificate in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(certificate);
        }
    }
    if let Some(ca) = ca {
        use rustls::pki_types::pem::PemObject as _;
        let pem = fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let mut found = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            let certificate =
                certificate.with_context(|| format!("bad certificate in {}", ca.display()))?;
            roots
                .add(certificate)
                .with_context(|| format!("bad certificate in {}", ca.display()))?;
            found += 1;
        }
        anyhow::ensure!(found > 0, "{} holds no PEM certificate", ca.display());
    }
    Ok(roots)
}

fn verified_client_config(roots: RootCertStore) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An HTTP/1.1 client for HTTPS (Cloud Controller, UAA, presigned
/// download URLs): the system's roots plus the certificates in `ca`, or no
/// verification with `insecure`; `timeout` bounds each whole request.
pub(crate) fn https_client(
    ca: Option<&Path>,
    insecure: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<reqwest::Client> {
    let mut tls = if insecure {
        unverified_client_config()?
    } else {
        verified_client_config(roots(ca, true)?)?
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().context("cannot set up HTTPS")
}

pub(crate) fn unverified_client_config() -> anyhow::Result<ClientConfig> {
    let provider = crypto::ring::default_provider();
    let algorithms = provider.signature_verification_algorithms;
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(algorithms)))
        .with_no_client_auth();
    Ok(config)
}

/// Accepts any certificate for any name. The handshake signatures are still
/// checked, which proves only that the server holds the key of the
/// certificate it presented, with the crypto provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
