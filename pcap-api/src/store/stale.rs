//! Multipart uploads that a killed API left behind. An upload is completed
//! or aborted when its capture ends; an API killed mid-capture (SIGKILL, a
//! lost VM, `drain_grace` running out) leaves it open, and S3 keeps (and
//! bills) its parts until it is aborted. When the API starts, it aborts the
//! uploads under its own `prefix` that began before it did.
//!
//! object_store cannot list multipart uploads, so this speaks S3's
//! ListMultipartUploads and AbortMultipartUpload itself, signed with
//! object_store's SigV4 signer and sent with its HTTP client.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use object_store::{
    aws::{AwsAuthorizer, AwsCredential},
    client::{HttpClient, HttpConnector as _, HttpRequest, HttpRequestBody, ReqwestConnector},
};
use serde::Deserialize;

use super::{StoreError, config::StoreConfig};

/// At most this many pages of 1,000 uploads are read per sweep.
const MAX_PAGES: usize = 100;

/// One unfinished multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When it began.
    pub initiated: SystemTime,
}

/// The store's unfinished uploads under the API's prefix.
pub struct StaleUploads {
    http: HttpClient,
    /// `https://host/bucket` or `https://bucket.host`, no trailing slash.
    base: String,
    region: String,
    credential: AwsCredential,
    /// `PREFIX/`: only keys under it are touched.
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    upload: Vec<UploadEntry>,
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadEntry {
    key: String,
    upload_id: String,
    initiated: String,
}

impl StaleUploads {
    /// For `config` (validated).
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let super::Connection {
            credentials,
            endpoint,
            options,
        } = super::Connection::new(config)?;
        let endpoint = endpoint.trim_end_matches('/');
        let base = if config.virtual_hosted_style {
            let (scheme, host) = endpoint.split_once("://").unwrap_or(("https", endpoint));
            format!("{scheme}://{}.{host}", config.bucket)
        } else {
            format!("{endpoint}/{}", config.bucket)
        };
        let http = ReqwestConnector::default()
            .connect(&options)
            .map_err(|e| StoreError::Setup(super::error::error_message(&e)))?;
        Ok(Self {
            http,
            base,
            region: config.region.clone(),
            credential: AwsCredential {
                key_id: credentials.access_key_id,
                secret_key: credentials.secret_access_key,
                token: None,
            },
            prefix: format!("{}/", config.prefix),
        })
    }

    /// Aborts every upload under the prefix that began before `before`;
    /// returns how many.
    pub async fn abort_begun_before(&self, before: SystemTime) -> Result<usize, StoreError> {
        let mut aborted = 0;
        for upload in self.list().await? {
            if upload.initiated < before {
                self.abort(&upload).await?;
                tracing::info!(
                    key = %upload.key,
                    "aborted a multipart upload a previous run of the API left open"
                );
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// The unfinished uploads whose key is under the prefix.
    pub async fn list(&self) -> Result<Vec<OpenUpload>, StoreError> {
        let mut uploads = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut url = format!(
                "{}?uploads=&prefix={}",
                self.base,
                encode(&self.prefix, false)
            );
            if let Some((key, id)) = &markers {
                let _ = write!(
                    url,
                    "&key-marker={}&upload-id-marker={}",
                    encode(key, false),
                    encode(id, false)
                );
            }
            let body = self.send(http::Method::GET, &url).await?;
            let page: ListMultipartUploadsResult = quick_xml::de::from_str(&body).map_err(|e| {
                StoreError::Failed(format!(
                    "ListMultipartUploads answered what is not its XML: {e}"
                ))
            })?;
            for entry in page.upload {
                if !entry.key.starts_with(&self.prefix) {
                    continue;
                }
                let initiated =
                    chrono::DateTime::parse_from_rfc3339(&entry.initiated).map_err(|e| {
                        StoreError::Failed(format!(
                            "upload {:?} began at {:?}, which is not a time: {e}",
                            entry.key, entry.initiated
                        ))
                    })?;
                let since_epoch = u64::try_from(initiated.timestamp_millis()).unwrap_or(0);
                uploads.push(OpenUpload {
                    key: entry.key,
                    upload_id: entry.upload_id,
                    initiated: SystemTime::UNIX_EPOCH + Duration::from_millis(since_epoch),
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (true, Some(key), Some(id)) => markers = Some((key, id)),
                _ => return Ok(uploads),
            }
        }
        Ok(uploads)
    }

    /// Aborts `upload`: its parts are deleted.
    pub async fn abort(&self, upload: &OpenUpload) -> Result<(), StoreError> {
        let url = format!(
            "{}/{}?uploadId={}",
            self.base,
            encode(&upload.key, true),
            encode(&upload.upload_id, false)
        );
        self.send(http::Method::DELETE, &url).await.map(|_| ())
    }

    /// Sends a signed request with no body; the response body on success.
    async fn send(&self, method: http::Method, url: &str) -> Result<String, StoreError> {
        let mut request: HttpRequest = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .body(HttpRequestBody::from(Vec::new()))
            .map_err(|e| StoreError::Failed(format!("{method} {url}: {e}")))?;
        AwsAuthorizer::new(&self.credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| StoreError::Failed(super::error::error_message(&e)))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| StoreError::Failed(format!("{method} {}: {e}", self.base)))?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| StoreError::Failed(format!("{method} {}: {e}", self.base)))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            // S3's <Code> says why (NotImplemented, AccessDenied...).
            let code = body
                .split_once("<Code>")
                .and_then(|(_, rest)| rest.split_once("</Code>"))
                .map_or("", |(code, _)| code);
            let what = if method == http::Method::GET {
                "ListMultipartUploads"
            } else {
                "AbortMultipartUpload"
            };
            return Err(StoreError::Failed(format!(
                "{what} at {}: HTTP {status} {code}",
                self.base
            )));
        }
        Ok(body)
    }
}

/// Percent-encodes `text` as S3 wants in a path (`keep_slash`) or a query.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/')
        {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}
