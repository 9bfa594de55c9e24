//! pcap: captures an app or VMs through pcap-api. Built in a later issue; the
//! crate exists so that the workspace has its final shape.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("pcap: not implemented yet; capture locally with `pcap-agent capture`");
    ExitCode::FAILURE
}
