//! `cf-pcap`: the cf CLI plugin (`cf install-plugin ./cf-pcap`, then `cf
//! pcap APP_NAME`); see `pcap_cli::cf_plugin`.
#![forbid(unsafe_code)]

/// Received batches of a megabyte come and go; jemalloc reuses their pages
/// where glibc's malloc gives them back and faults fresh ones in.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    pcap_cli::cf_plugin::main()
}
