//! Silk's container metadata store: what the agent's container scope and
//! c2c insight read, and what the simulated landscape writes.
//!
//! Silk's CNI wrapper keeps it at
//! `/var/vcap/data/container-metadata/store.json`: a JSON object keyed by
//! Garden handle (for app instances, Diego's instance GUID) whose entries
//! hold the container's overlay IP and its app, space and org GUIDs. Writers
//! take `flock(LOCK_EX)` on `store.json_lock` and rewrite the file in place,
//! so it is read here under a shared lock on the same file (`read_store`,
//! with the `silk` feature).
//!
//! Silk names the host side of a container's veth after its overlay IP:
//! `s-010255077003` for 10.255.77.3 ([`host_interface_name`]).

use std::{collections::BTreeMap, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The store: handle → entry.
pub type Store = BTreeMap<String, StoreEntry>;

/// One entry of the store.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct StoreEntry {
    #[serde(default)]
    pub handle: String,
    pub ip: String,
    /// `null` in silk's own datastore and for containers without metadata.
    pub metadata: Option<Metadata>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Metadata {
    #[serde(default)]
    pub app_id: String,
    #[serde(default)]
    pub space_id: String,
    #[serde(default)]
    pub org_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_group_id: String,
    /// The app's ports, comma-separated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ports: String,
    #[serde(default)]
    pub container_workload: String,
}

/// Silk's name for the host side of the veth of the container at `ip`
/// (`device_name_generator.go`: `s-%03d%03d%03d%03d`).
pub fn host_interface_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("s-{a:03}{b:03}{c:03}{d:03}")
}

/// Parses the store's text; a blank store is an empty one.
pub fn parse_store(text: &str) -> Result<Store, serde_json::Error> {
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(text)
}

#[cfg(feature = "silk")]
pub use reader::{StoreError, read_store};

#[cfg(feature = "silk")]
mod reader {
    use std::{
        fs,
        io::{self, ErrorKind},
        path::{Path, PathBuf},
    };

    use thiserror::Error;

    use super::{Store, parse_store};

    /// Why the store could not be read.
    #[derive(Debug, Error)]
    pub enum StoreError {
        #[error("cannot read the container metadata store {path}: {source}")]
        Read { path: String, source: io::Error },
        #[error("the container metadata store {path} is not valid: {message}")]
        Malformed { path: String, message: String },
    }

    /// Reads the store at `path` under a shared `flock` on `<path>_lock`. A
    /// missing store is an empty one (no container has started yet).
    pub fn read_store(path: &Path) -> Result<Store, StoreError> {
        let store_error = |source| StoreError::Read {
            path: path.display().to_string(),
            source,
        };
        let lock_path = sibling(path, "_lock");
        let _lock = match fs::File::open(&lock_path) {
            Ok(file) => Some(
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared)
                    .map_err(|(_, errno)| store_error(io::Error::from(errno)))?,
            ),
            // No writer has run yet.
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(store_error(e)),
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Store::new()),
            Err(e) => return Err(store_error(e)),
        };
        parse_store(&text).map_err(|e| StoreError::Malformed {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn sibling(path: &Path, suffix: &str) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_as_the_cni_wrapper_writes_them() {
        let text = r#"{"g-1":{"handle":"g-1","ip":"10.255.77.3","metadata":{"app_id":"a",
            "space_id":"s","org_id":"o","policy_group_id":"a","ports":"8080","container_workload":"app"}},
            "silk":{"handle":"silk","ip":"10.255.77.4","metadata":null}}"#;
        let store = parse_store(text).unwrap();
        assert_eq!(store["g-1"].metadata.as_ref().unwrap().ports, "8080");
        assert_eq!(store["silk"].metadata, None);
        let again = parse_store(&serde_json::to_string(&store).unwrap()).unwrap();
        assert_eq!(again, store);
        assert!(parse_store(" \n").unwrap().is_empty());
    }

    #[test]
    fn host_interfaces_are_named_after_the_overlay_ip() {
        assert_eq!(
            host_interface_name(Ipv4Addr::new(10, 255, 77, 3)),
            "s-010255077003"
        );
    }
}
