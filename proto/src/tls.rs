//! Loading certificates for mutual TLS, and reading the names a peer's
//! certificate carries.

use std::{fs, io, path::Path};

use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

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

/// The DNS names (subject alternative names) and the common name in a DER
/// certificate, in that order.
pub fn certificate_names(der: &[u8]) -> Result<Vec<String>, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
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
