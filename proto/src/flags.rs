//! The capture flags, as clap groups: declared once, flattened into
//! `pcap capture`, `pcap bosh`, `pcap app`, `cf pcap` and `pcap-agent
//! capture` (`#[command(flatten)]`). They live here, behind the `clap`
//! feature, because both pcap-cli and pcap-agent depend on this crate and
//! not on each other; their values are checked by the functions of
//! [`crate::options`] that check the wire's options in the API and the
//! agents.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

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

    #[command(flatten)]
    pub rotation: RotationFlags,

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
            direction: options::Directions::default(),
        })
    }
}

/// tcpdump's `-Q`, `-n` and printing flags, for the local capture and the
/// remote ones alike. `pcap bosh` keeps `-e` and `-n` for its environment
/// and confirmation: there they are `--link-header` and `--numeric`.
#[derive(Clone, Debug, Default, Args)]
pub struct TcpdumpFlags {
    /// Capture only what the interfaces received (in), sent (out) or both
    /// (inout, the default), as tcpdump's -Q; decided in the kernel, which
    /// attaches only the hooks of those directions. For an app, what its
    /// container received or sent.
    #[arg(short = 'Q', long = "direction", value_enum, value_name = "DIRECTION")]
    pub direction: Option<options::Directions>,
    /// Accepted as tcpdump's -n / -nn: addresses and ports are never
    /// resolved to names.
    #[arg(short = 'n', long = "numeric", action = clap::ArgAction::Count)]
    pub numeric: u8,
    #[command(flatten)]
    pub print: PrintFlags,
}

/// `-e`, `-v`, `-x`/`-X`/`-A`, `-t`, `-S`, `-#`, `-l`, `-U`, as tcpdump:
/// what is shown of each packet when lines are printed rather than a file
/// written.
#[derive(Clone, Debug, Default, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one bool per tcpdump flag, as clap parses them"
)]
pub struct PrintFlags {
    /// Print the link-level header (MAC addresses, ether type, VLAN tags).
    #[arg(short = 'e', long = "link-header")]
    pub link_header: bool,
    /// More detail: IP TTL, id, flags and length, checksums, ICMPv6
    /// options (-vv: more still).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print each packet in hex, without its link-level header (-xx: with it).
    #[arg(short = 'x', action = clap::ArgAction::Count)]
    pub hex: u8,
    /// Print each packet in hex and ASCII, without its link-level header
    /// (-XX: with it).
    #[arg(short = 'X', action = clap::ArgAction::Count)]
    pub hex_ascii: u8,
    /// Print each packet in ASCII, without its link-level header (-AA: with it).
    #[arg(short = 'A', action = clap::ArgAction::Count)]
    pub ascii: u8,
    /// Time stamps: -t none, -tt seconds since 1970, -ttt since the
    /// previous packet, -tttt with the date, -ttttt since the first packet
    /// (always in UTC).
    #[arg(short = 't', action = clap::ArgAction::Count)]
    pub time: u8,
    /// Absolute TCP sequence numbers, not relative to the first packet.
    #[arg(short = 'S', long = "absolute-tcp-sequence-numbers")]
    pub absolute_seq: bool,
    /// Number the packets printed.
    #[arg(short = '#', long = "number")]
    pub number: bool,
    /// Line-buffered output: flush after each line.
    #[arg(short = 'l')]
    pub line_buffered: bool,
    /// Packet-buffered output: flush after each packet, with -w too.
    #[arg(short = 'U', long = "packet-buffered")]
    pub packet_buffered: bool,
}

impl PrintFlags {
    /// The summary printer's options.
    pub fn options(&self) -> pcap_format::summary::Options {
        use pcap_format::summary::{Dump, Options, TimeFormat};
        Options {
            verbose: self.verbose,
            link_header: self.link_header,
            dump: Dump::from_counts(self.hex, self.hex_ascii, self.ascii),
            time: TimeFormat::from_count(self.time),
            absolute_seq: self.absolute_seq,
            number: self.number,
        }
    }

    /// Flush after every packet.
    pub fn flush_each(&self) -> bool {
        self.line_buffered || self.packet_buffered
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

/// Largest `-C`: a million millions of bytes (1 TB).
pub const MAX_FILE_SIZE_MB: u64 = 1_000_000;
/// Largest `-G`: 366 days.
pub const MAX_ROTATE_SECONDS: u64 = 366 * 86_400;
/// Largest `-W`.
pub const MAX_FILE_COUNT: u32 = 100_000;

/// tcpdump's rotation of the `-w` file: `-C`, `-G`, `-W`, `-z`. Checked
/// against `-w` by [`RotationFlags::check`]; written by
/// `pcap_sink::rotate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Args)]
pub struct RotationFlags {
    /// Start a new file when the current one holds more than SIZE million
    /// bytes (1,000,000, as tcpdump): FILE, then FILE1, FILE2...
    #[arg(short = 'C', value_name = "SIZE",
          value_parser = clap::value_parser!(u64).range(1..=MAX_FILE_SIZE_MB))]
    pub file_size: Option<u64>,

    /// Start a new file at every multiple of SECONDS since the epoch (the
    /// wall clock: -G 3600 rotates on the hour, UTC); FILE's strftime
    /// conversions (%Y%m%d-%H%M%S) name each file by its start, in UTC.
    #[arg(short = 'G', value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_ROTATE_SECONDS))]
    pub rotate_seconds: Option<u64>,

    /// Keep only the newest COUNT files (a ring); with -C, files are
    /// numbered 0 to COUNT-1, padded to the same width.
    #[arg(short = 'W', value_name = "COUNT",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FILE_COUNT)))]
    pub file_count: Option<u32>,

    /// Run COMMAND FILE on each file once it is complete, the last one
    /// too (a program, as tcpdump's -z: `-z gzip`; use a script for
    /// arguments).
    #[arg(short = 'z', value_name = "COMMAND")]
    pub post_rotate: Option<PathBuf>,
}

impl RotationFlags {
    /// Whether any of the flags is given.
    pub fn is_set(&self) -> bool {
        self.file_size.is_some()
            || self.rotate_seconds.is_some()
            || self.file_count.is_some()
            || self.post_rotate.is_some()
    }

    /// Checks the flags against `-w` (`write`): they need a file.
    pub fn check(&self, write: Option<&Path>) -> Result<(), RotationError> {
        if !self.is_set() {
            return Ok(());
        }
        match write {
            None => return Err(RotationError::NoFile),
            Some(path) if path.as_os_str() == "-" => return Err(RotationError::Stdout),
            Some(_) => {}
        }
        if self.file_count.is_some() && self.file_size.is_none() && self.rotate_seconds.is_none() {
            return Err(RotationError::CountAlone);
        }
        if self
            .post_rotate
            .as_ref()
            .is_some_and(|c| c.as_os_str().is_empty())
        {
            return Err(RotationError::EmptyCommand);
        }
        Ok(())
    }
}

/// What is wrong with the rotation flags; the message names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RotationError {
    #[error("-C, -G, -W and -z write files: give -w FILE")]
    NoFile,
    #[error("-C, -G, -W and -z write files, not stdout: give -w FILE instead of -w -")]
    Stdout,
    #[error("-W limits the files -C or -G make: give -C SIZE or -G SECONDS too")]
    CountAlone,
    #[error("-z needs a command")]
    EmptyCommand,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        capture: CaptureFlags,
    }

    fn parse(args: &[&str]) -> Result<CaptureFlags, String> {
        Cli::try_parse_from(std::iter::once("cmd").chain(args.iter().copied()))
            .map(|cli| cli.capture)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn rotation_flags_are_bounded_and_named() {
        let flags = parse(&["-w", "f", "-C", "2", "-G", "60", "-W", "3", "-z", "gzip"]).unwrap();
        assert_eq!(flags.rotation.file_size, Some(2));
        assert_eq!(flags.rotation.rotate_seconds, Some(60));
        assert_eq!(flags.rotation.file_count, Some(3));
        assert_eq!(flags.rotation.check(flags.write.as_deref()), Ok(()));
        for (args, flag) in [
            (&["-C", "0"][..], "-C"),
            (&["-G", "0"], "-G"),
            (&["-G", "31622401"], "-G"),
            (&["-W", "0"], "-W"),
            (&["-C", "1000001"], "-C"),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
        let check = |args: &[&str]| {
            let flags = parse(args).unwrap();
            flags.rotation.check(flags.write.as_deref())
        };
        assert_eq!(check(&["-C", "1"]), Err(RotationError::NoFile));
        assert_eq!(check(&["-w", "-", "-G", "1"]), Err(RotationError::Stdout));
        assert_eq!(
            check(&["-w", "f", "-W", "2"]),
            Err(RotationError::CountAlone)
        );
        assert!(parse(&["-w", "f", "-z", ""]).unwrap_err().contains("-z"));
        let empty = RotationFlags {
            post_rotate: Some(PathBuf::new()),
            ..RotationFlags::default()
        };
        assert_eq!(
            empty.check(Some(Path::new("f"))),
            Err(RotationError::EmptyCommand)
        );
        assert_eq!(check(&["-w", "f", "-z", "gzip"]), Ok(()));
        assert_eq!(check(&["-w", "-"]), Ok(()));
    }
}
