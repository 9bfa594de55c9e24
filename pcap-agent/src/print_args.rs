//! tcpdump's printing flags: what `pcap-agent capture` shows of each
//! packet when it prints lines rather than writing a file.

use clap::{ArgAction, Args};
use pcap_format::summary::{Dump, Options, TimeFormat};

/// `-e`, `-v`, `-x`/`-X`/`-A`, `-t`, `-S`, `-#`, `-l`, `-U`, as tcpdump.
#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one bool per tcpdump flag, as clap parses them"
)]
pub struct PrintArgs {
    /// Print the link-level header (MAC addresses, ether type, VLAN tags).
    #[arg(short = 'e')]
    link_header: bool,
    /// More detail: IP TTL, id, flags and length, checksums, ICMPv6
    /// options (-vv: more still).
    #[arg(short = 'v', action = ArgAction::Count)]
    verbose: u8,
    /// Print each packet in hex, without its link-level header (-xx: with it).
    #[arg(short = 'x', action = ArgAction::Count)]
    hex: u8,
    /// Print each packet in hex and ASCII, without its link-level header
    /// (-XX: with it).
    #[arg(short = 'X', action = ArgAction::Count)]
    hex_ascii: u8,
    /// Print each packet in ASCII, without its link-level header (-AA: with it).
    #[arg(short = 'A', action = ArgAction::Count)]
    ascii: u8,
    /// Time stamps: -t none, -tt seconds since 1970, -ttt since the
    /// previous packet, -tttt with the date, -ttttt since the first packet
    /// (always in UTC).
    #[arg(short = 't', action = ArgAction::Count)]
    time: u8,
    /// Absolute TCP sequence numbers, not relative to the first packet.
    #[arg(short = 'S', long = "absolute-tcp-sequence-numbers")]
    absolute_seq: bool,
    /// Number the packets printed.
    #[arg(short = '#', long = "number")]
    number: bool,
    /// Line-buffered output: flush after each line.
    #[arg(short = 'l')]
    pub line_buffered: bool,
    /// Packet-buffered output: flush after each packet, with -w too.
    #[arg(short = 'U', long = "packet-buffered")]
    pub packet_buffered: bool,
}

impl PrintArgs {
    /// The summary printer's options.
    pub fn options(&self) -> Options {
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
