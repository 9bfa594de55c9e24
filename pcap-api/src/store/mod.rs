//! Stored captures (`pcap capture --store`): the merged pcapng goes to an
//! S3-compatible object store as a multipart upload instead of to the
//! client, which gets progress and, at the end, a presigned download URL.
//!
//! * `config`: the `[store]` table.
//! * `upload`: one object's multipart upload, a part at a time.
//! * `error`: `StoreError`, and object_store's errors on one line.
//! * `recorder`: starts a stored capture's object (`CaptureStore::begin`),
//!   and sits between a capture's session and its client, writes
//!   the stream with the CLI's own writer (`pcap-sink`), completes the
//!   object when the capture ends well and aborts it when it fails.
//! * this module: the client, object names, listing, presigning and the
//!   retention cleanup.
//!
//! Objects are `PREFIX/OWNER/ID.NAME.pcapng`. OWNER is who owns it: the
//! issuer (`static`, or the UAA's `iss`) and the user's id there
//! (`static:alice`), never the name alone, so that users of different
//! issuers who share a name never share captures. NAME is the owner's
//! display name when it was stored, for listings only. OWNER is also in the
//! object's metadata and tags (`owner`). Users see their own prefix only;
//! admins (static users with `admin = true`, UAA users holding one of
//! `[store] admin_scopes`) see every owner's.

pub mod config;
mod error;
pub mod recorder;
pub mod stale;
mod upload;

use std::{
    collections::hash_map::RandomState,
    fmt::Write as _,
    hash::{BuildHasher as _, Hasher as _},
    sync::Arc,
    time::Duration,
};

use futures_util::TryStreamExt as _;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt as _, RetryConfig,
    aws::{AmazonS3, AmazonS3Builder},
    path::Path,
    signer::{Method, Signer as _},
};
use pcap_proto::unix_now_ns;
use pcap_proto::v1::{DownloadUrl, StoredCapture};

pub use self::config::StoreConfig;
pub use self::error::StoreError;
use self::error::{error_message, install_tls_provider};
use crate::auth::{Grant, User};

/// The store client and what every stored capture needs.
pub struct CaptureStore {
    s3: Arc<AmazonS3>,
    endpoint: String,
    bucket: String,
    prefix: Path,
    retention: Option<Duration>,
    cleanup_interval: Duration,
    presign_expiry: Duration,
    part_size: usize,
    /// Bytes a stored capture may reach (`max_size`).
    max_size: u64,
    /// Static users with `admin = true`, and `admin_scopes`.
    admins: Grant,
}

/// What both S3 clients (the object store's and [`stale::StaleUploads`])
/// are built from.
struct Connection {
    credentials: config::Credentials,
    /// `endpoint`, or AWS's for the region.
    endpoint: String,
    /// Plain HTTP only to an `http://` endpoint; `timeout` per request,
    /// connecting within at most 5 s of it.
    options: ClientOptions,
}

impl Connection {
    fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        install_tls_provider();
        let credentials = config
            .credentials()
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));
        let options = ClientOptions::new()
            .with_allow_http(endpoint.starts_with("http://"))
            .with_connect_timeout(config.timeout().min(Duration::from_secs(5)))
            .with_timeout(config.timeout());
        Ok(Self {
            credentials,
            endpoint,
            options,
        })
    }
}

impl CaptureStore {
    /// The client for `config` (validated); `users` and
    /// `config.admin_scopes` say who is an admin.
    pub fn new(
        config: &StoreConfig,
        users: &[crate::auth::StaticUser],
    ) -> Result<Self, StoreError> {
        let Connection {
            credentials,
            endpoint,
            options,
        } = Connection::new(config)?;
        let mut builder = AmazonS3Builder::new()
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key)
            .with_virtual_hosted_style_request(config.virtual_hosted_style)
            .with_client_options(options)
            // A store that is down must refuse a capture within seconds.
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: config.timeout(),
                ..RetryConfig::default()
            });
        if config.endpoint.is_some() {
            builder = builder.with_endpoint(&endpoint);
        }
        let s3 = builder
            .build()
            .map_err(|e| StoreError::Setup(e.to_string()))?;
        Ok(Self {
            s3: Arc::new(s3),
            endpoint,
            bucket: config.bucket.clone(),
            prefix: Path::from(config.prefix.as_str()),
            retention: config.retention(),
            cleanup_interval: config.cleanup_interval(),
            presign_expiry: config.presign_expiry(),
            part_size: usize::try_from(config.part_size).unwrap_or(usize::MAX),
            max_size: config.max_size,
            admins: Grant {
                users: users
                    .iter()
                    .filter(|u| u.admin)
                    .map(|u| u.name.clone())
                    .collect(),
                scopes: config.admin_scopes.clone(),
            },
        })
    }

    fn unavailable(&self, error: &object_store::Error) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            message: error_message(error),
        }
    }

    fn is_admin(&self, user: &User) -> bool {
        self.admins.admits(user)
    }

    /// `PREFIX/OWNER/ID.NAME.pcapng`, NAME the start of `name`, encoded.
    fn object_path(&self, owner: &str, id: &str, name: &str) -> Path {
        let name: String = name.chars().take(MAX_NAME_CHARS).collect();
        self.prefix
            .clone()
            .join(owner)
            .join(format!("{id}.{}.pcapng", owner_segment(&name)).as_str())
    }

    /// Bytes a stored capture may reach (`store.max_size`).
    fn max_size(&self) -> u64 {
        self.max_size
    }

    fn expires_ns(&self, created_ns: u64) -> u64 {
        self.retention.map_or(0, |r| {
            created_ns.saturating_add(u64::try_from(r.as_nanos()).unwrap_or(u64::MAX))
        })
    }

    /// A presigned GET for `path`, and when it expires.
    async fn presign(&self, path: &Path) -> Result<(String, u64), StoreError> {
        let url = self
            .s3
            .signed_url(Method::GET, path, self.presign_expiry)
            .await
            .map_err(|e| StoreError::Failed(error_message(&e)))?;
        let expires = unix_now_ns()
            .saturating_add(u64::try_from(self.presign_expiry.as_nanos()).unwrap_or(0));
        Ok((url.to_string(), expires))
    }

    /// The captures `user` may read, newest first.
    pub async fn list(&self, user: &User) -> Result<Vec<StoredCapture>, StoreError> {
        Ok(self
            .list_objects(user)
            .await?
            .into_iter()
            .map(|(_, capture)| capture)
            .collect())
    }

    async fn list_objects(&self, user: &User) -> Result<Vec<(Path, StoredCapture)>, StoreError> {
        let prefix = if self.is_admin(user) {
            self.prefix.clone()
        } else {
            self.prefix.clone().join(owner_of(user).as_str())
        };
        let objects: Vec<ObjectMeta> = self
            .s3
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut captures: Vec<(Path, StoredCapture)> = objects
            .into_iter()
            .filter_map(|meta| {
                let capture = self.describe(&meta)?;
                Some((meta.location, capture))
            })
            .collect();
        captures.sort_by_key(|c| std::cmp::Reverse(c.1.created_ns));
        Ok(captures)
    }

    /// A listed object as a stored capture; None for what is not ours.
    fn describe(&self, meta: &ObjectMeta) -> Option<StoredCapture> {
        let relative: Vec<_> = meta.location.prefix_match(&self.prefix)?.collect();
        let [owner, file] = relative.as_slice() else {
            return None;
        };
        let stem = file.as_ref().strip_suffix(".pcapng")?;
        // `ID.NAME`; `ID` alone for captures stored before names were kept.
        let (id, name) = match stem.split_once('.') {
            Some((id, name)) => (id, decode_owner(name)),
            None => (stem, decode_owner(owner.as_ref())),
        };
        valid_id(id).then_some(())?;
        let created_ns = meta
            .last_modified
            .timestamp_nanos_opt()
            .map_or(0, |ns| u64::try_from(ns).unwrap_or(0));
        Some(StoredCapture {
            id: id.to_owned(),
            owner: name,
            size: meta.size,
            created_ns,
            expires_ns: self.expires_ns(created_ns),
        })
    }

    /// A presigned URL for capture `id`, if `user` may read it: among the
    /// captures they may list.
    pub async fn download_url(&self, user: &User, id: &str) -> Result<DownloadUrl, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::BadId(id.to_owned()));
        }
        let (path, capture) = self
            .list_objects(user)
            .await?
            .into_iter()
            .find(|(_, c)| c.id == id)
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let (url, url_expires_ns) = self.presign(&path).await?;
        tracing::info!(
            user = %crate::audit::Escaped(&user.name),
            object = %path,
            "presigned a download"
        );
        Ok(DownloadUrl {
            capture: Some(capture),
            url,
            url_expires_ns,
        })
    }

    /// Removes the captures older than the retention; returns how many.
    pub async fn remove_expired(&self) -> Result<usize, StoreError> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        let cutoff = unix_now_ns().saturating_sub(u64::try_from(retention.as_nanos()).unwrap_or(0));
        let objects: Vec<ObjectMeta> = self
            .s3
            .list(Some(&self.prefix))
            .try_collect()
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut removed = 0;
        for meta in objects {
            let created = meta
                .last_modified
                .timestamp_nanos_opt()
                .map_or(0, |ns| u64::try_from(ns).unwrap_or(0));
            if created <= cutoff {
                self.s3
                    .delete(&meta.location)
                    .await
                    .map_err(|e| StoreError::Failed(error_message(&e)))?;
                tracing::info!(object = %meta.location, "retention: removed a stored capture");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs the retention cleanup every `cleanup_interval`, for as long as
    /// the runtime runs. Without retention there is nothing to do.
    pub fn spawn_cleanup(self: &Arc<Self>) {
        if self.retention.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::downgrade(self);
        let interval = self.cleanup_interval;
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                if let Err(error) = store.remove_expired().await {
                    tracing::warn!(%error, "retention cleanup failed; trying again later");
                }
            }
        });
    }
}

/// `20260601T120000Z-5f3a9c01`: the UTC time and 32 random bits.
fn new_id(now_ns: u64) -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_ns);
    let random = hasher.finish() as u32;
    format!("{}-{random:08x}", utc_stamp(now_ns / 1_000_000_000))
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
fn utc_stamp(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        .format("%Y%m%dT%H%M%SZ")
        .to_string()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The owner segment of `user`'s captures: `ISSUER:ID`, each encoded by
/// [`owner_segment`] (which never writes `:`), so that two identities never
/// share a segment, and no segment of this form is one of the bare names
/// older versions used.
fn owner_of(user: &User) -> String {
    format!(
        "{}:{}",
        owner_segment(user.issuer.label()),
        owner_segment(&user.id)
    )
}

/// How much of the owner's name goes into an object's key.
const MAX_NAME_CHARS: usize = 64;

/// A text as one key segment and header value: letters, digits and
/// `._@+-` stay, every other byte becomes `=XX`. Injective, so owners never
/// share a prefix.
fn owner_segment(user: &str) -> String {
    let only_dots = user.bytes().all(|b| b == b'.');
    let mut segment = String::with_capacity(user.len());
    for byte in user.bytes() {
        let keep = (byte.is_ascii_alphanumeric() || b"._@+-".contains(&byte))
            && !(only_dots && byte == b'.');
        if keep {
            segment.push(char::from(byte));
        } else {
            let _ = write!(segment, "={byte:02X}");
        }
    }
    segment
}

fn decode_owner(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(byte) = segment
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_utc_time_and_random_bits() {
        // 2023-11-14T22:13:20Z
        let id = new_id(1_700_000_000_000_000_000);
        assert!(id.starts_with("20231114T221320Z-"), "{id}");
        assert_eq!(id.len(), "20231114T221320Z-".len() + 8);
        assert!(valid_id(&id));
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        for bad in ["", "../x", "a/b", "x.pcapng", "a b"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn owners_are_one_safe_segment() {
        for user in ["alice", "a.b@example.com", "x/y", "=3D", "..", "é", "a b"] {
            let segment = owner_segment(user);
            assert!(
                segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@+-=".contains(&b)),
                "{segment}"
            );
            assert_ne!(segment, "..");
            assert_eq!(decode_owner(&segment), user);
        }
        assert_eq!(owner_segment("alice"), "alice");
        assert_ne!(owner_segment("x/y"), owner_segment("x=2Fy"));
    }

    #[test]
    fn owners_are_issuer_and_id_never_the_name() {
        use crate::auth::{Issuer, Uaa};
        let uaa = |id: &str, name: &str| User {
            issuer: Issuer::Uaa {
                uaa: Uaa::Cf,
                url: "https://uaa.example.com/oauth/token".into(),
            },
            id: id.into(),
            name: name.into(),
            scopes: Vec::new(),
            token: None,
        };
        let static_carol = owner_of(&User::named("carol"));
        assert_eq!(static_carol, "static:carol");
        // A UAA user named carol, or even with the id carol, is not her.
        assert_ne!(owner_of(&uaa("u-1", "carol")), static_carol);
        assert_ne!(owner_of(&uaa("carol", "carol")), static_carol);
        assert_eq!(
            owner_of(&uaa("u-1", "carol")),
            "https=3A=2F=2Fuaa.example.com=2Foauth=2Ftoken:u-1"
        );
        // Another user with the same name: another owner.
        assert_ne!(owner_of(&uaa("u-1", "x")), owner_of(&uaa("u-2", "x")));
        // An old bare-name segment never looks like a new one.
        assert!(!owner_segment("static:carol").contains(':'));
    }
}
