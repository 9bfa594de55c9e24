//! Validating UAA access tokens (JWTs) against the signing keys that a
//! configured UAA publishes at `GET /token_keys`.
//!
//! - The keys come only from the configured UAA, never from a URL in the
//!   token (its `jku` header is ignored). They are cached; a token signed
//!   with an unknown `kid` makes the validator fetch them again (with
//!   `If-None-Match`), at most once per [`REFETCH_INTERVAL`]; a fetch that
//!   failed is remembered for as long, so a UAA that is down is not asked by
//!   every request.
//! - The signature algorithm is the key's `alg`, whatever the token's header
//!   says; only RSA keys are used.
//! - `iss` must be `<uaa url>/oauth/token`; `exp` and `nbf` are checked
//!   with a configurable clock skew; refresh tokens (`jti` ending in `-r`)
//!   are refused.
//!
//! Tokens are never logged or put in messages.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use pcap_platform::uaa::{TokenKey, TokenKeys};
use reqwest::{StatusCode, header};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::{
    auth::{AuthError, Authenticator, Issuer, Secret, Uaa, User},
    resolve::ResolveError,
};

/// The least time between two fetches of the keys caused by unknown `kid`s.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a failed discovery of a UAA (the director's `/info`, Cloud
/// Controller's root) is answered from memory before it is tried again.
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(10);
/// How long a request to a UAA or a director may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token is not accepted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT at all: some other authenticator may know it.
    #[error("the bearer token is not a JWT")]
    NotJwt,
    /// The JWT header has no `kid`, so no published key can check it.
    #[error("the token names no signing key (`kid`)")]
    NoKeyId,
    /// `kid` comes from the token: shown escaped and shortened, so that
    /// it can never forge a log line.
    #[error(
        "the token was signed with key {}, which {uaa} does not publish",
        crate::audit::escaped(kid)
    )]
    UnknownKey { kid: String, uaa: String },
    /// The header's `alg` is not the one the UAA publishes for the key
    /// (no algorithm substitution).
    #[error("the token's algorithm {found} is not its key's {expected}")]
    WrongAlgorithm { found: String, expected: String },
    /// The signature does not verify with the published key.
    #[error("the token's signature is not valid")]
    BadSignature,
    /// `exp` is past, beyond the allowed clock skew.
    #[error("the token has expired; log in again")]
    Expired,
    /// `nbf` is still ahead, beyond the allowed clock skew.
    #[error("the token is not valid yet (check the clocks)")]
    NotYetValid,
    #[error(
        "the token was issued by {}, not by {expected}",
        crate::audit::escaped(found)
    )]
    WrongIssuer { found: String, expected: String },
    /// A refresh token (its `jti` ends in `-r`) rather than an access token.
    #[error("refresh tokens are not accepted; send an access token")]
    RefreshToken,
    /// Anything else wrong with the claims (a missing `exp`, `iss` or
    /// `aud`, malformed JSON): what, in words.
    #[error("the token is not valid: {0}")]
    Invalid(String),
    /// The keys could not be fetched: the UAA is down or misconfigured.
    #[error("cannot fetch the token keys from {url}: {message}")]
    KeysUnavailable { url: String, message: String },
}

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{0}: no usable PEM certificate: {1}")]
    Ca(String, String),
    #[error("cannot set up an HTTP client: {0}")]
    Client(String),
}

/// The last failed discovery, for [`DISCOVERY_RETRY`]: while it is recent,
/// callers get its message at once instead of each waiting, in turn, for
/// the same server that does not answer.
#[derive(Default)]
pub struct FailedDiscovery {
    last: std::sync::Mutex<Option<(Instant, String)>>,
    retry: Option<Duration>,
}

impl FailedDiscovery {
    /// Remembers failures for `retry` instead of [`DISCOVERY_RETRY`].
    #[must_use]
    pub fn with_retry(retry: Duration) -> Self {
        Self {
            last: std::sync::Mutex::default(),
            retry: Some(retry),
        }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The message of a failure less than the retry interval ago.
    pub fn recent(&self) -> Option<String> {
        let retry = self.retry.unwrap_or(DISCOVERY_RETRY);
        self.last()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < retry)
            .map(|(at, message)| {
                let left = retry.saturating_sub(at.elapsed()).as_secs() + 1;
                format!("{message} (trying again in {left} s)")
            })
    }

    pub fn record(&self, message: &str) {
        *self.last() = Some((Instant::now(), message.to_owned()));
    }
}

/// A server that names its UAA: the director (`/info`), Cloud Controller
/// (its root).
#[tonic::async_trait]
pub trait NamesUaa: Send + Sync + 'static {
    /// Whose users that UAA's tokens name.
    const UAA: Uaa;
    /// Asks the server for its UAA's URL, and logs what it found.
    async fn discover(&self) -> Result<String, String>;
}

/// A server that names its UAA, and that UAA, found through it the first
/// time a token is to be checked: its validator once found, the last
/// failure meanwhile. A section's resolver and its [`UaaAuthenticator`]
/// share one.
pub struct DiscoveredUaa<S> {
    /// The server, e.g. the director.
    pub server: S,
    http: reqwest::Client,
    clock_skew: Duration,
    validator: Mutex<Option<Arc<TokenValidator>>>,
    failed: FailedDiscovery,
}

impl<S: NamesUaa> DiscoveredUaa<S> {
    /// `server`'s UAA, whose validators fetch keys with `http` and allow
    /// `clock_skew`.
    pub fn new(server: S, http: reqwest::Client, clock_skew: Duration) -> Self {
        Self {
            server,
            http,
            clock_skew,
            validator: Mutex::new(None),
            failed: FailedDiscovery::default(),
        }
    }

    /// The server `connect` makes, reached (as its UAA is) over HTTPS
    /// trusting only the certificates of the PEM file `ca`; tokens are
    /// allowed `clock_skew` seconds.
    pub fn trusting(
        ca: &Path,
        clock_skew: f64,
        connect: impl FnOnce(reqwest::Client) -> S,
    ) -> Result<Arc<Self>, SetupError> {
        let http = https_client_trusting(ca)?;
        let server = connect(http.clone());
        Ok(Arc::new(Self::new(
            server,
            http,
            Duration::from_secs_f64(clock_skew),
        )))
    }

    /// The validator of the UAA the server names, found the first time; a
    /// failure is answered from memory for [`DISCOVERY_RETRY`].
    pub async fn validator(&self) -> Result<Arc<TokenValidator>, String> {
        let mut validator = self.validator.lock().await;
        if let Some(found) = &*validator {
            return Ok(Arc::clone(found));
        }
        if let Some(message) = self.failed.recent() {
            return Err(message);
        }
        let uaa_url = self
            .server
            .discover()
            .await
            .inspect_err(|m| self.failed.record(m))?;
        let found = Arc::new(TokenValidator::new(
            &uaa_url,
            self.http.clone(),
            self.clock_skew,
        ));
        *validator = Some(Arc::clone(&found));
        Ok(found)
    }

    /// The `iss` of the UAA's tokens: known once discovered; while
    /// discovery runs, not known yet.
    pub fn issuer(&self) -> Option<String> {
        let validator = self.validator.try_lock().ok()?;
        validator.as_ref().map(|v| v.issuer().to_owned())
    }

    /// `user`'s own token of the server's UAA, to act for them at the
    /// server for `what` ("capturing apps"). A UAA not found is
    /// `Unavailable`. A user of another issuer (a static user, another
    /// UAA's) is known but may not do this: `PermissionDenied`, saying what
    /// it takes.
    pub async fn acting_token<'u>(
        &self,
        user: &'u User,
        what: &str,
    ) -> Result<&'u str, ResolveError> {
        let validator = self.validator().await.map_err(ResolveError::Unavailable)?;
        validator.own_token(user).ok_or_else(|| {
            ResolveError::PermissionDenied(format!(
                "{what} needs a token of {} ({}), and {} is not its user; log in with {}",
                S::UAA.describe(),
                validator.uaa_url(),
                user.describe(),
                S::UAA.log_in()
            ))
        })
    }

    /// Runs the discovery in the background when there is a runtime, so
    /// that the log says at once whether the server and its UAA are
    /// reachable; a failure is retried by a later request (`retried_by`),
    /// at most every [`DISCOVERY_RETRY`].
    pub fn discover_in_background(self: &Arc<Self>, retried_by: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let uaa = Arc::clone(self);
        runtime.spawn(async move {
            if let Err(message) = uaa.validator().await {
                tracing::warn!("{message}; trying again on {retried_by}, at most every 10 s");
            }
        });
    }
}

/// Accepts access tokens of the UAA a server `S` names, as users of
/// `S::UAA`: `[bosh]`'s director's and `[cf]`'s Cloud Controller's.
pub struct UaaAuthenticator<S> {
    discovered: Arc<DiscoveredUaa<S>>,
}

impl<S> UaaAuthenticator<S> {
    pub fn new(discovered: Arc<DiscoveredUaa<S>>) -> Self {
        Self { discovered }
    }
}

#[tonic::async_trait]
impl<S: NamesUaa> Authenticator for UaaAuthenticator<S> {
    async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        authenticate(S::UAA, self.discovered.validator(), token).await
    }

    fn issuer(&self) -> Option<String> {
        self.discovered.issuer()
    }
}

/// An HTTPS client that trusts the certificates of the PEM file `ca` only.
fn https_client_trusting(ca: &Path) -> Result<reqwest::Client, SetupError> {
    let ca_name = ca.display().to_string();
    let pem = std::fs::read(ca).map_err(|e| SetupError::Ca(ca_name.clone(), e.to_string()))?;
    https_client(&pem, &ca_name)
}

/// An HTTPS client that trusts the certificates in `ca_pem` only.
pub fn https_client(ca_pem: &[u8], ca_name: &str) -> Result<reqwest::Client, SetupError> {
    let certificates = reqwest::Certificate::from_pem_bundle(ca_pem)
        .map_err(|e| SetupError::Ca(ca_name.to_owned(), e.to_string()))?;
    // reqwest brings no crypto of its own (no aws-lc): ring, as object_store.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only(certificates)
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| SetupError::Client(error_chain(&e)))
}

/// What a valid access token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `iss`: the UAA's token endpoint, checked against the one expected.
    pub issuer: String,
    /// `sub`: the user's or the client's id.
    pub subject: String,
    /// Whom the token is for, by id and name.
    pub bearer: Bearer,
    /// The scopes of `scope` whose resource is among the token's `aud`
    /// (see `granted_scopes`).
    pub scopes: Vec<String>,
}

/// Who a UAA token is for, in the token's own claims (`user_id`,
/// `user_name`, `client_id`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Bearer {
    /// UAA's user GUID; absent in client-credentials tokens.
    pub user_id: Option<String>,
    /// The user's login name; absent in client-credentials tokens.
    pub user_name: Option<String>,
    /// The OAuth client the token was issued to.
    pub client_id: Option<String>,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The API's user for these claims of `uaa`'s tokens, carrying `token`
    /// to act for them. Their id is `user_id`, else (a user token without
    /// it) `sub`; a client-credentials token (no user) is
    /// `client:<client_id>`, which no UAA user id looks like.
    pub fn into_user(self, uaa: Uaa, token: &str) -> User {
        let client = || {
            format!(
                "client:{}",
                self.bearer.client_id.as_deref().unwrap_or(&self.subject)
            )
        };
        let (id, name) = match (&self.bearer.user_id, &self.bearer.user_name) {
            (Some(id), Some(name)) => (id.clone(), name.clone()),
            (Some(id), None) => (id.clone(), id.clone()),
            (None, Some(name)) => (self.subject.clone(), name.clone()),
            (None, None) => (client(), client()),
        };
        User {
            issuer: Issuer::Uaa {
                uaa,
                url: self.issuer,
            },
            id,
            name,
            scopes: self.scopes,
            token: Some(Secret::new(token)),
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    jti: String,
    #[serde(flatten)]
    bearer: Bearer,
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    aud: Vec<String>,
}

struct Key {
    algorithm: Algorithm,
    decoding: DecodingKey,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Key>,
    etag: Option<String>,
    /// The last fetch, successful or not.
    fetched: Option<Instant>,
    /// Why the last fetch failed, if it did.
    failure: Option<TokenError>,
}

/// Validates the access tokens of one UAA.
pub struct TokenValidator {
    uaa_url: String,
    issuer: String,
    http: reqwest::Client,
    clock_skew: Duration,
    refetch_interval: Duration,
    cache: Mutex<KeyCache>,
}

impl TokenValidator {
    /// `uaa_url` is the UAA's base URL, e.g. `https://uaa.example.com:8443`.
    pub fn new(uaa_url: &str, http: reqwest::Client, clock_skew: Duration) -> Self {
        let uaa_url = uaa_url.trim_end_matches('/').to_owned();
        Self {
            issuer: format!("{uaa_url}/oauth/token"),
            uaa_url,
            http,
            clock_skew,
            refetch_interval: REFETCH_INTERVAL,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    /// Sets how soon an unknown `kid` may make the keys be fetched again
    /// ([`REFETCH_INTERVAL`] by default).
    #[must_use]
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    pub fn uaa_url(&self) -> &str {
        &self.uaa_url
    }

    /// The `iss` this UAA's tokens carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `user`'s own token, when it is one of this UAA's. A user of another
    /// issuer (a static user, another UAA's) is known, but cannot act here.
    pub fn own_token<'u>(&self, user: &'u User) -> Option<&'u str> {
        match (user.issuer.url(), &user.token) {
            (Some(issuer), Some(token)) if issuer == self.issuer => Some(token.expose()),
            _ => None,
        }
    }

    /// Checks `token` and returns its claims.
    pub async fn validate(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::NotJwt)?;
        // header.jku and header.x5u are deliberately never looked at.
        let kid = header.kid.ok_or(TokenError::NoKeyId)?;
        let cache = self.key_for(&kid).await?;
        let key = cache.keys.get(&kid).expect("key_for checked the key");
        if header.alg != key.algorithm {
            return Err(TokenError::WrongAlgorithm {
                found: format!("{:?}", header.alg),
                expected: format!("{:?}", key.algorithm),
            });
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.clock_skew.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `aud` holds the scopes' resource prefixes: checked below, per scope.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss"]);
        let data =
            jsonwebtoken::decode::<RawClaims>(token, &key.decoding, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::ExpiredSignature => TokenError::Expired,
                    ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                    ErrorKind::MissingRequiredClaim(claim) => {
                        TokenError::Invalid(format!("it has no `{claim}` claim"))
                    }
                    ErrorKind::Json(_) => {
                        TokenError::Invalid("its claims are malformed".to_owned())
                    }
                    _ => TokenError::Invalid(format!("{:?}", e.kind())),
                }
            })?;
        drop(cache);
        let claims = data.claims;
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer {
                found: claims.iss,
                expected: self.issuer.clone(),
            });
        }
        if claims.jti.ends_with("-r") {
            return Err(TokenError::RefreshToken);
        }
        if claims.aud.is_empty() {
            return Err(TokenError::Invalid("it has no `aud` claim".to_owned()));
        }
        let scopes = granted_scopes(claims.scope, &claims.aud);
        Ok(Claims {
            issuer: claims.iss,
            subject: claims.sub,
            bearer: claims.bearer,
            scopes,
        })
    }

    /// The key cache, holding `kid`: fetched when it is empty, and again
    /// when `kid` is unknown and the last fetch is old enough.
    async fn key_for(
        &self,
        kid: &str,
    ) -> Result<tokio::sync::MutexGuard<'_, KeyCache>, TokenError> {
        let mut cache = self.cache.lock().await;
        if cache.keys.contains_key(kid) {
            return Ok(cache);
        }
        let may_fetch = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= self.refetch_interval);
        if may_fetch {
            // A failed fetch counts too: a UAA that is down is asked again
            // after the interval, not by every request meanwhile.
            cache.fetched = Some(Instant::now());
            let fetched = self.fetch_keys(&mut cache).await;
            cache.failure = fetched.as_ref().err().cloned();
            fetched?;
        }
        if cache.keys.contains_key(kid) {
            Ok(cache)
        } else if let Some(failure) = &cache.failure {
            Err(failure.clone())
        } else {
            Err(TokenError::UnknownKey {
                kid: kid.to_owned(),
                uaa: self.uaa_url.clone(),
            })
        }
    }

    async fn fetch_keys(&self, cache: &mut KeyCache) -> Result<(), TokenError> {
        let url = format!("{}/token_keys", self.uaa_url);
        let unavailable = |message: String| TokenError::KeysUnavailable {
            url: url.clone(),
            message,
        };
        let mut request = self
            .http
            .get(&url)
            .header(header::ACCEPT, "application/json");
        if let Some(etag) = &cache.etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(error_chain(&e)))?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(());
        }
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let keys: TokenKeys = response
            .json()
            .await
            .map_err(|e| unavailable(format!("bad response: {}", error_chain(&e))))?;
        let mut usable = HashMap::new();
        for key in keys.keys {
            let Some(kid) = key.kid.clone() else { continue };
            if let Some(key) = usable_key(&key) {
                usable.insert(kid, key);
            } else {
                tracing::debug!(kid, "skipping a token key that is not an RSA signing key");
            }
        }
        tracing::info!(uaa = %self.uaa_url, keys = usable.len(), "fetched the UAA's token keys");
        cache.keys = usable;
        cache.etag = etag;
        Ok(())
    }
}

/// Authenticates `token` with the validator `validator` yields (it may
/// first have to discover the UAA), as a user of `uaa`. A token that is not
/// a JWT is refused before anything is asked; a UAA that cannot be reached
/// is `Unavailable`, any other failure `Rejected` with its reason.
pub async fn authenticate(
    uaa: Uaa,
    validator: impl Future<Output = Result<Arc<TokenValidator>, String>>,
    token: &str,
) -> Result<User, AuthError> {
    if jsonwebtoken::decode_header(token).is_err() {
        return Err(AuthError::InvalidToken);
    }
    let validator = validator.await.map_err(AuthError::Unavailable)?;
    match validator.validate(token).await {
        Ok(claims) => Ok(claims.into_user(uaa, token)),
        Err(TokenError::NotJwt) => Err(AuthError::InvalidToken),
        Err(error @ TokenError::KeysUnavailable { .. }) => {
            Err(AuthError::Unavailable(error.to_string()))
        }
        Err(error) => Err(AuthError::Rejected(error.to_string())),
    }
}

/// The scopes whose resource (the part before the last dot, as UAA puts in
/// `aud`) is among the token's audiences: a scope for a resource the token
/// was not issued to grants nothing here.
fn granted_scopes(scopes: Vec<String>, audiences: &[String]) -> Vec<String> {
    scopes
        .into_iter()
        .filter(|scope| {
            let resource = scope.rsplit_once('.').map_or(scope.as_str(), |(r, _)| r);
            audiences.iter().any(|a| a == resource)
        })
        .collect()
}

/// An RSA signing key, with its algorithm pinned (RS256 when none is named).
fn usable_key(key: &TokenKey) -> Option<Key> {
    if key.kty != "RSA" || key.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let algorithm = match key.alg.as_deref().unwrap_or("RS256") {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        _ => return None,
    };
    let decoding = match (&key.n, &key.e, &key.value) {
        (Some(n), Some(e), _) => DecodingKey::from_rsa_components(n, e).ok()?,
        (_, _, Some(pem)) => DecodingKey::from_rsa_pem(pem.as_bytes()).ok()?,
        _ => return None,
    };
    Some(Key {
        algorithm,
        decoding,
    })
}

pub use pcap_proto::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_count_only_for_audiences_the_token_was_issued_to() {
        let scopes = vec![
            "bosh.admin".to_owned(),
            "cloud_controller.read".to_owned(),
            "openid".to_owned(),
        ];
        let granted = granted_scopes(scopes.clone(), &["bosh".into(), "openid".into()]);
        assert_eq!(granted, ["bosh.admin", "openid"]);
        assert!(granted_scopes(scopes, &["cf".into()]).is_empty());
    }

    #[test]
    fn only_rsa_signing_keys_are_used() {
        let key = |kty: &str, alg: Option<&str>, usage: Option<&str>| TokenKey {
            kid: Some("k".into()),
            alg: alg.map(Into::into),
            kty: kty.into(),
            usage: usage.map(Into::into),
            value: None,
            n: Some("AQAB".into()),
            e: Some("AQAB".into()),
        };
        assert!(usable_key(&key("RSA", Some("RS256"), Some("sig"))).is_some());
        assert_eq!(
            usable_key(&key("RSA", None, None)).map(|k| k.algorithm),
            Some(Algorithm::RS256)
        );
        assert!(usable_key(&key("RSA", Some("HS256"), Some("sig"))).is_none());
        assert!(usable_key(&key("MAC", Some("HS256"), None)).is_none());
        assert!(usable_key(&key("RSA", Some("RS256"), Some("enc"))).is_none());
    }

    #[tokio::test]
    async fn tokens_that_are_not_jwts_are_not_ours() {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let validator = TokenValidator::new("https://uaa.example.com/", http, Duration::ZERO);
        assert_eq!(validator.issuer(), "https://uaa.example.com/oauth/token");
        assert_eq!(
            validator.validate("alice-token").await,
            Err(TokenError::NotJwt)
        );
    }

    #[test]
    fn users_are_identified_by_user_id_then_subject_then_client() {
        let claims = Claims {
            issuer: "i".into(),
            subject: "s".into(),
            bearer: Bearer {
                user_id: Some("u-1".into()),
                user_name: Some("admin".into()),
                client_id: Some("bosh_cli".into()),
            },
            scopes: vec!["bosh.admin".into()],
        };
        let user = claims.clone().into_user(Uaa::Bosh, "secret");
        assert_eq!((user.id.as_str(), user.name.as_str()), ("u-1", "admin"));
        assert_eq!(
            user.issuer,
            Issuer::Uaa {
                uaa: Uaa::Bosh,
                url: "i".into()
            }
        );
        assert!(!format!("{user:?}").contains("secret"));
        let no_user_id = Claims {
            bearer: Bearer {
                user_id: None,
                ..claims.bearer.clone()
            },
            ..claims.clone()
        };
        assert_eq!(no_user_id.into_user(Uaa::Cf, "t").id, "s");
        let client = Claims {
            bearer: Bearer {
                user_id: None,
                user_name: None,
                ..claims.bearer.clone()
            },
            ..claims
        };
        let client = client.into_user(Uaa::Cf, "t");
        assert_eq!(
            (client.id.as_str(), client.name.as_str()),
            ("client:bosh_cli", "client:bosh_cli")
        );
    }

    #[test]
    fn a_failed_discovery_is_answered_from_memory_for_a_while() {
        let failed = FailedDiscovery::default();
        assert_eq!(failed.recent(), None);
        failed.record("cannot reach the BOSH director");
        let message = failed.recent().unwrap();
        assert!(
            message.starts_with("cannot reach the BOSH director (trying again in "),
            "{message}"
        );
        let expired = FailedDiscovery::with_retry(Duration::ZERO);
        expired.record("down");
        assert_eq!(expired.recent(), None);
    }

    #[test]
    fn a_key_id_cannot_forge_a_log_line() {
        let error = TokenError::UnknownKey {
            kid: format!(
                "k\n2026-12-04T00:00:00Z INFO audit: forged{}",
                "x".repeat(1000)
            ),
            uaa: "https://uaa".into(),
        };
        let message = error.to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("k\\n2026"), "{message}");
        assert!(message.len() < 400, "{message}");
    }
}
