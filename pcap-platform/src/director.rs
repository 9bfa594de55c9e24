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
pub struct UaaOptions {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
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
    use reqwest::{StatusCode, Url, header};
    use thiserror::Error;

    use super::{DirectorError, Info, Instance};

    /// What a request to the director came to, when not a success. `url`
    /// is the URL requested.
    #[derive(Debug, Error)]
    pub enum Error {
        #[error("{url} cannot be a base URL")]
        BadUrl { url: String },
        #[error("cannot reach the BOSH director at {url}")]
        Unreachable {
            url: String,
            #[source]
            source: reqwest::Error,
        },
        /// An error status, with the director's description when it sent one.
        #[error("the BOSH director answered HTTP {status} to {url}")]
        Status {
            url: String,
            status: StatusCode,
            description: Option<String>,
        },
        #[error("the BOSH director sent a bad answer to {url}")]
        Malformed {
            url: String,
            #[source]
            source: reqwest::Error,
        },
    }

    /// A director at a URL, through a client its caller set up (its CA,
    /// timeouts).
    #[derive(Clone, Debug)]
    pub struct Director {
        url: String,
        http: reqwest::Client,
    }

    impl Director {
        /// `url` is e.g. `https://10.0.0.6:25555`.
        pub fn new(url: &str, http: reqwest::Client) -> Self {
            Self {
                url: url.trim_end_matches('/').to_owned(),
                http,
            }
        }

        /// The director's URL, without a trailing `/`.
        pub fn url(&self) -> &str {
            &self.url
        }

        pub fn http(&self) -> &reqwest::Client {
            &self.http
        }

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
            let bad_url = || Error::BadUrl {
                url: self.url.clone(),
            };
            let mut url = Url::parse(&self.url).map_err(|_| bad_url())?;
            url.path_segments_mut()
                .map_err(|()| bad_url())?
                .pop_if_empty()
                .extend(path);
            let shown = url.to_string();
            let mut request = self
                .http
                .get(url)
                .header(header::ACCEPT, "application/json");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|source| Error::Unreachable {
                url: shown.clone(),
                source,
            })?;
            let status = response.status();
            if status.is_success() {
                return response
                    .json()
                    .await
                    .map_err(|source| Error::Malformed { url: shown, source });
            }
            let description = response
                .json::<DirectorError>()
                .await
                .ok()
                .map(|e| e.description);
            Err(Error::Status {
                url: shown,
                status,
                description,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_uaa() {
        let info: Info = serde_json::from_str(
            r#"{"name":"bosh","uuid":"u","version":"280.0.0","user":null,"cpi":"warden_cpi",
                "user_authentication":{"type":"uaa","options":{"url":"https://10.0.0.6:8443","urls":["https://10.0.0.6:8443"]}},
                "features":{}}"#,
        )
        .unwrap();
        assert_eq!(
            info.user_authentication,
            UserAuthentication::uaa("https://10.0.0.6:8443")
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(serde_json::from_value::<Info>(json).unwrap(), info);
    }

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
