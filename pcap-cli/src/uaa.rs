//! Refreshing an access token at a UAA, as the cf and bosh CLIs do.

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The UAA's answer to a refresh.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Trades `refresh_token` for new tokens at `uaa_url` as `client` (with
/// the empty secret the cf and bosh CLIs use). `login` is the command that
/// logs in again, for the message when the UAA refuses.
pub async fn refresh(
    http: &reqwest::Client,
    uaa_url: &str,
    client: &str,
    refresh_token: &str,
    login: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let url = format!("{}/oauth/token", uaa_url.trim_end_matches('/'));
    let response = http
        .post(&url)
        .basic_auth(client, Some(""))
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .with_context(|| format!("cannot reach the UAA at {url} to refresh the token"))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::BAD_REQUEST {
        bail!("the UAA refused to refresh the token (HTTP {status}); log in again with `{login}`");
    }
    if !status.is_success() {
        bail!("the UAA at {url} answered HTTP {status} to the token refresh");
    }
    let tokens: TokenResponse = response
        .json()
        .await
        .context("the UAA's token response is not valid")?;
    if tokens.access_token.is_empty() {
        bail!("the UAA sent an empty access token");
    }
    Ok((tokens.access_token, tokens.refresh_token))
}
