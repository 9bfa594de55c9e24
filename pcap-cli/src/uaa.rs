//! Refreshing an access token at a UAA, as the cf and bosh CLIs do, with
//! the hint of the command that logs in again.

use anyhow::bail;
use pcap_platform::uaa::{self, Error};

/// A CLI whose UAA log-in pcap reuses: its UAA client (with the empty
/// secret the cf and bosh CLIs use) and the command that logs in again.
pub struct Login {
    pub client: &'static str,
    pub command: &'static str,
}

impl Login {
    /// Trades `refresh_token` for new tokens at `uaa_url`; when the UAA
    /// refuses, the message names the command that logs in again.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        uaa_url: &str,
        refresh_token: &str,
    ) -> anyhow::Result<(String, Option<String>)> {
        match uaa::refresh(http, uaa_url, self.client, refresh_token).await {
            Ok(tokens) => Ok((tokens.access_token, tokens.refresh_token)),
            Err(Error::Refused { status }) => bail!(
                "the UAA refused to refresh the token (HTTP {status}); log in again with `{}`",
                self.command
            ),
            Err(error) => Err(error.into()),
        }
    }
}
