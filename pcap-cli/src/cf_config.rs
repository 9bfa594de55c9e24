//! The cf CLI's configuration, `$CF_HOME/.cf/config.json` (or
//! `~/.cf/config.json`): the targeted Cloud Controller, the tokens, the
//! targeted org and space, and refreshing an expired access token through
//! UAA (client `cf`, empty secret).
//!
//! The file is rewritten atomically (a temporary file in the same
//! directory with the file's mode, then a rename), with every field this
//! program does not know kept as it was, and never with an empty token.
//! Tokens are never printed.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The cf CLI's UAA client (`cf`), and how it logs in again.
pub const LOGIN: crate::uaa::Login = crate::uaa::Login {
    client: "cf",
    command: "cf login",
};
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the cf CLI keeps its configuration.
pub fn path() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("CF_HOME")
        .or_else(|| std::env::var_os("HOME"))
        .context("neither CF_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cf").join("config.json"))
}

/// The whole file, kept as JSON so that unknown fields survive a rewrite.
pub struct CfConfig {
    path: PathBuf,
    document: Value,
}

/// An org or a space as the cf CLI stores it.
#[derive(Clone, Debug, Default)]
pub struct Named {
    pub guid: String,
    pub name: String,
}

impl CfConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "not logged in to Cloud Foundry: {} does not exist; run `cf login` first",
                path.display()
            ),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let document: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        if !document.is_object() {
            bail!("{} is not a JSON object", path.display());
        }
        Ok(Self {
            path: path.to_owned(),
            document,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn text(&self, key: &str) -> Option<String> {
        self.document
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    fn named(&self, key: &str) -> Named {
        let field = |name: &str| {
            self.document
                .get(key)
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Named {
            guid: field("GUID"),
            name: field("Name"),
        }
    }

    /// Cloud Controller's URL (`Target`), or "not logged in".
    pub fn target(&self) -> anyhow::Result<String> {
        self.text("Target")
            .map(|t| t.trim_end_matches('/').to_owned())
            .context("no Cloud Foundry API is targeted; run `cf login -a https://api.SYSTEM_DOMAIN` first")
    }

    /// The access token without its `bearer ` prefix.
    pub fn access_token(&self) -> Option<String> {
        let token = strip_bearer(&self.text("AccessToken")?).to_owned();
        (!token.is_empty()).then_some(token)
    }

    pub fn refresh_token(&self) -> Option<String> {
        self.text("RefreshToken")
    }

    /// The UAA to refresh tokens at: `UaaEndpoint`, else
    /// `AuthorizationEndpoint`.
    pub fn uaa_endpoint(&self) -> Option<String> {
        self.text("UaaEndpoint")
            .or_else(|| self.text("AuthorizationEndpoint"))
            .map(|u| u.trim_end_matches('/').to_owned())
    }

    pub fn org(&self) -> Named {
        self.named("OrganizationFields")
    }

    /// The targeted space, or what to do when there is none.
    pub fn space(&self) -> anyhow::Result<Named> {
        let space = self.named("SpaceFields");
        if space.guid.is_empty() {
            bail!("no space is targeted; run `cf target -o ORG -s SPACE` first");
        }
        Ok(space)
    }

    pub fn ssl_disabled(&self) -> bool {
        self.document
            .get("SSLDisabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Stores new tokens and rewrites the file. Empty access tokens are
    /// refused; an empty or missing refresh token keeps the old one.
    pub fn store_tokens(&mut self, access: &str, refresh: Option<&str>) -> anyhow::Result<()> {
        if access.is_empty() {
            bail!(
                "the UAA sent an empty access token; {} was not changed",
                self.path.display()
            );
        }
        let object = self
            .document
            .as_object_mut()
            .context("the configuration is not a JSON object")?;
        object.insert(
            "AccessToken".into(),
            Value::from(format!("bearer {access}")),
        );
        if let Some(refresh) = refresh.filter(|t| !t.is_empty()) {
            object.insert("RefreshToken".into(), Value::from(refresh));
        }
        self.save()
    }

    /// Writes a temporary file beside the configuration, with the
    /// configuration's mode (0600 when it has none), then renames it over.
    fn save(&self) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(&self.document)
            .context("cannot serialize the configuration")?;
        text.push('\n');
        let mode = fs::metadata(&self.path).map_or(0o600, |m| m.permissions().mode() & 0o7777);
        crate::rewrite::replace(&self.path, &text, mode)
    }
}

/// HTTPS to Cloud Controller and UAA: the system's roots plus `ca`, or no
/// verification when the cf CLI was told so (`SSLDisabled`,
/// `cf login --skip-ssl-validation`).
pub fn http_client(ca: Option<&Path>, skip_verification: bool) -> anyhow::Result<reqwest::Client> {
    crate::connect::https_client(ca, skip_verification, Some(HTTP_TIMEOUT))
}

/// The pcap API of a Cloud Foundry: `https://api.SYS[:PORT]` gives
/// `https://pcap.SYS[:PORT]`.
pub fn derive_api(target: &str) -> Option<String> {
    let (scheme, rest) = target.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = authority.strip_prefix("api.")?;
    (!host.is_empty()).then(|| format!("{scheme}://pcap.{host}"))
}

/// `token` without a `bearer ` prefix (in any case), as cf stores it.
pub fn strip_bearer(token: &str) -> &str {
    match token.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"ConfigVersion":4,"Target":"https://api.example.com","APIVersion":"3.x",
 "AuthorizationEndpoint":"https://login.example.com","UaaEndpoint":"https://uaa.example.com",
 "AccessToken":"bearer old-access","RefreshToken":"old-refresh","UAAOAuthClient":"cf","UAAOAuthClientSecret":"",
 "SSHOAuthClient":"ssh-proxy","OrganizationFields":{"GUID":"o-1","Name":"my-org"},
 "SpaceFields":{"GUID":"s-1","Name":"dev","AllowSSH":true},"SSLDisabled":false,
 "PluginRepos":[{"Name":"CF-Community","URL":"https://plugins.cloudfoundry.org"}]}"#;

    fn temp(tag: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pcap-cf-config-{tag}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn fields_are_read() {
        let path = temp("read", CONFIG);
        let config = CfConfig::load(&path).unwrap();
        assert_eq!(config.target().unwrap(), "https://api.example.com");
        assert_eq!(config.access_token().as_deref(), Some("old-access"));
        assert_eq!(
            config.uaa_endpoint().as_deref(),
            Some("https://uaa.example.com")
        );
        assert_eq!(config.space().unwrap().name, "dev");
        assert_eq!(config.org().name, "my-org");
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn missing_login_and_space_say_what_to_do() {
        let path = temp(
            "empty",
            r#"{"ConfigVersion":4,"Target":"","AccessToken":"","SpaceFields":{"GUID":""}}"#,
        );
        let config = CfConfig::load(&path).unwrap();
        assert!(
            config
                .target()
                .unwrap_err()
                .to_string()
                .contains("cf login")
        );
        assert!(config.access_token().is_none());
        assert!(
            config
                .space()
                .unwrap_err()
                .to_string()
                .contains("cf target")
        );
        let missing = CfConfig::load(&path.with_file_name("nope.json"))
            .err()
            .unwrap();
        assert!(missing.to_string().contains("cf login"), "{missing}");
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn rewrites_keep_unknown_fields_and_the_mode() {
        let path = temp("rewrite", CONFIG);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let mut config = CfConfig::load(&path).unwrap();
        config.store_tokens("new-access", Some("")).unwrap();
        assert!(config.store_tokens("", Some("x")).is_err());
        let value: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["AccessToken"], "bearer new-access");
        assert_eq!(value["RefreshToken"], "old-refresh");
        assert_eq!(value["PluginRepos"][0]["Name"], "CF-Community");
        assert_eq!(value["SpaceFields"]["AllowSSH"], true);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_pcap_api_is_derived_from_the_system_domain() {
        assert_eq!(
            derive_api("https://api.sys.example.com").as_deref(),
            Some("https://pcap.sys.example.com")
        );
        assert_eq!(
            derive_api("https://api.sys.example.com:8443").as_deref(),
            Some("https://pcap.sys.example.com:8443")
        );
        assert_eq!(derive_api("https://10.0.0.5"), None);
    }
}
