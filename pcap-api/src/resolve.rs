//! What a capture target means: the agents to start and the interfaces to
//! capture when the request names none, for a user who may capture it. The
//! static resolver (from `[[targets]]`), the BOSH resolver (`bosh`) and the
//! Cloud Controller resolver (`cf`) return the same [`Resolved`], and
//! `resolvers` picks one by the target's kind.
//!
//! A static target admits only the users its `allow` grant names (static
//! users by name, UAA users by a scope of a named UAA); to anyone else it
//! does not exist (`NOT_FOUND`, the same answer as for an unknown name),
//! and the audit log says why. A static target that lists interfaces may be
//! captured on those only.

use std::collections::HashMap;

use pcap_proto::v1::{ContainerScope, ResolverStatus, StaticTarget, Target, target};
use serde::Deserialize;
use thiserror::Error;

use crate::{
    auth::{Grant, User},
    validate,
};

/// A `[[targets]]` entry of the config, the static resolver's section: a target name, who may capture it, and its
/// agents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub name: String,
    /// The default when a request names none, and then the only interfaces
    /// a request may name; empty: any, and the request (or the agents'
    /// `default_interfaces`) decides.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Who may capture this target. Required (`validate` refuses a target
    /// without one, or with an empty one): nobody else may.
    pub allow: Option<Grant>,
    pub agents: Vec<TargetAgent>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetAgent {
    pub origin: String,
    /// `host:port`, or a bare host that takes `agents.port`.
    pub address: String,
}

/// One agent of a resolved target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The instance's name, for example "vm-0" or "my-app/2".
    pub origin: String,
    /// `host:port`.
    pub address: String,
    /// Set when the instance cannot be captured (for example a BOSH
    /// instance without an IP address): why. The client gets it as an
    /// `instance_unavailable` event for this origin.
    pub unavailable: Option<String>,
    /// For a Cloud Foundry app instance: the container the agent must pin
    /// the capture to (`AgentStart.container`).
    pub container: Option<ContainerScope>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// In the order origins are numbered.
    pub agents: Vec<AgentEndpoint>,
    pub default_interfaces: Vec<String>,
    /// The interfaces a request may name; `None`: any.
    pub allowed_interfaces: Option<Vec<String>>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("the request names no target")]
    NoTarget,
    #[error("unknown target \"{0}\"")]
    UnknownTarget(String),
    /// A static target the user may not capture. The client is told what
    /// an unknown name gets; `reason` is for the audit log.
    #[error("unknown target \"{target}\"")]
    NotGranted { target: String, reason: String },
    /// No resolver of this API handles this kind of target.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    /// The resolver's authority (Cloud Controller) did not accept the
    /// caller's token.
    #[error("{0}")]
    Unauthenticated(String),
    /// What the resolver asks (a BOSH director) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// One instance of a followed target (an app instance), as its platform
/// reports it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The instance index (`my-app/2` is index 2).
    pub index: u32,
    /// The platform's state: `RUNNING`, `CRASHED`, `DOWN`, `STOPPING`...
    pub state: String,
    /// Its GUID (Diego's instance GUID), whatever its state, when known.
    pub guid: Option<String>,
    /// Why it is not running, in the platform's words, when it says.
    pub details: Option<String>,
    /// The agent that captures it, named `APP/INDEX`; `unavailable` when it
    /// does not run, `container` (with its instance GUID) when it does.
    pub endpoint: AgentEndpoint,
}

/// A readable name for a target, for logs.
pub fn describe(target: Option<&Target>) -> String {
    match target.and_then(|t| t.kind.as_ref()) {
        Some(target::Kind::Static(s)) => format!("static:{}", s.name),
        Some(target::Kind::Bosh(b)) => {
            let mut text = format!("bosh:{}/{}", b.deployment, b.groups.join(","));
            if !b.instances.is_empty() {
                text = format!("{text}/{}", b.instances.join(","));
            }
            text
        }
        Some(target::Kind::CfApp(app)) => {
            // Cloud Foundry's default process type, as the resolver uses it.
            let process = if app.process_type.is_empty() {
                "web"
            } else {
                &app.process_type
            };
            let mut text = format!("cf:{}/{process}", app.app_guid);
            if !app.instances.is_empty() {
                let indices: Vec<String> = app.instances.iter().map(u32::to_string).collect();
                text = format!("{text}/{}", indices.join(","));
            }
            text
        }
        None => "none".to_owned(),
    }
}

pub struct StaticResolver {
    targets: HashMap<String, (Grant, Resolved)>,
}

impl StaticResolver {
    /// Expects a validated configuration (addresses parse, every target has
    /// its grant).
    pub fn new(targets: &[TargetConfig], default_port: u16) -> Self {
        let targets = targets
            .iter()
            .map(|t| {
                let agents = t
                    .agents
                    .iter()
                    .map(|a| AgentEndpoint {
                        origin: a.origin.clone(),
                        address: validate::agent_authority(&a.address, default_port)
                            .unwrap_or_else(|_| a.address.clone()),
                        unavailable: None,
                        container: None,
                    })
                    .collect();
                let resolved = Resolved {
                    agents,
                    default_interfaces: t.interfaces.clone(),
                    allowed_interfaces: (!t.interfaces.is_empty()).then(|| t.interfaces.clone()),
                };
                (
                    t.name.clone(),
                    (t.allow.clone().unwrap_or_default(), resolved),
                )
            })
            .collect();
        Self { targets }
    }

    /// The agents of `target`, if its grant admits `user`.
    pub fn resolve(&self, user: &User, target: &StaticTarget) -> Result<Resolved, ResolveError> {
        let (grant, resolved) = self
            .targets
            .get(&target.name)
            .ok_or_else(|| ResolveError::UnknownTarget(target.name.clone()))?;
        if !grant.admits(user) {
            return Err(ResolveError::NotGranted {
                target: target.name.clone(),
                reason: format!(
                    "static target \"{}\" does not allow {}",
                    target.name,
                    user.describe()
                ),
            });
        }
        Ok(resolved.clone())
    }

    pub fn status(&self) -> ResolverStatus {
        ResolverStatus {
            name: "static".to_owned(),
            healthy: true,
            message: format!("{} targets configured", self.targets.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn static_target(name: &str) -> StaticTarget {
        StaticTarget { name: name.into() }
    }

    #[test]
    fn static_targets_resolve_in_config_order() {
        let resolver = StaticResolver::new(
            &[TargetConfig {
                name: "vms".into(),
                interfaces: vec!["eth0".into()],
                allow: Some(Grant {
                    users: vec!["alice".into()],
                    scopes: Vec::new(),
                }),
                agents: vec![
                    TargetAgent {
                        origin: "vm-0".into(),
                        address: "10.1.0.2:9000".into(),
                    },
                    TargetAgent {
                        origin: "vm-1".into(),
                        address: "10.1.1.2".into(),
                    },
                ],
            }],
            9494,
        );
        let alice = User::named("alice");
        let resolved = resolver.resolve(&alice, &static_target("vms")).unwrap();
        assert_eq!(resolved.default_interfaces, ["eth0"]);
        assert_eq!(resolved.allowed_interfaces, Some(vec!["eth0".to_owned()]));
        let addresses: Vec<_> = resolved.agents.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(addresses, ["10.1.0.2:9000", "10.1.1.2:9494"]);
        assert_eq!(
            resolver.resolve(&alice, &static_target("cells")),
            Err(ResolveError::UnknownTarget("cells".into()))
        );
        assert!(resolver.status().healthy);

        // Anyone the grant does not name: told what an unknown name gets.
        let refused = resolver
            .resolve(&User::named("bob"), &static_target("vms"))
            .unwrap_err();
        assert_eq!(refused.to_string(), "unknown target \"vms\"");
        assert!(
            matches!(&refused, ResolveError::NotGranted { reason, .. } if reason.contains("bob (static)")),
            "{refused:?}"
        );
    }

    #[test]
    fn app_targets_are_described_with_their_process_type() {
        let app = |process: &str, instances: &[u32]| Target {
            kind: Some(target::Kind::CfApp(pcap_proto::v1::CfAppTarget {
                app_guid: "g".into(),
                process_type: process.into(),
                instances: instances.to_vec(),
                follow: false,
            })),
        };
        assert_eq!(describe(Some(&app("", &[]))), "cf:g/web");
        assert_eq!(describe(Some(&app("worker", &[0, 2]))), "cf:g/worker/0,2");
        assert_eq!(describe(None), "none");
    }
}
