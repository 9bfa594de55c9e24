//! pcap-api: authenticates users, fans captures out to the agents and
//! merges their streams.
#![deny(unsafe_code)]

mod sched;

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use pcap_api::{config::Config, server};
use tokio::{net::TcpListener, signal::unix};

/// Batches of a megabyte come and go many times a second; glibc's malloc
/// hands such blocks back to the kernel and zeroes fresh pages for the next
/// (a fifth of the API's CPU in a profile), jemalloc reuses them.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the pcap API to clients over TLS.
    Serve {
        /// The TOML configuration (see docs/configuration.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Validate the configuration and every file it names, print
        /// `config OK` or the problem, and exit. The log filter comes from
        /// PCAP_LOG (default info).
        #[arg(long)]
        check_config: bool,
    },
}

fn main() -> ExitCode {
    let Command::Serve {
        config,
        check_config,
    } = Cli::parse().command;
    if check_config {
        return match Config::load(&config) {
            Ok(_) => {
                println!("config OK");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    // The log filter is PCAP_LOG, as for pcap-agent (default info). No
    // terminal colours unless stderr is a terminal: log files stay text.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PCAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = sched::batch() {
        // Slower under load, not wrong: say so and serve.
        tracing::warn!("cannot run under SCHED_BATCH, staying under the default policy: {e}");
    }
    match serve(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcap-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
    let mut terminate =
        unix::signal(unix::SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt =
        unix::signal(unix::SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let signal = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let listen = listener.local_addr().context("the listening address")?;
    tracing::info!(%listen, "serving the pcap API");
    server::serve(&config, listener, signal)
        .await
        .context("serving the pcap API")?;
    tracing::info!("stopped");
    Ok(())
}
