//! `cf-pcap`, the cf CLI plugin: `cf pcap APP_NAME [flags] [EXPRESSION]`,
//! the same capture as `pcap app` with the login and target taken from the
//! running cf CLI over its plugin RPC (Go net/rpc with gob, see [`rpc`]
//! and [`gob`]) instead of `~/.cf/config.json`.
//!
//! cf runs the plugin as `cf-pcap <port> SendMetadata` to install it,
//! `cf-pcap <port> CLI-MESSAGE-UNINSTALL` to uninstall it, and
//! `cf-pcap <port> pcap ARGS...` for `cf pcap ARGS...`. cf installs no
//! SIGINT handler while a plugin runs, so Ctrl-C ends cf and its RPC
//! server at once: everything is asked of cf before the capture starts.

pub mod gob;
pub mod metadata;
pub mod rpc;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser};

use crate::app::{self, AppArgs, Login, PluginLogin};
use crate::cf_config::{self, Named};
use crate::describe;
use rpc::Cli;

/// Capture the network traffic of a Cloud Foundry app's instances, with the
/// cf CLI's login and target.
///
/// Ctrl-C stops the capture; the file is valid in every case.
// cf takes -v (and --verbose) for itself: tcpdump's -v is --detail here.
#[derive(Debug, Parser)]
#[command(name = "cf pcap", disable_version_flag = true)]
#[command(mut_arg("verbose", |arg| arg.short(None).long("detail")))]
pub struct PluginCli {
    #[command(flatten)]
    app: AppArgs,
}

/// What the binary says when it is run on its own.
fn standalone() -> ExitCode {
    eprintln!(
        "cf-pcap is a cf CLI plugin and is not meant to run on its own.\n\
         Install it with:  cf install-plugin ./cf-pcap\n\
         then capture:     cf pcap APP_NAME -w app.pcapng\n\
         (or, without the cf CLI's plugin, `pcap app APP_NAME`)."
    );
    ExitCode::FAILURE
}

/// `cf-pcap`'s main.
pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (Some(port), Some(command)) = (args.get(1), args.get(2).and_then(|c| c.to_str())) else {
        return standalone();
    };
    let Some(port) = port.to_str().and_then(|p| p.parse::<u16>().ok()) else {
        return standalone();
    };
    let cli = Cli::new(port);
    match command {
        "SendMetadata" if args.len() == 3 => send_metadata(cli),
        "CLI-MESSAGE-UNINSTALL" => ExitCode::SUCCESS,
        metadata::COMMAND | metadata::FALLBACK_COMMAND => {
            let argv = std::iter::once(OsString::from(format!("cf {command}")))
                .chain(args[3..].iter().cloned());
            let parsed = match PluginCli::try_parse_from(argv) {
                Ok(parsed) => parsed,
                Err(error) => error.exit(),
            };
            match login(cli) {
                Ok(login) => app::run(&parsed.app, Login::Plugin(login), || {
                    let mut command = PluginCli::command();
                    command.build();
                    command
                }),
                Err(error) => {
                    eprintln!("pcap: {}", describe(&error));
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!(
                "cf-pcap: unknown command {other:?}: this plugin has `cf {}`",
                metadata::COMMAND
            );
            ExitCode::FAILURE
        }
    }
}

/// `cf install-plugin`: the metadata, with the command `CF_PCAP_COMMAND`
/// names (`pcap`, or `app-pcap` if cf ever has a core `pcap`).
fn send_metadata(cli: Cli) -> ExitCode {
    let command = match std::env::var(metadata::COMMAND_ENV) {
        Err(_) => metadata::COMMAND,
        Ok(name) if name == metadata::COMMAND => metadata::COMMAND,
        Ok(name) if name == metadata::FALLBACK_COMMAND => metadata::FALLBACK_COMMAND,
        Ok(name) => {
            eprintln!(
                "cf-pcap: {}={name:?}: the command can be `{}` or `{}`",
                metadata::COMMAND_ENV,
                metadata::COMMAND,
                metadata::FALLBACK_COMMAND
            );
            return ExitCode::FAILURE;
        }
    };
    let sent = cli.ping().and_then(|()| {
        cli.call(
            "SetPluginMetadata",
            &metadata::metadata_type(),
            &metadata::metadata(command),
        )
    });
    match sent {
        Ok(gob::Value::Bool(true)) => ExitCode::SUCCESS,
        Ok(other) => {
            eprintln!("cf-pcap: the cf CLI did not take the plugin's metadata: {other:?}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("cf-pcap: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the capture needs from cf, asked before it starts.
fn login(cli: Cli) -> anyhow::Result<PluginLogin> {
    cli.ping()?;
    if !cli.boolean("IsLoggedIn")? {
        bail!("not logged in to Cloud Foundry; run `cf login` first");
    }
    let token = cli
        .string("AccessToken")
        .context("the cf CLI has no valid access token; run `cf login` again")?;
    let token = cf_config::strip_bearer(&token).trim().to_owned();
    if token.is_empty() {
        bail!("the cf CLI has no access token; run `cf login` again");
    }
    let cc = cli.string("ApiEndpoint")?.trim_end_matches('/').to_owned();
    if cc.is_empty() {
        bail!(
            "no Cloud Foundry API is targeted; run `cf login -a https://api.SYSTEM_DOMAIN` first"
        );
    }
    let ssl_disabled = cli.boolean("IsSSLDisabled")?;
    let (guid, name) = cli.named("GetCurrentSpace", "SpaceFields")?;
    if guid.is_empty() {
        bail!("no space is targeted; run `cf target -s SPACE` (and `-o ORG`) first");
    }
    let space = Named { guid, name };
    let (guid, name) = cli.named("GetCurrentOrg", "OrganizationFields")?;
    let org = Named { guid, name };
    Ok(PluginLogin {
        cc,
        token,
        ssl_disabled,
        org,
        space,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_takes_pcap_apps_flags() {
        let args = [
            "my-app",
            "--instance",
            "0,2",
            "-w",
            "-",
            "tcp",
            "port",
            "80",
        ];
        let parsed = PluginCli::try_parse_from(["cf pcap"].into_iter().chain(args)).unwrap();
        assert_eq!(
            format!("{:?}", parsed.app),
            format!("{:?}", {
                let crate::Command::App(args) =
                    crate::Cli::try_parse_from(["pcap", "app"].into_iter().chain(args))
                        .unwrap()
                        .command
                else {
                    unreachable!()
                };
                args
            })
        );
        PluginCli::command().debug_assert();
    }
}
