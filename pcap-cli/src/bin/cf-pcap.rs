//! `cf-pcap`: the cf CLI plugin (`cf install-plugin ./cf-pcap`, then `cf
//! pcap APP_NAME`); see `pcap_cli::cf_plugin`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pcap_cli::cf_plugin::main()
}
