//! `pcap-lab`: the demo and the benchmarks. They need libpcap, the eBPF
//! toolchain and the test landscape, so `cargo xtask` (which must build on
//! a machine with nothing but Rust) runs this binary with cargo only after
//! `cargo xtask setup` has installed them.
#![forbid(unsafe_code)]

mod bare_tls;
mod bench;
mod demo;
mod rusage;

use std::process::Command;

use clap::{Parser, Subcommand};
use pcap_tests::{bosh::workspace_root, process::run_command};

#[derive(Debug, Parser)]
#[command(about = "The pcap demo and benchmarks (run them with `cargo xtask demo|bench`).")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Capture a simulated landscape and show the result.
    Demo,
    /// Measure pcap against tcpdump (writes docs/bench.md).
    Bench(bench::Options),
    /// One process of the bench's bare-TLS floor of the distributed path.
    #[command(hide = true, subcommand)]
    BareTls(bare_tls::Role),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Demo => demo::run(),
        Task::Bench(options) => bench::run(&options),
        Task::BareTls(role) => bare_tls::run(&role),
    }
}

/// Runs `cargo ARGS` in the workspace and fails if it fails.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    // Started by `cargo run`, CARGO names the cargo that started us.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_command(Command::new(cargo).args(args).current_dir(workspace_root()))
}
