//! The UAA key cache against a small `/token_keys` server: keys are fetched
//! once, fetched again (with `If-None-Match`) when a token names an unknown
//! `kid`, and a rotated-in key is then accepted.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use jsonwebtoken::{Algorithm, Header};
use pcap_api::uaa::{TokenError, TokenValidator};
use pcap_tests::{TempDir, servers::uaa::SigningKey};
use serde_json::json;

#[derive(Default)]
struct Keys {
    /// (kid, public PEM) served now.
    served: Mutex<Vec<(String, String)>>,
    requests: AtomicUsize,
    not_modified: AtomicUsize,
}

async fn token_keys(State(keys): State<Arc<Keys>>, headers: HeaderMap) -> Response {
    keys.requests.fetch_add(1, Ordering::SeqCst);
    let served = keys.served.lock().expect("lock").clone();
    let etag = format!("\"{}\"", served.len());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        keys.not_modified.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let body = json!({ "keys": served.iter().map(|(kid, pem)| json!({
        "kid": kid, "alg": "RS256", "kty": "RSA", "use": "sig", "value": pem,
    })).collect::<Vec<_>>() });
    ([(header::ETAG, etag)], Json(body)).into_response()
}

/// A token for `issuer` naming key `kid`, signed with `key`.
fn token(issuer: &str, kid: &str, key: &SigningKey) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let claims = json!({
        "iss": issuer, "sub": "user-1", "jti": "t1", "user_name": "alice",
        "client_id": "cf", "scope": ["cloud_controller.read"],
        "aud": ["cloud_controller", "cf"], "iat": now, "exp": now + 600,
    });
    key.sign(&header, &claims).expect("sign")
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_and_accepts_a_rotated_key() {
    let dir = TempDir::new("uaa-keys-rotated").expect("temp dir");
    let old = SigningKey::generate(&dir, "old").expect("key");
    let new = SigningKey::generate(&dir, "new").expect("key");
    let keys = Arc::new(Keys::default());
    keys.served
        .lock()
        .expect("lock")
        .push(("old".into(), old.public_pem().to_owned()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = Router::new()
        .route("/token_keys", get(token_keys))
        .with_state(Arc::clone(&keys));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let validator = TokenValidator::new(&url, http_client(), Duration::from_mins(1))
        .with_refetch_interval(Duration::ZERO);
    let issuer = validator.issuer().to_owned();

    let claims = validator
        .validate(&token(&issuer, "old", &old))
        .await
        .expect("a token signed with the served key");
    assert!(claims.has_scope("cloud_controller.read"));
    validator
        .validate(&token(&issuer, "old", &old))
        .await
        .expect("again");
    assert_eq!(keys.requests.load(Ordering::SeqCst), 1, "keys are cached");

    // An unknown kid, before the UAA has it: one conditional refetch (304).
    let rotated = token(&issuer, "new", &new);
    assert!(matches!(
        validator.validate(&rotated).await,
        Err(TokenError::UnknownKey { .. })
    ));
    assert_eq!(keys.requests.load(Ordering::SeqCst), 2);
    assert_eq!(keys.not_modified.load(Ordering::SeqCst), 1);

    // The UAA rotates the key in: the next token with that kid is accepted.
    keys.served
        .lock()
        .expect("lock")
        .push(("new".into(), new.public_pem().to_owned()));
    validator.validate(&rotated).await.expect("the rotated key");
    assert_eq!(keys.requests.load(Ordering::SeqCst), 3);

    // A token claiming the new kid but signed with the old key is refused.
    let forged = token(&issuer, "new", &old);
    assert!(matches!(
        validator.validate(&forged).await,
        Err(TokenError::BadSignature)
    ));
}

#[tokio::test]
async fn a_uaa_that_fails_is_asked_again_only_after_the_refetch_interval() {
    let dir = TempDir::new("uaa-keys-down").expect("temp dir");
    let key = SigningKey::generate(&dir, "k").expect("key");
    let requests = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let counted = Arc::clone(&requests);
    let app = Router::new().route(
        "/token_keys",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { StatusCode::SERVICE_UNAVAILABLE }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let validator = TokenValidator::new(&url, http_client(), Duration::from_mins(1));
    let issuer = validator.issuer().to_owned();
    // Every request sees the failure; only the first one asks the UAA.
    for _ in 0..5 {
        let result = validator.validate(&token(&issuer, "k", &key)).await;
        assert!(
            matches!(&result, Err(TokenError::KeysUnavailable { message, .. }) if message.contains("503")),
            "{result:?}"
        );
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

/// reqwest brings no crypto of its own (no aws-lc); the tests bring ring.
fn http_client() -> reqwest::Client {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
