//! Cloud Foundry containers: from an `AgentStart.container` scope to the
//! container's host-side veth on this Diego cell.
//!
//! The container is looked up in silk's container metadata store
//! ([`crate::silk`]), and its host-side veth is named after its overlay IP
//! ([`host_interface_name`]).

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use pcap_proto::v1::ContainerScope;
use thiserror::Error;
use tonic::Status;

pub use crate::silk::host_interface_name;
use crate::silk::{StoreEntry, StoreError, read_store};

/// Why a container scope was refused. Each maps to the gRPC status the API
/// sees ([`ContainerError::status`]).
#[derive(Debug, Error)]
pub enum ContainerError {
    #[error(
        "this agent does not capture containers: its configuration has no \
         [cf] container_metadata_store"
    )]
    NotConfigured,
    #[error("the container scope has no instance_guid")]
    NoInstance,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("instance {0} is not on this cell")]
    UnknownInstance(String),
    #[error("instance {instance} does not belong to app {app}")]
    WrongApp { instance: String, app: String },
    #[error("instance {instance} has overlay IP {actual}, not {requested}")]
    WrongIp {
        instance: String,
        actual: String,
        requested: String,
    },
    #[error("instance {instance} has no valid overlay IP ({ip:?})")]
    BadIp { instance: String, ip: String },
    #[error("the host-side veth {interface} of instance {instance} does not exist on this cell")]
    NoInterface { instance: String, interface: String },
}

impl ContainerError {
    pub fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Self::NotConfigured | Self::Store(_) | Self::BadIp { .. } => {
                Status::failed_precondition(message)
            }
            Self::NoInstance => Status::invalid_argument(message),
            Self::UnknownInstance(_) | Self::NoInterface { .. } => Status::not_found(message),
            Self::WrongApp { .. } | Self::WrongIp { .. } => Status::permission_denied(message),
        }
    }
}

/// A container the capture is pinned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub instance_guid: String,
    pub app_guid: String,
    pub overlay_ip: Ipv4Addr,
    /// The host-side veth, `s-010255077003`.
    pub interface: String,
}

/// Finds `scope`'s container in `store` and checks that it belongs to the
/// requested app (and has the requested overlay IP, when one is given).
pub fn resolve(
    scope: &ContainerScope,
    store: &BTreeMap<String, StoreEntry>,
) -> Result<Container, ContainerError> {
    let instance = scope.instance_guid.trim();
    if instance.is_empty() {
        return Err(ContainerError::NoInstance);
    }
    let entry = store
        .get(instance)
        .ok_or_else(|| ContainerError::UnknownInstance(instance.to_owned()))?;
    let app_id = entry.metadata.as_ref().map_or("", |m| m.app_id.as_str());
    if app_id.is_empty() || app_id != scope.app_guid {
        return Err(ContainerError::WrongApp {
            instance: instance.to_owned(),
            app: scope.app_guid.clone(),
        });
    }
    let overlay_ip: Ipv4Addr = entry.ip.parse().map_err(|_| ContainerError::BadIp {
        instance: instance.to_owned(),
        ip: entry.ip.clone(),
    })?;
    if !scope.overlay_ip.is_empty() && scope.overlay_ip.parse() != Ok(overlay_ip) {
        return Err(ContainerError::WrongIp {
            instance: instance.to_owned(),
            actual: entry.ip.clone(),
            requested: scope.overlay_ip.clone(),
        });
    }
    Ok(Container {
        instance_guid: instance.to_owned(),
        app_guid: scope.app_guid.clone(),
        overlay_ip,
        interface: host_interface_name(overlay_ip),
    })
}

/// [`read_store`] then [`resolve`], with the configured store.
pub fn lookup(scope: &ContainerScope, store: Option<&Path>) -> Result<Container, ContainerError> {
    let store = store.ok_or(ContainerError::NotConfigured)?;
    resolve(scope, &read_store(store)?)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use tonic::Code;

    use super::*;

    const STORE: &str = r#"{"53069156-e8cf-4ca5-5a0a-838e": {"handle": "53069156-e8cf-4ca5-5a0a-838e", "ip": "10.255.82.67",
      "metadata": {"app_id": "1ee630fd-528a-4d80-97cd-dea170be759d",
                   "space_id": "49dae64f-8231-4294-9882-1490c120f839",
                   "org_id": "cfe7a279-ad29-48d4-b188-813e85d2b621",
                   "policy_group_id": "1ee630fd-528a-4d80-97cd-dea170be759d",
                   "ports": "8080", "container_workload": "app"}},
      "silk-only": {"handle": "silk-only", "ip": "10.255.82.68", "metadata": null}}"#;
    const INSTANCE: &str = "53069156-e8cf-4ca5-5a0a-838e";
    const APP: &str = "1ee630fd-528a-4d80-97cd-dea170be759d";

    fn scope(instance: &str, app: &str, ip: &str) -> ContainerScope {
        ContainerScope {
            instance_guid: instance.to_owned(),
            app_guid: app.to_owned(),
            overlay_ip: ip.to_owned(),
        }
    }

    fn store() -> BTreeMap<String, StoreEntry> {
        serde_json::from_str(STORE).unwrap()
    }

    #[test]
    fn names_the_host_veth_like_silk() {
        assert_eq!(
            host_interface_name(Ipv4Addr::new(10, 255, 77, 3)),
            "s-010255077003"
        );
        assert_eq!(
            host_interface_name(Ipv4Addr::new(10, 255, 255, 254)),
            "s-010255255254"
        );
        assert_eq!(
            host_interface_name(Ipv4Addr::new(1, 2, 3, 4)),
            "s-001002003004"
        );
        // Always fits IFNAMSIZ (15 bytes and a NUL).
        assert_eq!(host_interface_name(Ipv4Addr::BROADCAST).len(), 14);
    }

    #[test]
    fn resolves_an_instance_of_the_app() {
        let container = resolve(&scope(INSTANCE, APP, "10.255.82.67"), &store()).unwrap();
        assert_eq!(container.interface, "s-010255082067");
        assert_eq!(container.overlay_ip, Ipv4Addr::new(10, 255, 82, 67));
        // The overlay IP is optional.
        assert!(resolve(&scope(INSTANCE, APP, ""), &store()).is_ok());
    }

    #[test]
    fn refuses_what_is_not_the_apps() {
        let cases = [
            (
                scope(INSTANCE, "other-app", ""),
                Code::PermissionDenied,
                "does not belong to app other-app",
            ),
            (
                scope("silk-only", APP, ""),
                Code::PermissionDenied,
                "does not belong",
            ),
            (
                scope("nope", APP, ""),
                Code::NotFound,
                "instance nope is not on this cell",
            ),
            (
                scope(INSTANCE, APP, "10.255.82.66"),
                Code::PermissionDenied,
                "not 10.255.82.66",
            ),
            (
                scope("", APP, ""),
                Code::InvalidArgument,
                "no instance_guid",
            ),
        ];
        for (scope, code, message) in cases {
            let status = resolve(&scope, &store()).unwrap_err().status();
            assert_eq!(status.code(), code, "{scope:?}");
            assert!(status.message().contains(message), "{}", status.message());
        }
    }

    #[test]
    fn reads_the_store_under_its_lock() {
        let dir = std::env::temp_dir().join(format!("pcap-agent-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.json");
        assert!(read_store(&path).unwrap().is_empty());
        fs::write(&path, STORE).unwrap();
        fs::write(dir.join("store.json_lock"), "").unwrap();
        assert_eq!(read_store(&path).unwrap(), store());
        fs::write(&path, "{").unwrap();
        let error = ContainerError::from(read_store(&path).unwrap_err());
        assert_eq!(error.status().code(), Code::FailedPrecondition);
        let status = lookup(&scope(INSTANCE, APP, ""), None)
            .unwrap_err()
            .status();
        assert!(status.message().contains("container_metadata_store"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
