//! pcap-api: authenticates users, finds the instances they may capture, fans
//! out to the agents and merges their streams. Built in a later issue; the
//! crate exists so that the workspace has its final shape.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("pcap-api: not implemented yet; capture locally with `pcap-agent capture`");
    ExitCode::FAILURE
}
