//! `pcap bosh`: capture VMs of a BOSH deployment, with the BOSH CLI's own
//! login.
//!
//! The token comes from the BOSH CLI's configuration (refreshed through the
//! director's UAA when it has expired, see `bosh_config`). Before starting,
//! the command lists the deployment's instances at the director with that
//! token and shows the ones it is about to capture; above
//! [`CONFIRM_ABOVE`] instances it asks on a terminal unless `-n` is given.
//! The API checks everything again: the director is asked with the user's
//! own token there too.

use std::io::{self, BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use pcap_platform::director::{self, Error as DirectorError, Instance};
use pcap_proto::error_chain;
use pcap_proto::flags::InterfaceFlags;
use pcap_proto::v1::{BoshTarget, StartCapture, target};
use reqwest::StatusCode;
use tonic::transport::Uri;

use crate::bosh_config::{self, BoshConfig, Environment, REFRESH_MARGIN};
use crate::captures::Connection;
use crate::{C2cFlag, RemoteFlags, describe};

/// More instances than this need a confirmation on a terminal.
pub const CONFIRM_ABOVE: usize = 5;
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

// The filter expression's positional arguments take instance IDs first.
// -e and -n are the BOSH CLI's environment and non-interactive here:
// tcpdump's are --link-header and --numeric.
#[derive(Debug, Args)]
#[command(mut_arg("expression", |arg| arg
    .value_name("ID|EXPRESSION")
    .help("Instance IDs, then a tcpdump filter expression, e.g. \
           `0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e6f tcp port 443`")))]
#[command(mut_arg("link_header", |arg| arg.short(None)))]
#[command(mut_arg("numeric", |arg| arg.short(None)))]
pub struct BoshArgs {
    /// The BOSH environment: an alias or director URL from the BOSH CLI's
    /// configuration.
    #[arg(
        short = 'e',
        long = "environment",
        env = "BOSH_ENVIRONMENT",
        value_name = "ENV"
    )]
    environment: String,

    /// The deployment whose VMs to capture.
    #[arg(
        short = 'd',
        long = "deployment",
        env = "BOSH_DEPLOYMENT",
        value_name = "DEPLOYMENT"
    )]
    deployment: String,

    /// An instance group to capture (repeatable).
    #[arg(
        short = 'g',
        long = "instance-group",
        value_name = "GROUP",
        required = true
    )]
    groups: Vec<String>,

    /// Capture only this instance (its ID, as `bosh instances` shows;
    /// repeatable). Leading arguments that are instance IDs count too.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,

    /// The pcap-api to ask, e.g. https://pcap-api.example.com:8443.
    #[arg(long, env = "PCAP_API", value_name = "URL")]
    api: Uri,

    /// Verify the API's certificate against this CA (PEM) instead of the
    /// system's roots.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    ca: Option<PathBuf>,

    /// Do not verify the API's certificate, and allow http:// URLs.
    /// For development only: anyone in between can read the token.
    #[arg(long)]
    insecure: bool,

    /// The BOSH CLI's configuration; default ~/.bosh/config.
    #[arg(long = "bosh-config", env = "BOSH_CONFIG", value_name = "FILE")]
    bosh_config: Option<PathBuf>,

    #[command(flatten)]
    interfaces: InterfaceFlags,

    #[command(flatten)]
    flags: RemoteFlags,

    /// Do not ask for confirmation, however many instances.
    #[arg(short = 'n', long = "non-interactive")]
    non_interactive: bool,

    #[command(flatten)]
    c2c: C2cFlag,
}

impl BoshArgs {
    /// Instance IDs (`--id` and leading IDs) and the filter expression.
    fn ids_and_expression(&self) -> (Vec<String>, Vec<String>) {
        let rest = &self.flags.capture.expression;
        let mut ids = self.ids.clone();
        let leading = rest.iter().take_while(|a| is_instance_id(a)).count();
        ids.extend(rest[..leading].iter().cloned());
        (ids, rest[leading..].to_vec())
    }

    /// The BOSH capture of instances `ids` (none: every instance of the
    /// groups), filtered by `expression`.
    fn start_request(&self, ids: Vec<String>, expression: Vec<String>) -> StartCapture {
        let mut flags = self.flags.clone();
        flags.capture.expression = expression;
        let target = target::Kind::Bosh(BoshTarget {
            deployment: self.deployment.clone(),
            groups: self.groups.clone(),
            instances: ids,
        });
        self.c2c
            .apply(flags.start_request(target, &self.interfaces.interfaces))
    }

    /// How to reach the API, with `token`.
    fn connection(&self, token: Option<String>) -> Connection {
        Connection {
            api: self.api.clone(),
            ca: self.ca.clone(),
            insecure: self.insecure,
            token,
        }
    }
}

/// A BOSH instance ID: a UUID.
fn is_instance_id(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What to check when the API refuses a BOSH capture with `code`.
pub fn refusal_hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => " (log in again with `bosh log-in`)",
        tonic::Code::PermissionDenied => {
            " (capturing BOSH VMs needs a BOSH admin; check `bosh -e ENV log-in`)"
        }
        tonic::Code::NotFound => " (check -d, -g and the instance IDs)",
        tonic::Code::ResourceExhausted => " (too many captures are running; try again later)",
        tonic::Code::InvalidArgument => " (check the interfaces, snaplen and filter expression)",
        tonic::Code::Unavailable => " (the BOSH director or its UAA cannot be reached)",
        _ => "",
    }
}

/// Runs `pcap bosh`.
pub fn main(args: &BoshArgs) -> ExitCode {
    let (ids, expression) = args.ids_and_expression();
    // Checked as `pcap capture` checks its own; the token comes later.
    if let Err(message) = args.flags.check().and(args.connection(None).validate()) {
        crate::usage_error("bosh", message);
    }
    let result = crate::runtime().block_on(async {
        let Some(token) = prepare(args, &ids).await? else {
            return Ok(ExitCode::FAILURE);
        };
        let start = args.start_request(ids, expression);
        crate::capture(&args.connection(Some(token)), &args.flags, start).await
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pcap: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Reads the login, refreshes it when needed, shows the instances and asks
/// when there are many. The access token, or `None` when the user said no.
async fn prepare(args: &BoshArgs, ids: &[String]) -> anyhow::Result<Option<String>> {
    let path = bosh_config::path(args.bosh_config.as_deref())?;
    let mut config = BoshConfig::load(&path)?;
    let mut environment = config.environment(&args.environment)?;
    let director = Director::new(&environment)?;
    let fresh = environment
        .access_token
        .as_deref()
        .is_some_and(|t| !bosh_config::expires_within(t, REFRESH_MARGIN));
    if !fresh {
        refresh(&director, &mut config, &mut environment).await?;
    }
    let mut token = environment.access_token.clone().unwrap_or_default();
    let instances = match director.instances(&args.deployment, &token).await {
        Err(Listing::Unauthorized) if environment.refresh_token.is_some() && fresh => {
            // Revoked or otherwise refused before its time: one refresh.
            refresh(&director, &mut config, &mut environment).await?;
            token = environment.access_token.clone().unwrap_or_default();
            director.instances(&args.deployment, &token).await
        }
        other => other,
    };
    let instances = match instances {
        Ok(instances) => instances,
        Err(Listing::Failed(error)) => return Err(error),
        Err(Listing::Unauthorized) => bail!(
            "the BOSH director did not accept the token of environment {}; \
             log in again with `bosh -e {} log-in`",
            environment.url,
            args.environment
        ),
    };
    let chosen = choose(&instances, &args.groups, ids);
    if chosen.is_empty() {
        // The API says precisely what is wrong (unknown group or ID).
        eprintln!(
            "pcap: no instance of deployment \"{}\" matches; asking the API anyway",
            args.deployment
        );
        return Ok(Some(token));
    }
    eprintln!(
        "pcap: capturing {} of deployment \"{}\" in environment {}:",
        plural_instances(chosen.len()),
        args.deployment,
        environment.alias.as_deref().unwrap_or(&environment.url)
    );
    for instance in &chosen {
        eprintln!("  {}", instance.describe());
    }
    if chosen.len() > CONFIRM_ABOVE && !args.non_interactive && io::stdin().is_terminal() {
        eprint!("Capture these {} instances? [y/N] ", chosen.len());
        io::stderr().flush().ok();
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("pcap: not capturing");
            return Ok(None);
        }
    }
    Ok(Some(token))
}

/// Refreshes the access token through the director's UAA, and rewrites
/// the configuration.
async fn refresh(
    director: &Director,
    config: &mut BoshConfig,
    environment: &mut Environment,
) -> anyhow::Result<()> {
    let Some(refresh_token) = environment.refresh_token.clone() else {
        bail!(
            "the access token of environment {} has expired and there is no refresh token; \
             log in again with `bosh log-in`",
            environment.url
        );
    };
    let uaa = director.uaa_url().await?;
    let (access, refreshed) = bosh_config::LOGIN
        .refresh(director.http(), &uaa, &refresh_token)
        .await?;
    config.store_tokens(environment, &access, refreshed.as_deref())?;
    eprintln!(
        "pcap: refreshed the access token in {}",
        config.path().display()
    );
    Ok(())
}

fn plural_instances(n: usize) -> String {
    if n == 1 {
        "1 instance".to_owned()
    } else {
        format!("{n} instances")
    }
}

/// How `pcap bosh` shows an instance of the director's list.
trait Describe {
    /// `router/0b2c… (index 0, z1, 10.0.1.5)`.
    fn describe(&self) -> String;
}

impl Describe for Instance {
    fn describe(&self) -> String {
        let mut details = Vec::new();
        if let Some(index) = self.index {
            details.push(format!("index {index}"));
        }
        if let Some(az) = self.az.as_deref().filter(|az| !az.is_empty()) {
            details.push(az.to_owned());
        }
        details.push(self.ips.first().map_or_else(
            || "no IP address: will be unavailable".to_owned(),
            Clone::clone,
        ));
        format!("{}/{} ({})", self.job, self.id, details.join(", "))
    }
}

/// The instances of `groups` (and of `ids`, when any), in group order.
fn choose<'a>(instances: &'a [Instance], groups: &[String], ids: &[String]) -> Vec<&'a Instance> {
    let mut chosen: Vec<&Instance> = instances
        .iter()
        .filter(|i| groups.contains(&i.job))
        .filter(|i| ids.is_empty() || ids.contains(&i.id))
        .collect();
    let position = |i: &Instance| groups.iter().position(|g| *g == i.job);
    chosen.sort_by(|a, b| (position(a), a.index, &a.id).cmp(&(position(b), b.index, &b.id)));
    chosen
}

enum Listing {
    Unauthorized,
    Failed(anyhow::Error),
}

/// The director of an environment, trusted through its `ca_cert`.
struct Director {
    client: director::Director,
}

impl Director {
    fn new(environment: &Environment) -> anyhow::Result<Self> {
        let ca = environment.ca_cert.as_deref().with_context(|| {
            format!(
                "environment {} has no ca_cert in the BOSH CLI's configuration",
                environment.url
            )
        })?;
        let certificates = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .context("the environment's ca_cert is not a PEM certificate")?;
        // reqwest brings no crypto of its own (no aws-lc): ring.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .tls_certs_only(certificates)
            .https_only(true)
            .timeout(HTTP_TIMEOUT)
            .build()
            .context("cannot set up an HTTPS client")?;
        Ok(Self {
            client: director::Director::new(&environment.url, http),
        })
    }

    fn http(&self) -> &reqwest::Client {
        self.client.http()
    }

    fn unreachable(&self, source: &reqwest::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the BOSH director at {}: {}; the capture was not started",
            self.client.url(),
            error_chain(source)
        )
    }

    /// The UAA from the director's `/info`.
    async fn uaa_url(&self) -> anyhow::Result<String> {
        let info = self.client.info().await.map_err(|error| match error {
            DirectorError::Unreachable { source, .. } => self.unreachable(&source),
            DirectorError::Status { status, .. } => {
                anyhow::anyhow!("the BOSH director's /info answered HTTP {status}")
            }
            DirectorError::Malformed { source, .. } => {
                anyhow::Error::new(source).context("the BOSH director's /info is not valid")
            }
            other @ DirectorError::BadUrl { .. } => other.into(),
        })?;
        info.user_authentication
            .options
            .url
            .context("the BOSH director does not use UAA, so its token cannot be refreshed")
    }

    async fn instances(&self, deployment: &str, token: &str) -> Result<Vec<Instance>, Listing> {
        let error = match self.client.instances(deployment, token).await {
            Ok(instances) => return Ok(instances),
            Err(error) => error,
        };
        let Some(status) = error.status() else {
            return Err(Listing::Failed(match error {
                DirectorError::Unreachable { source, .. } => self.unreachable(&source),
                DirectorError::Malformed { source, .. } => {
                    anyhow::Error::new(source).context("the director's instance list is not valid")
                }
                other => other.into(),
            }));
        };
        let description = error.described();
        Err(match status {
            StatusCode::UNAUTHORIZED => Listing::Unauthorized,
            StatusCode::FORBIDDEN => Listing::Failed(anyhow::anyhow!(
                "the BOSH director does not let you list the instances of deployment \
                 \"{deployment}\" (HTTP 403){description}; capturing BOSH VMs needs a BOSH admin"
            )),
            StatusCode::NOT_FOUND => Listing::Failed(anyhow::anyhow!(
                "deployment \"{deployment}\" not found at the BOSH director {}",
                self.client.url()
            )),
            _ => Listing::Failed(anyhow::anyhow!(
                "the BOSH director answered HTTP {status}{description}"
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn try_parse(args: &[&str]) -> Result<BoshArgs, clap::Error> {
        let argv = ["pcap", "bosh", "--api", "https://api:8443"]
            .iter()
            .chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Bosh(args) => Ok(args),
            _ => unreachable!(),
        }
    }

    fn parse(args: &[&str]) -> BoshArgs {
        try_parse(args).unwrap()
    }

    #[test]
    fn leading_ids_are_ids_and_the_rest_is_the_filter() {
        let id = "0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e6f";
        let args = parse(&[
            "-e",
            "lab",
            "-d",
            "cf",
            "-g",
            "router",
            "-g",
            "diego-cell",
            id,
            "tcp",
            "port",
            "443",
        ]);
        let (ids, expression) = args.ids_and_expression();
        assert_eq!(ids, [id]);
        assert_eq!(expression, ["tcp", "port", "443"]);
        let start = args.start_request(ids, expression);
        let Some(target::Kind::Bosh(bosh)) = start.target.unwrap().kind else {
            panic!("not a BOSH target");
        };
        assert_eq!(bosh.deployment, "cf");
        assert_eq!(bosh.groups, ["router", "diego-cell"]);
        assert_eq!(start.options.unwrap().filter, "tcp port 443");
    }

    #[test]
    fn c2c_goes_to_the_capture() {
        let plain = parse(&["-e", "lab", "-d", "cf", "-g", "diego-cell"]);
        let options = plain.start_request(vec![], vec![]).options.unwrap();
        assert_eq!(options.c2c, None);
        let c2c = parse(&["-e", "lab", "-d", "cf", "-g", "diego-cell", "--c2c"]);
        let options = c2c.start_request(vec![], vec![]).options.unwrap();
        assert!(options.c2c.is_some_and(|c2c| c2c.app_names.is_empty()));
    }

    #[test]
    fn store_goes_to_the_capture_and_excludes_a_file() {
        let args = parse(&["-e", "lab", "-d", "cf", "-g", "router", "--store"]);
        assert!(args.start_request(vec![], vec![]).store);
        let both = [
            "-e", "lab", "-d", "cf", "-g", "router", "--store", "-w", "x.pcapng",
        ];
        assert!(try_parse(&both).is_err());
    }

    #[test]
    fn a_group_is_required() {
        assert!(try_parse(&["-e", "lab", "-d", "cf"]).is_err());
    }

    #[test]
    fn instances_are_chosen_by_group_then_id() {
        let instance = |job: &str, id: &str, index| Instance {
            job: job.into(),
            id: id.into(),
            index: Some(index),
            az: None,
            ips: vec![],
        };
        let all = [
            instance("router", "b", 1),
            instance("cell", "c", 0),
            instance("router", "a", 0),
        ];
        let groups = ["cell".to_owned(), "router".to_owned()];
        let ids: Vec<_> = choose(&all, &groups, &[])
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["c", "a", "b"]);
        let only = choose(&all, &groups, &["b".to_owned()]);
        assert_eq!(only.len(), 1);
        assert!(only[0].describe().contains("no IP address"));
    }
}
