//! What a capture target means: the agents to start and the interfaces to
//! capture when the request names none. Only the static resolver (from
//! `[[targets]]`) exists today; Cloud Controller and BOSH resolvers will
//! implement the same trait.

use std::collections::HashMap;

use pcap_proto::v1::{ResolverStatus, Target, target};
use thiserror::Error;

use crate::config;

/// One agent of a resolved target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The instance's name, for example "vm-0" or "my-app/2".
    pub origin: String,
    /// `host:port`.
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// In the order origins are numbered.
    pub agents: Vec<AgentEndpoint>,
    pub default_interfaces: Vec<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("the request names no target")]
    NoTarget,
    #[error("unknown target \"{0}\"")]
    UnknownTarget(String),
}

#[tonic::async_trait]
pub trait Resolver: Send + Sync {
    async fn resolve(&self, target: &Target) -> Result<Resolved, ResolveError>;
    fn status(&self) -> ResolverStatus;
}

/// A readable name for a target, for logs.
pub fn describe(target: Option<&Target>) -> String {
    match target.and_then(|t| t.kind.as_ref()) {
        Some(target::Kind::Static(s)) => format!("static:{}", s.name),
        None => "none".to_owned(),
    }
}

pub struct StaticResolver {
    targets: HashMap<String, Resolved>,
}

impl StaticResolver {
    /// Expects a validated configuration (addresses parse).
    pub fn new(targets: &[config::Target], default_port: u16) -> Self {
        let targets = targets
            .iter()
            .map(|t| {
                let agents = t
                    .agents
                    .iter()
                    .map(|a| AgentEndpoint {
                        origin: a.origin.clone(),
                        address: config::agent_authority(&a.address, default_port)
                            .unwrap_or_else(|_| a.address.clone()),
                    })
                    .collect();
                let resolved = Resolved {
                    agents,
                    default_interfaces: t.interfaces.clone(),
                };
                (t.name.clone(), resolved)
            })
            .collect();
        Self { targets }
    }
}

#[tonic::async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, target: &Target) -> Result<Resolved, ResolveError> {
        let Some(target::Kind::Static(target)) = &target.kind else {
            return Err(ResolveError::NoTarget);
        };
        self.targets
            .get(&target.name)
            .cloned()
            .ok_or_else(|| ResolveError::UnknownTarget(target.name.clone()))
    }

    fn status(&self) -> ResolverStatus {
        ResolverStatus {
            name: "static".to_owned(),
            healthy: true,
            message: format!("{} targets configured", self.targets.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use pcap_proto::v1::StaticTarget;

    use super::*;

    fn static_target(name: &str) -> Target {
        Target {
            kind: Some(target::Kind::Static(StaticTarget { name: name.into() })),
        }
    }

    #[tokio::test]
    async fn static_targets_resolve_in_config_order() {
        let resolver = StaticResolver::new(
            &[config::Target {
                name: "vms".into(),
                interfaces: vec!["eth0".into()],
                agents: vec![
                    config::TargetAgent {
                        origin: "vm-0".into(),
                        address: "10.1.0.2:9000".into(),
                    },
                    config::TargetAgent {
                        origin: "vm-1".into(),
                        address: "10.1.1.2".into(),
                    },
                ],
            }],
            9494,
        );
        let resolved = resolver.resolve(&static_target("vms")).await.unwrap();
        assert_eq!(resolved.default_interfaces, ["eth0"]);
        let addresses: Vec<_> = resolved.agents.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(addresses, ["10.1.0.2:9000", "10.1.1.2:9494"]);
        assert_eq!(
            resolver.resolve(&static_target("cells")).await,
            Err(ResolveError::UnknownTarget("cells".into()))
        );
        assert_eq!(
            resolver.resolve(&Target { kind: None }).await,
            Err(ResolveError::NoTarget)
        );
        assert!(resolver.status().healthy);
    }
}
