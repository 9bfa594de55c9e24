//! The `pcap-agent serve` configuration file (TOML), as
//! `docs/configuration.md` describes it, and its validation.
//!
//! Every error names the key it is about, for example
//! `tls.client_ca: cannot read /x/ca.crt: No such file or directory`.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use pcap_common::MAX_SNAPLEN;
use pcap_proto::tls::{KeyPair, TlsServer};
use serde::Deserialize;
use thiserror::Error;

use crate::datapath::AttachMode;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// Not TOML, or keys and types that do not fit; toml's message shows
    /// the offending line.
    #[error("{0}")]
    Syntax(String),
    /// A value is wrong; `key` is its dotted name.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve the Agent service on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve plain-text gRPC with no client authentication (development only).
    #[serde(default)]
    pub insecure_plaintext: bool,
    pub tls: Option<Tls>,
    #[serde(default)]
    pub capture: Capture,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub cf: Cf,
    /// Capabilities kept at start (see `crate::privileges`).
    #[serde(default)]
    pub privileges: crate::privileges::PrivilegesConfig,
    /// The metrics listener (`super::metrics`).
    #[serde(default)]
    pub metrics: pcap_proto::metrics::MetricsConfig,
}

/// Cloud Foundry: where this Diego cell's containers are described.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cf {
    /// Silk's container metadata store
    /// (`/var/vcap/data/container-metadata/store.json`); without it the
    /// agent refuses container captures.
    pub container_metadata_store: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Clients must present a certificate that chains to this CA...
    pub client_ca: PathBuf,
    /// ...and carries one of these names (DNS subject alternative name or CN).
    #[serde(default = "default_client_names")]
    pub client_names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capture {
    /// Interfaces captured when a request names none.
    pub default_interfaces: Vec<String>,
    pub attach: AttachMode,
    /// Kernel ring buffer per capture, in KiB.
    pub ring_buffer_kib: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent captures.
    pub max_captures: u32,
    /// Seconds; longer (and unlimited) requests are cut to this.
    pub max_duration: f64,
    /// Larger requested snaplens are cut to this.
    pub max_snaplen: u32,
    /// Bytes of packet data per capture; 0 means no limit.
    pub max_bytes: u64,
    /// Packet bytes queued for the API before the agent drops (and counts) them.
    pub send_buffer_bytes: u64,
}

fn default_listen() -> String {
    "0.0.0.0:9494".to_owned()
}

fn default_client_names() -> Vec<String> {
    vec!["pcap-api".to_owned()]
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            default_interfaces: Vec::new(),
            attach: AttachMode::Auto,
            ring_buffer_kib: 8192,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_captures: 4,
            max_duration: 3600.0,
            max_snaplen: MAX_SNAPLEN,
            max_bytes: 0,
            send_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads, parses and validates `path`, including the files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let config = Self::parse(&text)?;
        config.tls_server()?;
        config
            .metrics
            .check(super::metrics::DEFAULT_LISTEN)
            .map_err(|e| invalid(e.key, e.message))?;
        Ok(config)
    }

    /// Parses `text` and checks every value, but not the files it names.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.metrics
            .address(super::metrics::DEFAULT_LISTEN)
            .map_err(|e| invalid(e.key, e.message))?;
        self.privileges
            .keep_set()
            .map_err(|(key, message)| invalid(key, message))?;
        if !self.insecure_plaintext && self.tls.is_none() {
            return Err(invalid(
                "tls",
                "missing: give [tls] certificate, private_key and client_ca \
                 (or, for development only, insecure_plaintext = true)",
            ));
        }
        if let Some(tls) = &self.tls
            && tls.client_names.iter().all(|n| n.trim().is_empty())
        {
            return Err(invalid(
                "tls.client_names",
                "give at least one name the API's certificate carries",
            ));
        }
        for name in &self.capture.default_interfaces {
            if !(1..16).contains(&name.len()) || name.contains(['/', ' ', '\t', '\n']) {
                return Err(invalid(
                    "capture.default_interfaces",
                    format!(
                        "{name:?} is not an interface name (1 to 15 bytes without '/' or spaces)"
                    ),
                ));
            }
        }
        if !(4..=1 << 20).contains(&self.capture.ring_buffer_kib) {
            return Err(invalid(
                "capture.ring_buffer_kib",
                format!(
                    "{} is out of range: give 4 to 1048576",
                    self.capture.ring_buffer_kib
                ),
            ));
        }
        let limits = &self.limits;
        if limits.max_captures == 0 {
            return Err(invalid("limits.max_captures", "give 1 or more"));
        }
        // The bounds pcap-api's durations have too.
        pcap_proto::options::check_configured_seconds(limits.max_duration, false)
            .map_err(|message| invalid("limits.max_duration", message))?;
        if !(1..=MAX_SNAPLEN).contains(&limits.max_snaplen) {
            return Err(invalid(
                "limits.max_snaplen",
                format!(
                    "{} is out of range: give 1 to {MAX_SNAPLEN}",
                    limits.max_snaplen
                ),
            ));
        }
        if limits.send_buffer_bytes == 0 {
            return Err(invalid("limits.send_buffer_bytes", "give 1 or more bytes"));
        }
        if let Some(store) = &self.cf.container_metadata_store
            && !store.is_absolute()
        {
            return Err(invalid(
                "cf.container_metadata_store",
                format!("{} is not an absolute path", store.display()),
            ));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| {
            invalid(
                "listen",
                format!("{:?} is not an address:port: {e}", self.listen),
            )
        })
    }

    /// The TLS server to serve with: `None` when `insecure_plaintext` is
    /// set. Reads and parses every file `[tls]` names and matches the key
    /// with the certificate, so `--check-config` checks what serving uses.
    pub fn tls_server(&self) -> Result<Option<TlsServer>, ConfigError> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let tls = self.tls.as_ref().expect("validated: [tls] is given");
        check_pem("tls.certificate", &tls.certificate, PemKind::Certificate)?;
        check_pem("tls.private_key", &tls.private_key, PemKind::PrivateKey)?;
        check_pem("tls.client_ca", &tls.client_ca, PemKind::Certificate)?;
        let identity = KeyPair {
            certificate: &tls.certificate,
            private_key: &tls.private_key,
        };
        TlsServer::new(&identity, Some(&tls.client_ca))
            .map(Some)
            .map_err(|e| invalid("tls", e.to_string()))
    }

    /// `limits.max_duration` as a [`Duration`].
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs_f64(self.limits.max_duration)
    }
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificate,
    PrivateKey,
}

/// Checks that `path` can be read and holds what `kind` says, in PEM.
fn check_pem(key: &'static str, path: &Path, kind: PemKind) -> Result<(), ConfigError> {
    let bytes =
        fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let not_pem = |what: &str| invalid(key, format!("{} is not {what}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).map_err(|_| match kind {
        PemKind::Certificate => not_pem("a PEM certificate (-----BEGIN CERTIFICATE-----)"),
        PemKind::PrivateKey => not_pem("a PEM private key (-----BEGIN PRIVATE KEY-----)"),
    })?;
    match kind {
        PemKind::Certificate => {
            pem.parse_x509().map_err(|e| {
                invalid(
                    key,
                    format!("{} holds no valid certificate: {e}", path.display()),
                )
            })?;
        }
        PemKind::PrivateKey if !pem.label.ends_with("PRIVATE KEY") => {
            return Err(not_pem("a PEM private key (-----BEGIN PRIVATE KEY-----)"));
        }
        PemKind::PrivateKey => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAINTEXT: &str = "insecure_plaintext = true\n";

    fn error(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_follow_the_documentation() {
        let config = Config::parse(PLAINTEXT).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9494");
        assert!(config.capture.default_interfaces.is_empty());
        assert_eq!(config.capture.attach, AttachMode::Auto);
        assert_eq!(config.capture.ring_buffer_kib, 8192);
        assert_eq!(config.limits.max_captures, 4);
        assert_eq!(config.max_duration(), Duration::from_hours(1));
        assert_eq!(config.limits.max_snaplen, MAX_SNAPLEN);
        assert_eq!(config.limits.max_bytes, 0);
        assert_eq!(config.limits.send_buffer_bytes, 4_194_304);
        assert_eq!(config.cf.container_metadata_store, None);
    }

    #[test]
    fn parses_the_documented_example() {
        let config = Config::parse(
            r#"
            listen = "127.0.0.1:9494"
            insecure_plaintext = false
            [tls]
            certificate = "/c/agent.crt"
            private_key = "/c/agent.key"
            client_ca = "/c/ca.crt"
            [capture]
            default_interfaces = ["eth0"]
            attach = "tc"
            ring_buffer_kib = 4096
            [limits]
            max_captures = 2
            max_duration = 1.5
            max_snaplen = 128
            max_bytes = 1000
            send_buffer_bytes = 65536
            [cf]
            container_metadata_store = "/var/vcap/data/container-metadata/store.json"
            "#,
        )
        .unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.client_names, ["pcap-api"]);
        assert_eq!(tls.client_ca, Path::new("/c/ca.crt"));
        assert_eq!(config.capture.attach, AttachMode::Tc);
        assert_eq!(config.capture.default_interfaces, ["eth0"]);
        assert_eq!(config.max_duration(), Duration::from_millis(1500));
        assert_eq!(config.limits.max_bytes, 1000);
        assert_eq!(
            config.cf.container_metadata_store.as_deref(),
            Some(Path::new("/var/vcap/data/container-metadata/store.json"))
        );
        assert!(
            error(&format!(
                "{PLAINTEXT}[cf]\ncontainer_metadata_store = \"store.json\""
            ))
            .starts_with("cf.container_metadata_store: store.json is not an absolute path")
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(
            error("insecure_plaintext = true\nlisten_on = \"x\"")
                .contains("unknown field `listen_on`")
        );
        assert!(
            error("insecure_plaintext = true\n[limits]\nmax_packets = 3")
                .contains("unknown field `max_packets`")
        );
    }

    #[test]
    fn tls_is_required_unless_plaintext() {
        assert!(error("").starts_with("tls: missing"));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("listen = \"nowhere\"", "listen: "),
            ("[limits]\nmax_captures = 0", "limits.max_captures: "),
            ("[limits]\nmax_duration = -1.0", "limits.max_duration: "),
            ("[limits]\nmax_duration = 1e19", "limits.max_duration: "),
            ("[limits]\nmax_duration = 1e300", "limits.max_duration: "),
            (
                "[limits]\nmax_duration = 31622401.0",
                "limits.max_duration: ",
            ),
            ("[limits]\nmax_snaplen = 262145", "limits.max_snaplen: "),
            (
                "[limits]\nsend_buffer_bytes = 0",
                "limits.send_buffer_bytes: ",
            ),
            (
                "[capture]\nring_buffer_kib = 1",
                "capture.ring_buffer_kib: ",
            ),
            (
                "[capture]\ndefault_interfaces = [\"a/b\"]",
                "capture.default_interfaces: ",
            ),
        ] {
            let message = error(&format!("{PLAINTEXT}{text}"));
            assert!(message.starts_with(key), "{text}: {message}");
        }
        let message = error(
            "[tls]\ncertificate = \"a\"\nprivate_key = \"b\"\nclient_ca = \"c\"\nclient_names = []",
        );
        assert!(message.starts_with("tls.client_names: "), "{message}");
    }

    #[test]
    fn a_year_is_the_longest_max_duration() {
        let config =
            Config::parse(&format!("{PLAINTEXT}[limits]\nmax_duration = 31622400.0")).unwrap();
        assert_eq!(config.max_duration(), Duration::from_hours(366 * 24));
    }

    #[test]
    fn wrong_types_name_the_key() {
        let message = error(&format!("{PLAINTEXT}[capture]\nattach = \"sideways\""));
        assert!(message.contains("attach"), "{message}");
        assert!(message.contains("sideways"), "{message}");
    }

    #[test]
    fn unreadable_tls_files_name_the_key() {
        let config = Config::parse(
            "[tls]\ncertificate = \"/nonexistent/agent.crt\"\n\
             private_key = \"/nonexistent/agent.key\"\nclient_ca = \"/nonexistent/ca.crt\"",
        )
        .unwrap();
        let message = config.tls_server().unwrap_err().to_string();
        assert_eq!(
            message,
            "tls.certificate: cannot read /nonexistent/agent.crt: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn files_that_are_not_pem_name_the_key() {
        let dir = std::env::temp_dir().join(format!("pcap-agent-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        fs::write(&junk, "not a certificate\n").unwrap();
        let config = Config::parse(&format!(
            "[tls]\ncertificate = {junk:?}\nprivate_key = {junk:?}\nclient_ca = {junk:?}"
        ))
        .unwrap();
        let message = config.tls_server().unwrap_err().to_string();
        fs::remove_dir_all(&dir).unwrap();
        assert!(message.starts_with("tls.certificate: "), "{message}");
        assert!(message.contains("is not a PEM certificate"), "{message}");
    }
}
