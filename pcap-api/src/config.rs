//! The TOML file given with `--config` (see docs/configuration.md, section
//! "pcap-api serve"), and its validation.

use std::{
    collections::HashSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use crate::auth::{Grant, ScopeGrant, StaticUser as User, Uaa};
pub use crate::resolve::{TargetAgent, TargetConfig as Target};
pub use crate::validate::{ConfigError, agent_authority};
use crate::validate::{check_certificate, check_private_key, check_seconds, invalid, io_message};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub tls: ServerTls,
    pub agents: Agents,
    #[serde(default)]
    pub merge: Merge,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// The BOSH resolver; absent: no BOSH targets.
    pub bosh: Option<crate::bosh::BoshConfig>,
    /// The Cloud Foundry app resolver; absent: no app targets.
    pub cf: Option<crate::cf::CfConfig>,
    /// Where `--store` captures go; absent: they are refused.
    pub store: Option<crate::store::config::StoreConfig>,
    /// The metrics listener (`crate::metrics`).
    #[serde(default)]
    pub metrics: pcap_proto::metrics::MetricsConfig,
}

/// What the API presents to clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// How the API reaches agents (mutual TLS).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agents {
    pub ca: PathBuf,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    #[serde(default = "default_server_name")]
    pub server_name: String,
    #[serde(default = "default_agent_port")]
    pub port: u16,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: f64,
    #[serde(default = "default_start_timeout")]
    pub start_timeout: f64,
}

impl Agents {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout)
    }

    pub fn start_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.start_timeout)
    }
}

/// The reorder window; every key has its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Merge {
    pub reorder_window: f64,
    pub max_buffered_bytes: u64,
}

impl Default for Merge {
    fn default() -> Self {
        Self {
            reorder_window: 0.5,
            max_buffered_bytes: 64 << 20,
        }
    }
}

impl Merge {
    pub fn reorder_window(&self) -> Duration {
        Duration::from_secs_f64(self.reorder_window)
    }
}

/// The API's limits; every key has its default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_captures: u32,
    pub max_captures_per_user: u32,
    pub max_captures_per_agent: u32,
    /// Captures one user may run on one agent at once, so that one user
    /// cannot hold all of an agent's `max_captures_per_agent`.
    pub max_captures_per_user_per_agent: u32,
    pub max_duration: f64,
    /// Bytes of packet data per capture; 0 = no limit.
    pub max_bytes: u64,
    pub drain_grace: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_captures: 16,
            max_captures_per_user: 2,
            max_captures_per_agent: 2,
            max_captures_per_user_per_agent: 1,
            max_duration: 3600.0,
            max_bytes: 0,
            drain_grace: 10.0,
        }
    }
}

impl Limits {
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs_f64(self.max_duration)
    }

    pub fn drain_grace(&self) -> Duration {
        Duration::from_secs_f64(self.drain_grace)
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_server_name() -> String {
    "pcap-agent".to_owned()
}
fn default_agent_port() -> u16 {
    9494
}
fn default_connect_timeout() -> f64 {
    2.0
}
fn default_start_timeout() -> f64 {
    5.0
}

impl Config {
    /// Reads, parses and validates the file, including every file it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            message: io_message(&e),
        })?;
        let config = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_certificate("tls.certificate", &self.tls.certificate)?;
        check_private_key("tls.private_key", &self.tls.private_key)?;
        check_certificate("agents.ca", &self.agents.ca)?;
        check_certificate("agents.certificate", &self.agents.certificate)?;
        check_private_key("agents.private_key", &self.agents.private_key)?;
        if self.agents.server_name.is_empty() {
            return Err(invalid("agents.server_name", "must not be empty"));
        }
        if let Err(e) =
            tokio_rustls::rustls::pki_types::ServerName::try_from(self.agents.server_name.as_str())
        {
            return Err(invalid(
                "agents.server_name",
                format!(
                    "{:?} is neither a DNS name nor an IP address: {e}",
                    self.agents.server_name
                ),
            ));
        }
        check_seconds("agents.connect_timeout", self.agents.connect_timeout, false)?;
        check_seconds("agents.start_timeout", self.agents.start_timeout, false)?;
        check_seconds("merge.reorder_window", self.merge.reorder_window, true)?;
        if self.merge.max_buffered_bytes == 0 {
            return Err(invalid("merge.max_buffered_bytes", "must be positive"));
        }
        for (key, value) in [
            ("limits.max_captures", self.limits.max_captures),
            (
                "limits.max_captures_per_user",
                self.limits.max_captures_per_user,
            ),
            (
                "limits.max_captures_per_agent",
                self.limits.max_captures_per_agent,
            ),
            (
                "limits.max_captures_per_user_per_agent",
                self.limits.max_captures_per_user_per_agent,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        check_seconds("limits.max_duration", self.limits.max_duration, false)?;
        check_seconds("limits.drain_grace", self.limits.drain_grace, true)?;
        self.metrics
            .check(crate::metrics::DEFAULT_LISTEN)
            .map_err(|e| invalid(e.key, e.message))?;
        self.validate_users()?;
        self.validate_targets()?;
        if let Some(bosh) = &self.bosh {
            bosh.validate()?;
        }
        if let Some(cf) = &self.cf {
            cf.validate()?;
        }
        if let Some(store) = &self.store {
            store.validate()?;
            for (i, grant) in store.admin_scopes.iter().enumerate() {
                self.check_scope_grant(&format!("store.admin_scopes[{i}]"), grant)?;
            }
        }
        Ok(())
    }

    /// A scope grant must name a UAA this API trusts, and a scope.
    fn check_scope_grant(&self, key: &str, grant: &ScopeGrant) -> Result<(), ConfigError> {
        let configured = match grant.uaa {
            Uaa::Bosh => self.bosh.is_some(),
            Uaa::Cf => self.cf.is_some(),
        };
        if !configured {
            let uaa = grant.uaa.key();
            return Err(invalid(
                format!("{key}.uaa"),
                format!(
                    "\"{uaa}\" names the UAA of [{uaa}], and there is no [{uaa}] table; \
                     configure it or remove the grant"
                ),
            ));
        }
        if grant.scope.trim().is_empty() || grant.scope.trim() != grant.scope {
            return Err(invalid(
                format!("{key}.scope"),
                format!("\"{}\" is not a scope name", grant.scope),
            ));
        }
        Ok(())
    }

    /// `allow` of target `i`: present, not empty, and naming only users
    /// and UAAs that exist.
    fn check_target_grant(&self, i: usize, target: &Target) -> Result<(), ConfigError> {
        let key = format!("targets[{i}].allow");
        let example = "allow = { users = [\"alice\"] } or \
                       allow = { scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }] }";
        let Some(grant) = &target.allow else {
            return Err(invalid(
                key,
                format!(
                    "target \"{}\" says nobody may capture it; name who may, e.g. {example}",
                    target.name
                ),
            ));
        };
        if grant.is_empty() {
            return Err(invalid(
                key,
                format!(
                    "is empty, so nobody could capture target \"{}\"; name who may, e.g. {example}, \
                     or remove the target",
                    target.name
                ),
            ));
        }
        for (j, name) in grant.users.iter().enumerate() {
            if !self.users.iter().any(|u| &u.name == name) {
                return Err(invalid(
                    format!("{key}.users[{j}]"),
                    format!("\"{name}\" is not one of the [[users]]"),
                ));
            }
        }
        for (j, scope) in grant.scopes.iter().enumerate() {
            self.check_scope_grant(&format!("{key}.scopes[{j}]"), scope)?;
        }
        Ok(())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            check_new_name(&mut names, format!("users[{i}].name"), &user.name)?;
            if user.token.is_empty() {
                return Err(invalid(format!("users[{i}].token"), "must not be empty"));
            }
            if !tokens.insert(&user.token) {
                return Err(invalid(
                    format!("users[{i}].token"),
                    "is the token of another user",
                ));
            }
        }
        Ok(())
    }

    fn validate_targets(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, target) in self.targets.iter().enumerate() {
            check_new_name(&mut names, format!("targets[{i}].name"), &target.name)?;
            if target.agents.is_empty() {
                return Err(invalid(
                    format!("targets[{i}].agents"),
                    "must name at least one agent",
                ));
            }
            let mut origins = HashSet::new();
            for (j, agent) in target.agents.iter().enumerate() {
                if agent.origin.is_empty() || !origins.insert(&agent.origin) {
                    return Err(invalid(
                        format!("targets[{i}].agents[{j}].origin"),
                        format!("\"{}\" is empty or appears twice", agent.origin),
                    ));
                }
                agent_authority(&agent.address, self.agents.port).map_err(|message| {
                    invalid(format!("targets[{i}].agents[{j}].address"), message)
                })?;
            }
            if let Some(empty) = target.interfaces.iter().position(String::is_empty) {
                return Err(invalid(
                    format!("targets[{i}].interfaces[{empty}]"),
                    "must not be empty",
                ));
            }
            self.check_target_grant(i, target)?;
        }
        Ok(())
    }
}

/// `name` (at `key`) is not empty and not among `names`, which it joins.
fn check_new_name<'a>(
    names: &mut HashSet<&'a str>,
    key: String,
    name: &'a str,
) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    if !names.insert(name) {
        return Err(invalid(key, format!("\"{name}\" appears twice")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [tls]
        certificate = "/nonexistent/api.crt"
        private_key = "/nonexistent/api.key"
        [agents]
        ca = "/nonexistent/ca.crt"
        certificate = "/nonexistent/client.crt"
        private_key = "/nonexistent/client.key"
    "#;

    #[test]
    fn defaults_follow_the_documentation() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(config.agents.server_name, "pcap-agent");
        assert_eq!(config.agents.port, 9494);
        assert_eq!(config.agents.connect_timeout(), Duration::from_secs(2));
        assert_eq!(config.agents.start_timeout(), Duration::from_secs(5));
        assert_eq!(config.merge.reorder_window(), Duration::from_millis(500));
        assert_eq!(config.merge.max_buffered_bytes, 67_108_864);
        assert_eq!(config.limits.max_captures, 16);
        assert_eq!(config.limits.max_captures_per_user, 2);
        assert_eq!(config.limits.max_captures_per_agent, 2);
        assert_eq!(config.limits.max_bytes, 0);
        assert_eq!(config.limits.drain_grace(), Duration::from_secs(10));
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
            listen = "0.0.0.0:8443"
            [tls]
            certificate = "/path/api.crt"
            private_key = "/path/api.key"
            [agents]
            ca = "/path/ca.crt"
            certificate = "/path/api-client.crt"
            private_key = "/path/api-client.key"
            server_name = "pcap-agent"
            port = 9494
            connect_timeout = 2.0
            start_timeout = 5.0
            [merge]
            reorder_window = 0.5
            max_buffered_bytes = 67108864
            [limits]
            max_captures = 16
            max_captures_per_user = 2
            max_captures_per_agent = 2
            max_duration = 3600.0
            max_bytes = 0
            drain_grace = 10.0
            [[users]]
            name = "alice"
            token = "secret-token-for-alice"
            [[targets]]
            name = "vms"
            interfaces = ["eth0"]
            allow = { users = ["alice"] }
            agents = [
              { origin = "vm-0", address = "10.1.0.2:9494" },
              { origin = "vm-1", address = "10.1.1.2" },
            ]
        "#;
        let config = Config::parse(text).unwrap();
        assert_eq!(config.targets[0].agents[1].address, "10.1.1.2");
        assert_eq!(config.users[0].name, "alice");
        assert_eq!(
            config.targets[0].allow,
            Some(Grant {
                users: vec!["alice".into()],
                scopes: Vec::new()
            })
        );
        assert_eq!(config.limits.max_captures_per_user_per_agent, 1);
        config.validate_targets().unwrap();
    }

    /// The error `validate_targets` gives for `targets` (TOML) after
    /// MINIMAL, with user alice, and `[bosh]` when `bosh` is set.
    fn target_error(targets: &str, bosh: bool) -> String {
        let bosh = if bosh {
            "[bosh]\ndirector_url = \"https://10.0.0.6:25555\"\ndirector_ca = \"/x\"\n"
        } else {
            ""
        };
        let text = format!(
            "{MINIMAL}\n[[users]]\nname = \"alice\"\ntoken = \"t\"\n{bosh}\n\
             [[targets]]\nname = \"vms\"\nagents = [{{ origin = \"vm-0\", address = \"10.0.0.1\" }}]\n{targets}"
        );
        let config = Config::parse(&text).unwrap();
        match config.validate_targets() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_static_target_must_say_who_may_capture_it() {
        let missing = target_error("", false);
        assert!(
            missing.starts_with("targets[0].allow: target \"vms\" says nobody may capture it"),
            "{missing}"
        );
        assert!(
            missing.contains("allow = { users = [\"alice\"] }"),
            "{missing}"
        );
        let empty = target_error("allow = {}", false);
        assert!(empty.starts_with("targets[0].allow: is empty"), "{empty}");
        let empty = target_error("allow = { users = [], scopes = [] }", false);
        assert!(empty.starts_with("targets[0].allow: is empty"), "{empty}");
        assert_eq!(
            target_error("allow = { users = [\"bob\"] }", false),
            "targets[0].allow.users[0]: \"bob\" is not one of the [[users]]"
        );
        let no_bosh = target_error(
            "allow = { scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }] }",
            false,
        );
        assert!(
            no_bosh.starts_with("targets[0].allow.scopes[0].uaa: \"bosh\" names the UAA of [bosh], and there is no [bosh] table"),
            "{no_bosh}"
        );
        assert_eq!(
            target_error(
                "allow = { scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }] }",
                true
            ),
            "ok"
        );
        assert_eq!(
            target_error(
                "allow = { scopes = [{ uaa = \"bosh\", scope = \" \" }] }",
                true
            ),
            "targets[0].allow.scopes[0].scope: \" \" is not a scope name"
        );
        assert_eq!(target_error("allow = { users = [\"alice\"] }", false), "ok");
        assert_eq!(
            target_error(
                "interfaces = [\"\"]\nallow = { users = [\"alice\"] }",
                false
            ),
            "targets[0].interfaces[0]: must not be empty"
        );
        // A UAA that is not bosh or cf does not parse.
        let text = format!(
            "{MINIMAL}\n[[targets]]\nname = \"t\"\nallow = {{ scopes = [{{ uaa = \"ldap\", scope = \"x\" }}] }}\nagents = []\n"
        );
        let error = Config::parse(&text).unwrap_err().to_string();
        assert!(error.contains("unknown variant `ldap`"), "{error}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = format!("{MINIMAL}\n[merge]\nreorder = 1.0\n");
        let error = Config::parse(&text).unwrap_err().to_string();
        assert!(error.contains("unknown field `reorder`"), "{error}");
    }

    #[test]
    fn a_missing_file_names_its_key() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "tls.certificate: cannot read /nonexistent/api.crt: No such file or directory"
        );
    }

    #[test]
    fn a_file_that_is_not_pem_names_its_key() {
        let path = std::env::temp_dir().join(format!("pcap-api-config-{}", std::process::id()));
        fs::write(&path, "not a certificate").unwrap();
        let error = check_certificate("agents.ca", &path)
            .unwrap_err()
            .to_string();
        fs::remove_file(&path).unwrap();
        assert!(error.starts_with("agents.ca: "), "{error}");
        assert!(
            error.contains("no \"-----BEGIN CERTIFICATE-----\""),
            "{error}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(
            check_seconds("agents.start_timeout", -1.0, false)
                .unwrap_err()
                .to_string(),
            "agents.start_timeout: -1 is not a duration in seconds (more than zero, at most a year)"
        );
        assert!(check_seconds("merge.reorder_window", 0.0, true).is_ok());
        assert!(check_seconds("limits.max_duration", f64::NAN, false).is_err());
    }

    #[test]
    fn agent_addresses_take_the_default_port() {
        assert_eq!(
            agent_authority("10.1.0.2:9000", 9494).unwrap(),
            "10.1.0.2:9000"
        );
        assert_eq!(agent_authority("10.1.1.2", 9494).unwrap(), "10.1.1.2:9494");
        assert_eq!(agent_authority("::1", 9494).unwrap(), "[::1]:9494");
        assert_eq!(agent_authority("[::1]:80", 9494).unwrap(), "[::1]:80");
        assert_eq!(
            agent_authority("cell-3.internal", 1).unwrap(),
            "cell-3.internal:1"
        );
        assert!(agent_authority("host:port", 1).is_err());
        assert!(agent_authority("a b", 1).is_err());
        assert!(agent_authority("", 1).is_err());
    }
}
