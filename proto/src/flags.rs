//! The capture flags, as clap groups: declared once, flattened into
//! `pcap capture`, `pcap bosh`, `pcap app`, `cf pcap` and `pcap-agent
//! capture` (`#[command(flatten)]`). They live here, behind the `clap`
//! feature, because both pcap-cli and pcap-agent depend on this crate and
//! not on each other; their values are checked by the functions of
//! [`crate::options`] that check the wire's options in the API and the
//! agents.

use std::num::NonZeroU64;
use std::path::PathBuf;

use clap::Args;

use crate::options::{self, CaptureOptions, Limits, OptionsError};

/// What every capture command takes: snaplen, packet count, duration, the
/// output file and the filter expression. clap checks their form; their
/// values are checked by [`CaptureFlags::options`], whose one-line message
/// names the flag (`pcap-agent capture` prints it as it is, the CLI as a
/// usage error).
#[derive(Clone, Debug, Args)]
pub struct CaptureFlags {
    /// Bytes kept of each packet: 1 to 262144; 0 means 262144, as in
    /// tcpdump.
    #[arg(short = 's', long = "snaplen", visible_alias = "snapshot-length",
          value_name = "SNAPLEN", default_value_t = 0, value_parser = options::parse_whole)]
    pub snaplen: u64,

    /// Stop after this many packets (over all origins, for a remote
    /// capture).
    #[arg(short = 'c', long, value_name = "COUNT", value_parser = options::parse_whole)]
    pub count: Option<u64>,

    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = options::parse_seconds,
          allow_negative_numbers = true)]
    pub duration: Option<f64>,

    /// Write packets to FILE, or to stdout with `-w -`; without it, print
    /// one line per packet.
    #[arg(short = 'w', value_name = "FILE|-")]
    pub write: Option<PathBuf>,

    /// A tcpdump filter expression, e.g. `tcp port 443`.
    #[arg(value_name = "EXPRESSION")]
    pub expression: Vec<String>,
}

impl CaptureFlags {
    /// The capture these flags ask for, on `interfaces`, with `max_bytes`
    /// (a flag of remote captures only); or what is wrong with them.
    pub fn options(
        &self,
        interfaces: &[String],
        max_bytes: Option<NonZeroU64>,
    ) -> Result<CaptureOptions, OptionsError> {
        let packets = match self.count {
            None => None,
            Some(n) => Some(NonZeroU64::new(n).ok_or(OptionsError::ZeroCount)?),
        };
        Ok(CaptureOptions {
            filter: self.expression.join(" "),
            snaplen: options::snaplen(self.snaplen)?,
            interfaces: interfaces.to_vec(),
            limits: Limits {
                duration: self.duration.map(options::duration).transpose()?,
                packets,
                bytes: max_bytes,
            },
        })
    }
}

/// `-i`: the interfaces to capture on.
#[derive(Clone, Debug, Args)]
pub struct InterfaceFlags {
    /// An interface to capture on (repeatable). A remote capture without
    /// -i uses the target's default interfaces.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interfaces: Vec<String>,
}
