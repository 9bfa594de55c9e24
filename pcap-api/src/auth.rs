//! Who is calling: bearer tokens to users. The static table from the
//! configuration and UAA-issued JWTs (`uaa`, through the BOSH resolver's
//! director) both implement `Authenticator`; `Chain` asks each in turn.
//! Tokens are never logged or put in error messages.

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::config;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The scopes the caller's token grants; empty for static users.
    pub scopes: Vec<String>,
    /// The token issuer (a UAA) that vouched for the caller; `None` for
    /// static users.
    pub issuer: Option<String>,
    /// The caller's own token, to act on their behalf (the BOSH director
    /// checks it again); `None` for static users.
    pub token: Option<Secret>,
}

impl User {
    /// A user from the static table.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            scopes: Vec::new(),
            issuer: None,
            token: None,
        }
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
/// decides; when none does, the most specific refusal is the answer.
pub struct Chain(Vec<Box<dyn Authenticator>>);

impl Chain {
    pub fn new(authenticators: Vec<Box<dyn Authenticator>>) -> Self {
        Self(authenticators)
    }
}

#[tonic::async_trait]
impl Authenticator for Chain {
    async fn authenticate(&self, token: &str) -> Result<User, AuthError> {
        let mut refusal = AuthError::InvalidToken;
        for authenticator in &self.0 {
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
    pub fn new(users: &[config::User]) -> Self {
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
            config::User {
                name: "alice".into(),
                token: "token-a".into(),
                admin: false,
            },
            config::User {
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

    #[test]
    fn debug_output_hides_tokens() {
        let user = config::User {
            name: "alice".into(),
            token: "secret".into(),
            admin: false,
        };
        assert!(!format!("{user:?}").contains("secret"));
    }
}
