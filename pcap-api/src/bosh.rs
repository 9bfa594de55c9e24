//! The BOSH resolver: VMs of a BOSH deployment, by instance group and
//! instance ID, authorized by the director itself.
//!
//! - The director's `GET /info` names its UAA; the caller's token must be a
//!   valid access token of that UAA (`uaa::UaaAuthenticator`)
//!   and carry `required_scope` (`bosh.admin` by default).
//! - Authorization: the API lists the deployment's instances at the
//!   director with the caller's own token, so the director decides who may
//!   see what (401/403 → PERMISSION_DENIED, 404 → NOT_FOUND).
//! - Groups (`job`) and instance IDs (`id`) select instances; each becomes
//!   an agent at `ips[0]:agent_port`, named `group/id`. An instance without
//!   an IP is reported to the client as unavailable, never an error.

use std::{path::PathBuf, sync::Arc};

pub use pcap_platform::director::Instance;
use pcap_platform::director::{Director, Error as DirectorError, Info};
use pcap_proto::v1::{BoshTarget, ResolverStatus};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::{
    auth::{Uaa, User},
    resolve::{AgentEndpoint, ResolveError, Resolved},
    uaa::{DiscoveredUaa, NamesUaa, SetupError, UaaAuthenticator, error_chain},
    validate::{self, ConfigError},
};

/// The `[bosh]` table of the API's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoshConfig {
    /// `https://director:25555`.
    pub director_url: String,
    /// Verifies the director's certificate and its UAA's.
    pub director_ca: PathBuf,
    /// The scope a token must carry to capture BOSH VMs.
    #[serde(default = "default_required_scope")]
    pub required_scope: String,
    /// The port agents listen on at each VM; default `agents.port`.
    pub agent_port: Option<u16>,
    /// Interfaces captured when a request names none; empty: the agents'
    /// own default.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Seconds of clock difference allowed when checking a token's `exp`
    /// and `nbf`.
    #[serde(default = "default_clock_skew")]
    pub token_clock_skew: f64,
}

fn default_required_scope() -> String {
    "bosh.admin".to_owned()
}

fn default_clock_skew() -> f64 {
    60.0
}

impl BoshConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::check_https_url(
            "bosh.director_url",
            &self.director_url,
            "https://10.0.0.6:25555",
        )?;
        validate::check_certificate("bosh.director_ca", &self.director_ca)?;
        if self.required_scope.trim().is_empty() {
            return Err(validate::invalid(
                "bosh.required_scope",
                "must not be empty",
            ));
        }
        if self.agent_port == Some(0) {
            return Err(validate::invalid("bosh.agent_port", "must not be 0"));
        }
        validate::check_seconds("bosh.token_clock_skew", self.token_clock_skew, true)
    }
}

/// The director's `/info`, its failures in the resolver's words.
async fn info(director: &Director) -> Result<Info, String> {
    director.info().await.map_err(|error| match error {
        DirectorError::Status { asked, status, .. } => {
            format!("the BOSH director at {asked} answered HTTP {status}")
        }
        DirectorError::Malformed { asked, source } => format!(
            "the BOSH director at {asked} sent a bad /info: {}",
            error_chain(&source)
        ),
        other => error_chain(&other),
    })
}

/// The deployment's instances, listed with the caller's own token.
async fn instances(
    director: &Director,
    deployment: &str,
    token: &str,
) -> Result<Vec<Instance>, ResolveError> {
    let error = match director.instances(deployment, token).await {
        Ok(instances) => return Ok(instances),
        Err(error) => error,
    };
    let Some(status) = error.status() else {
        return Err(ResolveError::Unavailable(match error {
            DirectorError::Unreachable { source, .. } => format!(
                "cannot reach the BOSH director at {}: {}",
                director.url(),
                error_chain(&source)
            ),
            DirectorError::Malformed { source, .. } => format!(
                "the BOSH director sent a bad instance list for deployment \"{deployment}\": {}",
                error_chain(&source)
            ),
            other => other.to_string(),
        }));
    };
    let description = error.described();
    Err(match status {
        StatusCode::UNAUTHORIZED => ResolveError::PermissionDenied(format!(
            "the BOSH director did not accept the token (HTTP 401){description}"
        )),
        StatusCode::FORBIDDEN => ResolveError::PermissionDenied(format!(
            "the BOSH director does not allow listing the instances of deployment \
                 \"{deployment}\" (HTTP 403){description}"
        )),
        StatusCode::NOT_FOUND => ResolveError::NotFound(format!(
            "deployment \"{deployment}\" not found at the BOSH director"
        )),
        _ => ResolveError::Unavailable(format!(
            "the BOSH director answered HTTP {status} for deployment \"{deployment}\"{description}"
        )),
    })
}

/// The director names its UAA in `/info`.
#[tonic::async_trait]
impl NamesUaa for Director {
    const UAA: Uaa = Uaa::Bosh;

    async fn discover(&self) -> Result<String, String> {
        let info = info(self).await?;
        let uaa_url = uaa_of(&info)?;
        tracing::info!(
            director = %self.url(),
            name = %info.name,
            version = %info.version,
            uaa = %uaa_url,
            "found the BOSH director's UAA"
        );
        Ok(uaa_url)
    }
}

/// The UAA URL from `/info`.
fn uaa_of(info: &Info) -> Result<String, String> {
    if info.user_authentication.kind != "uaa" {
        return Err(format!(
            "the BOSH director authenticates with \"{}\", not UAA; pcap needs a UAA",
            info.user_authentication.kind
        ));
    }
    info.user_authentication
        .options
        .url
        .clone()
        .filter(|url| url.starts_with("https://"))
        .ok_or_else(|| {
            "the BOSH director's /info names no https:// UAA URL \
             (user_authentication.options.url)"
                .to_owned()
        })
}

pub struct BoshResolver {
    director: Arc<DiscoveredUaa<Director>>,
    required_scope: String,
    agent_port: u16,
    interfaces: Vec<String>,
}

impl BoshResolver {
    /// The resolver of `[bosh]`; `default_port` is `agents.port`.
    pub fn new(config: &BoshConfig, default_port: u16) -> Result<Self, SetupError> {
        let director =
            DiscoveredUaa::trusting(&config.director_ca, config.token_clock_skew, |http| {
                Director::new(&config.director_url, http)
            })?;
        Ok(Self {
            director,
            required_scope: config.required_scope.clone(),
            interfaces: config.interfaces.clone(),
            agent_port: config.agent_port.unwrap_or(default_port),
        })
    }

    /// The authenticator of the director's UAA's tokens, sharing this
    /// resolver's discovery of it.
    pub fn authenticator(&self) -> UaaAuthenticator<Director> {
        UaaAuthenticator::new(Arc::clone(&self.director))
    }

    /// Reads the director's `/info` in the background, so that the log
    /// says at once whether the director and its UAA are reachable. A
    /// failure is retried by a later request, at most every
    /// `uaa::DISCOVERY_RETRY`.
    pub fn discover_in_background(&self) {
        self.director.discover_in_background("a BOSH capture");
    }

    /// The instances of `target`, if `user` has the director's scope and
    /// the director lets them see the deployment.
    pub async fn resolve(
        &self,
        user: &User,
        target: &BoshTarget,
    ) -> Result<Resolved, ResolveError> {
        if target.deployment.is_empty() {
            return Err(ResolveError::BadRequest(
                "the BOSH target names no deployment".to_owned(),
            ));
        }
        if target.groups.iter().all(String::is_empty) {
            return Err(ResolveError::BadRequest(
                "the BOSH target names no instance group".to_owned(),
            ));
        }
        let token = self
            .director
            .acting_token(user, "capturing BOSH VMs")
            .await?;
        if !user.scopes.contains(&self.required_scope) {
            return Err(ResolveError::PermissionDenied(format!(
                "the token of {} lacks the scope {}, which capturing BOSH VMs requires",
                user.name, self.required_scope
            )));
        }
        let instances = instances(&self.director.server, &target.deployment, token).await?;
        Ok(Resolved {
            agents: select(&instances, target, self.agent_port)?,
            default_interfaces: self.interfaces.clone(),
            // The director lets this user see the VMs: any interface.
            allowed_interfaces: None,
        })
    }

    pub async fn status(&self) -> ResolverStatus {
        let (healthy, message) = match info(&self.director.server).await {
            Ok(info) => match uaa_of(&info) {
                Ok(uaa) => (
                    true,
                    format!(
                        "director \"{}\" ({}) at {}, UAA {uaa}",
                        info.name,
                        info.version,
                        self.director.server.url()
                    ),
                ),
                Err(message) => (false, message),
            },
            Err(message) => (false, message),
        };
        ResolverStatus {
            name: "bosh".to_owned(),
            healthy,
            message,
        }
    }
}

/// The instances of `target` among the deployment's, as agents: in the
/// order of the requested groups, then by index.
pub fn select(
    instances: &[Instance],
    target: &BoshTarget,
    agent_port: u16,
) -> Result<Vec<AgentEndpoint>, ResolveError> {
    let deployment = &target.deployment;
    let mut groups: Vec<&str> = Vec::new();
    for group in target.groups.iter().filter(|g| !g.is_empty()) {
        if !groups.contains(&group.as_str()) {
            groups.push(group);
        }
    }
    let mut existing: Vec<&str> = instances.iter().map(|i| i.job.as_str()).collect();
    existing.sort_unstable();
    existing.dedup();
    for group in &groups {
        if !existing.contains(group) {
            let has = if existing.is_empty() {
                "it has no instances".to_owned()
            } else {
                format!("it has: {}", existing.join(", "))
            };
            return Err(ResolveError::NotFound(format!(
                "instance group \"{group}\" not found in deployment \"{deployment}\"; {has}"
            )));
        }
    }
    let mut chosen: Vec<&Instance> = instances
        .iter()
        .filter(|i| groups.contains(&i.job.as_str()))
        .filter(|i| target.instances.is_empty() || target.instances.contains(&i.id))
        .collect();
    for id in &target.instances {
        if !chosen.iter().any(|i| i.id == *id) {
            return Err(ResolveError::NotFound(format!(
                "instance \"{id}\" not found in instance group{} {} of deployment \"{deployment}\"",
                if groups.len() == 1 { "" } else { "s" },
                groups.join(", ")
            )));
        }
    }
    let position = |i: &Instance| groups.iter().position(|g| *g == i.job);
    chosen.sort_by(|a, b| (position(a), a.index, &a.id).cmp(&(position(b), b.index, &b.id)));
    Ok(chosen
        .into_iter()
        .map(|instance| {
            let origin = format!("{}/{}", instance.job, instance.id);
            match instance.ips.first() {
                Some(ip) => AgentEndpoint {
                    address: validate::agent_authority(ip, agent_port)
                        .unwrap_or_else(|_| format!("{ip}:{agent_port}")),
                    unavailable: None,
                    container: None,
                    origin,
                },
                None => AgentEndpoint {
                    unavailable: Some(format!(
                        "{origin} has no IP address at the BOSH director \
                         (its VM may be missing or stopped)"
                    )),
                    address: String::new(),
                    container: None,
                    origin,
                },
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthError, Authenticator};

    fn instance(job: &str, id: &str, index: u64, ips: &[&str]) -> Instance {
        Instance {
            job: job.into(),
            id: id.into(),
            index: Some(index),
            az: Some("z1".into()),
            ips: ips.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn instances() -> Vec<Instance> {
        vec![
            instance("router", "r-1", 1, &["10.0.1.6"]),
            instance("router", "r-0", 0, &["10.0.1.5"]),
            instance("diego-cell", "c-0", 0, &["10.0.2.5", "10.0.3.5"]),
            instance("diego-cell", "c-1", 1, &[]),
        ]
    }

    fn target(groups: &[&str], ids: &[&str]) -> BoshTarget {
        BoshTarget {
            deployment: "cf".into(),
            groups: groups.iter().map(|s| (*s).to_owned()).collect(),
            instances: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn groups_resolve_in_request_order_then_by_index() {
        let agents = select(&instances(), &target(&["router", "diego-cell"], &[]), 9494).unwrap();
        let origins: Vec<_> = agents.iter().map(|a| a.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                "router/r-0",
                "router/r-1",
                "diego-cell/c-0",
                "diego-cell/c-1"
            ]
        );
        assert_eq!(agents[0].address, "10.0.1.5:9494");
        assert_eq!(agents[2].address, "10.0.2.5:9494");
        assert!(
            agents[3]
                .unavailable
                .as_ref()
                .unwrap()
                .contains("no IP address")
        );
    }

    #[test]
    fn instance_ids_are_honoured() {
        let agents = select(&instances(), &target(&["router"], &["r-1"]), 1).unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].origin, "router/r-1");
        let error = select(&instances(), &target(&["router"], &["c-0"]), 1).unwrap_err();
        assert_eq!(
            error,
            ResolveError::NotFound(
                "instance \"c-0\" not found in instance group router of deployment \"cf\"".into()
            )
        );
    }

    #[test]
    fn an_unknown_group_lists_the_existing_ones() {
        let error = select(&instances(), &target(&["routr"], &[]), 1).unwrap_err();
        assert_eq!(
            error,
            ResolveError::NotFound(
                "instance group \"routr\" not found in deployment \"cf\"; it has: diego-cell, router"
                    .into()
            )
        );
    }

    #[test]
    fn info_names_the_uaa() {
        let info: Info = serde_json::from_str(
            r#"{"name":"bosh","uuid":"u","version":"280.0.0","user":null,"cpi":"warden_cpi",
                "user_authentication":{"type":"uaa","options":{"url":"https://10.0.0.6:8443","urls":["https://10.0.0.6:8443"]}},
                "features":{}}"#,
        )
        .unwrap();
        assert_eq!(uaa_of(&info).unwrap(), "https://10.0.0.6:8443");
        let basic: Info = serde_json::from_str(
            r#"{"name":"bosh","version":"1","user_authentication":{"type":"basic","options":{}}}"#,
        )
        .unwrap();
        assert!(uaa_of(&basic).unwrap_err().contains("not UAA"));
    }

    /// A `[bosh]` whose director listens nowhere.
    fn unreachable_director() -> (BoshResolver, UaaAuthenticator<Director>, PathBuf) {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", closed.local_addr().unwrap());
        drop(closed);
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::new(vec!["ca".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = std::env::temp_dir().join(format!("pcap-bosh-ca-{}.crt", std::process::id()));
        std::fs::write(&path, ca.pem()).unwrap();
        let config = BoshConfig {
            director_url: url,
            director_ca: path.clone(),
            required_scope: default_required_scope(),
            agent_port: None,
            interfaces: Vec::new(),
            token_clock_skew: default_clock_skew(),
        };
        let resolver = BoshResolver::new(&config, 9494).unwrap();
        let authenticator = resolver.authenticator();
        (resolver, authenticator, path)
    }

    #[tokio::test]
    async fn a_director_that_is_down_is_unavailable_not_a_crash() {
        let (resolver, authenticator, ca) = unreachable_director();
        let status = resolver.status().await;
        assert!(!status.healthy);
        assert!(
            status.message.contains("cannot reach the BOSH director"),
            "{}",
            status.message
        );
        // A JWT-shaped token needs the director's UAA: unavailable.
        let token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln";
        let error = authenticator.authenticate(token).await.unwrap_err();
        assert!(
            matches!(&error, AuthError::Unavailable(m) if m.contains("cannot reach the BOSH director")),
            "{error:?}"
        );
        // Static tokens are not the director's business.
        assert_eq!(
            authenticator.authenticate("alice-token").await,
            Err(AuthError::InvalidToken)
        );
        let user = User::named("alice");
        let error = resolver
            .resolve(&user, &target(&["router"], &[]))
            .await
            .unwrap_err();
        assert!(matches!(error, ResolveError::Unavailable(_)), "{error:?}");
        std::fs::remove_file(ca).unwrap();
    }

    #[test]
    fn the_config_is_checked() {
        let config: BoshConfig = toml::from_str(
            "director_url = \"http://10.0.0.6:25555\"\ndirector_ca = \"/nonexistent\"",
        )
        .unwrap();
        assert_eq!(config.required_scope, "bosh.admin");
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("bosh.director_url: "), "{error}");
        let config = BoshConfig {
            director_url: "https://10.0.0.6:25555".into(),
            ..config
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("bosh.director_ca: "), "{error}");
    }
}
