//! `pcap`: see the library (`pcap_cli`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pcap_cli::main()
}
