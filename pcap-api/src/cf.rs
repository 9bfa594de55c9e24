//! The Cloud Foundry resolver: the instances of an app, authorized by
//! Cloud Controller (v3) with the caller's own token.
//!
//! - Cloud Controller's root (`GET /`) names its UAA (`links.uaa.href`);
//!   the caller's token must be a valid access token of that UAA
//!   (`uaa::UaaAuthenticator`) with `cloud_controller.read` or
//!   `cloud_controller.admin`.
//! - Authorization, always with the caller's token, so that Cloud
//!   Controller decides what they see: the app must be visible
//!   (`GET /v3/apps/:guid`, 404 → NOT_FOUND), and the caller must hold one
//!   of `allowed_roles` in the app's space (`GET /v3/roles`), unless their
//!   token carries `cloud_controller.admin`. With `respect_ssh_setting`,
//!   `GET /v3/apps/:guid/ssh_enabled` must say enabled.
//! - Discovery: `GET /v3/apps/:guid/processes/:type/stats` gives each
//!   instance's index, state, cell (`host`), overlay IP and instance GUID.
//!   Each chosen instance becomes an agent at `host:agent_port`, named
//!   `APP/INDEX`, pinned to its container (`AgentStart.container`). A
//!   crashed, down or missing instance is reported to the client as
//!   unavailable, never an error.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use pcap_platform::cloud_controller::{self, CloudController, Error as CcError};
pub use pcap_platform::cloud_controller::{App, InstanceStats};
use pcap_proto::v1::{CfAppTarget, ContainerScope, ResolverStatus};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::{
    auth::{Uaa, User},
    resolve::{AgentEndpoint, Instance, ResolveError, Resolved},
    uaa::{DiscoveredUaa, NamesUaa, SetupError, UaaAuthenticator, error_chain},
    validate::{self, ConfigError},
};

/// Scopes that make a token's bearer a Cloud Foundry admin.
pub const ADMIN_SCOPE: &str = "cloud_controller.admin";
/// The scope Cloud Controller needs for reading.
pub const READ_SCOPE: &str = "cloud_controller.read";
/// Space roles an operator may allow.
pub const SPACE_ROLES: [&str; 4] = [
    "space_developer",
    "space_manager",
    "space_auditor",
    "space_supporter",
];

/// The `[cf]` table of the API's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CfConfig {
    /// Cloud Controller, e.g. `https://api.sys.example.com`.
    pub api_url: String,
    /// Verifies Cloud Controller's certificate and its UAA's.
    pub ca: PathBuf,
    /// The port agents listen on at each Diego cell; default `agents.port`.
    pub agent_port: Option<u16>,
    /// Space roles that may capture an app of their space; admins
    /// (`cloud_controller.admin`) always may. `[]`: admins only.
    #[serde(default = "default_allowed_roles")]
    pub allowed_roles: Vec<String>,
    /// Refuse apps whose SSH access Cloud Controller reports disabled.
    #[serde(default)]
    pub respect_ssh_setting: bool,
    /// Seconds of clock difference allowed on a token's `exp` and `nbf`.
    #[serde(default = "default_clock_skew")]
    pub token_clock_skew: f64,
    /// Seconds between two looks at a captured app's instances (process
    /// stats, with the caller's token): changes are told to the user, and
    /// `follow` captures new instances. At least [`MIN_FOLLOW_INTERVAL`].
    #[serde(default = "default_follow_interval")]
    pub follow_interval: f64,
}

/// The floor of `follow_interval`: Cloud Controller is asked at most this
/// often per capture.
pub const MIN_FOLLOW_INTERVAL: f64 = 2.0;

fn default_follow_interval() -> f64 {
    5.0
}

fn default_allowed_roles() -> Vec<String> {
    vec!["space_developer".to_owned()]
}

fn default_clock_skew() -> f64 {
    60.0
}

impl CfConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::check_https_url("cf.api_url", &self.api_url, "https://api.sys.example.com")?;
        validate::check_certificate("cf.ca", &self.ca)?;
        if self.agent_port == Some(0) {
            return Err(validate::invalid("cf.agent_port", "must not be 0"));
        }
        for role in &self.allowed_roles {
            if !SPACE_ROLES.contains(&role.as_str()) {
                return Err(validate::invalid(
                    "cf.allowed_roles",
                    format!(
                        "\"{role}\" is not a space role; use some of {} (admins are always allowed)",
                        SPACE_ROLES.join(", ")
                    ),
                ));
            }
        }
        if !(self.follow_interval >= MIN_FOLLOW_INTERVAL && self.follow_interval <= 3600.0) {
            return Err(validate::invalid(
                "cf.follow_interval",
                format!(
                    "must be {MIN_FOLLOW_INTERVAL} to 3600 seconds, not {}",
                    self.follow_interval
                ),
            ));
        }
        validate::check_seconds("cf.token_clock_skew", self.token_clock_skew, true)
    }
}

/// The UAA Cloud Controller's root names, its failures in the resolver's
/// words.
async fn uaa_url(cc: &CloudController) -> Result<String, String> {
    let root = cc.root().await.map_err(|error| match error {
        CcError::Status { status, .. } => {
            format!("Cloud Controller at {}/ answered HTTP {status}", cc.url())
        }
        CcError::Malformed { source, .. } => format!(
            "Cloud Controller at {}/ sent a bad root document: {}",
            cc.url(),
            error_chain(&source)
        ),
        other => error_chain(&other),
    })?;
    root.uaa_url()
        .filter(|href| href.starts_with("https://"))
        .ok_or_else(|| {
            format!(
                "Cloud Controller at {} names no https:// UAA (links.uaa.href)",
                cc.url()
            )
        })
}

/// Cloud Controller names its UAA in its root.
#[tonic::async_trait]
impl NamesUaa for CloudController {
    const UAA: Uaa = Uaa::Cf;

    async fn discover(&self) -> Result<String, String> {
        let uaa_url = uaa_url(self).await?;
        tracing::info!(cloud_controller = %self.url(), uaa = %uaa_url, "found Cloud Controller's UAA");
        Ok(uaa_url)
    }
}

/// App names for c2c insight, from Cloud Controller with the caller's own
/// token.
pub struct AppNames {
    cc: Arc<DiscoveredUaa<CloudController>>,
}

impl AppNames {
    /// GUID → name of the apps Cloud Controller shows `user` (`GET
    /// /v3/apps`, one page of up to 5000), when `user` is a principal of
    /// Cloud Controller's UAA. None for anyone else, or when Cloud
    /// Controller fails (logged): apps then stay GUIDs.
    pub async fn for_user(&self, user: &User) -> HashMap<String, String> {
        let Ok(validator) = self.cc.validator().await else {
            return HashMap::new();
        };
        let Some(token) = validator.own_token(user) else {
            return HashMap::new();
        };
        let query = [("per_page", "5000")];
        let apps: Result<cloud_controller::Page<App>, CcError> = self
            .cc
            .server
            .get(&["v3", "apps"], &query, Some(token))
            .await;
        match apps {
            Ok(page) => page
                .resources
                .into_iter()
                .map(|app| (app.guid, app.name))
                .collect(),
            Err(error) => {
                tracing::warn!(
                    error = %error_chain(&error),
                    "c2c insight: cannot list apps, so they stay GUIDs"
                );
                HashMap::new()
            }
        }
    }
}

pub struct CfResolver {
    cc: Arc<DiscoveredUaa<CloudController>>,
    agent_port: u16,
    allowed_roles: Vec<String>,
    respect_ssh_setting: bool,
    follow_every: Duration,
}

impl CfResolver {
    /// The resolver of `[cf]`; `default_port` is `agents.port`.
    pub fn new(config: &CfConfig, default_port: u16) -> Result<Self, SetupError> {
        let cc = DiscoveredUaa::trusting(&config.ca, config.token_clock_skew, |http| {
            CloudController::new(&config.api_url, http)
        })?;
        Ok(Self {
            cc,
            agent_port: config.agent_port.unwrap_or(default_port),
            allowed_roles: config.allowed_roles.clone(),
            respect_ssh_setting: config.respect_ssh_setting,
            follow_every: Duration::from_secs_f64(config.follow_interval),
        })
    }

    /// The authenticator of Cloud Controller's UAA's tokens, sharing this
    /// resolver's discovery of it.
    pub fn authenticator(&self) -> UaaAuthenticator<CloudController> {
        UaaAuthenticator::new(Arc::clone(&self.cc))
    }

    /// App names through the same Cloud Controller.
    pub fn app_names(&self) -> AppNames {
        AppNames {
            cc: Arc::clone(&self.cc),
        }
    }

    /// Reads Cloud Controller's root in the background, so that the log
    /// says at once whether it and its UAA are reachable. A failure is
    /// retried by a later request, at most every `uaa::DISCOVERY_RETRY`.
    pub fn discover_in_background(&self) {
        self.cc.discover_in_background("an app capture");
    }

    /// Cloud Controller's refusals, in terms of the app.
    fn refused(error: CcError, guid: &str, what: &str) -> ResolveError {
        let CcError::Status { status, body, .. } = error else {
            return ResolveError::Unavailable(error_chain(&error));
        };
        let detail = body.unwrap_or_default().summary();
        match status {
            StatusCode::UNAUTHORIZED => ResolveError::Unauthenticated(format!(
                "Cloud Controller did not accept the token (HTTP 401){detail}; log in again"
            )),
            StatusCode::NOT_FOUND => {
                ResolveError::NotFound(format!("app {guid} not found or not visible to you"))
            }
            StatusCode::FORBIDDEN => ResolveError::PermissionDenied(format!(
                "Cloud Controller does not let you {what} (HTTP 403){detail}"
            )),
            status => ResolveError::Unavailable(format!(
                "Cloud Controller answered HTTP {status} when asked to {what}{detail}"
            )),
        }
    }

    /// Whether the caller holds an allowed role in `space`; the refusal
    /// names what they would need and what they have.
    async fn authorize(&self, app: &App, user_id: &str, token: &str) -> Result<(), ResolveError> {
        let space = app.space_guid().ok_or_else(|| {
            ResolveError::Unavailable(format!(
                "Cloud Controller sent app {} without its space (relationships.space)",
                app.guid
            ))
        })?;
        let needs = if self.allowed_roles.is_empty() {
            "only Cloud Foundry admins may capture apps on this pcap API".to_owned()
        } else {
            format!(
                "capturing app \"{}\" needs the role {} in its space (or a Cloud Foundry admin)",
                app.name,
                self.allowed_roles.join(" or ")
            )
        };
        if self.allowed_roles.is_empty() {
            return Err(ResolveError::PermissionDenied(needs));
        }
        let types = self.allowed_roles.join(",");
        let roles = self
            .cc
            .server
            .roles(
                &[
                    ("types", &types),
                    ("space_guids", space),
                    ("user_guids", user_id),
                ],
                token,
            )
            .await
            .map_err(|f| Self::refused(f, &app.guid, "list your roles"))?;
        if roles
            .resources
            .iter()
            .any(|r| self.allowed_roles.contains(&r.kind))
        {
            return Ok(());
        }
        let held = self
            .cc
            .server
            .roles(&[("space_guids", space), ("user_guids", user_id)], token)
            .await
            .map_or_else(|_| Vec::new(), |page| page.resources);
        let mut kinds: Vec<String> = held.into_iter().map(|r| r.kind).collect();
        kinds.sort();
        kinds.dedup();
        let has = if kinds.is_empty() {
            "you have no role in that space".to_owned()
        } else {
            format!("you are {}", kinds.join(", "))
        };
        Err(ResolveError::PermissionDenied(format!("{needs}; {has}")))
    }

    /// The running instances of `target`, if `user` may capture the app.
    pub async fn resolve(
        &self,
        user: &User,
        target: &CfAppTarget,
    ) -> Result<Resolved, ResolveError> {
        let (app, process, stats) = self.authorized_stats(user, target).await?;
        Ok(Resolved {
            agents: select(&app, &process, &stats, target, self.agent_port)?,
            // Pinned to the container's veth by the agent.
            default_interfaces: Vec::new(),
            // No interface may be named (checked in `service`).
            allowed_interfaces: None,
        })
    }

    pub async fn status(&self) -> ResolverStatus {
        let (healthy, message) = match uaa_url(&self.cc.server).await {
            Ok(uaa) => (
                true,
                format!("Cloud Controller at {}, UAA {uaa}", self.cc.server.url()),
            ),
            Err(message) => (false, message),
        };
        ResolverStatus {
            name: "cf".to_owned(),
            healthy,
            message,
        }
    }

    /// How often a capture of an app asks for its instances again
    /// (`[cf] follow_interval`).
    pub fn follow_every(&self) -> Duration {
        self.follow_every
    }

    /// The app's instances now, each with its state, for `follow`:
    /// resolved and authorized for `user` exactly as [`CfResolver::resolve`]
    /// does.
    pub async fn instances(
        &self,
        user: &User,
        target: &CfAppTarget,
    ) -> Result<Vec<Instance>, ResolveError> {
        let (app, process, stats) = self.authorized_stats(user, target).await?;
        let prefix = origin_prefix(&app, &process);
        Ok(stats
            .iter()
            .filter(|s| target.instances.is_empty() || target.instances.contains(&s.index))
            .map(|s| Instance {
                index: s.index,
                state: s.state.clone(),
                guid: s.instance_guid.clone().filter(|g| !g.is_empty()),
                details: s.details.clone().filter(|d| !d.is_empty()),
                endpoint: endpoint(
                    &app,
                    &format!("{prefix}/{}", s.index),
                    Some(s),
                    self.agent_port,
                ),
            })
            .collect())
    }

    /// The app, its process type and that process's instance stats, once
    /// the caller is authorized for the app: what [`CfResolver::resolve`]
    /// and [`CfResolver::instances`] both check and read.
    async fn authorized_stats(
        &self,
        user: &User,
        target: &CfAppTarget,
    ) -> Result<(App, String, Vec<InstanceStats>), ResolveError> {
        let guid = target.app_guid.as_str();
        if guid.is_empty() || guid.contains('/') {
            return Err(ResolveError::BadRequest(
                "the app target names no app GUID".to_owned(),
            ));
        }
        let token = self.cc.acting_token(user, "capturing apps").await?;
        let has_scope = |scope: &str| user.scopes.iter().any(|s| s == scope);
        let admin = has_scope(ADMIN_SCOPE);
        if !admin && !has_scope(READ_SCOPE) {
            return Err(ResolveError::PermissionDenied(format!(
                "the token of {} lacks the scope {READ_SCOPE}, which capturing apps requires",
                user.name
            )));
        }
        let cc = &self.cc.server;
        let app = cc
            .app(guid, token)
            .await
            .map_err(|f| Self::refused(f, guid, "read the app"))?;
        if !admin {
            // The token's user GUID (`user_id`); a client has no roles.
            self.authorize(&app, &user.id, token).await?;
        }
        if self.respect_ssh_setting {
            let ssh = cc
                .ssh_enabled(guid, token)
                .await
                .map_err(|f| Self::refused(f, guid, "read the app's SSH setting"))?;
            if !ssh.enabled {
                let reason = if ssh.reason.is_empty() {
                    "SSH is disabled".to_owned()
                } else {
                    ssh.reason
                };
                return Err(ResolveError::PermissionDenied(format!(
                    "app \"{}\" may not be captured: {reason}, and this pcap API follows the SSH setting \
                     (`cf enable-ssh {}` or `cf allow-space-ssh` changes it)",
                    app.name, app.name
                )));
            }
        }
        let process = if target.process_type.is_empty() {
            "web"
        } else {
            target.process_type.as_str()
        };
        let stats = self
            .cc
            .server
            .process_stats(guid, process, token)
            .await
            .map_err(|f| match f {
                CcError::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                } => ResolveError::NotFound(format!(
                    "app \"{}\" has no process of type \"{process}\"",
                    app.name
                )),
                f => Self::refused(f, guid, "read the app's instances"),
            })?;
        Ok((app, process.to_owned(), stats.resources))
    }
}

/// The chosen instances of `process` as agents, by index. Requested
/// indices beyond the process's instances are an error naming the valid
/// range; instances not running are reported unavailable.
pub fn select(
    app: &App,
    process: &str,
    stats: &[InstanceStats],
    target: &CfAppTarget,
    agent_port: u16,
) -> Result<Vec<AgentEndpoint>, ResolveError> {
    let count = stats.iter().map(|s| s.index + 1).max().unwrap_or(0);
    let mut indices: Vec<u32> = if target.instances.is_empty() {
        (0..count).collect()
    } else {
        target.instances.clone()
    };
    indices.sort_unstable();
    indices.dedup();
    if let Some(bad) = indices.iter().find(|i| **i >= count) {
        let range = match count {
            0 => "it has no instances".to_owned(),
            1 => "it has 1 instance (index 0)".to_owned(),
            n => format!("it has {n} instances (indices 0-{})", n - 1),
        };
        return Err(ResolveError::NotFound(format!(
            "instance index {bad} out of range for app \"{}\" (process {process}): {range}",
            app.name
        )));
    }
    let prefix = origin_prefix(app, process);
    Ok(indices
        .into_iter()
        .map(|index| {
            let instance = stats.iter().find(|s| s.index == index);
            endpoint(app, &format!("{prefix}/{index}"), instance, agent_port)
        })
        .collect())
}

/// `APP` for the web process, `APP:TYPE` for others: origins are
/// `PREFIX/INDEX`.
fn origin_prefix(app: &App, process: &str) -> String {
    if process == "web" {
        app.name.clone()
    } else {
        format!("{}:{process}", app.name)
    }
}

/// The agent that captures `instance` as `origin`, pinned to its container
/// when it runs; unavailable (saying why) when it does not, or when it is
/// missing from the stats.
fn endpoint(
    app: &App,
    origin: &str,
    instance: Option<&InstanceStats>,
    agent_port: u16,
) -> AgentEndpoint {
    let unavailable = |reason: String| AgentEndpoint {
        origin: origin.to_owned(),
        address: String::new(),
        unavailable: Some(reason),
        container: None,
    };
    let Some(instance) = instance else {
        return unavailable(format!("{origin} is missing from Cloud Controller's stats"));
    };
    match (&instance.host, &instance.instance_guid) {
        (Some(host), Some(instance_guid)) if instance.state == "RUNNING" && !host.is_empty() => {
            AgentEndpoint {
                address: validate::agent_authority(host, agent_port)
                    .unwrap_or_else(|_| format!("{host}:{agent_port}")),
                unavailable: None,
                container: Some(ContainerScope {
                    instance_guid: instance_guid.clone(),
                    app_guid: app.guid.clone(),
                    overlay_ip: instance.instance_internal_ip.clone().unwrap_or_default(),
                }),
                origin: origin.to_owned(),
            }
        }
        _ => {
            let details = instance
                .details
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            unavailable(format!(
                "{origin} is {}{details}; not capturing it",
                instance.state
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        serde_json::from_str(
            r#"{"guid":"a-1","name":"my-app","state":"STARTED","lifecycle":{},
                "relationships":{"space":{"data":{"guid":"s-1"}}},"metadata":{},"links":{}}"#,
        )
        .unwrap()
    }

    fn stats() -> Vec<InstanceStats> {
        let page: cloud_controller::Page<InstanceStats> = serde_json::from_str(
            r#"{"resources":[
              {"type":"web","index":0,"instance_guid":"g0","state":"RUNNING","routable":true,
               "host":"10.244.16.10","instance_internal_ip":"10.255.93.167","uptime":9,
               "instance_ports":[],"usage":{}},
              {"type":"web","index":1,"instance_guid":"g1","state":"CRASHED","host":"10.244.16.11",
               "instance_internal_ip":"10.255.93.168","details":"exited with status 1"},
              {"type":"web","index":2,"state":"DOWN","routable":false,"uptime":0,
               "isolation_segment":null,"details":null}
            ]}"#,
        )
        .unwrap();
        page.resources
    }

    fn target(instances: &[u32]) -> CfAppTarget {
        CfAppTarget {
            app_guid: "a-1".into(),
            process_type: String::new(),
            instances: instances.to_vec(),
            follow: false,
        }
    }

    #[test]
    fn running_instances_are_pinned_to_their_container() {
        let agents = select(&app(), "web", &stats(), &target(&[]), 9494).unwrap();
        let origins: Vec<_> = agents.iter().map(|a| a.origin.as_str()).collect();
        assert_eq!(origins, ["my-app/0", "my-app/1", "my-app/2"]);
        assert_eq!(agents[0].address, "10.244.16.10:9494");
        assert_eq!(
            agents[0].container,
            Some(ContainerScope {
                instance_guid: "g0".into(),
                app_guid: "a-1".into(),
                overlay_ip: "10.255.93.167".into(),
            })
        );
        let crashed = agents[1].unavailable.as_deref().unwrap();
        assert!(
            crashed.contains("CRASHED: exited with status 1"),
            "{crashed}"
        );
        assert!(agents[2].unavailable.as_deref().unwrap().contains("DOWN"));
        assert!(agents[2].container.is_none());
    }

    #[test]
    fn indices_are_checked_against_the_range() {
        let agents = select(&app(), "web", &stats(), &target(&[2, 0, 0]), 1).unwrap();
        let origins: Vec<_> = agents.iter().map(|a| a.origin.as_str()).collect();
        assert_eq!(origins, ["my-app/0", "my-app/2"]);
        let error = select(&app(), "web", &stats(), &target(&[3]), 1).unwrap_err();
        assert_eq!(
            error,
            ResolveError::NotFound(
                "instance index 3 out of range for app \"my-app\" (process web): \
                 it has 3 instances (indices 0-2)"
                    .into()
            )
        );
        let worker = select(&app(), "worker", &stats()[..1], &target(&[]), 1).unwrap();
        assert_eq!(worker[0].origin, "my-app:worker/0");
    }

    #[test]
    fn the_config_is_checked() {
        let config: CfConfig =
            toml::from_str("api_url = \"https://api.sys\"\nca = \"/nonexistent\"").unwrap();
        assert_eq!(config.allowed_roles, ["space_developer"]);
        assert!(!config.respect_ssh_setting);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("cf.ca: "), "{error}");
        let config = CfConfig {
            allowed_roles: vec!["org_manager".into()],
            ..config
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.starts_with("cf.api_url: ") || error.starts_with("cf."),
            "{error}"
        );
        let config = CfConfig {
            api_url: "http://api.sys".into(),
            ..config
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("cf.api_url: "), "{error}");
    }
}
