//! `pcap app`: capture the instances of a Cloud Foundry app, with the cf
//! CLI's own login.
//!
//! The token, the targeted Cloud Controller, org and space come from the cf
//! CLI's configuration (see `cf_config`; an expired token is refreshed
//! first). APP_NAME is resolved in the targeted space with the user's token
//! (`GET /v3/apps?names=..&space_guids=..`); the pcap API is `--api`,
//! `PCAP_API`, or Cloud Controller's URL with `api.` replaced by `pcap.`.
//! The API checks everything again with Cloud Controller.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, CommandFactory as _};
use pcap_platform::cloud_controller::{App, CloudController, Error as CcError};
use pcap_platform::uaa::expires_within;
use pcap_proto::v1::{CfAppTarget, StartCapture, target};
use reqwest::StatusCode;
use tonic::transport::Uri;

use crate::captures::Connection;
use crate::cf_config::{self, CfConfig, Named};
use crate::{Cli, RemoteFlags, describe};

/// An access token this close to expiring is refreshed first.
const REFRESH_MARGIN: Duration = Duration::from_mins(1);

// The filter applies within each instance's container.
#[derive(Debug, Args)]
#[command(mut_arg("expression", |arg| arg
    .help("A tcpdump filter expression, e.g. `tcp port 8080`. It applies within \
           each instance's own traffic and can never widen it.")))]
pub struct AppArgs {
    /// The app's name, in the space `cf target` points at.
    #[arg(value_name = "APP_NAME")]
    app: String,

    /// Capture only these instance indices (comma-separated or repeated);
    /// default: every instance.
    #[arg(long = "instance", value_name = "INDEX", value_delimiter = ',')]
    instances: Vec<u32>,

    /// The process type.
    #[arg(long, value_name = "TYPE", default_value = "web")]
    process: String,

    /// Follow the app: also capture instances that start during the
    /// capture (a scale-up, a restart, a move to another cell), each as a
    /// new interface `APP/INDEX#N`, and reconnect when a cell's agent
    /// restarts (the gap is reported).
    #[arg(long)]
    follow: bool,

    /// The pcap-api to ask; default: Cloud Controller's URL with `api.`
    /// replaced by `pcap.` (https://api.SYS → https://pcap.SYS).
    #[arg(long, env = "PCAP_API", value_name = "URL")]
    api: Option<Uri>,

    /// Verify the pcap API's, Cloud Controller's and UAA's certificates
    /// against this CA (PEM) as well as the system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,

    /// Do not verify the pcap API's certificate, and allow http:// URLs.
    /// For development only: anyone in between can read the token.
    #[arg(long)]
    insecure: bool,

    #[command(flatten)]
    flags: RemoteFlags,
}

impl AppArgs {
    /// How to reach the API at `api`, with `token`.
    fn connection(&self, api: Uri, token: String) -> Connection {
        Connection {
            api,
            ca: self.ca.clone(),
            insecure: self.insecure,
            token: Some(token),
        }
    }

    /// The capture of the app `app_guid`: no interfaces, each instance's
    /// capture is pinned to its container.
    fn start_request(&self, app_guid: &str) -> StartCapture {
        let target = target::Kind::CfApp(CfAppTarget {
            app_guid: app_guid.to_owned(),
            process_type: self.process.clone(),
            instances: self.instances.clone(),
            follow: self.follow,
        });
        self.flags.start_request(target, &[])
    }
}

/// What to do when the API refuses an app capture with `code`.
pub fn refusal_hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => " (log in again with `cf login`)",
        tonic::Code::PermissionDenied => {
            " (ask a space manager for the Space Developer role: \
             `cf set-space-role USER ORG SPACE SpaceDeveloper`)"
        }
        tonic::Code::NotFound => " (check the app name, `cf target`, --process and --instance)",
        tonic::Code::ResourceExhausted => " (too many captures are running; try again later)",
        tonic::Code::InvalidArgument => " (check the snaplen and filter expression)",
        tonic::Code::Unavailable => {
            " (Cloud Controller or its UAA cannot be reached by the pcap API)"
        }
        _ => "",
    }
}

/// What to add when the pcap API cannot be reached.
pub const UNREACHABLE_HINT: &str = " (set --api or PCAP_API to your pcap API's URL)";

/// Where the login and the targeted org and space come from: the only
/// difference between `pcap app` and `cf pcap`.
pub enum Login {
    /// `~/.cf/config.json`, refreshed here when the token has expired.
    Config,
    /// The running cf CLI, asked over its plugin RPC (cf refreshes the
    /// token itself).
    Plugin(PluginLogin),
}

/// What the cf CLI told the plugin.
pub struct PluginLogin {
    /// Cloud Controller's URL (`ApiEndpoint`).
    pub cc: String,
    /// The access token without its `bearer ` prefix (`AccessToken`).
    pub token: String,
    /// `cf api --skip-ssl-validation` (`IsSSLDisabled`), for Cloud
    /// Controller.
    pub ssl_disabled: bool,
    pub org: Named,
    pub space: Named,
}

/// Runs `pcap app`.
pub fn main(args: &AppArgs) -> ExitCode {
    run(args, Login::Config, || {
        let mut command = Cli::command();
        command.build();
        command
            .find_subcommand_mut("app")
            .expect("app is a subcommand")
            .clone()
    })
}

/// Runs the app capture with the login from `login`; `command` is the
/// clap command whose usage a validation error shows.
pub fn run(args: &AppArgs, login: Login, command: impl Fn() -> clap::Command) -> ExitCode {
    if let Err(message) = args.flags.check() {
        command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit();
    }
    let result = crate::runtime().block_on(async {
        let (api, token, app_guid) = prepare(args, login).await?;
        let connection = args.connection(api, token);
        if let Err(message) = connection.validate() {
            command()
                .error(clap::error::ErrorKind::ValueValidation, message)
                .exit();
        }
        let start = args.start_request(&app_guid);
        crate::capture(&connection, &args.flags, start).await
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pcap: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

enum Lookup {
    Unauthorized,
    Failed(anyhow::Error),
}

/// Finds the app and the pcap API with the login from `login`: (API,
/// access token, app GUID).
async fn prepare(args: &AppArgs, login: Login) -> anyhow::Result<(Uri, String, String)> {
    let (cc, org, space, token, found) = match login {
        Login::Config => from_config(args).await?,
        Login::Plugin(login) => {
            let http = cf_config::http_client(args.ca.as_deref(), login.ssl_disabled)?;
            let client = CloudController::new(&login.cc, http);
            let found = find_app(&client, &args.app, &login.space.guid, &login.token).await;
            (login.cc, login.org, login.space, login.token, found)
        }
    };
    let app = match found {
        Ok(Some(app)) => app,
        Ok(None) => bail!(
            "app \"{}\" not found in org \"{}\" / space \"{}\" (check `cf apps` and `cf target`)",
            args.app,
            org.name,
            space.name
        ),
        Err(Lookup::Unauthorized) => {
            bail!("Cloud Controller at {cc} did not accept your login; run `cf login` again")
        }
        Err(Lookup::Failed(error)) => return Err(error),
    };
    let api = if let Some(api) = &args.api {
        api.clone()
    } else {
        let derived = cf_config::derive_api(&cc).with_context(|| {
            format!(
                "cannot derive the pcap API from Cloud Controller's URL {cc} \
                 (expected https://api.SYSTEM_DOMAIN); set --api or PCAP_API"
            )
        })?;
        derived
            .parse()
            .with_context(|| format!("{derived} is not a URL; set --api or PCAP_API"))?
    };
    eprintln!(
        "pcap: capturing app \"{}\" ({}) in org \"{}\" / space \"{}\" through {api}",
        app.name, app.guid, org.name, space.name
    );
    Ok((api, token, app.guid))
}

/// `pcap app`'s login: reads it (refreshing it when needed) and looks the
/// app up, refreshing once more if Cloud Controller refuses a token before
/// its time: (Cloud Controller, org, space, token, the lookup).
async fn from_config(
    args: &AppArgs,
) -> anyhow::Result<(String, Named, Named, String, Result<Option<App>, Lookup>)> {
    let path = cf_config::path()?;
    let mut config = CfConfig::load(&path)?;
    let cc = config.target()?;
    if config.access_token().is_none() && config.refresh_token().is_none() {
        bail!("not logged in to Cloud Foundry at {cc}; run `cf login` first");
    }
    let space = config.space()?;
    let org = config.org();
    let http = cf_config::http_client(args.ca.as_deref(), config.ssl_disabled())?;
    let client = CloudController::new(&cc, http);
    let fresh = config
        .access_token()
        .is_some_and(|t| !expires_within(&t, REFRESH_MARGIN));
    if !fresh {
        refresh(&client, &mut config).await?;
    }
    let mut token = config.access_token().unwrap_or_default();
    let mut found = find_app(&client, &args.app, &space.guid, &token).await;
    if matches!(found, Err(Lookup::Unauthorized)) && fresh && config.refresh_token().is_some() {
        // Revoked or otherwise refused before its time: one refresh.
        refresh(&client, &mut config).await?;
        token = config.access_token().unwrap_or_default();
        found = find_app(&client, &args.app, &space.guid, &token).await;
    }
    Ok((cc, org, space, token, found))
}

/// The app `name` in `space`, if Cloud Controller lets the user see it.
async fn find_app(
    cc: &CloudController,
    name: &str,
    space: &str,
    token: &str,
) -> Result<Option<App>, Lookup> {
    match cc.apps_named(name, space, token).await {
        Ok(apps) => Ok(apps.resources.into_iter().find(|a| a.name == name)),
        Err(CcError::Status {
            status: StatusCode::UNAUTHORIZED,
            ..
        }) => Err(Lookup::Unauthorized),
        Err(CcError::Status { status, .. }) => Err(Lookup::Failed(anyhow::anyhow!(
            "Cloud Controller at {} answered HTTP {status} to the app lookup",
            cc.url()
        ))),
        Err(CcError::Malformed { source, .. }) => Err(Lookup::Failed(
            anyhow::Error::new(source).context("Cloud Controller's app list is not valid"),
        )),
        Err(error) => Err(Lookup::Failed(error.into())),
    }
}

/// Refreshes the access token through UAA and rewrites the configuration.
async fn refresh(cc: &CloudController, config: &mut CfConfig) -> anyhow::Result<()> {
    let Some(refresh_token) = config.refresh_token() else {
        bail!("your Cloud Foundry login has expired and there is no refresh token; run `cf login`");
    };
    let uaa = match config.uaa_endpoint() {
        Some(uaa) => uaa,
        None => uaa_of(cc).await?,
    };
    let (access, refreshed) = cf_config::LOGIN
        .refresh(cc.http(), &uaa, &refresh_token)
        .await?;
    config.store_tokens(&access, refreshed.as_deref())?;
    eprintln!(
        "pcap: refreshed the access token in {}",
        config.path().display()
    );
    Ok(())
}

/// The UAA named by Cloud Controller's root.
async fn uaa_of(cc: &CloudController) -> anyhow::Result<String> {
    let root = cc.root().await.map_err(|error| match error {
        CcError::Malformed { source, .. } => {
            anyhow::Error::new(source).context("Cloud Controller's root document is not valid")
        }
        other => other.into(),
    })?;
    root.uaa_url()
        .context("Cloud Controller names no UAA, so the token cannot be refreshed")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::Command;

    fn parse(args: &[&str]) -> AppArgs {
        let argv = ["pcap", "app"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::App(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn instances_process_and_filter() {
        let args = parse(&[
            "my-app",
            "--instance",
            "0,2",
            "--instance",
            "3",
            "tcp",
            "port",
            "8080",
        ]);
        assert_eq!(args.instances, [0, 2, 3]);
        assert_eq!(args.process, "web");
        let start = args.start_request("guid-1");
        let Some(target::Kind::CfApp(app)) = start.target.unwrap().kind else {
            panic!("not an app target");
        };
        assert_eq!(app.app_guid, "guid-1");
        assert_eq!(app.instances, [0, 2, 3]);
        assert_eq!(start.options.unwrap().filter, "tcp port 8080");
    }
}
