//! Who is calling: bearer tokens to users. The static table from the
//! configuration stands in until UAA lands; both implement `Authenticator`.
//! Tokens are never logged or put in error messages.

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::config;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the request carries no \"authorization: Bearer <token>\" metadata")]
    MissingToken,
    #[error("the bearer token is not valid")]
    InvalidToken,
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
            .map(|name| User { name: name.clone() })
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
            },
            config::User {
                name: "bob".into(),
                token: "token-b".into(),
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
        };
        assert!(!format!("{user:?}").contains("secret"));
    }
}
