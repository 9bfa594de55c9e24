//! Who is calling: bearer tokens to users, and who may do what (`Grant`).
//! The static table from the configuration and UAA-issued JWTs (`uaa`,
//! through the BOSH director's UAA and Cloud Controller's) all implement
//! `Authenticator`; `Chain` asks each in turn. A user is identified by
//! their issuer and their id there, never by their name alone. Tokens are
//! never logged or put in error messages.

use serde::Deserialize;
use subtle::ConstantTimeEq;
use thiserror::Error;

/// A `[[users]]` entry of the config: a static user and its token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticUser {
    pub name: String,
    pub token: String,
    /// Admins list and download every user's stored captures. This is the
    /// static user of that name, never a UAA user who shares the name.
    #[serde(default)]
    pub admin: bool,
}

impl std::fmt::Debug for StaticUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are never logged, not even by accident through `{:?}`.
        f.debug_struct("StaticUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Which UAA of the configuration vouched for a caller: `[bosh]`'s (the
/// director's UAA) or `[cf]`'s (Cloud Controller's). In the configuration
/// it is written `uaa = "bosh"` or `uaa = "cf"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Uaa {
    Bosh,
    Cf,
}

impl Uaa {
    /// `bosh` or `cf`, as in the configuration.
    pub fn key(self) -> &'static str {
        match self {
            Self::Bosh => "bosh",
            Self::Cf => "cf",
        }
    }

    /// The UAA, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Bosh => "the BOSH director's UAA",
            Self::Cf => "Cloud Foundry's UAA",
        }
    }

    /// How a user gets a token of it.
    pub fn log_in(self) -> &'static str {
        match self {
            Self::Bosh => "`bosh log-in`",
            Self::Cf => "`cf login`",
        }
    }
}

/// Who vouched for a caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Issuer {
    /// The `[[users]]` table of the configuration.
    Static,
    /// A UAA: which one, and its `iss` (`<uaa url>/oauth/token`).
    Uaa { uaa: Uaa, url: String },
}

impl Issuer {
    /// `static`, or the UAA's `iss`: what logs and stored-capture owners
    /// carry.
    pub fn label(&self) -> &str {
        match self {
            Self::Static => "static",
            Self::Uaa { url, .. } => url,
        }
    }

    /// The UAA's `iss`; `None` for static users.
    pub fn url(&self) -> Option<&str> {
        match self {
            Self::Static => None,
            Self::Uaa { url, .. } => Some(url),
        }
    }
}

/// An authenticated caller. Who they are is (`issuer`, `id`); `name` is
/// for people to read and never decides anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Who vouched for the caller: the static table or a UAA.
    pub issuer: Issuer,
    /// Stable within the issuer: a static user's name; a UAA token's
    /// `user_id` (else `sub`); `client:<client id>` for a
    /// client-credentials token.
    pub id: String,
    /// For display: a static user's name, a UAA token's `user_name`, or
    /// `client:<client id>`.
    pub name: String,
    /// The scopes the caller's token grants; empty for static users.
    pub scopes: Vec<String>,
    /// The caller's own token, to act on their behalf (the BOSH director
    /// and Cloud Controller check it again); `None` for static users.
    pub token: Option<Secret>,
}

impl User {
    /// A user from the static table.
    pub fn named(name: &str) -> Self {
        Self {
            issuer: Issuer::Static,
            id: name.to_owned(),
            name: name.to_owned(),
            scopes: Vec::new(),
            token: None,
        }
    }

    /// One string per identity, for keys (per-user limits): the issuer's
    /// label and the id, which cannot be confused with another pair.
    pub fn key(&self) -> String {
        format!("{}\n{}", self.issuer.label(), self.id)
    }

    /// Whether the caller's token came from `uaa` and carries `scope`.
    pub fn has_scope_of(&self, uaa: Uaa, scope: &str) -> bool {
        matches!(&self.issuer, Issuer::Uaa { uaa: u, .. } if *u == uaa)
            && self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the caller is the static user `name`.
    pub fn is_static(&self, name: &str) -> bool {
        self.issuer == Issuer::Static && self.id == name
    }

    /// "alice (static)", "dev (https://uaa.example.com/oauth/token)": for
    /// messages to the caller.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.issuer.label())
    }
}

/// Who may do something: static users by name, and holders of a scope in
/// a token of a named UAA. Used by `[[targets]] allow` and
/// `[store] admins`. Empty admits nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Names of `[[users]]`.
    #[serde(default)]
    pub users: Vec<String>,
    /// A scope of a UAA's tokens: `{ uaa = "bosh", scope = "bosh.admin" }`.
    #[serde(default)]
    pub scopes: Vec<ScopeGrant>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeGrant {
    pub uaa: Uaa,
    pub scope: String,
}

impl Grant {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.scopes.is_empty()
    }

    pub fn admits(&self, user: &User) -> bool {
        self.users.iter().any(|name| user.is_static(name))
            || self
                .scopes
                .iter()
                .any(|grant| user.has_scope_of(grant.uaa, &grant.scope))
    }
}

/// A bearer token, kept out of `{:?}` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: &str) -> Self {
        Self(value.to_owned())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the request carries no \"authorization: Bearer <token>\" metadata")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// A token an authenticator recognised (a JWT of its issuer) and
    /// refused, with the reason.
    #[error("the bearer token is not valid: {0}")]
    Rejected(String),
    /// The token cannot be checked now (the UAA or director is down).
    #[error("cannot check the bearer token: {0}")]
    Unavailable(String),
}

#[tonic::async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, token: &str) -> Result<User, AuthError>;

    /// The `iss` of the tokens this authenticator checks, once it is known
    /// (a UAA's, after discovery); `None` otherwise.
    fn issuer(&self) -> Option<String> {
        None
    }
}

/// The `iss` a JWT claims, unverified: only to pick who verifies it.
fn claimed_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Issuer {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Issuer>(token)
        .ok()
        .map(|claims| claims.iss)
}

/// The token from an `authorization` header value: `Bearer <token>`, the
/// scheme in any case.
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::MissingToken)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MissingToken)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// Several authenticators, asked in order. The first to accept the token
/// decides; when none does, the most specific refusal is the answer. An
/// authenticator whose issuer is known is skipped for a JWT that claims
/// another `iss` (unverified: the one asked still verifies everything), so
/// that a Cloud Foundry token never waits for the BOSH director or its UAA,
/// nor the other way round.
pub struct Chain(Vec<Box<dyn Authenticator>>);

impl Chain {
    pub fn new(authenticators: Vec<Box<dyn Authenticator>>) -> Self {
        Self(authenticators)
    }
}

#[tonic::async_trait]
impl Authenticator for Chain {
    async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        let claimed = claimed_issuer(token);
        let mut refusal = AuthError::InvalidToken;
        for authenticator in &self.0 {
            if let (Some(claimed), Some(issuer)) = (&claimed, authenticator.issuer())
                && *claimed != issuer
            {
                continue;
            }
            match authenticator.authenticate(token).await {
                Ok(user) => return Ok(user),
                Err(AuthError::InvalidToken) => {}
                Err(error) => refusal = error,
            }
        }
        Err(refusal)
    }
}

/// Users and tokens from the `[[users]]` tables.
pub struct StaticTokens {
    users: Vec<(String, Vec<u8>)>,
}

impl StaticTokens {
    pub fn new(users: &[StaticUser]) -> Self {
        Self {
            users: users
                .iter()
                .map(|u| (u.name.clone(), u.token.as_bytes().to_vec()))
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl Authenticator for StaticTokens {
    async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        // Compare with every token, in constant time, so that neither the
        // position of a match nor a common prefix shows in the timing.
        let mut found = None;
        for (name, expected) in &self.users {
            if bool::from(expected.as_slice().ct_eq(token.as_bytes())) {
                found = Some(name);
            }
        }
        found
            .map(|name| User::named(name))
            .ok_or(AuthError::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> StaticTokens {
        StaticTokens::new(&[
            StaticUser {
                name: "alice".into(),
                token: "token-a".into(),
                admin: false,
            },
            StaticUser {
                name: "bob".into(),
                token: "token-b".into(),
                admin: false,
            },
        ])
    }

    async fn check(token: &str) -> Result<User, AuthError> {
        tokens().authenticate(token).await
    }

    #[tokio::test]
    async fn known_tokens_give_their_user() {
        assert_eq!(check("token-a").await.unwrap().name, "alice");
        assert_eq!(check("token-b").await.unwrap().name, "bob");
    }

    #[tokio::test]
    async fn other_tokens_are_refused() {
        for token in ["", "token-", "token-ab", "TOKEN-A", "alice"] {
            assert_eq!(check(token).await, Err(AuthError::InvalidToken), "{token}");
        }
    }

    /// Refuses every token, counting the calls; may know its issuer.
    struct Counting {
        issuer: Option<String>,
        calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl Authenticator for Counting {
        async fn authenticate(&self, _token: &str) -> Result<User, AuthError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(AuthError::Rejected("no".into()))
        }

        fn issuer(&self) -> Option<String> {
            self.issuer.clone()
        }
    }

    #[tokio::test]
    async fn a_token_goes_only_to_the_authenticators_of_its_claimed_issuer() {
        use std::sync::{Arc, atomic::Ordering};
        let bosh_calls = Arc::default();
        let undiscovered_calls = Arc::default();
        let chain = Chain::new(vec![
            Box::new(Counting {
                issuer: Some("https://bosh-uaa/oauth/token".into()),
                calls: Arc::clone(&bosh_calls),
            }),
            Box::new(Counting {
                issuer: None,
                calls: Arc::clone(&undiscovered_calls),
            }),
        ]);
        let jwt = |iss: &str| {
            let claims = serde_json::json!({ "iss": iss });
            let key = jsonwebtoken::EncodingKey::from_secret(b"k");
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
        };
        // Claims Cloud Foundry's UAA: the BOSH authenticator is not asked.
        let _ = chain.authenticate(&jwt("https://cf-uaa/oauth/token")).await;
        assert_eq!(bosh_calls.load(Ordering::Relaxed), 0);
        assert_eq!(undiscovered_calls.load(Ordering::Relaxed), 1);
        // Claims BOSH's, or is no JWT: everyone whose issuer fits is asked.
        let _ = chain
            .authenticate(&jwt("https://bosh-uaa/oauth/token"))
            .await;
        let _ = chain.authenticate("static-token").await;
        assert_eq!(bosh_calls.load(Ordering::Relaxed), 2);
        assert_eq!(undiscovered_calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_bearer_scheme_is_required() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::MissingToken));
        assert_eq!(bearer_token(Some("abc")), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(Some("Basic abc")),
            Err(AuthError::MissingToken)
        );
        assert_eq!(bearer_token(Some("Bearer ")), Err(AuthError::MissingToken));
    }

    fn uaa_user(uaa: Uaa, id: &str, name: &str, scopes: &[&str]) -> User {
        User {
            issuer: Issuer::Uaa {
                uaa,
                url: "https://uaa.example.com/oauth/token".into(),
            },
            id: id.into(),
            name: name.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            token: None,
        }
    }

    #[test]
    fn grants_admit_static_users_by_name_and_uaa_users_by_scope() {
        let grant = Grant {
            users: vec!["carol".into()],
            scopes: vec![ScopeGrant {
                uaa: Uaa::Bosh,
                scope: "bosh.admin".into(),
            }],
        };
        assert!(grant.admits(&User::named("carol")));
        assert!(!grant.admits(&User::named("alice")));
        // A UAA user named (or with the id) like a static user is not them.
        assert!(!grant.admits(&uaa_user(Uaa::Cf, "carol", "carol", &[])));
        assert!(grant.admits(&uaa_user(Uaa::Bosh, "u-1", "admin", &["bosh.admin"])));
        // The scope counts only from the UAA the grant names.
        assert!(!grant.admits(&uaa_user(Uaa::Cf, "u-1", "admin", &["bosh.admin"])));
        assert!(!grant.admits(&uaa_user(Uaa::Bosh, "u-2", "viewer", &["bosh.read"])));
        assert!(!Grant::default().admits(&User::named("carol")));
        assert!(Grant::default().is_empty());
    }

    #[test]
    fn identities_of_different_issuers_differ() {
        let static_carol = User::named("carol");
        let uaa_carol = uaa_user(Uaa::Cf, "carol", "carol", &[]);
        assert_ne!(static_carol.key(), uaa_carol.key());
        assert_eq!(static_carol.describe(), "carol (static)");
    }

    #[test]
    fn debug_output_hides_tokens() {
        let user = StaticUser {
            name: "alice".into(),
            token: "secret".into(),
            admin: false,
        };
        assert!(!format!("{user:?}").contains("secret"));
    }
}
