//! The `[store]` table of the API's configuration: where stored captures go
//! (see docs/configuration.md). Secrets never reach `Debug` or a message.

use std::{fmt, fs, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::validate::ConfigError;

/// S3 refuses smaller parts (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's most parts in one multipart upload.
pub const S3_MAX_PARTS: u64 = 10_000;
/// A stored capture stops at this many parts at most, well before
/// [`S3_MAX_PARTS`]: the last part and the statistics still fit.
pub const MAX_PARTS: u64 = 9_000;
/// S3's longest presigned URL: seven days.
pub const MAX_PRESIGN_EXPIRY: f64 = 7.0 * 86_400.0;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `https://host:port` of an S3-compatible store; none means AWS S3 in
    /// `region`.
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Falls back to `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// Falls back to `secret_access_key_file`, then `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    /// Objects are `PREFIX/OWNER/ID.pcapng`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Seconds a stored capture is kept; 0 keeps it until removed by hand.
    #[serde(default = "default_retention")]
    pub retention: f64,
    /// Seconds between two passes of the API's retention cleanup.
    #[serde(default = "default_cleanup_interval")]
    pub cleanup_interval: f64,
    /// Seconds a presigned download URL is valid (at most 7 days).
    #[serde(default = "default_presign_expiry")]
    pub presign_expiry: f64,
    /// Bytes per multipart part: the memory a stored capture holds.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Bytes of pcapng a stored capture may reach; then it stops with
    /// LIMIT_REACHED and the object keeps what was captured. At most
    /// `MAX_PARTS` parts of `part_size`.
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// `https://BUCKET.host/KEY` instead of `https://host/BUCKET/KEY`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// UAA users holding one of these scopes are store admins (list and
    /// download every user's captures), besides `[[users]] admin = true`.
    /// Checked in `crate::config` (the UAA must be configured).
    #[serde(default)]
    pub admin_scopes: Vec<crate::auth::ScopeGrant>,
    /// Seconds for one request to the store (connecting: at most 5).
    #[serde(default = "default_timeout")]
    pub timeout: f64,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets are never logged, not even through `{:?}`.
        f.debug_struct("StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .field("presign_expiry", &self.presign_expiry)
            .field("part_size", &self.part_size)
            .field("max_size", &self.max_size)
            .finish_non_exhaustive()
    }
}

fn default_region() -> String {
    "us-east-1".to_owned()
}
fn default_prefix() -> String {
    "captures".to_owned()
}
fn default_retention() -> f64 {
    7.0 * 86_400.0
}
fn default_cleanup_interval() -> f64 {
    600.0
}
fn default_presign_expiry() -> f64 {
    900.0
}
fn default_part_size() -> u64 {
    8 << 20
}
fn default_max_size() -> u64 {
    1 << 30
}
fn default_timeout() -> f64 {
    30.0
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("store.{key}"),
        message: message.into(),
    }
}

/// Credentials as the store client takes them.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket.is_empty() {
            return Err(invalid("bucket", "must not be empty"));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(invalid(
                "endpoint",
                format!("\"{endpoint}\" is not an http:// or https:// URL"),
            ));
        }
        if self.prefix.is_empty() || self.prefix.split('/').any(str::is_empty) {
            return Err(invalid(
                "prefix",
                "must be a key prefix like \"captures\" (no empty segments)",
            ));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(invalid(
                "part_size",
                format!(
                    "{} is outside S3's part sizes ({MIN_PART_SIZE} to {MAX_PART_SIZE} bytes)",
                    self.part_size
                ),
            ));
        }
        let max_size = self.part_size.saturating_mul(MAX_PARTS);
        if self.max_size == 0 || self.max_size > max_size {
            return Err(invalid(
                "max_size",
                format!(
                    "{} is not from 1 to {max_size} bytes: a stored capture has at most \
                     {MAX_PARTS} parts of part_size ({} bytes), below S3's {S3_MAX_PARTS}; \
                     raise part_size to at least {} for this max_size",
                    self.max_size,
                    self.part_size,
                    self.max_size.div_ceil(MAX_PARTS).max(MIN_PART_SIZE)
                ),
            ));
        }
        seconds("retention", self.retention, 0.0, 100.0 * 365.0 * 86_400.0)?;
        seconds("cleanup_interval", self.cleanup_interval, 0.001, 86_400.0)?;
        seconds(
            "presign_expiry",
            self.presign_expiry,
            1.0,
            MAX_PRESIGN_EXPIRY,
        )?;
        seconds("timeout", self.timeout, 0.001, 3_600.0)?;
        if self.secret_access_key.is_some() && self.secret_access_key_file.is_some() {
            return Err(invalid(
                "secret_access_key_file",
                "give either secret_access_key or secret_access_key_file, not both",
            ));
        }
        self.credentials().map(|_| ())
    }

    /// The access key and secret from this table, the secret's file, or
    /// the environment.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let access_key_id = match &self.access_key_id {
            Some(id) => id.clone(),
            None => std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| {
                invalid(
                    "access_key_id",
                    "missing (and AWS_ACCESS_KEY_ID is not set)",
                )
            })?,
        };
        let secret_access_key = match (&self.secret_access_key, &self.secret_access_key_file) {
            (Some(secret), _) => secret.clone(),
            (None, Some(path)) => fs::read_to_string(path)
                .map_err(|e| {
                    invalid(
                        "secret_access_key_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_owned(),
            (None, None) => std::env::var("AWS_SECRET_ACCESS_KEY").map_err(|_| {
                invalid(
                    "secret_access_key",
                    "missing (no secret_access_key_file, and AWS_SECRET_ACCESS_KEY is not set)",
                )
            })?,
        };
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err(invalid(
                "secret_access_key",
                "the access key id and the secret must not be empty",
            ));
        }
        Ok(Credentials {
            access_key_id,
            secret_access_key,
        })
    }

    pub fn retention(&self) -> Option<Duration> {
        (self.retention > 0.0).then(|| Duration::from_secs_f64(self.retention))
    }

    pub fn cleanup_interval(&self) -> Duration {
        Duration::from_secs_f64(self.cleanup_interval)
    }

    pub fn presign_expiry(&self) -> Duration {
        Duration::from_secs_f64(self.presign_expiry)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout)
    }
}

fn seconds(key: &str, value: f64, min: f64, max: f64) -> Result<(), ConfigError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{value} is not a duration in seconds from {min} to {max}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StoreConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let config =
            parse("bucket = \"b\"\naccess_key_id = \"id\"\nsecret_access_key = \"very-secret\"\n");
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.prefix, "captures");
        assert_eq!(config.part_size, 8 << 20);
        assert_eq!(config.max_size, 1 << 30);
        assert_eq!(config.presign_expiry(), Duration::from_mins(15));
        assert_eq!(config.retention(), Some(Duration::from_hours(168)));
        config.validate().unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));

        let small = parse(
            "bucket = \"b\"\naccess_key_id = \"i\"\nsecret_access_key = \"s\"\npart_size = 1024\n",
        );
        let error = small.validate().unwrap_err().to_string();
        assert!(error.starts_with("store.part_size: 1024"), "{error}");

        let long = parse(
            "bucket = \"b\"\naccess_key_id = \"i\"\nsecret_access_key = \"s\"\npresign_expiry = 604801\n",
        );
        let error = long.validate().unwrap_err().to_string();
        assert!(error.starts_with("store.presign_expiry"), "{error}");
    }

    #[test]
    fn max_size_stays_well_below_the_part_limit() {
        let keys = "bucket = \"b\"\naccess_key_id = \"i\"\nsecret_access_key = \"s\"\n";
        // 9,000 parts of 8 MiB: 72 GiB at most.
        let config = parse(&format!("{keys}max_size = {}\n", 9_000u64 * (8 << 20)));
        config.validate().unwrap();
        let config = parse(&format!("{keys}max_size = {}\n", 9_000u64 * (8 << 20) + 1));
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.starts_with("store.max_size: ")
                && error.contains("raise part_size to at least 8388609"),
            "{error}"
        );
        let error = parse(&format!("{keys}max_size = 0\n"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("store.max_size: 0 "), "{error}");
    }

    #[test]
    fn a_missing_secret_file_names_its_key() {
        let config = parse(
            "bucket = \"b\"\naccess_key_id = \"i\"\nsecret_access_key_file = \"/nonexistent/secret\"\n",
        );
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.starts_with("store.secret_access_key_file: cannot read /nonexistent/secret"),
            "{error}"
        );
    }
}
