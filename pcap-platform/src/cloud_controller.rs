//! Cloud Controller v3: the documents pcap reads, and a client for them.
//!
//! - `GET /` (no authentication): [`Root`], whose `links.uaa.href` names
//!   Cloud Controller's UAA.
//! - `GET /v3/apps?names=..&space_guids=..`, `GET /v3/apps/:guid`:
//!   [`Page`] of [`App`], [`App`].
//! - `GET /v3/roles?types=..&space_guids=..&user_guids=..`: [`Page`] of
//!   [`Role`].
//! - `GET /v3/apps/:guid/ssh_enabled`: [`SshEnabled`].
//! - `GET /v3/apps/:guid/processes/:type/stats`: [`Page`] of
//!   [`InstanceStats`].
//! - Errors: [`CcErrors`], `{"errors": [{"code", "title", "detail"}]}`.
//!
//! The types hold the fields pcap reads; the test servers add the others
//! Cloud Controller writes when they serialize them.

use serde::{Deserialize, Serialize};

/// `GET /`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Root {
    pub links: RootLinks,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RootLinks {
    pub uaa: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<Link>,
    /// The links pcap does not follow (`cloud_controller_v3`, `logging`...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Link {
    /// An absolute URL.
    pub href: String,
}

impl Link {
    pub fn new(href: impl Into<String>) -> Self {
        Self { href: href.into() }
    }
}

impl Root {
    /// The UAA the root names (`links.uaa.href`), without a trailing `/`.
    pub fn uaa_url(&self) -> Option<String> {
        self.links
            .uaa
            .as_ref()
            .map(|l| l.href.trim_end_matches('/').to_owned())
    }
}

/// A list: one page of `resources`, and where the others are.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Page<T> {
    /// Absent in a process's stats, which are not paginated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    pub resources: Vec<T>,
}

impl<T> Page<T> {
    /// Resources that are not paginated (a process's stats).
    pub fn unpaginated(resources: Vec<T>) -> Self {
        Self {
            pagination: None,
            resources,
        }
    }
}

/// Every field may be absent.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Pagination {
    /// Resources in the whole list, on every page.
    pub total_results: u64,
    /// Pages the list takes at this request's `per_page`.
    pub total_pages: u64,
    /// The URL of page 1.
    pub first: Option<Link>,
    /// The URL of the last page.
    pub last: Option<Link>,
    /// The URL of the page after this one; `None` on the last page.
    pub next: Option<Link>,
    /// The URL of the page before this one; `None` on the first page.
    pub previous: Option<Link>,
}

/// An app (`GET /v3/apps/:guid`, or in a list).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct App {
    pub guid: String,
    pub name: String,
    #[serde(default)]
    pub state: String,
    /// Always sent by Cloud Controller; absent in hand-written lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relationships: Option<AppRelationships>,
}

impl App {
    /// The GUID of the app's space, when its relationships say.
    pub fn space_guid(&self) -> Option<&str> {
        self.relationships.as_ref()?.space.guid()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct AppRelationships {
    pub space: Relationship,
}

/// A to-one relationship: `{"data": {"guid": ..}}`, or `{"data": null}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Relationship {
    pub data: Option<RelationshipData>,
}

impl Relationship {
    pub fn to(guid: impl Into<String>) -> Self {
        Self {
            data: Some(RelationshipData { guid: guid.into() }),
        }
    }

    pub fn guid(&self) -> Option<&str> {
        self.data.as_ref().map(|d| d.guid.as_str())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct RelationshipData {
    pub guid: String,
}

/// A role (`space_developer`, `space_auditor`...) of a user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Role {
    #[serde(default)]
    pub guid: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relationships: Option<RoleRelationships>,
}

/// Every relationship may be absent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct RoleRelationships {
    pub user: Relationship,
    pub organization: Relationship,
    pub space: Relationship,
}

/// `GET /v3/apps/:guid/ssh_enabled`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct SshEnabled {
    pub enabled: bool,
    #[serde(default)]
    pub reason: String,
}

/// One entry of a process's stats: an instance, where it runs, its state.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct InstanceStats {
    /// The process type.
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub process_type: String,
    pub index: u32,
    /// `RUNNING`, `CRASHED`, `STARTING`, `DOWN`...
    pub state: String,
    /// The cell's IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The overlay IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_internal_ip: Option<String>,
    /// Diego's instance GUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_guid: Option<String>,
    pub details: Option<String>,
}

/// Cloud Controller's error body; every field may be absent.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct CcErrors {
    pub errors: Vec<CcError>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default)]
pub struct CcError {
    pub code: u64,
    pub title: String,
    pub detail: String,
}

impl CcErrors {
    /// One error: `{"errors": [{code, title, detail}]}`.
    pub fn one(code: u64, title: &str, detail: &str) -> Self {
        Self {
            errors: vec![CcError {
                code,
                title: title.to_owned(),
                detail: detail.to_owned(),
            }],
        }
    }

    /// ` (CODE TITLE: DETAIL)` of the first error, or nothing.
    pub fn summary(&self) -> String {
        self.errors
            .first()
            .map(|e| format!(" ({} {}: {})", e.code, e.title, e.detail))
            .unwrap_or_default()
    }
}

#[cfg(feature = "client")]
pub use client::{CloudController, Error};

#[cfg(feature = "client")]
mod client {
    use serde::de::DeserializeOwned;

    use super::{App, CcErrors, InstanceStats, Page, Role, Root, SshEnabled};
    use crate::http::{ErrorBody, endpoint_client};

    impl ErrorBody for CcErrors {
        fn detail(&self) -> String {
            self.summary()
        }
    }

    endpoint_client! {
        /// Cloud Controller at a URL, through a client its caller set up
        /// (certificates, timeouts): an [`Endpoint`](crate::Endpoint) with Cloud Controller's
        /// documents.
        CloudController,
        "https://api.sys.example.com",
        named: "Cloud Controller",
        asked_by_path: true,
        error_body: CcErrors,
    }

    impl CloudController {
        /// `GET /`, without a token.
        pub async fn root(&self) -> Result<Root, Error> {
            self.get(&[], &[], None).await
        }

        /// `GET /v3/apps/:guid`.
        pub async fn app(&self, guid: &str, token: &str) -> Result<App, Error> {
            self.get(&["v3", "apps", guid], &[], Some(token)).await
        }

        /// `GET /v3/apps?names=NAME&space_guids=SPACE`: the first page.
        pub async fn apps_named(
            &self,
            name: &str,
            space_guid: &str,
            token: &str,
        ) -> Result<Page<App>, Error> {
            let query = [("names", name), ("space_guids", space_guid)];
            self.get(&["v3", "apps"], &query, Some(token)).await
        }

        /// `GET /v3/roles?QUERY`: the first page.
        pub async fn roles(
            &self,
            query: &[(&str, &str)],
            token: &str,
        ) -> Result<Page<Role>, Error> {
            self.get(&["v3", "roles"], query, Some(token)).await
        }

        /// `GET /v3/apps/:guid/ssh_enabled`.
        pub async fn ssh_enabled(&self, guid: &str, token: &str) -> Result<SshEnabled, Error> {
            self.get(&["v3", "apps", guid, "ssh_enabled"], &[], Some(token))
                .await
        }

        /// `GET /v3/apps/:guid/processes/:type/stats`.
        pub async fn process_stats(
            &self,
            guid: &str,
            process: &str,
            token: &str,
        ) -> Result<Page<InstanceStats>, Error> {
            let path = ["v3", "apps", guid, "processes", process, "stats"];
            self.get(&path, &[], Some(token)).await
        }

        /// `GET /PATH?QUERY`, with `token` when given.
        pub async fn get<T: DeserializeOwned>(
            &self,
            path: &[&str],
            query: &[(&str, &str)],
            token: Option<&str>,
        ) -> Result<T, Error> {
            self.0.get(path, query, token).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_of_cloud_controller_names_its_space() {
        let app: App = serde_json::from_str(
            r#"{"guid":"a-1","name":"my-app","state":"STARTED","lifecycle":{},
                "relationships":{"space":{"data":{"guid":"s-1"}},"current_droplet":{"data":null}},
                "metadata":{},"links":{}}"#,
        )
        .unwrap();
        assert_eq!(app.space_guid(), Some("s-1"));
        let saved: Page<App> =
            serde_json::from_str(r#"{"resources":[{"guid":"g","name":"n"}]}"#).unwrap();
        assert_eq!(saved.resources[0].space_guid(), None);
        assert!(serde_json::from_str::<Page<App>>(r#"{"errors":[]}"#).is_err());
    }

    #[test]
    fn stats_round_trip_as_cloud_controller_writes_them() {
        let down = InstanceStats {
            process_type: "web".into(),
            index: 2,
            state: "DOWN".into(),
            ..InstanceStats::default()
        };
        let json = serde_json::to_value(&down).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "web", "index": 2, "state": "DOWN", "details": null})
        );
        assert_eq!(serde_json::from_value::<InstanceStats>(json).unwrap(), down);
    }

    #[test]
    fn the_root_keeps_the_links_pcap_does_not_follow() {
        let root: Root = serde_json::from_str(
            r#"{"links":{"self":{"href":"https://api"},"uaa":{"href":"https://uaa/"},"credhub":null}}"#,
        )
        .unwrap();
        assert_eq!(root.uaa_url().as_deref(), Some("https://uaa"));
        let json = serde_json::to_value(&root).unwrap();
        assert_eq!(json["links"]["self"]["href"], "https://api");
        assert_eq!(json["links"].get("credhub"), Some(&serde_json::Value::Null));
    }

    #[test]
    fn errors_summarise_the_first() {
        let errors = CcErrors::one(10010, "CF-ResourceNotFound", "App not found");
        assert_eq!(
            errors.summary(),
            " (10010 CF-ResourceNotFound: App not found)"
        );
        assert_eq!(CcErrors::default().summary(), "");
    }
}
