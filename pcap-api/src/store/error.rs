//! Why a store operation failed, and the store client's set-up shared by
//! `CaptureStore` and `stale`.

use thiserror::Error;

/// Why a store operation failed. `service` maps these to gRPC codes.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("this pcap-api has no capture store configured ([store])")]
    NotConfigured,
    /// The store cannot be reached or refuses us: nothing was started.
    #[error("the capture store {endpoint} (bucket {bucket}) is unavailable: {message}")]
    Unavailable {
        endpoint: String,
        bucket: String,
        message: String,
    },
    #[error("no stored capture {0} that you may read")]
    NotFound(String),
    #[error("\"{0}\" is not a stored capture id (like 20260601T120000Z-5f3a9c01)")]
    BadId(String),
    #[error("the capture store failed: {0}")]
    Failed(String),
    #[error("cannot set up the capture store client: {0}")]
    Setup(String),
}

/// object_store signs with ring (its `ring` feature); reqwest's rustls needs
/// a provider installed for the process.
pub(super) fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// The message of a store error, without the secrets it never holds
/// (object_store puts no credentials in its errors) and on one line.
pub(super) fn error_message(error: &object_store::Error) -> String {
    pcap_proto::error_chain(error).replace('\n', " ")
}
