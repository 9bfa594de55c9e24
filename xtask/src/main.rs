//! `cargo xtask`: set-up, tests, demo and benchmarks.
//!
//! xtask itself is pure Rust and links only the C runtime (checked by
//! `cargo xtask test`, see `linkage`), so that the README's first command
//! builds on a machine with nothing but Rust. What needs libpcap, the eBPF
//! toolchain or the test landscape (the demo, the benchmarks) lives in
//! `pcap-lab` (lab/), which xtask builds and runs once setup is done.
#![forbid(unsafe_code)]

mod fresh_check;
mod fuzz;
mod linkage;
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
    /// Options: --runs N, --packets N, --out FILE, --only filter,capture,distributed,start,attach,apps,scaling
    /// (`cargo xtask bench --help` lists them after setup).
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed on to `pcap-lab bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        options: Vec<String>,
    },
    /// Run `cargo xtask demo` in a pristine Debian 12 root made with
    /// debootstrap, as a new user on a fresh machine would (slow: tens of minutes).
    FreshCheck(fresh_check::Options),
    /// Run the cargo-fuzz targets in fuzz/ (nightly; see docs/fuzzing.md).
    Fuzz(fuzz::Options),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Test => {
            linkage::check()?;
            setup::run()?;
            test()
        }
        Task::Demo => {
            setup::run()?;
            lab(&["demo"])
        }
        Task::Bench { options } => {
            setup::run()?;
            let mut args = vec!["bench"];
            args.extend(options.iter().map(String::as_str));
            lab(&args)
        }
        Task::FreshCheck(options) => fresh_check::run(&options),
        Task::Fuzz(options) => fuzz::run(&options),
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
    // Licenses, duplicate major versions and sources of the dependencies
    // (deny.toml; advisories need a database this machine cannot fetch).
    // cargo deny reads `cargo metadata` for every platform, so the sources
    // of crates this machine never builds (Windows, Android) must be here
    // first: `cargo fetch` downloads them all from the lock file.
    cargo(&["fetch", "--locked"])?;
    cargo(&["deny", "--offline", "check", "bans", "licenses", "sources"])?;
    // The system tests run the binaries, so build them first.
    cargo(&["build", "--bins"])?;
    cargo(&["test", "--workspace", "--", "--test-threads=1"])
}

/// Builds the workspace's binaries (the demo and the benchmarks run them),
/// then runs `pcap-lab ARGS`, which needs what setup installed. The binary
/// is run directly: `cargo run -p pcap-lab` would build the dependencies
/// again with pcap-lab's features alone, and pcap-lab's own
/// `cargo build --bins` would then build them a third time.
fn lab(args: &[&str]) -> anyhow::Result<()> {
    cargo(&["build", "--bins"])?;
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    run_command(
        Command::new(target.join("debug/pcap-lab"))
            .args(args)
            .current_dir(&root)
            .env("CARGO", env!("CARGO")),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bench_options(args: &[&str]) -> Vec<String> {
        let mut argv = vec!["xtask", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Task::Bench { options } => options,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn bench_passes_its_options_and_help_on_to_pcap_lab() {
        assert_eq!(
            bench_options(&["--runs", "5", "--only", "filter,capture", "--out", "b.md"]),
            ["--runs", "5", "--only", "filter,capture", "--out", "b.md"]
        );
        assert_eq!(bench_options(&["--help"]), ["--help"]);
        assert_eq!(bench_options(&[]), Vec::<String>::new());
    }
}
