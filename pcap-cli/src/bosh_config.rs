//! The BOSH CLI's configuration, `~/.bosh/config` (or `$BOSH_CONFIG`):
//! environments by alias or URL, their CA and tokens, and refreshing an
//! expired access token through the director's UAA.
//!
//! The file is YAML (`environments: [{url, ca_cert, alias, access_token_type,
//! access_token, refresh_token, ...}]`, the access token without its
//! `bearer ` prefix). It is rewritten atomically (a temporary file in the
//! same directory, mode 0600, then a rename), with every field this program
//! does not know kept as it was, and never with an empty token.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use yaml_serde::{Mapping, Value};

/// The BOSH CLI's port when an environment is given as a bare host.
const DIRECTOR_PORT: u16 = 25555;
/// An access token this close to expiring is refreshed first.
pub const REFRESH_MARGIN: Duration = Duration::from_mins(1);
/// The BOSH CLI's UAA client (`bosh_cli`), and how it logs in again.
pub const LOGIN: crate::uaa::Login = crate::uaa::Login {
    client: "bosh_cli",
    command: "bosh log-in",
};

/// Where the BOSH CLI keeps its configuration: `$BOSH_CONFIG` (given as
/// `explicit` by clap), else `~/.bosh/config`.
pub fn path(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let home = std::env::var_os("HOME").context("HOME is not set, and neither is BOSH_CONFIG")?;
    Ok(PathBuf::from(home).join(".bosh").join("config"))
}

/// The whole file, kept as YAML so that unknown fields survive a rewrite.
pub struct BoshConfig {
    path: PathBuf,
    document: Value,
}

/// One entry of `environments`.
#[derive(Clone, Debug)]
pub struct Environment {
    /// Position in `environments`, to write tokens back.
    index: usize,
    pub url: String,
    pub alias: Option<String>,
    pub ca_cert: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
}

impl BoshConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the BOSH CLI's configuration {} (log in with `bosh log-in` first)",
                path.display()
            )
        })?;
        let document: Value = yaml_serde::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            document,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn environments(&self) -> &[Value] {
        self.document
            .get("environments")
            .and_then(Value::as_sequence)
            .map_or(&[], Vec::as_slice)
    }

    /// The environment named `name`: its alias, its URL, or its host (with
    /// or without `https://` and the director's port).
    pub fn environment(&self, name: &str) -> anyhow::Result<Environment> {
        let wanted = normalize_url(name);
        let mut known = Vec::new();
        for (index, entry) in self.environments().iter().enumerate() {
            let text = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let Some(url) = text("url") else { continue };
            let alias = text("alias");
            if alias.as_deref() == Some(name) || url == name || normalize_url(&url) == wanted {
                return Ok(Environment {
                    index,
                    url,
                    alias,
                    ca_cert: text("ca_cert"),
                    access_token: text("access_token"),
                    refresh_token: text("refresh_token"),
                });
            }
            known.push(alias.unwrap_or(url));
        }
        if known.is_empty() {
            bail!(
                "{} holds no environments; run `bosh alias-env` and `bosh log-in` first",
                self.path.display()
            );
        }
        bail!(
            "no BOSH environment \"{name}\" in {}; it has: {}",
            self.path.display(),
            known.join(", ")
        )
    }

    /// Stores new tokens for `environment` and rewrites the file. Empty
    /// tokens are refused; a missing refresh token keeps the old one.
    pub fn store_tokens(
        &mut self,
        environment: &mut Environment,
        access_token: &str,
        refresh_token: Option<&str>,
    ) -> anyhow::Result<()> {
        if access_token.is_empty() {
            bail!("the UAA sent an empty access token; the configuration was not changed");
        }
        let entry = self
            .document
            .get_mut("environments")
            .and_then(Value::as_sequence_mut)
            .and_then(|list| list.get_mut(environment.index))
            .and_then(Value::as_mapping_mut)
            .context("the environment vanished from the configuration")?;
        set(entry, "access_token_type", "bearer");
        set(entry, "access_token", access_token);
        environment.access_token = Some(access_token.to_owned());
        if let Some(refresh) = refresh_token.filter(|t| !t.is_empty()) {
            set(entry, "refresh_token", refresh);
            environment.refresh_token = Some(refresh.to_owned());
        }
        self.save()
    }

    /// Writes a temporary file beside the configuration (0600), then
    /// renames it over the configuration.
    fn save(&self) -> anyhow::Result<()> {
        let text =
            yaml_serde::to_string(&self.document).context("cannot serialize the configuration")?;
        crate::rewrite::replace(&self.path, &text, 0o600)
    }
}

fn set(entry: &mut Mapping, key: &str, value: &str) {
    entry.insert(Value::from(key), Value::from(value));
}

/// `https://host:25555` for `host`, `host:port` or a URL.
fn normalize_url(text: &str) -> String {
    let text = text.trim_end_matches('/');
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let authority = with_scheme
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if has_port || authority.is_empty() {
        with_scheme
    } else {
        format!("{with_scheme}:{DIRECTOR_PORT}")
    }
}

pub use pcap_platform::uaa::expires_within;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::{SystemTime, UNIX_EPOCH};

    use base64::Engine as _;

    use super::*;

    const CONFIG: &str = "\
environments:
- url: https://10.0.0.6:25555
  ca_cert: |
    -----BEGIN CERTIFICATE-----
    MIIB
    -----END CERTIFICATE-----
  alias: lab
  username: admin
  access_token_type: bearer
  access_token: old-access
  refresh_token: old-refresh
  some_future_field: {nested: [1, 2]}
- url: https://192.168.50.6:25555
  alias: vbox
";

    fn write(dir: &Path, text: &str) -> PathBuf {
        fs::create_dir_all(dir).unwrap();
        let path = dir.join("config");
        fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("pcap-bosh-config-{tag}-{}", std::process::id()))
    }

    #[test]
    fn environments_by_alias_url_or_host() {
        let dir = temp_dir("find");
        let config = BoshConfig::load(&write(&dir, CONFIG)).unwrap();
        assert_eq!(
            config.environment("lab").unwrap().url,
            "https://10.0.0.6:25555"
        );
        assert_eq!(
            config
                .environment("https://10.0.0.6:25555")
                .unwrap()
                .alias
                .as_deref(),
            Some("lab")
        );
        assert_eq!(
            config.environment("10.0.0.6").unwrap().alias.as_deref(),
            Some("lab")
        );
        assert_eq!(
            config
                .environment("192.168.50.6:25555")
                .unwrap()
                .alias
                .as_deref(),
            Some("vbox")
        );
        let error = config.environment("prod").unwrap_err().to_string();
        assert!(error.contains("it has: lab, vbox"), "{error}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rewrites_keep_unknown_fields_and_mode_0600() {
        let dir = temp_dir("rewrite");
        let path = write(&dir, CONFIG);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let mut config = BoshConfig::load(&path).unwrap();
        let mut lab = config.environment("lab").unwrap();
        config
            .store_tokens(&mut lab, "new-access", Some(""))
            .unwrap();
        assert!(config.store_tokens(&mut lab, "", Some("x")).is_err());
        let text = fs::read_to_string(&path).unwrap();
        let value: Value = yaml_serde::from_str(&text).unwrap();
        let entry = &value["environments"][0];
        assert_eq!(entry["access_token"].as_str(), Some("new-access"));
        assert_eq!(entry["refresh_token"].as_str(), Some("old-refresh"));
        assert_eq!(entry["username"].as_str(), Some("admin"));
        assert_eq!(entry["some_future_field"]["nested"][1].as_u64(), Some(2));
        assert_eq!(value["environments"][1]["alias"].as_str(), Some("vbox"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file is left"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expiry_is_read_from_the_token() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |exp: u64| {
            format!(
                "{}.{}.sig",
                encode("{}"),
                encode(&format!("{{\"exp\":{exp}}}"))
            )
        };
        assert!(!expires_within(&token(now + 3600), REFRESH_MARGIN));
        assert!(expires_within(&token(now + 10), REFRESH_MARGIN));
        assert!(expires_within("not-a-jwt", REFRESH_MARGIN));
    }

    #[test]
    fn urls_are_normalized() {
        assert_eq!(normalize_url("10.0.0.6"), "https://10.0.0.6:25555");
        assert_eq!(normalize_url("10.0.0.6:443"), "https://10.0.0.6:443");
        assert_eq!(
            normalize_url("https://d.example.com/"),
            "https://d.example.com:25555"
        );
    }
}
