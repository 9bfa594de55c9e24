//! `cargo xtask bench`: pcap against tcpdump under the same load.
use clap::Args;

#[derive(Debug, Args)]
pub struct Options {}

pub fn run(_options: &Options) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
