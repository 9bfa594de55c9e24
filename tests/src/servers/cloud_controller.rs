//! Cloud Controller (v3): the endpoints pcap-api and `pcap app` use, with
//! CC's JSON shapes and error envelopes, checking the bearer token itself
//! against its [`Uaa`] like the real one (signature, issuer, expiry):
//!
//! - `GET /` (no authentication): `links.uaa.href`, `links.login.href`...
//! - `GET /v3/apps?names=..&space_guids=..&page=..&per_page=..`: the
//!   pagination envelope;
//! - `GET /v3/apps/:guid`, `/permissions`, `/ssh_enabled`,
//!   `/processes/:type/stats` (RUNNING, CRASHED and DOWN entries as CC
//!   writes them);
//! - `GET /v3/roles?types=..&space_guids=..&user_guids=..`.
//!
//! Visibility follows roles: a user sees the apps (and roles) of the
//! spaces where they hold any role; `cloud_controller.admin`,
//! `admin_read_only` and `global_auditor` see everything. Errors: 1000
//! CF-InvalidAuthToken and 10002 CF-NotAuthenticated (401), 10003
//! CF-NotAuthorized (403), 10010 CF-ResourceNotFound (404). Roles and
//! instances can be changed while it runs ([`CloudController::remove_roles`],
//! [`CloudController::update_instances`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use pcap_platform::cloud_controller::{
    App, AppRelationships, CcErrors, InstanceStats, Link, Page, Pagination, Relationship, Role,
    RoleRelationships, Root, RootLinks, SshEnabled,
};
use serde::Serialize;
use serde_json::{Value, json};

use super::uaa::{AccessClaims, Uaa};

/// Scopes that see every app.
const GLOBAL_READ: [&str; 3] = [
    "cloud_controller.admin",
    "cloud_controller.admin_read_only",
    "cloud_controller.global_auditor",
];

/// One instance of a process, as its stats show it.
#[derive(Clone, Debug)]
pub struct CcInstance {
    pub index: u32,
    /// `RUNNING`, `CRASHED`, `STARTING`, `DOWN`...
    pub state: String,
    /// The cell's IP.
    pub host: String,
    /// The overlay IP.
    pub internal_ip: String,
    pub instance_guid: String,
}

impl CcInstance {
    pub fn running(index: u32, host: &str, internal_ip: &str, instance_guid: &str) -> Self {
        Self {
            index,
            state: "RUNNING".to_owned(),
            host: host.to_owned(),
            internal_ip: internal_ip.to_owned(),
            instance_guid: instance_guid.to_owned(),
        }
    }

    /// A crashed instance: it keeps its cell and GUID in the stats.
    pub fn crashed(index: u32, host: &str, internal_ip: &str, instance_guid: &str) -> Self {
        Self {
            state: "CRASHED".to_owned(),
            ..Self::running(index, host, internal_ip, instance_guid)
        }
    }

    /// An instance Diego does not know (yet): only CC's DOWN fields.
    pub fn down(index: u32) -> Self {
        Self {
            index,
            state: "DOWN".to_owned(),
            host: String::new(),
            internal_ip: String::new(),
            instance_guid: String::new(),
        }
    }

    fn stats(&self, process: &str) -> Value {
        if self.state == "DOWN" {
            let down = InstanceStats {
                process_type: process.to_owned(),
                index: self.index,
                state: "DOWN".to_owned(),
                ..InstanceStats::default()
            };
            return with_fields(
                &down,
                json!({"routable": false, "uptime": 0, "isolation_segment": null}),
            );
        }
        let stats = InstanceStats {
            process_type: process.to_owned(),
            index: self.index,
            state: self.state.clone(),
            host: Some(self.host.clone()),
            instance_internal_ip: Some(self.internal_ip.clone()),
            instance_guid: Some(self.instance_guid.clone()),
            details: (self.state == "CRASHED")
                .then(|| "APP/PROC/WEB: Exited with status 1".to_owned()),
        };
        with_fields(
            &stats,
            json!({
                "routable": self.state == "RUNNING", "uptime": 9042,
                "mem_quota": 268_435_456, "disk_quota": 1_073_741_824, "log_rate_limit": null,
                "fds_quota": 16384, "isolation_segment": null,
                "instance_ports": [{"external": 64546, "internal": 8080,
                                    "external_tls_proxy_port": 61002, "internal_tls_proxy_port": 61003}],
                "usage": {"time": "2026-01-01T00:00:00Z", "cpu": 0.0003, "mem": 19_177_472,
                          "disk": 69_705_728, "log_rate": 0},
            }),
        )
    }
}

/// An app and its processes' instances.
#[derive(Clone, Debug)]
pub struct CcApp {
    pub guid: String,
    pub name: String,
    pub space_guid: String,
    pub ssh_enabled: bool,
    /// Process type → instances.
    pub processes: HashMap<String, Vec<CcInstance>>,
}

impl CcApp {
    /// An app whose `web` process has `instances`; SSH enabled.
    pub fn new(guid: &str, name: &str, space_guid: &str, instances: Vec<CcInstance>) -> Self {
        Self {
            guid: guid.to_owned(),
            name: name.to_owned(),
            space_guid: space_guid.to_owned(),
            ssh_enabled: true,
            processes: HashMap::from([("web".to_owned(), instances)]),
        }
    }
}

/// A role: `space_developer`, `space_auditor`... of a user in a space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CcRole {
    pub guid: String,
    pub kind: String,
    /// The UAA user id (the token's `user_id` / `sub`).
    pub user_guid: String,
    pub space_guid: String,
    pub org_guid: String,
}

impl CcRole {
    pub fn new(kind: &str, user_guid: &str, space_guid: &str, org_guid: &str) -> Self {
        Self {
            guid: format!("role-{kind}-{user_guid}-{space_guid}"),
            kind: kind.to_owned(),
            user_guid: user_guid.to_owned(),
            space_guid: space_guid.to_owned(),
            org_guid: org_guid.to_owned(),
        }
    }
}

pub struct CloudController {
    url: String,
    uaa: Arc<Uaa>,
    apps: Vec<CcApp>,
    /// App GUID → process type → instances, as the stats show them now
    /// (from `apps`; changed by [`CloudController::update_instances`]).
    instances: Mutex<HashMap<String, HashMap<String, Vec<CcInstance>>>>,
    roles: Mutex<Vec<CcRole>>,
    /// Requests with a bearer token, answered or refused.
    pub requests: AtomicUsize,
    /// Every request: (path and query, the Authorization header).
    pub seen: Mutex<Vec<(String, String)>>,
}

impl CloudController {
    /// A Cloud Controller at `url` (`https://host:port`) trusting `uaa`.
    pub fn new(url: &str, uaa: Arc<Uaa>, apps: Vec<CcApp>, roles: Vec<CcRole>) -> Self {
        Self {
            url: url.to_owned(),
            uaa,
            instances: Mutex::new(
                apps.iter()
                    .map(|a| (a.guid.clone(), a.processes.clone()))
                    .collect(),
            ),
            apps,
            roles: Mutex::new(roles),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Takes every role of `user_guid` in `space_guid` away.
    pub fn remove_roles(&self, user_guid: &str, space_guid: &str) {
        self.roles
            .lock()
            .expect("not poisoned")
            .retain(|r| !(r.user_guid == user_guid && r.space_guid == space_guid));
    }

    /// Changes the instances of app `app_guid`'s process `process`, as
    /// Diego would (a scale-up, a crash, a restart, a move): what the next
    /// stats request shows.
    pub fn update_instances(
        &self,
        app_guid: &str,
        process: &str,
        change: impl FnOnce(&mut Vec<CcInstance>),
    ) {
        let mut instances = self.instances.lock().expect("not poisoned");
        let process = instances
            .entry(app_guid.to_owned())
            .or_default()
            .entry(process.to_owned())
            .or_default();
        change(process);
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/", get(root))
            .route("/v3/apps", get(list_apps))
            .route("/v3/apps/{guid}", get(show_app))
            .route("/v3/apps/{guid}/permissions", get(permissions))
            .route("/v3/apps/{guid}/ssh_enabled", get(ssh_enabled))
            .route("/v3/apps/{guid}/processes/{kind}/stats", get(stats))
            .route("/v3/roles", get(list_roles))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&self),
                record,
            ))
            .with_state(self)
    }

    fn app_json(&self, app: &CcApp) -> Value {
        let base = format!("{}/v3/apps/{}", self.url, app.guid);
        let typed = App {
            guid: app.guid.clone(),
            name: app.name.clone(),
            state: "STARTED".to_owned(),
            relationships: Some(AppRelationships {
                space: Relationship::to(&app.space_guid),
            }),
        };
        with_fields(
            &typed,
            json!({
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "lifecycle": {"type": "buildpack", "data": {"buildpacks": [], "stack": "cflinuxfs4"}},
                "relationships": {"current_droplet": {"data": {"guid": "d"}}},
                "metadata": {"labels": {}, "annotations": {}},
                "links": {"self": {"href": base}, "processes": {"href": format!("{base}/processes")}},
            }),
        )
    }
}

type Shared = Arc<CloudController>;

/// Notes each request in [`CloudController::seen`].
async fn record(
    State(cc): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    cc.seen
        .lock()
        .expect("not poisoned")
        .push((target, authorization));
    next.run(request).await
}

fn error(status: StatusCode, code: u64, title: &str, detail: &str) -> Response {
    (status, Json(CcErrors::one(code, title, detail))).into_response()
}

/// `typed` as JSON, with the fields pcap does not read added (objects
/// merged, so `extra` can add to a nested object).
fn with_fields(typed: &impl Serialize, extra: Value) -> Value {
    fn merge(into: &mut Value, extra: Value) {
        match (into, extra) {
            (Value::Object(into), Value::Object(extra)) => {
                for (key, value) in extra {
                    merge(into.entry(key).or_insert(Value::Null), value);
                }
            }
            (into, extra) => *into = extra,
        }
    }
    let mut value = serde_json::to_value(typed).expect("wire types serialize");
    merge(&mut value, extra);
    value
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        10010,
        "CF-ResourceNotFound",
        &format!("{what} not found"),
    )
}

/// A request CC refuses: its error response (boxed: a `Response` is large).
struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// What a handler answers: a response, or CC's refusal.
type Answer = Result<Response, Refused>;

/// Who is calling, as CC checks it: a valid token with a read scope.
struct Caller {
    user_id: String,
    global: bool,
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        cc: &Shared,
    ) -> Result<Self, Refused> {
        cc.caller(&parts.headers)
    }
}

impl CloudController {
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let Some(token) = super::bearer_token(headers) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                10002,
                "CF-NotAuthenticated",
                "Authentication error",
            )
            .into());
        };
        let claims: AccessClaims = self.uaa.verify(token).map_err(|_| {
            Refused::from(error(
                StatusCode::UNAUTHORIZED,
                1000,
                "CF-InvalidAuthToken",
                "Invalid Auth Token",
            ))
        })?;
        let global = claims
            .scope
            .iter()
            .any(|s| GLOBAL_READ.contains(&s.as_str()));
        if !global && !claims.scope.iter().any(|s| s == "cloud_controller.read") {
            return Err(error(
                StatusCode::FORBIDDEN,
                10003,
                "CF-NotAuthorized",
                "You are not authorized to perform the requested action",
            )
            .into());
        }
        Ok(Caller {
            user_id: claims.user_id,
            global,
        })
    }

    fn roles_of(&self, user: &str, space: &str) -> Vec<CcRole> {
        self.roles
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|r| r.user_guid == user && r.space_guid == space)
            .cloned()
            .collect()
    }

    fn sees_space(&self, caller: &Caller, space: &str) -> bool {
        caller.global || !self.roles_of(&caller.user_id, space).is_empty()
    }

    fn visible_app(&self, caller: &Caller, guid: &str) -> Result<&CcApp, Refused> {
        self.apps
            .iter()
            .find(|a| a.guid == guid && self.sees_space(caller, &a.space_guid))
            .ok_or_else(|| not_found("App").into())
    }
}

/// `a=b&c=d%2Ce` → {a: b, c: "d,e"} (`+` is a space).
fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let decode = |text: &str| {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    if let Ok(byte) = u8::from_str_radix(hex, 16) {
                        out.push(byte);
                        i += 2;
                    } else {
                        out.push(b'%');
                    }
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn list(query: &HashMap<String, String>, key: &str) -> Option<Vec<String>> {
    query
        .get(key)
        .map(|v| v.split(',').map(str::to_owned).collect())
}

/// CC's pagination envelope around `resources`, page `page` of `per_page`.
fn paginate(
    url: &str,
    path: &str,
    query: &HashMap<String, String>,
    resources: Vec<Value>,
) -> Response {
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    if per_page == 0 || per_page > 5000 || page == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            10005,
            "CF-BadQueryParameter",
            "The query parameter is invalid: per_page must be between 1 and 5000",
        );
    }
    let total = resources.len();
    let pages = total.div_ceil(per_page).max(1);
    let href = |p: usize| Link::new(format!("{url}{path}?page={p}&per_page={per_page}"));
    let body = Page {
        pagination: Some(Pagination {
            total_results: total as u64,
            total_pages: pages as u64,
            first: Some(href(1)),
            last: Some(href(pages)),
            next: (page < pages).then(|| href(page + 1)),
            previous: (page > 1).then(|| href(page - 1)),
        }),
        resources: resources
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect(),
    };
    Json(body).into_response()
}

async fn root(State(cc): State<Shared>) -> Json<Root> {
    let uaa = cc.uaa.url();
    let other = json!({
        "self": {"href": cc.url},
        "bits_service": null,
        "cloud_controller_v2": {"href": format!("{}/v2", cc.url), "meta": {"version": "2.250.0"}},
        "cloud_controller_v3": {"href": format!("{}/v3", cc.url), "meta": {"version": "3.185.0"}},
        "network_policy_v0": {"href": format!("{}/networking/v0/external", cc.url)},
        "network_policy_v1": {"href": format!("{}/networking/v1/external", cc.url)},
        "credhub": null, "routing": {"href": format!("{}/routing", cc.url)},
        "logging": {"href": "wss://doppler.invalid:443"},
        "log_cache": {"href": "https://log-cache.invalid"},
        "app_ssh": {"href": "ssh.invalid:2222", "meta": {"host_key_fingerprint": "x", "oauth_client": "ssh-proxy"}},
    });
    let Value::Object(other) = other else {
        unreachable!("an object literal")
    };
    Json(Root {
        links: RootLinks {
            uaa: Some(Link::new(uaa)),
            login: Some(Link::new(uaa)),
            other,
        },
    })
}

async fn list_apps(State(cc): State<Shared>, caller: Caller, RawQuery(query): RawQuery) -> Answer {
    let query = parse_query(query.as_deref());
    let names = list(&query, "names");
    let spaces = list(&query, "space_guids");
    let resources = cc
        .apps
        .iter()
        .filter(|a| cc.sees_space(&caller, &a.space_guid))
        .filter(|a| names.as_ref().is_none_or(|n| n.contains(&a.name)))
        .filter(|a| spaces.as_ref().is_none_or(|s| s.contains(&a.space_guid)))
        .map(|a| cc.app_json(a))
        .collect();
    Ok(paginate(&cc.url, "/v3/apps", &query, resources))
}

async fn show_app(State(cc): State<Shared>, caller: Caller, Path(guid): Path<String>) -> Answer {
    let app = cc.visible_app(&caller, &guid)?;
    Ok(Json(cc.app_json(app)).into_response())
}

async fn permissions(State(cc): State<Shared>, caller: Caller, Path(guid): Path<String>) -> Answer {
    let app = cc.visible_app(&caller, &guid)?;
    // Sensitive data: admins, admin_read_only, or a developer of the space.
    let developer = cc
        .roles_of(&caller.user_id, &app.space_guid)
        .iter()
        .any(|r| r.kind == "space_developer");
    Ok(
        Json(json!({"read_basic_data": true, "read_sensitive_data": caller.global || developer}))
            .into_response(),
    )
}

async fn ssh_enabled(State(cc): State<Shared>, caller: Caller, Path(guid): Path<String>) -> Answer {
    let app = cc.visible_app(&caller, &guid)?;
    let reason = if app.ssh_enabled {
        String::new()
    } else {
        "ssh is disabled for app".to_owned()
    };
    Ok(Json(SshEnabled {
        enabled: app.ssh_enabled,
        reason,
    })
    .into_response())
}

async fn stats(
    State(cc): State<Shared>,
    caller: Caller,
    Path((guid, kind)): Path<(String, String)>,
) -> Answer {
    let app = cc.visible_app(&caller, &guid)?;
    let instances = cc.instances.lock().expect("not poisoned");
    let Some(instances) = instances.get(&app.guid).and_then(|p| p.get(&kind)) else {
        return Err(not_found("Process").into());
    };
    let resources: Vec<Value> = instances.iter().map(|i| i.stats(&kind)).collect();
    Ok(Json(Page::unpaginated(resources)).into_response())
}

async fn list_roles(State(cc): State<Shared>, caller: Caller, RawQuery(query): RawQuery) -> Answer {
    let query = parse_query(query.as_deref());
    let types = list(&query, "types");
    let spaces = list(&query, "space_guids");
    let users = list(&query, "user_guids");
    let roles = cc.roles.lock().expect("not poisoned").clone();
    let resources = roles
        .iter()
        .filter(|r| cc.sees_space(&caller, &r.space_guid))
        .filter(|r| types.as_ref().is_none_or(|t| t.contains(&r.kind)))
        .filter(|r| spaces.as_ref().is_none_or(|s| s.contains(&r.space_guid)))
        .filter(|r| users.as_ref().is_none_or(|u| u.contains(&r.user_guid)))
        .map(|r| {
            let role = Role {
                guid: r.guid.clone(),
                kind: r.kind.clone(),
                relationships: Some(RoleRelationships {
                    user: Relationship::to(&r.user_guid),
                    organization: Relationship::default(),
                    space: Relationship::to(&r.space_guid),
                }),
            };
            with_fields(
                &role,
                json!({
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                    "links": {"self": {"href": format!("{}/v3/roles/{}", cc.url, r.guid)}},
                }),
            )
        })
        .collect();
    Ok(paginate(&cc.url, "/v3/roles", &query, resources))
}
