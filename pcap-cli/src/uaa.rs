//! Refreshing an access token at a UAA, as the cf and bosh CLIs do, with
//! the hint of the command that logs in again.

use anyhow::bail;
use pcap_platform::uaa::{self, Error};

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
    match uaa::refresh(http, uaa_url, client, refresh_token).await {
        Ok(tokens) => Ok((tokens.access_token, tokens.refresh_token)),
        Err(Error::Refused { status }) => bail!(
            "the UAA refused to refresh the token (HTTP {status}); log in again with `{login}`"
        ),
        Err(error) => Err(error.into()),
    }
}
