//! A BOSH director: `GET /info` (no authentication; names the UAA) and
//! `GET /deployments/:name/instances`, which checks the bearer token like
//! the real director: 401 without a valid access token of its UAA, 403
//! without `bosh.admin`, `bosh.<uuid>.admin` or `bosh.read`, 404 for an
//! unknown deployment.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use pcap_platform::director::{self, DirectorError, Info, UserAuthentication};
use serde_json::{Value, json};

use super::uaa::Uaa;

/// The director's UUID.
pub const UUID: &str = "6a3f9e2b-1c4d-4f5e-8a7b-9c0d1e2f3a4b";

/// One instance of a deployment.
#[derive(Clone, Debug)]
pub struct Instance {
    pub job: String,
    pub id: String,
    pub index: u32,
    pub az: String,
    /// Empty for an instance without a VM.
    pub ips: Vec<String>,
}

pub struct Director {
    uaa: Arc<Uaa>,
    deployments: HashMap<String, Vec<Instance>>,
    /// `GET /deployments/:name/instances` requests.
    pub instance_requests: AtomicUsize,
}

impl Director {
    pub fn new(uaa: Arc<Uaa>, deployments: HashMap<String, Vec<Instance>>) -> Self {
        Self {
            uaa,
            deployments,
            instance_requests: AtomicUsize::new(0),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/info", get(info))
            .route("/deployments/{deployment}/instances", get(instances))
            .with_state(self)
    }
}

type Shared = Arc<Director>;

async fn info(State(director): State<Shared>) -> Json<Value> {
    let info = Info {
        name: "test-director".to_owned(),
        uuid: UUID.to_owned(),
        version: "280.1.0 (00000000)".to_owned(),
        user_authentication: UserAuthentication::uaa(director.uaa.url()),
    };
    let mut body = serde_json::to_value(info).expect("wire types serialize");
    let Value::Object(fields) = &mut body else {
        unreachable!("a struct is an object")
    };
    // What the director says besides, which pcap does not read.
    fields.extend([
        ("user".to_owned(), Value::Null),
        ("cpi".to_owned(), json!("warden_cpi")),
        ("stemcell_os".to_owned(), json!("ubuntu-jammy")),
        ("stemcell_version".to_owned(), json!("1.500")),
        (
            "features".to_owned(),
            json!({
                "local_dns": {"status": true, "extras": {"domain_name": "bosh"}},
                "power_dns": {"status": false},
                "snapshots": {"status": false},
                "config_server": {"status": true, "extras": {"urls": []}},
            }),
        ),
    ]);
    Json(body)
}

fn error(status: StatusCode, code: u64, description: &str) -> Response {
    let body = DirectorError {
        code,
        description: description.to_owned(),
    };
    (status, Json(body)).into_response()
}

async fn instances(
    State(director): State<Shared>,
    Path(deployment): Path<String>,
    headers: HeaderMap,
) -> Response {
    director.instance_requests.fetch_add(1, Ordering::Relaxed);
    let Some(token) = super::bearer_token(&headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            600_000,
            "Not authorized: '/deployments' requires a token",
        );
    };
    let Ok(claims) = director.uaa.verify(token) else {
        return error(StatusCode::UNAUTHORIZED, 600_000, "Invalid token");
    };
    let allowed = [
        "bosh.admin".to_owned(),
        format!("bosh.{UUID}.admin"),
        "bosh.read".to_owned(),
    ];
    if !claims.scope.iter().any(|s| allowed.contains(s)) {
        return error(
            StatusCode::FORBIDDEN,
            600_000,
            &format!("Require one of the scopes: {}", allowed.join(", ")),
        );
    }
    let Some(instances) = director.deployments.get(&deployment) else {
        return error(
            StatusCode::NOT_FOUND,
            70_000,
            &format!("Deployment '{deployment}' doesn't exist"),
        );
    };
    let body: Vec<_> = instances
        .iter()
        .map(|i| {
            let has_vm = !i.ips.is_empty();
            let typed = director::Instance {
                job: i.job.clone(),
                id: i.id.clone(),
                index: Some(u64::from(i.index)),
                az: Some(i.az.clone()),
                ips: i.ips.clone(),
            };
            let mut entry = serde_json::to_value(typed).expect("wire types serialize");
            entry["agent_id"] = json!(has_vm.then(|| format!("agent-{}", i.id)));
            entry["cid"] = json!(has_vm.then(|| format!("vm-{}", i.id)));
            entry["expects_vm"] = json!(true);
            entry
        })
        .collect();
    Json(body).into_response()
}
