//! `cargo xtask`: set-up, tests, demo and benchmarks.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod setup;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Set up, then check formatting and lints and run every test.
    Test,
    /// Set up, then capture a simulated landscape and show the result.
    Demo,
    /// Set up, then measure pcap against tcpdump (writes docs/bench.md).
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test => {
            setup::run()?;
            test()
        }
        Task::Demo => {
            setup::run()?;
            demo::run()
        }
        Task::Bench(options) => {
            setup::run()?;
            bench::run(&options)
        }
    }
}

fn test() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The system tests run the binaries, so build them first.
    cargo(&["build", "--bins"])?;
    cargo(&["test", "--workspace", "--", "--test-threads=1"])
}

/// Runs `cargo ARGS` in the workspace and fails if it fails.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run_command(
        Command::new(env!("CARGO"))
            .args(args)
            .current_dir(workspace_root()),
    )
}

/// Runs a command, failing with its name if it fails.
pub fn run_command(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_owned()
}
