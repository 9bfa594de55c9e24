//! The BOSH director: the documents pcap reads, and a client for them.
//!
//! - `GET /info` (no authentication): [`Info`], whose
//!   `user_authentication` names the director's UAA.
//! - `GET /deployments/:name/instances`: a list of [`Instance`].
//! - Errors: [`DirectorError`], `{"code": 70000, "description": "..."}`.
//!
//! The types hold the fields pcap reads; the test server adds the others
//! the director writes when it serializes them.

use serde::{Deserialize, Serialize};

/// `GET /info`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Info {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    #[serde(default)]
    pub version: String,
    pub user_authentication: UserAuthentication,
}

/// How the director authenticates its users: `uaa` (with its URL) or
/// `basic`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct UserAuthentication {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub options: UaaOptions,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct UaaOptions {
    /// The UAA's URL: the one pcap uses.
    pub url: Option<String>,
    /// Every URL the UAA is reached at (`url` among them); pcap does not
    /// read it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl UserAuthentication {
    /// Authentication by the UAA at `url`.
    pub fn uaa(url: &str) -> Self {
        Self {
            kind: "uaa".to_owned(),
            options: UaaOptions {
                url: Some(url.to_owned()),
                urls: vec![url.to_owned()],
            },
        }
    }
}

/// One entry of `GET /deployments/:name/instances`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Instance {
    /// The instance group.
    pub job: String,
    pub id: String,
    pub index: Option<u64>,
    pub az: Option<String>,
    /// Empty for an instance without a VM.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// The director's error body.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct DirectorError {
    #[serde(default)]
    pub code: u64,
    pub description: String,
}

#[cfg(feature = "client")]
pub use client::{Director, Error};

#[cfg(feature = "client")]
mod client {
    use super::{DirectorError, Info, Instance};
    use crate::http::{ErrorBody, endpoint_client};

    /// Its description is not in the message: [`Error::described`] gives it.
    impl ErrorBody for DirectorError {}

    impl Error {
        /// `: DESCRIPTION` when the director described its error status.
        pub fn described(&self) -> String {
            match self {
                Self::Status {
                    body: Some(body), ..
                } => format!(": {}", body.description),
                _ => String::new(),
            }
        }
    }

    endpoint_client! {
        /// A director at a URL, through a client its caller set up (its CA,
        /// timeouts): an [`Endpoint`](crate::Endpoint) with the director's documents.
        Director,
        "https://10.0.0.6:25555",
        named: "the BOSH director",
        asked_by_path: false,
        error_body: DirectorError,
    }

    impl Director {
        /// `GET /info`, without a token.
        pub async fn info(&self) -> Result<Info, Error> {
            self.get(&["info"], None).await
        }

        /// `GET /deployments/:deployment/instances` with `token`.
        pub async fn instances(
            &self,
            deployment: &str,
            token: &str,
        ) -> Result<Vec<Instance>, Error> {
            self.get(&["deployments", deployment, "instances"], Some(token))
                .await
        }

        async fn get<T: serde::de::DeserializeOwned>(
            &self,
            path: &[&str],
            token: Option<&str>,
        ) -> Result<T, Error> {
            self.0.get(path, &[], token).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_uaa() {
        let info: Info = serde_json::from_str(
            r#"{"user_authentication":{"options":{"urls":["https://192.168.56.6:8443"],
                "url":"https://192.168.56.6:8443"},"type":"uaa"},"name":"vbox","version":"282.0.3",
                "uuid":"9d1f","cpi":"virtualbox_cpi","stemcell_os":"ubuntu-noble"}"#,
        )
        .unwrap();
        assert_eq!(
            info.user_authentication,
            UserAuthentication::uaa("https://192.168.56.6:8443")
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(serde_json::from_value::<Info>(json).unwrap(), info);
    }

    /// Moved here from pcap-api's BOSH resolver, which lists them.
    #[test]
    fn instances_parse_with_nulls_and_no_ips() {
        let list: Vec<Instance> = serde_json::from_str(
            r#"[{"agent_id":null,"cid":null,"job":"router","index":0,"id":"abc","az":"z1","ips":[],"expects_vm":true}]"#,
        )
        .unwrap();
        assert_eq!(list[0].ips.len(), 0);
        assert_eq!(list[0].index, Some(0));
    }
}
