//! UAA: the token endpoint's grants (`POST /oauth/token`), the signing keys
//! it publishes (`GET /token_keys`), and when a token expires.
//!
//! [`refresh`] trades a refresh token for new tokens as the cf and bosh
//! CLIs do (their client, with the empty secret); [`expires_within`] reads
//! a token's `exp` without checking its signature, to refresh before
//! Cloud Controller or the director would refuse it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The form of `POST /oauth/token`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct TokenRequest {
    /// `refresh_token`, `password`, `client_credentials`...
    pub grant_type: String,
    /// The refresh token to trade, for the `refresh_token` grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The user's login name, for the `password` grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The user's password, for the `password` grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl TokenRequest {
    /// The `refresh_token` grant.
    pub fn refresh(refresh_token: &str) -> Self {
        Self {
            grant_type: "refresh_token".to_owned(),
            refresh_token: Some(refresh_token.to_owned()),
            ..Self::default()
        }
    }
}

/// The token endpoint's answer to a grant.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: bearer ...`.
    pub access_token: String,
    /// `bearer`.
    #[serde(default)]
    pub token_type: String,
    /// Absent when the UAA keeps the refresh token the client has.
    pub refresh_token: Option<String>,
    /// Seconds the access token is valid for.
    pub expires_in: Option<i64>,
    /// The scopes granted, separated by spaces.
    pub scope: Option<String>,
    /// The access token's id (its `jti` claim).
    pub jti: Option<String>,
}

/// The token endpoint's refusal (RFC 6749 §5.2).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct OAuthError {
    /// The error code, e.g. `invalid_grant`, `invalid_token`.
    pub error: String,
    /// What went wrong, in words, when the server says.
    #[serde(default)]
    pub error_description: String,
}

/// `GET /token_keys`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct TokenKeys {
    pub keys: Vec<TokenKey>,
}

/// One published key: RSA keys as PEM (`value`) and as `n`/`e`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct TokenKey {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub kty: String,
    #[serde(rename = "use")]
    pub usage: Option<String>,
    pub value: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
}

/// The `exp` of `token` (a JWT), in seconds since the Unix epoch, read
/// without checking the signature; `None` when it cannot be read.
pub fn expiry(token: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Expiry {
        exp: u64,
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Expiry>(&json).ok().map(|e| e.exp)
}

/// Whether `token` (a JWT) expires within `margin`, by its `exp` claim.
/// Tokens that cannot be read count as expired.
pub fn expires_within(token: &str, margin: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    expiry(token).is_none_or(|exp| exp <= now + margin.as_secs())
}

#[cfg(feature = "client")]
pub use client::{Error, refresh};

#[cfg(feature = "client")]
mod client {
    use reqwest::{StatusCode, header};
    use thiserror::Error;

    use super::{TokenRequest, TokenResponse};

    /// Why a refresh gave no new access token. `url` is the token
    /// endpoint's.
    #[derive(Debug, Error)]
    pub enum Error {
        #[error("cannot reach the UAA at {url} to refresh the token")]
        Unreachable {
            url: String,
            #[source]
            source: reqwest::Error,
        },
        /// 400 or 401: the refresh token is no longer good.
        #[error("the UAA refused to refresh the token (HTTP {status})")]
        Refused { status: StatusCode },
        #[error("the UAA at {url} answered HTTP {status} to the token refresh")]
        Status { url: String, status: StatusCode },
        #[error("the UAA's token response is not valid")]
        Malformed {
            #[source]
            source: reqwest::Error,
        },
        #[error("the UAA sent an empty access token")]
        EmptyAccessToken,
    }

    /// Trades `refresh_token` for new tokens at the UAA `uaa_url` as
    /// `client`, with the empty secret the cf and bosh CLIs use.
    pub async fn refresh(
        http: &reqwest::Client,
        uaa_url: &str,
        client: &str,
        refresh_token: &str,
    ) -> Result<TokenResponse, Error> {
        let url = format!("{}/oauth/token", uaa_url.trim_end_matches('/'));
        let response = http
            .post(&url)
            .basic_auth(client, Some(""))
            .header(header::ACCEPT, "application/json")
            .form(&TokenRequest::refresh(refresh_token))
            .send()
            .await
            .map_err(|source| Error::Unreachable {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::BAD_REQUEST {
            return Err(Error::Refused { status });
        }
        if !status.is_success() {
            return Err(Error::Status { url, status });
        }
        let tokens: TokenResponse = response
            .json()
            .await
            .map_err(|source| Error::Malformed { source })?;
        if tokens.access_token.is_empty() {
            return Err(Error::EmptyAccessToken);
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(exp: u64) -> String {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"exp":{exp},"sub":"u"}}"#));
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln")
    }

    #[test]
    fn expiry_comes_from_the_exp_claim() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(expiry(&token(now + 3600)), Some(now + 3600));
        assert!(!expires_within(&token(now + 3600), Duration::from_mins(1)));
        assert!(expires_within(&token(now + 10), Duration::from_mins(1)));
        assert!(expires_within("not-a-jwt", Duration::from_mins(1)));
    }

    #[test]
    fn the_refresh_grant_is_a_form_of_two_fields() {
        let form = serde_json::to_value(TokenRequest::refresh("r")).unwrap();
        assert_eq!(
            form,
            serde_json::json!({"grant_type": "refresh_token", "refresh_token": "r"})
        );
        let answer: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"bearer"}"#).unwrap();
        assert_eq!(answer.refresh_token, None);
    }
}
