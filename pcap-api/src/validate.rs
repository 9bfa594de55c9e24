//! The checks every config section uses: durations, URLs, PEM files, agent
//! addresses, and the error that names the key at fault. A leaf: it imports
//! nothing from this crate, so each section's module (`cf`, `bosh`, `store`,
//! `resolve`, `config`) can use it without a cycle.

use std::{
    fs, io,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    /// A value that parses but is wrong; `key` is its dotted path.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// `host:port` for an agent's address, taking `default_port` when the
/// address is a bare host or IP address. IPv6 addresses get brackets.
pub fn agent_authority(address: &str, default_port: u16) -> Result<String, String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(address.to_owned());
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("\"{address}\" has a bad port \"{port}\""))?;
            (host, port)
        }
        None => (address, default_port),
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid_host {
        return Err(format!(
            "\"{address}\" is not a host name or IP address, with an optional :port"
        ));
    }
    Ok(format!("{host}:{port}"))
}

/// A duration in seconds, within the bounds every configured duration has
/// (`pcap_proto::options::check_configured_seconds`).
pub fn check_seconds(key: &str, value: f64, zero_allowed: bool) -> Result<(), ConfigError> {
    pcap_proto::options::check_configured_seconds(value, zero_allowed)
        .map(drop)
        .map_err(|message| invalid(key, message))
}

/// `value` must be an `https://` URL with a host; `example` shows one.
pub fn check_https_url(key: &str, value: &str, example: &str) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(value)
        .map_err(|e| invalid(key, format!("\"{value}\" is not a URL: {e}")))?;
    if url.scheme() != "https" || url.host().is_none() {
        return Err(invalid(
            key,
            format!("\"{value}\" is not an https:// URL like {example}"),
        ));
    }
    Ok(())
}

pub fn check_certificate(key: &str, path: &Path) -> Result<(), ConfigError> {
    let pem = read(key, path)?;
    let mut count = 0;
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der =
            der.map_err(|e| invalid(key, format!("{}: bad PEM certificate: {e}", path.display())))?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(key, format!("{}: bad certificate: {e}", path.display())))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(
            key,
            format!(
                "{} holds no \"-----BEGIN CERTIFICATE-----\" block",
                path.display()
            ),
        ));
    }
    Ok(())
}

pub fn check_private_key(key: &str, path: &Path) -> Result<(), ConfigError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        invalid(
            key,
            format!("{} holds no usable PEM private key: {e}", path.display()),
        )
    })?;
    Ok(())
}

pub fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    fs::read(path).map_err(|e| {
        invalid(
            key,
            format!("cannot read {}: {}", path.display(), io_message(&e)),
        )
    })
}

/// An I/O error's message without the " (os error N)" suffix.
pub fn io_message(error: &io::Error) -> String {
    let message = error.to_string();
    match message.rfind(" (os error ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}
