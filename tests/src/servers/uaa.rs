//! A UAA: `GET /token_keys` (the RSA public key as PEM and as `n`/`e`,
//! with an ETag and `If-None-Match`) and `POST /oauth/token` (the
//! `password` and `refresh_token` grants, clients with Basic auth). Tokens
//! are real RS256 JWTs with UAA's claims, signed by a key generated for the
//! test; their headers carry a `jku` pointing elsewhere, which a validator
//! must never follow.

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use anyhow::{Context as _, bail};
use axum::{
    Form, Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pcap_platform::uaa::{OAuthError, TokenKey, TokenKeys, TokenRequest, TokenResponse};
use rsa::{
    RsaPrivateKey, RsaPublicKey,
    pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding},
    traits::PublicKeyParts as _,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::unix_now;

/// The key id the UAA signs with.
pub const KEY_ID: &str = "key-1";
/// Where tokens' `jku` header points: never to be fetched.
pub const BOGUS_JKU: &str = "https://attacker.invalid/token_keys";
/// Access token lifetime of the token endpoint.
pub const ACCESS_LIFETIME: i64 = 3600;

/// A user who can log in, and the scopes their tokens carry.
#[derive(Clone, Debug)]
pub struct UaaUser {
    pub name: String,
    pub password: String,
    pub scopes: Vec<String>,
}

impl UaaUser {
    pub fn new(name: &str, password: &str, scopes: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            password: password.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// An RSA key pair for signing tokens.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_pem: String,
    n: String,
    e: String,
}

impl SigningKey {
    /// A new 2048-bit key, made by `openssl` in `dir`.
    pub fn generate(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name}.pem"));
        let status = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .context("running openssl genpkey")?;
        if !status.success() {
            bail!("openssl genpkey failed: {status}");
        }
        let pem = std::fs::read_to_string(&path)?;
        let private = RsaPrivateKey::from_pkcs8_pem(&pem).context("parsing the RSA key")?;
        let public = RsaPublicKey::from(&private);
        let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let n = b64(public.n().to_bytes_be());
        let e = b64(public.e().to_bytes_be());
        Ok(Self {
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes())?,
            decoding: DecodingKey::from_rsa_components(&n, &e)?,
            public_pem: public.to_public_key_pem(LineEnding::LF)?,
            n,
            e,
        })
    }

    /// The public key, as PEM: what `/token_keys` serves as a key's `value`.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// `claims` signed with this key, under `header` (its algorithm RS256).
    pub fn sign(&self, header: &Header, claims: &impl Serialize) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(header, claims, &self.encoding)?)
    }
}

/// Claims of UAA access tokens, as UAA writes them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub jti: String,
    pub sub: String,
    pub scope: Vec<String>,
    pub client_id: String,
    pub cid: String,
    pub azp: String,
    pub grant_type: String,
    pub user_id: String,
    pub origin: String,
    pub user_name: String,
    pub email: String,
    pub auth_time: i64,
    pub rev_sig: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub zid: String,
    pub aud: Vec<String>,
}

/// The UAA's state: its key, users, clients and what it was asked.
pub struct Uaa {
    url: String,
    key: SigningKey,
    users: Vec<UaaUser>,
    /// (client id, secret).
    clients: Vec<(String, String)>,
    /// Refresh tokens handed out, and whose they are.
    refresh_tokens: Mutex<HashMap<String, (String, String)>>,
    next_jti: AtomicU64,
    /// `GET /token_keys` requests, and how many got 304.
    pub token_keys_requests: AtomicUsize,
    pub token_keys_not_modified: AtomicUsize,
    /// Successful refresh grants.
    pub refreshes: AtomicUsize,
}

impl Uaa {
    /// A UAA at `url` (`https://host:port`, no trailing slash).
    pub fn new(url: &str, key: SigningKey, users: Vec<UaaUser>, clients: &[(&str, &str)]) -> Self {
        Self {
            url: url.to_owned(),
            key,
            users,
            clients: clients
                .iter()
                .map(|(id, secret)| ((*id).to_owned(), (*secret).to_owned()))
                .collect(),
            refresh_tokens: Mutex::new(HashMap::new()),
            next_jti: AtomicU64::new(1),
            token_keys_requests: AtomicUsize::new(0),
            token_keys_not_modified: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<url>/oauth/token`, the `iss` of its tokens.
    pub fn issuer(&self) -> String {
        format!("{}/oauth/token", self.url)
    }

    fn user(&self, name: &str) -> anyhow::Result<&UaaUser> {
        self.users
            .iter()
            .find(|u| u.name == name)
            .with_context(|| format!("no UAA user {name}"))
    }

    fn jti(&self, suffix: &str) -> String {
        let n = self.next_jti.fetch_add(1, Ordering::Relaxed);
        format!("{n:032x}{suffix}")
    }

    /// An access token of `user` for `client`, valid for `lifetime` seconds
    /// from now (negative: already expired).
    pub fn access_token(&self, user: &str, client: &str, lifetime: i64) -> anyhow::Result<String> {
        let user = self.user(user)?;
        let now = unix_now();
        let aud = audiences(&user.scopes, client);
        let claims = AccessClaims {
            jti: self.jti(""),
            sub: format!("user-{}", user.name),
            scope: user.scopes.clone(),
            client_id: client.to_owned(),
            cid: client.to_owned(),
            azp: client.to_owned(),
            grant_type: "password".to_owned(),
            user_id: format!("user-{}", user.name),
            origin: "uaa".to_owned(),
            user_name: user.name.clone(),
            email: format!("{}@example.com", user.name),
            auth_time: now,
            rev_sig: "5f3a9c1e".to_owned(),
            iat: now.min(now + lifetime),
            exp: now + lifetime,
            iss: self.issuer(),
            zid: "uaa".to_owned(),
            aud,
        };
        self.sign(&claims)
    }

    /// A refresh token (its `jti` ends in `-r`) of `user` for `client`.
    pub fn refresh_token(&self, user: &str, client: &str) -> anyhow::Result<String> {
        let user = self.user(user)?;
        let now = unix_now();
        let jti = self.jti("-r");
        let claims = json!({
            "jti": jti, "sub": format!("user-{}", user.name), "scope": user.scopes,
            "client_id": client, "cid": client, "grant_type": "password",
            "user_name": user.name, "origin": "uaa", "iat": now, "exp": now + 30 * 86400,
            "iss": self.issuer(), "zid": "uaa", "aud": [client],
        });
        let token = self.sign(&claims)?;
        self.refresh_tokens
            .lock()
            .expect("not poisoned")
            .insert(token.clone(), (user.name.clone(), client.to_owned()));
        Ok(token)
    }

    /// An access token of the client-credentials grant: client `client`
    /// with `scopes`, no user (no `user_id`, `user_name`), valid for
    /// `lifetime` seconds.
    pub fn client_token(
        &self,
        client: &str,
        scopes: &[&str],
        lifetime: i64,
    ) -> anyhow::Result<String> {
        let now = unix_now();
        let aud = audiences(scopes, client);
        self.sign_claims(&json!({
            "jti": self.jti(""), "sub": client, "authorities": scopes, "scope": scopes,
            "client_id": client, "cid": client, "azp": client,
            "grant_type": "client_credentials", "rev_sig": "5f3a9c1e",
            "iat": now, "exp": now + lifetime, "iss": self.issuer(), "zid": "uaa", "aud": aud,
        }))
    }

    /// `claims` signed as the UAA signs its tokens (its key, `kid`
    /// [`KEY_ID`], RS256): for tokens with claims of a test's choosing.
    pub fn sign_claims(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        self.sign(claims)
    }

    /// The public key the UAA publishes, as PEM.
    pub fn public_key_pem(&self) -> &str {
        self.key.public_pem()
    }

    fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_owned());
        header.jku = Some(BOGUS_JKU.to_owned());
        self.key.sign(&header, claims)
    }

    /// Checks an access token as a resource server (the director) does:
    /// signature, issuer, expiry, and not a refresh token.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[self.issuer()]);
        validation.validate_aud = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.key.decoding, &validation)
            .map_err(|e| e.to_string())?;
        if data.claims.jti.ends_with("-r") {
            return Err("refresh tokens are not accepted".to_owned());
        }
        Ok(data.claims)
    }

    fn etag(&self) -> String {
        format!("\"{KEY_ID}-{}\"", &self.key.n[..16])
    }

    /// The UAA's routes.
    pub fn router(self: std::sync::Arc<Self>) -> Router {
        Router::new()
            .route("/token_keys", get(token_keys))
            .route("/oauth/token", post(token))
            .with_state(self)
    }
}

/// A token's `aud`, as UAA makes it: the resource of each scope (the part
/// before its last dot) and the client, sorted, each once.
fn audiences(scopes: &[impl AsRef<str>], client: &str) -> Vec<String> {
    let mut aud: Vec<String> = scopes
        .iter()
        .filter_map(|s| {
            s.as_ref()
                .rsplit_once('.')
                .map(|(prefix, _)| prefix.to_owned())
        })
        .collect();
    aud.push(client.to_owned());
    aud.sort();
    aud.dedup();
    aud
}

type Shared = std::sync::Arc<Uaa>;

async fn token_keys(State(uaa): State<Shared>, headers: HeaderMap) -> Response {
    uaa.token_keys_requests.fetch_add(1, Ordering::Relaxed);
    let etag = uaa.etag();
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        uaa.token_keys_not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let body = TokenKeys {
        keys: vec![TokenKey {
            kid: Some(KEY_ID.to_owned()),
            alg: Some("RS256".to_owned()),
            kty: "RSA".to_owned(),
            usage: Some("sig".to_owned()),
            value: Some(uaa.key.public_pem.clone()),
            n: Some(uaa.key.n.clone()),
            e: Some(uaa.key.e.clone()),
        }],
    };
    ([(header::ETAG, etag)], Json(body)).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = OAuthError {
        error: error.to_owned(),
        error_description: description.to_owned(),
    };
    (status, Json(body)).into_response()
}

/// The client of a `Basic` authorization header, if it is known.
fn client(uaa: &Uaa, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    uaa.clients
        .iter()
        .any(|(i, s)| i == id && s == secret)
        .then(|| id.to_owned())
}

async fn token(
    State(uaa): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<TokenRequest>,
) -> Response {
    let Some(client) = client(&uaa, &headers) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "unauthorized", "Bad credentials");
    };
    let user = match form.grant_type.as_str() {
        "refresh_token" => {
            let known = form.refresh_token.as_ref().and_then(|token| {
                uaa.refresh_tokens
                    .lock()
                    .expect("not poisoned")
                    .get(token)
                    .cloned()
            });
            match known {
                Some((user, issued_to)) if issued_to == client => user,
                _ => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "Invalid refresh token",
                    );
                }
            }
        }
        "password" => {
            let found = uaa.users.iter().find(|u| {
                Some(&u.name) == form.username.as_ref()
                    && Some(&u.password) == form.password.as_ref()
            });
            match found {
                Some(user) => user.name.clone(),
                None => {
                    return oauth_error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "Bad credentials",
                    );
                }
            }
        }
        other => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            );
        }
    };
    let issued = uaa
        .access_token(&user, &client, ACCESS_LIFETIME)
        .and_then(|access| Ok((access, uaa.refresh_token(&user, &client)?)));
    let Ok((access, refresh)) = issued else {
        return oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot sign",
        );
    };
    if form.grant_type == "refresh_token" {
        uaa.refreshes.fetch_add(1, Ordering::Relaxed);
    }
    let claims = uaa.verify(&access).expect("a token it just signed");
    Json(TokenResponse {
        access_token: access,
        token_type: "bearer".to_owned(),
        refresh_token: Some(refresh),
        expires_in: Some(ACCESS_LIFETIME - 1),
        scope: Some(claims.scope.join(" ")),
        jti: Some(claims.jti),
    })
    .into_response()
}
